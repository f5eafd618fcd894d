/// An IPv4 header (RFC 791 section 3.1).
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |Version|  IHL  |Type of Service|          Total Length         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |         Identification        |Flags|      Fragment Offset    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Time to Live |    Protocol   |         Header Checksum       |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                       Source Address                          |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    Destination Address                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    Options                    |    Padding    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
public struct IPv4Packet {
    public enum Field {
        public static let versionIHL = 0
        public static let tos = 1
        public static let totalLength = 2
        public static let identification = 4
        public static let flagsFragment = 6
        public static let ttl = 8
        public static let proto = 9
        public static let checksum = 10
        public static let source = 12
        public static let destination = 16
        public static let options = 20
    }
    public static let minimumHeaderLength = 20
    public static let flagDontFragment: UInt16 = 0x4000
    public static let flagMoreFragments: UInt16 = 0x2000
    public static let fragmentOffsetMask: UInt16 = 0x1FFF

    /// The whole buffer the packet was found in; bytes past `totalLength`
    /// are link-layer padding.
    public var bytes: UnsafeMutableRawBufferPointer

    @inlinable public init(unchecked bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    /// Checks, in order: room for the fixed header, version 4, IHL >= 5 and
    /// within the buffer, total length covering the header and within the
    /// buffer, options well formed, and (if asked) the header checksum.
    @inlinable
    public init(validating bytes: UnsafeMutableRawBufferPointer, verifyChecksum: Bool = true) throws(WireError) {
        self.bytes = bytes
        if let error = check(verifyChecksum: verifyChecksum) { throw error }
    }

    /// The checks of `init(validating:)` as a value, for the packet path.
    @inlinable
    public func check(verifyChecksum: Bool = true) -> WireError? {
        guard bytes.count >= IPv4Packet.minimumHeaderLength else { return .truncated }
        let vihl = bytes.be8(Field.versionIHL)
        guard vihl >> 4 == 4 else { return .badVersion }
        let hl = Int(vihl & 0x0F) &* 4
        guard hl >= IPv4Packet.minimumHeaderLength, hl <= bytes.count else { return .badHeaderLength }
        let tl = Int(bytes.be16(Field.totalLength))
        guard tl >= hl, tl <= bytes.count else { return .badTotalLength }
        if hl > IPv4Packet.minimumHeaderLength, !optionsAreWellFormed { return .badOption }
        if verifyChecksum {
            let ok = hl == IPv4Packet.minimumHeaderLength ? InternetChecksum.verifiesIPv4Header(bytes.baseAddress!)
                : InternetChecksum.verifies(bytes.slice(0, hl))
            if !ok { return .badChecksum }
        }
        return nil
    }

    @inlinable public var version: UInt8 { bytes.be8(Field.versionIHL) >> 4 }
    @inlinable public var headerLength: Int { Int(bytes.be8(Field.versionIHL) & 0x0F) &* 4 }
    @inlinable public var tos: UInt8 {
        get { bytes.be8(Field.tos) }
        nonmutating set { bytes.setBE8(Field.tos, newValue) }
    }
    @inlinable public var totalLength: Int {
        get { Int(bytes.be16(Field.totalLength)) }
        nonmutating set { bytes.setBE16(Field.totalLength, UInt16(newValue)) }
    }
    @inlinable public var identification: UInt16 {
        get { bytes.be16(Field.identification) }
        nonmutating set { bytes.setBE16(Field.identification, newValue) }
    }
    @inlinable public var flagsAndFragment: UInt16 {
        get { bytes.be16(Field.flagsFragment) }
        nonmutating set { bytes.setBE16(Field.flagsFragment, newValue) }
    }
    @inlinable public var dontFragment: Bool { flagsAndFragment & IPv4Packet.flagDontFragment != 0 }
    @inlinable public var moreFragments: Bool { flagsAndFragment & IPv4Packet.flagMoreFragments != 0 }
    /// The fragment offset in bytes.
    @inlinable public var fragmentOffset: Int { Int(flagsAndFragment & IPv4Packet.fragmentOffsetMask) &* 8 }
    /// True for any piece of a fragmented datagram.
    @inlinable public var isFragment: Bool {
        flagsAndFragment & (IPv4Packet.flagMoreFragments | IPv4Packet.fragmentOffsetMask) != 0
    }
    @inlinable public var ttl: UInt8 {
        get { bytes.be8(Field.ttl) }
        nonmutating set { bytes.setBE8(Field.ttl, newValue) }
    }
    @inlinable public var proto: IPProtocol { IPProtocol(rawValue: bytes.be8(Field.proto)) }
    @inlinable public var checksum: UInt16 {
        get { bytes.be16(Field.checksum) }
        nonmutating set { bytes.setBE16(Field.checksum, newValue) }
    }
    @inlinable public var source: IPv4Address {
        get { IPv4Address(rawValue: bytes.be32(Field.source)) }
        nonmutating set { bytes.setBE32(Field.source, newValue.rawValue) }
    }
    @inlinable public var destination: IPv4Address {
        get { IPv4Address(rawValue: bytes.be32(Field.destination)) }
        nonmutating set { bytes.setBE32(Field.destination, newValue.rawValue) }
    }
    @inlinable public var header: UnsafeMutableRawBufferPointer { bytes.slice(0, headerLength) }
    @inlinable public var options: UnsafeMutableRawBufferPointer {
        bytes.slice(Field.options, headerLength &- IPv4Packet.minimumHeaderLength)
    }
    @inlinable public var payload: UnsafeMutableRawBufferPointer {
        bytes.slice(headerLength, totalLength &- headerLength)
    }

    /// Decrements TTL by one and patches the checksum (RFC 1624 equation 3;
    /// TTL is the high byte of its 16-bit word with the protocol).
    /// Rewrites the TOS byte, keeping the header checksum right (RFC 1624).
    @inlinable @inline(__always) public func setTOS(_ value: UInt8) {
        let word = bytes.be16(0)
        let new = word & 0xFF00 | UInt16(value)
        bytes.setBE16(0, new)
        checksum = InternetChecksum.update(checksum, old: word, new: new)
    }

    @inlinable @inline(__always) public func decrementTTL() {
        let word = bytes.be16(Field.ttl)
        bytes.setBE16(Field.ttl, word &- 0x0100)
        checksum = InternetChecksum.update(checksum, old: word, new: word &- 0x0100)
    }

    /// Recomputes the header checksum from scratch.
    @inlinable public func fillChecksum() {
        checksum = 0
        checksum = InternetChecksum.checksum(header)
    }

    /// Options are a sequence of type-length-value entries, where types 0
    /// (end of list) and 1 (no-op) are one byte (RFC 791 section 3.1).
    @inlinable public var optionsAreWellFormed: Bool {
        var iterator = IPv4OptionIterator(options: options)
        while let _ = iterator.next() {}
        return !iterator.malformed
    }
}

/// One IPv4 option: its type byte and the range it occupies in the options area.
public struct IPv4Option: Hashable, Sendable {
    public var type: UInt8
    public var offset: Int
    public var length: Int
    @inlinable public init(type: UInt8, offset: Int, length: Int) {
        self.type = type; self.offset = offset; self.length = length
    }
    /// The "copied" flag: the option must appear in every fragment (RFC 791).
    @inlinable public var isCopied: Bool { type & 0x80 != 0 }
    public static let endOfList: UInt8 = 0
    public static let noOperation: UInt8 = 1
}

/// Walks the options area; stops at end-of-list or at a malformed entry,
/// which it records in `malformed`.
public struct IPv4OptionIterator: IteratorProtocol {
    public let options: UnsafeMutableRawBufferPointer
    public var position = 0
    public var malformed = false

