import AnygateStack
import AnygateWire
import Testing

/// hostA 10.1.0.2 — GW1 ═gre0 over 192.0.2.0/24═ GW2 — hostB 10.2.0.2
///
/// The underlay is one memory link between the gateways' wan ports; the
/// tunnel carries 10.1/16 <-> 10.2/16.
struct TwoSites {
    let net: MemoryNetwork
    let a: Stack, gw1: Stack, gw2: Stack, b: Stack
    let gw1Lan: InterfaceIndex, gw1Wan: InterfaceIndex, gw2Wan: InterfaceIndex, gw2Lan: InterfaceIndex
    var gw1Tunnel: InterfaceIndex = -1, gw2Tunnel: InterfaceIndex = -1

    static let gw1Underlay = IPv4Address(192, 0, 2, 1)
    static let gw2Underlay = IPv4Address(192, 0, 2, 2)
    static let gw1Underlay6 = IPv6Address("2001:db8:ffff::1")!
    static let gw2Underlay6 = IPv6Address("2001:db8:ffff::2")!
    static let a6 = IPv6Address("2001:db8:1::2")!
    static let b6 = IPv6Address("2001:db8:2::2")!

    /// `underlay6`: the gateways' wan link is IPv6 (2001:db8:ffff::/64) and
    /// the tunnel runs over it. `ipv6`: the sites are dual-stack (A
    /// 2001:db8:1::2, B 2001:db8:2::2) and the tunnel carries IPv6 too.
    init(encapsulation: TunnelEncapsulation = .gre, key1: UInt32? = 42, key2: UInt32? = 42, sequence: Bool = false,
         mssClamp: MSSClamp = .off, keepalive: TunnelKeepalive? = nil, pmtuDiscovery: Bool = true, superFrames: Int = 0,
         gw1Configuration: StackConfiguration = StackConfiguration(), underlay6: Bool = false, ipv6: Bool = false,
         wanMTU: Int = 1500, protection: TunnelProtection? = nil, protection2: TunnelProtection? = nil) throws {
        net = MemoryNetwork(pool: PacketPool(superFrames: superFrames))
        a = net.addStack(name: "A", configuration: .host)
        gw1 = net.addStack(name: "GW1", configuration: gw1Configuration)
        gw2 = net.addStack(name: "GW2")
        b = net.addStack(name: "B", configuration: .host)
        let aEth = try a.addInterface(name: "eth0", mac: MACAddress(2, 0, 0, 0, 0, 0xA))
        gw1Lan = try gw1.addInterface(name: "lan", mac: MACAddress(2, 0, 0, 1, 0, 1))
        gw1Wan = try gw1.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 1, 0, 2), mtu: wanMTU)
        gw2Wan = try gw2.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 2, 0, 2), mtu: wanMTU)
        gw2Lan = try gw2.addInterface(name: "lan", mac: MACAddress(2, 0, 0, 2, 0, 1))
        let bEth = try b.addInterface(name: "eth0", mac: MACAddress(2, 0, 0, 0, 0, 0xB))
        net.connect(a, aEth, gw1, gw1Lan)
        net.connect(gw1, gw1Wan, gw2, gw2Wan)
        net.connect(gw2, gw2Lan, b, bEth)
        try a.addAddress(IPv4InterfaceAddress("10.1.0.2/24"), to: aEth)
        try gw1.addAddress(IPv4InterfaceAddress("10.1.0.1/24"), to: gw1Lan)
        try gw1.addAddress(IPv4InterfaceAddress("192.0.2.1/24"), to: gw1Wan)
        try gw2.addAddress(IPv4InterfaceAddress("192.0.2.2/24"), to: gw2Wan)
        try gw2.addAddress(IPv4InterfaceAddress("10.2.0.1/24"), to: gw2Lan)
        try b.addAddress(IPv4InterfaceAddress("10.2.0.2/24"), to: bEth)
        for (s, i) in [(a, aEth), (gw1, gw1Lan), (gw1, gw1Wan), (gw2, gw2Wan), (gw2, gw2Lan), (b, bEth)] { try s.setUp(i, true) }
        try a.addRoute(.any, via: IPv4Address(10, 1, 0, 1))
        try b.addRoute(.any, via: IPv4Address(10, 2, 0, 1))
        let u1: IPAddress = underlay6 ? .v6(TwoSites.gw1Underlay6) : .v4(TwoSites.gw1Underlay)
        let u2: IPAddress = underlay6 ? .v6(TwoSites.gw2Underlay6) : .v4(TwoSites.gw2Underlay)
        if underlay6 {
            try gw1.addAddress(IPv6InterfaceAddress("2001:db8:ffff::1/64"), to: gw1Wan)
            try gw2.addAddress(IPv6InterfaceAddress("2001:db8:ffff::2/64"), to: gw2Wan)
        }
        var c1 = TunnelConfiguration(name: "gre0", local: u1, remote: u2)
        c1.encapsulation = encapsulation; c1.key = key1; c1.sequence = sequence; c1.mssClamp = mssClamp; c1.keepalive = keepalive
        c1.pmtuDiscovery = pmtuDiscovery
        c1.protection = protection
        var c2 = TunnelConfiguration(name: "gre0", local: u2, remote: u1)
        c2.encapsulation = encapsulation; c2.key = key2; c2.sequence = sequence; c2.mssClamp = mssClamp
        c2.protection = protection2 ?? protection
        gw1Tunnel = try gw1.addTunnel(c1)
        gw2Tunnel = try gw2.addTunnel(c2)
        try gw1.addAddress(IPv4InterfaceAddress("172.16.0.1/30"), to: gw1Tunnel)
        try gw2.addAddress(IPv4InterfaceAddress("172.16.0.2/30"), to: gw2Tunnel)
        try gw1.addRoute(IPv4Prefix("10.2.0.0/16"), via: IPv4Address(172, 16, 0, 2))
        try gw2.addRoute(IPv4Prefix("10.1.0.0/16"), via: IPv4Address(172, 16, 0, 1))
        if ipv6 {
            try a.addAddress(IPv6InterfaceAddress("2001:db8:1::2/64"), to: aEth)
            try gw1.addAddress(IPv6InterfaceAddress("2001:db8:1::1/64"), to: gw1Lan)
            try gw2.addAddress(IPv6InterfaceAddress("2001:db8:2::1/64"), to: gw2Lan)
            try b.addAddress(IPv6InterfaceAddress("2001:db8:2::2/64"), to: bEth)
            try gw1.enableIPv6(on: gw1Tunnel)
            try gw2.enableIPv6(on: gw2Tunnel)
            try a.addRoute(IPv6Prefix("::/0"), via: IPv6Address("2001:db8:1::1")!, interface: aEth)
            try b.addRoute(IPv6Prefix("::/0"), via: IPv6Address("2001:db8:2::1")!, interface: bEth)
            try gw1.addRoute(IPv6Prefix("2001:db8:2::/48"), interface: gw1Tunnel)
            try gw2.addRoute(IPv6Prefix("2001:db8:1::/48"), interface: gw2Tunnel)
        }
        net.run()
        // Past duplicate address detection on every IPv6 address.
        if ipv6 || underlay6 { net.advance(by: .seconds(2)) }
    }

    var stacks: [Stack] { [a, gw1, gw2, b] }

    func checkInvariants() {
        for s in stacks {
            s.checkInvariants()
            #expect(s.ledger.balanced, "\(s.name): \(s.ledger.violations)")
        }
        net.pool.checkInvariants()
    }
}

