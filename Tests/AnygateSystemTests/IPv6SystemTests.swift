import AnygateControl
import Foundation
import Testing

/// IPv6 on the gateway's own addresses, with Linux as the peer:
///
///     ns A: ta 2001:db8:1::2/64 (and 2001:db8:99::5 on lo) ─TAP─ ns R: anygated lan0 2001:db8:1::1/64
///
/// Linux resolves the gateway by neighbour discovery and pings its global
/// and link-local addresses; the gateway resolves Linux the same way to
/// answer, also through a route to a prefix behind it.
@Suite("System: IPv6 on the gateway's addresses", .serialized,
       .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
struct IPv6SystemTests {
    let p = "ag" + String(UInt32.random(in: 0..<0xFFFF), radix: 16)
    var dir: String { NSTemporaryDirectory() + "anygate-ipv6-\(p)" }
    let anygated = SystemEnvironment.binary("anygated")
    let anygatectl = SystemEnvironment.binary("anygatectl")
    var nsA: String { p + "A" }
    var nsR: String { p + "R" }
    var socket: String { dir + "/control.sock" }
    var configPath: String { dir + "/anygate.yaml" }

    var nsB: String { p + "B" }
    var nsS: String { p + "S" }

    /// Two links, both IPv6: A on lan0, B on lan1.
    func routerConfig(advertise: Bool = false, workers: Int = 1, lan1MTU: Int = 1500) -> String {
        """
        control: {socket: \(socket)}
        state: {directory: \(dir)/state}
        stack: {workers: \(workers)}
        interfaces:
          - name: lan0
            attach: {tap: \(p)-ta}
            ipv6: {addresses: [2001:db8:1::1/64]\(advertise ? ", router-advertisements: {interval: 30s, mtu: 1500}" : "")}
          - name: lan1
            attach: {tap: \(p)-tb}
            mtu: \(lan1MTU)
            ipv6: {addresses: [2001:db8:2::1/64]}
        routes:
          - {to: 2001:db8:99::/48, via: 2001:db8:2::2, interface: lan1}
        """
    }

    func config(ipv6: Bool) -> String {
        """
        control: {socket: \(socket)}
        state: {directory: \(dir)/state}
        interfaces:
          - name: lan0
            attach: {tap: \(p)-ta}
            mac: 02:00:00:00:61:01
            addresses: [10.1.0.1/24]
        """ + (ipv6 ? "\n    ipv6: {addresses: [2001:db8:1::1/64]}\n" : "\n")
    }

    func sh(_ cmd: String, timeout: Int = 60) -> (status: Int32, output: String) { Shell.run(cmd, timeout: timeout) }
    func ctl(_ args: String) -> (status: Int32, output: String) { sh("\(anygatectl) --socket \(socket) \(args)") }
    func inA(_ cmd: String, timeout: Int = 30) -> (status: Int32, output: String) { sh("ip netns exec \(nsA) \(cmd)", timeout: timeout) }

    /// Makes the namespaces (the daemon's with its loopback up) after the run's directory.
    func makeNamespaces(_ names: [String]) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for s in names.map({ "ip netns add \($0)" }) + ["ip -n \(nsR) link set lo up"] {
            try #require(sh(s).status == 0, "\(s)")
        }
    }

    /// Writes `config`, checks it, starts anygated in R and waits until it
    /// answers and its IPv6 addresses are past duplicate address detection.
    func startDaemon(_ config: String) throws -> DaemonProcess {
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        let check = sh("\(anygated) --config \(configPath) --check")
        #expect(check.status == 0, "\(check.output)")
        let daemon = try DaemonProcess(binary: anygated, config: configPath, namespace: nsR, logPath: dir + "/anygated.log")
        try #require(DaemonProcess.wait(seconds: 20) { FileManager.default.fileExists(atPath: socket) && ctl("show interfaces").status == 0 },
                     "daemon did not come up: \(daemon.log)")
        waitPreferred()
        return daemon
    }

    /// Waits until the gateway's IPv6 addresses are past duplicate address detection.
    func waitPreferred() {
        _ = DaemonProcess.wait(seconds: 10) {
            let out = ctl("show addresses").output
            return !out.isEmpty && !out.contains("tentative")
        }
    }

    func tearDown() {
        for n in [nsA, nsB, nsR, nsS] { sh("ip netns del \(n) 2>/dev/null") }
        try? FileManager.default.removeItem(atPath: dir)
    }

    @Test("Linux pings the gateway's global and link-local addresses through neighbour discovery; a reload turns IPv6 off")
    func pingByNeighborDiscovery() throws {
        defer { tearDown() }
        try makeNamespaces([nsA, nsR])
        let daemon = try startDaemon(config(ipv6: true))
        defer { _ = daemon.stop() }
        let tap = "\(p)-ta"
        for s in ["ip -n \(nsR) link set \(tap) netns \(nsA)",
                  // Addresses usable at once (no DAD wait on this side either).
                  "ip netns exec \(nsA) sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
                  "ip -n \(nsA) addr add 2001:db8:1::2/64 dev \(tap) nodad", "ip -n \(nsA) link set \(tap) up",
                  "ip -n \(nsA) link set lo up", "ip -n \(nsA) addr add 2001:db8:99::5/128 dev lo"] {
            try #require(sh(s).status == 0, "\(s)")
        }
        // The gateway's addresses, as it shows them.
        let addresses = ctl("show addresses").output
        #expect(addresses.contains("fe80::ff:fe00:6101/64") && addresses.contains("2001:db8:1::1/64"), "\(addresses)")
        #expect(ctl("show routes").output.contains("2001:db8:1::/64"))
        // An IPv6 address takes a preference number at run time, as an IPv4 one does.
        #expect(ctl("address preference lan0 2001:db8:1::1 7").status == 0)
        let prefs = try JSONDecoder().decode([AddressInfo].self, from: Data(ctl("--json show addresses").output.utf8))
        #expect(prefs.contains { $0.address == "2001:db8:1::1/64" && $0.preference == 7 }, "\(prefs)")
        #expect(ctl("address preference lan0 2001:db8:7::1 7").status != 0, "not an address of lan0")

        let global = inA("ping -6 -c 3 -i 0.2 -W 2 2001:db8:1::1")
        #expect(global.status == 0 && global.output.contains(" 0% packet loss"), "\(global.output)\n\(daemon.log)")
        let linkLocal = inA("ping -6 -c 3 -i 0.2 -W 2 fe80::ff:fe00:6101%\(tap)")
        #expect(linkLocal.status == 0 && linkLocal.output.contains(" 0% packet loss"), "\(linkLocal.output)")
        // Linux learnt the gateway by ND, as a router; the gateway learnt Linux.
        let neigh = inA("ip -6 neigh show dev \(tap)").output
        #expect(neigh.contains("2001:db8:1::1 lladdr 02:00:00:00:61:01") && neigh.contains("router"), "\(neigh)")
        let theirs = try JSONDecoder().decode([NeighborInfo].self, from: Data(ctl("--json show neighbors").output.utf8))
        let hostMAC = inA("cat /sys/class/net/\(tap)/address").output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(theirs.contains { $0.address == "2001:db8:1::2" && $0.mac == hostMAC }, "\(theirs)")

        // A prefix behind the host: the reply to its address goes through the route.
        #expect(ctl("route add 2001:db8:99::/48 via 2001:db8:1::2 dev lan0").status == 0)
        let routed = inA("ping -6 -c 3 -i 0.2 -W 2 -I 2001:db8:99::5 2001:db8:1::1")
        #expect(routed.status == 0 && routed.output.contains(" 0% packet loss"), "\(routed.output)")
        #expect(ctl("route del 2001:db8:99::/48").status == 0)

        var stats = try JSONDecoder().decode(StatsInfo.self, from: Data(ctl("--json show stats").output.utf8))
        #expect(stats.ledger.balanced, "\(stats.ledger.violations)")

        // IPv6 off by reload: the same pings are counted and dropped.
        try config(ipv6: false).write(toFile: configPath, atomically: true, encoding: .utf8)
        #expect(ctl("reload").status == 0)
        #expect(!ctl("show addresses").output.contains("2001:db8:1::1"))
        let before = stats.drops["ipv6-not-supported"] ?? 0
        _ = inA("ping -6 -c 2 -i 0.2 -W 1 2001:db8:1::1")
        stats = try JSONDecoder().decode(StatsInfo.self, from: Data(ctl("--json show stats").output.utf8))
        #expect((stats.drops["ipv6-not-supported"] ?? 0) > before, "\(stats.drops)")
        #expect(stats.ledger.balanced, "\(stats.ledger.violations)")
    }

    @Test("the gateway forwards IPv6 between a Linux host and a Linux router, both learnt by ND alone: ping6, 20 MB over TCP checksummed, hop limit, no route")
    func forwarding() throws {
        defer { tearDown() }
        try makeNamespaces([nsA, nsB, nsR])
        let daemon = try startDaemon(routerConfig())
        defer { _ = daemon.stop() }
        // B is a Linux router (forwarding on: its advertisements carry the router flag) for 2001:db8:99::/48.
        try #require(sh("ip netns exec \(nsB) sysctl -qw net.ipv6.conf.all.forwarding=1").status == 0)
        for (n, tap, address, gateway) in [(nsA, "\(p)-ta", "2001:db8:1::2/64", "2001:db8:1::1"), (nsB, "\(p)-tb", "2001:db8:2::2/64", "2001:db8:2::1")] {
            for s in ["ip -n \(nsR) link set \(tap) netns \(n)",
                      "ip netns exec \(n) sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
                      "ip -n \(n) addr add \(address) dev \(tap) nodad", "ip -n \(n) link set \(tap) up",
                      "ip -n \(n) -6 route add default via \(gateway)"] {
                try #require(sh(s).status == 0, "\(s)")
            }
        }
        let ping = sh("ip netns exec \(nsA) ping -6 -c 3 -i 0.2 -W 2 2001:db8:2::2", timeout: 20)
        #expect(ping.status == 0 && ping.output.contains(" 0% packet loss"), "\(ping.output)\n\(daemon.log)")
        #expect(ping.output.contains("ttl=63") || ping.output.contains("hlim=63"), "one hop: \(ping.output)")
        // The address the gateway speaks from towards B, and why (RFC 6724).
        let explained = ctl("explain source 2001:db8:2::2").output
        #expect(explained.contains("2001:db8:2::1") && explained.contains("rfc6724"), "\(explained)")
        // A prefix behind B, by the config's IPv6 route.
        #expect(sh("ip -n \(nsB) link set lo up").status == 0 && sh("ip -n \(nsB) addr add 2001:db8:99::5/128 dev lo").status == 0)
        let behind = sh("ip netns exec \(nsA) ping -6 -c 3 -i 0.2 -W 2 2001:db8:99::5", timeout: 20)
        #expect(behind.status == 0 && behind.output.contains(" 0% packet loss"), "\(behind.output)\n\(ctl("show routes").output)")
        // explain route takes IPv6 as it takes IPv4.
        let explainedRoute = try JSONDecoder().decode(ExplainRouteInfo.self, from: Data(ctl("--json explain route 2001:db8:99::5").output.utf8))
        #expect(explainedRoute.chosen?.nextHop == "2001:db8:2::2" && explainedRoute.chosen?.interface == "lan1")
        #expect(explainedRoute.neighbor?.mac != nil && explainedRoute.sourceAddress == "2001:db8:2::1", "\(ctl("explain route 2001:db8:99::5").output)")

        // 20 MB A -> B over TCP (TSO6 super-frames from A's TAP), checksummed at both ends.
        let src = dir + "/data.bin", dst = dir + "/recv.bin"
        sh("head -c 20000000 /dev/urandom > \(src)")
        let listener = try Shell.spawn("exec ip netns exec \(nsB) timeout 120 nc -6 -l -N 2001:db8:2::2 5001", output: dst)
        defer { if listener.isRunning { listener.terminate() } }
        #expect(DaemonProcess.wait(seconds: 10) { sh("ip netns exec \(nsB) ss -ltn").output.contains("5001") })
        let send = sh("ip netns exec \(nsA) timeout 120 nc -6 -N 2001:db8:2::2 5001 < \(src)", timeout: 130)
        #expect(send.status == 0, "\(send.output)")
        _ = DaemonProcess.wait(seconds: 60) { !listener.isRunning }
        let sums = sh("sha256sum \(src) \(dst) | cut -d' ' -f1").output.split(separator: "\n")
        #expect(sums.count == 2 && sums[0] == sums[1], "20 MB A -> B: checksums differ")
        // The transfer's flows are in ip6flow, with their flow labels, as show flows lists them.
        let flows = try JSONDecoder().decode([FlowInfo].self, from: Data(ctl("--json show flows").output.utf8))
        let toB = flows.filter { $0.destination == "2001:db8:2::2" && $0.flowLabel != nil }
        #expect(toB.contains { $0.packets > 100 && $0.interface == "lan1" }, "\(ctl("show flows").output)")

        // Hop limit 1: time exceeded from the gateway; no route: unreachable.
        let expired = sh("ip netns exec \(nsA) ping -6 -c 1 -t 1 -W 2 2001:db8:2::2", timeout: 10).output
        #expect(expired.contains("Time exceeded") || expired.contains("Time to live exceeded"), "\(expired)")
        let unreachable = sh("ip netns exec \(nsA) ping -6 -c 1 -W 2 2001:db8:9::1", timeout: 10).output
        #expect(unreachable.contains("nreachable"), "\(unreachable)")
        let stats = try JSONDecoder().decode(StatsInfo.self, from: Data(ctl("--json show stats").output.utf8))
        #expect((stats.counters["ipForwarded"] ?? 0) > 300, "20 MB in super-frames of up to 64 KB, and the acknowledgements")
        #expect(stats.ledger.balanced, "\(stats.ledger.violations)")
    }

    @Test("with two workers: SLAAC from the owner's advertisements, 64 flows spread over both workers and all delivered, a route added at run time on every worker, 20 MB checksummed")
    func twoWorkers() throws {
        defer { tearDown() }
        try makeNamespaces([nsA, nsB, nsR])
        let daemon = try startDaemon(routerConfig(advertise: true, workers: 2))
        defer { _ = daemon.stop() }
        let ta = "\(p)-ta", tb = "\(p)-tb"
        for s in ["ip -n \(nsR) link set \(ta) netns \(nsA)", "ip -n \(nsR) link set \(tb) netns \(nsB)",
                  "ip netns exec \(nsA) sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.default.accept_ra=1 net.ipv6.conf.default.autoconf=1",
                  "ip -n \(nsA) link set \(ta) up",
                  "ip netns exec \(nsB) sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
                  "ip -n \(nsB) addr add 2001:db8:2::2/64 dev \(tb) nodad", "ip -n \(nsB) link set \(tb) up",
                  "ip -n \(nsB) -6 route add default via 2001:db8:2::1",
                  "ip -n \(nsB) link set lo up", "ip -n \(nsB) addr add 2001:db8:99::5/128 dev lo"] {
            try #require(sh(s).status == 0, "\(s)")
        }
        let configured = DaemonProcess.wait(seconds: 20) {
            let global = sh("ip -n \(nsA) -6 addr show dev \(ta) scope global").output
            return global.contains("2001:db8:1:") && !global.contains("tentative")
                && sh("ip -n \(nsA) -6 route show default").output.contains("via fe80::")
        }
        #expect(configured, "no SLAAC address or default route on A:\n\(sh("ip -n \(nsA) -6 addr; ip -n \(nsA) -6 route").output)\n\(daemon.log)")
        let ping = sh("ip netns exec \(nsA) ping -6 -c 3 -i 0.2 -W 2 2001:db8:2::2", timeout: 20)
        #expect(ping.status == 0 && ping.output.contains(" 0% packet loss"),
                "\(ping.output)\n\(ctl("show neighbors").output)\n\(daemon.log)\n\(sh("ip -n \(nsB) -6 neigh; ip -n \(nsA) -6 neigh; ip -n \(nsA) -6 addr").output)")

        // A route added at run time reaches both workers: 64 UDP flows to the
        // prefix behind B, spread by the TAP's queues, every datagram delivered.
        #expect(ctl("route del 2001:db8:99::/48").status == 0)
        #expect(ctl("route add 2001:db8:99::/48 via 2001:db8:2::2 dev lan1").status == 0)
        func lan1Tx() throws -> UInt64 {
            let list = try JSONDecoder().decode([InterfaceInfo].self, from: Data(ctl("--json show interfaces").output.utf8))
            return try #require(list.first { $0.name == "lan1" }).counters.txPackets
        }
        func workerRx() throws -> [UInt64] {
            let st = try JSONDecoder().decode(StatsInfo.self, from: Data(ctl("--json show stats").output.utf8))
            return (st.workers ?? []).sorted { $0.index < $1.index }.map(\.rxPackets)
        }
        let txBefore = try lan1Tx(), rxBefore = try workerRx()
        let flows = sh("ip netns exec \(nsA) python3 -c \"import socket, time\nfor f in range(64):\n"
                       + "  s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n  s.bind(('', 30000 + f))\n"
                       + "  for i in range(100): s.sendto(b'y' * 64, ('2001:db8:99::5', 9))\n  s.close()\n  time.sleep(0.005)\"", timeout: 60)
        #expect(flows.status == 0, "\(flows.output)")
        usleep(500_000)
        let delivered = try lan1Tx() - txBefore
        #expect(delivered >= 6400, "lan1 sent \(delivered) of 6 400\n\(ctl("show neighbors").output)\n\(daemon.log)")
        let rxAfter = try workerRx()
        try #require(rxAfter.count == 2 && rxBefore.count == 2, "two workers: \(rxAfter)")
        let d0 = Double(rxAfter[0] - rxBefore[0]), d1 = Double(rxAfter[1] - rxBefore[1])
        #expect(d0 >= 0.2 * (d0 + d1) && d1 >= 0.2 * (d0 + d1), "worker shares \(d0) / \(d1)")
        // One row per neighbour, whichever worker learnt it.
        let neighbors = try JSONDecoder().decode([NeighborInfo].self, from: Data(ctl("--json show neighbors").output.utf8))
        #expect(neighbors.filter { $0.address == "2001:db8:2::2" }.count == 1 && neighbors.contains { $0.address == "2001:db8:2::2" && $0.mac != nil },
                "\(neighbors)")

        // 20 MB A -> B over TCP, checksummed at both ends.
        let src = dir + "/data.bin", dst = dir + "/recv.bin"
        sh("head -c 20000000 /dev/urandom > \(src)")
        let listener = try Shell.spawn("exec ip netns exec \(nsB) timeout 120 nc -6 -l -N 2001:db8:2::2 5001", output: dst)
        defer { if listener.isRunning { listener.terminate() } }
        #expect(DaemonProcess.wait(seconds: 10) { sh("ip netns exec \(nsB) ss -ltn").output.contains("5001") })
        let send = sh("ip netns exec \(nsA) timeout 120 nc -6 -N 2001:db8:2::2 5001 < \(src)", timeout: 130)
        #expect(send.status == 0, "\(send.output)")
        _ = DaemonProcess.wait(seconds: 60) { !listener.isRunning }
        let sums = sh("sha256sum \(src) \(dst) | cut -d' ' -f1").output.split(separator: "\n")
        #expect(sums.count == 2 && sums[0] == sums[1], "20 MB A -> B: checksums differ")
        let stats = try JSONDecoder().decode(StatsInfo.self, from: Data(ctl("--json show stats").output.utf8))
        #expect(stats.ledger.balanced, "\(stats.ledger.violations)")
    }

    @Test("path MTU discovery across the gateway's 1400-byte link: Linux gets packet too big, lowers its path MTU, and a 5 MB DF transfer converges intact")
    func packetTooBig() throws {
        defer { tearDown() }
        try makeNamespaces([nsA, nsB, nsR])
        let daemon = try startDaemon(routerConfig(lan1MTU: 1400))
        defer { _ = daemon.stop() }
        // B's own link says 1500: it offers A a full-size MSS, so A's segments
        // are too big for the gateway's 1400-byte egress (IPv6 routers never fragment).
        for (n, tap, address, gateway) in [(nsA, "\(p)-ta", "2001:db8:1::2/64", "2001:db8:1::1"), (nsB, "\(p)-tb", "2001:db8:2::2/64", "2001:db8:2::1")] {
            for s in ["ip -n \(nsR) link set \(tap) netns \(n)",
                      "ip netns exec \(n) sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
                      "ip -n \(n) link set \(tap) mtu 1500",
                      "ip -n \(n) addr add \(address) dev \(tap) nodad", "ip -n \(n) link set \(tap) up",
                      "ip -n \(n) -6 route add default via \(gateway)"] {
                try #require(sh(s).status == 0, "\(s)")
            }
        }
        // One packet too big: 1452 bytes of ping with DF (IPv6 is always DF) gets the gateway's answer.
        let big = sh("ip netns exec \(nsA) ping -6 -c 1 -s 1452 -W 2 2001:db8:2::2", timeout: 10).output
        #expect(big.contains("Packet too big") && big.contains("mtu=1400"), "\(big)\n\(daemon.log)")
        let route = sh("ip -n \(nsA) -6 route get 2001:db8:2::2").output
        #expect(route.contains("mtu 1400"), "A cached the path MTU: \(route)")
        let fits = sh("ip netns exec \(nsA) ping -6 -c 2 -i 0.2 -s 1352 -W 2 2001:db8:2::2", timeout: 10)
        #expect(fits.status == 0 && fits.output.contains(" 0% packet loss"), "1400 bytes fit: \(fits.output)")
        // A TCP transfer started afresh (new flow, full-size MSS from B) converges: every byte arrives.
        sh("ip -n \(nsA) -6 route flush cache")
        let src = dir + "/data.bin", dst = dir + "/recv.bin"
        sh("head -c 5000000 /dev/urandom > \(src)")
        let listener = try Shell.spawn("exec ip netns exec \(nsB) timeout 60 nc -6 -l -N 2001:db8:2::2 5001", output: dst)
        defer { if listener.isRunning { listener.terminate() } }
        #expect(DaemonProcess.wait(seconds: 10) { sh("ip netns exec \(nsB) ss -ltn").output.contains("5001") })
        let send = sh("ip netns exec \(nsA) timeout 60 nc -6 -N 2001:db8:2::2 5001 < \(src)", timeout: 70)
        #expect(send.status == 0, "\(send.output)")
        _ = DaemonProcess.wait(seconds: 30) { !listener.isRunning }
        let sums = sh("sha256sum \(src) \(dst) | cut -d' ' -f1").output.split(separator: "\n")
        #expect(sums.count == 2 && sums[0] == sums[1], "5 MB through the 1400-byte link: checksums differ")
        #expect(sh("ip -n \(nsA) -6 route get 2001:db8:2::2").output.contains("mtu 1400"))
        let stats = try JSONDecoder().decode(StatsInfo.self, from: Data(ctl("--json show stats").output.utf8))
        #expect((stats.counters["icmpErrorsSent"] ?? 0) >= 2 && (stats.drops["fragmentation-needed"] ?? 0) >= 2,
                "packet too big for the ping and for the transfer: \(stats.counters["icmpErrorsSent"] ?? 0)")
        #expect(stats.ledger.balanced, "\(stats.ledger.violations)")
    }

    @Test("a Linux host configures itself from the gateway's router advertisements (SLAAC) and reaches the far link")
    func slaac() throws {
        defer { tearDown() }
        try makeNamespaces([nsA, nsB, nsR])
        let daemon = try startDaemon(routerConfig(advertise: true))
        defer { _ = daemon.stop() }
        let ta = "\(p)-ta", tb = "\(p)-tb"
        for s in ["ip -n \(nsR) link set \(ta) netns \(nsA)", "ip -n \(nsR) link set \(tb) netns \(nsB)",
                  // A: nothing configured but SLAAC (a host: no forwarding, accepting advertisements).
                  "ip netns exec \(nsA) sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.default.accept_ra=1 net.ipv6.conf.default.autoconf=1",
                  "ip -n \(nsA) link set \(ta) up",
                  "ip netns exec \(nsB) sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
                  "ip -n \(nsB) addr add 2001:db8:2::2/64 dev \(tb) nodad", "ip -n \(nsB) link set \(tb) up",
                  "ip -n \(nsB) -6 route add default via 2001:db8:2::1"] {
            try #require(sh(s).status == 0, "\(s)")
        }
        let mac = sh("ip netns exec \(nsA) cat /sys/class/net/\(ta)/address").output.trimmingCharacters(in: .whitespacesAndNewlines)
        let configured = DaemonProcess.wait(seconds: 20) {
            // Formed, and past Linux's own duplicate address detection.
            let global = sh("ip -n \(nsA) -6 addr show dev \(ta) scope global").output
            return global.contains("2001:db8:1:") && !global.contains("tentative")
                && sh("ip -n \(nsA) -6 route show default").output.contains("via fe80::")
        }
        let addr = sh("ip -n \(nsA) -6 addr show dev \(ta)").output, routes = sh("ip -n \(nsA) -6 route").output
        #expect(configured, "no SLAAC address or default route on A (MAC \(mac)):\n\(addr)\n\(routes)\n\(daemon.log)")
        let ping = sh("ip netns exec \(nsA) ping -6 -c 3 -i 0.2 -W 2 2001:db8:2::2", timeout: 20)
        #expect(ping.status == 0 && ping.output.contains(" 0% packet loss"),
                "\(ping.output)\n\(addr)\n\(routes)\n\(ctl("show stats").output)\n\(ctl("show neighbors").output)\n\(sh("ip -n \(nsB) -6 neigh").output)")
        let stats = try JSONDecoder().decode(StatsInfo.self, from: Data(ctl("--json show stats").output.utf8))
        #expect(stats.ledger.balanced, "\(stats.ledger.violations)")
    }

    @Test("through a Linux bridge that snoops MLD with its own querier: the gateway's groups registered on its port, SLAAC, ping6 across")
    func behindSnoopingBridge() throws {
        defer { tearDown() }
        try makeNamespaces([nsA, nsB, nsR, nsS])
        let daemon = try startDaemon(routerConfig(advertise: true))
        defer { _ = daemon.stop() }
        let ta = "\(p)-ta", tb = "\(p)-tb", va = "\(p)-va", vs = "\(p)-vs", br = "\(p)-br"
        for s in [
            // The switch: snooping on and its own querier, asking often. (With
            // `mcast_flood off` a Linux bridge would not pass all-nodes traffic,
            // router advertisements included, which RFC 4541 says to flood.)
            "ip -n \(nsS) link add \(br) type bridge mcast_snooping 1 mcast_querier 1 mcast_query_interval 300 mcast_query_response_interval 100 mcast_startup_query_interval 100",
            "ip -n \(nsR) link set \(ta) netns \(nsS)", "ip -n \(nsS) link set \(ta) master \(br)",
            "ip -n \(nsS) link add \(vs) type veth peer name \(va) netns \(nsA)", "ip -n \(nsS) link set \(vs) master \(br)",
            "ip -n \(nsS) link set \(ta) up", "ip -n \(nsS) link set \(vs) up", "ip -n \(nsS) link set \(br) up",
            "ip netns exec \(nsA) sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.\(va).accept_dad=0",
            "ip -n \(nsA) link set \(va) up",
            "ip -n \(nsR) link set \(tb) netns \(nsB)",
            "ip netns exec \(nsB) sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
            "ip -n \(nsB) addr add 2001:db8:2::2/64 dev \(tb) nodad", "ip -n \(nsB) link set \(tb) up",
            "ip -n \(nsB) -6 route add default via 2001:db8:2::1",
        ] {
            try #require(sh(s).status == 0, "\(s)")
        }
        // The switch learns the gateway's groups from its reports (answers to the querier).
        let registered = DaemonProcess.wait(seconds: 30) {
            let mdb = sh("bridge -n \(nsS) mdb show").output
            return mdb.contains("port \(ta) grp ff02::2") && mdb.contains("port \(ta) grp ff02::1:ff")
        }
        #expect(registered, "the bridge never saw the gateway's groups:\n\(sh("bridge -n \(nsS) mdb show").output)")
        let configured = DaemonProcess.wait(seconds: 40) {
            let global = sh("ip -n \(nsA) -6 addr show dev \(va) scope global").output
            return global.contains("2001:db8:1:") && !global.contains("tentative")
                && sh("ip -n \(nsA) -6 route show default").output.contains("via fe80::")
        }
        #expect(configured, "no SLAAC through the bridge:\n\(sh("ip -n \(nsA) -6 addr").output)\n\(sh("bridge -n \(nsS) mdb show").output)")
        let ping = sh("ip netns exec \(nsA) ping -6 -c 3 -i 0.2 -W 2 2001:db8:2::2", timeout: 20)
        #expect(ping.status == 0 && ping.output.contains(" 0% packet loss"), "\(ping.output)\n\(sh("bridge -n \(nsS) mdb show").output)")
        let stats = try JSONDecoder().decode(StatsInfo.self, from: Data(ctl("--json show stats").output.utf8))
        #expect(stats.ledger.balanced, "\(stats.ledger.violations)")
    }

    @Test("on a packet attachment the device takes in the groups neighbour discovery needs (PACKET_MR_MULTICAST), and ping6 works")
    func packetAttachmentMulticast() throws {
        defer { tearDown() }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for s in ["ip netns add \(nsA)", "ip netns add \(nsR)", "ip -n \(nsR) link set lo up",
                  "ip -n \(nsR) link add \(p)-vr type veth peer name \(p)-vp netns \(nsA)", "ip -n \(nsR) link set \(p)-vr up",
                  "ip netns exec \(nsA) sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.\(p)-vp.accept_dad=0",
                  "ip -n \(nsA) addr add 2001:db8:5::2/64 dev \(p)-vp nodad", "ip -n \(nsA) link set \(p)-vp up"] {
            try #require(sh(s).status == 0, "\(s)")
        }
        try """
        control: {socket: \(socket)}
        state: {directory: \(dir)/state}
        interfaces:
          - name: wan0
            attach: {packet: \(p)-vr}
            mac: 02:00:00:00:62:01
            ipv6: {addresses: [2001:db8:5::1234/64]}
        """.write(toFile: configPath, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(binary: anygated, config: configPath, namespace: nsR, logPath: dir + "/anygated.log")
        defer { _ = daemon.stop() }
        try #require(DaemonProcess.wait(seconds: 20) { FileManager.default.fileExists(atPath: socket) && ctl("show interfaces").status == 0 },
                     "daemon did not come up: \(daemon.log)")
        waitPreferred()
        // The solicited-node groups of fe80::ff:fe00:6201 and 2001:db8:5::1234, all-routers, all-nodes, MLDv2.
        let wanted = ["33:33:ff:00:62:01", "33:33:ff:00:12:34", "33:33:00:00:00:02", "33:33:00:00:00:01", "33:33:00:00:00:16"]
        let joined = DaemonProcess.wait(seconds: 10) {
            let m = sh("ip -n \(nsR) maddr show dev \(p)-vr").output
            return wanted.allSatisfy { m.contains($0) }
        }
        #expect(joined, "\(sh("ip -n \(nsR) maddr show dev \(p)-vr").output)")
        let ping = sh("ip netns exec \(nsA) ping -6 -c 3 -i 0.2 -W 2 2001:db8:5::1234", timeout: 20)
        #expect(ping.status == 0 && ping.output.contains(" 0% packet loss"), "\(ping.output)\n\(daemon.log)")
        // Removing the address by reload leaves its group.
        try """
        control: {socket: \(socket)}
        state: {directory: \(dir)/state}
        interfaces:
          - name: wan0
            attach: {packet: \(p)-vr}
            mac: 02:00:00:00:62:01
            ipv6: {}
        """.write(toFile: configPath, atomically: true, encoding: .utf8)
        #expect(ctl("reload").status == 0)
        let left = DaemonProcess.wait(seconds: 10) { !sh("ip -n \(nsR) maddr show dev \(p)-vr").output.contains("33:33:ff:00:12:34") }
        #expect(left, "\(sh("ip -n \(nsR) maddr show dev \(p)-vr").output)")
        #expect(sh("ip -n \(nsR) maddr show dev \(p)-vr").output.contains("33:33:ff:00:62:01"), "the link-local address's group stays")
    }
}

