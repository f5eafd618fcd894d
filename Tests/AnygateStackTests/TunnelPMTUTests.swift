import AnygateStack
import AnygateWire
import Testing

/// Path MTU discovery under a tunnel: DF outside, fragmentation-needed for
/// the outer packets lowers the tunnel MTU for a while.
@Suite("Tunnel path MTU", .ledgerAudited)
struct TunnelPMTUTests {
    /// An ICMP fragmentation-needed from a router at 192.0.2.254 to GW1,
    /// quoting an outer packet GW1 → GW2 (protocol, GRE flags and key as given).
    func fragNeeded(_ s: TwoSites, mtu: UInt16, proto: IPProtocol = .gre, key: UInt32? = 42,
                    destination: IPv4Address = TwoSites.gw2Underlay, quoteLength: Int = 28 + 8) -> [UInt8] {
        var quote = [UInt8](repeating: 0, count: 20 + 12)
        quote.withUnsafeMutableBytes { b in
            IPv4Repr(source: TwoSites.gw1Underlay, destination: destination, proto: proto, payloadLength: 1480,
                     dontFragment: true).emit(into: b)
            GRERepr(protocolType: .ipv4, key: key).emit(into: b.tail(from: 20))
        }
        quote = Array(quote.prefix(quoteLength))
        var icmp = [UInt8](repeating: 0, count: 8) + quote
        icmp[0] = 3; icmp[1] = 4; icmp[6] = UInt8(mtu >> 8); icmp[7] = UInt8(mtu & 0xFF)
        icmp.withUnsafeMutableBytes { ICMPv4Packet(unchecked: $0).fillChecksum() }
        return FrameBuilder.ipv4(to: s.gw1.status(s.gw1Wan).mac, from: s.gw2.status(s.gw2Wan).mac,
                                 IPv4Repr(source: IPv4Address(192, 0, 2, 254), destination: TwoSites.gw1Underlay, proto: .icmp,
                                          payloadLength: 0),
                                 payload: icmp)
    }

    @Test("outer packets carry DF; a matching frag-needed lowers the tunnel MTU; inner DF traffic is told, the rest fragmented")
    func learns() throws {
        let s = try TwoSites()
        try s.a.ping(IPv4Address(10, 2, 0, 2))
        s.net.run()
        _ = s.a.drainEvents()
        var outerDF: [Bool] = []
        s.net.observer = { from, _, f in
            if from.stack == 1 && from.interface == s.gw1Wan && f.be16(12) == 0x0800 && f[14 + 9] == 47 { outerDF.append(f[14 + 6] & 0x40 != 0) }
        }
        try s.a.ping(IPv4Address(10, 2, 0, 2), sequence: 2)
        s.net.run()
        #expect(outerDF.last == true, "DF set on the outer header")
        #expect(s.gw1.tunnelList[0].pathMTU == 1500 && s.gw1.tunnelList[0].pathMTUSource == "interface")

        s.net.inject(fragNeeded(s, mtu: 1400), into: s.gw1, on: s.gw1Wan)
        var t = s.gw1.tunnelList[0]
        #expect(t.mtu == 1400 - 28 && t.pathMTU == 1400 && t.pathMTUSource == "icmp from 192.0.2.254")
        #expect(t.counters.pathMTUUpdates == 1)
        _ = s.a.drainEvents()
        try s.a.ping(IPv4Address(10, 2, 0, 2), sequence: 3, payloadSize: 1400, dontFragment: true)
        s.net.run()
        let errors = s.a.drainEvents().compactMap { e -> ICMPErrorReport? in if case .icmpError(let r) = e { r } else { nil } }
        #expect(errors.first?.code == ICMPv4UnreachableCode.fragmentationNeeded && errors.first?.nextHopMTU == 1372)
        try s.a.ping(IPv4Address(10, 2, 0, 2), sequence: 4, payloadSize: 1400)
        s.net.run()
        #expect(s.a.echoReplies().map(\.sequence) == [4], "without DF: fragmented before the tunnel, and delivered")

        // Ten minutes on, the learned value lapses.
        s.net.advance(by: .seconds(601), step: .seconds(5))
        t = s.gw1.tunnelList[0]
        #expect(t.mtu == 1472 && t.pathMTUSource == "interface")
        s.checkInvariants()
    }

    @Test("reports that do not match the tunnel's outer packets change nothing; reports below 576 are raised to it")
    func validates() throws {
        let s = try TwoSites()
        let cases: [[UInt8]] = [
            fragNeeded(s, mtu: 1300, key: 43),                                      // another key
            fragNeeded(s, mtu: 1300, key: nil),                                     // no key where we use one
            fragNeeded(s, mtu: 1300, destination: IPv4Address(192, 0, 2, 9)),      // another outer destination
            fragNeeded(s, mtu: 1300, proto: .udp),                                  // another protocol
        ]
        for f in cases { s.net.inject(f, into: s.gw1, on: s.gw1Wan) }
        #expect(s.gw1.tunnelList[0].mtu == 1472)
        #expect(s.gw1.counters.pmtuReportsIgnored == 4)
        // A quote too short for the key (only the GRE flags): accepted on addresses and protocol.
        s.net.inject(fragNeeded(s, mtu: 1450, quoteLength: 24), into: s.gw1, on: s.gw1Wan)
        #expect(s.gw1.tunnelList[0].pathMTU == 1450)
        s.net.inject(fragNeeded(s, mtu: 200), into: s.gw1, on: s.gw1Wan)
        #expect(s.gw1.tunnelList[0].pathMTU == 576 && s.gw1.tunnelList[0].mtu == 576 - 28)
        // A larger report does not raise it again before it lapses.
        s.net.inject(fragNeeded(s, mtu: 1400), into: s.gw1, on: s.gw1Wan)
        #expect(s.gw1.tunnelList[0].pathMTU == 576)
    }

    @Test("pmtu-discovery off: no DF outside, reports ignored")
    func off() throws {
        let s = try TwoSites(pmtuDiscovery: false)
        var outerDF: [Bool] = []
        s.net.observer = { from, _, f in
            if from.stack == 1 && from.interface == s.gw1Wan && f.be16(12) == 0x0800 && f[14 + 9] == 47 { outerDF.append(f[14 + 6] & 0x40 != 0) }
        }
        try s.a.ping(IPv4Address(10, 2, 0, 2))
        s.net.run()
        #expect(!outerDF.isEmpty && outerDF.allSatisfy { !$0 })
        s.net.inject(fragNeeded(s, mtu: 1400), into: s.gw1, on: s.gw1Wan)
        #expect(s.gw1.tunnelList[0].mtu == 1472)
    }
}
