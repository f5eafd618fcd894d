import AnygateControl
import AnygateCrypto
import AnygateIKE
import AnygateStack
import AnygateWire
import Foundation
import Logging

/// The IKE side of one protected tunnel or policy-based link: its sockets
/// (UDP 500, and the tunnel's UDP 4500 ESP socket that IKE shares after a
/// NAT is found), the current session, and what it installed.
final class IKEPeer {
    let name: String
    let config: IKEPeerConfig
    let tunnel: InterfaceIndex
    let local: IPAddress
    let remote: IPAddress
    let policy: IKEPolicy
    /// The tunnel has a UDP 4500 ESP socket (IKE may move there).
    let udpEncapsulation: Bool
    /// `encapsulation: auto`: ESP in UDP only when a NAT is found.
    var auto = false
    let ikeSocket: SocketID
    let espSocket: SocketID
    let remoteSubnets: [IPPrefix]
    var session: IKESession?
    var child: ChildSAKeys?
    /// When to try again (initiators), in stack-clock nanoseconds; 0: not waiting.
    var retryAt: Int64 = 0
    var lastReason: String?
    var state = "idle"
    /// When the current child SA went in (for the rekey interval).
    var childInstalled: Int64 = 0
    /// When to try a rekey the byte lifetime asked for; 0: none wanted.
    var rekeyWanted: Int64 = 0
    /// Inbound SPIs of child SAs deleted after a rekey, and when they go:
    /// kept a moment for what the peer sent on them before the delete and
    /// is still queued in a port or another worker.
    var retiring: [(spi: UInt32, at: Int64)] = []
    /// When the IKE SA was made or last rekeyed.
    var ikeInstalled: Int64 = 0
    /// When the next NAT keepalive is due.
    var keepaliveAt: Int64 = 0
    /// Stateless cookies for IKE_SA_INIT floods.
    var cookies = IKECookieJar()
    /// A responder session beside an established (or starting) one: the
    /// peer began again; it takes over only once authenticated.
    var pending: IKESession?
    /// With several workers, the worker whose replica holds the SAs (and
    /// sends IKE's datagrams); nil with one.
    var owner: Int?

    init(name: String, config: IKEPeerConfig, tunnel: InterfaceIndex, local: IPAddress, remote: IPAddress, policy: IKEPolicy,
         udpEncapsulation: Bool, ikeSocket: SocketID, espSocket: SocketID, remoteSubnets: [IPPrefix]) {
        self.name = name; self.config = config; self.tunnel = tunnel; self.local = local; self.remote = remote; self.policy = policy
        self.udpEncapsulation = udpEncapsulation; self.ikeSocket = ikeSocket; self.espSocket = espSocket; self.remoteSubnets = remoteSubnets
    }

    var localEndpoint: IKEEndpoint { IKEEndpoint(address: local.networkBytes, port: UDPEncapsulation.ikePort) }
    var remoteEndpoint: IKEEndpoint { IKEEndpoint(address: remote.networkBytes, port: UDPEncapsulation.ikePort) }
}

/// What IKE did, for `/metrics`.
struct IKEMetrics {
    var established: UInt64 = 0
    var rekeys: UInt64 = 0
    var ikeRekeys: UInt64 = 0
    var ikeFailures: UInt64 = 0
}

/// A CSPRNG for IKE's SPIs and nonces.
func secureRandom() -> UInt64 {
    var g = SystemRandomNumberGenerator()
    return g.next()
}

extension Daemon {
    // MARK: Peers

