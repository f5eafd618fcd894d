public import AnygateWire

/// What the owner can read about one connection.
public struct TCPInfo: Hashable, Sendable {
    public var state: TCPState
    public var local: IPAddress
    public var localPort: UInt16
    public var remote: IPAddress
    public var remotePort: UInt16
    public var mslClass: MSLClass
    /// Smoothed RTT and RTO, in nanoseconds (0 before the first sample).
    public var smoothedRTT: Int64
    public var rto: Int64
    public var congestionWindow: Int
    public var sendMSS: Int
    public var sendWindow: Int
    public var unacknowledged: Int
    /// Bytes waiting to be read, and room for more to send.
    public var readable: Int
    public var writable: Int
    public var sack: Bool
    public var timestamps: Bool
    public var windowScale: (send: UInt8, receive: UInt8)
    public var counters: TCPConnectionCounters
    public var closeReason: TCPCloseReason?

    public static func == (a: TCPInfo, b: TCPInfo) -> Bool {
        a.state == b.state && a.local == b.local && a.localPort == b.localPort && a.remote == b.remote
            && a.remotePort == b.remotePort && a.counters == b.counters
    }
    public func hash(into h: inout Hasher) { h.combine(local); h.combine(localPort); h.combine(remote); h.combine(remotePort) }
}

/// The stack's transmitter for connections (no allocation per segment).
struct StackTCPTransmitter: TCPTransmitter {
    unowned(unsafe) let stack: Stack
    func transmit(_ c: TCPConnection, _ repr: TCPRepr, data: ByteRing?, offset: Int, length: Int) -> Bool {
        stack.tcpTransmit(from: c.local, to: c.remote, repr, data: data, offset: offset, length: length)
    }
    func mayChallenge(now: Int64) -> Bool { stack.tcp.mayChallenge(now: now) }
}

extension Stack {
    var tcpTransmitter: StackTCPTransmitter { StackTCPTransmitter(stack: self) }

    // MARK: Listening

    /// Listens on `address` (unspecified: every address of its family) and
    /// `port`. `allow` limits who may connect (empty: anyone); SYNs from
    /// others are dropped and counted (`tcp-source-not-allowed`).
    /// Listeners take new connections whatever vestiges hold the port (as
    /// SO_REUSEADDR does).
    public func tcpListen(address: IPAddress, port: UInt16, backlog: Int = 128, allow: [IPPrefix] = [],
                          keepalive: Bool = false) throws(SocketError) -> TCPListenerID {
        guard port != 0 else { throw .addressInUse(0) }
        let clash = tcp.listeners.contains { l in
            guard let l, l.port == port, l.address.isIPv6 == address.isIPv6 else { return false }
            return l.address == address || l.address.isUnspecified || address.isUnspecified
        }
        if clash { throw .addressInUse(port) }
        let l = TCPListener(address: address, port: port, backlog: max(1, backlog), allow: allow, keepalive: keepalive)
        if let k = tcp.listeners.firstIndex(where: { $0 == nil }) {
            tcp.listeners[k] = l
            return TCPListenerID(value: k)
        }
        tcp.listeners.append(l)
        return TCPListenerID(value: tcp.listeners.count - 1)
    }

    /// Stops listening: connections not yet accepted are reset.
    public func tcpCloseListener(_ id: TCPListenerID) {
        guard id.value >= 0 && id.value < tcp.listeners.count, let l = tcp.listeners[id.value] else { return }
        enter()
        for slot in l.acceptQueue {
            if let c = tcp.connections[slot] {
                c.abort(now: hot.pointee.now, tcpTransmitter)
                freeConnection(c)
            }
        }
        tcp.listeners[id.value] = nil
        for (key, e) in tcp.synCache where e.listener == id.value { tcp.synCache[key] = nil }
        flush()
    }

    /// The next connection that completed its handshake, or nil.
    public func tcpAccept(_ id: TCPListenerID) -> TCPSocketID? {
        guard id.value >= 0 && id.value < tcp.listeners.count, tcp.listeners[id.value] != nil,
              !tcp.listeners[id.value]!.acceptQueue.isEmpty else { return nil }
        let slot = tcp.listeners[id.value]!.acceptQueue.removeFirst()
        tcp.connections[slot]?.listener = nil
        tcp.listeners[id.value]!.counters.accepted &+= 1
        return tcp.id(slot)
    }

    public func tcpListenerCounters(_ id: TCPListenerID) -> TCPListenerCounters? {
        guard id.value >= 0 && id.value < tcp.listeners.count else { return nil }
        return tcp.listeners[id.value]?.counters
    }

