internal import AnygateWire

/// IKEv2 messages (RFC 7296 section 3): the header, the generic payload
/// chain, and the payloads the appliance speaks, parsed into plain values
/// and emitted from them. IKE is control plane: these allocate freely.
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                       IKE SA Initiator's SPI                  |
/// |                                                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                       IKE SA Responder's SPI                  |
/// |                                                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Next Payload | MjVer | MnVer | Exchange Type |     Flags     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                          Message ID                           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                            Length                             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
public struct IKEHeader: Hashable, Sendable {
    public static let length = 28
    public static let version: UInt8 = 0x20
    public static let flagInitiator: UInt8 = 0x08
    public static let flagResponse: UInt8 = 0x20

    public var initiatorSPI: UInt64
    public var responderSPI: UInt64
    public var nextPayload: UInt8
    public var exchange: IKEExchange
    public var flags: UInt8
    public var messageID: UInt32
    public var length: UInt32

    public init(initiatorSPI: UInt64, responderSPI: UInt64, nextPayload: UInt8 = 0, exchange: IKEExchange, flags: UInt8,
                messageID: UInt32, length: UInt32 = 0) {
        self.initiatorSPI = initiatorSPI; self.responderSPI = responderSPI; self.nextPayload = nextPayload
        self.exchange = exchange; self.flags = flags; self.messageID = messageID; self.length = length
    }

    public var isResponse: Bool { flags & IKEHeader.flagResponse != 0 }
    public var fromInitiator: Bool { flags & IKEHeader.flagInitiator != 0 }

    /// Reads a header, refusing a wrong major version or a length that
    /// disagrees with the datagram.
    public init(parsing b: [UInt8]) throws(IKEParseError) {
        guard b.count >= IKEHeader.length else { throw .truncated("header") }
        initiatorSPI = b.be64(0)
        responderSPI = b.be64(8)
        nextPayload = b[16]
        guard b[17] >> 4 == 2 else { throw .version(b[17]) }
        exchange = IKEExchange(rawValue: b[18])
        flags = b[19]
        messageID = b.be32(20)
        length = b.be32(24)
        guard Int(length) == b.count else { throw .length(declared: Int(length), actual: b.count) }
    }

    public func emit(into b: inout [UInt8]) {
        b.append64(initiatorSPI); b.append64(responderSPI)
        b += [nextPayload, IKEHeader.version, exchange.rawValue, flags]
        b.append32(messageID); b.append32(length)
    }
}

/// An exchange type (open: an unknown one survives parsing).
public struct IKEExchange: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let saInit = IKEExchange(rawValue: 34)
    public static let auth = IKEExchange(rawValue: 35)
    public static let createChildSA = IKEExchange(rawValue: 36)
    public static let informational = IKEExchange(rawValue: 37)
    public var description: String {
        switch self {
        case .saInit: "IKE_SA_INIT"
        case .auth: "IKE_AUTH"
        case .createChildSA: "CREATE_CHILD_SA"
        case .informational: "INFORMATIONAL"
        default: "exchange \(rawValue)"
        }
    }
}

/// Payload type numbers (RFC 7296 section 3.2).
public enum IKEPayloadType {
    public static let none: UInt8 = 0
    public static let sa: UInt8 = 33
    public static let ke: UInt8 = 34
    public static let idI: UInt8 = 35
    public static let idR: UInt8 = 36
    public static let cert: UInt8 = 37
    public static let certReq: UInt8 = 38
    public static let auth: UInt8 = 39
    public static let nonce: UInt8 = 40
    public static let notify: UInt8 = 41
    public static let delete: UInt8 = 42
    public static let vendorID: UInt8 = 43
    public static let tsI: UInt8 = 44
    public static let tsR: UInt8 = 45
    public static let sk: UInt8 = 46
    public static let cp: UInt8 = 47
}

/// Why a message could not be read.
public enum IKEParseError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(String)
    case version(UInt8)
    case length(declared: Int, actual: Int)
    case malformed(String)
    /// A payload with the critical bit that this implementation does not know (RFC 7296 section 2.5).
    case unsupportedCritical(UInt8)

    public var description: String {
        switch self {
        case .truncated(let w): "truncated \(w)"
        case .version(let v): "IKE version 0x\(String(v, radix: 16)) (only 2.x)"
        case .length(let d, let a): "length field \(d) but \(a) bytes"
        case .malformed(let w): "malformed \(w)"
        case .unsupportedCritical(let t): "critical payload \(t) not supported"
        }
    }
}

