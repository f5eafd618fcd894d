/// Neighbour discovery (RFC 4861): the options that follow the fixed part
/// of a router solicitation (at byte 8), router advertisement (16),
/// neighbour solicitation or advertisement (24), and the checks a node makes
/// before it believes any of them.
///
/// ```
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     Type      |    Length     |              ...              |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
/// Length counts 8-byte units, the type and length bytes included.
public enum NDOption: Hashable, Sendable {
    case sourceLinkLayer(MACAddress)
    case targetLinkLayer(MACAddress)
    case prefixInformation(NDPrefixInformation)
    case mtu(UInt32)
    /// An option this implementation does not read (skipped, RFC 4861 section 4.6).
    case other(type: UInt8, length: Int)

    public static let sourceLinkLayerType: UInt8 = 1
    public static let targetLinkLayerType: UInt8 = 2
    public static let prefixInformationType: UInt8 = 3
    public static let mtuType: UInt8 = 5

    /// Bytes the option takes.
    public var encodedLength: Int {
        switch self {
        case .sourceLinkLayer, .targetLinkLayer, .mtu: 8
        case .prefixInformation: 32
        case .other(_, let length): length
        }
    }

    /// Writes the option at the start of `bytes`; returns its length.
    @discardableResult
    public func emit(into bytes: UnsafeMutableRawBufferPointer) -> Int {
        let n = encodedLength
        precondition(bytes.count >= n && n % 8 == 0 && n > 0)
        bytes.setBE8(1, UInt8(n / 8))
        switch self {
        case .sourceLinkLayer(let mac):
            bytes.setBE8(0, NDOption.sourceLinkLayerType)
            mac.write(to: bytes, at: 2)
        case .targetLinkLayer(let mac):
            bytes.setBE8(0, NDOption.targetLinkLayerType)
            mac.write(to: bytes, at: 2)
        case .mtu(let mtu):
            bytes.setBE8(0, NDOption.mtuType)
            bytes.setBE16(2, 0)
            bytes.setBE32(4, mtu)
        case .prefixInformation(let p):
            bytes.setBE8(0, NDOption.prefixInformationType)
            bytes.setBE8(2, p.prefixLength)
            bytes.setBE8(3, (p.onLink ? 0x80 : 0) | (p.autonomous ? 0x40 : 0))
            bytes.setBE32(4, p.validLifetime)
            bytes.setBE32(8, p.preferredLifetime)
            bytes.setBE32(12, 0)
            p.prefix.write(to: bytes, at: 16)
        case .other(let type, _):
            bytes.setBE8(0, type)
            for i in 2..<n { bytes.setBE8(i, 0) }
        }
        return n
    }
}

/// A prefix information option (RFC 4861 section 4.6.2): what SLAAC
/// (RFC 4862) builds addresses from. Lifetimes are seconds; all ones is
/// infinity.
public struct NDPrefixInformation: Hashable, Sendable {
    public var prefix: IPv6Address
    public var prefixLength: UInt8
    /// L: the prefix is on the link.
    public var onLink: Bool
    /// A: hosts may form addresses in it (SLAAC).
    public var autonomous: Bool
    public var validLifetime: UInt32
    public var preferredLifetime: UInt32

    public init(prefix: IPv6Address, prefixLength: UInt8, onLink: Bool = true, autonomous: Bool = true,
                validLifetime: UInt32 = 86_400, preferredLifetime: UInt32 = 14_400) {
        self.prefix = prefix; self.prefixLength = prefixLength; self.onLink = onLink
        self.autonomous = autonomous; self.validLifetime = validLifetime; self.preferredLifetime = preferredLifetime
    }
}

/// Walks the options of an ND message without allocating. An option of
/// length 0, or one running past the message, makes the whole message
/// invalid (RFC 4861 sections 4.6 and 6.1: such packets are dropped); a
/// known option of the wrong length likewise.
public struct NDOptionReader {
    let bytes: UnsafeMutableRawBufferPointer
    var at: Int

    /// `bytes` is the ICMPv6 message; options start at `offset`.
    public init(_ bytes: UnsafeMutableRawBufferPointer, from offset: Int) {
        self.bytes = bytes
        at = offset
    }

