public import AnygateWire

/// Why a tunnel could not be created.
public enum TunnelError: Error, Equatable, Sendable, CustomStringConvertible {
    case interface(InterfaceError)
    case socket(SocketError)
    case invalid(String)

    public var description: String {
        switch self {
        case .interface(let e): "\(e)"
        case .socket(let e): "\(e)"
        case .invalid(let s): s
        }
    }
}

extension Stack {
    /// Deepest nesting of tunnels within tunnels before packets are dropped
    /// (a tunnel whose underlay route leads into itself stops here).
    public static let maxTunnelNesting = 3

    // MARK: Control plane

    /// Creates a GRE tunnel: a point-to-point interface named after it and
    /// a socket (of the stack or of the host) bound to `local` and connected
    /// to `remote`. Addresses are added to its interface like any other.
    @discardableResult
    public func addTunnel(_ config: TunnelConfiguration) throws(TunnelError) -> InterfaceIndex {
        guard !config.remote.isUnspecified else { throw .invalid("a tunnel needs a remote address") }
        let mtu = config.mtu ?? derivedTunnelMTU(config)
        let i: InterfaceIndex
        do { i = try addInterface(name: config.name, mac: .zero, mtu: max(68, mtu)) } catch { throw .interface(error) }
        let proto: SocketProtocol = config.encapsulation == .gre ? .raw(.gre) : .udp
        let s = openSocket(proto, backend: config.backend, queueCapacity: 1)
        let t = tunnels.firstIndex { $0 == nil } ?? tunnels.count
        if t == tunnels.count { tunnels.append(nil) }
        do {
            let port = config.encapsulation == .greInUDP ? TunnelEncapsulation.greInUDPPort : 0
            try bind(s, address: .v4(config.local), port: port)
            try setSocketOptions(s, ttl: config.ttl, tos: config.tos ?? 0)
            sockets[s.value]?.receiver = .tunnel(t)
            sockets[s.value]?.matchRemotePort = false
            try connect(s, to: .v4(config.remote), port: port)
        } catch {
            closeSocket(s)
            try? removeInterface(i)
            throw .socket(error)
        }
        ifs[i].tunnel = Int32(t)
        var state = TunnelState(config: config, interface: i, socket: s)
        state.nextKeepalive = hot.pointee.now
        tunnels[t] = state
        do { try setUp(i, true) } catch { throw .interface(error) }
        return i
    }

    /// Removes a tunnel with its interface, routes and socket.
    public func removeTunnel(named name: String) throws(TunnelError) {
        guard let t = tunnels.firstIndex(where: { $0?.config.name == name }), let state = tunnels[t] else {
            throw .invalid("no tunnel named \(name)")
        }
        closeSocket(state.socket)
        ifs[state.interface].tunnel = -1
        tunnels[t] = nil
        do { try removeInterface(state.interface) } catch { throw .interface(error) }
    }

    public var tunnelList: [TunnelStatus] {
        tunnels.compactMap { $0 }.map {
            TunnelStatus(configuration: $0.config, interface: $0.interface, up: ifs[$0.interface].up, mtu: ifs[$0.interface].mtu,
                         reason: ifs[$0.interface].up ? nil : ($0.downReason ?? "down"), counters: $0.counters)
        }
    }

    /// The tunnel MTU from the underlay: the MTU of the interface the route
    /// to the remote leaves by, minus the encapsulation. Host-backed tunnels
    /// cannot see the host's path and assume 1500.
    func derivedTunnelMTU(_ c: TunnelConfiguration) -> Int {
        var underlay = 1500
        if c.backend == .stack, let r = fib.lookup(c.remote), ifs[r.interface].tunnel < 0, r.kind != .local {
            underlay = ifs[r.interface].mtu
        }
        return underlay - c.overhead
    }

    // MARK: Transmit