    /// Starts IKE for a tunnel made with `ike` settings: reads the key,
    /// opens UDP 500, and (initiators) sends the first message.
    func startIKE(_ t: TunnelConfig, interface idx: InterfaceIndex) throws(DaemonError) {
        guard let ike = t.ike, let protection = t.tunnel.protection else { return }
        var raw: [UInt8]
        do {
            raw = Array(try Data(contentsOf: URL(fileURLWithPath: ike.pskFile)))
        } catch {
            throw DaemonError("tunnel \(t.name): cannot read its psk-file \(ike.pskFile)")
        }
        // A trailing newline is not part of the key.
        var end = raw.count
        while end > 0, raw[end - 1] == 0x0A || raw[end - 1] == 0x0D { end -= 1 }
        guard end > 0 else { throw DaemonError("tunnel \(t.name): psk-file \(ike.pskFile) is empty") }
        let psk = raw.withUnsafeBytes { SecretBytes(copying: UnsafeRawBufferPointer(rebasing: $0[..<end])) }
        raw.withUnsafeMutableBytes { wipe($0) }
        let transport = t.tunnel.encapsulation != .ipsec
        let (localTS, remoteTS): ([TrafficSelector], [TrafficSelector])
        if transport {
            // GRE over IPsec protects the GRE packets between the two endpoints.
            localTS = [Daemon.selector(host: t.tunnel.local, protocol: IPProtocol.gre.rawValue)]
            remoteTS = [Daemon.selector(host: t.tunnel.remote, protocol: IPProtocol.gre.rawValue)]
        } else {
            localTS = protection.localSubnets.map(Daemon.selector)
            remoteTS = protection.remoteSubnets.map(Daemon.selector)
        }
        var policy = IKEPolicy(localID: IKEIdentity(ike.localID), remoteID: IKEIdentity(ike.remoteID), psk: psk,
                               localSelectors: localTS, remoteSelectors: remoteTS)
        policy.ikeSuites = ike.ikeProposals
        policy.espSuites = ike.espProposals
        policy.transportMode = transport
        policy.dpdInterval = ike.dpd
        let backend = t.tunnel.backend, local = t.tunnel.local, remote = t.tunnel.remote
        let ikeSocket: SocketID
        do throws(SocketError) {
            // In every replica (built alike, they give it the same id).
            ikeSocket = try change { s throws(SocketError) in
                let id = try s.openSocket(.udp, backend: backend, queueCapacity: 16)
                do throws(SocketError) {
                    try s.bind(id, address: local, port: UDPEncapsulation.ikePort)
                    try s.connect(id, to: remote, port: UDPEncapsulation.ikePort)
                } catch {
                    s.closeSocket(id)
                    throw error
                }
                return id
            }
        } catch {
            throw DaemonError("tunnel \(t.name): cannot open IKE's UDP port 500: \(error)")
        }
        guard let esp = stack.espSocket(tunnel: idx) else { throw DaemonError("tunnel \(t.name): no ESP socket") }
        var udp = false
        if case .udp = protection.encapsulation { udp = true }
        let peer = IKEPeer(name: t.name, config: ike, tunnel: idx, local: local, remote: remote, policy: policy, udpEncapsulation: udp,
                           ikeSocket: ikeSocket, espSocket: esp, remoteSubnets: transport ? [] : protection.remoteSubnets)
        peer.auto = protection.auto
        if let workers {
            // One worker's replica holds the SAs — one owner for each
            // counter and window — and the others hand it what needs them;
            // IKE's datagrams come to this thread from whichever worker reads them.
            let owner = nextSAOwner % workers.count
            nextSAOwner += 1
            peer.owner = owner
            for j in 0..<workers.count {
                workers.perform(on: j) { r in
                    try? r.stack.setSAOwner(tunnel: idx, replica: j == owner ? nil : owner)
                    r.stack.setReportsDatagrams(ikeSocket, true)
                    r.stack.setReportsDatagrams(esp, true)
                }
            }
        }
        ikePeers[t.name] = peer
        if ike.start == .initiate { peer.retryAt = runtime.clock }
        logger.info("IKE peer ready", metadata: ["tunnel": "\(t.name)", "peer": "\(remote)", "start": "\(ike.start.rawValue)",
                                                 "mode": "\(transport ? "transport (GRE over IPsec)" : "tunnel")"])
    }

    /// Ends IKE for a tunnel going away: a Delete to the peer, SAs and routes gone.
    func stopIKE(_ name: String) {
        guard let peer = ikePeers.removeValue(forKey: name) else { return }
        if let s = peer.session { send(peer, s.close(now: runtime.clock)) }
        teardownChild(peer)
        let id = peer.ikeSocket
        change { s in s.closeSocket(id) }
    }

    static func selector(host a: IPAddress, protocol p: UInt8) -> TrafficSelector {
        let b = a.networkBytes
        return TrafficSelector(type: a.isIPv6 ? TrafficSelector.ipv6Range : TrafficSelector.ipv4Range, ipProtocol: p, start: b, end: b)
    }