    /// The next option, nil at the end.
    public mutating func next() throws(WireError) -> NDOption? {
        guard at < bytes.count else { return nil }
        guard at + 2 <= bytes.count else { throw .truncated }
        let type = bytes.be8(at), units = Int(bytes.be8(at + 1))
        guard units > 0 else { throw .badOption }
        let n = units * 8
        guard at + n <= bytes.count else { throw .truncated }
        let o = bytes.slice(at, n)
        at += n
        switch type {
        case NDOption.sourceLinkLayerType, NDOption.targetLinkLayerType:
            // Ethernet: six bytes of address (RFC 2464 section 6).
            guard units == 1 else { throw .badOption }
            let mac = MACAddress(bytes: o, at: 2)
            return type == NDOption.sourceLinkLayerType ? .sourceLinkLayer(mac) : .targetLinkLayer(mac)
        case NDOption.mtuType:
            guard units == 1 else { throw .badOption }
            return .mtu(o.be32(4))
        case NDOption.prefixInformationType:
            guard units == 4, o.be8(2) <= 128 else { throw .badOption }
            let flags = o.be8(3)
            return .prefixInformation(NDPrefixInformation(
                prefix: IPv6Address(bytes: o, at: 16), prefixLength: o.be8(2), onLink: flags & 0x80 != 0,
                autonomous: flags & 0x40 != 0, validLifetime: o.be32(4), preferredLifetime: o.be32(8)))
        default:
            return .other(type: type, length: n)
        }
    }
}

/// What the options of one ND message say (the last link-layer address of
/// each kind counts; prefixes in order).
public struct NDOptions: Hashable, Sendable {
    public var sourceLinkLayer: MACAddress?
    public var targetLinkLayer: MACAddress?
    public var mtu: UInt32?
    public var prefixes: [NDPrefixInformation] = []

    public init() {}

    public init(parsing bytes: UnsafeMutableRawBufferPointer, from offset: Int) throws(WireError) {
        var r = NDOptionReader(bytes, from: offset)
        while let o = try r.next() {
            switch o {
            case .sourceLinkLayer(let m): sourceLinkLayer = m
            case .targetLinkLayer(let m): targetLinkLayer = m
            case .mtu(let v): mtu = v
            case .prefixInformation(let p): prefixes.append(p)
            case .other: break
            }
        }
    }
}

/// The fixed part of a router advertisement (RFC 4861 section 4.2), after
/// the type, code and checksum; options follow at byte 16.
///
/// ```
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Cur Hop Limit |M|O|  Reserved |       Router Lifetime         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         Reachable Time                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                          Retrans Timer                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
public struct RouterAdvertisementRepr: Hashable, Sendable {
    public static let optionsOffset = 16
    /// Hop limit hosts should use; 0: unspecified.
    public var currentHopLimit: UInt8
    /// M and O: addresses or other configuration from DHCPv6.
    public var managed: Bool
    public var otherConfiguration: Bool
    /// Seconds this router may be a default router; 0: it is not one.
    public var routerLifetime: UInt16
    /// Milliseconds; 0: unspecified.
    public var reachableTime: UInt32
    public var retransmitTimer: UInt32

    public init(currentHopLimit: UInt8 = 64, managed: Bool = false, otherConfiguration: Bool = false,
                routerLifetime: UInt16 = 1800, reachableTime: UInt32 = 0, retransmitTimer: UInt32 = 0) {
        self.currentHopLimit = currentHopLimit; self.managed = managed; self.otherConfiguration = otherConfiguration
        self.routerLifetime = routerLifetime; self.reachableTime = reachableTime; self.retransmitTimer = retransmitTimer
    }

    /// `bytes` is the whole ICMPv6 message.
    public init(parsing bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        guard bytes.count >= RouterAdvertisementRepr.optionsOffset else { throw .truncated }
        currentHopLimit = bytes.be8(4)
        managed = bytes.be8(5) & 0x80 != 0
        otherConfiguration = bytes.be8(5) & 0x40 != 0
        routerLifetime = bytes.be16(6)
        reachableTime = bytes.be32(8)
        retransmitTimer = bytes.be32(12)
    }

