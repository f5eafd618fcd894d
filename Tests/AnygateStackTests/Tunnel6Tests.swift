import AnygateStack
import AnygateWire
import Testing

/// GRE and GRE-in-UDP with IPv6 inside, over an IPv6 underlay (RFC 7676),
/// and both: the four combinations of inner and outer family.
@Suite("IPv6 tunnels in-process", .ledgerAudited)
struct Tunnel6Tests {
    /// Outer packets on the gateways' underlay link, as (ethertype, bytes from the IP header).
    final class Underlay { var packets: [(type: UInt16, ip: [UInt8])] = [] }

    func capture(_ s: TwoSites) -> Underlay {
        let u = Underlay()
        s.net.observer = { from, _, f in
            guard (from.stack == 1 && from.interface == s.gw1Wan) || (from.stack == 2 && from.interface == s.gw2Wan) else { return }
            u.packets.append((f.be16(12), Array(f.tail(from: 14))))
        }
        return u
    }

    /// A UDP datagram from host A to host B over IPv6, read from B's socket.
    func udp6(_ s: TwoSites, _ text: String, size: Int = 0) throws -> ReceivedDatagram? {
        let server = try s.b.openSocket(.udp)
        try s.b.bind(server, address: .v6(TwoSites.b6), port: 9000)
        let client = try s.a.openSocket(.udp)
        try s.a.bind(client, address: .v6(TwoSites.a6), port: 5555)
        try s.a.connect(client, to: .v6(TwoSites.b6), port: 9000)
        defer { s.a.closeSocket(client); s.b.closeSocket(server) }
        let bytes = Array(text.utf8) + [UInt8](repeating: 0x5A, count: max(0, size - text.utf8.count))
        var p = try #require(s.net.pool.allocate())
        p.length = UInt32(bytes.count)
        for (i, c) in bytes.enumerated() { s.net.pool.bytes(p).storeBytes(of: c, toByteOffset: i, as: UInt8.self) }
        try s.a.socketSend(client, p)
        s.net.run()
        guard let d = s.b.socketReceive(server) else { return nil }
        #expect(s.net.pool.copyBytes(d.packet) == bytes)
        #expect(d.from == .v6(TwoSites.a6) && d.port == 5555)
        return d
    }

    /// The GRE header of an outer packet (after the UDP header for GRE-in-UDP).
    func gre(_ ip: [UInt8], outer6: Bool, udp: Bool) -> GRERepr? {
        var ip = ip
        return ip.withUnsafeMutableBytes { b in
            let offset = (outer6 ? 40 : Int(b.be8(0) & 0xF) * 4) + (udp ? 8 : 0)
            return try? GRERepr(parsing: b.tail(from: offset))
        }
    }

    @Test("IPv6 inside GRE over IPv4: protocol type 0x86DD, and the datagram arrives whole", arguments: [TunnelEncapsulation.gre, .greInUDP])
    func ipv6OverIPv4(_ e: TunnelEncapsulation) throws {
        let s = try TwoSites(encapsulation: e, ipv6: true)
        let u = capture(s)
        let d = try #require(try udp6(s, "six in four"))
        s.net.pool.free(d.packet)
        let outer = u.packets.filter { $0.type == 0x0800 }
        #expect(!outer.isEmpty)
        #expect(outer.allSatisfy { gre($0.ip, outer6: false, udp: e == .greInUDP)?.protocolType == .ipv6 })
        #expect(s.gw1.tunnelList[0].counters.txPackets >= 1 && s.gw2.tunnelList[0].counters.rxPackets >= 1)
        #expect(s.net.pool.inUse == 0)
        s.checkInvariants()
    }

