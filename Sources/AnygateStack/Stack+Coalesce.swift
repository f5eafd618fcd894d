import AnygateWire

/// Receive-side coalescing (GRO) for ports that take super-frames: before a
/// transmit queue goes to a port with offloads, consecutive TCP segments of
/// one flow are merged into one super-frame, so the port writes one frame
/// (and the host's TCP receives one) where it would have written dozens.
///
/// Merged only when: IPv4 without options or fragments, TCP with only ACK
/// (PSH allowed on the last), the same addresses, ports, TOS, TTL, DF,
/// acknowledgment, window and options, contiguous sequence numbers, every
/// segment but the last a full segment, and **each segment's checksum
/// verified** — GRE carries no integrity check of its own, and a merged
/// super-frame goes out with a partial checksum that the receiver would
/// complete over corrupted data. A segment that fails its checksum is
/// passed on unmerged, with its bad checksum, for the receiver to drop.
extension Stack {
    /// Coalesces interface `i`'s queue in place; returns its new length.
    @inline(never)
    func coalesceQueue(_ i: InterfaceIndex, count: Int) -> Int {
        let q = txQueues + i &* txCapacity
        var out = 0
        var run = CoalesceRun()
        for j in 0..<count {
            let p = q[j]
            guard let s = TCPSegmentView(pool.bytes(p), handle: p) else {
                out = closeRun(&run, q, out)
                q[out] = p
                out += 1
                continue
            }
            if run.count > 0 && run.accepts(s, pool: pool) {
                run.append(j, s)
                continue
            }
            out = closeRun(&run, q, out)
            run.start(j, s)
        }
        return closeRun(&run, q, out)
    }

    /// Writes the run's result (its first packet, or their merge) at `out`.
    private func closeRun(_ run: inout CoalesceRun, _ q: UnsafeMutablePointer<PacketHandle>, _ out: Int) -> Int {
        guard run.count > 0 else { return out }
        defer { run = CoalesceRun() }
        if run.count == 1 {
            q[out] = q[run.first]
            return out + 1
        }
        guard let merged = merge(run, q) else {
            // No super-frame buffer: the segments go as they are.
            for k in run.first...run.last { q[out + k - run.first] = q[k] }
            return out + run.last - run.first + 1
        }
        q[out] = merged
        return out + 1
    }

    /// One super-frame from the run's segments (consecutive queue entries).
    private func merge(_ run: CoalesceRun, _ q: UnsafeMutablePointer<PacketHandle>) -> PacketHandle? {
        guard var m = pool.allocateSuperFrame() else { return nil }
        let first = q[run.first]
        let head = pool.bytes(first)
        let headers = run.headersLength
        var length = Int(first.length)
        pool.setLength(&m, run.totalLength)
        let dst = pool.bytes(m)
        dst.slice(0, length).copyMemory(from: UnsafeRawBufferPointer(head))
        var psh = head.be8(run.tcp + 13) & 0x08
        for k in (run.first + 1)...run.last {
            let b = pool.bytes(q[k])
            let payload = Int(q[k].length) - headers
            dst.slice(length, payload).copyMemory(from: UnsafeRawBufferPointer(b.slice(headers, payload)))
            length += payload
            psh |= b.be8(run.tcp + 13) & 0x08
        }
        for k in run.first...run.last { pool.free(q[k]) }
        let ip = dst.tail(from: EthernetFrame.headerLength)
        let ipLength = length - EthernetFrame.headerLength
        ip.setBE16(2, UInt16(ipLength))
        ip.setBE16(10, 0)
        ip.setBE16(10, InternetChecksum.checksum(ip.slice(0, 20)))
        let tcp = run.tcp
        dst.setBE8(tcp + 13, dst.be8(tcp + 13) | psh)
        // Partial, as a NIC would leave it: the pseudo-header sum over the whole length.
        let tcpLength = length - tcp
        let pseudo = InternetChecksum.sum(ip.slice(12, 8)) &+ 6 &+ UInt32(tcpLength)
        dst.setBE16(tcp + 16, InternetChecksum.fold(pseudo))
        m.segmentSize = UInt16(run.segmentSize)
        m.offload = PacketHandle.checksumPartial
        hot.pointee.counters.coalescedSegments &+= UInt64(run.last - run.first + 1)
        hot.pointee.counters.coalescedFrames &+= 1
        return m
    }
}