@Suite("GRE tunnels in-process", .ledgerAudited)
struct TunnelTests {
    final class Underlay { var frames: [[UInt8]] = [] }

    /// Frames on the gateways' underlay link, either way.
    func capture(_ s: TwoSites) -> Underlay {
        let u = Underlay()
        s.net.observer = { from, _, f in
            if (from.stack == 1 && from.interface == s.gw1Wan) || (from.stack == 2 && from.interface == s.gw2Wan),
               f.be16(12) == 0x0800 { u.frames.append(Array(f)) }
        }
        return u
    }

    @Test("ping across a GRE tunnel with a key; the underlay carries protocol 47 with the key", arguments: [TunnelEncapsulation.gre, .greInUDP])
    func pingThroughTunnel(_ encapsulation: TunnelEncapsulation) throws {
        let s = try TwoSites(encapsulation: encapsulation)
        let u = capture(s)
        try s.a.ping(IPv4Address(10, 2, 0, 2), identifier: 1, sequence: 1)
        s.net.run()
        try s.b.ping(IPv4Address(10, 1, 0, 2), identifier: 2, sequence: 2)
        s.net.run()
        #expect(s.a.echoReplies().map(\.from) == [IPv4Address(10, 2, 0, 2)])
        #expect(s.b.echoReplies().map(\.from) == [IPv4Address(10, 1, 0, 2)])
        let tunneled = u.frames.filter { f in
            f.withUnsafeBytes { raw in
                let b = UnsafeMutableRawBufferPointer(mutating: raw)
                let ip = IPv4Packet(unchecked: b.tail(from: 14))
                return encapsulation == .gre ? ip.proto == .gre : (ip.proto == .udp && ip.payload.be16(2) == 4754)
            }
        }
        #expect(tunneled.count == 4)
        for f in tunneled {
            f.withUnsafeBytes { raw in
                let b = UnsafeMutableRawBufferPointer(mutating: raw)
                let ip = IPv4Packet(unchecked: b.tail(from: 14))
                #expect([TwoSites.gw1Underlay, TwoSites.gw2Underlay].contains(ip.source))
                let greBytes = encapsulation == .gre ? ip.payload : ip.payload.tail(from: 8)
                let g = try? GRERepr(parsing: greBytes)
                #expect(g?.protocolType == .ipv4 && g?.key == 42)
                if encapsulation == .greInUDP {
                    let sport = ip.payload.be16(0)
                    #expect(sport >= 49152, "source port from the flow hash, in the dynamic range")
                }
            }
        }
        let t = try #require(s.gw1.tunnelList.first)
        #expect(t.up && t.counters.txPackets == 2 && t.counters.rxPackets == 2)
        #expect(t.mtu == 1500 - t.configuration.overhead)
        #expect(s.net.pool.inUse == 0)
        for st in s.stacks { st.checkInvariants() }
    }

