import AnygateWire

extension Stack {
    // MARK: Demultiplexing

    /// A TCP segment addressed to one of our IPv4 addresses (see below).
    func tcpInput(_ p: PacketHandle, ip: IPv4Packet, rx: InterfaceIndex) -> Bool {
        tcpInput(p, local: .v4(ip.destination), remote: .v4(ip.source), segment: ip.payload, rx: rx)
    }

    /// A TCP segment (`segment`, the bytes after the IP header or header
    /// chain) addressed to one of our addresses: to its connection, else its
    /// vestige (consulted only after the connection lookup missed), else a
    /// listener. Returns false when none takes it (the caller answers with a
    /// RST, or a twin takes it). Consumes the packet when it returns true.
    func tcpInput(_ p: PacketHandle, local: IPAddress, remote: IPAddress, segment bytes: UnsafeMutableRawBufferPointer,
                  rx: InterfaceIndex) -> Bool {
        // The ports say whose it is; only then is the rest checked, so what
        // no one here takes goes on (to a twin, or to be refused) untouched.
        guard bytes.count >= 4 else { return false }
        let key = TCPKey(local: local, remote: remote, localPort: bytes.be16(TCPHeader.Field.destinationPort),
                         remotePort: bytes.be16(TCPHeader.Field.sourcePort))
        let connection = tcp.byKey[key].flatMap { tcp.connections[$0] }
        let vestige = connection == nil ? vestigeLookup(key) : nil
        let listener = connection == nil ? listener(for: key) : nil
        guard connection != nil || vestige != nil || listener != nil else { return false }
        guard let h = try? TCPHeader(validating: bytes) else {
            drop(p, .tcpMalformed, rx: rx)
            return true
        }
        if p.offload == 0 {
            guard TCPRepr.verify(bytes, pseudo: tcpPseudoHeaderSum(source: remote, destination: local, length: bytes.count)) else {
                drop(p, .tcpBadChecksum, rx: rx)
                return true
            }
        }
        tcp.statistics.segmentsReceived &+= 1
        let seg = TCPSegment(sequence: h.sequence, acknowledgment: h.acknowledgment, flags: h.flags, window: h.window,
                             options: h.options, payload: UnsafeRawBufferPointer(h.payload))
        if seg.rst { tcp.statistics.resetsReceived &+= 1 }
        let now = hot.pointee.now
        if let c = connection, c.state == .timeWait, c.released, seg.syn && !seg.ack,
           Stack.isNewSYN(seg, timestamps: c.timestamps, tsRecent: c.tsRecent, rcvNxt: c.rcvNxt), let l = self.listener(for: key) {
            // RFC 6191 on a full TIME-WAIT connection (VTW off), as on a vestige below.
            freeConnection(c)
            tcp.statistics.vestigesReopened &+= 1
            listenerInput(l, key: key, seg, p, rx: rx, now: now)
            return true
        }
        if let c = connection {
            let taken = c.input(seg, now: now, tcpTransmitter)
            afterActivity(c)
            if taken { consumed(p) } else { drop(p, .tcpOutOfWindow, rx: rx) }
            return true
        }
        if let v = vestige {
            if vestigeInput(v, key: key, seg, now: now) {
                consumed(p)
                return true
            }
            // RFC 6191: a SYN that is provably new reopens the four-tuple (below, to a listener).
        }
        guard let l = listener else {
            tcpRefuse(p, local: local, remote: remote, segment: bytes, rx: rx)
            return true
        }
        listenerInput(l, key: key, seg, p, rx: rx, now: now)
        return true
    }

    private func consumed(_ p: PacketHandle) {
        hot.pointee.counters.consumed &+= 1
        pool.free(p)
    }

    func listener(for key: TCPKey) -> Int? {
        var wildcard: Int? = nil
        for (k, l) in tcp.listeners.enumerated() {
            guard let l, l.port == key.localPort, l.address.isIPv6 == key.local.isIPv6 else { continue }
            if l.address == key.local { return k }
            if l.address.isUnspecified { wildcard = k }
        }
        return wildcard
    }

