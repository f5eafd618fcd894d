import AnygateControl
import Foundation
import Testing

/// Two sites joined by a GRE tunnel over an underlay namespace U that
/// routes between the gateways' uplinks:
///
///     siteA 10.1.0.2 ─TAP─ gw1 [198.51.100.1] ── U (router) ── [203.0.113.2] gw2 ─TAP─ siteB 10.2.0.2
///
/// With the stack backend each daemon owns its uplink veth (a packet
/// attachment); with the host backend the namespace's kernel owns it and
/// the daemon uses a kernel socket. `close()` stops the daemons and removes
/// every namespace and file (call it in a `defer`).
final class TwoSiteNetwork {
    let p = "ag" + String(UInt32.random(in: 0..<0xFFFF), radix: 16)
    let dir: String
    var ns: (a: String, g1: String, u: String, g2: String, b: String) { (p + "A", p + "G1", p + "U", p + "G2", p + "B") }
    var daemons: [DaemonProcess] = []
    let encapsulation: String, backend: String
    /// `stack.workers` of both gateways.
    let workers: Int
    /// Top-level keys added to a side's config (metrics, control, services…).
    var topLevel: (Int) -> String = { _ in "" }
    let anygated = SystemEnvironment.binary("anygated")
    let anygatectl = SystemEnvironment.binary("anygatectl")

