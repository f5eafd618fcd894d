public import AnygateStack
public import AnygateIKE
public import AnygateWire

/// The daemon's configuration, as read from YAML (DESIGN.md, "The config
/// file"). Every optional key has the default shown in `etc/anygate/anygate.yaml`.
public struct DaemonConfig: Equatable, Sendable {
    public var controlSocket = "/run/anygate/control.sock"
    /// A second way in for `anygatectl --connect`: a TCP listener on one of
    /// the stack's own addresses (`control.listen: stack:ADDR:PORT`), for
    /// sources in `controlAllow` that present the token in `controlTokenFile`.
    public var controlListen: StackAddress? = nil
    public var controlAllow: [IPPrefix] = []
    public var controlTokenFile: String? = nil
    /// Where to serve Prometheus metrics; nil (the default) serves none.
    public var metricsListen: ServiceAddress? = nil
    /// The bandwidth-test responder (`services.bandwidth-test.listen`), on the stack.
    public var bandwidthTestListen: StackAddress? = nil
    /// `stack.tcp`: MSLs per class, VTW, and how many TIME-WAIT vestiges are kept.
    public var tcpMSLLoopback = Interval.seconds(1)
    public var tcpMSLLocal = Interval.seconds(5)
    public var tcpMSLRemote = Interval.seconds(30)
    public var tcpMSLT = true
    public var tcpVTW = true
    public var tcpTimeWaitMax = 65536
    public var tcpMaxConnections = 1024
    public var logLevel: LogLevel = .info
    public var logFormat: LogFormat = .text
    /// Where state that must survive restarts is kept: the MACs generated
    /// for interfaces configured without one (`StateDirectory`).
    public var stateDirectory = "/var/lib/anygate"
    public var arpMaxEntries = 4096
    public var arpPendingPerNeighbor = 8
    public var icmpErrorsPerSecond = 100
    public var ipflowEnabled = true
    public var ipflowMaxFlows = 65536
    public var ipflowIdleTimeout = Interval.seconds(30)
    /// Worker threads, each with its own stack replica (`stack.workers`):
    /// a number, or nil for `auto` (one per CPU the process may run on).
    public var workers: Int? = 1
    /// What ECMP sets hash on (`ecmp-hash`).
    public var ecmpHash = StackConfiguration.ECMPHash.l4
    /// The stack-wide IPSELSRC policy; nil: none.
    public var sourcePolicy: SourcePolicy? = nil
    /// Host routes to import; nil: none.
    public var mirrorRoutes: MirrorRoutesConfig? = nil
    /// What host twins take (`punt:`; default OSPF, BGP and BFD).
    public var punt: PuntSet = .routing

    /// Every interface's and tunnel's twin: its `host-twin`, or with
    /// `host-twins: all` one named after it (`tw-NAME`, cut to 15 characters).
    public var twins: [(stackName: String, twinName: String, layer3: Bool)] {
        interfaces.compactMap { i in i.hostTwin.map { (i.name, $0, false) } }
            + tunnels.compactMap { t in t.hostTwin.map { (t.name, $0, true) } }
    }
    public var interfaces: [InterfaceConfig] = []
    public var tunnels: [TunnelConfig] = []
    public var routes: [RouteConfig] = []
    /// The routes whose `to` is an IPv6 prefix.
    public var routes6: [Route6Config] = []

    public init() {}

    public enum LogLevel: String, CaseIterable, Sendable {
        case trace, debug, info, notice, warning, error, critical
    }

    public enum LogFormat: String, CaseIterable, Sendable {
        case text, json
    }

    /// What running this config asks of the host, in the words an operator
    /// grants them: always `NET_ADMIN`; `NET_RAW` for AF_PACKET (packet and
    /// mirror attachments) and host-backed tunnel sockets; `/dev/net/tun`
    /// for TAP attachments; and, when the stack shares host interfaces
    /// (packet, mirror), `sysctl:KEY=VALUE` settings that keep the host's
    /// kernel from forwarding or redirecting the traffic the stack forwards.
    /// `anygated --check` prints it on a `needs:` line, which the container
    /// entrypoint reads.
    public var hostRequirements: [String] {
        var needs = ["NET_ADMIN"]
        let sharesHostInterfaces = interfaces.contains { if case .tap = $0.attach { return false } else { return true } }
        if sharesHostInterfaces || tunnels.contains(where: { $0.tunnel.backend == .host }) { needs.append("NET_RAW") }
        if interfaces.contains(where: { if case .tap = $0.attach { return true } else { return false } }) { needs.append("/dev/net/tun") }
        if sharesHostInterfaces { needs += ["sysctl:net.ipv4.ip_forward=0", "sysctl:net.ipv4.conf.all.send_redirects=0"] }
        return needs
    }

