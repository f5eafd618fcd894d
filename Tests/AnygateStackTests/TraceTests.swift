import AnygateStack
import AnygateWire
import Testing

@Suite("Packet trace", .ledgerAudited)
struct TraceTests {
    func nodes(_ t: PacketTrace) -> [String] { t.steps.map(\.node) }
    func detail(_ t: PacketTrace, _ node: String) -> String { t.steps.filter { $0.node == node }.map(\.detail).joined(separator: " | ") }

    @Test("a ping through GRE: every step on both gateways, from arrival to transmit")
    func pingThroughTunnel() throws {
        let s = try TwoSites()
        let filter = try PacketFilter("icmp and host 10.2.0.2")
        s.gw1.startTrace(count: 2, filter: filter)
        s.gw2.startTrace(count: 2, filter: filter)
        try s.a.ping(IPv4Address(10, 2, 0, 2), identifier: 9, sequence: 1)
        s.net.run()
        #expect(s.a.echoReplies().count == 1)
        let g1 = s.gw1.traces, g2 = s.gw2.traces
        try #require(g1.count == 2 && g2.count == 2, "\(g1) \(g2)")
        // GW1, the request from the LAN: looked up into the tunnel, encapsulated, the underlay resolved.
        #expect(g1[0].interface == "lan")
        #expect(nodes(g1[0]) == ["ethernet-input", "ip4-input", "ip4-lookup", "gre-encap", "ip4-lookup", "ip4-neighbor",
                                 "interface-output"])
        #expect(detail(g1[0], "ip4-lookup").contains("10.2.0.0/16 via 172.16.0.2 dev gre0"))
        #expect(detail(g1[0], "gre-encap").contains("gre0: GRE key 42 192.0.2.1 > 192.0.2.2"))
        #expect(detail(g1[0], "ip4-neighbor").contains("192.0.2.2 on wan: not in the table; ARP request sent; packet held"))
        // GW2, the request from the underlay: ours, decapsulated, resolved on the LAN.
        #expect(nodes(g2[0]) == ["ethernet-input", "ip4-input", "ip4-lookup", "gre-decap", "ip4-input", "ip4-lookup",
                                 "ip4-neighbor", "interface-output"])
        #expect(detail(g2[0], "gre-decap") == "gre0 key 42 from 192.0.2.1: ipv4 10.1.0.2 > 10.2.0.2 icmp")
        #expect(detail(g2[0], "ip4-lookup").contains("192.0.2.2/32 local"))
        #expect(detail(g2[0], "interface-output").contains("arp who-has 10.2.0.2"))
        // GW2, the reply: into the tunnel, the underlay neighbour now known, out on wan as GRE.
        #expect(nodes(g2[1]) == ["ethernet-input", "ip4-input", "ip4-lookup", "gre-encap", "ip4-lookup", "ip4-neighbor",
                                 "interface-output"])
        #expect(detail(g2[1], "ip4-neighbor").contains("192.0.2.1 on wan: reachable"))
        #expect(detail(g2[1], "interface-output").contains("gre ipv4 key 42"))
        // GW1, the reply from the underlay: decapsulated and delivered to A.
        #expect(detail(g1[1], "gre-decap") == "gre0 key 42 from 192.0.2.2: ipv4 10.2.0.2 > 10.1.0.2 icmp")
        #expect(detail(g1[1], "interface-output").contains("lan: ") && detail(g1[1], "interface-output").contains("echo-reply id 9"))
        // The sessions are done: nothing more is recorded.
        #expect(s.gw1.traceRemaining == 0)
        try s.a.ping(IPv4Address(10, 2, 0, 2), identifier: 9, sequence: 2)
        s.net.run()
        #expect(s.gw1.traces.count == 2)
    }

    @Test("ipflow miss then hit, the flow installed; packets on other interfaces are not traced")
    func flowSteps() throws {
        let t = try Topology()
        try t.warmUp()
        t.r1.startTrace(count: 2, interface: t.r1Lan, filter: try PacketFilter("udp and dst port 5001"))
        t.net.inject(FlowTests.udp(t), into: t.r1, on: t.r1Lan)
        t.net.inject(FlowTests.udp(t, to: Topology.r2LanAddr), into: t.r1, on: t.r1Wan)  // another interface: not traced
        t.net.inject(FlowTests.udp(t), into: t.r1, on: t.r1Lan)
        let tr = t.r1.traces
        try #require(tr.count == 2)
        #expect(detail(tr[0], "ip4-flow").contains("flow installed"))
        #expect(detail(tr[0], "ip4-lookup") == "10.2.0.0/16 via 10.12.0.2 dev wan")
        #expect(detail(tr[0], "ip4-neighbor").hasPrefix("10.12.0.2 on wan: reachable"))
        #expect(nodes(tr[1]) == ["ethernet-input", "ip4-input", "ip4-flow", "interface-output"])
        #expect(detail(tr[1], "ip4-flow").hasPrefix("hit: forwarded by its flow wan via 10.12.0.2"))
    }

    @Test("a drop names its reason and interface; an error sent back shows as originated output")
    func dropSteps() throws {
        let t = try Topology()
        try t.warmUp()
        t.r1.startTrace(count: 1)
        t.net.inject(FlowTests.udp(t, ttl: 1), into: t.r1, on: t.r1Lan)
        let tr = try #require(t.r1.traces.first)
        #expect(detail(tr, "error-drop") == "ttl-expired (arrived on lan)")
        #expect(detail(tr, "icmp-error").contains("1 ICMP error"))
        #expect(detail(tr, "interface-output").contains("icmp time-exceeded"))
    }

    @Test("filters: addresses, prefixes, protocols, ports, and/or/not, parentheses; GRE matches by its inner packet; errors name the word")
    func filters() throws {
        let t = try Topology()
        let udp = FlowTests.udp(t)
        func m(_ e: String, _ bytes: [UInt8]) throws -> Bool {
            let f = try PacketFilter(e)
            var b = bytes
            return b.withUnsafeMutableBytes { f.matches(frame: $0) }
        }
        #expect(try m("", udp))
        #expect(try m("udp", udp) && !(try m("tcp", udp)) && !(try m("icmp", udp)))
        #expect(try m("host 10.2.0.2", udp) && !(try m("src host 10.2.0.2", udp)) && (try m("dst host 10.2.0.2", udp)))
        #expect(try m("net 10.1.0.0/16", udp) && !(try m("dst net 10.1.0.0/16", udp)) && (try m("10.2.0.0/24", udp)))
        #expect(try m("port 5001", udp) && (try m("src port 5000", udp)) && !(try m("dst port 5000", udp)))
        #expect(try m("udp and (port 1 or port 5001)", udp) && !(try m("not udp", udp)) && (try m("!tcp && udp", udp)))
        #expect(try m("proto 17", udp) && !(try m("arp", udp)) && (try m("ip", udp)))
        // GRE: the inner packet's addresses match too.
        let gre: [UInt8] = [0x20, 0x00, 0x08, 0x00, 0, 0, 0, 42] + udp[14...]
        let outer = FrameBuilder.ipv4(to: MACAddress(2, 0, 0, 0, 0, 1),
                                      IPv4Repr(source: IPv4Address(192, 0, 2, 1), destination: IPv4Address(192, 0, 2, 2), proto: .gre,
                                               payloadLength: 0), payload: gre)
        #expect(try m("host 10.2.0.2 and udp", outer) && (try m("gre", outer)) && !(try m("host 10.9.9.9", outer)))
        for bad in ["host", "host 10.1", "net 10.1.0.1/16", "port 70000", "frobnicate", "(udp", "udp)", "src udp", "udp and"] {
            #expect(throws: PacketFilterError.self, "\(bad)") { try PacketFilter(bad) }
        }
    }
}
