/// The ipflow fast-forward cache (after NetBSD's sys/netinet/ip_flow.c):
/// flows keyed by (destination, source, TOS), each remembering the
/// forwarding decision the slow path made for it — the neighbour entry to
/// send to, its MAC as a ready-made rewrite, and the generations of the FIB
/// and of that neighbour entry it was made under.
///
/// A preallocated pool of 64-byte entries, linked by 32-bit indices into
/// hash chains and into one list in creation order; when the pool is full
/// the oldest flow is evicted (NetBSD's 2024 choice: FIFO, not LRU, so a hit
/// never has to relink the list). Nothing here allocates after `init`.
@usableFromInline
struct FlowTable {
    @usableFromInline static let none: UInt32 = .max

    /// One flow: 64 bytes, one cache line.
    @usableFromInline
    struct Entry {
        @usableFromInline var source: UInt32
        @usableFromInline var destination: UInt32
        /// The neighbour entry the flow sends to, and its generation then.
        @usableFromInline var neighbor: UInt32
        @usableFromInline var neighborGeneration: UInt32
        /// The FIB generation the decision was made under (the route cache).
        @usableFromInline var fibGeneration: UInt64
        /// Destination MAC in the low 48 bits, the key's TOS in bits 48–55,
        /// bit 56 set while the entry is in use.
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
    @usableFromInline let entries: UnsafeMutablePointer<Entry>
    @usableFromInline let buckets: UnsafeMutablePointer<UInt32>
    let freeList: UnsafeMutablePointer<UInt32>
    @usableFromInline let meta: UnsafeMutablePointer<Meta>

    init(capacity: Int) {
        precondition(capacity >= 0 && capacity < Int(UInt32.max))
        self.capacity = capacity
        var b = 1
        while b < max(1, capacity) { b <<= 1 }
        bucketMask = b - 1
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
    static func key(_ destination: UInt32, _ source: UInt32, _ tos: UInt8) -> UInt64 {
        UInt64(destination) << 32 | UInt64(source ^ UInt32(tos) &* 0x9E37_79B9)
    }

    @inlinable @inline(__always)
    func bucket(_ destination: UInt32, _ source: UInt32, _ tos: UInt8) -> Int {
        let k = FlowTable.key(destination, source, tos) &* 0x9E37_79B9_7F4A_7C15
        return Int(truncatingIfNeeded: k >> 32) & bucketMask
    }

    /// The flow for the key, or `none`.
    @inlinable @inline(__always)
    func find(_ destination: UInt32, _ source: UInt32, _ tos: UInt8) -> UInt32 {
        var i = buckets[bucket(destination, source, tos)]
        while i != FlowTable.none {
            let e = entries + Int(i)
            if e.pointee.destination == destination && e.pointee.source == source && e.pointee.tos == tos { return i }
            i = e.pointee.hashNext
        }
        return FlowTable.none
    }

    /// Installs or refreshes the flow for the key. Returns whether an
    /// existing flow was evicted to make room.
    func install(destination: UInt32, source: UInt32, tos: UInt8, neighbor: UInt32, neighborGeneration: UInt32,
                 mac: UInt64, fibGeneration: UInt64, now: UInt32) -> (created: Bool, evicted: Bool) {
        let rewrite = (mac & 0xFFFF_FFFF_FFFF) | UInt64(tos) << 48 | 1 << 56
        let existing = find(destination, source, tos)
        if existing != FlowTable.none {
            let e = entries + Int(existing)
            e.pointee.neighbor = neighbor
            e.pointee.neighborGeneration = neighborGeneration
            e.pointee.fibGeneration = fibGeneration
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
        let b = bucket(destination, source, tos)
        entries[Int(i)] = Entry(source: source, destination: destination, neighbor: neighbor,
                                neighborGeneration: neighborGeneration, fibGeneration: fibGeneration, rewrite: rewrite,
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
        let b = bucket(e.destination, e.source, e.tos)
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

    /// Checks that hash chains, the age list and the free list agree.
    func checkInvariants() {
        var live = 0
        for b in 0...bucketMask {
            var i = buckets[b]
            while i != FlowTable.none {
                let e = entries[Int(i)]
                precondition(e.inUse, "flow: freed entry hashed")
                precondition(bucket(e.destination, e.source, e.tos) == b, "flow: wrong bucket")
                live += 1
                i = e.hashNext
            }
        }
        precondition(live == count, "flow: hash count mismatch")
        precondition(liveIndices.count == live, "flow: age list mismatch")
        precondition(live + meta.pointee.freeCount == capacity, "flow: free count mismatch")
    }
}
