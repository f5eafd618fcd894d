import AnygateStack
import AnygateWire
import Testing

@Suite("ICMP errors from routers", .ledgerAudited)
struct ICMPErrorTests {
    func errors(_ s: Stack) -> [ICMPErrorReport] {
        s.drainEvents().compactMap { if case .icmpError(let r) = $0 { return r }; return nil }
    }

    @Test("TTL expiry at R2 yields time exceeded to A from R2's address")
    func ttlExpiry() throws {
        let t = try Topology()
        // TTL 2: R1 forwards with TTL 1, R2 must not forward it.
        try t.a.ping(Topology.bAddr, identifier: 9, sequence: 33, ttl: 2)
        t.net.run()
        let e = errors(t.a)
        #expect(e.count == 1)
        let r = try #require(e.first)
        #expect(r.type == .timeExceeded && r.code == ICMPv4TimeExceededCode.ttl)
        #expect(t.r2.isLocal(r.from), "time exceeded must come from an R2 address, came from \(r.from)")
        #expect(r.from == Topology.r2WanAddr)
        #expect(r.originalDestination == Topology.bAddr)
        #expect(r.originalEcho == .init(identifier: 9, sequence: 33))
        #expect(t.r2.drops(.ttlExpired) == 1)
        #expect(t.r1.counters.ipForwarded == 2)  // the request, then R2's error back to A
        #expect(t.b.counters.ipReceived == 0)
        #expect(t.net.pool.inUse == 0)
    }

    @Test("unknown destination yields net unreachable from R1")
    func netUnreachable() throws {
        let t = try Topology()
        try t.a.ping(IPv4Address(192, 0, 2, 1))
        t.net.run()
        let e = errors(t.a)
        #expect(e.count == 1)
        #expect(e.first?.type == .destinationUnreachable)
        #expect(e.first?.code == ICMPv4UnreachableCode.net)
        #expect(e.first?.from == Topology.r1LanAddr)
        #expect(t.r1.drops(.noRoute) == 1)
    }

    @Test("DF with a packet larger than the next link yields frag-needed carrying that MTU")
    func fragmentationNeeded() throws {
        let t = try Topology(linkMTU: 1000)
        try t.a.ping(Topology.bAddr, payloadSize: 1400, dontFragment: true)
        t.net.run()
        let e = errors(t.a)
        #expect(e.count == 1)
        #expect(e.first?.type == .destinationUnreachable)
        #expect(e.first?.code == ICMPv4UnreachableCode.fragmentationNeeded)
        #expect(e.first?.nextHopMTU == 1000)
        #expect(e.first?.from == Topology.r1LanAddr)
        #expect(t.r1.drops(.fragmentationNeeded) == 1)
        #expect(t.b.counters.ipReceived == 0)
    }

    @Test("a host refuses to originate a DF packet above its own MTU")
    func localTooBig() throws {
        let t = try Topology()
        #expect(throws: SendError.tooBig(mtu: 1500)) {
            try t.a.ping(Topology.bAddr, payloadSize: 2000, dontFragment: true)
        }
    }

    @Test("ICMP errors are rate limited by a token bucket")
    func rateLimit() throws {
        var cfg = StackConfiguration()
        cfg.icmp.errorsPerSecond = 10
        cfg.icmp.errorBurst = 5
        let t = try Topology(routerConfig: cfg)
        try t.warmUp()
        for seq in 0..<20 { try t.a.ping(IPv4Address(192, 0, 2, 1), sequence: UInt16(seq)) }
        t.net.run()
        #expect(errors(t.a).count == 5)
        #expect(t.r1.counters.icmpErrorsRateLimited == 15)
        #expect(t.r1.drops(.noRoute) == 20)
        // One second later the bucket has refilled to its depth.
        t.net.advance(by: .seconds(1))
        for seq in 0..<20 { try t.a.ping(IPv4Address(192, 0, 2, 1), sequence: UInt16(seq)) }
        t.net.run()
        #expect(errors(t.a).count == 5)
    }

    @Test("no ICMP error about an ICMP error, a broadcast, or a non-first fragment")
    func suppression() throws {
        let t = try Topology()
        let r1mac = t.r1.status(t.r1Lan).mac
        // An ICMP time-exceeded message with TTL 1, to be forwarded: must not produce an error.
        var te = [UInt8](repeating: 0, count: 8 + 28)
        te.withUnsafeMutableBytes { ICMPv4Repr.timeExceeded(code: 0).emit(into: $0) }
        t.net.inject(FrameBuilder.ipv4(to: r1mac, IPv4Repr(source: Topology.aAddr, destination: Topology.bAddr,
                                                            proto: .icmp, payloadLength: 0, ttl: 1), payload: te),
                     into: t.r1, on: t.r1Lan)
        // A non-first fragment with TTL 1.
        t.net.inject(FrameBuilder.ipv4(to: r1mac, IPv4Repr(source: Topology.aAddr, destination: Topology.bAddr,
                                                            proto: .udp, payloadLength: 0, ttl: 1, fragmentOffset: 8),
                                       payload: [UInt8](repeating: 1, count: 16)),
                     into: t.r1, on: t.r1Lan)
        // A unicast IP packet in a link-layer broadcast frame is neither forwarded nor answered.
        t.net.inject(FrameBuilder.ipv4(to: .broadcast, IPv4Repr(source: Topology.aAddr, destination: Topology.bAddr,
                                                                 proto: .udp, payloadLength: 0, ttl: 1),
                                       payload: [UInt8](repeating: 1, count: 16)),
                     into: t.r1, on: t.r1Lan)
        #expect(t.r1.drops(.ttlExpired) == 2)
        #expect(t.r1.drops(.linkBroadcastNotForwarded) == 1)
        #expect(t.r1.counters.icmpErrorsSent == 0)
        #expect(t.r1.counters.icmpErrorsSuppressed == 2)
        #expect(errors(t.a).isEmpty)
    }
}