/// A transform of a proposal (RFC 7296 section 3.3.2).
public struct IKETransform: Hashable, Sendable {
    public static let encryption: UInt8 = 1
    public static let prf: UInt8 = 2
    public static let integrity: UInt8 = 3
    public static let keyExchange: UInt8 = 4
    public static let esn: UInt8 = 5

    public var type: UInt8
    public var id: UInt16
    /// The Key Length attribute (14), for ciphers with variable keys.
    public var keyLength: UInt16?

    public init(type: UInt8, id: UInt16, keyLength: UInt16? = nil) { self.type = type; self.id = id; self.keyLength = keyLength }
}

/// One proposal of an SA payload: a protocol (1 IKE, 3 ESP), its SPI, transforms.
public struct IKEProposal: Hashable, Sendable {
    public static let ike: UInt8 = 1
    public static let esp: UInt8 = 3

    public var number: UInt8
    public var protocolID: UInt8
    public var spi: [UInt8]
    public var transforms: [IKETransform]

    public init(number: UInt8, protocolID: UInt8, spi: [UInt8], transforms: [IKETransform]) {
        self.number = number; self.protocolID = protocolID; self.spi = spi; self.transforms = transforms
    }
}

/// A Notify payload (RFC 7296 section 3.10).
public struct IKENotify: Hashable, Sendable {
    public var protocolID: UInt8
    public var spi: [UInt8]
    public var type: UInt16
    public var data: [UInt8]

    public init(_ type: UInt16, data: [UInt8] = [], protocolID: UInt8 = 0, spi: [UInt8] = []) {
        self.type = type; self.data = data; self.protocolID = protocolID; self.spi = spi
    }

    /// Below 16384: an error the peer reports (RFC 7296 section 3.10.1).
    public var isError: Bool { type < 16384 }

    public static let unsupportedCriticalPayload: UInt16 = 1
    public static let invalidIKESPI: UInt16 = 4
    public static let invalidSyntax: UInt16 = 7
    public static let invalidMessageID: UInt16 = 9
    public static let invalidSPI: UInt16 = 11
    public static let noProposalChosen: UInt16 = 14
    public static let invalidKEPayload: UInt16 = 17
    public static let authenticationFailed: UInt16 = 24
    public static let singlePairRequired: UInt16 = 34
    public static let noAdditionalSAs: UInt16 = 35
    public static let internalAddressFailure: UInt16 = 36
    public static let failedCPRequired: UInt16 = 37
    public static let tsUnacceptable: UInt16 = 38
    public static let temporaryFailure: UInt16 = 43
    public static let childSANotFound: UInt16 = 44
    public static let initialContact: UInt16 = 16384
    public static let natDetectionSourceIP: UInt16 = 16388
    public static let natDetectionDestinationIP: UInt16 = 16389
    public static let cookie: UInt16 = 16390
    public static let useTransportMode: UInt16 = 16391
    public static let rekeySA: UInt16 = 16393
    public static let espTFCPaddingNotSupported: UInt16 = 16394
    public static let nonFirstFragmentsAlso: UInt16 = 16395
}

/// An identity (RFC 7296 section 3.5).
public struct IKEIdentity: Hashable, Sendable, CustomStringConvertible {
    public static let ipv4: UInt8 = 1
    public static let fqdn: UInt8 = 2
    public static let rfc822: UInt8 = 3
    public static let ipv6: UInt8 = 5
    public static let keyID: UInt8 = 11

    public var type: UInt8
    public var data: [UInt8]

    public init(type: UInt8, data: [UInt8]) { self.type = type; self.data = data }

    /// An identity from config text: an address, an email (`user@host`),
    /// or else a name (FQDN).
    public init(_ text: String) {
        if let a = IPv4Address(text) {
            self.init(type: IKEIdentity.ipv4, data: a.networkBytes)
        } else if let a = IPv6Address(text) {
            self.init(type: IKEIdentity.ipv6, data: a.networkBytes)
        } else if text.contains("@") {
            self.init(type: IKEIdentity.rfc822, data: Array(text.utf8))
        } else {
            self.init(type: IKEIdentity.fqdn, data: Array(text.utf8))
        }
    }

    public var description: String {
        switch type {
        case IKEIdentity.ipv4 where data.count == 4: data.map(String.init).joined(separator: ".")
        case IKEIdentity.ipv6 where data.count == 16:
            stride(from: 0, to: 16, by: 2).map { String(UInt16(data[$0]) << 8 | UInt16(data[$0 + 1]), radix: 16) }.joined(separator: ":")
        case IKEIdentity.fqdn, IKEIdentity.rfc822: String(decoding: data, as: UTF8.self)
        default: "id type \(type) (\(data.count) bytes)"
        }
    }
}

