import AnygateStack
import AnygateWire
import Testing

/// The fast path is a cache, never a second implementation: with the same
/// traffic and the same route changes, a router with ipflow and one without
/// must put byte-identical frames on the wire, in the same order.
@Suite("ipflow differential", .ledgerAudited)
struct FlowDifferentialTests {
    final class Capture { var frames: [[UInt8]] = [] }

    func world(ipflow: Bool, capture: Capture) throws -> (Topology, Stack, InterfaceIndex) {
        var cfg = StackConfiguration()
        cfg.ipflow.enabled = ipflow
        cfg.ipflow.maxFlows = 64  // small, so eviction happens too
        let t = try Topology(routerConfig: cfg)
        let (r3, alt) = try t.addSideRouter()
        try r3.addRoute(.any, via: IPv4Address(10, 13, 0, 1))
        try t.warmUp()
        t.net.observer = { from, _, f in if from.stack == 1 { capture.frames.append(Array(f)) } }
        return (t, r3, alt)
    }

    @Test("random traffic and random route changes: identical output with and without ipflow", arguments: [1, 2, 3])
    func differential(seed: UInt64) throws {
        let fastCapture = Capture(), slowCapture = Capture()
        let (fast, fastR3, fastAlt) = try world(ipflow: true, capture: fastCapture)
        let (slow, slowR3, slowAlt) = try world(ipflow: false, capture: slowCapture)
        var rng = SplitMix64(seed: seed)
        var destinations: [IPv4Address] = []
        for k in 0..<40 {
            let a: IPv4Address = k % 2 == 0 ? IPv4Address(10, 2, 0, UInt8(2 + k % 5)) : IPv4Address(10, 2, UInt8(k), 9)
            destinations.append(a)
        }
        let prefixes = ["10.2.0.0/24", "10.2.0.0/25", "10.2.0.4/30", "10.2.8.0/21", "0.0.0.0/0"].map { try! IPv4Prefix($0) }

        for step in 0..<3000 {
            let roll = rng.next() % 100
            if roll < 4 {
                // A route change, the same in both worlds.
                let p = prefixes[Int(rng.next() % UInt64(prefixes.count))]
                let viaAlt = rng.next() & 1 == 0
                for (t, alt) in [(fast, fastAlt), (slow, slowAlt)] {
                    if t.r1.routes.contains(where: { $0.prefix == p && $0.origin == .static }) {
                        try t.r1.deleteRoute(p)
                    } else {
                        try t.r1.addRoute(p, via: viaAlt ? IPv4Address(10, 13, 0, 2) : Topology.r2WanAddr,
                                          interface: viaAlt ? alt : t.r1Wan)
                    }
                }
            } else if roll < 5 {
                // An interface bounce.
                let down = rng.next() & 1 == 0
                for (t, alt) in [(fast, fastAlt), (slow, slowAlt)] { try t.r1.setUp(alt, !down) }
            } else if roll < 6 {
                // A neighbour changes its MAC and announces it.
                let mac = MACAddress(2, 0, 0, 0, 3, UInt8(truncatingIfNeeded: rng.next()) | 1)
                for (r3, _) in [(fastR3, 0), (slowR3, 0)] {
                    try r3.setMAC(0, mac)
                    try r3.setUp(0, false)
                    try r3.setUp(0, true)
                }
                fast.net.run(); slow.net.run()
            } else if roll < 7 {
                fast.net.advance(by: .milliseconds(700)); slow.net.advance(by: .milliseconds(700))
            } else {
                // A packet: mostly plain UDP; some with options, fragments, TTL 1, bad checksums, other TOS.
                let d = destinations[Int(rng.next() % UInt64(destinations.count))]
                let src = IPv4Address(10, 1, 0, UInt8(2 + rng.next() % 6))
                let kind = rng.next() % 20
                var frame = FlowTests.udp(fast, from: src, to: d, tos: kind == 1 ? 0x20 : 0, ttl: kind == 2 ? 1 : 64,
                                          options: kind == 3 ? [0x94, 4, 0, 0] : [], fragment: kind == 4 ? 0 : nil,
                                          size: 16 + Int(rng.next() % 64))
                if kind == 5 { frame[14 + 10] ^= 0x40 }
                fast.net.inject(frame, into: fast.r1, on: fast.r1Lan)
                slow.net.inject(frame, into: slow.r1, on: slow.r1Lan)
            }
            if step % 500 == 499 {
                #expect(fastCapture.frames.count == slowCapture.frames.count, "diverged by step \(step)")
            }
        }
        #expect(fast.r1.counters.flowHits > 500, "the fast path was exercised (\(fast.r1.counters.flowHits) hits)")
        #expect(fast.r1.counters.flowsInvalidated > 0)
        #expect(slow.r1.counters.flowHits == 0)
        #expect(fastCapture.frames.count == slowCapture.frames.count)
        let pairs = Array(zip(fastCapture.frames, slowCapture.frames))
        let firstDifference = pairs.firstIndex { $0.0 != $0.1 }
        #expect(firstDifference == nil, "frame \(firstDifference ?? -1) differs")
        #expect(fast.r1.dropCounts == slow.r1.dropCounts)
        fast.checkInvariants()
        slow.checkInvariants()
    }
}
