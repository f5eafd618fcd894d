/// The IPv6 extension-header chain (RFC 8200 section 4), walked to the
/// upper-layer header without trusting any length in it.
///
/// Known extension headers: hop-by-hop options (0), routing (43), fragment
/// (44), destination options (60) and the authentication header (51, which
/// is walked over, not checked). Anything else ends the chain as the
/// upper-layer protocol (TCP, UDP, ICMPv6, GRE, ESP, no next header, ...).
///
/// Refused, with the ICMPv6 parameter problem a node would send (RFC 4443
/// section 3.4; the pointer counts from the start of the IPv6 header):
/// - a hop-by-hop header anywhere but first (code 1, pointing at the Next
///   Header field that named it);
/// - a routing header of type 0 with segments left (RFC 5095; code 0,
///   pointing at its type field); with no segments left it is ignored;
/// - a hop-by-hop option that runs past its header (code 0, pointing at the
///   option's length), or an unknown one whose type says "send a parameter
///   problem" (its two high bits 10 or 11; code 2, pointing at the option);
/// - the first fragment of a packet whose header chain is not all in it
///   (RFC 7112; code 3).
/// More than `maxExtensionHeaders` headers is refused outright (a bound
/// on the work a packet can cause); a header running past the payload is
/// malformed.
public struct IPv6HeaderChain: Hashable, Sendable {
    /// The first next-header value that is not an extension header.
    public var upperLayer: IPProtocol
    /// Where the upper-layer header starts, from the start of the IPv6 header.
    public var upperLayerOffset: Int
    /// Extension headers walked.
    public var extensionHeaders = 0
    public var hasHopByHop = false
    /// The value of a hop-by-hop Router Alert option (RFC 2711; 0 is MLD).
    public var routerAlert: UInt16?
    /// Hop-by-hop options of an unknown type whose two high bits are 01:
    /// a node must discard the packet silently.
    public var discardSilently = false
    /// The fragment header, if any, and where it sits.
    public var fragment: IPv6FragmentRepr?
    public var fragmentHeaderOffset: Int?
    /// A routing header's type and segments left, if any.
    public var routingType: UInt8?
    public var segmentsLeft: UInt8?

    public static let maxExtensionHeaders = 8

    /// Whether the upper-layer header is in this packet (not in a later fragment).
    public var upperLayerPresent: Bool { (fragment?.offset ?? 0) == 0 }

    public init(walking packet: IPv6Packet) throws(IPv6ChainError) {
        let end = IPv6Packet.headerLength + packet.payloadLength
        let b = packet.bytes
        var next = packet.nextHeader
        var nextField = IPv6Packet.Field.nextHeader
        var at = IPv6Packet.headerLength
        upperLayer = next
        upperLayerOffset = at
        while true {
            let kind = next.rawValue
            guard kind == 0 || kind == 43 || kind == 44 || kind == 60 || kind == 51 else { break }
            if kind == 0 && at != IPv6Packet.headerLength {
                throw .parameterProblem(code: ICMPv6ParameterProblem.unrecognizedNextHeader, pointer: nextField)
            }
            extensionHeaders += 1
            guard extensionHeaders <= IPv6HeaderChain.maxExtensionHeaders else { throw .tooManyHeaders }
            // Room for the first 8 bytes of any extension header, then its length.
            guard at + 8 <= end else { throw cutShort }
            let length: Int
            switch kind {
            case 44: length = 8
            case 51: length = (Int(b.be8(at + 1)) + 2) * 4
            default: length = (Int(b.be8(at + 1)) + 1) * 8
            }
            guard at + length <= end else { throw cutShort }
            switch kind {
            case 0:
                hasHopByHop = true
                try readOptions(b, from: at + 2, to: at + length)
            case 43:
                let type = b.be8(at + 2), left = b.be8(at + 3)
                routingType = type
                segmentsLeft = left
                if type == 0 && left > 0 {
                    throw .parameterProblem(code: ICMPv6ParameterProblem.erroneousField, pointer: at + 2)
                }
            case 44:
                let f = IPv6FragmentRepr(parsing: b.slice(at, 8))
                fragment = f
                fragmentHeaderOffset = at
                if f.offset != 0 {
                    // A later fragment: what follows is the middle of the upper layer.
                    upperLayer = f.nextHeader
                    upperLayerOffset = at + length
                    return
                }
            default:
                break
            }
            nextField = at
            next = IPProtocol(rawValue: b.be8(at))
            at += length
        }
        upperLayer = next
        upperLayerOffset = at
    }

