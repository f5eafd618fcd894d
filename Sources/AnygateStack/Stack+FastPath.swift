public import AnygateWire

/// One row of `show flows`.
public struct Flow: Hashable, Sendable {
    public var source: IPv4Address
    public var destination: IPv4Address
    public var tos: UInt8
    /// The ports in the flow's key (`ecmp-hash: l4`, TCP and UDP); nil otherwise.
    public var sourcePort: UInt16?
    public var destinationPort: UInt16?
    public var interface: InterfaceIndex
    public var nextHop: IPv4Address
    public var packets: UInt64
    public var bytes: UInt64
    public var idle: Interval
    /// False when a route, address, interface or neighbour change has made
    /// it stale; its next packet takes the slow path and refreshes it.
    public var valid: Bool
}

/// One ip6flow entry, as `show flows` lists it.
public struct Flow6: Hashable, Sendable {
    public var source: IPv6Address
    public var destination: IPv6Address
    /// Part of the key: an ECMP set hashes it.
    public var flowLabel: UInt32
    public var interface: InterfaceIndex
    public var nextHop: IPv6Address
    public var packets: UInt64
    public var bytes: UInt64
    public var idle: Interval
    /// False when a change has made it stale (its next packet refreshes it).
    public var valid: Bool
}

extension Stack {
    // MARK: The fast path (NetBSD ipflow_fastforward)

    /// The flow key of an IPv4 packet: (destination, source, TOS), and with
    /// `ecmp-hash: l4` the ports of a TCP or UDP packet that is not a
    /// fragment. The slow path keys the flows it installs the same way.
    @inline(__always)
    func flowKey(_ ip: IPv4Packet) -> FlowKey {
        var ports: UInt32 = 0
        if configuration.ecmpHash == .l4 {
            let proto = ip.proto, hl = ip.headerLength
            if (proto == .tcp || proto == .udp) && !ip.isFragment && ip.totalLength >= hl &+ 4 && ip.bytes.count >= hl &+ 4 {
                ports = ip.bytes.be32(hl)
            }
        }
        return FlowKey(destination: ip.destination.rawValue, source: ip.source.rawValue, ports: ports, tos: ip.tos)
    }

    /// The hash an ECMP set picks a member by: the flow key without its
    /// TOS (ECN marks must not move a connection), keyed by the stack's
    /// secrets. Fast and slow path agree because the flow key holds
    /// everything hashed.
    @inline(__always)
    func ecmpHash(_ key: FlowKey) -> UInt64 {
        var k = key
        k.tos = 0
        return flows.seed.hash(k)
    }

