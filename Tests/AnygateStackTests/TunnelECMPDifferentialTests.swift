import AnygateStack
import AnygateWire
import Testing

/// The differential test again, on a topology with a GRE tunnel between R1
/// and R2 and ECMP routes (over the wan link, the side router R3 and the
/// tunnel): traffic crosses the tunnel both ways, so flows are installed
/// towards a tunnel (encapsulation) and from one (decapsulated packets),
/// and flows keyed by ports pick ECMP members. With and without ipflow the
/// wire must carry byte-identical frames in the same order.
///
///     A ── R1 ══gre0 (172.16.0.1 ⇄ .2, over 10.12.0.0/30)══ R2 ── B
///          └── R3 (10.13.0.2)
@Suite("ipflow differential: tunnels and ECMP", .ledgerAudited)
struct TunnelECMPDifferentialTests {
    final class Capture { var frames: [[UInt8]] = [] }

    struct World {
        let t: Topology
        let r3: Stack
        let alt: InterfaceIndex
        let r1Tunnel: InterfaceIndex, r2Tunnel: InterfaceIndex
    }

    static let tunnelPeer1 = IPv4Address(172, 16, 0, 1), tunnelPeer2 = IPv4Address(172, 16, 0, 2)

    func world(ipflow: Bool, capture: Capture) throws -> World {
        var cfg = StackConfiguration()
        cfg.ipflow.enabled = ipflow
        cfg.ipflow.maxFlows = 128  // small, so eviction happens too
        let t = try Topology(routerConfig: cfg)
        let (r3, alt) = try t.addSideRouter()
        try r3.addRoute(.any, via: IPv4Address(10, 13, 0, 1))
        var c1 = TunnelConfiguration(name: "gre0", local: Topology.r1WanAddr, remote: Topology.r2WanAddr)
        c1.key = 5
        c1.rpf = .loose
        var c2 = TunnelConfiguration(name: "gre0", local: Topology.r2WanAddr, remote: Topology.r1WanAddr)
        c2.key = 5
        c2.rpf = .loose
        let r1Tunnel = try t.r1.addTunnel(c1), r2Tunnel = try t.r2.addTunnel(c2)
        try t.r1.addAddress(IPv4InterfaceAddress("172.16.0.1/30"), to: r1Tunnel)
        try t.r2.addAddress(IPv4InterfaceAddress("172.16.0.2/30"), to: r2Tunnel)
        try t.warmUp()
        t.net.observer = { from, _, f in if from.stack == 1 || from.stack == 2 { capture.frames.append(Array(f)) } }
        return World(t: t, r3: r3, alt: alt, r1Tunnel: r1Tunnel, r2Tunnel: r2Tunnel)
    }

    /// A UDP frame with the given addresses and ports, from `fromMAC` to `toMAC`.
    static func udp(to toMAC: MACAddress, from fromMAC: MACAddress, _ src: IPv4Address, _ dst: IPv4Address,
                    sport: UInt16, dport: UInt16, tos: UInt8 = 0, ttl: UInt8 = 64, fragment: Bool = false, size: Int = 24) -> [UInt8] {
        let payload = [UInt8(sport >> 8), UInt8(sport & 0xFF), UInt8(dport >> 8), UInt8(dport & 0xFF), 0, UInt8(size), 0, 0]
            + [UInt8](repeating: 0x5A, count: size - 8)
        return FrameBuilder.ipv4(to: toMAC, from: fromMAC,
                                 IPv4Repr(source: src, destination: dst, proto: .udp, payloadLength: 0, ttl: ttl, tos: tos,
                                          moreFragments: fragment, fragmentOffset: 0),
                                 payload: payload)
    }

    /// One of the ways R1 can reach 10.2.0.0/24 (and R2 reach 10.1.0.0/24).
    enum Path: CaseIterable { case wan, tunnel, ecmpWanTunnel, ecmpWanSide, ecmpAll }

