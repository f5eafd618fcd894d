@_spi(Benchmarks) @testable import AnygateStack
import AnygateWire
import Testing

/// TIME-WAIT in the stack: MSLT classes and durations, and VTW's vestiges
/// answering as the connection would have (netbsd-mechanisms.md section 5.6).
@Suite struct TCPTimeWaitTests {
    /// Opens a connection, lets the server close first and then the
    /// client, so the server's side ends in TIME-WAIT (and becomes a vestige).
    /// Returns the server's FIN frame (to retransmit) and the client's port.
    static func serverClosesFirst(_ t: TCPLink) throws -> (fin: SeenSegment, clientPort: UInt16, listener: TCPListenerID) {
        let (c, s, l) = try t.open()
        let data = pattern(10_000, seed: 5)
        _ = t.client.send(c, data[...])
        t.net.run()
        #expect(t.server.receiveAll(s) == data)
        t.server.tcpClose(s)
        t.net.run()
        let fin = try #require(t.segments(from: t.server).last { $0.fin })
        t.client.tcpClose(c)
        t.net.run()
        return (fin, fin.destinationPort, l)
    }

    /// The server's own FIN came back to it? No: the client's FIN, to retransmit to the server.
    static func clientFIN(_ t: TCPLink) throws -> SeenSegment {
        try #require(t.segments(from: t.client).last { $0.fin })
    }

    @Test func aTimeWaitConnectionBecomesA32ByteVestigeAndItsSocketIsFreed() throws {
        let t = try TCPLink()
        _ = try Self.serverClosesFirst(t)
        let st = t.server.tcpStatistics
        #expect(st.vestiges == 1)
        #expect(st.connections == 0, "the connection and its buffers are gone")
        #expect(st.timeWaitConnections == 0)
        #expect(t.server.tcp.vestiges4.inUse(of: .local) == 1)
        #expect(t.server.tcp.vestiges4.checkInvariants())
    }

    @Test func aRetransmittedFINIsAnsweredFromTheVestigeAndRestartsIt() throws {
        let t = try TCPLink()
        let (c, s, _) = try t.open()
        t.server.tcpClose(s)
        t.net.run()
        // The server's ACK of the client's FIN is lost: the client, in
        // LAST-ACK, sends its FIN again, and the vestige must answer it.
        var lostACK = false
        t.net.loss = { from, f in
            guard !lostACK, from.stack == 1, let seg = SeenSegment(f, fromStack: 1), seg.ack, !seg.fin else { return false }
            lostACK = true
            return true
        }
        t.client.tcpClose(c)
        t.net.run()
        #expect(lostACK && t.server.tcpStatistics.vestiges == 1)
        // The client's retransmissions in the first 2 s are lost too, so the
        // one that arrives comes well after TIME-WAIT began.
        let mark = t.seen.count
        let closedAt = t.net.clock
        var finAt: Timestamp? = nil
        t.net.loss = { [unowned t] from, f in
            guard from.stack == 0, let seg = SeenSegment(f, fromStack: 0), seg.fin else { return false }
            if t.net.clock < closedAt + .seconds(2) { return true }
            if finAt == nil { finAt = t.net.clock }
            return false
        }
        t.net.advance(by: .seconds(5), step: .milliseconds(50))
        let arrived = try #require(finAt)
        let fin = try #require(t.segments(from: t.client, after: mark).last { $0.fin })
        let answer = t.segments(from: t.server, after: mark)
        #expect(answer.count == 1)
        #expect(answer.first?.ack == true && answer.first?.fin == false && answer.first?.rst == false)
        #expect(answer.first?.acknowledgment == fin.sequence &+ 1)
        #expect(answer.first?.options.timestamp != nil, "timestamps kept as negotiated")
        #expect(t.server.tcpStatistics.vestigeSegments == 1)
        #expect(t.client.tcpInfo(c) == nil || t.client.state(c) == .closed, "the client heard the ACK and closed")
        // TIME-WAIT started again when the FIN arrived: 10 s from then, past the first 10 s.
        t.net.advance(by: arrived + .milliseconds(9500) - t.net.clock)
        #expect(t.server.tcpStatistics.vestiges == 1)
        t.net.advance(by: .seconds(1))
        #expect(t.server.tcpStatistics.vestiges == 0)
    }

