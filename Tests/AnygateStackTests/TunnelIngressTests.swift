import AnygateStack
import AnygateWire
import Testing

/// What a tunnel checks and carries at its edges: reverse-path checks on
/// the inner source (RFC 3704) and ECN across the encapsulation (RFC 6040).
@Suite("Tunnel ingress: uRPF and ECN", .ledgerAudited)
struct TunnelIngressTests {
    final class Frames { var list: [[UInt8]] = [] }

    /// A GRE (key 42) frame from GW1's underlay to GW2's, with the given
    /// outer TOS, carrying a UDP packet `source` → B with the inner TOS.
    func greFrame(_ s: TwoSites, outerTOS: UInt8 = 0, innerTOS: UInt8 = 0, source: IPv4Address = IPv4Address(10, 1, 0, 2)) -> [UInt8] {
        var inner = [UInt8](repeating: 0, count: 20 + 12)
        inner.withUnsafeMutableBytes { b in
            IPv4Repr(source: source, destination: IPv4Address(10, 2, 0, 2), proto: .udp, payloadLength: 12, tos: innerTOS).emit(into: b)
            b.setBE16(20, 1000); b.setBE16(22, 2000); b.setBE16(24, 12)
        }
        let g = GRERepr(protocolType: .ipv4, key: 42)
        var gre = [UInt8](repeating: 0, count: g.headerLength) + inner
        gre.withUnsafeMutableBytes { g.emit(into: $0) }
        return FrameBuilder.ipv4(to: s.gw2.status(s.gw2Wan).mac, from: s.gw1.status(s.gw1Wan).mac,
                                 IPv4Repr(source: TwoSites.gw1Underlay, destination: TwoSites.gw2Underlay, proto: .gre,
                                          payloadLength: 0, tos: outerTOS),
                                 payload: gre)
    }

    /// Frames GW2 sends to B (its lan link).
    func towardsB(_ s: TwoSites) -> Frames {
        let f = Frames()
        s.net.observer = { from, _, frame in
            if from.stack == 2 && from.interface == s.gw2Lan && frame.be16(12) == 0x0800 { f.list.append(Array(frame)) }
        }
        return f
    }

    func warm(_ s: TwoSites) throws {
        try s.a.ping(IPv4Address(10, 2, 0, 2))
        s.net.run()
        _ = s.a.drainEvents()
        // GW2 knows a default route out of its wan, so a spoofed source has a route — just not through the tunnel.
        try s.gw2.addRoute(.any, via: TwoSites.gw1Underlay)
    }

    @Test("strict by default on a tunnel: a spoofed inner source is dropped and counted; loose lets routed sources in; off lets all in")
    func reversePath() throws {
        let s = try TwoSites()
        try warm(s)
        let out = towardsB(s)
        #expect(s.gw2.reversePathFilter(s.gw2Tunnel) == .strict && s.gw2.reversePathFilter(s.gw2Lan) == .off)
        s.net.inject(greFrame(s), into: s.gw2, on: s.gw2Wan)
        #expect(out.list.count == 1, "the site's own source (routed back through gre0) passes")
        s.net.inject(greFrame(s, source: IPv4Address(10, 9, 9, 9)), into: s.gw2, on: s.gw2Wan)
        s.net.inject(greFrame(s, source: IPv4Address(10, 2, 0, 7)), into: s.gw2, on: s.gw2Wan)
        #expect(s.gw2.drops(.rpfFailed) == 2)
        #expect(s.gw2.status(s.gw2Tunnel).counters.rxDrops == 2)
        #expect(out.list.count == 1, "neither spoofed packet reached the site")
        try s.gw2.setReversePathFilter(s.gw2Tunnel, .loose)
        s.net.inject(greFrame(s, source: IPv4Address(10, 9, 9, 9)), into: s.gw2, on: s.gw2Wan)
        #expect(out.list.count == 2, "loose: the default route makes it acceptable")
        try s.gw2.deleteRoute(IPv4Prefix.any)
        s.net.inject(greFrame(s, source: IPv4Address(10, 9, 9, 9)), into: s.gw2, on: s.gw2Wan)
        #expect(s.gw2.drops(.rpfFailed) == 3, "loose: no route at all")
        try s.gw2.setReversePathFilter(s.gw2Tunnel, .off)
        s.net.inject(greFrame(s, source: IPv4Address(10, 9, 9, 9)), into: s.gw2, on: s.gw2Wan)
        #expect(out.list.count == 3)
        s.checkInvariants()
    }