    /// Writes bytes 4..<16 of the message.
    func emitFixedPart(into bytes: UnsafeMutableRawBufferPointer) {
        bytes.setBE8(4, currentHopLimit)
        bytes.setBE8(5, (managed ? 0x80 : 0) | (otherConfiguration ? 0x40 : 0))
        bytes.setBE16(6, routerLifetime)
        bytes.setBE32(8, reachableTime)
        bytes.setBE32(12, retransmitTimer)
    }
}

/// Neighbour advertisement flags (RFC 4861 section 4.4).
public enum NAFlags {
    public static let router: UInt8 = 0x80
    public static let solicited: UInt8 = 0x40
    public static let override: UInt8 = 0x20
}

/// The checks RFC 4861 makes of every ND message before it is believed
/// (sections 6.1.1, 6.1.2, 7.1.1, 7.1.2): sent with hop limit 255 (so from
/// the link itself), code 0, long enough for its type, options well
/// formed, a target that is not multicast, and from the unspecified
/// address only as a DAD probe: a solicitation to a solicited-node group
/// with no source link-layer option. Router advertisements must come from
/// a link-local address. Returns the options.
public enum NeighborDiscovery {
    public static func check(_ message: ICMPv6Repr, bytes: UnsafeMutableRawBufferPointer, hopLimit: UInt8,
                             source: IPv6Address, destination: IPv6Address) throws(WireError) -> NDOptions {
        guard hopLimit == 255, bytes.count >= 4, bytes.be8(1) == 0 else { throw .unsupported }
        let offset: Int
        switch message {
        case .routerSolicitation: offset = 8
        case .routerAdvertisement:
            guard source.isLinkLocal else { throw .unsupported }
            offset = RouterAdvertisementRepr.optionsOffset
        case .neighborSolicitation(let target), .neighborAdvertisement(let target, _):
            guard !target.isMulticast else { throw .unsupported }
            offset = 24
        default:
            throw .unsupported
        }
        guard bytes.count >= offset else { throw .truncated }
        let options = try NDOptions(parsing: bytes, from: offset)
        if source.isUnspecified {
            switch message {
            case .neighborSolicitation:
                guard destination.isMulticast, destination.low >> 24 == 0x1FF, destination.high == 0xFF02_0000_0000_0000,
                      options.sourceLinkLayer == nil else { throw .unsupported }
            case .routerSolicitation:
                guard options.sourceLinkLayer == nil else { throw .unsupported }
            default:
                throw .unsupported
            }
        }
        if case let .neighborAdvertisement(_, flags) = message, flags & NAFlags.solicited != 0, destination.isMulticast {
            throw .unsupported
        }
        return options
    }
}

/// A multicast listener query (RFC 3810 section 5.1; an MLDv1 query,
/// RFC 2710, is the first 24 bytes of one): a router asks which groups
/// have listeners — all of them (`group` ::) or one.
public struct MLDQueryRepr: Hashable, Sendable {
    /// How long a listener may wait before it answers, in milliseconds.
    public var maximumResponseDelay: Int
    public var group: IPv6Address
    /// An MLDv2 query (28 bytes or more); v1 otherwise.
    public var isVersion2: Bool
    /// Sources the query names (a source-specific query), v2 only.
    public var sourceCount: Int

    public init(maximumResponseDelay: Int = 10_000, group: IPv6Address = .any, isVersion2: Bool = true, sourceCount: Int = 0) {
        self.maximumResponseDelay = maximumResponseDelay; self.group = group
        self.isVersion2 = isVersion2; self.sourceCount = sourceCount
    }

