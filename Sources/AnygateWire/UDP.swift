/// A UDP header (RFC 768).
///
/// ```
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |          Source Port          |       Destination Port        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |            Length             |           Checksum            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
public struct UDPDatagram {
    public enum Field {
        public static let sourcePort = 0
        public static let destinationPort = 2
        public static let length = 4
        public static let checksum = 6
    }
    public static let headerLength = 8

    public var bytes: UnsafeMutableRawBufferPointer

    @inlinable public init(unchecked bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    /// `bytes` is the IP payload. Checks the length field against the buffer
    /// and, over IPv4, the checksum unless it is zero ("not computed").
    public init(validating bytes: UnsafeMutableRawBufferPointer,
                source: IPv4Address, destination: IPv4Address) throws(WireError) {
        guard bytes.count >= UDPDatagram.headerLength else { throw .truncated }
        self.bytes = bytes
        let len = length
        guard len >= UDPDatagram.headerLength, len <= bytes.count else { throw .badTotalLength }
        if checksum != 0 {
            let initial = InternetChecksum.pseudoHeaderSum(source: source, destination: destination, protocol: .udp, length: len)
            guard InternetChecksum.verifies(bytes.slice(0, len), initial: initial) else { throw .badChecksum }
        }
    }

    /// Over IPv6 the checksum is mandatory (RFC 8200 section 8.1).
    public init(validating bytes: UnsafeMutableRawBufferPointer,
                source: IPv6Address, destination: IPv6Address) throws(WireError) {
        guard bytes.count >= UDPDatagram.headerLength else { throw .truncated }
        self.bytes = bytes
        let len = length
        guard len >= UDPDatagram.headerLength, len <= bytes.count else { throw .badTotalLength }
        let initial = InternetChecksum.pseudoHeaderSum(source: source, destination: destination, nextHeader: .udp, length: len)
        guard checksum != 0, InternetChecksum.verifies(bytes.slice(0, len), initial: initial) else { throw .badChecksum }
    }

    @inlinable public var sourcePort: UInt16 { bytes.be16(Field.sourcePort) }
    @inlinable public var destinationPort: UInt16 { bytes.be16(Field.destinationPort) }
    @inlinable public var length: Int { Int(bytes.be16(Field.length)) }
    @inlinable public var checksum: UInt16 { bytes.be16(Field.checksum) }
    @inlinable public var payload: UnsafeMutableRawBufferPointer {
        bytes.slice(UDPDatagram.headerLength, length &- UDPDatagram.headerLength)
    }
}

/// The parsed value of a UDP header.
public struct UDPRepr: Hashable, Sendable {
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var payloadLength: Int

    public init(sourcePort: UInt16, destinationPort: UInt16, payloadLength: Int) {
        self.sourcePort = sourcePort; self.destinationPort = destinationPort; self.payloadLength = payloadLength
    }

    public init(parsing bytes: UnsafeMutableRawBufferPointer,
                source: IPv4Address, destination: IPv4Address) throws(WireError) {
        let d = try UDPDatagram(validating: bytes, source: source, destination: destination)
        self.init(sourcePort: d.sourcePort, destinationPort: d.destinationPort,
                  payloadLength: d.length - UDPDatagram.headerLength)
    }

    public var length: Int { UDPDatagram.headerLength + payloadLength }

    /// Writes the header at the start of `bytes` (payload already in place)
    /// and the checksum over the IPv4 pseudo-header, header and payload.
    public func emit(into bytes: UnsafeMutableRawBufferPointer, source: IPv4Address, destination: IPv4Address) {
        precondition(bytes.count >= length)
        bytes.setBE16(UDPDatagram.Field.sourcePort, sourcePort)
        bytes.setBE16(UDPDatagram.Field.destinationPort, destinationPort)
        bytes.setBE16(UDPDatagram.Field.length, UInt16(length))
        bytes.setBE16(UDPDatagram.Field.checksum, 0)
        let initial = InternetChecksum.pseudoHeaderSum(source: source, destination: destination, protocol: .udp, length: length)
        var c = InternetChecksum.checksum(bytes.slice(0, length), initial: initial)
        if c == 0 { c = 0xFFFF }  // zero means "no checksum" (RFC 768)
        bytes.setBE16(UDPDatagram.Field.checksum, c)
    }

    /// The same over the IPv6 pseudo-header.
    public func emit(into bytes: UnsafeMutableRawBufferPointer, source: IPv6Address, destination: IPv6Address) {
        precondition(bytes.count >= length)
        bytes.setBE16(UDPDatagram.Field.sourcePort, sourcePort)
        bytes.setBE16(UDPDatagram.Field.destinationPort, destinationPort)
        bytes.setBE16(UDPDatagram.Field.length, UInt16(length))
        bytes.setBE16(UDPDatagram.Field.checksum, 0)
        let initial = InternetChecksum.pseudoHeaderSum(source: source, destination: destination, nextHeader: .udp, length: length)
        var c = InternetChecksum.checksum(bytes.slice(0, length), initial: initial)
        if c == 0 { c = 0xFFFF }
        bytes.setBE16(UDPDatagram.Field.checksum, c)
    }
}
