@_spi(Benchmarks) @testable import AnygateStack
import AnygateWire
import Testing

/// The stack's TCP over IPv6: the same connections, vestiges and refusals
/// as over IPv4, with the IPv6 pseudo-header, MSS and routes.
@Suite struct TCP6Tests {
    static let clientAddr = IPv6Address("2001:db8:7::1")!
    static let serverAddr = IPv6Address("2001:db8:7::2")!

    /// Two stacks on one link, IPv6 only, every TCP-over-IPv6 frame counted
    /// (and its checksum checked against the IPv6 pseudo-header).
    final class Link {
        let net = MemoryNetwork(pool: PacketPool(capacity: 8192))
        let client: Stack, server: Stack
        let serverEth: InterfaceIndex
        var segments = 0, badChecksums = 0, synMSS: UInt16? = nil

        init(mtu: Int = 1500) throws {
            client = net.addStack(name: "C")
            server = net.addStack(name: "S")
            let ce = try client.addInterface(name: "eth0", mac: MACAddress(2, 0, 0, 0, 6, 1), mtu: mtu)
            serverEth = try server.addInterface(name: "eth0", mac: MACAddress(2, 0, 0, 0, 6, 2), mtu: mtu)
            net.connect(client, ce, server, serverEth)
            for (s, i, a) in [(client, ce, "2001:db8:7::1/64"), (server, serverEth, "2001:db8:7::2/64")] {
                try s.setUp(i, true)
                try s.enableIPv6(on: i)
                try s.addAddress(IPv6InterfaceAddress(a), to: i)
            }
            net.advance(by: .seconds(2))  // duplicate address detection passes
            net.observer = { [unowned self] _, _, f in
                guard f.count >= 74, f.be16(12) == 0x86DD, f.be8(20) == 6 else { return }
                let ip = IPv6Packet(unchecked: f.tail(from: 14))
                let seg = f.slice(54, ip.payloadLength)
                segments += 1
                let pseudo = InternetChecksum.pseudoHeaderSum(source: ip.source, destination: ip.destination, nextHeader: .tcp,
                                                              length: seg.count)
                if !TCPRepr.verify(seg, pseudo: pseudo) { badChecksums += 1 }
                if let h = try? TCPHeader(validating: seg), h.flags & TCPHeader.flagSYN != 0, h.flags & TCPHeader.flagACK == 0 {
                    synMSS = h.options.mss
                }
            }
        }
    }

    @Test func aConnectionCarriesDataBothWaysAndItsTimeWaitBecomesAVestige() throws {
        let t = try Link(mtu: 1400)
        let l = try t.server.tcpListen(address: .v6(TCP6Tests.serverAddr), port: 80)
        let c = try t.client.tcpConnect(to: .v6(TCP6Tests.serverAddr), port: 80)
        t.net.run()
        let s = try #require(t.server.tcpAccept(l))
        #expect(t.client.state(c) == .established && t.server.state(s) == .established)
        // The MSS is the link's MTU less 40 bytes of IPv6 and 20 of TCP.
        #expect(t.synMSS == 1340)
        let ci = try #require(t.client.tcpInfo(c))
        #expect(ci.mslClass == .local && ci.timestamps && ci.sack)
        #expect(ci.local == .v6(TCP6Tests.clientAddr))

        let up = pattern(1_000_000, seed: 61), down = pattern(700_000, seed: 62)
        #expect(sha256(pump(t.net, from: t.client, c, to: t.server, s, up)) == sha256(up))
        #expect(sha256(pump(t.net, from: t.server, s, to: t.client, c, down)) == sha256(down))
        #expect(t.segments > 1000 && t.badChecksums == 0)

        // The client closed first (its shutdown in the first pump): once its
        // owner lets go, its TIME-WAIT is an IPv6 vestige.
        t.net.run()
        t.server.tcpClose(s)
        t.client.tcpClose(c)
        t.net.run()
        #expect(t.client.tcp.vestiges6.count == 1)
        #expect(t.client.tcp.vestiges4.count == 0)
        // A new connection on the same four-tuple is refused while the vestige lives.
        #expect(throws: SocketError.addressInUse(ci.localPort)) {
            _ = try t.client.tcpConnect(to: .v6(TCP6Tests.serverAddr), port: 80, localPort: ci.localPort)
        }
        // Local class: TIME-WAIT 10 s, then the vestige goes.
        t.net.advance(by: .seconds(11), step: .milliseconds(200))
        #expect(t.client.tcp.vestiges6.count == 0)
    }

    @Test func aSYNToAClosedPortIsRefusedWithRST() throws {
        let t = try Link()
        let c = try t.client.tcpConnect(to: .v6(TCP6Tests.serverAddr), port: 81)
        t.net.run()
        #expect(t.client.tcpTakeNotices(c).contains(.closed))
        #expect(t.server.drops(.tcpNoListener, on: t.serverEth) == 1)
        #expect(t.badChecksums == 0)
    }

    @Test func aConnectionToOurOwnAddressIsLoopbackClass() throws {
        let t = try Link()
        let l = try t.server.tcpListen(address: .v6(TCP6Tests.serverAddr), port: 80)
        let c = try t.server.tcpConnect(to: .v6(TCP6Tests.serverAddr), port: 80)
        t.net.run()
        let s = try #require(t.server.tcpAccept(l))
        #expect(t.server.state(c) == .established && t.server.state(s) == .established)
        #expect(t.server.tcpInfo(c)?.mslClass == .loopback)
        #expect(t.segments == 0)  // nothing crossed the wire
    }
}
