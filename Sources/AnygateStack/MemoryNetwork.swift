import AnygateWire

/// Several stacks in one process, joined by in-memory point-to-point links
/// and driven by a hand-advanced clock. Tests build topologies with it; the
/// demo runs on it. Frames cross a link without copying: all stacks share
/// one packet pool.
///
/// Delivery is deterministic: frames are delivered in the order they were
/// transmitted, one batch per (stack, interface) at a time.
public final class MemoryNetwork: Hypercalls {
    public let pool: PacketPool
    /// Stacks are held weakly: whoever created them owns them, and frames
    /// for a stack that is gone are dropped like frames on a cut link.
    private var members: [Weak] = []
    private struct Weak { weak var stack: Stack? }
    /// The live stacks, in creation order.
    public var stacks: [Stack] { members.compactMap(\.stack) }
    /// The network's clock; `advance(by:)` moves it.
    public private(set) var clock = Timestamp(nanoseconds: 1_000_000_000)
    private var rng: SplitMix64
    /// Where a frame sent on (stack, interface) arrives.
    private var peers: [Endpoint: Endpoint] = [:]
    private var inFlight: [(to: Endpoint, packet: PacketHandle)] = []
    /// Frames lost because their link end was not connected.
    public private(set) var unconnectedDrops = 0
    /// Frames delivered since creation.
    public private(set) var delivered = 0
    /// Sees every frame as it crosses a link (for tests and the demo's trace).
    public var observer: ((_ from: Endpoint, _ to: Endpoint, _ frame: UnsafeMutableRawBufferPointer) -> Void)?
    /// Frames for which this answers true are lost on the wire (a lossy link), counted in `lost`.
    public var loss: ((_ from: Endpoint, _ frame: UnsafeMutableRawBufferPointer) -> Bool)?
    public private(set) var lost = 0
    /// What the stacks punted to their interfaces' host twins, in order:
    /// the twin's interface and the bytes (a frame for an Ethernet twin).
    public private(set) var punted: [(at: Endpoint, bytes: [UInt8])] = []
    /// Whether twins take what is punted (false: refused, as a vanished device).
    public var twinsTake = true

    /// One end of a link: a stack (by creation order on this network) and one of its interfaces.
    public struct Endpoint: Hashable, Sendable {
        public var stack: Int
        public var interface: InterfaceIndex
    }

    private let receiveBatch = UnsafeMutablePointer<PacketHandle>.allocate(capacity: 64)

    deinit { receiveBatch.deallocate() }

    public init(pool: PacketPool = PacketPool(capacity: 4096), seed: UInt64 = 0x5EED) {
        self.pool = pool
        self.rng = SplitMix64(seed: seed)
        MemoryNetwork.audit?.networks.append(self)
    }

    /// Creates a stack on this network.
    public func addStack(name: String, configuration: StackConfiguration = StackConfiguration()) -> Stack {
        let s = Stack(name: name, configuration: configuration, pool: pool, hypercalls: self)
        members.append(Weak(stack: s))
        MemoryNetwork.audit?.stacks.append(s)
        return s
    }

    // MARK: Audit

    /// Set around a test, it keeps every network made and every stack added
    /// in the task, so that their packet accounting can be checked at the end.
    @TaskLocal public static var audit: Audit?

    /// The networks and stacks of one test. Only the task that set it up
    /// and its children touch it, one at a time.
    public final class Audit: @unchecked Sendable {
        var networks: [MemoryNetwork] = []
        var stacks: [Stack] = []
        public init() {}

        /// Every equation that does not hold: each stack's `ledger`, and
        /// each network's pool against what its stacks hold and what is on
        /// its wires (a buffer leaked or freed twice shows there).
        public func violations() -> [String] {
            var v: [String] = []
            for s in stacks { v += s.ledger.violations.map { "\(s.name): \($0)" } }
            for n in networks {
                let held = n.stacks.reduce(0) { $0 + $1.heldBuffers }
                if n.pool.inUse != held + n.inFlight.count {
                    v.append("pool: \(n.pool.inUse) buffers in use, but the stacks hold \(held) and \(n.inFlight.count) are on wires")
                }
            }
            return v
        }
    }

    private func position(_ s: Stack) -> Int {
        guard let i = members.firstIndex(where: { $0.stack === s }) else { preconditionFailure("stack not on this network") }
        return i
    }

    /// Joins two interfaces with a link.
    public func connect(_ a: Stack, _ ai: InterfaceIndex, _ b: Stack, _ bi: InterfaceIndex) {
        let ea = Endpoint(stack: position(a), interface: ai), eb = Endpoint(stack: position(b), interface: bi)
        peers[ea] = eb
        peers[eb] = ea
    }

    /// Cuts the link at this interface (frames sent on it are lost and counted).
    public func disconnect(_ s: Stack, _ i: InterfaceIndex) {
        let e = Endpoint(stack: position(s), interface: i)
        if let peer = peers.removeValue(forKey: e) { peers.removeValue(forKey: peer) }
    }

    // MARK: Hypercalls

    public func now() -> Timestamp { clock }

    public func random() -> UInt64 { rng.next() }

    public func transmit(_ packets: UnsafeBufferPointer<PacketHandle>, interface: InterfaceIndex, stack: Stack) {
        let from = Endpoint(stack: position(stack), interface: interface)
        guard let to = peers[from] else {
            for p in packets { pool.free(p) }
            unconnectedDrops += packets.count
            return
        }
        for p in packets {
            observer?(from, to, pool.bytes(p))
            if let loss, loss(from, pool.bytes(p)) {
                pool.free(p)
                lost += 1
                continue
            }
            inFlight.append((to, p))
        }
    }

    public func punt(_ packet: PacketHandle, interface: InterfaceIndex, stack: Stack) -> Bool {
        guard twinsTake else { return false }
        punted.append((Endpoint(stack: position(stack), interface: interface), pool.copyBytes(packet)))
        pool.free(packet)
        return true
    }

    // MARK: Driving

    /// Delivers frames until none is in flight, or `limit` deliveries.
    /// Returns how many were delivered.
    @discardableResult
    public func run(limit: Int = 1_000_000) -> Int {
        var count = 0
        while !inFlight.isEmpty && count < limit {
            let batch = inFlight
            inFlight.removeAll(keepingCapacity: true)
            var i = 0
            while i < batch.count && count < limit {
                // Consecutive frames for one interface arrive as one batch, as a port reads them.
                let to = batch[i].to
                var n = 1
                while n < 64 && i + n < batch.count && count + n < limit && batch[i + n].to == to { n += 1 }
                if let s = members[to.stack].stack {
                    for k in 0..<n { receiveBatch[k] = batch[i + k].packet }
                    s.receive(UnsafeBufferPointer(start: receiveBatch, count: n), on: to.interface)
                } else {
                    for k in 0..<n { pool.free(batch[i + k].packet) }
                    unconnectedDrops += n
                }
                i += n
                count += n
            }
            if i < batch.count { inFlight.insert(contentsOf: batch[i...], at: 0) }
        }
        delivered += count
        return count
    }

    /// Moves the clock forward in `step`s, ticking every stack and
    /// delivering what the timers send, until `interval` has passed.
    public func advance(by interval: Interval, step: Interval = .milliseconds(100)) {
        let end = clock + interval
        while clock < end {
            clock = min(end, clock + step)
            for s in stacks { s.tick() }
            run()
        }
    }

    /// Frames waiting to be delivered.
    public var inFlightCount: Int { inFlight.count }
}
