/// An IPv4 address held as a host-order `UInt32` (RFC 791).
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32

    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    @inlinable public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        rawValue = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    public static let any = IPv4Address(rawValue: 0)
    public static let broadcast = IPv4Address(rawValue: 0xFFFF_FFFF)

    /// The four bytes as they travel (IKE identities, selectors, NAT detection).
    public var networkBytes: [UInt8] { withUnsafeBytes(of: rawValue.bigEndian) { Array($0) } }

    /// Parses dotted-quad text ("192.0.2.1"): four decimal parts 0...255, no
    /// leading zeros (which some parsers read as octal), nothing else.
    public init?(_ text: some StringProtocol) {
        var value: UInt32 = 0
        var parts = 0
        var digits = 0
        var part: UInt32 = 0
        var leadingZero = false
        for ch in text.utf8 {
            if ch == UInt8(ascii: ".") {
                guard digits > 0, parts < 3 else { return nil }
                value = value << 8 | part
                parts += 1; digits = 0; part = 0; leadingZero = false
            } else if ch >= UInt8(ascii: "0"), ch <= UInt8(ascii: "9") {
                if leadingZero { return nil }
                if digits == 0, ch == UInt8(ascii: "0") { leadingZero = true }
                part = part * 10 + UInt32(ch - UInt8(ascii: "0"))
                digits += 1
                guard part <= 255, digits <= 3 else { return nil }
            } else {
                return nil
            }
        }
        guard digits > 0, parts == 3 else { return nil }
        rawValue = value << 8 | part
    }

    public var description: String {
        "\(rawValue >> 24).\(rawValue >> 16 & 0xFF).\(rawValue >> 8 & 0xFF).\(rawValue & 0xFF)"
    }

    @inlinable public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    @inlinable public var isMulticast: Bool { rawValue >> 28 == 0xE }
    /// The Ethernet group a multicast address maps to (RFC 1112 section 6.4: 01:00:5e and its low 23 bits).
    public var multicastMAC: MACAddress { MACAddress(rawValue: 0x0100_5E00_0000 | UInt64(rawValue & 0x7F_FFFF)) }
    @inlinable public var isLimitedBroadcast: Bool { rawValue == 0xFFFF_FFFF }
    @inlinable public var isUnspecified: Bool { rawValue == 0 }
    @inlinable public var isLoopback: Bool { rawValue >> 24 == 127 }
    /// 169.254.0.0/16 (RFC 3927).
    @inlinable public var isLinkLocal: Bool { rawValue >> 16 == 0xA9FE }
    /// 10/8, 172.16/12, 192.168/16 (RFC 1918).
    @inlinable public var isPrivate: Bool {
        rawValue >> 24 == 10 || rawValue >> 20 == 0xAC1 || rawValue >> 16 == 0xC0A8
    }

    /// Number of leading bits `self` and `other` share, 0...32.
    @inlinable public func commonPrefixLength(with other: IPv4Address) -> Int {
        (rawValue ^ other.rawValue).leadingZeroBitCount
    }
}

/// Why an address, prefix or MAC text did not parse.
public struct AddressParseError: Error, Equatable, Sendable, CustomStringConvertible {
    public var input: String
    public var reason: String
    public init(_ input: some StringProtocol, _ reason: String) {
        self.input = String(input); self.reason = reason
    }
    public var description: String { "\"\(input)\": \(reason)" }
}

/// An IPv4 prefix. The address is always stored masked, so two prefixes
/// that cover the same addresses compare equal.
public struct IPv4Prefix: Hashable, Sendable, CustomStringConvertible {
    public let address: IPv4Address
    public let length: UInt8

    /// Masks `address` to `length` bits; `length` must be 0...32.
    @inlinable public init(address: IPv4Address, length: Int) {
        precondition(length >= 0 && length <= 32, "IPv4 prefix length out of range")
        self.length = UInt8(length)
        self.address = IPv4Address(rawValue: address.rawValue & IPv4Prefix.mask(length))
    }

    /// Parses "10.2.0.0/16". Host bits that are set are an error, because in
    /// a route they are almost always a typo for a different prefix.
    public init(_ text: some StringProtocol) throws(AddressParseError) {
        let (address, length) = try IPv4Prefix.split(text)
        guard address.rawValue & ~IPv4Prefix.mask(length) == 0 else {
            throw AddressParseError(text, "host bits set (did you mean \(IPv4Prefix(address: address, length: length))?)")
        }
        self.init(address: address, length: length)
    }

