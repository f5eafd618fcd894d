/// An IPv6 fixed header (RFC 8200 section 3).
///
/// ```
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |Version| Traffic Class |           Flow Label                  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |         Payload Length        |  Next Header  |   Hop Limit   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                Source Address (128 bits)                      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |              Destination Address (128 bits)                   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
public struct IPv6Packet {
    public enum Field {
        public static let versionClassFlow = 0
        public static let payloadLength = 4
        public static let nextHeader = 6
        public static let hopLimit = 7
        public static let source = 8
        public static let destination = 24
    }
    public static let headerLength = 40

    public var bytes: UnsafeMutableRawBufferPointer

    @inlinable public init(unchecked bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    /// Checks room for the header, version 6, and the payload length against
    /// the buffer. A zero payload length (the jumbogram marker, RFC 2675) is
    /// accepted only with an empty payload.
    public init(validating bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        guard bytes.count >= IPv6Packet.headerLength else { throw .truncated }
        self.bytes = bytes
        guard version == 6 else { throw .badVersion }
        guard IPv6Packet.headerLength + payloadLength <= bytes.count else { throw .badTotalLength }
    }

    @inlinable public var version: UInt8 { bytes.be8(Field.versionClassFlow) >> 4 }
    @inlinable public var trafficClass: UInt8 { UInt8(truncatingIfNeeded: bytes.be32(Field.versionClassFlow) >> 20) }
    @inlinable public var flowLabel: UInt32 { bytes.be32(Field.versionClassFlow) & 0xF_FFFF }
    @inlinable public var payloadLength: Int { Int(bytes.be16(Field.payloadLength)) }
    @inlinable public var nextHeader: IPProtocol { IPProtocol(rawValue: bytes.be8(Field.nextHeader)) }
    @inlinable public var hopLimit: UInt8 {
        get { bytes.be8(Field.hopLimit) }
        nonmutating set { bytes.setBE8(Field.hopLimit, newValue) }
    }
    @inlinable public var source: IPv6Address { IPv6Address(bytes: bytes, at: Field.source) }
    @inlinable public var destination: IPv6Address { IPv6Address(bytes: bytes, at: Field.destination) }
    @inlinable public var payload: UnsafeMutableRawBufferPointer { bytes.slice(IPv6Packet.headerLength, payloadLength) }
}

/// The parsed value of an IPv6 fixed header.
public struct IPv6Repr: Hashable, Sendable {
    public var source: IPv6Address
    public var destination: IPv6Address
    public var nextHeader: IPProtocol
    public var hopLimit: UInt8
    public var trafficClass: UInt8
    public var flowLabel: UInt32
    public var payloadLength: Int

    public init(source: IPv6Address, destination: IPv6Address, nextHeader: IPProtocol, payloadLength: Int,
                hopLimit: UInt8 = 64, trafficClass: UInt8 = 0, flowLabel: UInt32 = 0) {
        self.source = source; self.destination = destination; self.nextHeader = nextHeader
        self.payloadLength = payloadLength; self.hopLimit = hopLimit
        self.trafficClass = trafficClass; self.flowLabel = flowLabel & 0xF_FFFF
    }

    public init(parsing bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        let p = try IPv6Packet(validating: bytes)
        self.init(source: p.source, destination: p.destination, nextHeader: p.nextHeader,
                  payloadLength: p.payloadLength, hopLimit: p.hopLimit,
                  trafficClass: p.trafficClass, flowLabel: p.flowLabel)
    }

    public func emit(into bytes: UnsafeMutableRawBufferPointer) {
        precondition(bytes.count >= IPv6Packet.headerLength && payloadLength <= 0xFFFF)
        bytes.setBE32(IPv6Packet.Field.versionClassFlow, 6 << 28 | UInt32(trafficClass) << 20 | flowLabel)
        bytes.setBE16(IPv6Packet.Field.payloadLength, UInt16(payloadLength))
        bytes.setBE8(IPv6Packet.Field.nextHeader, nextHeader.rawValue)
        bytes.setBE8(IPv6Packet.Field.hopLimit, hopLimit)
        source.write(to: bytes, at: IPv6Packet.Field.source)
        destination.write(to: bytes, at: IPv6Packet.Field.destination)
    }
}

/// An ICMPv6 message (RFC 4443): type, code, checksum over the IPv6
/// pseudo-header, then a 4-byte type-specific word and the body.
public struct ICMPv6Packet {
    public enum Field {
        public static let type = 0
        public static let code = 1
        public static let checksum = 2
        public static let rest = 4
        public static let body = 8
    }
    public static let headerLength = 8

    public var bytes: UnsafeMutableRawBufferPointer

