public import AnygateWire

/// The position of an interface in its stack; stable for the interface's life.
public typealias InterfaceIndex = Int

/// What a matching route does with a packet.
public enum RouteKind: UInt8, Hashable, Sendable, CustomStringConvertible {
    /// The destination is one of the stack's own addresses.
    case local
    /// The destination is a subnet's directed broadcast address.
    case broadcast
    /// The destination is on the attached link: the next hop is the destination itself.
    case connected
    /// Send to the route's gateway.
    case gateway
    /// Drop silently (counted).
    case blackhole

    public var description: String {
        switch self {
        case .local: "local"
        case .broadcast: "broadcast"
        case .connected: "connected"
        case .gateway: "gateway"
        case .blackhole: "blackhole"
        }
    }
}

/// Where a route came from.
public enum RouteOrigin: UInt8, Hashable, Sendable, CustomStringConvertible {
    /// Made by the stack from an interface address (subnet, local, broadcast).
    case connected
    /// Added by the operator (config or control socket).
    case `static`
    /// Mirrored from the host's routing table.
    case mirror
    /// Installed by a tunnel.
    case tunnel

    public var description: String {
        switch self {
        case .connected: "connected"
        case .static: "static"
        case .mirror: "mirror"
        case .tunnel: "tunnel"
        }
    }
}

/// A prefix a FIB can hold: IPv4 or IPv6. One route machinery (slots,
/// ECMP sets, withdrawals, the LPM trie, shared tables) serves both.
public protocol RoutePrefix: Hashable, Sendable, CustomStringConvertible {
    associatedtype Address: LPMKey & Comparable & Sendable & CustomStringConvertible
    var address: Address { get }
    var length: UInt8 { get }
    /// Masks `address` to `length` bits.
    init(address: Address, length: Int)
    func contains(_ a: Address) -> Bool
    /// The error for adding a route that is there already, or deleting one that is not.
    var alreadyExists: RouteError { get }
    var notFound: RouteError { get }
}

extension IPv4Prefix: RoutePrefix {
    public var alreadyExists: RouteError { .exists(self) }
    public var notFound: RouteError { .notFound(self) }
}

extension IPv6Prefix: RoutePrefix {
    public var alreadyExists: RouteError { .exists6(self) }
    public var notFound: RouteError { .notFound6(self) }
}

/// An IPv4 route as the operator sees it.
public typealias Route = IPRoute<IPv4Prefix>
/// An IPv6 route as the operator sees it.
public typealias Route6 = IPRoute<IPv6Prefix>

/// A route as the operator sees it.
public struct IPRoute<Prefix: RoutePrefix>: Hashable, Sendable, CustomStringConvertible {
    public var prefix: Prefix
    public var nextHop: Prefix.Address?
    public var interface: InterfaceIndex
    public var metric: UInt32
    public var origin: RouteOrigin
    public var kind: RouteKind
    /// Share of an ECMP set's flows, relative to the other members (1–64).
    public var weight: UInt8

    public init(prefix: Prefix, nextHop: Prefix.Address? = nil, interface: InterfaceIndex,
                metric: UInt32 = 0, origin: RouteOrigin = .static, kind: RouteKind? = nil, weight: UInt8 = 1) {
        self.prefix = prefix; self.nextHop = nextHop; self.interface = interface
        self.metric = metric; self.origin = origin
        self.kind = kind ?? (nextHop == nil ? .connected : .gateway)
        self.weight = min(max(weight, 1), IPRoute.maxWeight)
    }

    public static var maxWeight: UInt8 { 64 }

    /// Local and broadcast host routes are the stack's own bookkeeping, not
    /// part of the routing table an operator manages.
    public var isInternal: Bool { kind == .local || kind == .broadcast }

    public var description: String {
        var s = "\(prefix)"
        if let nextHop { s += " via \(nextHop)" }
        s += " dev#\(interface) metric \(metric) \(origin) \(kind)"
        return s
    }
}

/// Why a route change was refused.
public enum RouteError: Error, Equatable, Sendable, CustomStringConvertible {
    case exists(IPv4Prefix)
    case notFound(IPv4Prefix)
    case noSuchInterface(InterfaceIndex)
    /// The gateway is not on any connected subnet (of the named interface, if one was given).
    case nextHopUnreachable(IPv4Address)
    /// A gateway route needs a next hop and a device route needs an interface.
    case invalid(String)
    /// A shared FIB holds this many routes at most (its room is made up front).
    case tableFull(capacity: Int)
    case exists6(IPv6Prefix)
    case notFound6(IPv6Prefix)

    public var description: String {
        switch self {
        case .exists(let p): "route \(p) already exists"
        case .notFound(let p): "no such route \(p)"
        case .exists6(let p): "route \(p) already exists"
        case .notFound6(let p): "no such route \(p)"
        case .noSuchInterface(let i): "no interface with index \(i)"
        case .nextHopUnreachable(let a): "next hop \(a) is not on a connected subnet"
        case .invalid(let why): why
        case .tableFull(let n): "the routing table is full (\(n) routes)"
        }
    }
}

/// The hot part of a route, read on every forwarded packet.
@usableFromInline
struct RouteSlot<Address: LPMKey> {
    @usableFromInline var gateway: Address
    @usableFromInline var interface: UInt16
    @usableFromInline var kind: RouteKind
    @usableFromInline var inUse: Bool
    var origin: RouteOrigin
    var prefixLength: UInt8
    var prefixAddress: Address
    var metric: UInt32
    /// Next route of the same prefix (`RouteSlot.end` for none): a prefix's
    /// routes are a chain through the slot array, not an array of their own.
    var next: UInt32 = RouteSlot.end
    /// Insertion order, for the tie-break between equal-metric routes.
    var sequence: UInt64
    /// ECMP: on the slot the lookup returns, how many usable members its
    /// equal-cost set has (1: a single path) and the next member; the
    /// members are chained through `memberNext` (`end` after the last).
    @usableFromInline var memberCount: UInt16 = 1
    @usableFromInline var memberNext: UInt32 = RouteSlot.end
    @usableFromInline var weight: UInt8 = 1
    /// The next hop did not answer ARP: withdrawn from its ECMP set until it does.
    var nextHopFailed = false

    @inlinable static var end: UInt32 { .max }
}