    static func selector(_ p: IPPrefix) -> TrafficSelector {
        switch p {
        case .v4(let q):
            let start = q.address.rawValue, end = q.length == 0 ? UInt32.max : start | (UInt32.max >> UInt32(q.length))
            return TrafficSelector(type: TrafficSelector.ipv4Range, start: IPv4Address(rawValue: start).networkBytes,
                                   end: IPv4Address(rawValue: end).networkBytes)
        case .v6(let q):
            let n = q.length
            let hiMask: UInt64 = n >= 64 ? 0 : (n == 0 ? .max : .max >> UInt64(n))
            let loMask: UInt64 = n <= 64 ? .max : (n == 128 ? 0 : .max >> UInt64(n - 64))
            let a = q.address
            return TrafficSelector(type: TrafficSelector.ipv6Range, start: a.networkBytes,
                                   end: IPv6Address(high: a.high | hiMask, low: a.low | loMask).networkBytes)
        }
    }

    // MARK: Running

    /// Reads what came for IKE, runs its timers and retries; returns when
    /// it next needs the loop (at most a second away while peers exist).
    func serviceIKE() -> Int64? {
        guard !ikePeers.isEmpty else { return nil }
        let now = runtime.clock
        for peer in ikePeers.values {
            while let d = stack.socketReceive(peer.ikeSocket) {
                let bytes = stack.pool.copyBytes(d.packet)
                stack.pool.free(d.packet)
                receive(peer, bytes, natTraversal: false, now: now)
            }
            while peer.udpEncapsulation, let d = stack.socketReceive(peer.espSocket) {
                // IKE on 4500 behind its non-ESP marker (RFC 3948 section 2.2).
                let bytes = stack.pool.copyBytes(d.packet)
                stack.pool.free(d.packet)
                guard bytes.count > UDPEncapsulation.nonESPMarkerLength else { continue }
                receive(peer, Array(bytes.dropFirst(UDPEncapsulation.nonESPMarkerLength)), natTraversal: true, now: now)
            }
            if let s = peer.session { handle(peer, s.tick(now: now), arrivedOn4500: nil) }
            // Behind a NAT, keep its mapping for UDP 4500 open (RFC 3948 section 2.3).
            if let s = peer.session, s.state == .established, s.behindNAT, peer.udpEncapsulation, now >= peer.keepaliveAt {
                peer.keepaliveAt = now + 20_000_000_000
                sendDatagram(peer, socket: peer.espSocket, [UDPEncapsulation.keepaliveByte])
            }
            // Rekey the IKE SA on time (the child SAs carry on).
            if let s = peer.session, s.state == .established, now - peer.ikeInstalled >= Int64(peer.config.ikeRekey) * 1_000_000_000 {
                peer.ikeInstalled = now
                handle(peer, s.rekeyIKE(now: now), arrivedOn4500: nil)
            }
            // A rekey the byte lifetime asked for, tried until one (ours or the peer's) goes through.
            if peer.rekeyWanted != 0, now >= peer.rekeyWanted, let s = peer.session, s.state == .established {
                peer.rekeyWanted = now + 500_000_000 + Int64(secureRandom() % 500_000_000)
                handle(peer, s.rekeyChild(now: now), arrivedOn4500: nil)
            }
            // Rekey the child SA on time, make-before-break.
            if let s = peer.session, s.state == .established, peer.child != nil,
               now - peer.childInstalled >= Int64(peer.config.rekey) * 1_000_000_000 {
                handle(peer, s.rekeyChild(now: now), arrivedOn4500: nil)
            }
            if let first = peer.retiring.first, now >= first.at {
                removeSAs(peer, inbound: peer.retiring.filter { now >= $0.at }.map(\.spi), outbound: nil)
                peer.retiring.removeAll { now >= $0.at }
            }
            if peer.retryAt != 0, now >= peer.retryAt, peer.config.start == .initiate {
                peer.retryAt = 0
                initiate(peer, now: now)
            }
        }
        let soonest = ikePeers.values.map(\.rekeyWanted).filter { $0 != 0 }.min() ?? .max
        return min(now + 1_000_000_000, max(soonest, now))
    }

    /// A datagram a worker's replica read for IKE (several workers).
    func ikeDatagram(socket: SocketID, bytes: [UInt8]) {
        let now = runtime.clock
        if let peer = ikePeers.values.first(where: { $0.ikeSocket == socket }) {
            receive(peer, bytes, natTraversal: false, now: now)
        } else if let peer = ikePeers.values.first(where: { $0.udpEncapsulation && $0.espSocket == socket }),
                  bytes.count > UDPEncapsulation.nonESPMarkerLength {
            receive(peer, Array(bytes.dropFirst(UDPEncapsulation.nonESPMarkerLength)), natTraversal: true, now: now)
        }
    }

