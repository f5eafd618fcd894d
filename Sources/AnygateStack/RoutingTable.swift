public import AnygateWire

/// An IPv4 FIB (`Route`s) and an IPv6 one (`Route6`): the same machinery.
public typealias RoutingTable = IPRoutingTable<IPv4Prefix>
public typealias RoutingTable6 = IPRoutingTable<IPv6Prefix>

/// A forwarding information base: every route the stack knows (the
/// control-plane view, several per prefix) and the longest-prefix-match
/// table holding the best route per prefix (the packet-path view).
///
/// Best route per prefix: local/broadcast before anything else, then the
/// lowest metric, then the earliest added. `generation` advances on every
/// change, so holders of a cached lookup can tell it is stale with one compare.
public struct IPRoutingTable<Prefix: RoutePrefix> {
    @usableFromInline typealias Slot = RouteSlot<Prefix.Address>
    @usableFromInline var lpm: LPMTable<Prefix.Address>
    @usableFromInline var slots: UnsafeMutablePointer<Slot>
    private var slotCapacity: Int
    private var slotCount = 0
    private var freeSlots: [UInt32] = []
    /// A shared table's writer: its readers, and the slots freed by changes
    /// they may still see, with the generation that unlinked them, oldest
    /// first (`SharedFIB`).
    private var shared: SharedFIB?
    private var retiring: [(slot: UInt32, generation: UInt64)] = []
    private var retiringHead = 0
    /// Slots freed during the change under way, retired when it ends.
    private var freedInChange: [UInt32] = []
    /// First slot of each prefix's chain of routes.
    private var byPrefix: [Prefix: UInt32] = [:]
    private var nextSequence: UInt64 = 0
    /// Interfaces that are down: their routes stay listed but are withdrawn
    /// from forwarding until the interface comes back.
    private var downInterfaces: Set<UInt16> = []
    /// Prefixes with two or more gateway routes: the only ones a failed
    /// next hop can change (so a failure never walks the whole table).
    private var multipathPrefixes: Set<Prefix> = []
    /// Advances on every change to the table.
    public private(set) var generation: UInt64 = 1

    /// A table of its own.
    init() {
        lpm = LPMTable<Prefix.Address>()
        slotCapacity = 64
        slots = .allocate(capacity: slotCapacity)
        shared = nil
    }

    func deallocate() {
        lpm.deallocate()
        if shared == nil { slots.deallocate() }
    }

    /// Whether this table is shared with readers on other threads.
    public var isShared: Bool { shared != nil }

    /// Number of routes, internal ones included.
    public var count: Int { slotCount - freeSlots.count }
    /// Number of distinct prefixes.
    public var prefixCount: Int { byPrefix.count }
    /// Bytes held by the lookup structure, the route slots and the prefix
    /// index (its buckets: key, value and a bit of occupancy each).
    public var memoryBytes: Int {
        lpm.memoryBytes + (shared == nil ? slotCapacity : slotCount) * MemoryLayout<Slot>.stride
            + (freeSlots.capacity + retiring.capacity * 4) * 4
            + byPrefix.capacity * 4 / 3 * (MemoryLayout<Prefix>.stride + MemoryLayout<UInt32>.stride) + byPrefix.capacity / 6
    }

    /// The slot index of the best route for `address`, or nil.
    @inlinable @inline(__always)
    func lookupSlot(_ address: Prefix.Address) -> Int? {
        let v = lpm.lookup(address)
        return v == 0 ? nil : Int(v &- 1)
    }

    /// Position of the best route for `address` in the table's slot array,
    /// without building a `Route` value (the packet path's lookup).
    @inlinable
    public func bestRouteIndex(_ address: Prefix.Address) -> Int? { lookupSlot(address) }

    /// The best route for `address`.
    public func lookup(_ address: Prefix.Address) -> IPRoute<Prefix>? {
        lookupSlot(address).map { route(at: $0) }
    }

