public import Synchronization
public import AnygateWire

/// A key the longest-prefix-match table can look up: an IPv4 address
/// (32 bits) or an IPv6 address (128 bits). The table reads it as
/// 16 bits for level 0, then 8 bits per level.
public protocol LPMKey: Hashable {
    /// Bits in a key: how deep the table may go.
    static var width: Int { get }
    /// All bits zero (the gateway field of a route without one).
    static var zero: Self { get }
    /// The first 16 bits (the level-0 index).
    var top16: Int { get }
    /// The 8 bits from bit `bit` on (16, 24, ...), most significant first.
    func byte(at bit: Int) -> Int
    /// The key folded to 64 bits (an ECMP member's identity in the hash).
    var hash64: UInt64 { get }
    /// The key's bits as two words (an IPv4 key: zero and the address),
    /// for keyed hashes that must see all of it.
    var words: (high: UInt64, low: UInt64) { get }
}

extension UInt32: LPMKey {
    public static var width: Int { 32 }
    @inlinable public static var zero: UInt32 { 0 }
    @inlinable public var top16: Int { Int(self >> 16) }
    @inlinable public func byte(at bit: Int) -> Int { Int((self >> UInt32(24 &- bit)) & 0xFF) }
    @inlinable public var hash64: UInt64 { UInt64(self) }
    @inlinable public var words: (high: UInt64, low: UInt64) { (0, UInt64(self)) }
}

extension IPv4Address: LPMKey {
    public static var width: Int { 32 }
    @inlinable public static var zero: IPv4Address { IPv4Address(rawValue: 0) }
    @inlinable public var top16: Int { Int(rawValue >> 16) }
    @inlinable public func byte(at bit: Int) -> Int { Int((rawValue >> UInt32(24 &- bit)) & 0xFF) }
    @inlinable public var hash64: UInt64 { UInt64(rawValue) }
    @inlinable public var words: (high: UInt64, low: UInt64) { (0, UInt64(rawValue)) }
}

extension IPv6Address: LPMKey {
    public static var width: Int { 128 }
    @inlinable public static var zero: IPv6Address { .any }
    @inlinable public var top16: Int { Int(high >> 48) }
    @inlinable public func byte(at bit: Int) -> Int {
        bit < 64 ? Int((high >> UInt64(56 &- bit)) & 0xFF) : Int((low >> UInt64(120 &- bit)) & 0xFF)
    }
    @inlinable public var hash64: UInt64 { high ^ (low &* 0x9E37_79B9_7F4A_7C15) }
    @inlinable public var words: (high: UInt64, low: UInt64) { (high, low) }
}

/// A lookup word: 0 is "no route", a value with `LPMTable.childFlag` set
/// links a node one level down, anything else is a route value.
@usableFromInline typealias LPMWord = Atomic<UInt32>

/// The longest-prefix-match table behind the FIBs: a multibit trie with a
/// 16-bit first level and 8-bit levels below ("DIR-16-8-8" for IPv4, up to
/// 15 levels for IPv6), leaves pushed down to every slot they cover. A
/// lookup is one dependent load per level it descends, and no branches on
/// prefix length; an IPv4 one is at most three, an IPv6 /48 five.
///
/// Each slot is a `UInt32`: 0 is "no route", a value with `childFlag` set is
/// the index of a 256-slot node one level down, anything else is a route
/// value (route slot + 1). A parallel byte per slot records the prefix length
/// the slot's route came from, which is how an insert knows not to overwrite a
/// more specific route and a delete knows which slots to hand back to the
/// covering prefix.
///
/// Memory: 320 KiB for level 0, 1280 bytes per node. Nodes are allocated on
/// the control plane (route changes) and never on the packet path.
///
/// The slot words are atomics so that one writer may change a table that
/// other threads look up (`SharedFIB`): a writer stores each word with
/// release ordering (a new node's words before the parent word that links
/// it), a lookup loads with acquire ordering. On x86-64 both are plain moves.
/// A shared table is created with all its node room (`fixedNodes`) because
/// moving the node array would pull it from under a reader.
@usableFromInline
struct LPMTable<Key: LPMKey> {
    @usableFromInline typealias Word = LPMWord

    @inlinable static var childFlag: UInt32 { 0x8000_0000 }
    static var level0Slots: Int { 1 << 16 }

    @usableFromInline var level0: UnsafeMutablePointer<Word>
    var depth0: UnsafeMutablePointer<UInt8>
    @usableFromInline var nodes: UnsafeMutablePointer<Word>
    var nodeDepths: UnsafeMutablePointer<UInt8>
    private(set) var nodeCount = 0
    private(set) var nodeCapacity: Int
    /// The node room never grows (a shared table); see `hasRoom`.
    let fixedNodes: Bool

