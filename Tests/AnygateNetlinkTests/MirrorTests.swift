import AnygateDaemon
import AnygateNetlink
import AnygateStack
import AnygateWire
import Testing

/// The mirror's translation of host events into stack state, driven by a
/// fake event source (no netlink).
@Suite("Mirror: host events into the stack")
struct MirrorTests {
    let hostIndex: Int32 = 7
    let link = HostLink(index: 7, name: "veth0", mac: MACAddress(2, 0xAA, 0, 0, 0, 7), mtu: 1400, adminUp: true, operUp: true)

    func setUp(routes: MirrorRoutesConfig? = MirrorRoutesConfig()) throws -> (MemoryNetwork, Stack, InterfaceIndex, HostMirror) {
        let net = MemoryNetwork()
        let s = net.addStack(name: "S")
        let i = try s.addInterface(name: "wan0", mac: MACAddress(2, 0, 0, 0, 0, 1))
        try s.setHostOwned(i, true)
        let m = HostMirror(mirrored: ["veth0": i], routes: routes)
        return (net, s, i, m)
    }

    func route(_ prefix: String, _ hops: [(String?, Int32)], metric: UInt32 = 0, proto: String = "bird", table: UInt32 = 254) throws -> HostRoute {
        HostRoute(table: table, prefix: try IPv4Prefix(prefix),
                  nextHops: Set(hops.map { HostNextHop(gateway: $0.0.flatMap { IPv4Address($0) }, interface: $0.1) }),
                  metric: metric, proto: RouteProtocols.byName[proto]!)
    }

    @Test("a mirrored interface follows the host's MAC, MTU, state and addresses")
    func interfaceIdentity() throws {
        let (_, s, i, m) = try setUp()
        m.apply([.linkChanged(link), .addressAdded(index: hostIndex, address: try IPv4InterfaceAddress("192.0.2.10/24"))], to: s)
        var st = s.status(i)
        #expect(st.mac == link.mac && st.mtu == 1400 && st.up)
        #expect(st.addresses.map(\.address) == [try IPv4InterfaceAddress("192.0.2.10/24")])
        var down = link
        down.operUp = false
        m.apply(.linkChanged(down), to: s)
        #expect(!s.status(i).up)
        m.apply(.linkChanged(link), to: s)
        m.apply(.addressRemoved(index: hostIndex, address: try IPv4InterfaceAddress("192.0.2.10/24")), to: s)
        st = s.status(i)
        #expect(st.up && st.addresses.isEmpty)
        // The host interface disappears: down, not a crash; it comes back.
        m.apply(.linkRemoved(index: hostIndex, name: "veth0"), to: s)
        #expect(!s.status(i).up && !m.isPresent("veth0"))
        m.apply(.linkChanged(link), to: s)
        #expect(s.status(i).up && m.isPresent("veth0"))
        // Events about other host interfaces change nothing.
        m.apply(.addressAdded(index: 99, address: try IPv4InterfaceAddress("198.51.100.1/24")), to: s)
        #expect(s.status(i).addresses.isEmpty)
    }

    @Test("host routes are imported with their ECMP next hops, metric and origin, and removed")
    func routes() throws {
        let (_, s, _, m) = try setUp()
        m.apply([.linkChanged(link), .addressAdded(index: hostIndex, address: try IPv4InterfaceAddress("192.0.2.10/24"))], to: s)
        let multipath = try route("10.9.0.0/16", [("192.0.2.1", 7), ("192.0.2.2", 7)], metric: 20)
        m.apply(.routeAdded(multipath), to: s)
        let installed = s.routes.filter { $0.prefix == multipath.prefix }
        #expect(Set(installed.map(\.nextHop)) == [IPv4Address(192, 0, 2, 1), IPv4Address(192, 0, 2, 2)])
        #expect(installed.allSatisfy { $0.origin == .mirror && $0.metric == 20 })
        #expect(m.importedCounts == ["254/bird": 1])
        // Replaced by a single next hop (a route change arrives as remove + add).
        let single = try route("10.9.0.0/16", [("192.0.2.3", 7)], metric: 20)
        m.apply([.routeRemoved(multipath), .routeAdded(single)], to: s)
        #expect(s.routes.filter { $0.prefix == multipath.prefix }.map(\.nextHop) == [IPv4Address(192, 0, 2, 3)])
        m.apply(.routeRemoved(single), to: s)
        #expect(s.routes.filter { $0.prefix == multipath.prefix }.isEmpty)
        #expect(s.lookup(IPv4Address(10, 9, 1, 1)) == nil)
    }

