public import AnygateWire

/// How far away a TCP peer is, which sets its connection's maximum segment
/// lifetime (MSLT, NetBSD `tcp_msl_*`): its own address, a connected
/// subnet, or beyond a gateway. `classless` is used with MSLT off.
public enum MSLClass: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case classless = 0
    case remote = 1
    case local = 2
    case loopback = 3

    public var description: String {
        switch self {
        case .classless: "classless"
        case .remote: "remote"
        case .local: "local"
        case .loopback: "loopback"
        }
    }
}

/// An address a vestige can hold: IPv4's 32 bits or IPv6's 128.
public protocol VestigeAddress: Equatable {
    /// 64 bits to hash (both halves of an IPv6 address folded).
    var hashWord: UInt64 { get }
}

extension UInt32: VestigeAddress {
    public var hashWord: UInt64 { UInt64(self) }
}

extension IPv6Address: VestigeAddress {
    public var hashWord: UInt64 { high ^ (low &* 0x9E37_79B9_7F4A_7C15) }
}

/// What a TIME-WAIT connection leaves behind (VTW): enough to answer a
/// retransmitted FIN or a stray segment, and to keep its four-tuple from
/// being reused. 32 bytes for IPv4 (NetBSD's entry is 64), 56 for IPv6.
@_spi(Benchmarks) public struct Vestige<A: VestigeAddress> {
    var localAddress: A
    var remoteAddress: A
    var localPort: UInt16
    var remotePort: UInt16
    var rcvNxt: UInt32
    var sndNxt: UInt32
    /// The peer's last timestamp (0 without timestamps).
    var tsRecent: UInt32
    /// When it expires, in milliseconds of the table's clock; 0: free.
    var expire: UInt32
    /// The window last advertised, as it went on the wire (scaled).
    var window: UInt16
    var flags: UInt8
    /// 2 bits of MSL class, then these.
    static var hashed: UInt8 { 0x04 }
    static var timestamps: UInt8 { 0x08 }
    var mslClass: MSLClass { MSLClass(rawValue: flags & 3) ?? .classless }

    public init(localAddress: A, remoteAddress: A, localPort: UInt16, remotePort: UInt16, rcvNxt: UInt32, sndNxt: UInt32,
                tsRecent: UInt32, expire: UInt32, window: UInt16, flags: UInt8) {
        self.localAddress = localAddress; self.remoteAddress = remoteAddress
        self.localPort = localPort; self.remotePort = remotePort
        self.rcvNxt = rcvNxt; self.sndNxt = sndNxt; self.tsRecent = tsRecent
        self.expire = expire; self.window = window; self.flags = flags
    }
    var isHashed: Bool { flags & Vestige.hashed != 0 }
}

/// The counters of a vestige table (NetBSD's `vtw_stats` for the full hash).
public struct VestigeStatistics: Hashable, Sendable {
    public var inserts: UInt64 = 0
    public var deletes: UInt64 = 0
    /// Entries evicted before their time because their class was full.
    public var kills: UInt64 = 0
    public var expired: UInt64 = 0
    public var lookups: UInt64 = 0
    public var hits: UInt64 = 0
    public var misses: UInt64 = 0
    /// Slots whose check bits matched, so the entry was read.
    public var probes: UInt64 = 0
    /// Of those, entries that were not the key (a check-bit collision).
    public var losing: UInt64 = 0
    public var maxProbe: Int = 0
    public init() {}
}

