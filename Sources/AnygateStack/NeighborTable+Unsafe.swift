public import AnygateWire

/// The state of one neighbour entry (RFC 826 cache, with the reachability
/// states of RFC 4861 section 7.3.2 that Linux also uses for ARP).
public enum NeighborState: UInt8, Hashable, Sendable, CustomStringConvertible {
    /// Requests sent, no answer yet; packets wait in the entry's queue.
    case incomplete
    /// Confirmed within the reachable time.
    case reachable
    /// Not confirmed lately; still used, and re-probed when used.
    case stale

    public var description: String {
        switch self {
        case .incomplete: "incomplete"
        case .reachable: "reachable"
        case .stale: "stale"
        }
    }
}

/// One row of `show neighbors`: an ARP entry (`Neighbor`) or a
/// neighbour-discovery one (`Neighbor6`).
public typealias Neighbor = IPNeighbor<IPv4Address>
public typealias Neighbor6 = IPNeighbor<IPv6Address>

public struct IPNeighbor<Address: Hashable & Sendable>: Hashable, Sendable {
    public var address: Address
    public var interface: InterfaceIndex
    public var mac: MACAddress?
    public var state: NeighborState
    public var pending: Int
    /// Time since the entry was last confirmed (or created, if never).
    public var age: Interval
}

/// A bounded neighbour cache — ARP's (`UInt32` keys) and, with
/// `IPv6Address` keys, neighbour discovery's. Entries live in one preallocated array, chained in
/// hash buckets and in an age list by 32-bit indices; the pending packets of
/// an unresolved entry sit in a fixed per-entry ring. When the table is full
/// the least recently confirmed entry is evicted (counted); nothing here
/// allocates after `init`.
@usableFromInline
struct NeighborTable<Address: LPMKey> {
    @inlinable static var none: UInt32 { .max }

    @usableFromInline
    struct Entry {
        @usableFromInline var address: Address
        @usableFromInline var interface: UInt16
        @usableFromInline var state: NeighborState
        var inUse: Bool
        @usableFromInline var mac: UInt64
        /// Last confirmation (or creation).
        var confirmed: Int64
        /// When the next request may be sent.
        @usableFromInline var nextProbe: Int64
        var probes: UInt8
        var pendingHead: UInt8
        var pendingCount: UInt8
        @usableFromInline var hashNext: UInt32
        var agePrev: UInt32
        var ageNext: UInt32
        /// Advances whenever what this slot resolves to changes: a new MAC,
        /// removal, reuse. Holders of a cached rewrite (flows) compare it.
        @usableFromInline var generation: UInt32
    }

    let capacity: Int
    let pendingPerEntry: Int
    /// How long an entry stays reachable, then stale, after a confirmation.
    let reachableTime: Int64
    let staleTime: Int64
    /// Each live entry's next timer (probe, reachable → stale, stale →
    /// gone) in a binary min-heap of entry indices: the earliest is read in
    /// O(1) and a change costs O(log n), so a wake-up never walks the table.
    let deadlines: UnsafeMutablePointer<Int64>
    let heap: UnsafeMutablePointer<UInt32>
    /// Where each entry sits in `heap`, or -1.
    let heapPosition: UnsafeMutablePointer<Int32>
    @usableFromInline let bucketMask: Int
    @usableFromInline let bucketShift: UInt64
    /// Keys the bucket hash (`FlowSeed`): senders cannot pile entries into one chain.
    @usableFromInline let seed: FlowSeed
    @usableFromInline let entries: UnsafeMutablePointer<Entry>
    @usableFromInline let buckets: UnsafeMutablePointer<UInt32>
    let pending: UnsafeMutablePointer<PacketHandle>
    let freeList: UnsafeMutablePointer<UInt32>
    @usableFromInline let meta: UnsafeMutablePointer<Meta>

    @usableFromInline
    struct Meta {
        var freeCount: Int
        /// Oldest entry (least recently confirmed), evicted first.
        var ageHead: UInt32
        var ageTail: UInt32
        var count: Int
        var heapCount = 0
    }

