import AnygateWire

extension Stack {
    /// Processes a batch of frames received on `interface`, then flushes the
    /// transmit queues. The stack takes ownership of every handle.
    public func receive(_ packets: UnsafeBufferPointer<PacketHandle>, on interface: InterfaceIndex) {
        precondition(interface >= 0 && interface < configuration.maxInterfaces, "interface index out of range")
        enter()
        if _slowPath(ifs[interface].ipv6 && packets.count >= 4) {
            receiveDualStack(packets, on: interface)
        } else {
            for p in packets { input(p, on: interface) }
        }
        flush()
    }

    /// A batch on an interface with IPv6: its IPv6 lookups run as a batch
    /// stage (`warmRoutes6`) where the full path is what the batch will take —
    /// ip6flow off, or missing for a quarter or more of the last batch here.
    @inline(never)
    func receiveDualStack(_ packets: UnsafeBufferPointer<PacketHandle>, on interface: InterfaceIndex) {
        let misses = hot.pointee.counters.flowMisses
        if packets.count <= Stack.warmBatch && (flows6.capacity == 0 || ifs[interface].ipv6FlowMisses) {
            warmRoutes6(packets)
            for k in 0..<packets.count {
                hot.pointee.warmIndex = k
                input(packets[k], on: interface)
            }
            hot.pointee.warmIndex = -1
        } else {
            for p in packets { input(p, on: interface) }
        }
        ifs[interface].ipv6FlowMisses = (hot.pointee.counters.flowMisses &- misses) &* 4 >= UInt64(packets.count)
    }

    /// Processes one frame (a batch of one).
    public func receive(_ packet: PacketHandle, on interface: InterfaceIndex) {
        precondition(interface >= 0 && interface < configuration.maxInterfaces, "interface index out of range")
        enter()
        input(packet, on: interface)
        flush()
    }

    /// Every received frame starts here. While a trace is armed, frames go
    /// by the traced path (which comes back to `linkInput`); otherwise this
    /// one predictable branch is all tracing costs.
    @inline(__always)
    func input(_ packet: PacketHandle, on rx: InterfaceIndex) {
        if _slowPath(hot.pointee.traceArmed) { return tracedInput(packet, on: rx) }
        linkInput(packet, on: rx)
    }

    /// Link-layer input: accept frames for our MAC, broadcast and multicast.
    @inline(__always)
    func linkInput(_ packet: PacketHandle, on rx: InterfaceIndex) {
        let slot = ifs + rx
        guard slot.pointee.exists, slot.pointee.up else { return inputOnDeadInterface(packet, rx: rx) }
        if _slowPath(slot.pointee.capture & CaptureDirections.rx.rawValue != 0) { captureCopy(packet, interface: rx, outbound: false) }
        slot.pointee.counters.rxPackets &+= 1
        slot.pointee.counters.rxBytes &+= UInt64(packet.length)
        let bytes = pool.bytes(packet)
        guard bytes.count >= EthernetFrame.headerLength else { return drop(packet, .frameTruncated, rx: rx) }
        let eth = EthernetFrame(unchecked: bytes)
        let dst = eth.destination.rawValue
        var linkBroadcast = false
        if dst != slot.pointee.mac {
            guard MACAddress(rawValue: dst).isMulticast else { return drop(packet, .notForUs, rx: rx) }
            linkBroadcast = true
            // Another device using our MAC shows itself in what it
            // broadcasts (ARP above all); checked here, off the unicast path.
            if eth.source.rawValue == slot.pointee.mac && !slot.pointee.hostOwned { return ownSourceMAC(packet, rx: rx) }
        }
        let type = eth.outerEtherType
        var p = packet
        if type == .ipv4 {
            if !linkBroadcast && flows.meta.pointee.count > 0
                && fastForward(packet, linkHeader: EthernetFrame.headerLength, rx: rx) { return }
            pool.consume(&p, EthernetFrame.headerLength)
            ipv4Input(p, rx: rx, linkBroadcast: linkBroadcast)
        } else if type == .arp {
            pool.consume(&p, EthernetFrame.headerLength)
            arpInput(p, rx: rx)
        } else if type == .vlan || type == .qinq {
            drop(packet, .vlanNotConfigured, rx: rx)
        } else if type == .ipv6 {
            pool.consume(&p, EthernetFrame.headerLength)
            ipv6Input(p, rx: rx)
        } else {
            drop(packet, .unknownEtherType, rx: rx)
        }
    }

