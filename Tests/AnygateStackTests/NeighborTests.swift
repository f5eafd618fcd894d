import AnygateStack
import AnygateWire
import Testing

@Suite("ARP and the neighbour table", .ledgerAudited)
struct NeighborTests {
    /// R1 with an extra interface whose link goes nowhere: next hops on it never answer.
    func deadEnd() throws -> (Topology, InterfaceIndex) {
        let t = try Topology()
        let dead = try t.r1.addInterface(name: "dead", mac: MACAddress(2, 0, 0, 0, 1, 3))
        try t.r1.addAddress(IPv4InterfaceAddress("10.50.0.1/24"), to: dead)
        try t.r1.setUp(dead, true)
        try t.r1.addRoute(IPv4Prefix("10.99.0.0/16"), via: IPv4Address(10, 50, 0, 9))
        try t.warmUp()
        return (t, dead)
    }

    @Test("the pending queue of an unresolved next hop overflows oldest-first and is counted")
    func queueOverflow() throws {
        let (t, _) = try deadEnd()
        for seq in 0..<10 { try t.a.ping(IPv4Address(10, 99, 0, 1), sequence: UInt16(seq)) }
        t.net.run()
        #expect(t.r1.drops(.arpQueueOverflow) == 2)
        let n = try #require(t.r1.neighborList.first { $0.address == IPv4Address(10, 50, 0, 9) })
        #expect(n.state == .incomplete && n.pending == 8)
        #expect(t.r1.counters.arpRequestsSent >= 1)
    }

    @Test("an unanswered next hop fails after the probes; waiting packets get host unreachable")
    func resolutionFailure() throws {
        let (t, dead) = try deadEnd()
        for seq in 0..<3 { try t.a.ping(IPv4Address(10, 99, 0, 1), sequence: UInt16(seq)) }
        t.net.run()
        let before = t.r1.counters.arpRequestsSent
        t.net.advance(by: .seconds(4))
        #expect(t.r1.counters.arpRequestsSent - before == 2)  // 3 probes in all
        #expect(t.r1.drops(.neighborUnresolved) == 3)
        #expect(t.r1.neighborList.contains { $0.address == IPv4Address(10, 50, 0, 9) } == false)
        let errs = t.a.drainEvents().compactMap { e -> ICMPErrorReport? in if case .icmpError(let r) = e { r } else { nil } }
        #expect(errs.count == 3)
        #expect(errs.allSatisfy { $0.code == ICMPv4UnreachableCode.host && $0.from == Topology.r1LanAddr })
        #expect(t.r1.drainEvents().contains(.neighborUnreachable(address: IPv4Address(10, 50, 0, 9), interface: dead, dropped: 3)))
        #expect(t.net.pool.inUse == 0)
        t.checkInvariants()
    }

    @Test("requests for our address are answered; entries age to stale and are re-probed by unicast")
    func agingAndReprobe() throws {
        let t = try Topology()
        try t.warmUp()
        let entry = try #require(t.r1.neighborList.first { $0.address == Topology.r2WanAddr })
        #expect(entry.state == .reachable)
        #expect(entry.mac == t.r2.status(t.r2Wan).mac)
        t.net.advance(by: .seconds(31))
        #expect(t.r1.neighborList.first { $0.address == Topology.r2WanAddr }?.state == .stale)
        // Using a stale entry still forwards, and sends one unicast request that R2 answers.
        var unicastARP = 0
        t.net.observer = { from, _, f in
            // ARP requests R1 sends to R2's MAC (not broadcast).
            if from.stack == 1, from.interface == t.r1Wan, f.be16(12) == 0x0806, f.be16(14 + 6) == 1,
               MACAddress(bytes: f, at: 0) == t.r2.status(t.r2Wan).mac { unicastARP += 1 }
        }
        try t.a.ping(Topology.bAddr, sequence: 2)
        t.net.run()
        #expect(t.a.echoReplies().count == 1)
        #expect(unicastARP == 1)
        #expect(t.r1.neighborList.first { $0.address == Topology.r2WanAddr }?.state == .reachable)
    }