/// A traffic selector (RFC 7296 section 3.13.1): an address range of one
/// family, a protocol (0 any) and a port range.
public struct TrafficSelector: Hashable, Sendable {
    public static let ipv4Range: UInt8 = 7
    public static let ipv6Range: UInt8 = 8

    public var type: UInt8
    public var ipProtocol: UInt8
    public var startPort: UInt16
    public var endPort: UInt16
    public var start: [UInt8]
    public var end: [UInt8]

    public init(type: UInt8, ipProtocol: UInt8 = 0, startPort: UInt16 = 0, endPort: UInt16 = 65535, start: [UInt8], end: [UInt8]) {
        self.type = type; self.ipProtocol = ipProtocol; self.startPort = startPort; self.endPort = endPort
        self.start = start; self.end = end
    }

    /// Whether `other`'s ranges lie inside this one's.
    public func contains(_ other: TrafficSelector) -> Bool {
        type == other.type && (ipProtocol == 0 || ipProtocol == other.ipProtocol)
            && startPort <= other.startPort && other.endPort <= endPort
            && start.lexicographicallyPrecedes(other.start, orEqual: true) && other.end.lexicographicallyPrecedes(end, orEqual: true)
    }

    /// The part of `self` inside `other`, if any (a responder narrows the
    /// initiator's selectors to its policy, RFC 7296 section 2.9).
    public func intersection(_ other: TrafficSelector) -> TrafficSelector? {
        guard type == other.type else { return nil }
        guard ipProtocol == other.ipProtocol || ipProtocol == 0 || other.ipProtocol == 0 else { return nil }
        let s = start.lexicographicallyPrecedes(other.start) ? other.start : start
        let e = end.lexicographicallyPrecedes(other.end) ? end : other.end
        guard !e.lexicographicallyPrecedes(s) else { return nil }
        let sp = max(startPort, other.startPort), ep = min(endPort, other.endPort)
        guard sp <= ep else { return nil }
        return TrafficSelector(type: type, ipProtocol: max(ipProtocol, other.ipProtocol), startPort: sp, endPort: ep, start: s, end: e)
    }
}

extension Array where Element == UInt8 {
    func lexicographicallyPrecedes(_ o: [UInt8], orEqual: Bool) -> Bool { self == o ? orEqual : lexicographicallyPrecedes(o) }
}

/// The payloads of a message, in order.
public enum IKEPayload: Hashable, Sendable {
    case sa([IKEProposal])
    case ke(group: UInt16, data: [UInt8])
    case nonce([UInt8])
    case notify(IKENotify)
    case idI(IKEIdentity)
    case idR(IKEIdentity)
    case auth(method: UInt8, data: [UInt8])
    case tsI([TrafficSelector])
    case tsR([TrafficSelector])
    /// Protocol 1 (the IKE SA: no SPIs) or 3 (ESP: 4-byte SPIs).
    case delete(protocolID: UInt8, spis: [[UInt8]])
    /// Anything else, kept as it came (vendor IDs, certificate requests, …).
    case other(type: UInt8, body: [UInt8])

    public var type: UInt8 {
        switch self {
        case .sa: IKEPayloadType.sa
        case .ke: IKEPayloadType.ke
        case .nonce: IKEPayloadType.nonce
        case .notify: IKEPayloadType.notify
        case .idI: IKEPayloadType.idI
        case .idR: IKEPayloadType.idR
        case .auth: IKEPayloadType.auth
        case .tsI: IKEPayloadType.tsI
        case .tsR: IKEPayloadType.tsR
        case .delete: IKEPayloadType.delete
        case .other(let t, _): t
        }
    }

