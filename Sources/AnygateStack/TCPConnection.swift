public import AnygateWire

/// A TCP connection's state (RFC 9293 section 3.3.2). A listener is not a
/// connection: half-open ones live in the SYN cache (`TCPSynCache`), and a
/// connection that closed into TIME-WAIT may live on as a vestige (`Vestiges`).
public enum TCPState: String, Sendable, CaseIterable {
    case closed
    case synSent = "syn-sent"
    case synReceived = "syn-received"
    case established
    case finWait1 = "fin-wait-1"
    case finWait2 = "fin-wait-2"
    case closeWait = "close-wait"
    case closing
    case lastAck = "last-ack"
    case timeWait = "time-wait"

    /// Whether the handshake completed (RFC 9293 calls these synchronized).
    var synchronized: Bool {
        switch self {
        case .closed, .synSent, .synReceived: false
        default: true
        }
    }
}

/// Why a connection ended.
public enum TCPCloseReason: String, Sendable {
    /// Both sides closed (FINs exchanged and acknowledged).
    case normal
    /// The peer reset it.
    case reset
    /// The peer never answered (handshake, retransmissions or keepalives).
    case timedOut = "timed-out"
    /// The peer refused the connection (RST to our SYN).
    case refused
    /// The owner aborted it, or the stack had to (an interface went away).
    case aborted
}

/// What changed on a connection since the owner last looked.
public struct TCPNotices: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let established = TCPNotices(rawValue: 1)
    public static let readable = TCPNotices(rawValue: 2)
    public static let writable = TCPNotices(rawValue: 4)
    public static let closed = TCPNotices(rawValue: 8)
}

/// Sequence-space comparisons (RFC 9293 section 3.4: modulo 2^32).
@inline(__always) func seqLT(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }
@inline(__always) func seqLE(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) <= 0 }
@inline(__always) func seqGT(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) > 0 }
@inline(__always) func seqGE(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) >= 0 }
@inline(__always) func seqDistance(_ from: UInt32, _ to: UInt32) -> Int { Int(Int32(bitPattern: to &- from)) }

/// One received segment, as the connection needs it.
struct TCPSegment {
    var sequence: UInt32
    var acknowledgment: UInt32
    var flags: UInt8
    var window: UInt16
    var options: TCPOptions
    var payload: UnsafeRawBufferPointer

    var syn: Bool { flags & TCPHeader.flagSYN != 0 }
    var fin: Bool { flags & TCPHeader.flagFIN != 0 }
    var rst: Bool { flags & TCPHeader.flagRST != 0 }
    var ack: Bool { flags & TCPHeader.flagACK != 0 }
    /// Sequence space the segment occupies (RFC 9293 SEG.LEN).
    var length: Int { payload.count + (syn ? 1 : 0) + (fin ? 1 : 0) }
}

/// Where a connection's segments go: the stack, or a test's list.
protocol TCPTransmitter {
    /// Sends a segment: `repr`, then `length` bytes of `data` from logical
    /// offset `offset`. Returns false when it could not (no buffer, no route).
    func transmit(_ c: TCPConnection, _ repr: TCPRepr, data: ByteRing?, offset: Int, length: Int) -> Bool
    /// Whether another challenge ACK may go now (RFC 5961 section 7: one
    /// budget for the whole stack); counts it either way.
    func mayChallenge(now: Int64) -> Bool
}

/// The limits and timers of the stack's TCP (`stack.tcp`).
public struct TCPSettings: Sendable, Hashable {
    /// Bytes of each connection's send and receive buffers.
    public var sendBuffer = 256 * 1024
    public var receiveBuffer = 256 * 1024
    /// RFC 6298's bounds; the minimum is Linux's 200 ms rather than the RFC's 1 s.
    public var minimumRTO: Int64 = 200_000_000
    public var maximumRTO: Int64 = 60_000_000_000
    public var initialRTO: Int64 = 1_000_000_000
    /// How long an ACK may wait for a second segment (RFC 9293 3.8.6.3: under 0.5 s).
    public var delayedACK: Int64 = 40_000_000
    /// Retransmissions of a SYN, and of data, before the connection is given up.
    public var synRetries = 6
    public var dataRetries = 10
    /// RFC 6928's initial window, in segments.
    public var initialWindow = 10
    /// Keepalive (RFC 9293 3.8.4) for connections that ask for it.
    public var keepaliveIdle: Int64 = 60_000_000_000
    public var keepaliveInterval: Int64 = 10_000_000_000
    public var keepaliveProbes = 5
    public init() {}
}

