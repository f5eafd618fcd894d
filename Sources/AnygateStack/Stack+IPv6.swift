public import AnygateWire

/// IPv6 on the stack's own addresses: interface addresses (a link-local
/// one from the MAC, others configured), neighbour discovery (RFC 4861:
/// answering solicitations for our addresses, learning from solicitations
/// and advertisements, resolving by multicast solicitation with the same
/// bounded table, pending queues and timers as ARP) and echo.
///
/// And forwarding (`forward6`): scope, hop limit, the IPv6 FIB with ECMP,
/// packet too big, ICMPv6 errors.
///
/// And router advertisements (`setRouterAdvertisements`: periodic and
/// solicited, with prefixes for SLAAC).
///
/// And MLDv2 (reports of the groups we listen to, on change and in
/// answer to queries), so that switches that snoop multicast forward
/// neighbour discovery to us.
///
/// And duplicate address detection (`dadTransmits` solicitations from ::
/// before an address is used; a duplicate is reported and never used).
///
/// Not yet: ip6flow, other upper layers on our addresses.
extension Stack {
    // MARK: Addresses

    /// Turns IPv6 on for an interface: its link-local address fe80::/64
    /// with the MAC's modified EUI-64 identifier (RFC 4862, RFC 2464). A
    /// tunnel has no MAC: its identifier is its local underlay address
    /// (the IPv4 address in the low 32 bits, as Linux does for GRE, or the
    /// IPv6 address's own identifier).
    public func enableIPv6(on i: InterfaceIndex) throws(InterfaceError) {
        try check(i)
        guard !interfaceAddresses6[i].contains(where: { $0.address.isLinkLocal }) else { return }
        var linkLocal = IPv6Address.linkLocal(MACAddress(rawValue: ifs[i].mac))
        if ifs[i].tunnel >= 0 {
            let st = tunnelStates[Int(ifs[i].tunnel)]
            linkLocal = IPv6Address(high: 0xFE80 << 48, low: st.underlay6 ? st.local6.low : UInt64(st.local.rawValue))
        }
        try addAddress(IPv6InterfaceAddress(address: linkLocal, prefixLength: 64), to: i)
    }

    /// Adds an IPv6 address: a local route for itself and a connected one
    /// for its prefix (below /128). An interface with IPv6 addresses takes
    /// IPv6 frames.
    public func addAddress(_ a: IPv6InterfaceAddress, to i: InterfaceIndex) throws(InterfaceError) {
        try check(i)
        guard !a.address.isMulticast, !a.address.isUnspecified, !a.address.isLoopback else {
            throw .badAddress("\(a.address) cannot be an interface address")
        }
        for list in interfaceAddresses6 where list.contains(where: { $0.address == a.address }) {
            // A link-local address may repeat on another link; nothing else may.
            guard a.address.isLinkLocal, !interfaceAddresses6[i].contains(where: { $0.address == a.address }) else {
                throw .address6Exists(a)
            }
        }
        enter()
        let before = listenedGroups(i)
        interfaceAddresses6[i].append(a)
        ifs[i].ipv6 = true
        reportGroupChange(on: i, before: before)
        try? fib6.add(Route6(prefix: IPv6Prefix(address: a.address, length: 128), interface: i, origin: .connected, kind: .local))
        if a.prefixLength < 128 {
            try? fib6.add(Route6(prefix: a.subnet, interface: i, origin: .connected, kind: .connected))
        }
        startDAD(a.address, on: i)
        dadTimers(now: hot.pointee.now)
        fibChanged()
        flush()
    }

    public func removeAddress(_ address: IPv6Address, from i: InterfaceIndex) throws(InterfaceError) {
        try check(i)
        guard let k = interfaceAddresses6[i].firstIndex(where: { $0.address == address }) else { throw .noSuchAddress6(address) }
        enter()
        let before = listenedGroups(i)
        let a = interfaceAddresses6[i].remove(at: k)
        preferences6[AddressKey6(interface: i, address: address)] = nil
        ifs[i].ipv6 = !interfaceAddresses6[i].isEmpty
        forgetDAD(a.address, on: i)
        reportGroupChange(on: i, before: before)
        fib6.remove(IPv6Prefix(address: a.address, length: 128), interface: i, kind: .local)
        if a.prefixLength < 128, !interfaceAddresses6[i].contains(where: { $0.subnet == a.subnet }) {
            fib6.remove(a.subnet, interface: i, kind: .connected, origin: .connected)
        }
        fibChanged()
        flush()
    }

    /// Sets an IPv6 address's IPSELSRC preference number: the tie-breaker
    /// after RFC 6724's rules (`explainSource`), higher preferred.
    public func setPreference(_ address: IPv6Address, on i: InterfaceIndex, _ preference: Int16) throws(InterfaceError) {
        try check(i)
        guard interfaceAddresses6[i].contains(where: { $0.address == address }) else { throw .noSuchAddress6(address) }
        preferences6[AddressKey6(interface: i, address: address)] = preference == 0 ? nil : preference
        fibChanged()
    }

    public func preference(of address: IPv6Address, on i: InterfaceIndex) -> Int16 {
        preferences6[AddressKey6(interface: i, address: address)] ?? 0
    }

    /// The IPv6 addresses of an interface, link-local first if it has one.
    public func addresses6(on i: InterfaceIndex) -> [IPv6InterfaceAddress] {
        guard i >= 0, i < interfaceAddresses6.count else { return [] }
        return interfaceAddresses6[i].sorted { $0.address.isLinkLocal && !$1.address.isLinkLocal }
    }

    /// Whether `address` is one of the interface's own, or a group it
    /// listens to: all-nodes, the solicited-node group of each address, and
    /// as a router all-routers and the MLDv2 reports' group (what arrives
    /// there — solicitations, reports — is taken in, not forwarded).
    func isOurs6(_ address: IPv6Address, on i: InterfaceIndex) -> Bool {
        if address.isMulticast {
            if address == .allNodes { return true }
            if configuration.forwarding && (address == .allRouters || address == .allMLDv2Routers) { return true }
            return interfaceAddresses6[i].contains { $0.address.solicitedNode == address }
        }
        return interfaceAddresses6.indices.contains { j in
            interfaceAddresses6[j].contains { $0.address == address } && usable6(address, on: j)
        }
    }

    /// The address to speak from on `i` to `destination` (RFC 6724, `explainSource`).
    func source6(on i: InterfaceIndex, to destination: IPv6Address) -> IPv6Address? {
        explainSource(destination, interface: i)?.chosen
    }

    /// Records an IPv6 neighbour learnt elsewhere (the host's table):
    /// reachable now, aging as usual; packets waiting for it go out.
    public func learnNeighbor(_ address: IPv6Address, on i: InterfaceIndex, mac: MACAddress) throws(InterfaceError) {
        try check(i)
        enter()
        learnNeighbor6(address, mac: mac.rawValue, on: i, solicited: true, override: true, now: hot.pointee.now, share: false)
        flush()
    }

