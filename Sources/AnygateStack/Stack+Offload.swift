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
        guard l.headersLength + size <= pool.dataCapacity else { return drop(packet, .segmentationFailed, tx: out) }
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
    func sendFrameWithoutOffloads(_ p: PacketHandle, on out: InterfaceIndex, to mac: UInt64) {
        withoutOffloads(p, out: out) { sendFrame($0, on: out, to: mac, type: .ipv4) }
    }

    /// Into a tunnel: segments (or a completed checksum) each sent on the
    /// tunnel's interface and encapsulated.
    @inline(never)
    func tunnelOutputWithoutOffloads(_ t: Int, _ p: PacketHandle, interface out: InterfaceIndex) {
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
