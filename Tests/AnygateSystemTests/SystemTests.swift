import AnygateControl
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The real anygated between real network namespaces:
///
///     ns A: ta 10.1.0.2 ─TAP─┐
///                            ├─ ns R: anygated (lan0 10.1.0.1, lan1 10.2.0.1, lan2 10.3.0.1)
///     ns B: tb 10.2.0.2 ─TAP─┤
///     ns C: vcp 10.3.0.2 ═veth═ vc (packet attachment)
///
/// Every name carries a per-run prefix; teardown (also on failure) kills
/// only the daemon this test started and deletes only its namespaces.
@Suite("System: anygated in network namespaces", .serialized,
       .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
struct SystemTests {
    let p: String
    let dir: String
    let anygated = SystemEnvironment.binary("anygated")
    let anygatectl = SystemEnvironment.binary("anygatectl")

    init() {
        p = "ag" + String(UInt32.random(in: 0..<0xFFFF), radix: 16)
        dir = NSTemporaryDirectory() + "anygate-system-\(p)"
    }

    var ns: (a: String, b: String, c: String, r: String) { (p + "A", p + "B", p + "C", p + "R") }
    var socket: String { dir + "/control.sock" }
    var configPath: String { dir + "/anygate.yaml" }

    func config(metricsPort: Int, extraRoute: Bool = true) -> String {
        """
        control: {socket: \(socket)}
        state: {directory: \(dir)/state}
        metrics: {listen: 127.0.0.1:\(metricsPort)}
        log: {level: info, format: json}
        interfaces:
          - name: lan0
            attach: {tap: \(p)-ta}
            addresses: [10.1.0.1/24]
          - name: lan1
            attach: {tap: \(p)-tb}
            addresses: [10.2.0.1/24]
          - name: lan2
            attach: {packet: \(p)-vc}
            offloads: false
            mac: 02:00:00:00:0c:01
            addresses: [10.3.0.1/24]
        routes:
        """ + (extraRoute ? "\n  - {to: 10.20.0.0/16, via: 10.2.0.2, metric: 5}\n" : " []\n")
    }

    func sh(_ cmd: String, timeout: Int = 60) -> (status: Int32, output: String) { Shell.run(cmd, timeout: timeout) }
    func ctl(_ args: String) -> (status: Int32, output: String) { sh("\(anygatectl) --socket \(socket) \(args)") }
    func inNS(_ n: String, _ cmd: String, timeout: Int = 60) -> (status: Int32, output: String) {
        sh("ip netns exec \(n) \(cmd)", timeout: timeout)
    }

    func setUpNamespaces() -> Bool {
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let steps = [
            "ip netns add \(ns.a)", "ip netns add \(ns.b)", "ip netns add \(ns.c)", "ip netns add \(ns.r)",
            "ip -n \(ns.r) link set lo up",
            // The packet attachment, without offloads (no virtio-net headers): C's side
            // cuts its own segments, but leaves their checksums to offload — the daemon
            // learns which from PACKET_AUXDATA and completes them. (Packet attachments
            // with offloads carry super-frames in the tunnel and mirror tests.)
            "ip -n \(ns.r) link add \(p)-vc type veth peer name \(p)-vcp netns \(ns.c)",
            "ip netns exec \(ns.c) ethtool -K \(p)-vcp tso off gso off",
            "ip -n \(ns.r) link set \(p)-vc up",
            "ip -n \(ns.c) addr add 10.3.0.2/24 dev \(p)-vcp", "ip -n \(ns.c) link set \(p)-vcp up",
            "ip -n \(ns.c) route add default via 10.3.0.1",
        ]
        for s in steps {
            let r = sh(s)
            if r.status != 0 { Issue.record("setup step failed: \(s): \(r.output)"); return false }
        }
        return true
    }

    /// Moves the daemon's TAPs into the host namespaces and configures them.
    func attachHosts() -> Bool {
        let steps = [
            "ip -n \(ns.r) link set \(p)-ta netns \(ns.a)", "ip -n \(ns.a) addr add 10.1.0.2/24 dev \(p)-ta",
            "ip -n \(ns.a) link set \(p)-ta up", "ip -n \(ns.a) route add default via 10.1.0.1",
            "ip -n \(ns.r) link set \(p)-tb netns \(ns.b)", "ip -n \(ns.b) addr add 10.2.0.2/24 dev \(p)-tb",
            "ip -n \(ns.b) link set \(p)-tb up", "ip -n \(ns.b) route add default via 10.2.0.1",
        ]
        for s in steps {
            let r = sh(s)
            if r.status != 0 { Issue.record("host step failed: \(s): \(r.output)"); return false }
        }
        return true
    }

    func tearDown(_ daemon: DaemonProcess?) {
        if let d = daemon { _ = d.stop() }
        for n in [ns.a, ns.b, ns.c, ns.r] { sh("ip netns del \(n) 2>/dev/null") }
        try? FileManager.default.removeItem(atPath: dir)
    }

    func ping(_ from: String, _ to: String, count: Int = 3) -> (status: Int32, output: String) {
        inNS(from, "ping -c \(count) -i 0.2 -W 2 \(to)", timeout: 20)
    }

    @Test("forwarding, TCP integrity, control, reload and a vanished TAP, end to end")
    func endToEnd() throws {
        defer { tearDown(nil) }
        guard setUpNamespaces() else { return }
        let metricsPort = 19_000 + Int.random(in: 0..<1000)
        try config(metricsPort: metricsPort).write(toFile: configPath, atomically: true, encoding: .utf8)
        let check = sh("\(anygated) --config \(configPath) --check")
        #expect(check.status == 0, "\(check.output)")
        #expect(check.output.contains("OK: 3 interfaces"))

        let daemon = try DaemonProcess(binary: anygated, config: configPath, namespace: ns.r, logPath: dir + "/anygated.log")
        defer { _ = daemon.stop() }
        let up = DaemonProcess.wait(seconds: 20) { FileManager.default.fileExists(atPath: socket) && ctl("show interfaces").status == 0 }
        try #require(up, "daemon did not come up: \(daemon.log)")
        guard attachHosts() else { return }

        // Control socket: mode 0600.
        let mode = (try FileManager.default.attributesOfItem(atPath: socket)[.posixPermissions] as? Int) ?? 0
        #expect(mode == 0o600)

        // Pings: TAP to TAP both ways, TAP to packet attachment and back.
        for (from, to) in [(ns.a, "10.2.0.2"), (ns.b, "10.1.0.2"), (ns.a, "10.3.0.2"), (ns.c, "10.1.0.2"), (ns.a, "10.1.0.1")] {
            let r = ping(from, to)
            #expect(r.status == 0 && r.output.contains(" 0% packet loss"), "ping \(from) -> \(to): \(r.output)")
        }

        // 50 MB over TCP, A -> B, then 5 MB C -> A through the packet
        // attachment, checksummed at both ends.
        for (size, from, to, addr, port) in [(50_000_000, ns.a, ns.b, "10.2.0.2", 5001), (5_000_000, ns.c, ns.a, "10.1.0.2", 5002)] {
            let src = dir + "/data-\(port).bin", dst = dir + "/recv-\(port).bin"
            sh("head -c \(size) /dev/urandom > \(src)")
            let listener = try Shell.spawn("exec ip netns exec \(to) timeout 120 nc -l -N \(addr) \(port)", output: dst)
            defer { if listener.isRunning { listener.terminate() } }
            let listening = DaemonProcess.wait(seconds: 10) { inNS(to, "ss -ltn").output.contains("\(addr):\(port)") }
            #expect(listening, "listener on \(addr):\(port) did not start")
            let send = inNS(from, "timeout 120 nc -N \(addr) \(port) < \(src)", timeout: 130)
            #expect(send.status == 0, "nc \(from) -> \(addr): \(send.output)")
            _ = DaemonProcess.wait(seconds: 60) { !listener.isRunning }
            let sums = sh("sha256sum \(src) \(dst) | cut -d' ' -f1").output.split(separator: "\n")
            #expect(sums.count == 2 && sums[0] == sums[1], "\(size) bytes \(from) -> \(to): checksums differ")
        }

        // ipflow: a UDP stream A -> 10.3.0.2 (C) runs on a flow; a more specific
        // route towards B (which takes 10.3.0.2 too) moves it, and after
        // `route add` returns not one more datagram reaches C.
        func udpIn(_ n: String) -> Int {
            let lines = inNS(n, "cat /proc/net/snmp").output.split(separator: "\n").filter { $0.hasPrefix("Udp:") }
            guard lines.count == 2 else { return -1 }
            let f = lines[1].split(separator: " ")
            return (Int(f[1]) ?? 0) + (Int(f[2]) ?? 0)  // InDatagrams + NoPorts
        }
        #expect(sh("ip -n \(ns.b) addr add 10.3.0.2/32 dev \(p)-tb").status == 0)
        let c0 = udpIn(ns.c), b0 = udpIn(ns.b)
        let stream = try Shell.spawn(
            "exec ip netns exec \(ns.a) bash -c 'exec 3>/dev/udp/10.3.0.2/9999; for i in $(seq 1500); do echo x >&3; sleep 0.002; done'",
            output: dir + "/stream.log")
        defer { if stream.isRunning { stream.terminate() } }
        #expect(DaemonProcess.wait(seconds: 20) { udpIn(ns.c) - c0 >= 100 }, "the stream reaches C")
        let flowsBefore = try JSONDecoder().decode([FlowInfo].self, from: Data(ctl("--json show flows").output.utf8))
        #expect(flowsBefore.contains { $0.destination == "10.3.0.2" && $0.interface == "lan2" && $0.packets > 0 }, "\(flowsBefore)")
        #expect(ctl("route add 10.3.0.2/32 dev lan1").status == 0)
        let c1 = udpIn(ns.c)
        _ = DaemonProcess.wait(seconds: 30) { !stream.isRunning }
        let c2 = udpIn(ns.c), b2 = udpIn(ns.b)
        #expect(c2 == c1, "\(c2 - c1) datagrams took the old path after the route change")
        #expect(b2 - b0 > 100, "the rest went to B (\(b2 - b0))")
        let flowsAfter = try JSONDecoder().decode([FlowInfo].self, from: Data(ctl("--json show flows").output.utf8))
        #expect(flowsAfter.contains { $0.destination == "10.3.0.2" && $0.interface == "lan1" }, "\(flowsAfter)")
        let stats = try JSONDecoder().decode(StatsInfo.self, from: Data(ctl("--json show stats").output.utf8))
        #expect((stats.counters["flowHits"] ?? 0) > 1000 && (stats.counters["flowsInvalidated"] ?? 0) >= 1)
        #expect(stats.ledger.balanced, "\(stats.ledger.violations)")
        #expect(ctl("flows flush").output.contains("flushed"))
        #expect(ctl("route del 10.3.0.2/32").status == 0)
        #expect(sh("ip -n \(ns.b) addr del 10.3.0.2/32 dev \(p)-tb").status == 0)

        // show routes --json, parsed.
        let routes = ctl("--json show routes")
        #expect(routes.status == 0)
        let parsed = try JSONDecoder().decode([RouteInfo].self, from: Data(routes.output.utf8)).map {
            RouteInfo(prefix: $0.prefix, nextHop: $0.nextHop, interface: $0.interface, metric: $0.metric, origin: $0.origin)
        }
        #expect(parsed.contains(RouteInfo(prefix: "10.1.0.0/24", nextHop: nil, interface: "lan0", metric: 0, origin: "connected")))
        #expect(parsed.contains(RouteInfo(prefix: "10.20.0.0/16", nextHop: "10.2.0.2", interface: "lan1", metric: 5, origin: "static")))
        #expect(routes.output.contains("\"nextHop\" : null"))

        // route del: the next ping fails with net unreachable; route add restores it.
        #expect(ctl("route del 10.2.0.0/24").status == 0)
        let unreachable = ping(ns.a, "10.2.0.2", count: 1)
        #expect(unreachable.status != 0 && unreachable.output.contains("Net Unreachable"), "\(unreachable.output)")
        #expect(ctl("route add 10.2.0.0/24 dev lan1").status == 0)
        #expect(ping(ns.a, "10.2.0.2", count: 1).status == 0)
        let refused = ctl("route add 10.9.0.0/16 via 192.0.2.1")
        #expect(refused.status == 1 && refused.output.contains("not on a connected subnet"))

        // Metrics, scraped from inside the daemon's namespace.
        let metrics = inNS(ns.r, "curl -sf http://127.0.0.1:\(metricsPort)/metrics")
        #expect(metrics.status == 0)
        #expect(metrics.output.contains("anygate_interface_rx_packets_total{interface=\"lan0\"}"))
        #expect(metrics.output.contains("anygate_drops_total{reason=\"no-route\"}"))
        #expect(metrics.output.contains("anygate_flow_hits_total "))

        // IPSELSRC: lan0 gets a second address and a preference policy; the
        // time-exceeded a `ping -t 1` from A receives comes from the route's
        // own address until `address preference` raises the other one.
        let good = try String(contentsOfFile: configPath, encoding: .utf8)
        try good.replacingOccurrences(of: "addresses: [10.1.0.1/24]",
                                      with: "addresses: [10.1.0.1/24, 10.1.9.1/24]\n    source-selection: [preference]")
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        #expect(ctl("reload").status == 0)
        let before = inNS(ns.a, "ping -c 1 -t 1 -W 2 10.2.0.2", timeout: 10).output
        #expect(before.contains("From 10.1.0.1 ") && before.contains("Time to live exceeded"), "\(before)")
        let pref = ctl("address preference lan0 10.1.9.1 10")
        #expect(pref.status == 0, "\(pref.output)")
        let after = inNS(ns.a, "ping -c 1 -t 1 -W 2 10.2.0.2", timeout: 10).output
        #expect(after.contains("From 10.1.9.1 ") && after.contains("Time to live exceeded"), "\(after)")
        let explained = ctl("explain source 10.1.0.2")
        #expect(explained.output.contains("chosen:     10.1.9.1"), "\(explained.output)")
        #expect(ctl("show addresses").output.contains("preference (interface)"))
        let wrong = ctl("address preference lan0 10.2.0.1 5")
        #expect(wrong.status == 1 && wrong.output.contains("not configured on lan0"), "\(wrong.output)")
        #expect(ctl("address preference nosuch 10.2.0.1 5").output.contains("no interface named nosuch"))
        try good.write(toFile: configPath, atomically: true, encoding: .utf8)
        #expect(ctl("reload").status == 0)

        // SIGHUP with a broken config keeps the running one, and forwarding.
        try (good + "\nbogus: [\n").write(toFile: configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        #expect(DaemonProcess.wait(seconds: 10) { daemon.log.contains("reload refused") }, "\(daemon.log)")
        #expect(ping(ns.a, "10.2.0.2").status == 0)
        #expect(ctl("show interfaces").output.contains("lan2"))

        // A valid reload applies the difference: a new route appears without a restart.
        try good.replacingOccurrences(of: "routes:\n", with: "routes:\n  - {to: 10.30.0.0/16, via: 10.3.0.2}\n")
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        let reloaded = ctl("reload")
        #expect(reloaded.status == 0, "\(reloaded.output)")
        #expect(ctl("show routes").output.contains("10.30.0.0/16"))
        #expect(ping(ns.a, "10.3.0.2", count: 1).status == 0)

        // Reload adding an address and changing an MTU, then taking the address away again.
        let withAddress = good.replacingOccurrences(of: "addresses: [10.1.0.1/24]", with: "mtu: 1400\n    addresses: [10.1.0.1/24, 10.1.1.1/24]")
        try withAddress.write(toFile: configPath, atomically: true, encoding: .utf8)
        #expect(ctl("reload").status == 0)
        #expect(ping(ns.a, "10.1.1.1", count: 1).status == 0, "new address answers")
        let lan0 = try JSONDecoder().decode([InterfaceInfo].self, from: Data(ctl("--json show interfaces").output.utf8))
            .first { $0.name == "lan0" }
        #expect(lan0?.mtu == 1400 && lan0?.addresses.map(\.address) == ["10.1.0.1/24", "10.1.1.1/24"])
        try good.write(toFile: configPath, atomically: true, encoding: .utf8)
        #expect(ctl("reload").status == 0)
        #expect(ping(ns.a, "10.1.1.1", count: 1).status != 0, "removed address no longer answers")
        #expect(!ctl("show routes").output.contains("10.30.0.0/16"), "the route only the previous file had is gone")

        // Deleting a TAP from outside does not stop the daemon.
        #expect(sh("ip -n \(ns.b) link del \(p)-tb").status == 0)
        _ = ping(ns.a, "10.2.0.2", count: 2)
        #expect(daemon.isRunning)
        let afterLoss = ctl("--json show interfaces")
        #expect(afterLoss.status == 0)
        #expect(DaemonProcess.wait(seconds: 10) { daemon.log.contains("lost") }, "\(daemon.log)")
        #expect(ping(ns.a, "10.3.0.2", count: 1).status == 0, "other interfaces keep forwarding")

        // Graceful stop: exit 0, control socket removed.
        let status = daemon.stop()
        #expect(status == 0, "\(daemon.log)")
        #expect(!FileManager.default.fileExists(atPath: socket))
        #expect(!sh("ip -n \(ns.r) link show \(p)-tb").output.contains("state"), "the recreated TAP went with the daemon")
    }

    @Test("start-up failures are one clear line with exit status 1; bad configs exit 2")
    func startupFailures() throws {
        defer { tearDown(nil) }
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        #expect(sh("ip netns add \(ns.r)").status == 0)
        try """
        control: {socket: \(socket)}
        state: {directory: \(dir)/state}
        interfaces:
          - name: wan0
            attach: {packet: \(p)-nothere}
            addresses: [192.0.2.1/24]
        """.write(toFile: configPath, atomically: true, encoding: .utf8)
        let missing = inNS(ns.r, "\(anygated) --config \(configPath)")
        #expect(missing.status == 1)
        #expect(missing.output.contains("host interface \(p)-nothere not found"), "\(missing.output)")
        #expect(missing.output.split(separator: "\n").count == 1, "one line: \(missing.output)")

        // No /dev/net/tun (hidden in a private mount namespace), then no CAP_NET_ADMIN.
        try """
        control: {socket: \(socket)}
        state: {directory: \(dir)/state}
        interfaces:
          - name: lan0
            attach: {tap: \(p)-t0}
        """.write(toFile: configPath, atomically: true, encoding: .utf8)
        let noTun = inNS(ns.r, "unshare -m sh -c 'mount -t tmpfs none /dev/net && exec \(anygated) --config \(configPath)'")
        #expect(noTun.status == 1)
        #expect(noTun.output.contains("/dev/net/tun is missing"), "\(noTun.output)")
        let noCap = inNS(ns.r, "setpriv --bounding-set -net_admin \(anygated) --config \(configPath)")
        #expect(noCap.status == 1)
        #expect(noCap.output.contains("needs CAP_NET_ADMIN"), "\(noCap.output)")

        try "interfaces:\n  - name: a\n    attach: {tap: t0}\n    mtu: huge\n".write(toFile: configPath, atomically: true, encoding: .utf8)
        let bad = sh("\(anygated) --config \(configPath) --check")
        #expect(bad.status == 2)
        #expect(bad.output.contains("\(configPath):4: interfaces[0].mtu: expected a whole number"), "\(bad.output)")
        #expect(sh("\(anygated) --no-such-flag").status == 2)
        #expect(sh("\(anygatectl) --socket \(socket) show routes").status == 1)
    }
}