    /// The owner replica resolves an IPv6 neighbour a follower needs: asks
    /// for it, or, if it is known and confirmed, reports it again.
    public func resolveNeighbor(_ address: IPv6Address, on i: InterfaceIndex) {
        guard (try? check(i)) != nil, ifs[i].up, ifs[i].tunnel < 0 else { return }
        enter()
        resolveOnBehalf(neighbors6, address, on: i, create: { createNeighbor6(address, i) },
                        ask: { sendSolicitation(for: address, on: i, unicastTo: $0) },
                        known: { report(.neighbor6Learned(address: address, interface: i, mac: MACAddress(rawValue: $0))) })
        flush()
    }

    /// The owner replica answers a router solicitation a follower received.
    public func routerSolicited(on i: InterfaceIndex) {
        guard (try? check(i)) != nil else { return }
        enter()
        solicitedAdvertisement(on: i)
        flush()
    }

    /// The owner replica answers an MLD query a follower received.
    public func multicastQueried(on i: InterfaceIndex, maximumDelay: Int) {
        guard (try? check(i)) != nil else { return }
        enter()
        mldQuery(MLDQueryRepr(maximumResponseDelay: maximumDelay), on: i)
        flush()
    }

    /// A follower replica hears from the owner that one of its addresses is
    /// another node's (duplicate address detection runs on the owner only).
    public func markDuplicated(_ address: IPv6Address, on i: InterfaceIndex) {
        guard (try? check(i)) != nil, interfaceAddresses6[i].contains(where: { $0.address == address }) else { return }
        let k = AddressKey6(interface: i, address: address)
        tentative6[k] = nil
        duplicated6.insert(k)
        scheduleDAD()
    }

    /// The IPv6 neighbour cache, as `show neighbors` lists it.
    public var neighborList6: [Neighbor6] {
        neighbors6.liveIndices.map { i in
            let e = neighbors6.entries[Int(i)]
            return Neighbor6(address: e.address, interface: Int(e.interface),
                             mac: e.state == .incomplete ? nil : MACAddress(rawValue: e.mac), state: e.state,
                             pending: Int(e.pendingCount), age: Interval(nanoseconds: hot.pointee.now - e.confirmed))
        }
    }

    // MARK: Input

    /// An IPv6 packet from the link (bytes start at the IPv6 header).
    func ipv6Input(_ packet: PacketHandle, rx: InterfaceIndex) {
        guard ifs[rx].ipv6 else { return drop(packet, .ipv6NotSupported, rx: rx) }
        if flows6.capacity > 0 && fastForward6(packet, rx: rx) { return }
        let ip: IPv6Packet
        do { ip = try IPv6Packet(validating: pool.bytes(packet)) } catch { return drop(packet, .ipv6Malformed, rx: rx) }
        var p = packet
        // Ethernet pads short frames: the payload length says where the packet ends.
        let total = IPv6Packet.headerLength + ip.payloadLength
        if p.length > total { pool.setLength(&p, total) }
        let chain: IPv6HeaderChain
        do { chain = try IPv6HeaderChain(walking: IPv6Packet(unchecked: pool.bytes(p))) } catch {
            return drop(p, .ipv6HeaderChain, rx: rx)
        }
        if chain.discardSilently { return drop(p, .ipv6HeaderChain, rx: rx) }
        let source = ip.source, destination = ip.destination
        // One lookup decides: one of our addresses (a local route), or forward.
        let best = destination.isMulticast ? nil : lookup6(destination)
        if let best, best.pointee.kind == .local {
            // A tentative or duplicated address takes nothing in (RFC 4862 section 5.4).
            guard usable6(destination, on: Int(best.pointee.interface)) else { return drop(p, .notForUs, rx: rx) }
        } else if destination.isMulticast {
            guard isOurs6(destination, on: rx) else {
                // A routing protocol's link-local group (ff02::5, 6, 9, d): the host twin's, if it wants it.
                if _slowPath(ifs[rx].twin), destination.high == 0xFF02_0000_0000_0000, destination.low < 256, chain.upperLayerPresent,
                   twinWants(rx: rx, proto: chain.upperLayer.rawValue, transport: pool.bytes(p).tail(from: chain.upperLayerOffset),
                             group: UInt8(destination.low)) {
                    return punt(p, rx: rx)
                }
                return drop(p, .multicastNotSupported, rx: rx)
            }
        } else {
            return forward6(p, rx: rx, best: best, cacheable: chain.extensionHeaders == 0)
        }
        localInput6(p, chain: chain, rx: rx)
    }

    /// A packet for one of our addresses or groups: fragments to
    /// reassembly, then ICMPv6 here and the rest to the sockets.
    func localInput6(_ packet: PacketHandle, chain: IPv6HeaderChain, rx: InterfaceIndex) {
        var p = packet
        // A UDP super-frame (GRE-in-UDP taken whole by an underlay port): its datagrams one by one.
        if _slowPath(p.segmentSize != 0) { return localInputUnbundled(p, rx: rx, broadcast: false) }
        if let f = chain.fragment {
            hot.pointee.counters.fragmentsReceived += 1
            // Only a fragment header right after the IPv6 header is reassembled.
            guard chain.fragmentHeaderOffset == IPv6Packet.headerLength else { return drop(p, .ipv6HeaderChain, rx: rx) }
            let outcome = reassembly.add6(p, ip: IPv6Packet(unchecked: pool.bytes(p)), f, interface: rx, pool: pool,
                                          now: hot.pointee.now) { reason, q in countDrops(reason, q.fragments, rx: q.interface) }
            switch outcome {
            case .queued: return
            case .dropped(let reason): return countDrops(reason, 1, rx: rx)
            case .complete(let whole, let fragments):
                hot.pointee.counters.datagramsReassembled += 1
                hot.pointee.counters.fragmentsReassembled &+= UInt64(fragments)
                p = whole
            }
            let again: IPv6HeaderChain
            do { again = try IPv6HeaderChain(walking: IPv6Packet(unchecked: pool.bytes(p))) } catch {
                return drop(p, .ipv6HeaderChain, rx: rx)
            }
            guard again.fragment == nil else { return drop(p, .ipv6HeaderChain, rx: rx) }
            return localInput6(p, chain: again, rx: rx)
        }
        let ip = IPv6Packet(unchecked: pool.bytes(p))
        let source = ip.source, destination = ip.destination
        guard chain.upperLayerPresent else { return drop(p, .protocolUnreachable, rx: rx) }
        guard chain.upperLayer == .icmpv6 else {
            // UDP, GRE (a tunnel over IPv6) and the rest: to a socket, if one takes it.
            guard !destination.isMulticast else { return drop(p, .protocolUnreachable, rx: rx) }
            return socketInput6(p, chain: chain, rx: rx)
        }
        let message = pool.bytes(p).tail(from: chain.upperLayerOffset)
        let icmp: ICMPv6Repr
        do { icmp = try ICMPv6Repr(parsing: message, source: source, destination: destination) } catch {
            return drop(p, .icmpMalformed, rx: rx)
        }
        switch icmp {
        case .neighborSolicitation, .neighborAdvertisement, .routerSolicitation, .routerAdvertisement:
            let options: NDOptions
            do {
                options = try NeighborDiscovery.check(icmp, bytes: message, hopLimit: ip.hopLimit,
                                                      source: source, destination: destination)
            } catch {
                return drop(p, .ndInvalid, rx: rx)
            }
            neighborDiscoveryInput(p, icmp, options: options, source: source, rx: rx)
        case .multicastListenerQuery(let q):
            // From a querier on the link only (section 5.1.14: link-local source, hop limit 1).
            if source.isLinkLocal && ip.hopLimit == 1 { mldQuery(q, on: rx) }
            hot.pointee.counters.consumed &+= 1
            pool.free(p)
        case .packetTooBig(let mtu):
            // About one of our tunnels' outer packets, perhaps: the quote follows the 8-byte header.
            pathMTUReport6(quoted: message.tail(from: ICMPv6Packet.headerLength), mtu: Int(clamping: mtu), from: source)
            hot.pointee.counters.consumed &+= 1
            pool.free(p)
        case .echoRequest where ifs[rx].hostOwned:
            // The host's address: the host answers.
            drop(p, .hostOwned, rx: rx)
        case .echoRequest(let id, let seq) where !destination.isMulticast || destination == .allNodes:
            echoReply6(p, identifier: id, sequence: seq, payload: message.count - ICMPv6Packet.headerLength,
                       at: chain.upperLayerOffset, to: source, from: destination, rx: rx)
        default:
            hot.pointee.counters.consumed &+= 1
            pool.free(p)
        }
    }

