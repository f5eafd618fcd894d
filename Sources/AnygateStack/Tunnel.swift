public import AnygateWire

/// How a tunnel carries its packets.
public enum TunnelEncapsulation: String, Hashable, Sendable {
    /// GRE directly over IP, protocol 47 (RFC 2784, RFC 2890).
    case gre
    /// GRE over UDP, destination port 4754, source port from a flow hash (RFC 8086).
    case greInUDP = "gre-in-udp"
    /// No GRE: ESP in tunnel mode carries the inner packets (a policy-based
    /// IPsec link between subnets, RFC 4301); needs `protection`.
    case ipsec

    public static let greInUDPPort: UInt16 = 4754
}

/// TCP MSS clamping on SYNs entering or leaving a tunnel.
public enum MSSClamp: Hashable, Sendable, CustomStringConvertible {
    case off
    /// The tunnel MTU minus 40 (IPv4 and TCP headers).
    case auto
    case fixed(UInt16)

    public var description: String {
        switch self {
        case .off: "off"
        case .auto: "auto"
        case .fixed(let n): "\(n)"
        }
    }
}

/// GRE keepalives: every `interval` the tunnel sends one; after `retries`
/// without an answer the line goes down, and up again on the first answer.
public struct TunnelKeepalive: Hashable, Sendable {
    public var interval: Interval
    public var retries: Int
    public init(interval: Interval, retries: Int) { self.interval = interval; self.retries = retries }
}

/// A GRE tunnel's settings.
public struct TunnelConfiguration: Hashable, Sendable {
    public var name: String
    public var encapsulation: TunnelEncapsulation = .gre
    public var backend: SocketBackend = .stack
    /// The underlay addresses, both of one family: GRE over IPv4, or over
    /// IPv6 (RFC 7676). Either family travels inside.
    public var local: IPAddress
    public var remote: IPAddress
    /// RFC 2890 key; packets must carry exactly this key (or none when nil).
    public var key: UInt32? = nil
    /// RFC 2890 sequence numbers: sent, and checked (out of order and duplicates dropped).
    public var sequence = false
    /// Outer TTL: nil copies the inner packet's.
    public var ttl: UInt8? = 64
    /// Outer TOS: nil copies the inner packet's.
    public var tos: UInt8? = nil
    /// Tunnel MTU: nil derives it from the underlay path.
    public var mtu: Int? = nil
    public var mssClamp: MSSClamp = .off
    public var keepalive: TunnelKeepalive? = nil
    /// The reverse-path check on decapsulated packets: strict by default, so
    /// a tunnel peer cannot inject inner sources the site does not route to it.
    public var rpf = ReversePathFilter.strict
    /// Path MTU discovery on the underlay: DF on the outer header, and an
    /// ICMP fragmentation-needed for the outer destination lowers the
    /// tunnel MTU for `TunnelConfiguration.pathMTUTimeout`.
    public var pmtuDiscovery = true
    /// GRE over IPsec: ESP in transport mode around every GRE packet
    /// (`encapsulation` must be `.gre`); nil: plaintext GRE.
    public var protection: TunnelProtection? = nil

    /// How long a learned path MTU holds (a host's PMTU cache: 10 minutes).
    public static let pathMTUTimeout = Interval.seconds(600)
    /// Reports below this are raised to it (RFC 1191's floor for IPv4 paths in practice).
    public static let minimumPathMTU = 576
    /// Every IPv6 link carries this much (RFC 8200 section 5): the floor of
    /// an IPv6 underlay's path MTU, and what a tunnel offers inner IPv6
    /// packets whatever its underlay (fragmenting the outer packet if need be).
    public static let minimumIPv6MTU = 1280

    public init(name: String, local: IPv4Address, remote: IPv4Address) {
        self.name = name; self.local = .v4(local); self.remote = .v4(remote)
    }

    public init(name: String, local: IPAddress, remote: IPAddress) {
        self.name = name; self.local = local; self.remote = remote
    }

    /// Whether the underlay is IPv6.
    public var underlay6: Bool { remote.isIPv6 }

    /// Bytes the tunnel adds in front of an inner packet.
    public var overhead: Int {
        let outer = underlay6 ? IPv6Packet.headerLength : IPv4Packet.minimumHeaderLength
        if encapsulation == .ipsec { return outer + (protection?.overhead ?? 0) }
        return outer + 4 + (key == nil ? 0 : 4) + (sequence ? 4 : 0)
            + (encapsulation == .greInUDP ? UDPDatagram.headerLength : 0) + (protection?.overhead ?? 0)
    }

    /// The least outer path MTU a report may set.
    var pathMTUFloor: Int { underlay6 ? Self.minimumIPv6MTU : Self.minimumPathMTU }
}

