/// A GRE header (RFC 2784, with the key and sequence extensions of RFC 2890).
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |C| |K|S| Reserved0       | Ver |         Protocol Type         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |      Checksum (optional)      |       Reserved1 (Optional)    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         Key (optional)                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                 Sequence Number (Optional)                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
public struct GREHeader {
    public enum Field {
        public static let flagsVersion = 0
        public static let protocolType = 2
        public static let optional = 4
    }
    public static let flagChecksum: UInt16 = 0x8000
    public static let flagRouting: UInt16 = 0x4000
    public static let flagKey: UInt16 = 0x2000
    public static let flagSequence: UInt16 = 0x1000
    /// Bits 4 and 5 (RFC 1701 strict source route and the top recursion bit):
    /// with bit 1 (routing) these must be zero (RFC 2784 section 2.3).
    public static let mustBeZero: UInt16 = 0x4000 | 0x0800 | 0x0400
    public static let minimumLength = 4

    public var bytes: UnsafeMutableRawBufferPointer

    @inlinable public init(unchecked bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    /// `bytes` is the GRE header and its payload. Refuses version != 0 and
    /// the RFC 1701 routing/source-route bits, and verifies the checksum when present.
    public init(validating bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        guard bytes.count >= GREHeader.minimumLength else { throw .truncated }
        self.bytes = bytes
        guard flags & 0x0007 == 0 else { throw .badVersion }
        guard flags & GREHeader.mustBeZero == 0 else { throw .unsupported }
        guard bytes.count >= headerLength else { throw .truncated }
        if checksumPresent, !InternetChecksum.verifies(bytes) { throw .badChecksum }
    }

    @inlinable public var flags: UInt16 { bytes.be16(Field.flagsVersion) }
    @inlinable public var checksumPresent: Bool { flags & GREHeader.flagChecksum != 0 }
    @inlinable public var keyPresent: Bool { flags & GREHeader.flagKey != 0 }
    @inlinable public var sequencePresent: Bool { flags & GREHeader.flagSequence != 0 }
    @inlinable public var protocolType: EtherType { EtherType(rawValue: bytes.be16(Field.protocolType)) }

    @inlinable public var headerLength: Int {
        4 + (checksumPresent ? 4 : 0) + (keyPresent ? 4 : 0) + (sequencePresent ? 4 : 0)
    }
    @inlinable public var key: UInt32? {
        keyPresent ? bytes.be32(Field.optional + (checksumPresent ? 4 : 0)) : nil
    }
    @inlinable public var sequence: UInt32? {
        sequencePresent ? bytes.be32(Field.optional + (checksumPresent ? 4 : 0) + (keyPresent ? 4 : 0)) : nil
    }
    @inlinable public var payload: UnsafeMutableRawBufferPointer { bytes.tail(from: headerLength) }
}

/// The parsed value of a GRE header.
public struct GRERepr: Hashable, Sendable {
    public var protocolType: EtherType
    public var checksumPresent: Bool
    public var key: UInt32?
    public var sequence: UInt32?

    public init(protocolType: EtherType, checksumPresent: Bool = false, key: UInt32? = nil, sequence: UInt32? = nil) {
        self.protocolType = protocolType; self.checksumPresent = checksumPresent
        self.key = key; self.sequence = sequence
    }

    public init(parsing bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        let h = try GREHeader(validating: bytes)
        self.init(protocolType: h.protocolType, checksumPresent: h.checksumPresent, key: h.key, sequence: h.sequence)
    }

    public var headerLength: Int {
        4 + (checksumPresent ? 4 : 0) + (key == nil ? 0 : 4) + (sequence == nil ? 0 : 4)
    }

    /// Writes the header at the start of `bytes`, the payload already in
    /// place after it; with `checksumPresent` the checksum covers both.
    public func emit(into bytes: UnsafeMutableRawBufferPointer) {
        precondition(bytes.count >= headerLength)
        var flags: UInt16 = 0
        if checksumPresent { flags |= GREHeader.flagChecksum }
        if key != nil { flags |= GREHeader.flagKey }
        if sequence != nil { flags |= GREHeader.flagSequence }
        bytes.setBE16(GREHeader.Field.flagsVersion, flags)
        bytes.setBE16(GREHeader.Field.protocolType, protocolType.rawValue)
        var at = GREHeader.Field.optional
        if checksumPresent { bytes.setBE32(at, 0); at += 4 }
        if let key { bytes.setBE32(at, key); at += 4 }
        if let sequence { bytes.setBE32(at, sequence) }
        if checksumPresent {
            bytes.setBE16(GREHeader.Field.optional, InternetChecksum.checksum(bytes))
        }
    }
}
