public import AnygateWire

/// One packet's way through the stack, step by step, as `anygatectl trace`
/// prints it (VPP's packet trace: a node name and what happened there).
public struct PacketTrace: Hashable, Sendable {
    public struct Step: Hashable, Sendable {
        /// ethernet-input, ip4-input, ip4-flow, ip4-lookup, ip4-neighbor,
        /// gre-decap, gre-encap, ip4-local, ip4-fragment, icmp-error,
        /// interface-output, host-socket-output, error-drop, …
        public var node: String
        public var detail: String
    }
    /// 1 for the first packet of a trace session.
    public var sequence: Int
    public var time: Timestamp
    /// The interface it arrived on.
    public var interface: String
    public var steps: [Step]
}

/// A trace session: which packets, how many more, what was recorded.
final class Tracer {
    let filter: PacketFilter
    let interface: InterfaceIndex?
    var remaining: Int
    var traced = 0
    var records: [PacketTrace] = []

    init(filter: PacketFilter, interface: InterfaceIndex?, count: Int) {
        self.filter = filter
        self.interface = interface
        self.remaining = count
    }
}

extension Stack {
    // MARK: Control

    /// Traces the next `count` packets that arrive (on `interface`, when
    /// given) and match `filter`; replaces a trace in progress. Tracing is
    /// off otherwise: one predictable branch per packet.
    public func startTrace(count: Int, interface: InterfaceIndex? = nil, filter: PacketFilter = .all) {
        tracer = Tracer(filter: filter, interface: interface, count: max(0, count))
        hot.pointee.traceArmed = count > 0
    }

    /// Ends the trace session; its records are gone.
    public func stopTrace() {
        tracer = nil
        hot.pointee.traceArmed = false
    }

    /// Packets still to be traced in this session (0: done, or none).
    public var traceRemaining: Int { tracer?.remaining ?? 0 }

    /// The records so far, oldest first; they stay until the session ends.
    public var traces: [PacketTrace] { tracer?.records ?? [] }

    // MARK: The traced path

    /// A frame arrived while a trace is armed: traced if it matches, else
    /// processed as usual.
    @inline(never)
    func tracedInput(_ packet: PacketHandle, on rx: InterfaceIndex) {
        guard let t = tracer, t.remaining > 0, t.interface == nil || t.interface == rx,
              ifs[rx].exists, t.filter.matches(frame: pool.bytes(packet)) else { return linkInput(packet, on: rx) }
        let bytes = pool.bytes(packet)
        var subject = TraceSubject()
        if bytes.count >= EthernetFrame.headerLength, bytes.be16(EthernetFrame.Field.etherType) == EtherType.ipv4.rawValue {
            subject.outer = TraceSubject.Header(ipv4: bytes.tail(from: EthernetFrame.headerLength))
            subject.findTunnel(in: self, greAt: subject.outer.flatMap { $0.gre })
        }
        let arrival = PacketTrace.Step(node: "ethernet-input",
                                       detail: "\(interfaceName(rx)): \(PacketPrinter.describe(frame: bytes))")
        record(t, rx: rx, arrival: arrival, subject: subject) { linkInput(packet, on: rx) }
    }

    /// A datagram from a host socket (a host-backed tunnel) while a trace is armed.
    @inline(never)
    func tracedHostSocketInput(_ packet: PacketHandle, socket k: Int, from: IPv4Address, port: UInt16) {
        guard let t = tracer, t.remaining > 0, case .tunnel(let tunnel) = socketTable[k].receiver else {
            return deliver(packet, to: k, from: .v4(from), port: port, rx: nil)
        }
        let rx = tunnelStates[tunnel].interface
        guard t.interface == nil || t.interface == rx, t.filter.matches(gre: pool.bytes(packet)) else {
            return deliver(packet, to: k, from: .v4(from), port: port, rx: nil)
        }
        var subject = TraceSubject()
        subject.tunnel = tunnel
        subject.inner = PacketFilter.innerOfGRE(pool.bytes(packet)).flatMap(TraceSubject.Header.init(ipv4:))
        let arrival = PacketTrace.Step(node: "host-socket-input",
                                       detail: "\(interfaceName(rx)): GRE from \(from) by the host's socket, \(packet.length) bytes")
        record(t, rx: rx, arrival: arrival, subject: subject) { deliver(packet, to: k, from: .v4(from), port: port, rx: nil) }
    }

