public import AnygateStack
import AnygateWire
import CAnygateHost
#if canImport(Glibc)
import Glibc
#endif

/// A TAP device (IFF_TAP | IFF_NO_PI) that this process creates. Its host
/// side is an ordinary Linux interface: it can be moved to a namespace,
/// bridged or given addresses. When it is deleted from outside, the port
/// reports it lost and `reattach` creates it again under the same name.
///
/// With offloads (the default) the TAP is opened with virtio-net headers
/// (`IFF_VNET_HDR`, 12 bytes) and announces checksum offload, TSO4/TSO6 and,
/// where the kernel has them, USO4/USO6: the host side then hands over
/// super-frames of up to 64 KiB with partial checksums and takes them back
/// whole, segmenting and checksumming in the kernel.
public final class TapPort: FramePort {
    public let name: String
    public private(set) var fd: Int32 = -1
    public internal(set) var counters = PortCounters()
    /// Whether the device was opened with virtio-net headers.
    public private(set) var offloads = false
    /// The TUN_F_* features the device took.
    public private(set) var offloadFeatures: UInt32 = 0
    let wantsOffloads: Bool
    /// A super-frame buffer kept ready for the next read (vnet mode).
    var reserve: PacketHandle? = nil

    /// Frames the TAP device dropped because our read queue was full (its
    /// tx_dropped), while the device is in the daemon's namespace; 0 once
    /// its host side has been moved to another namespace, where we cannot see it.
    public var kernelDrops: UInt64 { Sys.readNumber("/sys/class/net/\(name)/statistics/tx_dropped") ?? 0 }
    let mtu: Int
    var queue: [PacketHandle] = []
    let queueCapacity: Int

    /// Creates the device, brings its host side up and sets its MTU.
    /// `offloads`: open it with virtio-net headers (super-frames need a pool
    /// with super-frame buffers).
    public init(name: String, mtu: Int, offloads: Bool = true, queueCapacity: Int = 1024) throws(SystemError) {
        self.name = name
        self.mtu = mtu
        self.wantsOffloads = offloads
        self.queueCapacity = queueCapacity
        queue.reserveCapacity(queueCapacity)
        try open()
    }

    static let tcpOffloads = ag_TUN_F_CSUM | ag_TUN_F_TSO4 | ag_TUN_F_TSO6 | ag_TUN_F_TSO_ECN

    private func open() throws(SystemError) {
        let fd = try Sys.open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        var ifr = ifreq()
        ag_ifreq_set_name(&ifr, name)
        ag_ifreq_set_flags(&ifr, ag_IFF_TAP | ag_IFF_NO_PI | (wantsOffloads ? ag_IFF_VNET_HDR : 0))
        do {
            try Sys.ioctl(fd, ag_TUNSETIFF, &ifr, "TUNSETIFF", name)
            if wantsOffloads {
                offloadFeatures = try Sys.tunOffloads(fd, headerSize: Int32(VirtioNetHeader.length),
                                                      preferred: TapPort.tcpOffloads | ag_TUN_F_USO4 | ag_TUN_F_USO6,
                                                      fallback: TapPort.tcpOffloads, name)
            }
        } catch {
            Sys.close(fd)
            throw error
        }
        offloads = wantsOffloads
        self.fd = fd
        // Best effort: a TAP created inside a namespace we cannot configure still works.
        try? HostInterface.setMTU(name, mtu)
        try? HostInterface.setUp(name, true)
    }

    func rawRead(into buffer: UnsafeMutableRawPointer, capacity: Int) -> RawRead {
        let r = Sys.read(fd, buffer, capacity)
        if r.count > 0 { return .frame(r.count) }
        return .error(r.count == 0 ? EBADFD : r.errno)
    }

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
            guard let o = h.offloads(for: pool.bytes(p)) else {
                counters.rxBadOffload += 1
                pool.free(p)
                continue
            }
            p.segmentSize = o.segmentSize
            p.offload = (o.partial ? PacketHandle.checksumPartial : 0) | (o.verified ? PacketHandle.checksumVerified : 0)
            batch[n] = p
            n += 1
            counters.rxFrames += 1
            counters.rxBytes += UInt64(length)
        }
        return .frames(n)
    }

    /// EIO: the host side is down; EBADFD: the device is gone.
    func writeLost(_ errno: Int32) -> Bool { errno == EIO || errno == EBADFD || errno == ENODEV }

    /// A frame the host side drops without effect: addressed to a MAC no
    /// one has, with the IEEE local experimental EtherType 0x88B5. Writing
    /// it fails with EIO while the host side is down.
    private static let probeFrame: [UInt8] = [0x02, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0x88, 0xB5] + [UInt8](repeating: 0, count: 46)

    public func reattach() -> Bool {
        if fd >= 0 {
            // Still open: the device may only have been down.
            // With virtio-net headers the probe carries an empty one.
            let probe = (offloads ? [UInt8](repeating: 0, count: VirtioNetHeader.length) : []) + TapPort.probeFrame
            let r = probe.withUnsafeBytes { Sys.write(fd, $0.baseAddress!, $0.count) }
            if r.count == probe.count { counters.reattaches += 1; return true }
            if r.count < 0 && r.errno == EIO { return false }
            Sys.close(fd)
            fd = -1
        }
        do { try open() } catch { return false }
        counters.reattaches += 1
        return true
    }

    public func close(pool: PacketPool) {
        if let r = reserve { pool.free(r) }
        reserve = nil
        closeDescriptor(fd, pool: pool)
        fd = -1
    }
}
