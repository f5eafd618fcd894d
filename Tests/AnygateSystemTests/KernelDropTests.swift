import AnygateControl
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A sender and a gateway: ns S 192.0.2.254 ─veth─ ns G, where the
/// veth's end is named `wan` for anygated to attach to; `close()` stops the
/// daemon and removes the namespaces and files (call it in a `defer`).
final class SenderAndGateway {
    let p = "ag" + String(UInt32.random(in: 0..<0xFFFF), radix: 16)
    let dir: String
    var ns: (s: String, g: String, t: String) { (p + "S", p + "G", p + "T") }
    var daemon: DaemonProcess?
    let anygated = SystemEnvironment.binary("anygated")
    let anygatectl = SystemEnvironment.binary("anygatectl")
    var ctl: String { "\(anygatectl) --socket \(dir)/control.sock" }

    init() throws {
        dir = NSTemporaryDirectory() + "anygate-kdrop-\(p)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    func sh(_ cmd: String, timeout: Int = 60) -> (status: Int32, output: String) { Shell.run(cmd, timeout: timeout) }

    func run(_ steps: [String]) throws {
        for s in steps {
            let r = sh(s)
            try #require(r.status == 0, "\(s): \(r.output)")
        }
    }

    /// The two namespaces and the veth, then `more` steps.
    func build(_ more: [String] = []) throws {
        try run(["ip netns add \(ns.s)", "ip netns add \(ns.g)", "ip -n \(ns.g) link set lo up",
                 "ip -n \(ns.s) link add \(p)-s type veth peer name wan netns \(ns.g)",
                 "ip -n \(ns.s) addr add 192.0.2.254/24 dev \(p)-s", "ip -n \(ns.s) link set \(p)-s up",
                 "ip -n \(ns.g) link set wan up"] + more)
    }

    /// Starts anygated in G with `interfaces` (YAML, indented as a list under the key).
    func start(interfaces: String) throws {
        try """
        control: {socket: \(dir)/control.sock}
        state: {directory: \(dir)/state}
        interfaces:
        \(interfaces)
        """.write(toFile: "\(dir)/anygate.yaml", atomically: true, encoding: .utf8)
        daemon = try DaemonProcess(binary: anygated, config: "\(dir)/anygate.yaml", namespace: ns.g, logPath: "\(dir)/log")
        try #require(DaemonProcess.wait(seconds: 20) { self.sh("\(self.ctl) show interfaces").status == 0 }, "\(daemon?.log ?? "")")
    }

    func interfaces() throws -> [InterfaceInfo] {
        try JSONDecoder().decode([InterfaceInfo].self, from: Data(sh("\(ctl) --json show interfaces").output.utf8))
    }

    func close() {
        if let d = daemon { d.signal(SIGCONT); _ = d.stop() }
        for n in [ns.s, ns.g, ns.t] { _ = sh("ip netns del \(n) 2>/dev/null") }
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// Frames the kernel drops before the daemon reads them are counted as a
/// drop reason of the interface, and the books balance: what the kernel
/// received on the link = what the daemon received + what the kernel dropped.
///
///     ns S: 192.0.2.254 (sender) ─veth─ ns G: anygated wan0 192.0.2.1 (packet attachment)
@Suite("System: kernel-side drops", .serialized, .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
struct KernelDropTests {
    let anygated = SystemEnvironment.binary("anygated")
    let anygatectl = SystemEnvironment.binary("anygatectl")

    func sh(_ cmd: String, timeout: Int = 60) -> (status: Int32, output: String) { Shell.run(cmd, timeout: timeout) }

    @Test("a stopped daemon's packet socket overflows: show interfaces reports kernel-rx-queue, and kernel rx = daemon rx + kernel drops")
    func packetSocketOverflow() throws {
        let net = try SenderAndGateway()
        defer { net.close() }
        let (ns, dir, anygatectl) = (net.ns, net.dir, net.anygatectl)
        try net.build()
        try net.start(interfaces: """
              - name: wan0
                attach: {packet: wan}
                addresses: [192.0.2.1/24]
            """)
        let daemon = net.daemon
        try #require(sh("ip netns exec \(ns.s) ping -c 2 -i 0.2 -W 2 192.0.2.1").status == 0, "the link works")

        // The daemon stops reading; 200 000 datagrams arrive (far more than its
        // 16 MiB receive queue holds); it reads again.
        daemon!.signal(SIGSTOP)
        let blast = sh("ip netns exec \(ns.s) python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                       + "[s.sendto(b\"x\", (\"192.0.2.1\", 9)) for _ in range(200000)]'", timeout: 60)
        #expect(blast.status == 0, "\(blast.output)")
        daemon!.signal(SIGCONT)
        usleep(500_000)

        func wan() -> InterfaceInfo? {
            let out = sh("\(anygatectl) --socket \(dir)/control.sock --json show interfaces").output
            return (try? JSONDecoder().decode([InterfaceInfo].self, from: Data(out.utf8)))?.first { $0.name == "wan0" }
        }
        let w = try #require(wan())
        let kernelDrops = w.drops["kernel-rx-queue"] ?? 0
        #expect(kernelDrops > 10_000, "most of the blast was dropped in the socket queue: \(w.drops)")
        // The kernel's own count of frames that arrived on the link.
        let stats = sh("ip -n \(ns.g) -s -j link show wan").output
        let kernelRx = (try? JSONSerialization.jsonObject(with: Data(stats.utf8)) as? [[String: Any]])?.first
            .flatMap { ($0["stats64"] as? [String: Any])?["rx"] as? [String: Any] }?["packets"] as? Int ?? -1
        let accounted = Int(w.counters.rxPackets + kernelDrops)
        #expect(abs(kernelRx - accounted) <= 5, "kernel rx \(kernelRx), daemon rx \(w.counters.rxPackets) + kernel drops \(kernelDrops)")
        #expect(daemon!.log.contains("wan0 (wan): the kernel dropped"), "a warning when the drops start: \(daemon!.log)")
        let stats2 = sh("\(anygatectl) --socket \(dir)/control.sock show stats").output
        #expect(stats2.contains("kernel-rx-queue"), "\(stats2)")
        // Lost outside the stack, so the stack's own ledger still balances.
        #expect(stats2.contains("packet ledger: balanced"), "\(stats2)")
    }
}

/// A packet attachment without offloads reads into frame buffers (9 216
/// bytes): a larger frame (here a 20 000-byte datagram over a veth with a
/// 65 000-byte MTU) is cut by the kernel, and the daemon drops it as
/// `port-frame-truncated` instead of forwarding a cut frame.
///
///     ns S 192.0.2.254 ─veth (MTU 65 000)─ anygated wan0 (packet, offloads: false) │ lan0 (TAP) ─ ns T 10.9.0.2
@Suite("System: frames cut short by a port without offloads", .serialized,
       .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
struct TruncatedFrameTests {
    @Test("frames longer than the read buffers of a packet attachment without offloads: dropped as port-frame-truncated, never forwarded cut")
    func truncated() throws {
        let net = try SenderAndGateway()
        func sh(_ cmd: String, timeout: Int = 60) -> (status: Int32, output: String) { net.sh(cmd, timeout: timeout) }
        defer { net.close() }
        let (p, ns, ctl) = (net.p, net.ns, net.ctl)
        try net.build(["ip netns add \(ns.t)", "ip -n \(ns.t) link set lo up", "ip -n \(ns.s) route add 10.9.0.0/24 via 192.0.2.1",
                       "ip -n \(ns.s) link set \(p)-s mtu 65000", "ip -n \(ns.g) link set wan mtu 65000"])
        try net.start(interfaces: """
              - name: wan0
                attach: {packet: wan}
                offloads: false
                addresses: [192.0.2.1/24]
              - name: lan0
                attach: {tap: \(p)-t}
                addresses: [10.9.0.1/24]
            """)
        try net.run(["ip -n \(ns.g) link set \(p)-t netns \(ns.t)", "ip -n \(ns.t) addr add 10.9.0.2/24 dev \(p)-t",
                     "ip -n \(ns.t) link set \(p)-t up", "ip -n \(ns.t) route add default via 10.9.0.1"])
        try #require(sh("ip netns exec \(ns.s) ping -c 2 -i 0.2 -W 2 10.9.0.2", timeout: 10).status == 0, "the path works")
        let lanBefore = try #require(try net.interfaces().first { $0.name == "lan0" }).counters.txPackets
        // Five 20 000-byte datagrams, each one frame on the 65 000-byte link.
        let send = sh("ip netns exec \(ns.s) python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                      + "[s.sendto(b\"x\" * 20000, (\"10.9.0.2\", 9)) for _ in range(5)]'", timeout: 10)
        #expect(send.status == 0, "\(send.output)")
        usleep(300_000)
        let after = try net.interfaces()
        let wan = try #require(after.first { $0.name == "wan0" })
        #expect(wan.drops["port-frame-truncated"] == 5, "\(wan.drops)")
        let lanAfter = try #require(after.first { $0.name == "lan0" }).counters.txPackets
        #expect(lanAfter == lanBefore, "none of them forwarded cut: lan0 sent \(lanAfter - lanBefore)")
        let stats = try JSONDecoder().decode(StatsInfo.self, from: Data(sh("\(ctl) --json show stats").output.utf8))
        #expect(stats.ledger.balanced, "\(stats.ledger.violations)")
    }
}

/// The same for a host-backed tunnel: its socket's queue overflows while
/// the receiving gateway is stopped, and the tunnel interface says so.
@Suite("System: kernel-side drops on host tunnel sockets", .serialized,
       .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
struct HostSocketDropTests {
    @Test("a stopped gateway's host GRE socket overflows: gre0 reports kernel-rx-queue (SO_RXQ_OVFL)")
    func hostSocketOverflow() throws {
        let net = try TwoSiteNetwork(backend: "host")
        defer {
            for d in net.daemons { d.signal(SIGCONT) }
            net.close()
        }
        try net.build()
        try net.start()
        try #require(net.sh("ip netns exec \(net.ns.a) ping -c 2 -i 0.2 -W 2 10.2.0.2", timeout: 20).status == 0)
        let gw2 = net.daemons[1]
        gw2.signal(SIGSTOP)
        // Blast until the stopped gateway's GRE socket has overflowed by
        // more than 1 000 (the kernel's count, /proc/net/raw): on a loaded
        // machine one blast may not get that far (gw1 drops at its TAP).
        var kernelCount = 0
        for _ in 0..<5 where kernelCount <= 1000 {
            let blast = net.sh("ip netns exec \(net.ns.a) bash -c 'exec 3>/dev/udp/10.2.0.2/9; for i in $(seq 30000); do echo x >&3; done'",
                               timeout: 90)
            #expect(blast.status == 0, "\(blast.output)")
            let raw = net.sh("ip netns exec \(net.ns.g2) awk 'NR > 1 { d += $NF } END { print d + 0 }' /proc/net/raw").output
            kernelCount = Int(raw.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        }
        #expect(kernelCount > 1000, "the kernel counted \(kernelCount) drops on g2's raw sockets")
        gw2.signal(SIGCONT)
        // The kernel stamps its drop count on each datagram it queues
        // (SO_RXQ_OVFL), and every datagram queued while the gateway was
        // stopped was queued before the drops: the count arrives with the
        // first datagram after the resume. Pings through the tunnel bring it.
        var gre: InterfaceInfo?
        for _ in 0..<20 {
            _ = net.sh("ip netns exec \(net.ns.a) ping -c 1 -W 1 10.2.0.2", timeout: 5)
            let out = net.sh("\(net.anygatectl) --socket \(net.dir)/gw2.sock --json show interfaces").output
            gre = try JSONDecoder().decode([InterfaceInfo].self, from: Data(out.utf8)).first { $0.name == "gre0" }
            if (gre?.drops["kernel-rx-queue"] ?? 0) > 1000 { break }
        }
        #expect((gre?.drops["kernel-rx-queue"] ?? 0) > 1000, "\(gre?.drops ?? [:])\n\(gw2.log.suffix(1000))")
        #expect(gw2.log.contains("gre0: the kernel dropped"), "\(gw2.log.suffix(1000))")
        for side in [1, 2] {
            let l = try net.ledger(side: side)
            #expect(l.balanced, "gw\(side): \(l.violations)")
        }
    }
}