    /// Sends an inner IPv4 packet (bytes start at its header) through tunnel `t`.
    func tunnelOutput(_ t: Int, _ packet: PacketHandle) {
        guard var state = tunnels[t] else { return drop(packet, .tunnelDown, rx: nil) }
        hot.pointee.tunnelDepth += 1
        defer { hot.pointee.tunnelDepth -= 1 }
        guard hot.pointee.tunnelDepth <= Stack.maxTunnelNesting else { return drop(packet, .tunnelNesting, rx: nil) }
        let c = state.config
        let inner = IPv4Packet(unchecked: pool.bytes(packet))
        if c.mssClamp != .off { clampMSS(inner, tunnel: &state) }
        let innerTTL = inner.ttl, innerTOS = inner.tos
        let flowHash = Stack.flowHash(inner)
        var p = packet
        let g = GRERepr(protocolType: .ipv4, key: c.key, sequence: c.sequence ? state.txSequence : nil)
        guard pool.prepend(&p, g.headerLength) else { return drop(packet, .headroomExhausted, rx: nil) }
        g.emit(into: pool.bytes(p))
        if c.sequence { state.txSequence &+= 1 }
        state.counters.txPackets &+= 1
        state.counters.txBytes &+= UInt64(packet.length)
        tunnels[t] = state
        // RFC 8086: a source port from the inner flow, in the dynamic range.
        let sourcePort: UInt16? = c.encapsulation == .greInUDP ? 49152 | UInt16(truncatingIfNeeded: flowHash) & 0x3FFF : nil
        do {
            try socketSend(state.socket, p, ttl: c.ttl == nil ? innerTTL : nil, tos: c.tos == nil ? innerTOS : nil,
                           sourcePort: sourcePort)
        } catch {
            tunnels[t]?.counters.sendErrors &+= 1
            dropCounters[DropReason.tunnelSendFailed.counterIndex] &+= 1
        }
    }

    /// A hash of the inner packet's addresses, protocol and ports.
    static func flowHash(_ ip: IPv4Packet) -> UInt32 {
        var h = ip.source.rawValue &* 0x9E37_79B1 ^ ip.destination.rawValue
        h = h &* 0x85EB_CA77 ^ UInt32(ip.proto.rawValue)
        let hl = ip.headerLength
        if (ip.proto == .tcp || ip.proto == .udp), !ip.isFragment, ip.bytes.count >= hl + 4 {
            h = h &* 0xC2B2_AE3D ^ ip.bytes.be32(hl)
        }
        return h ^ (h >> 15)
    }

    /// Lowers the MSS of a TCP SYN to fit the tunnel.
    func clampMSS(_ ip: IPv4Packet, tunnel state: inout TunnelState) {
        guard ip.proto == .tcp, !ip.isFragment else { return }
        let payload = ip.payload
        guard payload.count >= TCPHeader.minimumLength else { return }
        let tcp = TCPHeader(unchecked: payload)
        guard tcp.isSYN, tcp.headerLength >= TCPHeader.minimumLength, tcp.headerLength <= payload.count else { return }
        let limit: UInt16
        switch state.config.mssClamp {
        case .off: return
        case .auto: limit = UInt16(clamping: ifs[state.interface].mtu - IPv4Packet.minimumHeaderLength - TCPHeader.minimumLength)
        case .fixed(let n): limit = n
        }
        if tcp.clampMSS(to: limit) != nil { state.counters.mssClamped &+= 1 }
    }

    // MARK: Receive

