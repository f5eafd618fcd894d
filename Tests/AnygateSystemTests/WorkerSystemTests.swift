import AnygateControl
import Foundation
import Testing

/// Both gateways of the two-site network with `stack.workers: 2`: each
/// reads its own TAP queue and its own fanout socket of the uplink.
@Suite("System: two workers per gateway", .serialized,
       .enabled(if: SystemEnvironment.canRun, Comment(rawValue: SystemEnvironment.skipReason)))
struct WorkerSystemTests {
    func stats(_ net: TwoSiteNetwork, side: Int) throws -> StatsInfo {
        let out = net.sh("\(net.anygatectl) --socket \(net.dir)/gw\(side).sock --json show stats").output
        return try JSONDecoder().decode(StatsInfo.self, from: Data(out.utf8))
    }

    /// Frames gw2 sent into site B.
    func lanTx(_ net: TwoSiteNetwork) throws -> UInt64 {
        let out = net.sh("\(net.anygatectl) --socket \(net.dir)/gw2.sock --json show interfaces").output
        return try #require(try JSONDecoder().decode([InterfaceInfo].self, from: Data(out.utf8)).first { $0.name == "lan0" }).counters.txPackets
    }

    @Test("ping, 50 MB and 64 flows through the GRE tunnel: both workers carry traffic, every packet accounted for")
    func twoWorkers() throws {
        let net = try TwoSiteNetwork(workers: 2)
        defer { net.close() }
        try net.build()
        try net.start()
        let ns = net.ns
        let ping = net.sh("ip netns exec \(ns.a) ping -c 3 -i 0.2 -W 2 10.2.0.2", timeout: 20)
        #expect(ping.status == 0 && ping.output.contains(" 0% packet loss"), "\(ping.output)\n\(net.daemons[0].log)\n\(net.daemons[1].log)")

        // A route changed at run time reaches every worker: without the
        // route into the tunnel, site B is unreachable; with it, back.
        let ctl1 = "\(net.anygatectl) --socket \(net.dir)/gw1.sock"
        #expect(net.sh("\(ctl1) route del 10.2.0.0/16 via 172.16.0.2").status == 0)
        let without = net.sh("ip netns exec \(ns.a) ping -c 6 -i 0.2 -W 1 10.2.0.2", timeout: 20)
        #expect(without.output.contains(" 100% packet loss"), "a worker still routes into the tunnel: \(without.output)")
        #expect(net.sh("\(ctl1) route add 10.2.0.0/16 via 172.16.0.2").status == 0)
        let back = net.sh("ip netns exec \(ns.a) ping -c 3 -i 0.2 -W 2 10.2.0.2", timeout: 20)
        #expect(back.status == 0 && back.output.contains(" 0% packet loss"), "\(back.output)")

        // 50 MB, checksummed at both ends (one TCP flow: one worker each way).
        let failure = try net.transfer(megabytes: 50)
        #expect(failure == nil, "50 MB through two workers: checksums differ: \(failure ?? "")")

        // 64 UDP flows, 100 datagrams each: the TAP's queues (gw1) and the
        // uplink's fanout (gw2, hashing the inner flow through GRE) spread them.
        let before = try [1, 2].map { try stats(net, side: $0) }
        let lanBefore = try lanTx(net)
        let flows = net.sh("ip netns exec \(ns.a) python3 -c \"import socket, time\nfor f in range(64):\n"
                           + "  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n  s.bind(('', 30000 + f))\n"
                           + "  for i in range(100): s.sendto(b'y' * 64, ('10.2.0.2', 9))\n  s.close()\n  time.sleep(0.005)\"", timeout: 60)
        #expect(flows.status == 0, "\(flows.output)")
        usleep(500_000)
        // Every datagram reached site B's TAP: no worker lost its tunnel.
        let delivered = try lanTx(net) - lanBefore
        #expect(delivered >= 6400, "gw2 lan0 sent \(delivered) of 6 400\n\(net.daemons[0].log)")
        for side in [1, 2] {
            let after = try stats(net, side: side)
            let w0 = try #require(after.workers?.first { $0.index == 0 }), w1 = try #require(after.workers?.first { $0.index == 1 })
            let b0 = before[side - 1].workers?.first { $0.index == 0 }?.rxPackets ?? 0
            let b1 = before[side - 1].workers?.first { $0.index == 1 }?.rxPackets ?? 0
            let d0 = Double(w0.rxPackets - b0), d1 = Double(w1.rxPackets - b1)
            #expect(d0 + d1 >= 6400, "gw\(side): \(d0) + \(d1) frames for 6 400 datagrams")
            #expect(d0 >= 0.3 * (d0 + d1) && d1 >= 0.3 * (d0 + d1), "gw\(side): worker shares \(d0) / \(d1)")
            #expect(after.ledger.balanced, "gw\(side): \(after.ledger.violations)")
            #expect(after.workers?.count == 2)
        }
        // Every frame on each uplink reached exactly one worker: never more
        // than the kernel counted (a duplicate, or the host's own sends taken
        // as input), at most a few in flight fewer.
        for side in [1, 2] {
            let (accounted, kernelRx) = try net.uplinkAccounts(side: side)
            #expect(accounted <= kernelRx && kernelRx - accounted <= 10, "gw\(side): kernel rx \(kernelRx), workers rx + kernel drops \(accounted)")
        }
        // Flows are per worker, and say so (gw1 forwards the flows from its site into the tunnel).
        let out = net.sh("\(net.anygatectl) --socket \(net.dir)/gw1.sock --json show flows").output
        let list = try JSONDecoder().decode([FlowInfo].self, from: Data(out.utf8))
        let diagnosis = net.sh("\(net.anygatectl) --socket \(net.dir)/gw1.sock --json show stats; \(net.anygatectl) --socket \(net.dir)/gw1.sock show neighbors; \(net.anygatectl) --socket \(net.dir)/gw1.sock show flows").output
        #expect(Set(list.compactMap(\.worker)) == [0, 1], "flows on both workers: \(list.count) flows\n\(diagnosis)")
    }

