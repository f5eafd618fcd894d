/// A TCP header (RFC 9293 section 3.1), as far as a router touches it: the
/// ports, the flags and the options, where MSS clamping rewrites the MSS.
///
/// ```
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |          Source Port          |       Destination Port        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                        Sequence Number                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    Acknowledgment Number                      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Data |       |C|E|U|A|P|R|S|F|                               |
/// | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           Checksum            |         Urgent Pointer        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    Options                    |    Padding    |
/// ```
public struct TCPHeader {
    public enum Field {
        public static let sourcePort = 0
        public static let destinationPort = 2
        public static let sequence = 4
        public static let acknowledgment = 8
        public static let dataOffset = 12
        public static let flags = 13
        public static let window = 14
        public static let checksum = 16
        public static let urgent = 18
        public static let options = 20
    }
    public static let minimumLength = 20
    public static let flagSYN: UInt8 = 0x02
    public static let flagACK: UInt8 = 0x10
    public static let optionMSS: UInt8 = 2

    public var bytes: UnsafeMutableRawBufferPointer

    @inlinable public init(unchecked bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    /// Checks room for the fixed header and for the options its data offset declares.
    public init(validating bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        guard bytes.count >= TCPHeader.minimumLength else { throw .truncated }
        self.bytes = bytes
        guard headerLength >= TCPHeader.minimumLength else { throw .badHeaderLength }
        guard headerLength <= bytes.count else { throw .truncated }
    }

    @inlinable public var sourcePort: UInt16 { bytes.be16(Field.sourcePort) }
    @inlinable public var destinationPort: UInt16 { bytes.be16(Field.destinationPort) }
    @inlinable public var headerLength: Int { Int(bytes.be8(Field.dataOffset) >> 4) * 4 }
    @inlinable public var flags: UInt8 { bytes.be8(Field.flags) }
    @inlinable public var isSYN: Bool { flags & TCPHeader.flagSYN != 0 }
    @inlinable public var checksum: UInt16 {
        get { bytes.be16(Field.checksum) }
        nonmutating set { bytes.setBE16(Field.checksum, newValue) }
    }

    /// The byte offset of the MSS option's value, if the header carries one.
    public var mssOffset: Int? {
        var i = Field.options
        let end = headerLength
        while i < end {
            let kind = bytes.be8(i)
            if kind == 0 { return nil }
            if kind == 1 { i += 1; continue }
            guard i + 1 < end else { return nil }
            let len = Int(bytes.be8(i + 1))
            guard len >= 2, i + len <= end else { return nil }
            if kind == TCPHeader.optionMSS && len == 4 { return i + 2 }
            i += len
        }
        return nil
    }

    /// Lowers the MSS option to `limit` if it is larger, updating the
    /// checksum incrementally (RFC 1624). Returns the old value when it
    /// changed anything.
    @discardableResult
    public func clampMSS(to limit: UInt16) -> UInt16? {
        guard let at = mssOffset else { return nil }
        let old = bytes.be16(at)
        guard old > limit else { return nil }
        bytes.setBE16(at, limit)
        // The option value sits at an even offset in the header only when the
        // option does; fold it into the checksum as the 16-bit word(s) it spans.
        if at % 2 == 0 {
            checksum = InternetChecksum.update(checksum, old: old, new: limit)
        } else {
            let w0old = UInt16(bytes.be8(at - 1)) << 8 | (old >> 8)
            let w0new = UInt16(bytes.be8(at - 1)) << 8 | (limit >> 8)
            let w1old = (old & 0xFF) << 8 | UInt16(bytes.be8(at + 2))
            let w1new = (limit & 0xFF) << 8 | UInt16(bytes.be8(at + 2))
            checksum = InternetChecksum.update(InternetChecksum.update(checksum, old: w0old, new: w0new), old: w1old, new: w1new)
        }
        return old
    }
}