    /// A table whose node arrays grow as needed, or, with `fixedNodes`,
    /// hold `initialNodes` for good (reserved, not touched: the pages are
    /// the kernel's until a node is used).
    init(initialNodes: Int = 64, fixedNodes: Bool = false) {
        level0 = .allocate(capacity: LPMTable.level0Slots)
        for i in 0..<LPMTable.level0Slots { (level0 + i).initialize(to: Word(0)) }
        depth0 = .allocate(capacity: LPMTable.level0Slots)
        depth0.initialize(repeating: 0, count: LPMTable.level0Slots)
        nodeCapacity = initialNodes
        self.fixedNodes = fixedNodes
        nodes = .allocate(capacity: initialNodes * 256)
        nodeDepths = .allocate(capacity: initialNodes * 256)
    }

    /// Frees the table; a shared one's lookup words stay (`SharedFIB`
    /// frees them when its last holder lets go).
    func deallocate() {
        depth0.deallocate(); nodeDepths.deallocate()
        guard !fixedNodes else { return }
        level0.deinitialize(count: LPMTable.level0Slots)
        nodes.deinitialize(count: nodeCount * 256)
        level0.deallocate(); nodes.deallocate()
    }

    /// Whether `more` nodes can still be made (a prefix longer than /16
    /// needs at most two).
    func hasRoom(for more: Int) -> Bool { !fixedNodes || nodeCount + more <= nodeCapacity }

    /// Nodes allocated so far. A node is not reclaimed when its routes go
    /// (a later route in the same range reuses it); the count is bounded
    /// by the routes ever installed, which only the operator controls.
    var nodesInUse: Int { nodeCount }
    /// Level 0 and the nodes made (a growing table also holds room for
    /// up to as many again; a fixed one's untouched room costs nothing).
    var memoryBytes: Int { LPMTable.level0Slots * 5 + (fixedNodes ? nodeCount : nodeCapacity) * 256 * 5 }

    /// The route value for `key`, or 0.
    @inlinable @inline(__always)
    func lookup(_ key: Key) -> UInt32 {
        LPMTable.lookup(key, level0: level0, nodes: nodes)
    }

    /// The lookup itself, over the two slot arrays (the packet path holds
    /// these pointers directly; see `FIBView`). A child never sits at a
    /// key's last level (`checkInvariants`), so the descent ends by itself.
    @inlinable @inline(__always)
    static func lookup(_ key: Key, level0: UnsafeMutablePointer<Word>, nodes: UnsafeMutablePointer<Word>) -> UInt32 {
        var v = level0[key.top16].load(ordering: .acquiring)
        var bit = 16
        while v & childFlag != 0 {
            v = nodes[Int(v & ~childFlag) &<< 8 | key.byte(at: bit)].load(ordering: .acquiring)
            bit &+= 8
        }
        return v
    }

    /// Finishes `count` lookups together, level by level: `values[k]` holds
    /// key k's level-0 word (0 for none) and ends as its route value. The
    /// loads of one level are independent of one another, so their cache
    /// misses overlap where one lookup's would follow each other.
    static func descendTogether(_ keys: UnsafeMutablePointer<Key>, _ values: UnsafeMutablePointer<UInt32>, count: Int,
                                nodes: UnsafeMutablePointer<Word>) {
        var bit = 16
        var live = count
        while live > 0 && bit < Key.width {
            live = 0
            for k in 0..<count where values[k] & childFlag != 0 {
                values[k] = nodes[Int(values[k] & ~childFlag) &<< 8 | keys[k].byte(at: bit)].load(ordering: .acquiring)
                if values[k] & childFlag != 0 { live += 1 }
            }
            bit &+= 8
        }
    }

    // MARK: Control plane

    private mutating func newNode(filledWith value: UInt32, depth: UInt8) -> UInt32 {
        if nodeCount == nodeCapacity {
            precondition(!fixedNodes, "LPM: a fixed table's nodes are used up (callers check hasRoom)")
            let newCap = nodeCapacity * 2
            let n = UnsafeMutablePointer<Word>.allocate(capacity: newCap * 256)
            n.moveInitialize(from: nodes, count: nodeCount * 256)
            nodes.deallocate(); nodes = n
            let d = UnsafeMutablePointer<UInt8>.allocate(capacity: newCap * 256)
            d.moveInitialize(from: nodeDepths, count: nodeCount * 256)
            nodeDepths.deallocate(); nodeDepths = d
            nodeCapacity = newCap
        }
        let index = UInt32(nodeCount)
        nodeCount += 1
        let node = nodes + Int(index) * 256
        for i in 0..<256 { (node + i).initialize(to: Word(value)) }
        (nodeDepths + Int(index) * 256).update(repeating: depth, count: 256)
        return index
    }

