public import AnygateStack

/// The lanes workers hand each other packets on (`HandOffWork`: a packet
/// for the worker whose replica owns its tunnel's SAs). Each ordered pair of
/// workers has a net channel each way: packets go forward, and their
/// buffers come back once the receiving worker has copied each into its own
/// pool — a pool's free-list is only ever touched by its own worker, but
/// any worker may read a buffer it has been handed.
///
/// A worker never waits on a lane: a full forward lane refuses the packet
/// (the stack counts `handoff-refused`), and a worker takes from a lane only
/// as many packets as it has room to return.
public final class HandOffLanes: @unchecked Sendable {
    public let count: Int
    let pools: [PacketPool]
    /// `forward[from * count + to]`: packets `from` hands `to` (nil when from == to).
    let forward: [NetChannel<HandOff>?]
    /// `back[from * count + to]`: buffers of `from`'s pool that `to` is done with.
    let back: [NetChannel<PacketHandle>?]

    /// Lanes between workers with these pools; a packet on a forward lane
    /// rings the receiver's doorbell when it sleeps.
    init(pools: [PacketPool], bells: [Doorbell], capacity: Int = 1024) {
        count = pools.count
        self.pools = pools
        var f: [NetChannel<HandOff>?] = [], b: [NetChannel<PacketHandle>?] = []
        for from in 0..<count {
            for to in 0..<count {
                let bell = bells[to]
                f.append(from == to ? nil : NetChannel(capacity: capacity, wake: { bell.ring() }))
                b.append(from == to ? nil : NetChannel(capacity: capacity))
            }
        }
        forward = f
        back = b
    }

    /// Worker `index`'s end of the lanes (used by that worker only).
    func endpoint(_ index: Int) -> HandOffEndpoint { HandOffEndpoint(lanes: self, index: index) }
}

/// One worker's end of the lanes: what it sends, what it takes in, and the
/// buffers it gets back.
public final class HandOffEndpoint {
    let lanes: HandOffLanes
    let index: Int
    private var unpublished: [Bool]
    private var anyUnpublished = false
    private let taken: UnsafeMutableBufferPointer<HandOff>
    private let copies: UnsafeMutableBufferPointer<HandOff>
    private let returned: UnsafeMutableBufferPointer<PacketHandle>

    init(lanes: HandOffLanes, index: Int, batch: Int = 64) {
        self.lanes = lanes
        self.index = index
        unpublished = Array(repeating: false, count: lanes.count)
        taken = .allocate(capacity: batch)
        copies = .allocate(capacity: batch)
        returned = .allocate(capacity: 256)
    }

    deinit {
        taken.deallocate()
        copies.deallocate()
        returned.deallocate()
    }

    /// Queues a packet of this worker's pool for worker `to` (published by
    /// `publish`); false if the lane is full or there is no such worker.
    func send(_ packet: PacketHandle, to: Int, _ work: HandOffWork) -> Bool {
        guard to >= 0, to < lanes.count, let lane = lanes.forward[index * lanes.count + to],
              lane.push(HandOff(packet: packet, work: work)) else { return false }
        unpublished[to] = true
        anyUnpublished = true
        return true
    }

    /// Makes what `send` queued visible (and wakes sleeping receivers).
    func publish() {
        guard anyUnpublished else { return }
        anyUnpublished = false
        for to in 0..<lanes.count where unpublished[to] {
            unpublished[to] = false
            lanes.forward[index * lanes.count + to]?.publish()
        }
    }

    /// Frees the buffers other workers returned, then takes in what they
    /// handed this worker: each copied into `pool` and finished by `stack`.
    func serve(stack: Stack, pool: PacketPool) {
        let n = lanes.count
        for to in 0..<n where to != index {
            guard let lane = lanes.back[index * n + to] else { continue }
            while true {
                let k = lane.pop(into: returned)
                for h in returned[..<k] { pool.free(h) }
                if k < returned.count { break }
            }
        }
        for from in 0..<n where from != index {
            guard let lane = lanes.forward[from * n + index], let back = lanes.back[from * n + index] else { continue }
            let source = lanes.pools[from]
            // Only as many as can be returned: the sender frees them.
            let k = lane.pop(into: UnsafeMutableBufferPointer(rebasing: taken[..<min(taken.count, back.freeSlots)]))
            guard k > 0 else { continue }
            var kept = 0
            for h in taken[..<k] {
                if var copy = pool.make(copying: UnsafeRawBufferPointer(source.bytes(h.packet))) {
                    copy.segmentSize = h.packet.segmentSize
                    copy.offload = h.packet.offload
                    copies[kept] = HandOff(packet: copy, work: h.work)
                    kept += 1
                } else {
                    stack.recordDrops(.poolExhausted, count: 1, on: h.work.interface)
                }
                _ = back.push(h.packet)
            }
            back.publish()
            if kept > 0 { stack.takeOver(UnsafeBufferPointer(rebasing: copies[..<kept])) }
        }
    }

    /// Whether the worker may sleep: false (nothing left marked) when a
    /// lane has packets for it.
    func prepareToSleep() -> Bool {
        let n = lanes.count
        for from in 0..<n where from != index {
            guard let lane = lanes.forward[from * n + index] else { continue }
            if !lane.prepareToSleep() {
                awake()
                return false
            }
        }
        return true
    }

    /// The worker runs again.
    func awake() {
        let n = lanes.count
        for from in 0..<n where from != index { lanes.forward[from * n + index]?.awake() }
    }
}

extension HandOffWork {
    /// The tunnel interface the work is for.
    var interface: InterfaceIndex {
        switch self {
        case .tunnelOutput(let i): i
        case .espInput(let i, _, _, _): i
        }
    }
}
