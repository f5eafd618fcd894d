/// An ICMPv4 message (RFC 792).
///
/// ```
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     Type      |     Code      |          Checksum             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |    Rest of header (identifier/sequence, unused/next-hop MTU)  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |    Data (echo payload, or the offending IP header + 8 bytes)  |
/// ```
public struct ICMPv4Packet {
    public enum Field {
        public static let type = 0
        public static let code = 1
        public static let checksum = 2
        public static let identifier = 4
        public static let sequence = 6
        public static let nextHopMTU = 6
        public static let data = 8
    }
    public static let headerLength = 8

    public var bytes: UnsafeMutableRawBufferPointer

    @inlinable public init(unchecked bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    /// `bytes` is the whole message (the IP payload); the checksum covers all of it.
    public init(validating bytes: UnsafeMutableRawBufferPointer, verifyChecksum: Bool = true) throws(WireError) {
        guard bytes.count >= ICMPv4Packet.headerLength else { throw .truncated }
        if verifyChecksum, !InternetChecksum.verifies(bytes) { throw .badChecksum }
        self.bytes = bytes
    }

    @inlinable public var type: ICMPv4Type { ICMPv4Type(rawValue: bytes.be8(Field.type)) }
    @inlinable public var code: UInt8 { bytes.be8(Field.code) }
    @inlinable public var checksum: UInt16 {
        get { bytes.be16(Field.checksum) }
        nonmutating set { bytes.setBE16(Field.checksum, newValue) }
    }
    @inlinable public var restOfHeader: UInt32 { bytes.be32(Field.identifier) }
    @inlinable public var identifier: UInt16 { bytes.be16(Field.identifier) }
    @inlinable public var sequence: UInt16 { bytes.be16(Field.sequence) }
    @inlinable public var data: UnsafeMutableRawBufferPointer { bytes.tail(from: Field.data) }

    @inlinable public func fillChecksum() {
        checksum = 0
        checksum = InternetChecksum.checksum(bytes)
    }
}

/// The parsed value of an ICMPv4 header; the data stays in the buffer.
public enum ICMPv4Repr: Hashable, Sendable {
    case echoRequest(identifier: UInt16, sequence: UInt16)
    case echoReply(identifier: UInt16, sequence: UInt16)
    /// Destination unreachable; `nextHopMTU` is meaningful for code 4 (RFC 1191).
    case destinationUnreachable(code: UInt8, nextHopMTU: UInt16)
    case timeExceeded(code: UInt8)
    case parameterProblem(pointer: UInt8)
    case other(type: ICMPv4Type, code: UInt8, rest: UInt32)

    public init(parsing p: ICMPv4Packet) {
        switch p.type {
        case .echoRequest: self = .echoRequest(identifier: p.identifier, sequence: p.sequence)
        case .echoReply: self = .echoReply(identifier: p.identifier, sequence: p.sequence)
        case .destinationUnreachable: self = .destinationUnreachable(code: p.code, nextHopMTU: p.sequence)
        case .timeExceeded: self = .timeExceeded(code: p.code)
        case .parameterProblem: self = .parameterProblem(pointer: UInt8(p.restOfHeader >> 24))
        default: self = .other(type: p.type, code: p.code, rest: p.restOfHeader)
        }
    }

    public init(parsing bytes: UnsafeMutableRawBufferPointer, verifyChecksum: Bool = true) throws(WireError) {
        self.init(parsing: try ICMPv4Packet(validating: bytes, verifyChecksum: verifyChecksum))
    }

    public var type: ICMPv4Type {
        switch self {
        case .echoRequest: .echoRequest
        case .echoReply: .echoReply
        case .destinationUnreachable: .destinationUnreachable
        case .timeExceeded: .timeExceeded
        case .parameterProblem: .parameterProblem
        case .other(let t, _, _): t
        }
    }

    /// Writes the 8-byte header at the start of `bytes` (the whole message,
    /// data already in place after it) and fills the checksum over all of it.
    public func emit(into bytes: UnsafeMutableRawBufferPointer) {
        precondition(bytes.count >= ICMPv4Packet.headerLength)
        let code: UInt8, rest: UInt32
        switch self {
        case .echoRequest(let id, let seq), .echoReply(let id, let seq):
            code = 0; rest = UInt32(id) << 16 | UInt32(seq)
        case .destinationUnreachable(let c, let mtu):
            code = c; rest = UInt32(mtu)
        case .timeExceeded(let c):
            code = c; rest = 0
        case .parameterProblem(let ptr):
            code = 0; rest = UInt32(ptr) << 24
        case .other(_, let c, let r):
            code = c; rest = r
        }
        bytes.setBE8(ICMPv4Packet.Field.type, type.rawValue)
        bytes.setBE8(ICMPv4Packet.Field.code, code)
        bytes.setBE32(ICMPv4Packet.Field.identifier, rest)
        ICMPv4Packet(unchecked: bytes).fillChecksum()
    }
}