    @Test func aRSTAtRcvNxtEndsTheVestigeAndOneElsewhereGetsAChallengeACK() throws {
        let t = try TCPLink()
        let (fin, port, _) = try Self.serverClosesFirst(t)
        let cfin = try Self.clientFIN(t)
        let rcvNxt = cfin.sequence &+ 1
        var rst = TCPRepr(sourcePort: port, destinationPort: 80, sequence: rcvNxt &+ 100, acknowledgment: 0,
                          flags: TCPHeader.flagRST, window: 0)
        let mark = t.seen.count
        // The client's stack must not hear the challenge ACK (it would answer with the RST that ends the vestige).
        t.net.loss = { from, _ in from.stack == 1 }
        t.net.inject(t.segmentFromClient(rst), into: t.server, on: t.serverEth)
        #expect(t.server.tcpStatistics.vestiges == 1)
        #expect(t.segments(from: t.server, after: mark).count == 1, "a challenge ACK")
        rst.sequence = rcvNxt
        t.net.inject(t.segmentFromClient(rst), into: t.server, on: t.serverEth)
        #expect(t.server.tcpStatistics.vestiges == 0)
        _ = fin
    }

    @Test func newDataOnAVestigeIsAnsweredWithRSTAndEndsIt() throws {
        let t = try TCPLink()
        let (fin, port, _) = try Self.serverClosesFirst(t)
        let cfin = try Self.clientFIN(t)
        let data = TCPRepr(sourcePort: port, destinationPort: 80, sequence: cfin.sequence &+ 1, acknowledgment: fin.sequence &+ 1,
                           flags: TCPHeader.flagACK | TCPHeader.flagPSH, window: 1000)
        let mark = t.seen.count
        t.net.inject(t.segmentFromClient(data, payload: [1, 2, 3]), into: t.server, on: t.serverEth)
        let answer = t.segments(from: t.server, after: mark)
        #expect(answer.count == 1 && answer[0].rst)
        #expect(t.server.tcpStatistics.vestiges == 0)
    }

    @Test func aSYNOnAVestigeWithoutAListenerGetsRST() throws {
        // The client closed first here, so the client's side holds the vestige; it has no listener.
        let t = try TCPLink()
        let (c, s, _) = try t.open()
        t.client.tcpClose(c)
        t.net.run()
        t.server.tcpClose(s)
        t.net.run()
        #expect(t.client.tcpStatistics.vestiges == 1)
        let cport = try #require(t.segments(from: t.client).first?.sourcePort)
        let sfin = try #require(t.segments(from: t.server).last { $0.fin })
        let syn = TCPRepr(sourcePort: 80, destinationPort: cport, sequence: sfin.sequence &+ 100_000, acknowledgment: 0,
                          flags: TCPHeader.flagSYN, window: 1000)
        let mark = t.seen.count
        t.net.inject(TCPLink.frame(syn, payload: [], from: TCPLink.serverAddr, to: TCPLink.clientAddr, mac: TCPLink.clientMAC),
                     into: t.client, on: t.clientEth)
        let answer = t.segments(from: t.client, after: mark)
        #expect(answer.count == 1 && answer[0].rst)
    }

    @Test(arguments: [true, false])
    func aNewerSYNOnAListenersTimeWaitOpensANewConnection(vtw: Bool) throws {
        // RFC 6191 (NetBSD answers RST here): a SYN whose timestamp is newer
        // reuses the four-tuple, from a vestige and from a full TIME-WAIT
        // connection alike, so VTW on and off differ only in memory and CPU.
        var cfg = StackConfiguration()
        cfg.tcp.vtw = vtw
        let t = try TCPLink(server: cfg)
        let (_, port, l) = try Self.serverClosesFirst(t)
        #expect(t.server.tcpStatistics.vestiges == (vtw ? 1 : 0))
        #expect(t.server.tcpStatistics.timeWaitConnections == (vtw ? 0 : 1))
        t.net.advance(by: .seconds(1))
        let c2 = try t.client.tcpConnect(to: .v4(TCPLink.serverAddr), port: 80, localPort: port)
        t.net.run()
        #expect(t.client.state(c2) == .established)
        #expect(t.server.tcpAccept(l) != nil)
        #expect(t.server.tcpStatistics.vestigesReopened == 1)
        #expect(t.server.tcpStatistics.vestiges == 0 && t.server.tcpStatistics.timeWaitConnections == 0)
    }

