public import Foundation

/// The control protocol between `anygatectl` and `anygated`, over a Unix
/// stream socket (default `/run/anygate/control.sock`, mode 0600):
///
/// 1. the client connects and writes one request: a JSON object on one line;
/// 2. the daemon answers with one JSON object on one line and closes.
///
/// A response is `{"ok": true, "result": …}` or `{"ok": false, "error": "…"}`;
/// the result's shape depends on the request (the `*Info` types below).
/// Keys are lowerCamelCase. See docs/control-protocol.md.
public struct ControlRequest: Codable, Equatable, Sendable {
    public var verb: Verb
    /// For `show`: interfaces, addresses, routes, neighbors or stats.
    public var what: String?
    /// For routes: the prefix, next hop, interface and metric.
    public var prefix: String?
    public var via: String?
    public var dev: String?
    public var metric: UInt32?
    /// For `address-preference`: the address and its new preference.
    public var address: String?
    public var preference: Int?
    /// For `explain-source` and `explain-route`: the destination.
    public var destination: String?
    /// For `explain-route`: the packet's source and ports (optional).
    public var source: String?
    public var sourcePort: UInt16?
    public var destinationPort: UInt16?
    /// For `trace-start`: how many packets, and which (`dev` names the arrival interface).
    public var count: Int?
    public var filter: String?
    /// For `bandwidth-test`: how long (`count` is the number of streams).
    public var seconds: Int?
    /// Over `control.listen` (the stack's TCP): the token from the daemon's token file.
    public var token: String?
    /// For `capture-start`: rx, tx or both (default), and how many bytes of each packet.
    public var direction: String?
    public var snaplen: Int?

    public enum Verb: String, Codable, Sendable {
        case show
        case routeAdd = "route-add"
        case routeDel = "route-del"
        case reload
        case flowsFlush = "flows-flush"
        case addressPreference = "address-preference"
        case explainSource = "explain-source"
        case explainRoute = "explain-route"
        /// Arms a trace (replacing one in progress); `trace-show` reads it, `trace-stop` ends it.
        case traceStart = "trace-start"
        case traceShow = "trace-show"
        case traceStop = "trace-stop"
        /// Starts a bandwidth test to `destination` (ADDR[:PORT], default
        /// port 5201) with `count` streams for `seconds`; `bandwidth-test-show` reads it.
        case bandwidthTest = "bandwidth-test"
        case bandwidthTestShow = "bandwidth-test-show"
        /// Starts a capture on `dev` (`direction`, `count`, `snaplen`,
        /// `filter`: a tcpdump expression); `capture-read` takes what it
        /// copied since the last read; `capture-stop` ends it. A capture
        /// nobody reads for 10 seconds ends by itself.
        case captureStart = "capture-start"
        case captureRead = "capture-read"
        case captureStop = "capture-stop"
    }

    public init(verb: Verb, what: String? = nil, prefix: String? = nil, via: String? = nil, dev: String? = nil, metric: UInt32? = nil,
                address: String? = nil, preference: Int? = nil, destination: String? = nil, source: String? = nil,
                sourcePort: UInt16? = nil, destinationPort: UInt16? = nil, count: Int? = nil, filter: String? = nil,
                seconds: Int? = nil, token: String? = nil, direction: String? = nil, snaplen: Int? = nil) {
        self.verb = verb; self.what = what; self.prefix = prefix; self.via = via; self.dev = dev; self.metric = metric
        self.address = address; self.preference = preference; self.destination = destination
        self.source = source; self.sourcePort = sourcePort; self.destinationPort = destinationPort
        self.count = count; self.filter = filter
        self.seconds = seconds; self.token = token
        self.direction = direction; self.snaplen = snaplen
    }

    public static let showTopics = ["interfaces", "addresses", "routes", "neighbors", "flows", "tunnels", "mirror", "stats", "sas"]
}

