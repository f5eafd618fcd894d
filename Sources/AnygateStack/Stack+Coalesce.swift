import AnygateWire

/// Receive-side coalescing (GRO) for ports that take super-frames: before a
/// transmit queue goes to a port with offloads, the TCP segments of each
/// flow in it are merged into one super-frame, so the port writes one frame
/// (and the host's TCP receives one) where it would have written dozens.
///
/// Merged only when: IPv4 without options or fragments, or IPv6 without
/// extension headers; TCP with only ACK (PSH allowed on the last), the same
/// addresses, ports, TOS, TTL, DF (IPv6: traffic class, flow label, hop
/// limit), acknowledgment, window and options, contiguous sequence numbers, every
/// segment but the last a full segment, and **each segment's checksum
/// verified** — GRE carries no integrity check of its own, and a merged
/// super-frame goes out with a partial checksum that the receiver would
/// complete over corrupted data. A segment that fails its checksum is
/// passed on unmerged, with its bad checksum, for the receiver to drop.
extension Stack {
    /// How many flows' runs may be open at once while a queue is walked.
    static let coalesceRuns = 8

    /// Coalesces interface `i`'s queue in place; returns its new length.
    /// Segments of several flows may interleave: each flow's run collects
    /// its own, and the merged super-frame takes the place of the run's
    /// first segment (order within a flow is kept; between flows it may
    /// change, as in Linux GRO).
    @inline(never)
    func coalesceQueue(_ i: InterfaceIndex, count: Int) -> Int {
        let q = txQueues + i &* txCapacity
        let next = coalesceLinks, absorbed = coalesceAbsorbed, runs = coalesceOpenRuns
        for j in 0..<count { next[j] = -1; absorbed[j] = false }
        var open = 0
        for j in 0..<count {
            guard let s = TCPSegmentView(pool.bytes(q[j]), handle: q[j]) else { continue }
            var r = 0
            while r < open && !runs[r].sameFlow(s) { r += 1 }
            if r < open {
                if runs[r].accepts(s, pool: pool) {
                    // Checksums are checked only where a merge would happen:
                    // the head when a second segment comes, then each one joining.
                    if !runs[r].headVerified {
                        guard runs[r].headView.checksumValid else {
                            runs[r].start(j, s)  // the head goes on alone
                            continue
                        }
                        runs[r].headVerified = true
                    }
                    guard s.checksumValid else { continue }  // passed on alone, its bad checksum kept
                    next[runs[r].last] = Int32(j)
                    runs[r].append(j, s)
                    continue
                }
                closeRun(runs[r], q)
                runs[r].start(j, s)
                continue
            }
            if open == Stack.coalesceRuns {
                // Room for a new flow: the oldest run ends here.
                closeRun(runs[0], q)
                for k in 1..<open { runs[k - 1] = runs[k] }
                open -= 1
            }
            runs[open].start(j, s)
            open += 1
        }
        for r in 0..<open { closeRun(runs[r], q) }
        var out = 0
        for j in 0..<count where !absorbed[j] {
            q[out] = q[j]
            out += 1
        }
        return out
    }

    /// Merges a run of two or more segments: the super-frame takes the first
    /// one's place and the others are marked absorbed. Without a super-frame
    /// buffer the segments go as they are.
    private func closeRun(_ run: CoalesceRun, _ q: UnsafeMutablePointer<PacketHandle>) {
        guard run.count > 1, var m = pool.allocateSuperFrame() else { return }
        let headers = run.headersLength
        let first = q[run.first]
        pool.setLength(&m, run.totalLength)
        let dst = pool.bytes(m)
        var length = Int(first.length)
        dst.slice(0, length).copyMemory(from: UnsafeRawBufferPointer(pool.bytes(first)))
        var psh = pool.bytes(first).be8(run.tcp + 13) & 0x08
        var k = Int(coalesceLinks[run.first])
        pool.free(first)
        while k >= 0 {
            let b = pool.bytes(q[k])
            let payload = Int(q[k].length) - headers
            dst.slice(length, payload).copyMemory(from: UnsafeRawBufferPointer(b.slice(headers, payload)))
            length += payload
            psh |= b.be8(run.tcp + 13) & 0x08
            pool.free(q[k])
            coalesceAbsorbed[k] = true
            k = Int(coalesceLinks[k])
        }
        let ip = dst.tail(from: EthernetFrame.headerLength)
        let ipLength = length - EthernetFrame.headerLength
        if run.headView.layout.isIPv6 {
            ip.setBE16(IPv6Packet.Field.payloadLength, UInt16(ipLength - IPv6Packet.headerLength))
        } else {
            ip.setBE16(2, UInt16(ipLength))
            ip.setBE16(10, 0)
            ip.setBE16(10, InternetChecksum.checksum(ip.slice(0, 20)))
        }
        let tcp = run.tcp
        dst.setBE8(tcp + 13, dst.be8(tcp + 13) | psh)
        // Partial, as a NIC would leave it.
        var l = run.headView.layout
        l.payloadLength = length - l.headersLength
        dst.setBE16(tcp + 16, Segmentation.partialChecksum(dst, layout: l))
        m.segmentSize = UInt16(run.segmentSize)
        m.offload = PacketHandle.checksumPartial
        q[run.first] = m
        hot.pointee.counters.coalescedSegments &+= UInt64(run.count)
        hot.pointee.counters.coalescedFrames &+= 1
    }
}