    // MARK: Forwarding (RFC 8200, RFC 4443)

    /// A packet for another node: scope rules, hop limit, the route, the
    /// egress MTU (a router never fragments: packet too big instead), then
    /// the next hop's link-layer address by neighbour discovery.
    func forward6(_ p: PacketHandle, rx: InterfaceIndex, best: UnsafeMutablePointer<RouteSlot<IPv6Address>>?, cacheable: Bool) {
        let ip = IPv6Packet(unchecked: pool.bytes(p))
        let source = ip.source, destination = ip.destination
        guard configuration.forwarding else { return drop(p, .notForwarding, rx: rx) }
        guard !destination.isMulticast else { return drop(p, .multicastNotSupported, rx: rx) }
        guard !source.isMulticast, !source.isUnspecified, !source.isLoopback, !destination.isLoopback,
              !destination.isUnspecified else { return drop(p, .martianSource, rx: rx) }
        // Link-local addresses never leave their link (RFC 4291 section 2.5.6).
        if source.isLinkLocal || destination.isLinkLocal {
            sendICMPv6Error(about: p, .destinationUnreachable, code: 2, rx: rx)
            return drop(p, .noRoute, rx: rx)
        }
        if ip.hopLimit <= 1 {
            sendICMPv6Error(about: p, .timeExceeded, code: 0, rx: rx)
            return drop(p, .ttlExpired, rx: rx)
        }
        let view = fib6View.pointee
        guard let best else {
            sendICMPv6Error(about: p, .destinationUnreachable, code: 0, rx: rx)
            return drop(p, .noRoute, rx: rx)
        }
        var slot = best
        if best.pointee.memberCount > 1 {
            // ECMP: the flow (addresses, flow label) picks the member.
            slot = view.member(of: best, hash: Stack.ecmpKey6(source: source, destination: destination, flowLabel: ip.flowLabel))
        }
        switch slot.pointee.kind {
        case .blackhole: return drop(p, .blackhole, rx: rx)
        case .local, .broadcast: return drop(p, .ipv6NotSupported, rx: rx)
        case .connected, .gateway: break
        }
        let out = Int(slot.pointee.interface)
        // A tunnel offers inner IPv6 packets at least 1280 bytes, whatever its own MTU (RFC 8200 section 5).
        let mtu = ifs[out].tunnel < 0 ? ifs[out].mtu : max(TunnelConfiguration.minimumIPv6MTU, ifs[out].mtu)
        // A super-frame is measured by its segments (TSO6 from a TAP).
        let size = p.segmentSize != 0 ? segmentLength(p) ?? Int(p.length) : Int(p.length)
        if size > mtu {
            sendICMPv6Error(about: p, .packetTooBig, code: 0, rest: UInt32(mtu), rx: rx)
            return drop(p, .fragmentationNeeded, rx: rx)
        }
        ip.hopLimit = ip.hopLimit - 1
        let nextHop = slot.pointee.kind == .gateway ? slot.pointee.gateway : destination
        hot.pointee.counters.ipForwarded &+= 1
        ifs[rx].counters.forwarded &+= 1
        let label = ip.flowLabel  // read before the packet is handed on
        let length = UInt64(p.length)
        let n = resolveAndSend6(p, out: out, nextHop: nextHop)
        if cacheable && flows6.capacity > 0 && ifs[out].tunnel >= 0 {
            installTunnelFlow6(source, destination, label, out: out, length: length)
        } else if cacheable && flows6.capacity > 0 && n != NeighborTable<IPv6Address>.none {
            // ip6flow: the next packet of this flow skips all of the above.
            let (e, evicts) = flows6.place(source, destination, label)
            if evicts { hot.pointee.counters.flowsEvicted &+= 1 }
            e.pointee = Flow6Table.Entry(source: source, destination: destination, flowLabel: label, valid: true, out: Int32(out), neighbor: n,
                                         neighborGeneration: neighbors6.entries[Int(n)].generation,
                                         fibGeneration: fibView.pointee.generation, fib6Generation: fib6View.pointee.generation,
                                         lastUsed: hot.pointee.now, packets: 1, bytes: length)
            hot.pointee.counters.flowsCreated &+= 1
        }
    }

    /// ip6flow: forwards a packet of a cached flow, or returns false for
    /// the full path. The same checks and the same frame as the full path
    /// (`forward6`) for a packet without extension headers.
    @inline(__always)
    func fastForward6(_ p: PacketHandle, rx: InterfaceIndex) -> Bool {
        let bytes = pool.bytes(p)
        guard bytes.count >= IPv6Packet.headerLength, bytes.be8(0) >> 4 == 6 else { return false }
        let ip = IPv6Packet(unchecked: bytes)
        let total = IPv6Packet.headerLength + ip.payloadLength
        let next = bytes.be8(IPv6Packet.Field.nextHeader)
        guard total <= bytes.count, ip.hopLimit > 1,
              next != 0, next != 43, next != 44, next != 60, next != 51 else { return false }
        let source = ip.source, destination = ip.destination, label = ip.flowLabel
        guard let e = flows6.find(source, destination, label),
              e.pointee.fibGeneration == fibView.pointee.generation, e.pointee.fib6Generation == fib6View.pointee.generation,
              hot.pointee.now &- e.pointee.lastUsed < configuration.ipflow.idleTimeout.nanoseconds else {
            hot.pointee.counters.flowMisses &+= 1
            return false
        }
        if e.pointee.tunnel >= 0 { return fastForward6IntoTunnel(p, e, total: total, rx: rx) }
        let n = neighbors6.entries + Int(e.pointee.neighbor)
        guard n.pointee.generation == e.pointee.neighborGeneration, n.pointee.state == .reachable else {
            hot.pointee.counters.flowMisses &+= 1
            return false
        }
        let out = Int(e.pointee.out)
        var packet = p
        if packet.length > total { pool.setLength(&packet, total) }
        let size = packet.segmentSize != 0 ? segmentLength(packet) ?? Int(packet.length) : Int(packet.length)
        guard size <= ifs[out].mtu else { return false }  // the full path sends packet too big
        ip.hopLimit = ip.hopLimit - 1
        countFlowHit6(e, length: packet.length, rx: rx)
        sendFrame(packet, on: out, to: n.pointee.mac, type: .ipv6)
        return true
    }

