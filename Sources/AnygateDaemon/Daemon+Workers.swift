import AnygateHost
import AnygateStack
import AnygateWire

/// The state of the stack replicas that carry traffic — the workers', or
/// the one stack of a single-worker daemon — summed where `show` and the
/// metrics report one number (DESIGN.md, "Several workers"). Configuration
/// (interfaces' names and addresses, routes, tunnels' settings) comes from
/// the daemon's own stack; what moves comes from here.
struct TrafficView {
    /// What one replica reports, taken on its own thread.
    struct Replica: Sendable {
        var interfaces: [InterfaceStatus]
        var interfaceDrops: [InterfaceIndex: [DropReason: UInt64]]
        var counters: [String: UInt64]
        var drops: [DropReason: UInt64]
        var ledger: PacketLedger
        var neighbors: [Neighbor]
        var neighbors6: [Neighbor6]
        var flows: [Flow]
        var flows6: [Flow6]
        var tunnels: [TunnelStatus]
        var poolInUse: Int, poolBuffers: Int, poolExhausted: UInt64, superFramesFree: Int
        var ports: [InterfaceIndex: PortState]

        struct PortState: Sendable {
            var attached: Bool
            var counters: PortCounters
        }

        init(_ runtime: HostRuntime) {
            runtime.syncPortLosses()
            let s = runtime.stack!
            interfaces = s.interfaces
            interfaceDrops = Dictionary(uniqueKeysWithValues: interfaces.map { ($0.index, s.dropCounts(on: $0.index)) })
            var c: [String: UInt64] = [:]
            for child in Mirror(reflecting: s.counters).children {
                if let name = child.label, let v = child.value as? UInt64 { c[name] = v }
            }
            counters = c
            drops = s.dropCounts
            ledger = s.ledger
            neighbors = s.neighborList
            neighbors6 = s.neighborList6
            flows = s.flowList
            flows6 = s.flow6List
            tunnels = s.tunnelList
            poolInUse = runtime.pool.inUse
            poolBuffers = runtime.pool.capacity + runtime.pool.superFrames
            poolExhausted = runtime.pool.exhaustedCount
            superFramesFree = runtime.pool.superFramesAvailable
            var p: [InterfaceIndex: PortState] = [:]
            for i in interfaces {
                if let port = runtime.port(for: i.index) {
                    p[i.index] = PortState(attached: !runtime.isLost(i.index), counters: port.counters)
                }
            }
            ports = p
        }
    }

    let replicas: [Replica]

    /// Counters of an interface, summed over the replicas.
    func counters(of i: InterfaceIndex) -> InterfaceCounters {
        var total = InterfaceCounters()
        for r in replicas { if let s = r.interfaces.first(where: { $0.index == i }) { total.add(s.counters) } }
        return total
    }

    /// Whether every replica has a live port on the interface.
    func attached(_ i: InterfaceIndex) -> Bool {
        !replicas.isEmpty && replicas.allSatisfy { $0.ports[i]?.attached == true }
    }

    func hasPort(_ i: InterfaceIndex) -> Bool { replicas.contains { $0.ports[i] != nil } }

    func portCounters(_ i: InterfaceIndex) -> PortCounters {
        var t = PortCounters()
        for r in replicas {
            guard let c = r.ports[i]?.counters else { continue }
            t.txErrors &+= c.txErrors; t.rxNoBuffer &+= c.rxNoBuffer; t.txQueueDrops &+= c.txQueueDrops
        }
        return t
    }

    func dropCounts(on i: InterfaceIndex) -> [DropReason: UInt64] {
        replicas.reduce(into: [:]) { t, r in for (k, v) in r.interfaceDrops[i] ?? [:] { t[k, default: 0] &+= v } }
    }

    var dropCounts: [DropReason: UInt64] {
        replicas.reduce(into: [:]) { t, r in for (k, v) in r.drops { t[k, default: 0] &+= v } }
    }

    func drops(_ reason: DropReason) -> UInt64 { replicas.reduce(0) { $0 &+ ($1.drops[reason] ?? 0) } }

    var counters: [String: UInt64] {
        replicas.reduce(into: [:]) { t, r in for (k, v) in r.counters { t[k, default: 0] &+= v } }
    }