    init(capacity: Int, pendingPerEntry: Int, reachableTime: Int64 = 30_000_000_000, staleTime: Int64 = 60_000_000_000,
         seed: FlowSeed = FlowSeed()) {
        precondition(capacity > 0 && capacity < Int(UInt32.max) && pendingPerEntry > 0 && pendingPerEntry < 256)
        self.capacity = capacity
        self.pendingPerEntry = pendingPerEntry
        self.reachableTime = reachableTime
        self.staleTime = staleTime
        deadlines = .allocate(capacity: capacity)
        deadlines.initialize(repeating: 0, count: capacity)
        heap = .allocate(capacity: capacity)
        heapPosition = .allocate(capacity: capacity)
        heapPosition.initialize(repeating: -1, count: capacity)
        self.seed = seed
        var b = 1, bits: UInt64 = 0
        while b < capacity * 2 { b <<= 1; bits += 1 }
        bucketMask = b - 1
        bucketShift = 64 - max(1, bits)
        entries = .allocate(capacity: capacity)
        buckets = .allocate(capacity: b)
        buckets.initialize(repeating: NeighborTable.none, count: b)
        pending = .allocate(capacity: capacity * pendingPerEntry)
        freeList = .allocate(capacity: capacity)
        for i in 0..<capacity {
            freeList[i] = UInt32(capacity - 1 - i)
            (entries + i).initialize(to: Entry(address: .zero, interface: 0, state: .incomplete, inUse: false, mac: 0,
                                               confirmed: 0, nextProbe: 0, probes: 0, pendingHead: 0, pendingCount: 0,
                                               hashNext: NeighborTable.none, agePrev: NeighborTable.none,
                                               ageNext: NeighborTable.none, generation: 1))
        }
        meta = .allocate(capacity: 1)
        meta.initialize(to: Meta(freeCount: capacity, ageHead: NeighborTable.none, ageTail: NeighborTable.none, count: 0))
    }

    func deallocate() {
        entries.deallocate(); buckets.deallocate(); pending.deallocate(); freeList.deallocate(); meta.deallocate()
        deadlines.deallocate(); heap.deallocate(); heapPosition.deallocate()
    }

    var count: Int { meta.pointee.count }

    @inlinable @inline(__always)
    func bucket(_ address: Address, _ interface: UInt16) -> Int {
        Int(truncatingIfNeeded: seed.hash(address: address, interface: interface) >> bucketShift) & bucketMask
    }

    /// The entry index for (address, interface), or `none`.
    @inlinable @inline(__always)
    func find(_ address: Address, _ interface: UInt16) -> UInt32 {
        var i = buckets[bucket(address, interface)]
        while i != NeighborTable.none {
            let e = entries + Int(i)
            if e.pointee.address == address && e.pointee.interface == interface { return i }
            i = e.pointee.hashNext
        }
        return NeighborTable.none
    }

    /// Creates an entry, evicting the oldest when full. Returns the new index
    /// and the packets the evicted entry still held (for the caller to drop).
    func create(_ address: Address, _ interface: UInt16, now: Int64,
                         evicted: (PacketHandle) -> Void) -> (index: UInt32, didEvict: Bool) {
        var didEvict = false
        if meta.pointee.freeCount == 0 {
            let victim = meta.pointee.ageHead
            drainPending(victim, evicted)
            remove(victim)
            didEvict = true
        }
        meta.pointee.freeCount -= 1
        let i = freeList[meta.pointee.freeCount]
        let b = bucket(address, interface)
        entries[Int(i)] = Entry(address: address, interface: interface, state: .incomplete, inUse: true, mac: 0,
                                confirmed: now, nextProbe: now, probes: 0, pendingHead: 0, pendingCount: 0,
                                hashNext: buckets[b], agePrev: NeighborTable.none, ageNext: NeighborTable.none,
                                generation: entries[Int(i)].generation &+ 1)
        buckets[b] = i
        appendAge(i)
        meta.pointee.count += 1
        schedule(i)
        return (i, didEvict)
    }