    /// The payload's body (after the 4-byte generic header).
    public var body: [UInt8] {
        var b: [UInt8] = []
        switch self {
        case .sa(let proposals):
            for (k, p) in proposals.enumerated() {
                var t: [UInt8] = []
                for (j, x) in p.transforms.enumerated() {
                    let attrs: [UInt8] = x.keyLength.map { [0x80, 14, UInt8($0 >> 8), UInt8($0 & 0xFF)] } ?? []
                    let length = 8 + attrs.count
                    t += [j == p.transforms.count - 1 ? 0 : 3, 0, UInt8(length >> 8), UInt8(length & 0xFF), x.type, 0,
                          UInt8(x.id >> 8), UInt8(x.id & 0xFF)] + attrs
                }
                let length = 8 + p.spi.count + t.count
                b += [k == proposals.count - 1 ? 0 : 2, 0, UInt8(length >> 8), UInt8(length & 0xFF), p.number, p.protocolID,
                      UInt8(p.spi.count), UInt8(p.transforms.count)] + p.spi + t
            }
        case .ke(let group, let data):
            b += [UInt8(group >> 8), UInt8(group & 0xFF), 0, 0] + data
        case .nonce(let n):
            b += n
        case .notify(let n):
            b += [n.protocolID, UInt8(n.spi.count), UInt8(n.type >> 8), UInt8(n.type & 0xFF)] + n.spi + n.data
        case .idI(let id), .idR(let id):
            b += [id.type, 0, 0, 0] + id.data
        case .auth(let method, let data):
            b += [method, 0, 0, 0] + data
        case .tsI(let ts), .tsR(let ts):
            b += [UInt8(ts.count), 0, 0, 0]
            for s in ts {
                let length = 8 + s.start.count + s.end.count
                b += [s.type, s.ipProtocol, UInt8(length >> 8), UInt8(length & 0xFF), UInt8(s.startPort >> 8), UInt8(s.startPort & 0xFF),
                      UInt8(s.endPort >> 8), UInt8(s.endPort & 0xFF)] + s.start + s.end
            }
        case .delete(let proto, let spis):
            b += [proto, UInt8(spis.first?.count ?? 0), UInt8(spis.count >> 8), UInt8(spis.count & 0xFF)] + spis.flatMap { $0 }
        case .other(_, let body):
            b += body
        }
        return b
    }

    /// Emits a chain of payloads (generic headers linked by next-payload).
    public static func emit(_ payloads: [IKEPayload], nextAfter last: UInt8 = IKEPayloadType.none) -> [UInt8] {
        var out: [UInt8] = []
        for (k, p) in payloads.enumerated() {
            let body = p.body
            let next = k + 1 < payloads.count ? payloads[k + 1].type : last
            let length = 4 + body.count
            out += [next, 0, UInt8(length >> 8), UInt8(length & 0xFF)] + body
        }
        return out
    }

    /// Parses a chain of payloads starting with type `first` in `b[range]`.
    /// Stops at an SK payload, returning its offset (its body runs to the
    /// end of the message, RFC 7296 section 3.14).
    public static func parse(_ b: [UInt8], from start: Int, first: UInt8) throws(IKEParseError)
        -> (payloads: [IKEPayload], sk: (offset: Int, firstInner: UInt8)?) {
        var out: [IKEPayload] = []
        var type = first, at = start
        var count = 0
        while type != IKEPayloadType.none {
            count += 1
            guard count <= 64 else { throw .malformed("payload chain longer than 64") }
            guard at + 4 <= b.count else { throw .truncated("payload header") }
            let next = b[at], critical = b[at + 1] & 0x80 != 0
            let length = Int(b.be16(at + 2))
            guard length >= 4, at + length <= b.count else { throw .truncated("payload \(type)") }
            if type == IKEPayloadType.sk {
                guard at + length == b.count else { throw .malformed("SK payload not last") }
                return (out, (at, next))
            }
            let body = Array(b[(at + 4)..<(at + length)])
            if let p = try parseBody(type, body) {
                out.append(p)
            } else if critical {
                throw .unsupportedCritical(type)
            }
            type = next
            at += length
        }
        return (out, nil)
    }

