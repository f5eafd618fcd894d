internal import AnygateCrypto
public import AnygateWire

/// ESP (RFC 4303) on a protected tunnel. GRE over IPsec: the tunnel's GRE
/// packets leave sealed in ESP transport mode (next header 47) through the
/// tunnel's ESP socket (protocol 50, or UDP 4500 per RFC 3948) instead of
/// its GRE socket; what arrives there is opened, checked against the
/// replay window and handed to GRE input. Plaintext GRE from the peer,
/// which still reaches the GRE socket, is refused.
///
/// The keys come from IKE: `addInboundSA` and `setOutboundSA`. A rekey is
/// make-before-break: the new inbound SA is added beside the old one, the
/// outbound one is replaced, and the old inbound one removed last.
extension Stack {
    // MARK: Control plane

    func protectedTunnel(_ interface: InterfaceIndex) throws(IPsecError) -> Int {
        guard interface >= 0, interface < configuration.maxInterfaces, ifs[interface].tunnel >= 0 else {
            throw .notProtected("#\(interface)")
        }
        let t = Int(ifs[interface].tunnel)
        guard tunnelStates[t].protected else { throw .notProtected(tunnelConfigs[t]?.name ?? "#\(interface)") }
        return t
    }

    func keyedSA(_ c: SAConfiguration, tunnel t: Int, inbound: Bool) throws(IPsecError) -> SAState {
        guard c.spi > 255 else { throw .reservedSPI(c.spi) }
        let keyed = c.keyMaterial.withUnsafeBytes { k in
            Result { () throws(CryptoError) in try AEADCipher(c.algorithm, keyMaterial: k, sealing: !inbound) }
        }
        let cipher: AEADCipher
        switch keyed {
        case .success(let k): cipher = k
        case .failure(let e): throw .crypto(e)
        }
        var s = SAState()
        s.inUse = true
        s.inbound = inbound
        s.spi = c.spi
        s.tunnel = Int32(t)
        s.cipher = cipher
        s.algorithm = c.algorithm
        s.esn = c.extendedSequenceNumbers
        s.window = ReplayWindow(extendedSequenceNumbers: c.extendedSequenceNumbers)
        s.lifetime = c.lifetime
        s.installed = hot.pointee.now
        return s
    }

    /// Adds an SA the peer sends with to a protected tunnel (there may be
    /// two during a rekey). Its SPI must be unique among inbound SAs.
    public func addInboundSA(tunnel interface: InterfaceIndex, _ c: SAConfiguration) throws(IPsecError) {
        let t = try protectedTunnel(interface)
        guard sas.inbound(c.spi) == nil else { throw .spiInUse(c.spi) }
        guard let i = sas.freeSlot() else { throw .tableFull }
        sas.entries[i] = try keyedSA(c, tunnel: t, inbound: true)
        sas.link(i)
        hot.pointee.nextIPsecTimer = hot.pointee.now
    }

    /// Makes `c` the SA the tunnel sends with, destroying the one before it.
    public func setOutboundSA(tunnel interface: InterfaceIndex, _ c: SAConfiguration) throws(IPsecError) {
        let t = try protectedTunnel(interface)
        let old = Int(tunnelStates[t].outboundSA)
        let i: Int
        if old >= 0 { i = old } else {
            guard let free = sas.freeSlot() else { throw .tableFull }
            i = free
        }
        let s = try keyedSA(c, tunnel: t, inbound: false)
        if old >= 0 { sas.remove(old) }
        sas.entries[i] = s
        tunnelStates[t].outboundSA = Int32(i)
        hot.pointee.nextIPsecTimer = hot.pointee.now
    }

