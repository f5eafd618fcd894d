public import AnygateStack
import AnygateWire
import CAnygateHost
#if canImport(Glibc)
import Glibc
#endif

/// A TAP's reads and writes with virtio-net headers: the raw-pointer side
/// of `TapPort` (scatter/gather pieces for `readv` and `writev`).
extension TapPort {
    func rawWrite(_ packet: PacketHandle, pool: PacketPool) -> (written: Bool, errno: Int32) {
        let b = pool.bytes(packet)
        guard offloads else {
            let r = Sys.write(fd, b.baseAddress!, b.count)
            return (r.count == b.count, r.errno)
        }
        // The stack only leaves offloads it can describe to a port that takes them.
        let h = VirtioNetHeader.sending(b, segmentSize: packet.segmentSize,
                                        partial: packet.offload & PacketHandle.checksumPartial != 0) ?? VirtioNetHeader()
        var header: (UInt64, UInt32) = (0, 0)
        return withUnsafeMutableBytes(of: &header) { hb in
            h.emit(into: hb)
            var pieces = (iovec(iov_base: hb.baseAddress, iov_len: VirtioNetHeader.length),
                          iovec(iov_base: b.baseAddress, iov_len: b.count))
            let r = withUnsafeMutablePointer(to: &pieces) {
                $0.withMemoryRebound(to: iovec.self, capacity: 2) { Sys.writev(fd, $0, 2) }
            }
            return (r.count == VirtioNetHeader.length + b.count, r.errno)
        }
    }

    /// Reads frames with their virtio-net headers. Each read goes into a
    /// frame buffer, spilling into a super-frame buffer kept in reserve, so
    /// ordinary frames are not copied and super-frames copy only the first
    /// buffer's worth. A frame whose header is malformed is refused and counted.
    public func receive(into batch: UnsafeMutableBufferPointer<PacketHandle>, pool: PacketPool) -> PortRead {
        guard offloads else { return readFrames(into: batch, pool: pool) }
        var n = 0
        var header: (UInt64, UInt32) = (0, 0)
        while n < batch.count {
            if reserve == nil { reserve = pool.allocateSuperFrame() }
            // Without room for a super-frame a read could be cut short: leave the frames to the kernel.
            guard let big = reserve, var p = pool.allocate() else { return .frames(n) }
            let small = pool.dataCapacity
            let spill = pool.buffer(big).tail(from: pool.headroom + small)
            let r: (count: Int, errno: Int32) = withUnsafeMutableBytes(of: &header) { hb in
                var pieces = (iovec(iov_base: hb.baseAddress, iov_len: VirtioNetHeader.length),
                              iovec(iov_base: pool.bytes(p).baseAddress, iov_len: small),
                              iovec(iov_base: spill.baseAddress, iov_len: spill.count))
                return withUnsafeMutablePointer(to: &pieces) {
                    $0.withMemoryRebound(to: iovec.self, capacity: 3) { Sys.readv(fd, $0, 3) }
                }
            }
            guard r.count > VirtioNetHeader.length else {
                pool.free(p)
                let e = r.count < 0 ? r.errno : EBADFD
                if e == EAGAIN || e == EWOULDBLOCK || e == EINTR || n > 0 { return .frames(n) }
                counters.rxErrors += 1
                return .lost(SystemError("read", name, errno: e))
            }
            let length = r.count - VirtioNetHeader.length
            if length > small {
                // A super-frame: its first part joins the rest in the reserve buffer.
                let first = pool.buffer(p).tail(from: Int(p.offset)).slice(0, small)
                pool.buffer(big).tail(from: pool.headroom).slice(0, small).copyMemory(from: UnsafeRawBufferPointer(first))
                pool.free(p)
                p = big
                reserve = nil
            }
            p.length = UInt32(length)
            let h = withUnsafeBytes(of: &header) { VirtioNetHeader(parsing: $0) }
            guard acceptOffloads(h, &p, pool: pool) else { continue }
            batch[n] = p
            n += 1
            counters.rxFrames += 1
            counters.rxBytes += UInt64(length)
        }
        return .frames(n)
    }
}