    /// The slot arrays and the slot range a prefix covers at the level where
    /// its length ends, creating nodes on the way down when `create` is set.
    /// Parents are tracked by index, not pointer, because creating a node may
    /// move the node arrays.
    private mutating func locate(_ key: Key, _ length: Int, create: Bool)
        -> (slots: UnsafeMutablePointer<Word>, depths: UnsafeMutablePointer<UInt8>, range: Range<Int>)? {
        precondition(length >= 0 && length <= Key.width)
        if length <= 16 {
            let start = key.top16
            return (level0, depth0, start..<(start + (1 << (16 - length))))
        }
        // parentNode -1 means level 0.
        var parentNode = -1
        var slot = key.top16
        var bit = 16
        while true {
            let slots = parentNode < 0 ? level0 : nodes + parentNode * 256
            let depths = parentNode < 0 ? depth0 : nodeDepths + parentNode * 256
            var v = slots[slot].load(ordering: .relaxed)
            if v & LPMTable.childFlag == 0 {
                guard create else { return nil }
                let child = newNode(filledWith: v, depth: depths[slot])
                v = child | LPMTable.childFlag
                let s2 = parentNode < 0 ? level0 : nodes + parentNode * 256
                let d2 = parentNode < 0 ? depth0 : nodeDepths + parentNode * 256
                // Release: a reader that finds the link finds the node filled.
                s2[slot].store(v, ordering: .releasing)
                d2[slot] = 0
            }
            let node = Int(v & ~LPMTable.childFlag)
            slot = key.byte(at: bit)
            if length <= bit + 8 {
                return (nodes + node * 256, nodeDepths + node * 256, slot..<(slot + (1 << (bit + 8 - length))))
            }
            parentNode = node
            bit += 8
        }
    }

    /// Installs `value` for the prefix: every covered slot whose route is no
    /// more specific than `length` takes it.
    mutating func insert(_ address: Key, length: Int, value: UInt32) {
        precondition(value != 0 && value & LPMTable.childFlag == 0)
        guard let (slots, depths, range) = locateStable(address, length, create: true) else { return }
        fill(slots, depths, range, value: value, length: UInt8(length))
    }

    /// Replaces the prefix's own slots (those still at exactly `length`) with
    /// `value` at `newDepth`; value 0 removes the route.
    mutating func replace(_ address: Key, length: Int, with value: UInt32, newDepth: Int) {
        guard let (slots, depths, range) = locateStable(address, length, create: false) else { return }
        swap(slots, depths, range, oldDepth: UInt8(length), value: value, newDepth: UInt8(newDepth))
    }

    private mutating func locateStable(_ address: Key, _ length: Int, create: Bool)
        -> (UnsafeMutablePointer<Word>, UnsafeMutablePointer<UInt8>, Range<Int>)? {
        guard let r = locate(address, length, create: create) else { return nil }
        return (r.slots, r.depths, r.range)
    }

    private func fill(_ slots: UnsafeMutablePointer<Word>, _ depths: UnsafeMutablePointer<UInt8>,
                      _ range: Range<Int>, value: UInt32, length: UInt8) {
        for i in range {
            let v = slots[i].load(ordering: .relaxed)
            if v & LPMTable.childFlag != 0 {
                let node = Int(v & ~LPMTable.childFlag) * 256
                fill(nodes + node, nodeDepths + node, 0..<256, value: value, length: length)
            } else if depths[i] <= length {
                slots[i].store(value, ordering: .releasing)
                depths[i] = length
            }
        }
    }

    private func swap(_ slots: UnsafeMutablePointer<Word>, _ depths: UnsafeMutablePointer<UInt8>,
                      _ range: Range<Int>, oldDepth: UInt8, value: UInt32, newDepth: UInt8) {
        for i in range {
            let v = slots[i].load(ordering: .relaxed)
            if v & LPMTable.childFlag != 0 {
                let node = Int(v & ~LPMTable.childFlag) * 256
                swap(nodes + node, nodeDepths + node, 0..<256, oldDepth: oldDepth, value: value, newDepth: newDepth)
            } else if depths[i] == oldDepth {
                slots[i].store(value, ordering: .releasing)
                depths[i] = newDepth
            }
        }
    }

    /// Checks that every child reference points at an allocated node and
    /// that leaf depths never exceed 32.
    func checkInvariants() {
        func walk(_ slots: UnsafeMutablePointer<Word>, _ depths: UnsafeMutablePointer<UInt8>, _ count: Int, _ level: Int) {
            for i in 0..<count {
                let v = slots[i].load(ordering: .relaxed)
                if v & LPMTable.childFlag != 0 {
                    // The last level is the one whose 8 bits end the key.
                    precondition(16 + 8 * level < Key.width, "LPM: child below the last level")
                    let node = Int(v & ~LPMTable.childFlag)
                    precondition(node < nodeCount, "LPM: dangling child")
                    walk(nodes + node * 256, nodeDepths + node * 256, 256, level + 1)
                } else {
                    precondition(Int(depths[i]) <= Key.width, "LPM: depth out of range")
                    precondition(v != 0 || depths[i] == 0, "LPM: empty slot with a depth")
                }
            }
        }
        walk(level0, depth0, LPMTable.level0Slots, 0)
    }
}
