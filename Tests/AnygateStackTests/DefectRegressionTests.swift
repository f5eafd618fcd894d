import AnygateStack
import AnygateWire
import Testing

/// Defects found by using the appliance as its users do; each test failed
/// before its fix.
@Suite("Regressions: defects found in use", .ledgerAudited)
struct DefectRegressionTests {
    @Test("a tunnel with sequence numbers and keepalives stays up: reflected keepalives are not sequence-checked")
    func sequencedKeepalives() throws {
        let s = try TwoSites(sequence: true, keepalive: TunnelKeepalive(interval: .seconds(1), retries: 3))
        s.net.advance(by: .seconds(8))
        let t = try #require(s.gw1.tunnelList.first)
        #expect(t.up, "\(t.reason ?? "")")
        #expect(t.counters.keepalivesReceived >= 6 && t.counters.stateChanges == 0)
        #expect(s.gw1.drops(.greSequence) == 0)
        // Data still passes the sequence check.
        try s.a.ping(IPv4Address(10, 2, 0, 2), sequence: 5)
        s.net.run()
        #expect(s.a.echoReplies().map(\.sequence) == [5])
    }

    /// A UDP datagram from A to B's closed port 9, its checksum right or broken.
    func udpToClosedPort(_ t: Topology, corrupt: Bool) -> [UInt8] {
        var udp = [UInt8](repeating: 0, count: 8 + 4)
        udp.withUnsafeMutableBytes { b in
            UDPRepr(sourcePort: 4000, destinationPort: 9, payloadLength: 4)
                .emit(into: b, source: Topology.r1LanAddr, destination: Topology.bAddr)
        }
        if corrupt { udp[6] ^= 0x55 }
        return FrameBuilder.ipv4(to: t.b.status(t.bEth).mac, from: t.r2.status(t.r2Lan).mac,
                                 IPv4Repr(source: Topology.r1LanAddr, destination: Topology.bAddr, proto: .udp, payloadLength: 0),
                                 payload: udp)
    }

    @Test("a UDP datagram with a bad checksum is discarded silently and counted (RFC 1122 4.1.3.4), not answered")
    func udpBadChecksum() throws {
        let t = try Topology()
        try t.warmUp()
        let sent = t.b.counters.icmpErrorsSent
        t.net.inject(udpToClosedPort(t, corrupt: true), into: t.b, on: t.bEth)
        #expect(t.b.drops(.udpBadChecksum) == 1)
        #expect(t.b.counters.icmpErrorsSent == sent, "no port unreachable for a corrupt datagram")
        // A good one to the same closed port still draws the ICMP error.
        t.net.inject(udpToClosedPort(t, corrupt: false), into: t.b, on: t.bEth)
        #expect(t.b.counters.icmpErrorsSent == sent + 1)
        #expect(t.b.drops(.portUnreachable) == 1)
        t.checkInvariants()
    }

    @Test("no ARP on a tunnel: neither on address add nor on link up")
    func noARPOnTunnels() throws {
        let s = try TwoSites()
        let requests = s.gw1.counters.arpRequestsSent
        let tx = s.gw1.status(s.gw1Tunnel).counters.txPackets
        try s.gw1.addAddress(IPv4InterfaceAddress("172.16.1.1/30"), to: s.gw1Tunnel)
        try s.gw1.setUp(s.gw1Tunnel, false)
        try s.gw1.setUp(s.gw1Tunnel, true)
        s.net.run()
        #expect(s.gw1.counters.arpRequestsSent == requests)
        #expect(s.gw1.status(s.gw1Tunnel).counters.txPackets == tx)
        // Also none when the tunnel was made: both sites made theirs in `TwoSites`.
        #expect(s.gw2.status(s.gw2Tunnel).counters.txPackets == 0)
        #expect(s.net.pool.inUse == 0)
    }