    /// What a packet that takes an ip6flow entry counts.
    @inline(__always)
    func countFlowHit6(_ e: UnsafeMutablePointer<Flow6Table.Entry>, length: UInt32, rx: InterfaceIndex) {
        e.pointee.lastUsed = hot.pointee.now
        e.pointee.packets &+= 1
        e.pointee.bytes &+= UInt64(length)
        hot.pointee.counters.flowHits &+= 1
        hot.pointee.counters.ipForwarded &+= 1
        ifs[rx].counters.forwarded &+= 1
    }

    /// ip6flow's tunnel egress (out of line, like IPv4's): the tunnel still
    /// the one the flow was made for and up, the packet within what the
    /// tunnel offers IPv6 (at least 1280), then into the encapsulation.
    @inline(never)
    func fastForward6IntoTunnel(_ p: PacketHandle, _ e: UnsafeMutablePointer<Flow6Table.Entry>, total: Int, rx: InterfaceIndex) -> Bool {
        let t = Int(e.pointee.tunnel)
        let st = tunnelStates + t
        guard st.pointee.inUse, st.pointee.alive, st.pointee.generation == e.pointee.neighborGeneration else {
            hot.pointee.counters.flowMisses &+= 1
            return false
        }
        let out = st.pointee.interface
        guard ifs[out].up else { return false }
        var packet = p
        if packet.length > total { pool.setLength(&packet, total) }
        let size = packet.segmentSize != 0 ? segmentLength(packet) ?? Int(packet.length) : Int(packet.length)
        guard size <= max(TunnelConfiguration.minimumIPv6MTU, ifs[out].mtu) else { return false }  // the full path answers
        let ip = IPv6Packet(unchecked: pool.bytes(packet))
        ip.hopLimit = ip.hopLimit - 1
        countFlowHit6(e, length: packet.length, rx: rx)
        if packet.needsOffload {
            tunnelOutputWithoutOffloads(t, packet, interface: out)
            return true
        }
        ifs[out].counters.txPackets &+= 1
        ifs[out].counters.txBytes &+= UInt64(packet.length)
        tunnelOutput(t, packet)
        return true
    }

    /// Remembers a decision into a live tunnel for ip6flow.
    @inline(never)
    func installTunnelFlow6(_ source: IPv6Address, _ destination: IPv6Address, _ label: UInt32, out: InterfaceIndex, length: UInt64) {
        let t = Int(ifs[out].tunnel)
        let st = tunnelStates + t
        guard st.pointee.inUse, st.pointee.alive else { return }
        let (e, evicts) = flows6.place(source, destination, label)
        if evicts { hot.pointee.counters.flowsEvicted &+= 1 }
        e.pointee = Flow6Table.Entry(source: source, destination: destination, flowLabel: label, valid: true, out: Int32(out), neighbor: 0,
                                     neighborGeneration: st.pointee.generation, tunnel: Int32(t),
                                     fibGeneration: fibView.pointee.generation, fib6Generation: fib6View.pointee.generation,
                                     lastUsed: hot.pointee.now, packets: 1, bytes: length)
        hot.pointee.counters.flowsCreated &+= 1
    }

    /// Sends an ICMPv6 error about `packet` (RFC 4443 section 2.4): from our
    /// address on the arrival interface, quoting as much of the packet as
    /// fits in 1 280 bytes, rate limited by the stack's ICMP bucket. Never
    /// about an ICMPv6 error, nor to a source that is not unicast; about a
    /// multicast destination only packet too big.
    func sendICMPv6Error(about packet: PacketHandle, _ type: ICMPv6Type, code: UInt8, rest: UInt32 = 0, rx: InterfaceIndex) {
        let ip = IPv6Packet(unchecked: pool.bytes(packet))
        let offender = ip.source
        var suppress = offender.isUnspecified || offender.isMulticast || (ip.destination.isMulticast && type != .packetTooBig)
        if !suppress, ip.nextHeader == .icmpv6, ip.payloadLength >= 1 {
            suppress = ICMPv6Type(rawValue: ip.bytes.be8(IPv6Packet.headerLength)).isError
        }
        guard !suppress, let from = source6(on: rx, to: offender) else {
            hot.pointee.counters.icmpErrorsSuppressed += 1
            return
        }
        guard takeICMPToken() else {
            hot.pointee.counters.icmpErrorsRateLimited += 1
            return
        }
        let quote = min(Int(packet.length), 1280 - IPv6Packet.headerLength - ICMPv6Packet.headerLength)
        guard var e = pool.allocate() else { return }
        let length = ICMPv6Packet.headerLength + quote
        pool.setLength(&e, IPv6Packet.headerLength + length)
        let b = pool.bytes(e)
        b.tail(from: IPv6Packet.headerLength + ICMPv6Packet.headerLength)
            .copyMemory(from: UnsafeRawBufferPointer(ip.bytes.slice(0, quote)))
        let message: ICMPv6Repr
        switch type {
        case .packetTooBig: message = .packetTooBig(mtu: rest)
        case .timeExceeded: message = .timeExceeded(code: code)
        case .parameterProblem: message = .parameterProblem(code: code, pointer: rest)
        default: message = .destinationUnreachable(code: code)
        }
        message.emit(into: b.tail(from: IPv6Packet.headerLength), source: from, destination: offender)
        IPv6Repr(source: from, destination: offender, nextHeader: .icmpv6, payloadLength: length,
                 hopLimit: configuration.defaultTTL).emit(into: b)
        hot.pointee.counters.icmpErrorsSent += 1
        hot.pointee.counters.originated &+= 1
        guard let back = fib6.lookup(offender), back.kind == .connected || back.kind == .gateway else {
            return drop(e, .noRoute, tx: rx)
        }
        resolveAndSend6(e, out: back.interface, nextHop: back.nextHop ?? offender)
    }

    // MARK: Neighbour discovery (RFC 4861)

