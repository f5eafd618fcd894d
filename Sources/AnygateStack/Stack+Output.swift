import AnygateWire

extension Stack {
    // MARK: Forwarding (RFC 1812 section 5.2)

    /// Forwards a validated packet (bytes start at the IP header) along `route`.
    @inline(__always)
    func forward(_ p: PacketHandle, route best: UnsafeMutablePointer<RouteSlot<IPv4Address>>, rx: InterfaceIndex) {
        let ip = IPv4Packet(unchecked: pool.bytes(p))
        if best.pointee.kind == .blackhole { return drop(p, .blackhole, rx: rx) }
        // The flow key feeds the ECMP choice and the flow cache; without either it is not read.
        let multipath = best.pointee.memberCount > 1
        let key = multipath || flows.capacity > 0 ? flowKey(ip) : FlowKey(destination: 0, source: 0, ports: 0, tos: 0)
        let route = multipath ? fibView.pointee.member(of: best, hash: ecmpHash(key)) : best
        if ip.ttl <= 1 {
            sendICMPError(about: p, type: .timeExceeded, code: ICMPv4TimeExceededCode.ttl, rx: rx, linkBroadcast: false)
            return drop(p, .ttlExpired, rx: rx)
        }
        let out = Int(route.pointee.interface)
        let outSlot = ifs + out
        guard outSlot.pointee.up else {
            sendICMPError(about: p, type: .destinationUnreachable, code: ICMPv4UnreachableCode.host, rx: rx, linkBroadcast: false)
            return drop(p, .interfaceDown, rx: rx)
        }
        let mtu = outSlot.pointee.mtu
        let nextHop = route.pointee.kind == .gateway ? route.pointee.gateway.rawValue : ip.destination.rawValue
        // A super-frame is measured by its segments: DF and fragmentation-needed keep their meaning per segment.
        var size = ip.totalLength
        if _slowPath(p.segmentSize != 0) {
            guard let s = segmentLength(p) else { return drop(p, .segmentationFailed, rx: rx) }
            size = s
        }
        if size > mtu && ip.dontFragment {
            sendICMPError(about: p, type: .destinationUnreachable, code: ICMPv4UnreachableCode.fragmentationNeeded,
                          rest: UInt32(truncatingIfNeeded: mtu), rx: rx, linkBroadcast: false)
            return drop(p, .fragmentationNeeded, rx: rx)
        }
        ip.decrementTTL()
        hot.pointee.counters.ipForwarded &+= 1
        ifs[rx].counters.forwarded &+= 1
        if _slowPath(p.segmentSize != 0) && size > mtu {
            segmentThenFragment(p, mtu: mtu, out: out, nextHop: nextHop)
        } else if size > mtu {
            fragment(p, mtu: mtu, out: out, nextHop: nextHop)
        } else {
            // Read the flow's facts before the packet leaves our hands.
            let proto = ip.proto, hl = ip.headerLength, isFragment = ip.isFragment
            let neighbor = resolveAndSend(p, out: out, nextHop: nextHop)
            installFlow(key, proto: proto, headerLength: hl, fragment: isFragment, out: out, neighbor: neighbor,
                        nextHop: nextHop)
        }
    }

    /// Sends a packet the stack originated (bytes start at a complete IP
    /// header with its checksum). Fragments it if needed and allowed.
    func outputLocal(_ p: PacketHandle) throws(SendError) {
        let ip = IPv4Packet(unchecked: pool.bytes(p))
        let dst = ip.destination
        guard let best = fibView.pointee.lookup(dst.rawValue) else {
            drop(p, .noRoute, side: .output)
            throw .noRoute(dst)
        }
        let slot = best.pointee.memberCount > 1 ? fibView.pointee.member(of: best, hash: ecmpHash(flowKey(ip))) : best
        let route = slot.pointee
        hot.pointee.counters.ipSent &+= 1
        switch route.kind {
        case .local:
            // To ourselves: delivered without a wire, once this send is over.
            loopBack(p, rx: Int(route.interface))
        case .broadcast:
            // A subnet's directed broadcast goes out as a link-layer broadcast, unfragmented.
            let out = Int(route.interface)
            guard ifs[out].up else {
                drop(p, .interfaceDown, tx: out)
                throw .interfaceDown
            }
            guard ip.totalLength <= ifs[out].mtu else {
                drop(p, .fragmentationNeeded, tx: out)
                throw .tooBig(mtu: ifs[out].mtu)
            }
            sendFrame(p, on: out, to: MACAddress.broadcast.rawValue, type: .ipv4)
        case .blackhole:
            drop(p, .blackhole, side: .output)
        case .connected, .gateway:
            let out = Int(route.interface)
            guard ifs[out].up else {
                drop(p, .interfaceDown, tx: out)
                throw .interfaceDown
            }
            let mtu = ifs[out].mtu
            let nextHop = route.kind == .gateway ? route.gateway.rawValue : dst.rawValue
            // A super-frame is measured by its segments.
            if p.segmentSize != 0, let s = segmentLength(p), s <= mtu {
                resolveAndSend(p, out: out, nextHop: nextHop)
            } else if ip.totalLength > mtu {
                if ip.dontFragment {
                    drop(p, .fragmentationNeeded, tx: out)
                    throw .tooBig(mtu: mtu)
                }
                fragment(p, mtu: mtu, out: out, nextHop: nextHop)
            } else {
                resolveAndSend(p, out: out, nextHop: nextHop)
            }
        }
    }

