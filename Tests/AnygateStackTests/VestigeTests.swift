@_spi(Benchmarks) @testable import AnygateStack
import AnygateWire
import Testing

/// The vestige table on its own: pools per MSL class, FIFO expiry and
/// eviction, the cache-line hash (netbsd-mechanisms.md section 5.6).
@Suite struct VestigeTests {
    static func vestige(_ n: UInt32, lport: UInt16 = 80) -> Vestige<UInt32> {
        Vestige(localAddress: 0x0A00_0001, remoteAddress: 0x0A01_0000 + n, localPort: lport, remotePort: UInt16(1024 + n % 60000),
                rcvNxt: n, sndNxt: n, tsRecent: 0, expire: 0, window: 0, flags: 0)
    }

    static func find(_ t: Vestiges<UInt32>, _ v: Vestige<UInt32>) -> Int? {
        t.lookup(local: v.localAddress, remote: v.remoteAddress, localPort: v.localPort, remotePort: v.remotePort)
    }

    @Test func entryIs32BytesForIPv4() {
        #expect(MemoryLayout<Vestige<UInt32>>.stride == 32)
        #expect(MemoryLayout<Vestige<IPv6Address>>.stride <= 64)
    }

    @Test func sixteenEntriesGiveFivePerClassAndTheSixthEvictsTheOldest() {
        let t = Vestiges<UInt32>(capacity: 16, mslt: true, key0: 1, key1: 2)
        for c in [MSLClass.remote, .local, .loopback] { #expect(t.slots(of: c) == 5) }
        for n in 0..<5 { t.insert(Self.vestige(UInt32(n)), class: .remote, expire: 1000 + UInt32(n)) }
        // Another class's entries do not push the remote ones out.
        for n in 100..<105 { t.insert(Self.vestige(UInt32(n)), class: .local, expire: 50) }
        #expect(t.statistics.kills == 0)
        t.insert(Self.vestige(5), class: .remote, expire: 1005)
        #expect(t.statistics.kills == 1)
        #expect(Self.find(t, Self.vestige(0)) == nil, "the oldest remote vestige was evicted")
        for n in 1...5 { #expect(Self.find(t, Self.vestige(UInt32(n))) != nil) }
        for n in 100..<105 { #expect(Self.find(t, Self.vestige(UInt32(n))) != nil) }
        #expect(t.count == 10)
        #expect(t.checkInvariants())
    }

    @Test func mSLTOffIsOneClasslessPool() {
        let t = Vestiges<UInt32>(capacity: 16, mslt: false, key0: 1, key1: 2)
        #expect(t.slots(of: .classless) == 16)
        for n in 0..<17 { t.insert(Self.vestige(UInt32(n)), class: .loopback, expire: 10) }
        #expect(t.statistics.kills == 1)
        #expect(t.inUse(of: .classless) == 16)
    }

    @Test func entriesExpireInOrder() {
        let t = Vestiges<UInt32>(capacity: 64, mslt: true, key0: 3, key1: 4)
        for n in 0..<20 { t.insert(Self.vestige(UInt32(n)), class: .local, expire: 100 + 10 * UInt32(n)) }
        #expect(t.nextExpiry(now: 0) == 100)
        #expect(t.expire(now: 99) == 0)
        #expect(t.expire(now: 145) == 5)  // 100, 110, …, 140
        for n in 0..<5 { #expect(Self.find(t, Self.vestige(UInt32(n))) == nil) }
        for n in 5..<20 { #expect(Self.find(t, Self.vestige(UInt32(n))) != nil) }
        #expect(t.nextExpiry(now: 145) == 150)
        // A removed entry ahead of the queue does not hold expiry up.
        t.remove(try! #require(Self.find(t, Self.vestige(5))))
        #expect(t.nextExpiry(now: 145) == 160)
        #expect(t.expire(now: 1000) == 14)
        #expect(t.count == 0)
        #expect(t.nextExpiry(now: 1000) == nil)
        #expect(t.statistics.expired == 19 && t.statistics.deletes == 1)
        #expect(t.checkInvariants())
    }

    @Test func lookupHitsTheExactFourTupleAndMissesIfAnyFieldChanges() {
        let t = Vestiges<UInt32>(capacity: 1024, mslt: true, key0: 5, key1: 6)
        let v = Self.vestige(7, lport: 443)
        let i = t.insert(v, class: .remote, expire: 10)
        #expect(t.lookup(local: v.localAddress, remote: v.remoteAddress, localPort: 443, remotePort: v.remotePort) == i)
        #expect(t.lookup(local: v.localAddress ^ 1, remote: v.remoteAddress, localPort: 443, remotePort: v.remotePort) == nil)
        #expect(t.lookup(local: v.localAddress, remote: v.remoteAddress ^ 1, localPort: 443, remotePort: v.remotePort) == nil)
        #expect(t.lookup(local: v.localAddress, remote: v.remoteAddress, localPort: 444, remotePort: v.remotePort) == nil)
        #expect(t.lookup(local: v.localAddress, remote: v.remoteAddress, localPort: 443, remotePort: v.remotePort &+ 1) == nil)
        // Swapping the sides is another four-tuple.
        #expect(t.lookup(local: v.remoteAddress, remote: v.localAddress, localPort: v.remotePort, remotePort: 443) == nil)
        #expect(t.portCounts[443] == 1 && t.portCounts[80] == 0)
    }

    @Test func aCheckBitCollisionFallsBackToTheFullCompare() throws {
        // 16 entries: 4 lines and 27 check bits, so among 2^17 random
        // four-tuples two share line and check bits (a birthday search).
        let t = Vestiges<UInt32>(capacity: 16, mslt: false, key0: 0xDEAD, key1: 0xBEEF)
        var seen: [UInt64: UInt32] = [:]
        var pair: (UInt32, UInt32)? = nil
        let mask = UInt64(t.lineCount - 1) | (UInt64(UInt32.max >> t.indexBits) << (32 + UInt64(t.indexBits)))
        for n in UInt32(0)..<(1 << 20) {
            let v = Self.vestige(n)
            let h = t.hash(v.localAddress, v.remoteAddress, v.localPort, v.remotePort) & mask
            if let m = seen[h] {
                pair = (m, n)
                break
            }
            seen[h] = n
        }
        let (a, b) = try #require(pair)
        t.insert(Self.vestige(a), class: .classless, expire: 10)
        let losingBefore = t.statistics.losing
        #expect(Self.find(t, Self.vestige(b)) == nil, "same check bits, different four-tuple")
        #expect(t.statistics.losing == losingBefore + 1, "the entry was read and rejected")
        #expect(Self.find(t, Self.vestige(a)) != nil)
    }

    @Test func corruptSlotWordsAreRejected() {
        let t = Vestiges<UInt32>(capacity: 16, mslt: false, key0: 9, key1: 9)
        let v = Self.vestige(1)
        let i = t.insert(v, class: .classless, expire: 10)
        // Point every slot of every line at out-of-range indexes that carry the right check bits.
        let h = t.hash(v.localAddress, v.remoteAddress, v.localPort, v.remotePort)
        let check = UInt32(truncatingIfNeeded: h >> 32) >> t.indexBits
        let saved = (0..<(t.lineCount * 16)).map { t.lines[$0] }
        for l in 0..<t.lineCount {
            for s in 1..<16 where t.lines[l * 16 + s] == 0 {
                t.lines[l * 16 + s] = check << t.indexBits | (s % 2 == 0 ? 0 : UInt32((1 << t.indexBits) - 1))
            }
        }
        #expect(Self.find(t, v) == i)
        #expect(Self.find(t, Self.vestige(2)) == nil)
        for k in saved.indices { t.lines[k] = saved[k] }
        #expect(t.checkInvariants())
    }

    @Test func restartMovesTheEntryToTheHeadOfItsFIFO() {
        let t = Vestiges<UInt32>(capacity: 16, mslt: true, key0: 1, key1: 1)
        for n in 0..<3 { t.insert(Self.vestige(UInt32(n)), class: .remote, expire: 100 + UInt32(n)) }
        let i = try! #require(Self.find(t, Self.vestige(0)))
        t.restart(i, expire: 500)
        #expect(t.expire(now: 200) == 2)
        #expect(Self.find(t, Self.vestige(0)) != nil)
        #expect(t.checkInvariants())
    }

    @Test func aFullTableStaysConsistentUnderChurn() {
        let t = Vestiges<UInt32>(capacity: 3000, mslt: true, key0: 11, key1: 12)
        var g = SplitMix64(seed: 7)
        var clock: UInt32 = 1
        for n in 0..<40_000 {
            clock &+= UInt32(g.next() % 3)
            let c = [MSLClass.remote, .local, .loopback][Int(g.next() % 3)]
            t.insert(Self.vestige(UInt32(n)), class: c, expire: clock + 20_000)
            if n % 7 == 0, let i = Self.find(t, Self.vestige(UInt32(n / 2))) { t.remove(i) }
            if n % 100 == 0 { t.expire(now: clock) }
        }
        #expect(t.checkInvariants())
        #expect(t.count <= 3000)
        #expect(t.statistics.kills > 0)
    }
}