    public func route(at slot: Int) -> IPRoute<Prefix> { FIBView(self).route(slots + slot) }

    /// Every route, best first within a prefix, prefixes in address order.
    public var routes: [IPRoute<Prefix>] {
        byPrefix.keys.sorted { ($0.address, $0.length) < ($1.address, $1.length) }
            .flatMap { p in ranked(members(p)).map { route(at: Int($0)) } }
    }

    /// The routes for exactly this prefix, best first.
    public func routes(for prefix: Prefix) -> [IPRoute<Prefix>] {
        ranked(members(prefix)).map { route(at: Int($0)) }
    }

    private func rank(_ s: Slot) -> (Int, UInt32, UInt64) {
        let kindRank = (s.kind == .local || s.kind == .broadcast) ? 0 : 1
        return (kindRank, s.metric, s.sequence)
    }

    private func ranked(_ list: [UInt32]) -> [UInt32] {
        list.sorted { rank(slots[Int($0)]) < rank(slots[Int($1)]) }
    }

    /// The routes of a prefix that may forward: ranked, without those
    /// through a down interface (local and broadcast ones always stay).
    private func usable(_ list: [UInt32]) -> [UInt32] {
        ranked(list).filter {
            let s = slots[Int($0)]
            return s.kind == .local || s.kind == .broadcast || !downInterfaces.contains(s.interface)
        }
    }

    /// Marks an interface up or down; routes through a down interface are
    /// withdrawn from the lookup (a less specific route takes over) and
    /// return when it comes up.
    mutating func setInterface(_ i: InterfaceIndex, up: Bool) {
        let k = UInt16(i)
        let changed = up ? downInterfaces.remove(k) != nil : downInterfaces.insert(k).inserted
        guard changed else { return }
        for (prefix, first) in byPrefix where chain(from: first, contains: { $0.interface == k }) {
            reinstall(prefix)
        }
        endChange()
    }

    /// Whether a route is withdrawn because its interface is down.
    public func isWithdrawn(_ r: IPRoute<Prefix>) -> Bool {
        !r.isInternal && downInterfaces.contains(UInt16(r.interface))
    }

    private func same(_ s: Slot, _ r: IPRoute<Prefix>) -> Bool {
        s.kind == r.kind && s.interface == UInt16(r.interface) && s.metric == r.metric
            && (r.kind != .gateway || s.gateway == r.nextHop)
    }

    /// Adds a route; an identical one (prefix, kind, next hop, interface, metric) is refused.
    mutating func add(_ r: IPRoute<Prefix>) throws(RouteError) {
        let existing = members(r.prefix)
        if existing.contains(where: { same(slots[Int($0)], r) }) {
            throw r.prefix.alreadyExists
        }
        guard let slot = allocateSlot(), lpm.hasRoom(for: 2) else { throw .tableFull(capacity: slotCapacity) }
        slots[slot] = Slot(gateway: r.nextHop ?? .zero, interface: UInt16(r.interface), kind: r.kind,
                                inUse: true, origin: r.origin, prefixLength: r.prefix.length,
                                prefixAddress: r.prefix.address, metric: r.metric, sequence: nextSequence,
                                weight: r.weight)
        nextSequence += 1
        setMembers(r.prefix, existing + [UInt32(slot)])
        noteMultipath(r.prefix)
        reinstall(r.prefix)
        endChange()
    }