    /// Runs `process` on the traced packet alone and writes down what it did:
    /// what the tables said before the decision, which counters moved, and
    /// the frames it queued.
    func record(_ t: Tracer, rx: InterfaceIndex, arrival: PacketTrace.Step, subject: TraceSubject, process: () -> Void) {
        flush()  // what earlier packets queued goes first: the queues below hold only this packet's frames
        let before = TraceSnapshot(self)
        let outerPlan = subject.outer.map { explain($0, arrivingOn: rx) }
        let innerPlan = subject.tunnel.flatMap { tunnel in
            subject.inner.map { explain($0, arrivingOn: tunnelStates[tunnel].interface) }
        }
        // Into a stack-backed tunnel: the underlay's decision for the outer packet, also as it stands now.
        let decision = innerPlan ?? outerPlan
        var underlay: (tunnel: Int, plan: RouteExplanation)? = nil
        if let out = decision?.chosen?.interface, ifs[out].tunnel >= 0 {
            let tunnel = Int(ifs[out].tunnel)
            if let c = tunnelConfigs[tunnel], c.backend == .stack, !c.underlay6 {
                let st = tunnelStates[tunnel]
                underlay = (tunnel, explainRoute(st.remote, source: st.local, arrivingOn: nil))
            }
        }
        process()
        var output: [PacketTrace.Step] = []
        for k in 0..<hot.pointee.dirtyCount {
            let i = dirty[k]
            for j in 0..<ifs[i].txCount {
                output.append(.init(node: "interface-output",
                                    detail: "\(interfaceName(i)): \(PacketPrinter.describe(frame: pool.bytes(txQueues[i &* txCapacity &+ j])))"))
            }
        }
        flush()
        let after = TraceSnapshot(self)
        var steps = [arrival]
        steps += traceSteps(subject: subject, outer: outerPlan, inner: innerPlan, underlay: underlay, before: before, after: after)
        steps += output
        steps += dropSteps(before: before, after: after)
        t.traced += 1
        t.remaining -= 1
        t.records.append(PacketTrace(sequence: t.traced, time: now, interface: interfaceName(rx), steps: steps))
        if t.remaining == 0 { hot.pointee.traceArmed = false }
    }

    func explain(_ h: TraceSubject.Header, arrivingOn rx: InterfaceIndex) -> RouteExplanation {
        explainRoute(h.destination, source: h.source, sourcePort: h.ports?.source, destinationPort: h.ports?.destination,
                     arrivingOn: rx)
    }

    /// The steps between arrival and output, from the counters that moved.
    func traceSteps(subject: TraceSubject, outer: RouteExplanation?, inner: RouteExplanation?,
                    underlay: (tunnel: Int, plan: RouteExplanation)?,
                    before b: TraceSnapshot, after a: TraceSnapshot) -> [PacketTrace.Step] {
        var steps: [PacketTrace.Step] = []
        let c0 = b.counters, c1 = a.counters
        let validated = Int(c1.ipReceived &- c0.ipReceived)
        if let outer, let h = subject.outer {
            // A packet for one of our tunnels ends here; what it carried goes on below.
            let decapsulates = subject.tunnel != nil
            steps += ipSteps(h, plan: outer, validated: validated >= 1, decides: !decapsulates, before: b, after: a)
        }
        if let tunnel = subject.tunnel {
            let s0 = b.tunnels[tunnel], s1 = a.tunnels[tunnel]
            let name = interfaceName(tunnelStates[tunnel].interface)
            let key = tunnelStates[tunnel].key.map { " key \($0)" } ?? ""
            if s1.rxPackets > s0.rxPackets, let h = subject.inner {
                steps.append(.init(node: "gre-decap", detail: "\(name)\(key) from \(tunnelStates[tunnel].remote): "
                                   + "ipv4 \(h.source) > \(h.destination) \(h.protocolName)"))
                if let inner {
                    steps += ipSteps(h, plan: inner, validated: validated >= (subject.outer == nil ? 1 : 2), decides: true,
                                     before: b, after: a)
                }
            } else if s1.keepalivesReceived > s0.keepalivesReceived {
                steps.append(.init(node: "gre-decap", detail: "\(name)\(key): the answer to one of our keepalives"))
            } else if s1.keepalivesAnswered > s0.keepalivesAnswered {
                steps.append(.init(node: "gre-decap", detail: "\(name)\(key): the peer's keepalive, sent back to it"))
            }
        }
        if c1.icmpEchoRepliesSent > c0.icmpEchoRepliesSent {
            steps.append(.init(node: "ip4-local", detail: "echo request for us: answered"))
        } else if c1.consumed &- c0.consumed > (subject.tunnel != nil && subject.outer != nil ? 1 : 0) {
            steps.append(.init(node: "ip4-local", detail: "for us: delivered to the stack"))
        }
        if c1.icmpErrorsSent > c0.icmpErrorsSent {
            steps.append(.init(node: "icmp-error", detail: "sent \(c1.icmpErrorsSent - c0.icmpErrorsSent) ICMP error(s) to the sender"))
        }
        if c1.arpRepliesSent > c0.arpRepliesSent { steps.append(.init(node: "arp-input", detail: "request for our address: answered")) }
        if c1.fragmentsCreated > c0.fragmentsCreated {
            steps.append(.init(node: "ip4-fragment", detail: "split into \(c1.fragmentsCreated - c0.fragmentsCreated) fragments"))
        }
        if c1.datagramsReassembled > c0.datagramsReassembled {
            steps.append(.init(node: "ip4-reassembly", detail: "the last missing fragment: datagram reassembled"))
        } else if c1.fragmentsReceived > c0.fragmentsReceived && a.heldForReassembly > b.heldForReassembly {
            steps.append(.init(node: "ip4-reassembly", detail: "fragment held until the datagram is complete"))
        }
        for t in tunnelConfigs.keys.sorted() where a.tunnels[t].txPackets > b.tunnels[t].txPackets {
            let st = tunnelStates[t]
            let how = tunnelConfigs[t]?.backend == .host ? "the host's socket" : "the stack's socket"
            steps.append(.init(node: "gre-encap", detail: "\(interfaceName(st.interface)): \(st.udp ? "GRE-in-UDP" : "GRE")"
                               + (st.key.map { " key \($0)" } ?? "") + " \(st.local) > \(st.remote) by \(how)"))
            if let underlay, underlay.tunnel == t, let h = TraceSubject.Header(source: st.local, destination: st.remote) {
                steps += ipSteps(h, plan: underlay.plan, validated: true, decides: true, flows: false, before: b, after: a)
                    .filter { $0.node != "ip4-input" }
            }
        }
        if c1.toHostSockets > c0.toHostSockets {
            steps.append(.init(node: "host-socket-output", detail: "\(c1.toHostSockets - c0.toHostSockets) datagram(s) to the host's socket"))
        }
        return steps
    }

