public import AnygateWire

/// The hot part of an interface, read and counted on every packet.
@usableFromInline
struct InterfaceSlot {
    @usableFromInline var mac: UInt64
    @usableFromInline var mtu: Int
    @usableFromInline var up: Bool
    @usableFromInline var exists: Bool
    /// A capture looks at this interface: `CaptureDirections` bits, 0 when none.
    @usableFromInline var capture: UInt8 = 0
    /// The first IPv4 address, or 0.
    @usableFromInline var primaryAddress: UInt32
    @usableFromInline var counters: InterfaceCounters
    /// Frames waiting in this interface's transmit queue.
    @usableFromInline var txCount: Int
    /// The tunnel this interface is, or -1 for an Ethernet interface.
    @usableFromInline var tunnel: Int32 = -1
    /// A mirrored interface: the host keeps the control plane on its link
    /// (it answers ARP and ICMP for its addresses); the stack forwards
    /// transit traffic and terminates its own sockets' traffic only.
    @usableFromInline var hostOwned = false
    /// The flow caches missed for a quarter or more of the last batch here:
    /// the next one's IPv6 lookups run as a batch stage (`warmRoutes6`).
    var ipv6FlowMisses = false
    /// The reverse-path check on packets arriving here (RFC 3704).
    @usableFromInline var rpf = ReversePathFilter.off
    /// The port takes super-frames and partial checksums (virtio-net offloads).
    @usableFromInline var offloads = false
    /// When a frame from our own MAC was last reported (rate limit).
    var ownMACReported: Int64 = .min
    /// The interface has IPv6 addresses: it takes IPv6 frames.
    var ipv6 = false
    /// The interface has a host twin: routing protocols' packets the stack
    /// does not consume go to it (`Stack+Twins`).
    @usableFromInline var twin = false
}

/// An address configured on an interface, with its IPSELSRC preference.
public struct InterfaceAddress: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv4InterfaceAddress
    public var preference: Int16
    public var description: String { preference == 0 ? "\(address)" : "\(address) preference \(preference)" }
}

/// One row of `show interfaces`.
public struct InterfaceStatus: Hashable, Sendable {
    public var name: String
    public var index: InterfaceIndex
    public var mac: MACAddress
    public var mtu: Int
    public var up: Bool
    public var addresses: [InterfaceAddress]
    public var counters: InterfaceCounters
}

/// Why an interface or address change was refused.
public enum InterfaceError: Error, Equatable, Sendable, CustomStringConvertible {
    case duplicateName(String)
    case tooManyInterfaces(Int)
    case noSuchInterface(InterfaceIndex)
    case addressExists(IPv4InterfaceAddress)
    case noSuchAddress(IPv4Address)
    case mtuOutOfRange(Int)
    case address6Exists(IPv6InterfaceAddress)
    case noSuchAddress6(IPv6Address)
    /// An address the stack cannot use on an interface (multicast, unspecified, ...).
    case badAddress(String)

    public var description: String {
        switch self {
        case .duplicateName(let n): "interface \(n) already exists"
        case .tooManyInterfaces(let n): "the stack holds at most \(n) interfaces"
        case .noSuchInterface(let i): "no interface with index \(i)"
        case .addressExists(let a): "address \(a.address) is already configured"
        case .noSuchAddress(let a): "address \(a) is not configured on that interface"
        case .mtuOutOfRange(let m): "MTU \(m) out of range (68 to the pool's buffer size)"
        case .address6Exists(let a): "address \(a.address) is already configured"
        case .noSuchAddress6(let a): "address \(a) is not configured on that interface"
        case .badAddress(let why): why
        }
    }
}

/// Why a packet the stack was asked to originate could not be sent.
public enum SendError: Error, Equatable, Sendable, CustomStringConvertible {
    case noRoute(IPv4Address)
    case noSourceAddress
    /// Don't-fragment was set and the packet exceeds the route's MTU.
    case tooBig(mtu: Int)
    case poolExhausted
    case payloadTooLarge(max: Int)
    case interfaceDown

    public var description: String {
        switch self {
        case .noRoute(let a): "no route to \(a)"
        case .noSourceAddress: "no source address on the outgoing interface"
        case .tooBig(let mtu): "packet larger than the path MTU \(mtu) with don't-fragment set"
        case .poolExhausted: "no free packet buffer"
        case .payloadTooLarge(let m): "payload larger than \(m) bytes"
        case .interfaceDown: "outgoing interface is down"
        }
    }
}

/// Source address validation on ingress (RFC 3704 unicast reverse-path
/// forwarding): a packet whose source the FIB would not route back through
/// the interface it came in on (strict), or would not route at all (loose),
/// is dropped and counted as `rpf-failed`.
public enum ReversePathFilter: String, Hashable, Sendable, CaseIterable {
    case off
    /// The source's best route (any member of its ECMP set) leaves by the arrival interface.
    case strict
    /// The source has a route (the default route counts), other than a blackhole.
    case loose
}