    /// The vestige of `key`'s four-tuple, in the table of its family.
    func vestigeLookup(_ key: TCPKey) -> Int? {
        switch (key.local, key.remote) {
        case (.v4(let l), .v4(let r)):
            tcp.vestiges4.lookup(local: l.rawValue, remote: r.rawValue, localPort: key.localPort, remotePort: key.remotePort)
        case (.v6(let l), .v6(let r)):
            tcp.vestiges6.lookup(local: l, remote: r, localPort: key.localPort, remotePort: key.remotePort)
        default:
            nil
        }
    }

    /// The sum of TCP's pseudo-header over either family.
    func tcpPseudoHeaderSum(source: IPAddress, destination: IPAddress, length: Int) -> UInt32 {
        switch (source, destination) {
        case (.v6(let s), .v6(let d)): InternetChecksum.pseudoHeaderSum(source: s, destination: d, nextHeader: .tcp, length: length)
        case (.v4(let s), .v4(let d)): InternetChecksum.pseudoHeaderSum(source: s, destination: d, protocol: .tcp, length: length)
        default: 0
        }
    }

    /// No connection, vestige or listener: a RST (RFC 9293 3.10.7.1), never for a RST.
    func tcpRefuse(_ p: PacketHandle, ip: IPv4Packet, rx: InterfaceIndex) {
        tcpRefuse(p, local: .v4(ip.destination), remote: .v4(ip.source), segment: ip.payload, rx: rx)
    }

    /// The same for a segment of either family.
    func tcpRefuse(_ p: PacketHandle, local: IPAddress, remote: IPAddress, segment: UnsafeMutableRawBufferPointer,
                   rx: InterfaceIndex) {
        guard let h = try? TCPHeader(validating: segment) else { return drop(p, .tcpMalformed, rx: rx) }
        if h.flags & TCPHeader.flagRST == 0 {
            let key = TCPKey(local: local, remote: remote, localPort: h.destinationPort, remotePort: h.sourcePort)
            let seg = TCPSegment(sequence: h.sequence, acknowledgment: h.acknowledgment, flags: h.flags, window: h.window,
                                 options: TCPOptions(), payload: UnsafeRawBufferPointer(h.payload))
            sendReset(for: seg, key: key)
        }
        drop(p, .tcpNoListener, rx: rx)
    }

    /// The reset answering `seg` (RFC 9293 3.10.7.1): at its ACK, or acknowledging it.
    func sendReset(for seg: TCPSegment, key: TCPKey) {
        let repr: TCPRepr
        if seg.ack {
            repr = TCPRepr(sourcePort: key.localPort, destinationPort: key.remotePort, sequence: seg.acknowledgment,
                           acknowledgment: 0, flags: TCPHeader.flagRST, window: 0)
        } else {
            repr = TCPRepr(sourcePort: key.localPort, destinationPort: key.remotePort, sequence: 0,
                           acknowledgment: seg.sequence &+ UInt32(seg.length), flags: TCPHeader.flagRST | TCPHeader.flagACK,
                           window: 0)
        }
        _ = tcpTransmit(from: key.local, to: key.remote, repr, data: nil, offset: 0, length: 0)
    }

    // MARK: Vestiges (NetBSD tcp_vtw_input)

    /// RFC 6191: a SYN on a TIME-WAIT four-tuple is provably new when its
    /// timestamp is newer than the last one seen or, without timestamps,
    /// its sequence is past RCV.NXT.
    static func isNewSYN(_ seg: TCPSegment, timestamps: Bool, tsRecent: UInt32, rcvNxt: UInt32) -> Bool {
        if let ts = seg.options.timestamp, timestamps { return seqGT(ts.value, tsRecent) }
        return seqGT(seg.sequence, rcvNxt)
    }

    /// Answers a segment from the vestige of its four-tuple. Returns false
    /// only for a SYN that RFC 6191 lets reopen the four-tuple (the vestige
    /// is gone then, and the SYN goes on to a listener).
    func vestigeInput(_ i: Int, key: TCPKey, _ seg: TCPSegment, now: Int64) -> Bool {
        tcp.statistics.vestigeSegments &+= 1
        return key.local.isIPv6 ? vestigeInput(tcp.vestiges6, i, key: key, seg, now: now)
            : vestigeInput(tcp.vestiges4, i, key: key, seg, now: now)
    }

