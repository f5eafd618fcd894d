public import AnygateWire

/// An address of either family, as sockets and tunnels take them.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)

    public var v4: IPv4Address? {
        if case .v4(let a) = self { return a }
        return nil
    }

    public var v6: IPv6Address? {
        if case .v6(let a) = self { return a }
        return nil
    }

    public var isIPv6: Bool { v6 != nil }

    /// The address's bytes as they travel (4 or 16).
    public var networkBytes: [UInt8] {
        switch self {
        case .v4(let a): a.networkBytes
        case .v6(let a): a.networkBytes
        }
    }

    public var isUnspecified: Bool {
        switch self {
        case .v4(let a): a.isUnspecified
        case .v6(let a): a.isUnspecified
        }
    }

    /// Parses dotted-quad or RFC 4291 text.
    public init?(_ text: some StringProtocol) {
        if let a = IPv4Address(text) { self = .v4(a) } else if let a = IPv6Address(text) { self = .v6(a) } else { return nil }
    }

    public var description: String {
        switch self {
        case .v4(let a): "\(a)"
        case .v6(let a): "\(a)"
        }
    }
}

/// What a socket carries.
public enum SocketProtocol: Hashable, Sendable, CustomStringConvertible {
    /// UDP datagrams; the socket sends and receives payloads.
    case udp
    /// IP packets of one protocol; the socket sends and receives the IP
    /// payload, never the IP header (NetBSD's SO_NOHEADER).
    case raw(IPProtocol)

    public var description: String {
        switch self {
        case .udp: "udp"
        case .raw(let p): "raw/\(p)"
        }
    }
}

/// Where a socket's packets really go: through the stack's own IP layer
/// (the underlay is an interface of the stack), or through a socket of the
/// host kernel (the host owns the underlay; `Hypercalls` carries them).
public enum SocketBackend: String, Hashable, Sendable {
    case stack
    case host
}

public struct SocketID: Hashable, Sendable, CustomStringConvertible {
    public let value: Int
    public var description: String { "socket#\(value)" }
}

/// Why a socket operation failed.
public enum SocketError: Error, Equatable, Sendable, CustomStringConvertible {
    case noSuchSocket
    case addressInUse(UInt16)
    case notConnected
    case noRoute(IPAddress)
    case noSourceAddress
    case poolExhausted
    case tooBig(mtu: Int)
    /// The host refused or lacks the socket (the reason as the host gave it).
    case host(String)
    case interfaceDown
    case tableFull(Int)

    public var description: String {
        switch self {
        case .tableFull(let n): "the stack holds at most \(n) sockets"
        case .noSuchSocket: "no such socket"
        case .addressInUse(let p): "port \(p) is in use"
        case .notConnected: "socket has no peer"
        case .noRoute(let a): "no route to \(a)"
        case .noSourceAddress: "no source address"
        case .poolExhausted: "no free packet buffer"
        case .tooBig(let mtu): "larger than the path MTU \(mtu)"
        case .host(let s): s
        case .interfaceDown: "outgoing interface is down"
        }
    }
}

/// Per-socket counters.
public struct SocketCounters: Hashable, Sendable {
    public var sent: UInt64 = 0
    public var received: UInt64 = 0
    public var sendErrors: UInt64 = 0
    /// Datagrams dropped because the receive queue was full.
    public var queueDrops: UInt64 = 0
    public init() {}
}

/// Who takes a socket's received packets: its own bounded queue (read
/// with `Stack.socketReceive`), or a tunnel, called directly (no closure
/// or existential per packet).
enum SocketReceiver {
    case queue
    case tunnel(Int)
    /// A protected tunnel's ESP socket (IKE's datagrams on it queue).
    case esp(Int)
}

/// A protocol control block: one socket's addresses, its cached route and
/// its receive side.
struct PCB {
    var inUse = false
    var proto: SocketProtocol
    var backend: SocketBackend
    var localAddress: IPv4Address = .any
    var localPort: UInt16 = 0
    var remoteAddress: IPv4Address = .any
    var remotePort: UInt16 = 0
    /// An IPv6 socket: its addresses are `localAddress6` and `remoteAddress6`
    /// (the IPv4 ones stay unspecified).
    var ipv6 = false
    var localAddress6: IPv6Address = .any
    var remoteAddress6: IPv6Address = .any
    /// Whether a peer is set.
    var connected: Bool { ipv6 ? !remoteAddress6.isUnspecified : !remoteAddress.isUnspecified }
    /// Whether datagrams must come from `remotePort` (GRE-in-UDP peers
    /// send from per-flow ports, so tunnels accept any).
    var matchRemotePort = true
    var route = RouteCache()
    var receiver: SocketReceiver = .queue
    /// What would queue is reported instead (`StackEvent.datagram`): a
    /// worker's replica passing IKE's datagrams to the control thread.
    var reportsDatagrams = false
    /// Datagrams waiting in `Stack.socketQueues` (kept apart so that a PCB
    /// is a plain value, copied without reference counting).
    var queueCapacity = 64
    var counters = SocketCounters()
    /// Outer header settings: nil means the stack default.
    var ttl: UInt8? = nil
    var tos: UInt8 = 0
    /// Set DF on what the socket sends (path MTU discovery).
    var dontFragment = false
}

/// A datagram taken from a socket's queue.
public struct ReceivedDatagram {
    /// The payload (UDP payload, or the IP payload of a raw socket); the
    /// caller owns it and frees it to the pool.
    public var packet: PacketHandle
    public var from: IPAddress
    public var port: UInt16
}
