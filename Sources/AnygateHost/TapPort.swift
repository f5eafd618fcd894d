public import AnygateStack
import CAnygateHost
#if canImport(Glibc)
import Glibc
#endif

/// A TAP device (IFF_TAP | IFF_NO_PI) that this process creates. Its host
/// side is an ordinary Linux interface: it can be moved to a namespace,
/// bridged or given addresses. When it is deleted from outside, the port
/// reports it lost and `reattach` creates it again under the same name.
public final class TapPort: FramePort {
    public let name: String
    public private(set) var fd: Int32 = -1
    public internal(set) var counters = PortCounters()

    /// Frames the TAP device dropped because our read queue was full (its
    /// tx_dropped), while the device is in the daemon's namespace; 0 once
    /// its host side has been moved to another namespace, where we cannot see it.
    public var kernelDrops: UInt64 { Sys.readNumber("/sys/class/net/\(name)/statistics/tx_dropped") ?? 0 }
    let mtu: Int
    var queue: [PacketHandle] = []
    let queueCapacity: Int

    /// Creates the device, brings its host side up and sets its MTU.
    public init(name: String, mtu: Int, queueCapacity: Int = 1024) throws(SystemError) {
        self.name = name
        self.mtu = mtu
        self.queueCapacity = queueCapacity
        queue.reserveCapacity(queueCapacity)
        try open()
    }

    private func open() throws(SystemError) {
        let fd = try Sys.open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        var ifr = ifreq()
        ag_ifreq_set_name(&ifr, name)
        ag_ifreq_set_flags(&ifr, ag_IFF_TAP | ag_IFF_NO_PI)
        do {
            try Sys.ioctl(fd, ag_TUNSETIFF, &ifr, "TUNSETIFF", name)
        } catch {
            Sys.close(fd)
            throw error
        }
        self.fd = fd
        // Best effort: a TAP created inside a namespace we cannot configure still works.
        try? HostInterface.setMTU(name, mtu)
        try? HostInterface.setUp(name, true)
    }

    func rawRead(into buffer: UnsafeMutableRawPointer, capacity: Int) -> RawRead {
        let r = read(fd, buffer, capacity)
        if r > 0 { return .frame(r) }
        return .error(r == 0 ? EBADFD : errno)
    }

    func rawWrite(_ bytes: UnsafeRawPointer, count: Int) -> Int { write(fd, bytes, count) }

    /// EIO: the host side is down; EBADFD: the device is gone.
    func writeLost(_ errno: Int32) -> Bool { errno == EIO || errno == EBADFD || errno == ENODEV }

    /// A frame the host side drops without effect: addressed to a MAC no
    /// one has, with the IEEE local experimental EtherType 0x88B5. Writing
    /// it fails with EIO while the host side is down.
    private static let probeFrame: [UInt8] = [0x02, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0x88, 0xB5] + [UInt8](repeating: 0, count: 46)

    public func reattach() -> Bool {
        if fd >= 0 {
            // Still open: the device may only have been down.
            let r = TapPort.probeFrame.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if r == TapPort.probeFrame.count { counters.reattaches += 1; return true }
            if r < 0 && errno == EIO { return false }
            Sys.close(fd)
            fd = -1
        }
        do { try open() } catch { return false }
        counters.reattaches += 1
        return true
    }

    public func close(pool: PacketPool) {
        closeDescriptor(fd, pool: pool)
        fd = -1
    }
}