    /// A one-line summary for `anygated --check`.
    public var summary: String {
        let addresses = interfaces.reduce(0) { $0 + $1.addresses.count }
        return "\(interfaces.count) interface\(interfaces.count == 1 ? "" : "s"), \(addresses) address\(addresses == 1 ? "" : "es"), "
            + (tunnels.isEmpty ? "" : "\(tunnels.count) tunnel\(tunnels.count == 1 ? "" : "s"), ")
            + "\(routes.count) route\(routes.count == 1 ? "" : "s"), control socket \(controlSocket)"
            + (metricsListen.map { ", metrics on \($0)" } ?? "")
    }
}

/// Where a service listens: a host socket ("127.0.0.1:9100"), or the
/// stack's own TCP on one of its addresses ("stack:10.1.0.1:9100"), so it
/// is reached through the appliance's interfaces and tunnels.
public enum ServiceAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    case host(SocketAddress)
    case stack(StackAddress)
    public var description: String {
        switch self {
        case .host(let a): "\(a)"
        case .stack(let a): "stack:\(a)"
        }
    }
}

/// An IPv4 host and TCP port ("127.0.0.1:9469").
public struct SocketAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var host: IPv4Address
    public var port: UInt16
    public init(host: IPv4Address, port: UInt16) { self.host = host; self.port = port }
    public var description: String { "\(host):\(port)" }
}

/// One of the stack's addresses (IPv4 or IPv6) and a TCP port: where a
/// service on the stack's own TCP listens, or a peer it connects to
/// ("10.1.0.1:9100", "[2001:db8::1]:9100").
public struct StackAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var host: IPAddress
    public var port: UInt16
    public init(host: IPAddress, port: UInt16) { self.host = host; self.port = port }
    public var description: String { host.isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// "ADDR:PORT" or "[ADDR6]:PORT"; without a port, `defaultPort` if
    /// given ("ADDR", "ADDR6" or "[ADDR6]").
    public init?(parsing text: Substring, defaultPort: UInt16? = nil) {
        var addr = text, portText: Substring? = nil
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            addr = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { return nil }
                portText = rest.dropFirst()
            }
        } else if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") {
            addr = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        let host: IPAddress
        if let a = IPv4Address(String(addr)) { host = .v4(a) } else if let a = IPv6Address(String(addr)) { host = .v6(a) } else { return nil }
        guard !host.isUnspecified else { return nil }
        guard let port = portText.map({ UInt16($0) }) ?? defaultPort, port > 0 else { return nil }
        self.init(host: host, port: port)
    }
}

/// One interface of the stack and the host device it is attached to.
public struct InterfaceConfig: Equatable, Sendable {
    public enum Attachment: Equatable, Hashable, Sendable, CustomStringConvertible {
        /// A TAP device the daemon creates, by host-side name.
        case tap(String)
        /// AF_PACKET on an existing host interface.
        case packet(String)
        /// AF_PACKET on a host interface whose MAC, MTU, state, addresses
        /// and neighbours the stack follows through netlink.
        case mirror(String)

        public var hostName: String {
            switch self {
            case .tap(let n), .packet(let n), .mirror(let n): n
            }
        }
        public var description: String {
            switch self {
            case .tap(let n): "tap \(n)"
            case .packet(let n): "packet \(n)"
            case .mirror(let n): "mirror \(n)"
            }
        }
    }

    public var name: String
    public var attach: Attachment
    /// The configured MAC; nil: a random locally administered one, generated
    /// once and kept in the state directory (`StateDirectory`).
    public var mac: MACAddress?
    public var mtu = 1500
    public var addresses: [AddressConfig] = []
    /// The interface's own IPSELSRC policy; nil: the stack default.
    public var sourcePolicy: SourcePolicy? = nil
    /// The reverse-path check on what arrives here (off by default).
    public var rpf = ReversePathFilter.off
    /// A TAP opened with virtio-net headers: super-frames and checksum
    /// offload with the host side (default true; packet attachments: not yet).
    public var offloads = true
    /// IPv6 on this interface (`ipv6:`): its link-local address from the
    /// MAC and these; nil: IPv6 off (frames counted `ipv6-not-supported`).
    public var ipv6: IPv6InterfaceConfig? = nil
    /// `host-twin: NAME`: a TAP on the host paired with this interface (nil: none).
    public var hostTwin: String? = nil

    public init(name: String, attach: Attachment, mac: MACAddress? = nil, mtu: Int = 1500, addresses: [AddressConfig] = []) {
        self.name = name; self.attach = attach; self.mac = mac; self.mtu = mtu; self.addresses = addresses
    }
}

/// Which host routes become the stack's.
public struct MirrorRoutesConfig: Equatable, Sendable {
    /// The host routing table (254 is main).
    public var table: UInt32 = 254
    /// Routing protocols to import; nil: every one but `kernel` (the
    /// connected routes the stack makes from mirrored addresses itself).
    public var protocols: Set<UInt8>? = nil
    /// Prefixes never imported (exact matches).
    public var exclude: Set<IPv4Prefix> = []
    public var exclude6: Set<IPv6Prefix> = []
    public init() {}
}

