import AnygateControl
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The underlay shrinks under a running TCP transfer: U's link towards gw2
/// drops to a 1400-byte MTU. U answers gw1's DF outer packets with
/// fragmentation-needed; gw1 lowers the tunnel MTU, tells site A's TCP in
/// turn, and the transfer completes intact.
@Suite("System: tunnel path MTU", .serialized,
       .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
struct TunnelPMTUSystemTests {
    @Test("the underlay MTU drops to 1400 mid-transfer: the transfer completes with its sha256 intact; show tunnels says 1400 and why",
          arguments: ["stack", "host"])
    func underlayShrinks(backend: String) throws {
        let net = try TwoSiteNetwork(backend: backend)
        defer { net.close() }
        try net.build()
        try net.start()
        let ping = net.sh("ip netns exec \(net.ns.a) ping -c 2 -i 0.2 -W 2 10.2.0.2", timeout: 20)
        try #require(ping.status == 0, "\(ping.output)\n\(net.daemons[0].log)")
        #expect(try net.tunnels(side: 1).first?.pathMtu == 1500)

        // 8 MB in two halves; between them the link U → gw2 shrinks to 1400.
        let src = "\(net.dir)/data.bin", dst = "\(net.dir)/recv.bin"
        net.sh("head -c 8000000 /dev/urandom > \(src)")
        let listener = try Shell.spawn("exec ip netns exec \(net.ns.b) timeout 90 nc -l -N 10.2.0.2 5001", output: dst)
        defer { if listener.isRunning { listener.terminate() } }
        _ = DaemonProcess.wait(seconds: 10) { net.sh("ip netns exec \(net.ns.b) ss -ltn").output.contains("10.2.0.2:5001") }
        let sender = try Shell.spawn("exec ip netns exec \(net.ns.a) timeout 90 sh -c '{ head -c 4000000 \(src); sleep 2; "
                                     + "tail -c +4000001 \(src); } | nc -N 10.2.0.2 5001'", output: "\(net.dir)/sender.log")
        usleep(1_000_000)
        #expect(net.sh("ip -n \(net.ns.u) link set \(net.p)-u2 mtu 1400").status == 0)
        _ = DaemonProcess.wait(seconds: 80) { !sender.isRunning }
        _ = DaemonProcess.wait(seconds: 10) { !listener.isRunning }
        let sums = net.sh("sha256sum \(src) \(dst) | cut -d' ' -f1").output.split(separator: "\n")
        let got = (try? FileManager.default.attributesOfItem(atPath: dst)[.size] as? Int) ?? 0
        #expect(sums.count == 2 && sums[0] == sums[1], "received \(got ?? 0) of 8000000 bytes\n\(net.daemons[0].log.suffix(2000))")

        let t = try #require(try net.tunnels(side: 1).first)
        #expect(t.pathMtu == 1400, "\(t)")
        #expect(t.mtu == 1400 - 28)
        let why = backend == "stack" ? "icmp from 198.51.100.254" : "host socket"
        #expect(t.pathMtuSource == why, "\(t.pathMtuSource)")
        #expect((t.counters["pathMTUUpdates"] ?? 0) >= 1)
        let text = net.sh("\(net.anygatectl) --socket \(net.dir)/gw1.sock show tunnels").output
        #expect(text.contains("1400 (\(why))"), "\(text)")
        // explain route follows the same decision: through gre0, with the learnt path MTU.
        let explain = net.sh("\(net.anygatectl) --socket \(net.dir)/gw1.sock --json explain route 10.2.0.2 --source 10.1.0.2")
        let e = try JSONDecoder().decode(ExplainRouteInfo.self, from: Data(explain.output.utf8))
        #expect(e.chosen?.interface == "gre0" && e.nextHop == "172.16.0.2" && e.pathMtu == 1400 && e.egressMtu == 1372, "\(explain.output)")
        let plain = net.sh("\(net.anygatectl) --socket \(net.dir)/gw1.sock explain route 10.2.0.2 --source 10.1.0.2").output
        #expect(plain.contains("chosen:      10.2.0.0/16 via 172.16.0.2 dev gre0") && plain.contains("tunnel path MTU 1400"), "\(plain)")
    }
}
