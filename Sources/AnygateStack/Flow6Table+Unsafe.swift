public import AnygateWire

/// ip6flow: IPv6's fast-forward cache (NetBSD's `ip6_flow.c` in spirit).
/// A packet of a flow (source, destination, flow label) the stack
/// forwarded before skips the header chain,
/// the trie and the neighbour lookup: one hash, one compare of both
/// addresses, and the checks that the decision still holds — the FIB
/// generations (a route, address, interface or MTU change flushes every
/// flow at once) and the neighbour entry's generation and state.
///
/// Two-way set-associative and preallocated: a flow lives in one of the
/// two entries its key hashes to, a new flow takes a free one or evicts
/// the one used longer ago (counted), and an entry unused for the idle
/// timeout is stale. Only
/// packets without extension headers are cached, and only towards a
/// neighbour that is REACHABLE (a STALE one takes the slow path, which
/// re-probes it) or into a live tunnel (`tunnel` ≥ 0: valid while the
/// tunnel's generation holds, as in IPv4's ipflow).
@usableFromInline
struct Flow6Table {
    @usableFromInline
    struct Entry {
        @usableFromInline var source: IPv6Address = .any
        @usableFromInline var destination: IPv6Address = .any
        /// The flow label: an ECMP set hashes it, so it is part of the flow.
        @usableFromInline var flowLabel: UInt32 = 0
        @usableFromInline var valid = false
        @usableFromInline var out: Int32 = 0
        @usableFromInline var neighbor: UInt32 = 0
        /// The neighbour's generation, or for a tunnel egress the tunnel's.
        @usableFromInline var neighborGeneration: UInt32 = 0
        /// The tunnel slot the flow goes into, or -1 (a neighbour on a link).
        @usableFromInline var tunnel: Int32 = -1
        @usableFromInline var fibGeneration: UInt64 = 0
        @usableFromInline var fib6Generation: UInt64 = 0
        @usableFromInline var lastUsed: Int64 = 0
        /// What the flow carried through the cache (`show flows`).
        @usableFromInline var packets: UInt64 = 0
        @usableFromInline var bytes: UInt64 = 0

        @inlinable @inline(__always)
        func holds(_ s: IPv6Address, _ d: IPv6Address, _ label: UInt32) -> Bool {
            valid && destination == d && source == s && flowLabel == label
        }
    }

    let capacity: Int
    @usableFromInline let mask: Int
    @usableFromInline let entries: UnsafeMutablePointer<Entry>
    @usableFromInline let seed: FlowSeed

    /// Room for `maxFlows` rounded down to a power of two (at least two); 0: ip6flow off.
    init(maxFlows: Int, seed: FlowSeed) {
        var c = 0
        if maxFlows > 0 { c = 2; while c * 2 <= maxFlows { c *= 2 } }
        capacity = c
        mask = max(c - 1, 0)
        entries = .allocate(capacity: max(c, 2))
        entries.initialize(repeating: Entry(), count: max(c, 2))
        self.seed = seed
    }

    func deallocate() { entries.deallocate() }

    /// The first of the two entries a flow of this key may live in.
    @inlinable @inline(__always)
    func bucket(_ source: IPv6Address, _ destination: IPv6Address, _ flowLabel: UInt32) -> UnsafeMutablePointer<Entry> {
        let h = seed.hash(address: destination, interface: UInt16(truncatingIfNeeded: source.low))
            ^ (source.high ^ source.low ^ UInt64(flowLabel)) &* seed.k2
        return entries + (Int(truncatingIfNeeded: h >> 32) & mask & ~1)
    }

    /// The entry holding this flow, or nil.
    @inlinable @inline(__always)
    func find(_ source: IPv6Address, _ destination: IPv6Address, _ flowLabel: UInt32) -> UnsafeMutablePointer<Entry>? {
        let b = bucket(source, destination, flowLabel)
        if b.pointee.holds(source, destination, flowLabel) { return b }
        if (b + 1).pointee.holds(source, destination, flowLabel) { return b + 1 }
        return nil
    }

    /// Where a new flow of this key goes: its own entry if it has one, a
    /// free one, else the one used longer ago (`evicts`: a live flow goes).
    func place(_ source: IPv6Address, _ destination: IPv6Address, _ flowLabel: UInt32) -> (entry: UnsafeMutablePointer<Entry>, evicts: Bool) {
        if let e = find(source, destination, flowLabel) { return (e, false) }
        let b = bucket(source, destination, flowLabel)
        if !b.pointee.valid { return (b, false) }
        if !(b + 1).pointee.valid { return (b + 1, false) }
        return (b.pointee.lastUsed <= (b + 1).pointee.lastUsed ? b : b + 1, true)
    }

    /// Live flows (valid entries), for `show stats`.
    var count: Int { (0..<capacity).reduce(0) { $0 + (entries[$1].valid ? 1 : 0) } }

    /// The live entries' indices, for `show flows`.
    var liveIndices: [Int] { (0..<capacity).filter { entries[$0].valid } }

    /// Forgets every flow.
    func flush() -> Int {
        var n = 0
        for i in 0..<capacity where entries[i].valid {
            entries[i].valid = false
            n += 1
        }
        return n
    }
}
