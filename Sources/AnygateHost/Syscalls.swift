import CAnygateHost
#if canImport(Glibc)
import Glibc
#endif

/// Every system call the host layer makes goes through here, so failures
/// carry errno and the object's name, and nothing else in the module
/// touches errno.
enum Sys {
    static func check(_ result: Int32, _ op: String, _ object: String) throws(SystemError) -> Int32 {
        if result < 0 { throw SystemError(op, object) }
        return result
    }

    static func open(_ path: String, _ flags: Int32) throws(SystemError) -> Int32 {
        try check(Glibc.open(path, flags), "open", path)
    }

    static func open(_ path: String, _ flags: Int32, mode: mode_t) throws(SystemError) -> Int32 {
        try check(Glibc.open(path, flags, mode), "open", path)
    }

    static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// `read`: the byte count, or -1 with the errno.
    static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> (count: Int, errno: Int32) {
        let r = Glibc.read(fd, buffer, count)
        return (r, r < 0 ? errno : 0)
    }

    /// `write`: the byte count, or -1 with the errno.
    static func write(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> (count: Int, errno: Int32) {
        let r = Glibc.write(fd, bytes, count)
        return (r, r < 0 ? errno : 0)
    }

    /// `send` with no flags: the byte count, or -1 with the errno.
    static func send(_ fd: Int32, _ bytes: UnsafeMutableRawBufferPointer) -> (count: Int, errno: Int32) {
        let r = Glibc.send(fd, bytes.baseAddress, bytes.count, 0)
        return (r, r < 0 ? errno : 0)
    }

    /// `recvmmsg`, not waiting: messages received, or -1 with the errno.
    static func recvmmsg(_ fd: Int32, _ messages: UnsafeMutablePointer<ag_mmsghdr>, _ count: Int) -> (count: Int, errno: Int32) {
        let r = ag_recvmmsg(fd, messages, UInt32(count))
        return (Int(r), r < 0 ? errno : 0)
    }

    /// `sendmmsg`: messages sent, or -1 with the errno.
    static func sendmmsg(_ fd: Int32, _ messages: UnsafeMutablePointer<ag_mmsghdr>, _ count: Int) -> (count: Int, errno: Int32) {
        let r = ag_sendmmsg(fd, messages, UInt32(count))
        return (Int(r), r < 0 ? errno : 0)
    }

    /// `readv` into the given pieces: the byte count, or -1 with the errno.
    static func readv(_ fd: Int32, _ pieces: UnsafeMutablePointer<iovec>, _ count: Int32) -> (count: Int, errno: Int32) {
        let r = Glibc.readv(fd, pieces, count)
        return (r, r < 0 ? errno : 0)
    }

    /// `writev` of the given pieces: the byte count, or -1 with the errno.
    static func writev(_ fd: Int32, _ pieces: UnsafePointer<iovec>, _ count: Int32) -> (count: Int, errno: Int32) {
        let r = Glibc.writev(fd, pieces, count)
        return (r, r < 0 ? errno : 0)
    }

    /// `TUNSETVNETHDRSZ` then `TUNSETOFFLOAD`: tries `preferred`, then
    /// `fallback`. Returns the flags the device took.
    static func tunOffloads(_ fd: Int32, headerSize: Int32, preferred: UInt32, fallback: UInt32, _ object: String) throws(SystemError) -> UInt32 {
        _ = try check(ag_tun_set_vnet_header_size(fd, headerSize), "TUNSETVNETHDRSZ", object)
        if ag_tun_set_offload(fd, preferred) == 0 { return preferred }
        _ = try check(ag_tun_set_offload(fd, fallback), "TUNSETOFFLOAD", object)
        return fallback
    }

    /// `flock`; false when a non-blocking request finds the lock taken.
    static func flock(_ fd: Int32, _ operation: Int32, _ object: String) throws(SystemError) -> Bool {
        if ag_flock(fd, operation) == 0 { return true }
        if errno == EWOULDBLOCK { return false }
        throw SystemError("flock", object)
    }

    static func ioctl(_ fd: Int32, _ request: UInt, _ arg: UnsafeMutableRawPointer, _ what: String, _ object: String) throws(SystemError) {
        _ = try check(Glibc.ioctl(fd, request, arg), what, object)
    }

    static func socket(_ domain: Int32, _ type: Int32, _ proto: Int32, _ object: String) throws(SystemError) -> Int32 {
        try check(Glibc.socket(domain, type, proto), "socket", object)
    }

    /// Binds (`connect: false`) or connects a socket to an address of either family.
    static func bind(_ fd: Int32, _ address: KernelAddress, connect: Bool, _ object: String) throws(SystemError) {
        var a = address
        let r = withUnsafePointer(to: &a.storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect ? Glibc.connect(fd, $0, a.length) : Glibc.bind(fd, $0, a.length) }
        }
        _ = try check(r, connect ? "connect" : "bind", object)
    }