public struct ControlResponse<Result: Codable>: Codable {
    public var ok: Bool
    public var error: String?
    public var result: Result?

    public init(ok: Bool, error: String? = nil, result: Result? = nil) {
        self.ok = ok; self.error = error; self.result = result
    }
}

/// A bandwidth test from the appliance's stack (`bandwidth-test`).
public struct BandwidthTestInfo: Codable, Equatable, Sendable {
    public var peer: String
    public var streams: Int
    /// How long it ran, from the first connection established.
    public var seconds: Double
    /// running | done | failed
    public var state: String
    /// Bytes the peer acknowledged, over all streams.
    public var bytes: Int
    public var bitsPerSecond: Double
    public var retransmits: UInt64
    /// The streams' mean smoothed RTT at the end.
    public var rttMilliseconds: Double
    public var error: String?
    public init(peer: String, streams: Int, seconds: Double, state: String, bytes: Int, bitsPerSecond: Double, retransmits: UInt64,
                rttMilliseconds: Double, error: String?) {
        self.peer = peer; self.streams = streams; self.seconds = seconds; self.state = state; self.bytes = bytes
        self.bitsPerSecond = bitsPerSecond; self.retransmits = retransmits; self.rttMilliseconds = rttMilliseconds; self.error = error
    }
}

/// A capture that started (`capture-start`).
public struct CaptureInfo: Codable, Equatable, Sendable {
    public var interface: String
    /// The capture file's link type: 1 Ethernet, 101 raw IP (a tunnel's inner packets).
    public var linkType: UInt16
    public var snaplen: Int
    /// rx | tx | both
    public var direction: String
    public var filter: String
    public init(interface: String, linkType: UInt16, snaplen: Int, direction: String, filter: String) {
        self.interface = interface; self.linkType = linkType; self.snaplen = snaplen; self.direction = direction; self.filter = filter
    }
}

/// One captured packet: nanoseconds since 1970, which way, its whole
/// length, and the bytes kept (base64 in JSON).
public struct CaptureRecord: Codable, Equatable, Sendable {
    public var time: Int64
    public var outbound: Bool
    public var length: Int
    public var data: Data
    public init(time: Int64, outbound: Bool, length: Int, data: Data) {
        self.time = time; self.outbound = outbound; self.length = length; self.data = data
    }
}

/// What a capture copied since the last read (`capture-read`).
public struct CaptureChunk: Codable, Equatable, Sendable {
    public var packets: [CaptureRecord]
    /// Copies lost so far because the reader was slow (the packets themselves went on).
    public var lost: UInt64
    /// The capture has its count, or its interface went away: nothing more will come.
    public var finished: Bool
    public init(packets: [CaptureRecord], lost: UInt64, finished: Bool) {
        self.packets = packets; self.lost = lost; self.finished = finished
    }
}

/// An empty result, for requests that only succeed or fail.
public struct Done: Codable, Equatable, Sendable {
    public var message: String
    public init(message: String) { self.message = message }
}

public struct RouteInfo: Codable, Equatable, Sendable {
    public var prefix: String
    public var nextHop: String?
    public var interface: String
    public var metric: UInt32
    /// connected | static | mirror | tunnel
    public var origin: String
    /// This route's share of its ECMP set.
    public var weight: Int
    /// The ECMP set this route belongs to, as it forwards now (every member
    /// of the prefix's set when this route is one of them; empty when the
    /// route does not forward: a worse metric, or withdrawn).
    public var nextHops: [NextHop]

