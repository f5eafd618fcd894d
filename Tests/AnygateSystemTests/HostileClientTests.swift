import AnygateControl
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Clients that open a thousand connections, send garbage, or never finish
/// a line, against the control socket, the metrics endpoint and a control
/// listener on the stack, while a transfer crosses the gateway: each is cut
/// off and counted, and everyone else is served.
@Suite("System: hostile clients", .serialized,
       .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
struct HostileClientTests {
    /// `flood unix PATH | tcp HOST PORT  N SECONDS`: N connections held
    /// open SECONDS, sending nothing; prints how many the server closed.
    /// `garbage …`: 200 KB without a newline; `slow …`: half a request,
    /// then silence. Each prints how the server ended it and exits 0 only
    /// when the server cut the connection (within 15 s).
    static let client = #"""
    import os, resource, socket, sys, time

    def connect(kind, a, b):
        if kind == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(10); s.connect(a)
        else:
            s = socket.create_connection((a, int(b)), timeout=10)
        return s

    def closed_by_server(s, deadline):
        s.settimeout(max(0.1, deadline - time.time()))
        try:
            while True:
                d = s.recv(65536)
                if not d: return "eof"
        except ConnectionResetError: return "reset"
        except BrokenPipeError: return "reset"
        except socket.timeout: return None

    mode, kind = sys.argv[1], sys.argv[2]
    a = sys.argv[3]; b = sys.argv[4] if kind == "tcp" else None
    rest = sys.argv[5:] if kind == "tcp" else sys.argv[4:]
    if mode == "flood":
        n, hold = int(rest[0]), float(rest[1])
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 100)), hard))
        socks, failed = [], 0
        for i in range(n):
            # A Unix socket's full backlog refuses at once (EAGAIN): try again for a second.
            for attempt in range(1000):
                try:
                    socks.append(connect(kind, a, b)); break
                except BlockingIOError: time.sleep(0.001)
                except OSError: failed += 1; break
        time.sleep(hold)
        cut = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) == b"": cut += 1
            except BlockingIOError: pass
            except OSError: cut += 1
            s.close()
        print(f"opened {len(socks)} failed {failed} cut {cut}")
        sys.exit(0)
    s = connect(kind, a, b)
    start = time.time()
    try:
        if mode == "garbage":
            s.sendall(os.urandom(200000).replace(b"\n", b"x"))
        else:
            s.sendall(b'{"verb": "show", "what": ')
    except (BrokenPipeError, ConnectionResetError):
        print("cut while sending"); sys.exit(0)
    how = closed_by_server(s, start + 15)
    print(f"{how} after {time.time() - start:.1f} s")
    sys.exit(0 if how else 1)
    """#

    static func metric(_ text: String, _ series: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
    }

    @Test("a thousand idle connections, garbage and unfinished lines on three listeners are cut and counted; a transfer and other clients go on")
    func hostile() throws {
        let net = try TwoSiteNetwork()
        let token = try net.controlListenerOnGateway1(extra: "metrics: {listen: \"127.0.0.1:9100\"}\n")
        var background: [Process] = []
        defer {
            for p in background where p.isRunning { p.terminate() }
            net.close()
        }
        try net.build()
        try net.start()
        let py = "\(net.dir)/hostile.py"
        try Self.client.write(toFile: py, atomically: true, encoding: .utf8)
        let sock = "\(net.dir)/gw1.sock"
        let g1 = "ip netns exec \(net.ns.g1)", a = "ip netns exec \(net.ns.a)"
        // The floods: a thousand idle connections to the control socket and to the metrics endpoint, 200 to the stack's listener.
        background.append(try Shell.spawn("exec python3 \(py) flood unix \(sock) 1000 8", output: "\(net.dir)/flood-unix.txt"))
        background.append(try Shell.spawn("exec \(g1) python3 \(py) flood tcp 127.0.0.1 9100 1000 8", output: "\(net.dir)/flood-metrics.txt"))
        background.append(try Shell.spawn("exec \(a) python3 \(py) flood tcp 10.1.0.1 7000 200 8", output: "\(net.dir)/flood-stack.txt"))
        // Garbage and half a line to each, once the floods are open (else the floods' newcomers cut them first, as too many).
        Thread.sleep(forTimeInterval: 1.5)
        for (name, target) in [("unix", "unix \(sock)"), ("metrics", "tcp 127.0.0.1 9100"), ("stack", "tcp 10.1.0.1 7000")] {
            let ns = name == "stack" ? a : g1
            background.append(try Shell.spawn("exec \(ns) python3 \(py) garbage \(target)", output: "\(net.dir)/garbage-\(name).txt"))
            background.append(try Shell.spawn("exec \(ns) python3 \(py) slow \(target)", output: "\(net.dir)/slow-\(name).txt"))
        }
        Thread.sleep(forTimeInterval: 1.5)
        // Meanwhile: a transfer through the gateway, and clients that mean well.
        let transfer = try net.transfer(megabytes: 30)
        #expect(transfer == nil, "\(transfer ?? "")")
        let stats = net.sh("\(net.anygatectl) --socket \(sock) show stats", timeout: 20)
        #expect(stats.status == 0, "\(stats.output)")
        let scrape = net.sh("\(g1) curl -sS -m 10 http://127.0.0.1:9100/metrics", timeout: 20)
        #expect(scrape.status == 0 && scrape.output.contains("anygate_ip_forwarded_total") || scrape.output.contains("anygate_"), "\(scrape.output.prefix(300))")
        let remote = net.sh("\(a) \(net.anygatectl) --connect 10.1.0.1:7000 --token-file \(token) show interfaces", timeout: 20)
        #expect(remote.status == 0 && remote.output.contains("lan0"), "\(remote.output)")
        #expect(DaemonProcess.wait(seconds: 30) { background.allSatisfy { !$0.isRunning } }, "the hostile clients finish")
        for name in ["unix", "metrics", "stack"] {
            for mode in ["garbage", "slow"] {
                let out = (try? String(contentsOfFile: "\(net.dir)/\(mode)-\(name).txt", encoding: .utf8)) ?? ""
                #expect(out.contains("eof") || out.contains("reset") || out.contains("cut while sending"), "\(mode) on \(name): \(out)")
            }
        }
        for name in ["unix", "metrics", "stack"] {
            let out = (try? String(contentsOfFile: "\(net.dir)/flood-\(name).txt", encoding: .utf8)) ?? ""
            #expect(out.hasPrefix("opened"), "flood on \(name): \(out)")
        }
        // Every cut counted, by listener and reason.
        let m = net.sh("\(g1) curl -sS -m 10 http://127.0.0.1:9100/metrics", timeout: 20).output
        func cut(_ l: String, _ r: String) -> Double { Self.metric(m, "anygate_service_connections_cut_total{listener=\"\(l)\",reason=\"\(r)\"}") ?? -1 }
        let floods = ["unix", "metrics", "stack"].map { (try? String(contentsOfFile: "\(net.dir)/flood-\($0).txt", encoding: .utf8)) ?? "" }
        #expect(cut("control", "too-many") >= 900, "\(m.split(separator: "\n").filter { $0.contains("cut_total") }) \(floods)")
        #expect(cut("metrics", "too-many") >= 900)
        #expect(cut("stack-control", "too-many") >= 150)
        #expect(cut("control", "too-large") >= 1 && cut("metrics", "too-large") >= 1 && cut("stack-control", "too-large") >= 1)
        #expect(cut("control", "timeout") >= 1 && cut("metrics", "timeout") >= 1 && cut("stack-control", "timeout") >= 1)
        #expect((Self.metric(m, "anygate_service_requests_total{listener=\"control\"}") ?? 0) >= 1)
        // The daemon is whole: it answers and its books balance.
        #expect(net.daemons[0].isRunning)
        let l = try net.ledger(side: 1)
        #expect(l.balanced, "\(l.violations)")
    }
}