    /// A frame for an interface that is down or gone: received and dropped
    /// (a removed interface's count goes where its other counts went).
    @inline(never)
    func inputOnDeadInterface(_ packet: PacketHandle, rx: InterfaceIndex) {
        if ifs[rx].exists {
            ifs[rx].counters.rxPackets &+= 1
            ifs[rx].counters.rxBytes &+= UInt64(packet.length)
            return drop(packet, .interfaceDown, rx: rx)
        }
        retiredCounters.rxPackets &+= 1
        retiredCounters.rxDrops &+= 1
        dropCounters[DropReason.interfaceDown.counterIndex] &+= 1
        pool.free(packet)
    }

    /// A broadcast or multicast frame sent from our own MAC: another device
    /// on the link uses it (two gateways given one address), or the link
    /// loops our frames back. (Unicast frames are not checked: the other
    /// device's ARP broadcasts give it away, and the fast path stays as it was.)
    /// Counted, and reported at most every 10 seconds per interface.
    @inline(never)
    func ownSourceMAC(_ packet: PacketHandle, rx: InterfaceIndex) {
        drop(packet, .ownSourceMAC, rx: rx)
        let now = hot.pointee.now
        guard ifs[rx].ownMACReported == .min || now - ifs[rx].ownMACReported >= 10_000_000_000 else { return }
        ifs[rx].ownMACReported = now
        report(.duplicateMAC(interface: rx, mac: MACAddress(rawValue: ifs[rx].mac)))
    }

    // MARK: ARP (RFC 826)

    func arpInput(_ p: PacketHandle, rx: InterfaceIndex) {
        let arp: ARPRepr
        do { arp = try ARPRepr(parsing: pool.bytes(p)) } catch { return drop(p, .arpMalformed, rx: rx) }
        if arp.operation == .request { hot.pointee.counters.arpRequestsReceived += 1 }
        if arp.operation == .reply { hot.pointee.counters.arpRepliesReceived += 1 }
        let sender = arp.senderIP
        let senderUsable = !sender.isUnspecified && !sender.isMulticast && !sender.isLimitedBroadcast
            && !MACAddress(rawValue: arp.senderMAC.rawValue).isMulticast
        let targetIsOurs = interfaceAddresses[rx].contains { $0.address.address == arp.targetIP }
        let now = hot.pointee.now

        // RFC 826 "merge": refresh an existing entry for the sender from any
        // ARP packet; create one only when the packet was aimed at us.
        var idx = senderUsable ? neighbors.find(sender.rawValue, UInt16(rx)) : NeighborTable<UInt32>.none
        if idx != NeighborTable<UInt32>.none {
            confirmFromARP(idx, mac: arp.senderMAC.rawValue, on: rx, now: now)
            nextHopAnswered(sender.rawValue, on: rx)
            releasePending(idx, interface: rx)
        } else if targetIsOurs && senderUsable {
            idx = createNeighbor(sender.rawValue, rx)
            confirmFromARP(idx, mac: arp.senderMAC.rawValue, on: rx, now: now, isNew: true)
            nextHopAnswered(sender.rawValue, on: rx)
        }

        // On a mirrored interface the host answers for its addresses.
        guard arp.operation == .request, targetIsOurs, !ifs[rx].hostOwned else {
            // A gratuitous announcement for an address we do not cache is
            // simply consumed; anything else for someone else is counted.
            let gratuitous = arp.senderIP == arp.targetIP
            if idx == NeighborTable<UInt32>.none && !targetIsOurs && !gratuitous { return drop(p, .arpNotForUs, rx: rx) }
            if ifs[rx].hostOwned && targetIsOurs && arp.operation == .request { return drop(p, .hostOwned, rx: rx) }
            // An answer to us, learnt from: the twin's kernel learns from it too
            // (its own requests left through the stack).
            if _slowPath(ifs[rx].twin), arp.operation == .reply, targetIsOurs { return punt(p, rx: rx, arpFrom: arp.senderMAC) }
            hot.pointee.counters.consumed &+= 1
            pool.free(p)
            return
        }
        // Answer in place: the request's buffer becomes the reply.
        let mac = MACAddress(rawValue: ifs[rx].mac)
        let reply = ARPRepr(operation: .reply, senderMAC: mac, senderIP: arp.targetIP,
                            targetMAC: arp.senderMAC, targetIP: arp.senderIP)
        var out = p
        pool.setLength(&out, ARPPacket.length)
        reply.emit(into: pool.bytes(out))
        hot.pointee.counters.arpRepliesSent += 1
        hot.pointee.counters.consumed &+= 1
        hot.pointee.counters.originated &+= 1
        sendFrame(out, on: rx, to: arp.senderMAC.rawValue, type: .arp)
    }

