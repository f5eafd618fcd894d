import AnygateStack
import AnygateWire
import Testing

@Suite("Forwarding across A — R1 — R2 — B", .ledgerAudited)
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

    @Test("a stack answers a ping to its own address without touching a wire")
    func pingSelf() throws {
        let t = try Topology()
        let before = t.net.delivered
        try t.r1.ping(Topology.r1WanAddr, sequence: 5)
        t.net.run()
        #expect(t.r1.echoReplies().map(\.sequence) == [5])
        #expect(t.net.delivered == before)
    }

    @Test("routers answer pings to any of their addresses")
    func pingRouterAddresses() throws {
        let t = try Topology()
        for (seq, target) in [Topology.r1LanAddr, Topology.r1WanAddr, Topology.r2WanAddr, Topology.r2LanAddr].enumerated() {
            try t.a.ping(target, sequence: UInt16(seq))
        }
        t.net.run()
        let replies = t.a.echoReplies()
        #expect(replies.map(\.from) == [Topology.r1LanAddr, Topology.r1WanAddr, Topology.r2WanAddr, Topology.r2LanAddr])
    }

    @Test("an echo request with IP options is answered without them")
    func echoWithOptions() throws {
        let t = try Topology()
        try t.warmUp()
        var replyHeaderLength = 0
        t.net.observer = { from, _, f in
            if from.stack == 3, f.be16(12) == 0x0800 { replyHeaderLength = Int(f.be8(14) & 0x0F) * 4 }
        }
        let echo = FrameBuilder.echoRequest(identifier: 3, sequence: 9, payload: (0..<100).map { UInt8($0) })
        let frame = FrameBuilder.ipv4(to: t.b.status(t.bEth).mac,
                                      IPv4Repr(source: Topology.aAddr, destination: Topology.bAddr, proto: .icmp, payloadLength: 0),
                                      payload: echo, options: [0x94, 4, 0, 0, 1, 1, 1, 0])
        t.net.inject(frame, into: t.b, on: t.bEth)
        let replies = t.a.echoReplies()
        #expect(replies.map(\.sequence) == [9])
        #expect(replies.first?.length == 100)
        #expect(replyHeaderLength == 20)
    }
}
