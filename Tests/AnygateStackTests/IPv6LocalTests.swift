import AnygateStack
import AnygateWire
import Testing

/// IPv6 on the stack's own addresses: neighbour discovery and echo, with
/// frames built by the wire layer and what the stack sends decoded by it.
@Suite("IPv6 on the stack's addresses")
struct IPv6LocalTests {
    final class Recorder: Hypercalls {
        var pool: PacketPool!
        var time: Int64 = 1_000_000_000
        var rng = SplitMix64(seed: 8)
        var sent: [[UInt8]] = []
        func now() -> Timestamp { Timestamp(nanoseconds: time) }
        func random() -> UInt64 { rng.next() }
        func transmit(_ packets: UnsafeBufferPointer<PacketHandle>, interface: InterfaceIndex, stack: Stack) {
            for p in packets {
                sent.append(Array(pool.bytes(p)))
                pool.free(p)
            }
        }
    }

    static let routerMAC = MACAddress(2, 0, 0, 0, 0, 1), hostMAC = MACAddress(2, 0, 0, 0, 0, 9)
    static let routerAddress = IPv6Address("2001:db8:1::1")!, host = IPv6Address("2001:db8:1::9")!
    static let hostLinkLocal = IPv6Address.linkLocal(hostMAC)

    static func stack() throws -> (Stack, Recorder, InterfaceIndex) {
        let h = Recorder()
        let pool = PacketPool(capacity: 256, dataSize: 2048)
        h.pool = pool
        let s = Stack(name: "R", pool: pool, hypercalls: h)
        let lan = try s.addInterface(name: "lan", mac: routerMAC)
        try s.setUp(lan, true)
        try s.enableIPv6(on: lan)
        try s.addAddress(IPv6InterfaceAddress("2001:db8:1::1/64"), to: lan)
        passDAD(s, h)
        return (s, h, lan)
    }

    /// Lets duplicate address detection finish unanswered, and forgets the
    /// setup's frames (probes, MLD reports).
    static func passDAD(_ s: Stack, _ h: Recorder) {
        h.time += 1_100_000_000
        _ = s.runTimers(now: h.time)
        h.sent.removeAll()
    }

