import AnygateWire

/// IPv4 and IPv6 reassembly (RFC 791 section 3.2, RFC 815, RFC 8200
/// section 4.5): one table of a fixed number of queues for both families,
/// each building its datagram directly in one pool buffer.
///
/// Rules, chosen for a gateway that faces untrusted peers:
/// - a queue is keyed by (family, source, destination, protocol,
///   identification) — IPv6 has no protocol in the key: the first
///   fragment's next header is the datagram's;
/// - IPv6 fragments must follow the IPv6 header directly (no extension
///   header in front of the fragment header; others are dropped as
///   `ipv6-header-chain`);
/// - a fragment that overlaps bytes already received discards the whole
///   datagram (`fragmentOverlap`) — overlaps are an attack pattern, never
///   needed by an honest sender (the IPv6 rule of RFC 5722, applied to IPv4);
/// - a datagram longer than 65535 bytes or than a pool buffer is discarded
///   (`fragmentTooLarge`);
/// - at most `maxPieces` disjoint ranges per datagram (`fragmentTooManyPieces`);
/// - when every queue is busy, the oldest is discarded for the new one
///   (`reassemblyQueueEvicted`); a queue older than the timeout is discarded
///   (`reassemblyTimeout`) with an ICMP time exceeded (code 1) when its first
///   fragment had arrived (RFC 792).
struct ReassemblyTable {
    /// Where the payload starts inside the buffer: room for the largest IPv4
    /// header in front of it, after the pool's headroom.
    static let maxHeader = 60

    struct Range { var start: Int; var end: Int }

    /// What a queue is for: IPv4 addresses are held in the low 32 bits.
    struct Key: Equatable {
        var ipv6 = false
        var source: IPv6Address = .any
        var destination: IPv6Address = .any
        var proto: UInt8 = 0
        var identification: UInt32 = 0
    }

    struct Queue {
        var inUse = false
        var key = Key()
        var buffer = PacketHandle(index: 0, offset: 0, length: 0)
        var headerLength = 0
        /// Payload length, known once the last fragment (MF clear) arrived.
        var payloadLength = -1
        var received = 0
        /// Fragments taken into this queue so far.
        var fragments = 0
        var created: Int64 = 0
        var interface: InterfaceIndex = 0
        var ranges: [Range] = []
    }

    enum Outcome {
        /// The fragment was kept; the datagram is not complete yet.
        case queued
        /// The datagram is complete: a packet holding the whole datagram
        /// (IPv4, or IPv6 with its fragment header gone), made of
        /// `fragments` fragments (this one included).
        case complete(PacketHandle, fragments: Int)
        /// The fragment was dropped (a discarded queue's other fragments
        /// were reported through `dropped`).
        case dropped(DropReason)
    }

    let maxPieces: Int
    let timeout: Int64
    private(set) var queues: [Queue]

    init(queues: Int, maxPieces: Int, timeout: Interval) {
        self.maxPieces = maxPieces
        self.timeout = timeout.nanoseconds
        self.queues = Array(repeating: Queue(), count: queues)
        for i in 0..<queues { self.queues[i].ranges.reserveCapacity(maxPieces) }
    }

    /// Queues in use: kept as they open and close, so an idle table costs
    /// nothing to ask (the event loop asks for `nextDeadline` every wake-up).
    private(set) var active = 0

    /// Fragments waiting in the queues.
    var heldFragments: Int { queues.reduce(0) { $0 + ($1.inUse ? $1.fragments : 0) } }