    /// Splits "a.b.c.d/len" into its parts without requiring host bits clear.
    public static func split(_ text: some StringProtocol) throws(AddressParseError) -> (IPv4Address, Int) {
        guard let slash = text.firstIndex(of: "/") else { throw AddressParseError(text, "missing /length") }
        guard let address = IPv4Address(text[text.startIndex..<slash]) else {
            throw AddressParseError(text, "not an IPv4 address")
        }
        let lenText = text[text.index(after: slash)...]
        guard let length = Int(lenText), length >= 0, length <= 32, !lenText.hasPrefix("+") else {
            throw AddressParseError(text, "prefix length must be 0...32")
        }
        return (address, length)
    }

    @inlinable public static func mask(_ length: Int) -> UInt32 {
        length == 0 ? 0 : ~UInt32(0) << UInt32(32 - length)
    }

    @inlinable public var mask: UInt32 { IPv4Prefix.mask(Int(length)) }

    @inlinable public func contains(_ a: IPv4Address) -> Bool {
        a.rawValue & mask == address.rawValue
    }

    /// The last address of the prefix (the directed broadcast on a subnet).
    @inlinable public var lastAddress: IPv4Address { IPv4Address(rawValue: address.rawValue | ~mask) }

    public static let any = IPv4Prefix(address: .any, length: 0)

    public var description: String { "\(address)/\(length)" }
}

/// An address configured on an interface: the address plus its subnet length.
public struct IPv4InterfaceAddress: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv4Address
    public var prefixLength: Int

    public init(address: IPv4Address, prefixLength: Int) {
        precondition(prefixLength >= 0 && prefixLength <= 32)
        self.address = address; self.prefixLength = prefixLength
    }

    /// Parses "10.1.0.1/24".
    public init(_ text: some StringProtocol) throws(AddressParseError) {
        let (a, l) = try IPv4Prefix.split(text)
        self.init(address: a, prefixLength: l)
    }

    public var subnet: IPv4Prefix { IPv4Prefix(address: address, length: prefixLength) }
    /// The directed broadcast address, or nil on /31 and /32 (RFC 3021).
    public var broadcast: IPv4Address? { prefixLength >= 31 ? nil : subnet.lastAddress }
    public var description: String { "\(address)/\(prefixLength)" }
}