    /// Unlinks and frees an entry; its pending packets must have been drained.
    func remove(_ i: UInt32) {
        let e = entries[Int(i)]
        precondition(e.inUse && e.pendingCount == 0)
        let b = bucket(e.address, e.interface)
        if buckets[b] == i {
            buckets[b] = e.hashNext
        } else {
            var j = buckets[b]
            while entries[Int(j)].hashNext != i { j = entries[Int(j)].hashNext }
            entries[Int(j)].hashNext = e.hashNext
        }
        unlinkAge(i)
        unschedule(i)
        entries[Int(i)].inUse = false
        entries[Int(i)].generation &+= 1
        freeList[meta.pointee.freeCount] = i
        meta.pointee.freeCount += 1
        meta.pointee.count -= 1
    }

    /// Marks the entry confirmed with `mac`, and moves it to the young end.
    func confirm(_ i: UInt32, mac: UInt64, now: Int64) {
        if entries[Int(i)].mac != mac || entries[Int(i)].state == .incomplete { entries[Int(i)].generation &+= 1 }
        entries[Int(i)].mac = mac
        entries[Int(i)].state = .reachable
        entries[Int(i)].confirmed = now
        entries[Int(i)].probes = 0
        unlinkAge(i)
        appendAge(i)
        schedule(i)
    }

    // MARK: Timers

    /// When the entry's state next needs the timer: its next probe while
    /// incomplete, the end of its reachable time, or the end of its stale time.
    func deadline(of i: UInt32) -> Int64 {
        let e = entries[Int(i)]
        switch e.state {
        case .incomplete: return e.nextProbe
        case .reachable: return e.confirmed &+ reachableTime
        case .stale: return e.confirmed &+ reachableTime &+ staleTime
        }
    }

    /// The entry with the earliest timer and that time, or nil. O(1).
    var nextTimer: (index: UInt32, deadline: Int64)? {
        meta.pointee.heapCount == 0 ? nil : (heap[0], deadlines[Int(heap[0])])
    }

    /// Places the entry in the timer heap at its current deadline (call
    /// after any change to its state, probe time or confirmation).
    func schedule(_ i: UInt32) {
        let d = deadline(of: i)
        let pos = heapPosition[Int(i)]
        if pos < 0 {
            let n = meta.pointee.heapCount
            heap[n] = i
            heapPosition[Int(i)] = Int32(n)
            deadlines[Int(i)] = d
            meta.pointee.heapCount = n + 1
            siftUp(n)
            return
        }
        let old = deadlines[Int(i)]
        deadlines[Int(i)] = d
        if d < old { siftUp(Int(pos)) } else if d > old { siftDown(Int(pos)) }
    }

    private func unschedule(_ i: UInt32) {
        let pos = Int(heapPosition[Int(i)])
        guard pos >= 0 else { return }
        heapPosition[Int(i)] = -1
        let last = meta.pointee.heapCount - 1
        meta.pointee.heapCount = last
        guard pos != last else { return }
        let moved = heap[last]
        heap[pos] = moved
        heapPosition[Int(moved)] = Int32(pos)
        siftUp(pos)
        siftDown(Int(heapPosition[Int(moved)]))
    }

    private func siftUp(_ start: Int) {
        var k = start
        let item = heap[k], key = deadlines[Int(item)]
        while k > 0 {
            let parent = (k - 1) / 2
            let p = heap[parent]
            guard deadlines[Int(p)] > key else { break }
            heap[k] = p
            heapPosition[Int(p)] = Int32(k)
            k = parent
        }
        heap[k] = item
        heapPosition[Int(item)] = Int32(k)
    }

    private func siftDown(_ start: Int) {
        var k = start
        let n = meta.pointee.heapCount
        let item = heap[k], key = deadlines[Int(item)]
        while true {
            var child = 2 * k + 1
            guard child < n else { break }
            if child + 1 < n && deadlines[Int(heap[child + 1])] < deadlines[Int(heap[child])] { child += 1 }
            let c = heap[child]
            guard deadlines[Int(c)] < key else { break }
            heap[k] = c
            heapPosition[Int(c)] = Int32(k)
            k = child
        }
        heap[k] = item
        heapPosition[Int(item)] = Int32(k)
    }

