@_spi(Benchmarks) @testable import AnygateStack
import AnygateWire
import Testing

/// TCP in the stack: the wire format, the state machine of RFC 9293,
/// data transfer and recovery, and the protections of RFCs 4987, 5961 and 6528.
@Suite struct TCPTests {
    @Test func sipHashMatchesTheReferenceVector() {
        // SipHash-2-4, key 00..0f, message 00..07 (the paper's vector for 8 bytes).
        let s = SipHash(k0: 0x0706_0504_0302_0100, k1: 0x0F0E_0D0C_0B0A_0908)
        #expect(s.hash(words: (0x0706_0504_0302_0100, 0, 0), count: 1) == 0x93F5_F579_9A93_2462)
    }

    @Test func optionsRoundTrip() {
        var o = TCPOptions()
        o.mss = 1460
        o.windowScale = 7
        o.sackPermitted = true
        o.timestamp = TCPTimestamp(value: 0x0102_0304, echo: 0x0506_0708)
        var s = TCPOptions()
        s.timestamp = TCPTimestamp(value: 9, echo: 10)
        s.appendSACK(TCPSACKBlock(start: 100, end: 200))
        s.appendSACK(TCPSACKBlock(start: 300, end: 400))
        s.appendSACK(TCPSACKBlock(start: 0xFFFF_FF00, end: 0x10))
        for opts in [o, s] {
            let r = TCPRepr(sourcePort: 1, destinationPort: 2, sequence: 3, acknowledgment: 4, flags: TCPHeader.flagACK,
                            window: 5, options: opts)
            #expect(r.headerLength % 4 == 0 && r.headerLength <= 60)
            var b = [UInt8](repeating: 0xEE, count: r.headerLength)
            b.withUnsafeMutableBytes { p in
                r.emitHeader(into: p)
                let h = TCPHeader(unchecked: p)
                #expect(h.headerLength == r.headerLength)
                let back = h.options
                #expect(back.mss == opts.mss && back.windowScale == opts.windowScale)
                #expect(back.sackPermitted == opts.sackPermitted && back.timestamp == opts.timestamp)
                #expect(back.sackCount == opts.sackCount)
                for k in 0..<opts.sackCount { #expect(back.sack(k) == opts.sack(k)) }
            }
        }
    }

    @Test func malformedOptionsAreCountedNotFollowed() throws {
        let t = try TCPLink()
        _ = try t.server.tcpListen(address: .v4(IPv4Address(rawValue: 0)), port: 80)
        // A SYN whose option length runs past the header.
        var repr = TCPRepr(sourcePort: 5000, destinationPort: 80, sequence: 1, acknowledgment: 0, flags: TCPHeader.flagSYN,
                           window: 1000)
        repr.options.mss = 1000
        var f = t.segmentFromClient(repr)
        f[14 + 20 + 21] = 40  // the MSS option claims 40 bytes
        let ipEnd = f.count
        f.withUnsafeMutableBytes { b in
            let seg = b.slice(34, ipEnd - 34)
            TCPRepr.finish(seg, pseudo: InternetChecksum.pseudoHeaderSum(source: TCPLink.clientAddr, destination: TCPLink.serverAddr,
                                                                          protocol: .tcp, length: seg.count))
        }
        t.net.inject(f, into: t.server, on: t.serverEth)
        // Either dropped as malformed or answered without the bad option: never a crash, never a connection.
        #expect(t.server.tcpStatistics.connections == 0)
    }

    // MARK: The state machine

    @Test func handshakeNegotiatesOptionsAndTheMSSFromTheRoute() throws {
        let t = try TCPLink(mtu: 1400)
        let (c, s, l) = try t.open()
        #expect(t.client.state(c) == .established)
        #expect(t.server.state(s) == .established)
        let syn = try #require(t.seen.first { $0.syn && !$0.ack })
        #expect(syn.options.mss == 1360)
        #expect(syn.options.sackPermitted && syn.options.timestamp != nil && syn.options.windowScale != nil)
        let synAck = try #require(t.seen.first { $0.syn && $0.ack })
        #expect(synAck.acknowledgment == syn.sequence &+ 1)
        let ci = try #require(t.client.tcpInfo(c))
        #expect(ci.sack && ci.timestamps && ci.sendMSS <= 1360 - 12)
        #expect(ci.mslClass == .local)
        #expect(t.server.tcpListenerCounters(l)?.accepted == 1)
        #expect(t.client.tcpTakeNotices(c).contains(.established))
    }

    @Test func initialSequenceNumbersDifferPerFourTupleAndAdvanceWithTime() throws {
        let t = try TCPLink()
        _ = try t.server.tcpListen(address: .v4(IPv4Address(rawValue: 0)), port: 80)
        _ = try t.client.tcpConnect(to: .v4(TCPLink.serverAddr), port: 80, localPort: 4000)
        _ = try t.client.tcpConnect(to: .v4(TCPLink.serverAddr), port: 80, localPort: 4001)
        t.net.run()
        let syns = t.seen.filter { $0.syn && !$0.ack }
        #expect(syns.count == 2)
        let d = syns[1].sequence &- syns[0].sequence
        #expect(d > 1_000_000 && d < UInt32.max - 1_000_000, "RFC 6528: a keyed hash of the four-tuple, not a counter")
    }

    @Test func activeCloseGoesThroughFinWaitToTimeWaitAndCloses() throws {
        var cfg = StackConfiguration()
        cfg.tcp.vtw = false
        let t = try TCPLink(client: cfg)
        let (c, s, _) = try t.open()
        t.client.tcpShutdown(c)
        #expect(t.client.state(c) == .finWait1)
        t.net.run()
        #expect(t.client.state(c) == .finWait2)
        #expect(t.server.state(s) == .closeWait)
        #expect(t.server.tcpAtEnd(s))
        t.server.tcpShutdown(s)
        #expect(t.server.state(s) == .lastAck)
        t.net.run()
        #expect(t.client.state(c) == .timeWait)
        #expect(t.server.tcpInfo(s) == nil || t.server.state(s) == .closed)
        // Local class: MSL 5 s, TIME-WAIT 10 s.
        t.net.advance(by: .milliseconds(9500))
        #expect(t.client.state(c) == .timeWait)
        t.net.advance(by: .milliseconds(1000))
        #expect(t.client.state(c) == nil || t.client.state(c) == .closed)
    }

    @Test func simultaneousCloseGoesThroughClosing() throws {
        var cfg = StackConfiguration()
        cfg.tcp.vtw = false
        let t = try TCPLink(client: cfg, server: cfg)
        let (c, s, _) = try t.open()
        t.client.tcpShutdown(c)
        t.server.tcpShutdown(s)
        #expect(t.client.state(c) == .finWait1 && t.server.state(s) == .finWait1)
        var sawClosing = false
        t.net.observer = { [unowned t] from, _, f in
            if let seg = SeenSegment(f, fromStack: from.stack) { t.seen.append(seg) }
            if t.client.state(c) == .closing || t.server.state(s) == .closing { sawClosing = true }
        }
        t.net.run()
        #expect(sawClosing)
        #expect(t.client.state(c) == .timeWait && t.server.state(s) == .timeWait)
    }

    @Test func aSYNToAClosedPortIsRefusedWithRSTAndTheConnectFails() throws {
        let t = try TCPLink()
        let c = try t.client.tcpConnect(to: .v4(TCPLink.serverAddr), port: 81)
        t.net.run()
        let rst = try #require(t.seen.last)
        #expect(rst.rst && rst.ack)
        #expect(t.client.tcpTakeNotices(c).contains(.closed))
        #expect(t.client.tcpInfo(c)?.closeReason == .refused || t.client.tcpInfo(c) == nil)
        #expect(t.server.drops(.tcpNoListener, on: t.serverEth) == 1)
    }

    @Test func aConnectionToOurOwnAddressIsLoopbackClassAndNeverTouchesTheWire() throws {
        let t = try TCPLink()
        let before = t.seen.count
        let l = try t.server.tcpListen(address: .v4(TCPLink.serverAddr), port: 80)
        let c = try t.server.tcpConnect(to: .v4(TCPLink.serverAddr), port: 80)
        t.net.run()
        let s = try #require(t.server.tcpAccept(l))
        #expect(t.server.state(c) == .established && t.server.state(s) == .established)
        #expect(t.server.tcpInfo(c)?.mslClass == .loopback)
        let data = pattern(200_000, seed: 9)
        #expect(sha256(pump(t.net, from: t.server, c, to: t.server, s, data)) == sha256(data))
        #expect(t.seen.count == before)
    }

    @Test func synRetriesGiveUpWhenNothingAnswers() throws {
        let t = try TCPLink()
        t.net.loss = { from, _ in from.stack == 0 }
        let c = try t.client.tcpConnect(to: .v4(TCPLink.serverAddr), port: 80)
        t.net.advance(by: .seconds(200), step: .milliseconds(200))
        #expect(t.client.tcpTakeNotices(c).contains(.closed))
        #expect(t.net.lost >= 6)
        #expect(t.client.tcpStatistics.failedOpens == 1)
    }

    // MARK: Data

    @Test func transfersInBothDirectionsArriveIntact() throws {
        let t = try TCPLink()
        let (c, s, _) = try t.open()
        let up = pattern(3_000_000, seed: 1), down = pattern(2_000_000, seed: 2)
        let got = pump(t.net, from: t.client, c, to: t.server, s, up)
        #expect(sha256(got) == sha256(up))
        let back = pump(t.net, from: t.server, s, to: t.client, c, down)
        #expect(sha256(back) == sha256(down))
        #expect(t.client.tcpInfo(c)!.counters.retransmits == 0)
        #expect(t.seen.contains { $0.fromStack == 1 && $0.payloadLength > 1400 })
    }

    @Test func lossIsRecoveredWithSACKAndTheTransferStaysIntact() throws {
        let t = try TCPLink()
        let (c, s, _) = try t.open()
        var g = SplitMix64(seed: 42)
        // 1 % of the client's data segments are lost.
        t.net.loss = { from, f in
            guard from.stack == 0, let seg = SeenSegment(f, fromStack: 0), seg.payloadLength > 0 else { return false }
            return g.next() % 100 == 0
        }
        let data = pattern(4_000_000, seed: 3)
        let got = pump(t.net, from: t.client, c, to: t.server, s, data)
        #expect(sha256(got) == sha256(data))
        #expect(t.net.lost > 10)
        let ci = try #require(t.client.tcpInfo(c))
        #expect(ci.counters.retransmits >= UInt64(t.net.lost))
        #expect(ci.counters.fastRecoveries > 0)
        #expect(t.client.tcpStatistics.retransmits == ci.counters.retransmits, "the stack's total includes the live connection's")
        #expect(t.seen.contains { $0.fromStack == 1 && $0.options.sackCount > 0 }, "the receiver reported SACK blocks")
        #expect(ci.counters.timeouts < ci.counters.fastRecoveries, "most losses recovered without waiting for the RTO")
    }

    @Test func aZeroWindowIsProbedAndReopens() throws {
        var cfg = StackConfiguration()
        cfg.tcp.settings.receiveBuffer = 16384
        let t = try TCPLink(server: cfg)
        let (c, s, _) = try t.open()
        let data = pattern(100_000, seed: 4)
        var sent = 0
        for _ in 0..<50 {
            sent += t.client.send(c, data[sent...])
            t.net.advance(by: .milliseconds(50), step: .milliseconds(50))
        }
        #expect(t.seen.contains { $0.fromStack == 1 && $0.window == 0 })
        // A minute with nothing read: probes, not a reset.
        let mark = t.seen.count
        t.net.advance(by: .seconds(60), step: .milliseconds(100))
        #expect(t.segments(from: t.client, after: mark).count >= 3, "window probes")
        #expect(t.client.state(c) == .established)
        var got = t.server.receiveAll(s)
        for _ in 0..<400 where got.count < data.count {
            if sent < data.count { sent += t.client.send(c, data[sent...]) }
            t.net.advance(by: .milliseconds(20), step: .milliseconds(20))
            got += t.server.receiveAll(s)
        }
        #expect(got.count == data.count)
        #expect(sha256(got) == sha256(data))
    }

    @Test func aTSOSuperFrameFromTheHostIsCutIntoSegmentsAndReceivedWhole() throws {
        let t = try TCPLink()
        let (c, s, _) = try t.open()
        let syn = try #require(t.seen.first { $0.syn && !$0.ack })
        let synAck = try #require(t.seen.first { $0.syn && $0.ack })
        let port = try #require(t.client.tcpInfo(c)?.localPort)
        let data = pattern(5000, seed: 11)
        let repr = TCPRepr(sourcePort: port, destinationPort: 80, sequence: syn.sequence &+ 1, acknowledgment: synAck.sequence &+ 1,
                           flags: TCPHeader.flagACK | TCPHeader.flagPSH, window: 1000)
        t.net.inject(t.segmentFromClient(repr, payload: data), into: t.server, on: t.serverEth, segmentSize: 1448, offload: 0)
        #expect(t.server.receiveAll(s) == data)
        #expect(t.server.counters.unbundledPackets == 4)
    }

    // MARK: RFC 5961

    @Test func anInWindowRSTOrSYNGetsAChallengeACKNotAReset() throws {
        let t = try TCPLink()
        let (c, s, _) = try t.open()
        let info = try #require(t.server.tcpInfo(s))
        let last = try #require(t.segments(from: t.client).last)
        let rcvNxt = last.sequence
        var rst = TCPRepr(sourcePort: info.remotePort, destinationPort: 80, sequence: rcvNxt &+ 10, acknowledgment: 0,
                          flags: TCPHeader.flagRST, window: 0)
        var mark = t.seen.count
        t.net.inject(t.segmentFromClient(rst), into: t.server, on: t.serverEth)
        #expect(t.server.state(s) == .established)
        let answer = t.segments(from: t.server, after: mark)
        #expect(answer.count == 1 && answer[0].ack && !answer[0].rst)
        // A SYN on the connection: also a challenge ACK.
        mark = t.seen.count
        let syn = TCPRepr(sourcePort: info.remotePort, destinationPort: 80, sequence: rcvNxt &+ 5000, acknowledgment: 0,
                          flags: TCPHeader.flagSYN, window: 1000)
        t.net.inject(t.segmentFromClient(syn), into: t.server, on: t.serverEth)
        #expect(t.server.state(s) == .established)
        #expect(t.segments(from: t.server, after: mark).count == 1)
        #expect(t.server.tcpStatistics.challengeACKs >= 2)
        // The exact sequence number resets it.
        rst.sequence = rcvNxt
        t.net.inject(t.segmentFromClient(rst), into: t.server, on: t.serverEth)
        #expect(t.server.tcpTakeNotices(s).contains(.closed))
        #expect(t.server.tcpInfo(s)?.closeReason == .reset || t.server.tcpInfo(s) == nil)
        _ = c
    }

    // MARK: RFC 4987

    @Test func aFullSYNCacheAnswersWithCookiesAndRealClientsStillConnect() throws {
        var cfg = StackConfiguration()
        cfg.tcp.synCacheSize = 8
        let t = try TCPLink(server: cfg)
        let l = try t.server.tcpListen(address: .v4(IPv4Address(rawValue: 0)), port: 80)
        // A flood of SYNs from sources that never answer.
        for n in 0..<200 {
            var o = TCPOptions()
            o.mss = 1460
            let syn = TCPRepr(sourcePort: UInt16(20000 + n), destinationPort: 80, sequence: UInt32(n) &* 7919, acknowledgment: 0,
                              flags: TCPHeader.flagSYN, window: 1000, options: o)
            let src = IPv4Address(10, 0, 0, UInt8(100 + n % 100))
            t.net.inject(TCPLink.frame(syn, payload: [], from: src, to: TCPLink.serverAddr, mac: TCPLink.serverMAC),
                         into: t.server, on: t.serverEth)
        }
        let st = t.server.tcpStatistics
        #expect(st.synCacheEntries <= 8)
        #expect(st.connections == 0)
        #expect(st.cookiesSent >= 192)
        // A real client gets a cookie too, and its third ACK makes the connection.
        let c = try t.client.tcpConnect(to: .v4(TCPLink.serverAddr), port: 80)
        t.net.run()
        #expect(t.client.state(c) == .established)
        let s = try #require(t.server.tcpAccept(l))
        #expect(t.server.state(s) == .established)
        #expect(t.server.tcpStatistics.cookiesAccepted == 1)
        // The cookie kept window scaling and SACK.
        #expect(t.server.tcpInfo(s)!.sack)
        let data = pattern(200_000, seed: 9)
        #expect(pump(t.net, from: t.client, c, to: t.server, s, data) == data)
        // A forged third ACK with no valid cookie is refused.
        let bad = TCPRepr(sourcePort: 33333, destinationPort: 80, sequence: 1, acknowledgment: 12345, flags: TCPHeader.flagACK,
                          window: 1000)
        t.net.inject(t.segmentFromClient(bad), into: t.server, on: t.serverEth)
        #expect(t.server.tcpStatistics.cookiesRejected >= 1)
        #expect(t.server.tcpStatistics.connections == 1)
    }

    @Test func aListenerRefusesSourcesOutsideItsAllowList() throws {
        let t = try TCPLink()
        let l = try t.server.tcpListen(address: .v4(IPv4Address(rawValue: 0)), port: 22, allow: [IPPrefix("10.9.0.0/16")!])
        let c = try t.client.tcpConnect(to: .v4(TCPLink.serverAddr), port: 22)
        t.net.run()
        #expect(t.server.tcpAccept(l) == nil)
        #expect(t.client.state(c) == .synSent)
        #expect(t.server.drops(.tcpSourceNotAllowed, on: t.serverEth) == 1)
        #expect(t.server.tcpListenerCounters(l)!.refused == 1)
    }
}