/// Vestigial TIME-WAIT connections of one address family: fixed-size
/// pools, one FIFO per MSL class, and a hash of cache-line buckets.
///
/// The pools follow NetBSD `tcp_vtw.c`: with MSLT on, the remote, local
/// and loopback classes each own a third of the slots; with it off, one
/// classless FIFO owns them all. Every entry of a class has the same
/// lifetime, so each FIFO is sorted by expiry: expiry takes from its tail
/// and a full class evicts its oldest entry (`kills`), both O(1).
///
/// The hash differs from NetBSD's fat pointers in one respect. A bucket is
/// one 64-byte line of sixteen 32-bit words: word 0 counts the entries
/// homed at or before this line that had to move past it (so lookups stop
/// at the first line whose count is 0, and removals undo the count), and
/// words 1–15 are slots. A slot holds `check << b | (index + 1)`, where `b`
/// is the width of the largest index + 1 and `check` is the top `32 - b`
/// bits of the key's 64-bit hash; 0 is an empty slot. A slot whose check
/// bits differ is skipped without touching the entry, so the chance of a
/// wasted read per occupied slot is 2^(b-32) — NetBSD's self-checking
/// encoding gives the same rate with the same 4 bytes per slot — and the
/// index needs no decoding. Lines are linearly probed instead of chained,
/// so no pool of fat pointers has to be sized or can run out.
@_spi(Benchmarks) public final class Vestiges<A: VestigeAddress> {
    public let capacity: Int
    /// Entries and their FIFOs.
    let entries: UnsafeMutablePointer<Vestige<A>>
    /// Per class: its FIFO (four, by class number).
    private let fifos: UnsafeMutablePointer<VestigeFIFO>
    private(set) var mslt: Bool
    /// Hash lines (16 words each) and the slot encoding.
    let lines: UnsafeMutablePointer<UInt32>
    let lineCount: Int
    let indexBits: UInt32
    let key0: UInt64
    let key1: UInt64
    /// Live vestiges per local port (ephemeral port choice skips these).
    let portCounts: UnsafeMutablePointer<UInt32>
    public private(set) var count = 0
    public internal(set) var statistics = VestigeStatistics()

    public init(capacity: Int, mslt: Bool, key0: UInt64, key1: UInt64) {
        precondition(capacity >= 4 && capacity < 1 << 26)
        self.capacity = capacity
        self.mslt = mslt
        self.key0 = key0
        self.key1 = key1
        entries = .allocate(capacity: capacity)
        var lc = 1
        while lc * 15 < capacity * 2 { lc <<= 1 }  // at most half full
        lineCount = lc
        let raw = UnsafeMutableRawPointer.allocate(byteCount: lc * 64, alignment: 64)
        lines = raw.bindMemory(to: UInt32.self, capacity: lc * 16)
        lines.initialize(repeating: 0, count: lc * 16)
        var b: UInt32 = 1
        while (1 << b) <= capacity { b += 1 }  // index + 1 ≤ capacity fits in b bits
        indexBits = b
        portCounts = .allocate(capacity: 65536)
        portCounts.initialize(repeating: 0, count: 65536)
        fifos = .allocate(capacity: 4)
        fifos.initialize(repeating: VestigeFIFO(), count: 4)
        layOut()
    }

    deinit {
        entries.deallocate()
        UnsafeMutableRawPointer(lines).deallocate()
        portCounts.deallocate()
        fifos.deallocate()
    }

    /// Divides the slots among the classes (and empties every FIFO).
    private func layOut() {
        for k in 0..<capacity { (entries + k).pointee.expire = 0; (entries + k).pointee.flags = 0 }
        lines.update(repeating: 0, count: lineCount * 16)
        portCounts.update(repeating: 0, count: 65536)
        count = 0
        fifos.update(repeating: VestigeFIFO(), count: 4)
        if mslt {
            // As NetBSD: equal thirds; a remainder of 1 or 2 slots stays unused.
            let third = capacity / 3
            for k in 1...3 { fifos[k].base = (k - 1) * third; fifos[k].size = third }
        } else {
            fifos[0].size = capacity
        }
    }

    /// Turns MSLT on or off: the pools are laid out again, so every vestige goes.
    func setMSLT(_ on: Bool) {
        guard on != mslt else { return }
        mslt = on
        layOut()
    }

    /// Slots a class owns.
    func slots(of c: MSLClass) -> Int { fifos[Int(c.rawValue)].size }
    func inUse(of c: MSLClass) -> Int { fifos[Int(c.rawValue)].used }

    // MARK: Hash

    @inline(__always)
    func hash(_ local: A, _ remote: A, _ lport: UInt16, _ rport: UInt16) -> UInt64 {
        var h = (local.hashWord &* 0x9E37_79B9_7F4A_7C15) ^ key0
        h ^= remote.hashWord &+ (UInt64(lport) << 32 | UInt64(rport) << 16)
        h = (h ^ (h >> 31)) &* 0xBF58_476D_1CE4_E5B9 ^ key1
        h = (h ^ (h >> 27)) &* 0x94D0_49BB_1331_11EB
        return h ^ (h >> 31)
    }

