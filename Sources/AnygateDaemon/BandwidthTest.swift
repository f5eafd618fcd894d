import AnygateControl
import AnygateStack
import AnygateWire
import Crypto

/// The bandwidth test between two appliances' stacks (`anygatectl
/// bandwidth-test`, `services.bandwidth-test`). Its protocol, over the
/// stacks' TCP: the client's first line is
///
///     anygate-bandwidth-test 1 upload
///     anygate-bandwidth-test 1 download BYTES
///
/// For `upload` the responder reads everything until the client's FIN and
/// answers `ok BYTES SHA256HEX` (so a transfer can be checked end to end);
/// for `download` it sends BYTES bytes of `BandwidthPattern` (0: until the
/// client closes) and then its FIN. Nothing needs installing on either site:
/// any TCP client (curl, python) can be a peer too.
enum BandwidthPattern {
    /// Byte k of a stream is `(k ^ (k >> 8)) & 0xFF`: 64 KiB repeating.
    static let block: [UInt8] = (0..<65536).map { UInt8(truncatingIfNeeded: $0 ^ ($0 >> 8)) }
    static let header = "anygate-bandwidth-test 1"
}

/// The responder: a listener on a stack address.
final class BandwidthResponder: StackTCPService {
    let stack: Stack
    let listener: TCPListenerID
    var maxConnections = 16
    private enum Mode { case header, upload, download(remaining: Int?) }
    private struct Stream {
        var mode = Mode.header
        var line: [UInt8] = []
        var bytes = 0
        var offset = 0
        var hash = SHA256()
        var reply: [UInt8] = []
        var lastActivity: ContinuousClock.Instant
    }
    private var streams: [TCPSocketID: Stream] = [:]
    private(set) var refused: UInt64 = 0
    private(set) var completed: UInt64 = 0
    private var buffer = [UInt8](repeating: 0, count: 65536)

    init(stack: Stack, address: StackAddress) throws(SocketError) {
        self.stack = stack
        listener = try stack.tcpListen(address: address.host, port: address.port, backlog: 32)
    }

    func acceptable(_ l: TCPListenerID) -> Bool {
        guard l == listener else { return false }
        while let id = stack.tcpAccept(listener) {
            guard streams.count < maxConnections else {
                refused &+= 1
                stack.tcpAbort(id)
                continue
            }
            streams[id] = Stream(lastActivity: .now)
            _ = handle(id)
        }
        return true
    }

    func handle(_ id: TCPSocketID) -> Bool {
        guard var s = streams[id] else { return false }
        let notices = stack.tcpTakeNotices(id)
        s.lastActivity = .now
        defer { if streams[id] != nil { streams[id] = s } }
        // Read: the header line, then (uploads) the data.
        while true {
            let n = buffer.withUnsafeMutableBytes { stack.tcpReceive(id, into: $0) }
            if n == 0 { break }
            var start = 0
            if case .header = s.mode {
                while start < n && buffer[start] != 0x0A { s.line.append(buffer[start]); start += 1 }
                if s.line.count > 128 { return end(id, abort: true) }
                guard start < n else { continue }
                start += 1
                guard let mode = Self.parse(String(decoding: s.line, as: UTF8.self)) else { return end(id, abort: true) }
                s.mode = mode
            }
            if case .upload = s.mode, start < n {
                buffer[start..<n].withUnsafeBytes { s.hash.update(bufferPointer: $0) }
                s.bytes += n - start
            }
        }
        switch s.mode {
        case .header:
            if stack.tcpAtEnd(id) { return end(id, abort: false) }
        case .upload:
            if stack.tcpAtEnd(id) && s.reply.isEmpty {
                let digest = s.hash.finalize().map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
                s.reply = Array("ok \(s.bytes) \(digest)\n".utf8)
            }
            if !s.reply.isEmpty {
                let n = s.reply.withUnsafeBytes { stack.tcpSend(id, $0) }
                s.reply.removeFirst(n)
                if s.reply.isEmpty {
                    completed &+= 1
                    return end(id, abort: false)
                }
            }
        case .download(let remaining):
            var left = remaining
            while left.map({ $0 > 0 }) ?? !stack.tcpAtEnd(id) {
                let chunk = min(65536 - s.offset, left ?? Int.max)
                let n = BandwidthPattern.block[s.offset..<(s.offset + chunk)].withUnsafeBytes { stack.tcpSend(id, $0) }
                if n == 0 { break }
                s.offset = (s.offset + n) % 65536
                s.bytes += n
                left = left.map { $0 - n }
            }
            s.mode = .download(remaining: left)
            if left == 0 || (left == nil && stack.tcpAtEnd(id)) {
                completed &+= 1
                return end(id, abort: false)
            }
        }
        if notices.contains(.closed) || stack.tcpInfo(id) == nil { return end(id, abort: false) }
        return true
    }

