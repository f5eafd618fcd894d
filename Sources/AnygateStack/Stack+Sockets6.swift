public import AnygateWire

/// Stack sockets over IPv6: what a socket bound or connected to an IPv6
/// address sends (UDP with its mandatory checksum, or a raw protocol such
/// as GRE under RFC 7676), and what arrives for our IPv6 addresses. The
/// tunnels of an IPv6 underlay are these sockets.
extension Stack {
    // MARK: Send

    /// Sends socket `k`'s payload to its IPv6 peer: the route, the source
    /// (bound, or RFC 6724), the UDP header, the IPv6 header, then out by
    /// neighbour discovery. Larger than the link: refused (`tooBig`) with
    /// DF set on the socket, else cut into fragments (as the originator,
    /// RFC 8200 section 4.5), and always when `fragmentable`.
    func socketSend6(_ k: Int, _ payload: PacketHandle, hopLimit: UInt8?, trafficClass: UInt8?, sourcePort: UInt16?,
                     flowLabel: UInt32, fragmentable: Bool) throws(SocketError) {
        let remote = socketTable[k].remoteAddress6
        guard let best = fib6View.pointee.lookup(remote) else {
            socketTable[k].counters.sendErrors &+= 1
            drop(payload, .noRoute, side: .output)
            throw .noRoute(.v6(remote))
        }
        let view = fib6View.pointee
        let slot = best.pointee.memberCount > 1 ? view.member(of: best, hash: remote.low ^ UInt64(flowLabel) &* 0x9E37_79B9_7F4A_7C15) : best
        let route = slot.pointee
        let out = Int(route.interface)
        switch route.kind {
        case .connected, .gateway: break
        case .blackhole:
            socketTable[k].counters.sendErrors &+= 1
            drop(payload, .blackhole, side: .output)
            throw .noRoute(.v6(remote))
        case .local, .broadcast:
            // A tunnel or socket to one of our own addresses has no wire to take.
            socketTable[k].counters.sendErrors &+= 1
            drop(payload, .noRoute, side: .output)
            throw .noRoute(.v6(remote))
        }
        let local = socketTable[k].localAddress6
        guard let source = local.isUnspecified ? source6(on: out, to: remote) : local else {
            socketTable[k].counters.sendErrors &+= 1
            drop(payload, .noSourceAddress, side: .output)
            throw .noSourceAddress
        }
        var packet = payload
        let proto: IPProtocol
        switch socketTable[k].proto {
        case .udp:
            guard pool.prepend(&packet, UDPDatagram.headerLength) else {
                drop(payload, .headroomExhausted, side: .output)
                throw .poolExhausted
            }
            // Over IPv6 the UDP checksum is always computed (RFC 8200 section 8.1)...
            let udp = UDPRepr(sourcePort: sourcePort ?? socketTable[k].localPort, destinationPort: socketTable[k].remotePort,
                              payloadLength: Int(payload.length))
            if packet.segmentSize == 0 {
                udp.emit(into: pool.bytes(packet), source: source, destination: remote)
            } else {
                // ...but a UDP super-frame's is left partial for the device that cuts it.
                let b = pool.bytes(packet)
                b.setBE16(0, udp.sourcePort); b.setBE16(2, udp.destinationPort); b.setBE16(4, UInt16(truncatingIfNeeded: packet.length))
                let pseudo = InternetChecksum.pseudoHeaderSum(source: source, destination: remote, nextHeader: .udp, length: Int(packet.length))
                b.setBE16(6, InternetChecksum.fold(pseudo))
            }
            proto = .udp
        case .raw(let pr):
            proto = pr
        }
        let length = Int(packet.length)
        guard pool.prepend(&packet, IPv6Packet.headerLength) else {
            drop(payload, .headroomExhausted, side: .output)
            throw .poolExhausted
        }
        IPv6Repr(source: source, destination: remote, nextHeader: proto, payloadLength: length,
                 hopLimit: hopLimit ?? socketTable[k].ttl ?? configuration.defaultTTL,
                 trafficClass: trafficClass ?? socketTable[k].tos, flowLabel: flowLabel)
            .emit(into: pool.bytes(packet))
        socketTable[k].counters.sent &+= 1
        hot.pointee.counters.ipSent &+= 1
        guard ifs[out].up else {
            socketTable[k].counters.sendErrors &+= 1
            drop(packet, .interfaceDown, tx: out)
            throw .interfaceDown
        }
        let nextHop = route.kind == .gateway ? route.gateway : remote
        let mtu = ifs[out].mtu
        // A super-frame is measured by its segments.
        let size = packet.segmentSize != 0 ? segmentLength(packet) ?? Int(packet.length) : Int(packet.length)
        if size > mtu {
            // A super-frame's segments are never fragmented (its device cuts it whole).
            guard packet.segmentSize == 0, fragmentable || !socketTable[k].dontFragment else {
                socketTable[k].counters.sendErrors &+= 1
                drop(packet, .fragmentationNeeded, tx: out)
                throw .tooBig(mtu: mtu)
            }
            return fragment6(packet, mtu: mtu, out: out, nextHop: nextHop)
        }
        resolveAndSend6(packet, out: out, nextHop: nextHop)
    }

