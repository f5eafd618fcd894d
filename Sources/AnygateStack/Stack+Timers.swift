import AnygateWire

extension Stack {
    /// Runs the timers due at the host's current time — ARP retransmission,
    /// neighbour aging, reassembly timeouts — then flushes. Call it at
    /// `nextDeadline` or on a fixed tick; calling it early is harmless.
    public func tick() {
        enter()
        let now = hot.pointee.now
        neighborTimers(neighbors, now: now, probe: { e in
            sendARPRequest(for: IPv4Address(rawValue: e.address), on: Int(e.interface), unicastTo: nil, gratuitous: false)
        }, failed: neighborFailed)
        neighborTimers(neighbors6, now: now, probe: { e in
            sendSolicitation(for: e.address, on: Int(e.interface), unicastTo: nil)
        }, failed: neighbor6Failed)
        advertisementTimers(now: now)
        mldTimers(now: now)
        dadTimers(now: now)
        sweepFlows()
        if !tunnelConfigs.isEmpty { tunnelTimers() }
        if hot.pointee.nextIPsecTimer != 0 && now >= hot.pointee.nextIPsecTimer { ipsecTimers() }
        if !failedNextHops.isEmpty { retryFailedNextHops() }
        if tcp.nextTimer != 0 || tcp.vestiges4.count + tcp.vestiges6.count > 0 { tcpTimers() }
        reassembly.expire(now: now, pool: pool) { q, pool in
            countDrops(.reassemblyTimeout, q.fragments, rx: q.interface)
            // Time exceeded in reassembly, only if the first fragment came (RFC 792).
            guard q.headerLength > 0 else { return }
            var first = q.buffer
            first.offset = UInt32(pool.headroom + ReassemblyTable.maxHeader - q.headerLength)
            first.length = UInt32(q.headerLength + min(8, max(0, q.ranges.first { $0.start == 0 }?.end ?? 0)))
            if q.key.ipv6 {
                // RFC 8200 section 4.5: time exceeded, code 1, about the first fragment.
                pool.bytes(first).setBE16(IPv6Packet.Field.payloadLength, UInt16(Int(first.length) - IPv6Packet.headerLength))
                return sendICMPv6Error(about: first, .timeExceeded, code: 1, rx: q.interface)
            }
            let ip = IPv4Packet(unchecked: pool.bytes(first))
            ip.totalLength = Int(first.length)
            sendICMPError(about: first, type: .timeExceeded, code: ICMPv4TimeExceededCode.reassembly,
                          rx: q.interface, linkBroadcast: false)
        }
        flush()
    }

    /// A neighbour table's due timers, ARP's or neighbour discovery's: only
    /// the entries whose timer is due — each step moves the entry's
    /// deadline past `now` or removes it, so the loop ends. An unresolved
    /// entry is asked again (`probe`) until `arp.maxProbes`, then `failed`.
    func neighborTimers<A>(_ table: NeighborTable<A>, now: Int64, probe: (NeighborTable<A>.Entry) -> Void,
                           failed: (UInt32) -> Void) {
        let arp = configuration.arp
        while let (idx, due) = table.nextTimer, due <= now {
            hot.pointee.timerVisits &+= 1
            let e = table.entries + Int(idx)
            switch e.pointee.state {
            case .incomplete:
                if Int(e.pointee.probes) >= arp.maxProbes {
                    failed(idx)
                } else {
                    e.pointee.probes += 1
                    e.pointee.nextProbe = now + arp.retransmitInterval.nanoseconds
                    table.schedule(idx)
                    probe(e.pointee)
                }
            case .reachable:
                e.pointee.state = .stale
                e.pointee.nextProbe = now
                table.schedule(idx)
            case .stale:
                table.remove(idx)
            }
        }
    }

    /// The packets waiting on a next hop that never answered are dropped,
    /// each with an ICMP host unreachable to its sender (RFC 1812 section 5.2.7.1).
    func neighborFailed(_ idx: UInt32) {
        let e = neighbors.entries[Int(idx)]
        var dropped = 0
        neighbors.drainPending(idx) { p in
            if isLocal(IPv4Packet(unchecked: pool.bytes(p)).source) {
                // Our own packet: there is no one to tell but the owner (below).
            } else {
                sendICMPError(about: p, type: .destinationUnreachable, code: ICMPv4UnreachableCode.host,
                              rx: Int(e.interface), linkBroadcast: false)
            }
            drop(p, .neighborUnresolved, tx: Int(e.interface))
            dropped += 1
        }
        neighbors.remove(idx)
        nextHopFailed(e.address, on: Int(e.interface))
        report(.neighborUnreachable(address: IPv4Address(rawValue: e.address), interface: Int(e.interface), dropped: dropped))
    }

    /// The next time `tick` has work, or nil when no timer is armed. O(1)
    /// in the number of neighbours and flows, and allocation-free.
    public var nextDeadline: Timestamp? {
        var next = min(neighbors.nextTimer?.deadline ?? .max, neighbors6.nextTimer?.deadline ?? .max)
        if let r = reassembly.nextDeadline { next = min(next, r) }
        if hot.pointee.nextFlowSweep != 0 { next = min(next, hot.pointee.nextFlowSweep) }
        if let t = nextTunnelDeadline { next = min(next, max(t, hot.pointee.now + 100_000_000)) }
        if hot.pointee.nextHopRetry != 0 { next = min(next, hot.pointee.nextHopRetry) }
        if hot.pointee.nextAdvertisement != 0 { next = min(next, hot.pointee.nextAdvertisement) }
        if hot.pointee.nextMLDReport != 0 { next = min(next, hot.pointee.nextMLDReport) }
        if hot.pointee.nextDAD != 0 { next = min(next, hot.pointee.nextDAD) }
        if hot.pointee.nextIPsecTimer != 0 { next = min(next, hot.pointee.nextIPsecTimer) }
        if let t = tcpDeadline { next = min(next, t) }
        return next == .max ? nil : Timestamp(nanoseconds: next)
    }

    /// Runs the timers if one is due at `now` (the host's clock), and
    /// returns the next deadline: one call per event-loop wake-up.
    public func runTimers(now: Int64) -> Int64? {
        guard let due = nextDeadline?.nanoseconds else { return nil }
        guard due <= now else { return due }
        tick()
        return nextDeadline?.nanoseconds
    }
}