    @Test("routes through host twins become routes through their stack interfaces (ECMP included); the twins' own link and address events are the daemon's")
    func twins() throws {
        let net = MemoryNetwork()
        let s = net.addStack(name: "S")
        let wan = try s.addInterface(name: "wan0", mac: MACAddress(2, 0, 0, 0, 0, 1))
        try s.addAddress(IPv4InterfaceAddress("192.0.2.1/24"), to: wan)
        var tunnels: [InterfaceIndex] = []
        for k in 1...2 {
            var c = TunnelConfiguration(name: "gre\(k)", local: IPv4Address(192, 0, 2, 1), remote: IPv4Address(192, 0, 2, UInt8(10 + k)))
            c.key = UInt32(k)
            let t = try s.addTunnel(c)
            try s.addAddress(IPv4InterfaceAddress("172.16.\(k).1/30"), to: t)
            tunnels.append(t)
        }
        let m = HostMirror(mirrored: [:], routes: nil)
        m.twins = ["twgre1": tunnels[0], "twgre2": tunnels[1]]
        var seen: [String] = []
        m.twinEvent = { name, _ in seen.append(name) }
        let tw1 = HostLink(index: 11, name: "twgre1", mac: nil, mtu: 1476, adminUp: true, operUp: true)
        let tw2 = HostLink(index: 12, name: "twgre2", mac: nil, mtu: 1476, adminUp: true, operUp: true)
        let other = HostLink(index: 13, name: "eth0", mac: MACAddress(2, 0, 0, 0, 0, 9), mtu: 1500, adminUp: true, operUp: true)
        m.apply([.linkChanged(tw1), .linkChanged(tw2), .linkChanged(other)], to: s)
        m.apply(.addressAdded(index: 11, address: try IPv4InterfaceAddress("10.99.0.1/24")), to: s)
        #expect(seen == ["twgre1", "twgre2", "twgre1"], "the twins' events go to the daemon")
        #expect(s.status(tunnels[0]).addresses.map(\.address) == [try IPv4InterfaceAddress("172.16.1.1/30")], "an address added by hand is not taken")
        // OSPF's route over both tunnels (ECMP), through the twins.
        let both = try route("10.2.0.0/24", [("172.16.1.2", 11), ("172.16.2.2", 12)])
        m.apply(.routeAdded(both), to: s)
        let installed = s.routes.filter { $0.prefix == both.prefix }
        #expect(Set(installed.map(\.interface)) == Set(tunnels) && Set(installed.map(\.nextHop)) == [IPv4Address(172, 16, 1, 2), IPv4Address(172, 16, 2, 2)])
        #expect(installed.allSatisfy { $0.origin == .mirror })
        // Not imported: the kernel's own routes on a twin, and routes by other host interfaces.
        m.apply([.routeAdded(try route("172.16.1.0/30", [(nil, 11)], proto: "kernel")), .routeAdded(try route("10.7.0.0/16", [("10.0.0.1", 13)]))], to: s)
        #expect(s.routes.filter { $0.origin == .mirror }.count == 2)
        m.apply(.routeRemoved(both), to: s)
        #expect(s.routes.filter { $0.origin == .mirror }.isEmpty)
    }

    @Test("only the configured table and protocols are imported; excluded prefixes and kernel routes are not")
    func filters() throws {
        var cfg = MirrorRoutesConfig()
        cfg.protocols = [RouteProtocols.byName["bird"]!, RouteProtocols.byName["static"]!]
        cfg.exclude = [try IPv4Prefix("10.66.0.0/16")]
        let (_, s, _, m) = try setUp(routes: cfg)
        m.apply([.linkChanged(link), .addressAdded(index: hostIndex, address: try IPv4InterfaceAddress("192.0.2.10/24"))], to: s)
        m.apply([
            .routeAdded(try route("10.1.0.0/16", [("192.0.2.1", 7)], proto: "bird")),
            .routeAdded(try route("10.2.0.0/16", [("192.0.2.1", 7)], proto: "static")),
            .routeAdded(try route("10.3.0.0/16", [("192.0.2.1", 7)], proto: "ospf")),
            .routeAdded(try route("10.4.0.0/16", [("192.0.2.1", 7)], proto: "bird", table: 100)),
            .routeAdded(try route("10.66.0.0/16", [("192.0.2.1", 7)], proto: "bird")),
            .routeAdded(try route("192.0.2.0/24", [(nil, 7)], proto: "kernel")),
            .routeAdded(try route("10.5.0.0/16", [("198.51.100.1", 99)], proto: "bird")),  // via a host-only interface
        ], to: s)
        let mirrored = Set(s.routes.filter { $0.origin == .mirror }.map(\.prefix.description))
        #expect(mirrored == ["10.1.0.0/16", "10.2.0.0/16"])
        #expect(m.skippedRoutes == 1)
    }