    @Test("a key mismatch is dropped and counted")
    func keyMismatch() throws {
        let s = try TwoSites(key1: 42, key2: 43)
        try s.a.ping(IPv4Address(10, 2, 0, 2))
        s.net.run()
        #expect(s.a.echoReplies().isEmpty)
        #expect(s.gw2.drops(.greKeyMismatch) == 1)
        let noKey = try TwoSites(key1: 42, key2: nil)
        try noKey.a.ping(IPv4Address(10, 2, 0, 2))
        noKey.net.run()
        #expect(noKey.gw2.drops(.greKeyMismatch) == 1, "a key where none is configured is a mismatch too")
    }

    /// A GRE packet from GW1's underlay address to GW2, injected on GW2's wan.
    func greFrame(_ s: TwoSites, key: UInt32? = 42, sequence: UInt32? = nil, protocolType: EtherType = .ipv4,
                  flags: UInt16? = nil, inner: [UInt8]) -> [UInt8] {
        let g = GRERepr(protocolType: protocolType, key: key, sequence: sequence)
        var gre = [UInt8](repeating: 0, count: g.headerLength) + inner
        gre.withUnsafeMutableBytes { g.emit(into: $0) }
        if let flags { gre[0] = UInt8(flags >> 8); gre[1] = UInt8(flags & 0xFF) }
        return FrameBuilder.ipv4(to: s.gw2.status(s.gw2Wan).mac, from: s.gw1.status(s.gw1Wan).mac,
                                 IPv4Repr(source: TwoSites.gw1Underlay, destination: TwoSites.gw2Underlay, proto: .gre, payloadLength: 0),
                                 payload: gre)
    }

