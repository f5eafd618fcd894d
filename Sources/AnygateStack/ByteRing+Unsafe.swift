/// A fixed-capacity ring of bytes: a TCP connection's send or receive
/// buffer. Its storage is allocated at the first write (a connection that
/// carries no data never has any) and released by `release` once empty (a
/// connection in TIME-WAIT needs none); nothing is allocated as bytes
/// pass. Offsets are logical, counted from the oldest byte.
///
/// The receive side writes out-of-order data past `count` (`write(at:)`)
/// and makes it readable when the gap before it fills (`extend`).
final class ByteRing {
    let capacity: Int
    private var storage: UnsafeMutableRawPointer?
    private var head = 0
    /// Bytes readable from the head.
    private(set) var count = 0

    init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    deinit { storage?.deallocate() }

    /// Whether storage is held (for memory accounting).
    var allocated: Bool { storage != nil }

    /// Gives the storage back; the ring must hold nothing (out-of-order data included).
    func release() {
        precondition(count == 0)
        storage?.deallocate()
        storage = nil
        head = 0
    }

    private func bytes() -> UnsafeMutableRawPointer {
        if let storage { return storage }
        let s = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        storage = s
        return s
    }

    var free: Int { capacity - count }

    /// Copies `bytes` into the ring at logical offset `offset` (which may be
    /// past `count`; the caller keeps `offset + bytes.count <= capacity`).
    func write(at offset: Int, _ bytes: UnsafeRawBufferPointer) {
        precondition(offset >= 0 && offset + bytes.count <= capacity)
        guard let src = bytes.baseAddress, bytes.count > 0 else { return }
        let storage = self.bytes()
        let start = (head + offset) % capacity
        let first = min(bytes.count, capacity - start)
        (storage + start).copyMemory(from: src, byteCount: first)
        if first < bytes.count { storage.copyMemory(from: src + first, byteCount: bytes.count - first) }
    }

    /// Appends as much of `bytes` as fits; returns how much did.
    @discardableResult
    func append(_ bytes: UnsafeRawBufferPointer) -> Int {
        let n = min(bytes.count, free)
        guard n > 0, let base = bytes.baseAddress else { return 0 }
        write(at: count, UnsafeRawBufferPointer(start: base, count: n))
        count += n
        return n
    }

    /// Makes `n` more bytes readable (written earlier by `write(at:)`).
    func extend(_ n: Int) {
        precondition(n >= 0 && count + n <= capacity)
        count += n
    }

    /// Copies `into.count` bytes starting at logical offset `offset` (< count).
    func copy(from offset: Int, into: UnsafeMutableRawBufferPointer) {
        precondition(offset >= 0 && offset + into.count <= count)
        guard let dst = into.baseAddress, into.count > 0, let storage else { return }
        let start = (head + offset) % capacity
        let first = min(into.count, capacity - start)
        dst.copyMemory(from: storage + start, byteCount: first)
        if first < into.count { (dst + first).copyMemory(from: storage, byteCount: into.count - first) }
    }

    /// Drops the `n` oldest bytes.
    func consume(_ n: Int) {
        precondition(n >= 0 && n <= count)
        head = (head + n) % capacity
        count -= n
    }

    /// Copies out and drops up to `into.count` of the oldest bytes.
    func read(into: UnsafeMutableRawBufferPointer) -> Int {
        let n = min(into.count, count)
        guard n > 0, let base = into.baseAddress else { return 0 }
        copy(from: 0, into: UnsafeMutableRawBufferPointer(start: base, count: n))
        consume(n)
        return n
    }
}
