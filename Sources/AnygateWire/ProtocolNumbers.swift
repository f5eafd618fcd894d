// Protocol numbers are open structs, not closed enums: a value this code
// does not know survives parse -> emit and prints as a number.

/// An Ethernet II type field (IEEE 802.3, IANA "ieee-802-numbers").
public struct EtherType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }

    @inlinable public static var ipv4: EtherType { EtherType(rawValue: 0x0800) }
    @inlinable public static var arp: EtherType { EtherType(rawValue: 0x0806) }
    @inlinable public static var vlan: EtherType { EtherType(rawValue: 0x8100) }
    @inlinable public static var qinq: EtherType { EtherType(rawValue: 0x88A8) }
    @inlinable public static var ipv6: EtherType { EtherType(rawValue: 0x86DD) }
    /// Transparent Ethernet bridging, carried in GRE (RFC 1701).
    @inlinable public static var transparentEthernet: EtherType { EtherType(rawValue: 0x6558) }

    public var description: String {
        switch self {
        case .ipv4: "ipv4"
        case .arp: "arp"
        case .vlan: "802.1q"
        case .qinq: "802.1ad"
        case .ipv6: "ipv6"
        case .transparentEthernet: "teb"
        default: "0x" + String(rawValue, radix: 16)
        }
    }
}

/// An IP protocol / IPv6 next-header number (IANA "protocol-numbers").
public struct IPProtocol: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    @inlinable public static var icmp: IPProtocol { IPProtocol(rawValue: 1) }
    @inlinable public static var tcp: IPProtocol { IPProtocol(rawValue: 6) }
    @inlinable public static var udp: IPProtocol { IPProtocol(rawValue: 17) }
    @inlinable public static var ipv6: IPProtocol { IPProtocol(rawValue: 41) }
    @inlinable public static var ipv6Fragment: IPProtocol { IPProtocol(rawValue: 44) }
    @inlinable public static var gre: IPProtocol { IPProtocol(rawValue: 47) }
    @inlinable public static var esp: IPProtocol { IPProtocol(rawValue: 50) }
    @inlinable public static var icmpv6: IPProtocol { IPProtocol(rawValue: 58) }
    @inlinable public static var ipv6NoNext: IPProtocol { IPProtocol(rawValue: 59) }

    public var description: String {
        switch self {
        case .icmp: "icmp"
        case .tcp: "tcp"
        case .udp: "udp"
        case .ipv6: "ipv6"
        case .ipv6Fragment: "ipv6-frag"
        case .gre: "gre"
        case .esp: "esp"
        case .icmpv6: "icmpv6"
        case .ipv6NoNext: "ipv6-nonxt"
        default: String(rawValue)
        }
    }
}

/// An ARP operation code (RFC 826).
public struct ARPOperation: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }
    @inlinable public static var request: ARPOperation { ARPOperation(rawValue: 1) }
    @inlinable public static var reply: ARPOperation { ARPOperation(rawValue: 2) }
    public var description: String {
        switch self {
        case .request: "request"
        case .reply: "reply"
        default: String(rawValue)
        }
    }
}

/// An ICMPv4 message type (RFC 792).
public struct ICMPv4Type: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    @inlinable public static var echoReply: ICMPv4Type { ICMPv4Type(rawValue: 0) }
    @inlinable public static var destinationUnreachable: ICMPv4Type { ICMPv4Type(rawValue: 3) }
    @inlinable public static var redirect: ICMPv4Type { ICMPv4Type(rawValue: 5) }
    @inlinable public static var echoRequest: ICMPv4Type { ICMPv4Type(rawValue: 8) }
    @inlinable public static var timeExceeded: ICMPv4Type { ICMPv4Type(rawValue: 11) }
    @inlinable public static var parameterProblem: ICMPv4Type { ICMPv4Type(rawValue: 12) }

    /// Error messages (RFC 1122 section 3.2.2): never sent in reply to one.
    @inlinable public var isError: Bool {
        switch rawValue {
        case 3, 4, 5, 11, 12: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .echoReply: "echo-reply"
        case .destinationUnreachable: "unreachable"
        case .redirect: "redirect"
        case .echoRequest: "echo-request"
        case .timeExceeded: "time-exceeded"
        case .parameterProblem: "parameter-problem"
        default: "type-\(rawValue)"
        }
    }
}