    @inlinable public init(options: UnsafeMutableRawBufferPointer) { self.options = options }

    @inlinable public mutating func next() -> IPv4Option? {
        guard position < options.count else { return nil }
        let type = options.be8(position)
        if type == IPv4Option.endOfList {
            position = options.count
            return nil
        }
        if type == IPv4Option.noOperation {
            defer { position &+= 1 }
            return IPv4Option(type: type, offset: position, length: 1)
        }
        guard position + 1 < options.count else { malformed = true; position = options.count; return nil }
        let length = Int(options.be8(position + 1))
        guard length >= 2, position + length <= options.count else {
            malformed = true; position = options.count; return nil
        }
        defer { position &+= length }
        return IPv4Option(type: type, offset: position, length: length)
    }
}

/// The parsed value of an IPv4 header. Options are skipped on parse and
/// never emitted; `emit` writes a 20-byte header.
public struct IPv4Repr: Hashable, Sendable {
    public var source: IPv4Address
    public var destination: IPv4Address
    public var proto: IPProtocol
    public var ttl: UInt8
    public var tos: UInt8
    public var identification: UInt16
    public var dontFragment: Bool
    public var moreFragments: Bool
    /// In bytes; a multiple of 8.
    public var fragmentOffset: Int
    public var payloadLength: Int

    public init(source: IPv4Address, destination: IPv4Address, proto: IPProtocol, payloadLength: Int,
                ttl: UInt8 = 64, tos: UInt8 = 0, identification: UInt16 = 0,
                dontFragment: Bool = false, moreFragments: Bool = false, fragmentOffset: Int = 0) {
        self.source = source; self.destination = destination; self.proto = proto
        self.payloadLength = payloadLength; self.ttl = ttl; self.tos = tos
        self.identification = identification; self.dontFragment = dontFragment
        self.moreFragments = moreFragments; self.fragmentOffset = fragmentOffset
    }

    public init(parsing bytes: UnsafeMutableRawBufferPointer, verifyChecksum: Bool = true) throws(WireError) {
        let p = try IPv4Packet(validating: bytes, verifyChecksum: verifyChecksum)
        self.init(source: p.source, destination: p.destination, proto: p.proto,
                  payloadLength: p.totalLength - p.headerLength, ttl: p.ttl, tos: p.tos,
                  identification: p.identification, dontFragment: p.dontFragment,
                  moreFragments: p.moreFragments, fragmentOffset: p.fragmentOffset)
    }

    public var totalLength: Int { IPv4Packet.minimumHeaderLength + payloadLength }

    /// Writes the 20-byte header with its checksum at the start of `bytes`.
    public func emit(into bytes: UnsafeMutableRawBufferPointer) {
        precondition(bytes.count >= IPv4Packet.minimumHeaderLength)
        precondition(fragmentOffset % 8 == 0 && fragmentOffset >> 3 <= Int(IPv4Packet.fragmentOffsetMask))
        precondition(totalLength <= 0xFFFF)
        let p = IPv4Packet(unchecked: bytes)
        bytes.setBE8(IPv4Packet.Field.versionIHL, 0x45)
        p.tos = tos
        p.totalLength = totalLength
        p.identification = identification
        var ff = UInt16(fragmentOffset >> 3)
        if dontFragment { ff |= IPv4Packet.flagDontFragment }
        if moreFragments { ff |= IPv4Packet.flagMoreFragments }
        p.flagsAndFragment = ff
        p.ttl = ttl
        bytes.setBE8(IPv4Packet.Field.proto, proto.rawValue)
        p.source = source
        p.destination = destination
        p.checksum = 0
        p.checksum = InternetChecksum.checksum(bytes.slice(0, IPv4Packet.minimumHeaderLength))
    }
}