    /// An Ethernet frame with an IPv6 packet carrying `icmp` (written by `body`).
    static func frame(to mac: MACAddress, from source: IPv6Address, to destination: IPv6Address, hopLimit: UInt8 = 255,
                      icmpLength: Int, _ body: (UnsafeMutableRawBufferPointer) -> Void) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 14 + 40 + icmpLength)
        f.withUnsafeMutableBytes { b in
            EthernetRepr(destination: mac, source: hostMAC, etherType: .ipv6).emit(into: b)
            IPv6Repr(source: source, destination: destination, nextHeader: .icmpv6, payloadLength: icmpLength, hopLimit: hopLimit)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
            body(UnsafeMutableRawBufferPointer(rebasing: b[54...]))
        }
        return f
    }

    static func solicitation(for target: IPv6Address, from source: IPv6Address = host, hopLimit: UInt8 = 255) -> [UInt8] {
        frame(to: target.solicitedNode.multicastMAC, from: source, to: target.solicitedNode, hopLimit: hopLimit, icmpLength: 32) { m in
            NDOption.sourceLinkLayer(hostMAC).emit(into: UnsafeMutableRawBufferPointer(rebasing: m[24...]))
            ICMPv6Repr.neighborSolicitation(target: target).emit(into: m, source: source, destination: target.solicitedNode)
        }
    }

    static func echo(to destination: IPv6Address, from source: IPv6Address = host, mac: MACAddress = routerMAC) -> [UInt8] {
        frame(to: mac, from: source, to: destination, hopLimit: 64, icmpLength: 8 + 4) { m in
            for (k, x) in [UInt8]([1, 2, 3, 4]).enumerated() { m[8 + k] = x }
            ICMPv6Repr.echoRequest(identifier: 7, sequence: 1).emit(into: m, source: source, destination: destination)
        }
    }

    static func inject(_ s: Stack, _ f: [UInt8], on i: InterfaceIndex) throws {
        s.receive(try #require(s.pool.make(copying: f)), on: i)
    }

    /// What a sent frame says: its IPv6 header and ICMPv6 message.
    static func decode(_ f: [UInt8]) throws -> (eth: EthernetRepr, ip: IPv6Repr, icmp: ICMPv6Repr, options: NDOptions) {
        var f = f
        return try f.withUnsafeMutableBytes { b in
            let eth = EthernetRepr(parsing: EthernetFrame(unchecked: b))
            let ipBytes = UnsafeMutableRawBufferPointer(rebasing: b[14...])
            let ip = try IPv6Repr(parsing: ipBytes)
            // An MLD report sits behind its hop-by-hop header.
            let at = ip.nextHeader == IPProtocol(rawValue: 0) ? 48 : 40
            let m = UnsafeMutableRawBufferPointer(rebasing: ipBytes[at..<(40 + ip.payloadLength)])
            let icmp = try ICMPv6Repr(parsing: m, source: ip.source, destination: ip.destination)
            var options = NDOptions()
            if case .neighborSolicitation = icmp { options = try NDOptions(parsing: m, from: 24) }
            if case .neighborAdvertisement = icmp { options = try NDOptions(parsing: m, from: 24) }
            return (eth, ip, icmp, options)
        }
    }

    @Test("interfaces: an EUI-64 link-local address, local and connected routes, refusals")
    func addresses() throws {
        let (s, _, lan) = try Self.stack()
        #expect(s.addresses6(on: lan).map(\.description) == ["fe80::ff:fe00:1/64", "2001:db8:1::1/64"])
        #expect(s.lookup(Self.routerAddress)?.kind == .local)
        #expect(s.lookup(Self.host)?.kind == .connected)
        #expect(throws: InterfaceError.address6Exists(try IPv6InterfaceAddress("2001:db8:1::1/64"))) {
            try s.addAddress(IPv6InterfaceAddress("2001:db8:1::1/64"), to: lan)
        }
        #expect(throws: InterfaceError.self) { try s.addAddress(IPv6InterfaceAddress("ff02::1/64"), to: lan) }
        try s.removeAddress(Self.routerAddress, from: lan)
        #expect(s.lookup(Self.host) == nil)
        s.checkInvariants()
    }

    @Test("a solicitation for our address: a solicited advertisement with our MAC, and the sender learnt")
    func answersSolicitation() throws {
        let (s, h, lan) = try Self.stack()
        try Self.inject(s, Self.solicitation(for: Self.routerAddress), on: lan)
        let na = try Self.decode(try #require(h.sent.last))
        #expect(na.eth.destination == Self.hostMAC && na.ip.destination == Self.host && na.ip.hopLimit == 255)
        #expect(na.icmp == .neighborAdvertisement(target: Self.routerAddress, flags: NAFlags.solicited | NAFlags.override | NAFlags.router))
        #expect(na.options.targetLinkLayer == Self.routerMAC)
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
        // A duplicate-address probe (from ::) is answered to all nodes, unsolicited.
        h.sent.removeAll()
        var probe = Self.frame(to: Self.routerAddress.solicitedNode.multicastMAC, from: .any, to: Self.routerAddress.solicitedNode,
                               icmpLength: 24) { m in
            ICMPv6Repr.neighborSolicitation(target: Self.routerAddress).emit(into: m, source: .any, destination: Self.routerAddress.solicitedNode)
        }
        try Self.inject(s, probe, on: lan)
        let defend = try Self.decode(try #require(h.sent.last))
        #expect(defend.ip.destination == .allNodes && defend.eth.destination == IPv6Address.allNodes.multicastMAC)
        #expect(defend.icmp == .neighborAdvertisement(target: Self.routerAddress, flags: NAFlags.override | NAFlags.router))
        // From off the link (hop limit 254): not believed, counted.
        h.sent.removeAll()
        probe = Self.solicitation(for: Self.routerAddress, hopLimit: 254)
        try Self.inject(s, probe, on: lan)
        #expect(h.sent.isEmpty)
        #expect(s.dropCounts[.ndInvalid] == 1)
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
    }

    @Test("ping6 after neighbour discovery: the reply goes straight to the learnt MAC, to the link-local and global address")
    func echoAfterSolicitation() throws {
        let (s, h, lan) = try Self.stack()
        try Self.inject(s, Self.solicitation(for: Self.routerAddress), on: lan)
        h.sent.removeAll()
        try Self.inject(s, Self.echo(to: Self.routerAddress), on: lan)
        let reply = try Self.decode(try #require(h.sent.last))
        #expect(h.sent.count == 1)
        #expect(reply.eth.destination == Self.hostMAC && reply.ip.source == Self.routerAddress && reply.ip.destination == Self.host)
        #expect(reply.icmp == .echoReply(identifier: 7, sequence: 1))
        #expect(Array(h.sent.last!.suffix(4)) == [1, 2, 3, 4], "the payload comes back")
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
    }

    @Test("ping6 from an unknown neighbour: the reply waits while we solicit, and leaves on the advertisement")
    func echoResolves() throws {
        let (s, h, lan) = try Self.stack()
        let ll = IPv6Address("fe80::ff:fe00:1")!
        try Self.inject(s, Self.echo(to: ll, from: Self.hostLinkLocal), on: lan)
        let ns = try Self.decode(try #require(h.sent.last))
        #expect(h.sent.count == 1, "only the solicitation so far: \(h.sent.map { try? Self.decode($0).icmp })")
        #expect(ns.icmp == .neighborSolicitation(target: Self.hostLinkLocal))
        #expect(ns.ip.destination == Self.hostLinkLocal.solicitedNode && ns.eth.destination == Self.hostLinkLocal.solicitedNode.multicastMAC)
        #expect(ns.ip.source == ll && ns.options.sourceLinkLayer == Self.routerMAC)
        h.sent.removeAll()
        let na = Self.frame(to: Self.routerMAC, from: Self.hostLinkLocal, to: ll, icmpLength: 32) { m in
            NDOption.targetLinkLayer(Self.hostMAC).emit(into: UnsafeMutableRawBufferPointer(rebasing: m[24...]))
            ICMPv6Repr.neighborAdvertisement(target: Self.hostLinkLocal, flags: NAFlags.solicited | NAFlags.override)
                .emit(into: m, source: Self.hostLinkLocal, destination: ll)
        }
        try Self.inject(s, na, on: lan)
        let reply = try Self.decode(try #require(h.sent.last))
        #expect(reply.icmp == .echoReply(identifier: 7, sequence: 1) && reply.eth.destination == Self.hostMAC)
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
    }

    @Test("a neighbour that never answers: three solicitations, then the waiting reply is dropped and counted")
    func unresolved() throws {
        let (s, h, lan) = try Self.stack()
        try Self.inject(s, Self.echo(to: Self.routerAddress), on: lan)
        for _ in 0..<5 {
            h.time += 1_100_000_000
            _ = s.runTimers(now: h.time)
        }
        let solicitations = try h.sent.filter { if case .neighborSolicitation = try Self.decode($0).icmp { return true }; return false }
        #expect(solicitations.count == 3)
        #expect(s.dropCounts[.neighborUnresolved] == 1)
        #expect(s.nextDeadline == nil || s.nextDeadline!.nanoseconds > h.time, "no timer left due")
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
        s.checkInvariants()
    }

    @Test("a router takes in what hosts send to all routers and to the MLDv2 group, instead of dropping it as multicast")
    func routerGroups() throws {
        let (s, _, lan) = try Self.stack()
        let rs = Self.frame(to: IPv6Address.allRouters.multicastMAC, from: Self.hostLinkLocal, to: .allRouters, icmpLength: 16) { m in
            NDOption.sourceLinkLayer(Self.hostMAC).emit(into: UnsafeMutableRawBufferPointer(rebasing: m[8...]))
            ICMPv6Repr.routerSolicitation.emit(into: m, source: Self.hostLinkLocal, destination: .allRouters)
        }
        try Self.inject(s, rs, on: lan)
        var report = [UInt8](repeating: 0, count: 14 + 40 + 8 + MLDv2Report.length(groups: 1))
        report.withUnsafeMutableBytes { b in
            EthernetRepr(destination: IPv6Address.allMLDv2Routers.multicastMAC, source: Self.hostMAC, etherType: .ipv6).emit(into: b)
            IPv6Repr(source: Self.hostLinkLocal, destination: .allMLDv2Routers, nextHeader: IPProtocol(rawValue: 0),
                     payloadLength: 8 + MLDv2Report.length(groups: 1), hopLimit: 1).emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
            MLDv2Report.emitHopByHopRouterAlert(into: UnsafeMutableRawBufferPointer(rebasing: b[54...]))
            MLDv2Report.emit(recordType: MLDv2Report.changeToExclude, groups: [Self.hostLinkLocal.solicitedNode],
                             into: UnsafeMutableRawBufferPointer(rebasing: b[62...]), source: Self.hostLinkLocal)
        }
        try Self.inject(s, report, on: lan)
        #expect(s.dropCounts.isEmpty, "\(s.dropCounts)")
        #expect(s.ledger.consumed == 2 && s.ledger.balanced, "\(s.ledger.violations)")
    }

    @Test("what is refused is counted: a bad header, a misplaced hop-by-hop header, an address without a route, IPv6 off")
    func refusals() throws {
        let (s, _, lan) = try Self.stack()
        var bad = Self.echo(to: Self.routerAddress)
        bad[14] = 0x45  // version 4
        try Self.inject(s, bad, on: lan)
        #expect(s.dropCounts[.ipv6Malformed] == 1)
        // Destination options, then hop-by-hop: parameter problem territory.
        var chain = [UInt8](repeating: 0, count: 14 + 40 + 16 + 12)
        chain.withUnsafeMutableBytes { b in
            EthernetRepr(destination: Self.routerMAC, source: Self.hostMAC, etherType: .ipv6).emit(into: b)
            IPv6Repr(source: Self.host, destination: Self.routerAddress, nextHeader: IPProtocol(rawValue: 60), payloadLength: 28)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
            b[54] = 0      // next: hop-by-hop
            b[62] = 58     // then ICMPv6
        }
        try Self.inject(s, chain, on: lan)
        #expect(s.dropCounts[.ipv6HeaderChain] == 1)
        try Self.inject(s, Self.echo(to: IPv6Address("2001:db8:9::1")!), on: lan)
        #expect(s.dropCounts[.noRoute] == 1, "not ours, and no route to it")
        let wan = try s.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 0, 0, 2))
        try s.setUp(wan, true)
        try Self.inject(s, Self.echo(to: Self.routerAddress, mac: MACAddress(2, 0, 0, 0, 0, 2)), on: wan)
        #expect(s.dropCounts[.ipv6NotSupported] == 1, "IPv6 is off on that interface")
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
    }
}

/// IPv6 forwarding between two links, Linux-router style: hop limit, the
/// IPv6 FIB, neighbour discovery for the next hop, and the ICMPv6 errors.
@Suite("IPv6 forwarding")
struct IPv6ForwardingTests {
    typealias L = IPv6LocalTests
    static let wanMAC = MACAddress(2, 0, 0, 0, 0, 2), bMAC = MACAddress(2, 0, 0, 0, 0, 0x0B)
    static let b = IPv6Address("2001:db8:2::9")!

    static func router() throws -> (Stack, L.Recorder, InterfaceIndex, InterfaceIndex) {
        let (s, h, lan) = try L.stack()
        let wan = try s.addInterface(name: "wan", mac: wanMAC)
        try s.setUp(wan, true)
        try s.enableIPv6(on: wan)
        try s.addAddress(IPv6InterfaceAddress("2001:db8:2::1/64"), to: wan)
        L.passDAD(s, h)
        // A has asked for the router: the router knows A.
        try L.inject(s, L.solicitation(for: L.routerAddress), on: lan)
        h.sent.removeAll()
        return (s, h, lan, wan)
    }

    /// A UDP packet from A (lan) to `destination`, `size` bytes of IPv6 payload.
    static func udp(to destination: IPv6Address, hopLimit: UInt8 = 64, size: Int = 16) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 14 + 40 + size)
        f.withUnsafeMutableBytes { b in
            EthernetRepr(destination: L.routerMAC, source: L.hostMAC, etherType: .ipv6).emit(into: b)
            IPv6Repr(source: L.host, destination: destination, nextHeader: .udp, payloadLength: size, hopLimit: hopLimit)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
            for k in 0..<size { b[54 + k] = UInt8(truncatingIfNeeded: k &* 7) }
        }
        return f
    }

    static func advertisement(from target: IPv6Address, mac: MACAddress, to destination: IPv6Address, routerMAC: MACAddress) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 14 + 40 + 32)
        f.withUnsafeMutableBytes { b in
            EthernetRepr(destination: routerMAC, source: mac, etherType: .ipv6).emit(into: b)
            IPv6Repr(source: target, destination: destination, nextHeader: .icmpv6, payloadLength: 32, hopLimit: 255)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
            let m = UnsafeMutableRawBufferPointer(rebasing: b[54...])
            NDOption.targetLinkLayer(mac).emit(into: UnsafeMutableRawBufferPointer(rebasing: m[24...]))
            ICMPv6Repr.neighborAdvertisement(target: target, flags: NAFlags.solicited | NAFlags.override)
                .emit(into: m, source: target, destination: destination)
        }
        return f
    }

    static func header(_ f: [UInt8]) throws -> (eth: EthernetRepr, ip: IPv6Repr) {
        var f = f
        return try f.withUnsafeMutableBytes { b in
            (EthernetRepr(parsing: EthernetFrame(unchecked: b)), try IPv6Repr(parsing: UnsafeMutableRawBufferPointer(rebasing: b[14...])))
        }
    }

    @Test("A to B: the router solicits B on the other link, then forwards with the hop limit one lower, the payload untouched")
    func forwardsAfterDiscovery() throws {
        let (s, h, lan, wan) = try Self.router()
        let packet = Self.udp(to: Self.b)
        try L.inject(s, packet, on: lan)
        let ns = try L.decode(try #require(h.sent.last))
        #expect(ns.icmp == .neighborSolicitation(target: Self.b) && ns.ip.source == IPv6Address("2001:db8:2::1")!)
        h.sent.removeAll()
        try L.inject(s, Self.advertisement(from: Self.b, mac: Self.bMAC, to: IPv6Address("2001:db8:2::1")!, routerMAC: Self.wanMAC), on: wan)
        let out = try #require(h.sent.last)
        let (eth, ip) = try Self.header(out)
        #expect(eth.destination == Self.bMAC && eth.source == Self.wanMAC)
        #expect(ip.hopLimit == 63 && ip.source == L.host && ip.destination == Self.b)
        #expect(Array(out[54...]) == Array(packet[54...]))
        // Through a route behind B, straight away now that B is known.
        h.sent.removeAll()
        try s.addRoute(IPv6Prefix("2001:db8:99::/48"), via: Self.b, interface: wan)
        try L.inject(s, Self.udp(to: IPv6Address("2001:db8:99::5")!), on: lan)
        #expect(try Self.header(try #require(h.sent.last)).eth.destination == Self.bMAC)
        #expect(s.counters.ipForwarded == 2)
        // That one left at once to a REACHABLE neighbour: ip6flow holds it, and the next one hits.
        try L.inject(s, Self.udp(to: IPv6Address("2001:db8:99::5")!), on: lan)
        #expect(s.counters.flowHits == 1)
        let f = try #require(s.flow6List.first { $0.destination == IPv6Address("2001:db8:99::5")! })
        #expect(f.packets == 2 && f.bytes == 2 * UInt64(packet.count - 14) && f.interface == wan && f.nextHop == Self.b && f.valid)
        try s.addRoute(IPv6Prefix("2001:db8:98::/48"), via: Self.b, interface: wan)
        #expect(s.flow6List.first?.valid == false, "a routing change makes it stale")
        // explain route, step by step: the prefixes that hold it, the route, the neighbour, the source.
        let e = s.explainRoute(IPv6Address("2001:db8:99::5")!, source: L.host)
        #expect(e.matches.first?.prefix == (try IPv6Prefix("2001:db8:99::/48")) && e.matches.first?.withdrawn == [false])
        #expect(e.chosen?.nextHop == Self.b && e.chosen?.interface == wan && e.nextHop == Self.b && e.egressMTU == 1500)
        #expect(e.neighbor?.mac == Self.bMAC && e.flow?.destination == IPv6Address("2001:db8:99::5")!)
        #expect(e.source == IPv6Address("2001:db8:2::1") && e.sourceReason != nil)
        #expect(s.explainRoute(IPv6Address("2001:db8:77::1")!).chosen == nil, "no route: nothing chosen")
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
    }

    @Test("the ICMPv6 errors: time exceeded, no route, beyond scope, packet too big — each back to A, each drop counted")
    func errors() throws {
        let (s, h, lan, wan) = try Self.router()
        func lastError() throws -> ICMPv6Repr {
            let e = try L.decode(try #require(h.sent.last))
            #expect(e.ip.destination == L.host && e.ip.source == L.routerAddress && e.eth.destination == L.hostMAC)
            return e.icmp
        }
        try L.inject(s, Self.udp(to: Self.b, hopLimit: 1), on: lan)
        #expect(try lastError() == .timeExceeded(code: 0))
        try L.inject(s, Self.udp(to: IPv6Address("2001:db8:77::1")!), on: lan)
        #expect(try lastError() == .destinationUnreachable(code: 0))
        try L.inject(s, Self.udp(to: IPv6Address("fe80::77")!), on: lan)
        #expect(try lastError() == .destinationUnreachable(code: 2))
        try s.setMTU(wan, 1280)
        try L.inject(s, Self.udp(to: Self.b, size: 1400), on: lan)
        #expect(try lastError() == .packetTooBig(mtu: 1280))
        let quoted = try #require(h.sent.last)
        #expect(quoted.count == 14 + 1280, "the quote fills the minimum MTU, no more")
        #expect(s.dropCounts[.ttlExpired] == 1 && s.dropCounts[.noRoute] == 2 && s.dropCounts[.fragmentationNeeded] == 1)
        #expect(s.counters.icmpErrorsSent == 4)
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
    }
}

/// Router advertisements: periodic, solicited, and what they carry.
@Suite("IPv6 router advertisements")
struct RouterAdvertisementTests {
    typealias L = IPv6LocalTests

    static func advertisements(_ h: L.Recorder) throws -> [(ra: RouterAdvertisementRepr, options: NDOptions, ip: IPv6Repr)] {
        try h.sent.compactMap { f in
            var f = f
            return try f.withUnsafeMutableBytes { b -> (RouterAdvertisementRepr, NDOptions, IPv6Repr)? in
                let ipBytes = UnsafeMutableRawBufferPointer(rebasing: b[14...])
                let ip = try IPv6Repr(parsing: ipBytes)
                guard ip.nextHeader == .icmpv6 else { return nil }  // MLD reports
                let m = UnsafeMutableRawBufferPointer(rebasing: ipBytes[40..<(40 + ip.payloadLength)])
                guard case .routerAdvertisement(let ra) = try ICMPv6Repr(parsing: m, source: ip.source, destination: ip.destination) else {
                    return nil
                }
                return (ra, try NDOptions(parsing: m, from: RouterAdvertisementRepr.optionsOffset), ip)
            }
        }
    }

    @Test("advertisements go out at once, the first three at most 16 s apart, then every 75–100 % of the interval, with prefix, MTU and lifetime")
    func periodic() throws {
        let (s, h, lan) = try L.stack()
        var c = RouterAdvertisements()
        c.interval = .seconds(60)
        c.lifetime = 900
        c.mtu = 1480
        try s.setRouterAdvertisements(c, on: lan)
        var times: [Int64] = []
        for _ in 0..<600 {
            h.time += 1_000_000_000
            let before = h.sent.count
            _ = s.runTimers(now: h.time)
            if h.sent.count > before { times.append(h.time) }
        }
        let ras = try Self.advertisements(h)
        #expect(ras.count == times.count && ras.count >= 10)
        let first = try #require(ras.first)
        #expect(first.ip.destination == .allNodes && first.ip.hopLimit == 255 && first.ip.source.isLinkLocal)
        #expect(first.ra.routerLifetime == 900 && first.options.mtu == 1480 && first.options.sourceLinkLayer == L.routerMAC)
        #expect(first.options.prefixes == [NDPrefixInformation(prefix: IPv6Address("2001:db8:1::")!, prefixLength: 64)])
        let gaps = zip(times.dropFirst(), times).map { ($0 - $1) / 1_000_000_000 }
        #expect(gaps.prefix(3).allSatisfy { $0 <= 16 }, "\(gaps)")
        #expect(gaps.dropFirst(3).allSatisfy { $0 >= 45 && $0 <= 61 }, "\(gaps)")
        try s.setRouterAdvertisements(nil, on: lan)
        let count = h.sent.count
        h.time += 120_000_000_000
        _ = s.runTimers(now: h.time)
        #expect(h.sent.count == count, "stopped")
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
    }

    @Test("a solicitation brings an advertisement at once, but not within 3 s of the last")
    func solicited() throws {
        let (s, h, lan) = try L.stack()
        var c = RouterAdvertisements()
        c.interval = .seconds(600)
        try s.setRouterAdvertisements(c, on: lan)
        _ = s.runTimers(now: h.time)
        for _ in 0..<3 {  // past the initial ones
            h.time += 17_000_000_000
            _ = s.runTimers(now: h.time)
        }
        h.sent.removeAll()
        let rs = L.frame(to: IPv6Address.allRouters.multicastMAC, from: L.hostLinkLocal, to: .allRouters, icmpLength: 16) { m in
            NDOption.sourceLinkLayer(L.hostMAC).emit(into: UnsafeMutableRawBufferPointer(rebasing: m[8...]))
            ICMPv6Repr.routerSolicitation.emit(into: m, source: L.hostLinkLocal, destination: .allRouters)
        }
        h.time += 1_000_000_000  // 1 s after the last advertisement
        try L.inject(s, rs, on: lan)
        _ = s.runTimers(now: h.time)
        #expect(try Self.advertisements(h).isEmpty, "not within 3 s of the last")
        h.time += 2_100_000_000
        _ = s.runTimers(now: h.time)
        #expect(try Self.advertisements(h).count == 1)
        #expect(s.neighborList6.contains { $0.address == L.hostLinkLocal && $0.mac == L.hostMAC }, "the soliciting host is learnt")
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
    }
}

/// MLDv2: what the gateway reports, and when.
@Suite("IPv6 multicast listener reports")
struct MLDTests {
    typealias L = IPv6LocalTests

    static func reports(_ h: L.Recorder) throws -> [(type: UInt8, groups: [IPv6Address])] {
        try h.sent.compactMap { f in
            var f = f
            return try f.withUnsafeMutableBytes { b -> (UInt8, [IPv6Address])? in
                let ipBytes = UnsafeMutableRawBufferPointer(rebasing: b[14...])
                let ip = try IPv6Repr(parsing: ipBytes)
                guard ip.destination == .allMLDv2Routers else { return nil }
                #expect(ip.hopLimit == 1 && ip.nextHeader == IPProtocol(rawValue: 0))
                let chain = try IPv6HeaderChain(walking: IPv6Packet(unchecked: ipBytes))
                #expect(chain.routerAlert == 0)
                let m = UnsafeMutableRawBufferPointer(rebasing: ipBytes[chain.upperLayerOffset..<(40 + ip.payloadLength)])
                _ = try ICMPv6Packet(validating: m, source: ip.source, destination: ip.destination)
                let records = try MLDv2Report.records(parsing: m)
                return (records.first?.type ?? 0, records.map(\.group))
            }
        }
    }

    @Test("an address joins its solicited-node group (and a router all-routers); removing it leaves; a query is answered in its delay")
    func reportsAndQueries() throws {
        let (s, h, lan) = try DADTests.fresh()
        try s.enableIPv6(on: lan)
        let ll = IPv6Address.linkLocal(L.routerMAC)
        var r = try Self.reports(h)
        #expect(r.count == 1 && r.first?.type == MLDv2Report.changeToExclude, "\(r) of \(h.sent.count)")
        #expect(Set(r.first?.groups ?? []) == [ll.solicitedNode, .allRouters])
        h.sent.removeAll()
        // 2001:db8:1::1 shares fe80::ff:fe00:1's group (the same low 24 bits): nothing to report.
        try s.addAddress(IPv6InterfaceAddress("2001:db8:1::1/64"), to: lan)
        #expect(try Self.reports(h).isEmpty)
        let other = IPv6Address("2001:db8:1::abcd")!
        try s.addAddress(IPv6InterfaceAddress(address: other, prefixLength: 64), to: lan)
        r = try Self.reports(h)
        #expect(r.count == 1 && r.first?.groups == [other.solicitedNode])
        h.sent.removeAll()
        try s.removeAddress(other, from: lan)
        r = try Self.reports(h)
        #expect(r.count == 1 && r.first?.type == MLDv2Report.changeToInclude && r.first?.groups == [other.solicitedNode])
        // A general query from a querier: one report of every group, within the 1 s it allows.
        h.sent.removeAll()
        var q = [UInt8](repeating: 0, count: 14 + 40 + 28)
        let querier = IPv6Address("fe80::99")!
        q.withUnsafeMutableBytes { b in
            EthernetRepr(destination: IPv6Address.allNodes.multicastMAC, source: L.hostMAC, etherType: .ipv6).emit(into: b)
            IPv6Repr(source: querier, destination: .allNodes, nextHeader: .icmpv6, payloadLength: 28, hopLimit: 1)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
            ICMPv6Repr.multicastListenerQuery(MLDQueryRepr(maximumResponseDelay: 1000))
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[54...]), source: querier, destination: .allNodes)
        }
        try L.inject(s, q, on: lan)
        #expect(try Self.reports(h).isEmpty || s.nextDeadline != nil)
        h.time += 1_001_000_000
        _ = s.runTimers(now: h.time)
        r = try Self.reports(h)
        #expect(r.count == 1 && r[0].type == MLDv2Report.isExclude && Set(r[0].groups) == [ll.solicitedNode, .allRouters])
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
    }
}

