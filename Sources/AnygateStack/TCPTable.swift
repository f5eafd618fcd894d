public import AnygateWire

extension StackConfiguration {
    /// `stack.tcp` in the configuration file.
    public struct TCP: Sendable, Hashable {
        public var settings = TCPSettings()
        /// Connections the stack holds at once, TIME-WAIT ones kept whole included.
        public var maxConnections = 1024
        /// Half-open connections remembered per stack; past it SYN cookies answer (RFC 4987).
        public var synCacheSize = 512
        /// Maximum segment lifetimes per MSL class (TIME-WAIT lasts twice as long).
        public var mslLoopback = Interval.seconds(1)
        public var mslLocal = Interval.seconds(5)
        public var mslRemote = Interval.seconds(30)
        /// MSLT: class connections by distance; off, every connection has the remote MSL.
        public var mslt = true
        /// VTW: TIME-WAIT connections become vestiges; off, they stay whole connections.
        public var vtw = true
        /// Vestiges per address family.
        public var timeWaitMax = 65536
        /// Challenge ACKs (RFC 5961 section 7) the stack sends per second at most.
        public var challengeACKsPerSecond = 1000
        public init() {}

        func msl(_ c: MSLClass) -> Int64 {
            switch c {
            case .loopback: mslLoopback.nanoseconds
            case .local: mslLocal.nanoseconds
            case .remote, .classless: mslRemote.nanoseconds
            }
        }
    }
}

/// A TCP four-tuple, local side first.
struct TCPKey: Hashable {
    var local: IPAddress
    var remote: IPAddress
    var localPort: UInt16
    var remotePort: UInt16
}

/// An open connection's handle. The generation tells a reused slot from
/// the connection that had it before.
public struct TCPSocketID: Hashable, Sendable, CustomStringConvertible {
    public let slot: Int
    public let generation: UInt32
    public var description: String { "tcp#\(slot).\(generation)" }
}

/// A listener's handle.
public struct TCPListenerID: Hashable, Sendable, CustomStringConvertible {
    public let value: Int
    public var description: String { "listener#\(value)" }
}

/// A listening socket: its address, who may connect, and the connections
/// that completed their handshake and wait for `tcpAccept`.
struct TCPListener {
    var address: IPAddress
    var port: UInt16
    var backlog: Int
    /// Sources allowed to connect (empty: any). SYNs from others are dropped, counted.
    var allow: [IPPrefix]
    var acceptQueue: [Int] = []
    var keepalive = false
    var counters = TCPListenerCounters()
}

/// What a listener counted.
public struct TCPListenerCounters: Hashable, Sendable {
    public var accepted: UInt64 = 0
    /// SYNs from sources outside the listener's allowed prefixes.
    public var refused: UInt64 = 0
    /// Handshakes completed while the accept queue was full (the ACK was dropped).
    public var overflows: UInt64 = 0
    public init() {}
}

/// A half-open connection remembered by the SYN cache: just what the
/// SYN said and what our SYN-ACK said, no buffers.
struct SynCacheEntry {
    var listener: Int
    var iss: UInt32
    var irs: UInt32
    var options: TCPOptions
    var window: UInt16
    var created: Int64
    var nextRetransmit: Int64
    var retransmits: Int
}

/// Counters of the stack's TCP as a whole.
public struct TCPStatistics: Hashable, Sendable {
    public var activeOpens: UInt64 = 0
    public var passiveOpens: UInt64 = 0
    public var failedOpens: UInt64 = 0
    public var resetsSent: UInt64 = 0
    public var resetsReceived: UInt64 = 0
    public var segmentsReceived: UInt64 = 0
    public var segmentsSent: UInt64 = 0
    public var retransmits: UInt64 = 0
    public var synCacheAdded: UInt64 = 0
    public var synCacheExpired: UInt64 = 0
    public var cookiesSent: UInt64 = 0
    public var cookiesAccepted: UInt64 = 0
    public var cookiesRejected: UInt64 = 0
    public var challengeACKs: UInt64 = 0
    public var challengeACKsSuppressed: UInt64 = 0
    /// Segments answered or absorbed by a vestige.
    public var vestigeSegments: UInt64 = 0
    /// New SYNs accepted on a vestige's four-tuple (RFC 6191).
    public var vestigesReopened: UInt64 = 0
    /// TIME-WAIT connections right now, as vestiges and as whole connections.
    public var vestiges = 0
    public var timeWaitConnections = 0
    public var connections = 0
    public var synCacheEntries = 0
    public var vestige4 = VestigeStatistics()
    public var vestige6 = VestigeStatistics()
    public init() {}
}