    /// Splits a datagram into fragments that fit `mtu` (RFC 791 section 3.2,
    /// RFC 1812 section 5.2.6): the first keeps every option, later ones only
    /// options with the copied flag. Consumes `p`.
    func fragment(_ p: PacketHandle, mtu: Int, out: InterfaceIndex, nextHop: UInt32) {
        // A checksum left partial cannot be completed once the payload is in pieces.
        if _slowPath(p.offload & PacketHandle.checksumPartial != 0),
           let l = Segmentation.layout(pool.bytes(p), network: 0) {
            Segmentation.completeChecksum(pool.bytes(p), layout: l)
        }
        let ip = IPv4Packet(unchecked: pool.bytes(p))
        let hl = ip.headerLength
        let payloadLength = ip.totalLength - hl
        let baseOffset = ip.fragmentOffset
        let baseMF = ip.moreFragments

        // Header for fragments after the first: fixed part plus copied
        // options, padded to 4. (Only packets with options allocate here.)
        var laterOptions = 0
        var copied: [(offset: Int, length: Int)] = []
        if hl > IPv4Packet.minimumHeaderLength {
            var it = IPv4OptionIterator(options: ip.options)
            while let o = it.next() {
                if o.isCopied { copied.append((o.offset, o.length)); laterOptions += o.length }
            }
        }
        let laterHL = IPv4Packet.minimumHeaderLength + ((laterOptions + 3) & ~3)

        guard mtu - hl >= 8, mtu - laterHL >= 8 else { return drop(p, .fragmentationNeeded, tx: out) }
        var offset = 0
        var first = true
        while offset < payloadLength {
            let h = first ? hl : laterHL
            var chunk = min((mtu - h) & ~7, payloadLength - offset)
            if offset + chunk < payloadLength { chunk &= ~7 }
            // Out of buffers part way: the datagram is lost (the fragments
            // already sent cannot make it whole), and counted as such.
            guard var f = pool.allocate() else { return drop(p, .poolExhausted, tx: out) }
            pool.setLength(&f, h + chunk)
            let fb = pool.bytes(f)
            let src = pool.bytes(p)
            if first {
                fb.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: hl)
            } else {
                fb.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: IPv4Packet.minimumHeaderLength)
                var at = IPv4Packet.minimumHeaderLength
                for (o, l) in copied {
                    (fb.baseAddress! + at).copyMemory(from: src.baseAddress! + IPv4Packet.minimumHeaderLength + o, byteCount: l)
                    at += l
                }
                while at < laterHL { fb.storeBytes(of: 0, toByteOffset: at, as: UInt8.self); at += 1 }
                fb.setBE8(0, 0x40 | UInt8(laterHL / 4))
            }
            (fb.baseAddress! + h).copyMemory(from: src.baseAddress! + hl + offset, byteCount: chunk)
            let fh = IPv4Packet(unchecked: fb)
            fh.totalLength = h + chunk
            let more = offset + chunk < payloadLength || baseMF
            var ff = UInt16((baseOffset + offset) >> 3)
            if more { ff |= IPv4Packet.flagMoreFragments }
            fh.flagsAndFragment = ff
            fh.fillChecksum()
            hot.pointee.counters.fragmentsCreated += 1
            resolveAndSend(f, out: out, nextHop: nextHop)
            offset += chunk
            first = false
        }
        hot.pointee.counters.fragmented &+= 1
        pool.free(p)
    }

    // MARK: Neighbour resolution and transmit

    /// Puts an Ethernet header on `p` (bytes start at the IP header) for
    /// `nextHop` and queues it on `out`, or parks it until ARP answers.
    /// Returns the neighbour entry when the packet went out at once, or
    /// `NeighborTable<UInt32>.none` when it waits for resolution.
    @inline(__always) @discardableResult
    func resolveAndSend(_ p: PacketHandle, out: InterfaceIndex, nextHop: UInt32) -> UInt32 {
        let tunnel = ifs[out].tunnel
        if tunnel >= 0 {
            // A tunnel has no offloads: segments and completed checksums go in.
            if _slowPath(p.needsOffload) {
                tunnelOutputWithoutOffloads(Int(tunnel), p, interface: out)
                return NeighborTable<UInt32>.none
            }
            // A tunnel has no link layer: hand the IP packet to its encapsulation.
            ifs[out].counters.txPackets &+= 1
            ifs[out].counters.txBytes &+= UInt64(p.length)
            tunnelOutput(Int(tunnel), p)
            return NeighborTable<UInt32>.none
        }
        let idx = neighbors.find(nextHop, UInt16(truncatingIfNeeded: out))
        if idx != NeighborTable<UInt32>.none && neighbors.entries[Int(idx)].state == .reachable {
            sendFrame(p, on: out, to: neighbors.entries[Int(idx)].mac, type: .ipv4)
            return idx
        }
        return resolveAndSendSlowly(p, out: out, nextHop: nextHop, found: idx)
    }

    /// The rest of `resolveAndSend`, out of line (it keeps the receive loop
    /// small enough for the fast path to be inlined into it): a stale entry
    /// re-probed, an unresolved one queued on, a new one created.
    @inline(never)
    func resolveAndSendSlowly(_ p: PacketHandle, out: InterfaceIndex, nextHop: UInt32, found idx: UInt32) -> UInt32 {
        if idx != NeighborTable<UInt32>.none {
            let e = neighbors.entries + Int(idx)
            if e.pointee.state != .incomplete {
                if e.pointee.state == .stale && hot.pointee.now >= e.pointee.nextProbe {
                    // Keep using the stale address while asking it to confirm (unicast probe).
                    e.pointee.nextProbe = hot.pointee.now + configuration.arp.retransmitInterval.nanoseconds
                    sendARPRequest(for: IPv4Address(rawValue: nextHop), on: out, unicastTo: e.pointee.mac, gratuitous: false)
                }
                sendFrame(p, on: out, to: e.pointee.mac, type: .ipv4)
                return idx
            }
            if let dropped = neighbors.enqueue(idx, p) { drop(dropped, .arpQueueOverflow, tx: out) }
            return NeighborTable<UInt32>.none
        }
        let n = createNeighbor(nextHop, out)
        let e = neighbors.entries + Int(n)
        e.pointee.probes = 1
        e.pointee.nextProbe = hot.pointee.now + configuration.arp.retransmitInterval.nanoseconds
        neighbors.schedule(n)
        _ = neighbors.enqueue(n, p)
        sendARPRequest(for: IPv4Address(rawValue: nextHop), on: out, unicastTo: nil, gratuitous: false)
        return NeighborTable<UInt32>.none
    }

    /// Sends what waited on a neighbour entry that just resolved.
    func releasePending(_ idx: UInt32, interface: InterfaceIndex) {
        let mac = neighbors.entries[Int(idx)].mac
        neighbors.drainPending(idx) { p in sendFrame(p, on: interface, to: mac, type: .ipv4) }
    }

    /// Prepends an Ethernet header (from our MAC) and queues the frame.
    @inline(__always)
    func sendFrame(_ packet: PacketHandle, on out: InterfaceIndex, to mac: UInt64, type: EtherType) {
        if _slowPath(packet.needsOffload && !ifs[out].offloads) { return sendFrameWithoutOffloads(packet, on: out, to: mac, type: type) }
        var p = packet
        guard pool.prepend(&p, EthernetFrame.headerLength) else { return drop(p, .headroomExhausted, tx: out) }
        let b = pool.bytes(p)
        let o = ifs + out
        MACAddress(rawValue: mac).write(to: b, at: EthernetFrame.Field.destination)
        MACAddress(rawValue: o.pointee.mac).write(to: b, at: EthernetFrame.Field.source)
        b.setBE16(EthernetFrame.Field.etherType, type.rawValue)
        enqueueTransmit(p, on: out)
    }

    /// Queues a complete frame for `out`; the queue is handed to the host at
    /// the next flush, or at once when it is full (a batch that cuts many
    /// super-frames into segments can fill it).
    @inline(__always)
    func enqueueTransmit(_ p: PacketHandle, on out: InterfaceIndex) {
        let o = ifs + out
        if _slowPath(o.pointee.capture & CaptureDirections.tx.rawValue != 0) { captureCopy(p, interface: out, outbound: true) }
        let n = o.pointee.txCount
        guard n < txCapacity else { return enqueueAfterHandingOver(p, on: out) }
        if n == 0 {
            dirty[hot.pointee.dirtyCount] = out
            hot.pointee.dirtyCount &+= 1
        }
        txQueues[out &* txCapacity &+ n] = p
        o.pointee.txCount = n &+ 1
        o.pointee.counters.txPackets &+= 1
        o.pointee.counters.txBytes &+= UInt64(p.length)
    }

    /// The queue of `out` is full: hand it to the host now, then queue `p`
    /// (the interface is already on the list `flush` walks).
    @inline(never)
    func enqueueAfterHandingOver(_ p: PacketHandle, on out: InterfaceIndex) {
        handOver(out)
        txQueues[out &* txCapacity] = p
        ifs[out].txCount = 1
        ifs[out].counters.txPackets &+= 1
        ifs[out].counters.txBytes &+= UInt64(p.length)
    }

    /// Sends an ARP request for `target`: broadcast, or unicast to a known
    /// MAC to re-confirm a stale entry; gratuitous announces our own address.
    func sendARPRequest(for target: IPv4Address, on out: InterfaceIndex, unicastTo: UInt64?, gratuitous: Bool) {
        // A tunnel has no link layer to resolve or announce on.
        guard ifs[out].tunnel < 0 else { return }
        guard ifs[out].up else { return }
        // A follower replica neither asks nor announces on the link: the
        // owner does, once for all replicas (what it learns is shared).
        if configuration.replica == .follower {
            if !gratuitous { report(.neighborWanted(address: target, interface: out)) }
            return
        }
        // No buffer: nothing was made, so nothing is dropped (the pool counts it).
        guard var p = pool.allocate() else { return }
        // Speak from the address on the target's subnet (else the first), as
        // IPSELSRC may change it; an announcement speaks for its own address.
        let source = gratuitous ? target
            : selectSource(destination: target, interface: out, incumbent: routeAddress(interface: out, nextHop: target))
        pool.setLength(&p, ARPPacket.length)
        ARPRepr(operation: .request, senderMAC: MACAddress(rawValue: ifs[out].mac), senderIP: source,
                targetMAC: .zero, targetIP: target).emit(into: pool.bytes(p))
        hot.pointee.counters.arpRequestsSent += 1
        hot.pointee.counters.originated &+= 1
        sendFrame(p, on: out, to: unicastTo ?? MACAddress.broadcast.rawValue, type: .arp)
    }
}