    public struct NextHop: Codable, Equatable, Sendable {
        public var address: String?
        public var interface: String
        public var weight: Int
        public init(address: String?, interface: String, weight: Int) {
            self.address = address; self.interface = interface; self.weight = weight
        }
        enum CodingKeys: String, CodingKey { case address, interface, weight }
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(address, forKey: .address)
            try c.encode(interface, forKey: .interface)
            try c.encode(weight, forKey: .weight)
        }
    }

    public init(prefix: String, nextHop: String?, interface: String, metric: UInt32, origin: String, weight: Int = 1,
                nextHops: [NextHop] = []) {
        self.prefix = prefix; self.nextHop = nextHop; self.interface = interface; self.metric = metric; self.origin = origin
        self.weight = weight; self.nextHops = nextHops
    }

    // nextHop is always present, as null for on-link routes.
    enum CodingKeys: String, CodingKey { case prefix, nextHop, interface, metric, origin, weight, nextHops }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        prefix = try c.decode(String.self, forKey: .prefix)
        nextHop = try c.decodeIfPresent(String.self, forKey: .nextHop)
        interface = try c.decode(String.self, forKey: .interface)
        metric = try c.decode(UInt32.self, forKey: .metric)
        origin = try c.decode(String.self, forKey: .origin)
        weight = try c.decodeIfPresent(Int.self, forKey: .weight) ?? 1
        nextHops = try c.decodeIfPresent([NextHop].self, forKey: .nextHops) ?? []
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(prefix, forKey: .prefix)
        try c.encode(nextHop, forKey: .nextHop)
        try c.encode(interface, forKey: .interface)
        try c.encode(metric, forKey: .metric)
        try c.encode(origin, forKey: .origin)
        try c.encode(weight, forKey: .weight)
        try c.encode(nextHops, forKey: .nextHops)
    }
}

public struct AddressInfo: Codable, Equatable, Sendable {
    /// "10.1.0.1/24"
    public var address: String
    public var preference: Int
    /// Only in `show addresses`: the interface that holds it, and the
    /// IPSELSRC policy in force there ("none" without one) and its origin
    /// (interface, default or none).
    public var interface: String?
    public var policy: String?
    public var policyOrigin: String?
    /// IPv6 only: tentative (duplicate address detection runs), preferred
    /// or duplicated.
    public var state: String?
    public init(address: String, preference: Int, interface: String? = nil, policy: String? = nil, policyOrigin: String? = nil,
                state: String? = nil) {
        self.address = address; self.preference = preference; self.interface = interface
        self.policy = policy; self.policyOrigin = policyOrigin; self.state = state
    }
}

public struct InterfaceCountersInfo: Codable, Equatable, Sendable {
    public var rxPackets: UInt64
    public var rxBytes: UInt64
    public var txPackets: UInt64
    public var txBytes: UInt64
    public var rxDrops: UInt64
    public var txDrops: UInt64
    public var forwarded: UInt64
    /// Port (host device) counters.
    public var txErrors: UInt64
    public var rxNoBuffer: UInt64
    public init(rxPackets: UInt64, rxBytes: UInt64, txPackets: UInt64, txBytes: UInt64, rxDrops: UInt64, txDrops: UInt64,
                forwarded: UInt64, txErrors: UInt64, rxNoBuffer: UInt64) {
        self.rxPackets = rxPackets; self.rxBytes = rxBytes; self.txPackets = txPackets; self.txBytes = txBytes
        self.rxDrops = rxDrops; self.txDrops = txDrops; self.forwarded = forwarded; self.txErrors = txErrors
        self.rxNoBuffer = rxNoBuffer
    }
}

public struct InterfaceInfo: Codable, Equatable, Sendable {
    public var name: String
    public var index: Int
    public var mac: String
    public var mtu: Int
    public var up: Bool
    /// "tap ag-lan0" or "packet eth1".
    public var attach: String
    /// False while the host device is gone.
    public var attached: Bool
    public var addresses: [AddressInfo]
    /// Packets lost on this interface, by drop reason (non-zero ones): the
    /// stack's, and the port's and kernel's (`kernel-rx-queue`, `port-…`).
    public var drops: [String: UInt64]
    public var counters: InterfaceCountersInfo
    public init(name: String, index: Int, mac: String, mtu: Int, up: Bool, attach: String, attached: Bool,
                addresses: [AddressInfo], drops: [String: UInt64] = [:], counters: InterfaceCountersInfo) {
        self.name = name; self.index = index; self.mac = mac; self.mtu = mtu; self.up = up; self.attach = attach
        self.attached = attached; self.addresses = addresses; self.drops = drops; self.counters = counters
    }
}