/// An Ethernet/IPv4/TCP or Ethernet/IPv6/TCP segment a run may take, read once.
struct TCPSegmentView {
    var bytes: UnsafeMutableRawBufferPointer
    var payloadLength: Int
    var sequence: UInt32
    var flags: UInt8
    var layout: Segmentation.Layout
    /// The device did not verify its checksum: it must be, before a merge.
    var needsCheck: Bool

    static var empty: TCPSegmentView { TCPSegmentView() }
    private init() {
        bytes = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        payloadLength = 0; sequence = 0; flags = 0; needsCheck = false
        layout = Segmentation.Layout(network: 0, ipHeaderLength: 0, transportHeaderLength: 0, isIPv6: false, isTCP: true, payloadLength: 0)
    }

    init?(_ b: UnsafeMutableRawBufferPointer, handle p: PacketHandle) {
        guard p.segmentSize == 0, p.offload & PacketHandle.checksumPartial == 0, b.count >= EthernetFrame.headerLength + 40 else {
            return nil
        }
        let ipHeader: Int, ipLength: Int, isIPv6: Bool
        switch b.be16(12) {
        case EtherType.ipv4.rawValue:
            guard b.be8(14) == 0x45, b.be8(14 + 9) == IPProtocol.tcp.rawValue, b.be16(14 + 6) & 0x3FFF == 0 else { return nil }
            ipHeader = 20; ipLength = Int(b.be16(14 + 2)); isIPv6 = false
        case EtherType.ipv6.rawValue:
            // TCP right after the IPv6 header (no extension headers).
            guard b.be8(14) >> 4 == 6, b.be8(14 + IPv6Packet.Field.nextHeader) == IPProtocol.tcp.rawValue,
                  b.count >= EthernetFrame.headerLength + 60 else { return nil }
            ipHeader = IPv6Packet.headerLength; ipLength = IPv6Packet.headerLength + Int(b.be16(14 + IPv6Packet.Field.payloadLength))
            isIPv6 = true
        default:
            return nil
        }
        let t = EthernetFrame.headerLength + ipHeader
        let tcpHeader = Int(b.be8(t + 12) >> 4) * 4
        guard tcpHeader >= 20, EthernetFrame.headerLength + ipLength == b.count, ipLength >= ipHeader + tcpHeader else { return nil }
        let flags = b.be8(t + 13)
        // ACK, and PSH; nothing that changes the connection's state.
        guard flags & ~UInt8(0x18) == 0, flags & 0x10 != 0 else { return nil }
        bytes = b
        payloadLength = ipLength - ipHeader - tcpHeader
        guard payloadLength > 0 else { return nil }
        sequence = b.be32(t + 4)
        self.flags = flags
        layout = Segmentation.Layout(network: EthernetFrame.headerLength, ipHeaderLength: ipHeader, transportHeaderLength: tcpHeader,
                                     isIPv6: isIPv6, isTCP: true, payloadLength: payloadLength)
        needsCheck = p.offload & PacketHandle.checksumVerified == 0
    }

    /// Where the TCP header starts.
    var tcp: Int { EthernetFrame.headerLength + layout.ipHeaderLength }

    /// Whether its TCP checksum is right (or the device said so).
    var checksumValid: Bool { !needsCheck || Segmentation.verifiesChecksum(bytes, layout: layout) }

    var headersLength: Int { bytes.count - payloadLength }
}

/// One flow's segments being merged (linked through `coalesceLinks`).
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
    /// The first segment, and whether its checksum was found right.
    var headView = TCPSegmentView.empty
    var headVerified = false
    /// Where the TCP header starts in this run's frames.
    var tcp = 0

    /// Whether `s` belongs to this run's flow (family, addresses and ports).
    func sameFlow(_ s: TCPSegmentView) -> Bool {
        guard let h = head, s.tcp == tcp else { return false }
        let b = s.bytes
        if s.layout.isIPv6 {
            return b.slice(22, 32).elementsEqual(h.slice(22, 32)) && b.be32(tcp) == h.be32(tcp)
        }
        return b.be32(26) == h.be32(26) && b.be32(30) == h.be32(30) && b.be32(tcp) == h.be32(tcp)
    }

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
        headView = s
        tcp = s.tcp
        headVerified = !s.needsCheck
    }

    /// Whether `s` continues the run: same headers but the per-segment
    /// fields, the next sequence number, and room left.
    func accepts(_ s: TCPSegmentView, pool: PacketPool) -> Bool {
        guard let h = head, s.headersLength == headersLength, s.sequence == nextSequence,
              lastFlags & 0x08 == 0, lastPayload == segmentSize, s.payloadLength <= segmentSize,
              totalLength + s.payloadLength <= min(pool.superFrameDataCapacity, EthernetFrame.headerLength + 65535) else { return false }
        let b = s.bytes
        guard s.tcp == tcp, b.slice(0, 14).elementsEqual(h.slice(0, 14)) else { return false }
        if s.layout.isIPv6 {
            // Version, traffic class and flow label; next header and hop limit; addresses.
            guard b.be32(14) == h.be32(14), b.be16(20) == h.be16(20), b.slice(22, 32).elementsEqual(h.slice(22, 32)) else { return false }
        } else {
            // IP TOS, DF, TTL, protocol, addresses.
            guard b.be8(15) == h.be8(15), b.be16(20) == h.be16(20), b.be16(22) == h.be16(22),
                  b.slice(26, 8).elementsEqual(h.slice(26, 8)) else { return false }
        }
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