    /// Removes the routes for `prefix` that match: all of them when both
    /// filters are nil. Returns how many went.
    @discardableResult
    mutating func remove(_ prefix: Prefix, nextHop: Prefix.Address? = nil, interface: InterfaceIndex? = nil,
                         kind: RouteKind? = nil, origin: RouteOrigin? = nil) -> Int {
        let list = members(prefix)
        guard !list.isEmpty else { return 0 }
        var keep: [UInt32] = []
        var removed = 0
        for idx in list {
            let s = slots[Int(idx)]
            let matches = (nextHop == nil || (s.kind == .gateway && s.gateway == nextHop!))
                && (interface == nil || Int(s.interface) == interface!)
                && (kind == nil || s.kind == kind!)
                && (origin == nil || s.origin == origin!)
            if matches {
                slots[Int(idx)].inUse = false
                if shared == nil { freeSlots.append(idx) } else { freedInChange.append(idx) }
                removed += 1
            } else {
                keep.append(idx)
            }
        }
        guard removed > 0 else { return 0 }
        setMembers(prefix, keep)
        noteMultipath(prefix)
        reinstall(prefix)
        endChange()
        return removed
    }

    /// Removes every route through `interface` (when it goes away).
    mutating func removeAll(through interface: InterfaceIndex) {
        let k = UInt16(interface)
        let affected = byPrefix.filter { chain(from: $0.value, contains: { $0.interface == k }) }.keys
        for p in affected { remove(p, interface: interface) }
    }

    mutating func bumpGeneration() {
        generation &+= 1
        endChange()
    }

    /// Ends a change: a shared table publishes the generation after every
    /// word of the change and retires the slots the change freed, tagged
    /// with that generation.
    private mutating func endChange() {
        // Every change that wrote a word advanced the generation (reinstall).
        guard let shared else { return }
        shared.publish(generation)
        for s in freedInChange { retiring.append((s, generation)) }
        freedInChange.removeAll(keepingCapacity: true)
    }

    /// Slots retired before every reader's announcement become free.
    private mutating func reclaim() {
        guard let shared, retiringHead < retiring.count else { return }
        let held = shared.oldestHeld()
        while retiringHead < retiring.count, retiring[retiringHead].generation <= held {
            freeSlots.append(retiring[retiringHead].slot)
            retiringHead += 1
        }
        if retiringHead == retiring.count {
            retiring.removeAll(keepingCapacity: true)
            retiringHead = 0
        }
    }

    /// Slots retired and not yet reusable (a reader has not passed a
    /// quiescent point since they were freed).
    public var retiredSlots: Int { retiring.count - retiringHead }

    /// Re-derives the prefix's LPM slots from its best route, or from the
    /// covering prefix when none is left.
    private mutating func reinstall(_ prefix: Prefix) {
        generation &+= 1
        let a = prefix.address, len = Int(prefix.length)
        if let best = linkEqualCostSet(prefix, usable(members(prefix))) {
            lpm.insert(a, length: len, value: best + 1)
            return
        }
        var l = len - 1
        while l >= 0 {
            let cover = Prefix(address: prefix.address, length: l)
            if let best = equalCostMembers(usable(members(cover))).first {
                lpm.replace(a, length: len, with: best + 1, newDepth: l)
                return
            }
            l -= 1
        }
        lpm.replace(a, length: len, with: 0, newDepth: 0)
    }

    // MARK: Equal-cost multipath

    private func sameCost(_ a: Slot, _ b: Slot) -> Bool {
        a.metric == b.metric && (a.kind == .gateway || a.kind == .connected) && (b.kind == .gateway || b.kind == .connected)
    }

    /// The usable routes that tie with the best one (same metric,
    /// forwarding kinds), leaving out next hops that failed to resolve
    /// unless every member has: the prefix's ECMP set, head first.
    private func equalCostMembers(_ ranked: [UInt32]) -> [UInt32] {
        guard let first = ranked.first else { return [] }
        let head = slots[Int(first)]
        let set = ranked.prefix { sameCost(slots[Int($0)], head) }
        guard !set.isEmpty else { return [first] }
        let live = set.filter { !slots[Int($0)].nextHopFailed }
        return live.isEmpty ? Array(set) : live
    }