    /// Removes an SA (IKE deleted it, or it expired); its key is wiped.
    @discardableResult
    public func removeSA(tunnel interface: InterfaceIndex, spi: UInt32, inbound: Bool) -> Bool {
        guard let t = try? protectedTunnel(interface) else { return false }
        if inbound {
            guard let e = sas.inbound(spi), Int(e.pointee.tunnel) == t else { return false }
            sas.remove(e - sas.entries)
            return true
        }
        let i = Int(tunnelStates[t].outboundSA)
        guard i >= 0, sas.entries[i].spi == spi else { return false }
        sas.remove(i)
        tunnelStates[t].outboundSA = -1
        return true
    }

    /// Removes every SA of tunnel slot `t` (the tunnel goes).
    func removeSAs(tunnel t: Int) {
        for i in sas.live where Int(sas.entries[i].tunnel) == t { sas.remove(i) }
        tunnelStates[t].outboundSA = -1
    }

    /// The SAs, inbound and outbound, for `show sas`.
    public var saList: [SAStatus] {
        sas.live.map { i in
            let s = sas.entries[i]
            return SAStatus(tunnel: tunnelStates[Int(s.tunnel)].interface, inbound: s.inbound, spi: s.spi, algorithm: s.algorithm,
                            extendedSequenceNumbers: s.esn, sequence: s.inbound ? s.window.top : s.sequence, counters: s.counters,
                            age: Interval(nanoseconds: hot.pointee.now - s.installed), expiring: s.expiring, expired: s.expired)
        }
    }

    /// Opens a protected tunnel's ESP socket: protocol 50, or UDP on the
    /// NAT-traversal ports (a NAT may move the peer's port: not matched).
    func openESPSocket(_ e: ESPEncapsulation, _ config: TunnelConfiguration, tunnel t: Int) throws(SocketError) -> SocketID {
        let s: SocketID
        switch e {
        case .esp: s = try openSocket(.raw(.esp), backend: config.backend, queueCapacity: 1)
        case .udp: s = try openSocket(.udp, backend: config.backend, queueCapacity: 16)
        }
        do throws(SocketError) {
            switch e {
            case .esp:
                try bind(s, address: config.local)
                try setSocketOptions(s, ttl: config.ttl, tos: config.tos ?? 0, dontFragment: config.pmtuDiscovery)
                socketTable[s.value].receiver = .esp(t)
                try connect(s, to: config.remote)
            case .udp(let local, let remote):
                try bind(s, address: config.local, port: local)
                try setSocketOptions(s, ttl: config.ttl, tos: config.tos ?? 0, dontFragment: config.pmtuDiscovery)
                socketTable[s.value].receiver = .esp(t)
                socketTable[s.value].matchRemotePort = false
                try connect(s, to: config.remote, port: remote)
            }
        } catch {
            closeSocket(s)
            throw error
        }
        return s
    }

    /// With `TunnelProtection.auto`: ESP goes in UDP from now on (a NAT was
    /// found) or as protocol 50; both are received either way.
    public func setESPInUDP(tunnel interface: InterfaceIndex, _ udp: Bool) {
        guard let t = try? protectedTunnel(interface), tunnelStates[t].espUDPSocket.value >= 0 else { return }
        let s = udp ? tunnelStates[t].espUDPSocket : tunnelStates[t].espRawSocket
        tunnelStates[t].espSocket = s
        if tunnelStates[t].espTunnelMode { tunnelStates[t].socket = s }
    }

    /// Whether the protected tunnel sends ESP in UDP.
    public func espInUDP(tunnel interface: InterfaceIndex) -> Bool {
        guard let t = try? protectedTunnel(interface), valid(tunnelStates[t].espSocket) else { return false }
        return socketTable[tunnelStates[t].espSocket.value].proto == .udp
    }

    /// The socket a protected tunnel carries ESP on (IKE shares it when it
    /// is UDP 4500: datagrams with the non-ESP marker queue there); with
    /// `auto`, its UDP socket.
    public func espSocket(tunnel interface: InterfaceIndex) -> SocketID? {
        guard let t = try? protectedTunnel(interface) else { return nil }
        if tunnelStates[t].espUDPSocket.value >= 0 { return tunnelStates[t].espUDPSocket }
        return tunnelStates[t].espSocket
    }