/// A 48-bit IEEE MAC address, held in the low bits of a `UInt64`.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue & 0xFFFF_FFFF_FFFF }

    public init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8, _ b4: UInt8, _ b5: UInt8) {
        rawValue = UInt64(b0) << 40 | UInt64(b1) << 32 | UInt64(b2) << 24
            | UInt64(b3) << 16 | UInt64(b4) << 8 | UInt64(b5)
    }

    public static let broadcast = MACAddress(rawValue: 0xFFFF_FFFF_FFFF)
    public static let zero = MACAddress(rawValue: 0)

    /// Parses "02:00:00:00:00:01" (colons or dashes).
    public init?(_ text: some StringProtocol) {
        let parts = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 6 else { return nil }
        var v: UInt64 = 0
        for p in parts {
            guard p.count == 2, let b = UInt8(p, radix: 16) else { return nil }
            v = v << 8 | UInt64(b)
        }
        rawValue = v
    }

    /// The group bit: broadcast and multicast frames.
    @inlinable public var isMulticast: Bool { rawValue & 0x0100_0000_0000 != 0 }
    @inlinable public var isBroadcast: Bool { rawValue == 0xFFFF_FFFF_FFFF }

    /// Reads six bytes at `offset`.
    @inlinable public init(bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        let hi = UInt64(bytes.be16(offset))
        let lo = UInt64(bytes.be32(offset + 2))
        rawValue = hi << 32 | lo
    }

    /// Writes six bytes at `offset`.
    @inlinable public func write(to bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        bytes.setBE16(offset, UInt16(truncatingIfNeeded: rawValue >> 32))
        bytes.setBE32(offset + 2, UInt32(truncatingIfNeeded: rawValue))
    }

    public var description: String {
        (0..<6).map { i -> String in
            let b = UInt8(truncatingIfNeeded: rawValue >> UInt64(40 - 8 * i))
            let s = String(b, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined(separator: ":")
    }
}

/// An IPv6 address held as two host-order 64-bit halves (RFC 4291).
public struct IPv6Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    @inlinable public init(high: UInt64, low: UInt64) { self.high = high; self.low = low }

    public static let any = IPv6Address(high: 0, low: 0)

    /// The sixteen bytes as they travel.
    public var networkBytes: [UInt8] { withUnsafeBytes(of: (high.bigEndian, low.bigEndian)) { Array($0) } }

    @inlinable public init(bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        high = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
        low = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self))
    }

    @inlinable public func write(to bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        bytes.storeBytes(of: high.bigEndian, toByteOffset: offset, as: UInt64.self)
        bytes.storeBytes(of: low.bigEndian, toByteOffset: offset + 8, as: UInt64.self)
    }

    @inlinable public static func < (a: IPv6Address, b: IPv6Address) -> Bool { (a.high, a.low) < (b.high, b.low) }

    @inlinable public var isMulticast: Bool { high >> 56 == 0xFF }
    /// fe80::/10.
    @inlinable public var isLinkLocal: Bool { high >> 54 == 0x3FA }
    /// ::, the source of a node that has no address yet (DAD).
    @inlinable public var isUnspecified: Bool { high == 0 && low == 0 }
    @inlinable public var isLoopback: Bool { high == 0 && low == 1 }
    /// A multicast address's scope (RFC 4291 section 2.7): 1 interface,
    /// 2 link, 5 site, 8 organization, 14 global.
    @inlinable public var multicastScope: UInt8 { UInt8(truncatingIfNeeded: high >> 48) & 0xF }

    /// ff02::1, every node on the link.
    public static let allNodes = IPv6Address(high: 0xFF02_0000_0000_0000, low: 1)
    /// ff02::2, every router on the link.
    public static let allRouters = IPv6Address(high: 0xFF02_0000_0000_0000, low: 2)
    /// ff02::16, where MLDv2 reports go (RFC 3810 section 5.2.14).
    public static let allMLDv2Routers = IPv6Address(high: 0xFF02_0000_0000_0000, low: 0x16)

    /// The solicited-node multicast address of this address (RFC 4291
    /// section 2.7.1): ff02::1:ff00:0/104 and its low 24 bits.
    public var solicitedNode: IPv6Address {
        IPv6Address(high: 0xFF02_0000_0000_0000, low: 0x0000_0001_FF00_0000 | low & 0xFF_FFFF)
    }

    /// The Ethernet group address a multicast IPv6 address is sent to
    /// (RFC 2464 section 7): 33:33 and its low 32 bits.
    public var multicastMAC: MACAddress { MACAddress(rawValue: 0x3333_0000_0000 | low & 0xFFFF_FFFF) }

    /// The modified EUI-64 interface identifier of a MAC (RFC 4291 appendix
    /// A): ff:fe in the middle, the universal/local bit inverted.
    public static func interfaceIdentifier(_ mac: MACAddress) -> UInt64 {
        let m = mac.rawValue
        return ((m >> 24) << 40 | 0xFF_FE00_0000 | m & 0xFF_FFFF) ^ 0x0200_0000_0000_0000
    }

    /// fe80::/64 with the MAC's modified EUI-64 identifier: the link-local
    /// address of an Ethernet interface (RFC 4862 section 5.3, RFC 2464 section 5).
    public static func linkLocal(_ mac: MACAddress) -> IPv6Address {
        IPv6Address(high: 0xFE80_0000_0000_0000, low: interfaceIdentifier(mac))
    }

    func group(_ i: Int) -> UInt16 {
        let w = i < 4 ? high : low
        return UInt16(truncatingIfNeeded: w >> UInt64(48 - 16 * (i % 4)))
    }

    /// Parses RFC 4291 text: eight groups, at most one "::", optionally an
    /// embedded dotted-quad IPv4 tail.
    public init?(_ text: some StringProtocol) {
        var groups: [UInt16] = []
        var gapAt: Int? = nil
        let s = String(text)
        if s.isEmpty { return nil }
        var rest = Substring(s)
        if rest.hasPrefix("::") { gapAt = 0; rest = rest.dropFirst(2) } else if rest.hasPrefix(":") { return nil }
        while !rest.isEmpty {
            let end = rest.firstIndex(of: ":") ?? rest.endIndex
            let piece = rest[rest.startIndex..<end]
            if piece.contains(".") {
                guard end == rest.endIndex, let v4 = IPv4Address(piece) else { return nil }
                groups.append(UInt16(v4.rawValue >> 16)); groups.append(UInt16(v4.rawValue & 0xFFFF))
                rest = rest[end...]
                break
            }
            guard !piece.isEmpty, piece.count <= 4, let g = UInt16(piece, radix: 16) else { return nil }
            groups.append(g)
            rest = rest[end...]
            if rest.hasPrefix("::") {
                guard gapAt == nil else { return nil }
                gapAt = groups.count
                rest = rest.dropFirst(2)
            } else if rest.hasPrefix(":") {
                rest = rest.dropFirst()
                if rest.isEmpty { return nil }
            }
        }
        if let gap = gapAt {
            guard groups.count <= 7 else { return nil }
            groups.insert(contentsOf: repeatElement(0, count: 8 - groups.count), at: gap)
        }
        guard groups.count == 8 else { return nil }
        var h: UInt64 = 0, l: UInt64 = 0
        for i in 0..<4 { h = h << 16 | UInt64(groups[i]) }
        for i in 4..<8 { l = l << 16 | UInt64(groups[i]) }
        high = h; low = l
    }

    /// RFC 5952 text: lowercase, longest run of two or more zero groups as "::".
    public var description: String {
        let g = (0..<8).map(group)
        var bestStart = -1, bestLen = 0, i = 0
        while i < 8 {
            if g[i] == 0 {
                var j = i
                while j < 8, g[j] == 0 { j += 1 }
                if j - i > bestLen, j - i >= 2 { bestStart = i; bestLen = j - i }
                i = j
            } else { i += 1 }
        }
        func hex(_ r: Range<Int>) -> String { r.map { String(g[$0], radix: 16) }.joined(separator: ":") }
        if bestStart < 0 { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLen)..<8)
    }
}

