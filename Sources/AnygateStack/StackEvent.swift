public import AnygateWire

/// Something the stack reports to its owner: answers to the stack's own
/// pings, ICMP errors addressed to it, neighbour failures, and another
/// device using one of its MACs.
public enum StackEvent: Hashable, Sendable, CustomStringConvertible {
    case echoReply(from: IPv4Address, identifier: UInt16, sequence: UInt16, payloadLength: Int, ttl: UInt8)
    /// An ICMP error arrived for a datagram this stack had sent (or one it
    /// forwarded, if the error was addressed to it).
    case icmpError(ICMPErrorReport)
    /// Resolution of a next hop failed; `dropped` packets were waiting for it.
    case neighborUnreachable(address: IPv4Address, interface: InterfaceIndex, dropped: Int)
    /// Frames arrived on `interface` from its own MAC: another device there uses it.
    case duplicateMAC(interface: InterfaceIndex, mac: MACAddress)
    /// ARP confirmed `address` at `mac` (reported only with
    /// `arp.shareLearned`, for the other replicas' `learnNeighbor`).
    case neighborLearned(address: IPv4Address, interface: InterfaceIndex, mac: MACAddress)
    /// A follower replica needs `address` resolved on `interface` (the
    /// owner asks, `resolveNeighbor`; the answer is shared).
    case neighborWanted(address: IPv4Address, interface: InterfaceIndex)
    /// A follower replica received the answer to a keepalive of the tunnel
    /// on `interface` (for the owner, `keepaliveAnswered(tunnel:)`).
    case keepaliveAnswered(tunnel: InterfaceIndex)
    /// The owner replica decided the tunnel's line (for the followers, `setTunnelLine`).
    case tunnelLine(tunnel: InterfaceIndex, up: Bool)
    /// A reader of a shared FIB found an ECMP next hop failed (it did not
    /// answer ARP) or alive again (for the writer's `setNextHop`).
    case nextHopFailed(address: IPv4Address, interface: InterfaceIndex, failed: Bool)
    /// The multicast MACs the interface listens to changed (`Stack.multicastMACs(on:)`).
    case multicastChanged(interface: InterfaceIndex)
    /// Duplicate address detection found another node using the address:
    /// it stays configured, marked duplicated, and unused.
    case duplicateAddress(interface: InterfaceIndex, address: IPv6Address)
    /// Neighbour discovery confirmed `address` at `mac` (with `arp.shareLearned`).
    case neighbor6Learned(address: IPv6Address, interface: InterfaceIndex, mac: MACAddress)
    /// A follower replica needs `address` resolved on `interface` (the owner's `resolveNeighbor`).
    case neighbor6Wanted(address: IPv6Address, interface: InterfaceIndex)
    /// A follower replica received a router solicitation on `interface`
    /// (the owner advertises: `routerSolicited(on:)`).
    case routerSolicited(interface: InterfaceIndex)
    /// A follower replica received an MLD query on `interface` (the owner
    /// reports: `multicastQueried(on:maximumDelay:)`; milliseconds).
    case multicastQueried(interface: InterfaceIndex, maximumDelay: Int)
    /// An SA of the protected tunnel on `tunnel` reached a soft lifetime: time to rekey.
    case saExpiring(tunnel: InterfaceIndex, spi: UInt32, inbound: Bool)
    /// An SA reached a hard lifetime (or its sequence space) and carries nothing more.
    case saExpired(tunnel: InterfaceIndex, spi: UInt32, inbound: Bool)
    /// A datagram for a socket that reports instead of queueing
    /// (`Stack.setReportsDatagrams`): its payload, copied.
    case datagram(socket: SocketID, from: IPAddress, port: UInt16, bytes: [UInt8])
    /// Something changed on a TCP connection (`Stack.tcpTakeNotices` says what).
    case tcp(TCPSocketID)
    /// A listener has connections waiting for `Stack.tcpAccept`.
    case tcpAcceptable(TCPListenerID)

    public var description: String {
        switch self {
        case let .echoReply(from, id, seq, len, ttl):
            "echo-reply from \(from) id \(id) seq \(seq) \(len) bytes ttl \(ttl)"
        case let .icmpError(r): r.description
        case let .neighborUnreachable(a, i, d): "neighbor \(a) on #\(i) unreachable, \(d) dropped"
        case let .duplicateMAC(i, mac): "duplicate MAC \(mac) on #\(i)"
        case let .neighborLearned(a, i, mac): "neighbor \(a) on #\(i) is at \(mac)"
        case let .keepaliveAnswered(i): "keepalive answered on #\(i)"
        case let .neighborWanted(a, i): "neighbor \(a) on #\(i) wanted"
        case let .tunnelLine(i, up): "tunnel #\(i) line \(up ? "up" : "down")"
        case let .nextHopFailed(a, i, failed): "next hop \(a) on #\(i) \(failed ? "failed" : "answers again")"
        case let .multicastChanged(i): "multicast groups of #\(i) changed"
        case let .duplicateAddress(i, a): "duplicate address \(a) on #\(i)"
        case let .neighbor6Learned(a, i, mac): "neighbor \(a) on #\(i) is at \(mac)"
        case let .neighbor6Wanted(a, i): "neighbor \(a) on #\(i) wanted"
        case let .routerSolicited(i): "router solicitation on #\(i)"
        case let .multicastQueried(i, d): "MLD query on #\(i), answer within \(d) ms"
        case let .saExpiring(i, spi, inbound): "\(inbound ? "inbound" : "outbound") SA 0x\(String(spi, radix: 16)) of #\(i) expiring"
        case let .saExpired(i, spi, inbound): "\(inbound ? "inbound" : "outbound") SA 0x\(String(spi, radix: 16)) of #\(i) expired"
        case let .datagram(socket, from, port, bytes): "\(bytes.count) bytes from \(from) port \(port) for socket \(socket.value)"
        case let .tcp(id): "\(id) changed"
        case let .tcpAcceptable(l): "\(l) has connections to accept"
        }
    }
}

/// The useful content of an ICMP error: who sent it, what it says, and
/// which datagram it is about.
public struct ICMPErrorReport: Hashable, Sendable, CustomStringConvertible {
    public var from: IPv4Address
    public var type: ICMPv4Type
    public var code: UInt8
    /// For fragmentation needed (RFC 1191); 0 otherwise.
    public var nextHopMTU: UInt16
    public var originalSource: IPv4Address
    public var originalDestination: IPv4Address
    public var originalProtocol: IPProtocol
    /// The ICMP echo identifier and sequence of the original, if it was an echo request.
    public var originalEcho: EchoID?

    public struct EchoID: Hashable, Sendable {
        public var identifier: UInt16
        public var sequence: UInt16
        public init(identifier: UInt16, sequence: UInt16) { self.identifier = identifier; self.sequence = sequence }
    }

    public var description: String {
        var s = "\(type) code \(code) from \(from) about \(originalSource) -> \(originalDestination) \(originalProtocol)"
        if nextHopMTU != 0 { s += " mtu \(nextHopMTU)" }
        if let e = originalEcho { s += " echo \(e.identifier)/\(e.sequence)" }
        return s
    }
}
