import AnygateStack
import AnygateWire
import Testing

@Suite("Routing table", .ledgerAudited)
struct RoutingTests {
    /// A stack with one up interface on 10.0.0.0/8 so that gateways resolve.
    func router(interfaces: Int = 1) throws -> (MemoryNetwork, Stack, [InterfaceIndex]) {
        let net = MemoryNetwork()
        let s = net.addStack(name: "R")
        var ifs: [InterfaceIndex] = []
        for k in 0..<interfaces {
            let i = try s.addInterface(name: "if\(k)", mac: MACAddress(2, 0, 0, 0, 0, UInt8(k)))
            try s.addAddress(IPv4InterfaceAddress(address: IPv4Address(10, UInt8(k), 0, 1), prefixLength: 16), to: i)
            try s.setUp(i, true)
            ifs.append(i)
        }
        return (net, s, ifs)
    }

    @Test("longest prefix wins, and deleting it falls back to the covering route")
    func longestPrefix() throws {
        let (_, s, _) = try router()
        try s.addRoute(.any, via: IPv4Address(10, 0, 0, 2))
        try s.addRoute(IPv4Prefix("192.168.0.0/16"), via: IPv4Address(10, 0, 0, 3))
        try s.addRoute(IPv4Prefix("192.168.5.0/24"), via: IPv4Address(10, 0, 0, 4))
        try s.addRoute(IPv4Prefix("192.168.5.128/25"), via: IPv4Address(10, 0, 0, 5))
        try s.addRoute(IPv4Prefix("192.168.5.129/32"), via: IPv4Address(10, 0, 0, 6))
        func via(_ a: String) -> IPv4Address? { s.lookup(IPv4Address(a)!)?.nextHop }
        #expect(via("8.8.8.8") == IPv4Address(10, 0, 0, 2))
        #expect(via("192.168.1.1") == IPv4Address(10, 0, 0, 3))
        #expect(via("192.168.5.1") == IPv4Address(10, 0, 0, 4))
        #expect(via("192.168.5.200") == IPv4Address(10, 0, 0, 5))
        #expect(via("192.168.5.129") == IPv4Address(10, 0, 0, 6))
        try s.deleteRoute(IPv4Prefix("192.168.5.128/25"))
        #expect(via("192.168.5.200") == IPv4Address(10, 0, 0, 4))
        #expect(via("192.168.5.129") == IPv4Address(10, 0, 0, 6))
        try s.deleteRoute(IPv4Prefix("192.168.5.0/24"))
        #expect(via("192.168.5.200") == IPv4Address(10, 0, 0, 3))
        try s.deleteRoute(IPv4Prefix("192.168.0.0/16"))
        #expect(via("192.168.5.200") == IPv4Address(10, 0, 0, 2))
        #expect(via("192.168.5.129") == IPv4Address(10, 0, 0, 6))
        try s.deleteRoute(IPv4Prefix.any)
        #expect(s.lookup(IPv4Address(8, 8, 8, 8)) == nil)
        s.checkInvariants()
    }

    @Test("metrics: the lowest wins; replace swaps the route of equal metric")
    func metricsAndReplace() throws {
        let (_, s, _) = try router()
        let p = try IPv4Prefix("172.16.0.0/12")
        try s.addRoute(p, via: IPv4Address(10, 0, 0, 2), metric: 20)
        try s.addRoute(p, via: IPv4Address(10, 0, 0, 3), metric: 10)
        #expect(s.lookup(IPv4Address(172, 16, 1, 1))?.nextHop == IPv4Address(10, 0, 0, 3))
        try s.replaceRoute(p, via: IPv4Address(10, 0, 0, 4), metric: 10)
        #expect(s.lookup(IPv4Address(172, 16, 1, 1))?.nextHop == IPv4Address(10, 0, 0, 4))
        #expect(s.routes.filter { $0.prefix == p }.count == 2)
        try s.deleteRoute(p, via: IPv4Address(10, 0, 0, 4))
        #expect(s.lookup(IPv4Address(172, 16, 1, 1))?.nextHop == IPv4Address(10, 0, 0, 2))
    }

    @Test("a device route sends to the destination itself as next hop")
    func deviceRoute() throws {
        let t = try Topology()
        try t.warmUp()
        // B is reachable on R2's LAN; tell R2 the whole 10.3/16 is on that LAN too.
        try t.b.addAddress(IPv4InterfaceAddress("10.3.0.7/16"), to: t.bEth)
        try t.r2.addRoute(IPv4Prefix("10.3.0.0/16"), interface: t.r2Lan)
        try t.r1.addRoute(IPv4Prefix("10.3.0.0/16"), via: Topology.r2WanAddr)
        #expect(t.r2.lookup(IPv4Address(10, 3, 0, 7))?.kind == .connected)
        #expect(t.r2.lookup(IPv4Address(10, 3, 0, 7))?.nextHop == nil)
        try t.a.ping(IPv4Address(10, 3, 0, 7))
        t.net.run()
        #expect(t.a.echoReplies().first?.from == IPv4Address(10, 3, 0, 7))
        #expect(t.r2.neighborList.contains { $0.address == IPv4Address(10, 3, 0, 7) && $0.state == .reachable })
    }

