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

extension TCPHeader {
    public static let flagFIN: UInt8 = 0x01
    public static let flagRST: UInt8 = 0x04
    public static let flagPSH: UInt8 = 0x08
    public static let optionEnd: UInt8 = 0
    public static let optionNOP: UInt8 = 1
    public static let optionWindowScale: UInt8 = 3
    public static let optionSACKPermitted: UInt8 = 4
    public static let optionSACK: UInt8 = 5
    public static let optionTimestamps: UInt8 = 8
    /// The largest window shift RFC 7323 section 2.3 allows.
    public static let maxWindowScale: UInt8 = 14

    @inlinable public var sequence: UInt32 { bytes.be32(Field.sequence) }
    @inlinable public var acknowledgment: UInt32 { bytes.be32(Field.acknowledgment) }
    @inlinable public var window: UInt16 { bytes.be16(Field.window) }
    /// The segment's data: what follows the header.
    @inlinable public var payload: UnsafeMutableRawBufferPointer { bytes.tail(from: headerLength) }

    /// The options the header carries. Malformed options end the parse:
    /// what was read before them counts, the rest is ignored (RFC 9293
    /// section 3.1: a receiver must be prepared for any option length).
    public var options: TCPOptions {
        var o = TCPOptions()
        var i = Field.options
        let end = headerLength
        while i < end {
            let kind = bytes.be8(i)
            if kind == TCPHeader.optionEnd { break }
            if kind == TCPHeader.optionNOP { i += 1; continue }
            guard i + 1 < end else { break }
            let len = Int(bytes.be8(i + 1))
            guard len >= 2, i + len <= end else { break }
            switch (kind, len) {
            case (TCPHeader.optionMSS, 4): o.mss = bytes.be16(i + 2)
            case (TCPHeader.optionWindowScale, 3): o.windowScale = min(bytes.be8(i + 2), TCPHeader.maxWindowScale)
            case (TCPHeader.optionSACKPermitted, 2): o.sackPermitted = true
            case (TCPHeader.optionTimestamps, 10):
                o.timestamp = TCPTimestamp(value: bytes.be32(i + 2), echo: bytes.be32(i + 6))
            case (TCPHeader.optionSACK, _) where (len - 2) % 8 == 0:
                var k = i + 2
                while k < i + len, o.sackCount < TCPOptions.maxSACKBlocks {
                    o.setSACK(o.sackCount, TCPSACKBlock(start: bytes.be32(k), end: bytes.be32(k + 4)))
                    o.sackCount += 1
                    k += 8
                }
            default: break
            }
            i += len
        }
        return o
    }
}

/// A timestamp option (RFC 7323 section 3): the sender's clock and the echo
/// of the peer's most recent one.
public struct TCPTimestamp: Hashable, Sendable {
    public var value: UInt32
    public var echo: UInt32
    public init(value: UInt32, echo: UInt32) { self.value = value; self.echo = echo }
}

/// A SACK block (RFC 2018): the sequence range [start, end) the receiver holds.
public struct TCPSACKBlock: Hashable, Sendable {
    public var start: UInt32
    public var end: UInt32
    public init(start: UInt32, end: UInt32) { self.start = start; self.end = end }
}

/// The options of one segment, as plain values (no allocation: up to four
/// SACK blocks inline).
public struct TCPOptions: Hashable, Sendable {
    public static let maxSACKBlocks = 4
    public var mss: UInt16? = nil
    public var windowScale: UInt8? = nil
    public var sackPermitted = false
    public var timestamp: TCPTimestamp? = nil
    public var sackCount = 0
    var sack0 = TCPSACKBlock(start: 0, end: 0), sack1 = TCPSACKBlock(start: 0, end: 0)
    var sack2 = TCPSACKBlock(start: 0, end: 0), sack3 = TCPSACKBlock(start: 0, end: 0)

    public init() {}

    public func sack(_ k: Int) -> TCPSACKBlock {
        switch k {
        case 0: sack0
        case 1: sack1
        case 2: sack2
        default: sack3
        }
    }

    public mutating func setSACK(_ k: Int, _ b: TCPSACKBlock) {
        switch k {
        case 0: sack0 = b
        case 1: sack1 = b
        case 2: sack2 = b
        default: sack3 = b
        }
    }

    public mutating func appendSACK(_ b: TCPSACKBlock) {
        guard sackCount < TCPOptions.maxSACKBlocks else { return }
        setSACK(sackCount, b)
        sackCount += 1
    }

