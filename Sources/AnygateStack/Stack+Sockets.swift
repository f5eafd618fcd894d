public import AnygateWire

extension Stack {
    // MARK: Socket API

    /// Opens a socket. Host-backed sockets are opened by the host when
    /// they are connected.
    public func openSocket(_ proto: SocketProtocol, backend: SocketBackend = .stack,
                           queueCapacity: Int = 64) throws(SocketError) -> SocketID {
        guard let index = (0..<configuration.maxSockets).first(where: { !socketTable[$0].inUse }) else {
            throw .tableFull(configuration.maxSockets)
        }
        var pcb = PCB(proto: proto, backend: backend)
        pcb.inUse = true
        pcb.queueCapacity = queueCapacity
        socketTable[index] = pcb
        socketCount = max(socketCount, index + 1)
        socketQueues[index] = []
        socketQueues[index]?.reserveCapacity(queueCapacity)
        return SocketID(value: index)
    }

    func valid(_ id: SocketID) -> Bool { id.value >= 0 && id.value < socketCount && socketTable[id.value].inUse }

    func pcb(_ id: SocketID) throws(SocketError) -> PCB {
        guard valid(id) else { throw .noSuchSocket }
        return socketTable[id.value]
    }

    /// Binds a local address (0.0.0.0 for any) and, for UDP, a port.
    public func bind(_ id: SocketID, address: IPAddress, port: UInt16 = 0) throws(SocketError) {
        var p = try pcb(id)
        p.ipv6 = address.isIPv6
        p.localAddress = address.v4 ?? .any
        p.localAddress6 = address.v6 ?? .any
        p.localPort = port
        socketTable[id.value] = p
    }

    /// Whether another stack socket already has this protocol, local
    /// address and port, and peer (sockets differing in peer may share a port).
    func inUse(_ id: SocketID, _ p: PCB) -> Bool {
        (0..<socketCount).contains { k in
            let s = socketTable[k]
            guard k != id.value, s.inUse, s.backend == .stack, p.backend == .stack, s.proto == p.proto, s.ipv6 == p.ipv6 else { return false }
            if case .udp = p.proto, s.localPort != p.localPort { return false }
            if p.ipv6 {
                let sameLocal = s.localAddress6 == p.localAddress6 || s.localAddress6.isUnspecified || p.localAddress6.isUnspecified
                return sameLocal && s.remoteAddress6 == p.remoteAddress6
            }
            let sameLocal = s.localAddress == p.localAddress || s.localAddress.isUnspecified || p.localAddress.isUnspecified
            return sameLocal && s.remoteAddress == p.remoteAddress
        }
    }

    /// Sets the peer: sends go there, and only its packets are received.
    /// A host-backed socket is opened on the host now.
    public func connect(_ id: SocketID, to address: IPAddress, port: UInt16 = 0) throws(SocketError) {
        var p = try pcb(id)
        guard address.isIPv6 == p.ipv6 || (p.localAddress.isUnspecified && p.localAddress6.isUnspecified) else {
            throw .noSourceAddress
        }
        p.ipv6 = address.isIPv6
        p.remoteAddress = address.v4 ?? .any
        p.remoteAddress6 = address.v6 ?? .any
        p.remotePort = port
        p.route.clear()
        if inUse(id, p) {
            if case .udp = p.proto { throw .addressInUse(p.localPort) }
            throw .addressInUse(0)
        }
        socketTable[id.value] = p
        if p.backend == .host {
            let local: IPAddress = p.ipv6 ? .v6(p.localAddress6) : .v4(p.localAddress)
            let remote: IPAddress = p.ipv6 ? .v6(p.remoteAddress6) : .v4(p.remoteAddress)
            if let error = hypercalls.openHostSocket(id, protocol: p.proto, local: local, localPort: p.localPort,
                                                     remote: remote, remotePort: port, ttl: p.ttl ?? configuration.defaultTTL,
                                                     tos: p.tos, dontFragment: p.dontFragment) {
                throw .host(error)
            }
        }
    }

    /// Outer header settings for what the socket sends: TTL (nil: the
    /// stack default) and TOS.
    public func setSocketOptions(_ id: SocketID, ttl: UInt8?, tos: UInt8, dontFragment: Bool = false) throws(SocketError) {
        var p = try pcb(id)
        p.ttl = ttl
        p.tos = tos
        p.dontFragment = dontFragment
        socketTable[id.value] = p
    }

    /// Closes a socket, dropping what it had queued.
    public func closeSocket(_ id: SocketID) {
        guard valid(id) else { return }
        for d in socketQueues[id.value] ?? [] { pool.free(d.packet) }
        socketQueues[id.value] = nil
        if socketTable[id.value].backend == .host { hypercalls.closeHostSocket(id) }
        socketTable[id.value].inUse = false
    }

    public func socketCounters(_ id: SocketID) -> SocketCounters? {
        guard valid(id) else { return nil }
        return socketTable[id.value].counters
    }