    // MARK: Connecting

    /// Opens a connection (the SYN leaves now; `.established` or `.closed`
    /// notices say how it went). The source is `from`, or chosen for the
    /// route; the local port is `localPort`, or an ephemeral one that no
    /// connection or vestige holds.
    public func tcpConnect(to remote: IPAddress, port: UInt16, from: IPAddress? = nil, localPort: UInt16 = 0,
                           keepalive: Bool = false) throws(SocketError) -> TCPSocketID {
        enter()
        defer { flush() }
        let now = hot.pointee.now
        var route = RouteCache()
        let src: IPAddress
        switch remote {
        case .v4(let dst):
            guard let r = route.route(to: dst, in: fibView.pointee, statistics: &routeCacheStatistics) else { throw .noRoute(remote) }
            if case .v4(let a)? = from, !a.isUnspecified { src = .v4(a) } else { src = .v4(selectSource(destination: dst, route: r)) }
        case .v6(let dst):
            guard let r = fib6View.pointee.lookup(dst), r.pointee.kind != .blackhole else { throw .noRoute(remote) }
            if case .v6(let a)? = from, !a.isUnspecified {
                src = .v6(a)
            } else if r.pointee.kind == .local {
                src = remote
            } else {
                guard let a = source6(on: Int(r.pointee.interface), to: dst) else { throw .noSourceAddress }
                src = .v6(a)
            }
        }
        guard !src.isUnspecified else { throw .noSourceAddress }
        var key = TCPKey(local: src, remote: remote, localPort: localPort, remotePort: port)
        if localPort == 0 {
            guard let p = ephemeralPort(for: key) else { throw .addressInUse(0) }
            key.localPort = p
        } else if tcp.byKey[key] != nil || vestigeLookup(key) != nil {
            // A live connection or a vestige holds the four-tuple (NetBSD: EADDRINUSE).
            throw .addressInUse(localPort)
        }
        guard let c = newConnection(key, iss: tcp.initialSequence(key, now: now), state: .synSent, now: now) else {
            throw .tableFull(tcp.configuration.maxConnections)
        }
        c.route = route
        c.keepalive = keepalive
        c.timestamps = true
        c.sackPermitted = true
        tcp.statistics.activeOpens &+= 1
        c.sendSYN(now: now, tcpTransmitter)
        afterActivity(c)
        return tcp.id(c.slot)
    }

    /// A local port for `key` that no connection and no vestige uses.
    func ephemeralPort(for key: TCPKey) -> UInt16? {
        var k = key
        for _ in 0..<16384 {
            let p = tcp.nextEphemeral
            tcp.nextEphemeral = p == 65535 ? 49152 : p + 1
            k.localPort = p
            let vestigial = key.local.isIPv6 ? tcp.vestiges6.portCounts[Int(p)] : tcp.vestiges4.portCounts[Int(p)]
            if vestigial == 0 && tcp.byKey[k] == nil && !tcp.listeners.contains(where: { $0?.port == p }) { return p }
        }
        return nil
    }

    /// A connection in a free slot, entered under its key.
    func newConnection(_ key: TCPKey, iss: UInt32, state: TCPState, now: Int64) -> TCPConnection? {
        guard let slot = tcp.freeSlots.popLast() else { return nil }
        let c = TCPConnection(settings: tcp.configuration.settings, ipv6: key.local.isIPv6, localPort: key.localPort,
                              remotePort: key.remotePort, iss: iss, tsOffset: tcp.timestampOffset(key),
                              mss: localMSS(to: key.remote), state: state, now: now)
        c.slot = slot
        c.local = key.local
        c.remote = key.remote
        tcp.connections[slot] = c
        tcp.byKey[key] = slot
        tcp.statistics.connections = tcp.byKey.count
        return c
    }

    /// The MSS the route to `remote` allows: its interface's MTU (a
    /// tunnel's follows its path MTU) less the IP and TCP headers.
    func localMSS(to remote: IPAddress) -> Int {
        // A segment is built in one pool buffer (the IP header goes in its headroom).
        min(routeMSS(to: remote), pool.dataCapacity - 60)  // 60: the largest TCP header
    }