    @Test("routes through a down interface are withdrawn; a backup takes over and they return on link up")
    func withdrawal() throws {
        let (_, s, ifs) = try router(interfaces: 2)
        let p = try IPv4Prefix("203.0.113.0/24")
        try s.addRoute(p, via: IPv4Address(10, 0, 0, 2), metric: 10)
        try s.addRoute(p, via: IPv4Address(10, 1, 0, 2), metric: 20)
        try s.addRoute(.any, via: IPv4Address(10, 1, 0, 3))
        let d = IPv4Address(203, 0, 113, 9)
        #expect(s.lookup(d)?.nextHop == IPv4Address(10, 0, 0, 2))
        try s.setUp(ifs[0], false)
        #expect(s.lookup(d)?.nextHop == IPv4Address(10, 1, 0, 2), "the backup of the same prefix")
        #expect(s.lookup(IPv4Address(10, 0, 0, 9))?.prefix == .any, "the connected subnet is withdrawn too: the default catches it")
        #expect(s.routes.contains { $0.prefix == p && $0.nextHop == IPv4Address(10, 0, 0, 2) }, "still listed")
        try s.setUp(ifs[1], false)
        #expect(s.lookup(d) == nil)
        try s.setUp(ifs[1], true)
        #expect(s.lookup(d)?.nextHop == IPv4Address(10, 1, 0, 2))
        try s.setUp(ifs[0], true)
        #expect(s.lookup(d)?.nextHop == IPv4Address(10, 0, 0, 2))
        s.checkInvariants()
    }

    @Test("refused route changes say why")
    func errors() throws {
        let (_, s, _) = try router()
        try s.addRoute(IPv4Prefix("10.9.0.0/16"), via: IPv4Address(10, 0, 0, 2))
        #expect(throws: RouteError.exists(try IPv4Prefix("10.9.0.0/16"))) {
            try s.addRoute(IPv4Prefix("10.9.0.0/16"), via: IPv4Address(10, 0, 0, 2))
        }
        #expect(throws: RouteError.nextHopUnreachable(IPv4Address(192, 0, 2, 1))) {
            try s.addRoute(IPv4Prefix("10.8.0.0/16"), via: IPv4Address(192, 0, 2, 1))
        }
        #expect(throws: RouteError.notFound(try IPv4Prefix("10.7.0.0/16"))) {
            try s.deleteRoute(IPv4Prefix("10.7.0.0/16"))
        }
        #expect(throws: RouteError.noSuchInterface(42)) {
            try s.addRoute(IPv4Prefix("10.6.0.0/16"), interface: 42)
        }
        #expect(throws: AddressParseError.self) { try IPv4Prefix("10.6.0.1/16") }
    }

    @Test("addresses make connected, local and broadcast routes, and take them away")
    func connectedRoutes() throws {
        let (_, s, ifs) = try router()
        try s.addAddress(IPv4InterfaceAddress("192.0.2.1/24"), to: ifs[0])
        #expect(s.lookup(IPv4Address(192, 0, 2, 1))?.kind == .local)
        #expect(s.lookup(IPv4Address(192, 0, 2, 255))?.kind == .broadcast)
        #expect(s.lookup(IPv4Address(192, 0, 2, 77))?.kind == .connected)
        try s.addRoute(IPv4Prefix("198.51.100.0/24"), via: IPv4Address(192, 0, 2, 9))
        try s.removeAddress(IPv4Address(192, 0, 2, 1), from: ifs[0])
        #expect(s.lookup(IPv4Address(192, 0, 2, 1)) == nil)
        #expect(s.lookup(IPv4Address(198, 51, 100, 1)) == nil, "a gateway route through the removed subnet goes too")
        #expect(!s.routes.contains { $0.isInternal })
    }

    @Test("the LPM agrees with a linear scan over random routes, adds and deletes")
    func lpmAgainstLinearScan() throws {
        let (_, s, _) = try router()
        var rng = SplitMix64(seed: 42)
        var reference: [IPv4Prefix: IPv4Address] = [:]
        let gateway = { (k: UInt64) in IPv4Address(10, 0, UInt8(k % 200 + 1), UInt8(k % 250 + 2)) }
        func check() {
            for _ in 0..<3000 {
                // Half the probes near a known prefix, half anywhere.
                var a = IPv4Address(rawValue: UInt32(truncatingIfNeeded: rng.next()))
                if rng.next() & 1 == 0, let p = reference.keys.randomElement(using: &rng) {
                    a = IPv4Address(rawValue: p.address.rawValue | (UInt32(truncatingIfNeeded: rng.next()) & ~p.mask))
                }
                let best = reference.keys.filter { $0.contains(a) }.max { $0.length < $1.length }
                let got = s.lookup(a)
                if a.rawValue >> 16 == 0x0A00 { continue }  // the connected 10.0/16 lives there
                #expect(got?.prefix == best, "lookup \(a)")
                if let best { #expect(got?.nextHop == reference[best]) }
            }
        }
        for round in 0..<6 {
            for _ in 0..<400 {
                let len = Int(rng.next() % 33)
                let p = IPv4Prefix(address: IPv4Address(rawValue: UInt32(truncatingIfNeeded: rng.next())), length: len)
                if p.contains(IPv4Address(10, 0, 0, 1)) || p.address.rawValue >> 16 == 0x0A00 { continue }
                if reference[p] != nil { continue }
                let g = gateway(rng.next())
                try s.addRoute(p, via: g)
                reference[p] = g
            }
            check()
            for p in Array(reference.keys).shuffled(using: &rng).prefix(150 + round * 20) {
                try s.deleteRoute(p)
                reference[p] = nil
            }
            check()
            s.checkInvariants()
        }
    }
}

