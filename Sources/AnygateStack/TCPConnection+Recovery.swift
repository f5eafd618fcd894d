import AnygateWire

extension TCPConnection {
    // MARK: SACK scoreboard (RFC 2018, RFC 6675)

    /// Adds the segment's SACK blocks that lie in [SND.UNA, SND.MAX);
    /// returns whether any of them was news.
    func updateScoreboard(_ o: TCPOptions) -> Bool {
        var news = false
        for k in 0..<o.sackCount {
            var b = o.sack(k)
            // A block that is not a sane range of what we sent is ignored (D-SACK below SND.UNA included).
            guard seqLT(b.start, b.end), seqLE(b.end, sndMax), seqGT(b.end, sndUna) else { continue }
            if seqLT(b.start, sndUna) { b.start = sndUna }
            news = insertSACKed(b) || news
        }
        return news
    }

    private func insertSACKed(_ block: TCPSACKBlock) -> Bool {
        var b = block
        var k = 0
        var covered = false
        while k < scoreboard.count {
            let r = scoreboard[k]
            if seqLE(r.start, b.start) && seqGE(r.end, b.end) { covered = true; break }
            if seqLE(r.start, b.end) && seqLE(b.start, r.end) {
                if seqLT(r.start, b.start) { b.start = r.start }
                if seqGT(r.end, b.end) { b.end = r.end }
                scoreboard.remove(at: k)
            } else {
                k += 1
            }
        }
        if covered { return false }
        let at = scoreboard.firstIndex { seqGT($0.start, b.start) } ?? scoreboard.count
        scoreboard.insert(b, at: at)
        // Bounded: the lowest ranges matter most for recovery; forget the highest.
        if scoreboard.count > TCPConnection.maxScoreboard { scoreboard.removeLast() }
        return true
    }

    /// Bytes the peer holds above SND.UNA (for a peer without SACK, one
    /// segment per duplicate ACK, as RFC 6582's window inflation counts them).
    var sackedBytes: Int {
        guard sackPermitted else { return min(dupACKs * mss, outstanding) }
        var n = 0
        for r in scoreboard { n += seqDistance(r.start, r.end) }
        return n
    }

    /// The highest SACKed sequence (SND.UNA when none).
    var highestSACKed: UInt32 { scoreboard.last?.end ?? sndUna }

    /// RFC 6675's pipe: bytes believed in the network. Holes below the
    /// highest SACKed byte count as lost until retransmitted (a
    /// simplification of IsLost that treats any SACKed byte above as proof).
    var pipe: Int {
        var lostLeft = 0
        if sackPermitted {
            var from = sndUna
            for r in scoreboard {
                lostLeft += notRetransmitted(from, r.start)
                from = r.end
            }
        } else if inRecovery {
            lostLeft = notRetransmitted(sndUna, sndUna &+ UInt32(min(mss, outstanding)))
        }
        return max(0, outstanding - sackedBytes - lostLeft)
    }

    private func notRetransmitted(_ a: UInt32, _ b: UInt32) -> Int {
        let start = seqGT(highRetransmitted, a) ? highRetransmitted : a
        return max(0, seqDistance(start, b))
    }

    /// RFC 6675 NextSeg rule 1: the first lost byte not yet retransmitted,
    /// and how much of its hole fits in a segment.
    func nextHole() -> (UInt32, Int)? {
        guard sackPermitted else {
            // Without SACK only the first segment is known lost (RFC 6582: again after each partial ACK).
            let len = min(mss, outstanding, sendRing.count)
            return seqLE(highRetransmitted, sndUna) && len > 0 ? (sndUna, len) : nil
        }
        var from = sndUna
        for r in scoreboard {
            let start = seqGT(highRetransmitted, from) ? highRetransmitted : from
            if seqLT(start, r.start) { return (start, min(mss, seqDistance(start, r.start))) }
            from = r.end
        }
        return nil
    }

    // MARK: Congestion control (RFC 5681 with RFC 3465 byte counting; RFC 6582 and 6675 recovery)

    func enterRecovery(now: Int64) {
        inRecovery = true
        counters.fastRecoveries &+= 1
        recoveryPoint = sndMax
        ssthresh = max(outstanding / 2, 2 * mss)
        cwnd = ssthresh
        highRetransmitted = sndUna
        timing = false  // what follows is retransmitted (Karn)
    }