/// Duplicate address detection (RFC 4862 section 5.4).
@Suite("IPv6 duplicate address detection")
struct DADTests {
    typealias L = IPv6LocalTests

    static func fresh() throws -> (Stack, L.Recorder, InterfaceIndex) {
        let h = L.Recorder()
        let pool = PacketPool(capacity: 256, dataSize: 2048)
        h.pool = pool
        let s = Stack(name: "R", pool: pool, hypercalls: h)
        let lan = try s.addInterface(name: "lan", mac: L.routerMAC)
        try s.setUp(lan, true)
        return (s, h, lan)
    }

    @Test("a new address is probed from ::, unused while tentative, and used once the probe goes unanswered")
    func unanswered() throws {
        let (s, h, lan) = try Self.fresh()
        try s.addAddress(IPv6InterfaceAddress("2001:db8:1::1/64"), to: lan)
        #expect(s.state(of: L.routerAddress, on: lan) == .tentative)
        let probe = try h.sent.compactMap { f -> (ICMPv6Repr, IPv6Repr)? in
            let d = try L.decode(f)
            if case .neighborSolicitation = d.icmp { return (d.icmp, d.ip) }
            return nil
        }.first { $0.0 == .neighborSolicitation(target: L.routerAddress) }
        #expect(probe?.1.source == .any && probe?.1.destination == L.routerAddress.solicitedNode)
        h.sent.removeAll()
        // While tentative: a solicitation for it gets no answer.
        try L.inject(s, L.solicitation(for: L.routerAddress), on: lan)
        #expect(h.sent.isEmpty)
        h.time += 1_100_000_000
        _ = s.runTimers(now: h.time)
        #expect(s.state(of: L.routerAddress, on: lan) == .preferred)
        h.sent.removeAll()
        try L.inject(s, L.solicitation(for: L.routerAddress), on: lan)
        #expect(try L.decode(try #require(h.sent.last)).icmp
            == .neighborAdvertisement(target: L.routerAddress, flags: NAFlags.solicited | NAFlags.override | NAFlags.router))
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
    }

    @Test("an advertisement for the tentative address, or another node's probe for it: duplicated, reported, never used")
    func conflicts() throws {
        for byProbe in [false, true] {
            let (s, h, lan) = try Self.fresh()
            try s.addAddress(IPv6InterfaceAddress("2001:db8:1::1/64"), to: lan)
            let other = byProbe
                ? L.frame(to: L.routerAddress.solicitedNode.multicastMAC, from: .any, to: L.routerAddress.solicitedNode, icmpLength: 24) { m in
                    ICMPv6Repr.neighborSolicitation(target: L.routerAddress).emit(into: m, source: .any, destination: L.routerAddress.solicitedNode)
                }
                : L.frame(to: IPv6Address.allNodes.multicastMAC, from: L.routerAddress, to: .allNodes, icmpLength: 32) { m in
                    NDOption.targetLinkLayer(L.hostMAC).emit(into: UnsafeMutableRawBufferPointer(rebasing: m[24...]))
                    ICMPv6Repr.neighborAdvertisement(target: L.routerAddress, flags: NAFlags.override)
                        .emit(into: m, source: L.routerAddress, destination: .allNodes)
                }
            try L.inject(s, other, on: lan)
            #expect(s.state(of: L.routerAddress, on: lan) == .duplicated)
            var events: [StackEvent] = []
            while let e = s.popEvent() { events.append(e) }
            #expect(events.contains(.duplicateAddress(interface: lan, address: L.routerAddress)), "\(events)")
            h.time += 5_000_000_000
            _ = s.runTimers(now: h.time)
            #expect(s.state(of: L.routerAddress, on: lan) == .duplicated, "stays duplicated")
            h.sent.removeAll()
            try L.inject(s, L.solicitation(for: L.routerAddress), on: lan)
            #expect(h.sent.isEmpty, "a duplicated address is never answered for")
            #expect(s.ledger.balanced, "\(s.ledger.violations)")
        }
    }
}