    /// Sends an IPv6 packet the stack made whole (its header, no extension
    /// headers, then a transport whose checksum is done): by the route to
    /// its destination, to ourselves without a wire. Never fragmented (what
    /// the stack's TCP sends fits its MSS). False when it was dropped (counted).
    func outputLocal6(_ p: PacketHandle) -> Bool {
        let ip = IPv6Packet(unchecked: pool.bytes(p))
        let dst = ip.destination
        guard let best = fib6View.pointee.lookup(dst) else {
            drop(p, .noRoute, side: .output)
            return false
        }
        let view = fib6View.pointee
        let slot = best.pointee.memberCount > 1
            ? view.member(of: best, hash: (dst.low ^ ip.source.low) &* 0x9E37_79B9_7F4A_7C15) : best
        let route = slot.pointee
        hot.pointee.counters.ipSent &+= 1
        switch route.kind {
        case .local:
            loopBack(p, rx: Int(route.interface))
            return true
        case .blackhole, .broadcast:
            drop(p, route.kind == .blackhole ? .blackhole : .noRoute, side: .output)
            return false
        case .connected, .gateway:
            let out = Int(route.interface)
            guard ifs[out].up else {
                drop(p, .interfaceDown, tx: out)
                return false
            }
            guard Int(p.length) <= ifs[out].mtu else {
                drop(p, .fragmentationNeeded, tx: out)
                return false
            }
            resolveAndSend6(p, out: out, nextHop: route.kind == .gateway ? route.gateway : dst)
            return true
        }
    }

    /// Cuts a packet this stack made (an IPv6 header with no extension
    /// headers, then the payload) into fragments that fit `mtu`, each with
    /// a fragment header (RFC 8200 section 4.5). Consumes `p`.
    func fragment6(_ p: PacketHandle, mtu: Int, out: InterfaceIndex, nextHop: IPv6Address) {
        let src = pool.bytes(p)
        let ip = IPv6Packet(unchecked: src)
        let payloadLength = ip.payloadLength
        let nextHeader = ip.nextHeader
        let room = (mtu - IPv6Packet.headerLength - IPv6FragmentRepr.headerLength) & ~7
        guard room >= 8 else { return drop(p, .fragmentationNeeded, tx: out) }
        fragmentID6 &+= 1
        let id = fragmentID6
        var offset = 0
        while offset < payloadLength {
            let chunk = min(room, payloadLength - offset)
            guard var f = pool.allocate() else { return drop(p, .poolExhausted, tx: out) }
            let header = IPv6Packet.headerLength + IPv6FragmentRepr.headerLength
            pool.setLength(&f, header + chunk)
            let fb = pool.bytes(f)
            fb.copyMemory(from: UnsafeRawBufferPointer(src.slice(0, IPv6Packet.headerLength)))
            fb.tail(from: header).copyMemory(from: UnsafeRawBufferPointer(src.slice(IPv6Packet.headerLength + offset, chunk)))
            IPv6FragmentRepr(nextHeader: nextHeader, offset: offset, moreFragments: offset + chunk < payloadLength, identification: id)
                .emit(into: fb.tail(from: IPv6Packet.headerLength))
            fb.setBE8(IPv6Packet.Field.nextHeader, IPProtocol.ipv6Fragment.rawValue)
            fb.setBE16(IPv6Packet.Field.payloadLength, UInt16(IPv6FragmentRepr.headerLength + chunk))
            hot.pointee.counters.fragmentsCreated += 1
            resolveAndSend6(f, out: out, nextHop: nextHop)
            offset += chunk
        }
        hot.pointee.counters.fragmented &+= 1
        pool.free(p)
    }

    // MARK: Receive