extension Stack {
    /// Queues a packet for one of our own addresses (see `loopback`).
    func loopBack(_ p: PacketHandle, rx: InterfaceIndex) {
        guard loopback.count < Stack.loopbackLimit else { return drop(p, .loopbackOverflow, side: .output) }
        if loopback.capacity == 0 { loopback.reserveCapacity(Stack.loopbackLimit) }
        loopback.append((p, rx))
    }

    /// Delivers what the stack sent to itself, and what that delivery sends
    /// to itself in turn, up to the queue's bound per call.
    func drainLoopback() {
        var k = 0
        while k < loopback.count && k < 4 * Stack.loopbackLimit {
            let (p, rx) = loopback[k]
            k += 1
            hot.pointee.counters.looped &+= 1
            localInputWhole(p, ipv6: pool.bytes(p).be8(0) >> 4 == 6, rx: rx, broadcast: false)
        }
        loopback.removeFirst(k)
    }

    /// A whole packet the stack made (looped back, or cut from a
    /// super-frame) for one of our addresses: to local input of its version.
    func localInputWhole(_ p: PacketHandle, ipv6: Bool, rx: InterfaceIndex, broadcast: Bool) {
        guard ipv6 else { return localInput(p, rx: rx, broadcast: broadcast) }
        let chain: IPv6HeaderChain
        do { chain = try IPv6HeaderChain(walking: IPv6Packet(unchecked: pool.bytes(p))) } catch {
            return drop(p, .ipv6HeaderChain, rx: rx)
        }
        localInput6(p, chain: chain, rx: rx)
    }
}
