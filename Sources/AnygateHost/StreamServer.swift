import CAnygateHost
#if canImport(Glibc)
import Glibc
#endif

/// A request/response server on a listening stream socket, run by the
/// event loop: each connection sends one request (complete when
/// `isComplete` says so), gets one response, and is closed. Requests are
/// bounded in size and time; a client that sends too much or stalls is
/// dropped without disturbing anything else.
public final class StreamServer {
    public let name: String
    let loop: EventLoop
    let listenFD: Int32
    let maxRequest: Int
    let maxConnections: Int
    let timeoutNanoseconds: Int64
    let isComplete: ([UInt8]) -> Bool
    let respond: ([UInt8]) -> [UInt8]
    private var connections: [Int32: Connection] = [:]
    /// Connections in the order they came (the oldest first), for eviction.
    private var arrivals: [Int32] = []
    /// What to do on a failure worth a log line.
    public var log: (String) -> Void = { _ in }

    /// Requests answered, and connections cut before an answer, by why.
    public struct Counters: Sendable, Equatable {
        public var served: UInt64 = 0
        /// The oldest unanswered connection made room for a new one (`maxConnections` open).
        public var tooMany: UInt64 = 0
        /// More than `maxRequest` bytes without a complete request.
        public var tooLarge: UInt64 = 0
        /// No complete request and answer within the time allowed.
        public var timedOut: UInt64 = 0
        /// The client closed before its request was complete.
        public var unfinished: UInt64 = 0
        public init() {}
    }
    public private(set) var counters = Counters()

    final class Connection {
        var input: [UInt8] = []
        var output: [UInt8] = []
        var written = 0
        var timer = 0
    }

    init(name: String, loop: EventLoop, listenFD: Int32, maxRequest: Int, maxConnections: Int, timeoutSeconds: Int,
         isComplete: @escaping ([UInt8]) -> Bool, respond: @escaping ([UInt8]) -> [UInt8]) throws(SystemError) {
        self.name = name
        self.loop = loop
        self.listenFD = listenFD
        self.maxRequest = maxRequest
        self.maxConnections = max(1, maxConnections)
        self.timeoutNanoseconds = Int64(timeoutSeconds) * 1_000_000_000
        self.isComplete = isComplete
        self.respond = respond
        try loop.register(listenFD) { [weak self] _ in self?.acceptAll() }
    }

