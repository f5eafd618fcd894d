/// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
public enum InternetChecksum {
    /// The one's-complement sum of `bytes` taken as big-endian 16-bit words,
    /// added to `initial` and not yet folded. An odd trailing byte is padded
    /// with zero (RFC 1071 section 4.1).
    @inlinable
    public static func sum(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress else { return initial }
        // Sum native-endian 32-bit words into a wide accumulator; the one's
        // complement sum commutes with byte swapping (RFC 1071 section 2(B)),
        // so one swap of the folded result gives the big-endian sum.
        var acc: UInt64 = 0
        var i = 0
        let n = bytes.count
        // 32 bytes a round into two accumulators (independent adds keep the
        // core busy); 32-bit words into 64 bits cannot overflow here.
        var acc2: UInt64 = 0
        while i + 32 <= n {
            acc &+= UInt64(base.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            acc2 &+= UInt64(base.loadUnaligned(fromByteOffset: i &+ 4, as: UInt32.self))
            acc &+= UInt64(base.loadUnaligned(fromByteOffset: i &+ 8, as: UInt32.self))
            acc2 &+= UInt64(base.loadUnaligned(fromByteOffset: i &+ 12, as: UInt32.self))
            acc &+= UInt64(base.loadUnaligned(fromByteOffset: i &+ 16, as: UInt32.self))
            acc2 &+= UInt64(base.loadUnaligned(fromByteOffset: i &+ 20, as: UInt32.self))
            acc &+= UInt64(base.loadUnaligned(fromByteOffset: i &+ 24, as: UInt32.self))
            acc2 &+= UInt64(base.loadUnaligned(fromByteOffset: i &+ 28, as: UInt32.self))
            i &+= 32
        }
        acc = (acc & 0xFFFF_FFFF) &+ (acc >> 32) &+ (acc2 & 0xFFFF_FFFF) &+ (acc2 >> 32)
        while i + 4 <= n {
            acc &+= UInt64(base.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            i &+= 4
        }
        if i + 2 <= n {
            acc &+= UInt64(base.loadUnaligned(fromByteOffset: i, as: UInt16.self))
            i &+= 2
        }
        if i < n {
            // The odd byte is the high half of a big-endian word; in native
            // little-endian order that is the low byte.
            #if _endian(little)
            acc &+= UInt64(base.load(fromByteOffset: i, as: UInt8.self))
            #else
            acc &+= UInt64(base.load(fromByteOffset: i, as: UInt8.self)) << 8
            #endif
        }
        var folded = UInt16(truncatingIfNeeded: foldWide(acc))
        folded = UInt16(bigEndian: folded)
        return initial &+ UInt32(folded)
    }

    @inlinable
    public static func sum(_ bytes: UnsafeMutableRawBufferPointer, initial: UInt32 = 0) -> UInt32 {
        sum(UnsafeRawBufferPointer(bytes), initial: initial)
    }

    @inlinable @inline(__always)
    static func foldWide(_ value: UInt64) -> UInt64 {
        var v = value
        v = (v & 0xFFFF_FFFF) &+ (v >> 32)
        v = (v & 0xFFFF_FFFF) &+ (v >> 32)
        v = (v & 0xFFFF) &+ (v >> 16)
        v = (v & 0xFFFF) &+ (v >> 16)
        return v
    }

    /// Folds a partial sum to 16 bits with end-around carry.
    @inlinable @inline(__always)
    public static func fold(_ sum: UInt32) -> UInt16 {
        UInt16(truncatingIfNeeded: foldWide(UInt64(sum)))
    }

    /// The checksum field value for `bytes`: the complement of the folded sum.
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt16 {
        ~fold(sum(bytes, initial: initial))
    }

    @inlinable
    public static func checksum(_ bytes: UnsafeMutableRawBufferPointer, initial: UInt32 = 0) -> UInt16 {
        checksum(UnsafeRawBufferPointer(bytes), initial: initial)
    }

    /// True when `bytes`, checksum field included, sums to 0xFFFF.
    @inlinable
    public static func verifies(_ bytes: UnsafeMutableRawBufferPointer, initial: UInt32 = 0) -> Bool {
        fold(sum(bytes, initial: initial)) == 0xFFFF
    }

    /// True when the 20 bytes at `header` (an IPv4 header without options)
    /// sum to 0xFFFF. Five loads and a fold: the packet path's check.
    @inlinable @inline(__always)
    public static func verifiesIPv4Header(_ header: UnsafeRawPointer) -> Bool {
        var acc = UInt64(header.loadUnaligned(as: UInt32.self))
        acc &+= UInt64(header.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        acc &+= UInt64(header.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        acc &+= UInt64(header.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        acc &+= UInt64(header.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
        // The one's complement sum is the same in either byte order, and
        // 0xFFFF reads the same both ways.
        return foldWide(acc) == 0xFFFF
    }

    /// RFC 1624 equation 3: the checksum after one 16-bit word of the covered
    /// data changes from `old` to `new`, `HC' = ~(~HC + ~m + m')`. Unlike
    /// equation 2 it never produces 0xFFFF from a valid non-zero sum.
    @inlinable @inline(__always)
    public static func update(_ checksum: UInt16, old: UInt16, new: UInt16) -> UInt16 {
        let s = UInt32(~checksum) &+ UInt32(~old) &+ UInt32(new)
        return ~fold(s)
    }

    /// RFC 1624 equation 3 for a 32-bit field (an address), as two words.
    @inlinable @inline(__always)
    public static func update(_ checksum: UInt16, old: UInt32, new: UInt32) -> UInt16 {
        let s = UInt32(~checksum)
            &+ UInt32(~UInt16(truncatingIfNeeded: old >> 16)) &+ UInt32(~UInt16(truncatingIfNeeded: old))
            &+ (new >> 16) &+ (new & 0xFFFF)
        return ~fold(s)
    }

    /// The partial sum of the IPv4 pseudo-header (RFC 768, RFC 793 section 3.1).
    @inlinable
    public static func pseudoHeaderSum(source: IPv4Address, destination: IPv4Address,
                                       protocol proto: IPProtocol, length: Int) -> UInt32 {
        (source.rawValue >> 16) &+ (source.rawValue & 0xFFFF)
            &+ (destination.rawValue >> 16) &+ (destination.rawValue & 0xFFFF)
            &+ UInt32(proto.rawValue) &+ UInt32(truncatingIfNeeded: length)
    }

    @inlinable @inline(__always)
    static func wordSum(_ w: UInt64) -> UInt32 {
        UInt32(truncatingIfNeeded: (w >> 48) & 0xFFFF) &+ UInt32(truncatingIfNeeded: (w >> 32) & 0xFFFF)
            &+ UInt32(truncatingIfNeeded: (w >> 16) & 0xFFFF) &+ UInt32(truncatingIfNeeded: w & 0xFFFF)
    }

    /// The partial sum of the IPv6 pseudo-header (RFC 8200 section 8.1).
    @inlinable
    public static func pseudoHeaderSum(source: IPv6Address, destination: IPv6Address,
                                       nextHeader: IPProtocol, length: Int) -> UInt32 {
        let s = wordSum(source.high) &+ wordSum(source.low)
            &+ wordSum(destination.high) &+ wordSum(destination.low)
        let len = UInt32(truncatingIfNeeded: length)
        return s &+ (len >> 16) &+ (len & 0xFFFF) &+ UInt32(nextHeader.rawValue)
    }
}
