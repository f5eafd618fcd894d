/// SipHash-2-4 (Aumasson and Bernstein, 2012) over a few 64-bit words: the
/// keyed pseudorandom function behind TCP's initial sequence numbers
/// (RFC 6528), timestamp offsets and SYN cookies (RFC 4987). Written here
/// because it runs per SYN on the stack's thread: swift-crypto has no
/// SipHash, and HMAC through libcrypto costs far more for 16 bytes.
struct SipHash {
    let k0: UInt64
    let k1: UInt64

    init(k0: UInt64, k1: UInt64) { self.k0 = k0; self.k1 = k1 }

    @inline(__always)
    private static func round(_ v0: inout UInt64, _ v1: inout UInt64, _ v2: inout UInt64, _ v3: inout UInt64) {
        v0 &+= v1; v1 = v1.rotl(13); v1 ^= v0; v0 = v0.rotl(32)
        v2 &+= v3; v3 = v3.rotl(16); v3 ^= v2
        v0 &+= v3; v3 = v3.rotl(21); v3 ^= v0
        v2 &+= v1; v1 = v1.rotl(17); v1 ^= v2; v2 = v2.rotl(32)
    }

    /// The hash of `words` as 8·count little-endian message bytes.
    func hash(_ a: UInt64, _ b: UInt64, _ c: UInt64 = 0) -> UInt64 { hash(words: (a, b, c), count: 3) }

    func hash(words: (UInt64, UInt64, UInt64), count: Int) -> UInt64 {
        var v0 = k0 ^ 0x736f_6d65_7073_6575, v1 = k1 ^ 0x646f_7261_6e64_6f6d
        var v2 = k0 ^ 0x6c79_6765_6e65_7261, v3 = k1 ^ 0x7465_6462_7974_6573
        func block(_ m: UInt64) {
            v3 ^= m
            SipHash.round(&v0, &v1, &v2, &v3); SipHash.round(&v0, &v1, &v2, &v3)
            v0 ^= m
        }
        if count > 0 { block(words.0) }
        if count > 1 { block(words.1) }
        if count > 2 { block(words.2) }
        block(UInt64(truncatingIfNeeded: count * 8) << 56)
        v2 ^= 0xFF
        for _ in 0..<4 { SipHash.round(&v0, &v1, &v2, &v3) }
        return v0 ^ v1 ^ v2 ^ v3
    }
}

extension UInt64 {
    @inline(__always) func rotl(_ n: UInt64) -> UInt64 { (self << n) | (self >> (64 - n)) }
}
