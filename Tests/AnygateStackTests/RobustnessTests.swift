import AnygateStack
import AnygateWire
import Testing

@Suite("Bad input is counted, never fatal", .ledgerAudited)
struct RobustnessTests {
    func validIPv4Frame(_ t: Topology) -> [UInt8] {
        FrameBuilder.ipv4(to: t.r1.status(t.r1Lan).mac,
                          IPv4Repr(source: Topology.aAddr, destination: Topology.bAddr, proto: .udp, payloadLength: 0),
                          payload: [UInt8](repeating: 0, count: 12))
    }

    @Test("each malformed IPv4 header is dropped with its own reason, and forwarding goes on")
    func malformedIPv4() throws {
        let t = try Topology()
        try t.warmUp()
        let mac = t.r1.status(t.r1Lan).mac
        let good = validIPv4Frame(t)
        func mutated(_ body: (inout [UInt8]) -> Void) -> [UInt8] { var f = good; body(&f); return f }
        let cases: [(DropReason, [UInt8])] = [
            (.frameTruncated, Array(good[0..<10])),
            (.ipTruncated, Array(good[0..<(14 + 12)])),
            (.ipBadVersion, mutated { $0[14] = 0x65 }),
            (.ipBadHeaderLength, mutated { $0[14] = 0x44 }),
            (.ipBadHeaderLength, mutated { $0[14] = 0x4F }),
            (.ipBadTotalLength, mutated { $0[16] = 0x01; $0[17] = 0x00 }),   // 256 > buffer
            (.ipBadTotalLength, mutated { $0[16] = 0; $0[17] = 10 }),         // below the header
            (.ipBadChecksum, mutated { $0[14 + 10] ^= 0xFF }),
            (.martianSource, FrameBuilder.ipv4(to: mac, IPv4Repr(source: IPv4Address(127, 0, 0, 1), destination: Topology.bAddr,
                                                                 proto: .udp, payloadLength: 0), payload: [1, 2, 3, 4])),
            (.martianSource, FrameBuilder.ipv4(to: mac, IPv4Repr(source: .any, destination: Topology.bAddr,
                                                                 proto: .udp, payloadLength: 0), payload: [1, 2, 3, 4])),
            (.martianDestination, FrameBuilder.ipv4(to: mac, IPv4Repr(source: Topology.aAddr, destination: IPv4Address(127, 0, 0, 9),
                                                                      proto: .udp, payloadLength: 0), payload: [1, 2, 3, 4])),
            (.multicastNotSupported, FrameBuilder.ipv4(to: mac, IPv4Repr(source: Topology.aAddr, destination: IPv4Address(239, 1, 1, 1),
                                                                         proto: .udp, payloadLength: 0), payload: [1, 2, 3, 4])),
            (.notForUs, mutated { $0[0] = 0x02; $0[5] = 0x77 }),
            (.vlanNotConfigured, mutated { $0[12] = 0x81; $0[13] = 0x00 }),
            (.ipv6NotSupported, mutated { $0[12] = 0x86; $0[13] = 0xDD }),
            (.unknownEtherType, mutated { $0[12] = 0x12; $0[13] = 0x34 }),
            (.ipBadOption, FrameBuilder.ipv4(to: mac, IPv4Repr(source: Topology.aAddr, destination: Topology.bAddr, proto: .udp,
                                                               payloadLength: 0), payload: [0, 0], options: [0x07, 9, 4, 0])),
            (.arpMalformed, mutated { $0[12] = 0x08; $0[13] = 0x06 }),
        ]
        for (reason, frame) in cases {
            let before = t.r1.drops(reason)
            t.net.inject(frame, into: t.r1, on: t.r1Lan)
            #expect(t.r1.drops(reason) == before + 1, "expected a \(reason) drop")
        }
        #expect(t.net.pool.inUse == 0)
        try t.a.ping(Topology.bAddr, sequence: 99)
        t.net.run()
        #expect(t.a.echoReplies().count == 1)
        t.checkInvariants()
    }

