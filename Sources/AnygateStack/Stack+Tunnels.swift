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
        guard config.local.isIPv6 == config.remote.isIPv6 else {
            throw .invalid("a tunnel's local and remote addresses must be of one family (\(config.local), \(config.remote))")
        }
        if config.protection != nil && config.encapsulation == .greInUDP {
            throw .invalid("a protected tunnel carries GRE inside ESP; for NAT traversal ESP itself goes in UDP (protection encapsulation udp)")
        }
        if config.encapsulation == .ipsec {
            guard config.keepalive == nil else { throw .invalid("an ipsec tunnel has no GRE keepalives; IKE's dead-peer detection watches it") }
            guard let p = config.protection else { throw .invalid("an ipsec tunnel needs protection: its ESP encapsulation and subnets") }
            guard !p.localSubnets.isEmpty, !p.remoteSubnets.isEmpty,
                  p.localSubnets.count <= SelectorList.capacity, p.remoteSubnets.count <= SelectorList.capacity else {
                throw .invalid("an ipsec tunnel needs 1 to \(SelectorList.capacity) local and remote subnets")
            }
        }
        let mtu = config.mtu ?? derivedTunnelMTU(config)
        let i: InterfaceIndex
        do { i = try addInterface(name: config.name, mac: .zero, mtu: max(68, mtu)) } catch { throw .interface(error) }
        let proto: SocketProtocol = config.encapsulation == .gre ? .raw(.gre) : .udp
        // A tunnel's slot is its interface's index: both tables have maxInterfaces rows.
        let t = i
        var s = SocketID(value: -1)
        if config.encapsulation == .ipsec, let p = config.protection {
            // A policy-based link has only its ESP socket.
            do throws(SocketError) { s = try openESPSocket(p.encapsulation, config, tunnel: t) } catch {
                try? removeInterface(i)
                throw .socket(error)
            }
        } else { do throws(SocketError) {
            s = try openSocket(proto, backend: config.backend, queueCapacity: 1)
            let port = config.encapsulation == .greInUDP ? TunnelEncapsulation.greInUDPPort : 0
            try bind(s, address: config.local, port: port)
            try setSocketOptions(s, ttl: config.ttl, tos: config.tos ?? 0, dontFragment: config.pmtuDiscovery)
            socketTable[s.value].receiver = .tunnel(t)
            socketTable[s.value].matchRemotePort = false
            do throws(SocketError) { try connect(s, to: config.remote, port: port) } catch {
                closeSocket(s)
                throw error
            }
        } catch {
            try? removeInterface(i)
            throw .socket(error)
        } }
        var esp = config.encapsulation == .ipsec ? s : SocketID(value: -1)
        if config.encapsulation != .ipsec, let protection = config.protection {
            do throws(SocketError) { esp = try openESPSocket(protection.encapsulation, config, tunnel: t) } catch {
                closeSocket(s)
                try? removeInterface(i)
                throw .socket(error)
            }
        }
        // auto: protocol 50 beside the UDP socket, and sent on until a NAT is found.
        var raw = SocketID(value: -1)
        if let protection = config.protection, protection.auto {
            do throws(SocketError) { raw = try openESPSocket(.esp, config, tunnel: t) } catch {
                closeSocket(esp)
                if s != esp { closeSocket(s) }
                try? removeInterface(i)
                throw .socket(error)
            }
        }
        ifs[i].tunnel = Int32(t)
        let generation = tunnelStates[t].generation &+ 1
        tunnelStates[t] = TunnelState(config, interface: i, socket: s)
        tunnelStates[t].espSocket = raw.value >= 0 ? raw : esp
        if raw.value >= 0 {
            tunnelStates[t].espUDPSocket = esp
            tunnelStates[t].espRawSocket = raw
            if config.encapsulation == .ipsec { tunnelStates[t].socket = raw }
        }
        tunnelStates[t].generation = generation
        tunnelStates[t].nextKeepalive = hot.pointee.now
        hot.pointee.nextTunnelTimer = hot.pointee.now
        tunnelConfigs[t] = config
        ifs[i].rpf = config.rpf
        do { try setUp(i, true) } catch { throw .interface(error) }
        return i
    }

    /// Removes a tunnel with its interface, routes and socket.
    public func removeTunnel(named name: String) throws(TunnelError) {
        guard let t = tunnelConfigs.first(where: { $0.value.name == name })?.key else {
            throw .invalid("no tunnel named \(name)")
        }
        let state = tunnelStates[t]
        closeSocket(state.socket)
        if state.protected {
            removeSAs(tunnel: t)
            for e in Set([state.espSocket, state.espUDPSocket, state.espRawSocket]) where e != state.socket && e.value >= 0 { closeSocket(e) }
        }
        ifs[state.interface].tunnel = -1
        tunnelStates[t].inUse = false
        tunnelStates[t].generation &+= 1
        tunnelConfigs[t] = nil
        tunnelDownReasons[t] = nil
        pathMTUSources[t] = nil
        do { try removeInterface(state.interface) } catch { throw .interface(error) }
    }

    public var tunnelList: [TunnelStatus] {
        tunnelConfigs.keys.sorted().map { t in
            let s = tunnelStates[t]
            let c = tunnelConfigs[t]!
            let path = outerPathMTU(t)
            return TunnelStatus(configuration: c, interface: s.interface, up: ifs[s.interface].up,
                                mtu: ifs[s.interface].mtu, pathMTU: path.mtu, pathMTUSource: path.source,
                                reason: ifs[s.interface].up ? nil : (tunnelDownReasons[t] ?? "down"),
                                counters: s.counters)
        }
    }

    /// The tunnel MTU from the underlay: the MTU of the interface the route
    /// to the remote leaves by, minus the encapsulation. Host-backed tunnels
    /// cannot see the host's path and assume 1500.
    func derivedTunnelMTU(_ c: TunnelConfiguration) -> Int {
        underlayMTU(c) - c.overhead
    }

    func underlayMTU(_ c: TunnelConfiguration) -> Int {
        guard c.backend == .stack else { return 1500 }
        switch c.remote {
        case .v4(let a):
            if let r = fibView.pointee.lookupRoute(a), ifs[r.interface].tunnel < 0, r.kind != .local { return ifs[r.interface].mtu }
        case .v6(let a):
            if let r = fib6View.pointee.lookupRoute(a), ifs[r.interface].tunnel < 0, r.kind != .local { return ifs[r.interface].mtu }
        }
        return 1500
    }

    /// The outer path MTU in force for tunnel `t`, and where it came from.
    func outerPathMTU(_ t: Int) -> (mtu: Int, source: String) {
        let st = tunnelStates[t]
        guard let c = tunnelConfigs[t] else { return (0, "none") }
        if st.pathMTU != 0 { return (st.pathMTU, pathMTUSources[t] ?? "learned") }
        if let m = c.mtu { return (m + c.overhead, "configured") }
        return (underlayMTU(c), c.backend == .stack ? "interface" : "assumed")
    }

    /// The tunnel interface's MTU: the configured or derived one, lowered
    /// while a learned path MTU holds.
    func tunnelMTU(_ t: Int) -> Int {
        guard let c = tunnelConfigs[t] else { return 68 }
        var mtu = c.mtu ?? derivedTunnelMTU(c)
        let learned = tunnelStates[t].pathMTU
        if learned != 0 { mtu = min(mtu, learned - c.overhead) }
        return max(68, mtu)
    }

    // MARK: Path MTU discovery

    /// A smaller path MTU for the tunnel's outer packets: the tunnel MTU
    /// drops to fit for `pathMTUTimeout` (never below 576 outside), so
    /// larger inner packets draw fragmentation-needed (DF) or are
    /// fragmented (no DF) before they enter the tunnel.
    func learnPathMTU(_ t: Int, _ reported: Int, source: String) {
        let st = tunnelStates + t
        guard st.pointee.inUse, st.pointee.pmtuDiscovery, let c = tunnelConfigs[t] else { return }
        let mtu = max(c.pathMTUFloor, reported)
        let current = st.pointee.pathMTU != 0 ? st.pointee.pathMTU : (c.mtu.map { $0 + c.overhead } ?? underlayMTU(c))
        guard mtu <= current else { return }
        st.pointee.pathMTU = mtu
        st.pointee.pathMTUExpires = hot.pointee.now + TunnelConfiguration.pathMTUTimeout.nanoseconds
        pathMTUSources[t] = source
        if mtu < current { st.pointee.counters.pathMTUUpdates &+= 1 }
        let next = hot.pointee.nextTunnelTimer
        if next == 0 || st.pointee.pathMTUExpires < next { hot.pointee.nextTunnelTimer = st.pointee.pathMTUExpires }
        let interface = st.pointee.interface
        if tunnelMTU(t) != ifs[interface].mtu { try? setMTU(interface, tunnelMTU(t)) }
    }

    /// An ICMP fragmentation-needed reached the stack: if its quote is one of
    /// a tunnel's outer packets — our local and remote addresses, the
    /// tunnel's protocol, and, where the quote is long enough, its GRE key
    /// (GRE) or its destination port (GRE-in-UDP) — that tunnel learns the
    /// path MTU. Anything else is counted and ignored.
    func pathMTUReport(quoted: UnsafeMutableRawBufferPointer, mtu: Int, from: IPv4Address) {
        let ip = IPv4Packet(unchecked: quoted)
        let hl = ip.headerLength
        for (t, c) in tunnelConfigs where c.local == .v4(ip.source) && c.remote == .v4(ip.destination) {
            guard tunnelStates[t].inUse, quoteMatches(c, proto: ip.proto, quoted, at: hl) else { continue }
            // RFC 1191: a router that says 0 did not give its MTU; take the
            // next plateau below the packet that did not fit.
            var m = mtu
            if m == 0 {
                let total = ip.totalLength
                m = [32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68].first { $0 < total } ?? 68
            }
            learnPathMTU(t, m, source: "icmp from \(from)")
            return
        }
        hot.pointee.counters.pmtuReportsIgnored &+= 1
    }

    /// An ICMPv6 packet too big quoting one of a tunnel's outer IPv6
    /// packets (`quoted` starts at its IPv6 header): the tunnel learns the
    /// path MTU, as from ICMP over IPv4.
    func pathMTUReport6(quoted: UnsafeMutableRawBufferPointer, mtu: Int, from: IPv6Address) {
        guard quoted.count >= IPv6Packet.headerLength else { return }
        let ip = IPv6Packet(unchecked: quoted)
        for (t, c) in tunnelConfigs where c.local == .v6(ip.source) && c.remote == .v6(ip.destination) {
            guard tunnelStates[t].inUse, quoteMatches(c, proto: ip.nextHeader, quoted, at: IPv6Packet.headerLength) else { continue }
            learnPathMTU(t, mtu, source: "icmpv6 from \(from)")
            return
        }
        hot.pointee.counters.pmtuReportsIgnored &+= 1
    }

    /// Whether a quoted outer packet's protocol, and where the quote is long
    /// enough its GRE key (GRE) or its ports (GRE-in-UDP), are the tunnel's.
    func quoteMatches(_ c: TunnelConfiguration, proto: IPProtocol, _ quoted: UnsafeMutableRawBufferPointer, at hl: Int) -> Bool {
        let rest = quoted.count - hl
        if let p = c.protection {
            // ESP (or ESP in UDP 4500) from our end of the tunnel.
            if case .udp(let local, _) = p.encapsulation {
                return proto == .udp && (rest < 2 || quoted.be16(hl) == local)
            }
            return proto == .esp
        }
        switch c.encapsulation {
        case .gre:
            guard proto == .gre else { return false }
            if rest >= 4 {
                let flags = quoted.be16(hl)
                let keyed = flags & 0x2000 != 0
                let keyAt = hl + 4 + (flags & 0x8000 != 0 ? 4 : 0)
                if keyed != (c.key != nil) { return false }
                if let k = c.key, quoted.count >= keyAt + 4, quoted.be32(keyAt) != k { return false }
            }
        case .greInUDP:
            guard proto == .udp else { return false }
            if rest >= 4 {
                guard quoted.be16(hl + 2) == TunnelEncapsulation.greInUDPPort, quoted.be16(hl) >= 49152 else { return false }
            }
        case .ipsec:
            return false
        }
        return true
    }

    // MARK: Transmit

    /// Sends an inner IPv4 or IPv6 packet (bytes start at its header)
    /// through tunnel `t`. The inner packet was sent on the tunnel's
    /// interface; what this makes of it is a packet the stack originates.
    func tunnelOutput(_ t: Int, _ packet: PacketHandle) {
        let st = tunnelStates + t
        if _slowPath(st.pointee.saOwner >= 0) { return handTunnelOutput(t, packet) }
        captureTunnelPacket(packet, interface: st.pointee.interface, outbound: true)
        hot.pointee.counters.originated &+= 1
        guard st.pointee.inUse else { return drop(packet, .tunnelDown, side: .output) }
        if st.pointee.espTunnelMode { return ipsecTunnelOutput(t, packet) }
        hot.pointee.tunnelDepth += 1
        defer { hot.pointee.tunnelDepth -= 1 }
        guard hot.pointee.tunnelDepth <= Stack.maxTunnelNesting else {
            return drop(packet, .tunnelNesting, tx: st.pointee.interface)
        }
        let key = st.pointee.key, sequenced = st.pointee.sequence
        let ttl = st.pointee.ttl, tos = st.pointee.tos
        let udp = st.pointee.udp
        let bytes = pool.bytes(packet)
        let inner6 = bytes.count >= IPv6Packet.headerLength && bytes.be8(0) >> 4 == 6
        let innerTTL: UInt8, innerTOS: UInt8
        // The inner flow, for GRE-in-UDP's source port and an IPv6 underlay's flow label.
        var hash: UInt32 = 0
        // RFC 8200 section 5: an inner IPv6 packet up to 1280 bytes goes
        // through even when the tunnel's path is smaller, in outer fragments.
        var fragmentable = false
        if inner6 {
            let inner = IPv6Packet(unchecked: bytes)
            if st.pointee.mssClamp != .off { clampMSS6(inner, tunnel: t) }
            innerTTL = inner.hopLimit; innerTOS = inner.trafficClass
            hash = Stack.flowHash6(inner)
            fragmentable = Int(packet.length) > ifs[st.pointee.interface].mtu
        } else {
            let inner = IPv4Packet(unchecked: bytes)
            if st.pointee.mssClamp != .off { clampMSS(inner, tunnel: t) }
            innerTTL = inner.ttl; innerTOS = inner.tos
            if udp || st.pointee.underlay6 { hash = Stack.flowHash(inner) }
        }
        var p = packet
        let g = GRERepr(protocolType: inner6 ? .ipv6 : .ipv4, key: key, sequence: sequenced ? st.pointee.txSequence : nil)
        guard pool.prepend(&p, g.headerLength) else { return drop(packet, .headroomExhausted, tx: st.pointee.interface) }
        g.emit(into: pool.bytes(p))
        if sequenced { st.pointee.txSequence &+= 1 }
        st.pointee.counters.txPackets &+= 1
        st.pointee.counters.txBytes &+= UInt64(packet.length)
        // RFC 8086: a source port from the inner flow, in the dynamic range.
        let sourcePort: UInt16? = udp ? 49152 | UInt16(truncatingIfNeeded: hash) & 0x3FFF : nil
        // RFC 6040 normal mode: the outer header carries the inner ECN
        // field, whatever DSCP the tunnel sets.
        let outerTOS = (tos ?? innerTOS) & 0xFC | innerTOS & 3
        var socket = st.pointee.socket
        if st.pointee.protected {
            guard espSeal(&p, tunnel: t, nextHeader: IPProtocol.gre.rawValue) else { return }
            socket = st.pointee.espSocket
        }
        do {
            try socketSend(socket, p, ttl: ttl == nil ? innerTTL : nil, tos: outerTOS, sourcePort: sourcePort,
                           flowHash: hash, fragmentable: fragmentable)
        } catch {
            // Counted as a drop, with its reason, where it failed.
            st.pointee.counters.sendErrors &+= 1
            // DF outside and the underlay link itself is smaller: learn it.
            if case .tooBig(let mtu) = error { learnPathMTU(t, mtu, source: "underlay interface") }
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

    /// A hash of an inner IPv6 packet's addresses, flow label and, without
    /// extension headers, its TCP or UDP ports.
    static func flowHash6(_ ip: IPv6Packet) -> UInt32 {
        let s = ip.source, d = ip.destination
        var h = UInt32(truncatingIfNeeded: (s.high ^ s.low &* 0x9E37_79B9_7F4A_7C15 ^ d.high &* 31 ^ d.low) >> 16)
        h = h &* 0x85EB_CA77 ^ ip.flowLabel ^ UInt32(ip.nextHeader.rawValue) << 20
        if ip.nextHeader == .tcp || ip.nextHeader == .udp, ip.bytes.count >= IPv6Packet.headerLength + 4 {
            h = h &* 0xC2B2_AE3D ^ ip.bytes.be32(IPv6Packet.headerLength)
        }
        return h ^ (h >> 15)
    }

    /// Lowers the MSS of an IPv6 TCP SYN (no extension headers) to fit the
    /// tunnel, which offers IPv6 at least 1280 bytes.
    func clampMSS6(_ ip: IPv6Packet, tunnel t: Int) {
        guard ip.nextHeader == .tcp, ip.bytes.count >= IPv6Packet.headerLength + ip.payloadLength else { return }
        let mtu = max(TunnelConfiguration.minimumIPv6MTU, ifs[tunnelStates[t].interface].mtu)
        clampMSS(segment: ip.payload, maximum: mtu - IPv6Packet.headerLength, tunnel: t)
    }

    /// Lowers the MSS of a TCP SYN to fit the tunnel.
    func clampMSS(_ ip: IPv4Packet, tunnel t: Int) {
        guard ip.proto == .tcp, !ip.isFragment else { return }
        clampMSS(segment: ip.payload, maximum: ifs[tunnelStates[t].interface].mtu - IPv4Packet.minimumHeaderLength, tunnel: t)
    }

    /// The clamp itself, on a TCP segment that may carry at most `maximum`
    /// bytes (header included) through the tunnel.
    private func clampMSS(segment payload: UnsafeMutableRawBufferPointer, maximum: Int, tunnel t: Int) {
        guard payload.count >= TCPHeader.minimumLength else { return }
        let tcp = TCPHeader(unchecked: payload)
        guard tcp.isSYN, tcp.headerLength >= TCPHeader.minimumLength, tcp.headerLength <= payload.count else { return }
        let limit: UInt16
        switch tunnelStates[t].mssClamp {
        case .off: return
        case .auto: limit = UInt16(clamping: maximum - TCPHeader.minimumLength)
        case .fixed(let n): limit = n
        }
        if tcp.clampMSS(to: limit) != nil { tunnelStates[t].counters.mssClamped &+= 1 }
    }

    // MARK: Receive

    /// A GRE packet from tunnel `t`'s socket (bytes start at the GRE header).
    /// Everything the socket hands over is received on the tunnel's
    /// interface (its rxBytes count inner packets only).
    /// `protected`: it came out of ESP (a protected tunnel takes nothing else).
    func tunnelReceive(_ t: Int, _ packet: PacketHandle, from: IPAddress, sourcePort: UInt16, outerTOS: UInt8, protected: Bool = false) {
        let st = tunnelStates + t
        guard st.pointee.inUse else { return drop(packet, .tunnelDown, side: .input) }
        let interface = st.pointee.interface
        // Out of ESP, the packet was counted received when the ESP socket took it.
        if !protected { ifs[interface].counters.rxPackets &+= 1 }
        if _slowPath(st.pointee.protected && !protected) { return drop(packet, .ipsecPlaintextRefused, rx: interface) }
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
            return drop(packet, reason, rx: interface)
        }
        guard gre.key == st.pointee.key else { return drop(packet, .greKeyMismatch, rx: interface) }
        // A keepalive answer is our own inner packet reflected by the peer
        // and carries no sequence number of its own: it is recognised before
        // the sequence check (RFC 2890 numbers the peer's data, not our echo).
        if st.pointee.sequence && gre.protocolType.rawValue != 0 {
            // RFC 2890 section 2.2: accept only sequence numbers after the last one.
            guard let seq = gre.sequence else { return drop(packet, .greSequence, rx: interface) }
            if let last = st.pointee.rxSequence, Int32(bitPattern: seq &- last) <= 0 {
                return drop(packet, .greSequence, rx: interface)
            }
            st.pointee.rxSequence = seq
        }
        let type = gre.protocolType
        var p = packet
        pool.consume(&p, gre.headerLength)
        // What the outer packet's device said of its checksum is not the inner packet's.
        p.offload = 0
        p.segmentSize = 0
        if type.rawValue == 0 {
            // The answer to one of our keepalives (a follower's owner sent it).
            st.pointee.counters.keepalivesReceived &+= 1
            hot.pointee.counters.consumed &+= 1
            pool.free(p)
            if configuration.replica == .follower {
                report(.keepaliveAnswered(tunnel: st.pointee.interface))
                return
            }
            st.pointee.missed = 0
            if !st.pointee.alive { setTunnelAlive(t, true) }
            return
        }
        if type == .ipv6 { return tunnelReceive6(t, p, outerTOS: outerTOS) }
        guard type == .ipv4 else { return drop(p, .greUnknownProtocol, rx: interface) }
        tunnelReceive4(t, p, outerTOS: outerTOS)
    }

    /// The inner IPv4 packet of tunnel `t` (bytes start at its header): a
    /// peer's keepalive goes back, anything else meets ECN decapsulation and
    /// MSS clamping, then IPv4 input on the tunnel's interface.
    func tunnelReceive4(_ t: Int, _ p: PacketHandle, outerTOS: UInt8) {
        let st = tunnelStates + t
        let interface = st.pointee.interface
        let inner = IPv4Packet(unchecked: pool.bytes(p))
        st.pointee.counters.rxPackets &+= 1
        st.pointee.counters.rxBytes &+= UInt64(p.length)
        let wellFormed = inner.bytes.count >= IPv4Packet.minimumHeaderLength && inner.version == 4
            && inner.headerLength >= IPv4Packet.minimumHeaderLength && inner.headerLength <= inner.totalLength
            && inner.totalLength <= inner.bytes.count
        if wellFormed, inner.proto == .gre, inner.source == st.pointee.local, inner.destination == st.pointee.remote {
            return answerKeepalive(t, p, innerHeader: inner.headerLength)
        }
        if wellFormed, outerTOS & 3 != 0 {
            // RFC 6040 normal mode: a congestion mark on the outer header
            // reaches the inner packet; one the inner packet cannot carry
            // (Not-ECT) means the packet is dropped.
            guard let ecn = ECN.decapsulated(outer: outerTOS, inner: inner.tos) else {
                return drop(p, .ecnNotECT, rx: interface)
            }
            if ecn != inner.tos & 3 { inner.setTOS(inner.tos & 0xFC | ecn) }
        }
        if wellFormed, st.pointee.mssClamp != .off { clampMSS(inner, tunnel: t) }
        ifs[interface].counters.rxBytes &+= UInt64(p.length)
        guard ifs[interface].up else { return drop(p, .tunnelDown, rx: interface) }
        captureTunnelPacket(p, interface: interface, outbound: false)
        // Decapsulated packets meet the flow cache at the top of IP input,
        // like any other (NetBSD: ipflow at the head of ip_input).
        if flows.meta.pointee.count > 0 && fastForwardDecapsulated(p, rx: interface) { return }
        ipv4Input(p, rx: interface, linkBroadcast: false)
    }

    /// The inner IPv6 packet of tunnel `t` (bytes start at its header):
    /// a peer's keepalive over an IPv6 underlay goes back, anything else
    /// meets ECN decapsulation and MSS clamping, then IPv6 input on the
    /// tunnel's interface (which needs IPv6 enabled, like any interface).
    func tunnelReceive6(_ t: Int, _ p: PacketHandle, outerTOS: UInt8) {
        let st = tunnelStates + t
        let interface = st.pointee.interface
        let inner = IPv6Packet(unchecked: pool.bytes(p))
        st.pointee.counters.rxPackets &+= 1
        st.pointee.counters.rxBytes &+= UInt64(p.length)
        let wellFormed = inner.bytes.count >= IPv6Packet.headerLength && inner.version == 6
            && IPv6Packet.headerLength + inner.payloadLength <= inner.bytes.count
        if wellFormed, st.pointee.underlay6, inner.nextHeader == .gre, inner.source == st.pointee.local6,
           inner.destination == st.pointee.remote6 {
            return answerKeepalive(t, p, innerHeader: IPv6Packet.headerLength)
        }
        if wellFormed, outerTOS & 3 != 0 {
            guard let ecn = ECN.decapsulated(outer: outerTOS, inner: inner.trafficClass) else {
                return drop(p, .ecnNotECT, rx: interface)
            }
            if ecn != inner.trafficClass & 3 {
                let word = inner.bytes.be32(IPv6Packet.Field.versionClassFlow)
                inner.bytes.setBE32(IPv6Packet.Field.versionClassFlow, word & ~(3 << 20) | UInt32(ecn) << 20)
            }
        }
        if wellFormed, st.pointee.mssClamp != .off { clampMSS6(inner, tunnel: t) }
        ifs[interface].counters.rxBytes &+= UInt64(p.length)
        guard ifs[interface].up else { return drop(p, .tunnelDown, rx: interface) }
        captureTunnelPacket(p, interface: interface, outbound: false)
        ipv6Input(p, rx: interface)
    }

    /// A keepalive of the peer's (an inner packet from us to it carrying
    /// GRE): its inner GRE packet goes back through the tunnel's socket.
    func answerKeepalive(_ t: Int, _ p: PacketHandle, innerHeader: Int) {
        tunnelStates[t].counters.keepalivesAnswered &+= 1
        var reply = p
        pool.consume(&reply, innerHeader)
        hot.pointee.counters.consumed &+= 1
        hot.pointee.counters.originated &+= 1
        if tunnelStates[t].protected {
            guard espSeal(&reply, tunnel: t, nextHeader: IPProtocol.gre.rawValue) else { return }
            try? socketSend(tunnelStates[t].espSocket, reply, ttl: nil, tos: nil, sourcePort: nil)
            return
        }
        try? socketSend(tunnelStates[t].socket, reply, ttl: nil, tos: nil, sourcePort: nil)
    }

    // MARK: Keepalives and MTU

    /// Runs each tunnel's keepalive schedule and follows underlay MTU
    /// changes, then notes when a tunnel next needs the timer.
    func tunnelTimers() {
        let now = hot.pointee.now
        var next = Int64.max
        for t in tunnelConfigs.keys {
            let st = tunnelStates + t
            if st.pointee.pathMTU != 0 && now >= st.pointee.pathMTUExpires {
                // The learned path MTU lapses: try the full size again.
                st.pointee.pathMTU = 0
                pathMTUSources[t] = nil
            }
            if st.pointee.pathMTU != 0 { next = min(next, st.pointee.pathMTUExpires) }
            let mtu = tunnelMTU(t)
            if mtu != ifs[st.pointee.interface].mtu { try? setMTU(st.pointee.interface, mtu) }
            if !st.pointee.fixedMTU { next = min(next, now + 1_000_000_000) }
            guard let ka = st.pointee.keepalive, configuration.replica != .follower else { continue }
            if now >= st.pointee.nextKeepalive {
                st.pointee.nextKeepalive = now + ka.interval.nanoseconds
                if st.pointee.missed >= ka.retries && st.pointee.alive {
                    setTunnelAlive(t, false)
                }
                sendKeepalive(t)
                st.pointee.missed += 1
            }
            next = min(next, st.pointee.nextKeepalive)
        }
        hot.pointee.nextTunnelTimer = next == .max ? 0 : next
    }

    /// Sends one keepalive: a GRE packet addressed from the peer back to
    /// us, inside the tunnel, which the peer decapsulates and returns.
    func sendKeepalive(_ t: Int) {
        let state = tunnelStates[t]
        guard state.inUse, var p = pool.allocate() else { return }
        let g = GRERepr(protocolType: EtherType(rawValue: 0), key: state.key)
        // Over an IPv6 underlay the reflected packet is an IPv6 one.
        let header = state.underlay6 ? IPv6Packet.headerLength : IPv4Packet.minimumHeaderLength
        pool.setLength(&p, header + g.headerLength)
        let b = pool.bytes(p)
        g.emit(into: b.tail(from: header))
        if state.underlay6 {
            IPv6Repr(source: state.remote6, destination: state.local6, nextHeader: .gre, payloadLength: g.headerLength,
                     hopLimit: 255).emit(into: b)
        } else {
            IPv4Repr(source: state.remote, destination: state.local, proto: .gre, payloadLength: g.headerLength,
                     ttl: 255, identification: nextIPID()).emit(into: b)
        }
        tunnelStates[t].counters.keepalivesSent &+= 1
        // Made here and sent on the tunnel's interface, like any packet into it.
        hot.pointee.counters.originated &+= 1
        ifs[state.interface].counters.txPackets &+= 1
        ifs[state.interface].counters.txBytes &+= UInt64(p.length)
        tunnelOutput(t, p)
    }

    /// The tunnel's line state: down withdraws its routes, up restores them.
    func setTunnelAlive(_ t: Int, _ alive: Bool) {
        let st = tunnelStates + t
        guard st.pointee.inUse, st.pointee.alive != alive else { return }
        st.pointee.alive = alive
        st.pointee.generation &+= 1
        st.pointee.counters.stateChanges &+= 1
        tunnelDownReasons[t] = alive ? nil : "\(st.pointee.keepalive?.retries ?? 0) keepalives unanswered"
        try? setUp(st.pointee.interface, alive)
        if configuration.replica == .owner { report(.tunnelLine(tunnel: st.pointee.interface, up: alive)) }
    }

    /// The tunnel slot whose interface is `interface`.
    func tunnelSlot(interface: InterfaceIndex) -> Int? {
        tunnelConfigs.keys.first { tunnelStates[$0].inUse && tunnelStates[$0].interface == interface }
    }

    /// The owner replica hears that a follower got the answer to one of
    /// its keepalives on the tunnel at `interface`.
    public func keepaliveAnswered(tunnel interface: InterfaceIndex) {
        enter()
        guard let t = tunnelSlot(interface: interface) else { return }
        tunnelStates[t].missed = 0
        if !tunnelStates[t].alive { setTunnelAlive(t, true) }
        flush()
    }

    /// A follower replica takes the tunnel's line from the owner.
    public func setTunnelLine(tunnel interface: InterfaceIndex, up: Bool) {
        enter()
        guard let t = tunnelSlot(interface: interface) else { return }
        setTunnelAlive(t, up)
        flush()
    }

    /// The next time a tunnel timer is due (kept by `tunnelTimers`, O(1)).
    var nextTunnelDeadline: Int64? {
        hot.pointee.nextTunnelTimer == 0 ? nil : hot.pointee.nextTunnelTimer
    }
}
