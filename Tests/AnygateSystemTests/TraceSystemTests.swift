import AnygateControl
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `anygatectl trace` on both gateways of the two-site topology while one
/// ping crosses the GRE tunnel: each gateway shows every step it took.
@Suite("System: packet trace through a GRE tunnel", .serialized,
       .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
struct TraceSystemTests {
    @Test("a ping's request and reply, traced on both gateways: arrival, lookup, encapsulation or decapsulation, neighbour, transmit",
          arguments: ["stack", "host"])
    func pingTrace(backend: String) throws {
        let net = try TwoSiteNetwork(backend: backend)
        var tracers: [Process] = []
        defer {
            for t in tracers where t.isRunning { t.terminate() }
            net.close()
        }
        try net.build()
        try net.start()
        // Warm the neighbours so the traced ping is the steady state.
        try #require(net.sh("ip netns exec \(net.ns.a) ping -c 1 -W 2 10.2.0.2", timeout: 10).status == 0)
        for side in [1, 2] {
            tracers.append(try Shell.spawn("exec \(net.anygatectl) --socket \(net.dir)/gw\(side).sock --json trace --count 2 "
                                           + "--filter 'icmp and host 10.2.0.2' --timeout 20", output: "\(net.dir)/trace\(side).json"))
        }
        for d in net.daemons {
            try #require(DaemonProcess.wait(seconds: 10) { d.log.contains("trace started") }, "the trace is armed: \(d.log.suffix(500))")
        }
        let ping = net.sh("ip netns exec \(net.ns.a) ping -c 1 -W 2 10.2.0.2", timeout: 10)
        #expect(ping.status == 0, "\(ping.output)")
        #expect(DaemonProcess.wait(seconds: 20) { tracers.allSatisfy { !$0.isRunning } }, "both traces complete")

        func trace(_ side: Int) throws -> TraceInfo {
            let text = try String(contentsOfFile: "\(net.dir)/trace\(side).json", encoding: .utf8)
            return try JSONDecoder().decode(TraceInfo.self, from: Data(text.utf8))
        }
        func nodes(_ p: TraceInfo.Packet) -> [String] { p.steps.map(\.node) }
        func detail(_ p: TraceInfo.Packet, _ node: String) -> String {
            p.steps.filter { $0.node == node }.map(\.detail).joined(separator: " | ")
        }
        let t1 = try trace(1), t2 = try trace(2)
        try #require(t1.packets.count == 2 && t2.packets.count == 2, "\(t1) \(t2)")
        #expect(t1.remaining == 0 && t1.filter == "icmp and host 10.2.0.2")
        let (request1, reply1) = (t1.packets[0], t1.packets[1])
        let (request2, reply2) = (t2.packets[0], t2.packets[1])
        // gw1: the request from site A goes into the tunnel.
        #expect(request1.interface == "lan0", "\(request1)")
        #expect(detail(request1, "ethernet-input").contains("ipv4 10.1.0.2 > 10.2.0.2") && detail(request1, "ethernet-input").contains("echo-request"))
        #expect(detail(request1, "ip4-lookup").contains("via 172.16.0.2 dev gre0"), "\(request1)")
        #expect(detail(request1, "gre-encap").contains("gre0: GRE key 7 198.51.100.1 > 203.0.113.2"), "\(request1)")
        // gw2: the request arrives from the underlay (or the host's socket) and is decapsulated into site B.
        #expect(detail(request2, "gre-decap").contains("from 198.51.100.1: ipv4 10.1.0.2 > 10.2.0.2 icmp"), "\(request2)")
        #expect(detail(request2, "ip4-lookup").contains("10.2.0.0/24 connected, dev lan0"), "\(request2)")
        #expect(detail(request2, "ip4-neighbor").contains("10.2.0.2 on lan0: reachable"), "\(request2)")
        #expect(detail(request2, "interface-output").hasPrefix("lan0: ") && detail(request2, "interface-output").contains("echo-request"))
        // gw2: the reply goes back into the tunnel; gw1 decapsulates it to site A.
        #expect(detail(reply2, "gre-encap").contains("203.0.113.2 > 198.51.100.1"), "\(reply2)")
        #expect(detail(reply1, "gre-decap").contains("ipv4 10.2.0.2 > 10.1.0.2 icmp"), "\(reply1)")
        #expect(detail(reply1, "interface-output").hasPrefix("lan0: ") && detail(reply1, "interface-output").contains("echo-reply"))
        if backend == "stack" {
            // The stack owns the underlay: the outer packet is looked up, resolved and sent on wan0.
            #expect(nodes(request1).contains("ip4-neighbor") && detail(request1, "interface-output").hasPrefix("wan0: "), "\(request1)")
            #expect(detail(request1, "interface-output").contains("gre ipv4 key 7"))
            #expect(request2.interface == "wan0" && detail(request2, "ip4-lookup").contains("203.0.113.2/32 local"), "\(request2)")
        } else {
            #expect(detail(request1, "gre-encap").contains("by the host's socket") && nodes(request1).contains("host-socket-output"))
            #expect(request2.interface == "gre0" && nodes(request2).first == "host-socket-input", "\(request2)")
        }
        // The ledger holds with tracing on and off.
        for side in [1, 2] {
            let l = try net.ledger(side: side)
            #expect(l.balanced, "gw\(side): \(l.violations)")
        }
    }
}
