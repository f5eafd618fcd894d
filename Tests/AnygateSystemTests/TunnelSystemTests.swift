import AnygateControl
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Two sites joined by a GRE tunnel over an underlay namespace:
///
///     siteA 10.1.0.2 ─TAP─ gw1 [198.51.100.1] ── U (router, tcpdump) ── [203.0.113.2] gw2 ─TAP─ siteB 10.2.0.2
///
/// Each combination of encapsulation and socket backend: with the stack
/// backend the daemon owns its underlay veth (a packet attachment); with
/// the host backend the namespace's kernel owns it and the daemon uses a
/// kernel socket. The underlay is captured and decoded by tshark.
@Suite("System: GRE tunnels between namespaces", .serialized,
       .enabled(if: SystemEnvironment.canRun && Shell.run("command -v tshark && command -v tcpdump").status == 0,
                Comment(rawValue: SystemEnvironment.skipReason + " (and tcpdump, tshark)")))
struct TunnelSystemTests {
    let anygated = SystemEnvironment.binary("anygated")
    let anygatectl = SystemEnvironment.binary("anygatectl")

    func sh(_ cmd: String, timeout: Int = 60) -> (status: Int32, output: String) { Shell.run(cmd, timeout: timeout) }

    @Test("ping and 50 MB through the tunnel; the underlay carries what the config says",
          arguments: [("gre", "stack"), ("gre", "host"), ("gre-in-udp", "stack"), ("gre-in-udp", "host")])
    func tunnel(encapsulation: String, backend: String) throws {
        let net = try TwoSiteNetwork(encapsulation: encapsulation, backend: backend)
        var capture: Process? = nil
        defer {
            if let c = capture, c.isRunning { c.terminate() }
            net.close()
        }
        let (p, dir, ns) = (net.p, net.dir, net.ns)
        try net.build()
        try net.start()
        let daemons = net.daemons
        capture = try Shell.spawn("exec ip netns exec \(ns.u) tcpdump -i \(p)-u1 -U -s 128 -c 3000 -w \(dir)/underlay.pcap 'ip proto 47 or udp port 4754 or icmp'",
                                  output: "\(dir)/tcpdump.log")
        _ = DaemonProcess.wait(seconds: 5) { FileManager.default.fileExists(atPath: "\(dir)/underlay.pcap") }
        usleep(300_000)

        let ping = sh("ip netns exec \(ns.a) ping -c 3 -i 0.2 -W 2 10.2.0.2", timeout: 20)
        #expect(ping.status == 0 && ping.output.contains(" 0% packet loss"), "\(ping.output)\n\(daemons[0].log)\n\(daemons[1].log)")

        // 50 MB from site A to site B through the tunnel, checksummed at both ends.
        let failure = try net.transfer(megabytes: 50)
        #expect(failure == nil, "50 MB through \(encapsulation)/\(backend): checksums differ: \(failure ?? "")")

        // The daemon's view: up, counters moving, keepalives answered.
        let tunnels = try JSONDecoder().decode([TunnelInfo].self,
                                               from: Data(sh("\(anygatectl) --socket \(dir)/gw1.sock --json show tunnels").output.utf8))
        let t = try #require(tunnels.first)
        #expect(t.state == "up" && t.encapsulation == encapsulation && t.backend == backend && t.key == 7)
        #expect((t.counters["txPackets"] ?? 0) > 10_000 && (t.counters["keepalivesReceived"] ?? 0) >= 1, "\(t)")

        // Inside each gateway every packet is accounted for too.
        for side in [1, 2] {
            let l = try net.ledger(side: side)
            #expect(l.balanced, "gw\(side): \(l.violations)")
            // (Super-frames from the TAPs: far fewer packets than 1500-byte frames.)
            #expect((l.terms["received"] ?? 0) > 1_000, "gw\(side): \(l.terms)")
        }
        // Every frame that reached a gateway's uplink is accounted for: the
        // daemon received it, or the kernel dropped it and the daemon says so.
        if backend == "stack" {
            for side in [1, 2] {
                let (accounted, kernelRx) = try net.uplinkAccounts(side: side)
                #expect(abs(kernelRx - accounted) <= 10, "gw\(side): kernel rx \(kernelRx), daemon rx + kernel drops \(accounted)")
            }
        }

        // The underlay, decoded by tshark: outer addresses, protocol, key and inner type.
        capture?.interrupt()
        _ = DaemonProcess.wait(seconds: 5) { !(capture?.isRunning ?? false) }
        let decode = sh("tshark -r \(dir)/underlay.pcap -d udp.port==4754,gre -Y gre -T fields -E separator=, -E occurrence=f "
                        + "-e ip.src -e ip.dst -e ip.proto -e udp.dstport -e gre.key -e gre.proto 2>/dev/null | sort | uniq -c | sort -rn | head -5")
        let lines = decode.output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(!lines.isEmpty, "tshark saw no GRE: \(decode.output)")
        let top = lines.first ?? ""
        #expect(top.contains("198.51.100.1,203.0.113.2") || top.contains("203.0.113.2,198.51.100.1"), "\(top)")
        #expect(top.contains("0x00000007") || top.contains(",7,"), "the key: \(top)")
        #expect(top.contains("0x0800") || top.contains("0x00000800"), "inner IPv4: \(top)")
        if encapsulation == "gre" {
            #expect(top.contains(",47,"), "protocol 47: \(top)")
        } else {
            #expect(top.contains(",4754,") || top.contains("4754"), "UDP 4754: \(top)")
        }
        let unreachable = sh("tshark -r \(dir)/underlay.pcap -Y 'icmp.type==3 && icmp.code==2' 2>/dev/null | wc -l")
        let count = Int(unreachable.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        // A raw GRE socket of the host takes the packets, so the host kernel
        // must not answer them with protocol unreachable. (Linux skips a raw
        // socket whose receive buffer is full and then does answer: the host
        // backend gives its sockets a 4 MiB buffer for that reason.)
        #expect(count == 0, "\(count) protocol unreachable answered GRE")
    }
}
