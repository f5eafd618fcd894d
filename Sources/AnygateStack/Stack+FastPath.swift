public import AnygateWire

/// One row of `show flows`.
public struct Flow: Hashable, Sendable {
    public var source: IPv4Address
    public var destination: IPv4Address
    public var tos: UInt8
    public var interface: InterfaceIndex
    public var nextHop: IPv4Address
    public var packets: UInt64
    public var bytes: UInt64
    public var idle: Interval
    /// False when a route, address, interface or neighbour change has made
    /// it stale; its next packet takes the slow path and refreshes it.
    public var valid: Bool
}

extension Stack {
    // MARK: The fast path (NetBSD ipflow_fastforward)

    /// Forwards `packet` by its flow, or returns false for the slow path.
    /// Any doubt means false: the slow path decides, counts and answers.
    /// Eligible (NetBSD ip_flow.c, plus: not a fragment, and a reachable
    /// neighbour): unicast frame, IPv4 with a 20-byte header, total length
    /// within the frame, a flow for (destination, source, TOS), a verified
    /// header checksum, a flow no route/address/interface/neighbour change
    /// has made stale, the outgoing interface up, the packet within its
    /// MTU, and TTL above 1.
    @inline(__always)
    func fastForward(_ packet: PacketHandle, rx: InterfaceIndex) -> Bool {
        var p = packet
        let frame = pool.bytes(p)
        guard frame.count >= EthernetFrame.headerLength + IPv4Packet.minimumHeaderLength else { return false }
        let ip = IPv4Packet(unchecked: frame.tail(from: EthernetFrame.headerLength))
        guard ip.bytes.be8(IPv4Packet.Field.versionIHL) == 0x45, !ip.isFragment else { return false }
        let total = ip.totalLength
        guard total >= IPv4Packet.minimumHeaderLength, total <= ip.bytes.count else { return false }
        let fi = flows.find(ip.destination.rawValue, ip.source.rawValue, ip.tos)
        guard fi != FlowTable.none else {
            hot.pointee.counters.flowMisses &+= 1
            return false
        }
        guard InternetChecksum.verifiesIPv4Header(ip.bytes.baseAddress!) else { return false }
        let f = flows.entries + Int(fi)
        let n = neighbors.entries + Int(f.pointee.neighbor)
        guard f.pointee.fibGeneration == fibView.pointee.generation,
              f.pointee.neighborGeneration == n.pointee.generation,
              n.pointee.state == .reachable else {
            hot.pointee.counters.flowsInvalidated &+= 1
            return false
        }
        let out = Int(n.pointee.interface)
        let o = ifs + out
        guard o.pointee.up, total <= o.pointee.mtu, ip.ttl > 1 else { return false }

        ip.decrementTTL()
        p.length = UInt32(truncatingIfNeeded: EthernetFrame.headerLength + total)  // drop link padding
        MACAddress(rawValue: f.pointee.mac).write(to: frame, at: EthernetFrame.Field.destination)
        MACAddress(rawValue: o.pointee.mac).write(to: frame, at: EthernetFrame.Field.source)
        f.pointee.packets &+= 1
        f.pointee.bytes &+= UInt64(total)
        f.pointee.lastUsed = FlowTable.ticks(hot.pointee.now)
        hot.pointee.counters.flowHits &+= 1
        hot.pointee.counters.ipReceived &+= 1
        hot.pointee.counters.ipForwarded &+= 1
        ifs[rx].counters.forwarded &+= 1
        enqueueTransmit(p, on: out)
        return true
    }

    /// Called by the slow path after it forwarded a packet whole through a
    /// reachable neighbour: remembers the decision for the packet's key.
    /// No flow for ICMP (NetBSD's rule: errors and echoes stay visible to
    /// the slow path), nor for packets with options or fragments, which the
    /// fast path never takes.
    @inline(__always)
    func installFlow(destination: UInt32, source: UInt32, tos: UInt8, proto: IPProtocol, headerLength: Int,
                     fragment: Bool, neighbor: UInt32) {
        guard flows.capacity > 0, proto != .icmp, headerLength == IPv4Packet.minimumHeaderLength, !fragment else { return }
        let n = neighbors.entries + Int(neighbor)
        guard n.pointee.state == .reachable else { return }
        let r = flows.install(destination: destination, source: source, tos: tos, neighbor: neighbor,
                              neighborGeneration: n.pointee.generation, mac: n.pointee.mac,
                              fibGeneration: fibView.pointee.generation,
                              now: FlowTable.ticks(hot.pointee.now))
        if r.created { hot.pointee.counters.flowsCreated &+= 1 }
        if r.evicted { hot.pointee.counters.flowsEvicted &+= 1 }
        if hot.pointee.nextFlowSweep == 0 { hot.pointee.nextFlowSweep = hot.pointee.now + 1_000_000_000 }
    }

    /// Removes flows idle longer than the timeout, and stale ones (once a
    /// second, from `tick`).
    func sweepFlows() {
        let now = hot.pointee.now
        guard flows.count > 0 else { hot.pointee.nextFlowSweep = 0; return }
        guard now >= hot.pointee.nextFlowSweep else { return }
        hot.pointee.nextFlowSweep = now + 1_000_000_000
        let nowTicks = FlowTable.ticks(now)
        let idleTicks = UInt32(clamping: configuration.ipflow.idleTimeout.nanoseconds >> FlowTable.tickShift)
        let generation = fibView.pointee.generation
        flows.forEachLive { i in
            let f = flows.entries[Int(i)]
            let stale = f.fibGeneration != generation || neighbors.entries[Int(f.neighbor)].generation != f.neighborGeneration
            if stale || nowTicks &- f.lastUsed >= idleTicks {
                flows.remove(i)
                hot.pointee.counters.flowsExpired &+= 1
            }
        }
        if flows.count == 0 { hot.pointee.nextFlowSweep = 0 }
    }

    /// Removes every flow (`anygatectl flows flush`). Returns how many went.
    @discardableResult
    public func flushFlows() -> Int {
        let n = flows.removeAll()
        hot.pointee.counters.flowsFlushed &+= UInt64(n)
        return n
    }

    /// The flows, oldest first.
    public var flowList: [Flow] {
        let nowTicks = FlowTable.ticks(hot.pointee.now)
        return flows.liveIndices.map { i in
            let f = flows.entries[Int(i)]
            let n = neighbors.entries[Int(f.neighbor)]
            return Flow(source: IPv4Address(rawValue: f.source), destination: IPv4Address(rawValue: f.destination), tos: f.tos,
                        interface: Int(n.interface), nextHop: IPv4Address(rawValue: n.address), packets: f.packets, bytes: f.bytes,
                        idle: Interval(nanoseconds: Int64(nowTicks &- f.lastUsed) << FlowTable.tickShift),
                        valid: f.fibGeneration == fibView.pointee.generation && f.neighborGeneration == n.generation)
        }
    }

    /// Number of flows in the table.
    public var flowCount: Int { flows.count }

    /// Bytes one flow entry takes in the preallocated table.
    public static var flowEntryBytes: Int { MemoryLayout<FlowTable.Entry>.stride }
}