    func innerUDP(_ id: UInt16) -> [UInt8] {
        var p = [UInt8](repeating: 0, count: 20 + 12)
        p.withUnsafeMutableBytes { b in
            IPv4Repr(source: IPv4Address(10, 1, 0, 2), destination: IPv4Address(10, 2, 0, 2), proto: .udp, payloadLength: 12,
                     identification: id).emit(into: b)
            b.setBE16(20, 1000); b.setBE16(22, 2000); b.setBE16(24, 12)
        }
        return p
    }

    @Test("with sequence numbers, reordered and duplicate packets are dropped")
    func sequence() throws {
        let s = try TwoSites(sequence: true)
        try s.a.ping(IPv4Address(10, 2, 0, 2))  // resolve ARP on every hop
        s.net.run()
        _ = s.a.drainEvents()
        let before = s.b.drops(.portUnreachable)
        for seq: UInt32 in [100, 101, 103, 102, 103, 104] {
            s.net.inject(greFrame(s, sequence: seq, inner: innerUDP(UInt16(seq))), into: s.gw2, on: s.gw2Wan)
        }
        #expect(s.gw2.drops(.greSequence) == 2, "102 after 103, and 103 again")
        #expect(s.b.drops(.portUnreachable) - before == 4)
        s.net.inject(greFrame(s, sequence: nil, inner: innerUDP(1)), into: s.gw2, on: s.gw2Wan)
        #expect(s.gw2.drops(.greSequence) == 3, "a packet without a sequence number on a sequenced tunnel")
    }

    @Test("malformed GRE is dropped per reason")
    func malformed() throws {
        let s = try TwoSites()
        let cases: [(DropReason, [UInt8])] = [
            (.greUnsupported, greFrame(s, flags: 0x2001, inner: innerUDP(1))),        // version 1
            (.greUnsupported, greFrame(s, flags: 0x6000, inner: innerUDP(1))),        // routing bit
            (.greUnknownProtocol, greFrame(s, protocolType: .transparentEthernet, inner: innerUDP(1))),
            (.greMalformed, Array(greFrame(s, inner: []).prefix(14 + 20 + 6)).withFixedLength()),
        ]
        for (reason, frame) in cases {
            let n = s.gw2.drops(reason)
            s.net.inject(frame, into: s.gw2, on: s.gw2Wan)
            #expect(s.gw2.drops(reason) == n + 1, "\(reason)")
        }
        #expect(s.net.pool.inUse == 0)
    }

    /// With several workers one replica owns the tunnels' keepalives and
    /// lines; the others send none and take the line they are given.
    @Test("replicas: the owner sends the keepalives and reports its line; a follower sends none and takes the line given")
    func keepaliveRoles() throws {
        var c = StackConfiguration()
        c.replica = .owner
        let s = try TwoSites(keepalive: TunnelKeepalive(interval: .seconds(1), retries: 3), gw1Configuration: c)
        s.net.advance(by: .seconds(3))
        #expect(s.gw1.tunnelList.first.map { $0.up && $0.counters.keepalivesSent >= 3 } == true)
        _ = s.gw1.drainEvents()
        s.net.disconnect(s.gw1, s.gw1Wan)
        s.net.advance(by: .seconds(5))
        #expect(s.gw1.drainEvents().contains(.tunnelLine(tunnel: s.gw1Tunnel, up: false)))
        s.net.connect(s.gw1, s.gw1Wan, s.gw2, s.gw2Wan)
        s.net.advance(by: .seconds(2))
        #expect(s.gw1.drainEvents().contains(.tunnelLine(tunnel: s.gw1Tunnel, up: true)))

        c.replica = .follower
        let f = try TwoSites(keepalive: TunnelKeepalive(interval: .seconds(1), retries: 3), gw1Configuration: c)
        f.net.disconnect(f.gw1, f.gw1Wan)
        f.net.advance(by: .seconds(5))
        var t = try #require(f.gw1.tunnelList.first)
        #expect(t.up && t.counters.keepalivesSent == 0, "a follower neither sends keepalives nor judges the line")
        #expect(f.gw1.counters.arpRequestsSent == 0, "nor asks the link")
        f.gw1.setTunnelLine(tunnel: f.gw1Tunnel, up: false)
        t = try #require(f.gw1.tunnelList.first)
        #expect(!t.up)
        #expect(f.gw1.lookup(IPv4Address(10, 2, 0, 2)) == nil, "routes via the tunnel are withdrawn")
        f.gw1.setTunnelLine(tunnel: f.gw1Tunnel, up: true)
        #expect(f.gw1.tunnelList.first?.up == true && f.gw1.lookup(IPv4Address(10, 2, 0, 2)) != nil)
        f.net.connect(f.gw1, f.gw1Wan, f.gw2, f.gw2Wan)
    }