    @Test("GRE carrying an inner IPv4 whose total length is below its header length is dropped, not clamped")
    func greInnerShortTotalLength() throws {
        let s = try TwoSites(mssClamp: .auto)
        // Inner: IHL 5 with total length 12, protocol TCP, and a SYN-looking tail.
        var inner = [UInt8](repeating: 0, count: 20 + 24)
        inner.withUnsafeMutableBytes { b in
            IPv4Repr(source: IPv4Address(10, 1, 0, 2), destination: IPv4Address(10, 2, 0, 2), proto: .tcp,
                     payloadLength: 24).emit(into: b)
            b.setBE16(2, 12)
            IPv4Packet(unchecked: b).fillChecksum()
            b.setBE8(20 + 12, 0x60); b.setBE8(20 + 13, 0x02)  // data offset 6, SYN
        }
        let g = GRERepr(protocolType: .ipv4, key: 42)
        var gre = [UInt8](repeating: 0, count: g.headerLength) + inner
        gre.withUnsafeMutableBytes { g.emit(into: $0) }
        let frame = FrameBuilder.ipv4(to: s.gw2.status(s.gw2Wan).mac, from: s.gw1.status(s.gw1Wan).mac,
                                      IPv4Repr(source: TwoSites.gw1Underlay, destination: TwoSites.gw2Underlay,
                                               proto: .gre, payloadLength: 0), payload: gre)
        s.net.inject(frame, into: s.gw2, on: s.gw2Wan)
        #expect(s.gw2.drops(.ipBadTotalLength) == 1)
        #expect(s.gw2.tunnelList.first?.counters.mssClamped == 0)
        #expect(s.net.pool.inUse == 0)
    }

    @Test("a frame from our own MAC is counted and reported, at most every 10 s per interface")
    func ownSourceMAC() throws {
        let t = try Topology()
        try t.warmUp()
        let mine = t.b.status(t.bEth).mac
        let frame = FrameBuilder.ipv4(to: .broadcast, from: mine,
                                      IPv4Repr(source: IPv4Address(10, 2, 0, 9), destination: Topology.bAddr, proto: .udp,
                                               payloadLength: 0), payload: [])
        for _ in 0..<3 { t.net.inject(frame, into: t.b, on: t.bEth) }
        #expect(t.b.drops(.ownSourceMAC) == 3)
        var reports = t.b.drainEvents().filter { if case .duplicateMAC = $0 { true } else { false } }
        #expect(reports == [.duplicateMAC(interface: t.bEth, mac: mine)])
        t.net.advance(by: .seconds(11))
        t.net.inject(frame, into: t.b, on: t.bEth)
        reports = t.b.drainEvents().filter { if case .duplicateMAC = $0 { true } else { false } }
        #expect(reports.count == 1, "reported again after the interval")
        #expect(t.b.status(t.bEth).counters.rxDrops >= 4)
        t.checkInvariants()
    }

    @Test("ipflow serves tunnels both ways: encapsulation on one gateway, decapsulated packets on the other", arguments: [TunnelEncapsulation.gre, .greInUDP])
    func flowsThroughTunnels(_ encapsulation: TunnelEncapsulation) throws {
        let s = try TwoSites(encapsulation: encapsulation)
        try s.a.ping(IPv4Address(10, 2, 0, 2))
        s.net.run()
        _ = s.a.drainEvents()
        let gw1Lan = s.gw1.status(s.gw1Lan).mac, aMAC = s.a.status(0).mac
        for k in 0..<10 {
            let f = TunnelECMPDifferentialTests.udp(to: gw1Lan, from: aMAC, IPv4Address(10, 1, 0, 2), IPv4Address(10, 2, 0, 2),
                                                    sport: 7000, dport: 9, size: 24 + k)
            s.net.inject(f, into: s.gw1, on: s.gw1Lan)
        }
        #expect(s.gw1.counters.flowHits == 9, "the first packet installs the flow towards gre0; nine hit it")
        #expect(s.gw2.counters.flowHits == 9, "the same for the decapsulated packets on the other side")
        let f1 = try #require(s.gw1.flowList.first { $0.destination == IPv4Address(10, 2, 0, 2) && $0.sourcePort == 7000 })
        #expect(f1.interface == s.gw1Tunnel && f1.nextHop == IPv4Address(172, 16, 0, 2) && f1.valid)
        let f2 = try #require(s.gw2.flowList.first { $0.destination == IPv4Address(10, 2, 0, 2) && $0.sourcePort == 7000 })
        #expect(f2.interface == s.gw2Lan && f2.packets == 9)
        #expect(s.b.drops(.portUnreachable) == 10, "all ten arrived")
        // The tunnel going down makes its flows stale at once.
        s.net.disconnect(s.gw1, s.gw1Wan)
        try s.gw1.setUp(s.gw1Tunnel, false)
        #expect(s.gw1.flowList.first { $0.interface == s.gw1Tunnel }?.valid == false)
        s.checkInvariants()
    }
}