    /// Confirms a neighbour from ARP; with `arp.shareLearned`, reports what
    /// the other replicas should learn: a new entry, a new MAC, an answered
    /// request, or (at most every `shareInterval`) a refresh.
    func confirmFromARP(_ idx: UInt32, mac: UInt64, on rx: InterfaceIndex, now: Int64, isNew: Bool = false) {
        if configuration.arp.shareLearned {
            let e = neighbors.entries[Int(idx)]
            if isNew || e.state != .reachable || e.mac != mac || now - e.confirmed >= configuration.arp.shareInterval.nanoseconds {
                report(.neighborLearned(address: IPv4Address(rawValue: e.address), interface: rx, mac: MACAddress(rawValue: mac)))
            }
        }
        neighbors.confirm(idx, mac: mac, now: now)
    }

    func createNeighbor(_ address: UInt32, _ interface: InterfaceIndex) -> UInt32 {
        let (i, evicted) = neighbors.create(address, UInt16(interface), now: hot.pointee.now) { p in
            drop(p, .neighborTableFull, side: .output)
        }
        if evicted { hot.pointee.counters.neighborEvictions += 1 }
        return i
    }

    // MARK: IPv4 input (RFC 1812 section 5.2.2)

    @inline(__always)
    func ipv4Input(_ packet: PacketHandle, rx: InterfaceIndex, linkBroadcast: Bool) {
        var p = packet
        let ip = IPv4Packet(unchecked: pool.bytes(p))
        if let error = ip.check() {
            let reason: DropReason
            switch error {
            case .truncated: reason = .ipTruncated
            case .badVersion: reason = .ipBadVersion
            case .badHeaderLength: reason = .ipBadHeaderLength
            case .badTotalLength: reason = .ipBadTotalLength
            case .badChecksum: reason = .ipBadChecksum
            case .badOption, .unsupported: reason = .ipBadOption
            }
            return drop(p, reason, rx: rx)
        }
        hot.pointee.counters.ipReceived &+= 1
        // Drop link-layer padding beyond the IP total length.
        let total = ip.totalLength
        if total < Int(p.length) { p.length = UInt32(truncatingIfNeeded: total) }

        let src = ip.source, dst = ip.destination
        if src.isMulticast || src.isLimitedBroadcast || src.isLoopback {
            return drop(p, .martianSource, rx: rx)
        }
        // 0.0.0.0 is a valid source only towards the limited broadcast (RFC 1122 3.2.1.3, e.g. DHCP).
        if dst.isLimitedBroadcast { return localInput(p, rx: rx, broadcast: true) }
        if src.isUnspecified { return drop(p, .martianSource, rx: rx) }
        if ifs[rx].rpf != .off && !reversePathAcceptsOutOfLine(src.rawValue, rx: rx) { return drop(p, .rpfFailed, rx: rx) }
        if dst.isMulticast {
            // A routing protocol's link-local group (224.0.0.x): the host twin's, if it wants it.
            if _slowPath(ifs[rx].twin), dst.rawValue & 0xFFFF_FF00 == 0xE000_0000,
               twinWants(rx: rx, proto: ip.proto.rawValue, transport: ip.payload, group: UInt8(truncatingIfNeeded: dst.rawValue)) {
                return punt(p, rx: rx)
            }
            return drop(p, .multicastNotSupported, rx: rx)
        }
        if dst.isUnspecified || dst.isLoopback { return drop(p, .martianDestination, rx: rx) }

        guard let route = fibView.pointee.lookup(dst.rawValue) else {
            guard configuration.forwarding else { return drop(p, .notForwarding, rx: rx) }
            sendICMPError(about: p, type: .destinationUnreachable, code: ICMPv4UnreachableCode.net, rx: rx, linkBroadcast: linkBroadcast)
            return drop(p, .noRoute, rx: rx)
        }
        switch route.pointee.kind {
        case .local:
            localInput(p, rx: rx, broadcast: false)
        case .broadcast:
            localInput(p, rx: rx, broadcast: true)
        case .connected, .gateway, .blackhole:
            guard configuration.forwarding else { return drop(p, .notForwarding, rx: rx) }
            guard !linkBroadcast else { return drop(p, .linkBroadcastNotForwarded, rx: rx) }
            forward(p, route: route, rx: rx)
        }
    }