    func initiate(_ peer: IKEPeer, now: Int64) {
        let s = IKESession(role: .initiator, policy: peer.policy, local: peer.localEndpoint, remote: peer.remoteEndpoint, random: secureRandom)
        peer.session = s
        peer.state = "connecting"
        handle(peer, s.start(now: now), arrivedOn4500: nil)
    }

    func receive(_ peer: IKEPeer, _ message: [UInt8], natTraversal: Bool, now: Int64) {
        guard let h = try? IKEHeader(parsing: message) else { return }
        // A new IKE_SA_INIT from the peer (as responder, or after the peer restarted).
        if h.exchange == .saInit, !h.isResponse, h.responderSPI == 0, h.initiatorSPI != peer.session?.initiatorSPI,
           h.initiatorSPI != peer.pending?.initiatorSPI {
            // Under a flood, only requests that bring back our cookie cost a key exchange.
            if let reply = peer.cookies.check(message, from: peer.remote.networkBytes, now: now) {
                send(peer, reply, on4500: natTraversal && peer.udpEncapsulation)
                return
            }
            let fresh = IKESession(role: .responder, policy: peer.policy, local: peer.localEndpoint, remote: peer.remoteEndpoint,
                                   random: secureRandom)
            if let s = peer.session, s.state != .closed, s.state == .established || s.role == .initiator {
                // An SA is up (or ours is on its way): the newcomer replaces it
                // only once it has authenticated, so a forged request costs nothing.
                peer.pending = fresh
            } else {
                peer.session = fresh
                peer.state = "connecting"
            }
        }
        if let p = peer.pending, h.initiatorSPI == p.initiatorSPI || (p.state == .idle && h.exchange == .saInit && !h.isResponse) {
            return handle(peer, p.receive(message, now: now), arrivedOn4500: natTraversal, session: p)
        }
        guard let s = peer.session else { return }
        handle(peer, s.receive(message, now: now), arrivedOn4500: natTraversal)
    }

