/// The stack's packet ledger: every packet that crosses the stack's
/// boundary, counted where it enters and where it ends, so that a packet
/// lost without a reason shows as an imbalance.
///
/// Input side — what arrives ends in exactly one way:
///
///     received + fromHostSockets + looped + reassembled + unbundledPackets
///       = forwarded + consumed + punted + fragmentsReassembled + heldForReassembly + unbundled + inputDrops
///
/// Output side — what is to leave ends in exactly one way:
///
///     forwarded + originated + injected + fragmentsCreated + segmentsCreated
///       = sent + toHostSockets + looped + fragmented + segmented + heldForNeighbor + outputDrops
///
/// And the drop table holds each drop once:
///
///     Σ drops by reason = inputDrops + outputDrops + dropsOutsideStack
///
/// `received` and `sent` count every interface, tunnels included: a packet
/// handed to a tunnel is sent on it, and the encapsulated packet the tunnel
/// makes is originated; a tunnel's socket consumes the outer packet and the
/// tunnel receives what was inside. Fragmentation is 1 → N (`fragmented` in,
/// `fragmentsCreated` out), so is segmentation of super-frames (`segmented`
/// in, `segmentsCreated` out); reassembly is N → 1 (`fragmentsReassembled`
/// in, `reassembled` out). Losses before a frame reaches the stack (kernel
/// queues, port buffers) or after it left (a device refusing it) are
/// reasons in the drop table but outside both sides.
public struct PacketLedger: Hashable, Sendable {
    public enum Side: Sendable { case input, output }

    public var received: UInt64 = 0
    public var fromHostSockets: UInt64 = 0
    public var looped: UInt64 = 0
    public var reassembled: UInt64 = 0
    /// Datagrams cut from UDP super-frames for us (N out), and the super-frames (1 in).
    public var unbundledPackets: UInt64 = 0
    public var unbundled: UInt64 = 0
    public var forwarded: UInt64 = 0
    public var consumed: UInt64 = 0
    /// Handed to a host twin.
    public var punted: UInt64 = 0
    public var fragmentsReassembled: UInt64 = 0
    public var heldForReassembly: UInt64 = 0
    public var inputDrops: UInt64 = 0

    public var originated: UInt64 = 0
    /// Sent by a host twin through the stack.
    public var injected: UInt64 = 0
    public var fragmentsCreated: UInt64 = 0
    public var segmentsCreated: UInt64 = 0
    public var sent: UInt64 = 0
    public var toHostSockets: UInt64 = 0
    public var fragmented: UInt64 = 0
    public var segmented: UInt64 = 0
    public var heldForNeighbor: UInt64 = 0
    public var outputDrops: UInt64 = 0

    public var dropsByReason: UInt64 = 0
    public var dropsOutsideStack: UInt64 = 0

    public init() {}

    /// What entered the input side and has no recorded end (negative: ends counted twice).
    public var inputImbalance: Int64 {
        Int64(bitPattern: (received &+ fromHostSockets &+ looped &+ reassembled &+ unbundledPackets)
              &- (forwarded &+ consumed &+ punted &+ fragmentsReassembled &+ heldForReassembly &+ unbundled &+ inputDrops))
    }

    /// What entered the output side and has no recorded end.
    public var outputImbalance: Int64 {
        Int64(bitPattern: (forwarded &+ originated &+ injected &+ fragmentsCreated &+ segmentsCreated)
              &- (sent &+ toHostSockets &+ looped &+ fragmented &+ segmented &+ heldForNeighbor &+ outputDrops))
    }

    /// Drop-table entries that are not one drop on one side.
    public var reasonImbalance: Int64 {
        Int64(bitPattern: dropsByReason &- (inputDrops &+ outputDrops &+ dropsOutsideStack))
    }

    public var balanced: Bool { inputImbalance == 0 && outputImbalance == 0 && reasonImbalance == 0 }