    static func setsockopt<T>(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: T, _ what: String, _ object: String) throws(SystemError) {
        var v = value
        let r = withUnsafePointer(to: &v) { Glibc.setsockopt(fd, level, name, $0, socklen_t(MemoryLayout<T>.size)) }
        _ = try check(r, "setsockopt \(what)", object)
    }

    static func getsockoptInt(_ fd: Int32, _ level: Int32, _ name: Int32) -> Int32? {
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        return Glibc.getsockopt(fd, level, name, &v, &len) == 0 ? v : nil
    }

    /// `send` on a connected socket (`to` nil) or `sendto`; the byte count, or -1 and the errno.
    static func sendto(_ fd: Int32, _ bytes: UnsafeMutableRawBufferPointer, to: KernelAddress?) -> (count: Int, errno: Int32) {
        let n: Int
        if var to {
            let length = to.length
            n = withUnsafePointer(to: &to.storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.sendto(fd, bytes.baseAddress, bytes.count, 0, $0, length)
                }
            }
        } else {
            n = Glibc.send(fd, bytes.baseAddress, bytes.count, 0)
        }
        return (n, n < 0 ? Glibc.errno : 0)
    }

    /// `sendmsg` with `UDP_SEGMENT`: `bytes` as datagrams of `segment` bytes.
    static func sendSegmented(_ fd: Int32, _ bytes: UnsafeMutableRawBufferPointer, to: KernelAddress, segment: UInt16) -> (count: Int, errno: Int32) {
        var to = to
        let n = ag_send_segmented(fd, bytes.baseAddress, bytes.count, &to.storage, to.length, segment)
        return (n, n < 0 ? Glibc.errno : 0)
    }

    /// The decimal number a small file holds (a sysfs counter), or nil.
    static func readNumber(_ path: String) -> UInt64? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { _ = Glibc.close(fd) }
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 31) }
        guard n > 0 else { return nil }
        return UInt64(String(decoding: buffer[0..<n].prefix { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self))
    }

    /// `PACKET_STATISTICS` of a packet socket: frames dropped since the last
    /// read (the kernel resets the counters on every read).
    static func packetSocketDrops(_ fd: Int32) -> UInt32? {
        var stats = (packets: UInt32(0), drops: UInt32(0))
        var len = socklen_t(MemoryLayout<(UInt32, UInt32)>.size)
        let r = withUnsafeMutablePointer(to: &stats) { Glibc.getsockopt(fd, ag_SOL_PACKET, ag_PACKET_STATISTICS, $0, &len) }
        return r == 0 ? stats.drops : nil
    }

    /// A datagram socket for interface ioctls.
    static func controlSocket() throws(SystemError) -> Int32 {
        try socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, "interface control")
    }

    /// One waiting connection, made non-blocking and close-on-exec; nil when none waits.
    static func accept(_ fd: Int32) -> Int32? {
        let c = Glibc.accept(fd, nil, nil)
        guard c >= 0 else { return nil }
        setNonBlocking(c)
        _ = fcntl(c, F_SETFD, FD_CLOEXEC)
        return c
    }

    static func listen(_ fd: Int32, backlog: Int32, _ object: String) throws(SystemError) {
        _ = try check(Glibc.listen(fd, backlog), "listen", object)
    }

    static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    /// A non-blocking eventfd counter (a thread's doorbell).
    static func eventfd(_ object: String) throws(SystemError) -> Int32 {
        try check(ag_eventfd(), "eventfd", object)
    }

    /// Adds one to an eventfd counter (wakes whoever polls it).
    static func ring(_ fd: Int32) {
        var one: UInt64 = 1
        _ = Glibc.write(fd, &one, 8)
    }

    /// Reads an eventfd counter back to zero; the rings since the last drain.
    @discardableResult
    static func drain(_ fd: Int32) -> UInt64 {
        var value: UInt64 = 0
        return Glibc.read(fd, &value, 8) == 8 ? value : 0
    }

    /// Starts a thread running `body`.
    static func startThread(_ name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) -> pthread_t {
        final class Box {
            let name: String, body: @Sendable () -> Void
            init(_ n: String, _ b: @escaping @Sendable () -> Void) { name = n; body = b }
        }
        let context = Unmanaged.passRetained(Box(name, body)).toOpaque()
        var thread = pthread_t()
        let r = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            ag_name_thread(box.name)
            box.body()
            return nil
        }, context)
        guard r == 0 else {
            Unmanaged<Box>.fromOpaque(context).release()
            throw SystemError("pthread_create", name, errno: r)
        }
        return thread
    }

    static func joinThread(_ thread: pthread_t) { _ = pthread_join(thread, nil) }

    /// Sleeps the calling thread for about `microseconds`.
    static func pause(microseconds: Int) {
        var ts = timespec(tv_sec: microseconds / 1_000_000, tv_nsec: (microseconds % 1_000_000) * 1000)
        _ = nanosleep(&ts, nil)
    }

    /// Makes a socket take no packets (a filter returning 0) until `acceptAll`.
    static func acceptNone(_ fd: Int32, _ object: String) throws(SystemError) {
        _ = try check(ag_attach_drop_all(fd), "SO_ATTACH_FILTER", object)
    }

    static func acceptAll(_ fd: Int32, _ object: String) throws(SystemError) {
        _ = try check(ag_detach_filter(fd), "SO_DETACH_FILTER", object)
    }

    /// Monotonic time in nanoseconds.
    static func monotonicNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// Wall-clock time in nanoseconds since 1970.
    static func realtimeNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    static func randomUInt64() -> UInt64 {
        var v: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &v) { getrandom($0.baseAddress, 8, 0) }
        return v
    }
}