    @Test("reload with two workers: an interface added, removed and added again, every worker attached each time")
    func reloadWithWorkers() throws {
        let net = try TwoSiteNetwork(workers: 2)
        defer { net.close() }
        try net.build()
        try net.start()
        let ctl = "\(net.anygatectl) --socket \(net.dir)/gw1.sock"
        let path = "\(net.dir)/gw1.yaml"
        let base = net.config(side: 1)
        let extra = base.replacingOccurrences(of: "interfaces:\n", with: "interfaces:\n  - name: lan9\n    attach: {tap: \(net.p)-x9}\n    addresses: [10.9.0.1/24]\n")
        func lan9() throws -> InterfaceInfo? {
            let out = net.sh("\(ctl) --json show interfaces").output
            return try JSONDecoder().decode([InterfaceInfo].self, from: Data(out.utf8)).first { $0.name == "lan9" }
        }
        for round in 0..<2 {
            try extra.write(toFile: path, atomically: true, encoding: .utf8)
            let r1 = net.sh("\(ctl) reload")
            #expect(r1.status == 0, "round \(round): \(r1.output)")
            let added = try lan9()
            #expect(added?.attached == true && added?.up == true, "round \(round): \(String(describing: added))")
            try base.write(toFile: path, atomically: true, encoding: .utf8)
            #expect(net.sh("\(ctl) reload").status == 0)
            #expect(try lan9() == nil)
        }
        // The tunnel still carries traffic, and every replica still balances.
        let ping = net.sh("ip netns exec \(net.ns.a) ping -c 3 -i 0.2 -W 2 10.2.0.2", timeout: 20)
        #expect(ping.status == 0, "\(ping.output)")
        let stats = try JSONDecoder().decode(StatsInfo.self, from: Data(net.sh("\(ctl) --json show stats").output.utf8))
        #expect(stats.ledger.balanced && stats.workers?.count == 2)
    }

    @Test("host-backed tunnels with two workers: ping and 20 MB, keepalives owned once, routes shown as forwarding",
          arguments: ["gre", "gre-in-udp"])
    func hostBackend(encapsulation: String) throws {
        let net = try TwoSiteNetwork(encapsulation: encapsulation, backend: "host", workers: 2)
        defer { net.close() }
        try net.build()
        try net.start()
        let ns = net.ns
        let ping = net.sh("ip netns exec \(ns.a) ping -c 3 -i 0.2 -W 2 10.2.0.2", timeout: 20)
        #expect(ping.status == 0 && ping.output.contains(" 0% packet loss"), "\(ping.output)\n\(net.daemons[0].log)")
        let failure = try net.transfer(megabytes: 20)
        #expect(failure == nil, "20 MB through \(encapsulation)/host with two workers: checksums differ: \(failure ?? "")")
        // Keepalives (every second) went out once per interval, not once per worker, and were answered.
        let ctl = "\(net.anygatectl) --socket \(net.dir)/gw1.sock"
        // On a loaded machine the first answer may still be on its way
        // (the first keepalive can leave before the peer is up): wait for
        // it, bounded.
        var t: TunnelInfo?
        for _ in 0..<20 {
            let tunnels = try JSONDecoder().decode([TunnelInfo].self, from: Data(net.sh("\(ctl) --json show tunnels").output.utf8))
            t = tunnels.first
            if (t?.counters["keepalivesReceived"] ?? 0) >= 1 && (t?.counters["keepalivesSent"] ?? 0) >= 2 { break }
            usleep(250_000)
        }
        let tunnel = try #require(t)
        let sent = tunnel.counters["keepalivesSent"] ?? 0, answered = tunnel.counters["keepalivesReceived"] ?? 0
        #expect(tunnel.state == "up" && sent >= 2 && answered >= 1, "\(tunnel)")
        let uptime = try JSONDecoder().decode(StatsInfo.self, from: Data(net.sh("\(ctl) --json show stats").output.utf8))
        #expect(Double(sent) <= uptime.uptimeSeconds + 2, "\(sent) keepalives in \(uptime.uptimeSeconds) s: more than one sender")
        // The daemon's own view of the routes follows worker 0's tunnel line.
        let routes = net.sh("\(ctl) show routes").output
        let line = routes.split(separator: "\n").first { $0.contains("10.2.0.0/16") } ?? ""
        #expect(line.hasSuffix("yes"), "\(routes)")
        for side in [1, 2] {
            let l = try net.ledger(side: side)
            #expect(l.balanced, "gw\(side): \(l.violations)")
        }
    }
}