/// An IPv6 prefix: an address with all bits past `length` clear.
public struct IPv6Prefix: Hashable, Sendable, CustomStringConvertible {
    public let address: IPv6Address
    public let length: UInt8

    /// Masks `address` to `length` bits; `length` must be 0...128.
    @inlinable public init(address: IPv6Address, length: Int) {
        precondition(length >= 0 && length <= 128, "IPv6 prefix length out of range")
        self.length = UInt8(length)
        let m = IPv6Prefix.mask(length)
        self.address = IPv6Address(high: address.high & m.high, low: address.low & m.low)
    }

    /// Parses "2001:db8::/32". Host bits that are set are an error, as for IPv4.
    public init(_ text: some StringProtocol) throws(AddressParseError) {
        guard let slash = text.firstIndex(of: "/") else { throw AddressParseError(text, "missing /length") }
        guard let address = IPv6Address(text[text.startIndex..<slash]) else {
            throw AddressParseError(text, "not an IPv6 address")
        }
        let lenText = text[text.index(after: slash)...]
        guard let length = Int(lenText), length >= 0, length <= 128, !lenText.hasPrefix("+") else {
            throw AddressParseError(text, "prefix length must be 0...128")
        }
        let masked = IPv6Prefix(address: address, length: length)
        guard masked.address == address else {
            throw AddressParseError(text, "host bits set (did you mean \(masked)?)")
        }
        self = masked
    }

    /// The address whose first `length` bits are ones.
    @inlinable public static func mask(_ length: Int) -> IPv6Address {
        IPv6Address(high: length == 0 ? 0 : length >= 64 ? ~0 : ~0 << UInt64(64 - length),
                    low: length <= 64 ? 0 : length >= 128 ? ~0 : ~0 << UInt64(128 - length))
    }

    @inlinable public func contains(_ a: IPv6Address) -> Bool {
        let m = IPv6Prefix.mask(Int(length))
        return a.high & m.high == address.high && a.low & m.low == address.low
    }

    public static let any = IPv6Prefix(address: .any, length: 0)

    public var description: String { "\(address)/\(length)" }
}

/// An IPv6 address configured on an interface, with its prefix length.
public struct IPv6InterfaceAddress: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv6Address
    public var prefixLength: Int

    public init(address: IPv6Address, prefixLength: Int) {
        precondition(prefixLength >= 0 && prefixLength <= 128)
        self.address = address; self.prefixLength = prefixLength
    }

    /// Parses "2001:db8::1/64" (host bits are the point here).
    public init(_ text: some StringProtocol) throws(AddressParseError) {
        guard let slash = text.firstIndex(of: "/") else { throw AddressParseError(text, "missing /length") }
        guard let a = IPv6Address(text[text.startIndex..<slash]) else { throw AddressParseError(text, "not an IPv6 address") }
        let lenText = text[text.index(after: slash)...]
        guard let l = Int(lenText), l >= 0, l <= 128, !lenText.hasPrefix("+") else {
            throw AddressParseError(text, "prefix length must be 0...128")
        }
        self.init(address: a, prefixLength: l)
    }

    public var subnet: IPv6Prefix { IPv6Prefix(address: address, length: prefixLength) }
    public var description: String { "\(address)/\(prefixLength)" }
}