    // MARK: Local delivery

    func localInput(_ packet: PacketHandle, rx: InterfaceIndex, broadcast: Bool) {
        var p = packet
        var ip = IPv4Packet(unchecked: pool.bytes(p))
        if ip.isFragment {
            hot.pointee.counters.fragmentsReceived += 1
            let outcome = reassembly.add(p, ip: ip, interface: rx, pool: pool, now: hot.pointee.now) { reason, q in
                countDrops(reason, q.fragments, rx: q.interface)
            }
            switch outcome {
            case .queued:
                return
            case .dropped(let reason):
                countDrops(reason, 1, rx: rx)
                return
            case .complete(let whole, let fragments):
                hot.pointee.counters.datagramsReassembled += 1
                hot.pointee.counters.fragmentsReassembled &+= UInt64(fragments)
                p = whole
                ip = IPv4Packet(unchecked: pool.bytes(p))
            }
        }
        if _slowPath(p.segmentSize != 0) { return localInputUnbundled(p, rx: rx, broadcast: broadcast) }
        // A checksum the device verified, or left partial (a packet from the
        // host's own stack over a TAP), is not checked again.
        if ip.proto == .udp && p.offload == 0 {
            // A datagram that fails its checksum is discarded silently: it
            // may not be for the port it names (RFC 1122 4.1.3.4).
            do { _ = try UDPDatagram(validating: ip.payload, source: ip.source, destination: ip.destination) } catch {
                return drop(p, error == .badChecksum ? .udpBadChecksum : .udpMalformed, rx: rx)
            }
        }
        // A TCP connection, vestige or listener takes it (or counts its drop).
        if ip.proto == .tcp && !broadcast && tcpInput(p, ip: ip, rx: rx) {
            hot.pointee.counters.ipDelivered &+= 1
            return
        }
        // A socket that takes it consumes it (or drops it: its queue is full).
        if socketCount > 0 && socketInput(p, ip: ip, rx: rx) {
            hot.pointee.counters.ipDelivered &+= 1
            return
        }
        // On a mirrored interface, what is addressed to the host's addresses
        // and not to one of the stack's sockets is the host's to answer.
        if ifs[rx].hostOwned { return drop(p, .hostOwned, rx: rx) }
        // What the stack does not take itself and the host twin wants (a routing protocol's).
        if _slowPath(ifs[rx].twin), !broadcast, ip.proto != .icmp,
           twinWants(rx: rx, proto: ip.proto.rawValue, transport: ip.payload, group: nil) {
            return punt(p, rx: rx)
        }
        hot.pointee.counters.ipDelivered &+= 1
        switch ip.proto {
        case .icmp:
            icmpInput(p, rx: rx, broadcast: broadcast)
        case .tcp:
            if broadcast { return drop(p, .tcpIgnored, rx: rx) }
            tcpRefuse(p, ip: ip, rx: rx)
        case .udp:
            // No socket took it: the port is closed.
            if broadcast { return drop(p, .portUnreachable, rx: rx) }
            sendICMPError(about: p, type: .destinationUnreachable, code: ICMPv4UnreachableCode.port, rx: rx, linkBroadcast: false)
            drop(p, .portUnreachable, rx: rx)
        default:
            if !broadcast {
                sendICMPError(about: p, type: .destinationUnreachable, code: ICMPv4UnreachableCode.protocol, rx: rx, linkBroadcast: false)
            }
            drop(p, .protocolUnreachable, rx: rx)
        }
    }
}