    private func vestigeInput<A>(_ table: Vestiges<A>, _ i: Int, key: TCPKey, _ seg: TCPSegment, now: Int64) -> Bool {
        let v = table.entries[i]
        func answer(_ flags: UInt8, sequence: UInt32, acknowledgment: UInt32) {
            var o = TCPOptions()
            if v.flags & Vestige<A>.timestamps != 0 {
                let off = tcp.timestampOffset(key)
                o.timestamp = TCPTimestamp(value: UInt32(truncatingIfNeeded: now / 1_000_000) &+ off, echo: v.tsRecent)
            }
            let repr = TCPRepr(sourcePort: key.localPort, destinationPort: key.remotePort, sequence: sequence,
                               acknowledgment: acknowledgment, flags: flags, window: v.window, options: o)
            _ = tcpTransmit(from: key.local, to: key.remote, repr, data: nil, offset: 0, length: 0)
        }
        if seg.rst {
            // Exactly at RCV.NXT it ends the vestige; elsewhere a (rate-limited) challenge ACK (RFC 5961).
            if seg.sequence == v.rcvNxt {
                table.remove(i)
            } else if tcp.mayChallenge(now: now) {
                answer(TCPHeader.flagACK, sequence: v.sndNxt, acknowledgment: v.rcvNxt)
            }
            return true
        }
        if seg.syn && !seg.ack {
            // RFC 6191: a SYN whose timestamp is newer than the last one seen,
            // or (without timestamps) whose sequence is past RCV.NXT, is a new
            // connection; a listener may take it. Anything else gets a RST, as NetBSD answers.
            let newer = Stack.isNewSYN(seg, timestamps: v.flags & Vestige<A>.timestamps != 0, tsRecent: v.tsRecent, rcvNxt: v.rcvNxt)
            if newer && listener(for: key) != nil {
                table.remove(i)
                tcp.statistics.vestigesReopened &+= 1
                return false
            }
            answer(TCPHeader.flagRST, sequence: v.sndNxt, acknowledgment: 0)
            return true
        }
        guard seg.ack else { return true }  // no ACK bit: dropped (RFC 9293 step 5)
        if !seg.payload.isEmpty {
            if seqLE(seg.sequence &+ UInt32(seg.payload.count), v.rcvNxt) {
                // Old data again: our ACK got lost.
                answer(TCPHeader.flagACK, sequence: v.sndNxt, acknowledgment: v.rcvNxt)
            } else {
                // New data after the peer's FIN: nobody can take it.
                answer(TCPHeader.flagRST, sequence: v.sndNxt, acknowledgment: 0)
                table.remove(i)
            }
            return true
        }
        if seg.fin {
            // A retransmitted FIN: our last ACK was lost. ACK it and start TIME-WAIT again.
            answer(TCPHeader.flagACK, sequence: v.sndNxt, acknowledgment: v.rcvNxt)
            let msl = tcp.configuration.msl(v.mslClass)
            table.restart(i, expire: tcp.vestigeClock(now + 2 * msl))
        }
        // A bare ACK needs no answer.
        return true
    }

    // MARK: Listeners, the SYN cache and cookies (RFC 4987)