    @Test("random bytes never trap, and every frame is accounted for")
    func fuzzFrames() throws {
        let t = try Topology()
        try t.warmUp()
        var rng = SplitMix64(seed: 7)
        let mac = t.r1.status(t.r1Lan).mac
        let good = validIPv4Frame(t)
        for n in 0..<5000 {
            var f: [UInt8]
            if n % 2 == 0 {
                f = (0..<Int(rng.next() % 200)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            } else {
                // A valid frame with a few bytes flipped: gets further into the parsers.
                f = good
                for _ in 0..<(1 + Int(rng.next() % 4)) {
                    f[14 + Int(rng.next() % UInt64(f.count - 14))] = UInt8(truncatingIfNeeded: rng.next())
                }
            }
            if f.count >= 6 { f.withUnsafeMutableBytes { mac.write(to: $0, at: 0) } }
            t.net.inject(f, into: t.r1, on: t.r1Lan)
        }
        t.net.advance(by: .seconds(40))
        #expect(t.net.pool.inUse == 0, "every buffer came back")
        try t.a.ping(Topology.bAddr, sequence: 100)
        t.net.run()
        #expect(t.a.echoReplies().count == 1)
        t.checkInvariants()
    }

    @Test("route del makes the next ping fail with net unreachable; route add restores it")
    func routeChange() throws {
        let t = try Topology()
        try t.warmUp()
        try t.r1.deleteRoute(IPv4Prefix("10.2.0.0/16"))
        try t.a.ping(Topology.bAddr, sequence: 1)
        t.net.run()
        let events = t.a.drainEvents()
        #expect(events.count == 1)
        if case .icmpError(let r) = events.first {
            #expect(r.type == .destinationUnreachable && r.code == ICMPv4UnreachableCode.net)
        } else {
            Issue.record("expected net unreachable, got \(events)")
        }
        try t.r1.addRoute(IPv4Prefix("10.2.0.0/16"), via: Topology.r2WanAddr)
        try t.a.ping(Topology.bAddr, sequence: 2)
        t.net.run()
        #expect(t.a.echoReplies().map(\.sequence) == [2])
    }

    @Test("an interface going down withdraws its routes: net unreachable until it returns")
    func interfaceDown() throws {
        let t = try Topology()
        try t.warmUp()
        try t.r1.setUp(t.r1Wan, false)
        #expect(t.r1.lookup(Topology.bAddr) == nil)
        try t.a.ping(Topology.bAddr)
        t.net.run()
        #expect(t.r1.drops(.noRoute) == 1)
        let e = t.a.drainEvents()
        if case .icmpError(let r) = e.first { #expect(r.code == ICMPv4UnreachableCode.net) } else { Issue.record("\(e)") }
        try t.r1.setUp(t.r1Wan, true)
        try t.a.ping(Topology.bAddr, sequence: 2)
        t.net.run()
        #expect(t.a.echoReplies().count == 1)
    }

    @Test("pool exhaustion is counted and the stack recovers")
    func poolExhaustion() throws {
        let t = try Topology(poolCapacity: 64)
        try t.warmUp()
        var held: [PacketHandle] = []
        while let p = t.net.pool.allocate() { held.append(p) }
        #expect(throws: SendError.poolExhausted) { try t.a.ping(Topology.bAddr) }
        #expect(t.net.pool.exhaustedCount >= 1)
        for p in held { t.net.pool.free(p) }
        try t.a.ping(Topology.bAddr, sequence: 2)
        t.net.run()
        #expect(t.a.echoReplies().count == 1)
        t.net.pool.checkInvariants()
    }

    @Test("a full transmit queue is handed to the host at once and refilled: a large batch loses nothing")
    func transmitQueueFull() throws {
        var cfg = StackConfiguration()
        cfg.transmitQueueCapacity = 4
        let t = try Topology(routerConfig: cfg)
        try t.warmUp()
        let frame = validIPv4Frame(t)
        var batch: [PacketHandle] = []
        var onWan = 0
        let wan = t.r1Wan
        t.net.observer = { from, _, _ in if from.stack == 1 && from.interface == wan { onWan += 1 } }
        for _ in 0..<10 { batch.append(t.net.pool.make(copying: frame)!) }
        batch.withUnsafeBufferPointer { t.r1.receive($0, on: t.r1Lan) }
        #expect(onWan == 10, "4 + 4 handed over while the batch ran, 2 at its flush")
        #expect(t.r1.totalDrops == 0 && t.r1.status(t.r1Wan).counters.txPackets >= 10)
        t.net.run()
        #expect(t.net.pool.inUse == 0)
    }
}

@Suite("Drop reasons", .ledgerAudited)
struct DropReasonTests {
    @Test("every reason has its own counter slot and a distinct name")
    func countersAreABijection() {
        let indices = DropReason.allCases.map(\.counterIndex)
        #expect(Set(indices) == Set(0..<DropReason.counterCount))
        #expect(indices.count == DropReason.counterCount)
        #expect(Set(DropReason.allCases.map(\.description)).count == DropReason.allCases.count)
    }

    @Test("an echo request to a broadcast address is dropped with its reason, not answered")
    func broadcastEcho() throws {
        let t = try Topology()
        try t.warmUp()
        var sources: [IPv4Address] = []
        t.net.observer = { from, _, f in
            if from.stack == 0, f.be16(12) == 0x0800 { sources.append(IPv4Address(rawValue: f.be32(14 + 12))) }
        }
        try t.a.ping(IPv4Address(10, 1, 0, 255))
        t.net.run()
        #expect(sources == [Topology.aAddr], "sent once, from A's own address, as a link broadcast")
        #expect(t.r1.drops(.broadcastEchoIgnored) == 1)
        #expect(t.a.echoReplies().isEmpty)
        #expect(t.net.pool.inUse == 0)
    }
}
