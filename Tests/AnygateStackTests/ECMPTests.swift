import AnygateStack
import AnygateWire
import Testing

/// Equal-cost multipath: A ── R1 ═══ N1..N4 (four next hops to 10.99.0.0/16).
@Suite("ECMP", .ledgerAudited)
struct ECMPTests {
    final class Seen { var member: [Int: Int] = [:]; var frames = 0 }

    struct Fan {
        let net: MemoryNetwork
        let a: Stack, r1: Stack
        let hops: [Stack]
        let lan: InterfaceIndex
        let wans: [InterfaceIndex]
        let seen = Seen()
        static let destination = IPv4Address(10, 99, 0, 5)

        init(ipflow: Bool = true, ecmpHash: StackConfiguration.ECMPHash = .l4, connected: Set<Int> = [0, 1, 2, 3]) throws {
            net = MemoryNetwork(pool: PacketPool(capacity: 8192))
            var cfg = StackConfiguration()
            cfg.ipflow.enabled = ipflow
            cfg.ipflow.maxFlows = ipflow ? 4096 : 0
            cfg.ecmpHash = ecmpHash
            a = net.addStack(name: "A", configuration: .host)
            r1 = net.addStack(name: "R1", configuration: cfg)
            let aEth = try a.addInterface(name: "eth0", mac: MACAddress(2, 0, 0, 0, 0, 0xA))
            lan = try r1.addInterface(name: "lan", mac: MACAddress(2, 0, 0, 1, 0, 1))
            net.connect(a, aEth, r1, lan)
            try a.addAddress(IPv4InterfaceAddress("10.1.0.2/24"), to: aEth)
            try r1.addAddress(IPv4InterfaceAddress("10.1.0.1/24"), to: lan)
            try a.setUp(aEth, true); try r1.setUp(lan, true)
            try a.addRoute(.any, via: IPv4Address(10, 1, 0, 1))
            var hops: [Stack] = [], wans: [InterfaceIndex] = []
            for k in 0..<4 {
                let n = net.addStack(name: "N\(k + 1)", configuration: .host)
                let w = try r1.addInterface(name: "wan\(k)", mac: MACAddress(2, 0, 0, 1, 1, UInt8(k)))
                let e = try n.addInterface(name: "eth0", mac: MACAddress(2, 0, 0, 2, 0, UInt8(k)))
                if connected.contains(k) { net.connect(r1, w, n, e) }
                try r1.addAddress(IPv4InterfaceAddress("10.20.\(k).1/30"), to: w)
                try n.addAddress(IPv4InterfaceAddress("10.20.\(k).2/30"), to: e)
                try r1.setUp(w, true); try n.setUp(e, true)
                hops.append(n); wans.append(w)
            }
            self.hops = hops
            self.wans = wans
            for k in 0..<4 { try r1.addRoute(IPv4Prefix("10.99.0.0/16"), via: IPv4Address(10, 20, UInt8(k), 2)) }
            net.run()
            let seen = self.seen, r1Wans = wans
            net.observer = { from, _, f in
                // R1 is stack 1; frames it sends on a wan carry one flow's UDP ports.
                guard from.stack == 1, let k = r1Wans.firstIndex(of: from.interface), f.be16(12) == 0x0800, f.count >= 14 + 28 else { return }
                seen.member[Int(f.be16(14 + 20))] = k
                seen.frames += 1
            }
        }

        /// One UDP packet per source port in `ports`, A to the ECMP destination.
        func send(ports: Range<Int>) {
            for p in ports {
                let f = TunnelECMPDifferentialTests.udp(to: r1.status(lan).mac, from: a.status(0).mac, IPv4Address(10, 1, 0, 2),
                                                        Fan.destination, sport: UInt16(p), dport: 53)
                net.inject(f, into: r1, on: lan)
            }
        }
    }

    @Test("1000 flows differing only in ports spread over 4 next hops, each 20–30 %; every flow stays on its member")
    func spreadAndStickiness() throws {
        let fan = try Fan()
        fan.send(ports: 10000..<11000)
        let first = fan.seen.member
        #expect(first.count == 1000)
        for k in 0..<4 {
            let n = first.values.filter { $0 == k }.count
            #expect((200...300).contains(n), "member \(k): \(n) of 1000")
        }
        fan.seen.member = [:]
        fan.send(ports: 10000..<11000)
        #expect(fan.seen.member == first, "the second round takes the same members")
        // The first packet to each member waited for ARP and installed no flow.
        #expect(fan.r1.counters.flowHits >= 996, "and it came from the flow cache (\(fan.r1.counters.flowHits) hits)")
        #expect(fan.r1.equalCostSet(for: try IPv4Prefix("10.99.0.0/16")).count == 4)
    }

    @Test("ecmp-hash l3: one address pair takes one member whatever its ports")
    func l3() throws {
        let fan = try Fan(ecmpHash: .l3)
        fan.send(ports: 10000..<10200)
        #expect(Set(fan.seen.member.values).count == 1)
    }