    private func routeMSS(to remote: IPAddress) -> Int {
        switch remote {
        case .v4(let dst):
            guard let r = fibView.pointee.lookupRoute(dst) else { return 536 }
            let mtu = r.kind == .local ? 65535 : ifs[Int(r.interface)].mtu
            return max(536, min(mtu, 65535) - IPv4Packet.minimumHeaderLength - TCPHeader.minimumLength)
        case .v6(let dst):
            // IPv6 links carry at least 1280 bytes (RFC 8200 section 5).
            guard let r = fib6View.pointee.lookup(dst) else { return 1280 - IPv6Packet.headerLength - TCPHeader.minimumLength }
            let mtu = r.pointee.kind == .local ? 65535 : ifs[Int(r.pointee.interface)].mtu
            return max(1280, min(mtu, 65535)) - IPv6Packet.headerLength - TCPHeader.minimumLength
        }
    }

    /// MSLT (NetBSD `tcp_established`): the peer is ourselves, on a connected subnet, or beyond a gateway.
    func mslClass(local: IPAddress, remote: IPAddress) -> MSLClass {
        guard tcp.configuration.mslt else { return .classless }
        if local == remote { return .loopback }
        let kind: RouteKind
        switch remote {
        case .v4(let dst):
            guard let r = fibView.pointee.lookupRoute(dst) else { return .remote }
            kind = r.kind
        case .v6(let dst):
            guard let r = fib6View.pointee.lookup(dst) else { return .remote }
            kind = r.pointee.kind
        }
        switch kind {
        case .local: return .loopback
        case .connected, .broadcast: return .local
        case .gateway, .blackhole: return .remote
        }
    }

    // MARK: Data

    /// Queues bytes to send; returns how many fitted (0 when the buffer is
    /// full or the connection cannot send any more).
    public func tcpSend(_ id: TCPSocketID, _ bytes: UnsafeRawBufferPointer) -> Int {
        guard let c = tcp.connection(id), !c.finQueued else { return 0 }
        switch c.state {
        case .synSent, .synReceived, .established, .closeWait: break
        default: return 0
        }
        let n = c.sendRing.append(bytes)
        if n > 0 && c.state.synchronized { settle(c) { c, now, tx in c.output(now: now, tx) } }
        return n
    }

    /// Copies out received bytes; 0 means none now (`tcpInfo`'s state
    /// tells the end of the stream: nothing readable after close-wait).
    public func tcpReceive(_ id: TCPSocketID, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let c = tcp.connection(id) else { return 0 }
        let n = c.read(into: buffer)
        if c.ackNow { settle(c) { c, now, tx in c.output(now: now, tx) } }
        return n
    }

    /// Whether the peer closed its side and everything it sent was read.
    public func tcpAtEnd(_ id: TCPSocketID) -> Bool { tcp.connection(id)?.peerFinished ?? true }

    /// What changed since the last call (and re-arms the `.tcp` event).
    public func tcpTakeNotices(_ id: TCPSocketID) -> TCPNotices {
        guard let c = tcp.connection(id) else { return [.closed] }
        let n = c.notices
        c.notices = []
        c.queuedNotice = false
        return n
    }

    /// Closes our sending side (FIN after the buffered data); reading goes on.
    public func tcpShutdown(_ id: TCPSocketID) {
        guard let c = tcp.connection(id) else { return }
        settle(c) { c, now, tx in c.shutdownSend(now: now, tx) }
    }

    /// Closes the connection and lets go of its handle: buffered data is
    /// still sent and our FIN follows; what arrives later is acknowledged
    /// and discarded. The connection ends on its own (a TIME-WAIT one
    /// becomes a vestige with VTW on).
    public func tcpClose(_ id: TCPSocketID) {
        guard let c = tcp.connection(id) else { return }
        c.released = true
        c.receiveClosed = true
        c.receiveRing.consume(c.receiveRing.count)
        settle(c) { c, now, tx in c.shutdownSend(now: now, tx) }
    }

    /// Runs what the owner asked of `c` inside the stack (its segments
    /// leave when it is done), then settles the connection: notices,
    /// timers, and freeing or a vestige if it ended.
    private func settle(_ c: TCPConnection, _ body: (TCPConnection, Int64, StackTCPTransmitter) -> Void) {
        enter()
        body(c, hot.pointee.now, tcpTransmitter)
        afterActivity(c)
        flush()
    }

    /// Resets the connection (RFC 9293 3.10.5) and frees it.
    public func tcpAbort(_ id: TCPSocketID) {
        guard let c = tcp.connection(id) else { return }
        enter()
        c.abort(now: hot.pointee.now, tcpTransmitter)
        freeConnection(c)
        flush()
    }