    /// Takes the oldest queued datagram.
    /// Whether what reaches the socket is reported (`StackEvent.datagram`,
    /// a copy each: control traffic) instead of queued for `socketReceive`.
    public func setReportsDatagrams(_ id: SocketID, _ on: Bool) {
        guard valid(id) else { return }
        socketTable[id.value].reportsDatagrams = on
    }

    public func socketReceive(_ id: SocketID) -> ReceivedDatagram? {
        guard valid(id), let d = socketQueues[id.value]?.first else { return nil }
        socketQueues[id.value]?.removeFirst()
        return ReceivedDatagram(packet: d.packet, from: d.from, port: d.port)
    }

    /// Sends `payload` (a packet whose bytes are the payload, with
    /// headroom in front) to the connected peer. Takes ownership.
    public func socketSend(_ id: SocketID, _ payload: PacketHandle) throws(SocketError) {
        enter()
        defer { flush() }
        // The caller's mistakes are errors, not drops: the packet never entered.
        guard valid(id) else {
            pool.free(payload)
            throw .noSuchSocket
        }
        guard socketTable[id.value].connected else {
            pool.free(payload)
            throw .notConnected
        }
        hot.pointee.counters.originated &+= 1
        try socketSend(id, payload, ttl: nil, tos: nil, sourcePort: nil)
    }

    /// The send path, with per-packet outer overrides (tunnels inherit the
    /// inner TTL/TOS, and GRE-in-UDP varies the source port per flow; over
    /// IPv6 `flowHash` is the flow label, RFC 6438). `fragmentable` lets a
    /// packet be fragmented whatever the socket's DF setting (a tunnel's
    /// inner IPv6 packet of up to 1280 bytes). The caller has counted
    /// `payload` as originated; what fails here is a drop with its reason.
    func socketSend(_ id: SocketID, _ payload: PacketHandle, ttl: UInt8?, tos: UInt8?, sourcePort: UInt16?,
                    flowHash: UInt32 = 0, fragmentable: Bool = false) throws(SocketError) {
        let k = id.value
        guard valid(id) else {
            drop(payload, .socketClosed, side: .output)
            throw .noSuchSocket
        }
        guard socketTable[k].connected else {
            drop(payload, .socketClosed, side: .output)
            throw .notConnected
        }
        if socketTable[k].backend == .host {
            guard hypercalls.sendHostSocket(id, payload, sourcePort: sourcePort) else {
                socketTable[k].counters.sendErrors &+= 1
                drop(payload, .hostSocketSendFailed, side: .output)
                throw .host("the host socket refused the packet")
            }
            socketTable[k].counters.sent &+= 1
            hot.pointee.counters.toHostSockets &+= 1
            return
        }
        if socketTable[k].ipv6 {
            return try socketSend6(k, payload, hopLimit: ttl, trafficClass: tos, sourcePort: sourcePort, flowLabel: flowHash,
                                   fragmentable: fragmentable)
        }
        let remote = socketTable[k].remoteAddress
        let route = socketTable[k].route.route(to: remote, in: fibView.pointee, statistics: &routeCacheStatistics)
        guard let route else {
            socketTable[k].counters.sendErrors &+= 1
            drop(payload, .noRoute, side: .output)
            throw .noRoute(.v4(remote))
        }
        let local = socketTable[k].localAddress
        let source = local.isUnspecified ? selectSource(destination: remote, route: route) : local
        guard !source.isUnspecified else {
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
            UDPRepr(sourcePort: sourcePort ?? socketTable[k].localPort, destinationPort: socketTable[k].remotePort,
                    payloadLength: Int(payload.length))
                .emit(into: pool.bytes(packet), source: source, destination: remote)
            if packet.segmentSize != 0 {
                // A UDP super-frame: the checksum stays partial for the device that cuts it.
                let pseudo = InternetChecksum.pseudoHeaderSum(source: source, destination: remote, protocol: .udp,
                                                              length: Int(packet.length))
                pool.bytes(packet).setBE16(6, InternetChecksum.fold(pseudo))
            }
            proto = .udp
        case .raw(let pr):
            proto = pr
        }
        let length = Int(packet.length)
        guard pool.prepend(&packet, IPv4Packet.minimumHeaderLength) else {
            drop(payload, .headroomExhausted, side: .output)
            throw .poolExhausted
        }
        IPv4Repr(source: source, destination: remote, proto: proto, payloadLength: length,
                 ttl: ttl ?? socketTable[k].ttl ?? configuration.defaultTTL, tos: tos ?? socketTable[k].tos, identification: nextIPID(),
                 dontFragment: socketTable[k].dontFragment && !fragmentable)
            .emit(into: pool.bytes(packet))
        socketTable[k].counters.sent &+= 1
        do {
            try outputLocal(packet)
        } catch {
            socketTable[k].counters.sendErrors &+= 1
            switch error {
            case .noRoute(let a): throw .noRoute(.v4(a))
            case .tooBig(let mtu): throw .tooBig(mtu: mtu)
            case .interfaceDown: throw .interfaceDown
            case .poolExhausted: throw .poolExhausted
            default: throw .noSourceAddress
            }
        }
    }

