public import AnygateWire

/// The forwarding decision for one destination (and flow), step by step:
/// what `anygatectl explain route` prints.
public struct RouteExplanation: Sendable {
    /// Every prefix holding the destination, most specific first, with
    /// its routes (best first) and whether they forward now.
    public var matches: [(prefix: IPv4Prefix, routes: [Route], withdrawn: [Bool])]
    /// The ECMP set that forwards (one route for a single path), and the
    /// member this flow hashes to.
    public var equalCostSet: [Route]
    public var chosen: Route?
    /// The flow key hashed, and the ipflow entry for it, if any.
    public var hashedPorts: (source: UInt16, destination: UInt16)?
    public var flow: Flow?
    /// The next hop and its neighbour entry (nil for tunnels and unresolved ones).
    public var nextHop: IPv4Address?
    public var neighbor: Neighbor?
    /// The egress interface's MTU and, for a tunnel, its outer path MTU and its source.
    public var egressMTU: Int?
    public var tunnelPathMTU: (mtu: Int, source: String)?
    /// The source address the stack would choose for a packet of its own.
    public var source: IPv4Address?
    public var sourceReason: String?
    /// With an arrival interface and a packet source: that interface's
    /// reverse-path check and whether the source passes it.
    public var reversePath: (mode: ReversePathFilter, accepted: Bool)?
}

extension Stack {
    /// Explains where a packet to `destination` goes: the prefixes that
    /// hold it, the ECMP set and the member the flow (`source`, and the ports
    /// when given) hashes to, its ipflow entry, the neighbour, the egress
    /// MTU and the source address the stack would use.
    public func explainRoute(_ destination: IPv4Address, source: IPv4Address? = nil, sourcePort: UInt16? = nil,
                             destinationPort: UInt16? = nil, arrivingOn rx: InterfaceIndex? = nil) -> RouteExplanation {
        var e = RouteExplanation(matches: [], equalCostSet: [], chosen: nil, hashedPorts: nil, flow: nil, nextHop: nil,
                                 neighbor: nil, egressMTU: nil, tunnelPathMTU: nil, source: nil, sourceReason: nil, reversePath: nil)
        if let rx, let source, rx >= 0, rx < interfaceNames.count, ifs[rx].exists {
            let mode = ifs[rx].rpf
            e.reversePath = (mode, mode == .off || reversePathAccepts(source.rawValue, rx: rx))
        }
        for length in stride(from: 32, through: 0, by: -1) {
            let prefix = IPv4Prefix(address: destination, length: length)
            let routes = fib.routes(for: prefix)
            guard !routes.isEmpty else { continue }
            e.matches.append((prefix, routes, routes.map { fib.isWithdrawn($0) }))
        }
        guard let best = fibView.pointee.lookup(destination.rawValue) else { return e }
        let bestRoute = fibView.pointee.route(best)
        e.equalCostSet = fib.equalCostSet(for: bestRoute.prefix)
        if e.equalCostSet.isEmpty { e.equalCostSet = [bestRoute] }
        var ports: UInt32 = 0
        if configuration.ecmpHash == .l4, let sp = sourcePort, let dp = destinationPort {
            ports = UInt32(sp) << 16 | UInt32(dp)
            e.hashedPorts = (sp, dp)
        }
        let key = FlowKey(destination: destination.rawValue, source: (source ?? .any).rawValue, ports: ports, tos: 0)
        let member = best.pointee.memberCount > 1 ? fibView.pointee.member(of: best, hash: ecmpHash(key)) : best
        let chosen = fibView.pointee.route(member)
        e.chosen = chosen
        let fi = flows.find(key)
        if fi != FlowTable.none { e.flow = flow(at: fi) }
        let out = chosen.interface
        e.egressMTU = ifs[out].mtu
        switch chosen.kind {
        case .gateway, .connected:
            let nh = chosen.nextHop ?? destination
            e.nextHop = nh
            if ifs[out].tunnel >= 0 {
                e.tunnelPathMTU = outerPathMTU(Int(ifs[out].tunnel))
            } else {
                e.neighbor = neighborList.first { $0.address == nh && $0.interface == out }
            }
        case .local, .broadcast, .blackhole:
            break
        }
        if let s = explainSource(destination, interface: chosen.kind == .local ? nil : out) {
            e.source = s.chosen
            e.sourceReason = s.reason
        }
        return e
    }
}

/// `explain route` for an IPv6 destination: the same steps as IPv4's,
/// through `fib6`, ip6flow and neighbour discovery.
public struct RouteExplanation6: Sendable {
    public var matches: [(prefix: IPv6Prefix, routes: [Route6], withdrawn: [Bool])]
    public var equalCostSet: [Route6]
    /// The member a packet from `source` with flow label 0 takes.
    public var chosen: Route6?
    public var flow: Flow6?
    public var nextHop: IPv6Address?
    public var neighbor: Neighbor6?
    public var egressMTU: Int?
    public var tunnelPathMTU: (mtu: Int, source: String)?
    public var source: IPv6Address?
    public var sourceReason: String?
}

extension Stack {
    /// The ECMP member key of an IPv6 packet: its addresses and flow label.
    @inline(__always)
    static func ecmpKey6(source: IPv6Address, destination: IPv6Address, flowLabel: UInt32) -> UInt64 {
        destination.high ^ destination.low &* 0x9E37_79B9_7F4A_7C15 ^ source.high &* 31 ^ source.low ^ UInt64(flowLabel) << 40
    }

    public func explainRoute(_ destination: IPv6Address, source: IPv6Address? = nil) -> RouteExplanation6 {
        var e = RouteExplanation6(matches: [], equalCostSet: [], chosen: nil, flow: nil, nextHop: nil, neighbor: nil,
                                  egressMTU: nil, tunnelPathMTU: nil, source: nil, sourceReason: nil)
        for length in stride(from: 128, through: 0, by: -1) {
            let prefix = IPv6Prefix(address: destination, length: length)
            let routes = fib6.routes(for: prefix)
            guard !routes.isEmpty else { continue }
            e.matches.append((prefix, routes, routes.map { fib6.isWithdrawn($0) }))
        }
        guard let best = fib6View.pointee.lookup(destination) else { return e }
        let bestRoute = fib6View.pointee.route(best)
        e.equalCostSet = fib6.equalCostSet(for: bestRoute.prefix)
        if e.equalCostSet.isEmpty { e.equalCostSet = [bestRoute] }
        let from = source ?? .any
        let member = best.pointee.memberCount > 1
            ? fib6View.pointee.member(of: best, hash: Stack.ecmpKey6(source: from, destination: destination, flowLabel: 0)) : best
        let chosen = fib6View.pointee.route(member)
        e.chosen = chosen
        e.flow = flow6List.first { $0.destination == destination && (source == nil || $0.source == source) }
        let out = chosen.interface
        e.egressMTU = ifs[out].mtu
        switch chosen.kind {
        case .gateway, .connected:
            let nh = chosen.nextHop ?? destination
            e.nextHop = nh
            if ifs[out].tunnel >= 0 {
                e.tunnelPathMTU = outerPathMTU(Int(ifs[out].tunnel))
            } else {
                e.neighbor = neighborList6.first { $0.address == nh && $0.interface == out }
            }
        case .local, .broadcast, .blackhole:
            break
        }
        if let s = explainSource(destination, interface: chosen.kind == .local ? nil : out) {
            e.source = s.chosen
            e.sourceReason = s.reason
        }
        return e
    }
}
