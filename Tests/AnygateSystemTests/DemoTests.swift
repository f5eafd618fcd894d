import Foundation
import Testing

/// `make demo`'s two halves: the namespace script (root) and the in-process
/// program, each run to the end with its checks.
@Suite("Demo: two sites joined by GRE", .serialized)
struct DemoTests {
    @Test("in-process: pings and 1000 fragmented pings cross the tunnel, a stream of each family inside the tunnel over the other, the pool ends empty")
    func inProcess() {
        let r = Shell.run(SystemEnvironment.binary("anygate-demo"), timeout: 60)
        #expect(r.status == 0, "\(r.output.suffix(2000))")
        #expect(r.output.contains("1000 of 1000 answered"))
        #expect(r.output.contains("gre ipv4 key 7"), "the underlay trace shows GRE")
        // Dual-stack: IPv6 inside the IPv4 tunnel, IPv4 inside the tunnel over IPv6.
        #expect(r.output.contains("gre ipv6 key 7"), "IPv6 inside GRE over IPv4")
        #expect(r.output.contains("ipv6 2001:db8:ff01::1 > 2001:db8:ff02::2 hlim 64 next gre"), "GRE over the IPv6 underlay")
        #expect(r.output.contains("IPv6 inside gre0: 1000 datagrams of 1200 bytes, 1200000 of 1200000 bytes received, identical byte for byte"))
        #expect(r.output.contains("IPv4 inside gre6: 1000 datagrams of 1200 bytes, 1200000 of 1200000 bytes received, identical byte for byte"))
        #expect(r.output.contains("pool: 0 of"))
    }

    @Test("namespaces: the script pings across in both families, moves 4 MB intact inside each tunnel, shows both gateways and leaves nothing behind",
          .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
    func namespaces() {
        let bin = URL(fileURLWithPath: SystemEnvironment.binary("anygated")).deletingLastPathComponent().path
        // Other suites run beside this one with namespaces of their own: look at the demo's (ag2s…) only.
        func demoNamespaces() -> Set<Substring> { Set(Shell.run("ip netns list").output.split(separator: "\n").filter { $0.hasPrefix("ag2s") }) }
        let before = demoNamespaces()
        let r = Shell.run("cd \(SystemEnvironment.root) && scripts/demo-two-sites.sh \(bin) 2>&1", timeout: 120)
        #expect(r.status == 0, "\(r.output.suffix(3000))")
        #expect(r.output.contains(" 0% packet loss"))
        // Dual-stack: each family's transfer inside the tunnel over the other family.
        #expect(r.output.contains("IPv4 (inside gre6, over IPv6): 4000000 bytes"), "\(r.output.suffix(3000))")
        #expect(r.output.contains("IPv6 (inside gre0, over IPv4): 4000000 bytes"), "\(r.output.suffix(3000))")
        #expect(r.output.components(separatedBy: "sha256 matches at both ends").count == 3)
        #expect(r.output.components(separatedBy: "anygatectl show tunnels").count == 3)
        #expect(r.output.contains("GREv0, key=0x7, length"), "tcpdump saw GRE over IPv4 in the internet namespace")
        #expect(r.output.contains("IP6 2001:db8:ff01::1 > 2001:db8:ff02::2: GREv0, key=0x6"), "and GRE over IPv6")
        // The fast path carried the tunnelled transfer on both gateways:
        // towards gre0 on one, the decapsulated packets on the other.
        let hits = r.output.split(separator: "\n").filter { $0.hasPrefix("flowHits ") }
            .compactMap { Int($0.split(separator: " ").last ?? "") }
        #expect(hits.count == 2 && hits.allSatisfy { $0 > 100 }, "flowHits per gateway: \(hits)")
        let after = demoNamespaces()
        #expect(after.subtracting(before).isEmpty, "left behind: \(after.subtracting(before))")
    }

    @Test("dual-stack tunnels in every backend and encapsulation: IPv4 inside GRE over IPv6 and IPv6 inside GRE over IPv4, sha256-checked",
          .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)),
          arguments: [("host", "gre"), ("host", "gre-in-udp"), ("stack", "gre-in-udp")])
    func dualStackCombinations(_ backend: String, _ encapsulation: String) {
        let bin = URL(fileURLWithPath: SystemEnvironment.binary("anygated")).deletingLastPathComponent().path
        let r = Shell.run("cd \(SystemEnvironment.root) && BACKEND=\(backend) ENCAP=\(encapsulation) ENCAP6=\(encapsulation) "
                          + "scripts/demo-two-sites.sh \(bin) 2>&1", timeout: 120)
        #expect(r.status == 0, "\(r.output.suffix(3000))")
        #expect(r.output.contains("IPv4 (inside gre6, over IPv6): 4000000 bytes"), "\(r.output.suffix(3000))")
        #expect(r.output.contains("IPv6 (inside gre0, over IPv4): 4000000 bytes"), "\(r.output.suffix(3000))")
        #expect(r.output.components(separatedBy: "sha256 matches at both ends").count == 3)
        // Both tunnels list the backend and encapsulation asked for.
        let rows = r.output.split(separator: "\n").filter { $0.hasPrefix("gre0 ") || $0.hasPrefix("gre6 ") }
        #expect(rows.count == 4 && rows.allSatisfy { $0.contains(" \(encapsulation) ") && $0.contains(" \(backend) ") }, "\(rows)")
    }
}
