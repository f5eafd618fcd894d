import AnygateStack
import AnygateWire
import Testing

/// Workers run replicas of one stack, each fed the flows the kernel's hash
/// gives it, and every configuration change is applied to all of them. The
/// replicas together must then forward exactly as one stack would: for
/// every packet, the replica that got it puts the same frames on the same
/// interfaces as the single stack, through route changes, ECMP sets and
/// ipflow's cache. Two replicas and three, against one, on random traffic.
@Suite("Replicas against one stack (differential)")
struct ReplicaDifferentialTests {
    /// A host that records what a stack sends, packet by packet.
    final class Recorder: Hypercalls {
        var pool: PacketPool!
        var time: Int64 = 1_000_000_000
        var rng = SplitMix64(seed: 77)
        var sent: [(interface: InterfaceIndex, frame: [UInt8])] = []
        func now() -> Timestamp { Timestamp(nanoseconds: time) }
        func random() -> UInt64 { rng.next() }
        func transmit(_ packets: UnsafeBufferPointer<PacketHandle>, interface: InterfaceIndex, stack: Stack) {
            for p in packets {
                sent.append((interface, Array(pool.bytes(p))))
                pool.free(p)
            }
        }
    }

    static let lanMAC = MACAddress(2, 0, 0, 0, 0, 1)
    static let gateways = [IPv4Address(172, 16, 1, 2), IPv4Address(172, 16, 2, 2)]

    /// A router: lan 10.1.0.1/24, wan1 172.16.1.1/24, wan2 172.16.2.1/24,
    /// both gateways resolved, a default route via the first, ipflow on.
    static func router(fib: FIBSharing = .own) throws -> (Stack, Recorder) {
        let host = Recorder()
        let pool = PacketPool(capacity: 1024, dataSize: 2048)
        host.pool = pool
        var c = StackConfiguration()
        c.ipflow.enabled = true
        c.ipflow.maxFlows = 1024
        // ICMP error budgets are per replica (each worker has its share);
        // the comparison lifts them so that no replica's bucket runs dry.
        c.icmp.errorsPerSecond = 1_000_000
        c.icmp.errorBurst = 1_000_000
        c.fib = fib
        let s = Stack(name: "R", configuration: c, pool: pool, hypercalls: host)
        let lan = try s.addInterface(name: "lan", mac: lanMAC)
        try s.addAddress(IPv4InterfaceAddress("10.1.0.1/24"), to: lan)
        for k in 0..<2 {
            let wan = try s.addInterface(name: "wan\(k + 1)", mac: MACAddress(2, 0, 0, 0, 1, UInt8(k + 1)))
            try s.addAddress(IPv4InterfaceAddress("172.16.\(k + 1).1/24"), to: wan)
            try s.setUp(wan, true)
            try s.learnNeighbor(gateways[k], on: wan, mac: MACAddress(2, 0, 0, 0, 2, UInt8(k + 1)))
        }
        try s.setUp(lan, true)
        for k in 2..<12 { try s.learnNeighbor(IPv4Address(10, 1, 0, UInt8(k)), on: lan, mac: MACAddress(2, 0, 0, 0, 3, UInt8(k))) }
        try s.addRoute(.any, via: gateways[0])
        return (s, host)
    }

    /// The frames for one packet, with what a stack numbers by itself (the
    /// IP identification and header checksum of packets it originates, such
    /// as ICMP errors) blanked out.
    static func normalized(_ sent: [(interface: InterfaceIndex, frame: [UInt8])]) -> [[UInt8]] {
        sent.map { s in
            var f = s.frame
            if f.count >= 34, f[12] == 0x08, f[13] == 0x00, f[26] == 172 || f[26] == 10, f[27] == 16 || f[27] == 1,
               f[29] == 1 {  // from one of the router's own addresses (x.x.x.1)
                f[18] = 0; f[19] = 0; f[24] = 0; f[25] = 0
            }
            return [UInt8(s.interface)] + f
        }
    }

    static let prefixes = ["198.51.100.0/24", "198.51.0.0/16", "203.0.113.0/25", "203.0.113.128/25", "192.0.2.0/24"]
        .map { try! IPv4Prefix($0) }