    /// A packet for one of our IPv6 addresses whose upper layer is not
    /// ICMPv6: to the socket that takes it (UDP checked first), or refused
    /// with port unreachable (UDP) or parameter problem (anything else).
    func socketInput6(_ packet: PacketHandle, chain: IPv6HeaderChain, rx: InterfaceIndex) {
        var p = packet
        let ip = IPv6Packet(unchecked: pool.bytes(p))
        let source = ip.source, destination = ip.destination
        let offset = chain.upperLayerOffset
        let upper = pool.bytes(p).slice(offset, IPv6Packet.headerLength + ip.payloadLength - offset)
        if chain.upperLayer == .udp {
            let udp: UDPDatagram
            if p.offload == 0 {
                do { udp = try UDPDatagram(validating: upper, source: source, destination: destination) } catch {
                    return drop(p, error == .badChecksum ? .udpBadChecksum : .udpMalformed, rx: rx)
                }
            } else {
                // A checksum the device verified, or left partial (a datagram the
                // host's own stack or the next device has yet to complete), is not
                // checked again, as over IPv4; the lengths still are.
                udp = UDPDatagram(unchecked: upper)
                guard upper.count >= UDPDatagram.headerLength, udp.length >= UDPDatagram.headerLength, udp.length <= upper.count else {
                    return drop(p, .udpMalformed, rx: rx)
                }
            }
            guard let k = demux6(.udp, destination: destination, destinationPort: udp.destinationPort, source: source,
                                 sourcePort: udp.sourcePort) else {
                if ifs[rx].hostOwned { return drop(p, .hostOwned, rx: rx) }
                if _slowPath(ifs[rx].twin), twinWants(rx: rx, proto: IPProtocol.udp.rawValue, transport: upper, group: nil) {
                    return punt(p, rx: rx)
                }
                sendICMPv6Error(about: p, .destinationUnreachable, code: 4, rx: rx)
                return drop(p, .portUnreachable, rx: rx)
            }
            let port = udp.sourcePort
            let length = udp.length - UDPDatagram.headerLength
            pool.consume(&p, offset + UDPDatagram.headerLength)
            pool.setLength(&p, length)
            hot.pointee.counters.ipDelivered &+= 1
            return deliver(p, to: k, from: .v6(source), port: port, outerTOS: ip.trafficClass, rx: rx)
        }
        if chain.upperLayer == .tcp {
            // The stack's own TCP: a connection, vestige or listener takes it, else a twin, else a RST.
            if tcpInput(p, local: .v6(destination), remote: .v6(source), segment: upper, rx: rx) {
                hot.pointee.counters.ipDelivered &+= 1
                return
            }
            if ifs[rx].hostOwned { return drop(p, .hostOwned, rx: rx) }
            if _slowPath(ifs[rx].twin), twinWants(rx: rx, proto: IPProtocol.tcp.rawValue, transport: upper, group: nil) {
                return punt(p, rx: rx)
            }
            hot.pointee.counters.ipDelivered &+= 1
            return tcpRefuse(p, local: .v6(destination), remote: .v6(source), segment: upper, rx: rx)
        }
        guard let k = demux6(.raw(chain.upperLayer), destination: destination, destinationPort: 0, source: source, sourcePort: 0) else {
            if ifs[rx].hostOwned { return drop(p, .hostOwned, rx: rx) }
            if _slowPath(ifs[rx].twin), twinWants(rx: rx, proto: chain.upperLayer.rawValue, transport: upper, group: nil) {
                return punt(p, rx: rx)
            }
            // Unrecognized next header (RFC 8200 section 4): a pointer to the field that named it.
            let pointer = chain.extensionHeaders == 0 ? IPv6Packet.Field.nextHeader : offset
            sendICMPv6Error(about: p, .parameterProblem, code: 1, rest: UInt32(pointer), rx: rx)
            return drop(p, .protocolUnreachable, rx: rx)
        }
        let tclass = ip.trafficClass
        let length = upper.count
        pool.consume(&p, offset)
        pool.setLength(&p, length)
        hot.pointee.counters.ipDelivered &+= 1
        deliver(p, to: k, from: .v6(source), port: 0, outerTOS: tclass, rx: rx)
    }

    /// The IPv6 socket for a datagram: protocol, local port (UDP), bound
    /// address if any, connected peer if any.
    func demux6(_ proto: SocketProtocol, destination: IPv6Address, destinationPort: UInt16, source: IPv6Address,
                sourcePort: UInt16) -> Int? {
        for k in 0..<socketCount {
            let s = socketTable[k]
            guard s.inUse, s.ipv6, s.backend == .stack, s.proto == proto else { continue }
            if case .udp = proto, s.localPort != destinationPort { continue }
            if !s.localAddress6.isUnspecified && s.localAddress6 != destination { continue }
            if !s.remoteAddress6.isUnspecified && s.remoteAddress6 != source { continue }
            if case .udp = proto, s.matchRemotePort, s.remotePort != 0, s.remotePort != sourcePort { continue }
            return k
        }
        return nil
    }
}
