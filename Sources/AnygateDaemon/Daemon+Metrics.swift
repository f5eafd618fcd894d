import AnygateControl
import AnygateHost
import AnygateStack

extension Daemon {
    /// Serves the Prometheus text exposition format (version 0.0.4) at
    /// `/metrics` on `metrics.listen`, when configured. Written directly
    /// rather than through swift-metrics and swift-prometheus: every value
    /// already lives in the stack's counters, so a registry would only copy
    /// them, and the text format is a few lines.
    func openMetrics() throws(DaemonError) {
        guard case .host(let listen)? = config.metricsListen else { return }
        do {
            metrics = try StreamServer.tcp(host: listen.host.rawValue, port: listen.port, loop: loop,
                                           isComplete: { Daemon.headersComplete($0) },
                                           respond: { [weak self] in self?.handleMetrics($0) ?? [] })
        } catch {
            throw DaemonError("metrics listener \(listen): \(error)")
        }
        logger.info("metrics", metadata: ["listen": "\(listen)"])
    }

    static func headersComplete(_ b: [UInt8]) -> Bool {
        guard b.count >= 4 else { return false }
        for i in 0...(b.count - 4) where b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return true }
        return false
    }

    func handleMetrics(_ request: [UInt8]) -> [UInt8] {
        let firstLine = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = firstLine.split(separator: " ")
        guard parts.count >= 2, parts[0] == "GET" || parts[0] == "HEAD" else {
            return Array("HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8)
        }
        guard parts[1] == "/metrics" || parts[1].hasPrefix("/metrics?") else {
            return Array("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8)
        }
        let body = metricsText()
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        return Array((head + (parts[0] == "HEAD" ? "" : body)).utf8)
    }

    /// The metrics, one family per counter (names in README.md).
    public func metricsText() -> String {
        let view = trafficView()
        var out = ""
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(String, UInt64)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (labels, v) in samples { out += "\(name)\(labels) \(v)\n" }
        }
        // Configuration from the daemon's stack, counts summed over the replicas.
        let ifs = stack.interfaces.map { s in
            var i = s
            i.counters = view.counters(of: s.index)
            return i
        }
        func perInterface(_ name: String, _ help: String, _ value: (InterfaceStatus) -> UInt64) {
            family(name, "counter", help, ifs.map { ("{interface=\"\($0.name)\"}", value($0)) })
        }
        perInterface("anygate_interface_rx_packets_total", "Frames received on the interface.") { $0.counters.rxPackets }
        perInterface("anygate_interface_rx_bytes_total", "Bytes received on the interface.") { $0.counters.rxBytes }
        perInterface("anygate_interface_tx_packets_total", "Frames queued for transmit on the interface.") { $0.counters.txPackets }
        perInterface("anygate_interface_tx_bytes_total", "Bytes queued for transmit on the interface.") { $0.counters.txBytes }
        perInterface("anygate_interface_rx_drops_total", "Frames received on the interface and dropped.") { $0.counters.rxDrops }
        perInterface("anygate_interface_tx_drops_total", "Frames for the interface dropped before transmit.") { $0.counters.txDrops }
        perInterface("anygate_interface_forwarded_total", "Packets received on the interface and forwarded.") { $0.counters.forwarded }
        family("anygate_ledger_balanced", "gauge",
               "1 when every packet the stack received or made is forwarded, consumed, sent, held or dropped with a reason.",
               [("", view.ledgerBalanced ? 1 : 0)])
        perInterface("anygate_port_tx_errors_total", "Frames the host device refused.") { view.portCounters($0.index).txErrors }
        family("anygate_interface_up", "gauge", "1 when the interface is up.", ifs.map { ("{interface=\"\($0.name)\"}", $0.up ? 1 : 0) })
        family("anygate_drops_total", "counter", "Packets dropped, by reason.",
               DropReason.allCases.map { ("{reason=\"\($0)\"}", view.drops($0)) })
        family("anygate_interface_drops_total", "counter", "Packets dropped on an interface, by reason (non-zero ones).",
               ifs.flatMap { i in
                   view.dropCounts(on: i.index).sorted { $0.key.counterIndex < $1.key.counterIndex }
                       .map { ("{interface=\"\(i.name)\",reason=\"\($0.key)\"}", $0.value) }
               })
        for (name, v) in view.counters.sorted(by: { $0.key < $1.key }) {
            let snake = name.reduce(into: "") { s, c in
                if c.isUppercase { s += "_" + c.lowercased() } else { s.append(c) }
            }
            family("anygate_\(snake)_total", "counter", "Stack counter \(name).", [("", v)])
        }
        let tunnels = view.tunnels
        if !tunnels.isEmpty {
            func perTunnel(_ name: String, _ help: String, _ value: (TunnelStatus) -> UInt64) {
                family(name, "counter", help, tunnels.map { ("{tunnel=\"\($0.configuration.name)\"}", value($0)) })
            }
            perTunnel("anygate_tunnel_tx_packets_total", "Packets encapsulated into the tunnel.") { $0.counters.txPackets }
            perTunnel("anygate_tunnel_rx_packets_total", "Packets decapsulated from the tunnel.") { $0.counters.rxPackets }
            perTunnel("anygate_tunnel_tx_bytes_total", "Inner bytes encapsulated.") { $0.counters.txBytes }
            perTunnel("anygate_tunnel_rx_bytes_total", "Inner bytes decapsulated.") { $0.counters.rxBytes }
            perTunnel("anygate_tunnel_keepalives_sent_total", "Keepalives sent.") { $0.counters.keepalivesSent }
            perTunnel("anygate_tunnel_keepalives_received_total", "Answers to our keepalives.") { $0.counters.keepalivesReceived }
            perTunnel("anygate_tunnel_mss_clamped_total", "TCP SYNs whose MSS was lowered.") { $0.counters.mssClamped }
            perTunnel("anygate_tunnel_path_mtu_updates_total", "Path MTU reports that lowered the tunnel MTU.") { $0.counters.pathMTUUpdates }
            family("anygate_tunnel_up", "gauge", "1 when the tunnel's line is up.",
                   tunnels.map { ("{tunnel=\"\($0.configuration.name)\"}", $0.up ? 1 : 0) })
            family("anygate_tunnel_path_mtu", "gauge", "The outer path MTU in force.",
                   tunnels.map { ("{tunnel=\"\($0.configuration.name)\"}", UInt64($0.pathMTU)) })
        }
        if !ikePeers.isEmpty {
            let sas = saInfos()
            family("anygate_ipsec_sa_established", "gauge", "1 while the IKE SA of the tunnel or link is established with a child SA.",
                   sas.map { ("{tunnel=\"\($0.name)\"}", $0.state == "established" && !$0.children.isEmpty ? 1 : 0) })
            func perChild(_ name: String, _ help: String, _ value: (ChildSAInfo) -> UInt64) {
                family(name, "counter", help, sas.map { s in ("{tunnel=\"\(s.name)\"}", s.children.reduce(0) { $0 &+ value($1) }) })
            }
            perChild("anygate_ipsec_packets_in_total", "Packets opened by the current child SA.") { $0.packetsIn }
            perChild("anygate_ipsec_packets_out_total", "Packets sealed by the current child SA.") { $0.packetsOut }
            perChild("anygate_ipsec_replay_drops_total", "Packets the current child SA's replay window refused.") { $0.replayDrops }
            perChild("anygate_ipsec_auth_failures_total", "Packets whose ICV did not verify on the current child SA.") { $0.authFailures }
            family("anygate_ike_established_total", "counter", "IKE SAs established.", [("", ikeMetrics.established)])
            family("anygate_ike_rekeys_total", "counter", "Child SAs rekeyed.", [("", ikeMetrics.rekeys)])
            family("anygate_ike_sa_rekeys_total", "counter", "IKE SAs rekeyed.", [("", ikeMetrics.ikeRekeys)])
            family("anygate_ike_failures_total", "counter", "IKE attempts that failed.", [("", ikeMetrics.ikeFailures)])
            family("anygate_ike_cookies_sent_total", "counter", "IKE_SA_INIT requests answered with a cookie (RFC 7296 section 2.6).",
                   ikePeers.values.sorted { $0.name < $1.name }.map { ("{tunnel=\"\($0.name)\"}", $0.cookies.cookiesSent) })
        }
        if !twins.isEmpty {
            // Twins run with one worker only: the daemon's stack is the one that punts.
            let list = twins.values.sorted { $0.name < $1.name }.map { t in (t, stack.twinCounters(t.interface) ?? TwinCounters()) }
            func perTwin(_ name: String, _ help: String, _ value: (HostTwin, TwinCounters) -> UInt64) {
                family(name, "counter", help, list.map { t, c in ("{twin=\"\(t.name)\",interface=\"\(t.stackName)\"}", value(t, c)) })
            }
            perTwin("anygate_twin_punted_total", "Packets handed to the host twin.") { $1.punted }
            perTwin("anygate_twin_rate_limited_total", "Packets for the twin dropped by its rate limit.") { $1.rateLimited }
            perTwin("anygate_twin_refused_total", "Packets the twin's device did not take.") { $1.refused }
            perTwin("anygate_twin_injected_total", "Packets the host sent out of the twin.") { $1.injected }
            perTwin("anygate_twin_remade_total", "Times the twin was made again after being deleted.") { t, _ in UInt64(t.remade) }
            perTwin("anygate_twin_changes_by_hand_total", "Changes made to the twin by hand (reported, not taken).") { t, _ in UInt64(t.changesByHand) }
        }
        if workers == nil {
            // The stack's own TCP (one worker: the daemon's stack is the one that carries it).
            let t = stack.tcpStatistics
            let v = t.vestige4
            family("anygate_tcp_connections", "gauge", "TCP connections in the stack, TIME-WAIT ones kept whole included.", [("", UInt64(t.connections))])
            family("anygate_tcp_time_wait", "gauge", "TIME-WAIT connections, as vestiges (VTW) and as whole connections.",
                   [("{as=\"vestige\"}", UInt64(t.vestiges)), ("{as=\"connection\"}", UInt64(t.timeWaitConnections))])
            family("anygate_tcp_syn_cache_entries", "gauge", "Half-open connections in the SYN cache.", [("", UInt64(t.synCacheEntries))])
            family("anygate_tcp_opens_total", "counter", "Connections opened, by side.",
                   [("{side=\"active\"}", t.activeOpens), ("{side=\"passive\"}", t.passiveOpens), ("{side=\"failed\"}", t.failedOpens)])
            family("anygate_tcp_segments_total", "counter", "TCP segments, by direction.",
                   [("{direction=\"in\"}", t.segmentsReceived), ("{direction=\"out\"}", t.segmentsSent)])
            family("anygate_tcp_retransmits_total", "counter", "Segments sent again.", [("", t.retransmits)])
            family("anygate_tcp_resets_total", "counter", "RSTs, by direction.",
                   [("{direction=\"in\"}", t.resetsReceived), ("{direction=\"out\"}", t.resetsSent)])
            family("anygate_tcp_syn_cookies_total", "counter", "SYN cookies (RFC 4987), by outcome.",
                   [("{outcome=\"sent\"}", t.cookiesSent), ("{outcome=\"accepted\"}", t.cookiesAccepted),
                    ("{outcome=\"rejected\"}", t.cookiesRejected)])
            family("anygate_tcp_challenge_acks_total", "counter", "Challenge ACKs (RFC 5961), sent and suppressed by the rate limit.",
                   [("{outcome=\"sent\"}", t.challengeACKs), ("{outcome=\"suppressed\"}", t.challengeACKsSuppressed)])
            family("anygate_tcp_vestige_segments_total", "counter", "Segments answered or absorbed by a TIME-WAIT vestige.", [("", t.vestigeSegments)])
            family("anygate_tcp_vestiges_reopened_total", "counter", "New SYNs accepted on a TIME-WAIT four-tuple, vestige or connection (RFC 6191).",
                   [("", t.vestigesReopened)])
            family("anygate_tcp_vestige_operations_total", "counter", "Vestige table operations (IPv4).",
                   [("{op=\"insert\"}", v.inserts), ("{op=\"delete\"}", v.deletes), ("{op=\"kill\"}", v.kills),
                    ("{op=\"expire\"}", v.expired), ("{op=\"lookup\"}", v.lookups), ("{op=\"hit\"}", v.hits)])
            let refused = controlRefusals
            family("anygate_control_refused_total", "counter", "Control requests refused on the stack listener, by reason.",
                   [("{reason=\"source\"}", refused.source), ("{reason=\"token\"}", refused.token)])
        }
        family("anygate_flows_active", "gauge", "ipflow and ip6flow entries in the tables.", [("", UInt64(view.flowCount))])
        family("anygate_pool_buffers_in_use", "gauge", "Packet buffers in use.", [("", UInt64(view.poolInUse))])
        family("anygate_pool_super_frame_buffers_free", "gauge", "64 KiB super-frame buffers free (ports with offloads read into them).",
               [("", UInt64(view.superFramesFree))])
        family("anygate_pool_exhausted_total", "counter", "Packet buffer allocations refused.", [("", view.poolExhausted)])
        let servers = serviceCounters
        family("anygate_service_requests_total", "counter", "Requests answered by the control socket, the metrics endpoint and the stack's listeners.",
               servers.map { ("{listener=\"\($0.listener)\"}", $0.counters.served) })
        family("anygate_service_connections_cut_total", "counter",
               "Connections cut before an answer: too many open, a request too large, too slow, or given up by the client.",
               servers.flatMap { s in
                   [("too-many", s.counters.tooMany), ("too-large", s.counters.tooLarge), ("timeout", s.counters.timedOut),
                    ("unfinished", s.counters.unfinished)].map { ("{listener=\"\(s.listener)\",reason=\"\($0.0)\"}", $0.1) }
               })
        if workers != nil {
            family("anygate_worker_rx_packets_total", "counter", "Frames a worker's replica received.",
                   view.replicas.enumerated().map { k, r in ("{worker=\"\(k)\"}", r.interfaces.reduce(0) { $0 &+ $1.counters.rxPackets }) })
            family("anygate_worker_tx_packets_total", "counter", "Frames a worker's replica queued for transmit.",
                   view.replicas.enumerated().map { k, r in ("{worker=\"\(k)\"}", r.interfaces.reduce(0) { $0 &+ $1.counters.txPackets }) })
        }
        return out
    }

    /// Each listener's requests and cuts: the control socket, the metrics
    /// endpoint (host or stack) and a stack control listener.
    var serviceCounters: [(listener: String, counters: StreamServer.Counters)] {
        var out: [(String, StreamServer.Counters)] = []
        if let control { out.append(("control", control.counters)) }
        if let metrics { out.append(("metrics", metrics.counters)) }
        for (name, s) in [("stack-metrics", stackMetrics), ("stack-control", stackControl)] {
            guard let s else { continue }
            var c = StreamServer.Counters()
            c.served = s.served; c.tooMany = s.refusedBusy; c.tooLarge = s.refusedTooLarge; c.timedOut = s.timedOut
            out.append((name, c))
        }
        return out
    }
}