    @Test("random traffic and changes: each packet leaves the replica that got it as it leaves one stack",
          arguments: [(2, false), (3, false), (2, true), (3, true)])
    func differential(replicaCount: Int, sharedFIB: Bool) throws {
        let (single, singleHost) = try Self.router()
        // With a shared FIB, one more stack writes it (the daemon's own)
        // and the replicas read it: a change reaches them through it.
        let shared = sharedFIB ? SharedFIB(readers: replicaCount) : nil
        let writer = try shared.map { try Self.router(fib: .writer($0)) }
        let replicas = try (0..<replicaCount).map { k in try Self.router(fib: shared.map { .reader($0, index: k) } ?? .own) }
        var all: [(Stack, Recorder)] { [(single, singleHost)] + (writer.map { [$0] } ?? []) + replicas }
        var rng = SplitMix64(seed: UInt64(replicaCount) * 1000 + 5)
        // 24 destinations: inside the prefixes above and outside them all, so flows repeat (ipflow hits).
        var pick = SplitMix64(seed: 3)
        let destinations = (0..<24).map { i -> IPv4Address in
            if i % 4 == 0 { return IPv4Address(rawValue: 0x0808_0000 | UInt32(pick.next() & 0xFFFF)) }
            let p = Self.prefixes[i % Self.prefixes.count]
            return IPv4Address(rawValue: p.address.rawValue | (UInt32(truncatingIfNeeded: pick.next()) & ~p.mask))
        }
        var compared = 0, forwarded = 0, perReplica = [Int](repeating: 0, count: replicaCount)
        for step in 0..<6000 {
            let roll = rng.next() % 100
            if roll < 1 {
                // A change, applied to every stack: add or remove a route, or make a prefix an ECMP set.
                let p = Self.prefixes[Int(rng.next() % UInt64(Self.prefixes.count))]
                let gw = Self.gateways[Int(rng.next() % 2)]
                let remove = rng.next() % 3 == 0
                for (s, _) in all {
                    if remove { _ = s.removeRoutes(p, origin: .static) } else { try? s.addRoute(p, via: gw) }
                }
            } else if roll < 3, sharedFIB {
                // A replica's worker goes to sleep between batches (it
                // announces that it holds nothing from the shared FIB).
                replicas[Int(rng.next() % UInt64(replicaCount))].0.quiesce()
            } else if roll < 4 {
                let dt = Int64(rng.next() % 300) * 1_000_000
                for (s, h) in all {
                    h.time += dt
                    _ = s.runTimers(now: h.time)
                }
            } else {
                // A packet from a LAN host: UDP or TCP, to a prefix above or anywhere; some with TTL 1.
                let src = IPv4Address(10, 1, 0, UInt8(2 + rng.next() % 4))
                let dst = destinations[Int(rng.next() % UInt64(destinations.count))]
                let sport = UInt16(1024 + rng.next() % 2), dport = UInt16(rng.next() % 2 == 0 ? 53 : 443)
                let tcp = rng.next() % 2 == 0
                let ttl: UInt8 = rng.next() % 50 == 0 ? 1 : 64
                var l4 = [UInt8](repeating: 0, count: tcp ? 20 : 8)
                l4[0] = UInt8(sport >> 8); l4[1] = UInt8(sport & 0xFF); l4[2] = UInt8(dport >> 8); l4[3] = UInt8(dport & 0xFF)
                if tcp { l4[12] = 0x50; l4[13] = 0x10 } else { l4[5] = 8 + 24 }
                let frame = FrameBuilder.ipv4(to: Self.lanMAC, from: MACAddress(2, 0, 0, 0, 3, src.rawValue.lowByte),
                                              IPv4Repr(source: src, destination: dst, proto: tcp ? .tcp : .udp,
                                                       payloadLength: 0, ttl: ttl),
                                              payload: l4 + [UInt8](repeating: 0x5A, count: tcp ? 24 : 24))
                // The worker the kernel would pick: a hash of the flow (both directions alike).
                var h = SplitMix64(seed: UInt64(src.rawValue ^ dst.rawValue) &* 31 &+ UInt64(sport ^ dport) &+ (tcp ? 6 : 17))
                let k = Int(h.next() % UInt64(replicaCount))
                perReplica[k] += 1
                let replicaHost = replicas[k].1
                singleHost.sent.removeAll()
                replicaHost.sent.removeAll()
                for (s, _) in [(single, singleHost), replicas[k]] {
                    guard let b = s.pool.make(copying: frame) else { Issue.record("pool empty"); return }
                    s.receive(b, on: 0)
                }
                let a = Self.normalized(singleHost.sent), b = Self.normalized(replicaHost.sent)
                if a != b {
                    Issue.record("step \(step): replica \(k) sent \(b.count) frames, one stack \(a.count); they differ")
                    return
                }
                compared += 1
                forwarded += a.count
            }
        }
        #expect(compared > 5000 && forwarded > 5000)
        #expect(perReplica.allSatisfy { $0 > 5000 / replicaCount / 2 }, "every replica got a share: \(perReplica)")
        let hits = replicas.reduce(UInt64(0)) { $0 + $1.0.counters.flowHits }
        #expect(hits > 1000, "ipflow was exercised in the replicas (\(hits) hits; one stack \(single.counters.flowHits))")
        for (s, _) in all { #expect(s.ledger.balanced, "\(s.ledger.violations)") }
        // The replicas' counters add up to the single stack's.
        let sum = replicas.reduce(UInt64(0)) { $0 + $1.0.counters.ipForwarded }
        #expect(sum == single.counters.ipForwarded)
        if let writer {
            writer.0.checkInvariants()
            #expect(writer.0.routes == single.routes, "the shared FIB holds what one stack's does")
            #expect(replicas.allSatisfy { $0.0.routes.isEmpty }, "a reader keeps no table of its own")
        }
    }
}

private extension UInt32 {
    var lowByte: UInt8 { UInt8(truncatingIfNeeded: self) }
}