    @inline(__always) private func line(_ h: UInt64) -> Int { Int(truncatingIfNeeded: h) & (lineCount - 1) }
    @inline(__always) private func check(_ h: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: h >> 32) >> indexBits }
    @inline(__always) private func word(_ h: UInt64, _ index: Int) -> UInt32 { check(h) << indexBits | UInt32(index + 1) }

    /// The vestige of a four-tuple (local side first), if one is alive.
    public func lookup(local: A, remote: A, localPort: UInt16, remotePort: UInt16) -> Int? {
        statistics.lookups &+= 1
        let h = hash(local, remote, localPort, remotePort)
        let want = check(h)
        let low = UInt32((1 << indexBits) - 1)
        var l = line(h)
        for step in 0..<lineCount {
            let w = lines + l * 16
            for s in 1..<16 {
                let v = w[s]
                guard v != 0, v >> indexBits == want else { continue }
                statistics.probes &+= 1
                // A word whose index is out of range is corrupt: rejected, never followed.
                let i = Int(v & low) &- 1
                guard UInt(bitPattern: i) < UInt(capacity) else {
                    statistics.losing &+= 1
                    continue
                }
                let e = entries + i
                if e.pointee.localPort == localPort && e.pointee.remotePort == remotePort
                    && e.pointee.localAddress == local && e.pointee.remoteAddress == remote && e.pointee.isHashed {
                    statistics.hits &+= 1
                    statistics.maxProbe = max(statistics.maxProbe, step + 1)
                    return i
                }
                statistics.losing &+= 1
            }
            if w[0] == 0 { break }
            l = (l + 1) & (lineCount - 1)
        }
        statistics.misses &+= 1
        return nil
    }

    /// The slot of line `w` holding `value` (the lowest, or the highest for inserts).
    @inline(__always)
    private func slot(in w: UnsafeMutablePointer<UInt32>, holding value: UInt32, highest: Bool = false) -> Int? {
        if highest {
            var s = 15
            while s >= 1 { if w[s] == value { return s }; s -= 1 }
        } else {
            for s in 1..<16 where w[s] == value { return s }
        }
        return nil
    }

    private func hashIn(_ i: Int) {
        let e = entries + i
        let h = hash(e.pointee.localAddress, e.pointee.remoteAddress, e.pointee.localPort, e.pointee.remotePort)
        var l = line(h)
        while true {
            let w = lines + l * 16
            if let s = slot(in: w, holding: 0, highest: true) {
                w[s] = word(h, i)
                break
            }
            w[0] += 1
            l = (l + 1) & (lineCount - 1)
        }
        e.pointee.flags |= Vestige<A>.hashed
        portCounts[Int(e.pointee.localPort)] += 1
        count += 1
    }

    private func hashOut(_ i: Int) {
        let e = entries + i
        guard e.pointee.isHashed else { return }
        let h = hash(e.pointee.localAddress, e.pointee.remoteAddress, e.pointee.localPort, e.pointee.remotePort)
        let target = word(h, i)
        let home = line(h)
        var l = home
        for _ in 0..<lineCount {
            let w = lines + l * 16
            if let s = slot(in: w, holding: target) {
                w[s] = 0
                break
            }
            l = (l + 1) & (lineCount - 1)
        }
        // The lines it had to pass on its way in count one less.
        var p = home
        while p != l {
            lines[p * 16] -= 1
            p = (p + 1) & (lineCount - 1)
        }
        e.pointee.flags &= ~Vestige<A>.hashed
        portCounts[Int(e.pointee.localPort)] -= 1
        count -= 1
    }

    // MARK: FIFOs

    /// Adds a vestige to its class's FIFO (evicting the class's oldest if
    /// full) and to the hash. Returns its index.
    @discardableResult
    public func insert(_ v: Vestige<A>, class c: MSLClass, expire: UInt32) -> Int {
        // A connection classed before MSLT was turned on counts as remote.
        let k = Int((mslt ? (c == .classless ? .remote : c) : .classless).rawValue)
        let f = fifos + k
        precondition(f.pointee.size > 0)
        if f.pointee.used == f.pointee.size {
            let oldest = f.pointee.slot(0)
            if entries[oldest].isHashed {
                hashOut(oldest)
                statistics.kills &+= 1
            }
            entries[oldest].expire = 0
            f.pointee.used -= 1
        }
        let i = f.pointee.base + f.pointee.head
        f.pointee.head = f.pointee.head + 1 == f.pointee.size ? 0 : f.pointee.head + 1
        f.pointee.used += 1
        var e = v
        e.expire = expire == 0 ? 1 : expire
        e.flags = (e.flags & ~(3 | Vestige<A>.hashed)) | UInt8(k)
        entries[i] = e
        hashIn(i)
        statistics.inserts &+= 1
        return i
    }

    /// Removes a vestige from the hash; its slot is reclaimed when its
    /// FIFO's tail reaches it.
    public func remove(_ i: Int) {
        guard entries[i].isHashed else { return }
        hashOut(i)
        statistics.deletes &+= 1
    }

    /// A retransmitted FIN: the vestige starts its time again (a new slot
    /// at its FIFO's head, the old one unhashed). Returns the new index.
    @discardableResult
    func restart(_ i: Int, expire: UInt32) -> Int {
        let v = entries[i]
        hashOut(i)
        return insert(v, class: v.mslClass, expire: expire)
    }

    /// Lets the entries expired at `now` (milliseconds of the table's
    /// clock) go, oldest first. Returns how many were alive.
    @discardableResult
    public func expire(now: UInt32) -> Int {
        var n = 0
        for k in 0..<4 where fifos[k].size > 0 {
            while fifos[k].used > 0 {
                let oldest = fifos[k].slot(0)
                let e = entries + oldest
                guard !e.pointee.isHashed || Int32(bitPattern: e.pointee.expire &- now) <= 0 else { break }
                if e.pointee.isHashed {
                    hashOut(oldest)
                    n += 1
                }
                e.pointee.expire = 0
                fifos[k].used -= 1
            }
        }
        statistics.expired &+= UInt64(n)
        return n
    }

    /// The earliest expiry of a live entry, or nil.
    func nextExpiry(now: UInt32) -> UInt32? {
        var best: UInt32? = nil
        for k in 0..<4 where fifos[k].used > 0 {
            // The oldest live entry of the class (dead ones ahead of it go with it).
            for j in 0..<fifos[k].used {
                let e = entries[fifos[k].slot(j)]
                if e.isHashed {
                    if best == nil || Int32(bitPattern: e.expire &- best!) < 0 { best = e.expire }
                    break
                }
            }
        }
        return best
    }

    /// Checks the structure: every live entry is found by its key, counts
    /// agree with the entries, and the overflow counts match the probe
    /// paths. For tests.
    func checkInvariants() -> Bool {
        var live = 0
        var overflow = [UInt32](repeating: 0, count: lineCount)
        for k in 0..<4 where fifos[k].size > 0 {
            for j in 0..<fifos[k].used {
                let i = fifos[k].slot(j)
                let e = entries[i]
                guard e.isHashed else { continue }
                live += 1
                let saved = statistics
                defer { statistics = saved }
                guard lookup(local: e.localAddress, remote: e.remoteAddress, localPort: e.localPort, remotePort: e.remotePort) == i
                else { return false }
                let h = hash(e.localAddress, e.remoteAddress, e.localPort, e.remotePort)
                var l = line(h)
                while slot(in: lines + l * 16, holding: word(h, i)) == nil {
                    overflow[l] += 1
                    l = (l + 1) & (lineCount - 1)
                }
            }
        }
        guard live == count else { return false }
        return (0..<lineCount).allSatisfy { overflow[$0] == lines[$0 * 16] }
    }
}

/// One MSL class's ring of vestige slots: `size` slots from `base`, the
/// next insert at offset `head`, the `used` before it alive or waiting to be reclaimed.
struct VestigeFIFO {
    var base = 0
    var size = 0
    var head = 0
    var used = 0

    /// The slot of the `j`th oldest entry.
    @inline(__always) func slot(_ j: Int) -> Int {
        let o = head - used + j
        return base + (o < 0 ? o + size : o)
    }
}
