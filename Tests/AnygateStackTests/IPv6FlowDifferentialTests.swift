import AnygateStack
import AnygateWire
import Testing

/// ip6flow changes nothing but speed: two routers, one with the cache and
/// one without, get the same random IPv6 traffic and the same changes
/// (routes, ECMP sets, a gateway's new MAC, an MTU, the clock running
/// neighbours stale), and must put out the same frames, byte for byte.
@Suite("ip6flow differential")
struct IPv6FlowDifferentialTests {
    typealias L = IPv6LocalTests
    static let gateways = [IPv6Address("2001:db8:a::2")!, IPv6Address("2001:db8:b::2")!]
    static let gatewayMACs = [MACAddress(2, 0, 0, 0, 0xA, 2), MACAddress(2, 0, 0, 0, 0xB, 2)]
    static let prefixes = ["2001:db8:100::/48", "2001:db8:100:1::/64", "2001:db8:200::/40", "2001:db8:300::/48"].map { try! IPv6Prefix($0) }

    static func router(ip6flow: Bool) throws -> (Stack, L.Recorder, [InterfaceIndex]) {
        let h = L.Recorder()
        let pool = PacketPool(capacity: 1024, dataSize: 2048)
        h.pool = pool
        var c = StackConfiguration()
        c.ipflow.enabled = ip6flow
        c.icmp.errorsPerSecond = 1_000_000
        c.icmp.errorBurst = 1_000_000
        let s = Stack(name: "R", configuration: c, pool: pool, hypercalls: h)
        var ifs: [InterfaceIndex] = []
        for (k, net) in ["2001:db8:1::1/64", "2001:db8:a::1/64", "2001:db8:b::1/64"].enumerated() {
            let i = try s.addInterface(name: "if\(k)", mac: MACAddress(2, 0, 0, 0, 1, UInt8(k)))
            try s.setUp(i, true)
            try s.enableIPv6(on: i)
            try s.addAddress(IPv6InterfaceAddress(net), to: i)
            ifs.append(i)
        }
        L.passDAD(s, h)
        return (s, h, ifs)
    }

