// anygatectl: shows and changes the state of a running anygated through
// its control socket. Human output is aligned tables; --json prints one
// JSON document. Exit status: 0 ok, 1 the daemon refused or is not
// running, 2 bad usage.
import AnygateControl
import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes one line to standard error.
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

struct Anygatectl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "anygatectl",
        abstract: "Show and change the state of a running anygated.",
        subcommands: [Show.self, RouteCommand.self, AddressCommand.self, Explain.self, Trace.self, Flows.self, Reload.self,
                      BandwidthTest.self, Capture.self])

    @Option(name: .long, help: "The daemon's control socket.")
    var socket = "/run/anygate/control.sock"

    @Option(name: .long, help: "Reach the daemon through its stack instead: control.listen's ADDR:PORT (needs --token-file).")
    var connect: String?

    @Option(name: .long, help: "The file holding control.listen's token.")
    var tokenFile: String?

    @Flag(name: .long, help: "Print one JSON document instead of a table.")
    var json = false
}

/// Exit 1 with the daemon's (or the connection's) message, verbatim.
func fail(_ error: any Error) -> Never {
    printError("anygatectl: \(error)")
    exit(1)
}

func call<T: Codable>(_ request: ControlRequest, _ parent: Anygatectl, as type: T.Type) -> T {
    guard let connect = parent.connect else {
        do { return try ControlClient.call(request, socketPath: parent.socket, as: type) } catch { fail(error) }
    }
    let parts = connect.split(separator: ":")
    guard parts.count == 2, let port = UInt16(parts[1]) else { fail(ValidationError("--connect wants ADDR:PORT, got \(connect)")) }
    guard let path = parent.tokenFile else { fail(ValidationError("--connect needs --token-file")) }
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { fail(ValidationError("cannot read \(path)")) }
    var r = request
    r.token = String(text.prefix { $0 != "\n" && $0 != "\r" })
    do { return try ControlClient.call(r, endpoint: .tcp(host: String(parts[0]), port: port), as: type) } catch { fail(error) }
}

func printJSON<T: Encodable>(_ value: T) {
    do {
        let data = try ControlCoding.encoder(pretty: true).encode(value)
        print(String(decoding: data, as: UTF8.self))
    } catch {
        fail(error)
    }
}