/// RFC 6724 source selection among an interface's IPv6 addresses.
@Suite("IPv6 source address selection")
struct SourceSelection6Tests {
    typealias L = IPv6LocalTests

    @Test("scope, label and longest prefix decide, in that order; tentative addresses never take part")
    func rules() throws {
        let (s, h, lan) = try L.stack()  // fe80::ff:fe00:1, 2001:db8:1::1/64
        try s.addAddress(IPv6InterfaceAddress("fd00:1::1/64"), to: lan)
        try s.addAddress(IPv6InterfaceAddress("2001:db8:2:3::1/64"), to: lan)
        L.passDAD(s, h)
        try s.addRoute(IPv6Prefix("::/0"), via: IPv6Address("fe80::9")!, interface: lan)
        func chosen(_ d: String) -> (IPv6Address?, String) {
            let e = s.explainSource(IPv6Address(d)!)
            return (e?.chosen, e?.reason ?? "-")
        }
        // A link-local destination: the link-local address (rule 2).
        #expect(chosen("fe80::9").0 == IPv6Address("fe80::ff:fe00:1"), "\(chosen("fe80::9"))")
        // A ULA destination: the ULA address (rule 6, label 13).
        #expect(chosen("fd00:2::7").0 == IPv6Address("fd00:1::1"), "\(chosen("fd00:2::7"))")
        // Global destinations: the longest common prefix (rule 8).
        #expect(chosen("2001:db8:2:3::99").0 == IPv6Address("2001:db8:2:3::1"))
        #expect(chosen("2001:db8:1::99").0 == IPv6Address("2001:db8:1::1"))
        #expect(chosen("2001:db8:1::99").1 == "rule longest-prefix")
        // Our own address: itself (rule 1).
        #expect(chosen("2001:db8:2:3::1").0 == IPv6Address("2001:db8:2:3::1"))
        // A new, tentative address is not a candidate.
        try s.addAddress(IPv6InterfaceAddress("2001:db8:1::99/64"), to: lan)
        #expect(chosen("2001:db8:1::99").0 == IPv6Address("2001:db8:1::1"))
        #expect(s.explainSource(IPv6Address("2001:db8:1::99")!)?.candidates.contains(IPv6Address("2001:db8:1::99")!) == false)
        // Two addresses the rules cannot tell apart: the first configured, until a preference says otherwise.
        L.passDAD(s, h)
        #expect(chosen("2001:db8:1::5").0 == IPv6Address("2001:db8:1::1") && chosen("2001:db8:1::5").1 == "the first configured of equals")
        try s.setPreference(IPv6Address("2001:db8:1::99")!, on: lan, 10)
        #expect(chosen("2001:db8:1::5").0 == IPv6Address("2001:db8:1::99") && chosen("2001:db8:1::5").1 == "rule preference")
        // The rules come first: a longer common prefix beats any preference.
        #expect(chosen("2001:db8:2:3::5").0 == IPv6Address("2001:db8:2:3::1"))
        #expect(throws: InterfaceError.self) { try s.setPreference(IPv6Address("2001:db8:7::1")!, on: lan, 1) }
    }
}