    @Test("keepalives: the line goes down after the retries and up on the first answer; routes follow")
    func keepalives() throws {
        let s = try TwoSites(keepalive: TunnelKeepalive(interval: .seconds(1), retries: 3))
        s.net.advance(by: .seconds(3))
        var t = try #require(s.gw1.tunnelList.first)
        #expect(t.up && t.counters.keepalivesSent >= 3 && t.counters.keepalivesReceived >= 2)
        #expect(s.gw2.tunnelList.first?.counters.keepalivesAnswered ?? 0 >= 2)
        // Cut the underlay: the answers stop.
        s.net.disconnect(s.gw1, s.gw1Wan)
        s.net.advance(by: .seconds(5))
        t = try #require(s.gw1.tunnelList.first)
        #expect(!t.up && t.reason == "3 keepalives unanswered")
        #expect(s.gw1.lookup(IPv4Address(10, 2, 0, 2)) == nil, "routes via the tunnel are withdrawn")
        try s.a.ping(IPv4Address(10, 2, 0, 2))
        s.net.run()
        #expect(s.gw1.drops(.noRoute) >= 1)
        // Restore it: up on the first answer, and traffic flows again.
        s.net.connect(s.gw1, s.gw1Wan, s.gw2, s.gw2Wan)
        s.net.advance(by: .seconds(2))
        t = try #require(s.gw1.tunnelList.first)
        #expect(t.up && t.counters.stateChanges == 2)
        _ = s.a.drainEvents()
        try s.a.ping(IPv4Address(10, 2, 0, 2), sequence: 9)
        s.net.run()
        #expect(s.a.echoReplies().map(\.sequence) == [9])
    }

    @Test("a tunnel whose underlay route leads into itself is stopped by the nesting limit")
    func nesting() throws {
        let s = try TwoSites()
        try s.gw1.addRoute(IPv4Prefix("192.0.2.2/32"), interface: s.gw1Tunnel)
        try s.a.ping(IPv4Address(10, 2, 0, 2))
        s.net.run()
        #expect(s.gw1.drops(.tunnelNesting) == 1)
        #expect(s.a.echoReplies().isEmpty)
        #expect(s.net.pool.inUse == 0)
    }

    @Test("DF traffic bigger than the tunnel MTU gets frag-needed with the tunnel MTU; without DF it is fragmented")
    func tunnelMTU() throws {
        let s = try TwoSites()
        let mtu = s.gw1.status(s.gw1Tunnel).mtu
        #expect(mtu == 1500 - 28)
        try s.a.ping(IPv4Address(10, 2, 0, 2), payloadSize: 1472, dontFragment: true)
        s.net.run()
        let errors = s.a.drainEvents().compactMap { e -> ICMPErrorReport? in if case .icmpError(let r) = e { r } else { nil } }
        #expect(errors.first?.code == ICMPv4UnreachableCode.fragmentationNeeded && errors.first?.nextHopMTU == UInt16(mtu))
        try s.a.ping(IPv4Address(10, 2, 0, 2), sequence: 2, payloadSize: 1472)
        s.net.run()
        #expect(s.a.echoReplies().map(\.length) == [1472])
        #expect(s.gw1.counters.fragmentsCreated >= 2)
    }

