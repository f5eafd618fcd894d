/// The longest-prefix-match table behind the FIB: a three-level multibit trie
/// with strides 16, 8 and 8 ("DIR-16-8-8"), leaves pushed down to every slot
/// they cover. A lookup is at most three dependent loads and no branches on
/// prefix length.
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
@usableFromInline
struct LPMTable {
    @usableFromInline static let childFlag: UInt32 = 0x8000_0000
    static let level0Slots = 1 << 16

    @usableFromInline var level0: UnsafeMutablePointer<UInt32>
    var depth0: UnsafeMutablePointer<UInt8>
    @usableFromInline var nodes: UnsafeMutablePointer<UInt32>
    var nodeDepths: UnsafeMutablePointer<UInt8>
    private(set) var nodeCount = 0
    private(set) var nodeCapacity: Int

    init(initialNodes: Int = 64) {
        level0 = .allocate(capacity: LPMTable.level0Slots)
        level0.initialize(repeating: 0, count: LPMTable.level0Slots)
        depth0 = .allocate(capacity: LPMTable.level0Slots)
        depth0.initialize(repeating: 0, count: LPMTable.level0Slots)
        nodeCapacity = initialNodes
        nodes = .allocate(capacity: initialNodes * 256)
        nodeDepths = .allocate(capacity: initialNodes * 256)
    }

    func deallocate() {
        level0.deallocate(); depth0.deallocate(); nodes.deallocate(); nodeDepths.deallocate()
    }

    /// Nodes allocated so far. A node is not reclaimed when its routes go
    /// (a later route in the same range reuses it); the count is bounded
    /// by the routes ever installed, which only the operator controls.
    var nodesInUse: Int { nodeCount }
    var memoryBytes: Int { LPMTable.level0Slots * 5 + nodeCapacity * 256 * 5 }

    /// The route value for `address`, or 0.
    @inlinable @inline(__always)
    func lookup(_ address: UInt32) -> UInt32 {
        LPMTable.lookup(address, level0: level0, nodes: nodes)
    }

    /// The lookup itself, over the two slot arrays (the packet path holds
    /// these pointers directly; see `FIBView`).
    @inlinable @inline(__always)
    static func lookup(_ address: UInt32, level0: UnsafeMutablePointer<UInt32>, nodes: UnsafeMutablePointer<UInt32>) -> UInt32 {
        var v = level0[Int(address >> 16)]
        if v & LPMTable.childFlag != 0 {
            v = nodes[Int(v & ~LPMTable.childFlag) &<< 8 | Int((address >> 8) & 0xFF)]
            if v & LPMTable.childFlag != 0 {
                v = nodes[Int(v & ~LPMTable.childFlag) &<< 8 | Int(address & 0xFF)]
            }
        }
        return v
    }

    // MARK: Control plane

    private mutating func newNode(filledWith value: UInt32, depth: UInt8) -> UInt32 {
        if nodeCount == nodeCapacity {
            let newCap = nodeCapacity * 2
            let n = UnsafeMutablePointer<UInt32>.allocate(capacity: newCap * 256)
            n.moveInitialize(from: nodes, count: nodeCount * 256)
            nodes.deallocate(); nodes = n
            let d = UnsafeMutablePointer<UInt8>.allocate(capacity: newCap * 256)
            d.moveInitialize(from: nodeDepths, count: nodeCount * 256)
            nodeDepths.deallocate(); nodeDepths = d
            nodeCapacity = newCap
        }
        let index = UInt32(nodeCount)
        nodeCount += 1
        (nodes + Int(index) * 256).update(repeating: value, count: 256)
        (nodeDepths + Int(index) * 256).update(repeating: depth, count: 256)
        return index
    }