    /// Every replica's ledger balances (each is checked on its own: a packet
    /// never crosses replicas inside the stack).
    var ledgerBalanced: Bool { replicas.allSatisfy { $0.ledger.balanced } }

    var ledgerTerms: [String: UInt64] {
        replicas.reduce(into: [:]) { t, r in
            for child in Mirror(reflecting: r.ledger).children {
                if let name = child.label, let v = child.value as? UInt64 { t[name, default: 0] &+= v }
            }
        }
    }

    var ledgerViolations: [String] {
        replicas.count == 1 ? replicas[0].ledger.violations
            : replicas.enumerated().flatMap { k, r in r.ledger.violations.map { "worker \(k): \($0)" } }
    }

    /// Neighbours, one row per address and interface: the replicas share
    /// what ARP and neighbour discovery teach them, so the most recently
    /// confirmed row stands.
    var neighbors: [Neighbor] { merged(\.neighbors) }
    var neighbors6: [Neighbor6] { merged(\.neighbors6) }

    private func merged<A>(_ table: KeyPath<Replica, [IPNeighbor<A>]>) -> [IPNeighbor<A>] {
        var best: [String: IPNeighbor<A>] = [:]
        var order: [String] = []
        for r in replicas {
            for n in r[keyPath: table] {
                let key = "\(n.address)#\(n.interface)"
                if let b = best[key] {
                    if (b.mac == nil && n.mac != nil) || n.age < b.age { best[key] = n }
                } else {
                    best[key] = n
                    order.append(key)
                }
            }
        }
        return order.map { best[$0]! }
    }

    /// Flows with the worker that holds each (flows are per worker).
    var flows: [(worker: Int, flow: Flow)] {
        replicas.enumerated().flatMap { k, r in r.flows.map { (k, $0) } }
    }

    var flows6: [(worker: Int, flow: Flow6)] {
        replicas.enumerated().flatMap { k, r in r.flows6.map { (k, $0) } }
    }

    var flowCount: Int { replicas.reduce(0) { $0 + $1.flows.count + $1.flows6.count } }

    /// Tunnels, counters summed; state and path MTU from the first replica.
    var tunnels: [TunnelStatus] {
        guard var out = replicas.first?.tunnels else { return [] }
        for r in replicas.dropFirst() {
            for (k, t) in out.enumerated() {
                if let o = r.tunnels.first(where: { $0.configuration.name == t.configuration.name }) { out[k].counters.add(o.counters) }
            }
        }
        return out
    }

    var poolInUse: Int { replicas.reduce(0) { $0 + $1.poolInUse } }
    var poolBuffers: Int { replicas.reduce(0) { $0 + $1.poolBuffers } }
    var poolExhausted: UInt64 { replicas.reduce(0) { $0 &+ $1.poolExhausted } }
    var superFramesFree: Int { replicas.reduce(0) { $0 + $1.superFramesFree } }
}

extension Daemon {
    /// The replicas that carry traffic, as they are now.
    func trafficView() -> TrafficView {
        guard let workers else { return TrafficView(replicas: [TrafficView.Replica(runtime)]) }
        return TrafficView(replicas: workers.gather { TrafficView.Replica($0) } ?? [])
    }

    /// Applies a configuration change to the daemon's own stack, which
    /// decides whether it is valid, and then to every worker's replica (in
    /// order with every change before it; the replicas are built alike, so
    /// what took on one takes on all).
    @discardableResult
    /// A route change: only the daemon's own stack takes it, since with
    /// workers it writes the FIB their replicas read (`SharedFIB`); they
    /// see it at their next batch and their cached routes flush then.
    func changeRoutes<T, E: Error>(_ body: (Stack) throws(E) -> T) throws(E) -> T {
        try body(stack)
    }

    func change<T, E: Error>(_ body: @escaping @Sendable (Stack) throws(E) -> T) throws(E) -> T {
        let result = try body(stack)
        if let workers, !workers.perform({ _ = try? body($0.stack) }) {
            logger.error("a worker's inbox was full: a configuration change did not reach every worker")
        }
        return result
    }
}

/// A port on its way to the worker that will own it (opened on the
/// control thread, used only by that worker from then on).
struct PortHandOver: @unchecked Sendable {
    let port: any AnygateHost.Port
}