/// A GRE tunnel: its settings and the addresses of its interface.
public struct TunnelConfig: Equatable, Sendable {
    public var tunnel: TunnelConfiguration
    public var addresses: [AddressConfig] = []
    /// `tunnels[].ipv6: {addresses: [...]}`: IPv6 inside the tunnel (its
    /// link-local address and these); nil: the tunnel carries IPv4 only.
    public var ipv6: IPv6InterfaceConfig? = nil
    /// IKE for a protected tunnel (`tunnels[].protection`) or a policy-based
    /// link (`ipsec:`); nil: no IPsec.
    public var ike: IKEPeerConfig? = nil
    /// `host-twin: NAME`: a TUN on the host paired with this tunnel (nil: none).
    public var hostTwin: String? = nil
    public init(tunnel: TunnelConfiguration, addresses: [AddressConfig] = []) { self.tunnel = tunnel; self.addresses = addresses }
    public var name: String { tunnel.name }
}

/// How the daemon runs IKEv2 for one tunnel or link.
public struct IKEPeerConfig: Equatable, Sendable {
    public enum Start: String, Equatable, Sendable, CaseIterable {
        /// Bring the SA up at start, and again whenever it goes.
        case initiate
        /// Wait for the peer.
        case respond
    }

    public var localID: String
    public var remoteID: String
    /// A file of mode 0600 (or stricter) holding the pre-shared key; the
    /// key itself is read when the tunnel is made, never logged or shown.
    public var pskFile: String
    public var ikeProposals: [IKESuite] = IKESuite.defaults
    public var espProposals: [ESPSuite] = ESPSuite.defaults
    public var start = Start.initiate
    /// Dead-peer detection interval in seconds; nil: off.
    public var dpd: Int? = 30
    /// Seconds between rekeys of the child SA (CREATE_CHILD_SA, make-before-break).
    public var rekey = 3600
    /// Seconds between rekeys of the IKE SA.
    public var ikeRekey = 14400
    /// Bytes a child SA carries each way before it must go (hard); it is
    /// rekeyed at half of it. nil: no byte limit.
    public var lifetimeBytes: UInt64? = nil

    public init(localID: String, remoteID: String, pskFile: String) {
        self.localID = localID; self.remoteID = remoteID; self.pskFile = pskFile
    }
}

/// `interfaces[].ipv6`.
public struct IPv6InterfaceConfig: Equatable, Sendable {
    public var addresses: [IPv6InterfaceAddress] = []
    /// IPSELSRC preference numbers (`{address: ..., preference: N}`); absent: 0.
    public var preferences: [IPv6Address: Int16] = [:]
    /// `router-advertisements:`; nil: none sent.
    public var routerAdvertisements: RouterAdvertisements? = nil
    public init(addresses: [IPv6InterfaceAddress] = []) { self.addresses = addresses }
}

/// An IPv6 route: it names its interface (a link-local next hop needs one,
/// and the interface's IPv6 subnets do not yet validate next hops).
public struct Route6Config: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var to: IPv6Prefix
    public var via: IPv6Address?
    public var interface: String
    public var metric: UInt32 = 0
    public var weight: UInt8 = 1
    public init(to: IPv6Prefix, via: IPv6Address? = nil, interface: String, metric: UInt32 = 0, weight: UInt8 = 1) {
        self.to = to; self.via = via; self.interface = interface; self.metric = metric; self.weight = weight
    }
    public var description: String {
        "\(to)" + (via.map { " via \($0)" } ?? "") + " dev \(interface) metric \(metric)" + (weight == 1 ? "" : " weight \(weight)")
    }
}

public struct AddressConfig: Equatable, Hashable, Sendable {
    public var address: IPv4InterfaceAddress
    public var preference: Int16 = 0
    public init(address: IPv4InterfaceAddress, preference: Int16 = 0) { self.address = address; self.preference = preference }
}

public struct RouteConfig: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var to: IPv4Prefix
    public var via: IPv4Address?
    public var interface: String?
    public var metric: UInt32 = 0
    /// Share of an ECMP set (routes to one prefix with one metric).
    public var weight: UInt8 = 1
    public init(to: IPv4Prefix, via: IPv4Address? = nil, interface: String? = nil, metric: UInt32 = 0, weight: UInt8 = 1) {
        self.to = to; self.via = via; self.interface = interface; self.metric = metric; self.weight = weight
    }
    public var description: String {
        "\(to)" + (via.map { " via \($0)" } ?? "") + (interface.map { " dev \($0)" } ?? "") + " metric \(metric)"
            + (weight == 1 ? "" : " weight \(weight)")
    }
}

/// A rejected configuration: the file, the key path, the line (when the
/// YAML parser knows it) and the reason.
public struct ConfigError: Error, Equatable, CustomStringConvertible, Sendable {
    public var file: String
    public var keyPath: String
    public var line: Int?
    public var reason: String

    public init(file: String, keyPath: String, line: Int?, reason: String) {
        self.file = file; self.keyPath = keyPath; self.line = line; self.reason = reason
    }

    public var description: String {
        var s = file
        if let line { s += ":\(line)" }
        if !keyPath.isEmpty { s += ": \(keyPath)" }
        return s + ": " + reason
    }
}
