import AnygateStack
import AnygateWire
import Testing

@Suite("Forwarding across A — R1 — R2 — B")
struct ForwardingTests {
    @Test("ping A→B and B→A")
    func pingBothWays() throws {
        let t = try Topology()
        try t.a.ping(Topology.bAddr, identifier: 7, sequence: 1)
        t.net.run()
        let replies = t.a.echoReplies()
        #expect(replies.count == 1)
        #expect(replies.first?.from == Topology.bAddr)
        #expect(replies.first?.length == 56)

        try t.b.ping(Topology.aAddr, identifier: 8, sequence: 2)
        t.net.run()
        let back = t.b.echoReplies()
        #expect(back.count == 1 && back.first?.from == Topology.aAddr)
        // Request and reply each crossed both routers.
        #expect(t.r1.counters.ipForwarded == 4)
        #expect(t.r2.counters.ipForwarded == 4)
        #expect(t.r1.dropCounts == [:] && t.r2.dropCounts == [:])
        t.checkInvariants()
        #expect(t.net.pool.inUse == 0)
    }
}