    /// Forwards `packet` by its flow, or returns false for the slow path.
    /// Any doubt means false: the slow path decides, counts and answers.
    /// `linkHeader` is 14 for an Ethernet frame and 0 for a packet that
    /// starts at its IP header (decapsulated from a tunnel).
    ///
    /// Eligible (NetBSD ip_flow.c, plus: not a fragment, and a reachable
    /// neighbour or a live tunnel): unicast frame, IPv4 with a 20-byte
    /// header, total length within the buffer, a flow for the key, a
    /// verified header checksum, a source the interface's reverse-path
    /// check accepts, a flow no route/address/interface/neighbour/tunnel
    /// change has made stale, the outgoing interface up, the packet within
    /// its MTU, and TTL above 1.
    ///
    /// `@_transparent` rather than `@inline(__always)`: the receive loop it
    /// belongs in is past the size where the optimizer still honours the
    /// latter (measured: the call alone cost about 2 ns a packet).
    @_transparent
    func fastForward(_ packet: PacketHandle, linkHeader: Int, rx: InterfaceIndex) -> Bool {
        var p = packet
        let buffer = pool.bytes(p)
        guard buffer.count >= linkHeader &+ IPv4Packet.minimumHeaderLength else { return false }
        let ip = IPv4Packet(unchecked: buffer.tail(from: linkHeader))
        guard ip.bytes.be8(IPv4Packet.Field.versionIHL) == 0x45, !ip.isFragment else { return false }
        let total = ip.totalLength
        guard total >= IPv4Packet.minimumHeaderLength, total <= ip.bytes.count else { return false }
        // The key as `flowKey` makes it; version, IHL and fragment already checked.
        var ports: UInt32 = 0
        if configuration.ecmpHash == .l4 && total >= 24 {
            let proto = ip.proto
            if proto == .tcp || proto == .udp { ports = ip.bytes.be32(IPv4Packet.minimumHeaderLength) }
        }
        let fi = flows.find(FlowKey(destination: ip.destination.rawValue, source: ip.source.rawValue, ports: ports, tos: ip.tos))
        guard fi != FlowTable.none else {
            hot.pointee.counters.flowMisses &+= 1
            return false
        }
        guard InternetChecksum.verifiesIPv4Header(ip.bytes.baseAddress!) else { return false }
        if ifs[rx].rpf != .off && !reversePathAcceptsOutOfLine(ip.source.rawValue, rx: rx) { return false }
        let f = flows.entries + Int(fi)
        guard f.pointee.fibGeneration == UInt32(truncatingIfNeeded: fibView.pointee.generation) else {
            hot.pointee.counters.flowsInvalidated &+= 1
            return false
        }
        if f.pointee.isTunnel { return fastForwardIntoTunnel(p, f, ip: ip, linkHeader: linkHeader, rx: rx) }
        let n = neighbors.entries + Int(f.pointee.egress)
        guard n.pointee.generation == f.pointee.egressGeneration, n.pointee.state == .reachable else {
            hot.pointee.counters.flowsInvalidated &+= 1
            return false
        }
        let out = Int(n.pointee.interface)
        let o = ifs + out
        guard o.pointee.up, ip.ttl > 1 else { return false }
        if _slowPath(p.needsOffload) {
            guard offloadOnFastPath(&p, linkHeader: linkHeader, total: total, egress: o) else { return false }
        } else {
            guard total <= o.pointee.mtu else { return false }
        }
        if linkHeader == 0 {
            // A decapsulated packet going out on Ethernet needs a link header.
            guard pool.prepend(&p, EthernetFrame.headerLength) else { return false }
        }
        countFastForward(f, ip: ip, total: total, rx: rx)
        p.length = UInt32(truncatingIfNeeded: EthernetFrame.headerLength &+ total)  // drop link padding
        let frame = pool.bytes(p)
        MACAddress(rawValue: f.pointee.mac).write(to: frame, at: EthernetFrame.Field.destination)
        MACAddress(rawValue: o.pointee.mac).write(to: frame, at: EthernetFrame.Field.source)
        if linkHeader == 0 { frame.setBE16(EthernetFrame.Field.etherType, EtherType.ipv4.rawValue) }
        enqueueTransmit(p, on: out)
        return true
    }

    /// The fast path for a packet decapsulated from a tunnel. Out of line:
    /// tunnels make the fast path reachable from itself (a flow into a
    /// tunnel whose underlay leads back here), and a cycle would keep the
    /// compiler from inlining `fastForward` into the receive loop.
    @inline(never)
    func fastForwardDecapsulated(_ packet: PacketHandle, rx: InterfaceIndex) -> Bool {
        fastForward(packet, linkHeader: 0, rx: rx)
    }

    @inline(__always)
    func countFastForward(_ f: UnsafeMutablePointer<FlowTable.Entry>, ip: IPv4Packet, total: Int, rx: InterfaceIndex) {
        ip.decrementTTL()
        f.pointee.packets &+= 1
        f.pointee.bytes &+= UInt64(total)
        f.pointee.lastUsed = FlowTable.ticks(hot.pointee.now)
        hot.pointee.counters.flowHits &+= 1
        hot.pointee.counters.ipReceived &+= 1
        hot.pointee.counters.ipForwarded &+= 1
        ifs[rx].counters.forwarded &+= 1
    }