    @Test("host neighbours are learnt")
    func neighbors() throws {
        let (_, s, i, m) = try setUp()
        m.apply([.linkChanged(link), .addressAdded(index: hostIndex, address: try IPv4InterfaceAddress("192.0.2.10/24"))], to: s)
        m.apply(.neighborChanged(index: hostIndex, address: IPv4Address(192, 0, 2, 1), mac: MACAddress(2, 0, 0, 0, 0, 0x99)), to: s)
        m.apply(.neighborChanged(index: hostIndex, address: IPv4Address(192, 0, 2, 5), mac: nil), to: s)
        let n = s.neighborList
        #expect(n.count == 1 && n.first?.address == IPv4Address(192, 0, 2, 1) && n.first?.interface == i)
        #expect(n.first?.state == .reachable && n.first?.mac == MACAddress(2, 0, 0, 0, 0, 0x99))
    }

    @Test("a resync from a full dump removes what the host no longer has")
    func resync() throws {
        let (_, s, i, m) = try setUp()
        let a1 = try IPv4InterfaceAddress("192.0.2.10/24"), a2 = try IPv4InterfaceAddress("192.0.2.11/24")
        let r1 = try route("10.1.0.0/16", [("192.0.2.1", 7)]), r2 = try route("10.2.0.0/16", [("192.0.2.1", 7)])
        m.apply([.linkChanged(link), .addressAdded(index: hostIndex, address: a1), .addressAdded(index: hostIndex, address: a2),
                 .routeAdded(r1), .routeAdded(r2)], to: s)
        #expect(s.routes.filter { $0.origin == .mirror }.count == 2)
        // Messages were lost meanwhile: the dump has a1 and r1 only, and a new route r3.
        let r3 = try route("10.3.0.0/16", [("192.0.2.1", 7)])
        m.resync(snapshot: [.linkChanged(link), .addressAdded(index: hostIndex, address: a1), .routeAdded(r1), .routeAdded(r3)],
                 to: s, reason: "test")
        #expect(s.status(i).addresses.map(\.address) == [a1])
        #expect(Set(s.routes.filter { $0.origin == .mirror }.map(\.prefix)) == [r1.prefix, r3.prefix])
        #expect(m.resyncs == 1)
        s.checkInvariants()
    }
}

/// The same for IPv6: addresses (no duplicate address detection: the host
/// did it), routes with link-local next hops and ECMP, neighbours, resync.
@Suite("Mirror: host IPv6 events into the stack")
struct Mirror6Tests {
    let hostIndex: Int32 = 7
    let link = HostLink(index: 7, name: "veth0", mac: MACAddress(2, 0xAA, 0, 0, 0, 7), mtu: 1500, adminUp: true, operUp: true)

    func route(_ prefix: String, _ hops: [(String?, Int32)], metric: UInt32 = 1024, proto: String = "bird") throws -> HostRoute6 {
        HostRoute6(table: 254, prefix: try IPv6Prefix(prefix),
                   nextHops: Set(hops.map { HostNextHop6(gateway: $0.0.flatMap { IPv6Address($0) }, interface: $0.1) }),
                   metric: metric, proto: RouteProtocols.byName[proto]!)
    }

    @Test("addresses are the host's at once (no DAD), routes with ECMP link-local next hops come and go, neighbours are learnt, a resync trims")
    func mirror6() throws {
        var cfg = MirrorRoutesConfig()
        cfg.exclude6 = [try IPv6Prefix("2001:db8:77::/48")]
        let (_, s, i, m) = try MirrorTests().setUp(routes: cfg)
        let global = try IPv6InterfaceAddress("2001:db8:1::10/64"), linkLocal = try IPv6InterfaceAddress("fe80::aa:ff:fe00:7/64")
        m.apply([.linkChanged(link), .address6Added(index: hostIndex, address: linkLocal), .address6Added(index: hostIndex, address: global)], to: s)
        #expect(Set(s.addresses6(on: i)) == [global, linkLocal])
        #expect(s.state(of: global.address, on: i) == .preferred, "the host checked it already")
        #expect(s.lookup(IPv6Address("2001:db8:1::99")!)?.kind == .connected)
        // A default route through two routers by their link-local addresses; a link-local prefix and a kernel route are not taken.
        let def = try route("::/0", [("fe80::1", 7), ("fe80::2", 7)])
        m.apply([.route6Added(def), .route6Added(try route("fe80::/64", [(nil, 7)])),
                 .route6Added(try route("2001:db8:1::/64", [(nil, 7)], proto: "kernel")),
                 .route6Added(try route("2001:db8:77::/48", [("fe80::1", 7)]))], to: s)
        #expect(s.equalCostSet(for: def.prefix).map(\.nextHop) .sorted { $0! < $1! } == [IPv6Address("fe80::1"), IPv6Address("fe80::2")])
        #expect(s.routes6.filter { $0.origin == .mirror }.count == 2)
        #expect(m.importedCounts["254/bird"] == 1)
        // The host knows a neighbour: so does the stack, REACHABLE.
        m.apply(.neighbor6Changed(index: hostIndex, address: IPv6Address("fe80::1")!, mac: MACAddress(2, 0, 0, 0, 0, 0x11)), to: s)
        #expect(s.neighborList6.contains { $0.address == IPv6Address("fe80::1")! && $0.state == .reachable && $0.interface == i })
        m.apply(.route6Removed(def), to: s)
        #expect(s.routes6.filter { $0.origin == .mirror }.isEmpty)
        // Lost messages: the dump no longer has the global address; a new route appeared.
        let r2 = try route("2001:db8:99::/48", [("fe80::1", 7)])
        m.resync(snapshot: [.linkChanged(link), .address6Added(index: hostIndex, address: linkLocal), .route6Added(r2)], to: s, reason: "test")
        #expect(s.addresses6(on: i) == [linkLocal])
        #expect(s.routes6.filter { $0.origin == .mirror }.map(\.prefix) == [r2.prefix])
        m.apply(.address6Removed(index: hostIndex, address: linkLocal), to: s)
        #expect(s.addresses6(on: i).isEmpty)
        s.checkInvariants()
    }
}

