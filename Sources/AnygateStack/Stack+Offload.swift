import AnygateWire

/// Super-frames and partial checksums (virtio-net offloads).
///
/// A port that takes offloads (a TAP opened with virtio-net headers) hands
/// the stack super-frames — one IP header, one TCP or UDP header, up to
/// 64 KiB of payload and a segment size — and packets whose transport
/// checksum is left partial. The stack forwards them whole: validation,
/// lookup, TTL and header checksum once per super-frame. Where they leave
/// by an interface that takes offloads too, they leave whole; anywhere else
/// (an interface without offloads, a tunnel) the stack cuts them into
/// segments and completes checksums itself (`Segmentation`).
extension Stack {
    /// Says whether interface `i` takes super-frames and partial checksums
    /// (its port writes them with their virtio-net header).
    public func setOffloads(_ i: InterfaceIndex, _ on: Bool) throws(InterfaceError) {
        try check(i)
        ifs[i].offloads = on
    }

    public func offloads(_ i: InterfaceIndex) -> Bool { ifs[i].offloads }

    /// The length of one segment of a super-frame (bytes start at its IP
    /// header): the headers and one segment of payload. Nil when the
    /// headers do not describe a TCP or UDP packet.
    func segmentLength(_ p: PacketHandle) -> Int? {
        guard let l = Segmentation.layout(pool.bytes(p), network: 0) else { return nil }
        return l.headersLength + Int(p.segmentSize)
    }

    /// Cuts a super-frame (bytes start at its IP header) into segments and
    /// hands each to `emit`; completes a partial checksum of an ordinary
    /// packet and hands it on. Consumes `p`. Headers that cannot be cut are
    /// a drop (`segmentationFailed`) on the interface it was leaving by.
    func withoutOffloads(_ p: PacketHandle, out: InterfaceIndex, emit: (PacketHandle) -> Void) {
        var packet = p
        let bytes = pool.bytes(packet)
        guard let l = Segmentation.layout(bytes, network: 0) else { return drop(packet, .segmentationFailed, tx: out) }
        if packet.segmentSize == 0 {
            if packet.offload & PacketHandle.checksumPartial != 0 { Segmentation.completeChecksum(bytes, layout: l) }
            packet.offload = 0
            return emit(packet)
        }
        let size = Int(packet.segmentSize)
        let n = Segmentation.segmentCount(l, segmentSize: size)
        guard l.headersLength + size <= pool.dataCapacity, n <= Segmentation.maxSegments else {
            return drop(packet, .segmentationFailed, tx: out)
        }
        for k in 0..<n {
            // Out of buffers part way: the rest of the super-frame is lost, and counted as one drop.
            guard var s = pool.allocate() else { return drop(packet, .poolExhausted, tx: out) }
            let length = Segmentation.writeSegment(k, of: bytes, layout: l, segmentSize: size,
                                                   into: pool.buffer(s).tail(from: Int(s.offset)))
            pool.setLength(&s, length)
            hot.pointee.counters.segmentsCreated &+= 1
            emit(s)
        }
        hot.pointee.counters.segmented &+= 1
        pool.free(packet)
    }

    /// `sendFrame` for a packet that needs offloads its interface lacks.
    @inline(never)
    func sendFrameWithoutOffloads(_ p: PacketHandle, on out: InterfaceIndex, to mac: UInt64, type: EtherType) {
        withoutOffloads(p, out: out) { sendFrame($0, on: out, to: mac, type: type) }
    }

    /// Into a tunnel: segments (or a completed checksum) each sent on the
    /// tunnel's interface and encapsulated.
    @inline(never)
    func tunnelOutputWithoutOffloads(_ t: Int, _ p: PacketHandle, interface out: InterfaceIndex) {
        // While a capture looks at the tunnel, its segments pass one by one (each copied in `tunnelOutput`).
        if ifs[out].capture == 0 && tunnelOutputAsUDPSuperFrames(t, p, interface: out) { return }
        withoutOffloads(p, out: out) { s in
            ifs[out].counters.txPackets &+= 1
            ifs[out].counters.txBytes &+= UInt64(s.length)
            tunnelOutput(t, s)
        }
    }

