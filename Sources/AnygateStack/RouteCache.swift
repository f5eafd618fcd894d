public import AnygateWire

/// A remembered route lookup, for any holder that sends to the same
/// destination again and again (a tunnel, a socket, a flow).
///
/// It stores the destination, the route it resolved to and the FIB
/// generation of that moment. Every change that can alter a forwarding
/// decision — route add, delete or replace, address add or delete,
/// interface up, down or MTU change — advances the generation
/// (`RoutingTable.generation`), so validating a cache is one 64-bit
/// compare and invalidating all of them at once costs nothing. This is
/// NetBSD's 2018 scheme (one global `rtcache_generation`), chosen over
/// per-family flush lists because the stack has one FIB per family and an
/// IPv4 change must not need to find its holders. A 64-bit counter never
/// wraps back to a stale snapshot.
public struct RouteCache: Sendable {
    public private(set) var destination: IPv4Address = .any
    /// Slot of the cached route in the FIB; -1 when empty or when the lookup found none.
    var slot: Int32 = -1
    var generation: UInt64 = 0

    public init() {}

    /// Counters of a set of caches.
    public struct Statistics: Hashable, Sendable {
        /// Lookups answered from the cache.
        public var hits: UInt64 = 0
        /// FIB lookups made (first use, new destination, or stale).
        public var resolutions: UInt64 = 0
        /// Lookups that found the cache stale (the FIB changed since).
        public var invalidations: UInt64 = 0
        public init() {}
    }

    /// Whether the cache still holds a valid answer for `destination`.
    public func isValid(for destination: IPv4Address, in fib: RoutingTable) -> Bool {
        generation == fib.generation && destination == self.destination && generation != 0
    }

    /// The route for `destination`: the cached one when it is still valid,
    /// otherwise a fresh lookup, which the cache then remembers.
    public mutating func route(to destination: IPv4Address, in fib: RoutingTable, statistics: inout Statistics) -> Route? {
        route(to: destination, in: FIBView(fib), statistics: &statistics)
    }

    /// The same through a stack's view of its FIB (a shared one included).
    mutating func route(to destination: IPv4Address, in fib: FIBView<IPv4Prefix>, statistics: inout Statistics) -> Route? {
        if generation == fib.generation && destination == self.destination && generation != 0 {
            statistics.hits &+= 1
            return slot < 0 ? nil : fib.route(fib.slots + Int(slot))
        }
        if generation != 0 && destination == self.destination { statistics.invalidations &+= 1 }
        statistics.resolutions &+= 1
        self.destination = destination
        generation = fib.generation
        guard let found = fib.lookup(destination.rawValue) else {
            slot = -1
            return nil
        }
        slot = Int32(found - fib.slots)
        return fib.route(found)
    }

    /// Forgets the cached route.
    public mutating func clear() {
        slot = -1
        generation = 0
    }
}