public struct NeighborInfo: Codable, Equatable, Sendable {
    public var address: String
    public var mac: String?
    public var interface: String
    /// incomplete | reachable | stale
    public var state: String
    public var ageSeconds: Double
    public init(address: String, mac: String?, interface: String, state: String, ageSeconds: Double) {
        self.address = address; self.mac = mac; self.interface = interface; self.state = state; self.ageSeconds = ageSeconds
    }
}

/// One ipflow entry.
public struct FlowInfo: Codable, Equatable, Sendable {
    public var source: String
    public var destination: String
    public var tos: Int
    /// The ports in the flow's key (`ecmp-hash: l4`, TCP and UDP), else absent.
    public var sourcePort: Int?
    public var destinationPort: Int?
    public var interface: String
    public var nextHop: String
    public var packets: UInt64
    public var bytes: UInt64
    public var idleSeconds: Double
    /// False when a change has made it stale (its next packet refreshes it).
    public var valid: Bool
    /// The worker whose replica holds the flow (flows are per worker);
    /// absent with a single worker.
    public var worker: Int?
    /// An IPv6 flow's flow label (part of its key); absent for IPv4 flows.
    public var flowLabel: Int? = nil
    public init(source: String, destination: String, tos: Int, sourcePort: Int? = nil, destinationPort: Int? = nil,
                interface: String, nextHop: String, packets: UInt64, bytes: UInt64, idleSeconds: Double, valid: Bool,
                worker: Int? = nil) {
        self.worker = worker
        self.source = source; self.destination = destination; self.tos = tos; self.interface = interface
        self.sourcePort = sourcePort; self.destinationPort = destinationPort
        self.nextHop = nextHop; self.packets = packets; self.bytes = bytes; self.idleSeconds = idleSeconds; self.valid = valid
    }
}

/// The answer to `explain-source`: every candidate's score vector under the
/// policy in force, and which one wins and why.
public struct ExplainInfo: Codable, Equatable, Sendable {
    public struct Candidate: Codable, Equatable, Sendable {
        public var address: String
        public var preference: Int
        public var index: Int
        public var scores: [Int]
        public init(address: String, preference: Int, index: Int, scores: [Int]) {
            self.address = address; self.preference = preference; self.index = index; self.scores = scores
        }
    }
    public var destination: String
    public var interface: String
    /// The route that chose the interface; null when the interface was given.
    public var route: RouteInfo?
    public var policy: String
    public var policyOrigin: String
    public var scorers: [String]
    /// The address the route itself would use.
    public var incumbent: String
    public var candidates: [Candidate]
    public var chosen: String
    public var reason: String
    public init(destination: String, interface: String, route: RouteInfo?, policy: String, policyOrigin: String, scorers: [String],
                incumbent: String, candidates: [Candidate], chosen: String, reason: String) {
        self.destination = destination; self.interface = interface; self.route = route; self.policy = policy
        self.policyOrigin = policyOrigin; self.scorers = scorers; self.incumbent = incumbent; self.candidates = candidates
        self.chosen = chosen; self.reason = reason
    }
}