/// Prints rows as columns padded to the widest cell.
func table(_ header: [String], _ rows: [[String]]) {
    let all = [header] + rows
    let widths = header.indices.map { c in all.map { $0[c].count }.max() ?? 0 }
    for row in all {
        let cells = row.enumerated().map { c, s in c == row.count - 1 ? s : s.padding(toLength: widths[c], withPad: " ", startingAt: 0) }
        print(cells.joined(separator: "  "))
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show interfaces, addresses, routes, neighbors, flows or stats.")

    @ParentCommand var parent: Anygatectl

    @Argument(help: "interfaces | addresses | routes | neighbors | flows | tunnels | mirror | stats")
    var topic: String

    func validate() throws {
        guard ControlRequest.showTopics.contains(topic) else {
            throw ValidationError("cannot show \"\(topic)\": choose one of \(ControlRequest.showTopics.joined(separator: ", "))")
        }
    }

    func run() {
        let request = ControlRequest(verb: .show, what: topic)
        switch topic {
        case "interfaces":
            let r = call(request, parent, as: [InterfaceInfo].self)
            if parent.json { return printJSON(r) }
            table(["NAME", "INDEX", "MAC", "MTU", "STATE", "ATTACH", "ADDRESSES", "RX-PKTS", "TX-PKTS", "RX-DROP", "TX-DROP"],
                  r.map { i in
                      [i.name, "\(i.index)", i.mac, "\(i.mtu)", i.up ? "up" : (i.attached ? "down" : "down (detached)"), i.attach,
                       i.addresses.map(\.address).joined(separator: ","), "\(i.counters.rxPackets)", "\(i.counters.txPackets)",
                       "\(i.counters.rxDrops)", "\(i.counters.txDrops)"]
                  })
            // Where each interface lost packets, by reason (the kernel's and the port's too).
            let lossy = r.filter { !$0.drops.isEmpty }
            if !lossy.isEmpty {
                print("")
                table(["INTERFACE", "DROP REASON", "PACKETS"],
                      lossy.flatMap { i in i.drops.sorted { $0.key < $1.key }.map { [i.name, $0.key, "\($0.value)"] } })
            }
        case "addresses":
            let r = call(request, parent, as: [AddressInfo].self)
            if parent.json { return printJSON(r) }
            table(["INTERFACE", "ADDRESS", "PREFERENCE", "POLICY", "STATE"],
                  r.map { [$0.interface ?? "-", $0.address, "\($0.preference)",
                           ($0.policy ?? "none") + ($0.policyOrigin.map { $0 == "none" ? "" : " (\($0))" } ?? ""),
                           $0.state ?? "-"] })
        case "routes":
            let r = call(request, parent, as: [RouteInfo].self)
            if parent.json { return printJSON(r) }
            // ECMP: every member is a row; FORWARDS says which rows carry
            // traffic (ecmp N/M for a member of an N-way set).
            table(["PREFIX", "NEXT-HOP", "INTERFACE", "METRIC", "ORIGIN", "WEIGHT", "FORWARDS"],
                  r.map { route in
                      let k = route.nextHops.firstIndex { $0.address == route.nextHop && $0.interface == route.interface }
                      let forwards = route.nextHops.isEmpty ? "no" : route.nextHops.count == 1 ? "yes"
                          : "ecmp \((k ?? 0) + 1)/\(route.nextHops.count)"
                      return [route.prefix, route.nextHop ?? "-", route.interface, "\(route.metric)", route.origin,
                              "\(route.weight)", forwards]
                  })
        case "neighbors":
            let r = call(request, parent, as: [NeighborInfo].self)
            if parent.json { return printJSON(r) }
            table(["ADDRESS", "MAC", "INTERFACE", "STATE", "AGE"],
                  r.map { [$0.address, $0.mac ?? "-", $0.interface, $0.state, String(format: "%.1fs", $0.ageSeconds)] })
        case "tunnels":
            let r = call(request, parent, as: [TunnelInfo].self)
            if parent.json { return printJSON(r) }
            table(["NAME", "STATE", "ENCAP", "BACKEND", "LOCAL", "REMOTE", "KEY", "MTU", "PATH-MTU", "TX-PKTS", "RX-PKTS", "KEEPALIVE"],
                  r.map { t in
                      let ka = t.keepalive == nil ? "off"
                          : "\(t.counters["keepalivesSent"] ?? 0) sent/\(t.counters["keepalivesReceived"] ?? 0) answered"
                      return [t.name, t.state + (t.reason.map { " (\($0))" } ?? ""), t.encapsulation, t.backend, t.local, t.remote,
                              t.key.map { "\($0)" } ?? "-", "\(t.mtu)", "\(t.pathMtu) (\(t.pathMtuSource))", "\(t.counters["txPackets"] ?? 0)",
                              "\(t.counters["rxPackets"] ?? 0)", ka]
                  })
        case "sas":
            let r = call(request, parent, as: [SAInfo].self)
            if parent.json { return printJSON(r) }
            table(["NAME", "PEER", "STATE", "ROLE", "IKE", "NAT-T", "LOCAL-SPI", "REMOTE-SPI", "ESP", "MODE", "PKTS-IN", "PKTS-OUT", "REPLAY", "AUTH-FAIL"],
                  r.flatMap { s -> [[String]] in
                      let head = [s.name, s.peer, s.state + (s.reason.map { " (\($0))" } ?? ""), s.role ?? "-", s.ike ?? "-", s.natTraversal ? "yes" : "no"]
                      if s.children.isEmpty { return [head + ["-", "-", "-", "-", "-", "-", "-", "-"]] }
                      return s.children.map { c in
                          head + [c.localSpi, c.remoteSpi, c.algorithm + (c.esn ? "-esn" : ""), c.mode, "\(c.packetsIn)", "\(c.packetsOut)",
                                  "\(c.replayDrops)", "\(c.authFailures)"]
                      }
                  })
        case "mirror":
            let m = call(request, parent, as: MirrorInfo.self)
            if parent.json { return printJSON(m) }
            guard m.enabled else { return print("mirror: off (no mirror attachments or mirror.routes in the config)") }
            table(["INTERFACE", "HOST", "PRESENT", "STATE"], m.interfaces.map { [$0.name, $0.host, $0.present ? "yes" : "no", $0.up ? "up" : "down"] })
            print("")
            table(["TABLE/PROTOCOL", "ROUTES"], m.importedRoutes.sorted { $0.key < $1.key }.map { [$0.key, "\($0.value)"] })
            print("\nevents \(m.eventsProcessed), skipped routes \(m.skippedRoutes), resyncs \(m.resyncs)"
                  + (m.lastResync.map { ", last \($0) (\(m.lastResyncReason ?? ""))" } ?? ""))
            if let p = m.fibPrefixes, let b = m.fibBytes {
                print("FIB \(p) prefixes, \(String(format: "%.1f", Double(b) / 1_048_576)) MiB")
            }
        case "flows":
            let r = call(request, parent, as: [FlowInfo].self)
            if parent.json { return printJSON(r) }
            let several = r.contains { $0.worker != nil }
            table(["SOURCE", "DESTINATION", "PORTS", "TOS", "INTERFACE", "NEXT-HOP", "PACKETS", "BYTES", "IDLE", "STATE"]
                      + (several ? ["WORKER"] : []),
                  r.map { f in
                      let ports = f.flowLabel.map { "label \($0)" } ?? f.sourcePort.map { "\($0)>\(f.destinationPort ?? 0)" } ?? "-"
                      return [f.source, f.destination, ports, f.flowLabel == nil ? "\(f.tos)" : "-", f.interface, f.nextHop, "\(f.packets)", "\(f.bytes)",
                              String(format: "%.1fs", f.idleSeconds), f.valid ? "valid" : "stale"]
                          + (several ? [f.worker.map { "\($0)" } ?? "-"] : [])
                  })
        default:
            let r = call(request, parent, as: StatsInfo.self)
            if parent.json { return printJSON(r) }
            table(["COUNTER", "VALUE"], r.counters.sorted { $0.key < $1.key }.map { [$0.key, "\($0.value)"] })
            print("")
            table(["DROP REASON", "PACKETS"], r.drops.sorted { $0.key < $1.key }.map { [$0.key, "\($0.value)"] })
            print("\npool buffers in use: \(r.poolBuffersInUse) of \(r.poolBuffers); up \(Int(r.uptimeSeconds))s")
            if let workers = r.workers {
                print("")
                table(["WORKER", "RX-PKTS", "TX-PKTS", "FLOWS", "DROPS"],
                      workers.map { ["\($0.index)", "\($0.rxPackets)", "\($0.txPackets)", "\($0.flows)", "\($0.drops)"] })
            }
            let t = r.ledger.terms
            func v(_ k: String) -> UInt64 { t[k] ?? 0 }
            print("\npacket ledger: \(r.ledger.balanced ? "balanced" : "NOT BALANCED")")
            print("  in   received \(v("received")) + from host sockets \(v("fromHostSockets")) + looped \(v("looped"))"
                  + " + reassembled \(v("reassembled")) + unbundled datagrams \(v("unbundledPackets"))"
                  + " = forwarded \(v("forwarded")) + consumed \(v("consumed"))"
                  + " + fragments reassembled \(v("fragmentsReassembled")) + held \(v("heldForReassembly"))"
                  + " + unbundled \(v("unbundled")) + dropped \(v("inputDrops"))")
            print("  out  forwarded \(v("forwarded")) + originated \(v("originated")) + fragments \(v("fragmentsCreated"))"
                  + " + segments \(v("segmentsCreated"))"
                  + " = sent \(v("sent")) + to host sockets \(v("toHostSockets")) + looped \(v("looped"))"
                  + " + fragmented \(v("fragmented")) + segmented \(v("segmented")) + held \(v("heldForNeighbor"))"
                  + " + dropped \(v("outputDrops"))")
            print("  drops by reason \(v("dropsByReason")) = in \(v("inputDrops")) + out \(v("outputDrops"))"
                  + " + outside the stack \(v("dropsOutsideStack"))")
            for line in r.ledger.violations { print("  ! \(line)") }
        }
    }
}

struct RouteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "route", abstract: "Add or delete a static route.", subcommands: [Add.self, Del.self])

    /// Reads `[via ADDR] [dev IF] [metric N]` in any order.
    static func words(_ w: [String], allowMetric: Bool) throws -> (via: String?, dev: String?, metric: UInt32?) {
        var via: String?, dev: String?, metric: UInt32?
        var i = 0
        while i < w.count {
            guard i + 1 < w.count else { throw ValidationError("\"\(w[i])\" needs a value") }
            switch w[i] {
            case "via": via = w[i + 1]
            case "dev": dev = w[i + 1]
            case "metric" where allowMetric:
                guard let m = UInt32(w[i + 1]) else { throw ValidationError("metric must be a whole number") }
                metric = m
            default: throw ValidationError("unexpected \"\(w[i])\" (expected via, dev\(allowMetric ? " or metric" : ""))")
            }
            i += 2
        }
        return (via, dev, metric)
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "route add PREFIX [via ADDR] [dev IF] [metric N]")
        @ParentCommand var root: Anygatectl
        @Argument(help: "The prefix, as 10.2.0.0/16.") var prefix: String
        @Argument(help: "via ADDR, dev IF, metric N") var rest: [String] = []

        func run() throws {
            let (via, dev, metric) = try RouteCommand.words(rest, allowMetric: true)
            let r = call(ControlRequest(verb: .routeAdd, prefix: prefix, via: via, dev: dev, metric: metric), root, as: Done.self)
            if root.json { printJSON(r) } else { print(r.message) }
        }
    }

    struct Del: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "route del PREFIX [via ADDR]")
        @ParentCommand var root: Anygatectl
        @Argument(help: "The prefix, as 10.2.0.0/16.") var prefix: String
        @Argument(help: "via ADDR") var rest: [String] = []

        func run() throws {
            let (via, dev, _) = try RouteCommand.words(rest, allowMetric: false)
            let r = call(ControlRequest(verb: .routeDel, prefix: prefix, via: via, dev: dev), root, as: Done.self)
            if root.json { printJSON(r) } else { print(r.message) }
        }
    }
}