    /// One line per equation that does not hold, empty when balanced.
    public var violations: [String] {
        var v: [String] = []
        if inputImbalance != 0 {
            v.append("input: received \(received) + from host sockets \(fromHostSockets) + looped \(looped) + reassembled \(reassembled)"
                     + " + unbundled datagrams \(unbundledPackets) - unbundled \(unbundled)"
                     + " != forwarded \(forwarded) + consumed \(consumed) + punted \(punted) + fragments reassembled \(fragmentsReassembled)"
                     + " + held for reassembly \(heldForReassembly) + dropped \(inputDrops) (off by \(inputImbalance))")
        }
        if outputImbalance != 0 {
            v.append("output: forwarded \(forwarded) + originated \(originated) + injected \(injected) + fragments created \(fragmentsCreated)"
                     + " + segments created \(segmentsCreated)"
                     + " != sent \(sent) + to host sockets \(toHostSockets) + looped \(looped) + fragmented \(fragmented)"
                     + " + segmented \(segmented)"
                     + " + held for neighbour \(heldForNeighbor) + dropped \(outputDrops) (off by \(outputImbalance))")
        }
        if reasonImbalance != 0 {
            v.append("drops: by reason \(dropsByReason) != input \(inputDrops) + output \(outputDrops)"
                     + " + outside the stack \(dropsOutsideStack) (off by \(reasonImbalance))")
        }
        return v
    }
}

extension Stack {
    /// Pool buffers the stack holds between entry points: one per open
    /// reassembly queue (fragments are copied into it and let go, so this
    /// is not the ledger's `heldForReassembly`, which counts fragments),
    /// each packet waiting for a neighbour, each datagram in a socket's
    /// receive queue and each packet on the loopback. With the transmit
    /// queues flushed, a pool used by one stack alone has exactly this many
    /// buffers out; more is a leak.
    public var buffersHeld: Int {
        reassembly.active + neighbors.pendingTotal + neighbors6.pendingTotal
            + socketQueues.values.reduce(0) { $0 + $1.count } + loopback.count
    }

    /// The ledger as of now. Call it between entry points (the transmit
    /// queues are flushed then); O(interfaces + neighbours + reassembly queues).
    public var ledger: PacketLedger {
        var total = retiredCounters
        for i in 0..<configuration.maxInterfaces where ifs[i].exists { total.add(ifs[i].counters) }
        let c = hot.pointee.counters
        var l = PacketLedger()
        l.received = total.rxPackets
        l.fromHostSockets = c.fromHostSockets
        l.looped = c.looped
        l.reassembled = c.datagramsReassembled
        l.unbundled = c.unbundled
        l.unbundledPackets = c.unbundledPackets
        l.forwarded = total.forwarded
        l.consumed = c.consumed
        l.punted = c.punted
        l.injected = c.injected
        l.fragmentsReassembled = c.fragmentsReassembled
        l.heldForReassembly = UInt64(reassembly.heldFragments)
        l.inputDrops = total.rxDrops &+ c.inputDropsElsewhere
        l.originated = c.originated
        l.fragmentsCreated = c.fragmentsCreated
        l.segmentsCreated = c.segmentsCreated
        l.segmented = c.segmented
        l.sent = total.txPackets
        l.toHostSockets = c.toHostSockets
        l.fragmented = c.fragmented
        l.heldForNeighbor = UInt64(neighbors.pendingTotal + neighbors6.pendingTotal)
        l.outputDrops = total.txDrops &+ c.outputDropsElsewhere
        l.dropsByReason = totalDrops
        l.dropsOutsideStack = c.dropsOutsideStack
        return l
    }

    /// Packet buffers the stack holds: waiting on a neighbour, in
    /// reassembly, in socket queues, in transmit queues. With the packets in
    /// flight on wires and in the owner's hands, this is the pool's use.
    public var heldBuffers: Int {
        var n = reassembly.active + neighbors.pendingTotal + neighbors6.pendingTotal
        for (_, q) in socketQueues { n += q.count }
        for i in 0..<configuration.maxInterfaces { n += ifs[i].txCount }
        return n
    }
}