    /// Takes one IPv4 fragment (`ip` views it inside `fragment`'s buffer).
    /// The fragment's buffer is always consumed: freed, or kept as the
    /// queue's buffer. A queue discarded with fragments in it is reported
    /// through `dropped` (its fragments are counted there) before it goes.
    mutating func add(_ fragment: PacketHandle, ip: IPv4Packet, interface: InterfaceIndex,
                      pool: PacketPool, now: Int64, dropped: (DropReason, Queue) -> Void) -> Outcome {
        let key = Key(ipv6: false, source: IPv6Address(high: 0, low: UInt64(ip.source.rawValue)),
                      destination: IPv6Address(high: 0, low: UInt64(ip.destination.rawValue)),
                      proto: ip.proto.rawValue, identification: UInt32(ip.identification))
        let hl = ip.headerLength
        let outcome = insert(fragment, key, offset: ip.fragmentOffset, payload: ip.payload.slice(0, ip.totalLength - hl),
                             last: !ip.moreFragments, header: ip.bytes.slice(0, hl), limit: 65535 - 20,
                             interface: interface, pool: pool, now: now, dropped: dropped)
        guard case .complete(let out, _) = outcome else { return outcome }
        let header = IPv4Packet(unchecked: pool.bytes(out))
        header.totalLength = Int(out.length)
        header.flagsAndFragment = header.flagsAndFragment & IPv4Packet.flagDontFragment
        header.fillChecksum()
        return outcome
    }

    /// Takes one IPv6 fragment whose fragment header (`f`) follows the IPv6
    /// header; the datagram comes out as an IPv6 header with `f`'s next
    /// header and the reassembled payload. Consumes the buffer like `add`.
    mutating func add6(_ fragment: PacketHandle, ip: IPv6Packet, _ f: IPv6FragmentRepr, interface: InterfaceIndex,
                       pool: PacketPool, now: Int64, dropped: (DropReason, Queue) -> Void) -> Outcome {
        let key = Key(ipv6: true, source: ip.source, destination: ip.destination, proto: 0, identification: f.identification)
        let start = IPv6Packet.headerLength + IPv6FragmentRepr.headerLength
        let end = IPv6Packet.headerLength + ip.payloadLength
        guard end >= start else {
            pool.free(fragment)
            return .dropped(.ipv6Malformed)
        }
        let outcome = insert(fragment, key, offset: f.offset, payload: ip.bytes.slice(start, end - start), last: !f.moreFragments,
                             header: ip.bytes.slice(0, IPv6Packet.headerLength), limit: 65535 - IPv6FragmentRepr.headerLength,
                             interface: interface, pool: pool, now: now, dropped: dropped)
        guard case .complete(let out, _) = outcome else { return outcome }
        let b = pool.bytes(out)
        b.setBE8(IPv6Packet.Field.nextHeader, f.nextHeader.rawValue)
        b.setBE16(IPv6Packet.Field.payloadLength, UInt16(Int(out.length) - IPv6Packet.headerLength))
        return outcome
    }