    func neighborDiscoveryInput(_ p: PacketHandle, _ icmp: ICMPv6Repr, options: NDOptions, source: IPv6Address, rx: InterfaceIndex) {
        let now = hot.pointee.now
        switch icmp {
        case .neighborSolicitation(let target) where !usable6(target, on: rx):
            // Our tentative address: another node's probe for it means a duplicate;
            // anything else is not answered yet (RFC 4862 section 5.4.3).
            if source.isUnspecified { dadConflict(target, on: rx) }
            hot.pointee.counters.consumed &+= 1
            pool.free(p)
        case .neighborSolicitation(let target):
            // A solicitation for another address of the same solicited-node group: not ours to answer.
            guard interfaceAddresses6[rx].contains(where: { $0.address == target }) else {
                hot.pointee.counters.consumed &+= 1
                return pool.free(p)
            }
            // Section 7.2.3: the sender's link-layer address makes or refreshes a STALE entry.
            if !source.isUnspecified, let mac = options.sourceLinkLayer {
                learnNeighbor6(source, mac: mac.rawValue, on: rx, solicited: false, override: true, now: now)
            }
            // On a mirrored interface the address is the host's, and the host answers.
            if ifs[rx].hostOwned { return drop(p, .hostOwned, rx: rx) }
            // The answer goes to the sender, or, for a duplicate-address probe
            // from ::, to all nodes, and says we are its owner (section 7.2.4).
            let toAll = source.isUnspecified
            var flags = NAFlags.override
            if !toAll { flags |= NAFlags.solicited }
            if configuration.forwarding { flags |= NAFlags.router }
            hot.pointee.counters.consumed &+= 1
            var out = p
            pool.setLength(&out, 0)
            sendAdvertisement(out, target: target, flags: flags, to: toAll ? .allNodes : source, rx: rx)
        case .neighborAdvertisement(let target, let flags):
            if interfaceAddresses6[rx].contains(where: { $0.address == target }) {
                // Someone advertises our own address: while we check it, a duplicate.
                dadConflict(target, on: rx)
                hot.pointee.counters.consumed &+= 1
                return pool.free(p)
            }
            if let mac = options.targetLinkLayer {
                // With several replicas the answer may reach one that did not ask: it
                // takes it all the same, and shares it (the owner asked for them all).
                let solicited = flags & NAFlags.solicited != 0
                learnNeighbor6(target, mac: mac.rawValue, on: rx, solicited: solicited,
                               override: flags & NAFlags.override != 0, now: now,
                               onlyExisting: !(solicited && configuration.arp.shareLearned))
            } else {
                // Without a link-layer option an advertisement can only confirm an entry's MAC.
                let idx = neighbors6.find(target, UInt16(rx))
                if idx != NeighborTable<IPv6Address>.none, neighbors6.entries[Int(idx)].state != .incomplete,
                   flags & NAFlags.solicited != 0 {
                    learnNeighbor6(target, mac: neighbors6.entries[Int(idx)].mac, on: rx, solicited: true, override: false,
                                   now: now, onlyExisting: true)
                }
            }
            // An answer to a solicitation: the host twin's kernel may have asked
            // (its solicitations leave through the stack), so it learns from it too.
            if _slowPath(ifs[rx].twin), ifs[rx].tunnel < 0, flags & NAFlags.solicited != 0 { return punt(p, rx: rx) }
            hot.pointee.counters.consumed &+= 1
            pool.free(p)
        case .routerSolicitation:
            // Section 6.2.6: the sender's address makes a STALE entry; an advertisement follows.
            if !source.isUnspecified, let mac = options.sourceLinkLayer {
                learnNeighbor6(source, mac: mac.rawValue, on: rx, solicited: false, override: true, now: now)
            }
            solicitedAdvertisement(on: rx)
            hot.pointee.counters.consumed &+= 1
            pool.free(p)
        default:
            // Other routers' advertisements: the gateway configures itself by hand.
            hot.pointee.counters.consumed &+= 1
            pool.free(p)
        }
    }

    /// Creates or updates the entry for `address` (sections 7.2.3 and 7.2.5):
    /// a solicited advertisement makes it REACHABLE, anything else STALE; a
    /// different MAC replaces the old one unless the advertisement did not
    /// say override. An entry that resolves sends what waited on it.
    func learnNeighbor6(_ address: IPv6Address, mac: UInt64, on rx: InterfaceIndex, solicited: Bool, override: Bool,
                        now: Int64, onlyExisting: Bool = false, share: Bool = true) {
        var idx = neighbors6.find(address, UInt16(rx))
        if idx == NeighborTable<IPv6Address>.none {
            guard !onlyExisting else { return }
            idx = createNeighbor6(address, rx)
        }
        let e = neighbors6.entries + Int(idx)
        let wasIncomplete = e.pointee.state == .incomplete
        let changed = e.pointee.mac != mac
        // A known entry keeps its MAC against an advertisement that does not override.
        if !wasIncomplete && changed && !override { return }
        // With several replicas, what one learns the others learn (as for ARP):
        // a new entry, a new MAC, a confirmation of one not REACHABLE, or a refresh now and then.
        if share && configuration.arp.shareLearned
            && (wasIncomplete || changed || (solicited && e.pointee.state != .reachable)
                || now - e.pointee.confirmed >= configuration.arp.shareInterval.nanoseconds) {
            report(.neighbor6Learned(address: address, interface: rx, mac: MACAddress(rawValue: mac)))
        }
        if solicited {
            neighbors6.confirm(idx, mac: mac, now: now)
        } else if wasIncomplete || changed {
            e.pointee.mac = mac
            e.pointee.generation &+= 1
            e.pointee.state = .stale
            e.pointee.confirmed = now
            neighbors6.schedule(idx)
        }
        if wasIncomplete {
            neighbors6.drainPending(idx) { q in sendFrame(q, on: rx, to: mac, type: .ipv6) }
        }
    }

    /// A new (incomplete) entry; a full table evicts its oldest, whose waiting packets are dropped.
    func createNeighbor6(_ address: IPv6Address, _ i: InterfaceIndex) -> UInt32 {
        neighbors6.create(address, UInt16(i), now: hot.pointee.now) { drop($0, .neighborTableFull, tx: i) }.index
    }

    /// Sends a neighbour advertisement for our `target` in `p` (an empty buffer).
    func sendAdvertisement(_ p: PacketHandle, target: IPv6Address, flags: UInt8, to destination: IPv6Address, rx: InterfaceIndex) {
        var out = p
        let length = 24 + 8
        pool.setLength(&out, IPv6Packet.headerLength + length)
        let b = pool.bytes(out)
        let message = b.tail(from: IPv6Packet.headerLength)
        NDOption.targetLinkLayer(MACAddress(rawValue: ifs[rx].mac)).emit(into: message.tail(from: 24))
        ICMPv6Repr.neighborAdvertisement(target: target, flags: flags).emit(into: message, source: target, destination: destination)
        IPv6Repr(source: target, destination: destination, nextHeader: .icmpv6, payloadLength: length, hopLimit: 255).emit(into: b)
        hot.pointee.counters.originated &+= 1
        if destination.isMulticast { return sendFrame(out, on: rx, to: destination.multicastMAC.rawValue, type: .ipv6) }
        resolveAndSend6(out, out: rx, nextHop: destination)
    }

    /// Sends a neighbour solicitation for `target` on `out`: to its
    /// solicited-node group, or unicast to a known MAC to re-confirm it.
    func sendSolicitation(for target: IPv6Address, on out: InterfaceIndex, unicastTo: UInt64?) {
        // A follower replica does not ask on the link: the owner does, once for all.
        if configuration.replica == .follower {
            if ifs[out].up, ifs[out].tunnel < 0 { report(.neighbor6Wanted(address: target, interface: out)) }
            return
        }
        guard ifs[out].up, ifs[out].tunnel < 0, let source = source6(on: out, to: target) else { return }
        guard var p = pool.allocate() else { return }
        let length = 24 + 8
        pool.setLength(&p, IPv6Packet.headerLength + length)
        let b = pool.bytes(p)
        // With several replicas even a reachability probe goes to the
        // solicited-node group: a unicast one is answered without the
        // target's MAC (RFC 4861 section 7.2.4), which a replica that did not
        // ask could neither use nor share.
        let unicastTo = configuration.arp.shareLearned ? nil : unicastTo
        let destination = unicastTo == nil ? target.solicitedNode : target
        let message = b.tail(from: IPv6Packet.headerLength)
        NDOption.sourceLinkLayer(MACAddress(rawValue: ifs[out].mac)).emit(into: message.tail(from: 24))
        ICMPv6Repr.neighborSolicitation(target: target).emit(into: message, source: source, destination: destination)
        IPv6Repr(source: source, destination: destination, nextHeader: .icmpv6, payloadLength: length, hopLimit: 255).emit(into: b)
        hot.pointee.counters.originated &+= 1
        sendFrame(p, on: out, to: unicastTo ?? destination.multicastMAC.rawValue, type: .ipv6)
    }