/// One IKE SA and its child SAs (`show sas`). SPIs are hex strings as
/// strongSwan prints them; keys are never part of it.
public struct SAInfo: Codable, Equatable, Sendable {
    /// The tunnel or ipsec link it protects.
    public var name: String
    public var peer: String
    /// idle | connecting | established | failed | closed
    public var state: String
    /// initiator | responder
    public var role: String?
    public var localId: String
    public var remoteId: String
    /// The IKE SA's transforms, once chosen.
    public var ike: String?
    /// ESP goes in UDP 4500 (RFC 3948), as configured (`encapsulation: udp`).
    public var natTraversal: Bool
    /// Why the last attempt failed or the SA closed.
    public var reason: String?
    public var children: [ChildSAInfo]
    /// IKE_SA_INIT requests answered with a cookie (a flood was on).
    public var cookiesSent: UInt64
    /// Child SAs rekeyed so far by this IKE SA.
    public var rekeys: Int
    /// Times the IKE SA itself was rekeyed.
    public var ikeRekeys: Int
    public init(name: String, peer: String, state: String, role: String?, localId: String, remoteId: String, ike: String?,
                natTraversal: Bool, reason: String?, children: [ChildSAInfo], cookiesSent: UInt64 = 0, rekeys: Int = 0, ikeRekeys: Int = 0) {
        self.ikeRekeys = ikeRekeys
        self.name = name; self.peer = peer; self.state = state; self.role = role; self.localId = localId; self.remoteId = remoteId
        self.ike = ike; self.natTraversal = natTraversal; self.reason = reason; self.children = children
        self.cookiesSent = cookiesSent; self.rekeys = rekeys
    }
}

public struct ChildSAInfo: Codable, Equatable, Sendable {
    public var localSpi: String
    public var remoteSpi: String
    /// installed | expiring | expired
    public var state: String
    /// esp
    public var `protocol`: String
    /// transport | tunnel
    public var mode: String
    public var algorithm: String
    public var esn: Bool
    public var bytesIn: UInt64
    public var bytesOut: UInt64
    public var packetsIn: UInt64
    public var packetsOut: UInt64
    public var replayDrops: UInt64
    public var authFailures: UInt64
    public var ageSeconds: Double
    /// Seconds until this side rekeys the child SA.
    public var rekeyInSeconds: Double
    public init(localSpi: String, remoteSpi: String, state: String, protocol: String, mode: String, algorithm: String, esn: Bool,
                bytesIn: UInt64, bytesOut: UInt64, packetsIn: UInt64, packetsOut: UInt64, replayDrops: UInt64, authFailures: UInt64,
                ageSeconds: Double, rekeyInSeconds: Double = 0) {
        self.rekeyInSeconds = rekeyInSeconds
        self.localSpi = localSpi; self.remoteSpi = remoteSpi; self.state = state; self.protocol = `protocol`; self.mode = mode
        self.algorithm = algorithm; self.esn = esn; self.bytesIn = bytesIn; self.bytesOut = bytesOut; self.packetsIn = packetsIn
        self.packetsOut = packetsOut; self.replayDrops = replayDrops; self.authFailures = authFailures; self.ageSeconds = ageSeconds
    }
}

/// One GRE tunnel.
public struct TunnelInfo: Codable, Equatable, Sendable {
    public var name: String
    /// up | down
    public var state: String
    /// Why it is down, when it is.
    public var reason: String?
    public var local: String
    public var remote: String
    public var key: UInt32?
    /// gre | gre-in-udp
    public var encapsulation: String
    /// stack | host
    public var backend: String
    public var mtu: Int
    /// The outer path MTU in force, and where it came from (interface,
    /// assumed, configured, "icmp from ADDR", host socket, underlay interface).
    public var pathMtu: Int
    public var pathMtuSource: String
    public var rpf: String
    public var sequence: Bool
    public var keepalive: String?
    public var counters: [String: UInt64]
    public init(name: String, state: String, reason: String?, local: String, remote: String, key: UInt32?, encapsulation: String,
                backend: String, mtu: Int, pathMtu: Int, pathMtuSource: String, rpf: String, sequence: Bool, keepalive: String?,
                counters: [String: UInt64]) {
        self.name = name; self.state = state; self.reason = reason; self.local = local; self.remote = remote; self.key = key
        self.encapsulation = encapsulation; self.backend = backend; self.mtu = mtu; self.pathMtu = pathMtu
        self.pathMtuSource = pathMtuSource; self.rpf = rpf; self.sequence = sequence
        self.keepalive = keepalive; self.counters = counters
    }
}

