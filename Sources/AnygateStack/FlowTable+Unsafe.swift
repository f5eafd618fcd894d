/// The ipflow fast-forward cache (after NetBSD's sys/netinet/ip_flow.c):
/// flows keyed by (destination, source, TOS) — and the TCP/UDP ports when
/// ECMP hashes on them (`FlowKey`) — each remembering the forwarding
/// decision the slow path made for it: where the packet goes (a neighbour
/// entry, with its MAC as a ready-made rewrite, or a tunnel) and the
/// generations of the FIB and of that neighbour entry or tunnel it was made
/// under.
///
/// A preallocated pool of 64-byte entries, linked by 32-bit indices into
/// hash chains and into one list in creation order; when the pool is full
/// the oldest flow is evicted (NetBSD's 2024 choice: FIFO, not LRU, so a hit
/// never has to relink the list). Buckets are chosen by a hash keyed with
/// random secrets drawn at start-up, so a sender cannot craft keys that
/// share a chain. Nothing here allocates after `init`.
@usableFromInline
struct FlowTable {
    @usableFromInline static let none: UInt32 = .max
    /// Marks an egress that is a tunnel slot rather than a neighbour entry.
    @usableFromInline static let tunnelTag: UInt32 = 0x8000_0000

    /// One flow: 64 bytes, one cache line.
    @usableFromInline
    struct Entry {
        @usableFromInline var source: UInt32
        @usableFromInline var destination: UInt32
        /// Source port << 16 | destination port; 0 when the key has no ports.
        @usableFromInline var ports: UInt32
        /// The neighbour entry the flow sends to, or `tunnelTag | tunnel`.
        @usableFromInline var egress: UInt32
        /// That neighbour entry's or tunnel's generation at install.
        @usableFromInline var egressGeneration: UInt32
        /// The low 32 bits of the FIB generation the decision was made under
        /// (the route cache). Stale flows are swept within a second, long
        /// before 2^32 route changes could alias a generation.
        @usableFromInline var fibGeneration: UInt32
        /// Low 48 bits: the destination MAC (neighbour egress) or the next
        /// hop address (tunnel egress); bits 48–55 the key's TOS; bit 56 set
        /// while the entry is in use.
        @usableFromInline var rewrite: UInt64
        @usableFromInline var packets: UInt64
        @usableFromInline var bytes: UInt64
        /// Last use, in ticks of 2^20 ns (about 1.05 ms) on the stack clock,
        /// wrapping after about 52 days; idle times are differences.
        @usableFromInline var lastUsed: UInt32
        @usableFromInline var hashNext: UInt32
        var agePrev: UInt32
        var ageNext: UInt32

        @inlinable var tos: UInt8 { UInt8(truncatingIfNeeded: rewrite >> 48) }
        @inlinable var mac: UInt64 { rewrite & 0xFFFF_FFFF_FFFF }
        @inlinable var inUse: Bool { rewrite & (1 << 56) != 0 }
        @inlinable var isTunnel: Bool { egress & FlowTable.tunnelTag != 0 }
        @inlinable var key: FlowKey { FlowKey(destination: destination, source: source, ports: ports, tos: tos) }
    }

    @usableFromInline
    struct Meta {
        var freeCount: Int
        var ageHead: UInt32
        var ageTail: UInt32
        @usableFromInline var count: Int
    }

    let capacity: Int
    @usableFromInline let bucketMask: Int
    @usableFromInline let bucketShift: UInt64
    @usableFromInline let seed: FlowSeed
    @usableFromInline let entries: UnsafeMutablePointer<Entry>
    @usableFromInline let buckets: UnsafeMutablePointer<UInt32>
    let freeList: UnsafeMutablePointer<UInt32>
    @usableFromInline let meta: UnsafeMutablePointer<Meta>

    init(capacity: Int, seed: FlowSeed = FlowSeed()) {
        precondition(capacity >= 0 && capacity < Int(UInt32.max))
        self.capacity = capacity
        self.seed = seed
        // Two buckets per entry: with a keyed (random-looking) hash, chains
        // stay near one entry long at a full table.
        var b = 1, bits: UInt64 = 0
        while b < max(1, capacity) * 2 { b <<= 1; bits += 1 }
        bucketMask = b - 1
        bucketShift = 64 - max(1, bits)
        entries = .allocate(capacity: max(1, capacity))
        buckets = .allocate(capacity: b)
        buckets.initialize(repeating: FlowTable.none, count: b)
        freeList = .allocate(capacity: max(1, capacity))
        for i in 0..<capacity { freeList[i] = UInt32(capacity - 1 - i) }
        meta = .allocate(capacity: 1)
        meta.initialize(to: Meta(freeCount: capacity, ageHead: FlowTable.none, ageTail: FlowTable.none, count: 0))
    }