    /// A super-frame too large for `mtu` per segment and without DF: cut
    /// into segments, each fragmented on its way out.
    @inline(never)
    func segmentThenFragment(_ p: PacketHandle, mtu: Int, out: InterfaceIndex, nextHop: UInt32) {
        withoutOffloads(p, out: out) { s in
            if Int(s.length) > mtu {
                fragment(s, mtu: mtu, out: out, nextHop: nextHop)
            } else {
                resolveAndSend(s, out: out, nextHop: nextHop)
            }
        }
    }
}

extension Stack {
    /// GRE-in-UDP over the stack's own socket into an underlay port that
    /// takes offloads: the inner super-frame's segments, each behind its GRE
    /// header, are laid end to end as the payload of UDP super-frames (UDP
    /// segmentation offload: every chunk one datagram), so the underlay
    /// carries a few large frames and the next device cuts them. Either
    /// family inside, either underlay. False when this does not apply (the
    /// caller cuts the inner packet itself).
    func tunnelOutputAsUDPSuperFrames(_ t: Int, _ p: PacketHandle, interface out: InterfaceIndex) -> Bool {
        let st = tunnelStates + t
        // GRE over IPsec in UDP 4500 too: each chunk one ESP packet (GRE and a segment, sealed).
        let esp = st.pointee.protected && !st.pointee.espTunnelMode && socketTable[st.pointee.espSocket.value].proto == .udp
        guard p.segmentSize != 0, st.pointee.inUse, st.pointee.udp || esp, tunnelConfigs[t]?.backend == .stack else { return false }
        if esp && st.pointee.outboundSA < 0 { return false }
        let underlay: Int
        if st.pointee.underlay6 {
            guard let r = fib6View.pointee.lookup(st.pointee.remote6) else { return false }
            underlay = Int(r.pointee.interface)
        } else {
            guard let r = fibView.pointee.lookup(st.pointee.remote.rawValue) else { return false }
            underlay = Int(r.pointee.interface)
        }
        guard ifs[underlay].offloads, ifs[underlay].tunnel < 0 else { return false }
        let bytes = pool.bytes(p)
        guard let l = Segmentation.layout(bytes, network: 0) else { return false }
        let inner6 = l.isIPv6
        let type: EtherType = inner6 ? .ipv6 : .ipv4
        let size = Int(p.segmentSize)
        let key = st.pointee.key, sequenced = st.pointee.sequence
        let greLength = GRERepr(protocolType: type, key: key, sequence: sequenced ? 0 : nil).headerLength
        // With ESP around it, a full segment's chunk is its sealed length (the last may be shorter).
        let espFront = esp ? ESPPacket.Field.payload : 0
        let chunk = esp ? ESPPacket.sealedLength(payload: greLength + l.headersLength + size) : greLength + l.headersLength + size
        // A UDP payload holds at most 65 507 bytes; the kernel cuts at most 64 datagrams from one.
        let perFrame = min(64, (65_507 - UDPDatagram.headerLength) / chunk)
        guard perFrame >= 2 else { return false }
        let n = Segmentation.segmentCount(l, segmentSize: size)
        // Every buffer it needs, or none of this (the caller cuts it the ordinary way).
        guard pool.superFramesAvailable >= (n + perFrame - 1) / perFrame else { return false }
        let innerTTL: UInt8, innerTOS: UInt8, hash: UInt32
        if inner6 {
            let inner = IPv6Packet(unchecked: bytes)
            innerTTL = inner.hopLimit; innerTOS = inner.trafficClass; hash = Stack.flowHash6(inner)
        } else {
            let inner = IPv4Packet(unchecked: bytes)
            innerTTL = inner.ttl; innerTOS = inner.tos; hash = Stack.flowHash(inner)
        }
        let sourcePort: UInt16 = 49152 | UInt16(truncatingIfNeeded: hash) & 0x3FFF
        let outerTOS = (st.pointee.tos ?? innerTOS) & 0xFC | innerTOS & 3
        // The inner super-frame goes into the tunnel.
        ifs[out].counters.txPackets &+= 1
        ifs[out].counters.txBytes &+= UInt64(p.length)
        var k = 0
        while k < n {
            let count = min(perFrame, n - k)
            hot.pointee.counters.originated &+= 1
            var q = pool.allocateSuperFrame()!  // counted above
            var at = 0
            let area = pool.buffer(q).tail(from: Int(q.offset))
            var innerBytes = 0
            var sealedAll = true
            for j in k..<(k + count) {
                GRERepr(protocolType: type, key: key, sequence: sequenced ? st.pointee.txSequence : nil).emit(into: area.tail(from: at + espFront))
                if sequenced { st.pointee.txSequence &+= 1 }
                let length = Segmentation.writeSegment(j, of: bytes, layout: l, segmentSize: size, into: area.tail(from: at + espFront + greLength))
                innerBytes += length
                if esp {
                    let payload = greLength + length
                    let sealed = ESPPacket.sealedLength(payload: payload)
                    if espSeal(UnsafeMutableRawBufferPointer(rebasing: area[at..<(at + sealed)]), payload: payload, tunnel: t,
                               nextHeader: IPProtocol.gre.rawValue) != .sealed { sealedAll = false }
                    at += sealed
                } else {
                    at += greLength + length
                }
            }
            pool.setLength(&q, at)
            q.segmentSize = UInt16(chunk)
            q.offload = PacketHandle.checksumPartial
            st.pointee.counters.txPackets &+= UInt64(count)
            st.pointee.counters.txBytes &+= UInt64(innerBytes)
            if !sealedAll {
                // The SA went away or expired mid-batch: nothing of it leaves.
                drop(q, st.pointee.outboundSA < 0 ? .ipsecNoSA : .ipsecSAExpired, tx: st.pointee.interface)
                k += count
                continue
            }
            do {
                try socketSend(esp ? st.pointee.espSocket : st.pointee.socket, q, ttl: st.pointee.ttl == nil ? innerTTL : nil, tos: outerTOS,
                               sourcePort: esp ? nil : sourcePort, flowHash: hash)
            } catch {
                st.pointee.counters.sendErrors &+= 1
            }
            k += count
        }
        pool.free(p)
        return true
    }