    /// A header that runs past the payload: in the first of several
    /// fragments that is an incomplete chain (RFC 7112: pointer 0),
    /// otherwise a malformed packet.
    private var cutShort: IPv6ChainError {
        if let f = fragment, f.offset == 0, f.moreFragments {
            return .parameterProblem(code: ICMPv6ParameterProblem.incompleteChain, pointer: 0)
        }
        return .malformed(.truncated)
    }

    /// Checks the TLVs of a hop-by-hop header (RFC 8200 section 4.2).
    private mutating func readOptions(_ b: UnsafeMutableRawBufferPointer, from start: Int, to end: Int) throws(IPv6ChainError) {
        var i = start
        while i < end {
            let type = b.be8(i)
            if type == 0 {  // Pad1
                i += 1
                continue
            }
            guard i + 2 <= end, i + 2 + Int(b.be8(i + 1)) <= end else {
                throw .parameterProblem(code: ICMPv6ParameterProblem.erroneousField, pointer: min(i + 1, end - 1))
            }
            let length = Int(b.be8(i + 1))
            switch type {
            case 1:  // PadN
                break
            case 5:  // Router Alert
                guard length == 2 else {
                    throw .parameterProblem(code: ICMPv6ParameterProblem.erroneousField, pointer: i + 1)
                }
                routerAlert = b.be16(i + 2)
            default:
                switch type >> 6 {
                case 0: break
                case 1: discardSilently = true
                default: throw .parameterProblem(code: ICMPv6ParameterProblem.unrecognizedOption, pointer: i)
                }
            }
            i += 2 + length
        }
    }
}

/// Why an IPv6 header chain was refused.
public enum IPv6ChainError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A length runs past the payload.
    case malformed(WireError)
    /// More than `IPv6HeaderChain.maxExtensionHeaders` extension headers.
    case tooManyHeaders
    /// What an ICMPv6 parameter problem would report (RFC 4443 section 3.4):
    /// the pointer counts from the start of the IPv6 header.
    case parameterProblem(code: UInt8, pointer: Int)

    public var description: String {
        switch self {
        case .malformed(let e): "IPv6 header chain \(e)"
        case .tooManyHeaders: "more than \(IPv6HeaderChain.maxExtensionHeaders) IPv6 extension headers"
        case let .parameterProblem(code, pointer): "IPv6 parameter problem code \(code) at byte \(pointer)"
        }
    }
}

/// ICMPv6 parameter problem codes (RFC 4443 section 3.4, RFC 7112).
public enum ICMPv6ParameterProblem {
    public static let erroneousField: UInt8 = 0
    public static let unrecognizedNextHeader: UInt8 = 1
    public static let unrecognizedOption: UInt8 = 2
    public static let incompleteChain: UInt8 = 3
}

/// The IPv6 fragment header (RFC 8200 section 4.5).
///
/// ```
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Next Header  |   Reserved    |      Fragment Offset    |Res|M|
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         Identification                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
public struct IPv6FragmentRepr: Hashable, Sendable {
    public static let headerLength = 8
    public var nextHeader: IPProtocol
    /// In bytes (a multiple of 8).
    public var offset: Int
    public var moreFragments: Bool
    public var identification: UInt32

    public init(nextHeader: IPProtocol, offset: Int, moreFragments: Bool, identification: UInt32) {
        precondition(offset >= 0 && offset % 8 == 0 && offset <= 0xFFF8)
        self.nextHeader = nextHeader; self.offset = offset
        self.moreFragments = moreFragments; self.identification = identification
    }

    /// `bytes` holds at least the 8 bytes of the header.
    public init(parsing bytes: UnsafeMutableRawBufferPointer) {
        let word = bytes.be16(2)
        nextHeader = IPProtocol(rawValue: bytes.be8(0))
        offset = Int(word & 0xFFF8)
        moreFragments = word & 1 != 0
        identification = bytes.be32(4)
    }

    public func emit(into bytes: UnsafeMutableRawBufferPointer) {
        precondition(bytes.count >= IPv6FragmentRepr.headerLength)
        bytes.setBE8(0, nextHeader.rawValue)
        bytes.setBE8(1, 0)
        bytes.setBE16(2, UInt16(offset) | (moreFragments ? 1 : 0))
        bytes.setBE32(4, identification)
    }
}
