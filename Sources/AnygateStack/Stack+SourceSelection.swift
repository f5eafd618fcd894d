public import AnygateWire

/// What `explain source` prints: the route, the policy and every candidate's scores.
public struct SourceExplanation: Sendable {
    public var destination: IPv4Address
    public var interface: InterfaceIndex
    /// The route that chose the interface (nil when the interface was given).
    public var route: Route?
    /// The policy in force, and where it comes from ("interface", "default" or "none").
    public var policy: SourcePolicy?
    public var policyOrigin: String
    /// The address the route itself would use.
    public var incumbent: IPv4Address
    public var candidates: [SourceCandidate]
    /// Score vectors, in candidate order (empty without a policy).
    public var vectors: [[Int]]
    public var chosen: IPv4Address
    public var reason: String
}

extension Stack {
    /// The stack-wide policy; nil or empty means none.
    public var defaultSourcePolicy: SourcePolicy? { sourcePolicies.default }

    /// Sets the stack-wide policy (nil or empty: none). Cached decisions
    /// are invalidated, as by a route change.
    public func setDefaultSourcePolicy(_ policy: SourcePolicy?) {
        sourcePolicies.default = policy.flatMap { $0.isEmpty ? nil : $0 }
        fibChanged()
    }

    /// Sets an interface's own policy (nil or empty: use the default).
    public func setSourcePolicy(_ policy: SourcePolicy?, for i: InterfaceIndex) throws(InterfaceError) {
        try check(i)
        sourcePolicies.perInterface[i] = policy.flatMap { $0.isEmpty ? nil : $0 }
        fibChanged()
    }

    /// The interface's own policy, if it has one.
    public func sourcePolicy(for i: InterfaceIndex) -> SourcePolicy? { sourcePolicies.perInterface[i] ?? nil }

    /// The policy that applies on an interface: its own, else the default, else none.
    public func effectiveSourcePolicy(for i: InterfaceIndex) -> (policy: SourcePolicy?, origin: String) {
        if let p = sourcePolicies.perInterface[i] ?? nil { return (p, "interface") }
        if let p = sourcePolicies.default { return (p, "default") }
        return (nil, "none")
    }

    /// The address the route itself would leave from (NetBSD's rt_ifa): the
    /// interface address whose subnet holds the on-link next hop (the
    /// destination, or the gateway), else the interface's first address.
    func routeAddress(interface i: InterfaceIndex, nextHop: IPv4Address) -> IPv4Address {
        interfaceAddresses[i].first { $0.address.subnet.contains(nextHop) }?.address.address
            ?? IPv4Address(rawValue: ifs[i].primaryAddress)
    }

    func candidates(_ i: InterfaceIndex) -> [SourceCandidate] {
        interfaceAddresses[i].enumerated().map { k, a in
            SourceCandidate(address: a.address.address, preference: a.preference, index: k + 1)
        }
    }

    /// The source for a packet the stack originates towards `destination`
    /// out of `interface`, starting from the route's own address.
    func selectSource(destination: IPv4Address, interface i: InterfaceIndex, incumbent: IPv4Address) -> IPv4Address {
        guard let policy = effectiveSourcePolicy(for: i).policy, !incumbent.isUnspecified else { return incumbent }
        return SourceSelection.select(incumbent: incumbent, destination: destination, candidates: candidates(i),
                                      policy: policy).chosen
    }

    /// The source for a packet to `destination` along `route`.
    func selectSource(destination: IPv4Address, route: Route) -> IPv4Address {
        if route.kind == .local { return destination }
        let nextHop = route.nextHop ?? destination
        return selectSource(destination: destination, interface: route.interface,
                            incumbent: routeAddress(interface: route.interface, nextHop: nextHop))
    }

    /// Explains the source choice for `destination`: by its route, or on
    /// `interface` when one is given (the way broadcasts choose).
    public func explainSource(_ destination: IPv4Address, interface: InterfaceIndex? = nil) -> SourceExplanation? {
        var route: Route? = nil
        let i: InterfaceIndex
        let incumbent: IPv4Address
        if let given = interface {
            guard given >= 0, given < interfaceNames.count, ifs[given].exists else { return nil }
            i = given
            incumbent = routeAddress(interface: i, nextHop: destination)
        } else {
            guard let r = fibView.pointee.lookupRoute(destination), r.kind != .blackhole else { return nil }
            route = r
            i = r.interface
            incumbent = r.kind == .local ? destination : routeAddress(interface: i, nextHop: r.nextHop ?? destination)
        }
        let (policy, origin) = effectiveSourcePolicy(for: i)
        let c = candidates(i)
        guard let policy, route?.kind != .local else {
            return SourceExplanation(destination: destination, interface: i, route: route, policy: nil, policyOrigin: origin,
                                     incumbent: incumbent, candidates: c, vectors: [], chosen: incumbent,
                                     reason: route?.kind == .local ? "the destination is this stack's own address"
                                        : "no policy applies: the route's own address is used")
        }
        let trail = SourceSelection.select(incumbent: incumbent, destination: destination, candidates: c, policy: policy)
        return SourceExplanation(destination: destination, interface: i, route: route, policy: policy, policyOrigin: origin,
                                 incumbent: incumbent, candidates: c, vectors: trail.vectors, chosen: trail.chosen,
                                 reason: trail.reason)
    }
}

/// The default and per-interface policies of a stack.
struct SourcePolicies {
    var `default`: SourcePolicy? = nil
    var perInterface: [InterfaceIndex: SourcePolicy?] = [:]
}
