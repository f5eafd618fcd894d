public import AnygateWire

extension Stack {
    /// Local ICMP: answer echo requests, report replies and errors as events.
    func icmpInput(_ p: PacketHandle, rx: InterfaceIndex, broadcast: Bool) {
        let ip = IPv4Packet(unchecked: pool.bytes(p))
        let icmp: ICMPv4Packet
        do { icmp = try ICMPv4Packet(validating: ip.payload) } catch { return drop(p, .icmpMalformed, rx: rx) }
        switch icmp.type {
        case .echoRequest:
            // Echo to a broadcast address is ignored (RFC 1122 section 3.2.2.6 allows it; smurf defence).
            guard !broadcast else { return drop(p, .broadcastEchoIgnored, rx: rx) }
            hot.pointee.counters.consumed &+= 1
            echoReply(p, ip: ip, icmp: icmp)
        case .echoReply:
            report(.echoReply(from: ip.source, identifier: icmp.identifier, sequence: icmp.sequence,
                              payloadLength: icmp.data.count, ttl: ip.ttl))
            hot.pointee.counters.consumed &+= 1
            pool.free(p)
        case .destinationUnreachable, .timeExceeded, .parameterProblem:
            let quoted = icmp.data
            let inner = IPv4Packet(unchecked: quoted)
            guard quoted.count >= IPv4Packet.minimumHeaderLength, inner.version == 4,
                  inner.headerLength <= quoted.count else { return drop(p, .icmpMalformed, rx: rx) }
            var echo: ICMPErrorReport.EchoID? = nil
            if inner.proto == .icmp, quoted.count >= inner.headerLength + 8 {
                let q = quoted.tail(from: inner.headerLength)
                if q.be8(0) == ICMPv4Type.echoRequest.rawValue {
                    echo = .init(identifier: q.be16(4), sequence: q.be16(6))
                }
            }
            if icmp.type == .destinationUnreachable && icmp.code == ICMPv4UnreachableCode.fragmentationNeeded
                && !tunnelConfigs.isEmpty {
                pathMTUReport(quoted: quoted, mtu: Int(icmp.sequence), from: ip.source)
            }
            report(.icmpError(ICMPErrorReport(
                from: ip.source, type: icmp.type, code: icmp.code,
                nextHopMTU: icmp.type == .destinationUnreachable && icmp.code == ICMPv4UnreachableCode.fragmentationNeeded
                    ? icmp.sequence : 0,
                originalSource: inner.source, originalDestination: inner.destination,
                originalProtocol: inner.proto, originalEcho: echo)))
            hot.pointee.counters.consumed &+= 1
            pool.free(p)
        default:
            hot.pointee.counters.consumed &+= 1
            pool.free(p)
        }
    }

    /// Turns an echo request into its reply in the same buffer (RFC 792).
    func echoReply(_ p: PacketHandle, ip: IPv4Packet, icmp: ICMPv4Packet) {
        let requester = ip.source
        let me = ip.destination
        // Rebuild the IP header without options (RFC 1122 allows dropping
        // them except record-route/timestamp, which this stack does not honour).
        let hl = ip.headerLength
        var out = p
        if hl > IPv4Packet.minimumHeaderLength {
            let payload = ip.payload
            let dst = pool.bytes(p).baseAddress! + IPv4Packet.minimumHeaderLength
            dst.copyMemory(from: payload.baseAddress!, byteCount: payload.count)
            pool.setLength(&out, IPv4Packet.minimumHeaderLength + payload.count)
        }
        let b = pool.bytes(out)
        let payloadLength = b.count - IPv4Packet.minimumHeaderLength
        IPv4Repr(source: me, destination: requester, proto: .icmp, payloadLength: payloadLength,
                 ttl: configuration.defaultTTL, tos: ip.tos, identification: nextIPID()).emit(into: b)
        let reply = ICMPv4Packet(unchecked: b.tail(from: IPv4Packet.minimumHeaderLength))
        reply.bytes.setBE8(ICMPv4Packet.Field.type, ICMPv4Type.echoReply.rawValue)
        reply.fillChecksum()
        hot.pointee.counters.icmpEchoRepliesSent += 1
        hot.pointee.counters.originated &+= 1
        try? outputLocal(out)
    }

    func nextIPID() -> UInt16 {
        hot.pointee.nextIPID &+= 1
        return hot.pointee.nextIPID
    }