struct AddressCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "address", abstract: "Change an address's settings.", subcommands: [Preference.self])

    struct Preference: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "address preference IF ADDR N: set the IPSELSRC preference.")
        @ParentCommand var root: Anygatectl
        @Argument(help: "The interface.") var interface: String
        @Argument(help: "The address (with or without /LEN).") var address: String
        @Argument(help: "The preference, -32768...32767 (higher wins).") var preference: Int

        func run() {
            let r = call(ControlRequest(verb: .addressPreference, dev: interface, address: address, preference: preference), root,
                         as: Done.self)
            if root.json { printJSON(r) } else { print(r.message) }
        }
    }
}

struct Trace: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "trace [--count N] [--interface IF] [--filter EXPR]: each step the stack takes with the next N matching packets.",
        discussion: """
            EXPR: a tcpdump filter expression (pcap-filter(7)), e.g. "icmp and host 10.2.0.2" or "udp and dst port 53", \
            compiled by libpcap and run in the stack. A packet in GRE matches by its inner packet too. Waits until N \
            packets were traced or --timeout passed, then ends the trace.
            """)
    @ParentCommand var root: Anygatectl
    @Option(name: .long, help: "How many packets (1-1000).") var count = 10
    @Option(name: .long, help: "Only packets arriving on this interface.") var interface: String?
    @Option(name: .long, help: "Only packets matching this expression.") var filter: String?
    @Option(name: .long, help: "Give up waiting after this many seconds.") var timeout = 10.0

    func validate() throws {
        guard (1...1000).contains(count) else { throw ValidationError("--count must be 1 to 1000") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func run() {
        var info = call(ControlRequest(verb: .traceStart, dev: interface, count: count, filter: filter ?? ""), root, as: TraceInfo.self)
        var printed = 0
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if !root.json {
                for p in info.packets.dropFirst(printed) { Trace.print(p) }
                printed = info.packets.count
            }
            if info.remaining == 0 || Date() >= deadline { break }
            usleep(100_000)
            info = call(ControlRequest(verb: .traceShow), root, as: TraceInfo.self)
        }
        _ = call(ControlRequest(verb: .traceStop), root, as: Done.self)
        if root.json { printJSON(info) }
        if info.remaining > 0 {
            printError("anygatectl: \(info.packets.count) of \(count) packets traced in \(Int(timeout))s")
        }
    }

    /// VPP's layout: the packet, then each node with what it did, indented.
    static func print(_ p: TraceInfo.Packet) {
        Swift.print("Packet \(p.sequence)\n")
        for s in p.steps {
            Swift.print(String(format: "%.6f: ", p.time) + s.node)
            Swift.print("  " + s.detail)
        }
        Swift.print("")
    }
}