    @Test("IPv4 inside GRE over IPv6: outer IPv6 with next header 47 (or UDP 4754 with a valid checksum); pings cross",
          arguments: [TunnelEncapsulation.gre, .greInUDP])
    func ipv4OverIPv6(_ e: TunnelEncapsulation) throws {
        let s = try TwoSites(encapsulation: e, underlay6: true)
        let t = s.gw1.tunnelList[0]
        #expect(t.mtu == 1500 - 40 - 4 - 4 - (e == .greInUDP ? 8 : 0), "the IPv6 header's 40 bytes come off the tunnel MTU")
        let u = capture(s)
        try s.a.ping(IPv4Address(10, 2, 0, 2), identifier: 1, sequence: 1)
        s.net.run()
        #expect(s.a.echoReplies().map(\.from) == [IPv4Address(10, 2, 0, 2)])
        let outer = u.packets.filter { $0.type == 0x86DD && ($0.ip[6] == 47 || $0.ip[6] == 17) }
        #expect(outer.count == 2, "the request and the reply, each in one outer IPv6 packet")
        for var o in outer {
            #expect(gre(o.ip, outer6: true, udp: e == .greInUDP)?.protocolType == .ipv4)
            o.ip.withUnsafeMutableBytes { b in
                let ip = IPv6Packet(unchecked: b)
                #expect([TwoSites.gw1Underlay6, TwoSites.gw2Underlay6].contains(ip.source))
                #expect(ip.flowLabel != 0, "the flow label carries the inner flow (RFC 6438)")
                if e == .greInUDP {
                    #expect(ip.nextHeader == .udp)
                    #expect((try? UDPDatagram(validating: ip.payload, source: ip.source, destination: ip.destination)) != nil,
                            "the UDP checksum over IPv6 is computed")
                    #expect(ip.payload.be16(2) == 4754 && ip.payload.be16(0) >= 49152)
                }
            }
        }
        #expect(s.net.pool.inUse == 0)
        s.checkInvariants()
    }

    @Test("IPv6 inside GRE over IPv6")
    func ipv6OverIPv6() throws {
        let s = try TwoSites(underlay6: true, ipv6: true)
        let u = capture(s)
        let d = try #require(try udp6(s, "six in six"))
        s.net.pool.free(d.packet)
        let outer = u.packets.filter { $0.type == 0x86DD && $0.ip[6] == 47 }
        #expect(!outer.isEmpty && outer.allSatisfy { gre($0.ip, outer6: true, udp: false)?.protocolType == .ipv6 })
        #expect(s.net.pool.inUse == 0)
        s.checkInvariants()
    }

    @Test("keepalives over an IPv6 underlay are reflected by the peer: the line stays up, and goes down when the peer goes")
    func keepalives6() throws {
        let s = try TwoSites(keepalive: TunnelKeepalive(interval: .seconds(1), retries: 3), underlay6: true)
        s.net.advance(by: .seconds(5))
        var t = s.gw1.tunnelList[0]
        #expect(t.up && t.counters.keepalivesSent >= 4 && t.counters.keepalivesReceived >= 3)
        #expect(s.gw2.tunnelList[0].counters.keepalivesAnswered >= 3)
        s.net.disconnect(s.gw2, s.gw2Wan)
        s.net.advance(by: .seconds(6))
        t = s.gw1.tunnelList[0]
        #expect(!t.up)
        s.checkInvariants()
    }

    @Test("an ICMPv6 packet too big quoting an outer packet lowers the tunnel MTU (not below 1280); others are ignored")
    func packetTooBig() throws {
        let s = try TwoSites(underlay6: true)
        func report(mtu: UInt32, destination: IPv6Address = TwoSites.gw2Underlay6, key: UInt32 = 42) -> [UInt8] {
            var quote = [UInt8](repeating: 0, count: 40 + 8)
            quote.withUnsafeMutableBytes { b in
                IPv6Repr(source: TwoSites.gw1Underlay6, destination: destination, nextHeader: .gre, payloadLength: 1452).emit(into: b)
                GRERepr(protocolType: .ipv4, key: key).emit(into: b.tail(from: 40))
            }
            let router = IPv6Address("2001:db8:ffff::fe")!
            var frame = [UInt8](repeating: 0, count: 14 + 40 + 8 + quote.count)
            frame.withUnsafeMutableBytes { b in
                EthernetRepr(destination: s.gw1.status(s.gw1Wan).mac, source: MACAddress(2, 0, 0, 0, 9, 9), etherType: .ipv6).emit(into: b)
                for (i, x) in quote.enumerated() { b.storeBytes(of: x, toByteOffset: 14 + 48 + i, as: UInt8.self) }
                ICMPv6Repr.packetTooBig(mtu: mtu).emit(into: b.tail(from: 54), source: router, destination: TwoSites.gw1Underlay6)
                IPv6Repr(source: router, destination: TwoSites.gw1Underlay6, nextHeader: .icmpv6, payloadLength: 8 + quote.count)
                    .emit(into: b.tail(from: 14))
            }
            return frame
        }
        s.net.inject(report(mtu: 1400, key: 43), into: s.gw1, on: s.gw1Wan)
        s.net.inject(report(mtu: 1400, destination: IPv6Address("2001:db8:ffff::9")!), into: s.gw1, on: s.gw1Wan)
        #expect(s.gw1.tunnelList[0].pathMTU == 1500, "another key or another peer: not ours")
        s.net.inject(report(mtu: 1400), into: s.gw1, on: s.gw1Wan)
        var t = s.gw1.tunnelList[0]
        #expect(t.pathMTU == 1400 && t.mtu == 1400 - 48 && t.pathMTUSource == "icmpv6 from 2001:db8:ffff::fe")
        s.net.inject(report(mtu: 600), into: s.gw1, on: s.gw1Wan)
        t = s.gw1.tunnelList[0]
        #expect(t.pathMTU == 1280, "an IPv6 path is never below 1280")
        s.checkInvariants()
    }

    @Test("a tunnel over a smaller path (IPv4 1200, IPv6 1280) still carries 1280-byte IPv6 packets, in outer fragments; larger ones draw packet too big",
          arguments: [false, true])
    func minimumMTU(_ underlay6: Bool) throws {
        let wan = underlay6 ? 1280 : 1200
        let s = try TwoSites(underlay6: underlay6, ipv6: true, wanMTU: wan)
        #expect(s.gw1.tunnelList[0].mtu == wan - (underlay6 ? 48 : 28))
        let u = capture(s)
        // 1280 bytes inside: 40 IPv6 + 8 UDP + 1232 payload.
        let d = try #require(try udp6(s, "at the minimum", size: 1232))
        s.net.pool.free(d.packet)
        let fragments = u.packets.filter { underlay6 ? ($0.type == 0x86DD && $0.ip[6] == 44) : ($0.type == 0x0800 && $0.ip[9] == 47) }
        #expect(fragments.count == 2 && fragments.allSatisfy { $0.ip.count <= wan }, "the outer packet went in two fragments")
        if !underlay6 { #expect(fragments.allSatisfy { $0.ip[6] & 0x40 == 0 }, "without DF") }
        #expect(s.gw2.counters.datagramsReassembled == 1, "and the far gateway put it together")
        // One byte more: packet too big at GW1, with 1280.
        _ = s.a.drainEvents()
        #expect(try udp6(s, "over", size: 1233) == nil)
        #expect(s.gw1.drops(.fragmentationNeeded) == 1)
        s.checkInvariants()
    }

    @Test("ip6flow into a tunnel: later packets of a flow skip the full path, and the underlay carries the same bytes as without ip6flow",
          arguments: [false, true])
    func ip6flowIntoTunnel(_ underlay6: Bool) throws {
        var off = StackConfiguration()
        off.ipflow.enabled = false
        let on = try TwoSites(underlay6: underlay6, ipv6: true), plain = try TwoSites(gw1Configuration: off, underlay6: underlay6, ipv6: true)
        var frames: [[[UInt8]]] = []
        for s in [on, plain] {
            let u = capture(s)
            for k in 0..<6 {
                let d = try #require(try udp6(s, "datagram \(k)"))
                s.net.pool.free(d.packet)
            }
            frames.append(u.packets.filter { $0.type == (underlay6 ? 0x86DD : 0x0800) }.map(\.ip))
        }
        #expect(!frames[0].isEmpty && frames[0] == frames[1], "the same outer packets, byte for byte")
        #expect(on.gw1.counters.flowHits >= 5 && plain.gw1.counters.flowHits == 0)
        let f = try #require(on.gw1.flow6List.first { $0.destination == TwoSites.b6 })
        #expect(f.interface == on.gw1Tunnel && f.valid && f.packets == 6)
        // The tunnel's line goes down: the flow is stale and the packet takes the full path (which drops it, counted).
        let hits = on.gw1.counters.flowHits
        try on.gw1.setUp(on.gw1Tunnel, false)
        #expect(try udp6(on, "down") == nil)
        #expect(on.gw1.counters.flowHits == hits)
        try on.gw1.setUp(on.gw1Tunnel, true)
        let d = try #require(try udp6(on, "up again"))
        on.net.pool.free(d.packet)
        on.checkInvariants()
    }

    @Test("a batch of IPv6 frames carrying IPv6 in GRE: the batch stage's lookup of the outer packet is never taken for the inner one")
    func batchStageThroughTunnel() throws {
        let s = try TwoSites(underlay6: true, ipv6: true)
        // The outer frames GW1 puts on the underlay for 8 datagrams A -> B (after a first 8 that resolve every neighbour).
        let server = try s.b.openSocket(.udp, queueCapacity: 256)
        try s.b.bind(server, address: .v6(TwoSites.b6), port: 9000)
        let client = try s.a.openSocket(.udp)
        try s.a.bind(client, address: .v6(TwoSites.a6), port: 5555)
        try s.a.connect(client, to: .v6(TwoSites.b6), port: 9000)
        for k in 0..<8 { try s.a.socketSend(client, try #require(s.net.pool.make(copying: [UInt8](repeating: UInt8(k), count: 20)))) }
        s.net.run()
        var got = 0
        while let d = s.b.socketReceive(server) { got += 1; s.net.pool.free(d.packet) }
        #expect(got == 8)
        var wire: [[UInt8]] = []
        s.net.observer = { from, _, f in if from.stack == 1 && from.interface == s.gw1Wan && f.be16(12) == 0x86DD && f[14 + 6] == 47 { wire.append(Array(f)) } }
        for k in 0..<8 { try s.a.socketSend(client, try #require(s.net.pool.make(copying: [UInt8](repeating: UInt8(k), count: 20)))) }
        s.net.run()
        while let d = s.b.socketReceive(server) { s.net.pool.free(d.packet) }
        try #require(wire.count == 8)
        // The same outer frames into GW2 as one batch, twice: the first misses ip6flow on every frame, so the second goes through the stage.
        for _ in 0..<2 {
            let batch = try wire.map { try #require(s.net.pool.make(copying: $0)) }
            batch.withUnsafeBufferPointer { s.gw2.receive($0, on: s.gw2Wan) }
            s.net.run()
        }
        got = 0
        while let d = s.b.socketReceive(server) { got += 1; s.net.pool.free(d.packet) }
        #expect(got == 16, "every inner datagram forwarded to B")
        s.a.closeSocket(client); s.b.closeSocket(server)
        s.checkInvariants()
    }
}