    /// Queues a packet on an unresolved entry; when the ring is full the
    /// oldest queued packet is returned to be dropped.
    func enqueue(_ i: UInt32, _ packet: PacketHandle) -> PacketHandle? {
        let base = Int(i) * pendingPerEntry
        let e = entries + Int(i)
        var dropped: PacketHandle? = nil
        if Int(e.pointee.pendingCount) == pendingPerEntry {
            dropped = pending[base + Int(e.pointee.pendingHead)]
            e.pointee.pendingHead = UInt8((Int(e.pointee.pendingHead) + 1) % pendingPerEntry)
            e.pointee.pendingCount -= 1
        }
        let slot = (Int(e.pointee.pendingHead) + Int(e.pointee.pendingCount)) % pendingPerEntry
        pending[base + slot] = packet
        e.pointee.pendingCount += 1
        return dropped
    }

    /// Hands every queued packet of the entry to `body`, oldest first.
    func drainPending(_ i: UInt32, _ body: (PacketHandle) -> Void) {
        let base = Int(i) * pendingPerEntry
        let e = entries + Int(i)
        while e.pointee.pendingCount > 0 {
            let p = pending[base + Int(e.pointee.pendingHead)]
            e.pointee.pendingHead = UInt8((Int(e.pointee.pendingHead) + 1) % pendingPerEntry)
            e.pointee.pendingCount -= 1
            body(p)
        }
        e.pointee.pendingHead = 0
    }

    private func appendAge(_ i: UInt32) {
        entries[Int(i)].agePrev = meta.pointee.ageTail
        entries[Int(i)].ageNext = NeighborTable.none
        if meta.pointee.ageTail != NeighborTable.none {
            entries[Int(meta.pointee.ageTail)].ageNext = i
        } else {
            meta.pointee.ageHead = i
        }
        meta.pointee.ageTail = i
    }

    private func unlinkAge(_ i: UInt32) {
        let e = entries[Int(i)]
        if e.agePrev != NeighborTable.none { entries[Int(e.agePrev)].ageNext = e.ageNext } else { meta.pointee.ageHead = e.ageNext }
        if e.ageNext != NeighborTable.none { entries[Int(e.ageNext)].agePrev = e.agePrev } else { meta.pointee.ageTail = e.agePrev }
    }

    /// Calls `body` with each live entry, oldest first, without building a
    /// list; `body` must not remove entries other than the one it is given.
    /// Packets waiting on unresolved entries, in all.
    var pendingTotal: Int {
        var n = 0
        forEachLive { n += Int(entries[Int($0)].pendingCount) }
        return n
    }

    func forEachLive(_ body: (UInt32) -> Void) {
        var i = meta.pointee.ageHead
        while i != NeighborTable.none {
            let next = entries[Int(i)].ageNext
            body(i)
            i = next
        }
    }

    /// Indices of live entries, oldest first.
    var liveIndices: [UInt32] {
        var out: [UInt32] = []
        var i = meta.pointee.ageHead
        while i != NeighborTable.none { out.append(i); i = entries[Int(i)].ageNext }
        return out
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
            while i != NeighborTable.none {
                precondition(entries[Int(i)].inUse, "neighbor: freed entry hashed")
                precondition(bucket(entries[Int(i)].address, entries[Int(i)].interface) == b, "neighbor: wrong bucket")
                live += 1
                i = entries[Int(i)].hashNext
            }
        }
        precondition(live == meta.pointee.count, "neighbor: hash count mismatch")
        precondition(liveIndices.count == live, "neighbor: age list count mismatch")
        precondition(live + meta.pointee.freeCount == capacity, "neighbor: free count mismatch")
        // The timer heap holds exactly the live entries, each at its current
        // deadline, in heap order.
        precondition(meta.pointee.heapCount == live, "neighbor: timer heap count mismatch")
        for k in 0..<meta.pointee.heapCount {
            let i = heap[k]
            precondition(entries[Int(i)].inUse && heapPosition[Int(i)] == Int32(k), "neighbor: timer heap position")
            precondition(deadlines[Int(i)] == deadline(of: i), "neighbor: timer out of date")
            if k > 0 { precondition(deadlines[Int(heap[(k - 1) / 2])] <= deadlines[Int(i)], "neighbor: heap order") }
        }
    }
}