    /// Sends an IPv6 packet (bytes start at its header) to an on-link
    /// `nextHop`, resolving it first if need be; packets wait in the
    /// entry's bounded queue meanwhile.
    /// Returns the neighbour entry when the packet went out at once to a
    /// REACHABLE neighbour (what ip6flow may cache), else `none`.
    @discardableResult
    func resolveAndSend6(_ p: PacketHandle, out: InterfaceIndex, nextHop: IPv6Address) -> UInt32 {
        let tunnel = ifs[out].tunnel
        if tunnel >= 0 {
            // A tunnel has no link layer and no offloads: into its encapsulation.
            if _slowPath(p.needsOffload) {
                tunnelOutputWithoutOffloads(Int(tunnel), p, interface: out)
            } else {
                ifs[out].counters.txPackets &+= 1
                ifs[out].counters.txBytes &+= UInt64(p.length)
                tunnelOutput(Int(tunnel), p)
            }
            return NeighborTable<IPv6Address>.none
        }
        var idx = neighbors6.find(nextHop, UInt16(out))
        if idx != NeighborTable<IPv6Address>.none {
            let e = neighbors6.entries + Int(idx)
            if e.pointee.state != .incomplete {
                let reachable = e.pointee.state == .reachable
                if e.pointee.state == .stale && hot.pointee.now >= e.pointee.nextProbe {
                    e.pointee.nextProbe = hot.pointee.now + configuration.arp.retransmitInterval.nanoseconds
                    sendSolicitation(for: nextHop, on: out, unicastTo: e.pointee.mac)
                }
                sendFrame(p, on: out, to: e.pointee.mac, type: .ipv6)
                return reachable ? idx : NeighborTable<IPv6Address>.none
            }
            if let dropped = neighbors6.enqueue(idx, p) { drop(dropped, .arpQueueOverflow, tx: out) }
            return NeighborTable<IPv6Address>.none
        }
        idx = createNeighbor6(nextHop, out)
        let e = neighbors6.entries + Int(idx)
        e.pointee.probes = 1
        e.pointee.nextProbe = hot.pointee.now + configuration.arp.retransmitInterval.nanoseconds
        neighbors6.schedule(idx)
        _ = neighbors6.enqueue(idx, p)
        sendSolicitation(for: nextHop, on: out, unicastTo: nil)
        return NeighborTable<IPv6Address>.none
    }

    /// An IPv6 neighbour that never answered: what waited on it is dropped.
    func neighbor6Failed(_ idx: UInt32) {
        let out = Int(neighbors6.entries[Int(idx)].interface)
        neighbors6.drainPending(idx) { drop($0, .neighborUnresolved, tx: out) }
        neighbors6.remove(idx)
    }

    // MARK: Echo

    /// Answers an echo request in its own buffer: the ICMPv6 message moves
    /// to just after a new IPv6 header (any extension headers are dropped).
    func echoReply6(_ p: PacketHandle, identifier: UInt16, sequence: UInt16, payload: Int, at offset: Int,
                    to requester: IPv6Address, from destination: IPv6Address, rx: InterfaceIndex) {
        guard !requester.isUnspecified, !requester.isMulticast,
              let source = destination.isMulticast ? source6(on: rx, to: requester) : destination else {
            return drop(p, .icmpMalformed, rx: rx)
        }
        hot.pointee.counters.consumed &+= 1
        var out = p
        let b = pool.bytes(out)
        let length = ICMPv6Packet.headerLength + payload
        if offset != IPv6Packet.headerLength {
            b.tail(from: IPv6Packet.headerLength).copyMemory(from: UnsafeRawBufferPointer(b.slice(offset, length)))
        }
        pool.setLength(&out, IPv6Packet.headerLength + length)
        let ob = pool.bytes(out)
        ICMPv6Repr.echoReply(identifier: identifier, sequence: sequence)
            .emit(into: ob.tail(from: IPv6Packet.headerLength), source: source, destination: requester)
        IPv6Repr(source: source, destination: requester, nextHeader: .icmpv6, payloadLength: length,
                 hopLimit: configuration.defaultTTL).emit(into: ob)
        hot.pointee.counters.originated &+= 1
        // Back through the routing table: on-link, or via its gateway.
        guard let route = fib6.lookup(requester), route.kind == .connected || route.kind == .gateway else {
            return drop(out, .noRoute, tx: rx)
        }
        // A request that came in fragments may answer larger than the link: the reply goes in fragments too.
        if Int(out.length) > ifs[route.interface].mtu {
            return fragment6(out, mtu: ifs[route.interface].mtu, out: route.interface, nextHop: route.nextHop ?? requester)
        }
        resolveAndSend6(out, out: route.interface, nextHop: route.nextHop ?? requester)
    }
}

/// What a router advertises on an interface (RFC 4861 section 6.2.1), for
/// hosts to configure themselves by SLAAC (RFC 4862) and take the gateway
/// as their default router.
public struct RouterAdvertisements: Sendable, Equatable {
    /// Prefixes to advertise (on-link, autonomous); empty: those of the
    /// interface's own addresses that are /64s.
    public var prefixes: [IPv6Prefix] = []
    /// The longest time between two unsolicited advertisements
    /// (MaxRtrAdvInterval); each is sent after 75–100 % of it.
    public var interval = Interval.seconds(200)
    /// How long hosts may use this router as a default one, seconds
    /// (0: hosts learn the prefixes but not a default route).
    public var lifetime: UInt16 = 1800
    /// The link MTU to advertise; nil: none.
    public var mtu: UInt32? = nil
    public init() {}
}

/// An interface's advertising state.
struct AdvertisingState {
    var config: RouterAdvertisements
    /// When the next advertisement is due.
    var next: Int64
    /// When the last multicast one went (solicited ones keep 3 s apart).
    var last: Int64 = .min
    /// Of the first ones, sent at most 16 s apart (RFC 4861 section 6.2.4).
    var initialLeft = 3
}

extension Stack {
    /// Starts (or, with nil, stops) router advertisements on an interface.
    public func setRouterAdvertisements(_ c: RouterAdvertisements?, on i: InterfaceIndex) throws(InterfaceError) {
        try check(i)
        guard let c else {
            advertising[i] = nil
            return scheduleAdvertisements()
        }
        precondition(c.interval.nanoseconds >= 4_000_000_000, "MaxRtrAdvInterval is at least 4 s")
        advertising[i] = AdvertisingState(config: c, next: hot.pointee.now)
        scheduleAdvertisements()
    }

    func scheduleAdvertisements() {
        hot.pointee.nextAdvertisement = advertising.values.map(\.next).min() ?? 0
    }