    func congestionOnACK(ack: UInt32, now: Int64) {
        let ackedBytes = mss  // per ACK, at most one segment's worth in avoidance (RFC 5681 3.1)
        dupACKs = 0
        if inRecovery {
            if seqGE(ack, recoveryPoint) {
                inRecovery = false
                cwnd = max(min(ssthresh, outstanding + mss), 2 * mss)
            }
            return
        }
        if cwnd < ssthresh {
            cwnd += min(ackedBytes * 2, 2 * mss)  // slow start, L = 2 (RFC 3465)
        } else {
            bytesAckedInAvoidance += ackedBytes
            if bytesAckedInAvoidance >= cwnd {
                bytesAckedInAvoidance -= cwnd
                cwnd += mss
            }
        }
        cwnd = min(cwnd, sendRing.capacity * 2)
    }

    // MARK: Timers

    /// Runs this connection's due timers.
    func timers<T: TCPTransmitter>(now: Int64, _ tx: T) {
        if timeWaitDeadline != 0 && now >= timeWaitDeadline {
            timeWaitDeadline = 0
            closeConnection(.normal)
            return
        }
        if retransmitDeadline != 0 && now >= retransmitDeadline { retransmitTimeout(now: now, tx) }
        if state == .closed { return }
        if persistDeadline != 0 && now >= persistDeadline {
            persistDeadline = 0
            let unsent = sendRing.count - seqDistance(sndUna, sndNxt)
            let room = seqDistance(sndNxt, sndUna &+ UInt32(truncatingIfNeeded: sndWnd))
            if unsent > 0 && room > 0 {
                // Into a small open window, as much as fits (the override timeout).
                let len = min(room, unsent, mss)
                if sendData(from: sndNxt, length: len, now: now, tx) {
                    sndNxt = sndNxt &+ UInt32(len)
                    if seqGT(sndNxt, sndMax) { sndMax = sndNxt }
                    retransmitDeadline = now + rto
                }
            } else if unsent > 0 {
                // A closed window is probed (RFC 9293 3.8.6.1) with a segment
                // just below SND.UNA, which the peer answers with its window;
                // probing backs off and gives up only if nothing answers.
                retries += 1
                guard retries <= settings.dataRetries else { return closeConnection(.timedOut) }
                sendACK(now: now, sequence: sndUna &- 1, tx)
                persistDeadline = now + min(rto << min(retries, 6), settings.maximumRTO)
            }
        }
        if keepaliveDeadline != 0 && now >= keepaliveDeadline {
            if keepaliveProbesSent >= settings.keepaliveProbes {
                closeConnection(.timedOut)
                return
            }
            keepaliveProbesSent += 1
            keepaliveDeadline = now + settings.keepaliveInterval
            // SEG.SEQ = SND.NXT - 1 draws an ACK from a live peer (RFC 9293 3.8.4).
            let repr = TCPRepr(sourcePort: localPort, destinationPort: remotePort, sequence: sndNxt &- 1,
                               acknowledgment: rcvNxt, flags: TCPHeader.flagACK, window: advertise(),
                               options: segmentOptions(now: now))
            _ = tx.transmit(self, repr, data: nil, offset: 0, length: 0)
        }
        if delayedACKDeadline != 0 && now >= delayedACKDeadline {
            delayedACKDeadline = 0
            ackNow = true
        }
        output(now: now, tx)
    }

    /// RFC 6298 section 5: back off, collapse the window, go back to SND.UNA.
    private func retransmitTimeout<T: TCPTransmitter>(now: Int64, _ tx: T) {
        retransmitDeadline = 0
        counters.timeouts &+= 1
        retries += 1
        rto = min(rto * 2, settings.maximumRTO)
        switch state {
        case .synSent, .synReceived:
            guard retries <= settings.synRetries else { return closeConnection(.timedOut) }
            counters.retransmits &+= 1
            sendSYN(now: now, tx)
            return
        default:
            break
        }
        guard sndUna != sndMax else { return }
        guard retries <= settings.dataRetries else { return closeConnection(.timedOut) }
        ssthresh = max(seqDistance(sndUna, sndMax) / 2, 2 * mss)
        cwnd = mss
        inRecovery = false
        dupACKs = 0
        scoreboard.removeAll(keepingCapacity: true)
        sndNxt = sndUna
        highRetransmitted = sndUna
        timing = false
        retransmitDeadline = now + rto
        output(now: now, tx)
    }
}