/// The netlink mirror's state.
public struct MirrorInfo: Codable, Equatable, Sendable {
    public struct Interface: Codable, Equatable, Sendable {
        public var name: String
        public var host: String
        /// Whether the host interface exists now.
        public var present: Bool
        public var up: Bool
        public init(name: String, host: String, present: Bool, up: Bool) {
            self.name = name; self.host = host; self.present = present; self.up = up
        }
    }
    public var enabled: Bool
    public var interfaces: [Interface]
    /// Imported host routes per "table/protocol".
    public var importedRoutes: [String: Int]
    public var skippedRoutes: UInt64
    public var eventsProcessed: UInt64
    public var resyncs: UInt64
    /// ISO 8601 time and reason of the last full resync.
    public var lastResync: String?
    public var lastResyncReason: String?
    /// The whole FIB (not only imported routes): prefixes and the bytes its
    /// lookup structure, route slots and prefix index hold.
    public var fibPrefixes: Int?
    public var fibBytes: Int?
    public init(enabled: Bool, interfaces: [Interface], importedRoutes: [String: Int], skippedRoutes: UInt64, eventsProcessed: UInt64,
                resyncs: UInt64, lastResync: String?, lastResyncReason: String?, fibPrefixes: Int? = nil, fibBytes: Int? = nil) {
        self.enabled = enabled; self.interfaces = interfaces; self.importedRoutes = importedRoutes; self.skippedRoutes = skippedRoutes
        self.eventsProcessed = eventsProcessed; self.resyncs = resyncs; self.lastResync = lastResync; self.lastResyncReason = lastResyncReason
        self.fibPrefixes = fibPrefixes; self.fibBytes = fibBytes
    }
}

public struct StatsInfo: Codable, Equatable, Sendable {
    /// Stack-wide counters by name (ipForwarded, icmpErrorsSent, …).
    public var counters: [String: UInt64]
    /// Drop counters by reason (no-route, ttl-expired, …); zero ones left out.
    public var drops: [String: UInt64]
    public var poolBuffersInUse: Int
    public var poolBuffers: Int
    public var uptimeSeconds: Double
    /// The packet ledger: every packet in equals every packet out, held or dropped.
    public var ledger: LedgerInfo
    /// Per worker, when several run (the figures above are their sums).
    public var workers: [WorkerStats]?
    public init(counters: [String: UInt64], drops: [String: UInt64], poolBuffersInUse: Int, poolBuffers: Int,
                uptimeSeconds: Double, ledger: LedgerInfo, workers: [WorkerStats]? = nil) {
        self.counters = counters; self.drops = drops; self.poolBuffersInUse = poolBuffersInUse
        self.poolBuffers = poolBuffers; self.uptimeSeconds = uptimeSeconds; self.ledger = ledger; self.workers = workers
    }
}

/// One worker's share (`show stats --json`, `workers`).
public struct WorkerStats: Codable, Equatable, Sendable {
    public var index: Int
    /// Frames its replica received and queued for transmit, over all interfaces.
    public var rxPackets: UInt64
    public var txPackets: UInt64
    /// ipflow entries in its replica.
    public var flows: Int
    /// Packets its replica dropped, all reasons.
    public var drops: UInt64
    public init(index: Int, rxPackets: UInt64, txPackets: UInt64, flows: Int, drops: UInt64) {
        self.index = index; self.rxPackets = rxPackets; self.txPackets = txPackets; self.flows = flows; self.drops = drops
    }
}