    /// Carries out a session's outputs (`session`: a newcomer beside the
    /// established one, which takes over when it is established and is
    /// forgotten if it fails). Answers go back the way the request came;
    /// our own requests go on 4500 once a NAT was found.
    func handle(_ peer: IKEPeer, _ outputs: [IKEOutput], arrivedOn4500: Bool?, session: IKESession? = nil) {
        if let newcomer = session, newcomer !== peer.session {
            let up = outputs.contains { if case .established = $0 { true } else { false } }
            let failed = outputs.contains { if case .failed = $0 { true } else { false } }
            for case .send(let m) in outputs { send(peer, m, on4500: (arrivedOn4500 ?? false) && peer.udpEncapsulation) }
            if failed {
                peer.pending = nil
                for case .failed(let why) in outputs {
                    ikeMetrics.ikeFailures += 1
                    logger.warning("IKE failed", metadata: ["tunnel": "\(peer.name)", "peer": "\(peer.remote)", "reason": "\(why)"])
                }
            } else if up {
                // The peer started over: the new IKE SA takes the place of the old one.
                peer.pending = nil
                peer.session = newcomer
                handle(peer, outputs.filter { if case .send = $0 { false } else { true } }, arrivedOn4500: arrivedOn4500)
            }
            return
        }
        guard let s = peer.session else { return }
        // SAs go in before the message that lets the peer use them leaves
        // (with several workers both are jobs for the owner, run in order).
        let installsFirst = outputs.filter { if case .childSA = $0 { true } else if case .rekeyed = $0 { true } else { false } }
            + outputs.filter { if case .childSA = $0 { false } else if case .rekeyed = $0 { false } else { true } }
        for o in installsFirst {
            switch o {
            case .send(let m):
                // IKE_SA_INIT stays where it came (port 500); after it, a NAT
                // moves everything to 4500; otherwise answers go back the way
                // their request came.
                let initExchange = m.count > 18 && IKEExchange(rawValue: m[18]) == .saInit
                let on4500 = initExchange ? (arrivedOn4500 ?? false) : (s.natDetected || (arrivedOn4500 ?? false))
                send(peer, m, on4500: on4500 && peer.udpEncapsulation)
            case .childSA(let keys):
                install(peer, keys)
            case .rekeyed(let new, let old, let outboundNow):
                let tunnel = peer.tunnel
                let inbound = saConfiguration(new, inbound: true, rekey: peer.config.rekey, bytes: peer.config.lifetimeBytes)
                let outbound = saConfiguration(new, inbound: false, rekey: peer.config.rekey, bytes: peer.config.lifetimeBytes)
                _ = changeSAs(peer, "install the rekeyed child SA") { st throws(IPsecError) in
                    try st.addInboundSA(tunnel: tunnel, inbound)
                    if outboundNow { try st.setOutboundSA(tunnel: tunnel, outbound) }
                }
                peer.child = new
                peer.childInstalled = runtime.clock
                peer.rekeyWanted = 0
                ikeMetrics.rekeys += 1
                logger.info("child SA rekeyed", metadata: ["tunnel": "\(peer.name)", "old-spi-in": "\(Daemon.hex(old.inboundSPI))",
                                                           "spi-in": "\(Daemon.hex(new.inboundSPI))", "spi-out": "\(Daemon.hex(new.outboundSPI))"])
            case .outboundSwitch(let new):
                let tunnel = peer.tunnel
                let outbound = saConfiguration(new, inbound: false, rekey: peer.config.rekey, bytes: peer.config.lifetimeBytes)
                _ = changeSAs(peer, "switch to the rekeyed child SA") { st throws(IPsecError) in try st.setOutboundSA(tunnel: tunnel, outbound) }
            case .ikeRekeyed:
                peer.ikeInstalled = runtime.clock
                ikeMetrics.ikeRekeys += 1
                logger.info("IKE SA rekeyed", metadata: ["tunnel": "\(peer.name)", "role": "\(s.role == .initiator ? "initiator" : "responder")"])
            case .childDeleted(let old):
                // Nothing more goes out on it; what comes in on it is still opened for a second.
                removeSAs(peer, inbound: [], outbound: old.outboundSPI)
                peer.retiring.append((old.inboundSPI, runtime.clock + Daemon.inboundGrace))
            case .established:
                peer.ikeInstalled = runtime.clock
                // encapsulation: auto — ESP in UDP only across a NAT (RFC 3948).
                if peer.auto {
                    let tunnel = peer.tunnel, udp = s.natDetected
                    change { st in st.setESPInUDP(tunnel: tunnel, udp) }
                }
                ikeMetrics.established += 1
                peer.state = "established"
                peer.lastReason = nil
                logger.notice("IPsec SA established", metadata: [
                    "tunnel": "\(peer.name)", "peer": "\(peer.remote)", "ike": "\(s.suite?.description ?? "-")",
                    "esp": "\(peer.child?.suite.description ?? "-")", "nat-t": "\(s.natDetected)", "behind-nat": "\(s.behindNAT)",
                    "spi-in": "\(Daemon.hex(peer.child?.inboundSPI ?? 0))", "spi-out": "\(Daemon.hex(peer.child?.outboundSPI ?? 0))",
                ])
                if s.natDetected && !peer.udpEncapsulation {
                    logger.warning("a NAT lies between the peers but the tunnel sends ESP as protocol 50: set encapsulation: udp",
                                   metadata: ["tunnel": "\(peer.name)"])
                }
            case .failed(let why):
                ikeMetrics.ikeFailures += 1
                end(peer, "failed", "IKE failed", why, retryIn: 10_000_000_000)
            case .closed(let why):
                end(peer, "closed", "IPsec SA closed", why, retryIn: 2_000_000_000)
            }
        }
    }

    /// The session is over (failed, or closed): logged with the reason, its
    /// child SA and routes gone, and an initiator tries again in `retryIn`.
    func end(_ peer: IKEPeer, _ state: String, _ message: Logger.Message, _ why: String, retryIn: Int64) {
        peer.state = state
        peer.lastReason = why
        logger.warning(message, metadata: ["tunnel": "\(peer.name)", "peer": "\(peer.remote)", "reason": "\(why)"])
        teardownChild(peer)
        peer.session = nil
        if peer.config.start == .initiate { peer.retryAt = runtime.clock + retryIn }
    }

