import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// deploy/container/entrypoint run as a process, without a container
/// engine: in a fresh network namespace, with and without /dev/net/tun and
/// the capabilities, with good, bad, missing and rendered configs.
@Suite("System: container entrypoint", .serialized, .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
struct EntrypointTests {
    let entrypoint = SystemEnvironment.root + "/deploy/container/entrypoint"
    let anygated = SystemEnvironment.binary("anygated")
    let anygatectl = SystemEnvironment.binary("anygatectl")

    func sh(_ cmd: String, timeout: Int = 60) -> (status: Int32, output: String) { Shell.run(cmd, timeout: timeout) }

    /// A namespace and a directory for one test, removed by `done()`.
    struct Scratch {
        let prefix = "ag" + String(UInt32.random(in: 0..<0xFFFF), radix: 16)
        let dir: String
        var ns: String { prefix + "E" }
        init() throws {
            dir = NSTemporaryDirectory() + "anygate-entry-\(prefix)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            Shell.run("ip netns add \(ns) && ip -n \(ns) link set lo up")
        }
        func done() {
            Shell.run("ip netns del \(ns) 2>/dev/null")
            try? FileManager.default.removeItem(atPath: dir)
        }
        /// A config with one TAP (and, with `packet`, an AF_PACKET attachment).
        func config(packet: String? = nil) throws -> String {
            var text = """
            control: {socket: \(dir)/control.sock}
            state: {directory: \(dir)/state}
            interfaces:
              - name: lan0
                attach: {tap: \(prefix)-t}
                addresses: [10.1.0.1/24]

            """
            if let packet {
                text += """
                  - name: wan0
                    attach: {packet: \(packet)}
                    addresses: [192.0.2.10/24]

                """
            }
            let path = dir + "/anygate.yaml"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
    }

    /// The entrypoint's command line with the daemon named, in the namespace.
    func command(_ s: Scratch, _ args: String, env: String = "", wrap: String = "") -> String {
        "ip netns exec \(s.ns) env ANYGATED=\(anygated) \(env) \(wrap) \(entrypoint) \(args)"
    }

    @Test("a good config: the entrypoint becomes anygated, which gets SIGHUP and SIGTERM itself and sets the exit status")
    func good() throws {
        let s = try Scratch()
        var d: DaemonProcess? = nil
        defer { if let d { _ = d.stop() }; s.done() }
        let cfg = try s.config()
        d = try DaemonProcess(binary: anygated, config: cfg, namespace: s.ns, logPath: s.dir + "/log",
                              arguments: ["env", "ANYGATED=\(anygated)", "ANYGATE_CONFIG=\(cfg)", entrypoint])
        let up = DaemonProcess.wait(seconds: 20) { sh("\(anygatectl) --socket \(s.dir)/control.sock show interfaces").status == 0 }
        try #require(up, "\(d?.log ?? "")")
        // exec: the process started is anygated now, not a shell around it.
        let comm = (try? String(contentsOfFile: "/proc/\(d!.pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(comm == "anygated")
        #expect(d!.log.contains("anygate-entrypoint: starting"))
        d!.signal(SIGHUP)
        #expect(DaemonProcess.wait(seconds: 5) { d!.log.contains("SIGHUP: reloading") }, "\(d!.log)")
        let status = d!.stop()
        d = nil
        #expect(status == 0)
    }

    @Test("with a packet attachment the entrypoint turns host forwarding and redirects off in the namespace")
    func sysctls() throws {
        let s = try Scratch()
        var d: DaemonProcess? = nil
        defer { if let d { _ = d.stop() }; s.done() }
        #expect(sh("ip -n \(s.ns) link add \(s.prefix)-v type veth peer name \(s.prefix)-w && ip -n \(s.ns) link set \(s.prefix)-v up").status == 0)
        #expect(sh("ip netns exec \(s.ns) sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=1").status == 0)
        let cfg = try s.config(packet: "\(s.prefix)-v")
        d = try DaemonProcess(binary: anygated, config: cfg, namespace: s.ns, logPath: s.dir + "/log",
                              arguments: ["env", "ANYGATED=\(anygated)", entrypoint, "--config", cfg])
        let up = DaemonProcess.wait(seconds: 20) { sh("\(anygatectl) --socket \(s.dir)/control.sock show interfaces").status == 0 }
        try #require(up, "\(d?.log ?? "")")
        #expect(sh("ip netns exec \(s.ns) sysctl -n net.ipv4.ip_forward").output.hasPrefix("0"))
        #expect(sh("ip netns exec \(s.ns) sysctl -n net.ipv4.conf.all.send_redirects").output.hasPrefix("0"))
        #expect(d!.log.contains("set net.ipv4.ip_forward=0") && d!.log.contains("set net.ipv4.conf.all.send_redirects=0"), "\(d!.log)")
    }

    @Test("as a non-root user (the image's way): the daemon's file capabilities count, and it runs")
    func nonRootWithFileCapabilities() throws {
        let s = try Scratch()
        var d: DaemonProcess? = nil
        defer { if let d { _ = d.stop() }; s.done() }
        try #require(sh("command -v setcap && command -v getcap").status == 0, "setcap/getcap missing (libcap2-bin)")
        #expect(sh("ip -n \(s.ns) link add \(s.prefix)-v type veth peer name \(s.prefix)-w && ip -n \(s.ns) link set \(s.prefix)-v up").status == 0)
        // A packet-only config (no TAP: /dev/net/tun may be root's alone here) in a directory the user can write.
        try """
        control: {socket: \(s.dir)/control.sock}
        state: {directory: \(s.dir)/state}
        interfaces:
          - name: wan0
            attach: {packet: \(s.prefix)-v}
            addresses: [192.0.2.10/24]
        """.write(toFile: s.dir + "/packet.yaml", atomically: true, encoding: .utf8)
        // Everything the unprivileged user runs is copied into the scratch
        // directory: the checkout may sit where that user cannot enter
        // (under /root, or in a `mktemp -d` folder).
        let binary = s.dir + "/anygated"
        let entrypoint = s.dir + "/entrypoint"
        #expect(sh("cp \(anygated) \(binary) && cp \(self.entrypoint) \(entrypoint) && chmod 0755 \(binary) \(entrypoint) \(s.dir)"
                   + " && chmod 0644 \(s.dir)/packet.yaml && chown 65534:65534 \(s.dir)").status == 0)
        let user = "setpriv --reuid=65534 --regid=65534 --clear-groups"
        // Without file capabilities the unprivileged entrypoint refuses, naming both.
        let bare = sh("ip netns exec \(s.ns) \(user) env ANYGATED=\(binary) \(entrypoint) --config \(s.dir)/packet.yaml")
        #expect(bare.status == 1 && bare.output.contains("NET_ADMIN") && bare.output.contains("NET_RAW"), "\(bare.output)")
        // With them, it starts, and the daemon works.
        #expect(sh("setcap cap_net_admin,cap_net_raw+ep \(binary)").status == 0)
        d = try DaemonProcess(binary: binary, config: "", namespace: s.ns, logPath: s.dir + "/log",
                              arguments: ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                          "env", "ANYGATED=\(binary)", entrypoint, "--config", s.dir + "/packet.yaml"])
        let up = DaemonProcess.wait(seconds: 20) { sh("\(anygatectl) --socket \(s.dir)/control.sock show interfaces").status == 0 }
        #expect(up, "\(d?.log ?? "")")
        #expect(d!.log.contains("could not set net.ipv4.conf.all.send_redirects=0"), "unprivileged: says it could not, and goes on: \(d!.log)")
        let ping = sh("ip netns exec \(s.ns) ip addr add 192.0.2.1/24 dev \(s.prefix)-w && ip -n \(s.ns) link set \(s.prefix)-w up && ip netns exec \(s.ns) ping -c 2 -i 0.2 -W 2 -I \(s.prefix)-w 192.0.2.10")
        #expect(ping.status == 0, "\(ping.output)\n\(d?.log ?? "")")
    }

    @Test("a bad config: exit 2 with the daemon's file:line message; a missing one: exit 2 saying what to do")
    func badAndMissing() throws {
        let s = try Scratch()
        defer { s.done() }
        try "interfaces:\n  - name: lan0\n    attach: {tap: x}\n    mtu: 20\n".write(toFile: s.dir + "/bad.yaml", atomically: true, encoding: .utf8)
        let bad = sh(command(s, "--config \(s.dir)/bad.yaml"))
        #expect(bad.status == 2)
        #expect(bad.output.contains("invalid config") && bad.output.contains("bad.yaml:4") && bad.output.contains("mtu"), "\(bad.output)")
        let missing = sh(command(s, "", env: "ANYGATE_CONFIG=\(s.dir)/nowhere.yaml"))
        #expect(missing.status == 2)
        #expect(missing.output.contains("nowhere.yaml not found"), "\(missing.output)")
        #expect(!missing.output.contains("starting"))
    }

    @Test("no /dev/net/tun: exit 1 with one line saying so")
    func noTun() throws {
        let s = try Scratch()
        defer { s.done() }
        let cfg = try s.config()
        // A private mount namespace where /dev/net is an empty tmpfs.
        let r = sh("unshare -m /bin/sh -c 'mount -t tmpfs none /dev/net && exec \(command(s, "--config \(cfg)"))'")
        #expect(r.status == 1, "\(r.output)")
        #expect(r.output.contains("/dev/net/tun is missing"), "\(r.output)")
        #expect(sh("ip -n \(s.ns) link show \(s.prefix)-t").status != 0, "no daemon ran, so no TAP was made")
    }

    @Test("no NET_ADMIN or NET_RAW: exit 1 naming each missing capability")
    func noCapabilities() throws {
        let s = try Scratch()
        defer { s.done() }
        #expect(sh("ip -n \(s.ns) link add \(s.prefix)-v type veth peer name \(s.prefix)-w").status == 0)
        let cfg = try s.config(packet: "\(s.prefix)-v")
        let drop = "setpriv --bounding-set=-net_admin,-net_raw --inh-caps=-net_admin,-net_raw"
        let r = sh(command(s, "--config \(cfg)", wrap: drop))
        #expect(r.status == 1, "\(r.output)")
        #expect(r.output.contains("missing capability NET_ADMIN") && r.output.contains("missing capability NET_RAW"), "\(r.output)")
        // Only NET_RAW gone: only it is named.
        let raw = sh(command(s, "--config \(cfg)", wrap: "setpriv --bounding-set=-net_raw --inh-caps=-net_raw"))
        #expect(raw.status == 1 && raw.output.contains("missing capability NET_RAW") && !raw.output.contains("NET_ADMIN"), "\(raw.output)")
    }

    @Test("a one-tunnel gateway config rendered from the environment, checked by anygated")
    func rendered() throws {
        let s = try Scratch()
        defer { s.done() }
        let out = s.dir + "/rendered.yaml"
        let env = "ANYGATE_CONFIG=\(s.dir)/absent.yaml ANYGATE_RENDERED_CONFIG=\(out) ANYGATE_TUNNEL_REMOTE=203.0.113.2 "
            + "ANYGATE_WAN_ADDRESS=198.51.100.1/24 ANYGATE_WAN_GATEWAY=198.51.100.254 ANYGATE_TUNNEL_KEY=7 "
            + "ANYGATE_REMOTE_PREFIXES=10.2.0.0/16,10.3.0.0/16"
        let r = sh(command(s, "--check", env: env))
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.contains("OK: 2 interfaces") && r.output.contains("1 tunnel") && r.output.contains("3 routes"), "\(r.output)")
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        #expect(text.contains("remote: 203.0.113.2") && text.contains("key: 7") && text.contains("{to: 10.3.0.0/16, via: 172.16.0.2}"), "\(text)")
        // The remote without the stack's own underlay address is refused.
        let half = sh(command(s, "--check", env: "ANYGATE_CONFIG=\(s.dir)/absent.yaml ANYGATE_RENDERED_CONFIG=\(out) ANYGATE_TUNNEL_REMOTE=203.0.113.2"))
        #expect(half.status == 2 && half.output.contains("ANYGATE_WAN_ADDRESS"), "\(half.output)")
    }
}