    /// Chains the prefix's ECMP set through `memberNext`; returns the slot
    /// the lookup should find (the set's head).
    ///
    /// A shared table never relinks a slot a reader may be walking: when
    /// the set changes, its members are copied to fresh slots, linked there,
    /// and the old ones retired, so a reader walks the old set or the new
    /// one (the lookup word switches between their heads).
    private mutating func linkEqualCostSet(_ prefix: Prefix, _ ranked: [UInt32]) -> UInt32? {
        let set = equalCostMembers(ranked)
        guard !set.isEmpty else { return nil }
        let count = UInt16(clamping: set.count)
        func linked(_ list: [UInt32]) -> Bool {
            list.indices.allSatisfy { k in
                slots[Int(list[k])].memberCount == count
                    && slots[Int(list[k])].memberNext == (k + 1 < list.count ? list[k + 1] : Slot.end)
            }
        }
        guard !linked(set) else { return set.first }
        var members = set
        if shared != nil, let fresh = copies(of: set) {
            let chain = self.members(prefix).map { old in set.firstIndex(of: old).map { fresh[$0] } ?? old }
            setMembers(prefix, chain)
            for old in set {
                slots[Int(old)].inUse = false
                freedInChange.append(old)
            }
            members = fresh
        }
        for (k, i) in members.enumerated() {
            slots[Int(i)].memberNext = k + 1 < members.count ? members[k + 1] : Slot.end
            slots[Int(i)].memberCount = count
        }
        return members.first
    }

    /// Fresh slots holding copies of `list`'s routes, or nil when the table
    /// has no room (the set is then relinked in place: a reader racing the
    /// change may see a mix of the two sets, each member a route of the prefix).
    private mutating func copies(of list: [UInt32]) -> [UInt32]? {
        var fresh: [UInt32] = []
        for i in list {
            guard let n = allocateSlot() else {
                for f in fresh { freeSlots.append(f) }
                return nil
            }
            slots[n] = slots[Int(i)]
            fresh.append(UInt32(n))
        }
        return fresh
    }

    private mutating func noteMultipath(_ prefix: Prefix) {
        var gateways = 0
        var i = byPrefix[prefix] ?? Slot.end
        while i != Slot.end {
            if slots[Int(i)].kind == .gateway { gateways += 1 }
            i = slots[Int(i)].next
        }
        if gateways >= 2 { multipathPrefixes.insert(prefix) } else { multipathPrefixes.remove(prefix) }
    }

    /// Marks a next hop as failed (it did not answer ARP) or alive again.
    /// A failed next hop leaves every ECMP set it is in — only its flows
    /// move — unless it is the set's last member. Returns whether any
    /// forwarding decision changed.
    @discardableResult
    mutating func setNextHop(_ gateway: Prefix.Address, interface: InterfaceIndex, failed: Bool) -> Bool {
        var changed = false
        for prefix in multipathPrefixes {
            var hit = false
            var i = byPrefix[prefix] ?? Slot.end
            while i != Slot.end {
                let s = slots + Int(i)
                if s.pointee.kind == .gateway && s.pointee.gateway == gateway && Int(s.pointee.interface) == interface
                    && s.pointee.nextHopFailed != failed {
                    s.pointee.nextHopFailed = failed
                    hit = true
                }
                i = s.pointee.next
            }
            if hit { reinstall(prefix); changed = true }
        }
        if changed { endChange() }
        return changed
    }

    /// The members of the ECMP set forwarding for `prefix` (one route for a
    /// single path; empty when nothing for exactly this prefix forwards).
    public func equalCostSet(for prefix: Prefix) -> [IPRoute<Prefix>] {
        equalCostMembers(usable(members(prefix))).map { route(at: Int($0)) }
    }

    /// Whether a route in the chain starting at `first` matches; walks the
    /// slots in place (interface changes test every prefix of a full table).
    private func chain(from first: UInt32, contains match: (Slot) -> Bool) -> Bool {
        var i = first
        while i != Slot.end {
            if match(slots[Int(i)]) { return true }
            i = slots[Int(i)].next
        }
        return false
    }