    /// Listens on a Unix stream socket at `path` with `mode` permissions.
    /// A stale socket file (nobody accepting) is removed first; a live one
    /// means another daemon owns it, and is refused.
    public static func unix(path: String, mode: UInt32, loop: EventLoop, maxRequest: Int = 65536, maxConnections: Int = 32,
                            timeoutSeconds: Int = 5,
                            isComplete: @escaping ([UInt8]) -> Bool,
                            respond: @escaping ([UInt8]) -> [UInt8]) throws(SystemError) -> StreamServer {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw SystemError("bind", path, errno: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &addr.sun_path) { b in
            for (i, c) in bytes.enumerated() { b[i] = c }
            b[bytes.count] = 0
        }
        let len = socklen_t(MemoryLayout<sockaddr_un>.size)
        // Make the directory (as /run/anygate) if it is missing.
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            let dir = String(path[..<slash])
            mkdir(dir, 0o755)
        }
        if access(path, F_OK) == 0 {
            let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            let live = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(probe, $0, len) }
            } == 0
            Sys.close(probe)
            if live { throw SystemError("bind", "\(path) (another anygated is running there)", errno: EADDRINUSE) }
            unlink(path)
        }
        let fd = try Sys.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, path)
        // Create the socket file with the final mode from the start.
        let oldMask = umask(mode_t(0o777 & ~mode))
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        umask(oldMask)
        if r < 0 { let e = SystemError("bind", path); Sys.close(fd); throw e }
        chmod(path, mode_t(mode))
        do { try Sys.listen(fd, backlog: 64, path) } catch { Sys.close(fd); throw error }
        return try StreamServer(name: path, loop: loop, listenFD: fd, maxRequest: maxRequest, maxConnections: maxConnections,
                                timeoutSeconds: timeoutSeconds,
                                isComplete: isComplete, respond: respond)
    }

    /// Listens on TCP `host:port` (IPv4, host byte order address).
    public static func tcp(host: UInt32, port: UInt16, loop: EventLoop, maxRequest: Int = 8192, maxConnections: Int = 32,
                           timeoutSeconds: Int = 5,
                           isComplete: @escaping ([UInt8]) -> Bool,
                           respond: @escaping ([UInt8]) -> [UInt8]) throws(SystemError) -> StreamServer {
        let what = "\(host >> 24).\(host >> 16 & 0xFF).\(host >> 8 & 0xFF).\(host & 0xFF):\(port)"
        let fd = try Sys.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, what)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = host.bigEndian
        let r = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r < 0 { let e = SystemError("bind", what); Sys.close(fd); throw e }
        do { try Sys.listen(fd, backlog: 64, what) } catch { Sys.close(fd); throw error }
        return try StreamServer(name: what, loop: loop, listenFD: fd, maxRequest: maxRequest, maxConnections: maxConnections,
                                timeoutSeconds: timeoutSeconds,
                                isComplete: isComplete, respond: respond)
    }

    /// Takes every waiting connection. With `maxConnections` open, the
    /// oldest one still sending its request is cut to make room (a client
    /// that opens many and sends nothing cannot lock the others out); when
    /// every open one is being answered, the newcomer is closed.
    private func acceptAll() {
        while let fd = Sys.accept(listenFD) {
            if connections.count >= maxConnections {
                counters.tooMany &+= 1
                guard let oldest = arrivals.first(where: { connections[$0]?.output.isEmpty == true }) else {
                    Sys.close(fd)
                    continue
                }
                finish(oldest)
            }
            let c = Connection()
            connections[fd] = c
            arrivals.append(fd)
            c.timer = loop.after(nanoseconds: timeoutNanoseconds) { [weak self] in self?.timeOut(fd) }
            do {
                try loop.register(fd, events: EventLoop.readable) { [weak self] events in self?.serve(fd, events) }
            } catch {
                finish(fd)
            }
        }
    }

    private func timeOut(_ fd: Int32) {
        guard connections[fd] != nil else { return }
        counters.timedOut &+= 1
        finish(fd)
    }

    private func serve(_ fd: Int32, _ events: UInt32) {
        guard let c = connections[fd] else { return }
        if c.output.isEmpty {
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let (n, error) = buf.withUnsafeMutableBytes { Sys.read(fd, $0.baseAddress!, $0.count) }
                if n > 0 {
                    c.input.append(contentsOf: buf[0..<n])
                    if c.input.count > maxRequest {
                        counters.tooLarge &+= 1
                        log("\(name): request larger than \(maxRequest) bytes, connection dropped")
                        return finish(fd)
                    }
                    continue
                }
                if n == 0 || (error != EAGAIN && error != EWOULDBLOCK) {
                    // Peer closed: answer what it sent if complete, else drop it.
                    if !isComplete(c.input) {
                        counters.unfinished &+= 1
                        return finish(fd)
                    }
                }
                break
            }
            guard isComplete(c.input) else { return }
            c.output = respond(c.input)
            counters.served &+= 1
            if c.output.isEmpty { return finish(fd) }
            loop.modify(fd, events: EventLoop.writable)
        }
        while c.written < c.output.count {
            let (n, error) = c.output.withUnsafeBytes { Sys.write(fd, $0.baseAddress! + c.written, $0.count - c.written) }
            if n > 0 { c.written += n; continue }
            if n < 0 && (error == EAGAIN || error == EWOULDBLOCK) { return }
            break
        }
        finish(fd)
    }

    private func finish(_ fd: Int32) {
        guard let c = connections.removeValue(forKey: fd) else { return }
        if let k = arrivals.firstIndex(of: fd) { arrivals.remove(at: k) }
        loop.cancel(c.timer)
        loop.unregister(fd)
        Sys.close(fd)
    }

    /// Stops listening and drops open connections; a Unix socket file is removed.
    public func close(removing path: String? = nil) {
        for fd in Array(connections.keys) { finish(fd) }
        loop.unregister(listenFD)
        Sys.close(listenFD)
        if let path { unlink(path) }
    }
}
