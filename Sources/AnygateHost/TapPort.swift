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
    /// Opened as one queue of a multi-queue device (`IFF_MULTI_QUEUE`):
    /// each worker opens a queue of its own on the same TAP, and the
    /// kernel spreads what the host side sends over the queues by flow.
    public let multiQueue: Bool
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
    /// `multiQueue`: create the device multi-queue, or attach one more
    /// queue to the multi-queue device of that name.
    public init(name: String, mtu: Int, offloads: Bool = true, multiQueue: Bool = false, queueCapacity: Int = 1024) throws(SystemError) {
        self.name = name
        self.mtu = mtu
        self.wantsOffloads = offloads
        self.multiQueue = multiQueue
        self.queueCapacity = queueCapacity
        queue.reserveCapacity(queueCapacity)
        try open()
    }

    static let tcpOffloads = ag_TUN_F_CSUM | ag_TUN_F_TSO4 | ag_TUN_F_TSO6 | ag_TUN_F_TSO_ECN

    private func open() throws(SystemError) {
        let fd = try Sys.open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        var ifr = ifreq()
        ag_ifreq_set_name(&ifr, name)
        ag_ifreq_set_flags(&ifr, ag_IFF_TAP | ag_IFF_NO_PI | (wantsOffloads ? ag_IFF_VNET_HDR : 0) | (multiQueue ? ag_IFF_MULTI_QUEUE : 0))
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