    /// The slot arrays and the slot range a prefix covers at the level where
    /// its length ends, creating nodes on the way down when `create` is set.
    /// Parents are tracked by index, not pointer, because creating a node may
    /// move the node arrays.
    private mutating func locate(_ address: UInt32, _ length: Int, create: Bool)
        -> (slots: UnsafeMutablePointer<UInt32>, depths: UnsafeMutablePointer<UInt8>, range: Range<Int>)? {
        if length <= 16 {
            let start = Int(address >> 16)
            return (level0, depth0, start..<(start + (1 << (16 - length))))
        }
        // parentNode -1 means level 0.
        var parentNode = -1
        var slot = Int(address >> 16)
        for level in 1...2 {
            let slots = parentNode < 0 ? level0 : nodes + parentNode * 256
            let depths = parentNode < 0 ? depth0 : nodeDepths + parentNode * 256
            var v = slots[slot]
            if v & LPMTable.childFlag == 0 {
                guard create else { return nil }
                let child = newNode(filledWith: v, depth: depths[slot])
                v = child | LPMTable.childFlag
                let s2 = parentNode < 0 ? level0 : nodes + parentNode * 256
                let d2 = parentNode < 0 ? depth0 : nodeDepths + parentNode * 256
                s2[slot] = v
                d2[slot] = 0
            }
            let node = Int(v & ~LPMTable.childFlag)
            if level == 1 {
                slot = Int((address >> 8) & 0xFF)
                if length <= 24 {
                    return (nodes + node * 256, nodeDepths + node * 256, slot..<(slot + (1 << (24 - length))))
                }
                parentNode = node
            } else {
                slot = Int(address & 0xFF)
                return (nodes + node * 256, nodeDepths + node * 256, slot..<(slot + (1 << (32 - length))))
            }
        }
        return nil
    }

    /// Installs `value` for the prefix: every covered slot whose route is no
    /// more specific than `length` takes it.
    mutating func insert(_ address: UInt32, length: Int, value: UInt32) {
        precondition(value != 0 && value & LPMTable.childFlag == 0)
        guard let (slots, depths, range) = locateStable(address, length, create: true) else { return }
        fill(slots, depths, range, value: value, length: UInt8(length))
    }

    /// Replaces the prefix's own slots (those still at exactly `length`) with
    /// `value` at `newDepth`; value 0 removes the route.
    mutating func replace(_ address: UInt32, length: Int, with value: UInt32, newDepth: Int) {
        guard let (slots, depths, range) = locateStable(address, length, create: false) else { return }
        swap(slots, depths, range, oldDepth: UInt8(length), value: value, newDepth: UInt8(newDepth))
    }

    private mutating func locateStable(_ address: UInt32, _ length: Int, create: Bool)
        -> (UnsafeMutablePointer<UInt32>, UnsafeMutablePointer<UInt8>, Range<Int>)? {
        guard let r = locate(address, length, create: create) else { return nil }
        return (r.slots, r.depths, r.range)
    }

    private func fill(_ slots: UnsafeMutablePointer<UInt32>, _ depths: UnsafeMutablePointer<UInt8>,
                      _ range: Range<Int>, value: UInt32, length: UInt8) {
        for i in range {
            let v = slots[i]
            if v & LPMTable.childFlag != 0 {
                let node = Int(v & ~LPMTable.childFlag) * 256
                fill(nodes + node, nodeDepths + node, 0..<256, value: value, length: length)
            } else if depths[i] <= length {
                slots[i] = value
                depths[i] = length
            }
        }
    }

    private func swap(_ slots: UnsafeMutablePointer<UInt32>, _ depths: UnsafeMutablePointer<UInt8>,
                      _ range: Range<Int>, oldDepth: UInt8, value: UInt32, newDepth: UInt8) {
        for i in range {
            let v = slots[i]
            if v & LPMTable.childFlag != 0 {
                let node = Int(v & ~LPMTable.childFlag) * 256
                swap(nodes + node, nodeDepths + node, 0..<256, oldDepth: oldDepth, value: value, newDepth: newDepth)
            } else if depths[i] == oldDepth {
                slots[i] = value
                depths[i] = newDepth
            }
        }
    }

    /// Checks that every child reference points at an allocated node and
    /// that leaf depths never exceed 32.
    func checkInvariants() {
        func walk(_ slots: UnsafeMutablePointer<UInt32>, _ depths: UnsafeMutablePointer<UInt8>, _ count: Int, _ level: Int) {
            for i in 0..<count {
                let v = slots[i]
                if v & LPMTable.childFlag != 0 {
                    precondition(level < 2, "LPM: child below the last level")
                    let node = Int(v & ~LPMTable.childFlag)
                    precondition(node < nodeCount, "LPM: dangling child")
                    walk(nodes + node * 256, nodeDepths + node * 256, 256, level + 1)
                } else {
                    precondition(depths[i] <= 32, "LPM: depth out of range")
                    precondition(v != 0 || depths[i] == 0, "LPM: empty slot with a depth")
                }
            }
        }
        walk(level0, depth0, LPMTable.level0Slots, 0)
    }
}