    // MARK: Receive (demultiplexing)

    /// Finds the socket for a datagram: protocol, local port (UDP), bound
    /// address if any, connected peer if any.
    func demux(_ proto: SocketProtocol, destination: IPv4Address, destinationPort: UInt16, source: IPv4Address,
               sourcePort: UInt16) -> Int? {
        for k in 0..<socketCount {
            let s = socketTable + k
            guard s.pointee.inUse, !s.pointee.ipv6, s.pointee.backend == .stack, s.pointee.proto == proto else { continue }
            if case .udp = proto, s.pointee.localPort != destinationPort { continue }
            if !s.pointee.localAddress.isUnspecified && s.pointee.localAddress != destination { continue }
            if !s.pointee.remoteAddress.isUnspecified && s.pointee.remoteAddress != source { continue }
            if case .udp = proto, s.pointee.matchRemotePort, s.pointee.remotePort != 0, s.pointee.remotePort != sourcePort { continue }
            return k
        }
        return nil
    }

    /// Hands a datagram to a socket: its tunnel, or its queue (bounded).
    /// `outerTOS` is the TOS of the IP header the datagram came in (the
    /// ECN a tunnel combines with its inner packet's); 0 when unknown.
    /// `rx` is the interface it arrived on (nil: from a host socket).
    func deliver(_ packet: PacketHandle, to k: Int, from: IPAddress, port: UInt16, outerTOS: UInt8 = 0,
                 rx: InterfaceIndex?) {
        guard socketTable[k].inUse else { return dropOnInput(packet, .socketClosed, rx: rx) }
        socketTable[k].counters.received &+= 1
        switch socketTable[k].receiver {
        case .tunnel(let t):
            hot.pointee.counters.consumed &+= 1
            tunnelReceive(t, packet, from: from, sourcePort: port, outerTOS: outerTOS)
        case .esp(let t):
            hot.pointee.counters.consumed &+= 1
            espSocketReceive(t, socket: k, packet, from: from, sourcePort: port, outerTOS: outerTOS)
        case .queue:
            queueForOwner(packet, socket: k, from: from, port: port, rx: rx)
        }
    }

    /// Queues a datagram for the socket's owner to read (bounded).
    func queueForOwner(_ packet: PacketHandle, socket k: Int, from: IPAddress, port: UInt16, rx: InterfaceIndex?) {
        if socketTable[k].reportsDatagrams {
            hot.pointee.counters.consumed &+= 1
            report(.datagram(socket: SocketID(value: k), from: from, port: port, bytes: pool.copyBytes(packet)))
            return pool.free(packet)
        }
        if (socketQueues[k]?.count ?? 0) >= socketTable[k].queueCapacity {
            socketTable[k].counters.queueDrops &+= 1
            return dropOnInput(packet, .socketQueueFull, rx: rx)
        }
        hot.pointee.counters.consumed &+= 1
        socketQueues[k, default: []].append((packet, from, port))
    }

    func dropOnInput(_ packet: PacketHandle, _ reason: DropReason, rx: InterfaceIndex?) {
        if let rx { drop(packet, reason, rx: rx) } else { drop(packet, reason, side: .input) }
    }

    /// The host learnt a smaller path MTU for a host-backed socket's peer
    /// (a send refused with EMSGSIZE, the kernel having taken the ICMP).
    public func hostSocketPathMTU(_ id: SocketID, _ mtu: Int) {
        enter()
        guard let t = tunnelConfigs.keys.first(where: { tunnelStates[$0].socket == id }) else { return }
        learnPathMTU(t, mtu, source: "host socket")
        flush()
    }

    /// The host's socket for `id` dropped `count` datagrams in its full
    /// receive queue: counted as `kernel-rx-queue` on the tunnel that owns
    /// the socket. Returns that tunnel's interface, or nil.
    @discardableResult
    public func recordHostSocketDrops(_ id: SocketID, count: UInt64, reason: DropReason = .kernelReceiveQueue) -> InterfaceIndex? {
        guard let t = tunnelConfigs.keys.first(where: { tunnelStates[$0].socket == id }) else { return nil }
        let i = tunnelStates[t].interface
        recordDrops(reason, count: count, on: i)
        return i
    }

    /// Packets the host read from a host-backed socket (payloads, as the
    /// stack's own sockets deliver them). Takes ownership.
    public func hostSocketReceived(_ id: SocketID, _ packets: UnsafeBufferPointer<PacketHandle>, from: IPAddress, port: UInt16) {
        enter()
        for p in packets {
            hot.pointee.counters.fromHostSockets &+= 1
            guard valid(id) else {
                drop(p, .socketClosed, side: .input)
                continue
            }
            if _slowPath(hot.pointee.traceArmed), let a = from.v4 {
                tracedHostSocketInput(p, socket: id.value, from: a, port: port)
            } else {
                deliver(p, to: id.value, from: from, port: port, rx: nil)
            }
        }
        flush()
    }
}
