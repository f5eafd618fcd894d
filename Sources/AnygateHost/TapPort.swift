public import AnygateStack
import CAnygateHost
#if canImport(Glibc)
import Glibc
#endif

/// A TAP device (IFF_TAP | IFF_NO_PI) that this process creates. Its host
/// side is an ordinary Linux interface: it can be moved to a namespace,
/// bridged or given addresses. When it is deleted from outside, the port
/// reports it lost and `reattach` creates it again under the same name.
public final class TapPort: Port {
    public let name: String
    public private(set) var fd: Int32 = -1
    public private(set) var counters = PortCounters()
    let mtu: Int
    private var queue: [PacketHandle] = []
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

    public func receive(into batch: UnsafeMutableBufferPointer<PacketHandle>, pool: PacketPool) -> PortRead {
        var n = 0
        while n < batch.count {
            guard var p = pool.allocate() else {
                // Drain one frame so the kernel queue moves, and count it.
                var scratch = [UInt8](repeating: 0, count: 64)
                if read(fd, &scratch, 64) > 0 { counters.rxNoBuffer += 1; continue }
                break
            }
            let r = read(fd, pool.buffer(p).baseAddress! + Int(p.offset), pool.dataCapacity)
            if r > 0 {
                p.length = UInt32(r)
                batch[n] = p
                n += 1
                counters.rxFrames += 1
                counters.rxBytes += UInt64(r)
                continue
            }
            pool.free(p)
            let e = errno
            if r < 0 && (e == EAGAIN || e == EWOULDBLOCK || e == EINTR) { break }
            if n > 0 { return .frames(n) }
            counters.rxErrors += 1
            return .lost(SystemError("read", name, errno: r == 0 ? EBADFD : e))
        }
        return .frames(n)
    }

    public func send(_ packets: UnsafeBufferPointer<PacketHandle>, pool: PacketPool) -> SystemError? {
        var lost: SystemError? = nil
        for p in packets {
            if !queue.isEmpty || lost != nil {
                enqueue(p, pool: pool, lost: lost != nil)
                continue
            }
            let b = pool.bytes(p)
            let r = write(fd, b.baseAddress, b.count)
            if r == b.count {
                counters.txFrames += 1
                counters.txBytes += UInt64(r)
                pool.free(p)
                continue
            }
            let e = errno
            if r < 0 && (e == EAGAIN || e == EWOULDBLOCK) {
                enqueue(p, pool: pool, lost: false)
            } else {
                counters.txErrors += 1
                pool.free(p)
                // EIO: the host side is down; EBADFD: the device is gone.
                if r < 0 && (e == EIO || e == EBADFD || e == ENODEV) { lost = SystemError("write", name, errno: e) }
            }
        }
        return lost
    }

    private func enqueue(_ p: PacketHandle, pool: PacketPool, lost: Bool) {
        if lost || queue.count >= queueCapacity {
            counters.txQueueDrops += 1
            pool.free(p)
        } else {
            queue.append(p)
        }
    }

    public var hasQueued: Bool { !queue.isEmpty }

    public func flushQueue(pool: PacketPool) {
        var sent = 0
        for p in queue {
            let b = pool.bytes(p)
            let r = write(fd, b.baseAddress, b.count)
            if r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            if r == b.count { counters.txFrames += 1; counters.txBytes += UInt64(r) } else { counters.txErrors += 1 }
            pool.free(p)
            sent += 1
        }
        queue.removeFirst(sent)
    }

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

    public func markLost(pool: PacketPool) {
        counters.detaches += 1
        for p in queue { pool.free(p) }
        counters.txQueueDrops += UInt64(queue.count)
        queue.removeAll(keepingCapacity: true)
    }

    public func close(pool: PacketPool) {
        for p in queue { pool.free(p) }
        queue.removeAll()
        if fd >= 0 { Sys.close(fd) }
        fd = -1
    }
}
