import AnygateControl
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The netlink mirror against a real kernel:
///
///     ns A: 10.1.0.2 ─TAP─ ns M: anygated (lan0 10.1.0.1; wan0 mirrors veth m0) ─veth─ ns H: 192.0.2.1, far 10.9.0.1
///
/// Changes made with `ip` in ns M show up in `anygatectl show … --json`
/// within a second, and forwarding follows the imported routes.
@Suite("System: netlink mirror", .serialized, .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
struct MirrorSystemTests {
    let anygated = SystemEnvironment.binary("anygated")
    let anygatectl = SystemEnvironment.binary("anygatectl")

    func sh(_ cmd: String, timeout: Int = 60) -> (status: Int32, output: String) { Shell.run(cmd, timeout: timeout) }

    @Test("addresses, MTU, link state, routes (multipath too) and neighbours follow the host; traffic follows imported routes")
    func mirror() throws {
        let p = "ag" + String(UInt32.random(in: 0..<0xFFFF), radix: 16)
        let dir = NSTemporaryDirectory() + "anygate-mirror-\(p)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let ns = (a: p + "A", m: p + "M", h: p + "H")
        var daemon: DaemonProcess? = nil
        defer {
            if let d = daemon { _ = d.stop() }
            for n in [ns.a, ns.m, ns.h] { sh("ip netns del \(n) 2>/dev/null") }
            try? FileManager.default.removeItem(atPath: dir)
        }
        for s in ["ip netns add \(ns.a)", "ip netns add \(ns.m)", "ip netns add \(ns.h)",
                  "ip -n \(ns.m) link set lo up", "ip -n \(ns.h) link set lo up",
                  "ip -n \(ns.m) link add \(p)-m0 type veth peer name \(p)-h0 netns \(ns.h)",
                  "ip -n \(ns.m) link set \(p)-m0 up", "ip -n \(ns.h) link set \(p)-h0 up",
                  "ip -n \(ns.h) addr add 192.0.2.1/24 dev \(p)-h0", "ip -n \(ns.h) addr add 10.9.0.1/32 dev lo",
                  "ip -n \(ns.h) route add 10.1.0.0/24 via 192.0.2.10"] {
            let r = sh(s)
            try #require(r.status == 0, "\(s): \(r.output)")
        }
        let config = """
        control: {socket: \(dir)/control.sock}
        state: {directory: \(dir)/state}
        interfaces:
          - name: lan0
            attach: {tap: \(p)-ta}
            addresses: [10.1.0.1/24]
          - name: wan0
            attach: {mirror: \(p)-m0}
        mirror:
          routes: {table: main, protocols: [static, bird]}
        """
        try config.write(toFile: "\(dir)/anygate.yaml", atomically: true, encoding: .utf8)
        daemon = try DaemonProcess(binary: anygated, config: "\(dir)/anygate.yaml", namespace: ns.m, logPath: "\(dir)/anygated.log")
        let up = DaemonProcess.wait(seconds: 20) { sh("\(anygatectl) --socket \(dir)/control.sock show mirror").status == 0 }
        try #require(up, "daemon: \(daemon?.log ?? "")")
        for s in ["ip -n \(ns.m) link set \(p)-ta netns \(ns.a)", "ip -n \(ns.a) addr add 10.1.0.2/24 dev \(p)-ta",
                  "ip -n \(ns.a) link set \(p)-ta up", "ip -n \(ns.a) route add default via 10.1.0.1"] {
            try #require(sh(s).status == 0, "\(s)")
        }

        func json<T: Decodable>(_ what: String, _ type: T.Type) -> T? {
            try? JSONDecoder().decode(type, from: Data(sh("\(anygatectl) --socket \(dir)/control.sock --json show \(what)").output.utf8))
        }
        func within1s(_ what: String, _ condition: () -> Bool) {
            #expect(DaemonProcess.wait(seconds: 1) { condition() }, "\(what) did not show within 1 s\n\(daemon?.log ?? "")")
        }
        func wan() -> InterfaceInfo? { json("interfaces", [InterfaceInfo].self)?.first { $0.name == "wan0" } }
        /// The routes, without their ECMP sets (compared by what they are).
        func routes() -> [RouteInfo] {
            (json("routes", [RouteInfo].self) ?? []).map {
                RouteInfo(prefix: $0.prefix, nextHop: $0.nextHop, interface: $0.interface, metric: $0.metric, origin: $0.origin)
            }
        }

        // The interface's identity.
        let hostMAC = sh("ip -n \(ns.m) -br link show \(p)-m0 | awk '{print $3}'").output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(wan()?.mac == hostMAC)
        #expect(sh("ip -n \(ns.m) addr add 192.0.2.10/24 dev \(p)-m0").status == 0)
        within1s("address add") { wan()?.addresses.map(\.address).filter { !$0.contains(":") } == ["192.0.2.10/24"] }
        #expect(sh("ip -n \(ns.m) link set \(p)-m0 mtu 1400").status == 0)
        within1s("mtu") { wan()?.mtu == 1400 }
        #expect(sh("ip -n \(ns.m) link set \(p)-m0 down").status == 0)
        within1s("link down") { wan()?.up == false }
        #expect(sh("ip -n \(ns.m) link set \(p)-m0 up").status == 0)
        within1s("link up") { wan()?.up == true }

        // Routes: add, replace, multipath, delete.
        #expect(sh("ip -n \(ns.m) route add 10.9.0.0/16 via 192.0.2.1 proto static").status == 0)
        within1s("route add") { routes().contains(RouteInfo(prefix: "10.9.0.0/16", nextHop: "192.0.2.1", interface: "wan0", metric: 0, origin: "mirror")) }
        #expect(sh("ip -n \(ns.m) route replace 10.9.0.0/16 via 192.0.2.2 proto static").status == 0)
        within1s("route replace") { routes().filter { $0.prefix == "10.9.0.0/16" }.map(\.nextHop) == ["192.0.2.2"] }
        #expect(sh("ip -n \(ns.m) route add 10.8.0.0/16 proto static nexthop via 192.0.2.1 nexthop via 192.0.2.2").status == 0)
        within1s("multipath") { Set(routes().filter { $0.prefix == "10.8.0.0/16" }.compactMap(\.nextHop)) == ["192.0.2.1", "192.0.2.2"] }
        #expect(sh("ip -n \(ns.m) route del 10.8.0.0/16").status == 0)
        within1s("route del") { !routes().contains { $0.prefix == "10.8.0.0/16" } }
        #expect(sh("ip -n \(ns.m) route add 10.7.0.0/16 via 192.0.2.1 proto kernel").status == 0)
        usleep(500_000)
        #expect(!routes().contains { $0.prefix == "10.7.0.0/16" }, "protocols not configured are not imported")

        // IPv6: the host's link-local address, a global one, routes (multipath too) and neighbours.
        #expect(sh("ip -n \(ns.m) addr add 2001:db8:5::10/64 dev \(p)-m0 nodad").status == 0)
        within1s("IPv6 address add") { (wan()?.addresses.map(\.address) ?? []).contains("2001:db8:5::10/64") }
        // The host's link-local address too, once the kernel has made it (after its own DAD).
        #expect(DaemonProcess.wait(seconds: 5) { (wan()?.addresses.map(\.address) ?? []).contains { $0.hasPrefix("fe80::") } },
                "\(wan()?.addresses.map(\.address) ?? [])")
        #expect(sh("ip -n \(ns.m) -6 route add 2001:db8:99::/48 via 2001:db8:5::1 proto static").status == 0)
        within1s("IPv6 route add") {
            routes().contains(RouteInfo(prefix: "2001:db8:99::/48", nextHop: "2001:db8:5::1", interface: "wan0", metric: 1024, origin: "mirror"))
        }
        #expect(sh("ip -n \(ns.m) -6 route add 2001:db8:98::/48 proto static nexthop via fe80::1 dev \(p)-m0 nexthop via fe80::2 dev \(p)-m0").status == 0)
        within1s("IPv6 multipath") { Set(routes().filter { $0.prefix == "2001:db8:98::/48" }.compactMap(\.nextHop)) == ["fe80::1", "fe80::2"] }
        #expect(sh("ip -n \(ns.m) -6 route del 2001:db8:98::/48").status == 0)
        within1s("IPv6 route del") { !routes().contains { $0.prefix == "2001:db8:98::/48" } }
        #expect(sh("ip -n \(ns.m) -6 neigh add 2001:db8:5::77 lladdr 02:00:00:00:99:06 dev \(p)-m0").status == 0)
        within1s("IPv6 neighbour") {
            (json("neighbors", [NeighborInfo].self) ?? []).contains { $0.address == "2001:db8:5::77" && $0.mac == "02:00:00:00:99:06" }
        }
        // An address the host is still checking (its own DAD, about a second) is not the stack's until the host is done.
        #expect(sh("ip -n \(ns.m) addr add 2001:db8:5::20/64 dev \(p)-m0").status == 0)
        usleep(300_000)
        #expect(sh("ip -n \(ns.m) -6 addr show dev \(p)-m0").output.contains("tentative") == true
                    ? !(wan()?.addresses.map(\.address) ?? []).contains("2001:db8:5::20/64") : true, "tentative on the host, not in the stack")
        #expect(DaemonProcess.wait(seconds: 5) { (wan()?.addresses.map(\.address) ?? []).contains("2001:db8:5::20/64") },
                "after the host's DAD: \(wan()?.addresses.map(\.address) ?? [])")
        #expect(sh("ip -n \(ns.m) addr del 2001:db8:5::10/64 dev \(p)-m0").status == 0)
        within1s("IPv6 address del") { !(wan()?.addresses.map(\.address) ?? []).contains("2001:db8:5::10/64") }

        // Neighbours.
        #expect(sh("ip -n \(ns.m) neigh add 192.0.2.77 lladdr 02:00:00:00:99:01 dev \(p)-m0").status == 0)
        within1s("neighbour") {
            (json("neighbors", [NeighborInfo].self) ?? []).contains { $0.address == "192.0.2.77" && $0.mac == "02:00:00:00:99:01" }
        }

        // Traffic follows the imported route: 10.9.0.0/16 via 192.0.2.1 (H).
        #expect(sh("ip -n \(ns.m) route replace 10.9.0.0/16 via 192.0.2.1 proto static").status == 0)
        within1s("route back to H") { routes().filter { $0.prefix == "10.9.0.0/16" }.map(\.nextHop) == ["192.0.2.1"] }
        let ping = sh("ip netns exec \(ns.a) ping -c 3 -i 0.2 -W 2 10.9.0.1", timeout: 15)
        #expect(ping.status == 0 && ping.output.contains(" 0% packet loss"), "\(ping.output)\n\(daemon?.log ?? "")")

        // A multipath route from the host forwards over all its members: H
        // answers as 192.0.2.1 (its veth) and as 192.0.2.2 (a macvlan with a
        // MAC of its own); UDP flows from A, each from its own port, reach H
        // through both, told apart by the destination MAC tcpdump sees.
        for s in ["ip netns exec \(ns.h) sysctl -qw net.ipv4.conf.all.arp_ignore=1",
                  "ip -n \(ns.h) link add \(p)-hv link \(p)-h0 type macvlan mode bridge",
                  "ip -n \(ns.h) addr add 192.0.2.2/24 dev \(p)-hv", "ip -n \(ns.h) link set \(p)-hv up",
                  "ip -n \(ns.m) route replace 10.9.0.0/16 proto static nexthop via 192.0.2.1 nexthop via 192.0.2.2"] {
            let r = sh(s)
            try #require(r.status == 0, "\(s): \(r.output)")
        }
        within1s("multipath route for traffic") {
            (json("routes", [RouteInfo].self) ?? []).first { $0.prefix == "10.9.0.0/16" }?.nextHops.count == 2
        }
        let macs = (h0: sh("ip -n \(ns.h) -br link show \(p)-h0 | awk '{print $3}'").output.trimmingCharacters(in: .whitespacesAndNewlines),
                    hv: sh("ip -n \(ns.h) -br link show \(p)-hv | awk '{print $3}'").output.trimmingCharacters(in: .whitespacesAndNewlines))
        let capture = try Shell.spawn("exec ip netns exec \(ns.h) timeout 20 tcpdump -l -e -n -i \(p)-h0 -c 64 'udp dst port 9'",
                                      output: "\(dir)/multipath.txt")
        usleep(800_000)
        let udp = sh("ip netns exec \(ns.a) bash -c 'for i in $(seq 64); do echo x > /dev/udp/10.9.0.1/9; sleep 0.02; done'", timeout: 20)
        #expect(udp.status == 0, "\(udp.output)")
        _ = DaemonProcess.wait(seconds: 5) { !capture.isRunning }
        if capture.isRunning { capture.terminate() }
        let seen = (try? String(contentsOfFile: "\(dir)/multipath.txt", encoding: .utf8)) ?? ""
        let viaH0 = seen.components(separatedBy: "> \(macs.h0)").count - 1, viaHV = seen.components(separatedBy: "> \(macs.hv)").count - 1
        #expect(viaH0 >= 8 && viaHV >= 8 && viaH0 + viaHV >= 60, "64 flows over two members: \(viaH0) via 192.0.2.1, \(viaHV) via 192.0.2.2\n\(seen)")
        #expect(sh("ip -n \(ns.h) link del \(p)-hv").status == 0)
        #expect(sh("ip -n \(ns.m) route del 10.9.0.0/16").status == 0)
        within1s("route gone") { !routes().contains { $0.prefix == "10.9.0.0/16" } }
        let gone = sh("ip netns exec \(ns.a) ping -c 1 -W 1 10.9.0.1", timeout: 10)
        #expect(gone.output.contains("Unreachable"), "\(gone.output)")

        let m = json("mirror", MirrorInfo.self)
        #expect(m?.enabled == true && m?.interfaces.first?.present == true && (m?.eventsProcessed ?? 0) > 0)

        // The host interface vanishes: the stack interface goes down, the daemon stays.
        #expect(sh("ip -n \(ns.m) link del \(p)-m0").status == 0)
        within1s("host interface gone") {
            let i = json("mirror", MirrorInfo.self)?.interfaces.first
            return i?.present == false && wan()?.up == false
        }
        // It comes back (new index, new MAC): mirrored again, and traffic flows again.
        for s in ["ip -n \(ns.m) link add \(p)-m0 type veth peer name \(p)-h0 netns \(ns.h)",
                  "ip -n \(ns.h) link set \(p)-h0 up", "ip -n \(ns.h) addr add 192.0.2.1/24 dev \(p)-h0",
                  "ip -n \(ns.h) route add 10.1.0.0/24 via 192.0.2.10",
                  "ip -n \(ns.m) link set \(p)-m0 up", "ip -n \(ns.m) addr add 192.0.2.10/24 dev \(p)-m0",
                  "ip -n \(ns.m) route add 10.9.0.0/16 via 192.0.2.1 proto static"] {
            let r = sh(s)
            try #require(r.status == 0, "\(s): \(r.output)")
        }
        let newMAC = sh("ip -n \(ns.m) -br link show \(p)-m0 | awk '{print $3}'").output
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let back = DaemonProcess.wait(seconds: 5) {
            json("mirror", MirrorInfo.self)?.interfaces.first?.present == true && wan()?.up == true
                && wan()?.mac == newMAC && routes().contains { $0.prefix == "10.9.0.0/16" && $0.interface == "wan0" }
        }
        #expect(back, "mirror after the host interface returned: \(String(describing: wan())), mac \(newMAC)\n\(daemon?.log.suffix(1500) ?? "")")
        let again = sh("ip netns exec \(ns.a) ping -c 3 -i 0.2 -W 2 10.9.0.1", timeout: 15)
        #expect(again.status == 0 && again.output.contains(" 0% packet loss"), "\(again.output)\n\(daemon?.log.suffix(1500) ?? "")")
    }

    @Test("lost netlink messages trigger a resync; afterwards the stack's routes equal the host table")
    func overflow() throws {
        let p = "ag" + String(UInt32.random(in: 0..<0xFFFF), radix: 16)
        let dir = NSTemporaryDirectory() + "anygate-mirror-\(p)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let nsM = p + "M"
        var daemon: DaemonProcess? = nil
        defer {
            if let d = daemon { _ = d.stop() }
            sh("ip netns del \(nsM) 2>/dev/null")
            try? FileManager.default.removeItem(atPath: dir)
        }
        for s in ["ip netns add \(nsM)", "ip -n \(nsM) link set lo up", "ip -n \(nsM) link add \(p)-m0 type veth peer name \(p)-m1", "ip -n \(nsM) link set \(p)-m1 up",
                  "ip -n \(nsM) link set \(p)-m0 up", "ip -n \(nsM) addr add 192.0.2.10/24 dev \(p)-m0"] {
            try #require(sh(s).status == 0, "\(s)")
        }
        try """
        control: {socket: \(dir)/control.sock}
        state: {directory: \(dir)/state}
        interfaces:
          - name: wan0
            attach: {mirror: \(p)-m0}
        mirror:
          routes: {table: main, protocols: [static]}
        """.write(toFile: "\(dir)/anygate.yaml", atomically: true, encoding: .utf8)
        // A tiny netlink buffer: a burst of route changes must overflow it.
        daemon = try DaemonProcess(binary: "/usr/bin/env", config: "", namespace: nsM, logPath: "\(dir)/anygated.log",
                                   arguments: ["/usr/bin/env", "ANYGATE_NETLINK_RCVBUF=4096", anygated, "--config", "\(dir)/anygate.yaml"])
        try #require(DaemonProcess.wait(seconds: 20) { sh("\(anygatectl) --socket \(dir)/control.sock show mirror").status == 0 },
                     "\(daemon?.log ?? "")")
        // 20 000 routes added, then every other one deleted.
        var add = "", del = ""
        for k in 0..<20_000 {
            add += "route add 10.\(100 + k / 256).\(k % 256).0/24 via 192.0.2.1 proto static\n"
            if k % 2 == 0 { del += "route del 10.\(100 + k / 256).\(k % 256).0/24\n" }
        }
        try add.write(toFile: "\(dir)/add.batch", atomically: true, encoding: .utf8)
        try del.write(toFile: "\(dir)/del.batch", atomically: true, encoding: .utf8)
        // The daemon is stopped during the burst, so its small buffer must overflow.
        daemon?.signal(SIGSTOP)
        #expect(sh("ip -n \(nsM) -batch \(dir)/add.batch").status == 0)
        #expect(sh("ip -n \(nsM) -batch \(dir)/del.batch").status == 0)
        daemon?.signal(SIGCONT)
        let host = Set(sh("ip -n \(nsM) route show proto static | awk '{print $1}'").output.split(separator: "\n").map(String.init))
        #expect(host.count == 10_000)
        func stackRoutes() -> Set<String> {
            let r = (try? JSONDecoder().decode([RouteInfo].self,
                                               from: Data(sh("\(anygatectl) --socket \(dir)/control.sock --json show routes").output.utf8))) ?? []
            return Set(r.filter { $0.origin == "mirror" }.map(\.prefix))
        }
        let converged = DaemonProcess.wait(seconds: 30) { stackRoutes() == host }
        let stack = stackRoutes()
        let log = daemon?.log ?? ""
        #expect(converged, "stack has \(stack.count) mirrored routes, host \(host.count); \(stack.subtracting(host).count) extra, \(host.subtracting(stack).count) missing; log: \(log.suffix(1500))")
        let m = try JSONDecoder().decode(MirrorInfo.self, from: Data(sh("\(anygatectl) --socket \(dir)/control.sock --json show mirror").output.utf8))
        #expect(m.resyncs >= 2, "the start-up sync and at least one after lost messages: \(m.resyncs), last \(m.lastResyncReason ?? "-")")
    }
}