    /// The slots of a prefix's routes, in insertion order.
    private func members(_ prefix: Prefix) -> [UInt32] {
        guard var i = byPrefix[prefix] else { return [] }
        var out: [UInt32] = []
        while i != Slot.end {
            out.append(i)
            i = slots[Int(i)].next
        }
        return out
    }

    /// Relinks a prefix's chain (none left: the prefix goes).
    private mutating func setMembers(_ prefix: Prefix, _ list: [UInt32]) {
        guard let first = list.first else {
            byPrefix[prefix] = nil
            return
        }
        for (k, i) in list.enumerated() {
            slots[Int(i)].next = k + 1 < list.count ? list[k + 1] : Slot.end
        }
        byPrefix[prefix] = first
    }

    private mutating func allocateSlot() -> Int? {
        reclaim()
        if let s = freeSlots.popLast() { return Int(s) }
        if slotCount == slotCapacity {
            // A shared table's slots never move under its readers.
            guard shared == nil else { return nil }
            // 1.5×: a million routes should not cost room for two million.
            let cap = slotCapacity + slotCapacity / 2
            let n = UnsafeMutablePointer<Slot>.allocate(capacity: cap)
            n.moveInitialize(from: slots, count: slotCount)
            slots.deallocate()
            slots = n
            slotCapacity = cap
        }
        slotCount += 1
        return slotCount - 1
    }

    /// Checks the LPM against the route list: every listed slot is live, and
    /// a lookup of a prefix's own address lands on that prefix's best route
    /// or on a more specific one.
    public func checkInvariants() {
        lpm.checkInvariants()
        for prefix in byPrefix.keys {
            let list = members(prefix)
            precondition(!list.isEmpty, "FIB: empty prefix list")
            for idx in list { precondition(slots[Int(idx)].inUse, "FIB: freed slot still listed") }
            guard let best = usable(list).first else { continue }
            guard let found = lookupSlot(prefix.address) else { preconditionFailure("FIB: \(prefix) not found") }
            let s = slots[found]
            precondition(s.prefixLength > prefix.length || (s.prefixLength == prefix.length && found == Int(best)),
                         "FIB: \(prefix) resolves to a less specific or worse route")
        }
    }
}

extension IPRoutingTable {
    /// Removes the routes of one origin for a prefix (with this metric, if
    /// given), as a route importer withdraws what it installed. Returns how many went.
    mutating func removeRoutes(_ prefix: Prefix, origin: RouteOrigin, metric: UInt32?) -> Int {
        var n = 0
        for r in routes(for: prefix) where r.origin == origin && (metric == nil || r.metric == metric!) && !r.isInternal {
            n += remove(prefix, nextHop: r.nextHop, interface: r.interface, kind: r.kind, origin: origin)
        }
        return n
    }
}

extension IPRoutingTable where Prefix == IPv4Prefix {
    /// The writer's table of `fib`: made at its full size, which never moves.
    init(writing fib: SharedFIB) {
        self.init()
        lpm.deallocate()
        slots.deallocate()
        lpm = LPMTable<IPv4Address>(initialNodes: fib.maxNodes, fixedNodes: true)
        precondition(fib.slots == nil, "a shared FIB has one writer")
        slotCapacity = fib.maxRoutes
        slots = .allocate(capacity: slotCapacity)
        shared = fib
        fib.level0 = lpm.level0
        fib.nodes = lpm.nodes
        fib.slots = slots
        fib.publish(generation)
    }

}

/// The FIB's packet-path pointers, refreshed by the stack after every table
/// change. Reading them through one raw pointer keeps the per-packet lookup
/// free of struct copies, reference counting and exclusivity checks.
///
/// `generation` is what cached routes are checked against: the table's
/// generation plus the stack's own count of changes that are not the
/// table's (interface state, MTU), so that either flushes the caches.
@usableFromInline
struct FIBView<Prefix: RoutePrefix> {
    @usableFromInline typealias Slot = RouteSlot<Prefix.Address>
    @usableFromInline var level0: UnsafeMutablePointer<LPMWord>
    @usableFromInline var nodes: UnsafeMutablePointer<LPMWord>
    @usableFromInline var slots: UnsafeMutablePointer<Slot>
    @usableFromInline var generation: UInt64