    init(encapsulation: String = "gre", backend: String = "stack", workers: Int = 1) throws {
        self.encapsulation = encapsulation
        self.backend = backend
        self.workers = workers
        dir = NSTemporaryDirectory() + "anygate-sites-\(p)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    func sh(_ cmd: String, timeout: Int = 60) -> (status: Int32, output: String) { Shell.run(cmd, timeout: timeout) }

    /// gw1 also takes control requests on its LAN address (stack TCP 7000)
    /// from site A with a token (written here, mode 0600); `extra`: more
    /// top-level keys for gw1. Returns the token file's path.
    func controlListenerOnGateway1(extra: String = "") throws -> String {
        let token = "\(dir)/control.token"
        try "0123456789abcdef0123456789abcdef\n".write(toFile: token, atomically: true, encoding: .utf8)
        chmod(token, 0o600)
        let socket = "\(dir)/gw1.sock"
        topLevel = { side in
            side == 1 ? extra + """
            control:
              socket: \(socket)
              listen: "stack:10.1.0.1:7000"
              allow: [10.1.0.0/24]
              token-file: \(token)

            """ : ""
        }
        return token
    }

    func close() {
        for d in daemons { _ = d.stop() }
        for n in [ns.a, ns.g1, ns.u, ns.g2, ns.b] { sh("ip netns del \(n) 2>/dev/null") }
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Namespaces, the underlay and its router.
    func build() throws {
        var steps = [ns.a, ns.g1, ns.u, ns.g2, ns.b].map { "ip netns add \($0) && ip -n \($0) link set lo up" }
        steps += [
            "ip netns exec \(ns.u) sysctl -qw net.ipv4.ip_forward=1",
            "ip -n \(ns.g1) link add \(p)-g1u type veth peer name \(p)-u1 netns \(ns.u)",
            "ip -n \(ns.g2) link add \(p)-g2u type veth peer name \(p)-u2 netns \(ns.u)",
            "ip -n \(ns.u) addr add 198.51.100.254/24 dev \(p)-u1", "ip -n \(ns.u) addr add 203.0.113.254/24 dev \(p)-u2",
            "ip -n \(ns.u) link set \(p)-u1 up", "ip -n \(ns.u) link set \(p)-u2 up",
            "ip -n \(ns.g1) link set \(p)-g1u up", "ip -n \(ns.g2) link set \(p)-g2u up",
        ]
        if backend == "host" {
            steps += [
                "ip -n \(ns.g1) addr add 198.51.100.1/24 dev \(p)-g1u", "ip -n \(ns.g1) route add default via 198.51.100.254",
                "ip -n \(ns.g2) addr add 203.0.113.2/24 dev \(p)-g2u", "ip -n \(ns.g2) route add default via 203.0.113.254",
            ]
        }
        for s in steps {
            let r = sh(s)
            try #require(r.status == 0, "\(s): \(r.output)")
        }
    }

    func config(side: Int, extraTunnelKeys: String = "") -> String {
        let (lan, local, remote, tunnelAddr, peerTunnel, sitePrefix, gw, uplink) = side == 1
            ? ("10.1.0.1/24", "198.51.100.1", "203.0.113.2", "172.16.0.1/30", "172.16.0.2", "10.2.0.0/16", "198.51.100.254", "\(p)-g1u")
            : ("10.2.0.1/24", "203.0.113.2", "198.51.100.1", "172.16.0.2/30", "172.16.0.1", "10.1.0.0/16", "203.0.113.254", "\(p)-g2u")
        let extra = topLevel(side)
        var y = extra.contains("control:") ? "" : "control: {socket: \(dir)/gw\(side).sock}\n"
        y += """
        state: {directory: \(dir)/state\(side)}
        stack: {workers: \(workers)}
        interfaces:
          - name: lan0
            attach: {tap: \(p)-t\(side)}
            addresses: [\(lan)]

        """
        if backend == "stack" {
            y += """
              - name: wan0
                attach: {packet: \(uplink)}
                addresses: [\(local)/24]

            """
        }
        y += """
        tunnels:
          - name: gre0
            encapsulation: \(encapsulation)
            backend: \(backend)
            local: \(local)
            remote: \(remote)
            key: 7
            mss-clamp: auto
            keepalive: {interval: 1s, retries: 3}
            addresses: [\(tunnelAddr)]
        \(extraTunnelKeys)
        routes:
          - {to: \(sitePrefix), via: \(peerTunnel)}

        """
        if backend == "stack" { y += "  - {to: 0.0.0.0/0, via: \(gw)}\n" }
        return y + extra
    }

    /// Starts both gateways and moves each TAP into its site.
    /// `perSide`, when given, makes each side's extra tunnel keys.
    func start(extraTunnelKeys: String = "", perSide: ((Int) -> String)? = nil) throws {
        for side in [1, 2] {
            let path = "\(dir)/gw\(side).yaml"
            try config(side: side, extraTunnelKeys: perSide?(side) ?? extraTunnelKeys).write(toFile: path, atomically: true, encoding: .utf8)
            let d = try DaemonProcess(binary: anygated, config: path, namespace: side == 1 ? ns.g1 : ns.g2, logPath: "\(dir)/gw\(side).log")
            daemons.append(d)
            let up = DaemonProcess.wait(seconds: 20) { sh("\(anygatectl) --socket \(dir)/gw\(side).sock show tunnels").status == 0 }
            try #require(up, "gw\(side) did not start: \(d.log)")
        }
        for (side, site, addr, gw) in [(1, ns.a, "10.1.0.2/24", "10.1.0.1"), (2, ns.b, "10.2.0.2/24", "10.2.0.1")] {
            for s in ["ip -n \(side == 1 ? ns.g1 : ns.g2) link set \(p)-t\(side) netns \(site)", "ip -n \(site) addr add \(addr) dev \(p)-t\(side)",
                      "ip -n \(site) link set \(p)-t\(side) up", "ip -n \(site) route add default via \(gw)"] {
                let r = sh(s)
                try #require(r.status == 0, "\(s): \(r.output)")
            }
        }
    }

    /// Sends `megabytes` of random data from site A to site B over one TCP
    /// connection (nc) and compares the sha256 of what left and what
    /// arrived; nil when they match, else what went wrong.
    func transfer(megabytes: Int) throws -> String? {
        try sha256Transfer(megabytes: megabytes, dir: dir, from: ns.a, to: ns.b, address: "10.2.0.2")
    }

    /// For a stack-backed gateway's uplink: the daemon's received frames
    /// plus the kernel-side drops it reports, and the frames the kernel
    /// counted arriving on the same veth.
    func uplinkAccounts(side: Int) throws -> (accounted: Int, kernelRx: Int) {
        let out = sh("\(anygatectl) --socket \(dir)/gw\(side).sock --json show interfaces").output
        let wan = try #require(try JSONDecoder().decode([InterfaceInfo].self, from: Data(out.utf8)).first { $0.name == "wan0" })
        let stats = sh("ip -n \(side == 1 ? ns.g1 : ns.g2) -s -j link show \(p)-g\(side)u").output
        let rx = (try? JSONSerialization.jsonObject(with: Data(stats.utf8)) as? [[String: Any]])?.first
            .flatMap { ($0["stats64"] as? [String: Any])?["rx"] as? [String: Any] }?["packets"] as? Int ?? -1
        return (Int(wan.counters.rxPackets + (wan.drops["kernel-rx-queue"] ?? 0)), rx)
    }

    /// A gateway's packet ledger (`show stats`).
    func ledger(side: Int) throws -> LedgerInfo {
        let out = sh("\(anygatectl) --socket \(dir)/gw\(side).sock --json show stats").output
        return try JSONDecoder().decode(StatsInfo.self, from: Data(out.utf8)).ledger
    }

    func tunnels(side: Int) throws -> [TunnelInfo] {
        try JSONDecoder().decode([TunnelInfo].self, from: Data(sh("\(anygatectl) --socket \(dir)/gw\(side).sock --json show tunnels").output.utf8))
    }
}