/// The stack's TCP state: connections by slot and by four-tuple,
/// listeners, the SYN cache and the vestiges.
final class TCPTable {
    var configuration: StackConfiguration.TCP
    var connections: [TCPConnection?]
    var generations: [UInt32]
    var freeSlots: [Int]
    var byKey: [TCPKey: Int] = [:]
    var listeners: [TCPListener?] = []
    var synCache: [TCPKey: SynCacheEntry] = [:]
    var vestiges4: Vestiges<UInt32>
    var vestiges6: Vestiges<IPv6Address>
    /// Keys of RFC 6528's sequence numbers and RFC 4987's cookies.
    let secret: SipHash
    /// The start of the vestiges' millisecond clock.
    let epoch: Int64
    var challengeBucket: TokenBucket
    var statistics = TCPStatistics()
    /// Slots with notices for their owner, each once.
    var noticed: [Int] = []
    /// When the earliest timer of any connection or SYN cache entry may be due (0: none).
    var nextTimer: Int64 = 0
    var nextEphemeral: UInt16

    init(configuration: StackConfiguration.TCP, random: () -> UInt64, now: Int64) {
        self.configuration = configuration
        let n = configuration.maxConnections
        connections = Array(repeating: nil, count: n)
        generations = Array(repeating: 0, count: n)
        freeSlots = Array((0..<n).reversed())
        secret = SipHash(k0: random(), k1: random())
        vestiges4 = Vestiges(capacity: max(configuration.timeWaitMax, 4), mslt: configuration.mslt, key0: random(), key1: random())
        vestiges6 = Vestiges(capacity: max(min(configuration.timeWaitMax, 16384), 4), mslt: configuration.mslt,
                             key0: random(), key1: random())
        epoch = now
        challengeBucket = TokenBucket(rate: configuration.challengeACKsPerSecond, burst: configuration.challengeACKsPerSecond,
                                      now: now)
        nextEphemeral = UInt16(truncatingIfNeeded: 49152 + random() % 16384)
        noticed.reserveCapacity(64)
    }

    func mayChallenge(now: Int64) -> Bool {
        if challengeBucket.take(now: now) {
            statistics.challengeACKs &+= 1
            return true
        }
        statistics.challengeACKsSuppressed &+= 1
        return false
    }

    func id(_ slot: Int) -> TCPSocketID { TCPSocketID(slot: slot, generation: generations[slot]) }

    func connection(_ id: TCPSocketID) -> TCPConnection? {
        guard id.slot >= 0 && id.slot < connections.count, generations[id.slot] == id.generation else { return nil }
        return connections[id.slot]
    }

    /// Milliseconds of the vestiges' clock at `now`.
    func vestigeClock(_ now: Int64) -> UInt32 { UInt32(truncatingIfNeeded: max(0, now - epoch) / 1_000_000) &+ 1 }

    /// RFC 6528: ISN = M + F(four-tuple, secret), M a 4-microsecond clock.
    func initialSequence(_ key: TCPKey, now: Int64) -> UInt32 {
        let f = secret.hash(key.local.hashWord, key.remote.hashWord, UInt64(key.localPort) << 16 | UInt64(key.remotePort))
        return UInt32(truncatingIfNeeded: f) &+ UInt32(truncatingIfNeeded: now / 4000)
    }

    /// A per-connection timestamp offset (RFC 7323 section 7.1), derived
    /// from the four-tuple so that a vestige needs not keep it.
    func timestampOffset(_ key: TCPKey) -> UInt32 {
        UInt32(truncatingIfNeeded: secret.hash(key.remote.hashWord, key.local.hashWord,
                                               UInt64(key.remotePort) << 16 | UInt64(key.localPort)) >> 32)
    }

    func schedule(_ deadline: Int64) {
        guard deadline != 0 else { return }
        if nextTimer == 0 || deadline < nextTimer { nextTimer = deadline }
    }

    func notice(_ slot: Int) {
        guard let c = connections[slot], !c.notices.isEmpty, !c.queuedNotice else { return }
        c.queuedNotice = true
        noticed.append(slot)
    }
}

extension IPAddress {
    /// 64 bits of the address for hashing.
    var hashWord: UInt64 {
        switch self {
        case .v4(let a): UInt64(a.rawValue)
        case .v6(let a): a.high ^ (a.low &* 0x9E37_79B9_7F4A_7C15)
        }
    }
}