    /// The bytes these options take on the wire, padded to a multiple of 4
    /// (each option is NOP-aligned as Linux and BSD send them).
    public var length: Int {
        var n = 0
        if mss != nil { n += 4 }
        if windowScale != nil { n += 4 }  // NOP + 3
        if timestamp != nil { n += 12 }  // NOP NOP + 10, or SACK-permitted + 10 (below)
        if sackPermitted && timestamp == nil { n += 4 }  // NOP NOP + 2
        if sackCount > 0 { n += 4 + 8 * sackCount }  // NOP NOP + 2 + 8n
        return n
    }

    /// Writes the options at `at`; returns the bytes written (`length`).
    @discardableResult
    public func emit(into bytes: UnsafeMutableRawBufferPointer, at start: Int) -> Int {
        var i = start
        func put(_ b: UInt8) { bytes.setBE8(i, b); i += 1 }
        if let mss {
            put(TCPHeader.optionMSS); put(4); bytes.setBE16(i, mss); i += 2
        }
        if let ts = timestamp {
            if sackPermitted { put(TCPHeader.optionSACKPermitted); put(2) } else { put(TCPHeader.optionNOP); put(TCPHeader.optionNOP) }
            put(TCPHeader.optionTimestamps); put(10)
            bytes.setBE32(i, ts.value); bytes.setBE32(i + 4, ts.echo); i += 8
        } else if sackPermitted {
            put(TCPHeader.optionNOP); put(TCPHeader.optionNOP); put(TCPHeader.optionSACKPermitted); put(2)
        }
        if let ws = windowScale {
            put(TCPHeader.optionNOP); put(TCPHeader.optionWindowScale); put(3); put(ws)
        }
        if sackCount > 0 {
            put(TCPHeader.optionNOP); put(TCPHeader.optionNOP); put(TCPHeader.optionSACK); put(UInt8(2 + 8 * sackCount))
            for k in 0..<sackCount {
                bytes.setBE32(i, sack(k).start); bytes.setBE32(i + 4, sack(k).end); i += 8
            }
        }
        return i - start
    }
}

/// A TCP segment's header fields, to write one.
public struct TCPRepr: Hashable, Sendable {
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var sequence: UInt32
    public var acknowledgment: UInt32
    public var flags: UInt8
    public var window: UInt16
    public var options: TCPOptions

    public init(sourcePort: UInt16, destinationPort: UInt16, sequence: UInt32, acknowledgment: UInt32, flags: UInt8,
                window: UInt16, options: TCPOptions = TCPOptions()) {
        self.sourcePort = sourcePort; self.destinationPort = destinationPort
        self.sequence = sequence; self.acknowledgment = acknowledgment
        self.flags = flags; self.window = window; self.options = options
    }

    public var headerLength: Int { TCPHeader.minimumLength + options.length }

    /// Writes the header at the start of `bytes`, whose payload follows
    /// it already; the checksum is left 0 (`finish` writes it).
    public func emitHeader(into bytes: UnsafeMutableRawBufferPointer) {
        let h = headerLength
        precondition(bytes.count >= h && h <= 60)
        bytes.setBE16(TCPHeader.Field.sourcePort, sourcePort)
        bytes.setBE16(TCPHeader.Field.destinationPort, destinationPort)
        bytes.setBE32(TCPHeader.Field.sequence, sequence)
        bytes.setBE32(TCPHeader.Field.acknowledgment, acknowledgment)
        bytes.setBE8(TCPHeader.Field.dataOffset, UInt8(h / 4) << 4)
        bytes.setBE8(TCPHeader.Field.flags, flags)
        bytes.setBE16(TCPHeader.Field.window, window)
        bytes.setBE16(TCPHeader.Field.checksum, 0)
        bytes.setBE16(TCPHeader.Field.urgent, 0)
        options.emit(into: bytes, at: TCPHeader.Field.options)
    }

    /// Writes the checksum of a whole segment (header and payload in
    /// `bytes`) over the pseudo-header sum `pseudo`.
    public static func finish(_ bytes: UnsafeMutableRawBufferPointer, pseudo: UInt32) {
        bytes.setBE16(TCPHeader.Field.checksum, 0)
        bytes.setBE16(TCPHeader.Field.checksum, InternetChecksum.checksum(bytes, initial: pseudo))
    }

    /// Whether a segment's checksum verifies over the pseudo-header sum `pseudo`.
    public static func verify(_ bytes: UnsafeMutableRawBufferPointer, pseudo: UInt32) -> Bool {
        InternetChecksum.checksum(bytes, initial: pseudo) == 0
    }
}
