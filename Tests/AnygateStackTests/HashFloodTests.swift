@testable import AnygateStack
import AnygateWire
import Testing

/// Flow and neighbour tables hash with secrets drawn at start-up, so keys
/// a sender chose to share a bucket under a fixed hash spread out.
@Suite("Hash flooding: keyed table hashes", .ledgerAudited)
struct HashFloodTests {
    /// The flow bucket function before the tables were keyed (a fixed multiplier).
    static func unseededFlowBucket(destination: UInt32, source: UInt32, mask: Int) -> Int {
        let k = UInt64(destination) << 32 | UInt64(source)
        return Int(truncatingIfNeeded: (k &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    static func unseededNeighborBucket(address: UInt32, interface: UInt16, mask: Int) -> Int {
        let k = UInt64(address) | UInt64(interface) << 32
        return Int(truncatingIfNeeded: (k &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
    }

    func randomSeed() -> FlowSeed {
        FlowSeed(UInt64.random(in: .min ... .max), UInt64.random(in: .min ... .max), UInt64.random(in: .min ... .max))
    }

    @Test("500 flows crafted to share one bucket of the fixed hash spread over the keyed table's buckets")
    func flows() throws {
        let capacity = 1024, mask = 1023
        let destination: UInt32 = 0x0A02_0002
        var crafted: [UInt32] = []
        var source: UInt32 = 0x0A01_0000
        let target = Self.unseededFlowBucket(destination: destination, source: source, mask: mask)
        while crafted.count < 500 {
            if Self.unseededFlowBucket(destination: destination, source: source, mask: mask) == target { crafted.append(source) }
            source &+= 1
        }
        let table = FlowTable(capacity: capacity, seed: randomSeed())
        defer { table.deallocate() }
        for s in crafted {
            _ = table.install(FlowKey(destination: destination, source: s, ports: 0, tos: 0), egress: 0, egressGeneration: 0,
                              rewrite: 0, fibGeneration: 1, now: 0)
        }
        #expect(table.count == 500)
        #expect(table.longestChain <= 8, "longest chain \(table.longestChain) (the fixed hash: 500)")
        table.checkInvariants()
    }

    @Test("200 neighbours crafted to share one bucket of the fixed hash spread over the keyed table's buckets")
    func neighbours() throws {
        let mask = 511  // 256 entries, 512 buckets
        var crafted: [UInt32] = []
        var address: UInt32 = 0x0A00_0000
        let target = Self.unseededNeighborBucket(address: address, interface: 1, mask: mask)
        while crafted.count < 200 {
            if Self.unseededNeighborBucket(address: address, interface: 1, mask: mask) == target { crafted.append(address) }
            address &+= 1
        }
        let table = NeighborTable<UInt32>(capacity: 256, pendingPerEntry: 4, seed: randomSeed())
        defer { table.deallocate() }
        for a in crafted { _ = table.create(a, 1, now: 0) { _ in } }
        #expect(table.count == 200)
        #expect(table.longestChain <= 8, "longest chain \(table.longestChain) (the fixed hash: 200)")
        table.checkInvariants()
    }

    @Test("IPv6 neighbour keys: addresses differing only in the prefix, or only in the top of the interface identifier, still spread")
    func ipv6NeighborSpread() {
        // Many secrets: a multiply alone clusters these keys for about one
        // secret in two hundred.
        for _ in 0..<64 {
        for vary in [{ (k: UInt64) in IPv6Address(high: 0x2001_0DB8_0000_0000 | k << 16, low: 1) },
                     { (k: UInt64) in IPv6Address(high: 0xFE80_0000_0000_0000, low: k << 48 | 1) }] {
            let table = NeighborTable<IPv6Address>(capacity: 256, pendingPerEntry: 4, seed: randomSeed())
            defer { table.deallocate() }
            for k in 0..<200 { _ = table.create(vary(UInt64(k)), 1, now: 0) { _ in } }
            #expect(table.count == 200)
            #expect(table.find(vary(77), 1) != NeighborTable<IPv6Address>.none)
            #expect(table.longestChain <= 8, "longest chain \(table.longestChain)")
            table.checkInvariants()
        }
        }
    }

    @Test("two stacks draw different secrets")
    func perStack() throws {
        let net = MemoryNetwork()
        let a = net.addStack(name: "A"), b = net.addStack(name: "B")
        #expect(a.flows.seed.k0 != b.flows.seed.k0 && a.neighbors.seed.k1 == a.flows.seed.k1)
    }
}
