import AnygateStack
import AnygateWire

/// Something the daemon runs on its stack's TCP: it hears of its own
/// connections' notices and of its listener's new connections.
protocol StackTCPService: AnyObject {
    /// Whether `id` is one of this service's connections; if so, it has handled its notices.
    func handle(_ id: TCPSocketID) -> Bool
    /// Whether `listener` is this service's; if so, it has accepted what was waiting.
    func acceptable(_ listener: TCPListenerID) -> Bool
    /// Called about once a second: idle connections end.
    func sweep(now: ContinuousClock.Instant)
    func close()
}

/// A request–response server on the stack's own TCP (the stack-address
/// counterpart of `StreamServer`): it reads a request until `isComplete`,
/// writes `respond`'s answer and closes. Bounded: at most `maxConnections`
/// at once (a new one resets the oldest still sending its request, or is
/// reset itself when all are being answered), requests of at most
/// `maxRequest` bytes that must be complete within `requestTimeout`, and
/// connections idle for `idleTimeout` are reset; each cut is counted.
final class StackStreamServer: StackTCPService {
    let stack: Stack
    let listener: TCPListenerID
    let isComplete: ([UInt8]) -> Bool
    let respond: (_ request: [UInt8], _ from: IPAddress) -> [UInt8]
    var maxConnections = 32
    var maxRequest = 65536
    var idleTimeout = Duration.seconds(10)
    var requestTimeout = Duration.seconds(10)
    private struct Connection {
        let accepted: ContinuousClock.Instant
        var input: [UInt8] = []
        var output: [UInt8] = []
        var sent = 0
        var answered = false
        var lastActivity: ContinuousClock.Instant
    }
    private var connections: [TCPSocketID: Connection] = [:]
    /// Connections in the order they came, for eviction.
    private var arrivals: [TCPSocketID] = []
    /// What reads go through (one for all connections).
    private var buffer = [UInt8](repeating: 0, count: 16384)
    /// Connections reset because too many were open, sent too much, or idled.
    private(set) var refusedBusy: UInt64 = 0
    private(set) var refusedTooLarge: UInt64 = 0
    private(set) var timedOut: UInt64 = 0
    private(set) var served: UInt64 = 0

    init(stack: Stack, address: StackAddress, allow: [IPPrefix] = [], isComplete: @escaping ([UInt8]) -> Bool,
         respond: @escaping (_ request: [UInt8], _ from: IPAddress) -> [UInt8]) throws(SocketError) {
        self.stack = stack
        self.isComplete = isComplete
        self.respond = respond
        listener = try stack.tcpListen(address: address.host, port: address.port, backlog: 16, allow: allow)
    }

    func acceptable(_ l: TCPListenerID) -> Bool {
        guard l == listener else { return false }
        while let id = stack.tcpAccept(listener) {
            if connections.count >= maxConnections {
                refusedBusy &+= 1
                guard let oldest = arrivals.first(where: { connections[$0]?.answered == false }) else {
                    stack.tcpAbort(id)
                    continue
                }
                cut(oldest)
            }
            let now = ContinuousClock.now
            connections[id] = Connection(accepted: now, lastActivity: now)
            arrivals.append(id)
            _ = handle(id)
        }
        return true
    }

    func handle(_ id: TCPSocketID) -> Bool {
        guard var c = connections[id] else { return false }
        let notices = stack.tcpTakeNotices(id)
        c.lastActivity = .now
        if !c.answered {
            while true {
                let n = buffer.withUnsafeMutableBytes { stack.tcpReceive(id, into: $0) }
                if n == 0 { break }
                c.input += buffer[0..<n]
                if c.input.count > maxRequest {
                    refusedTooLarge &+= 1
                    cut(id)
                    return true
                }
            }
            if isComplete(c.input) || (stack.tcpAtEnd(id) && !c.input.isEmpty) {
                let from = stack.tcpInfo(id)?.remote ?? .v4(IPv4Address(rawValue: 0))
                c.output = respond(c.input, from)
                c.answered = true
                served &+= 1
            }
        }
        if c.answered {
            while c.sent < c.output.count {
                let n = c.output[c.sent...].withUnsafeBytes { stack.tcpSend(id, $0) }
                if n == 0 { break }
                c.sent += n
            }
            if c.sent == c.output.count {
                // All queued: the stack sends it and our FIN; the connection ends on its own.
                stack.tcpClose(id)
                connections[id] = nil
                return true
            }
        }
        if notices.contains(.closed) || stack.tcpInfo(id) == nil {
            connections[id] = nil
            stack.tcpClose(id)
            return true
        }
        connections[id] = c
        return true
    }

    func sweep(now: ContinuousClock.Instant) {
        for (id, c) in connections where now - c.lastActivity > idleTimeout || (!c.answered && now - c.accepted > requestTimeout) {
            timedOut &+= 1
            cut(id)
        }
        // Connections that ended on their own leave the arrival list here.
        arrivals.removeAll { connections[$0] == nil }
    }

    /// Resets a connection and forgets it.
    private func cut(_ id: TCPSocketID) {
        stack.tcpAbort(id)
        connections[id] = nil
        if let k = arrivals.firstIndex(of: id) { arrivals.remove(at: k) }
    }

    func close() {
        for id in connections.keys { stack.tcpAbort(id) }
        connections = [:]
        arrivals = []
        stack.tcpCloseListener(listener)
    }
}