    @Test func connectOnAVestigesFourTupleIsRefusedAndEphemeralPortsSkipVestiges() throws {
        let t = try TCPLink()
        let (c, s, _) = try t.open()
        let cport = try #require(t.client.tcpInfo(c)?.localPort)
        t.client.tcpClose(c)
        t.net.run()
        t.server.tcpClose(s)
        t.net.run()
        #expect(t.client.tcpStatistics.vestiges == 1)
        #expect(throws: SocketError.addressInUse(cport)) {
            try t.client.tcpConnect(to: .v4(TCPLink.serverAddr), port: 80, localPort: cport)
        }
        // The next ephemeral port would be the vestige's: it is skipped.
        t.client.tcp.nextEphemeral = cport
        _ = try t.server.tcpListen(address: .v4(TCPLink.serverAddr), port: 81)
        let c2 = try t.client.tcpConnect(to: .v4(TCPLink.serverAddr), port: 81)
        #expect(t.client.tcpInfo(c2)?.localPort != cport)
        #expect(t.client.tcp.vestiges4.portCounts[Int(cport)] == 1)
    }

    @Test func msltClassesAndTheirTimeWaitDurations() throws {
        // On-link: local, 10 s.
        let t = try TCPLink()
        _ = try Self.serverClosesFirst(t)
        #expect(t.server.tcp.vestiges4.inUse(of: .local) == 1)
        t.net.advance(by: .milliseconds(9800))
        #expect(t.server.tcpStatistics.vestiges == 1)
        t.net.advance(by: .milliseconds(600))
        #expect(t.server.tcpStatistics.vestiges == 0)

        // Through two routers: remote, 60 s.
        let topo = try Topology()
        try topo.warmUp()
        let l = try topo.b.tcpListen(address: .v4(Topology.bAddr), port: 80)
        let c = try topo.a.tcpConnect(to: .v4(Topology.bAddr), port: 80)
        topo.net.run()
        let s = try #require(topo.b.tcpAccept(l))
        #expect(topo.a.tcpInfo(c)?.mslClass == .remote && topo.b.tcpInfo(s)?.mslClass == .remote)
        topo.b.tcpClose(s)
        topo.net.run()
        topo.a.tcpClose(c)
        topo.net.run()
        #expect(topo.b.tcp.vestiges4.inUse(of: .remote) == 1)
        topo.net.advance(by: .seconds(59))
        #expect(topo.b.tcpStatistics.vestiges == 1)
        topo.net.advance(by: .milliseconds(1500))
        #expect(topo.b.tcpStatistics.vestiges == 0)

        // The stack's own address: loopback. MSLT off: classless, the remote MSL.
        #expect(t.server.mslClass(local: .v4(TCPLink.serverAddr), remote: .v4(TCPLink.serverAddr)) == .loopback)
        #expect(t.server.mslClass(local: .v4(TCPLink.serverAddr), remote: .v4(IPv4Address(10, 0, 0, 77))) == .local)
        t.server.setTCPTimeWait(mslLoopback: .seconds(1), mslLocal: .seconds(5), mslRemote: .seconds(30), mslt: false, vtw: true)
        #expect(t.server.mslClass(local: .v4(TCPLink.serverAddr), remote: .v4(TCPLink.serverAddr)) == .classless)
        #expect(t.server.tcp.configuration.msl(.classless) == Interval.seconds(30).nanoseconds)
    }

    @Test func theVestigeTimerRunsOnlyWhileVestigesExist() throws {
        let t = try TCPLink()
        #expect(t.server.tcpDeadline == nil)
        _ = try Self.serverClosesFirst(t)
        t.net.advance(by: .seconds(1))
        let d = try #require(t.server.tcpDeadline)
        #expect(d % 200_000_000 == 0, "reaped in 200 ms steps")
        t.net.advance(by: .seconds(10))
        #expect(t.server.tcpStatistics.vestiges == 0)
        #expect(t.server.tcpDeadline == nil)
    }

    @Test func withVTWOffTheConnectionStaysWholeButMSLTStillShortensTimeWait() throws {
        var cfg = StackConfiguration()
        cfg.tcp.vtw = false
        let t = try TCPLink(server: cfg)
        let (fin, _, _) = try Self.serverClosesFirst(t)
        var st = t.server.tcpStatistics
        #expect(st.vestiges == 0 && st.timeWaitConnections == 1 && st.connections == 1)
        // The whole connection answers a retransmitted FIN too.
        let cfin = try Self.clientFIN(t)
        let mark = t.seen.count
        t.net.inject(cfin.frame, into: t.server, on: t.serverEth)
        #expect(t.segments(from: t.server, after: mark).first?.acknowledgment == cfin.sequence &+ 1)
        t.net.advance(by: .milliseconds(10400))
        st = t.server.tcpStatistics
        #expect(st.timeWaitConnections == 0 && st.connections == 0, "local class: 10 s")
        _ = fin
    }

    @Test func aFullVestigePoolEvictsTheOldestOfItsClass() throws {
        var cfg = StackConfiguration()
        cfg.tcp.timeWaitMax = 15  // 5 per class
        let t = try TCPLink(server: cfg)
        let l = try t.server.tcpListen(address: .v4(TCPLink.serverAddr), port: 80)
        for _ in 0..<7 {
            let c = try t.client.tcpConnect(to: .v4(TCPLink.serverAddr), port: 80)
            t.net.run()
            let s = try #require(t.server.tcpAccept(l))
            t.server.tcpClose(s)
            t.net.run()
            t.client.tcpClose(c)
            t.net.run()
            t.net.advance(by: .milliseconds(100))
        }
        let st = t.server.tcpStatistics
        #expect(st.vestiges == 5)
        #expect(st.vestige4.kills == 2)
        #expect(st.vestige4.inserts == 7)
        #expect(t.server.tcp.vestiges4.checkInvariants())
    }
}