extension Stack {
    /// Gives a locally addressed datagram to the socket it belongs to.
    /// Returns false when no socket takes it (the caller answers as for a
    /// closed port or unknown protocol).
    func socketInput(_ packet: PacketHandle, ip: IPv4Packet, rx: InterfaceIndex) -> Bool {
        var p = packet
        let src = ip.source, dst = ip.destination
        if ip.proto == .udp {
            // Validated by `localInput`.
            let udp = UDPDatagram(unchecked: ip.payload)
            guard let k = demux(.udp, destination: dst, destinationPort: udp.destinationPort, source: src,
                                sourcePort: udp.sourcePort) else { return false }
            let port = udp.sourcePort
            let payloadLength = udp.length - UDPDatagram.headerLength
            pool.consume(&p, ip.headerLength + UDPDatagram.headerLength)
            p.length = UInt32(payloadLength)
            deliver(p, to: k, from: .v4(src), port: port, outerTOS: ip.tos, rx: rx)
            return true
        }
        guard let k = demux(.raw(ip.proto), destination: dst, destinationPort: 0, source: src, sourcePort: 0) else { return false }
        let payloadLength = ip.totalLength - ip.headerLength
        pool.consume(&p, ip.headerLength)
        p.length = UInt32(payloadLength)
        deliver(p, to: k, from: .v4(src), port: 0, outerTOS: ip.tos, rx: rx)
        return true
    }
}

extension Stack {
    // MARK: Reverse-path check (RFC 3704)

    /// Whether `source` passes the arrival interface's reverse-path check.
    @inline(__always)
    func reversePathAccepts(_ source: UInt32, rx: InterfaceIndex) -> Bool {
        guard let r = fibView.pointee.lookup(source) else { return false }
        switch r.pointee.kind {
        case .local, .broadcast, .blackhole: return false
        case .connected, .gateway: break
        }
        if ifs[rx].rpf == .loose { return true }
        return fibView.pointee.anyMember(of: r, leavesBy: rx)
    }

    /// Sets the reverse-path check of an interface or tunnel.
    public func setReversePathFilter(_ i: InterfaceIndex, _ mode: ReversePathFilter) throws(InterfaceError) {
        try check(i)
        ifs[i].rpf = mode
    }

    /// The reverse-path check of an interface.
    public func reversePathFilter(_ i: InterfaceIndex) -> ReversePathFilter { ifs[i].rpf }
}