    func listenerInput(_ k: Int, key: TCPKey, _ seg: TCPSegment, _ p: PacketHandle, rx: InterfaceIndex, now: Int64) {
        if seg.rst { return drop(p, .tcpIgnored, rx: rx) }
        if seg.syn && !seg.ack {
            guard allowed(key.remote, by: tcp.listeners[k]!.allow) else {
                tcp.listeners[k]!.counters.refused &+= 1
                return drop(p, .tcpSourceNotAllowed, rx: rx)
            }
            if var e = tcp.synCache[key] {
                // The SYN again: our SYN-ACK was lost.
                sendSynAck(key, iss: e.iss, irs: e.irs, options: e.options, cookie: false, now: now)
                e.retransmits += 1
                tcp.synCache[key] = e
                return consumed(p)
            }
            if tcp.synCache.count < tcp.configuration.synCacheSize {
                let iss = tcp.initialSequence(key, now: now)
                tcp.synCache[key] = SynCacheEntry(listener: k, iss: iss, irs: seg.sequence, options: seg.options,
                                                  window: seg.window, created: now, nextRetransmit: now + 1_000_000_000,
                                                  retransmits: 0)
                tcp.statistics.synCacheAdded &+= 1
                tcp.schedule(now + 1_000_000_000)
                sendSynAck(key, iss: iss, irs: seg.sequence, options: seg.options, cookie: false, now: now)
            } else {
                // The cache is full (a flood, or a busy listener): the state goes into the sequence number.
                tcp.statistics.cookiesSent &+= 1
                sendSynAck(key, iss: cookie(key, mssIndex: Stack.cookieMSSIndex(seg.options.mss), now: now),
                           irs: seg.sequence, options: seg.options, cookie: true, now: now)
            }
            return consumed(p)
        }
        guard seg.ack && !seg.syn else { return drop(p, .tcpIgnored, rx: rx) }
        // The handshake's third segment: from the cache, or a cookie.
        var iss: UInt32, irs: UInt32, synOptions: TCPOptions, synWindow: UInt16
        if let e = tcp.synCache[key], e.listener == k, seg.acknowledgment == e.iss &+ 1 {
            (iss, irs, synOptions, synWindow) = (e.iss, e.irs, e.options, e.window)
        } else if tcp.synCache[key] == nil, let o = validCookie(key, seg, now: now) {
            tcp.statistics.cookiesAccepted &+= 1
            (iss, irs, synOptions, synWindow) = (seg.acknowledgment &- 1, seg.sequence &- 1, o, seg.window)
        } else {
            tcp.statistics.cookiesRejected &+= 1
            sendReset(for: seg, key: key)
            return drop(p, .tcpBadCookie, rx: rx)
        }
        guard tcp.listeners[k]!.acceptQueue.count < tcp.listeners[k]!.backlog, !tcp.freeSlots.isEmpty else {
            // Full: the ACK is dropped and the peer will send again (the cache entry stays).
            tcp.listeners[k]!.counters.overflows &+= 1
            return drop(p, .tcpListenOverflow, rx: rx)
        }
        tcp.synCache[key] = nil
        guard let c = newConnection(key, iss: iss, state: .synReceived, now: now) else {
            return drop(p, .tcpListenOverflow, rx: rx)
        }
        c.keepalive = tcp.listeners[k]!.keepalive
        c.timestamps = synOptions.timestamp != nil
        c.sackPermitted = synOptions.sackPermitted
        c.irs = irs
        c.rcvNxt = irs &+ 1
        c.rcvAdv = c.rcvNxt
        c.negotiate(synOptions, now: now)
        c.tsRecent = synOptions.timestamp?.value ?? 0
        c.sndUna = iss &+ 1
        c.sndNxt = iss &+ 1
        c.sndMax = iss &+ 1
        c.sndWnd = Int(synWindow)
        c.sndWl1 = irs
        c.sndWl2 = iss
        c.lastACKSent = c.rcvNxt
        c.established(now: now)
        c.listener = k
        tcp.listeners[k]!.acceptQueue.append(c.slot)
        tcp.statistics.passiveOpens &+= 1
        // The ACK may carry data (and updates the window with its scale).
        c.input(seg, now: now, tcpTransmitter)
        afterActivity(c)
        if tcp.listeners[k]!.acceptQueue.count == 1 { report(.tcpAcceptable(TCPListenerID(value: k))) }
        consumed(p)
    }

    func allowed(_ source: IPAddress, by prefixes: [IPPrefix]) -> Bool {
        guard !prefixes.isEmpty else { return true }
        return prefixes.contains { p in
            switch (p, source) {
            case (.v4(let n), .v4(let a)): n.contains(a)
            case (.v6(let n), .v6(let a)): n.contains(a)
            default: false
            }
        }
    }