    func deallocate() {
        entries.deallocate(); buckets.deallocate(); freeList.deallocate(); meta.deallocate()
    }

    var count: Int { meta.pointee.count }

    /// Flow times are kept in 2^20 ns ticks: a shift, where milliseconds
    /// would cost a division on every packet.
    @usableFromInline static let tickShift: Int64 = 20

    @inlinable @inline(__always)
    static func ticks(_ nanoseconds: Int64) -> UInt32 { UInt32(truncatingIfNeeded: nanoseconds >> tickShift) }

    @inlinable @inline(__always)
    func bucket(_ k: FlowKey) -> Int {
        Int(truncatingIfNeeded: seed.hash(k) >> bucketShift) & bucketMask
    }

    /// The flow for the key, or `none`.
    @inlinable @inline(__always)
    func find(_ k: FlowKey) -> UInt32 {
        var i = buckets[bucket(k)]
        while i != FlowTable.none {
            let e = entries + Int(i)
            if e.pointee.destination == k.destination && e.pointee.source == k.source && e.pointee.ports == k.ports
                && e.pointee.tos == k.tos { return i }
            i = e.pointee.hashNext
        }
        return FlowTable.none
    }

    /// Installs or refreshes the flow for the key. `rewrite` is the MAC (or
    /// next hop) to keep. Returns whether a flow was created, and whether an
    /// existing one was evicted to make room.
    func install(_ k: FlowKey, egress: UInt32, egressGeneration: UInt32, rewrite value: UInt64, fibGeneration: UInt64,
                 now: UInt32) -> (created: Bool, evicted: Bool) {
        let rewrite = (value & 0xFFFF_FFFF_FFFF) | UInt64(k.tos) << 48 | 1 << 56
        let gen = UInt32(truncatingIfNeeded: fibGeneration)
        let existing = find(k)
        if existing != FlowTable.none {
            let e = entries + Int(existing)
            e.pointee.egress = egress
            e.pointee.egressGeneration = egressGeneration
            e.pointee.fibGeneration = gen
            e.pointee.rewrite = rewrite
            e.pointee.lastUsed = now
            return (false, false)
        }
        guard capacity > 0 else { return (false, false) }
        var evicted = false
        if meta.pointee.freeCount == 0 {
            remove(meta.pointee.ageHead)
            evicted = true
        }
        meta.pointee.freeCount -= 1
        let i = freeList[meta.pointee.freeCount]
        let b = bucket(k)
        entries[Int(i)] = Entry(source: k.source, destination: k.destination, ports: k.ports, egress: egress,
                                egressGeneration: egressGeneration, fibGeneration: gen, rewrite: rewrite,
                                packets: 0, bytes: 0, lastUsed: now, hashNext: buckets[b],
                                agePrev: meta.pointee.ageTail, ageNext: FlowTable.none)
        buckets[b] = i
        if meta.pointee.ageTail != FlowTable.none { entries[Int(meta.pointee.ageTail)].ageNext = i } else { meta.pointee.ageHead = i }
        meta.pointee.ageTail = i
        meta.pointee.count += 1
        return (true, evicted)
    }

    /// Unlinks and frees a flow.
    func remove(_ i: UInt32) {
        let e = entries[Int(i)]
        precondition(e.inUse, "flow removed twice")
        let b = bucket(e.key)
        if buckets[b] == i {
            buckets[b] = e.hashNext
        } else {
            var j = buckets[b]
            while entries[Int(j)].hashNext != i { j = entries[Int(j)].hashNext }
            entries[Int(j)].hashNext = e.hashNext
        }
        if e.agePrev != FlowTable.none { entries[Int(e.agePrev)].ageNext = e.ageNext } else { meta.pointee.ageHead = e.ageNext }
        if e.ageNext != FlowTable.none { entries[Int(e.ageNext)].agePrev = e.agePrev } else { meta.pointee.ageTail = e.agePrev }
        entries[Int(i)].rewrite = 0
        freeList[meta.pointee.freeCount] = i
        meta.pointee.freeCount += 1
        meta.pointee.count -= 1
    }

    /// Calls `body` with each live flow, oldest first, without building a
    /// list; `body` may remove the flow it is given.
    func forEachLive(_ body: (UInt32) -> Void) {
        var i = meta.pointee.ageHead
        while i != FlowTable.none {
            let next = entries[Int(i)].ageNext
            body(i)
            i = next
        }
    }

