/// A capture's copies, laid end to end in one block allocated when the
/// capture starts: each a 16-byte record header (time, length on the wire,
/// bytes kept and direction) and the bytes, padded to 8. The replica that
/// owns the capture appends; the same thread reads everything out and
/// starts again from the front. Appending allocates nothing; what does not
/// fit is refused (and counted lost by the caller).
final class CaptureBuffer {
    let capacity: Int
    private let storage: UnsafeMutableRawPointer
    /// Bytes in use.
    private(set) var used = 0
    /// Copies held.
    private(set) var count = 0

    static let recordHeader = 16

    init(capacity: Int) {
        precondition(capacity >= 4096)
        self.capacity = capacity
        storage = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 8)
    }

    deinit { storage.deallocate() }

    /// Copies the first `keep` bytes of `bytes`; false when it does not fit.
    func append(_ bytes: UnsafeRawBufferPointer, keep: Int, wireLength: Int, time: Int64, outbound: Bool) -> Bool {
        let n = min(keep, bytes.count)
        let size = CaptureBuffer.recordHeader + (n + 7) & ~7
        guard used + size <= capacity else { return false }
        let r = storage + used
        r.storeBytes(of: time, as: Int64.self)
        r.storeBytes(of: UInt32(truncatingIfNeeded: wireLength), toByteOffset: 8, as: UInt32.self)
        r.storeBytes(of: UInt32(truncatingIfNeeded: n) | (outbound ? 1 << 31 : 0), toByteOffset: 12, as: UInt32.self)
        if n > 0, let base = bytes.baseAddress { (r + CaptureBuffer.recordHeader).copyMemory(from: base, byteCount: n) }
        used += size
        count += 1
        return true
    }

    /// Everything held, oldest first; the buffer is empty afterwards.
    func drain() -> [CapturedPacket] {
        var out: [CapturedPacket] = []
        out.reserveCapacity(count)
        var o = 0
        while o < used {
            let r = storage + o
            let time = r.load(as: Int64.self)
            let wire = r.load(fromByteOffset: 8, as: UInt32.self)
            let word = r.load(fromByteOffset: 12, as: UInt32.self)
            let n = Int(word & 0x7FFF_FFFF)
            let bytes = Array(UnsafeRawBufferPointer(start: r + CaptureBuffer.recordHeader, count: n))
            out.append(CapturedPacket(time: Timestamp(nanoseconds: time), outbound: word >> 31 != 0, wireLength: Int(wire), bytes: bytes))
            o += CaptureBuffer.recordHeader + (n + 7) & ~7
        }
        used = 0
        count = 0
        return out
    }
}