    /// Our SYN-ACK, with the options the SYN offered. A cookie's carries
    /// the window scale and SACK in the low bits of its timestamp, whose
    /// echo brings them back (the scheme Linux uses), set below the clock
    /// so that later timestamps never go backwards.
    func sendSynAck(_ key: TCPKey, iss: UInt32, irs: UInt32, options syn: TCPOptions, cookie: Bool, now: Int64) {
        var o = TCPOptions()
        let mss = localMSS(to: key.remote)
        o.mss = UInt16(clamping: cookie ? min(mss, Int(Stack.cookieMSS[Stack.cookieMSSIndex(syn.mss)])) : mss)
        let settings = tcp.configuration.settings
        var scale: UInt8 = 0
        while scale < TCPHeader.maxWindowScale && (settings.receiveBuffer >> Int(scale)) > 65535 { scale += 1 }
        if syn.windowScale != nil { o.windowScale = scale }
        o.sackPermitted = syn.sackPermitted
        if let ts = syn.timestamp {
            var value = UInt32(truncatingIfNeeded: now / 1_000_000) &+ tcp.timestampOffset(key)
            if cookie {
                let bits = UInt32(syn.windowScale.map { min($0, 14) } ?? 15) | (syn.sackPermitted ? 0x10 : 0) | 0x20
                value = ((value &- 64) & ~0x3F) | bits
            }
            o.timestamp = TCPTimestamp(value: value, echo: ts.value)
        }
        let window = UInt16(min(settings.receiveBuffer, 65535))
        let repr = TCPRepr(sourcePort: key.localPort, destinationPort: key.remotePort, sequence: iss, acknowledgment: irs &+ 1,
                           flags: TCPHeader.flagSYN | TCPHeader.flagACK, window: window, options: o)
        _ = tcpTransmit(from: key.local, to: key.remote, repr, data: nil, offset: 0, length: 0)
    }

    /// MSS values a cookie can name (3 bits).
    static let cookieMSS: [UInt16] = [536, 1220, 1300, 1360, 1400, 1440, 1452, 1460]

    static func cookieMSSIndex(_ mss: UInt16?) -> Int {
        let m = mss ?? 536
        return cookieMSS.lastIndex { $0 <= m } ?? 0
    }

    /// A cookie (RFC 4987 section 3.6): 24 bits of MAC over the four-tuple
    /// and a 64-second counter, 5 bits of that counter, 3 bits of MSS.
    func cookie(_ key: TCPKey, mssIndex: Int, now: Int64) -> UInt32 {
        let t = UInt64(now / 64_000_000_000)
        return cookie(key, period: t, mssIndex: mssIndex)
    }

    private func cookie(_ key: TCPKey, period t: UInt64, mssIndex: Int) -> UInt32 {
        let mac = tcp.secret.hash(key.local.hashWord ^ (t << 40), key.remote.hashWord,
                                  UInt64(key.localPort) << 32 | UInt64(key.remotePort) << 16 | UInt64(mssIndex) | 0xC00C_0000_0000_0000)
        return UInt32(truncatingIfNeeded: mac) & 0xFFFF_FF00 | UInt32(t & 0x1F) << 3 | UInt32(mssIndex)
    }

    /// The SYN options a valid cookie in `seg`'s acknowledgment stands for,
    /// or nil. Cookies of this 64-second period and the one before are valid.
    func validCookie(_ key: TCPKey, _ seg: TCPSegment, now: Int64) -> TCPOptions? {
        let c = seg.acknowledgment &- 1
        let mssIndex = Int(c & 7)
        let t = UInt64(now / 64_000_000_000)
        guard cookie(key, period: t, mssIndex: mssIndex) == c || cookie(key, period: t &- 1, mssIndex: mssIndex) == c else {
            return nil
        }
        var o = TCPOptions()
        o.mss = Stack.cookieMSS[mssIndex]
        if let ts = seg.options.timestamp, ts.echo & 0x20 != 0 {
            let ws = ts.echo & 0xF
            if ws != 15 { o.windowScale = UInt8(ws) }
            o.sackPermitted = ts.echo & 0x10 != 0
            o.timestamp = TCPTimestamp(value: ts.value, echo: 0)
        }
        return o
    }

    /// SYN-ACKs sent again at 1, 2 and 4 s; entries go after that.
    func synCacheTimers(now: Int64) {
        for (key, var e) in tcp.synCache {
            if now >= e.nextRetransmit {
                guard e.retransmits < 3 else {
                    tcp.synCache[key] = nil
                    tcp.statistics.synCacheExpired &+= 1
                    continue
                }
                e.retransmits += 1
                e.nextRetransmit = now + (1_000_000_000 << Int64(e.retransmits))
                sendSynAck(key, iss: e.iss, irs: e.irs, options: e.options, cookie: false, now: now)
                tcp.synCache[key] = e
            }
            tcp.schedule(e.nextRetransmit)
        }
    }
}