    @inlinable public init(unchecked bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    public init(validating bytes: UnsafeMutableRawBufferPointer,
                source: IPv6Address, destination: IPv6Address) throws(WireError) {
        guard bytes.count >= ICMPv6Packet.headerLength else { throw .truncated }
        let initial = InternetChecksum.pseudoHeaderSum(source: source, destination: destination,
                                                       nextHeader: .icmpv6, length: bytes.count)
        guard InternetChecksum.verifies(bytes, initial: initial) else { throw .badChecksum }
        self.bytes = bytes
    }

    @inlinable public var type: ICMPv6Type { ICMPv6Type(rawValue: bytes.be8(Field.type)) }
    @inlinable public var code: UInt8 { bytes.be8(Field.code) }
    @inlinable public var checksum: UInt16 { bytes.be16(Field.checksum) }
    @inlinable public var rest: UInt32 { bytes.be32(Field.rest) }
    @inlinable public var body: UnsafeMutableRawBufferPointer { bytes.tail(from: Field.body) }
}

/// The parsed value of an ICMPv6 header; neighbour discovery targets are
/// read from the body, other bodies stay in the buffer.
public enum ICMPv6Repr: Hashable, Sendable {
    case echoRequest(identifier: UInt16, sequence: UInt16)
    case echoReply(identifier: UInt16, sequence: UInt16)
    case destinationUnreachable(code: UInt8)
    case packetTooBig(mtu: UInt32)
    case timeExceeded(code: UInt8)
    case parameterProblem(code: UInt8, pointer: UInt32)
    case neighborSolicitation(target: IPv6Address)
    case neighborAdvertisement(target: IPv6Address, flags: UInt8)
    case routerSolicitation
    case routerAdvertisement(RouterAdvertisementRepr)
    case multicastListenerQuery(MLDQueryRepr)
    case other(type: ICMPv6Type, code: UInt8, rest: UInt32)

    public init(parsing bytes: UnsafeMutableRawBufferPointer,
                source: IPv6Address, destination: IPv6Address) throws(WireError) {
        let p = try ICMPv6Packet(validating: bytes, source: source, destination: destination)
        switch p.type {
        case .echoRequest: self = .echoRequest(identifier: UInt16(p.rest >> 16), sequence: UInt16(p.rest & 0xFFFF))
        case .echoReply: self = .echoReply(identifier: UInt16(p.rest >> 16), sequence: UInt16(p.rest & 0xFFFF))
        case .destinationUnreachable: self = .destinationUnreachable(code: p.code)
        case .packetTooBig: self = .packetTooBig(mtu: p.rest)
        case .timeExceeded: self = .timeExceeded(code: p.code)
        case .parameterProblem: self = .parameterProblem(code: p.code, pointer: p.rest)
        case .neighborSolicitation:
            guard bytes.count >= 24 else { throw .truncated }
            self = .neighborSolicitation(target: IPv6Address(bytes: bytes, at: 8))
        case .neighborAdvertisement:
            guard bytes.count >= 24 else { throw .truncated }
            self = .neighborAdvertisement(target: IPv6Address(bytes: bytes, at: 8), flags: UInt8(p.rest >> 24))
        case .routerSolicitation: self = .routerSolicitation
        case .routerAdvertisement: self = .routerAdvertisement(try RouterAdvertisementRepr(parsing: bytes))
        case .multicastListenerQuery: self = .multicastListenerQuery(try MLDQueryRepr(parsing: bytes))
        default: self = .other(type: p.type, code: p.code, rest: p.rest)
        }
    }

    public var type: ICMPv6Type {
        switch self {
        case .echoRequest: .echoRequest
        case .echoReply: .echoReply
        case .destinationUnreachable: .destinationUnreachable
        case .packetTooBig: .packetTooBig
        case .timeExceeded: .timeExceeded
        case .parameterProblem: .parameterProblem
        case .neighborSolicitation: .neighborSolicitation
        case .neighborAdvertisement: .neighborAdvertisement
        case .routerSolicitation: .routerSolicitation
        case .routerAdvertisement: .routerAdvertisement
        case .multicastListenerQuery: .multicastListenerQuery
        case .other(let t, _, _): t
        }
    }

    /// Length of the header plus the fixed body this value writes.
    public var headerLength: Int {
        switch self {
        case .neighborSolicitation, .neighborAdvertisement: 24
        case .multicastListenerQuery(let q): q.isVersion2 ? 28 : 24
        case .routerAdvertisement: RouterAdvertisementRepr.optionsOffset
        default: ICMPv6Packet.headerLength
        }
    }

    /// Writes the header (and the fixed part of a neighbour-discovery or MLD
    /// message) at the start of `bytes` — the whole message, with any
    /// options already in place after `headerLength` — and fills the checksum.
    public func emit(into bytes: UnsafeMutableRawBufferPointer, source: IPv6Address, destination: IPv6Address) {
        precondition(bytes.count >= headerLength)
        var code: UInt8 = 0, rest: UInt32 = 0
        switch self {
        case .echoRequest(let id, let seq), .echoReply(let id, let seq): rest = UInt32(id) << 16 | UInt32(seq)
        case .destinationUnreachable(let c), .timeExceeded(let c): code = c
        case .packetTooBig(let mtu): rest = mtu
        case .parameterProblem(let c, let ptr): code = c; rest = ptr
        case .neighborSolicitation(let t): t.write(to: bytes, at: 8)
        case .neighborAdvertisement(let t, let f): rest = UInt32(f) << 24; t.write(to: bytes, at: 8)
        case .routerSolicitation: break
        case .routerAdvertisement, .multicastListenerQuery: break  // written below, over `rest`
        case .other(_, let c, let r): code = c; rest = r
        }
        bytes.setBE8(ICMPv6Packet.Field.type, type.rawValue)
        bytes.setBE8(ICMPv6Packet.Field.code, code)
        bytes.setBE16(ICMPv6Packet.Field.checksum, 0)
        bytes.setBE32(ICMPv6Packet.Field.rest, rest)
        if case .routerAdvertisement(let ra) = self { ra.emitFixedPart(into: bytes) }
        if case .multicastListenerQuery(let q) = self { q.emitFixedPart(into: bytes) }
        let initial = InternetChecksum.pseudoHeaderSum(source: source, destination: destination,
                                                       nextHeader: .icmpv6, length: bytes.count)
        bytes.setBE16(ICMPv6Packet.Field.checksum, InternetChecksum.checksum(bytes, initial: initial))
    }
}