    public func tcpInfo(_ id: TCPSocketID) -> TCPInfo? {
        guard let c = tcp.connection(id) else { return nil }
        return TCPInfo(state: c.state, local: c.local, localPort: c.localPort, remote: c.remote, remotePort: c.remotePort,
                       mslClass: c.mslClass, smoothedRTT: c.srtt, rto: c.rto, congestionWindow: c.cwnd, sendMSS: c.mss,
                       sendWindow: c.sndWnd, unacknowledged: c.outstanding, readable: c.receiveRing.count,
                       writable: c.sendRing.free, sack: c.sackPermitted, timestamps: c.timestamps,
                       windowScale: (c.sndScale, c.rcvScale), counters: c.counters, closeReason: c.closeReason)
    }

    /// The stack's TCP counters, with the tables' current sizes.
    public var tcpStatistics: TCPStatistics {
        var s = tcp.statistics
        s.connections = tcp.byKey.count
        s.synCacheEntries = tcp.synCache.count
        s.vestiges = tcp.vestiges4.count + tcp.vestiges6.count
        s.timeWaitConnections = tcp.connections.reduce(0) { $0 + ($1?.state == .timeWait ? 1 : 0) }
        // Those of connections gone, and of the live ones.
        s.retransmits = tcp.connections.reduce(s.retransmits) { $0 &+ ($1?.counters.retransmits ?? 0) }
        s.vestige4 = tcp.vestiges4.statistics
        s.vestige6 = tcp.vestiges6.statistics
        return s
    }

    /// Changes MSL, MSLT and VTW settings at run time (a reload). Turning
    /// MSLT on or off lays the vestige pools out again, dropping every vestige.
    public func setTCPTimeWait(mslLoopback: Interval, mslLocal: Interval, mslRemote: Interval, mslt: Bool, vtw: Bool) {
        tcp.configuration.mslLoopback = mslLoopback
        tcp.configuration.mslLocal = mslLocal
        tcp.configuration.mslRemote = mslRemote
        tcp.configuration.mslt = mslt
        tcp.configuration.vtw = vtw
        tcp.vestiges4.setMSLT(mslt)
        tcp.vestiges6.setMSLT(mslt)
    }

    // MARK: Lifecycle

    /// After a connection did something: its owner hears of it, its
    /// timers are scheduled, and one that ended (or reached TIME-WAIT with
    /// no owner, under VTW) leaves the table.
    func afterActivity(_ c: TCPConnection) {
        if c.state == .closed && c.mslClassPending {
            c.mslClassPending = false  // never synchronized: a failed open, counted once
            tcp.statistics.failedOpens &+= 1
        }
        if c.mslClassPending && c.state.synchronized {
            c.mslClassPending = false
            c.mslClass = mslClass(local: c.local, remote: c.remote)
            c.msl = tcp.configuration.msl(c.mslClass)
        }
        if c.state == .timeWait && !c.ringsReleased {
            c.ringsReleased = true
            if c.sendRing.count == 0 { c.sendRing.release() }
            if c.receiveRing.count == 0 && c.outOfOrder.isEmpty { c.receiveRing.release() }
        }
        if c.released {
            if c.state == .closed { return freeConnection(c) }
            if c.state == .timeWait && tcp.configuration.vtw { return becomeVestige(c) }
        } else if !c.notices.isEmpty && !c.queuedNotice {
            c.queuedNotice = true
            report(.tcp(tcp.id(c.slot)))
        }
        tcp.schedule(c.nextDeadline)
    }

    func freeConnection(_ c: TCPConnection) {
        guard c.slot >= 0, tcp.connections[c.slot] === c else { return }
        if c.state != .closed { c.closeConnection(.aborted) }
        tcp.statistics.retransmits &+= c.counters.retransmits
        tcp.byKey[TCPKey(local: c.local, remote: c.remote, localPort: c.localPort, remotePort: c.remotePort)] = nil
        if let l = c.listener, l < tcp.listeners.count, tcp.listeners[l] != nil {
            tcp.listeners[l]!.acceptQueue.removeAll { $0 == c.slot }
        }
        tcp.connections[c.slot] = nil
        tcp.generations[c.slot] &+= 1
        tcp.freeSlots.append(c.slot)
        c.slot = -1
    }

