public import AnygateWire

/// IPv6 routes: the same machinery as IPv4's (`IPRoutingTable`: ECMP sets,
/// weights, withdrawal while an interface is down, the generation that
/// flushes cached routes), in the stack's `fib6`.
///
/// Until interfaces carry IPv6 addresses a route names its interface, and
/// a next hop is taken as on that link (as for a link-local next hop, which
/// always needs its interface). The IPv6 FIB is each stack's own: with
/// several workers it is not yet the shared one.
extension Stack {
    /// Adds an IPv6 route through `interface`, via `gateway` if given.
    public func addRoute(_ prefix: IPv6Prefix, via gateway: IPv6Address? = nil, interface: InterfaceIndex,
                         metric: UInt32 = 0, origin: RouteOrigin = .static, weight: UInt8 = 1) throws(RouteError) {
        guard interface >= 0, interface < interfaceNames.count, ifs[interface].exists else { throw .noSuchInterface(interface) }
        if let g = gateway, g.isMulticast || g.isUnspecified {
            throw .invalid("next hop \(g) is not a unicast address")
        }
        try fib6.add(Route6(prefix: prefix, nextHop: gateway, interface: interface, metric: metric, origin: origin, weight: weight))
        fibChanged()
    }

    /// Deletes the IPv6 routes for `prefix` (only those via `gateway`, if given).
    public func deleteRoute(_ prefix: IPv6Prefix, via gateway: IPv6Address? = nil) throws(RouteError) {
        var removed = 0
        for old in fib6.routes(for: prefix) where !old.isInternal {
            if let g = gateway, old.nextHop != g { continue }
            removed += fib6.remove(prefix, nextHop: old.nextHop, interface: old.interface, kind: old.kind, origin: old.origin)
        }
        guard removed > 0 else { throw prefix.notFound }
        fibChanged()
    }

    /// Removes the IPv6 routes of one origin for a prefix (with this
    /// metric, if given). Returns how many went.
    @discardableResult
    public func removeRoutes(_ prefix: IPv6Prefix, origin: RouteOrigin, metric: UInt32? = nil) -> Int {
        let n = fib6.removeRoutes(prefix, origin: origin, metric: metric)
        if n > 0 { fibChanged() }
        return n
    }

    /// The IPv6 routes an operator manages.
    public var routes6: [Route6] { fib6.routes.filter { !$0.isInternal } }

    public func routes(for prefix: IPv6Prefix) -> [Route6] { fib6.routes(for: prefix).filter { !$0.isInternal } }

    /// The ECMP set that forwards for an IPv6 prefix.
    public func equalCostSet(for prefix: IPv6Prefix) -> [Route6] { fib6.equalCostSet(for: prefix) }

    /// The IPv6 route a packet to `destination` would take (the head of an ECMP set).
    public func lookup(_ destination: IPv6Address) -> Route6? { fib6.lookup(destination) }
}