/// IPv6 reassembly (RFC 8200 section 4.5) for our own addresses: the same
/// table and rules as IPv4's.
@Suite("IPv6 reassembly")
struct IPv6ReassemblyTests {
    typealias L = IPv6LocalTests

    /// An echo request of `size` message bytes, cut at `cut` (a multiple of
    /// 8) into two fragments with identification `id`.
    static func fragments(size: Int, cut: Int, id: UInt32, sequence: UInt16 = 1) -> [[UInt8]] {
        var message = [UInt8](repeating: 0, count: size)
        for i in 8..<size { message[i] = UInt8(truncatingIfNeeded: i * 7) }
        message.withUnsafeMutableBytes { m in
            ICMPv6Repr.echoRequest(identifier: 9, sequence: sequence).emit(into: m, source: L.host, destination: L.routerAddress)
        }
        return [(0, cut, true), (cut, size, false)].map { start, end, more in
            var f = [UInt8](repeating: 0, count: 14 + 40 + 8 + end - start)
            f.withUnsafeMutableBytes { b in
                EthernetRepr(destination: L.routerMAC, source: L.hostMAC, etherType: .ipv6).emit(into: b)
                IPv6Repr(source: L.host, destination: L.routerAddress, nextHeader: .ipv6Fragment, payloadLength: 8 + end - start)
                    .emit(into: b.tail(from: 14))
                IPv6FragmentRepr(nextHeader: .icmpv6, offset: start, moreFragments: more, identification: id).emit(into: b.tail(from: 54))
            }
            f.replaceSubrange(62..., with: message[start..<end])
            return f
        }
    }

