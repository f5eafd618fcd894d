public import AnygateStack
import CAnygateHost
#if canImport(Glibc)
import Glibc
#endif

/// A host twin's device: a TUN (layer 3: IP packets, for a tunnel) or a
/// TAP (Ethernet frames, for an Ethernet interface) this process creates,
/// without packet information or virtio-net headers. It lives while the
/// descriptor is open: closing it (or the process ending, however it ends)
/// removes the device, so no twin outlives the daemon.
public final class TwinDevice {
    public let name: String
    /// A TUN (IP packets), else a TAP (frames).
    public let layer3: Bool
    public private(set) var fd: Int32 = -1
    /// Writes the device refused (its queue was full, or it was gone).
    public private(set) var writeFailures: UInt64 = 0

    public init(name: String, layer3: Bool) throws(SystemError) {
        self.name = name
        self.layer3 = layer3
        let fd = try Sys.open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        var ifr = ifreq()
        ag_ifreq_set_name(&ifr, name)
        ag_ifreq_set_flags(&ifr, (layer3 ? ag_IFF_TUN : ag_IFF_TAP) | ag_IFF_NO_PI)
        do { try Sys.ioctl(fd, ag_TUNSETIFF, &ifr, "TUNSETIFF", name) } catch {
            Sys.close(fd)
            throw error
        }
        self.fd = fd
    }

    deinit { close() }

    /// Sets the device's carrier (the host sees NO-CARRIER without it):
    /// a twin follows whether its interface or tunnel carries traffic.
    public func setCarrier(_ on: Bool) throws(SystemError) {
        var v: Int32 = on ? 1 : 0
        try Sys.ioctl(fd, ag_TUNSETCARRIER, &v, "TUNSETCARRIER", name)
    }

    public func close() {
        if fd >= 0 { Sys.close(fd) }
        fd = -1
    }

    public enum Read { case packet(PacketHandle), empty, gone(Int32), noBuffer }

    /// Reads one packet (or frame) into a buffer of `pool`.
    public func receive(pool: PacketPool) -> Read {
        guard fd >= 0 else { return .gone(EBADF) }
        guard var p = pool.allocate() else { return .noBuffer }
        pool.setLength(&p, pool.dataCapacity)
        let r = Sys.read(fd, pool.bytes(p).baseAddress!, pool.dataCapacity)
        guard r.count > 0 else {
            pool.free(p)
            if r.count < 0 && (r.errno == EAGAIN || r.errno == EINTR) { return .empty }
            return .gone(r.count == 0 ? EBADFD : r.errno)
        }
        p.length = UInt32(r.count)
        return .packet(p)
    }

    /// Writes one packet (or frame); false if the device did not take it.
    public func send(_ bytes: UnsafeMutableRawBufferPointer) -> Bool {
        guard fd >= 0, let base = bytes.baseAddress else { return false }
        let r = Sys.write(fd, base, bytes.count)
        if r.count != bytes.count {
            writeFailures &+= 1
            return false
        }
        return true
    }
}