    init(_ table: IPRoutingTable<Prefix>, local: UInt64 = 0) {
        level0 = table.lpm.level0
        nodes = table.lpm.nodes
        slots = table.slots
        generation = table.generation &+ local
    }

    /// The route in `slot` as the operator sees it (field by field: the
    /// writer of a shared table may be relinking the slot's prefix chain).
    func route(_ slot: UnsafeMutablePointer<Slot>) -> IPRoute<Prefix> {
        let kind = slot.pointee.kind
        return IPRoute(prefix: Prefix(address: slot.pointee.prefixAddress, length: Int(slot.pointee.prefixLength)),
                       nextHop: kind == .gateway ? slot.pointee.gateway : nil,
                     interface: Int(slot.pointee.interface), metric: slot.pointee.metric, origin: slot.pointee.origin,
                     kind: kind, weight: slot.pointee.weight)
    }

    /// The best route for `address` (no ECMP member choice).
    func lookupRoute(_ address: Prefix.Address) -> IPRoute<Prefix>? {
        lookup(address).map { route($0) }
    }

    /// The best route's slot for `address`, or nil.
    @inlinable @inline(__always)
    func lookup(_ address: Prefix.Address) -> UnsafeMutablePointer<Slot>? {
        let v = LPMTable<Prefix.Address>.lookup(address, level0: level0, nodes: nodes)
        return v == 0 ? nil : slots + Int(v &- 1)
    }

    /// The member of `head`'s ECMP set that a packet with this hash takes:
    /// rendezvous (highest-random-weight) hashing over the members' next
    /// hops, so a member that leaves moves only its own flows and one that
    /// returns takes back only its own. A member of weight w draws w scores.
    @inline(never)
    func member(of head: UnsafeMutablePointer<Slot>, hash: UInt64) -> UnsafeMutablePointer<Slot> {
        guard head.pointee.memberCount > 1 else { return head }
        var chosen = head, top: UInt64 = 0
        var s = head
        while true {
            let id = (s.pointee.gateway.hash64 << 16 | UInt64(s.pointee.interface)) &* 0x9E37_79B9_7F4A_7C15
            for k in 0..<UInt64(s.pointee.weight) {
                var x = hash ^ id ^ (k &* 0xC2B2_AE3D_27D4_EB4F)
                x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
                x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
                x ^= x >> 31
                if x >= top { top = x; chosen = s }
            }
            guard s.pointee.memberNext != Slot.end else { break }
            s = slots + Int(s.pointee.memberNext)
        }
        return chosen
    }

    /// Whether the route at `slot` or any member of its ECMP set leaves by
    /// `interface` (the strict reverse-path check).
    @inline(__always)
    func anyMember(of slot: UnsafeMutablePointer<Slot>, leavesBy interface: InterfaceIndex) -> Bool {
        var s = slot
        while true {
            if Int(s.pointee.interface) == interface { return true }
            guard s.pointee.memberCount > 1, s.pointee.memberNext != Slot.end else { return false }
            s = slots + Int(s.pointee.memberNext)
        }
    }
}

extension FIBView where Prefix == IPv4Prefix {
    /// A reader's view of a shared table (its arrays never move).
    init(_ shared: SharedFIB, generation: UInt64) {
        level0 = shared.level0!
        nodes = shared.nodes!
        slots = shared.slots!
        self.generation = generation
    }

    /// The lookup on a raw IPv4 address (the packet path's form).
    @inlinable @inline(__always)
    func lookup(_ raw: UInt32) -> UnsafeMutablePointer<Slot>? { lookup(IPv4Address(rawValue: raw)) }
}
