@testable import AnygateStack
import AnygateWire
import Testing

/// The longest-prefix-match trie with 128-bit keys (IPv6), driven the way
/// the FIB drives it: an added prefix is inserted, a removed one hands its
/// slots to its longest remaining cover. Checked against a linear scan.
@Suite("LPM with IPv6 keys")
struct LPM6Tests {
    struct Prefix: Hashable {
        var address: IPv6Address
        var length: Int

        init(_ a: IPv6Address, _ length: Int) {
            self.length = length
            address = Prefix.mask(a, length)
        }

        static func mask(_ a: IPv6Address, _ length: Int) -> IPv6Address {
            let hi: UInt64 = length >= 64 ? ~0 : length == 0 ? 0 : ~0 << UInt64(64 - length)
            let lo: UInt64 = length >= 128 ? ~0 : length <= 64 ? 0 : ~0 << UInt64(128 - length)
            return IPv6Address(high: a.high & hi, low: a.low & lo)
        }

        func contains(_ a: IPv6Address) -> Bool { Prefix.mask(a, length) == address }
    }

    @Test("random prefixes of every length, added and removed: every lookup finds the longest match")
    func againstLinearScan() {
        var t = LPMTable<IPv6Address>()
        defer { t.deallocate() }
        var rng = SplitMix64(seed: 6)
        var reference: [Prefix: UInt32] = [:]
        var nextValue: UInt32 = 1
        // Prefixes share a few /16s and /32s so that they nest.
        let bases = (0..<6).map { _ in IPv6Address(high: 0x2001_0DB8_0000_0000 | (rng.next() & 0x0000_0000_FFFF_0000), low: rng.next()) }
        func randomAddress() -> IPv6Address {
            let b = bases[Int(rng.next() % UInt64(bases.count))]
            let keep = Int(rng.next() % 129)
            let noise = IPv6Address(high: rng.next(), low: rng.next())
            let m = Prefix.mask(IPv6Address(high: ~0, low: ~0), keep)
            return IPv6Address(high: b.high & m.high | noise.high & ~m.high, low: b.low & m.low | noise.low & ~m.low)
        }
        func cover(of p: Prefix) -> (value: UInt32, length: Int)? {
            reference.filter { $0.key.length < p.length && $0.key.contains(p.address) }.max { $0.key.length < $1.key.length }
                .map { ($0.value, $0.key.length) }
        }
        func check() {
            for _ in 0..<2000 {
                let a = rng.next() & 1 == 0 ? randomAddress() : (reference.keys.randomElement(using: &rng).map {
                    IPv6Address(high: $0.address.high | rng.next() & ~Prefix.mask(IPv6Address(high: ~0, low: ~0), $0.length).high,
                                low: $0.address.low | rng.next() & ~Prefix.mask(IPv6Address(high: ~0, low: ~0), $0.length).low)
                } ?? randomAddress())
                let best = reference.filter { $0.key.contains(a) }.max { $0.key.length < $1.key.length }
                #expect(t.lookup(a) == (best?.value ?? 0), "lookup \(a)")
            }
        }
        for round in 0..<5 {
            for _ in 0..<300 {
                let lengths = [0, 3, 16, 17, 24, 29, 32, 33, 40, 47, 48, 56, 63, 64, 65, 96, 127, 128]
                let len = rng.next() % 3 == 0 ? Int(rng.next() % 129) : lengths[Int(rng.next() % UInt64(lengths.count))]
                let p = Prefix(randomAddress(), len)
                guard reference[p] == nil else { continue }
                reference[p] = nextValue
                t.insert(p.address, length: len, value: nextValue)
                nextValue += 1
            }
            check()
            for p in Array(reference.keys).shuffled(using: &rng).prefix(100 + round * 10) {
                reference[p] = nil
                let c = cover(of: p)
                t.replace(p.address, length: p.length, with: c?.value ?? 0, newDepth: c?.length ?? 0)
            }
            check()
            t.checkInvariants()
        }
        #expect(t.nodesInUse > 100, "the IPv6 keys went deep: \(t.nodesInUse) nodes")
    }

    @Test("a /128 and a /0 in the same table; the descent ends at the last level")
    func extremes() {
        var t = LPMTable<IPv6Address>()
        defer { t.deallocate() }
        let host = IPv6Address("2001:db8::1")!
        t.insert(.any, length: 0, value: 7)
        t.insert(host, length: 128, value: 9)
        #expect(t.lookup(host) == 9)
        #expect(t.lookup(IPv6Address("2001:db8::2")!) == 7)
        #expect(t.lookup(IPv6Address("ffff::")!) == 7)
        #expect(t.nodesInUse == 14, "one node per level below the first: \(t.nodesInUse)")
        t.checkInvariants()
    }
}
