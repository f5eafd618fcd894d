/// Key material held in memory this object owns and wipes when it goes
/// (issue 16: keys live only in memory the daemon owns and are zeroed when
/// an SA dies). Never printed: its description says how long it is, not
/// what it holds.
public final class SecretBytes: @unchecked Sendable, CustomStringConvertible {
    private let storage: UnsafeMutableRawBufferPointer

    public init(count: Int) {
        storage = .allocate(byteCount: max(count, 1), alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
        self.count = count
    }

    /// Takes a copy of `bytes`; the caller wipes its own.
    public convenience init(copying bytes: UnsafeRawBufferPointer) {
        self.init(count: bytes.count)
        if let b = bytes.baseAddress, !bytes.isEmpty { storage.baseAddress!.copyMemory(from: b, byteCount: bytes.count) }
    }

    public convenience init(_ bytes: [UInt8]) {
        self.init(count: bytes.count)
        bytes.withUnsafeBytes { b in if let p = b.baseAddress, !b.isEmpty { storage.baseAddress!.copyMemory(from: p, byteCount: b.count) } }
    }

    deinit {
        wipe(storage)
        storage.deallocate()
    }

    public let count: Int

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(rebasing: storage[..<count]))
    }

    public func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeMutableRawBufferPointer(rebasing: storage[..<count]))
    }

    /// A slice copied into a secret of its own (IKE cuts keys out of KEYMAT).
    public func slice(_ range: Range<Int>) -> SecretBytes {
        precondition(range.lowerBound >= 0 && range.upperBound <= count)
        return SecretBytes(copying: UnsafeRawBufferPointer(rebasing: storage[range]))
    }

    public var description: String { "<\(count) secret bytes>" }
}