    /// Sends an ICMP error about `about` (bytes start at its IP header)
    /// unless RFC 1812 section 4.3.2.7 forbids it or the rate limit is spent.
    /// Does not consume `about`.
    func sendICMPError(about packet: PacketHandle, type: ICMPv4Type, code: UInt8, rest: UInt32 = 0,
                       rx: InterfaceIndex, linkBroadcast: Bool) {
        let ip = IPv4Packet(unchecked: pool.bytes(packet))
        let src = ip.source
        // Never about: link-layer broadcasts, non-first fragments, packets
        // from non-unicast sources or to broadcast/multicast, ICMP errors.
        var suppress = linkBroadcast || ip.fragmentOffset != 0
            || src.isUnspecified || src.isMulticast || src.isLimitedBroadcast || src.isLoopback
            || ip.destination.isMulticast || ip.destination.isLimitedBroadcast
        if !suppress, ip.proto == .icmp {
            let payload = ip.payload
            suppress = payload.count < 1 || ICMPv4Type(rawValue: payload.be8(0)).isError
        }
        if !suppress, let r = fibView.pointee.lookupRoute(ip.destination), r.kind == .broadcast { suppress = true }
        if suppress {
            hot.pointee.counters.icmpErrorsSuppressed += 1
            return
        }
        guard takeICMPToken() else {
            hot.pointee.counters.icmpErrorsRateLimited += 1
            return
        }
        // Source: chosen by IPSELSRC among the addresses of the interface the
        // error leaves by, else the first address of the one it came in on.
        var from = IPv4Address.any
        if let back = fibView.pointee.lookupRoute(src), back.kind != .local {
            from = selectSource(destination: src, route: back)
        }
        if from.isUnspecified { from = IPv4Address(rawValue: ifs[rx].primaryAddress) }
        guard !from.isUnspecified else { hot.pointee.counters.icmpErrorsSuppressed += 1; return }

        // Quote as much of the original as fits in 576 bytes (RFC 1812 section 4.3.2.3).
        let quote = min(ip.totalLength, 576 - IPv4Packet.minimumHeaderLength - ICMPv4Packet.headerLength)
        // No buffer: nothing was made, so nothing is dropped (the pool counts it).
        guard var e = pool.allocate() else { return }
        let icmpLength = ICMPv4Packet.headerLength + quote
        pool.setLength(&e, IPv4Packet.minimumHeaderLength + icmpLength)
        let b = pool.bytes(e)
        (b.baseAddress! + IPv4Packet.minimumHeaderLength + ICMPv4Packet.headerLength)
            .copyMemory(from: ip.bytes.baseAddress!, byteCount: quote)
        let message: ICMPv4Repr
        switch type {
        case .timeExceeded: message = .timeExceeded(code: code)
        case .destinationUnreachable: message = .destinationUnreachable(code: code, nextHopMTU: UInt16(truncatingIfNeeded: rest))
        default: message = .other(type: type, code: code, rest: rest)
        }
        message.emit(into: b.tail(from: IPv4Packet.minimumHeaderLength))
        IPv4Repr(source: from, destination: src, proto: .icmp, payloadLength: icmpLength,
                 ttl: configuration.defaultTTL, tos: 0xC0, identification: nextIPID()).emit(into: b)
        hot.pointee.counters.icmpErrorsSent += 1
        hot.pointee.counters.originated &+= 1
        try? outputLocal(e)
    }

    /// Token bucket for ICMP errors, refilled from the stack clock.
    func takeICMPToken() -> Bool { hot.pointee.icmpBucket.take(now: hot.pointee.now) }

    // MARK: Originating pings

    /// Sends an ICMP echo request. The payload is `payloadSize` bytes of the
    /// pattern 0, 1, 2, ... (mod 256); the source, when not given, is the
    /// first address of the outgoing interface.
    public func ping(_ destination: IPv4Address, identifier: UInt16 = 1, sequence: UInt16 = 1,
                     payloadSize: Int = 56, ttl: UInt8? = nil, dontFragment: Bool = false,
                     source: IPv4Address? = nil) throws(SendError) {
        enter()
        defer { flush() }
        let maxPayload = min(65535, pool.dataCapacity) - IPv4Packet.minimumHeaderLength - ICMPv4Packet.headerLength
        guard payloadSize >= 0, payloadSize <= maxPayload else { throw .payloadTooLarge(max: maxPayload) }
        guard let route = fibView.pointee.lookupRoute(destination) else { throw .noRoute(destination) }
        // A given (bound) source is never changed; otherwise IPSELSRC chooses.
        let from = source ?? selectSource(destination: destination, route: route)
        guard !from.isUnspecified else { throw .noSourceAddress }
        guard var p = pool.allocate() else { throw .poolExhausted }
        let icmpLength = ICMPv4Packet.headerLength + payloadSize
        pool.setLength(&p, IPv4Packet.minimumHeaderLength + icmpLength)
        let b = pool.bytes(p)
        let data = b.tail(from: IPv4Packet.minimumHeaderLength + ICMPv4Packet.headerLength)
        for i in 0..<payloadSize { data.storeBytes(of: UInt8(truncatingIfNeeded: i), toByteOffset: i, as: UInt8.self) }
        ICMPv4Repr.echoRequest(identifier: identifier, sequence: sequence).emit(into: b.tail(from: IPv4Packet.minimumHeaderLength))
        IPv4Repr(source: from, destination: destination, proto: .icmp, payloadLength: icmpLength,
                 ttl: ttl ?? configuration.defaultTTL, identification: nextIPID(), dontFragment: dontFragment).emit(into: b)
        hot.pointee.counters.originated &+= 1
        try outputLocal(p)
    }
}
