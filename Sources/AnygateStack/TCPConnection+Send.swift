import AnygateWire

extension TCPConnection {
    // MARK: ACK processing (step 5)

    func processACK<T: TCPTransmitter>(_ seg: TCPSegment, now: Int64, _ tx: T) {
        let ack = seg.acknowledgment
        let newSACK = sackPermitted ? updateScoreboard(seg.options) : false
        let window = Int(seg.window) << Int(sndScale)
        if seqGT(ack, sndUna) {
            acknowledge(ack, now: now)
            congestionOnACK(ack: ack, now: now)
        } else if ack == sndUna && seg.payload.isEmpty && !seg.fin && outstanding > 0
                    && (window == sndWnd || newSACK) {
            // A duplicate ACK (RFC 5681 section 2; with SACK, RFC 6675 section 2).
            dupACKs += 1
            if !inRecovery && (dupACKs >= 3 || sackedBytes >= 3 * mss) { enterRecovery(now: now) }
        }
        // Window update (RFC 9293 3.10.7.4, SND.WL1/WL2).
        if seqLT(sndWl1, seg.sequence) || (sndWl1 == seg.sequence && seqLE(sndWl2, ack)) {
            sndWnd = window
            maxSndWnd = max(maxSndWnd, window)
            sndWl1 = seg.sequence
            sndWl2 = ack
            if sndWnd > 0 { persistDeadline = 0 }
        }
        // A peer that answers our probes with a closed window is alive: probing
        // goes on as long as it answers (RFC 9293 3.8.6.1).
        if window == 0 { retries = 0 }
        // Our FIN acknowledged?
        if finQueued && ack == finSequence &+ 1 {
            switch state {
            case .finWait1: state = .finWait2
            case .closing: enterTimeWait(now: now)
            case .lastAck: closeConnection(.normal)
            default: break
            }
        }
    }

    /// New data acknowledged: the buffer, timers and the RTT sample.
    func acknowledge(_ ack: UInt32, now: Int64) {
        var acked = seqDistance(sndUna, ack)
        if sndUna == iss && !state.synchronized { acked -= 1 }  // our SYN
        let data = min(max(acked, 0), sendRing.count)
        if data > 0 {
            sendRing.consume(data)
            notices.insert(.writable)
        }
        sndUna = ack
        if seqLT(sndNxt, sndUna) { sndNxt = sndUna }
        if seqLT(highRetransmitted, sndUna) { highRetransmitted = sndUna }
        while let f = scoreboard.first, seqLE(f.end, sndUna) { scoreboard.removeFirst() }
        if !scoreboard.isEmpty && seqLT(scoreboard[0].start, sndUna) { scoreboard[0].start = sndUna }
        if timing && seqGT(ack, timedSequence) {
            timing = false
            sampleRTT(now - timedAt)
        }
        retries = 0
        if sndUna == sndMax {
            retransmitDeadline = 0
        } else {
            retransmitDeadline = now + rto
        }
    }

    /// RFC 6298 section 2.
    func sampleRTT(_ r: Int64) {
        let sample = max(r, 1000)
        if rttSamples == 0 {
            srtt = sample
            rttvar = sample / 2
        } else {
            rttvar = (3 * rttvar + abs(srtt - sample)) / 4
            srtt = (7 * srtt + sample) / 8
        }
        rttSamples += 1
        rto = min(max(srtt + max(4 * rttvar, 1_000_000), settings.minimumRTO), settings.maximumRTO)
    }

    // MARK: Sending

    /// Sends what the windows allow: retransmissions in recovery first,
    /// then new data, then our FIN; else an owed ACK.
    func output<T: TCPTransmitter>(now: Int64, _ tx: T) {
        switch state {
        case .closed, .synSent, .synReceived:
            if ackNow && state == .synReceived { sendACK(now: now, tx) }
            return
        case .timeWait:
            if ackNow { sendACK(now: now, tx) }
            return
        default:
            break
        }
        var sent = false
        var budget = 64  // segments per call: the rest waits for the next ACK or timer
        while budget > 0 {
            budget -= 1
            if inRecovery, let (s, len) = nextHole(), pipe + len <= cwnd {
                guard sendData(from: s, length: len, now: now, tx) else { break }
                highRetransmitted = s &+ UInt32(len)
                counters.retransmits &+= 1
                sent = true
                continue
            }
            let dataEnd = sndUna &+ UInt32(truncatingIfNeeded: sendRing.count)
            let unsent = seqDistance(sndNxt, dataEnd)
            let windowLeft = seqDistance(sndNxt, sndUna &+ UInt32(truncatingIfNeeded: sndWnd))
            let congestionLeft = cwnd - (inRecovery ? pipe : outstanding)
            let len = min(mss, unsent, windowLeft, congestionLeft)
            if len <= 0 || (len < mss && len < unsent && len < maxSndWnd / 2) {
                // Nothing more, or a silly window (RFC 9293 3.8.6.2.1): with
                // nothing in flight, the persist timer probes a closed window
                // or, for a small open one, sends what fits (the override timeout).
                if unsent > 0 && outstanding == 0 && persistDeadline == 0 {
                    persistDeadline = now + (sndWnd == 0 ? rto : settings.minimumRTO)
                }
                break
            }
            let retransmit = seqLT(sndNxt, sndMax)
            guard sendData(from: sndNxt, length: len, fin: finQueued && len == unsent, now: now, tx) else { break }
            if retransmit { counters.retransmits &+= 1 } else if !timing {
                timing = true
                timedSequence = sndNxt
                timedAt = now
            }
            sndNxt = sndNxt &+ UInt32(len) &+ (finQueued && len == unsent ? 1 : 0)
            if seqGT(sndNxt, sndMax) { sndMax = sndNxt }
            sent = true
        }
        // A FIN alone, when all data went before it.
        if finQueued && !sent && sndNxt == finSequence {
            if sendData(from: sndNxt, length: 0, fin: true, now: now, tx) {
                sndNxt = sndNxt &+ 1
                if seqGT(sndNxt, sndMax) { sndMax = sndNxt }
                sent = true
            }
        }
        if sent {
            if retransmitDeadline == 0 && sndNxt != sndUna { retransmitDeadline = now + rto }
        } else if ackNow {
            sendACK(now: now, tx)
        }
    }

