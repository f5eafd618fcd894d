import AnygateWire

extension TCPConnection {
    /// Step 7 (RFC 9293 3.10.7.4): the segment's data, trimmed to the
    /// window; in order it becomes readable, out of order it is kept for
    /// SACK (RFC 2018) until the gap before it fills.
    func receiveData(_ seg: TCPSegment, now: Int64) {
        var data = seg.payload
        var start = seg.sequence
        if seg.syn { start = start &+ 1 }
        // Already received: trim the front.
        let behind = seqDistance(start, rcvNxt)
        if behind > 0 {
            guard behind < data.count else { ackNow = true; return }
            data = UnsafeRawBufferPointer(rebasing: data[behind...])
            start = rcvNxt
        }
        let offset = seqDistance(rcvNxt, start)
        let room = receiveWindow - offset
        guard room > 0 else { ackNow = true; return }
        if data.count > room { data = UnsafeRawBufferPointer(rebasing: data[..<room]) }
        counters.bytesReceived &+= UInt64(data.count)
        if receiveClosed {
            // Nobody reads: the bytes are acknowledged and let go.
            if offset == 0 { rcvNxt = rcvNxt &+ UInt32(data.count) }
            ackNow = true
            return
        }
        if offset == 0 {
            receiveRing.write(at: receiveRing.count, data)
            receiveRing.extend(data.count)
            rcvNxt = rcvNxt &+ UInt32(data.count)
            let filled = !outOfOrder.isEmpty
            absorbOutOfOrder()
            notices.insert(.readable)
            unackedSegments += 1
            if filled || unackedSegments >= 2 || seg.fin {
                ackNow = true
            } else if delayedACKDeadline == 0 {
                delayedACKDeadline = now + settings.delayedACK
            }
        } else {
            guard keepOutOfOrder(start, data) else { ackNow = true; return }
            counters.outOfOrder &+= 1
            ackNow = true  // a duplicate ACK with SACK blocks tells the sender at once
        }
    }

    /// Stores data past a gap; false when the list of ranges is full and
    /// the data joins none of them.
    private func keepOutOfOrder(_ start: UInt32, _ data: UnsafeRawBufferPointer) -> Bool {
        var block = TCPSACKBlock(start: start, end: start &+ UInt32(data.count))
        // Merge with every range it touches.
        var k = 0
        var merged = false
        while k < outOfOrder.count {
            let r = outOfOrder[k]
            if seqLE(r.start, block.end) && seqLE(block.start, r.end) {
                block.start = seqLT(r.start, block.start) ? r.start : block.start
                block.end = seqGT(r.end, block.end) ? r.end : block.end
                outOfOrder.remove(at: k)
                merged = true
            } else {
                k += 1
            }
        }
        if !merged && outOfOrder.count >= TCPConnection.maxOutOfOrder { return false }
        receiveRing.write(at: receiveRing.count + seqDistance(rcvNxt, start), data)
        let at = outOfOrder.firstIndex { seqGT($0.start, block.start) } ?? outOfOrder.count
        outOfOrder.insert(block, at: at)
        latestOutOfOrder = block
        return true
    }

    /// Makes the held ranges that now follow `rcvNxt` readable.
    private func absorbOutOfOrder() {
        while let first = outOfOrder.first, seqLE(first.start, rcvNxt) {
            outOfOrder.removeFirst()
            if seqGT(first.end, rcvNxt) {
                receiveRing.extend(seqDistance(rcvNxt, first.end))
                rcvNxt = first.end
            }
            if latestOutOfOrder == first { latestOutOfOrder = nil }
        }
        if let p = pendingFIN, p == rcvNxt {
            pendingFIN = nil
            finReached()
        }
    }

    /// Step 8: the peer's FIN at sequence `at`.
    func receiveFIN(at: UInt32, now: Int64) {
        ackNow = true
        guard at == rcvNxt else {
            if seqGT(at, rcvNxt) { pendingFIN = at }
            return
        }
        finReached(now: now)
    }

    private func finReached(now: Int64? = nil) {
        rcvNxt = rcvNxt &+ 1
        ackNow = true
        notices.insert(.readable)  // end of stream
        switch state {
        case .synReceived, .established:
            state = .closeWait
        case .finWait1:
            // Our FIN not yet acknowledged: both closing at once.
            state = .closing
        case .finWait2:
            enterTimeWait(now: now ?? lastReceived)
        default:
            break
        }
    }

    /// The peer has sent everything: its FIN came and all before it was read.
    var peerFinished: Bool {
        switch state {
        case .closeWait, .closing, .lastAck, .timeWait: return receiveRing.count == 0
        case .closed: return true
        default: return false
        }
    }

    func enterTimeWait(now: Int64) {
        state = .timeWait
        timeWaitDeadline = now + 2 * msl
        retransmitDeadline = 0
        persistDeadline = 0
        keepaliveDeadline = 0
    }

    /// Copies out readable bytes; a grown window is announced when worth it
    /// (RFC 9293 3.8.6.2.2: by at least a segment or half the buffer).
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let before = seqDistance(rcvNxt, rcvAdv)
        let n = receiveRing.read(into: buffer)
        if n > 0, state.synchronized {
            let grown = receiveWindow - max(before, 0)
            if grown >= 2 * mss || (before < receiveRing.capacity / 2 && receiveWindow >= receiveRing.capacity / 2) {
                ackNow = true
            }
        }
        return n
    }
}
