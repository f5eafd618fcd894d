import AnygateControl
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `anygatectl capture` on a gateway of the two-site topology: a TAP, the
/// GRE tunnel's interface (inner packets) and the underlay (encapsulated
/// ones), each with a tcpdump filter run in the stack; the files are read
/// by tcpdump and tshark.
@Suite("System: capture to pcapng, read by tcpdump and tshark", .serialized,
       .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
struct CaptureSystemTests {
    @Test("pings captured on the TAP, inside the tunnel and on the underlay with filters; a pipe into tcpdump; no malformed frame")
    func captureThreeWays() throws {
        let net = try TwoSiteNetwork(backend: "stack")
        var captures: [Process] = []
        defer {
            for c in captures where c.isRunning { c.terminate() }
            net.close()
        }
        try net.build()
        try net.start()
        try #require(net.sh("ip netns exec \(net.ns.a) ping -c 1 -W 2 10.2.0.2", timeout: 10).status == 0)
        let ctl = "\(net.anygatectl) --socket \(net.dir)/gw1.sock capture"
        let f = net.dir
        captures.append(try Shell.spawn("exec \(ctl) lan0 --filter 'icmp and host 10.2.0.2' --count 6 --seconds 30", output: "\(f)/lan.pcapng"))
        captures.append(try Shell.spawn("exec \(ctl) gre0 --filter 'icmp[icmptype] == icmp-echo' --count 3 --seconds 30",
                                        output: "\(f)/gre.pcapng"))
        captures.append(try Shell.spawn("exec \(ctl) wan0 --direction tx --filter 'ip proto 47 and ip[37] == 1' --count 3 --snaplen 64 --seconds 30",
                                        output: "\(f)/wan.pcapng"))
        let log = net.daemons[0]
        try #require(DaemonProcess.wait(seconds: 10) { log.log.components(separatedBy: "capture started").count - 1 >= 3 },
                     "captures started: \(log.log.suffix(800))")
        let ping = net.sh("ip netns exec \(net.ns.a) ping -c 3 -i 0.2 -W 2 10.2.0.2", timeout: 15)
        #expect(ping.status == 0, "\(ping.output)")
        try #require(DaemonProcess.wait(seconds: 20) { !captures[0].isRunning && !captures[1].isRunning && !captures[2].isRunning },
                     "the counted captures end")
        // One capture per interface: a second on gre0 now that the first ended, piped into tcpdump.
        captures.append(try Shell.spawn("\(ctl) gre0 --direction rx --count 3 --filter icmp --seconds 30 | tcpdump -nr - 2>/dev/null",
                                        output: "\(f)/pipe.txt"))
        try #require(DaemonProcess.wait(seconds: 10) { log.log.components(separatedBy: "capture started").count - 1 >= 4 })
        let ping2 = net.sh("ip netns exec \(net.ns.a) ping -c 3 -i 0.2 -W 2 10.2.0.2", timeout: 15)
        #expect(ping2.status == 0, "\(ping2.output)")
        #expect(DaemonProcess.wait(seconds: 20) { !captures[3].isRunning }, "the piped capture ends")

        func tcpdump(_ file: String) -> [String] {
            net.sh("tcpdump -nr \(f)/\(file) 2>&1").output.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("reading from") }
        }
        func tshark(_ file: String, _ args: String) -> [String] {
            net.sh("tshark -r \(f)/\(file) \(args) 2>/dev/null").output.split(separator: "\n").map(String.init)
        }
        // The TAP: three requests in, three replies out, nothing else (no ARP: the filter ran in the stack).
        let lan = tcpdump("lan.pcapng")
        #expect(lan.count == 6, "\(lan)")
        #expect(lan.filter { $0.contains("10.1.0.2 > 10.2.0.2: ICMP echo request") }.count == 3, "\(lan)")
        #expect(lan.filter { $0.contains("10.2.0.2 > 10.1.0.2: ICMP echo reply") }.count == 3, "\(lan)")
        // pcapng records the interface's name and each packet's direction (1 inbound, 2 outbound).
        let dirs = tshark("lan.pcapng", "-T fields -e frame.interface_name -e frame.packet_flags_direction -e icmp.type")
        #expect(dirs.filter { $0.hasPrefix("lan0\t") }.count == 6, "\(dirs)")
        #expect(dirs.filter { $0 == "lan0\t0x00000001\t8" }.count == 3, "requests inbound: \(dirs)")
        #expect(dirs.filter { $0 == "lan0\t0x00000002\t0" }.count == 3, "replies outbound: \(dirs)")
        // The tunnel: inner packets, raw IP, only echo requests (the filter), both from site A.
        let gre = tcpdump("gre.pcapng")
        #expect(gre.count == 3 && gre.allSatisfy { $0.contains("10.1.0.2 > 10.2.0.2: ICMP echo request") }, "\(gre)")
        #expect(tshark("gre.pcapng", "-T fields -e frame.encap_type").allSatisfy { $0 == "7" }, "raw IP (wtap encapsulation 7)")
        // The underlay: GRE with key 7 carrying ICMP (the inner protocol byte at 20 + 8 + 9: keepalives
        // are GRE in GRE and stay out), cut to 64 bytes but with its whole length.
        let wan = tshark("wan.pcapng", "-T fields -e ip.proto -e gre.key -e frame.cap_len -e frame.len")
        #expect(wan.count == 3 && wan.allSatisfy { $0 == "47,1\t0x00000007\t64\t126" }, "\(wan)")
        // Piped into tcpdump as it arrives.
        let piped = (try? String(contentsOfFile: "\(f)/pipe.txt", encoding: .utf8)) ?? ""
        #expect(piped.split(separator: "\n").filter { $0.contains("ICMP echo reply") }.count == 3, "\(piped)")
        // No frame is malformed in any of the files.
        for file in ["lan.pcapng", "gre.pcapng", "wan.pcapng"] {
            let bad = tshark(file, "-Y _ws.malformed")
            #expect(bad.isEmpty, "\(file): \(bad)")
        }
        // The captures ended: the daemon holds none, and the ledger balances.
        #expect(!log.log.contains("capture ended: nobody read it"))
        let l = try net.ledger(side: 1)
        #expect(l.balanced, "\(l.violations)")
    }

    @Test("bad capture requests are refused with a reason; classic pcap is written on request")
    func refusals() throws {
        let net = try TwoSiteNetwork(backend: "stack")
        defer { net.close() }
        try net.build()
        try net.start()
        let ctl = "\(net.anygatectl) --socket \(net.dir)/gw1.sock capture"
        let noSuch = net.sh("\(ctl) eth9 --count 1 2>&1 >/dev/null")
        #expect(noSuch.status == 1 && noSuch.output.contains("no interface named eth9"), "\(noSuch.output)")
        let badFilter = net.sh("\(ctl) lan0 --filter 'host nowhere.invalid and frobnicate' --count 1 2>&1 >/dev/null")
        #expect(badFilter.status == 1 && badFilter.output.contains("bad filter"), "\(badFilter.output)")
        let pcap = net.sh("\(ctl) lan0 --format pcap --filter arp --seconds 3 > \(net.dir)/arp.pcap & "
                          + "sleep 1; ip -n \(net.ns.a) neigh flush all; ip netns exec \(net.ns.a) ping -c 1 -W 1 10.1.0.1 >/dev/null; wait",
                          timeout: 20)
        #expect(pcap.status == 0, "\(pcap.output)")
        let magic = net.sh("head -c 4 \(net.dir)/arp.pcap | od -An -tx1").output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(magic == "4d 3c b2 a1", "nanosecond pcap magic: \(magic)")
        let arp = net.sh("tcpdump -nr \(net.dir)/arp.pcap 2>/dev/null").output
        #expect(arp.contains("ARP, Request who-has 10.1.0.1") || arp.contains("ARP, Reply 10.1.0.1"), "\(arp)")
    }

    @Test("GRE over IPsec: the local operator sees the tunnel's plaintext and the underlay's ESP; through the stack's control listener the plaintext is refused")
    func protectedTunnel() throws {
        let net = try TwoSiteNetwork()
        let token = try net.controlListenerOnGateway1()
        var captures: [Process] = []
        defer {
            for c in captures where c.isRunning { c.terminate() }
            net.close()
        }
        try net.build()
        _ = try net.startProtected(capture: false)
        let ctl = "\(net.anygatectl) --socket \(net.dir)/gw1.sock capture"
        let f = net.dir
        captures.append(try Shell.spawn("exec \(ctl) gre0 --filter icmp --count 2 --seconds 30", output: "\(f)/inner.pcapng"))
        captures.append(try Shell.spawn("exec \(ctl) wan0 --direction tx --filter 'udp port 4500' --count 2 --seconds 30",
                                        output: "\(f)/esp.pcapng"))
        try #require(DaemonProcess.wait(seconds: 10) { net.daemons[0].log.components(separatedBy: "capture started").count - 1 >= 2 })
        #expect(net.sh("ip netns exec \(net.ns.a) ping -c 1 -W 2 10.2.0.2", timeout: 10).status == 0)
        #expect(DaemonProcess.wait(seconds: 20) { captures.allSatisfy { !$0.isRunning } }, "both captures end")
        let inner = net.sh("tcpdump -nr \(f)/inner.pcapng 2>/dev/null").output
        #expect(inner.contains("10.1.0.2 > 10.2.0.2: ICMP echo request") && inner.contains("10.2.0.2 > 10.1.0.2: ICMP echo reply"), "\(inner)")
        let esp = net.sh("tshark -r \(f)/esp.pcapng -T fields -e esp.spi 2>/dev/null").output
        #expect(esp.split(separator: "\n").count == 2, "ESP on the underlay: \(esp)")
        // From site A through the stack's control listener, with the token: the plaintext is refused, the underlay is not.
        let remote = "ip netns exec \(net.ns.a) \(net.anygatectl) --connect 10.1.0.1:7000 --token-file \(token) capture"
        let refused = net.sh("\(remote) gre0 --count 1 --seconds 5 2>&1 >/dev/null", timeout: 20)
        #expect(refused.status == 1 && refused.output.contains("captured only over the local control socket"), "\(refused.output)")
        let underlay = net.sh("\(remote) wan0 --count 1 --seconds 10 > \(f)/remote.pcapng & sleep 1; "
                              + "ip netns exec \(net.ns.a) ping -c 1 -W 2 10.2.0.2 >/dev/null; wait", timeout: 30)
        #expect(underlay.status == 0, "\(underlay.output)")
        #expect(net.sh("tcpdump -nr \(f)/remote.pcapng 2>/dev/null | wc -l").output.trimmingCharacters(in: .whitespacesAndNewlines) == "1")
    }
}