    @Test("MSS clamping lowers the MSS of SYNs entering and leaving the tunnel, keeping the checksum valid")
    func mssClamp() throws {
        let s = try TwoSites(mssClamp: .auto)
        try s.a.ping(IPv4Address(10, 2, 0, 2))
        s.net.run()
        var seen: [[UInt8]] = []
        s.net.observer = { from, _, f in if from.stack == 2 && from.interface == s.gw2Lan && f.be16(12) == 0x0800 { seen.append(Array(f)) } }
        // A SYN with MSS 1460 from A to B.
        var tcp = [UInt8](repeating: 0, count: 24)
        tcp.withUnsafeMutableBytes { t in
            t.setBE16(0, 40000); t.setBE16(2, 80); t.setBE32(4, 1)
            t.setBE8(12, 6 << 4); t.setBE8(13, TCPHeader.flagSYN); t.setBE16(14, 65535)
            t.setBE8(20, 2); t.setBE8(21, 4); t.setBE16(22, 1460)
            let sum = InternetChecksum.pseudoHeaderSum(source: IPv4Address(10, 1, 0, 2), destination: IPv4Address(10, 2, 0, 2),
                                                       protocol: .tcp, length: 24)
            t.setBE16(16, InternetChecksum.checksum(t, initial: sum))
        }
        let frame = FrameBuilder.ipv4(to: s.gw1.status(s.gw1Lan).mac, from: s.a.status(0).mac,
                                      IPv4Repr(source: IPv4Address(10, 1, 0, 2), destination: IPv4Address(10, 2, 0, 2), proto: .tcp,
                                               payloadLength: 0), payload: tcp)
        s.net.inject(frame, into: s.gw1, on: s.gw1Lan)
        #expect(seen.count == 1)
        let mtu = s.gw1.status(s.gw1Tunnel).mtu
        try seen.first.map { f in
            var copy = f
            try copy.withUnsafeMutableBytes { b in
                let ip = IPv4Packet(unchecked: b.tail(from: 14))
                let t = try TCPHeader(validating: ip.payload)
                #expect(ip.payload.be16(t.mssOffset ?? 0) == UInt16(mtu - 40))
                let sum = InternetChecksum.pseudoHeaderSum(source: ip.source, destination: ip.destination, protocol: .tcp, length: 24)
                #expect(InternetChecksum.verifies(ip.payload, initial: sum), "checksum still valid after the rewrite")
            }
        }
        #expect(s.gw1.tunnelList.first?.counters.mssClamped == 1)
    }

    @Test("a stack socket sends and receives UDP through the stack")
    func udpSockets() throws {
        let t = try Topology()
        try t.warmUp()
        let server = try t.b.openSocket(.udp)
        try t.b.bind(server, address: .v4(Topology.bAddr), port: 9000)
        let client = try t.a.openSocket(.udp)
        try t.a.bind(client, address: .v4(.any), port: 5555)
        try t.a.connect(client, to: .v4(Topology.bAddr), port: 9000)
        var p = t.net.pool.allocate()!
        p.length = 5
        let bytes: [UInt8] = Array("hello".utf8)
        for (i, c) in bytes.enumerated() { t.net.pool.bytes(p).storeBytes(of: c, toByteOffset: i, as: UInt8.self) }
        try t.a.socketSend(client, p)
        t.net.run()
        let d = try #require(t.b.socketReceive(server))
        #expect(t.net.pool.copyBytes(d.packet) == bytes)
        #expect(d.from == .v4(Topology.aAddr) && d.port == 5555)
        t.net.pool.free(d.packet)
        #expect(t.a.routeCacheStatistics.resolutions == 1)
        #expect(t.b.drops(.portUnreachable) == 0)
        t.a.closeSocket(client)
        t.b.closeSocket(server)
        #expect(t.net.pool.inUse == 0)
    }
}

extension Array where Element == UInt8 {
    /// Rewrites the IPv4 total length of an Ethernet+IPv4 frame to the frame's real size and fixes the checksum.
    func withFixedLength() -> [UInt8] {
        var f = self
        f.withUnsafeMutableBytes { b in
            let ip = IPv4Packet(unchecked: b.tail(from: 14))
            ip.totalLength = b.count - 14
            ip.fillChecksum()
        }
        return f
    }
}
