@testable import AnygateStack
import AnygateWire
import Testing

/// The packet ledger (`PacketLedger`): its terms move as packets do, and a
/// packet freed without a reason breaks it.
@Suite("Packet ledger", .ledgerAudited)
struct LedgerTests {
    /// A UDP frame A → B into R1's lan of any size (checksum 0: none).
    static func udp(_ t: Topology, size: Int) -> [UInt8] {
        let length = 8 + size
        let header: [UInt8] = [0x13, 0x88, 0x13, 0x89, UInt8(length >> 8), UInt8(length & 0xFF), 0, 0]
        return FrameBuilder.ipv4(to: t.r1.status(t.r1Lan).mac, from: t.a.status(t.aEth).mac,
                                 IPv4Repr(source: Topology.aAddr, destination: Topology.bAddr, proto: .udp, payloadLength: 0),
                                 payload: header + [UInt8](repeating: 0x5A, count: size))
    }

    @Test("each term moves with the packets: forwarded, consumed and originated, fragmented, held for a neighbour")
    func terms() throws {
        let t = try Topology(linkMTU: 1000)
        try t.warmUp()
        let before = t.r1.ledger
        // One datagram forwarded whole, one forwarded as two fragments.
        t.net.inject(FlowTests.udp(t), into: t.r1, on: t.r1Lan)
        t.net.inject(Self.udp(t, size: 1200), into: t.r1, on: t.r1Lan)
        // B has no socket on the port: both come back as port unreachable, forwarded by R1 too.
        var l = t.r1.ledger
        #expect(l.received - before.received == 4)
        #expect(l.forwarded - before.forwarded == 4)
        #expect(l.fragmented - before.fragmented == 1 && l.fragmentsCreated - before.fragmentsCreated == 2)
        #expect(l.sent - before.sent == 5)
        #expect(l.balanced, "\(l.violations)")
        // B reassembled them: two fragments in, one datagram out, consumed (port unreachable is a drop).
        let b = t.b.ledger
        #expect(b.fragmentsReassembled == 2 && b.reassembled == 1)
        #expect(b.balanced, "\(b.violations)")
        // A ping to R1: the request is consumed and the reply originated.
        let r1Before = t.r1.ledger
        try t.a.ping(Topology.r1LanAddr)
        t.net.run()
        l = t.r1.ledger
        #expect(l.consumed - r1Before.consumed == 1 && l.originated - r1Before.originated == 1)
        // A packet for a next hop nobody answers waits on the neighbour, then is dropped.
        try t.r1.addRoute(IPv4Prefix("10.9.0.0/16"), via: IPv4Address(10, 12, 0, 3))
        t.net.inject(FlowTests.udp(t, to: IPv4Address(10, 9, 0, 1)), into: t.r1, on: t.r1Lan)
        #expect(t.r1.ledger.heldForNeighbor == 1)
        #expect(t.r1.ledger.balanced, "\(t.r1.ledger.violations)")
        t.net.advance(by: .seconds(5))
        #expect(t.r1.ledger.heldForNeighbor == 0 && t.r1.drops(.neighborUnresolved) == 1)
        for s in t.stacks { #expect(s.ledger.balanced, "\(s.name): \(s.ledger.violations)") }
    }

    @Test("through a GRE tunnel: sent into the tunnel, the encapsulation originated; the outer consumed, the inner received on gre0")
    func tunnel() throws {
        let s = try TwoSites()
        try s.a.ping(IPv4Address(10, 2, 0, 2))
        s.net.run()
        let l1 = s.gw1.ledger, l2 = s.gw2.ledger
        let gre1 = s.gw1.status(s.gw1Tunnel).counters, gre2 = s.gw2.status(s.gw2Tunnel).counters
        #expect(gre1.txPackets == 1 && gre1.rxPackets == 1)
        #expect(gre2.rxPackets == 1 && gre2.txPackets == 1)
        #expect(l1.balanced && l2.balanced, "\(l1.violations) \(l2.violations)")
        // Each gateway: the request and the reply each received twice (lan or wan, then gre0 for the inner).
        #expect(l1.received >= 3 && l1.consumed >= 1)
    }

    @Test("a drop made without a reason breaks the ledger, and the audit names the stack and the side")
    func unreasonedDrop() throws {
        func run(silently: Bool) throws -> [String] {
            let audit = MemoryNetwork.Audit()
            try MemoryNetwork.$audit.withValue(audit) {
                let t = try Topology()
                try t.warmUp()
                if silently { t.r1.dropWithoutCounting(.ipBadChecksum) }
                var bad = FlowTests.udp(t)
                bad[14 + 10] ^= 0x40
                t.net.inject(bad, into: t.r1, on: t.r1Lan)
                #expect(t.r1.drops(.ipBadChecksum) == (silently ? 0 : 1))
            }
            return audit.violations()
        }
        #expect(try run(silently: false) == [])
        let v = try run(silently: true)
        #expect(v.count == 1)
        #expect(v.first?.hasPrefix("R1: input:") == true && v.first?.hasSuffix("(off by 1)") == true, "\(v)")
    }

    @Test("a buffer leaked by a stack shows as the pool disagreeing with what the stacks hold")
    func leak() throws {
        let audit = MemoryNetwork.Audit()
        try MemoryNetwork.$audit.withValue(audit) {
            let t = try Topology()
            try t.warmUp()
            _ = t.net.pool.allocate()  // taken and never returned
        }
        #expect(audit.violations().contains { $0.hasPrefix("pool:") })
    }
}