    /// The fast path's tunnel egress, kept out of line so the Ethernet
    /// case stays small enough to inline into the receive loop.
    @inline(never)
    func fastForwardIntoTunnel(_ packet: PacketHandle, _ f: UnsafeMutablePointer<FlowTable.Entry>, ip: IPv4Packet,
                               linkHeader: Int, rx: InterfaceIndex) -> Bool {
        let t = Int(f.pointee.egress & ~FlowTable.tunnelTag)
        let st = tunnelStates + t
        guard st.pointee.inUse, st.pointee.alive, st.pointee.generation == f.pointee.egressGeneration else {
            hot.pointee.counters.flowsInvalidated &+= 1
            return false
        }
        let o = ifs + st.pointee.interface
        let total = ip.totalLength
        guard o.pointee.up, ip.ttl > 1 else { return false }
        var p = packet
        if linkHeader > 0 { pool.consume(&p, linkHeader) }
        p.length = UInt32(truncatingIfNeeded: total)  // drop link padding
        // A super-frame fits when its segments do; it is cut on its way in.
        if p.segmentSize != 0 {
            guard let s = segmentLength(p), s <= o.pointee.mtu else { return false }
        } else {
            guard total <= o.pointee.mtu else { return false }
        }
        countFastForward(f, ip: ip, total: total, rx: rx)
        if p.needsOffload {
            tunnelOutputWithoutOffloads(t, p, interface: st.pointee.interface)
            return true
        }
        // The tunnel takes the IP packet; its encapsulation does the rest.
        o.pointee.counters.txPackets &+= 1
        o.pointee.counters.txBytes &+= UInt64(total)
        tunnelOutput(t, p)
        return true
    }

    /// A packet with offloads on the fast path: to a port that takes them it
    /// goes whole if each segment fits the MTU; to one that does not, a
    /// partial checksum is completed here, and a super-frame goes to the slow
    /// path to be cut.
    @inline(never)
    func offloadOnFastPath(_ p: inout PacketHandle, linkHeader: Int, total: Int, egress o: UnsafeMutablePointer<InterfaceSlot>) -> Bool {
        var ip = p
        pool.consume(&ip, linkHeader)
        ip.length = UInt32(truncatingIfNeeded: total)
        if p.segmentSize != 0 {
            guard o.pointee.offloads, let s = segmentLength(ip) else { return false }
            return s <= o.pointee.mtu
        }
        guard total <= o.pointee.mtu else { return false }
        if !o.pointee.offloads {
            guard let l = Segmentation.layout(pool.bytes(ip), network: 0) else { return false }
            Segmentation.completeChecksum(pool.bytes(ip), layout: l)
            p.offload &= ~PacketHandle.checksumPartial
        }
        return true
    }

    @inline(never)
    func reversePathAcceptsOutOfLine(_ source: UInt32, rx: InterfaceIndex) -> Bool {
        reversePathAccepts(source, rx: rx)
    }

    /// Called by the slow path after it forwarded a packet whole through a
    /// reachable neighbour or a tunnel: remembers the decision for the
    /// packet's key. No flow for ICMP (NetBSD's rule: errors and echoes stay
    /// visible to the slow path), nor for packets with options or
    /// fragments, which the fast path never takes.
    @inline(__always)
    func installFlow(_ key: FlowKey, proto: IPProtocol, headerLength: Int, fragment: Bool, out: InterfaceIndex,
                     neighbor: UInt32, nextHop: UInt32) {
        guard flows.capacity > 0, proto != .icmp, headerLength == IPv4Packet.minimumHeaderLength, !fragment else { return }
        installFlowEntry(key, out: out, neighbor: neighbor, nextHop: nextHop)
    }

    /// The installing part, out of line: it keeps the receive loop small
    /// enough for the compiler to inline the fast path into it.
    @inline(never)
    func installFlowEntry(_ key: FlowKey, out: InterfaceIndex, neighbor: UInt32, nextHop: UInt32) {
        let egress: UInt32, generation: UInt32, rewrite: UInt64
        let tunnel = ifs[out].tunnel
        if tunnel >= 0 {
            let st = tunnelStates + Int(tunnel)
            guard st.pointee.inUse, st.pointee.alive else { return }
            egress = FlowTable.tunnelTag | UInt32(tunnel)
            generation = st.pointee.generation
            rewrite = UInt64(nextHop)
        } else {
            guard neighbor != NeighborTable<UInt32>.none else { return }
            let n = neighbors.entries + Int(neighbor)
            guard n.pointee.state == .reachable else { return }
            egress = neighbor
            generation = n.pointee.generation
            rewrite = n.pointee.mac
        }
        let r = flows.install(key, egress: egress, egressGeneration: generation, rewrite: rewrite,
                              fibGeneration: fibView.pointee.generation, now: FlowTable.ticks(hot.pointee.now))
        if r.created { hot.pointee.counters.flowsCreated &+= 1 }
        if r.evicted { hot.pointee.counters.flowsEvicted &+= 1 }
        if hot.pointee.nextFlowSweep == 0 { hot.pointee.nextFlowSweep = hot.pointee.now + 1_000_000_000 }
    }

