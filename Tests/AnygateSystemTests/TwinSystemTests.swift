import AnygateControl
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Two sites, each gateway with two GRE tunnels over two underlays (P,
/// the primary, and S, the backup, each a router namespace), and BIRD on
/// each gateway's host speaking over the tunnels' host twins:
///
///     A 10.1.0.2 ─ gw1 ═ gre1 (P: 198.51.100/24 ↔ 203.0.113/24) ═ gw2 ─ B 10.2.0.2
///                      ═ gre2 (S: 192.0.2/24   ↔ 100.64.0/24)  ═
///
/// Neither gateway has a route to the other site: OSPF (or BGP) on the
/// twins teaches it, the mirror brings it into the stack.
final class RoutedSites {
    let p = "ag" + String(UInt32.random(in: 0..<0xFFFF), radix: 16)
    let dir: String
    var ns: (a: String, g1: String, pr: String, sr: String, g2: String, b: String) {
        (p + "A", p + "G1", p + "P", p + "S", p + "G2", p + "B")
    }
    var daemons: [DaemonProcess?] = [nil, nil]
    var birds: [Process?] = [nil, nil]
    let anygated = SystemEnvironment.binary("anygated")
    let anygatectl = SystemEnvironment.binary("anygatectl")

    init() throws {
        dir = NSTemporaryDirectory() + "anygate-twins-\(p)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    func sh(_ cmd: String, timeout: Int = 60) -> (status: Int32, output: String) { Shell.run(cmd, timeout: timeout) }
    func gw(_ side: Int) -> String { side == 1 ? ns.g1 : ns.g2 }
    func ctl(_ side: Int, _ args: String) -> String { sh("\(anygatectl) --socket \(dir)/gw\(side).sock \(args)").output }
    func birdc(_ side: Int, _ args: String) -> String { sh("ip netns exec \(gw(side)) birdc -s \(dir)/bird\(side).ctl \(args)").output }

    func close() {
        for b in birds { if let b, b.isRunning { kill(b.processIdentifier, SIGTERM) } }
        for d in daemons { _ = d?.stop() }
        for b in birds { if let b, b.isRunning { kill(b.processIdentifier, SIGKILL) } }
        for n in [ns.a, ns.g1, ns.pr, ns.sr, ns.g2, ns.b] { sh("ip netns del \(n) 2>/dev/null") }
        try? FileManager.default.removeItem(atPath: dir)
    }

    func build() throws {
        var steps = [ns.a, ns.g1, ns.pr, ns.sr, ns.g2, ns.b].map { "ip netns add \($0) && ip -n \($0) link set lo up" }
        for (router, v1, v2, n1, n2) in [(ns.pr, "p1", "p2", "198.51.100", "203.0.113"), (ns.sr, "s1", "s2", "192.0.2", "100.64.0")] {
            steps += [
                "ip netns exec \(router) sysctl -qw net.ipv4.ip_forward=1",
                "ip -n \(ns.g1) link add \(p)-g\(v1) type veth peer name \(p)-\(v1) netns \(router)",
                "ip -n \(ns.g2) link add \(p)-g\(v2) type veth peer name \(p)-\(v2) netns \(router)",
                "ip -n \(router) addr add \(n1).254/24 dev \(p)-\(v1)", "ip -n \(router) addr add \(n2).254/24 dev \(p)-\(v2)",
                "ip -n \(router) link set \(p)-\(v1) up", "ip -n \(router) link set \(p)-\(v2) up",
                "ip -n \(ns.g1) link set \(p)-g\(v1) up", "ip -n \(ns.g2) link set \(p)-g\(v2) up",
            ]
        }
        for s in steps {
            let r = sh(s)
            try #require(r.status == 0, "\(s): \(r.output)")
        }
    }

    /// `keepalive`: the tunnels judge their lines (1 s × 2).
    func config(side: Int, keepalive: Bool = false) -> String {
        let one = side == 1
        let ka = keepalive ? "\n    keepalive: {interval: 1s, retries: 2}" : ""
        let lan = one ? "10.1.0.1/24" : "10.2.0.1/24"
        let (w1, w2) = one ? ("198.51.100.1", "192.0.2.1") : ("203.0.113.2", "100.64.0.2")
        let (r1, r2) = one ? ("203.0.113.2", "100.64.0.2") : ("198.51.100.1", "192.0.2.1")
        let (n1, n2) = one ? ("203.0.113.0/24", "100.64.0.0/24") : ("198.51.100.0/24", "192.0.2.0/24")
        let (g1, g2) = one ? ("198.51.100.254", "192.0.2.254") : ("203.0.113.254", "100.64.0.254")
        return """
        control: {socket: \(dir)/gw\(side).sock}
        state: {directory: \(dir)/state\(side)}
        metrics: {listen: 127.0.0.1:9469}
        interfaces:
          - name: lan0
            attach: {tap: \(p)-t\(side)}
            addresses: [\(lan)]
            host-twin: twlan0
          - name: wan1
            attach: {packet: \(p)-g\(one ? "p1" : "p2")}
            addresses: [\(w1)/24]
          - name: wan2
            attach: {packet: \(p)-g\(one ? "s1" : "s2")}
            addresses: [\(w2)/24]
        tunnels:
          - name: gre1
            local: \(w1)
            remote: \(r1)
            key: 1
            addresses: [172.16.1.\(side)/30]
            host-twin: twgre1\(ka)
          - name: gre2
            local: \(w2)
            remote: \(r2)
            key: 2
            addresses: [172.16.2.\(side)/30]
            host-twin: twgre2\(ka)
        routes:
          - {to: \(n1), via: \(g1)}
          - {to: \(n2), via: \(g2)}

        """
    }

    /// BIRD: OSPF over both tunnels' twins (the primary cheaper), BFD on
    /// them, the LAN twin a stub; OSPF's routes exported to the kernel.
    func ospf(side: Int) -> String {
        """
        router id 10.\(side).0.1;
        log "\(dir)/bird\(side).log" all;
        timeformat log "%T.%3f";
        protocol device { scan time 1; }
        protocol kernel { ipv4 { import none; export where source = RTS_OSPF; }; }
        protocol bfd { interface "twgre*" { interval 50 ms; multiplier 3; }; }
        protocol ospf v2 {
            ipv4 { import all; export none; };
            area 0 {
                interface "twgre1" { type ptp; cost 10; hello 1; dead 4; bfd yes; };
                interface "twgre2" { type ptp; cost 20; hello 1; dead 4; bfd yes; };
                interface "twlan0" { stub yes; };
            };
        }

        """
    }

    /// BIRD: eBGP between the two over gre1's twins, each announcing its LAN.
    func bgp(side: Int) -> String {
        """
        router id 10.\(side).0.1;
        log "\(dir)/bird\(side).log" all;
        protocol device { scan time 1; }
        protocol direct { ipv4; interface "twlan0"; }
        protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }
        protocol bgp peer {
            local 172.16.1.\(side) as 6500\(side);
            neighbor 172.16.1.\(3 - side) as 6500\(3 - side);
            hold time 9;
            ipv4 { import all; export where source = RTS_DEVICE; };
        }

        """
    }

    func startGateways(keepalive: Bool = false) throws {
        for side in [1, 2] {
            let path = "\(dir)/gw\(side).yaml"
            try config(side: side, keepalive: keepalive).write(toFile: path, atomically: true, encoding: .utf8)
            let d = try DaemonProcess(binary: anygated, config: path, namespace: gw(side), logPath: "\(dir)/gw\(side).log")
            daemons[side - 1] = d
            let up = DaemonProcess.wait(seconds: 20) { sh("\(anygatectl) --socket \(dir)/gw\(side).sock show tunnels").status == 0 }
            try #require(up, "gw\(side) did not start: \(d.log)")
        }
        for (side, site, addr, gw) in [(1, ns.a, "10.1.0.2/24", "10.1.0.1"), (2, ns.b, "10.2.0.2/24", "10.2.0.1")] {
            for s in ["ip -n \(self.gw(side)) link set \(p)-t\(side) netns \(site)", "ip -n \(site) addr add \(addr) dev \(p)-t\(side)",
                      "ip -n \(site) link set \(p)-t\(side) up", "ip -n \(site) route add default via \(gw)"] {
                let r = sh(s)
                try #require(r.status == 0, "\(s): \(r.output)")
            }
        }
    }

    func startBIRD(_ conf: (Int) -> String) throws {
        for side in [1, 2] {
            try conf(side).write(toFile: "\(dir)/bird\(side).conf", atomically: true, encoding: .utf8)
            birds[side - 1] = try Shell.spawn("exec ip netns exec \(gw(side)) bird -f -c \(dir)/bird\(side).conf -s \(dir)/bird\(side).ctl "
                                              + "-P \(dir)/bird\(side).pid", output: "\(dir)/bird\(side).out")
        }
    }

    /// The stack's route to the other site, as `show routes` prints it (empty: none).
    func stackRoute(_ side: Int, _ prefix: String) -> String {
        ctl(side, "show routes").split(separator: "\n").filter { $0.hasPrefix(prefix) }.joined(separator: "\n")
    }

    func transfer(megabytes: Int) throws -> String? {
        try sha256Transfer(megabytes: megabytes, dir: dir, from: ns.a, to: ns.b, address: "10.2.0.2")
    }

    var logs: String {
        (1...2).map { s in
            "gw\(s): \(daemons[s - 1]?.log ?? "")\nbird\(s): \((try? String(contentsOfFile: "\(dir)/bird\(s).log", encoding: .utf8)) ?? "")"
        }.joined(separator: "\n")
    }
}

@Suite("System: routing daemons over host twins", .serialized,
       .enabled(if: SystemEnvironment.canRun && Shell.run("command -v bird && command -v birdc").status == 0,
                Comment(rawValue: SystemEnvironment.skipReason + " (and BIRD 2)")))
struct TwinSystemTests {
    @Test("OSPF with BFD over two tunnels' twins: each site learns the other's LAN, traffic fails over to the backup tunnel within the dead interval (BFD: about a second) and comes back")
    func ospfFailover() throws {
        let net = try RoutedSites()
        defer { net.close() }
        try net.build()
        try net.startGateways()
        // The twins exist with the stack interfaces' addresses.
        let link = net.sh("ip -n \(net.ns.g1) -br addr show twgre1").output
        #expect(link.contains("172.16.1.1/30"), "\(link)")
        try net.startBIRD(net.ospf)
        #expect(DaemonProcess.wait(seconds: 30) { net.stackRoute(1, "10.2.0.0/24").contains("172.16.1.2") && net.stackRoute(2, "10.1.0.0/24").contains("172.16.1.1") },
                "\(net.ctl(1, "show routes"))\n\(net.birdc(1, "show ospf neighbors"))\n\(net.logs)")
        #expect(net.sh("ip netns exec \(net.ns.a) ping -c 3 -i 0.2 -W 2 10.2.0.2").status == 0)
        #expect(try net.transfer(megabytes: 20) == nil, "\(net.logs)")
        // BFD up on both tunnels.
        #expect(DaemonProcess.wait(seconds: 10) { net.birdc(1, "show bfd sessions").components(separatedBy: " Up ").count - 1 >= 2 },
                "\(net.birdc(1, "show bfd sessions"))")

        // Steady state first: an OSPF router may originate its LSA again only
        // 5 s after the last time (RFC 2328 MinLSInterval), and convergence just made them.
        usleep(5_000_000)
        // A ping every 50 ms while the primary underlay goes down.
        let trace = try Shell.spawn("exec ip netns exec \(net.ns.a) ping -D -i 0.05 -W 1 -w 12 10.2.0.2", output: net.dir + "/ping.out")
        defer { if trace.isRunning { trace.terminate() } }
        usleep(2_000_000)
        let down = Date()
        #expect(net.sh("ip -n \(net.ns.pr) link set \(net.p)-p2 down").status == 0)
        #expect(DaemonProcess.wait(seconds: 10) { net.stackRoute(1, "10.2.0.0/24").contains("172.16.2.2") }, "\(net.ctl(1, "show routes"))")
        let switched = Date().timeIntervalSince(down)
        _ = DaemonProcess.wait(seconds: 15) { !trace.isRunning }
        // The longest silence in the trace: the time traffic was lost.
        let times = ((try? String(contentsOfFile: net.dir + "/ping.out", encoding: .utf8)) ?? "").split(separator: "\n")
            .filter { $0.contains("bytes from") }.compactMap { l in Double(l.dropFirst().prefix { $0 != "]" }) }
        let gap = zip(times, times.dropFirst()).map { $1 - $0 }.max() ?? 99
        print("failover: route moved \(String(format: "%.2f", switched)) s after the primary went down; longest gap in replies \(String(format: "%.2f", gap)) s; \(times.count) replies")
        #expect(times.count > 150, "replies: \(times.count)")
        // BFD notices in 150 ms; BIRD then recomputes routes at its next
        // tick (once a second, its shortest): 0.15 to about 1.2 s, and the
        // stack follows the kernel's route at once. Bound here at 2 s (half
        // OSPF's dead interval) so that a slow path of ours shows.
        #expect(gap < 2.0, "traffic lost for \(gap) s")
        #expect(try net.transfer(megabytes: 20) == nil, "through the backup: \(net.logs)")
        // The primary comes back: OSPF moves the traffic back.
        #expect(net.sh("ip -n \(net.ns.pr) link set \(net.p)-p2 up").status == 0)
        #expect(DaemonProcess.wait(seconds: 30) { net.stackRoute(1, "10.2.0.0/24").contains("172.16.1.2") }, "\(net.ctl(1, "show routes"))")
        #expect(try net.transfer(megabytes: 20) == nil)
        // Punted and injected packets are in the ledger, and it balances.
        for side in [1, 2] {
            let stats = try JSONDecoder().decode(StatsInfo.self, from: Data(net.ctl(side, "--json show stats").utf8))
            #expect((stats.counters["punted"] ?? 0) > 10 && (stats.counters["injected"] ?? 0) > 10, "gw\(side): \(stats.counters)")
            #expect(stats.ledger.balanced, "gw\(side): \(stats.ledger.violations)")
            #expect((stats.ledger.terms["punted"] ?? 0) > 0 && (stats.ledger.terms["injected"] ?? 0) > 0, "\(stats.ledger.terms)")
        }
    }

    @Test("BGP between the two BIRDs over a tunnel's twins: TCP through punt and inject, each learns the other's LAN")
    func bgp() throws {
        let net = try RoutedSites()
        defer { net.close() }
        try net.build()
        try net.startGateways()
        try net.startBIRD(net.bgp)
        #expect(DaemonProcess.wait(seconds: 40) { net.birdc(1, "show protocols peer").contains("Established") },
                "\(net.birdc(1, "show protocols all peer"))\n\(net.logs)")
        #expect(DaemonProcess.wait(seconds: 20) { net.stackRoute(1, "10.2.0.0/24").contains("172.16.1.2") }, "\(net.ctl(1, "show routes"))")
        #expect(DaemonProcess.wait(seconds: 20) { net.stackRoute(2, "10.1.0.0/24").contains("172.16.1.1") })
        #expect(try net.transfer(megabytes: 10) == nil)
    }

    @Test("reload removes a twin the config no longer names and makes it again when it does; the others stay")
    func reload() throws {
        let net = try RoutedSites()
        defer { net.close() }
        try net.build()
        try net.startGateways()
        let g1 = net.ns.g1, path = "\(net.dir)/gw1.yaml"
        let full = net.config(side: 1)
        let index = { (name: String) in net.sh("ip netns exec \(g1) cat /sys/class/net/\(name)/ifindex").output }
        let before = index("twgre1")
        #expect(Int(before.trimmingCharacters(in: .whitespacesAndNewlines)) != nil, "\(before)")
        try full.replacingOccurrences(of: "    host-twin: twgre2\n", with: "").write(toFile: path, atomically: true, encoding: .utf8)
        #expect(net.ctl(1, "reload").contains("reloaded"), "\(net.daemons[0]?.log ?? "")")
        #expect(DaemonProcess.wait(seconds: 5) { net.sh("ip -n \(g1) link show twgre2").status != 0 }, "twgre2 still there")
        try full.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(net.ctl(1, "reload").contains("reloaded"))
        #expect(DaemonProcess.wait(seconds: 5) { net.sh("ip -n \(g1) -br addr show twgre2").output.contains("172.16.2.1/30") })
        #expect(index("twgre1") == before, "twgre1 was not touched")
    }

    @Test("the example's BIRD configurations are ones BIRD takes")
    func exampleConfigurations() {
        for side in ["a", "b"] {
            let path = SystemEnvironment.root + "/etc/anygate/examples/ospf-over-twins-bird-site-\(side).conf"
            let r = Shell.run("bird -p -c \(path)")
            #expect(r.status == 0, "\(path): \(r.output)")
        }
    }

    @Test("a twin deleted by hand is made again; a change by hand is reported; no twin outlives the daemon")
    func twinLifecycle() throws {
        let net = try RoutedSites()
        defer { net.close() }
        try net.build()
        try net.startGateways(keepalive: true)
        let g1 = net.ns.g1
        // The twin's carrier follows the tunnel's line: the primary underlay
        // down, the keepalives go unanswered, the host sees NO-CARRIER.
        #expect(DaemonProcess.wait(seconds: 5) { !net.sh("ip -n \(g1) link show twgre1").output.contains("NO-CARRIER") })
        #expect(net.sh("ip -n \(net.ns.pr) link set \(net.p)-p2 down").status == 0)
        #expect(DaemonProcess.wait(seconds: 8) { net.sh("ip -n \(g1) link show twgre1").output.contains("NO-CARRIER") },
                "\(net.sh("ip -n \(g1) link show twgre1").output) \(net.ctl(1, "show tunnels"))")
        #expect(!net.sh("ip -n \(g1) link show twgre2").output.contains("NO-CARRIER"), "the backup's twin keeps its carrier")
        #expect(net.sh("ip -n \(net.ns.pr) link set \(net.p)-p2 up").status == 0)
        #expect(DaemonProcess.wait(seconds: 5) { !net.sh("ip -n \(g1) link show twgre1").output.contains("NO-CARRIER") })
        #expect(net.sh("ip -n \(g1) link del twgre1").status == 0)
        #expect(DaemonProcess.wait(seconds: 5) { net.sh("ip -n \(g1) -br addr show twgre1").output.contains("172.16.1.1/30") },
                "\(net.daemons[0]?.log ?? "")")
        #expect(net.sh("ip -n \(g1) link set twgre1 mtu 1300").status == 0)
        #expect(DaemonProcess.wait(seconds: 5) { net.daemons[0]?.log.contains("changed by hand") == true }, "\(net.daemons[0]?.log ?? "")")
        #expect(net.sh("ip -n \(g1) addr add 10.99.0.1/24 dev twlan0").status == 0)
        #expect(DaemonProcess.wait(seconds: 5) { net.daemons[0]?.log.contains("10.99.0.1/24 added by hand") == true })
        // The stack did not take it.
        #expect(!net.ctl(1, "show addresses").contains("10.99.0.1"))
        let metrics = net.sh("ip netns exec \(g1) curl -s http://127.0.0.1:9469/metrics").output
        #expect(metrics.contains("anygate_twin_remade_total{twin=\"twgre1\",interface=\"gre1\"} 1"), "\(metrics)")
        #expect(metrics.contains("anygate_twin_changes_by_hand_total{twin=\"twgre1\",interface=\"gre1\"} 1"))
        #expect(metrics.contains("anygate_twin_changes_by_hand_total{twin=\"twlan0\",interface=\"lan0\"} 1"))
        // The TAP twin carries the LAN interface's MAC.
        let mac = net.sh("ip -n \(g1) -br link show twlan0").output
        let lan = try JSONDecoder().decode([InterfaceInfo].self, from: Data(net.ctl(1, "--json show interfaces").utf8)).first { $0.name == "lan0" }
        #expect(lan.map { mac.contains($0.mac) } == true, "\(mac) vs \(String(describing: lan?.mac))")
        _ = net.daemons[0]?.stop()
        net.daemons[0] = nil
        #expect(net.sh("ip -n \(g1) link show twgre1").status != 0, "the twin outlived the daemon")
        #expect(net.sh("ip -n \(g1) link show twlan0").status != 0)
    }
}