    /// Validation, the flow cache, the route and the neighbour for one IPv4 header.
    func ipSteps(_ h: TraceSubject.Header, plan: RouteExplanation, validated: Bool, decides: Bool, flows: Bool = true,
                 before b: TraceSnapshot, after a: TraceSnapshot) -> [PacketTrace.Step] {
        var steps: [PacketTrace.Step] = []
        guard validated else { return steps }
        steps.append(.init(node: "ip4-input", detail: "valid header: \(h.source) > \(h.destination) \(h.protocolName) ttl \(h.ttl)"))
        let c0 = b.counters, c1 = a.counters
        let local = plan.chosen.map { $0.kind == .local || $0.kind == .broadcast } ?? false
        if decides && flows && !local {
            if c1.flowHits > c0.flowHits {
                let f = plan.flow.map { " \(interfaceName($0.interface)) via \($0.nextHop), \($0.packets + 1) packets" } ?? ""
                steps.append(.init(node: "ip4-flow", detail: "hit: forwarded by its flow\(f); the FIB was not consulted"))
                return steps
            }
            if c1.flowsInvalidated > c0.flowsInvalidated {
                steps.append(.init(node: "ip4-flow", detail: "stale flow (a route, neighbour or tunnel changed): slow path"))
            } else if c1.flowMisses > c0.flowMisses {
                steps.append(.init(node: "ip4-flow", detail: "miss: slow path"))
            }
        }
        guard let chosen = plan.chosen else {
            steps.append(.init(node: "ip4-lookup", detail: "no route to \(h.destination)"))
            return steps
        }
        var lookup = "\(chosen.prefix) "
        switch chosen.kind {
        case .local: lookup += "local: \(h.destination) is ours"
        case .broadcast: lookup += "broadcast"
        case .blackhole: lookup += "blackhole"
        case .connected: lookup += "connected, dev \(interfaceName(chosen.interface))"
        case .gateway: lookup += "via \(chosen.nextHop.map { "\($0)" } ?? "?") dev \(interfaceName(chosen.interface))"
        }
        if plan.equalCostSet.count > 1, let k = plan.equalCostSet.firstIndex(of: chosen) {
            lookup += " (ECMP: member \(k + 1) of \(plan.equalCostSet.count) for this flow)"
        }
        steps.append(.init(node: "ip4-lookup", detail: lookup))
        guard decides, !local, chosen.kind != .blackhole else { return steps }
        if ifs[chosen.interface].tunnel < 0, let nh = plan.nextHop {
            var n = "\(nh) on \(interfaceName(chosen.interface)): "
            if let e = plan.neighbor {
                n += "\(e.state)" + (e.mac.map { " \($0)" } ?? "")
            } else {
                n += "not in the table"
            }
            if c1.arpRequestsSent > c0.arpRequestsSent { n += "; ARP request sent" }
            if a.heldForNeighbor > b.heldForNeighbor { n += "; packet held until it answers" }
            steps.append(.init(node: "ip4-neighbor", detail: n))
        }
        if flows && c1.flowsCreated > c0.flowsCreated { steps.append(.init(node: "ip4-flow", detail: "flow installed for the next packets")) }
        return steps
    }