    // MARK: Transmit

    /// Seals `p` (bytes start at what ESP protects: here a GRE header) in
    /// ESP with the tunnel's outbound SA, in place: the ESP header and IV
    /// in the headroom, padding, trailer and ICV after the payload. On
    /// failure the packet is dropped (counted) and false returned.
    func espSeal(_ p: inout PacketHandle, tunnel t: Int, nextHeader: UInt8) -> Bool {
        let out = tunnelStates[t].interface
        let payload = Int(p.length)
        let total = ESPPacket.sealedLength(payload: payload)
        guard Int(p.offset) + total - ESPPacket.Field.payload <= pool.bufferCapacity(p), pool.prepend(&p, ESPPacket.Field.payload) else {
            drop(p, .headroomExhausted, tx: out)
            return false
        }
        pool.setLength(&p, total)
        switch espSeal(pool.bytes(p), payload: payload, tunnel: t, nextHeader: nextHeader) {
        case .sealed: return true
        case .noSA: drop(p, .ipsecNoSA, tx: out)
        case .expired: drop(p, .ipsecSAExpired, tx: out)
        }
        return false
    }

    enum SealOutcome { case sealed, noSA, expired }

    /// Seals in place what `b` holds: 16 bytes for the ESP header and IV,
    /// then `payload` bytes, then room for the trailer and ICV
    /// (`ESPPacket.sealedLength`), with the tunnel's outbound SA.
    func espSeal(_ b: UnsafeMutableRawBufferPointer, payload: Int, tunnel t: Int, nextHeader: UInt8) -> SealOutcome {
        let i = Int(tunnelStates[t].outboundSA)
        guard i >= 0 else { return .noSA }
        let sa = sas.entries + i
        let sequence = sa.pointee.sequence &+ 1
        // RFC 4303 section 3.3.3: the counter never cycles; the SA stops first.
        if _slowPath(sa.pointee.expired || sequence == 0 || (!sa.pointee.esn && sequence > UInt64(UInt32.max))) {
            expireSA(i)
            return .expired
        }
        let total = ESPPacket.sealedLength(payload: payload)
        let spi = sa.pointee.spi
        b.setBE32(ESPPacket.Field.spi, spi)
        b.setBE32(ESPPacket.Field.sequence, UInt32(truncatingIfNeeded: sequence))
        // The IV is the 64-bit sequence number: never repeated under one key.
        b.setBE32(ESPPacket.Field.iv, UInt32(truncatingIfNeeded: sequence >> 32))
        b.setBE32(ESPPacket.Field.iv + 4, UInt32(truncatingIfNeeded: sequence))
        let text = UnsafeMutableRawBufferPointer(rebasing: b[ESPPacket.Field.payload..<(total - ESPPacket.icvLength)])
        _ = ESPPacket.writeTrailer(text, payloadLength: payload, nextHeader: nextHeader)
        let sealed = withESPAAD(spi: spi, sequence: sequence, esn: sa.pointee.esn) { aad in
            sa.pointee.cipher!.seal(iv: sequence, aad: aad, text: text, icv: b.baseAddress! + total - ESPPacket.icvLength)
        }
        guard sealed else { return .expired }
        sa.pointee.sequence = sequence
        sa.pointee.counters.packets &+= 1
        sa.pointee.counters.bytes &+= UInt64(payload)
        if _slowPath(sa.pointee.lifetime.softBytes != nil || sa.pointee.lifetime.hardBytes != nil) { checkByteLifetime(i) }
        return .sealed
    }

    /// ESP's AAD (RFC 4106 section 5, RFC 7634 section 3): the SPI and the
    /// sequence number, with ESN its high half between them.
    @inline(__always)
    func withESPAAD<R>(spi: UInt32, sequence: UInt64, esn: Bool, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        var aad = (spi.bigEndian, UInt32(truncatingIfNeeded: sequence >> 32).bigEndian, UInt32(truncatingIfNeeded: sequence).bigEndian)
        if !esn { aad.1 = aad.2 }
        return withUnsafeBytes(of: &aad) { body(UnsafeRawBufferPointer(rebasing: $0[..<(esn ? 12 : 8)])) }
    }

