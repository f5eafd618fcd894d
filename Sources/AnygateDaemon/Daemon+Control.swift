import AnygateControl
import AnygateHost
import AnygateStack
import AnygateWire
import Foundation

extension Daemon {
    /// Opens the control socket (mode 0600).
    func openControl() throws(DaemonError) {
        do {
            control = try StreamServer.unix(path: config.controlSocket, mode: 0o600, loop: loop,
                                            isComplete: { $0.contains(0x0A) },
                                            respond: { [weak self] in self?.handleControl($0) ?? [] })
            control?.log = { [weak self] in self?.logger.warning("\($0)") }
        } catch {
            throw DaemonError("control socket \(config.controlSocket): \(error)")
        }
    }

    /// Decodes one request line and encodes one response line. Nothing a
    /// client sends can stop the daemon: bad requests get an error answer.
    /// `local`: it came over the control socket (not a stack listener).
    func handleControl(_ input: [UInt8], local: Bool = true) -> [UInt8] {
        let line = input.prefix { $0 != 0x0A }
        let request: ControlRequest
        do {
            request = try ControlCoding.decoder.decode(ControlRequest.self, from: Data(line))
        } catch {
            return encode(ControlResponse<Done>(ok: false, error: "malformed request: \(describe(error))"))
        }
        logger.debug("control request", metadata: ["verb": "\(request.verb.rawValue)"])
        // What the ports and the kernel lost, up to this moment.
        runtime.syncPortLosses()
        switch request.verb {
        case .show:
            switch request.what ?? "" {
            case "interfaces": return encode(ControlResponse(ok: true, result: interfaceInfos()))
            case "addresses": return encode(ControlResponse(ok: true, result: addressInfos()))
            case "routes": return encode(ControlResponse(ok: true, result: routeInfos()))
            case "neighbors": return encode(ControlResponse(ok: true, result: neighborInfos()))
            case "flows": return encode(ControlResponse(ok: true, result: flowInfos()))
            case "tunnels": return encode(ControlResponse(ok: true, result: tunnelInfos()))
            case "mirror": return encode(ControlResponse(ok: true, result: mirrorInfo()))
            case "stats": return encode(ControlResponse(ok: true, result: statsInfo()))
            case "sas": return encode(ControlResponse(ok: true, result: saInfos()))
            case let other:
                return fail("cannot show \"\(other)\": choose one of \(ControlRequest.showTopics.joined(separator: ", "))")
            }
        case .routeAdd, .routeDel:
            return routeChange(request)
        case .addressPreference:
            return addressPreference(request)
        case .explainSource:
            return explainSource(request)
        case .explainRoute:
            return explainRoute(request)
        case .traceStart, .traceShow, .traceStop:
            return trace(request)
        case .bandwidthTest, .bandwidthTestShow:
            return bandwidthTest(request)
        case .captureStart, .captureRead, .captureStop:
            return capture(request, local: local)
        case .flowsFlush:
            let n = workers.map { $0.gather { $0.stack.flushFlows() }?.reduce(0, +) ?? 0 } ?? stack.flushFlows()
            logger.notice("flows flushed", metadata: ["flows": "\(n)"])
            return encode(ControlResponse(ok: true, result: Done(message: "\(n) flow\(n == 1 ? "" : "s") flushed")))
        case .reload:
            switch reload() {
            case .success(let s): return encode(ControlResponse(ok: true, result: Done(message: s)))
            case .failure(let e): return fail(e.description)
            }
        }
    }