/// The host's clocks, for what the daemon reports in wall-clock time.
public enum HostClock {
    /// The stack's clock (monotonic) in nanoseconds.
    public static func monotonicNanoseconds() -> Int64 { Sys.monotonicNanoseconds() }
    /// How far the wall clock is ahead of the stack's: a stack time plus
    /// this is nanoseconds since 1970 (a capture's timestamps).
    public static func wallClockOffset() -> Int64 { Sys.realtimeNanoseconds() - Sys.monotonicNanoseconds() }
}

/// Host network interfaces, by name, in the daemon's namespace.
public enum HostInterface {
    static func withIfreq<R>(_ name: String, _ body: (Int32, inout ifreq) throws(SystemError) -> R) throws(SystemError) -> R {
        let fd = try Sys.controlSocket()
        defer { Sys.close(fd) }
        var ifr = ifreq()
        ag_ifreq_set_name(&ifr, name)
        return try body(fd, &ifr)
    }

    /// The kernel's interface index of `name`.
    public static func index(_ name: String) throws(SystemError) -> Int32 {
        try withIfreq(name) { (fd, ifr) throws(SystemError) in
            try Sys.ioctl(fd, ag_SIOCGIFINDEX, &ifr, "SIOCGIFINDEX", name)
            return ag_ifreq_ifindex(&ifr)
        }
    }

    /// The hardware address of `name`, as six bytes.
    public static func hardwareAddress(_ name: String) throws(SystemError) -> [UInt8] {
        try withIfreq(name) { (fd, ifr) throws(SystemError) in
            try Sys.ioctl(fd, ag_SIOCGIFHWADDR, &ifr, "SIOCGIFHWADDR", name)
            let p = ag_ifreq_hwaddr(&ifr)!
            return (0..<6).map { p[$0] }
        }
    }

    /// The MTU of `name`.
    public static func mtu(_ name: String) throws(SystemError) -> Int {
        try withIfreq(name) { (fd, ifr) throws(SystemError) in
            try Sys.ioctl(fd, ag_SIOCGIFMTU, &ifr, "SIOCGIFMTU", name)
            return Int(ag_ifreq_mtu(&ifr))
        }
    }

    /// Whether `name` is administratively up.
    public static func isUp(_ name: String) throws(SystemError) -> Bool {
        try withIfreq(name) { (fd, ifr) throws(SystemError) in
            try Sys.ioctl(fd, ag_SIOCGIFFLAGS, &ifr, "SIOCGIFFLAGS", name)
            return ag_ifreq_flags(&ifr) & ag_IFF_UP != 0
        }
    }

    /// Brings `name` up (or down).
    public static func setUp(_ name: String, _ up: Bool) throws(SystemError) {
        try withIfreq(name) { (fd, ifr) throws(SystemError) in
            try Sys.ioctl(fd, ag_SIOCGIFFLAGS, &ifr, "SIOCGIFFLAGS", name)
            var flags = ag_ifreq_flags(&ifr)
            flags = up ? (flags | ag_IFF_UP) : (flags & ~ag_IFF_UP)
            ag_ifreq_set_flags(&ifr, flags)
            try Sys.ioctl(fd, ag_SIOCSIFFLAGS, &ifr, "SIOCSIFFLAGS", name)
        }
    }

    /// Sets the MTU of `name`.
    public static func setMTU(_ name: String, _ mtu: Int) throws(SystemError) {
        try withIfreq(name) { (fd, ifr) throws(SystemError) in
            ag_ifreq_set_mtu(&ifr, Int32(mtu))
            try Sys.ioctl(fd, ag_SIOCSIFMTU, &ifr, "SIOCSIFMTU", name)
        }
    }

    public static func exists(_ name: String) -> Bool { (try? index(name)) != nil }
}