    /// Sends `length` bytes from sequence `from` (with the owed ACK).
    @discardableResult
    func sendData<T: TCPTransmitter>(from: UInt32, length: Int, fin: Bool = false, now: Int64, _ tx: T) -> Bool {
        var flags = TCPHeader.flagACK
        if fin { flags |= TCPHeader.flagFIN }
        let offset = seqDistance(sndUna, from)
        if length > 0 && offset + length == sendRing.count { flags |= TCPHeader.flagPSH }
        let repr = TCPRepr(sourcePort: localPort, destinationPort: remotePort, sequence: from, acknowledgment: rcvNxt,
                           flags: flags, window: advertise(), options: segmentOptions(now: now))
        guard tx.transmit(self, repr, data: length > 0 ? sendRing : nil, offset: offset, length: length) else { return false }
        sentACK()
        counters.segmentsSent &+= 1
        counters.bytesSent &+= UInt64(length)
        return true
    }

    /// A bare ACK; `sequence` below SND.UNA makes it a window probe the
    /// peer must answer with its current window (as Linux probes).
    func sendACK<T: TCPTransmitter>(now: Int64, sequence: UInt32? = nil, _ tx: T) {
        let repr = TCPRepr(sourcePort: localPort, destinationPort: remotePort, sequence: sequence ?? sndNxt, acknowledgment: rcvNxt,
                           flags: TCPHeader.flagACK, window: advertise(), options: segmentOptions(now: now))
        if tx.transmit(self, repr, data: nil, offset: 0, length: 0) {
            sentACK()
            counters.segmentsSent &+= 1
        }
    }

    private func sentACK() {
        ackNow = false
        unackedSegments = 0
        delayedACKDeadline = 0
        lastACKSent = rcvNxt
    }

    /// Our SYN (active open) or SYN-ACK (simultaneous open), with every option we offer.
    func sendSYN<T: TCPTransmitter>(now: Int64, _ tx: T) {
        var o = TCPOptions()
        o.mss = UInt16(clamping: mss + (timestamps && state.synchronized ? 12 : 0))
        o.windowScale = offeredScale
        o.sackPermitted = sackPermitted
        if timestamps { o.timestamp = TCPTimestamp(value: timestampValue(now: now), echo: tsRecent) }
        let synAck = state == .synReceived
        let repr = TCPRepr(sourcePort: localPort, destinationPort: remotePort, sequence: iss,
                           acknowledgment: synAck ? rcvNxt : 0,
                           flags: TCPHeader.flagSYN | (synAck ? TCPHeader.flagACK : 0), window: advertise(), options: o)
        if tx.transmit(self, repr, data: nil, offset: 0, length: 0) {
            counters.segmentsSent &+= 1
            if synAck { sentACK() }
        }
        sndNxt = iss &+ 1
        if seqGT(sndNxt, sndMax) { sndMax = sndNxt }
        retransmitDeadline = now + rto
    }

    /// A reset for a segment we refuse, at the sequence number it acknowledged.
    func sendReset<T: TCPTransmitter>(sequence: UInt32, now: Int64, _ tx: T) {
        let repr = TCPRepr(sourcePort: localPort, destinationPort: remotePort, sequence: sequence, acknowledgment: 0,
                           flags: TCPHeader.flagRST, window: 0)
        _ = tx.transmit(self, repr, data: nil, offset: 0, length: 0)
    }

    /// Aborts: a RST to the peer (RFC 9293 3.10.5), then closed.
    func abort<T: TCPTransmitter>(now: Int64, _ tx: T) {
        if state.synchronized && state != .timeWait || state == .synReceived {
            let repr = TCPRepr(sourcePort: localPort, destinationPort: remotePort, sequence: sndNxt, acknowledgment: rcvNxt,
                               flags: TCPHeader.flagRST | TCPHeader.flagACK, window: 0)
            _ = tx.transmit(self, repr, data: nil, offset: 0, length: 0)
        }
        closeConnection(.aborted)
    }

    /// The owner closes its sending side: a FIN follows what is buffered.
    func shutdownSend<T: TCPTransmitter>(now: Int64, _ tx: T) {
        guard !finQueued else { return }
        switch state {
        case .synSent:
            closeConnection(.aborted)
            return
        case .synReceived, .established:
            state = .finWait1
        case .closeWait:
            state = .lastAck
        default:
            return
        }
        finQueued = true
        finSequence = sndUna &+ UInt32(truncatingIfNeeded: sendRing.count) &+ (sndUna == iss ? 1 : 0)
        output(now: now, tx)
    }
}