    func send(_ peer: IKEPeer, _ outputs: [IKEOutput]) {
        for case .send(let m) in outputs { send(peer, m, on4500: (peer.session?.natDetected ?? false) && peer.udpEncapsulation) }
    }

    func send(_ peer: IKEPeer, _ message: [UInt8], on4500: Bool) {
        let bytes = on4500 ? [UInt8](repeating: 0, count: UDPEncapsulation.nonESPMarkerLength) + message : message
        sendDatagram(peer, socket: on4500 ? peer.espSocket : peer.ikeSocket, bytes)
    }

    /// Sends on one of the peer's sockets: the stack's, or with several
    /// workers the SA owner's replica's.
    func sendDatagram(_ peer: IKEPeer, socket: SocketID, _ bytes: [UInt8]) {
        let name = peer.name, logger = logger
        let job: @Sendable (Stack) -> Void = { s in
            guard let p = s.pool.make(copying: bytes) else { return }
            do { try s.socketSend(socket, p) } catch {
                logger.debug("IKE send failed", metadata: ["tunnel": "\(name)", "error": "\(error)"])
            }
        }
        if let workers, let owner = peer.owner { workers.perform(on: owner) { job($0.stack) } } else { job(stack) }
    }

    /// Changes the peer's SAs where they live: the stack's, or with several
    /// workers the owner's replica (a failure there is logged there).
    func changeSAs(_ peer: IKEPeer, _ what: String, _ body: @escaping @Sendable (Stack) throws(IPsecError) -> Void) -> Bool {
        guard let workers, let owner = peer.owner else {
            do { try body(stack) } catch {
                logger.error("cannot \(what)", metadata: ["tunnel": "\(peer.name)", "error": "\(error)"])
                return false
            }
            return true
        }
        let name = peer.name, logger = logger
        return workers.perform(on: owner) { r in
            do { try body(r.stack) } catch {
                logger.error("cannot \(what)", metadata: ["tunnel": "\(name)", "error": "\(error)", "worker": "\(owner)"])
            }
        }
    }

    /// An SA for the stack; it expires (hard) a tenth past the rekey
    /// interval plus a minute, so one whose rekey keeps failing does not live on.
    func saConfiguration(_ keys: ChildSAKeys, inbound: Bool, rekey: Int, bytes: UInt64? = nil) -> SAConfiguration {
        SAConfiguration(spi: inbound ? keys.inboundSPI : keys.outboundSPI, algorithm: keys.suite.encryption,
                        keyMaterial: inbound ? keys.inboundKey : keys.outboundKey, extendedSequenceNumbers: keys.suite.extendedSequenceNumbers,
                        lifetime: SALifetime(softBytes: bytes.map { $0 / 2 }, hardBytes: bytes, hardSeconds: rekey + rekey / 10 + 60))
    }

    /// The stack says an SA reached its soft byte limit: rekey its child SA
    /// soon — after a random fraction of a second, so that two gateways
    /// counting the same bytes do not keep colliding (RFC 7296 section 2.25.1).
    func saExpiring(tunnel: InterfaceIndex) {
        guard let peer = ikePeers.values.first(where: { $0.tunnel == tunnel }), peer.rekeyWanted == 0 else { return }
        peer.rekeyWanted = runtime.clock + Int64(secureRandom() % 300_000_000)
    }

    /// Installs a child SA in the stack: the inbound SA first, then the
    /// outbound one; a policy-based link then routes its remote subnets.
    func install(_ peer: IKEPeer, _ keys: ChildSAKeys) {
        let old = peer.child
        let tunnel = peer.tunnel
        let inbound = saConfiguration(keys, inbound: true, rekey: peer.config.rekey, bytes: peer.config.lifetimeBytes)
        let outbound = saConfiguration(keys, inbound: false, rekey: peer.config.rekey, bytes: peer.config.lifetimeBytes)
        let oldInbound = old.flatMap { $0.inboundSPI != keys.inboundSPI ? $0.inboundSPI : nil }
        guard changeSAs(peer, "install the child SA", { st throws(IPsecError) in
            try st.addInboundSA(tunnel: tunnel, inbound)
            try st.setOutboundSA(tunnel: tunnel, outbound)
            if let spi = oldInbound { st.removeSA(tunnel: tunnel, spi: spi, inbound: true) }
        }) else { return }
        peer.child = keys
        peer.childInstalled = runtime.clock
        // IPv4 routes go to the FIB the daemon's stack writes (the workers
        // read it); IPv6 routes are each replica's.
        for p in peer.remoteSubnets {
            switch p {
            case .v4(let q): try? changeRoutes { s throws(RouteError) in try s.addRoute(q, interface: tunnel, origin: .tunnel) }
            case .v6(let q): change { s in try? s.addRoute(q, interface: tunnel, origin: .tunnel) }
            }
        }
    }

