public import AnygateWire

extension Stack {
    // MARK: Socket API

    /// Opens a socket. Host-backed sockets are opened by the host when
    /// they are connected.
    public func openSocket(_ proto: SocketProtocol, backend: SocketBackend = .stack, queueCapacity: Int = 64) -> SocketID {
        var pcb = PCB(proto: proto, backend: backend)
        pcb.queueCapacity = queueCapacity
        pcb.queue.reserveCapacity(queueCapacity)
        if let free = sockets.firstIndex(where: { $0 == nil }) {
            sockets[free] = pcb
            return SocketID(value: free)
        }
        sockets.append(pcb)
        return SocketID(value: sockets.count - 1)
    }

    func pcb(_ id: SocketID) throws(SocketError) -> PCB {
        guard id.value >= 0, id.value < sockets.count, let p = sockets[id.value] else { throw .noSuchSocket }
        return p
    }

    /// Binds a local address (0.0.0.0 for any) and, for UDP, a port.
    public func bind(_ id: SocketID, address: IPAddress, port: UInt16 = 0) throws(SocketError) {
        var p = try pcb(id)
        p.localAddress = address.v4 ?? .any
        p.localPort = port
        sockets[id.value] = p
    }

    /// Whether another stack socket already has this protocol, local
    /// address and port, and peer (sockets differing in peer may share a port).
    func inUse(_ id: SocketID, _ p: PCB) -> Bool {
        sockets.indices.contains { k in
            guard k != id.value, let s = sockets[k], s.backend == .stack, p.backend == .stack, s.proto == p.proto else { return false }
            if case .udp = p.proto, s.localPort != p.localPort { return false }
            let sameLocal = s.localAddress == p.localAddress || s.localAddress.isUnspecified || p.localAddress.isUnspecified
            return sameLocal && s.remoteAddress == p.remoteAddress
        }
    }

    /// Sets the peer: sends go there, and only its packets are received.
    /// A host-backed socket is opened on the host now.
    public func connect(_ id: SocketID, to address: IPAddress, port: UInt16 = 0) throws(SocketError) {
        var p = try pcb(id)
        p.remoteAddress = address.v4 ?? .any
        p.remotePort = port
        p.route.clear()
        if inUse(id, p) {
            if case .udp = p.proto { throw .addressInUse(p.localPort) }
            throw .addressInUse(0)
        }
        sockets[id.value] = p
        if p.backend == .host {
            if let error = hypercalls.openHostSocket(id, protocol: p.proto, local: p.localAddress, localPort: p.localPort,
                                                     remote: p.remoteAddress, remotePort: port, ttl: p.ttl ?? configuration.defaultTTL,
                                                     tos: p.tos) {
                throw .host(error)
            }
        }
    }

    /// Outer header settings for what the socket sends: TTL (nil: the
    /// stack default) and TOS.
    public func setSocketOptions(_ id: SocketID, ttl: UInt8?, tos: UInt8) throws(SocketError) {
        var p = try pcb(id)
        p.ttl = ttl
        p.tos = tos
        sockets[id.value] = p
    }

    /// Closes a socket, dropping what it had queued.
    public func closeSocket(_ id: SocketID) {
        guard id.value >= 0, id.value < sockets.count, let p = sockets[id.value] else { return }
        for d in p.queue { pool.free(d.packet) }
        if p.backend == .host { hypercalls.closeHostSocket(id) }
        sockets[id.value] = nil
    }

    public func socketCounters(_ id: SocketID) -> SocketCounters? {
        guard id.value >= 0, id.value < sockets.count else { return nil }
        return sockets[id.value]?.counters
    }

    /// Takes the oldest queued datagram.
    public func socketReceive(_ id: SocketID) -> ReceivedDatagram? {
        guard id.value >= 0, id.value < sockets.count, var p = sockets[id.value], !p.queue.isEmpty else { return nil }
        let d = p.queue.removeFirst()
        sockets[id.value] = p
        return ReceivedDatagram(packet: d.packet, from: d.from, port: d.port)
    }

    /// Sends `payload` (a packet whose bytes are the payload, with
    /// headroom in front) to the connected peer. Takes ownership.
    public func socketSend(_ id: SocketID, _ payload: PacketHandle) throws(SocketError) {
        enter()
        defer { flush() }
        try socketSend(id, payload, ttl: nil, tos: nil, sourcePort: nil)
    }