struct BandwidthTest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bandwidth-test",
        abstract: "bandwidth-test PEER [--seconds N] [--streams N]: TCP throughput from this appliance's stack to another's.",
        discussion: """
            PEER is ADDR[:PORT] or [ADDR6]:PORT of another anygated's services.bandwidth-test responder (port 5201 by default). \
            The streams upload for the given time; the result is the bytes the peer acknowledged, the \
            retransmissions, and the smoothed RTT at the end.
            """)
    @ParentCommand var root: Anygatectl
    @Argument(help: "The responder: ADDR[:PORT].") var peer: String
    @Option(name: .long, help: "How long (1-3600).") var seconds = 10
    @Option(name: .long, help: "Parallel TCP streams (1-64).") var streams = 1

    func validate() throws {
        guard (1...3600).contains(seconds) else { throw ValidationError("--seconds must be 1 to 3600") }
        guard (1...64).contains(streams) else { throw ValidationError("--streams must be 1 to 64") }
    }

    func run() {
        var info = call(ControlRequest(verb: .bandwidthTest, destination: peer, count: streams, seconds: seconds), root,
                        as: BandwidthTestInfo.self)
        let deadline = Date().addingTimeInterval(Double(seconds) + 15)
        while info.state == "running" && Date() < deadline {
            usleep(250_000)
            info = call(ControlRequest(verb: .bandwidthTestShow), root, as: BandwidthTestInfo.self)
        }
        if root.json { return printJSON(info) }
        guard info.state == "done" else { fail(ValidationError("bandwidth test to \(info.peer): \(info.error ?? info.state)")) }
        let rate = String(format: "%.2f", info.bitsPerSecond / 1e6), secs = String(format: "%.1f", info.seconds)
        let rtt = String(format: "%.2f", info.rttMilliseconds)
        print("\(info.peer)  \(info.streams) stream\(info.streams == 1 ? "" : "s")  \(secs) s  \(rate) Mbit/s  \(info.bytes) bytes  "
              + "\(info.retransmits) retransmits  rtt \(rtt) ms")
    }
}

struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Explain a decision.", subcommands: [Source.self, Route.self])

    struct Route: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "explain route DST [--source S] [--interface IF] [--ports SPORT:DPORT]: where a packet to DST goes, and why.")
        @ParentCommand var root: Anygatectl
        @Argument(help: "The destination.") var destination: String
        @Option(name: .long, help: "The packet's source (the ECMP hash and the flow entry depend on it).") var source: String?
        @Option(name: .long, help: "The interface the packet arrives on (its reverse-path check).") var interface: String?
        @Option(name: .long, help: "Source and destination ports, SPORT:DPORT (hashed with ecmp-hash l4).") var ports: String?

        func validate() throws {
            if let ports, parsedPorts(ports) == nil { throw ValidationError("--ports takes SPORT:DPORT") }
        }

        func parsedPorts(_ text: String) -> (UInt16, UInt16)? {
            let parts = text.split(separator: ":")
            guard parts.count == 2, let a = UInt16(parts[0]), let b = UInt16(parts[1]) else { return nil }
            return (a, b)
        }

        func run() {
            let p = ports.flatMap(parsedPorts)
            let sp = p?.0, dp = p?.1
            let e = call(ControlRequest(verb: .explainRoute, dev: interface, destination: destination, source: source,
                                        sourcePort: sp, destinationPort: dp), root, as: ExplainRouteInfo.self)
            if root.json { return printJSON(e) }
            print("destination: \(e.destination)" + (e.source.map { " from \($0)" } ?? "")
                  + (e.sourcePort.map { " ports \($0)>\(e.destinationPort ?? 0)" } ?? ""))
            if let rp = e.reversePath {
                print("arriving:    on \(interface ?? "?"), reverse-path check \(rp): \(e.reversePathAccepted == true ? "passes" : "fails (dropped)")")
            }
            print("")
            table(["PREFIX", "NEXT-HOP", "INTERFACE", "METRIC", "ORIGIN", "FORWARDS"],
                  e.matches.flatMap { m in
                      zip(m.routes, m.forwarding).map { r, f in
                          [m.prefix, r.nextHop ?? "-", r.interface, "\(r.metric)", r.origin, f ? "yes" : "withdrawn"]
                      }
                  })
            print("")
            if e.nextHops.count > 1 {
                print("ecmp set:    " + e.nextHops.map { "\($0.address ?? "-") dev \($0.interface) weight \($0.weight)" }.joined(separator: ", "))
            }
            if let c = e.chosen {
                print("chosen:      \(c.prefix)\(c.nextHop.map { " via \($0)" } ?? "") dev \(c.interface) (\(c.origin))")
            } else {
                print("chosen:      no route")
            }
            if let f = e.flow {
                print("flow:        \(f.packets) packets, idle \(f.idleSeconds)s, \(f.valid ? "valid" : "stale")")
            } else {
                print("flow:        none (the next packet takes the slow path)")
            }
            if let n = e.neighbor {
                print("neighbour:   \(n.address) \(n.mac ?? "-") \(n.state)")
            } else if let nh = e.nextHop, e.pathMtu == nil {
                print("neighbour:   \(nh) not resolved")
            }
            if let m = e.egressMtu { print("egress mtu:  \(m)" + (e.pathMtu.map { " (tunnel path MTU \($0), \(e.pathMtuSource ?? ""))" } ?? "")) }
            if let s = e.sourceAddress { print("source:      \(s): \(e.sourceReason ?? "")") }
        }
    }

    struct Source: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "explain source DST [--interface IF]: which address a packet to DST would leave from, and why.")
        @ParentCommand var root: Anygatectl
        @Argument(help: "The destination.") var destination: String
        @Option(name: .long, help: "Choose on this interface instead of by route.") var interface: String?

        func run() {
            let e = call(ControlRequest(verb: .explainSource, dev: interface, destination: destination), root, as: ExplainInfo.self)
            if root.json { return printJSON(e) }
            if let r = e.route {
                print("route:      \(r.prefix)\(r.nextHop.map { " via \($0)" } ?? "") dev \(r.interface) (\(r.origin))")
            } else {
                print("interface:  \(e.interface) (given)")
            }
            print("policy:     \(e.policy)\(e.policyOrigin == "none" ? "" : " (\(e.policyOrigin))")")
            print("incumbent:  \(e.incumbent) (the route's own address)")
            print("")
            table(["", "ADDRESS", "INDEX", "PREFERENCE"] + e.scorers.map { $0.uppercased() },
                  e.candidates.map { c in
                      [c.address == e.chosen ? "*" : "", c.address, "\(c.index)", "\(c.preference)"] + c.scores.map { "\($0)" }
                  })
            print("")
            print("chosen:     \(e.chosen): \(e.reason)")
        }
    }
}

struct Flows: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Manage the ipflow fast-path table.", subcommands: [Flush.self])

    struct Flush: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove every flow; the next packets take the slow path.")
        @ParentCommand var root: Anygatectl

        func run() {
            let r = call(ControlRequest(verb: .flowsFlush), root, as: Done.self)
            if root.json { printJSON(r) } else { print(r.message) }
        }
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Re-read the daemon's config file and apply the changes.")
    @ParentCommand var parent: Anygatectl

    func run() {
        let r = call(ControlRequest(verb: .reload), parent, as: Done.self)
        if parent.json { printJSON(r) } else { print(r.message) }
    }
}

do {
    var command = try Anygatectl.parseAsRoot()
    try command.run()
} catch {
    let code = Anygatectl.exitCode(for: error)
    if code == .success {
        print(Anygatectl.fullMessage(for: error))
        exit(0)
    }
    printError(Anygatectl.fullMessage(for: error))
    exit(code == .validationFailure ? 2 : code.rawValue)
}
