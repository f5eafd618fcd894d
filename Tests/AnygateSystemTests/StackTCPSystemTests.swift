import AnygateControl
import Foundation
import Testing

/// The stack's own TCP against Linux in namespaces, and the appliance's
/// services on it: metrics and control on stack addresses (also across the
/// tunnel), transfers checked by sha256 both ways, a retransmitted FIN
/// answered from a vestige, a SYN flood, loss recovery with SACK on the
/// wire, and the bandwidth test between two gateways.
@Suite("System: the stack's own TCP and the services on it", .serialized,
       .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
struct StackTCPSystemTests {
    /// Both gateways serve metrics and the bandwidth test on their LAN
    /// address; gw1 also takes control requests from site A with a token.
    static func network() throws -> TwoSiteNetwork {
        let net = try TwoSiteNetwork()
        let token = "\(net.dir)/control.token"
        try "0123456789abcdef0123456789abcdef\n".write(toFile: token, atomically: true, encoding: .utf8)
        chmod(token, 0o600)
        net.topLevel = { side in
            var y = """
            metrics: {listen: "stack:10.\(side).0.1:9100"}
            services:
              bandwidth-test: {listen: "stack:10.\(side).0.1:5201"}

            """
            if side == 1 {
                y += """
                control:
                  socket: \(net.dir)/gw1.sock
                  listen: "stack:10.1.0.1:7000"
                  allow: [10.1.0.0/24]
                  token-file: \(token)

                """
            }
            return y
        }
        try net.build()
        try net.start()
        try Self.client.write(toFile: "\(net.dir)/client.py", atomically: true, encoding: .utf8)
        return net
    }

    /// A Linux client of the bandwidth-test responder: `upload HOST MB`
    /// sends random bytes and compares the sha256 the responder reports;
    /// `download HOST BYTES [HOLD]` compares what arrives with the pattern
    /// (HOLD: drop the stack's first ACK of our FIN with nftables, so the
    /// FIN is sent again, to a TIME-WAIT vestige).
    static let client = #"""
    import hashlib, os, socket, subprocess, sys, time
    mode, host = sys.argv[1], sys.argv[2]
    s = socket.create_connection((host, 5201), timeout=60)
    if mode == "upload":
        data = os.urandom(int(sys.argv[3]) * 1000000)
        s.sendall(b"anygate-bandwidth-test 1 upload\n" + data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk: break
            reply += chunk
        words = reply.decode().split()
        ok = words == ["ok", str(len(data)), hashlib.sha256(data).hexdigest()]
        print("upload", "match" if ok else "MISMATCH", reply.decode().strip())
        sys.exit(0 if ok else 1)
    n = int(sys.argv[3])
    s.sendall(b"anygate-bandwidth-test 1 download %d\n" % n)
    h, got = hashlib.sha256(), 0
    while True:
        chunk = s.recv(1 << 16)
        if not chunk: break
        h.update(chunk); got += len(chunk)
    block = bytes(((k ^ (k >> 8)) & 0xFF) for k in range(65536))
    e = hashlib.sha256()
    for k in range(0, n, 65536): e.update(block[: min(65536, n - k)])
    ok = got == n and h.hexdigest() == e.hexdigest()
    print("download", "match" if ok else "MISMATCH", got)
    if len(sys.argv) > 4:
        # The stack closed first and is in TIME-WAIT; its ACK of our FIN is lost once.
        rule = "add table ip hold; add chain ip hold in { type filter hook input priority 0; }; " \
               "add rule ip hold in ip saddr %s tcp sport 5201 tcp flags == ack counter drop" % host
        subprocess.run(["nft", rule], check=True)
        s.close()
        time.sleep(0.15)
        out = subprocess.run(["nft", "list", "table", "ip", "hold"], capture_output=True, text=True).stdout
        subprocess.run(["nft", "delete", "table", "ip", "hold"], check=True)
        dropped = int(out.split("packets ")[1].split()[0])
        print("held", dropped)
        ok = ok and dropped >= 1
    sys.exit(0 if ok else 1)
    """#

    /// 100 000 SYNs from random sources to HOST:PORT, checksummed so they reach the listener.
    static let flood = #"""
    import random, socket, struct, sys
    dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    def csum(b):
        if len(b) % 2: b += b"\0"
        t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        while t >> 16: t = (t & 0xFFFF) + (t >> 16)
        return ~t & 0xFFFF
    d = socket.inet_aton(dst)
    for i in range(n):
        src = struct.pack("!I", random.randint(0x0B000000, 0xDEFFFFFF))
        sport = random.randint(1024, 65535)
        tcp = struct.pack("!HHIIBBHHH", sport, port, random.getrandbits(32), 0, 0x60, 0x02, 65535, 0, 0) + b"\x02\x04\x05\xb4"
        c = csum(src + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
        tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i & 0xFFFF, 0, 64, 6, 0, src, d)
        s.sendto(ip + tcp, (dst, 0))
    """#

    static func metric(_ text: String, _ name: String) -> UInt64? {
        text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { UInt64($0.split(separator: " ").last ?? "") }
    }

    /// What the gateways counted, for a failure's message.
    static func diagnose(_ net: TwoSiteNetwork) -> String {
        [1, 2].map { side in
            let m = net.sh("ip netns exec \(side == 1 ? net.ns.a : net.ns.b) curl -sS -m 5 http://10.\(side).0.1:9100/metrics").output
            return "gw\(side): " + m.split(separator: "\n").filter {
                ($0.hasPrefix("anygate_tcp") || $0.hasPrefix("anygate_drops_total") || $0.hasPrefix("anygate_interface_drops"))
                    && !$0.hasSuffix(" 0")
            }.joined(separator: "; ")
        }.joined(separator: "\n") + "\n" + net.sh("ip netns exec \(net.ns.a) ss -tin").output
    }

    static func rss(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    @Test("metrics over the stack's TCP, from the site and across the tunnel; sha256-checked transfers both ways; a retransmitted FIN answered from a vestige; control refuses strangers and bad tokens, counted; two gateways run bandwidth-test")
    func services() throws {
        let net = try Self.network()
        defer { net.close() }
        // curl from site A to gw1's own address, and across the tunnel to gw2's.
        let local = net.sh("ip netns exec \(net.ns.a) curl -sS -m 10 http://10.1.0.1:9100/metrics")
        #expect(local.status == 0 && local.output.contains("anygate_tcp_connections"), "\(local.output.prefix(300))")
        let remote = net.sh("ip netns exec \(net.ns.a) curl -sS -m 10 http://10.2.0.1:9100/metrics")
        #expect(remote.status == 0 && remote.output.contains("anygate_tunnel_rx_packets_total"), "\(remote.output.prefix(300))")

        // Transfers, Linux → stack and stack → Linux.
        let up = net.sh("ip netns exec \(net.ns.a) python3 \(net.dir)/client.py upload 10.1.0.1 8", timeout: 120)
        #expect(up.status == 0, "\(up.output) \(Self.diagnose(net))")
        let down = net.sh("ip netns exec \(net.ns.a) python3 \(net.dir)/client.py download 10.1.0.1 8000000", timeout: 120)
        #expect(down.status == 0, "\(down.output)")

        // The stack closes first; the client's FIN, whose first ACK is lost, is answered by the vestige.
        let before = Self.metric(net.sh("ip netns exec \(net.ns.a) curl -sS -m 10 http://10.1.0.1:9100/metrics").output,
                                 "anygate_tcp_vestige_segments_total") ?? 0
        let held = net.sh("ip netns exec \(net.ns.a) python3 \(net.dir)/client.py download 10.1.0.1 100000 hold", timeout: 60)
        #expect(held.status == 0, "\(held.output)")
        let closed = DaemonProcess.wait(seconds: 5) {
            !net.sh("ip netns exec \(net.ns.a) ss -tan state last-ack").output.contains("10.1.0.1:5201")
        }
        #expect(closed, "the client's LAST-ACK ended: the vestige acknowledged its FIN")
        let text = net.sh("ip netns exec \(net.ns.a) curl -sS -m 10 http://10.1.0.1:9100/metrics").output
        #expect((Self.metric(text, "anygate_tcp_vestige_segments_total") ?? 0) > before)
        #expect(text.contains("anygate_tcp_time_wait{as=\"vestige\"}"))

        // Control through the stack: site A with the token works; a bad token and site B are refused, counted.
        let ctl = "\(net.anygatectl) --connect 10.1.0.1:7000"
        let ok = net.sh("ip netns exec \(net.ns.a) \(ctl) --token-file \(net.dir)/control.token show interfaces")
        #expect(ok.status == 0 && ok.output.contains("lan0"), "\(ok.output)")
        try "not-the-token-at-all-0000000000\n".write(toFile: "\(net.dir)/bad.token", atomically: true, encoding: .utf8)
        let bad = net.sh("ip netns exec \(net.ns.a) \(ctl) --token-file \(net.dir)/bad.token show interfaces")
        #expect(bad.status != 0 && bad.output.contains("refused"), "\(bad.output)")
        let stranger = net.sh("ip netns exec \(net.ns.b) timeout 5 \(ctl) --token-file \(net.dir)/control.token show interfaces", timeout: 10)
        #expect(stranger.status != 0)
        let after = net.sh("ip netns exec \(net.ns.a) curl -sS -m 10 http://10.1.0.1:9100/metrics").output
        #expect(after.contains("anygate_control_refused_total{reason=\"token\"} 1"), "\(after.split(separator: "\n").filter { $0.contains("refused") })")
        #expect((Self.metric(after, "anygate_control_refused_total{reason=\"source\"}") ?? 0) >= 1)
        #expect(after.contains("anygate_drops_total{reason=\"tcp-source-not-allowed\"}"))

        // gw1 → gw2 across the tunnel.
        let bw = net.sh("\(net.anygatectl) --socket \(net.dir)/gw1.sock --json bandwidth-test 10.2.0.1:5201 --seconds 3 --streams 2",
                        timeout: 60)
        #expect(bw.status == 0, "\(bw.output)")
        let info = try JSONDecoder().decode(BandwidthTestInfo.self, from: Data(bw.output.utf8))
        #expect(info.state == "done" && info.bytes > 1_000_000 && info.bitsPerSecond > 1e6 && info.rttMilliseconds > 0,
                "\(info)")
        let human = net.sh("\(net.anygatectl) --socket \(net.dir)/gw1.sock bandwidth-test 10.2.0.1 --seconds 1", timeout: 60)
        #expect(human.status == 0 && human.output.contains("Mbit/s"), "\(human.output)")
    }

    @Test("1 % of the tunnel's packets dropped at the underlay router: sha256-checked transfers both ways still match, and the stack's SACK blocks are on the wire")
    func lossRecovery() throws {
        let net = try Self.network()
        defer { net.close() }
        let rule = "add table ip loss; add chain ip loss lossy { type filter hook forward priority 0; }; "
            + "add rule ip loss lossy ip protocol gre numgen random mod 100 < 1 counter drop"
        #expect(net.sh("ip netns exec \(net.ns.u) nft '\(rule)'").status == 0)
        let pcap = "\(net.dir)/u.pcap"
        let capture = try Shell.spawn("exec ip netns exec \(net.ns.u) tcpdump -U -i \(net.p)-u2 -s 200 -w \(pcap) ip proto 47",
                                      output: "\(net.dir)/tcpdump.out")
        defer { if capture.isRunning { capture.terminate() } }
        usleep(500_000)
        let up = net.sh("ip netns exec \(net.ns.a) python3 \(net.dir)/client.py upload 10.2.0.1 8", timeout: 120)
        #expect(up.status == 0, "\(up.output)")
        let down = net.sh("ip netns exec \(net.ns.a) python3 \(net.dir)/client.py download 10.2.0.1 8000000", timeout: 120)
        #expect(down.status == 0, "\(down.output)")
        usleep(300_000)
        capture.interrupt()
        _ = DaemonProcess.wait(seconds: 5) { !capture.isRunning }
        let dropped = net.sh("ip netns exec \(net.ns.u) nft list table ip loss").output
        #expect(dropped.contains("packets") && !dropped.contains("packets 0 "), "\(dropped)")
        let sacks = net.sh("tshark -r \(pcap) -Y 'ip.src == 10.2.0.1 && tcp.options.sack_le' -T fields -e tcp.options.sack_le 2>/dev/null | wc -l")
        #expect((Int(sacks.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 0, "SACK blocks sent by gw2's stack")
        let text = net.sh("ip netns exec \(net.ns.a) curl -sS -m 10 http://10.2.0.1:9100/metrics").output
        #expect((Self.metric(text, "anygate_tcp_retransmits_total") ?? 0) > 0, "gw2's stack retransmitted what the download lost")
    }

    @Test("100 000 SYNs from random sources: SYN cookies answer, the cache and memory stay bounded, and the listener still serves")
    func synFlood() throws {
        let net = try Self.network()
        defer { net.close() }
        try Self.flood.write(toFile: "\(net.dir)/flood.py", atomically: true, encoding: .utf8)
        let pid = try #require(net.daemons.first?.pid)
        #expect(net.sh("ip netns exec \(net.ns.a) curl -sS -m 10 http://10.1.0.1:9100/metrics").status == 0)
        let before = Self.rss(pid)
        let inBefore = Self.metric(net.sh("ip netns exec \(net.ns.a) curl -sS -m 10 http://10.1.0.1:9100/metrics").output,
                                   "anygate_tcp_segments_total{direction=\"in\"}") ?? 0
        let flood = net.sh("ip netns exec \(net.ns.a) python3 \(net.dir)/flood.py 10.1.0.1 9100 100000", timeout: 300)
        #expect(flood.status == 0, "\(flood.output)")
        let after = Self.rss(pid)
        let got = net.sh("ip netns exec \(net.ns.a) curl -sS -m 10 http://10.1.0.1:9100/metrics")
        #expect(got.status == 0, "the listener still answers: \(got.output.prefix(200))")
        #expect((Self.metric(got.output, "anygate_tcp_syn_cache_entries") ?? .max) <= 512)
        // What the TAP's queue could not hold never reached the stack; every SYN that did was
        // answered from the cache (at most 512) or with a cookie (less the scrapes' own segments).
        let cookies = Self.metric(got.output, "anygate_tcp_syn_cookies_total{outcome=\"sent\"}") ?? 0
        let arrived = (Self.metric(got.output, "anygate_tcp_segments_total{direction=\"in\"}") ?? 0) - inBefore
        #expect(cookies > 20_000, "the flood reached the listener")
        #expect(cookies + 512 + 20 >= arrived, "\(arrived) segments arrived, \(cookies) cookies")
        #expect(after - before < 16_384, "RSS grew \(after - before) KiB over the flood")
        #expect((Self.metric(got.output, "anygate_tcp_connections") ?? .max) <= 2)
    }
}