    /// One step per drop reason that moved, with the interface it counted on.
    func dropSteps(before b: TraceSnapshot, after a: TraceSnapshot) -> [PacketTrace.Step] {
        var steps: [PacketTrace.Step] = []
        for r in DropReason.allCases where a.drops[r.counterIndex] > b.drops[r.counterIndex] {
            let n = a.drops[r.counterIndex] - b.drops[r.counterIndex]
            var place = ""
            for i in a.interfaceRows.indices where i < b.interfaceRows.count
                && a.interfaceRows[i][r.counterIndex] > b.interfaceRows[i][r.counterIndex] {
                let side = a.interfaces[i].txDrops > b.interfaces[i].txDrops ? "leaving by" : "arrived on"
                place = " (\(side) \(interfaceName(i)))"
            }
            steps.append(.init(node: "error-drop", detail: "\(r)\(n > 1 ? " ×\(n)" : "")\(place)"))
        }
        return steps
    }
}

/// The facts of a traced packet read before the stack decides: its header,
/// and, when it is GRE for one of our tunnels, the tunnel and the inner header.
struct TraceSubject {
    struct Header {
        var source: IPv4Address
        var destination: IPv4Address
        var proto: UInt8
        var ttl: UInt8
        var ports: (source: UInt16, destination: UInt16)?
        /// The GRE header it carries (protocol 47, or UDP to 4754).
        var gre: UnsafeMutableRawBufferPointer?

        /// The outer header a tunnel writes (for its underlay step).
        init?(source: IPv4Address, destination: IPv4Address) {
            self.source = source
            self.destination = destination
            proto = IPProtocol.gre.rawValue
            ttl = 64
        }

        init?(ipv4 b: UnsafeMutableRawBufferPointer) {
            guard let (f, gre) = PacketFilter.facts(ipv4: b) else { return nil }
            source = IPv4Address(rawValue: f.source)
            destination = IPv4Address(rawValue: f.destination)
            proto = f.proto
            ttl = f.ttl
            ports = f.ports
            self.gre = gre
        }

        var protocolName: String {
            let p = IPProtocol(rawValue: proto)
            let name = p == .icmp ? "icmp" : p == .tcp ? "tcp" : p == .udp ? "udp" : p == .gre ? "gre" : "proto \(proto)"
            return ports.map { "\(name) \($0.source) > \($0.destination)" } ?? name
        }
    }

    var outer: Header?
    var tunnel: Int?
    var inner: Header?

    /// Finds the tunnel this GRE packet is for (our local, its remote).
    mutating func findTunnel(in stack: Stack, greAt gre: UnsafeMutableRawBufferPointer?) {
        guard let outer, let gre else { return }
        for (t, c) in stack.tunnelConfigs where c.local == .v4(outer.destination) && c.remote == .v4(outer.source) {
            guard (c.encapsulation == .greInUDP) == (outer.proto == IPProtocol.udp.rawValue) else { continue }
            tunnel = t
            inner = PacketFilter.innerOfGRE(gre).flatMap(Header.init(ipv4:))
            return
        }
    }
}

/// The counters a traced packet can move, copied before and after it.
struct TraceSnapshot {
    let counters: StackCounters
    let drops: [UInt64]
    let interfaces: [InterfaceCounters]
    let interfaceRows: [[UInt64]]
    let tunnels: [TunnelCounters]
    let heldForNeighbor: UInt64
    let heldForReassembly: Int

    init(_ s: Stack) {
        counters = s.hot.pointee.counters
        drops = DropReason.allCases.map { s.drops($0) }
        let n = s.interfaceNames.count
        interfaces = (0..<n).map { s.ifs[$0].counters }
        interfaceRows = (0..<n).map { i in DropReason.allCases.map { s.drops($0, on: i) } }
        tunnels = (0..<s.configuration.maxInterfaces).map { s.tunnelStates[$0].counters }
        heldForNeighbor = UInt64(s.neighbors.pendingTotal + s.neighbors6.pendingTotal)
        heldForReassembly = s.reassembly.heldFragments
    }
}