/// Counters one connection keeps.
public struct TCPConnectionCounters: Hashable, Sendable {
    public var segmentsSent: UInt64 = 0
    public var segmentsReceived: UInt64 = 0
    public var bytesSent: UInt64 = 0
    public var bytesReceived: UInt64 = 0
    /// Segments sent again (by timeout, fast retransmit or SACK recovery).
    public var retransmits: UInt64 = 0
    public var timeouts: UInt64 = 0
    public var fastRecoveries: UInt64 = 0
    /// Segments that arrived out of order and were kept.
    public var outOfOrder: UInt64 = 0
    /// Challenge ACKs sent (RFC 5961).
    public var challengeACKs: UInt64 = 0
    public init() {}
}

/// A connection's transmission control block (RFC 9293 section 3.3.1)
/// and its buffers. It never touches packets: segments come in as
/// `TCPSegment`s and go out through a `TCPTransmitter`.
final class TCPConnection {
    let settings: TCPSettings
    let ipv6: Bool
    let localPort: UInt16
    let remotePort: UInt16
    var state: TCPState
    var closeReason: TCPCloseReason? = nil
    var notices: TCPNotices = []
    /// Whether the slot waits in `TCPTable.noticed`.
    var queuedNotice = false
    /// Where the stack keeps it: its slot, four-tuple and cached route.
    var slot = -1
    var local: IPAddress = .v4(.any)
    var remote: IPAddress = .v4(.any)
    var route = RouteCache()
    /// The owner let go of it (`tcpClose`): it ends on its own, and a
    /// TIME-WAIT becomes a vestige.
    var released = false
    /// The listener it waits on until accepted.
    var listener: Int? = nil

    // Send sequence space.
    let iss: UInt32
    var sndUna: UInt32
    var sndNxt: UInt32
    /// The highest sequence number sent (after a timeout `sndNxt` goes back; this does not).
    var sndMax: UInt32
    var sndWnd = 0
    var maxSndWnd = 0
    var sndWl1: UInt32 = 0
    var sndWl2: UInt32 = 0
    var sndScale: UInt8 = 0
    /// The largest payload of a segment we send (options excluded).
    var mss: Int
    let sendRing: ByteRing
    /// The owner closed its side: a FIN follows the data.
    var finQueued = false
    /// Our FIN's sequence number (set when it is queued).
    var finSequence: UInt32 = 0

    // Receive sequence space.
    var irs: UInt32 = 0
    var rcvNxt: UInt32 = 0
    var rcvScale: UInt8 = 0
    /// The right edge last advertised (never moved left: RFC 9293 3.8.6.2.2).
    var rcvAdv: UInt32 = 0
    let receiveRing: ByteRing
    /// Out-of-order data held past `rcvNxt`, sorted, at most `maxOutOfOrder` ranges.
    var outOfOrder: [TCPSACKBlock] = []
    static let maxOutOfOrder = 8
    /// The range the latest out-of-order segment went to (the first SACK block, RFC 2018).
    var latestOutOfOrder: TCPSACKBlock? = nil
    /// A FIN that arrived ahead of data still missing.
    var pendingFIN: UInt32? = nil
    /// The owner no longer reads: what arrives is acknowledged and discarded.
    var receiveClosed = false

    // Options negotiated at the handshake.
    var timestamps = false
    var sackPermitted = false
    var tsRecent: UInt32 = 0
    let tsOffset: UInt32
    var lastACKSent: UInt32 = 0

    // Loss recovery and congestion control (RFC 5681, 6582, 6675).
    var cwnd: Int
    var ssthresh = Int.max
    var bytesAckedInAvoidance = 0
    var dupACKs = 0
    var inRecovery = false
    var recoveryPoint: UInt32 = 0
    var highRetransmitted: UInt32 = 0
    /// What the peer SACKed above `sndUna`, sorted, at most `maxScoreboard` ranges.
    var scoreboard: [TCPSACKBlock] = []
    static let maxScoreboard = 8

    // RTT (RFC 6298), measured on one segment at a time (Karn).
    var srtt: Int64 = 0
    var rttvar: Int64 = 0
    var rto: Int64
    var timing = false
    var timedSequence: UInt32 = 0
    var timedAt: Int64 = 0
    var rttSamples = 0

