import AnygateStack
import AnygateWire
import Testing

/// Host twins in process: GW1's and GW2's tunnel (and GW2's LAN) paired
/// with twins that `MemoryNetwork` stands in for — what is punted is
/// recorded there, what a twin sends is injected by hand.
@Suite("Host twins in-process", .ledgerAudited)
struct TwinTests {
    /// An IPv4 packet, header and payload.
    static func packet(_ source: IPv4Address, _ destination: IPv4Address, _ proto: IPProtocol, ttl: UInt8 = 64,
                       payload: [UInt8]) -> [UInt8] {
        let r = IPv4Repr(source: source, destination: destination, proto: proto, payloadLength: payload.count, ttl: ttl)
        return Array(FrameBuilder.ipv4(to: MACAddress(2, 0, 0, 0, 0, 0), r, payload: payload).dropFirst(14))
    }

    /// The first four bytes of a TCP or UDP header: the ports, then zeros (a header's worth).
    static func ports(_ source: UInt16, _ destination: UInt16, length: Int = 20) -> [UInt8] {
        [UInt8(source >> 8), UInt8(source & 0xFF), UInt8(destination >> 8), UInt8(destination & 0xFF)]
            + [UInt8](repeating: 0, count: length - 4)
    }

    /// A UDP header (length set, no checksum) and zeros to `length` bytes.
    static func udp(_ source: UInt16, _ destination: UInt16, length: Int = 32) -> [UInt8] {
        var b = ports(source, destination, length: length)
        b[4] = UInt8(length >> 8); b[5] = UInt8(length & 0xFF)
        return b
    }

    /// `bytes` sent by the twin of `interface` on `stack`.
    static func fromTwin(_ s: TwoSites, _ stack: Stack, _ interface: InterfaceIndex, _ packets: [[UInt8]]) {
        let handles = packets.map { s.net.pool.make(copying: $0)! }
        handles.withUnsafeBufferPointer { stack.inject($0, from: interface) }
        s.net.run()
    }

    static let gw1 = IPv4Address(172, 16, 0, 1), gw2 = IPv4Address(172, 16, 0, 2)
    static let ospfHello = packet(gw1, IPv4Address(224, 0, 0, 5), IPProtocol(rawValue: 89), ttl: 1, payload: [2, 1, 0, 44] + [UInt8](repeating: 7, count: 40))

    @Test("an OSPF hello the host sends out of GW1's tunnel twin crosses the tunnel and reaches GW2's twin unchanged; without a twin GW2 drops it")
    func ospfThroughTheTunnel() throws {
        let s = try TwoSites()
        try s.gw2.setTwin(s.gw2Tunnel, TwinSettings())
        TwinTests.fromTwin(s, s.gw1, s.gw1Tunnel, [TwinTests.ospfHello])
        #expect(s.net.punted.count == 1)
        #expect(s.net.punted.first?.at.stack == 2 && s.net.punted.first?.at.interface == s.gw2Tunnel)
        #expect(s.net.punted.first?.bytes == TwinTests.ospfHello, "punted unchanged (TTL 1 too)")
        #expect(s.gw1.ledger.injected == 1 && s.gw2.ledger.punted == 1)
        #expect(s.gw2.twinCounters(s.gw2Tunnel)?.punted == 1 && s.gw1.twinCounters(s.gw1Tunnel) == nil)
        // No twin: a multicast group the stack does not join.
        try s.gw2.setTwin(s.gw2Tunnel, nil)
        TwinTests.fromTwin(s, s.gw1, s.gw1Tunnel, [TwinTests.ospfHello])
        #expect(s.net.punted.count == 1)
        #expect(s.gw2.drops(.multicastNotSupported) == 1)
        s.checkInvariants()
    }

    @Test("BGP and BFD for the stack's own address go to the twin; other TCP is refused as before unless all-unclaimed; the stack still answers ping itself")
    func whatIsPunted() throws {
        let s = try TwoSites()
        try s.gw2.setTwin(s.gw2Tunnel, TwinSettings())
        let bgp = TwinTests.packet(TwinTests.gw1, TwinTests.gw2, .tcp, payload: TwinTests.ports(40000, 179))
        let bgpAnswer = TwinTests.packet(TwinTests.gw1, TwinTests.gw2, .tcp, payload: TwinTests.ports(179, 40000))
        let bfd = TwinTests.packet(TwinTests.gw1, TwinTests.gw2, .udp, ttl: 255, payload: TwinTests.udp(49152, 3784))
        let ssh = TwinTests.packet(TwinTests.gw1, TwinTests.gw2, .tcp, payload: TwinTests.ports(40000, 22))
        TwinTests.fromTwin(s, s.gw1, s.gw1Tunnel, [bgp, bgpAnswer, bfd, ssh])
        #expect(s.net.punted.map(\.bytes) == [bgp, bgpAnswer, bfd])
        // The stack's TCP refuses it (this one is bare ports, so malformed rather than answered with a RST).
        #expect(s.gw2.drops(.tcpMalformed) == 1)
        try s.gw2.setTwin(s.gw2Tunnel, TwinSettings(punt: [.allUnclaimed]))
        TwinTests.fromTwin(s, s.gw1, s.gw1Tunnel, [ssh])
        #expect(s.net.punted.last?.bytes == ssh && s.gw2.drops(.tcpMalformed) == 1)
        try s.gw1.ping(TwinTests.gw2, identifier: 9, sequence: 1)
        s.net.run()
        #expect(s.gw1.echoReplies().count == 1 && s.net.punted.count == 4, "ICMP stays the stack's")
        s.checkInvariants()
    }