    /// Live flows, oldest first.
    var liveIndices: [UInt32] {
        var out: [UInt32] = []
        out.reserveCapacity(count)
        var i = meta.pointee.ageHead
        while i != FlowTable.none { out.append(i); i = entries[Int(i)].ageNext }
        return out
    }

    /// Removes every flow; returns how many there were.
    @discardableResult
    func removeAll() -> Int {
        let n = count
        for i in liveIndices { remove(i) }
        return n
    }

    /// The longest hash chain (tests check that crafted keys stay spread).
    var longestChain: Int {
        longestHashChain(buckets: buckets, count: bucketMask + 1) { entries[Int($0)].hashNext }
    }

    /// Checks that hash chains, the age list and the free list agree.
    func checkInvariants() {
        var live = 0
        for b in 0...bucketMask {
            var i = buckets[b]
            while i != FlowTable.none {
                let e = entries[Int(i)]
                precondition(e.inUse, "flow: freed entry hashed")
                precondition(bucket(e.key) == b, "flow: wrong bucket")
                live += 1
                i = e.hashNext
            }
        }
        precondition(live == count, "flow: hash count mismatch")
        precondition(liveIndices.count == live, "flow: age list mismatch")
        precondition(live + meta.pointee.freeCount == capacity, "flow: free count mismatch")
    }
}

/// A flow's key: NetBSD ipflow's (destination, source, TOS), plus the ports
/// of TCP and UDP packets when ECMP hashes on them (`ecmp-hash: l4`), so
/// that a flow never spans two ECMP members.
@usableFromInline
struct FlowKey: Equatable {
    @usableFromInline var destination: UInt32
    @usableFromInline var source: UInt32
    @usableFromInline var ports: UInt32
    @usableFromInline var tos: UInt8

    @inlinable init(destination: UInt32, source: UInt32, ports: UInt32, tos: UInt8) {
        self.destination = destination; self.source = source; self.ports = ports; self.tos = tos
    }
}

/// Secrets for the flow and neighbour hashes, drawn once per stack from
/// the host's random source. With them a table's bucket is a keyed
/// multiply-shift hash of the key (Dietzfelbinger's scheme: the top bits of
/// the key times a random odd number): two independent multiplications,
/// cheap enough for the per-packet budget (SipHash would take about half
/// of it), and a sender who does not know the secrets cannot aim many keys
/// at one chain.
@usableFromInline
struct FlowSeed {
    @usableFromInline let k0: UInt64
    @usableFromInline let k1: UInt64
    @usableFromInline let k2: UInt64

    /// Fixed secrets: for tests and benchmarks that need repeatable tables.
    init() { self.init(0x243F_6A88_85A3_08D3, 0x1319_8A2E_0370_7344, 0xA409_3822_299F_31D0) }

    /// Secrets from three random words, each mixed (SplitMix64's
    /// finaliser) so that a weak source still gives full-width multipliers.
    init(_ a: UInt64, _ b: UInt64, _ c: UInt64) {
        func mix(_ v: UInt64) -> UInt64 {
            var x = v &+ 0x9E37_79B9_7F4A_7C15
            x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
            x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
            return x ^ (x >> 31)
        }
        k0 = mix(a); k1 = mix(b ^ 0x5555_5555_5555_5555) | 1; k2 = mix(c ^ 0xAAAA_AAAA_AAAA_AAAA) | 1  // odd multipliers
    }

    /// A flow key's hash; buckets take its top bits.
    @inlinable @inline(__always)
    func hash(_ k: FlowKey) -> UInt64 {
        let a = (UInt64(k.destination) << 32 | UInt64(k.source)) ^ k0
        let b = (UInt64(k.ports) << 8 | UInt64(k.tos)) ^ k0 >> 7
        return a &* k1 &+ b &* k2
    }

    /// The same for a neighbour key (address, interface), IPv4 or IPv6:
    /// every bit of the address goes through a secret multiplier, and a
    /// final xor-shift and multiply spreads keys that differ only in a few
    /// high bits (IPv6 prefixes, the top of an interface identifier), whose
    /// products alone fall into a few clusters for some multipliers.
    @inlinable @inline(__always)
    func hash(address: some LPMKey, interface: UInt16) -> UInt64 {
        let (high, low) = address.words
        var h = ((low << 16 | UInt64(interface)) ^ k0) &* k1
        // The bits the shift dropped, and the high word, only when there are
        // any (never for an IPv4 key, where this folds away).
        if high != 0 || low >> 48 != 0 { h &+= ((high ^ low >> 48) ^ k0 >> 7) &* k2 }
        return (h ^ h >> 32) &* k1
    }
}