    // Timers (0: not armed).
    var retransmitDeadline: Int64 = 0
    var delayedACKDeadline: Int64 = 0
    var persistDeadline: Int64 = 0
    var keepaliveDeadline: Int64 = 0
    var timeWaitDeadline: Int64 = 0
    var retries = 0
    var keepalive = false
    var keepaliveProbesSent = 0
    var lastReceived: Int64 = 0
    /// ACK owed now (out-of-order data, a window update, a duplicate).
    var ackNow = false
    /// Full-size segments received since the last ACK.
    var unackedSegments = 0
    /// The maximum segment lifetime this connection was classed with (MSLT).
    var msl: Int64 = 30_000_000_000
    var mslClass: MSLClass = .remote
    /// Classed at establishment (`Stack.afterActivity`).
    var mslClassPending = true
    /// The buffers went back when TIME-WAIT began.
    var ringsReleased = false

    var counters = TCPConnectionCounters()

    init(settings: TCPSettings, ipv6: Bool, localPort: UInt16, remotePort: UInt16, iss: UInt32, tsOffset: UInt32, mss: Int,
         state: TCPState, now: Int64) {
        self.settings = settings
        self.ipv6 = ipv6
        self.localPort = localPort
        self.remotePort = remotePort
        self.iss = iss
        self.tsOffset = tsOffset
        self.mss = mss
        self.state = state
        sndUna = iss
        sndNxt = iss
        sndMax = iss
        sendRing = ByteRing(capacity: settings.sendBuffer)
        receiveRing = ByteRing(capacity: settings.receiveBuffer)
        cwnd = settings.initialWindow * mss
        rto = settings.initialRTO
        lastReceived = now
        outOfOrder.reserveCapacity(TCPConnection.maxOutOfOrder + 1)
        scoreboard.reserveCapacity(TCPConnection.maxScoreboard + 1)
        var s: UInt8 = 0
        while s < TCPHeader.maxWindowScale && (settings.receiveBuffer >> Int(s)) > 65535 { s += 1 }
        rcvScale = s
    }

    /// The window shift we offer in our SYN.
    var offeredScale: UInt8 { rcvScale }

    /// Free receive buffer: the window (RFC 9293 RCV.WND).
    var receiveWindow: Int { receiveRing.capacity - receiveRing.count }

    /// Bytes sent and not yet acknowledged (FlightSize).
    var outstanding: Int { seqDistance(sndUna, sndNxt) }

    /// The earliest armed timer, or 0.
    var nextDeadline: Int64 {
        func earlier(_ a: Int64, _ b: Int64) -> Int64 { a == 0 ? b : b == 0 ? a : min(a, b) }
        return earlier(earlier(earlier(retransmitDeadline, delayedACKDeadline), earlier(persistDeadline, keepaliveDeadline)),
                       timeWaitDeadline)
    }

    func timestampValue(now: Int64) -> UInt32 { UInt32(truncatingIfNeeded: now / 1_000_000) &+ tsOffset }

    /// Options for a segment that is not a SYN: timestamps, and SACK blocks
    /// when data is held out of order.
    func segmentOptions(now: Int64) -> TCPOptions {
        var o = TCPOptions()
        if timestamps { o.timestamp = TCPTimestamp(value: timestampValue(now: now), echo: tsRecent) }
        if sackPermitted && !outOfOrder.isEmpty {
            let limit = timestamps ? 3 : 4
            if let first = latestOutOfOrder { o.appendSACK(first) }
            for b in outOfOrder.reversed() where o.sackCount < limit && b != latestOutOfOrder { o.appendSACK(b) }
        }
        return o
    }

    /// The window field for what we send now (scaled, never shrinking the edge).
    func advertise() -> UInt16 {
        var wnd = receiveWindow
        let edge = rcvNxt &+ UInt32(truncatingIfNeeded: wnd)
        if seqLT(edge, rcvAdv) { wnd = seqDistance(rcvNxt, rcvAdv) }
        // A SYN's window is never scaled (RFC 7323 section 2.2).
        let shift = state.synchronized ? Int(rcvScale) : 0
        let field = min(wnd >> shift, 65535)
        let advertised = rcvNxt &+ UInt32(field << shift)
        if seqGT(advertised, rcvAdv) { rcvAdv = advertised }
        return UInt16(field)
    }

    func closeConnection(_ reason: TCPCloseReason) {
        guard state != .closed else { return }
        state = .closed
        closeReason = reason
        notices.insert(.closed)
        retransmitDeadline = 0; delayedACKDeadline = 0; persistDeadline = 0; keepaliveDeadline = 0; timeWaitDeadline = 0
    }
}