    /// Sends the advertisements that are due and schedules the next ones.
    func advertisementTimers(now: Int64) {
        guard hot.pointee.nextAdvertisement != 0, now >= hot.pointee.nextAdvertisement else { return }
        // Advertisements go once per link, from the owner replica.
        guard configuration.replica != .follower else { hot.pointee.nextAdvertisement = 0; return }
        for (i, var st) in advertising where st.next <= now {
            sendAdvertisement(on: i, st.config)
            st.last = now
            var wait = st.config.interval.nanoseconds
            // 75–100 % of the interval; the first few at most 16 s apart.
            wait = wait * 3 / 4 + Int64(hypercalls.random() % UInt64(wait / 4 + 1))
            if st.initialLeft > 0 {
                st.initialLeft -= 1
                wait = min(wait, 16_000_000_000)
            }
            st.next = now + wait
            advertising[i] = st
        }
        scheduleAdvertisements()
    }

    /// A router solicitation on an advertising interface: an advertisement
    /// to all nodes soon, but never within 3 s of the last (section 6.2.6).
    func solicitedAdvertisement(on i: InterfaceIndex) {
        guard var st = advertising[i] else { return }
        if configuration.replica == .follower { return report(.routerSolicited(interface: i)) }
        let soonest = st.last == .min ? hot.pointee.now : max(hot.pointee.now, st.last + 3_000_000_000)
        if soonest < st.next {
            st.next = soonest
            advertising[i] = st
            scheduleAdvertisements()
        }
    }

    /// Sends one router advertisement to all nodes on `i`: our link-layer
    /// address, the MTU if configured, and the prefixes.
    func sendAdvertisement(on i: InterfaceIndex, _ c: RouterAdvertisements) {
        guard ifs[i].up, let source = interfaceAddresses6[i].first(where: { $0.address.isLinkLocal })?.address else { return }
        let prefixes = c.prefixes.isEmpty
            ? interfaceAddresses6[i].filter { !$0.address.isLinkLocal && $0.prefixLength == 64 }.map(\.subnet)
            : c.prefixes
        var options: [NDOption] = [.sourceLinkLayer(MACAddress(rawValue: ifs[i].mac))]
        if let mtu = c.mtu { options.append(.mtu(mtu)) }
        for p in prefixes { options.append(.prefixInformation(NDPrefixInformation(prefix: p.address, prefixLength: p.length))) }
        let length = RouterAdvertisementRepr.optionsOffset + options.reduce(0) { $0 + $1.encodedLength }
        guard IPv6Packet.headerLength + length <= pool.dataCapacity, var p = pool.allocate() else { return }
        pool.setLength(&p, IPv6Packet.headerLength + length)
        let b = pool.bytes(p)
        let message = b.tail(from: IPv6Packet.headerLength)
        var at = RouterAdvertisementRepr.optionsOffset
        for o in options { at += o.emit(into: message.tail(from: at)) }
        ICMPv6Repr.routerAdvertisement(RouterAdvertisementRepr(currentHopLimit: configuration.defaultTTL, routerLifetime: c.lifetime))
            .emit(into: message, source: source, destination: .allNodes)
        IPv6Repr(source: source, destination: .allNodes, nextHeader: .icmpv6, payloadLength: length, hopLimit: 255).emit(into: b)
        hot.pointee.counters.originated &+= 1
        sendFrame(p, on: i, to: IPv6Address.allNodes.multicastMAC.rawValue, type: .ipv6)
    }
}

// MARK: Multicast listener discovery (RFC 3810)

extension Stack {
    /// The groups an interface listens to and reports: the solicited-node
    /// group of each of its addresses and, as a router, all-routers
    /// (all-nodes is never reported, section 6). Switches that snoop MLD
    /// forward neighbour discovery to us only for these.
    func listenedGroups(_ i: InterfaceIndex) -> [IPv6Address] {
        var groups = Set(interfaceAddresses6[i].map(\.address.solicitedNode))
        if configuration.forwarding && !interfaceAddresses6[i].isEmpty { groups.insert(.allRouters) }
        return groups.sorted()
    }

    /// The Ethernet multicast addresses the interface must take in: those
    /// of all-nodes, of the groups it listens to and, as a router, of the
    /// MLDv2 reports' group. Empty without IPv6.
    public func multicastMACs(on i: InterfaceIndex) -> Set<MACAddress> {
        guard i >= 0, i < interfaceAddresses6.count, !interfaceAddresses6[i].isEmpty else { return [] }
        var groups = listenedGroups(i) + [.allNodes]
        if configuration.forwarding { groups.append(.allMLDv2Routers) }
        return Set(groups.map(\.multicastMAC))
    }

    /// Reports a change of the interface's groups (joins, then leaves),
    /// as state-change records (section 6.1).
    func reportGroupChange(on i: InterfaceIndex, before: [IPv6Address]) {
        let after = listenedGroups(i)
        let joined = after.filter { !before.contains($0) }, left = before.filter { !after.contains($0) }
        if !joined.isEmpty || !left.isEmpty { report(.multicastChanged(interface: i)) }
        if !joined.isEmpty { sendReport(on: i, recordType: MLDv2Report.changeToExclude, groups: joined) }
        if !left.isEmpty { sendReport(on: i, recordType: MLDv2Report.changeToInclude, groups: left) }
    }

    /// A query: every group we listen to is reported after a random part of
    /// the maximum response delay (one report for all, section 6.2).
    func mldQuery(_ q: MLDQueryRepr, on i: InterfaceIndex) {
        guard !listenedGroups(i).isEmpty else { return }
        if configuration.replica == .follower {
            return report(.multicastQueried(interface: i, maximumDelay: Int(q.maximumResponseDelay)))
        }
        let delay = Int64(hypercalls.random() % UInt64(max(1, q.maximumResponseDelay))) * 1_000_000
        let due = hot.pointee.now + delay
        mldReportDue[i] = min(mldReportDue[i] ?? .max, due)
        hot.pointee.nextMLDReport = mldReportDue.values.min() ?? 0
    }

    func mldTimers(now: Int64) {
        guard hot.pointee.nextMLDReport != 0, now >= hot.pointee.nextMLDReport else { return }
        for (i, due) in mldReportDue where due <= now {
            mldReportDue[i] = nil
            if ifs[i].exists { sendReport(on: i, recordType: MLDv2Report.isExclude, groups: listenedGroups(i)) }
        }
        hot.pointee.nextMLDReport = mldReportDue.values.min() ?? 0
    }

    /// An MLDv2 report to ff02::16: hop limit 1, a Router Alert, from our
    /// link-local address (or :: before we have one).
    func sendReport(on i: InterfaceIndex, recordType: UInt8, groups: [IPv6Address]) {
        // A mirrored interface's groups are the host's, which reports them itself.
        guard ifs[i].up, ifs[i].tunnel < 0, !ifs[i].hostOwned, configuration.replica != .follower, !groups.isEmpty else { return }
        let source = interfaceAddresses6[i].first { $0.address.isLinkLocal }?.address ?? .any
        let length = 8 + MLDv2Report.length(groups: groups.count)
        guard IPv6Packet.headerLength + length <= pool.dataCapacity, var p = pool.allocate() else { return }
        pool.setLength(&p, IPv6Packet.headerLength + length)
        let b = pool.bytes(p)
        MLDv2Report.emitHopByHopRouterAlert(into: b.tail(from: IPv6Packet.headerLength))
        MLDv2Report.emit(recordType: recordType, groups: groups, into: b.tail(from: IPv6Packet.headerLength + 8), source: source)
        IPv6Repr(source: source, destination: .allMLDv2Routers, nextHeader: IPProtocol(rawValue: 0), payloadLength: length, hopLimit: 1)
            .emit(into: b)
        hot.pointee.counters.originated &+= 1
        sendFrame(p, on: i, to: IPv6Address.allMLDv2Routers.multicastMAC.rawValue, type: .ipv6)
    }
}