/// An Ethernet/IPv4/TCP segment a run may take, read once.
struct TCPSegmentView {
    var bytes: UnsafeMutableRawBufferPointer
    var payloadLength: Int
    var sequence: UInt32
    var flags: UInt8

    static let tcp = EthernetFrame.headerLength + 20

    init?(_ b: UnsafeMutableRawBufferPointer, handle p: PacketHandle) {
        let t = TCPSegmentView.tcp
        guard p.segmentSize == 0, p.offload & PacketHandle.checksumPartial == 0, b.count >= t + 20,
              b.be16(12) == EtherType.ipv4.rawValue, b.be8(14) == 0x45, b.be8(14 + 9) == IPProtocol.tcp.rawValue,
              b.be16(14 + 6) & 0x3FFF == 0 else { return nil }
        let ipLength = Int(b.be16(14 + 2))
        let tcpHeader = Int(b.be8(t + 12) >> 4) * 4
        guard tcpHeader >= 20, EthernetFrame.headerLength + ipLength == b.count, ipLength >= 20 + tcpHeader else { return nil }
        let flags = b.be8(t + 13)
        // ACK, and PSH; nothing that changes the connection's state.
        guard flags & ~UInt8(0x18) == 0, flags & 0x10 != 0 else { return nil }
        bytes = b
        payloadLength = ipLength - 20 - tcpHeader
        guard payloadLength > 0 else { return nil }
        sequence = b.be32(t + 4)
        self.flags = flags
        // Each segment's checksum, checked before it may join a merge.
        if p.offload & PacketHandle.checksumVerified == 0 {
            let pseudo = InternetChecksum.sum(b.slice(14 + 12, 8)) &+ 6 &+ UInt32(ipLength - 20)
            guard InternetChecksum.fold(InternetChecksum.sum(b.slice(t, ipLength - 20), initial: pseudo)) == 0xFFFF else { return nil }
        }
    }

    var headersLength: Int { bytes.count - payloadLength }
}

/// Consecutive queue entries being merged.
struct CoalesceRun {
    var count = 0
    var first = 0
    var last = 0
    var headersLength = 0
    var segmentSize = 0
    var totalLength = 0
    var nextSequence: UInt32 = 0
    var lastFlags: UInt8 = 0
    var lastPayload = 0
    /// The first segment's bytes, to compare headers against.
    var head: UnsafeMutableRawBufferPointer? = nil
    let tcp = TCPSegmentView.tcp

    mutating func start(_ j: Int, _ s: TCPSegmentView) {
        count = 1
        first = j; last = j
        headersLength = s.headersLength
        segmentSize = s.payloadLength
        totalLength = s.bytes.count
        nextSequence = s.sequence &+ UInt32(s.payloadLength)
        lastFlags = s.flags
        lastPayload = s.payloadLength
        head = s.bytes
    }

    /// Whether `s` continues the run: same headers but the per-segment
    /// fields, the next sequence number, and room left.
    func accepts(_ s: TCPSegmentView, pool: PacketPool) -> Bool {
        guard let h = head, s.headersLength == headersLength, s.sequence == nextSequence,
              lastFlags & 0x08 == 0, lastPayload == segmentSize, s.payloadLength <= segmentSize,
              totalLength + s.payloadLength <= min(pool.superFrameDataCapacity, EthernetFrame.headerLength + 65535) else { return false }
        let b = s.bytes
        // Ethernet header; IP TOS, DF, TTL, protocol, addresses.
        guard b.slice(0, 14).elementsEqual(h.slice(0, 14)), b.be8(15) == h.be8(15), b.be16(20) == h.be16(20),
              b.be16(22) == h.be16(22), b.slice(26, 8).elementsEqual(h.slice(26, 8)) else { return false }
        // TCP ports; acknowledgment, header length, window; options.
        let t = tcp
        return b.slice(t, 4).elementsEqual(h.slice(t, 4)) && b.slice(t + 8, 5).elementsEqual(h.slice(t + 8, 5))
            && b.be16(t + 14) == h.be16(t + 14) && b.slice(t + 20, headersLength - t - 20).elementsEqual(h.slice(t + 20, headersLength - t - 20))
    }

    mutating func append(_ j: Int, _ s: TCPSegmentView) {
        count += 1
        last = j
        totalLength += s.payloadLength
        nextSequence = s.sequence &+ UInt32(s.payloadLength)
        lastFlags = s.flags
        lastPayload = s.payloadLength
    }
}