    /// Whether a flow still holds: same FIB generation, and its neighbour
    /// entry or tunnel unchanged since it was installed.
    func flowIsCurrent(_ f: FlowTable.Entry) -> Bool {
        guard f.fibGeneration == UInt32(truncatingIfNeeded: fibView.pointee.generation) else { return false }
        if f.isTunnel {
            let st = tunnelStates[Int(f.egress & ~FlowTable.tunnelTag)]
            return st.inUse && st.alive && st.generation == f.egressGeneration
        }
        return neighbors.entries[Int(f.egress)].generation == f.egressGeneration
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
        flows.forEachLive { i in
            let f = flows.entries[Int(i)]
            if !flowIsCurrent(f) || nowTicks &- f.lastUsed >= idleTicks {
                flows.remove(i)
                hot.pointee.counters.flowsExpired &+= 1
            }
        }
        if flows.count == 0 { hot.pointee.nextFlowSweep = 0 }
    }

    /// Removes every flow (`anygatectl flows flush`). Returns how many went.
    @discardableResult
    public func flushFlows() -> Int {
        let n = flows.removeAll() + flows6.flush()
        hot.pointee.counters.flowsFlushed &+= UInt64(n)
        return n
    }

    /// The flows, oldest first.
    public var flowList: [Flow] { flows.liveIndices.map(flow(at:)) }

    /// One flow entry as `show flows` prints it.
    func flow(at i: UInt32) -> Flow {
        let nowTicks = FlowTable.ticks(hot.pointee.now)
        let f = flows.entries[Int(i)]
        let interface: InterfaceIndex, nextHop: UInt32
        if f.isTunnel {
            interface = tunnelStates[Int(f.egress & ~FlowTable.tunnelTag)].interface
            nextHop = UInt32(truncatingIfNeeded: f.mac)
        } else {
            let n = neighbors.entries[Int(f.egress)]
            interface = Int(n.interface)
            nextHop = n.address
        }
        return Flow(source: IPv4Address(rawValue: f.source), destination: IPv4Address(rawValue: f.destination), tos: f.tos,
                    sourcePort: f.ports == 0 ? nil : UInt16(truncatingIfNeeded: f.ports >> 16),
                    destinationPort: f.ports == 0 ? nil : UInt16(truncatingIfNeeded: f.ports),
                    interface: interface, nextHop: IPv4Address(rawValue: nextHop), packets: f.packets, bytes: f.bytes,
                    idle: Interval(nanoseconds: Int64(nowTicks &- f.lastUsed) << FlowTable.tickShift),
                    valid: flowIsCurrent(f))
    }

    /// The ip6flow entries.
    public var flow6List: [Flow6] {
        flows6.liveIndices.map { i in
            let f = flows6.entries[i]
            var current = f.fibGeneration == fibView.pointee.generation && f.fib6Generation == fib6View.pointee.generation
                && hot.pointee.now &- f.lastUsed < configuration.ipflow.idleTimeout.nanoseconds
            let nextHop: IPv6Address
            if f.tunnel >= 0 {
                // Into a tunnel: no neighbour; the destination is reached through it.
                let st = tunnelStates[Int(f.tunnel)]
                current = current && st.inUse && st.alive && st.generation == f.neighborGeneration
                nextHop = f.destination
            } else {
                let n = neighbors6.entries[Int(f.neighbor)]
                current = current && n.generation == f.neighborGeneration && n.state == .reachable
                nextHop = n.address
            }
            return Flow6(source: f.source, destination: f.destination, flowLabel: f.flowLabel, interface: Int(f.out),
                         nextHop: nextHop, packets: f.packets, bytes: f.bytes,
                         idle: Interval(nanoseconds: hot.pointee.now - f.lastUsed), valid: current)
        }
    }

    /// Number of flows in the table.
    public var flowCount: Int { flows.count }

    /// Bytes one flow entry takes in the preallocated table.
    public static var flowEntryBytes: Int { MemoryLayout<FlowTable.Entry>.stride }
}
