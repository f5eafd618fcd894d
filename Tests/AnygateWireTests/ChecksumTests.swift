import AnygateWire
import Testing

@Suite("Internet checksum")
struct ChecksumTests {
    @Test("RFC 1071 section 3 example sums to 0xddf2")
    func rfc1071Example() {
        let bytes: [UInt8] = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]
        bytes.withUnsafeBytes { b in
            #expect(InternetChecksum.fold(InternetChecksum.sum(b)) == 0xDDF2)
            #expect(InternetChecksum.checksum(b) == ~UInt16(0xDDF2))
        }
    }

    @Test("odd lengths pad the last byte with zero")
    func oddLength() {
        let odd: [UInt8] = [0x12, 0x34, 0x56]
        let even: [UInt8] = [0x12, 0x34, 0x56, 0x00]
        let a = odd.withUnsafeBytes { InternetChecksum.checksum($0) }
        let b = even.withUnsafeBytes { InternetChecksum.checksum($0) }
        #expect(a == b)
        #expect(a == ~UInt16(0x1234 + 0x5600))
    }

    @Test("RFC 1624 section 4: 0xDD2F with 0x5555 -> 0x3285 gives 0x0000 (equation 3), not 0xFFFF")
    func rfc1624Example() {
        #expect(InternetChecksum.update(0xDD2F, old: UInt16(0x5555), new: UInt16(0x3285)) == 0x0000)
    }

    @Test("TTL decrement vectors", arguments: [
        (UInt16(0x526A), UInt16(0x536A)),
        (0xF637, 0xF737),
        (0xFFFE, 0x00FF),
        (0xFEFF, 0x0000),
    ])
    func ttlDecrement(before: UInt16, after: UInt16) {
        // TTL shares a word with the protocol; a decrement lowers the word by 0x0100.
        let word: UInt16 = 64 << 8 | 6
        #expect(InternetChecksum.update(before, old: word, new: word - 0x0100) == after)
    }

    @Test("incremental update agrees with a full recompute on random headers")
    func incrementalMatchesFull() {
        var seed: UInt64 = 1
        func next() -> UInt64 { seed = seed &* 6364136223846793005 &+ 1442695040888963407; return seed >> 16 }
        for _ in 0..<2000 {
            var h = [UInt8](repeating: 0, count: 20)
            h.withUnsafeMutableBytes { b in
                IPv4Repr(source: IPv4Address(rawValue: UInt32(truncatingIfNeeded: next())),
                         destination: IPv4Address(rawValue: UInt32(truncatingIfNeeded: next())),
                         proto: IPProtocol(rawValue: UInt8(truncatingIfNeeded: next())),
                         payloadLength: Int(next() % 1400), ttl: UInt8(2 + next() % 250),
                         tos: UInt8(truncatingIfNeeded: next()), identification: UInt16(truncatingIfNeeded: next()))
                    .emit(into: b)
                let ip = IPv4Packet(unchecked: b)
                ip.decrementTTL()
                #expect(InternetChecksum.verifies(ip.header), "incremental TTL update leaves a valid header")
                let incremental = ip.checksum
                ip.fillChecksum()
                // Equal, except that RFC 1624 may yield -0 where a recompute yields +0.
                #expect(incremental == ip.checksum || (incremental == 0 && ip.checksum == 0xFFFF) || (incremental == 0xFFFF && ip.checksum == 0))
                // A 32-bit field (an address rewrite) the same way.
                let old = ip.source.rawValue
                let new = UInt32(truncatingIfNeeded: next())
                let c = InternetChecksum.update(ip.checksum, old: old, new: new)
                ip.source = IPv4Address(rawValue: new)
                ip.checksum = c
                #expect(InternetChecksum.verifies(ip.header))
            }
        }
    }

    @Test("the unrolled 20-byte header check agrees with the general sum")
    func unrolledHeaderCheck() {
        var seed: UInt64 = 9
        for k in 0..<5000 {
            var h = [UInt8](repeating: 0, count: 20)
            for i in 0..<20 { seed = seed &* 6364136223846793005 &+ 1442695040888963407; h[i] = UInt8(truncatingIfNeeded: seed >> 40) }
            if k % 2 == 0 { h.withUnsafeMutableBytes { IPv4Packet(unchecked: $0).fillChecksum() } }
            h.withUnsafeMutableBytes { b in
                #expect(InternetChecksum.verifiesIPv4Header(b.baseAddress!) == InternetChecksum.verifies(b))
            }
        }
    }

    @Test("pseudo-header sums")
    func pseudoHeader() {
        let s = InternetChecksum.pseudoHeaderSum(source: IPv4Address(192, 0, 2, 1), destination: IPv4Address(198, 51, 100, 2),
                                                 protocol: .udp, length: 20)
        #expect(s == 0xC000 + 0x0201 + 0xC633 + 0x6402 + 17 + 20)
    }
}

@Suite("Internet checksum against a byte-wise reference")
struct ChecksumReferenceTests {
    static func reference(_ b: [UInt8]) -> UInt16 {
        var s: UInt32 = 0
        var i = 0
        while i < b.count {
            s += UInt32(b[i]) << 8 | (i + 1 < b.count ? UInt32(b[i + 1]) : 0)
            while s > 0xFFFF { s = (s & 0xFFFF) + (s >> 16) }
            i += 2
        }
        return UInt16(s)
    }

    @Test("every length 0–700 at every start offset 0–7, random and all-0xFF bytes")
    func lengthsAndOffsets() {
        var g = SystemRandomNumberGenerator()
        for fill in [false, true] {
            let buffer = (0..<720).map { _ in fill ? UInt8(0xFF) : UInt8.random(in: 0...255, using: &g) }
            for offset in 0..<8 {
                for length in 0...700 {
                    let slice = Array(buffer[offset..<(offset + length)])
                    let got = buffer.withUnsafeBytes { InternetChecksum.fold(InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + length)]))) }
                    #expect(got == Self.reference(slice) || (got == 0xFFFF && Self.reference(slice) == 0) || (got == 0 && Self.reference(slice) == 0xFFFF),
                            "offset \(offset) length \(length)")
                }
            }
        }
    }
}