    private static func parse(_ line: String) -> Mode? {
        let words = line.split(separator: " ")
        guard words.count >= 3, "\(words[0]) \(words[1])" == BandwidthPattern.header else { return nil }
        switch words[2] {
        case "upload" where words.count == 3: return .upload
        case "download" where words.count == 4:
            guard let n = Int(words[3]), n >= 0 else { return nil }
            return .download(remaining: n == 0 ? nil : n)
        default: return nil
        }
    }

    private func end(_ id: TCPSocketID, abort: Bool) -> Bool {
        streams[id] = nil
        if abort { stack.tcpAbort(id) } else { stack.tcpClose(id) }
        return true
    }

    func sweep(now: ContinuousClock.Instant) {
        for (id, s) in streams where now - s.lastActivity > .seconds(30) { _ = end(id, abort: true) }
    }

    func close() {
        for id in streams.keys { stack.tcpAbort(id) }
        streams = [:]
        stack.tcpCloseListener(listener)
    }
}

/// One run of the bandwidth test from this appliance's stack: `streams`
/// connections upload to the peer's responder for `seconds`.
final class BandwidthTestRun: StackTCPService {
    let stack: Stack
    let peer: StackAddress
    let seconds: Int
    private var ids: [TCPSocketID] = []
    private var offsets: [TCPSocketID: Int] = [:]
    private var headerSent: Set<TCPSocketID> = []
    private(set) var started: ContinuousClock.Instant = .now
    private var firstEstablished: ContinuousClock.Instant?
    private(set) var result: BandwidthTestInfo
    private var finished = false

    init(stack: Stack, peer: StackAddress, seconds: Int, streams: Int) throws(SocketError) {
        self.stack = stack
        self.peer = peer
        self.seconds = seconds
        result = BandwidthTestInfo(peer: "\(peer)", streams: streams, seconds: 0, state: "running", bytes: 0, bitsPerSecond: 0,
                                   retransmits: 0, rttMilliseconds: 0, error: nil)
        do {
            for _ in 0..<streams { ids.append(try stack.tcpConnect(to: peer.host, port: peer.port)) }
        } catch {
            for id in ids { stack.tcpAbort(id) }
            throw error
        }
    }

    func acceptable(_ listener: TCPListenerID) -> Bool { false }

    func handle(_ id: TCPSocketID) -> Bool {
        guard ids.contains(id) else { return false }
        let notices = stack.tcpTakeNotices(id)
        if finished { return true }
        if notices.contains(.closed) || stack.tcpInfo(id).map({ $0.state == .closed }) ?? true {
            let reason = stack.tcpInfo(id)?.closeReason
            fail("stream to \(peer) \(reason.map { "ended: \($0.rawValue)" } ?? "closed")")
            return true
        }
        guard let info = stack.tcpInfo(id), info.state == .established else { return true }
        if firstEstablished == nil { firstEstablished = .now }
        if !headerSent.contains(id) {
            let h = Array("\(BandwidthPattern.header) upload\n".utf8)
            guard h.withUnsafeBytes({ stack.tcpSend(id, $0) }) == h.count else { return true }
            headerSent.insert(id)
        }
        var off = offsets[id] ?? 0
        while true {
            let n = BandwidthPattern.block[off...].withUnsafeBytes { stack.tcpSend(id, $0) }
            if n == 0 { break }
            off = (off + n) % 65536
        }
        offsets[id] = off
        return true
    }

    /// Ends the run when its time is up (and one that never connected after 10 s).
    func sweep(now: ContinuousClock.Instant) {
        guard !finished else { return }
        if let begun = firstEstablished {
            if now - begun >= .seconds(seconds) { finish(now: now) }
        } else if now - started > .seconds(10) {
            fail("no connection to \(peer) within 10 s")
        }
    }

    private func finish(now: ContinuousClock.Instant) {
        var bytes = 0, retransmits: UInt64 = 0, rtt: Int64 = 0, n = 0
        for id in ids {
            guard let i = stack.tcpInfo(id) else { continue }
            // What the peer acknowledged: sent, less what is still in flight, less the header line.
            bytes += max(0, Int(i.counters.bytesSent) - i.unacknowledged - BandwidthPattern.header.utf8.count - 8)
            retransmits += i.counters.retransmits
            rtt += i.smoothedRTT
            n += 1
        }
        let elapsed = now - (firstEstablished ?? started)
        let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        result.seconds = secs
        result.bytes = bytes
        result.bitsPerSecond = secs > 0 ? Double(bytes) * 8 / secs : 0
        result.retransmits = retransmits
        result.rttMilliseconds = n > 0 ? Double(rtt) / Double(n) / 1e6 : 0
        result.state = "done"
        finished = true
        for id in ids { stack.tcpAbort(id) }
    }

    private func fail(_ why: String) {
        finished = true
        result.state = "failed"
        result.error = why
        for id in ids { stack.tcpAbort(id) }
    }

    var isFinished: Bool { finished }

    func close() {
        if !finished { fail("stopped") }
    }
}