    @Test("a flow installed for traffic from the wan does not carry the same spoofed source arriving through the tunnel")
    func reversePathOnTheFastPath() throws {
        let s = try TwoSites()
        try warm(s)
        let out = towardsB(s)
        // 10.9.9.9 → B arriving on the wan (no check there) installs a flow for (B ← 10.9.9.9).
        let plain = TunnelECMPDifferentialTests.udp(to: s.gw2.status(s.gw2Wan).mac, from: s.gw1.status(s.gw1Wan).mac,
                                                    IPv4Address(10, 9, 9, 9), IPv4Address(10, 2, 0, 2), sport: 1000, dport: 2000)
        for _ in 0..<2 { s.net.inject(plain, into: s.gw2, on: s.gw2Wan) }
        #expect(out.list.count == 2 && s.gw2.counters.flowHits == 1)
        // The same packet from inside the tunnel matches that flow, and is still refused.
        s.net.inject(greFrame(s, source: IPv4Address(10, 9, 9, 9)), into: s.gw2, on: s.gw2Wan)
        #expect(s.gw2.drops(.rpfFailed) == 1 && out.list.count == 2 && s.gw2.counters.flowHits == 1)
    }

    @Test("ECN crosses the tunnel as RFC 6040 says: copied out on encapsulation, combined on decapsulation")
    func ecn() throws {
        let s = try TwoSites()
        try warm(s)
        // Encapsulation: the outer header carries the inner ECN (ECT(0)) whatever the DSCP.
        var outerTOS: [UInt8] = []
        s.net.observer = { from, _, f in
            if from.stack == 1 && from.interface == s.gw1Wan && f.be16(12) == 0x0800 && f[14 + 9] == 47 { outerTOS.append(f[15]) }
        }
        let udp = TunnelECMPDifferentialTests.udp(to: s.gw1.status(s.gw1Lan).mac, from: s.a.status(0).mac,
                                                  IPv4Address(10, 1, 0, 2), IPv4Address(10, 2, 0, 2), sport: 5, dport: 9, tos: 0xB8 | ECN.ect0)
        s.net.inject(udp, into: s.gw1, on: s.gw1Lan)
        #expect(outerTOS.last.map { $0 & 3 } == ECN.ect0)

        let out = towardsB(s)
        func innerECN(outer: UInt8, inner: UInt8) -> UInt8? {
            let before = out.list.count
            s.net.inject(greFrame(s, outerTOS: outer, innerTOS: 0x20 | inner), into: s.gw2, on: s.gw2Wan)
            guard out.list.count == before + 1, let f = out.list.last else { return nil }
            let ip = f.withUnsafeBufferPointer { Array($0[14..<34]) }
            // The header checksum still verifies after the rewrite.
            var sum: UInt32 = 0
            for k in stride(from: 0, to: 20, by: 2) { sum += UInt32(ip[k]) << 8 | UInt32(ip[k + 1]) }
            while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
            #expect(sum == 0xFFFF, "inner header checksum")
            #expect(ip[1] & 0xFC == 0x20, "DSCP untouched")
            return ip[1] & 3
        }
        #expect(innerECN(outer: ECN.ce, inner: ECN.ect0) == ECN.ce)
        #expect(innerECN(outer: ECN.ce, inner: ECN.ect1) == ECN.ce)
        #expect(innerECN(outer: ECN.ect1, inner: ECN.ect0) == ECN.ect1)
        #expect(innerECN(outer: ECN.notECT, inner: ECN.ce) == ECN.ce)
        #expect(innerECN(outer: ECN.ect0, inner: ECN.notECT) == ECN.notECT)
        #expect(innerECN(outer: ECN.ce, inner: ECN.notECT) == nil, "CE over Not-ECT is dropped")
        #expect(s.gw2.drops(.ecnNotECT) == 1)
        s.checkInvariants()
    }
}