    /// A GRE packet from tunnel `t`'s socket (bytes start at the GRE header).
    func tunnelReceive(_ t: Int, _ packet: PacketHandle, from: IPv4Address, sourcePort: UInt16) {
        guard var state = tunnels[t] else { return drop(packet, .tunnelDown, rx: nil) }
        let c = state.config
        let bytes = pool.bytes(packet)
        let gre: GREHeader
        do {
            gre = try GREHeader(validating: bytes)
        } catch {
            let reason: DropReason
            switch error {
            case .badChecksum: reason = .greBadChecksum
            case .badVersion, .unsupported: reason = .greUnsupported
            default: reason = .greMalformed
            }
            return drop(packet, reason, rx: state.interface)
        }
        guard gre.key == c.key else { return drop(packet, .greKeyMismatch, rx: state.interface) }
        if c.sequence {
            // RFC 2890 section 2.2: accept only sequence numbers after the last one.
            guard let seq = gre.sequence else { return drop(packet, .greSequence, rx: state.interface) }
            if let last = state.rxSequence, Int32(bitPattern: seq &- last) <= 0 {
                return drop(packet, .greSequence, rx: state.interface)
            }
            state.rxSequence = seq
        }
        let type = gre.protocolType
        var p = packet
        pool.consume(&p, gre.headerLength)
        if type.rawValue == 0 {
            // The answer to one of our keepalives.
            state.counters.keepalivesReceived &+= 1
            state.missed = 0
            tunnels[t] = state
            pool.free(p)
            if !state.alive { setTunnelAlive(t, true) }
            return
        }
        guard type == .ipv4 else {
            tunnels[t] = state
            return drop(p, .greUnknownProtocol, rx: state.interface)
        }
        let inner = IPv4Packet(unchecked: pool.bytes(p))
        state.counters.rxPackets &+= 1
        state.counters.rxBytes &+= UInt64(p.length)
        if inner.bytes.count >= IPv4Packet.minimumHeaderLength, inner.version == 4, inner.proto == .gre,
           inner.source == c.local, inner.destination == c.remote {
            // A keepalive of the peer's: send its inner GRE packet back.
            state.counters.keepalivesAnswered &+= 1
            tunnels[t] = state
            var reply = p
            pool.consume(&reply, min(inner.headerLength, Int(reply.length)))
            try? socketSend(state.socket, reply, ttl: nil, tos: nil, sourcePort: nil)
            return
        }
        if c.mssClamp != .off, inner.bytes.count >= IPv4Packet.minimumHeaderLength, inner.version == 4,
           inner.headerLength <= inner.bytes.count, inner.totalLength <= inner.bytes.count {
            clampMSS(inner, tunnel: &state)
        }
        tunnels[t] = state
        ifs[state.interface].counters.rxPackets &+= 1
        ifs[state.interface].counters.rxBytes &+= UInt64(p.length)
        guard ifs[state.interface].up else { return drop(p, .tunnelDown, rx: state.interface) }
        ipv4Input(p, rx: state.interface, linkBroadcast: false)
    }

    // MARK: Keepalives and MTU

    /// Runs each tunnel's keepalive schedule and follows underlay MTU changes.
    func tunnelTimers() {
        let now = hot.pointee.now
        for t in tunnels.indices {
            guard let state = tunnels[t] else { continue }
            if state.config.mtu == nil {
                let mtu = max(68, derivedTunnelMTU(state.config))
                if mtu != ifs[state.interface].mtu { try? setMTU(state.interface, mtu) }
            }
            guard let ka = state.config.keepalive, now >= state.nextKeepalive else { continue }
            tunnels[t]?.nextKeepalive = now + ka.interval.nanoseconds
            if state.missed >= ka.retries && state.alive {
                setTunnelAlive(t, false)
            }
            sendKeepalive(t)
            tunnels[t]?.missed += 1
        }
    }

    /// Sends one keepalive: a GRE packet addressed from the peer back to
    /// us, inside the tunnel, which the peer decapsulates and returns.
    func sendKeepalive(_ t: Int) {
        guard let state = tunnels[t], var p = pool.allocate() else { return }
        let g = GRERepr(protocolType: EtherType(rawValue: 0), key: state.config.key)
        pool.setLength(&p, IPv4Packet.minimumHeaderLength + g.headerLength)
        let b = pool.bytes(p)
        g.emit(into: b.tail(from: IPv4Packet.minimumHeaderLength))
        IPv4Repr(source: state.config.remote, destination: state.config.local, proto: .gre, payloadLength: g.headerLength,
                 ttl: 255, identification: nextIPID()).emit(into: b)
        tunnels[t]?.counters.keepalivesSent &+= 1
        tunnelOutput(t, p)
    }

    /// The tunnel's line state: down withdraws its routes, up restores them.
    func setTunnelAlive(_ t: Int, _ alive: Bool) {
        guard var state = tunnels[t], state.alive != alive else { return }
        state.alive = alive
        state.counters.stateChanges &+= 1
        state.downReason = alive ? nil : "\(state.config.keepalive?.retries ?? 0) keepalives unanswered"
        tunnels[t] = state
        try? setUp(state.interface, alive)
    }

    /// The next time a tunnel timer is due.
    var nextTunnelDeadline: Int64? {
        tunnels.compactMap { $0 }.compactMap { $0.config.keepalive == nil && $0.config.mtu != nil ? nil : $0.nextKeepalive }.min()
    }
}