    /// The family-independent part: the ranges, the overlap and size rules,
    /// the bytes copied into the queue's buffer (the first fragment's
    /// `header` in front of the payload). A complete datagram comes back
    /// with the header as the first fragment had it; the caller fixes it.
    private mutating func insert(_ fragment: PacketHandle, _ key: Key, offset: Int, payload: UnsafeMutableRawBufferPointer,
                                 last: Bool, header: UnsafeMutableRawBufferPointer, limit: Int, interface: InterfaceIndex,
                                 pool: PacketPool, now: Int64, dropped: (DropReason, Queue) -> Void) -> Outcome {
        let len = payload.count
        let end = offset + len
        let hl = header.count

        var qi = queues.firstIndex { $0.inUse && $0.key == key }
        if qi == nil {
            let free = queues.firstIndex { !$0.inUse }
            let slot: Int
            if let free {
                slot = free
            } else {
                slot = queues.indices.min { queues[$0].created < queues[$1].created }!
                dropped(.reassemblyQueueEvicted, queues[slot])
                release(slot, pool: pool)
            }
            guard let buf = pool.allocate() else {
                pool.free(fragment)
                return .dropped(.poolExhausted)
            }
            queues[slot] = Queue(inUse: true, key: key, buffer: buf, headerLength: 0, payloadLength: -1, received: 0, fragments: 0,
                                 created: now, interface: interface, ranges: queues[slot].ranges)
            active += 1
            queues[slot].ranges.removeAll(keepingCapacity: true)
            qi = slot
        }
        let q = qi!
        let capacity = pool.dataCapacity - ReassemblyTable.maxHeader

        func discard(_ reason: DropReason) -> Outcome {
            pool.free(fragment)
            if queues[q].fragments > 0 { dropped(reason, queues[q]) }
            release(q, pool: pool)
            return .dropped(reason)
        }

        // A non-last fragment must carry a multiple of 8 bytes (RFC 791, RFC 8200).
        if !last && len % 8 != 0 { return discard(key.ipv6 ? .ipv6Malformed : .ipBadTotalLength) }
        if end > limit || end > capacity { return discard(.fragmentTooLarge) }
        if last {
            if queues[q].payloadLength >= 0 && queues[q].payloadLength != end { return discard(.fragmentOverlap) }
            if queues[q].ranges.contains(where: { $0.end > end }) { return discard(.fragmentOverlap) }
            queues[q].payloadLength = end
        } else if queues[q].payloadLength >= 0 && end > queues[q].payloadLength {
            return discard(.fragmentOverlap)
        }
        if len > 0 {
            if queues[q].ranges.contains(where: { $0.start < end && offset < $0.end }) { return discard(.fragmentOverlap) }
            // Insert, merging with touching neighbours, in place (no allocation).
            var r = Range(start: offset, end: end)
            var i = 0
            while i < queues[q].ranges.count {
                let x = queues[q].ranges[i]
                if x.end == r.start {
                    r.start = x.start; queues[q].ranges.remove(at: i)
                } else if x.start == r.end {
                    r.end = x.end; queues[q].ranges.remove(at: i)
                } else {
                    i += 1
                }
            }
            if queues[q].ranges.count >= maxPieces { return discard(.fragmentTooManyPieces) }
            queues[q].ranges.append(r)
        }

        let data = pool.buffer(queues[q].buffer)
        let payloadStart = pool.headroom + ReassemblyTable.maxHeader
        if len > 0 { data.slice(payloadStart + offset, len).copyMemory(from: UnsafeRawBufferPointer(payload)) }
        if offset == 0 {
            // The first fragment's header (IPv4: with its options) becomes the datagram's.
            data.slice(payloadStart - hl, hl).copyMemory(from: UnsafeRawBufferPointer(header))
            queues[q].headerLength = hl
        }
        queues[q].received += len
        queues[q].fragments += 1
        pool.free(fragment)

        let Q = queues[q]
        guard Q.payloadLength >= 0, Q.headerLength > 0, Q.received == Q.payloadLength else { return .queued }
        var out = Q.buffer
        out.offset = UInt32(payloadStart - Q.headerLength)
        out.length = UInt32(Q.headerLength + Q.payloadLength)
        queues[q].inUse = false
        active -= 1
        return .complete(out, fragments: Q.fragments)
    }

    /// Discards every queue older than the timeout.
    mutating func expire(now: Int64, pool: PacketPool, expired: (Queue, PacketPool) -> Void) {
        for i in queues.indices where queues[i].inUse && now - queues[i].created >= timeout {
            expired(queues[i], pool)
            release(i, pool: pool)
        }
    }

    /// The earliest time a queue will expire, if any is active.
    var nextDeadline: Int64? {
        guard active > 0 else { return nil }
        return queues.lazy.filter(\.inUse).map { $0.created + timeout }.min()
    }

    private mutating func release(_ i: Int, pool: PacketPool) {
        guard queues[i].inUse else { return }
        pool.free(queues[i].buffer)
        queues[i].inUse = false
        active -= 1
    }

    mutating func releaseAll(pool: PacketPool) {
        for i in queues.indices { release(i, pool: pool) }
    }
}