    static func parseBody(_ type: UInt8, _ b: [UInt8]) throws(IKEParseError) -> IKEPayload? {
        switch type {
        case IKEPayloadType.sa: return .sa(try parseProposals(b))
        case IKEPayloadType.ke:
            guard b.count >= 4 else { throw .truncated("KE") }
            return .ke(group: b.be16(0), data: Array(b[4...]))
        case IKEPayloadType.nonce:
            guard (16...256).contains(b.count) else { throw .malformed("nonce of \(b.count) bytes") }
            return .nonce(b)
        case IKEPayloadType.notify:
            guard b.count >= 4, b.count >= 4 + Int(b[1]) else { throw .truncated("notify") }
            let spiSize = Int(b[1])
            return .notify(IKENotify(b.be16(2), data: Array(b[(4 + spiSize)...]), protocolID: b[0], spi: Array(b[4..<(4 + spiSize)])))
        case IKEPayloadType.idI, IKEPayloadType.idR:
            guard b.count >= 5 else { throw .truncated("ID") }
            let id = IKEIdentity(type: b[0], data: Array(b[4...]))
            return type == IKEPayloadType.idI ? .idI(id) : .idR(id)
        case IKEPayloadType.auth:
            guard b.count >= 5 else { throw .truncated("AUTH") }
            return .auth(method: b[0], data: Array(b[4...]))
        case IKEPayloadType.tsI, IKEPayloadType.tsR:
            let ts = try parseSelectors(b)
            return type == IKEPayloadType.tsI ? .tsI(ts) : .tsR(ts)
        case IKEPayloadType.delete:
            guard b.count >= 4 else { throw .truncated("delete") }
            let size = Int(b[1]), n = Int(b.be16(2))
            guard b.count == 4 + size * n else { throw .malformed("delete of \(n) SPIs of \(size) bytes in \(b.count)") }
            return .delete(protocolID: b[0], spis: (0..<n).map { Array(b[(4 + $0 * size)..<(4 + ($0 + 1) * size)]) })
        case IKEPayloadType.vendorID, IKEPayloadType.certReq, IKEPayloadType.cert, IKEPayloadType.cp:
            return .other(type: type, body: b)
        default:
            return nil
        }
    }

    static func parseProposals(_ b: [UInt8]) throws(IKEParseError) -> [IKEProposal] {
        var out: [IKEProposal] = []
        var at = 0
        while at < b.count {
            guard at + 8 <= b.count else { throw .truncated("proposal") }
            let last = b[at] == 0
            let length = Int(b.be16(at + 2))
            guard length >= 8, at + length <= b.count else { throw .truncated("proposal") }
            let spiSize = Int(b[at + 6]), count = Int(b[at + 7])
            guard 8 + spiSize <= length else { throw .malformed("proposal SPI") }
            var transforms: [IKETransform] = []
            var t = at + 8 + spiSize
            for _ in 0..<count {
                guard t + 8 <= at + length else { throw .truncated("transform") }
                let tl = Int(b.be16(t + 2))
                guard tl >= 8, t + tl <= at + length else { throw .truncated("transform") }
                var x = IKETransform(type: b[t + 4], id: b.be16(t + 6))
                var a = t + 8
                while a + 4 <= t + tl {
                    let format = b.be16(a)
                    if format & 0x8000 != 0 {
                        if format & 0x7FFF == 14 { x.keyLength = b.be16(a + 2) }
                        a += 4
                    } else {
                        let al = Int(b.be16(a + 2))
                        a += 4 + al
                    }
                }
                transforms.append(x)
                t += tl
            }
            out.append(IKEProposal(number: b[at + 4], protocolID: b[at + 5], spi: Array(b[(at + 8)..<(at + 8 + spiSize)]),
                                   transforms: transforms))
            at += length
            if last { break }
        }
        guard !out.isEmpty else { throw .malformed("SA without proposals") }
        return out
    }

    static func parseSelectors(_ b: [UInt8]) throws(IKEParseError) -> [TrafficSelector] {
        guard b.count >= 4 else { throw .truncated("TS") }
        let n = Int(b[0])
        var out: [TrafficSelector] = []
        var at = 4
        for _ in 0..<n {
            guard at + 8 <= b.count else { throw .truncated("selector") }
            let type = b[at], length = Int(b.be16(at + 2))
            let size = type == TrafficSelector.ipv4Range ? 4 : type == TrafficSelector.ipv6Range ? 16 : -1
            guard size > 0 else { throw .malformed("selector type \(type)") }
            guard length == 8 + 2 * size, at + length <= b.count else { throw .truncated("selector") }
            out.append(TrafficSelector(type: type, ipProtocol: b[at + 1], startPort: b.be16(at + 4), endPort: b.be16(at + 6),
                                       start: Array(b[(at + 8)..<(at + 8 + size)]), end: Array(b[(at + 8 + size)..<(at + 8 + 2 * size)])))
            at += length
        }
        return out
    }
}

extension Array where Element == UInt8 {
    func be16(_ i: Int) -> UInt16 { UInt16(self[i]) << 8 | UInt16(self[i + 1]) }
    func be32(_ i: Int) -> UInt32 { UInt32(be16(i)) << 16 | UInt32(be16(i + 2)) }
    func be64(_ i: Int) -> UInt64 { UInt64(be32(i)) << 32 | UInt64(be32(i + 4)) }
    mutating func append32(_ v: UInt32) { self += [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
    mutating func append64(_ v: UInt64) { append32(UInt32(v >> 32)); append32(UInt32(v & 0xFFFF_FFFF)) }
}