    @Test("fragments in any order make one echo request, answered whole; an overlap discards the datagram")
    func reassembles() throws {
        let (s, h, lan) = try L.stack()
        try L.inject(s, L.solicitation(for: L.routerAddress), on: lan)
        h.sent.removeAll()
        let f = Self.fragments(size: 1200, cut: 600, id: 77)
        try L.inject(s, f[1], on: lan)
        #expect(h.sent.isEmpty)
        try L.inject(s, f[0], on: lan)
        let reply = try L.decode(try #require(h.sent.last))
        #expect(reply.icmp == .echoReply(identifier: 9, sequence: 1) && reply.ip.payloadLength == 1200)
        #expect(s.counters.datagramsReassembled == 1 && s.counters.fragmentsReassembled == 2)
        // The second fragment overlaps the first by 8 bytes: both go.
        let g = Self.fragments(size: 1200, cut: 600, id: 78, sequence: 2)
        try L.inject(s, g[0], on: lan)
        var overlapping = g[1]
        overlapping[54 + 2] = 0x02; overlapping[54 + 3] = 0x50  // offset 592
        try L.inject(s, overlapping, on: lan)
        #expect(s.drops(.fragmentOverlap) == 2)
        // 1 800 bytes in two fragments: the reply is larger than the link, so it leaves in fragments as well.
        h.sent.removeAll()
        for f in Self.fragments(size: 1800, cut: 904, id: 79, sequence: 3) { try L.inject(s, f, on: lan) }
        #expect(h.sent.count == 2 && h.sent.allSatisfy { $0.count <= 14 + 1500 && $0[14 + 6] == 44 }, "\(h.sent.map(\.count))")
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
    }

    @Test("a first fragment alone times out: counted, and time exceeded (code 1) goes back")
    func timesOut() throws {
        let (s, h, lan) = try L.stack()
        try L.inject(s, L.solicitation(for: L.routerAddress), on: lan)
        h.sent.removeAll()
        try L.inject(s, Self.fragments(size: 1200, cut: 600, id: 5)[0], on: lan)
        h.time += 31_000_000_000
        _ = s.runTimers(now: h.time)
        #expect(s.drops(.reassemblyTimeout) == 1)
        let error = try L.decode(try #require(h.sent.last))
        #expect(error.icmp == .timeExceeded(code: 1) && error.ip.destination == L.host)
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
    }
}

/// A follower replica (several workers): neighbour discovery, duplicate
/// address detection, router advertisements and MLD run on the owner; the
/// follower asks it, hands it what only the owner answers, and shares what
/// it learns.
@Suite("IPv6 on a follower replica")
struct IPv6ReplicaTests {
    typealias L = IPv6LocalTests
    typealias F = IPv6ForwardingTests

    @Test("no DAD, RA or MLD of its own; unknown next hops and solicitations go to the owner; any answer is taken and shared")
    func follower() throws {
        var c = StackConfiguration()
        c.replica = .follower
        c.arp.shareLearned = true
        let h = L.Recorder()
        let pool = PacketPool(capacity: 256, dataSize: 2048)
        h.pool = pool
        let s = Stack(name: "F", configuration: c, pool: pool, hypercalls: h)
        let lan = try s.addInterface(name: "lan", mac: L.routerMAC), wan = try s.addInterface(name: "wan", mac: F.wanMAC)
        for i in [lan, wan] { try s.setUp(i, true); try s.enableIPv6(on: i) }
        try s.addAddress(IPv6InterfaceAddress("2001:db8:1::1/64"), to: lan)
        try s.addAddress(IPv6InterfaceAddress("2001:db8:2::1/64"), to: wan)
        var ra = RouterAdvertisements()
        ra.interval = .seconds(30)
        try s.setRouterAdvertisements(ra, on: lan)
        #expect(s.state(of: IPv6Address("2001:db8:1::1")!, on: lan) == .preferred, "the owner checks for duplicates")
        for _ in 0..<3 { h.time += 17_000_000_000; _ = s.runTimers(now: h.time) }
        #expect(h.sent.isEmpty, "no probe, advertisement or report from a follower: \(h.sent.count) frames")
        // A router solicitation: the owner answers it.
        let rs = L.frame(to: IPv6Address.allRouters.multicastMAC, from: L.hostLinkLocal, to: .allRouters, icmpLength: 16) { m in
            NDOption.sourceLinkLayer(L.hostMAC).emit(into: UnsafeMutableRawBufferPointer(rebasing: m[8...]))
            ICMPv6Repr.routerSolicitation.emit(into: m, source: L.hostLinkLocal, destination: .allRouters)
        }
        try L.inject(s, rs, on: lan)
        #expect(s.drainEvents().contains(.routerSolicited(interface: lan)))
        #expect(h.sent.isEmpty)
        // A packet for an unknown next hop: the owner is asked to resolve it; the packet waits.
        try L.inject(s, L.solicitation(for: L.routerAddress), on: lan)  // A known, as a host would be
        h.sent.removeAll()
        _ = s.drainEvents()
        try L.inject(s, F.udp(to: F.b), on: lan)
        #expect(h.sent.isEmpty, "no solicitation from a follower")
        #expect(s.drainEvents().contains(.neighbor6Wanted(address: F.b, interface: wan)))
        // The owner's solicitation is answered here: taken, the packet leaves, and it is shared.
        try L.inject(s, F.advertisement(from: F.b, mac: F.bMAC, to: IPv6Address("2001:db8:2::1")!, routerMAC: F.wanMAC), on: wan)
        #expect(try F.header(try #require(h.sent.last)).eth.destination == F.bMAC)
        #expect(s.drainEvents().contains(.neighbor6Learned(address: F.b, interface: wan, mac: F.bMAC)))
        // An answer to a question only the owner asked: taken and shared all the same.
        let other = IPv6Address("2001:db8:2::7")!, otherMAC = MACAddress(2, 0, 0, 0, 0, 7)
        try L.inject(s, F.advertisement(from: other, mac: otherMAC, to: IPv6Address("2001:db8:2::1")!, routerMAC: F.wanMAC), on: wan)
        #expect(s.drainEvents().contains(.neighbor6Learned(address: other, interface: wan, mac: otherMAC)))
        #expect(s.neighborList6.contains { $0.address == other && $0.state == .reachable })
        // What the owner learns arrives without being shared back.
        try s.learnNeighbor(IPv6Address("2001:db8:2::8")!, on: wan, mac: MACAddress(2, 0, 0, 0, 0, 8))
        #expect(s.drainEvents().isEmpty)
        // A duplicate the owner found.
        s.markDuplicated(IPv6Address("2001:db8:1::1")!, on: lan)
        #expect(s.state(of: IPv6Address("2001:db8:1::1")!, on: lan) == .duplicated)
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
    }
}

@Suite("IPv6 UDP sockets")
struct IPv6SocketTests {
    typealias L = IPv6LocalTests

    /// A UDP datagram from the host to the router's port 9, its checksum right, wrong, or partial.
    static func datagram(_ checksum: String) -> [UInt8] {
        let payload: [UInt8] = [1, 2, 3, 4, 5]
        var f = L.frame(to: L.routerMAC, from: L.host, to: L.routerAddress, hopLimit: 64, icmpLength: 8 + payload.count) { m in
            for (k, x) in payload.enumerated() { m[8 + k] = x }
            UDPRepr(sourcePort: 7777, destinationPort: 9, payloadLength: payload.count).emit(into: m, source: L.host, destination: L.routerAddress)
            switch checksum {
            case "bad": m[6] ^= 0x55
            case "partial":
                m.setBE16(6, InternetChecksum.fold(InternetChecksum.pseudoHeaderSum(source: L.host, destination: L.routerAddress,
                                                                                    nextHeader: .udp, length: 8 + payload.count)))
            default: break
            }
        }
        f[14 + 6] = IPProtocol.udp.rawValue
        return f
    }

    @Test("a datagram is checked and delivered with its source; a bad checksum is dropped; a partial one the device vouches for is taken")
    func checksums() throws {
        let (s, _, lan) = try L.stack()
        let k = try s.openSocket(.udp)
        try s.bind(k, address: .v6(L.routerAddress), port: 9)
        try L.inject(s, Self.datagram("good"), on: lan)
        let d = try #require(s.socketReceive(k))
        #expect(d.from == .v6(L.host) && d.port == 7777 && s.pool.copyBytes(d.packet) == [1, 2, 3, 4, 5])
        s.pool.free(d.packet)
        try L.inject(s, Self.datagram("bad"), on: lan)
        #expect(s.socketReceive(k) == nil && s.drops(.udpBadChecksum) == 1)
        // Left partial by the device that handed it over (a UDP super-frame of one datagram): not checked again.
        var p = try #require(s.pool.make(copying: Self.datagram("partial")))
        p.offload = PacketHandle.checksumPartial
        s.receive(p, on: lan)
        let q = try #require(s.socketReceive(k))
        #expect(s.pool.copyBytes(q.packet) == [1, 2, 3, 4, 5])
        s.pool.free(q.packet)
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
    }
}