    // MARK: Receive

    /// A datagram from a protected tunnel's ESP socket (bytes start at the
    /// ESP header, or for UDP 4500 at the UDP payload).
    func espSocketReceive(_ t: Int, socket k: Int, _ packet: PacketHandle, from: IPAddress, sourcePort: UInt16, outerTOS: UInt8) {
        let st = tunnelStates + t
        let interface = st.pointee.interface
        // The socket consumed the outer packet; the tunnel receives what it carries.
        if case .udp = socketTable[k].proto {
            switch UDPEncapsulation.classify(UnsafeRawBufferPointer(pool.bytes(packet))) {
            case .esp: break
            case .keepalive:
                ifs[interface].counters.rxPackets &+= 1
                hot.pointee.counters.consumed &+= 1
                return pool.free(packet)
            case .ike:
                // IKE on port 4500: for the socket's owner to read, marker and all.
                ifs[interface].counters.rxPackets &+= 1
                return queueForOwner(packet, socket: k, from: from, port: sourcePort, rx: nil)
            case .malformed:
                ifs[interface].counters.rxPackets &+= 1
                return drop(packet, .espMalformed, rx: interface)
            }
        }
        if _slowPath(st.pointee.saOwner >= 0) {
            return handESPInput(t, packet, from: from, sourcePort: sourcePort, outerTOS: outerTOS)
        }
        espInput(t, packet, from: from, sourcePort: sourcePort, outerTOS: outerTOS)
    }

    /// ESP of tunnel `t` (bytes from its header on) in the replica that
    /// owns the tunnel's SAs: opened, then what it carries goes on.
    @inline(__always)
    func espInput(_ t: Int, _ packet: PacketHandle, from: IPAddress, sourcePort: UInt16, outerTOS: UInt8) {
        let st = tunnelStates + t
        let interface = st.pointee.interface
        ifs[interface].counters.rxPackets &+= 1
        var p = packet
        guard let nextHeader = espOpen(&p, tunnel: t) else { return }
        if nextHeader == ESPPacket.dummyNextHeader {
            hot.pointee.counters.consumed &+= 1
            return pool.free(p)
        }
        if st.pointee.espTunnelMode { return ipsecTunnelReceive(t, p, nextHeader: nextHeader, outerTOS: outerTOS) }
        guard nextHeader == IPProtocol.gre.rawValue else { return drop(p, .greUnknownProtocol, rx: interface) }
        tunnelReceive(t, p, from: from, sourcePort: sourcePort, outerTOS: outerTOS, protected: true)
    }

    // MARK: Tunnel mode (a policy-based link)