    /// `bytes` is the whole ICMPv6 message.
    public init(parsing bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        guard bytes.count >= 24 else { throw .truncated }
        let code = Int(bytes.be16(4))
        group = IPv6Address(bytes: bytes, at: 8)
        isVersion2 = bytes.count >= 28
        if isVersion2 {
            // Codes from 32768 on are a floating-point value (section 5.1.3).
            maximumResponseDelay = code < 32768 ? code : ((code & 0xFFF) | 0x1000) << (((code >> 12) & 7) + 3)
            sourceCount = Int(bytes.be16(26))
            guard 28 + sourceCount * 16 <= bytes.count else { throw .truncated }
        } else {
            maximumResponseDelay = code
            sourceCount = 0
        }
    }

    func emitFixedPart(into bytes: UnsafeMutableRawBufferPointer) {
        bytes.setBE16(4, UInt16(min(maximumResponseDelay, 32767)))
        bytes.setBE16(6, 0)
        group.write(to: bytes, at: 8)
        guard isVersion2, bytes.count >= 28 else { return }
        bytes.setBE8(24, 2)      // S 0, QRV 2 (RFC 3810 section 9.1)
        bytes.setBE8(25, 125)    // QQIC: 125 s (section 9.2)
        bytes.setBE16(26, 0)
    }
}

/// An MLDv2 report (RFC 3810 section 5.2) of the groups a node listens to,
/// each with no source list: IS_EXCLUDE({}) (record type 2) in answer to a
/// query, CHANGE_TO_EXCLUDE({}) (4) when it joins, CHANGE_TO_INCLUDE({})
/// (3) when it leaves. Sent to ff02::16 with hop limit 1 and a hop-by-hop
/// Router Alert (`MLDv2Report.hopByHopRouterAlert`).
public enum MLDv2Report {
    public static let isExclude: UInt8 = 2
    public static let changeToInclude: UInt8 = 3
    public static let changeToExclude: UInt8 = 4

    /// Bytes of a report with `groups` records: header 8, 20 per record.
    public static func length(groups: Int) -> Int { 8 + 20 * groups }

    /// Writes the whole report, checksum included.
    public static func emit(recordType: UInt8, groups: [IPv6Address], into bytes: UnsafeMutableRawBufferPointer,
                            source: IPv6Address) {
        precondition(bytes.count >= length(groups: groups.count) && groups.count <= 0xFFFF)
        bytes.setBE16(6, UInt16(groups.count))
        for (k, g) in groups.enumerated() {
            let at = 8 + 20 * k
            bytes.setBE8(at, recordType)
            bytes.setBE8(at + 1, 0)
            bytes.setBE16(at + 2, 0)
            g.write(to: bytes, at: at + 4)
        }
        ICMPv6Repr.other(type: .multicastListenerReportV2, code: 0, rest: UInt32(groups.count))
            .emit(into: bytes.slice(0, length(groups: groups.count)), source: source, destination: .allMLDv2Routers)
    }

    /// The groups a report lists, with their record types.
    public static func records(parsing bytes: UnsafeMutableRawBufferPointer) throws(WireError) -> [(type: UInt8, group: IPv6Address)] {
        guard bytes.count >= 8 else { throw .truncated }
        var out: [(type: UInt8, group: IPv6Address)] = []
        var at = 8
        for _ in 0..<Int(bytes.be16(6)) {
            guard at + 20 <= bytes.count else { throw .truncated }
            let aux = Int(bytes.be8(at + 1)) * 4, sources = Int(bytes.be16(at + 2))
            out.append((bytes.be8(at), IPv6Address(bytes: bytes, at: at + 4)))
            at += 20 + 16 * sources + aux
        }
        guard at <= bytes.count else { throw .truncated }
        return out
    }

    /// The 8-byte hop-by-hop header every MLD message carries: Router
    /// Alert 0 (RFC 2711) and two bytes of padding; `nextHeader` is ICMPv6.
    public static func emitHopByHopRouterAlert(into bytes: UnsafeMutableRawBufferPointer) {
        precondition(bytes.count >= 8)
        bytes.setBE8(0, IPProtocol.icmpv6.rawValue)
        bytes.setBE8(1, 0)
        bytes.setBE8(2, 5)
        bytes.setBE8(3, 2)
        bytes.setBE16(4, 0)
        bytes.setBE8(6, 1)  // PadN of two bytes
        bytes.setBE8(7, 0)
    }
}