@Suite("Mirror: the stack leaves the host's control plane alone")
struct HostOwnedTests {
    @Test("no ARP replies or echo replies for a mirrored interface's addresses; transit is forwarded")
    func hostOwned() throws {
        let t = try Topology2()
        try t.r.setHostOwned(t.rLan, true)
        var replies = 0
        t.net.observer = { from, _, f in
            if from.stack == 1, from.interface == t.rLan, f.be16(12) == 0x0806, f.be16(14 + 6) == 2 { replies += 1 }
        }
        // A asks for the router's address: the host would answer, the stack does not.
        try t.a.ping(IPv4Address(10, 1, 0, 1))
        t.net.run()
        #expect(replies == 0)
        #expect(t.r.drops(.hostOwned) >= 1)
        #expect(t.a.drainEvents().isEmpty)
        // With the router's MAC learnt (the host would have answered), transit flows.
        try t.a.learnNeighbor(IPv4Address(10, 1, 0, 1), on: 0, mac: t.r.status(t.rLan).mac)
        try t.a.ping(IPv4Address(10, 2, 0, 2), sequence: 2)
        t.net.run()
        let events = t.a.drainEvents()
        #expect(events.contains { if case .echoReply(let from, _, 2, _, _) = $0 { return from == IPv4Address(10, 2, 0, 2) } else { return false } })
        // An echo request to the mirrored address itself is the host's: not answered.
        try t.a.ping(IPv4Address(10, 1, 0, 1), sequence: 3)
        t.net.run()
        #expect(t.a.drainEvents().isEmpty)
        // What the host owns is dropped with its reason, never lost uncounted.
        for s in [t.a, t.r, t.b] { #expect(s.ledger.balanced, "\(s.name): \(s.ledger.violations)") }
    }
}

/// A single router R between A (10.1.0.2) and B (10.2.0.2).
struct Topology2 {
    let net = MemoryNetwork()
    let a: Stack, r: Stack, b: Stack
    let rLan: InterfaceIndex
    init() throws {
        a = net.addStack(name: "A", configuration: .host)
        r = net.addStack(name: "R")
        b = net.addStack(name: "B", configuration: .host)
        let ae = try a.addInterface(name: "e", mac: MACAddress(2, 0, 0, 0, 0, 1))
        rLan = try r.addInterface(name: "lan", mac: MACAddress(2, 0, 0, 0, 1, 1))
        let rw = try r.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 0, 1, 2))
        let be = try b.addInterface(name: "e", mac: MACAddress(2, 0, 0, 0, 0, 2))
        net.connect(a, ae, r, rLan)
        net.connect(r, rw, b, be)
        try a.addAddress(IPv4InterfaceAddress("10.1.0.2/24"), to: ae)
        try r.addAddress(IPv4InterfaceAddress("10.1.0.1/24"), to: rLan)
        try r.addAddress(IPv4InterfaceAddress("10.2.0.1/24"), to: rw)
        try b.addAddress(IPv4InterfaceAddress("10.2.0.2/24"), to: be)
        for (s, i) in [(a, ae), (r, rLan), (r, rw), (b, be)] { try s.setUp(i, true) }
        try a.addRoute(.any, via: IPv4Address(10, 1, 0, 1))
        try b.addRoute(.any, via: IPv4Address(10, 2, 0, 1))
        net.run()
    }
}