    @Test("punting is rate-limited per twin and counted; a twin that refuses is counted too")
    func rateLimit() throws {
        let s = try TwoSites()
        try s.gw2.setTwin(s.gw2Tunnel, TwinSettings(packetsPerSecond: 5))
        // The underlay's neighbours known first (a burst would wait for ARP, eight at most).
        try s.gw1.ping(TwinTests.gw2, identifier: 9, sequence: 1)
        s.net.run()
        let bfd = TwinTests.packet(TwinTests.gw1, TwinTests.gw2, .udp, ttl: 255, payload: TwinTests.udp(49152, 3784))
        TwinTests.fromTwin(s, s.gw1, s.gw1Tunnel, Array(repeating: bfd, count: 20))
        #expect(s.net.punted.count == 5)
        #expect(s.gw2.drops(.puntRateLimited) == 15 && s.gw2.twinCounters(s.gw2Tunnel)?.rateLimited == 15)
        s.net.advance(by: .seconds(1))
        TwinTests.fromTwin(s, s.gw1, s.gw1Tunnel, Array(repeating: bfd, count: 20))
        #expect(s.net.punted.count == 10, "a second later the bucket is full again")
        s.net.twinsTake = false
        s.net.advance(by: .seconds(1))
        TwinTests.fromTwin(s, s.gw1, s.gw1Tunnel, [bfd])
        #expect(s.gw2.drops(.puntRefused) == 1 && s.gw2.twinCounters(s.gw2Tunnel)?.refused == 1)
        s.checkInvariants()
    }

    @Test("an Ethernet twin: punted packets arrive as frames to its MAC (or the group's), ARP answers to the stack reach it, and its frames leave on the link")
    func ethernetTwin() throws {
        let s = try TwoSites()
        try s.gw2.setTwin(s.gw2Lan, TwinSettings())
        let lanMAC = MACAddress(2, 0, 0, 2, 0, 1), bMAC = MACAddress(2, 0, 0, 0, 0, 0xB)
        // B sends BFD to GW2's LAN address.
        let bfd = TwinTests.packet(IPv4Address(10, 2, 0, 2), IPv4Address(10, 2, 0, 1), .udp, ttl: 255,
                                   payload: TwinTests.udp(49152, 3784))
        s.net.inject(FrameBuilder.ipv4(to: lanMAC, from: bMAC, IPv4Repr(source: IPv4Address(10, 2, 0, 2), destination: IPv4Address(10, 2, 0, 1),
                                                                        proto: .udp, payloadLength: 32, ttl: 255),
                                       payload: TwinTests.udp(49152, 3784)), into: s.gw2, on: s.gw2Lan)
        let frame = try #require(s.net.punted.first?.bytes)
        #expect(Array(frame[0..<6]) == [2, 0, 0, 2, 0, 1] && frame[12] == 0x08 && frame[13] == 0x00)
        #expect(Array(frame[14...]) == bfd)
        // The twin's kernel asks for B (an ARP request from the interface's MAC) and sends it an OSPF hello:
        // the request leaves on the link, B's answer is learnt by the stack and handed to the twin.
        var request = [UInt8](repeating: 0, count: 42)
        request.withUnsafeMutableBytes { b in
            EthernetRepr(destination: .broadcast, source: lanMAC, etherType: .arp).emit(into: b)
            ARPRepr(operation: .request, senderMAC: lanMAC, senderIP: IPv4Address(10, 2, 0, 1), targetMAC: MACAddress(0, 0, 0, 0, 0, 0),
                    targetIP: IPv4Address(10, 2, 0, 2)).emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
        }
        TwinTests.fromTwin(s, s.gw2, s.gw2Lan, [request])
        let arp = try #require(s.net.punted.last?.bytes)
        #expect(arp.count >= 42 && arp[12] == 0x08 && arp[13] == 0x06 && arp[21] == 2, "B's ARP reply, handed to the twin")
        #expect(s.gw2.neighborList.contains { $0.address == IPv4Address(10, 2, 0, 2) && $0.mac == bMAC })
        s.checkInvariants()
    }

    @Test("an Ethernet twin gets the neighbour advertisements that answer solicitations, after the stack learnt from them")
    func ethernetTwinIPv6() throws {
        let s = try TwoSites(ipv6: true)
        try s.gw2.setTwin(s.gw2Lan, TwinSettings())
        // A datagram from A to B over IPv6: GW2 asks for B on its LAN, B answers.
        let server = try s.b.openSocket(.udp)
        try s.b.bind(server, address: .v6(TwoSites.b6), port: 9000)
        let client = try s.a.openSocket(.udp)
        try s.a.bind(client, address: .v6(TwoSites.a6), port: 5555)
        try s.a.connect(client, to: .v6(TwoSites.b6), port: 9000)
        try s.a.socketSend(client, try #require(s.net.pool.make(copying: [1, 2, 3])))
        s.net.run()
        #expect(s.b.socketReceive(server).map { s.net.pool.free($0.packet) } != nil)
        #expect(s.gw2.neighborList6.contains { $0.address == TwinTests.b6 && $0.mac == MACAddress(2, 0, 0, 0, 0, 0xB) })
        let na = try #require(s.net.punted.first { $0.bytes.count > 54 && $0.bytes[12] == 0x86 && $0.bytes[13] == 0xDD && $0.bytes[54] == 136 })
        #expect(na.at.interface == s.gw2Lan)
        #expect(Array(na.bytes[0..<6]) == [2, 0, 0, 2, 0, 1], "to the twin's MAC")
        s.a.closeSocket(client)
        s.b.closeSocket(server)
        s.checkInvariants()
    }

    static let b6 = IPv6Address("2001:db8:2::2")!
}