    /// A super-frame for one of our addresses — UDP (an underlay port took
    /// GRE-in-UDP whole) or TCP (a host sent the stack's TCP a TSO frame):
    /// cut into its datagrams or segments, each delivered on its own.
    @inline(never)
    func localInputUnbundled(_ p: PacketHandle, rx: InterfaceIndex, broadcast: Bool) {
        let bytes = pool.bytes(p)
        guard let l = Segmentation.layout(bytes, network: 0) else { return drop(p, .segmentationFailed, rx: rx) }
        let size = Int(p.segmentSize)
        let n = Segmentation.segmentCount(l, segmentSize: size)
        guard l.headersLength + size <= pool.dataCapacity, n <= Segmentation.maxSegments else {
            return drop(p, .segmentationFailed, rx: rx)
        }
        hot.pointee.counters.unbundled &+= 1
        for k in 0..<n {
            guard var s = pool.allocate() else {
                // The rest of the super-frame is lost: counted as the drops of its datagrams.
                hot.pointee.counters.unbundledPackets &+= UInt64(n - k)
                countDrops(.poolExhausted, n - k, rx: rx)
                break
            }
            let length = Segmentation.writeSegment(k, of: bytes, layout: l, segmentSize: size, into: pool.buffer(s).tail(from: Int(s.offset)))
            pool.setLength(&s, length)
            s.offload = PacketHandle.checksumVerified  // each checksum was just computed here
            hot.pointee.counters.unbundledPackets &+= 1
            localInputWhole(s, ipv6: l.isIPv6, rx: rx, broadcast: broadcast)
        }
        pool.free(p)
    }
}
