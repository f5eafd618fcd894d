import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Two gateways on one Ethernet segment, their uplinks named alike and no
/// `mac:` in either config — an HA pair, or two sites on one test bridge:
///
///     A 10.1.0.2 ─TAP─ gw1 wan0 192.0.2.1 ─┐            ┌─ 192.0.2.2 wan0 gw2 ─TAP─ B 10.2.0.2
///                                          └── bridge ──┘   (namespace S, 192.0.2.254)
///
/// Each must get its own MAC, reach the other, and run GRE across; a third
/// device that takes gw1's MAC is reported in gw1's log.
@Suite("System: gateways sharing a segment", .serialized, .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
struct SharedSegmentTests {
    let anygated = SystemEnvironment.binary("anygated")
    let anygatectl = SystemEnvironment.binary("anygatectl")

    func sh(_ cmd: String, timeout: Int = 60) -> (status: Int32, output: String) { Shell.run(cmd, timeout: timeout) }

    func config(dir: String, side: Int, p: String) -> String {
        let local = "192.0.2.\(side)", remote = "192.0.2.\(3 - side)"
        return """
        control: {socket: \(dir)/gw\(side).sock}
        state: {directory: \(dir)/state\(side)}
        interfaces:
          - name: lan0
            attach: {tap: \(p)-t\(side)}
            addresses: [10.\(side).0.1/24]
          - name: wan0
            attach: {packet: wan}
            addresses: [\(local)/24]
        tunnels:
          - name: gre0
            local: \(local)
            remote: \(remote)
            key: 9
            keepalive: {interval: 1s, retries: 3}
            addresses: [172.16.0.\(side)/30]
        routes:
          - {to: 10.\(3 - side).0.0/16, via: 172.16.0.\(3 - side)}

        """
    }

    func wanMAC(_ socket: String) -> String? {
        let out = sh("\(anygatectl) --socket \(socket) --json show interfaces").output
        guard let data = out.data(using: .utf8),
              let list = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]] else { return nil }
        return list.first { $0["name"] as? String == "wan0" }?["mac"] as? String
    }

    @Test("uplinks named alike on one bridge, no mac: in either config: distinct MACs kept across restarts, GRE between them, a MAC thief reported")
    func twoGatewaysOneBridge() throws {
        let p = "ag" + String(UInt32.random(in: 0..<0xFFFF), radix: 16)
        let dir = NSTemporaryDirectory() + "anygate-segment-\(p)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let ns = (a: p + "A", g1: p + "G1", s: p + "S", g2: p + "G2", g3: p + "G3", b: p + "B")
        var daemons: [DaemonProcess] = []
        defer {
            for d in daemons { _ = d.stop() }
            for n in [ns.a, ns.g1, ns.s, ns.g2, ns.g3, ns.b] { sh("ip netns del \(n) 2>/dev/null") }
            try? FileManager.default.removeItem(atPath: dir)
        }
        var steps = [ns.a, ns.g1, ns.s, ns.g2, ns.g3, ns.b].map { "ip netns add \($0) && ip -n \($0) link set lo up" }
        steps += ["ip -n \(ns.s) link add br0 type bridge", "ip -n \(ns.s) link set br0 up",
                  "ip -n \(ns.s) addr add 192.0.2.254/24 dev br0"]
        for (k, g) in [(1, ns.g1), (2, ns.g2), (3, ns.g3)] {
            steps += ["ip -n \(ns.s) link add \(p)-b\(k) type veth peer name wan netns \(g)",
                      "ip -n \(ns.s) link set \(p)-b\(k) master br0", "ip -n \(ns.s) link set \(p)-b\(k) up",
                      "ip -n \(g) link set wan up"]
        }
        for s in steps {
            let r = sh(s)
            try #require(r.status == 0, "\(s): \(r.output)")
        }
        func start(_ side: Int) throws -> DaemonProcess {
            let path = "\(dir)/gw\(side).yaml"
            try config(dir: dir, side: side, p: p).write(toFile: path, atomically: true, encoding: .utf8)
            let d = try DaemonProcess(binary: anygated, config: path, namespace: side == 1 ? ns.g1 : ns.g2,
                                      logPath: "\(dir)/gw\(side)-\(daemons.count).log")
            daemons.append(d)
            let up = DaemonProcess.wait(seconds: 20) { sh("\(anygatectl) --socket \(dir)/gw\(side).sock show tunnels").status == 0 }
            try #require(up, "gw\(side) did not start: \(d.log)")
            return d
        }
        let gw1 = try start(1)
        _ = try start(2)
        for (side, site) in [(1, ns.a), (2, ns.b)] {
            for s in ["ip -n \(side == 1 ? ns.g1 : ns.g2) link set \(p)-t\(side) netns \(site)",
                      "ip -n \(site) addr add 10.\(side).0.2/24 dev \(p)-t\(side)", "ip -n \(site) link set \(p)-t\(side) up",
                      "ip -n \(site) route add default via 10.\(side).0.1"] {
                let r = sh(s)
                try #require(r.status == 0, "\(s): \(r.output)")
            }
        }
        let mac1 = try #require(wanMAC("\(dir)/gw1.sock")), mac2 = try #require(wanMAC("\(dir)/gw2.sock"))
        #expect(mac1 != mac2, "each gateway generated its own MAC")
        // The segment reaches both, and each reaches the other.
        #expect(sh("ip netns exec \(ns.s) ping -c 2 -i 0.2 -W 2 192.0.2.1 && ip netns exec \(ns.s) ping -c 2 -i 0.2 -W 2 192.0.2.2").status == 0)
        // GRE between them: the keepalives hold the tunnel up, and the sites reach each other.
        let across = sh("ip netns exec \(ns.a) ping -c 3 -i 0.2 -W 2 10.2.0.2")
        #expect(across.status == 0, "\(across.output)\n\(gw1.log)")
        let tunnels = sh("\(anygatectl) --socket \(dir)/gw1.sock show tunnels").output
        #expect(tunnels.contains("up"), "\(tunnels)")

        // A third device takes gw1's MAC: gw1 says so, naming the interface.
        let g3 = "\(dir)/gw3.yaml"
        try """
        control: {socket: \(dir)/gw3.sock}
        state: {directory: \(dir)/state3}
        interfaces:
          - name: wan0
            attach: {packet: wan}
            mac: \(mac1)
            addresses: [192.0.2.3/24]

        """.write(toFile: g3, atomically: true, encoding: .utf8)
        daemons.append(try DaemonProcess(binary: anygated, config: g3, namespace: ns.g3, logPath: "\(dir)/gw3.log"))
        let warned = DaemonProcess.wait(seconds: 10) { gw1.log.contains("duplicate MAC \(mac1): another device on wan0 uses it") }
        #expect(warned, "\(gw1.log)")
        _ = daemons.removeLast().stop()

        // Restarted, gw1 keeps its MAC.
        #expect(gw1.stop() == 0)
        daemons.removeFirst()
        _ = try start(1)
        #expect(wanMAC("\(dir)/gw1.sock") == mac1)
        let files = (try? String(contentsOfFile: "\(dir)/state1/mac-addresses", encoding: .utf8)) ?? ""
        #expect(files.contains("wan0 \(mac1)"), "\(files)")
    }
}