    func routeChange(_ r: ControlRequest) -> [UInt8] {
        guard let text = r.prefix else { return fail("a route needs a prefix") }
        if text.contains(":") { return routeChange6(r, text) }
        let prefix: IPv4Prefix
        do { prefix = try IPv4Prefix(text) } catch { return fail("bad prefix \(error)") }
        var via: IPv4Address? = nil
        if let v = r.via {
            guard let a = IPv4Address(v) else { return fail("bad next hop \"\(v)\": not an IPv4 address") }
            via = a
        }
        var dev: InterfaceIndex? = nil
        if let d = r.dev {
            guard let i = stack.interface(named: d) else { return fail("no interface named \(d)") }
            dev = i
        }
        if r.verb == .routeAdd && via == nil && dev == nil { return fail("a route needs via ADDR or dev IF") }
        let metric = r.metric ?? 0
        return routeChanged(r, prefix, via: via) { () throws(RouteError) in
            try changeRoutes { s throws(RouteError) in
                if r.verb == .routeAdd { try s.addRoute(prefix, via: via, interface: dev, metric: metric) } else { try s.deleteRoute(prefix, via: via) }
            }
        }
    }

    /// Applies a route change (`apply`: to the IPv4 FIB's writer, or to
    /// every replica's IPv6 FIB), logs it and answers.
    func routeChanged(_ r: ControlRequest, _ prefix: some CustomStringConvertible, via: (some CustomStringConvertible)?,
                      _ apply: () throws(RouteError) -> Void) -> [UInt8] {
        do { try apply() } catch { return fail(error.description) }
        let added = r.verb == .routeAdd
        logger.notice(added ? "route added" : "route deleted",
                      metadata: added ? ["prefix": "\(prefix)", "via": "\(via.map { "\($0)" } ?? "-")"] : ["prefix": "\(prefix)"])
        return encode(ControlResponse(ok: true, result: Done(message: "route \(prefix) \(added ? "added" : "deleted")")))
    }

    /// `route add|del` with an IPv6 prefix: the route names its interface
    /// (a link-local next hop always needs one).
    func routeChange6(_ r: ControlRequest, _ text: String) -> [UInt8] {
        let prefix: IPv6Prefix
        do { prefix = try IPv6Prefix(text) } catch { return fail("bad prefix \(error)") }
        var via: IPv6Address? = nil
        if let v = r.via {
            guard let a = IPv6Address(v) else { return fail("bad next hop \"\(v)\": not an IPv6 address") }
            via = a
        }
        var dev: InterfaceIndex = -1
        if r.verb == .routeAdd {
            guard let d = r.dev else { return fail("an IPv6 route needs dev IF") }
            guard let i = stack.interface(named: d) else { return fail("no interface named \(d)") }
            dev = i
        }
        let metric = r.metric ?? 0, add = r.verb == .routeAdd, gateway = via, out = dev
        return routeChanged(r, prefix, via: via) { () throws(RouteError) in
            try change { s throws(RouteError) in
                if add { try s.addRoute(prefix, via: gateway, interface: out, metric: metric) } else { try s.deleteRoute(prefix, via: gateway) }
            }
        }
    }

    /// Sets an address's preference at run time (the appliance's SIOCSIFADDRPREF).
    func addressPreference(_ r: ControlRequest) -> [UInt8] {
        guard let dev = r.dev, let text = r.address, let pref = r.preference else {
            return fail("address preference needs an interface, an address and a number")
        }
        guard let i = stack.interface(named: dev) else { return fail("no interface named \(dev)") }
        let bare = text.split(separator: "/").first.map(String.init) ?? text
        guard let p = Int16(exactly: pref) else { return fail("preference \(pref) is out of range -32768...32767") }
        if let a6 = IPv6Address(bare) {
            do { try change { s throws(InterfaceError) in try s.setPreference(a6, on: i, p) } } catch {
                if case .noSuchAddress6 = error { return fail("address \(a6) is not configured on \(dev)") }
                return fail(error.description)
            }
            logger.notice("address preference", metadata: ["interface": "\(dev)", "address": "\(a6)", "preference": "\(p)"])
            return encode(ControlResponse(ok: true, result: Done(message: "\(a6) on \(dev): preference \(p)")))
        }
        guard let a = IPv4Address(bare) else { return fail("\"\(text)\" is not an IPv4 or IPv6 address") }
        do { try change { s throws(InterfaceError) in try s.setPreference(a, on: i, p) } } catch {
            if case .noSuchAddress = error { return fail("address \(a) is not configured on \(dev)") }
            return fail(error.description)
        }
        logger.notice("address preference", metadata: ["interface": "\(dev)", "address": "\(a)", "preference": "\(p)"])
        return encode(ControlResponse(ok: true, result: Done(message: "\(a) on \(dev): preference \(p)")))
    }

