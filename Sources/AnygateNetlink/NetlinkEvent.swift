public import AnygateWire

/// A host network interface as netlink reports it.
public struct HostLink: Equatable, Hashable, Sendable {
    public var index: Int32
    public var name: String
    public var mac: MACAddress?
    public var mtu: Int
    /// IFF_UP: administratively up.
    public var adminUp: Bool
    /// IFF_LOWER_UP / IFF_RUNNING: carrier.
    public var operUp: Bool
    public init(index: Int32, name: String, mac: MACAddress?, mtu: Int, adminUp: Bool, operUp: Bool) {
        self.index = index; self.name = name; self.mac = mac; self.mtu = mtu; self.adminUp = adminUp; self.operUp = operUp
    }
}

/// One next hop of a host route (of either family: `Address` is
/// `IPv4Address` or `IPv6Address`).
public struct HostNextHopOf<Address: Hashable & Sendable & CustomStringConvertible>: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var gateway: Address?
    public var interface: Int32
    public init(gateway: Address?, interface: Int32) { self.gateway = gateway; self.interface = interface }
    public var description: String { (gateway.map { "via \($0) " } ?? "") + "dev#\(interface)" }
}

/// A host unicast route: ECMP next hops as a set.
public struct HostRouteOf<Prefix: Hashable & Sendable & CustomStringConvertible, Address: Hashable & Sendable & CustomStringConvertible>:
    Equatable, Hashable, Sendable, CustomStringConvertible {
    public var table: UInt32
    public var prefix: Prefix
    public var nextHops: Set<HostNextHopOf<Address>>
    public var metric: UInt32
    /// The routing protocol that installed it (RTPROT_*: 2 kernel, 4 static, 12 bird, …).
    public var proto: UInt8
    public init(table: UInt32, prefix: Prefix, nextHops: Set<HostNextHopOf<Address>>, metric: UInt32, proto: UInt8) {
        self.table = table; self.prefix = prefix; self.nextHops = nextHops; self.metric = metric; self.proto = proto
    }
    /// Identity in the host table: a route is (table, prefix, metric).
    public var key: HostRouteKeyOf<Prefix> { HostRouteKeyOf(table: table, prefix: prefix, metric: metric) }
    public var description: String {
        "\(prefix) table \(table) metric \(metric) proto \(proto) " + nextHops.map(\.description).sorted().joined(separator: ", ")
    }
}

public struct HostRouteKeyOf<Prefix: Hashable & Sendable>: Hashable, Sendable {
    public var table: UInt32
    public var prefix: Prefix
    public var metric: UInt32
}

public typealias HostNextHop = HostNextHopOf<IPv4Address>
public typealias HostRoute = HostRouteOf<IPv4Prefix, IPv4Address>
public typealias HostRouteKey = HostRouteKeyOf<IPv4Prefix>
public typealias HostNextHop6 = HostNextHopOf<IPv6Address>
public typealias HostRoute6 = HostRouteOf<IPv6Prefix, IPv6Address>
public typealias HostRouteKey6 = HostRouteKeyOf<IPv6Prefix>

/// A change on the host, translated from netlink. libnl objects never
/// leave AnygateNetlink: this is all the rest of the daemon sees.
public enum NetlinkEvent: Equatable, Hashable, Sendable {
    case linkChanged(HostLink)
    case linkRemoved(index: Int32, name: String)
    case addressAdded(index: Int32, address: IPv4InterfaceAddress)
    case addressRemoved(index: Int32, address: IPv4InterfaceAddress)
    case routeAdded(HostRoute)
    case routeRemoved(HostRoute)
    /// A neighbour entry: `mac` nil while it is incomplete or failed.
    case neighborChanged(index: Int32, address: IPv4Address, mac: MACAddress?)
    case neighborRemoved(index: Int32, address: IPv4Address)
    // IPv6: the same, beside.
    case address6Added(index: Int32, address: IPv6InterfaceAddress)
    case address6Removed(index: Int32, address: IPv6InterfaceAddress)
    case route6Added(HostRoute6)
    case route6Removed(HostRoute6)
    case neighbor6Changed(index: Int32, address: IPv6Address, mac: MACAddress?)
    case neighbor6Removed(index: Int32, address: IPv6Address)
}

/// Names of the routing protocols of /etc/iproute2/rt_protos.
public enum RouteProtocols {
    public static let byName: [String: UInt8] = [
        "redirect": 1, "kernel": 2, "boot": 3, "static": 4, "ra": 9, "dhcp": 16, "zebra": 11, "bird": 12,
        "dnrouted": 13, "xorp": 14, "ntk": 15, "keepalived": 18, "babel": 42, "openr": 99, "bgp": 186, "isis": 187,
        "ospf": 188, "rip": 189, "eigrp": 192,
    ]
    public static func name(_ p: UInt8) -> String { byName.first { $0.value == p }?.key ?? "\(p)" }
}

/// Names of routing tables.
public enum RouteTables {
    public static let byName: [String: UInt32] = ["main": 254, "local": 255, "default": 253]
}