    static func advertisement(_ k: Int, mac: MACAddress) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 14 + 40 + 32)
        let to = IPv6Address(high: gateways[k].high, low: 1)
        f.withUnsafeMutableBytes { b in
            EthernetRepr(destination: MACAddress(2, 0, 0, 0, 1, UInt8(k + 1)), source: mac, etherType: .ipv6).emit(into: b)
            IPv6Repr(source: gateways[k], destination: to, nextHeader: .icmpv6, payloadLength: 32, hopLimit: 255)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
            let m = UnsafeMutableRawBufferPointer(rebasing: b[54...])
            NDOption.targetLinkLayer(mac).emit(into: UnsafeMutableRawBufferPointer(rebasing: m[24...]))
            ICMPv6Repr.neighborAdvertisement(target: gateways[k], flags: NAFlags.solicited | NAFlags.override).emit(into: m, source: gateways[k], destination: to)
        }
        return f
    }

    @Test("random traffic and changes: byte-identical output with ip6flow on and off")
    func differential() throws {
        let (on, hOn, ifs) = try Self.router(ip6flow: true)
        let (off, hOff, _) = try Self.router(ip6flow: false)
        let both = [(on, hOn), (off, hOff)]
        var rng = SplitMix64(seed: 606)
        var macs = Self.gatewayMACs
        func apply(_ body: (Stack) throws -> Void) rethrows { for (s, _) in both { try body(s) } }
        func inject(_ f: [UInt8], on i: InterfaceIndex) throws -> ([[UInt8]], [[UInt8]]) {
            for (s, h) in both {
                h.sent.removeAll()
                s.receive(try #require(s.pool.make(copying: f)), on: i)
            }
            return (hOn.sent, hOff.sent)
        }
        try apply { s in try s.addRoute(IPv6Prefix("::/0"), via: Self.gateways[0], interface: ifs[1]) }
        var compared = 0, forwarded = 0
        for step in 0..<6000 {
            let roll = rng.next() % 1000
            if roll < 8 {
                // A route to a prefix, via one gateway or the other (an ECMP set when both).
                let p = Self.prefixes[Int(rng.next() % UInt64(Self.prefixes.count))]
                let k = Int(rng.next() % 2)
                if rng.next() % 3 == 0 { try? apply { s in try s.deleteRoute(p) } } else {
                    try? apply { s in try s.addRoute(p, via: Self.gateways[k], interface: ifs[1 + k]) }
                }
            } else if roll < 12 {
                // A gateway answers, perhaps from a new MAC.
                let k = Int(rng.next() % 2)
                if rng.next() % 4 == 0 { macs[k] = MACAddress(2, 0, 0, 0, UInt8(rng.next() % 200), UInt8(k)) }
                let (a, b) = try inject(Self.advertisement(k, mac: macs[k]), on: ifs[1 + k])
                #expect(a == b, "step \(step): advertisement")
            } else if roll < 14 {
                let mtu = [1280, 1400, 1500][Int(rng.next() % 3)]
                try apply { s in try s.setMTU(ifs[1], mtu) }
            } else if roll < 20 {
                let dt = Int64(rng.next() % 20) * 1_000_000_000
                for (s, h) in both {
                    h.sent.removeAll()
                    h.time += dt
                    _ = s.runTimers(now: h.time)
                }
                #expect(hOn.sent == hOff.sent, "step \(step): timers")
            } else {
                // A packet from the LAN: to one of the prefixes or anywhere, with one of a few
                // flow labels, sometimes hop limit 1, a destination-options header, or too big.
                let p = Self.prefixes[Int(rng.next() % UInt64(Self.prefixes.count))]
                let dst = rng.next() % 5 == 0 ? IPv6Address(high: 0x2001_0DB8_0900_0000 | rng.next() % 4, low: 1)
                    : IPv6Address(high: p.address.high | rng.next() % 3, low: rng.next() % 4)
                let src = IPv6Address(high: 0x2001_0DB8_0001_0000, low: 0x10 + rng.next() % 3)
                let label = UInt32(rng.next() % 3)
                let hop: UInt8 = rng.next() % 40 == 0 ? 1 : 64
                let withOptions = rng.next() % 20 == 0
                let size = rng.next() % 30 == 0 ? 1420 : 40 + Int(rng.next() % 64)
                var f = [UInt8](repeating: 0, count: 14 + 40 + size)
                f.withUnsafeMutableBytes { b in
                    EthernetRepr(destination: MACAddress(2, 0, 0, 0, 1, 0), source: L.hostMAC, etherType: .ipv6).emit(into: b)
                    IPv6Repr(source: src, destination: dst, nextHeader: withOptions ? IPProtocol(rawValue: 60) : .udp,
                             payloadLength: size, hopLimit: hop, flowLabel: label).emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
                    if withOptions { b[54] = 17; b[55] = 0 }  // 8 bytes of destination options, then UDP
                    for k in (withOptions ? 62 : 54)..<b.count { b[k] = UInt8(truncatingIfNeeded: k &* 13 &+ step) }
                }
                let (a, b) = try inject(f, on: ifs[0])
                if a != b {
                    Issue.record("step \(step): ip6flow sent \(a.count) frames, the full path \(b.count); they differ")
                    return
                }
                compared += 1
                forwarded += a.count
            }
        }
        #expect(compared > 5000 && forwarded > 3000, "\(compared) packets compared, \(forwarded) frames")
        #expect(on.counters.flowHits > 500, "ip6flow was exercised: \(on.counters.flowHits) hits (the changes keep flushing it)")
        #expect(off.counters.flowHits == 0)
        #expect(on.counters.ipForwarded == off.counters.ipForwarded)
        for (s, _) in both { #expect(s.ledger.balanced, "\(s.ledger.violations)") }
    }

    @Test("IPv6 lookups as a batch stage change nothing: batches through routers with ip6flow off and on, against one frame at a time, byte for byte")
    func batchStage() throws {
        typealias D = IPv6FlowDifferentialTests
        // Batched: ip6flow off (the stage runs on every batch) and on (it runs after a batch that missed);
        // one at a time: the reference.
        let (batchedOff, hBatchedOff, ifs) = try D.router(ip6flow: false)
        let (batchedOn, hBatchedOn, _) = try D.router(ip6flow: true)
        let (single, hSingle, _) = try D.router(ip6flow: false)
        let all = [(batchedOff, hBatchedOff), (batchedOn, hBatchedOn), (single, hSingle)]
        var rng = SplitMix64(seed: 707)
        func apply(_ body: (Stack) throws -> Void) rethrows { for (s, _) in all { try body(s) } }
        try apply { s in try s.addRoute(IPv6Prefix("::/0"), via: D.gateways[0], interface: ifs[1]) }
        // Both gateways known (as neighbour discovery would leave them, without the clock moving).
        for k in 0..<2 {
            try apply { s in try s.learnNeighbor(D.gateways[k], on: ifs[1 + k], mac: D.gatewayMACs[k]) }
        }
        var compared = 0, forwarded = 0
        for round in 0..<400 {
            let roll = rng.next() % 100
            if roll < 10 {
                let p = D.prefixes[Int(rng.next() % UInt64(D.prefixes.count))]
                let k = Int(rng.next() % 2)
                if rng.next() % 3 == 0 { try? apply { s in try s.deleteRoute(p) } } else {
                    try? apply { s in try s.addRoute(p, via: D.gateways[k], interface: ifs[1 + k]) }
                }
            } else if roll < 13 {
                let mtu = [1280, 1400, 1500][Int(rng.next() % 3)]
                try apply { s in try s.setMTU(ifs[1], mtu) }
            }
            // A batch of 1 to 60 frames: IPv6 to the prefixes and beyond (a few with hop limit 1 or
            // options, some too big), and now and then an IPv4 frame among them.
            var frames: [[UInt8]] = []
            for _ in 0..<(1 + Int(rng.next() % 60)) {
                if rng.next() % 15 == 0 {
                    frames.append(FrameBuilder.ipv4(to: MACAddress(2, 0, 0, 0, 1, 0), IPv4Repr(source: IPv4Address(10, 0, 0, 1),
                                                    destination: IPv4Address(10, 9, 0, 1), proto: .udp, payloadLength: 0), payload: [0, 0, 0, 0, 0, 0, 0, 8]))
                    continue
                }
                let p = D.prefixes[Int(rng.next() % UInt64(D.prefixes.count))]
                let dst = rng.next() % 5 == 0 ? IPv6Address(high: 0x2001_0DB8_0900_0000 | rng.next() % 4, low: 1)
                    : IPv6Address(high: p.address.high | rng.next() % 3, low: rng.next() % 16)
                let src = IPv6Address(high: 0x2001_0DB8_0001_0000, low: 0x10 + rng.next() % 5)
                let hop: UInt8 = rng.next() % 40 == 0 ? 1 : 64
                let withOptions = rng.next() % 20 == 0
                let size = rng.next() % 30 == 0 ? 1420 : 40 + Int(rng.next() % 64)
                var f = [UInt8](repeating: 0, count: 14 + 40 + size)
                f.withUnsafeMutableBytes { b in
                    EthernetRepr(destination: MACAddress(2, 0, 0, 0, 1, 0), source: L.hostMAC, etherType: .ipv6).emit(into: b)
                    IPv6Repr(source: src, destination: dst, nextHeader: withOptions ? IPProtocol(rawValue: 60) : .udp,
                             payloadLength: size, hopLimit: hop, flowLabel: UInt32(rng.next() % 2)).emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
                    if withOptions { b[54] = 17; b[55] = 0 }
                    for k in (withOptions ? 62 : 54)..<b.count { b[k] = UInt8(truncatingIfNeeded: k &* 7 &+ round) }
                }
                frames.append(f)
            }
            for (_, h) in all { h.sent.removeAll() }
            for (s, _) in [(batchedOff, hBatchedOff), (batchedOn, hBatchedOn)] {
                let batch = try frames.map { try #require(s.pool.make(copying: $0)) }
                batch.withUnsafeBufferPointer { s.receive($0, on: ifs[0]) }
            }
            for f in frames { single.receive(try #require(single.pool.make(copying: f)), on: ifs[0]) }
            // A batch goes out per interface at its end, one frame at a time interleaves the
            // interfaces: the same frames in the same order on each interface (by source MAC).
            func byPort(_ frames: [[UInt8]]) -> [[UInt8]: [[UInt8]]] { Dictionary(grouping: frames) { Array($0[6..<12]) } }
            guard byPort(hBatchedOff.sent) == byPort(hSingle.sent), byPort(hBatchedOn.sent) == byPort(hSingle.sent) else {
                Issue.record("round \(round): batched \(hBatchedOff.sent.count) / \(hBatchedOn.sent.count) frames, one at a time \(hSingle.sent.count)")
                return
            }
            compared += frames.count
            forwarded += hSingle.sent.count
        }
        #expect(compared > 8000 && forwarded > 5000, "\(compared) frames compared, \(forwarded) sent")
        #expect(batchedOn.counters.flowHits > 1000, "ip6flow was exercised too")
        for (s, _) in all { #expect(s.ledger.balanced, "\(s.ledger.violations)") }
    }
}