    func explainSource(_ r: ControlRequest) -> [UInt8] {
        if let text = r.destination, let d6 = IPv6Address(text) { return explainSource6(r, d6) }
        guard let text = r.destination, let d = IPv4Address(text) else {
            return fail("explain source needs a destination IPv4 or IPv6 address")
        }
        var i: Int? = nil
        if let dev = r.dev {
            guard let idx = stack.interface(named: dev) else { return fail("no interface named \(dev)") }
            i = idx
        }
        guard let e = stack.explainSource(d, interface: i) else { return fail("no route to \(d)") }
        let route = e.route.map { routeInfo($0) }
        let candidates = e.candidates.enumerated().map { k, c in
            ExplainInfo.Candidate(address: "\(c.address)", preference: Int(c.preference), index: c.index,
                                  scores: k < e.vectors.count ? e.vectors[k] : [])
        }
        return encode(ControlResponse(ok: true, result: ExplainInfo(
            destination: "\(d)", interface: stack.interfaceName(e.interface), route: route,
            policy: e.policy?.description ?? "none", policyOrigin: e.policyOrigin,
            scorers: e.policy?.scorers.map(\.rawValue) ?? [], incumbent: "\(e.incumbent)", candidates: candidates,
            chosen: "\(e.chosen)", reason: e.reason)))
    }

    /// RFC 6724 for an IPv6 destination: the rules as scorers, each
    /// candidate's score per rule.
    func explainSource6(_ r: ControlRequest, _ d: IPv6Address) -> [UInt8] {
        var i: Int? = nil
        if let dev = r.dev {
            guard let idx = stack.interface(named: dev) else { return fail("no interface named \(dev)") }
            i = idx
        }
        guard let e = stack.explainSource(d, interface: i) else { return fail("no route to \(d), or no usable IPv6 address to speak from") }
        let candidates = e.candidates.enumerated().map { k, c in
            ExplainInfo.Candidate(address: "\(c)", preference: 0, index: k, scores: e.scores[k])
        }
        return encode(ControlResponse(ok: true, result: ExplainInfo(
            destination: "\(d)", interface: stack.interfaceName(e.interface), route: e.route.map { routeInfo($0) },
            policy: "rfc6724", policyOrigin: "default", scorers: SourceExplanation6.rules, incumbent: "-", candidates: candidates,
            chosen: "\(e.chosen)", reason: e.reason)))
    }

    func fail(_ message: String) -> [UInt8] { encode(ControlResponse<Done>(ok: false, error: message)) }