    /// An inner packet routed into a policy-based link: its addresses must
    /// lie in the link's subnets (RFC 4301 section 5.1), then it is sealed
    /// whole in ESP tunnel mode (next header 4 or 41).
    @inline(never)
    func ipsecTunnelOutput(_ t: Int, _ packet: PacketHandle) {
        let st = tunnelStates + t
        let interface = st.pointee.interface
        let bytes = pool.bytes(packet)
        var nextHeader: UInt8, innerTTL: UInt8, innerTOS: UInt8
        if bytes.count >= IPv6Packet.headerLength && bytes.be8(0) >> 4 == 6 {
            let ip = IPv6Packet(unchecked: bytes)
            guard st.pointee.localSelectors.contains(ip.source), st.pointee.remoteSelectors.contains(ip.destination) else {
                return drop(packet, .ipsecSelectorMismatch, tx: interface)
            }
            if st.pointee.mssClamp != .off { clampMSS6(ip, tunnel: t) }
            nextHeader = IPProtocol.ipv6.rawValue; innerTTL = ip.hopLimit; innerTOS = ip.trafficClass
        } else if bytes.count >= IPv4Packet.minimumHeaderLength && bytes.be8(0) >> 4 == 4 {
            let ip = IPv4Packet(unchecked: bytes)
            guard st.pointee.localSelectors.contains(ip.source), st.pointee.remoteSelectors.contains(ip.destination) else {
                return drop(packet, .ipsecSelectorMismatch, tx: interface)
            }
            if st.pointee.mssClamp != .off { clampMSS(ip, tunnel: t) }
            nextHeader = 4; innerTTL = ip.ttl; innerTOS = ip.tos
        } else {
            return drop(packet, .ipsecSelectorMismatch, tx: interface)
        }
        st.pointee.counters.txPackets &+= 1
        st.pointee.counters.txBytes &+= UInt64(packet.length)
        var p = packet
        guard espSeal(&p, tunnel: t, nextHeader: nextHeader) else { return }
        let tos = st.pointee.tos
        do {
            try socketSend(st.pointee.espSocket, p, ttl: st.pointee.ttl == nil ? innerTTL : nil,
                           tos: (tos ?? innerTOS) & 0xFC | innerTOS & 3, sourcePort: nil)
        } catch {
            st.pointee.counters.sendErrors &+= 1
            if case .tooBig(let mtu) = error { learnPathMTU(t, mtu, source: "underlay interface") }
        }
    }

    /// An opened tunnel-mode packet: an inner IPv4 or IPv6 packet whose
    /// addresses must lie in the link's subnets the other way round
    /// (RFC 4301 section 5.2), then IP input on the link's interface.
    func ipsecTunnelReceive(_ t: Int, _ p: PacketHandle, nextHeader: UInt8, outerTOS: UInt8) {
        let st = tunnelStates + t
        let interface = st.pointee.interface
        let bytes = pool.bytes(p)
        switch nextHeader {
        case 4:
            guard bytes.count >= IPv4Packet.minimumHeaderLength, bytes.be8(0) >> 4 == 4 else { return drop(p, .espMalformed, rx: interface) }
            let ip = IPv4Packet(unchecked: bytes)
            guard st.pointee.remoteSelectors.contains(ip.source), st.pointee.localSelectors.contains(ip.destination) else {
                return drop(p, .ipsecSelectorMismatch, rx: interface)
            }
            tunnelReceive4(t, p, outerTOS: outerTOS)
        case IPProtocol.ipv6.rawValue:
            guard bytes.count >= IPv6Packet.headerLength, bytes.be8(0) >> 4 == 6 else { return drop(p, .espMalformed, rx: interface) }
            let ip = IPv6Packet(unchecked: bytes)
            guard st.pointee.remoteSelectors.contains(ip.source), st.pointee.localSelectors.contains(ip.destination) else {
                return drop(p, .ipsecSelectorMismatch, rx: interface)
            }
            tunnelReceive6(t, p, outerTOS: outerTOS)
        default:
            drop(p, .greUnknownProtocol, rx: interface)
        }
    }

