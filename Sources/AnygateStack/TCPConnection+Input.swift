import AnygateWire

extension TCPConnection {
    /// Processes one segment for this connection (RFC 9293 section 3.10.7),
    /// then sends what it allows. Returns whether the segment was taken
    /// (false: dropped as unacceptable; an ACK may have answered it).
    @discardableResult
    func input<T: TCPTransmitter>(_ seg: TCPSegment, now: Int64, _ tx: T) -> Bool {
        counters.segmentsReceived &+= 1
        let taken: Bool
        switch state {
        case .closed:
            taken = false
        case .synSent:
            taken = synSentInput(seg, now: now, tx)
        default:
            taken = synchronizedInput(seg, now: now, tx)
        }
        output(now: now, tx)
        return taken
    }

    /// RFC 9293 3.10.7.3, SYN-SENT.
    private func synSentInput<T: TCPTransmitter>(_ seg: TCPSegment, now: Int64, _ tx: T) -> Bool {
        if seg.ack && (seqLE(seg.acknowledgment, iss) || seqGT(seg.acknowledgment, sndMax)) {
            if !seg.rst { sendReset(sequence: seg.acknowledgment, now: now, tx) }
            return false
        }
        if seg.rst {
            // Only with an acceptable ACK (RFC 5961 section 3.2 for this state).
            if seg.ack { closeConnection(.refused) }
            return seg.ack
        }
        guard seg.syn else { return false }
        irs = seg.sequence
        rcvNxt = seg.sequence &+ 1
        rcvAdv = rcvNxt
        negotiate(seg.options, now: now)
        tsRecent = seg.options.timestamp?.value ?? 0
        sndWnd = Int(seg.window)  // unscaled in a SYN
        maxSndWnd = sndWnd
        sndWl1 = seg.sequence
        sndWl2 = seg.acknowledgment
        lastReceived = now
        if seg.ack {
            acknowledge(seg.acknowledgment, now: now)
            established(now: now)
            ackNow = true
        } else {
            // Simultaneous open: answer with SYN-ACK.
            state = .synReceived
            sndNxt = iss
            sendSYN(now: now, tx)
        }
        return true
    }

    /// Applies the peer's SYN options: the send MSS, window scaling (only
    /// when both offered it), SACK and timestamps.
    func negotiate(_ o: TCPOptions, now: Int64) {
        let peerMSS = Int(o.mss ?? (ipv6 ? 1220 : 536))
        mss = max(64, min(mss, peerMSS))
        if let ws = o.windowScale { sndScale = ws } else { sndScale = 0; rcvScale = 0 }
        sackPermitted = sackPermitted && o.sackPermitted
        timestamps = timestamps && o.timestamp != nil
        if timestamps { mss -= 12 }
        cwnd = settings.initialWindow * mss
    }

    func established(now: Int64) {
        state = .established
        notices.insert([.established, .writable])
        if keepalive { keepaliveDeadline = now + settings.keepaliveIdle }
    }

    /// RFC 9293 3.10.7.4, every state after SYN-SENT.
    private func synchronizedInput<T: TCPTransmitter>(_ seg: TCPSegment, now: Int64, _ tx: T) -> Bool {
        // PAWS (RFC 7323 section 5.3): an old timestamp marks an old duplicate.
        if timestamps, !seg.rst, let ts = seg.options.timestamp, seqLT(ts.value, tsRecent) {
            ackNow = true
            return false
        }
        // Step 1: is it in the window?
        guard acceptable(seg) else {
            if !seg.rst { ackNow = true }
            return false
        }
        // Step 2: RST (RFC 5961 section 3.2: exact sequence resets, the rest of the window gets a challenge).
        if seg.rst {
            if seg.sequence == rcvNxt {
                closeConnection(state == .synReceived ? .refused : .reset)
            } else {
                challenge(now: now, tx)
            }
            return true
        }
        // Step 4: a SYN in a synchronized state gets a challenge ACK (RFC 5961 section 4.2).
        if seg.syn && state != .synReceived {
            challenge(now: now, tx)
            return false
        }
        // Step 5: ACK.
        guard seg.ack else { return false }
        lastReceived = now
        if keepalive { keepaliveDeadline = now + settings.keepaliveIdle; keepaliveProbesSent = 0 }
        if let ts = seg.options.timestamp, seqLE(seg.sequence, lastACKSent) { tsRecent = ts.value }
        if state == .synReceived {
            guard seqLT(sndUna, seg.acknowledgment) && seqLE(seg.acknowledgment, sndMax) else {
                sendReset(sequence: seg.acknowledgment, now: now, tx)
                return false
            }
            established(now: now)
            sndWnd = Int(seg.window) << Int(sndScale)
            maxSndWnd = max(maxSndWnd, sndWnd)
            sndWl1 = seg.sequence
            sndWl2 = seg.acknowledgment
        }
        // RFC 5961 section 5.2: an ACK for what was never sent, or far behind, is answered, not used.
        if seqGT(seg.acknowledgment, sndMax) {
            ackNow = true
            return false
        }
        if seqLT(seg.acknowledgment, sndUna &- UInt32(truncatingIfNeeded: maxSndWnd)) {
            challenge(now: now, tx)
            return false
        }
        processACK(seg, now: now, tx)
        if state == .closed { return true }
        // Steps 7 and 8: data and FIN.
        switch state {
        case .established, .finWait1, .finWait2:
            if !seg.payload.isEmpty { receiveData(seg, now: now) }
            if seg.fin { receiveFIN(at: seg.sequence &+ UInt32(seg.payload.count), now: now) }
        case .closeWait, .closing, .lastAck:
            break  // the peer's FIN came already: anything more is a duplicate
        case .timeWait:
            if seg.fin {
                // A retransmitted FIN: ACK it and restart the 2·MSL timer.
                timeWaitDeadline = now + 2 * msl
                ackNow = true
            }
        default:
            break
        }
        return true
    }

    /// RFC 9293's segment acceptance test (section 3.10.7.4, the table of
    /// four cases).
    func acceptable(_ seg: TCPSegment) -> Bool {
        let wnd = max(receiveWindow, seqDistance(rcvNxt, rcvAdv))
        let len = seg.length
        let s = seg.sequence
        if len == 0 {
            return wnd == 0 ? s == rcvNxt : seqLE(rcvNxt, s) && seqLT(s, rcvNxt &+ UInt32(wnd))
        }
        guard wnd > 0 else { return false }
        let last = s &+ UInt32(len - 1)
        return (seqLE(rcvNxt, s) && seqLT(s, rcvNxt &+ UInt32(wnd)))
            || (seqLE(rcvNxt, last) && seqLT(last, rcvNxt &+ UInt32(wnd)))
    }

    /// A challenge ACK (RFC 5961): the stack rate-limits them as a whole.
    func challenge<T: TCPTransmitter>(now: Int64, _ tx: T) {
        guard tx.mayChallenge(now: now) else { return }
        counters.challengeACKs &+= 1
        sendACK(now: now, tx)
    }
}