    func encode<T: Codable>(_ response: ControlResponse<T>) -> [UInt8] {
        var out = (try? ControlCoding.encoder().encode(response)).map { [UInt8]($0) }
            ?? Array(#"{"ok":false,"error":"internal: cannot encode response"}"#.utf8)
        out.append(0x0A)
        return out
    }

    func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let c): return c.debugDescription
        case DecodingError.keyNotFound(let k, _): return "missing key \(k.stringValue)"
        case DecodingError.typeMismatch(_, let c): return "wrong type at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        case DecodingError.valueNotFound(_, let c): return "missing value at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        default: return "\(error)"
        }
    }

    // MARK: Status

    func interfaceInfos() -> [InterfaceInfo] {
        let view = trafficView()
        return stack.interfaces.map { s in
            let pc = view.portCounters(s.index)
            let c = view.counters(of: s.index)
            return InterfaceInfo(
                name: s.name, index: s.index, mac: "\(s.mac)", mtu: s.mtu, up: s.up,
                attach: attachments[s.index].map { "\($0)" } ?? "none", attached: view.attached(s.index),
                addresses: s.addresses.map { AddressInfo(address: "\($0.address)", preference: Int($0.preference)) }
                    + stack.addresses6(on: s.index).map {
                        AddressInfo(address: "\($0)", preference: Int(stack.preference(of: $0.address, on: s.index)))
                    },
                drops: Dictionary(uniqueKeysWithValues: view.dropCounts(on: s.index).map { ("\($0.key)", $0.value) }),
                counters: InterfaceCountersInfo(
                    rxPackets: c.rxPackets, rxBytes: c.rxBytes, txPackets: c.txPackets,
                    txBytes: c.txBytes, rxDrops: c.rxDrops, txDrops: c.txDrops + pc.txQueueDrops,
                    forwarded: c.forwarded, txErrors: pc.txErrors, rxNoBuffer: pc.rxNoBuffer))
        }
    }

    func addressInfos() -> [AddressInfo] {
        stack.interfaces.flatMap { s in
            let (policy, origin) = stack.effectiveSourcePolicy(for: s.index)
            return s.addresses.map {
                AddressInfo(address: "\($0.address)", preference: Int($0.preference), interface: s.name,
                            policy: policy?.description ?? "none", policyOrigin: origin)
            } + stack.addresses6(on: s.index).map {
                // IPv6 sources follow RFC 6724 with the preference as tie-breaker, not IPSELSRC policies.
                AddressInfo(address: "\($0)", preference: Int(stack.preference(of: $0.address, on: s.index)), interface: s.name,
                            policy: "rfc6724", policyOrigin: "builtin",
                            state: "\(stack.state(of: $0.address, on: s.index))")
            }
        }
    }

    /// The largest trace session: what one request may ask the stack to keep.
    static let maxTraceCount = 1000

    func trace(_ r: ControlRequest) -> [UInt8] {
        switch r.verb {
        case .traceStart:
            let count = r.count ?? 10
            guard (1...Daemon.maxTraceCount).contains(count) else {
                return fail("trace --count must be 1 to \(Daemon.maxTraceCount), not \(count)")
            }
            var rx: InterfaceIndex? = nil
            if let dev = r.dev {
                guard let idx = stack.interface(named: dev) else { return fail("no interface named \(dev)") }
                rx = idx
            }
            // A tcpdump expression, compiled by libpcap for frames and for a tunnel's inner packets.
            let filter: PacketFilter
            let expression = r.filter ?? ""
            if expression.isEmpty {
                filter = .all
            } else {
                do {
                    filter = PacketFilter(frame: try FilterCompiler.compile(expression, linkType: .ethernet),
                                          inner: try FilterCompiler.compile(expression, linkType: .raw), description: expression)
                } catch {
                    return fail("bad filter \"\(expression)\": \(error)")
                }
            }
            let interface = rx
            change { $0.startTrace(count: count, interface: interface, filter: filter) }
            traceSession = (filter.description, r.dev)
            logger.notice("trace started", metadata: ["count": "\(count)", "filter": "\(filter)", "interface": "\(r.dev ?? "any")"])
        case .traceStop:
            change { $0.stopTrace() }
            traceSession = nil
            return encode(ControlResponse(ok: true, result: Done(message: "trace stopped")))
        default:
            break
        }
        guard let session = traceSession else { return fail("no trace is running: start one with anygatectl trace") }
        // Each worker traces what reaches it; with several, the packets are
        // listed worker by worker, each step of the first marked with its worker.
        let sessions: [(traces: [PacketTrace], remaining: Int)] = workers.map {
            $0.gather { ($0.stack.traces, $0.stack.traceRemaining) }?.map { (traces: $0.0, remaining: $0.1) } ?? []
        } ?? [(stack.traces, stack.traceRemaining)]
        let several = workers != nil
        let packets = sessions.enumerated().flatMap { k, session in
            session.traces.map { t in
                TraceInfo.Packet(sequence: t.sequence, time: Double(t.time.nanoseconds) / 1e9, interface: t.interface,
                                 steps: (several ? [TraceInfo.Step(node: "worker", detail: "\(k)")] : [])
                                     + t.steps.map { TraceInfo.Step(node: $0.node, detail: $0.detail) })
            }
        }
        let remaining = several ? (sessions.map(\.remaining).max() ?? 0) : stack.traceRemaining
        return encode(ControlResponse(ok: true, result: TraceInfo(remaining: remaining, filter: session.filter,
                                                                  interface: session.interface, packets: packets)))
    }

    func explainRoute(_ r: ControlRequest) -> [UInt8] {
        if let text = r.destination, let d6 = IPv6Address(text) { return explainRoute6(r, d6) }
        guard let text = r.destination, let d = IPv4Address(text) else {
            return fail("explain route needs a destination IPv4 or IPv6 address")
        }
        var source: IPv4Address? = nil
        if let s = r.source {
            guard let a = IPv4Address(s) else { return fail("\(s) is not an IPv4 address") }
            source = a
        }
        var rx: InterfaceIndex? = nil
        if let dev = r.dev {
            guard let idx = stack.interface(named: dev) else { return fail("no interface named \(dev)") }
            rx = idx
        }
        // With workers, the answer of worker 0's replica (the route is the same in
        // all; the flow and neighbour state are that worker's), with the
        // route lists of the FIB's writer.
        let sport = r.sourcePort, dport = r.destinationPort, src = source, arriving = rx
        let answer: RouteExplanation? = workers.map {
            $0.gather { $0.stack.explainRoute(d, source: src, sourcePort: sport, destinationPort: dport, arrivingOn: arriving) }?.first
        } ?? stack.explainRoute(d, source: source, sourcePort: r.sourcePort, destinationPort: r.destinationPort, arrivingOn: rx)
        guard var e = answer else { return fail("the workers did not answer") }
        if workers != nil {
            // The workers read the FIB the daemon's own stack writes: the
            // prefixes and ECMP set come from the writer's route lists.
            let own = stack.explainRoute(d, source: source, sourcePort: r.sourcePort, destinationPort: r.destinationPort, arrivingOn: rx)
            e.matches = own.matches
            e.equalCostSet = own.equalCostSet
        }
        let flow = e.flow.map { flowInfo($0) }, neighbor = e.neighbor.map(neighborInfo)
        return encode(ControlResponse(ok: true, result: ExplainRouteInfo(
            destination: "\(d)", source: source.map { "\($0)" }, sourcePort: e.hashedPorts.map { Int($0.source) },
            destinationPort: e.hashedPorts.map { Int($0.destination) },
            matches: e.matches.map { m in
                ExplainRouteInfo.Match(prefix: "\(m.prefix)", routes: m.routes.map { routeInfo($0) }, forwarding: m.withdrawn.map { !$0 })
            },
            nextHops: e.equalCostSet.map(nextHopInfo),
            chosen: e.chosen.map { routeInfo($0) }, flow: flow, nextHop: e.nextHop.map { "\($0)" }, neighbor: neighbor,
            egressMtu: e.egressMTU, pathMtu: e.tunnelPathMTU?.mtu, pathMtuSource: e.tunnelPathMTU?.source,
            sourceAddress: e.source.map { "\($0)" }, sourceReason: e.sourceReason,
            reversePath: e.reversePath.map { $0.mode.rawValue }, reversePathAccepted: e.reversePath?.accepted)))
    }

    /// `explain route` for an IPv6 destination (worker 0's replica with workers: the IPv6 FIB is each replica's).
    func explainRoute6(_ r: ControlRequest, _ d: IPv6Address) -> [UInt8] {
        var source: IPv6Address? = nil
        if let s = r.source {
            guard let a = IPv6Address(s) else { return fail("\(s) is not an IPv6 address") }
            source = a
        }
        let src = source
        let answer: RouteExplanation6? = workers.map { $0.gather { $0.stack.explainRoute(d, source: src) }?.first }
            ?? stack.explainRoute(d, source: source)
        guard let e = answer else { return fail("the workers did not answer") }
        return encode(ControlResponse(ok: true, result: ExplainRouteInfo(
            destination: "\(d)", source: source.map { "\($0)" }, sourcePort: nil, destinationPort: nil,
            matches: e.matches.map { m in
                ExplainRouteInfo.Match(prefix: "\(m.prefix)", routes: m.routes.map { routeInfo($0) }, forwarding: m.withdrawn.map { !$0 })
            },
            nextHops: e.equalCostSet.map(nextHopInfo),
            chosen: e.chosen.map { routeInfo($0) }, flow: e.flow.map { flowInfo($0) }, nextHop: e.nextHop.map { "\($0)" },
            neighbor: e.neighbor.map(neighborInfo), egressMtu: e.egressMTU, pathMtu: e.tunnelPathMTU?.mtu,
            pathMtuSource: e.tunnelPathMTU?.source, sourceAddress: e.source.map { "\($0)" }, sourceReason: e.sourceReason,
            reversePath: nil, reversePathAccepted: nil)))
    }

    /// IPv4 routes, then IPv6 ones.
    func routeInfos() -> [RouteInfo] {
        routeInfos(stack.routes) { stack.equalCostSet(for: $0) } + routeInfos(stack.routes6) { stack.equalCostSet(for: $0) }
    }

    func routeInfos<P: RoutePrefix>(_ routes: [IPRoute<P>], equalCostSet: (P) -> [IPRoute<P>]) -> [RouteInfo] {
        var sets: [P: [IPRoute<P>]] = [:]
        return routes.map { r in
            let set = sets[r.prefix] ?? equalCostSet(r.prefix)
            sets[r.prefix] = set
            let member = set.contains { $0.nextHop == r.nextHop && $0.interface == r.interface && $0.metric == r.metric }
            return routeInfo(r, nextHops: member ? set.map(nextHopInfo) : [])
        }
    }

    func routeInfo<P: RoutePrefix>(_ r: IPRoute<P>, nextHops: [RouteInfo.NextHop] = []) -> RouteInfo {
        RouteInfo(prefix: "\(r.prefix)", nextHop: r.nextHop.map { "\($0)" }, interface: stack.interfaceName(r.interface),
                  metric: r.metric, origin: "\(r.origin)", weight: Int(r.weight), nextHops: nextHops)
    }

    func nextHopInfo<P: RoutePrefix>(_ r: IPRoute<P>) -> RouteInfo.NextHop {
        RouteInfo.NextHop(address: r.nextHop.map { "\($0)" }, interface: stack.interfaceName(r.interface), weight: Int(r.weight))
    }

    /// ARP's entries (summed over workers), then neighbour discovery's.
    func neighborInfos() -> [NeighborInfo] {
        let view = trafficView()
        return view.neighbors.map(neighborInfo) + view.neighbors6.map(neighborInfo)
    }

    func neighborInfo<A>(_ n: IPNeighbor<A>) -> NeighborInfo {
        NeighborInfo(address: "\(n.address)", mac: n.mac.map { "\($0)" }, interface: stack.interfaceName(n.interface),
                     state: "\(n.state)", ageSeconds: (n.age.seconds * 10).rounded() / 10)
    }

    func mirrorInfo() -> MirrorInfo {
        guard let m = mirror else {
            return MirrorInfo(enabled: false, interfaces: [], importedRoutes: [:], skippedRoutes: 0, eventsProcessed: 0, resyncs: 0,
                              lastResync: nil, lastResyncReason: nil)
        }
        let interfaces = config.interfaces.compactMap { i -> MirrorInfo.Interface? in
            guard case .mirror(let host) = i.attach, let idx = interfaceIndex[i.name] else { return nil }
            return MirrorInfo.Interface(name: i.name, host: host, present: m.isPresent(host), up: stack.status(idx).up)
        }
        return MirrorInfo(enabled: true, interfaces: interfaces, importedRoutes: m.importedCounts, skippedRoutes: m.skippedRoutes,
                          eventsProcessed: m.eventsApplied, resyncs: m.resyncs,
                          lastResync: m.lastResync.map { ISO8601DateFormatter().string(from: $0.date) }, lastResyncReason: m.lastResync?.reason,
                          fibPrefixes: stack.fib.prefixCount, fibBytes: stack.fib.memoryBytes)
    }

    func tunnelInfos() -> [TunnelInfo] {
        trafficView().tunnels.map { t in
            var counters: [String: UInt64] = [:]
            for child in Mirror(reflecting: t.counters).children {
                if let name = child.label, let v = child.value as? UInt64 { counters[name] = v }
            }
            let c = t.configuration
            return TunnelInfo(name: c.name, state: t.up ? "up" : "down", reason: t.reason, local: "\(c.local)", remote: "\(c.remote)",
                              key: c.key, encapsulation: c.encapsulation.rawValue, backend: c.backend.rawValue, mtu: t.mtu,
                              pathMtu: t.pathMTU, pathMtuSource: t.pathMTUSource, rpf: c.rpf.rawValue, sequence: c.sequence,
                              keepalive: c.keepalive.map { "every \($0.interval), down after \($0.retries)" }, counters: counters)
        }
    }

    func flowInfos() -> [FlowInfo] {
        let several = workers != nil
        let view = trafficView()
        return view.flows.map { flowInfo($0.flow, worker: several ? $0.worker : nil) }
            + view.flows6.map { flowInfo($0.flow, worker: several ? $0.worker : nil) }
    }

    func flowInfo(_ f: Flow6, worker: Int? = nil) -> FlowInfo {
        var info = FlowInfo(source: "\(f.source)", destination: "\(f.destination)", tos: 0,
                            interface: stack.interfaceName(f.interface), nextHop: "\(f.nextHop)", packets: f.packets,
                            bytes: f.bytes, idleSeconds: (f.idle.seconds * 10).rounded() / 10, valid: f.valid, worker: worker)
        info.flowLabel = Int(f.flowLabel)
        return info
    }

    func flowInfo(_ f: Flow, worker: Int? = nil) -> FlowInfo {
        FlowInfo(source: "\(f.source)", destination: "\(f.destination)", tos: Int(f.tos),
                 sourcePort: f.sourcePort.map(Int.init), destinationPort: f.destinationPort.map(Int.init),
                 interface: stack.interfaceName(f.interface), nextHop: "\(f.nextHop)", packets: f.packets,
                 bytes: f.bytes, idleSeconds: (f.idle.seconds * 10).rounded() / 10, valid: f.valid, worker: worker)
    }

    func statsInfo() -> StatsInfo {
        let view = trafficView()
        let perWorker: [WorkerStats]? = workers == nil ? nil : view.replicas.enumerated().map { k, r in
            WorkerStats(index: k, rxPackets: r.interfaces.reduce(0) { $0 &+ $1.counters.rxPackets },
                        txPackets: r.interfaces.reduce(0) { $0 &+ $1.counters.txPackets },
                        flows: r.flows.count, drops: r.drops.values.reduce(0, &+))
        }
        var counters = view.counters
        if let workers {
            // What the net channels between the threads refused (full): 0 unless overloaded.
            counters["workerReportsLost"] = UInt64(workers.notesLost)
            counters["workerJobsRefused"] = UInt64(workers.jobsRefused)
        }
        return StatsInfo(counters: counters,
                         drops: Dictionary(uniqueKeysWithValues: view.dropCounts.map { ("\($0.key)", $0.value) }),
                         poolBuffersInUse: view.poolInUse, poolBuffers: view.poolBuffers,
                         uptimeSeconds: (Date().timeIntervalSince(started) * 10).rounded() / 10,
                         ledger: LedgerInfo(balanced: view.ledgerBalanced, terms: view.ledgerTerms, violations: view.ledgerViolations),
                         workers: perWorker)
    }
}