// MARK: Duplicate address detection (RFC 4862 section 5.4)

/// An IPv6 address on an interface.
struct AddressKey6: Hashable {
    var interface: InterfaceIndex
    var address: IPv6Address
}

/// Where an IPv6 address stands in duplicate address detection.
public enum AddressState6: String, Sendable {
    /// Being checked: not used yet, as a source or a destination.
    case tentative
    /// In use.
    case preferred
    /// Another node on the link has it: configured, but never used.
    case duplicated
}

extension Stack {
    public func state(of address: IPv6Address, on i: InterfaceIndex) -> AddressState6 {
        let k = AddressKey6(interface: i, address: address)
        if duplicated6.contains(k) { return .duplicated }
        return tentative6[k] == nil ? .preferred : .tentative
    }

    /// Whether the address may be used: as a source, or to take packets in.
    func usable6(_ address: IPv6Address, on i: InterfaceIndex) -> Bool {
        guard !tentative6.isEmpty || !duplicated6.isEmpty else { return true }
        let k = AddressKey6(interface: i, address: address)
        return tentative6[k] == nil && !duplicated6.contains(k)
    }

    /// Starts detection for a new address: a solicitation from :: now, the
    /// address used once `dadTransmits` of them went unanswered.
    /// A point-to-point tunnel has no neighbours to ask: its addresses are
    /// used at once (as on Linux GRE devices, which do no DAD); a mirrored
    /// interface's are the host's, which checked them.
    /// A follower replica leaves detection to the owner (`markDuplicated`).
    func startDAD(_ address: IPv6Address, on i: InterfaceIndex) {
        guard configuration.dadTransmits > 0, ifs[i].tunnel < 0, !ifs[i].hostOwned, configuration.replica != .follower else { return }
        let k = AddressKey6(interface: i, address: address)
        tentative6[k] = (configuration.dadTransmits, hot.pointee.now)
        scheduleDAD()
    }

    func forgetDAD(_ address: IPv6Address, on i: InterfaceIndex) {
        let k = AddressKey6(interface: i, address: address)
        tentative6[k] = nil
        duplicated6.remove(k)
        scheduleDAD()
    }

    func scheduleDAD() {
        hot.pointee.nextDAD = tentative6.values.map(\.due).min() ?? 0
    }

    func dadTimers(now: Int64) {
        guard hot.pointee.nextDAD != 0, now >= hot.pointee.nextDAD else { return }
        for (k, t) in tentative6 where t.due <= now {
            if t.probesLeft == 0 {
                tentative6[k] = nil  // unanswered: the address is ours
                continue
            }
            // A link that is down waits: the probe goes when it is up.
            guard ifs[k.interface].up else { continue }
            sendDADProbe(for: k.address, on: k.interface)
            tentative6[k] = (t.probesLeft - 1, now + configuration.arp.retransmitInterval.nanoseconds)
        }
        scheduleDAD()
    }

    /// A solicitation for our tentative `target` from :: (section 5.4.3:
    /// someone else probes for it), or an advertisement for it (5.4.4):
    /// the address is duplicated.
    func dadConflict(_ target: IPv6Address, on i: InterfaceIndex) {
        let k = AddressKey6(interface: i, address: target)
        guard tentative6.removeValue(forKey: k) != nil else { return }
        duplicated6.insert(k)
        scheduleDAD()
        report(.duplicateAddress(interface: i, address: target))
    }

    func sendDADProbe(for target: IPv6Address, on out: InterfaceIndex) {
        guard var p = pool.allocate() else { return }
        pool.setLength(&p, IPv6Packet.headerLength + 24)
        let b = pool.bytes(p)
        let destination = target.solicitedNode
        ICMPv6Repr.neighborSolicitation(target: target).emit(into: b.tail(from: IPv6Packet.headerLength), source: .any, destination: destination)
        IPv6Repr(source: .any, destination: destination, nextHeader: .icmpv6, payloadLength: 24, hopLimit: 255).emit(into: b)
        hot.pointee.counters.originated &+= 1
        sendFrame(p, on: out, to: destination.multicastMAC.rawValue, type: .ipv6)
    }
}

extension Stack {
    /// A batch stage before the per-packet path (VPP's way with memory
    /// latency): the IPv6 FIB lookups of the batch's frames (at most
    /// `warmBatch`) are walked level by level across the whole batch, so the
    /// cache misses of many descents overlap instead of following one
    /// another. The per-packet path takes the result (`lookup6`) when its
    /// packet is the one looked up and the FIB has not changed since.
    @inline(never)
    func warmRoutes6(_ packets: UnsafeBufferPointer<PacketHandle>) {
        precondition(packets.count <= Stack.warmBatch, "a batch stage takes at most warmBatch frames")
        hot.pointee.warmGeneration = fib6View.pointee.generation
        let view = fib6View.pointee
        let values = warmValues, keys = warmKeys
        var live = 0
        for k in 0..<packets.count {
            let b = pool.bytes(packets[k])
            guard b.count >= EthernetFrame.headerLength + IPv6Packet.headerLength, b.be16(12) == EtherType.ipv6.rawValue else {
                values[k] = 0
                keys[k] = .any  // nothing looked up for this one
                continue
            }
            let d = IPv6Address(bytes: b, at: EthernetFrame.headerLength + IPv6Packet.Field.destination)
            keys[k] = d
            values[k] = view.level0[d.top16].load(ordering: .acquiring)
            live += 1
        }
        guard live > 0 else { return }
        LPMTable<IPv6Address>.descendTogether(keys, values, count: packets.count, nodes: view.nodes)
        // The route slots too (the kind, interface and next hop the path reads).
        var sink: UInt32 = 0
        for k in 0..<packets.count where values[k] != 0 { sink &+= UInt32(view.slots[Int(values[k] &- 1)].interface) }
        hot.pointee.warmSink = sink
    }

    /// The IPv6 FIB lookup of the packet being processed: the batch stage's
    /// answer when it is for this packet's destination and the FIB is the
    /// same, else the lookup itself.
    @inline(__always)
    func lookup6(_ destination: IPv6Address) -> UnsafeMutablePointer<RouteSlot<IPv6Address>>? {
        let k = hot.pointee.warmIndex
        if k >= 0, warmKeys[k] == destination, !destination.isUnspecified,
           hot.pointee.warmGeneration == fib6View.pointee.generation {
            let v = warmValues[k]
            return v == 0 ? nil : fib6View.pointee.slots + Int(v &- 1)
        }
        return fib6View.pointee.lookup(destination)
    }
}