/// A trace session (`trace-start`, `trace-show`, `trace-stop`).
public struct TraceInfo: Codable, Equatable, Sendable {
    public struct Step: Codable, Equatable, Sendable {
        public var node: String
        public var detail: String
        public init(node: String, detail: String) { self.node = node; self.detail = detail }
    }
    public struct Packet: Codable, Equatable, Sendable {
        /// 1 for the session's first packet.
        public var sequence: Int
        /// The stack's clock (monotonic seconds) when it arrived.
        public var time: Double
        public var interface: String
        public var steps: [Step]
        public init(sequence: Int, time: Double, interface: String, steps: [Step]) {
            self.sequence = sequence; self.time = time; self.interface = interface; self.steps = steps
        }
    }
    /// Packets still to be traced (0: the session is complete or ended).
    public var remaining: Int
    public var filter: String
    public var interface: String?
    public var packets: [Packet]
    public init(remaining: Int, filter: String, interface: String?, packets: [Packet]) {
        self.remaining = remaining; self.filter = filter; self.interface = interface; self.packets = packets
    }
}

/// The stack's packet ledger (docs/stack.md, "Every packet accounted for").
public struct LedgerInfo: Codable, Equatable, Sendable {
    /// True when the input, output and drop-table equations all hold.
    public var balanced: Bool
    /// Each term by name (received, forwarded, consumed, sent, inputDrops, …).
    public var terms: [String: UInt64]
    /// One sentence per equation that does not hold.
    public var violations: [String]
    public init(balanced: Bool, terms: [String: UInt64], violations: [String]) {
        self.balanced = balanced; self.terms = terms; self.violations = violations
    }
}

/// JSON coding as the protocol uses it: compact on the wire, sorted keys.
public enum ControlCoding {
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
    public static let decoder = JSONDecoder()
}

/// `explain route`: the forwarding decision for a destination and flow.
public struct ExplainRouteInfo: Codable, Equatable, Sendable {
    public struct Match: Codable, Equatable, Sendable {
        public var prefix: String
        public var routes: [RouteInfo]
        /// Per route: false while withdrawn (its interface down).
        public var forwarding: [Bool]
        public init(prefix: String, routes: [RouteInfo], forwarding: [Bool]) {
            self.prefix = prefix; self.routes = routes; self.forwarding = forwarding
        }
    }
    public var destination: String
    public var source: String?
    /// The ports hashed (with `ecmp-hash: l4` and both given), else absent.
    public var sourcePort: Int?
    public var destinationPort: Int?
    /// Most specific first.
    public var matches: [Match]
    public var nextHops: [RouteInfo.NextHop]
    /// The member this flow takes.
    public var chosen: RouteInfo?
    public var flow: FlowInfo?
    public var nextHop: String?
    public var neighbor: NeighborInfo?
    public var egressMtu: Int?
    public var pathMtu: Int?
    public var pathMtuSource: String?
    public var sourceAddress: String?
    public var sourceReason: String?
    public var reversePath: String?
    public var reversePathAccepted: Bool?
    public init(destination: String, source: String?, sourcePort: Int?, destinationPort: Int?, matches: [Match],
                nextHops: [RouteInfo.NextHop], chosen: RouteInfo?, flow: FlowInfo?, nextHop: String?, neighbor: NeighborInfo?,
                egressMtu: Int?, pathMtu: Int?, pathMtuSource: String?, sourceAddress: String?, sourceReason: String?,
                reversePath: String?, reversePathAccepted: Bool?) {
        self.destination = destination; self.source = source; self.sourcePort = sourcePort; self.destinationPort = destinationPort
        self.matches = matches; self.nextHops = nextHops; self.chosen = chosen; self.flow = flow; self.nextHop = nextHop
        self.neighbor = neighbor; self.egressMtu = egressMtu; self.pathMtu = pathMtu; self.pathMtuSource = pathMtuSource
        self.sourceAddress = sourceAddress; self.sourceReason = sourceReason; self.reversePath = reversePath
        self.reversePathAccepted = reversePathAccepted
    }
}