    /// Opens an ESP packet of tunnel `t` in place: the SA by SPI, the replay
    /// window, the ICV, then the trailer. Returns the next header with `p`
    /// cut to the payload, or nil with the packet dropped (counted).
    func espOpen(_ p: inout PacketHandle, tunnel t: Int) -> UInt8? {
        let interface = tunnelStates[t].interface
        let b = pool.bytes(p)
        guard let esp = try? ESPPacket(validating: b) else {
            drop(p, .espMalformed, rx: interface)
            return nil
        }
        let spi = esp.spi
        guard let sa = sas.inbound(spi), Int(sa.pointee.tunnel) == t else {
            drop(p, .espUnknownSPI, rx: interface)
            return nil
        }
        if _slowPath(sa.pointee.expired) {
            drop(p, .ipsecSAExpired, rx: interface)
            return nil
        }
        guard let sequence = sa.pointee.window.infer(low: esp.sequence) else {
            sa.pointee.counters.outOfWindow &+= 1
            drop(p, .espOutOfWindow, rx: interface)
            return nil
        }
        switch sa.pointee.window.check(sequence) {
        case .fresh: break
        case .replayed:
            sa.pointee.counters.replayed &+= 1
            drop(p, .espReplayed, rx: interface)
            return nil
        case .tooOld:
            sa.pointee.counters.outOfWindow &+= 1
            drop(p, .espOutOfWindow, rx: interface)
            return nil
        }
        let end = b.count - ESPPacket.icvLength
        let text = UnsafeMutableRawBufferPointer(rebasing: b[ESPPacket.Field.payload..<end])
        let iv = esp.iv
        let authentic = withESPAAD(spi: spi, sequence: sequence, esn: sa.pointee.esn) { aad in
            sa.pointee.cipher!.open(iv: iv, aad: aad, text: text, icv: b.baseAddress! + end)
        }
        guard authentic else {
            sa.pointee.counters.authFailures &+= 1
            drop(p, .espAuthFailed, rx: interface)
            return nil
        }
        // Only an authentic packet moves the window (RFC 4303 section 3.4.3).
        sa.pointee.window.accept(sequence)
        guard let (length, nextHeader) = ESPPacket.readTrailer(UnsafeRawBufferPointer(text)) else {
            drop(p, .espBadPadding, rx: interface)
            return nil
        }
        sa.pointee.counters.packets &+= 1
        sa.pointee.counters.bytes &+= UInt64(length)
        if _slowPath(sa.pointee.lifetime.softBytes != nil || sa.pointee.lifetime.hardBytes != nil) { checkByteLifetime(sa - sas.entries) }
        pool.consume(&p, ESPPacket.Field.payload)
        pool.setLength(&p, length)
        return nextHeader
    }

    // MARK: Lifetimes

    @inline(never)
    func checkByteLifetime(_ i: Int) {
        let sa = sas.entries + i
        let bytes = sa.pointee.counters.bytes
        if let hard = sa.pointee.lifetime.hardBytes, bytes >= hard { return expireSA(i) }
        if let soft = sa.pointee.lifetime.softBytes, bytes >= soft, !sa.pointee.expiring {
            sa.pointee.expiring = true
            report(.saExpiring(tunnel: tunnelStates[Int(sa.pointee.tunnel)].interface, spi: sa.pointee.spi, inbound: sa.pointee.inbound))
        }
    }

    /// A hard limit reached: the SA carries nothing more (its owner is told once).
    @inline(never)
    func expireSA(_ i: Int) {
        let sa = sas.entries + i
        guard !sa.pointee.expired else { return }
        sa.pointee.expired = true
        report(.saExpired(tunnel: tunnelStates[Int(sa.pointee.tunnel)].interface, spi: sa.pointee.spi, inbound: sa.pointee.inbound))
    }

    /// Time lifetimes, from `tick`: soft ones reported, hard ones expire the SA.
    func ipsecTimers() {
        let now = hot.pointee.now
        var next = Int64.max
        for i in sas.live {
            let sa = sas.entries + i
            let age = now - sa.pointee.installed
            if let hard = sa.pointee.lifetime.hardSeconds {
                let at = Int64(hard) * 1_000_000_000
                if age >= at { expireSA(i) } else { next = min(next, sa.pointee.installed + at) }
            }
            if let soft = sa.pointee.lifetime.softSeconds, !sa.pointee.expiring {
                let at = Int64(soft) * 1_000_000_000
                if age >= at {
                    sa.pointee.expiring = true
                    report(.saExpiring(tunnel: tunnelStates[Int(sa.pointee.tunnel)].interface, spi: sa.pointee.spi,
                                       inbound: sa.pointee.inbound))
                } else {
                    next = min(next, sa.pointee.installed + at)
                }
            }
        }
        hot.pointee.nextIPsecTimer = next == .max ? 0 : next
    }
}
