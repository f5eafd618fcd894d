/// An ESP packet (RFC 4303 section 2) with an AEAD transform and an
/// explicit 8-byte IV (AES-GCM, RFC 4106 section 3; ChaCha20-Poly1305,
/// RFC 7634 section 3). The SPI and sequence number travel in clear and are
/// authenticated (the AAD); the payload and trailer are encrypted; the ICV
/// ends the packet.
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |               Security Parameters Index (SPI)                 |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                      Sequence Number                          |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                 Initialization Vector (8 bytes)               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ~              Payload Data (encrypted, variable)               ~
/// +               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |               |        Padding (0-255 bytes)                  |
/// +-+-+-+-+-+-+-+-+               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                               |  Pad Length   | Next Header   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |            Integrity Check Value (16 bytes)                   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
public struct ESPPacket {
    public enum Field {
        public static let spi = 0
        public static let sequence = 4
        public static let iv = 8
        public static let payload = 16
    }
    /// SPI and sequence number.
    public static let headerLength = 8
    public static let ivLength = 8
    public static let icvLength = 16
    /// The trailer's fixed part: pad length and next header.
    public static let trailerLength = 2
    /// The smallest packet: header, IV, one aligned word of trailer, ICV.
    public static let minimumLength = headerLength + ivLength + 4 + icvLength
    /// What ESP adds around a payload at most with these transforms: the
    /// header, IV, up to 3 bytes of padding, the trailer and the ICV.
    public static let maximumOverhead = headerLength + ivLength + 3 + trailerLength + icvLength
    /// Next header 59 (RFC 4303 section 2.6): a dummy packet, to be dropped.
    public static let dummyNextHeader: UInt8 = 59

    public var bytes: UnsafeMutableRawBufferPointer

    @inlinable public init(unchecked bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    /// `bytes` is the whole ESP packet. Refuses one too short to hold a
    /// header, an IV, a trailer and an ICV, and SPIs 0–255 (reserved,
    /// RFC 4303 section 2.1).
    public init(validating bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        guard bytes.count >= ESPPacket.minimumLength else { throw .truncated }
        self.bytes = bytes
        guard spi > 255 else { throw .unsupported }
    }

    @inlinable public var spi: UInt32 { bytes.be32(Field.spi) }
    @inlinable public var sequence: UInt32 { bytes.be32(Field.sequence) }
    @inlinable public var iv: UInt64 { UInt64(bytes.be32(Field.iv)) << 32 | UInt64(bytes.be32(Field.iv + 4)) }
    /// Bytes that are encrypted: payload, padding and trailer.
    @inlinable public var encryptedLength: Int { bytes.count - Field.payload - ESPPacket.icvLength }

    /// The length of an ESP packet around `payload` bytes.
    @inlinable public static func sealedLength(payload: Int) -> Int {
        Field.payload + payload + padding(forPayload: payload) + trailerLength + icvLength
    }

    /// Bytes of padding that put the trailer's end (and so the ICV) on a
    /// 4-byte boundary after `payloadLength` bytes of payload (RFC 4303
    /// section 2.4; the AEAD transforms need no more).
    @inlinable public static func padding(forPayload payloadLength: Int) -> Int {
        (4 - (payloadLength + trailerLength) & 3) & 3
    }

    /// Writes the padding (1, 2, 3, … as RFC 4303 section 2.4 asks) and the
    /// trailer after `payloadLength` bytes at `payload`; returns the bytes
    /// of padding and trailer written.
    @inlinable
    public static func writeTrailer(_ payload: UnsafeMutableRawBufferPointer, payloadLength: Int, nextHeader: UInt8) -> Int {
        let pad = padding(forPayload: payloadLength)
        for i in 0..<pad { payload.setBE8(payloadLength + i, UInt8(i + 1)) }
        payload.setBE8(payloadLength + pad, UInt8(pad))
        payload.setBE8(payloadLength + pad + 1, nextHeader)
        return pad + trailerLength
    }

    /// Reads a decrypted trailer at the end of `plain` (payload, padding,
    /// trailer): the payload's length and the next header, or nil when the
    /// pad length runs past the payload or the padding is not 1, 2, 3, …
    @inlinable
    public static func readTrailer(_ plain: UnsafeRawBufferPointer) -> (payloadLength: Int, nextHeader: UInt8)? {
        guard plain.count >= trailerLength else { return nil }
        let pad = Int(plain[plain.count - 2])
        let payloadLength = plain.count - trailerLength - pad
        guard payloadLength >= 0 else { return nil }
        for i in 0..<pad where plain[payloadLength + i] != UInt8(truncatingIfNeeded: i + 1) { return nil }
        return (payloadLength, plain[plain.count - 1])
    }
}

/// ESP and IKE inside UDP (RFC 3948): one port carries three kinds of
/// datagram, told apart by their first bytes.
public enum UDPEncapsulation {
    /// The NAT traversal port (RFC 3948 section 2, RFC 7296 section 2.23).
    public static let port: UInt16 = 4500
    /// IKE's own port before a NAT is detected.
    public static let ikePort: UInt16 = 500
    /// The non-ESP marker that starts an IKE message on port 4500.
    public static let nonESPMarkerLength = 4
    /// A NAT-keepalive's single byte (RFC 3948 section 2.3).
    public static let keepaliveByte: UInt8 = 0xFF

    public enum Kind: Equatable, Sendable {
        case esp
        case ike
        case keepalive
        case malformed
    }

    /// What a UDP payload on port 4500 is.
    @inlinable
    public static func classify(_ payload: UnsafeRawBufferPointer) -> Kind {
        if payload.count == 1 { return payload[0] == keepaliveByte ? .keepalive : .malformed }
        guard payload.count >= nonESPMarkerLength else { return .malformed }
        let first = UInt32(payload[0]) << 24 | UInt32(payload[1]) << 16 | UInt32(payload[2]) << 8 | UInt32(payload[3])
        if first == 0 { return .ike }
        return payload.count >= ESPPacket.minimumLength ? .esp : .malformed
    }
}