    /// The send path, with per-packet outer overrides (tunnels inherit the
    /// inner TTL/TOS, and GRE-in-UDP varies the source port per flow).
    func socketSend(_ id: SocketID, _ payload: PacketHandle, ttl: UInt8?, tos: UInt8?, sourcePort: UInt16?) throws(SocketError) {
        guard id.value >= 0, id.value < sockets.count, var p = sockets[id.value] else {
            pool.free(payload)
            throw .noSuchSocket
        }
        guard !p.remoteAddress.isUnspecified else {
            pool.free(payload)
            throw .notConnected
        }
        if p.backend == .host {
            let ok = hypercalls.sendHostSocket(id, payload, sourcePort: sourcePort)
            if ok { p.counters.sent &+= 1 } else { p.counters.sendErrors &+= 1 }
            sockets[id.value] = p
            if !ok {
                pool.free(payload)
                throw .host("the host socket refused the packet")
            }
            return
        }
        var stats = routeCacheStatistics
        let route = p.route.route(to: p.remoteAddress, in: fib, statistics: &stats)
        routeCacheStatistics = stats
        guard let route else {
            p.counters.sendErrors &+= 1
            sockets[id.value] = p
            pool.free(payload)
            dropCounters[DropReason.noRoute.counterIndex] &+= 1
            throw .noRoute(.v4(p.remoteAddress))
        }
        let source = p.localAddress.isUnspecified ? selectSource(destination: p.remoteAddress, route: route) : p.localAddress
        guard !source.isUnspecified else {
            p.counters.sendErrors &+= 1
            sockets[id.value] = p
            pool.free(payload)
            throw .noSourceAddress
        }
        var packet = payload
        let proto: IPProtocol
        switch p.proto {
        case .udp:
            guard pool.prepend(&packet, UDPDatagram.headerLength) else {
                pool.free(payload)
                throw .poolExhausted
            }
            UDPRepr(sourcePort: sourcePort ?? p.localPort, destinationPort: p.remotePort, payloadLength: Int(payload.length))
                .emit(into: pool.bytes(packet), source: source, destination: p.remoteAddress)
            proto = .udp
        case .raw(let pr):
            proto = pr
        }
        let length = Int(packet.length)
        guard pool.prepend(&packet, IPv4Packet.minimumHeaderLength) else {
            pool.free(payload)
            throw .poolExhausted
        }
        IPv4Repr(source: source, destination: p.remoteAddress, proto: proto, payloadLength: length,
                 ttl: ttl ?? p.ttl ?? configuration.defaultTTL, tos: tos ?? p.tos, identification: nextIPID())
            .emit(into: pool.bytes(packet))
        p.counters.sent &+= 1
        sockets[id.value] = p
        do {
            try outputLocal(packet)
        } catch {
            sockets[id.value]?.counters.sendErrors &+= 1
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
        for (k, s) in sockets.enumerated() {
            guard let s, s.backend == .stack, s.proto == proto else { continue }
            if case .udp = proto, s.localPort != destinationPort { continue }
            if !s.localAddress.isUnspecified && s.localAddress != destination { continue }
            if !s.remoteAddress.isUnspecified && s.remoteAddress != source { continue }
            if case .udp = proto, s.matchRemotePort, s.remotePort != 0, s.remotePort != sourcePort { continue }
            return k
        }
        return nil
    }

    /// Hands a datagram to a socket: its tunnel, or its queue (bounded).
    func deliver(_ packet: PacketHandle, to k: Int, from: IPv4Address, port: UInt16) {
        guard var s = sockets[k] else { return pool.free(packet) }
        s.counters.received &+= 1
        switch s.receiver {
        case .tunnel(let t):
            sockets[k] = s
            tunnelReceive(t, packet, from: from, sourcePort: port)
        case .queue:
            if s.queue.count >= s.queueCapacity {
                s.counters.queueDrops &+= 1
                sockets[k] = s
                return drop(packet, .socketQueueFull, rx: nil)
            }
            s.queue.append((packet, .v4(from), port))
            sockets[k] = s
        }
    }

    /// Packets the host read from a host-backed socket (payloads, as the
    /// stack's own sockets deliver them). Takes ownership.
    public func hostSocketReceived(_ id: SocketID, _ packets: UnsafeBufferPointer<PacketHandle>, from: IPAddress, port: UInt16) {
        enter()
        for p in packets {
            guard id.value >= 0, id.value < sockets.count, sockets[id.value] != nil, let a = from.v4 else {
                pool.free(p)
                continue
            }
            deliver(p, to: id.value, from: a, port: port)
        }
        flush()
    }
}