/// Counters of one tunnel.
public struct TunnelCounters: Hashable, Sendable {
    public var txPackets: UInt64 = 0
    public var txBytes: UInt64 = 0
    public var rxPackets: UInt64 = 0
    public var rxBytes: UInt64 = 0
    public var keepalivesSent: UInt64 = 0
    public var keepalivesReceived: UInt64 = 0
    /// Keepalives of the peer's, sent back to it.
    public var keepalivesAnswered: UInt64 = 0
    public var mssClamped: UInt64 = 0
    /// Path MTU reports (ICMP, or the host socket) that lowered the tunnel MTU.
    public var pathMTUUpdates: UInt64 = 0
    public var sendErrors: UInt64 = 0
    public var stateChanges: UInt64 = 0
    public init() {}

    /// Adds another replica's counts (workers: `show` sums them).
    public mutating func add(_ o: TunnelCounters) {
        txPackets &+= o.txPackets; txBytes &+= o.txBytes; rxPackets &+= o.rxPackets; rxBytes &+= o.rxBytes
        keepalivesSent &+= o.keepalivesSent; keepalivesReceived &+= o.keepalivesReceived
        keepalivesAnswered &+= o.keepalivesAnswered; mssClamped &+= o.mssClamped; pathMTUUpdates &+= o.pathMTUUpdates
        sendErrors &+= o.sendErrors; stateChanges &+= o.stateChanges
    }
}

/// One row of `show tunnels`.
public struct TunnelStatus: Hashable, Sendable {
    public var configuration: TunnelConfiguration
    public var interface: InterfaceIndex
    public var up: Bool
    public var mtu: Int
    /// The outer path MTU in force, and where it came from: "interface"
    /// (the underlay interface), "assumed" (a host socket's path before
    /// any report), "configured" (a fixed `mtu`), or the report that
    /// lowered it ("icmp from 192.0.2.9", "host socket", "underlay interface").
    public var pathMTU: Int
    public var pathMTUSource: String
    /// Why it is down, when it is.
    public var reason: String?
    public var counters: TunnelCounters
}

/// A tunnel's running state: plain data (no references), read and written
/// in place on the packet path. Its configuration, names and all, lives in
/// `Stack.tunnelConfigs`.
struct TunnelState {
    var inUse = false
    var interface: InterfaceIndex = 0
    var socket = SocketID(value: -1)
    /// The underlay addresses: IPv4 ones, or with `underlay6` IPv6 ones.
    var local: IPv4Address = .any
    var remote: IPv4Address = .any
    var underlay6 = false
    var local6: IPv6Address = .any
    var remote6: IPv6Address = .any
    var key: UInt32? = nil
    var sequence = false
    var ttl: UInt8? = nil
    var tos: UInt8? = nil
    var udp = false
    var mssClamp: MSSClamp = .off
    var keepalive: TunnelKeepalive? = nil
    var fixedMTU = false
    var txSequence: UInt32 = 0
    /// The last sequence number accepted; nil before the first.
    var rxSequence: UInt32? = nil
    /// Line state from keepalives (true without keepalives).
    var alive = true
    var missed = 0
    var nextKeepalive: Int64 = 0
    var counters = TunnelCounters()
    /// Advances when the slot is reused or the line state changes; flows
    /// through the tunnel compare it.
    var generation: UInt32 = 0
    /// A learned outer path MTU (0: none) and when it lapses.
    var pathMTU = 0
    var pathMTUExpires: Int64 = 0
    var pmtuDiscovery = true
    /// GRE over IPsec: packets leave sealed through `espSocket` with the
    /// SA in `outboundSA` (-1: none yet); plaintext GRE is refused.
    var protected = false
    var espSocket = SocketID(value: -1)
    /// With `TunnelProtection.auto`, both ESP sockets (the current one is `espSocket`).
    var espUDPSocket = SocketID(value: -1)
    var espRawSocket = SocketID(value: -1)
    var outboundSA: Int32 = -1
    /// A policy-based link: ESP tunnel mode, inner packets checked against
    /// the selectors both ways.
    var espTunnelMode = false
    var localSelectors = SelectorList()
    var remoteSelectors = SelectorList()
    /// With several workers, the replica that holds the tunnel's SAs when
    /// it is another (-1: this one): what needs them is handed there.
    var saOwner: Int32 = -1

    init() {}

    init(_ c: TunnelConfiguration, interface: InterfaceIndex, socket: SocketID) {
        inUse = true
        self.interface = interface
        self.socket = socket
        local = c.local.v4 ?? .any; remote = c.remote.v4 ?? .any
        underlay6 = c.underlay6; local6 = c.local.v6 ?? .any; remote6 = c.remote.v6 ?? .any
        key = c.key; sequence = c.sequence; ttl = c.ttl; tos = c.tos
        udp = c.encapsulation == .greInUDP; mssClamp = c.mssClamp; keepalive = c.keepalive; fixedMTU = c.mtu != nil
        pmtuDiscovery = c.pmtuDiscovery
        protected = c.protection != nil
        espTunnelMode = c.encapsulation == .ipsec
        if let p = c.protection {
            localSelectors = SelectorList(p.localSubnets)
            remoteSelectors = SelectorList(p.remoteSubnets)
        }
    }
}