    func setPath(_ w: World, _ path: Path) throws {
        let site2 = try IPv4Prefix("10.2.0.0/24"), site1 = try IPv4Prefix("10.1.0.0/24")
        for r in w.t.r1.routes(for: site2) where r.origin == .static { try w.t.r1.deleteRoute(site2, via: r.nextHop) }
        for r in w.t.r2.routes(for: site1) where r.origin == .static { try w.t.r2.deleteRoute(site1, via: r.nextHop) }
        switch path {
        case .wan:
            try w.t.r1.addRoute(site2, via: Topology.r2WanAddr)
        case .tunnel:
            try w.t.r1.addRoute(site2, via: Self.tunnelPeer2)
            try w.t.r2.addRoute(site1, via: Self.tunnelPeer1)
        case .ecmpWanTunnel:
            try w.t.r1.addRoute(site2, via: Topology.r2WanAddr)
            try w.t.r1.addRoute(site2, via: Self.tunnelPeer2)
            try w.t.r2.addRoute(site1, via: Self.tunnelPeer1)
            try w.t.r2.addRoute(site1, via: Topology.r1WanAddr)
        case .ecmpWanSide:
            try w.t.r1.addRoute(site2, via: Topology.r2WanAddr)
            try w.t.r1.addRoute(site2, via: IPv4Address(10, 13, 0, 2), weight: 2)
        case .ecmpAll:
            try w.t.r1.addRoute(site2, via: Topology.r2WanAddr)
            try w.t.r1.addRoute(site2, via: IPv4Address(10, 13, 0, 2))
            try w.t.r1.addRoute(site2, via: Self.tunnelPeer2)
            try w.t.r2.addRoute(site1, via: Self.tunnelPeer1)
        }
    }

    @Test("random traffic both ways through a tunnel and over ECMP sets, random route and link changes: identical output",
          arguments: [11, 12, 13])
    func differential(seed: UInt64) throws {
        let fastCapture = Capture(), slowCapture = Capture()
        let fast = try world(ipflow: true, capture: fastCapture)
        let slow = try world(ipflow: false, capture: slowCapture)
        var rng = SplitMix64(seed: seed)
        for w in [fast, slow] { try setPath(w, .tunnel) }

        for step in 0..<4000 {
            let roll = rng.next() % 100
            if roll < 1 {
                let path = Path.allCases[Int(rng.next() % UInt64(Path.allCases.count))]
                for w in [fast, slow] { try setPath(w, path) }
            } else if roll < 2 {
                let down = rng.next() & 1 == 0
                for w in [fast, slow] { try w.t.r1.setUp(w.alt, !down) }
            } else if roll < 3 {
                fast.t.net.advance(by: .milliseconds(700)); slow.t.net.advance(by: .milliseconds(700))
            } else {
                // A UDP packet from site 1 to B, or from B to site 1; random ports, sometimes odd.
                let towardsB = rng.next() & 1 == 0
                let kind = rng.next() % 20
                let sport = UInt16(1000 + rng.next() % 8), dport = UInt16(2000 + rng.next() % 2)
                let local = IPv4Address(10, 1, 0, UInt8(2 + rng.next() % 4))
                for w in [fast, slow] {
                    let frame: [UInt8]
                    if towardsB {
                        frame = Self.udp(to: w.t.r1.status(w.t.r1Lan).mac, from: w.t.a.status(w.t.aEth).mac, local, Topology.bAddr,
                                         sport: sport, dport: dport, tos: kind == 1 ? 0x02 : 0, ttl: kind == 2 ? 1 : 64,
                                         fragment: kind == 3)
                        w.t.net.inject(frame, into: w.t.r1, on: w.t.r1Lan)
                    } else {
                        frame = Self.udp(to: w.t.r2.status(w.t.r2Lan).mac, from: w.t.b.status(w.t.bEth).mac, Topology.bAddr, local,
                                         sport: dport, dport: sport, ttl: kind == 2 ? 1 : 64)
                        w.t.net.inject(frame, into: w.t.r2, on: w.t.r2Lan)
                    }
                }
            }
            if step % 500 == 499 {
                #expect(fastCapture.frames.count == slowCapture.frames.count, "diverged by step \(step)")
            }
        }
        // The fast path served the tunnel both ways: R1 encapsulating, R2
        // forwarding what it decapsulated (and the reverse).
        #expect(fast.t.r1.counters.flowHits > 300 && fast.t.r2.counters.flowHits > 300,
                "R1 \(fast.t.r1.counters.flowHits), R2 \(fast.t.r2.counters.flowHits) hits")
        #expect(fast.t.r1.status(fast.r1Tunnel).counters.txPackets > 200 && fast.t.r2.status(fast.r2Tunnel).counters.rxPackets > 200)
        #expect(slow.t.r1.counters.flowHits == 0)
        #expect(fastCapture.frames.count == slowCapture.frames.count)
        let pairs = Array(zip(fastCapture.frames, slowCapture.frames))
        let firstDifference = pairs.firstIndex { $0.0 != $0.1 }
        #expect(firstDifference == nil, "frame \(firstDifference ?? -1) differs")
        #expect(fast.t.r1.dropCounts == slow.t.r1.dropCounts)
        #expect(fast.t.r2.dropCounts == slow.t.r2.dropCounts)
        fast.t.checkInvariants()
        slow.t.checkInvariants()
    }
}