    /// How long an inbound SA outlives its child SA's delete after a rekey.
    static let inboundGrace: Int64 = 1_000_000_000

    /// Removes a child SA's pair wherever it lives.
    func removeSAs(_ peer: IKEPeer, _ c: ChildSAKeys) {
        removeSAs(peer, inbound: [c.inboundSPI], outbound: c.outboundSPI)
    }

    /// Removes inbound SAs and an outbound one of the peer's tunnel wherever they live.
    func removeSAs(_ peer: IKEPeer, inbound: [UInt32], outbound: UInt32?) {
        let tunnel = peer.tunnel
        _ = changeSAs(peer, "remove a child SA") { st in
            for spi in inbound { st.removeSA(tunnel: tunnel, spi: spi, inbound: true) }
            if let outbound { st.removeSA(tunnel: tunnel, spi: outbound, inbound: false) }
        }
    }

    /// Removes the child SA and, for a policy-based link, its routes.
    func teardownChild(_ peer: IKEPeer) {
        guard let c = peer.child else { return }
        removeSAs(peer, c)
        peer.child = nil
        for p in peer.remoteSubnets {
            switch p {
            case .v4(let q): _ = changeRoutes { s in s.removeRoutes(q, origin: .tunnel) }
            case .v6(let q): change { s in _ = s.removeRoutes(q, origin: .tunnel) }
            }
        }
    }

    static func hex(_ spi: UInt32) -> String { String(format: "%08x", spi) }

    // MARK: show sas

    func saInfos() -> [SAInfo] {
        // With several workers each SA is in its owner's replica only.
        let sas = workers.map { $0.gather { $0.stack.saList }?.flatMap { $0 } ?? [] } ?? stack.saList
        return ikePeers.values.sorted { $0.name < $1.name }.map { peer in
            var children: [ChildSAInfo] = []
            if let c = peer.child {
                let inbound = sas.first { $0.inbound && $0.spi == c.inboundSPI }
                let outbound = sas.first { !$0.inbound && $0.spi == c.outboundSPI }
                let state = (inbound?.expired ?? false) || (outbound?.expired ?? false) ? "expired"
                    : (inbound?.expiring ?? false) || (outbound?.expiring ?? false) ? "expiring" : "installed"
                children.append(ChildSAInfo(localSpi: Daemon.hex(c.inboundSPI), remoteSpi: Daemon.hex(c.outboundSPI), state: state,
                                            protocol: "esp", mode: c.transportMode ? "transport" : "tunnel",
                                            algorithm: c.suite.encryption.name, esn: c.suite.extendedSequenceNumbers,
                                            bytesIn: inbound?.counters.bytes ?? 0, bytesOut: outbound?.counters.bytes ?? 0,
                                            packetsIn: inbound?.counters.packets ?? 0, packetsOut: outbound?.counters.packets ?? 0,
                                            replayDrops: (inbound?.counters.replayed ?? 0) + (inbound?.counters.outOfWindow ?? 0),
                                            authFailures: inbound?.counters.authFailures ?? 0,
                                            ageSeconds: Double(outbound?.age.nanoseconds ?? 0) / 1e9,
                                            rekeyInSeconds: max(0, Double(peer.config.rekey) - Double(runtime.clock - peer.childInstalled) / 1e9)))
            }
            let role: String? = peer.session.map { $0.role == .initiator ? "initiator" : "responder" }
            return SAInfo(name: peer.name, peer: "\(peer.remote)", state: peer.state, role: role, localId: peer.config.localID,
                          remoteId: peer.config.remoteID, ike: peer.session?.suite?.description,
                          natTraversal: stack.espInUDP(tunnel: peer.tunnel), reason: peer.lastReason,
                          children: children, cookiesSent: peer.cookies.cookiesSent, rekeys: peer.session?.rekeys ?? 0,
                          ikeRekeys: peer.session?.ikeRekeys ?? 0)
        }
    }
}