    /// VTW: the connection's four-tuple and sequence state go to a
    /// vestige; the connection itself is freed.
    func becomeVestige(_ c: TCPConnection) {
        let expire = tcp.vestigeClock(c.timeWaitDeadline)
        var flags: UInt8 = c.timestamps ? Vestige<UInt32>.timestamps : 0
        flags |= c.mslClass.rawValue
        switch (c.local, c.remote) {
        case (.v4(let l), .v4(let r)):
            tcp.vestiges4.insert(Vestige(localAddress: l.rawValue, remoteAddress: r.rawValue, localPort: c.localPort,
                                         remotePort: c.remotePort, rcvNxt: c.rcvNxt, sndNxt: c.sndNxt, tsRecent: c.tsRecent,
                                         expire: 0, window: c.advertise(), flags: flags),
                                 class: c.mslClass, expire: expire)
        case (.v6(let l), .v6(let r)):
            tcp.vestiges6.insert(Vestige(localAddress: l, remoteAddress: r, localPort: c.localPort, remotePort: c.remotePort,
                                         rcvNxt: c.rcvNxt, sndNxt: c.sndNxt, tsRecent: c.tsRecent, expire: 0,
                                         window: c.advertise(), flags: flags),
                                 class: c.mslClass, expire: expire)
        default:
            break
        }
        c.timeWaitDeadline = 0
        c.state = .closed
        freeConnection(c)
    }

    // MARK: Timers

    /// When TCP next has work: a connection's or SYN cache entry's timer,
    /// or a vestige's expiry (reaped in 200 ms steps, as NetBSD's callout).
    var tcpDeadline: Int64? {
        var next = tcp.nextTimer == 0 ? Int64.max : tcp.nextTimer
        let clock = tcp.vestigeClock(hot.pointee.now)
        func consider(_ e: UInt32?) {
            guard let e else { return }
            let ms = Int64(Int32(bitPattern: e &- clock))
            let at = hot.pointee.now + max(0, ms) * 1_000_000
            next = min(next, (at / 200_000_000 + 1) * 200_000_000)
        }
        consider(tcp.vestiges4.nextExpiry(now: clock))
        consider(tcp.vestiges6.nextExpiry(now: clock))
        return next == .max ? nil : next
    }

    /// Runs the due timers of every connection and the SYN cache, and lets expired vestiges go.
    func tcpTimers() {
        let now = hot.pointee.now
        let clock = tcp.vestigeClock(now)
        tcp.vestiges4.expire(now: clock)
        tcp.vestiges6.expire(now: clock)
        guard tcp.nextTimer != 0 && now >= tcp.nextTimer else { return }
        tcp.nextTimer = 0
        let tx = tcpTransmitter
        for slot in 0..<tcp.connections.count {
            guard let c = tcp.connections[slot] else { continue }
            let due = c.nextDeadline
            if due != 0 && due <= now {
                c.timers(now: now, tx)
                afterActivity(c)
            } else {
                tcp.schedule(due)
            }
        }
        synCacheTimers(now: now)
    }

    // MARK: Segments out

    /// Builds and sends one segment (`repr`, then `length` bytes of `data`
    /// from `offset`). False when no buffer or route took it (counted where it failed).
    func tcpTransmit(from local: IPAddress, to remote: IPAddress, _ repr: TCPRepr, data: ByteRing?, offset: Int,
                     length: Int) -> Bool {
        guard var p = pool.allocate() else { return false }
        let h = repr.headerLength
        pool.setLength(&p, h + length)
        let b = pool.bytes(p)
        repr.emitHeader(into: b)
        if let data, length > 0 { data.copy(from: offset, into: b.slice(h, length)) }
        TCPRepr.finish(b, pseudo: tcpPseudoHeaderSum(source: local, destination: remote, length: h + length))
        func sent() {
            hot.pointee.counters.originated &+= 1
            tcp.statistics.segmentsSent &+= 1
            if repr.flags & TCPHeader.flagRST != 0 { tcp.statistics.resetsSent &+= 1 }
        }
        switch (local, remote) {
        case (.v4(let src), .v4(let dst)):
            guard pool.prepend(&p, IPv4Packet.minimumHeaderLength) else {
                drop(p, .headroomExhausted, side: .output)
                return false
            }
            IPv4Repr(source: src, destination: dst, proto: .tcp, payloadLength: h + length, ttl: configuration.defaultTTL, tos: 0,
                     identification: nextIPID(), dontFragment: true)
                .emit(into: pool.bytes(p))
            sent()
            do { try outputLocal(p) } catch { return false }
            return true
        case (.v6(let src), .v6(let dst)):
            guard pool.prepend(&p, IPv6Packet.headerLength) else {
                drop(p, .headroomExhausted, side: .output)
                return false
            }
            IPv6Repr(source: src, destination: dst, nextHeader: .tcp, payloadLength: h + length, hopLimit: configuration.defaultTTL,
                     trafficClass: 0, flowLabel: 0)
                .emit(into: pool.bytes(p))
            sent()
            return outputLocal6(p)
        default:
            drop(p, .noRoute, side: .output)
            return false
        }
    }
}