/// Codes of ICMPv4 destination unreachable (RFC 792, RFC 1812 section 5.2.7.1).
public enum ICMPv4UnreachableCode {
    public static let net: UInt8 = 0
    public static let host: UInt8 = 1
    public static let `protocol`: UInt8 = 2
    public static let port: UInt8 = 3
    public static let fragmentationNeeded: UInt8 = 4
    public static let adminProhibited: UInt8 = 13
}

/// Codes of ICMPv4 time exceeded (RFC 792).
public enum ICMPv4TimeExceededCode {
    public static let ttl: UInt8 = 0
    public static let reassembly: UInt8 = 1
}

/// An ICMPv6 message type (RFC 4443, RFC 4861).
public struct ICMPv6Type: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    @inlinable public static var destinationUnreachable: ICMPv6Type { ICMPv6Type(rawValue: 1) }
    @inlinable public static var packetTooBig: ICMPv6Type { ICMPv6Type(rawValue: 2) }
    @inlinable public static var timeExceeded: ICMPv6Type { ICMPv6Type(rawValue: 3) }
    @inlinable public static var parameterProblem: ICMPv6Type { ICMPv6Type(rawValue: 4) }
    @inlinable public static var echoRequest: ICMPv6Type { ICMPv6Type(rawValue: 128) }
    @inlinable public static var echoReply: ICMPv6Type { ICMPv6Type(rawValue: 129) }
    @inlinable public static var routerSolicitation: ICMPv6Type { ICMPv6Type(rawValue: 133) }
    @inlinable public static var routerAdvertisement: ICMPv6Type { ICMPv6Type(rawValue: 134) }
    @inlinable public static var neighborSolicitation: ICMPv6Type { ICMPv6Type(rawValue: 135) }
    @inlinable public static var neighborAdvertisement: ICMPv6Type { ICMPv6Type(rawValue: 136) }
    @inlinable public static var redirect: ICMPv6Type { ICMPv6Type(rawValue: 137) }
    /// Multicast listener query (MLDv1 and v2 share it, RFC 3810 section 5.1).
    @inlinable public static var multicastListenerQuery: ICMPv6Type { ICMPv6Type(rawValue: 130) }
    @inlinable public static var multicastListenerReportV1: ICMPv6Type { ICMPv6Type(rawValue: 131) }
    @inlinable public static var multicastListenerDone: ICMPv6Type { ICMPv6Type(rawValue: 132) }
    @inlinable public static var multicastListenerReportV2: ICMPv6Type { ICMPv6Type(rawValue: 143) }

    /// Types below 128 are errors (RFC 4443 section 2.1).
    @inlinable public var isError: Bool { rawValue < 128 }

    public var description: String {
        switch self {
        case .destinationUnreachable: "unreachable"
        case .packetTooBig: "packet-too-big"
        case .timeExceeded: "time-exceeded"
        case .parameterProblem: "parameter-problem"
        case .echoRequest: "echo-request"
        case .echoReply: "echo-reply"
        case .routerSolicitation: "router-solicitation"
        case .routerAdvertisement: "router-advertisement"
        case .neighborSolicitation: "neighbor-solicitation"
        case .neighborAdvertisement: "neighbor-advertisement"
        case .redirect: "redirect"
        case .multicastListenerQuery: "mld-query"
        case .multicastListenerReportV1: "mld-report"
        case .multicastListenerDone: "mld-done"
        case .multicastListenerReportV2: "mldv2-report"
        default: "type-\(rawValue)"
        }
    }
}

/// The ECN field: the low two bits of the IPv4 TOS / IPv6 traffic class (RFC 3168).
public enum ECN {
    public static let notECT: UInt8 = 0
    public static let ect1: UInt8 = 1
    public static let ect0: UInt8 = 2
    public static let ce: UInt8 = 3

    /// RFC 6040 section 4.2, normal mode: the inner ECN field after
    /// decapsulation, or nil when the packet must be dropped (CE outside,
    /// Not-ECT inside: the congestion signal cannot be passed on).
    @inlinable public static func decapsulated(outer: UInt8, inner: UInt8) -> UInt8? {
        let o = outer & 3, i = inner & 3
        if o == ce { return i == notECT ? nil : ce }
        if o == ect1 && i == ect0 { return ect1 }
        return i
    }
}