    @Test("stale entries that nobody uses are removed")
    func staleRemoval() throws {
        let t = try Topology()
        try t.warmUp()
        #expect(t.r1.neighborList.count == 2)
        t.net.advance(by: .seconds(95))
        #expect(t.r1.neighborList.isEmpty)
        t.checkInvariants()
    }

    @Test("a full neighbour table evicts its least recently confirmed entry")
    func eviction() throws {
        var cfg = StackConfiguration.host
        cfg.arp.maxEntries = 4
        let (net, s, eth) = try singleStack(cfg, mac: MACAddress(2, 0, 0, 0, 0, 1), address: "10.0.0.1/24")
        // Six hosts ask for us; each request creates an entry for its sender.
        for h in 2...7 {
            var f = [UInt8](repeating: 0, count: 14 + 28)
            f.withUnsafeMutableBytes { b in
                EthernetRepr(destination: .broadcast, source: MACAddress(2, 0, 0, 0, 1, UInt8(h)), etherType: .arp).emit(into: b)
                ARPRepr(operation: .request, senderMAC: MACAddress(2, 0, 0, 0, 1, UInt8(h)),
                        senderIP: IPv4Address(10, 0, 0, UInt8(h)), targetMAC: .zero,
                        targetIP: IPv4Address(10, 0, 0, 1)).emit(into: b.tail(from: 14))
            }
            net.inject(f, into: s, on: eth)
        }
        let addresses = Set(s.neighborList.map(\.address))
        #expect(addresses == Set((4...7).map { IPv4Address(10, 0, 0, UInt8($0)) }))
        #expect(s.counters.neighborEvictions == 2)
        #expect(s.counters.arpRepliesSent == 6)
        s.checkInvariants()
    }

    @Test("a gratuitous ARP updates a cached MAC")
    func gratuitous() throws {
        let t = try Topology()
        try t.warmUp()
        let newMAC = MACAddress(2, 0, 0, 0, 2, 0x99)
        try t.r2.setMAC(t.r2Wan, newMAC)
        // Re-announce R2's address from its new MAC (as setUp does).
        try t.r2.setUp(t.r2Wan, false)
        try t.r2.setUp(t.r2Wan, true)
        t.net.run()
        #expect(t.r1.neighborList.first { $0.address == Topology.r2WanAddr }?.mac == newMAC)
        try t.a.ping(Topology.bAddr, sequence: 3)
        t.net.run()
        #expect(t.a.echoReplies().count == 1)
    }

    /// Replicas share what ARP teaches them (`arp.shareLearned`): a new
    /// entry, a changed MAC, an answered request; a plain refresh at most
    /// once per `shareInterval`; nothing without the setting, and nothing
    /// for what `learnNeighbor` was told (no echo between replicas).
    @Test("with arp.shareLearned, what ARP teaches is reported once, refreshes at most every interval")
    func sharedLearning() throws {
        var c = StackConfiguration()
        c.arp.shareLearned = true
        let t = try Topology(routerConfig: c)
        let learned = { (s: Stack) in s.drainEvents().compactMap { e -> IPv4Address? in
            if case let .neighborLearned(a, _, _) = e { a } else { nil } } }
        try t.a.ping(Topology.bAddr, identifier: 0xFFFF)
        t.net.run()
        let first = learned(t.r1)
        #expect(first.filter { $0 == Topology.r2WanAddr }.count == 1)
        #expect(learned(t.a).isEmpty, "hosts without the setting report nothing")
        // More traffic within the interval: R2's replies refresh, unreported.
        for seq in 0..<5 { try t.a.ping(Topology.bAddr, sequence: UInt16(seq)) }
        t.net.run()
        #expect(!learned(t.r1).contains(Topology.r2WanAddr))
        // Told from outside: no report (it came from another replica).
        try t.r1.learnNeighbor(IPv4Address(172, 16, 0, 77), on: t.r1Wan, mac: MACAddress(2, 0, 0, 0, 0, 77))
        #expect(!learned(t.r1).contains(IPv4Address(172, 16, 0, 77)))
        // After the interval (and R1's entry aged to stale), the re-probe's answer is reported again.
        t.net.advance(by: .seconds(31))
        try t.a.ping(Topology.bAddr, sequence: 9)
        t.net.run()
        t.net.advance(by: .seconds(1))
        #expect(learned(t.r1).contains(Topology.r2WanAddr))
    }
}