    @Test("removing one member moves only its flows; taking an interface down likewise; bringing it back restores them")
    func resilience() throws {
        let fan = try Fan()
        fan.send(ports: 20000..<21000)
        let before = fan.seen.member
        try fan.r1.deleteRoute(IPv4Prefix("10.99.0.0/16"), via: IPv4Address(10, 20, 1, 2))
        fan.seen.member = [:]
        fan.send(ports: 20000..<21000)
        let after = fan.seen.member
        for (port, k) in before {
            if k == 1 { #expect(after[port] != 1) } else { #expect(after[port] == k, "port \(port) moved from \(k)") }
        }
        try fan.r1.addRoute(IPv4Prefix("10.99.0.0/16"), via: IPv4Address(10, 20, 1, 2))
        fan.seen.member = [:]
        fan.send(ports: 20000..<21000)
        #expect(fan.seen.member == before, "the member back: its flows back, the rest unmoved")

        try fan.r1.setUp(fan.wans[2], false)
        fan.seen.member = [:]
        fan.send(ports: 20000..<21000)
        for (port, k) in before {
            if k == 2 { #expect(fan.seen.member[port] != 2) } else { #expect(fan.seen.member[port] == k) }
        }
        fan.r1.checkInvariants()
    }

    @Test("a next hop that does not answer ARP leaves the set; only its flows move; it rejoins when it answers")
    func failedNeighbor() throws {
        // N4 is not connected: R1's ARP requests for 10.20.3.2 go unanswered.
        let fan = try Fan(connected: [0, 1, 2])
        fan.send(ports: 30000..<31000)
        var hashedToDead = Set(fan.seen.member.keys)  // those that went out: not on member 3
        #expect(fan.seen.member.values.allSatisfy { $0 != 3 })
        fan.net.advance(by: .seconds(4))  // three probes, then the next hop fails
        #expect(fan.r1.equalCostSet(for: try IPv4Prefix("10.99.0.0/16")).count == 3)
        fan.seen.member = [:]
        fan.send(ports: 30000..<31000)
        let withThree = fan.seen.member
        #expect(withThree.count == 1000, "every flow goes out once the dead member is withdrawn")
        for (port, k) in withThree where hashedToDead.contains(port) {
            #expect(k == fan.seen.member[port])
        }
        hashedToDead = Set(withThree.keys).subtracting(hashedToDead)
        #expect((150...350).contains(hashedToDead.count), "about a quarter of the flows were N4's: \(hashedToDead.count)")
        // N4 comes: the retry's ARP is answered and it rejoins.
        fan.net.connect(fan.r1, fan.wans[3], fan.hops[3], 0)
        fan.net.advance(by: .seconds(11))
        #expect(fan.r1.equalCostSet(for: try IPv4Prefix("10.99.0.0/16")).count == 4)
        fan.seen.member = [:]
        fan.send(ports: 30000..<31000)
        for (port, k) in fan.seen.member where !hashedToDead.contains(port) { #expect(k == withThree[port]) }
        #expect(fan.seen.member.filter { hashedToDead.contains($0.key) }.allSatisfy { $0.value == 3 })
        fan.r1.checkInvariants()
    }

    @Test("with and without ipflow the same flows take the same members")
    func fastAndSlowAgree() throws {
        let fast = try Fan(ipflow: true), slow = try Fan(ipflow: false)
        for fan in [fast, slow] {
            fan.send(ports: 40000..<40500)
            fan.send(ports: 40000..<40500)
        }
        #expect(fast.seen.member == slow.seen.member)
        #expect(fast.r1.counters.flowHits >= 496 && slow.r1.counters.flowHits == 0)
    }

    @Test("a trace names the ECMP member each traced packet was sent to, and it is the one it left by")
    func traceAgrees() throws {
        let fan = try Fan()
        fan.r1.startTrace(count: 40, filter: try PacketFilter("udp and dst port 53"))
        fan.send(ports: 51000..<51040)
        let traces = fan.r1.traces
        try #require(traces.count == 40)
        for t in traces {
            let lookup = t.steps.first { $0.node == "ip4-lookup" }?.detail ?? ""
            let out = t.steps.first { $0.node == "interface-output" }?.detail ?? ""
            let k = try #require((0..<4).first { lookup.contains("dev wan\($0) ") }, "\(lookup)")
            #expect(lookup.contains("(ECMP: member \(k + 1) of 4 for this flow)"), "\(lookup)")
            #expect(out.hasPrefix("wan\(k): "), "explained wan\(k), left by \(out)")
        }
    }

    @Test("explain route names the member each flow actually takes, its flow entry, neighbour and MTU")
    func explainAgrees() throws {
        let fan = try Fan()
        fan.send(ports: 50000..<50200)
        fan.send(ports: 50000..<50200)
        for (port, k) in fan.seen.member {
            let e = fan.r1.explainRoute(Fan.destination, source: IPv4Address(10, 1, 0, 2), sourcePort: UInt16(port), destinationPort: 53)
            #expect(e.chosen?.interface == fan.wans[k], "port \(port): explained \(String(describing: e.chosen)), went out wan\(k)")
            #expect(e.equalCostSet.count == 4)
        }
        let e = fan.r1.explainRoute(Fan.destination, source: IPv4Address(10, 1, 0, 2), sourcePort: 50007, destinationPort: 53)
        #expect(e.matches.map(\.prefix) == [try IPv4Prefix("10.99.0.0/16")])
        #expect(e.flow?.packets == 1 && e.flow?.valid == true, "the flow entry for this 5-tuple")
        #expect(e.neighbor?.state == .reachable && e.egressMTU == 1500)
        #expect(e.source != nil)
        // Arriving on the lan with a source the lan routes back: strict would pass it.
        try fan.r1.setReversePathFilter(fan.lan, .strict)
        #expect(fan.r1.explainRoute(Fan.destination, source: IPv4Address(10, 1, 0, 2), arrivingOn: fan.lan).reversePath?.accepted == true)
        #expect(fan.r1.explainRoute(Fan.destination, source: IPv4Address(10, 99, 0, 9), arrivingOn: fan.lan).reversePath?.accepted == false)
    }
}
