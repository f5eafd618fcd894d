import AnygateCrypto
@testable import AnygateStack
import AnygateWire
import Testing

/// GRE over IPsec between two gateways in process: the SAs are installed
/// by hand here, as IKE would (GW1 sends with SPI 0x1001, GW2 with 0x2002).
extension TwoSites {
    static func keys(_ a: AEADAlgorithm, _ seed: UInt8) -> SecretBytes {
        SecretBytes((0..<a.keyMaterialLength).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) })
    }

    init(protected encapsulation: ESPEncapsulation, algorithm: AEADAlgorithm = .aes128GCM, esn: Bool = false,
         lifetime: SALifetime = SALifetime(), keyed: Bool = true, underlay6: Bool = false, ipv6: Bool = false) throws {
        try self.init(underlay6: underlay6, ipv6: ipv6, protection: TunnelProtection(encapsulation: encapsulation))
        if keyed { try installSAs(algorithm, esn: esn, lifetime: lifetime) }
    }

    /// A policy-based link between 10.1/16 and 10.2/16 (ESP tunnel mode, no GRE).
    init(policyBased encapsulation: ESPEncapsulation, algorithm: AEADAlgorithm = .aes128GCM) throws {
        let p1 = TunnelProtection(encapsulation: encapsulation, localSubnets: [IPPrefix("10.1.0.0/16")!], remoteSubnets: [IPPrefix("10.2.0.0/16")!])
        let p2 = TunnelProtection(encapsulation: encapsulation, localSubnets: [IPPrefix("10.2.0.0/16")!], remoteSubnets: [IPPrefix("10.1.0.0/16")!])
        try self.init(encapsulation: .ipsec, key1: nil, key2: nil, protection: p1, protection2: p2)
        try installSAs(algorithm)
    }

    func installSAs(_ a: AEADAlgorithm, esn: Bool = false, lifetime: SALifetime = SALifetime(), spi1: UInt32 = 0x1001, spi2: UInt32 = 0x2002) throws {
        let k1 = TwoSites.keys(a, 1), k2 = TwoSites.keys(a, 2)
        try gw1.setOutboundSA(tunnel: gw1Tunnel, SAConfiguration(spi: spi1, algorithm: a, keyMaterial: k1, extendedSequenceNumbers: esn, lifetime: lifetime))
        try gw2.addInboundSA(tunnel: gw2Tunnel, SAConfiguration(spi: spi1, algorithm: a, keyMaterial: k1, extendedSequenceNumbers: esn, lifetime: lifetime))
        try gw2.setOutboundSA(tunnel: gw2Tunnel, SAConfiguration(spi: spi2, algorithm: a, keyMaterial: k2, extendedSequenceNumbers: esn, lifetime: lifetime))
        try gw1.addInboundSA(tunnel: gw1Tunnel, SAConfiguration(spi: spi2, algorithm: a, keyMaterial: k2, extendedSequenceNumbers: esn, lifetime: lifetime))
    }
}

@Suite("GRE over IPsec in-process", .ledgerAudited)
struct IPsecTests {
    final class Underlay { var frames: [[UInt8]] = [] }

    /// IPv4 frames GW1 sends on the underlay.
    func capture(_ s: TwoSites) -> Underlay {
        let u = Underlay()
        s.net.observer = { from, _, f in
            if from.stack == 1 && from.interface == s.gw1Wan && f.be16(12) == 0x0800 { u.frames.append(Array(f)) }
        }
        return u
    }

    /// The ESP bytes of an underlay frame (after IPv4, and UDP when encapsulated), or nil.
    func esp(_ f: [UInt8]) -> [UInt8]? {
        let ihl = Int(f[14] & 0x0F) * 4
        let proto = f[14 + 9]
        if proto == 50 { return Array(f[(14 + ihl)...]) }
        if proto == 17, f.count > 14 + ihl + 8, f[14 + ihl + 2] == 0x11, f[14 + ihl + 3] == 0x94 { return Array(f[(14 + ihl + 8)...]) }
        return nil
    }

    func ping(_ s: TwoSites, count: Int = 1) throws {
        for n in 0..<count {
            try s.a.ping(IPv4Address(10, 2, 0, 2), identifier: 7, sequence: UInt16(n))
            s.net.run()
        }
    }

    static let cases: [(ESPEncapsulation, AEADAlgorithm)] = [
        (.esp, .aes128GCM), (.natTraversal, .aes128GCM), (.esp, .aes256GCM), (.natTraversal, .chacha20Poly1305),
    ]

    @Test("ping through GRE over IPsec: the underlay carries only ESP, every SA counts both ways", arguments: cases)
    func ping(_ encapsulation: ESPEncapsulation, _ algorithm: AEADAlgorithm) throws {
        let s = try TwoSites(protected: encapsulation, algorithm: algorithm)
        let u = capture(s)
        try ping(s, count: 3)
        #expect(s.a.echoReplies().count == 3)
        #expect(!u.frames.isEmpty)
        for f in u.frames {
            let e = try #require(esp(f), "every frame GW1 sends on the underlay is ESP")
            #expect(Array(e[0..<4]) == [0, 0, 0x10, 0x01])
            // The inner addresses never appear in clear.
            #expect(!f.indices.dropLast(4).contains { f[$0] == 10 && f[$0 + 1] == 1 && f[$0 + 2] == 0 && f[$0 + 3] == 2 })
        }
        let out = try #require(s.gw1.saList.first { !$0.inbound })
        let inb = try #require(s.gw1.saList.first { $0.inbound })
        #expect(out.spi == 0x1001 && out.counters.packets == 3 && out.sequence == 3)
        #expect(inb.spi == 0x2002 && inb.counters.packets == 3 && inb.sequence == 3)
        #expect(out.algorithm == algorithm)
        let t = try #require(s.gw1.tunnelList.first)
        #expect(t.mtu == 1500 - t.configuration.overhead)
        #expect(t.configuration.overhead == 20 + 8 + 37 + (encapsulation == .esp ? 0 : 8))
        // A full-sized inner packet still fits in the underlay's 1500 bytes.
        try s.a.ping(IPv4Address(10, 2, 0, 2), identifier: 8, sequence: 1, payloadSize: t.mtu - 28, dontFragment: true)
        s.net.run()
        #expect(s.a.echoReplies().contains { $0.length == t.mtu - 28 })
        #expect(s.gw1.drops(.fragmentationNeeded) == 0)
        s.checkInvariants()
    }

    @Test("over an IPv6 underlay, IPv4 and IPv6 inside: ESP in IPv6 (protocol 50, and UDP 4500 with its checksum)",
          arguments: [ESPEncapsulation.esp, .natTraversal])
    func ipv6Underlay(_ encapsulation: ESPEncapsulation) throws {
        let s = try TwoSites(protected: encapsulation, underlay6: true, ipv6: true)
        var frames: [[UInt8]] = []
        let gw1Wan = s.gw1Wan
        s.net.observer = { from, _, f in if from.stack == 1 && from.interface == gw1Wan && f.be16(12) == 0x86DD { frames.append(Array(f)) } }
        try ping(s, count: 2)
        #expect(s.a.echoReplies().count == 2)
        // IPv6 inside too: a UDP datagram from A to B.
        let server = try s.b.openSocket(.udp)
        try s.b.bind(server, address: .v6(TwoSites.b6), port: 9000)
        let client = try s.a.openSocket(.udp)
        try s.a.bind(client, address: .v6(TwoSites.a6), port: 5555)
        try s.a.connect(client, to: .v6(TwoSites.b6), port: 9000)
        let p = try #require(s.net.pool.make(copying: Array("over IPv6 in ESP over IPv6".utf8)))
        try s.a.socketSend(client, p)
        s.net.run()
        let dropped = s.stacks.map { st in DropReason.allCases.filter { st.drops($0) > 0 }.map { "\(st.name) \($0) \(st.drops($0))" } }
        let d = try #require(s.b.socketReceive(server), "drops: \(dropped)")
        #expect(s.net.pool.copyBytes(d.packet) == Array("over IPv6 in ESP over IPv6".utf8))
        s.net.pool.free(d.packet)
        s.a.closeSocket(client); s.b.closeSocket(server)
        let esp = frames.filter { f in
            let next = f[14 + 6]
            if encapsulation == .esp { return next == 50 }
            return next == 17 && f[14 + 40 + 2] == 0x11 && f[14 + 40 + 3] == 0x94 && (f[14 + 40 + 6] != 0 || f[14 + 40 + 7] != 0)
        }
        #expect(esp.count >= 3, "ESP over IPv6 (with a UDP checksum when in UDP): \(frames.count) IPv6 frames")
        #expect(!frames.contains { $0[14 + 6] == 47 }, "no plaintext GRE")
        #expect(s.gw2.saList.first { $0.inbound }?.counters.authFailures == 0)
        s.checkInvariants()
    }

    @Test("encapsulation auto: protocol 50 until the owner finds a NAT, then UDP 4500; both are taken in either way")
    func auto() throws {
        let s = try TwoSites(protection: TunnelProtection(encapsulation: .natTraversal, auto: true))
        try s.installSAs(.aes128GCM)
        let u = capture(s)
        try ping(s)
        #expect(s.a.echoReplies().count == 1)
        #expect(u.frames.allSatisfy { $0[14 + 9] == 50 } && !u.frames.isEmpty, "protocol 50 first")
        #expect(!s.gw1.espInUDP(tunnel: s.gw1Tunnel))
        // GW1 finds a NAT; GW2 has not yet: GW1 sends in UDP, GW2 still as protocol 50, and both arrive.
        s.gw1.setESPInUDP(tunnel: s.gw1Tunnel, true)
        u.frames = []
        try ping(s, count: 2)
        #expect(s.a.echoReplies().count == 2)
        #expect(u.frames.allSatisfy { esp($0) != nil && $0[14 + 9] == 17 } && !u.frames.isEmpty, "UDP 4500 now")
        #expect(s.gw1.espInUDP(tunnel: s.gw1Tunnel))
        #expect(s.gw1.tunnelList[0].configuration.overhead == 20 + 8 + 37 + 8, "the MTU leaves room for UDP either way")
        s.checkInvariants()
        try s.gw1.removeTunnel(named: "gre0")
        #expect(s.gw1.saList.isEmpty)
    }

    @Test("before IKE has installed an outbound SA nothing leaves, counted as ipsec-no-sa")
    func noSAYet() throws {
        let s = try TwoSites(protected: .natTraversal, keyed: false)
        let u = capture(s)
        try ping(s)
        #expect(s.a.echoReplies().isEmpty)
        #expect(s.gw1.drops(.ipsecNoSA) == 1)
        #expect(!u.frames.contains { esp($0) == nil && $0[14 + 9] == 47 }, "no plaintext GRE either")
        s.checkInvariants()
    }

    @Test("replayed, corrupted, unknown-SPI and plaintext packets are dropped with their own reasons")
    func hostileInput() throws {
        let s = try TwoSites(protected: .esp)
        let u = capture(s)
        try ping(s)
        #expect(s.a.echoReplies().count == 1)
        let sent = try #require(u.frames.first { esp($0) != nil })
        // The same packet again: a replay.
        s.net.inject(sent, into: s.gw2, on: s.gw2Wan)
        #expect(s.gw2.drops(.espReplayed) == 1)
        // A later sequence number but one flipped bit in the ciphertext.
        var forged = sent
        forged[14 + 20 + 7] = 50
        forged[forged.count - 30] ^= 1
        s.net.inject(forged, into: s.gw2, on: s.gw2Wan)
        #expect(s.gw2.drops(.espAuthFailed) == 1)
        // The window did not move for the forgery: sequence 50 is still fresh, and 
        // with the right ICV it would pass, so a replay of the forgery is again a forgery.
        s.net.inject(forged, into: s.gw2, on: s.gw2Wan)
        #expect(s.gw2.drops(.espAuthFailed) == 2 && s.gw2.drops(.espReplayed) == 1)
        // Another SPI.
        var unknown = sent
        unknown[14 + 20 + 3] = 0x77
        s.net.inject(unknown, into: s.gw2, on: s.gw2Wan)
        #expect(s.gw2.drops(.espUnknownSPI) == 1)
        // Truncated ESP.
        let short = FrameBuilder.ipv4(to: s.gw2.status(s.gw2Wan).mac, from: s.gw1.status(s.gw1Wan).mac,
                                      IPv4Repr(source: TwoSites.gw1Underlay, destination: TwoSites.gw2Underlay, proto: .esp, payloadLength: 0),
                                      payload: [0, 0, 0x10, 0x01, 0, 0, 0, 9])
        s.net.inject(short, into: s.gw2, on: s.gw2Wan)
        #expect(s.gw2.drops(.espMalformed) == 1)
        // Plaintext GRE from the peer's address: refused, never decapsulated.
        let before = s.b.drops(.portUnreachable)
        var inner = [UInt8](repeating: 0, count: 32)
        inner.withUnsafeMutableBytes { b in
            IPv4Repr(source: IPv4Address(10, 1, 0, 2), destination: IPv4Address(10, 2, 0, 2), proto: .udp, payloadLength: 12).emit(into: b)
            b.setBE16(20, 1000); b.setBE16(22, 2000); b.setBE16(24, 12)
        }
        let g = GRERepr(protocolType: .ipv4, key: 42)
        var gre = [UInt8](repeating: 0, count: g.headerLength) + inner
        gre.withUnsafeMutableBytes { g.emit(into: $0) }
        let plain = FrameBuilder.ipv4(to: s.gw2.status(s.gw2Wan).mac, from: s.gw1.status(s.gw1Wan).mac,
                                      IPv4Repr(source: TwoSites.gw1Underlay, destination: TwoSites.gw2Underlay, proto: .gre, payloadLength: 0),
                                      payload: gre)
        s.net.inject(plain, into: s.gw2, on: s.gw2Wan)
        #expect(s.gw2.drops(.ipsecPlaintextRefused) == 1)
        #expect(s.b.drops(.portUnreachable) == before, "nothing of it reached the site")
        let inbound = try #require(s.gw2.saList.first { $0.inbound })
        #expect(inbound.counters.replayed == 1 && inbound.counters.authFailures == 2 && inbound.counters.packets == 1)
        s.checkInvariants()
    }

    @Test("extended sequence numbers: traffic carries on across 2^32, and the high half is authenticated")
    func extendedSequenceNumbers() throws {
        let s = try TwoSites(protected: .esp, esn: true)
        // Move both ends near the 32-bit edge, as 2^32 packets would have.
        let i1 = Int(s.gw1.tunnelStates[Int(s.gw1.ifs[s.gw1Tunnel].tunnel)].outboundSA)
        s.gw1.sas.entries[i1].sequence = (1 << 32) - 3
        let w = s.gw2.sas.inbound(0x1001)!
        w.pointee.window.accept((1 << 32) - 3)
        try ping(s, count: 6)
        #expect(s.a.echoReplies().count == 6)
        #expect(s.gw1.saList.first { !$0.inbound }?.sequence == (1 << 32) + 3)
        #expect(s.gw2.saList.first { $0.inbound }?.sequence == (1 << 32) + 3)
        // Without ESN the same SA would have had to stop at 2^32 - 1.
        let plain = try TwoSites(protected: .esp, esn: false)
        let j = Int(plain.gw1.tunnelStates[Int(plain.gw1.ifs[plain.gw1Tunnel].tunnel)].outboundSA)
        plain.gw1.sas.entries[j].sequence = UInt64(UInt32.max) - 1
        plain.gw2.sas.inbound(0x1001)!.pointee.window.accept(UInt64(UInt32.max) - 1)
        try ping(plain, count: 3)
        #expect(plain.a.echoReplies().count == 1)
        #expect(plain.gw1.drops(.ipsecSAExpired) == 2)
        #expect(plain.gw1.drainEvents().contains { if case .saExpired(_, 0x1001, false) = $0 { true } else { false } })
    }

    @Test("lifetimes: the soft byte limit asks for a rekey once, the hard one stops the SA; time limits likewise")
    func lifetimes() throws {
        let s = try TwoSites(protected: .natTraversal, lifetime: SALifetime(softBytes: 150, hardBytes: 400))
        try ping(s, count: 2)
        var events = s.gw1.drainEvents()
        #expect(events.filter { if case .saExpiring(_, 0x1001, false) = $0 { true } else { false } }.count == 1)
        try ping(s, count: 6)
        events = s.gw1.drainEvents()
        #expect(events.contains { if case .saExpired(_, 0x1001, false) = $0 { true } else { false } })
        #expect(s.gw1.drops(.ipsecSAExpired) > 0)
        // A new pair of SAs (a rekey): traffic flows again; the old inbound one goes last.
        try s.installSAs(.aes128GCM, spi1: 0x1003, spi2: 0x2004)
        #expect(s.gw2.saList.filter(\.inbound).count == 2, "old and new inbound side by side")
        _ = s.a.echoReplies()
        try ping(s)
        #expect(s.a.echoReplies().count == 1)
        #expect(s.gw2.removeSA(tunnel: s.gw2Tunnel, spi: 0x1001, inbound: true))
        #expect(s.gw2.saList.filter(\.inbound).map(\.spi) == [0x1003])
        s.gw2.sas.checkInvariants()
        // Time: the new SAs have no limits; a third pair with 10 s / 20 s does.
        let t = try TwoSites(protected: .esp, lifetime: SALifetime(softSeconds: 10, hardSeconds: 20))
        t.net.advance(by: .seconds(11))
        #expect(t.gw1.drainEvents().contains { if case .saExpiring(_, 0x1001, false) = $0 { true } else { false } })
        t.net.advance(by: .seconds(10))
        #expect(t.gw1.drainEvents().contains { if case .saExpired(_, 0x1001, false) = $0 { true } else { false } })
        try ping(t)
        #expect(t.a.echoReplies().isEmpty)
    }

    @Test("a policy-based link: ESP tunnel mode between the subnets, inner packets outside them refused both ways",
          arguments: [ESPEncapsulation.esp, .natTraversal])
    func policyBased(_ encapsulation: ESPEncapsulation) throws {
        let s = try TwoSites(policyBased: encapsulation)
        let u = capture(s)
        try ping(s, count: 2)
        #expect(s.a.echoReplies().count == 2)
        for f in u.frames {
            let e = try #require(esp(f))
            #expect(Array(e[0..<4]) == [0, 0, 0x10, 0x01])
        }
        let t = try #require(s.gw1.tunnelList.first)
        #expect(t.configuration.overhead == 20 + 37 + (encapsulation == .esp ? 0 : 8), "no GRE header in tunnel mode")
        // GW1's own address is outside its local subnets: not sent.
        try s.gw1.ping(IPv4Address(10, 2, 0, 2), source: IPv4Address(172, 16, 0, 1))
        s.net.run()
        #expect(s.gw1.drops(.ipsecSelectorMismatch) == 1)
        // Were GW1 to send it anyway, GW2 refuses it: its source is not in GW2's remote subnets.
        let t1 = Int(s.gw1.ifs[s.gw1Tunnel].tunnel)
        s.gw1.tunnelStates[t1].localSelectors = SelectorList([IPPrefix("0.0.0.0/0")!])
        try s.gw1.ping(IPv4Address(10, 2, 0, 2), source: IPv4Address(172, 16, 0, 1))
        s.net.run()
        #expect(s.gw2.drops(.ipsecSelectorMismatch) == 1)
        #expect(s.gw2.drops(.ipsecSelectorMismatch, on: s.gw2Tunnel) == 1)
        s.checkInvariants()
    }

    @Test("SA installation refuses reserved and duplicate SPIs, wrong key lengths and unprotected tunnels")
    func installationErrors() throws {
        let s = try TwoSites(protected: .esp)
        let k = TwoSites.keys(.aes128GCM, 9)
        #expect(throws: IPsecError.reservedSPI(7)) { try s.gw1.addInboundSA(tunnel: s.gw1Tunnel, SAConfiguration(spi: 7, algorithm: .aes128GCM, keyMaterial: k)) }
        #expect(throws: IPsecError.spiInUse(0x2002)) { try s.gw1.addInboundSA(tunnel: s.gw1Tunnel, SAConfiguration(spi: 0x2002, algorithm: .aes128GCM, keyMaterial: k)) }
        #expect(throws: IPsecError.crypto(.keyMaterialLength(expected: 36, got: 20))) {
            try s.gw1.addInboundSA(tunnel: s.gw1Tunnel, SAConfiguration(spi: 0x3000, algorithm: .aes256GCM, keyMaterial: k))
        }
        let plain = try TwoSites()
        #expect(throws: IPsecError.notProtected("gre0")) {
            try plain.gw1.setOutboundSA(tunnel: plain.gw1Tunnel, SAConfiguration(spi: 0x3000, algorithm: .aes128GCM, keyMaterial: k))
        }
        var c = TunnelConfiguration(name: "x", local: .v4(TwoSites.gw1Underlay), remote: .v4(IPv4Address(192, 0, 2, 9)))
        c.encapsulation = .greInUDP
        c.protection = TunnelProtection()
        #expect(throws: TunnelError.self) { try s.gw1.addTunnel(c) }
        // Removing the tunnel takes its SAs with it.
        try s.gw1.removeTunnel(named: "gre0")
        #expect(s.gw1.saList.isEmpty)
        s.gw1.sas.checkInvariants()
    }
}

/// tshark, given the keys, decrypts what the stack sends: the ESP format
/// (SPI, sequence, IV, padding, trailer, ICV, AAD) checked by another
/// implementation, over plain ESP and UDP 4500. Debian's tshark 4.0
/// decrypts AES-GCM but not ChaCha20-Poly1305 ESP; that one is checked by
/// RFC 8439's known answer (`AEADTests`) and the round trips above.
@Suite("GRE over IPsec: tshark decrypts the underlay",
       .enabled(if: Shell.succeeds("command -v tshark"), "needs tshark (make deps installs it)"))
struct IPsecDecodeTests {
    static func hex(_ s: SecretBytes) -> String { s.withUnsafeBytes { $0.map { String(format: "%02x", $0) }.joined() } }

    @Test(arguments: IPsecTests.cases.filter { $0.1 != .chacha20Poly1305 })
    func tsharkDecrypts(_ encapsulation: ESPEncapsulation, _ algorithm: AEADAlgorithm) throws {
        let s = try TwoSites(protected: encapsulation, algorithm: algorithm)
        var frames: [[UInt8]] = []
        s.net.observer = { from, _, f in
            if (from.stack == 1 && from.interface == s.gw1Wan) || (from.stack == 2 && from.interface == s.gw2Wan),
               f.be16(12) == 0x0800 { frames.append(Array(f)) }
        }
        for n in 0..<3 {
            try s.a.ping(IPv4Address(10, 2, 0, 2), identifier: 9, sequence: UInt16(n), payloadSize: 100 + n)
            s.net.run()
        }
        #expect(s.a.echoReplies().count == 3)
        let name = "AES-GCM with 16 octet ICV [RFC4106]"
        func sa(_ src: IPv4Address, _ dst: IPv4Address, _ spi: UInt32, _ seed: UInt8) -> String {
            "\"IPv4\",\"\(src)\",\"\(dst)\",\"0x\(String(format: "%08x", spi))\",\"\(name)\",\"0x\(Self.hex(TwoSites.keys(algorithm, seed)))\",\"NULL\",\"\""
        }
        let out = try tshark(frames, options: [
            "-o", "esp.enable_encryption_decode:TRUE",
            "-o", "uat:esp_sa:" + sa(TwoSites.gw1Underlay, TwoSites.gw2Underlay, 0x1001, 1),
            "-o", "uat:esp_sa:" + sa(TwoSites.gw2Underlay, TwoSites.gw1Underlay, 0x2002, 2),
            "-T", "fields", "-E", "separator=|", "-e", "esp.spi", "-e", "esp.sequence", "-e", "gre.key", "-e", "icmp.type", "-e", "ip.src",
        ])
        let lines = out.split(separator: "\n").map { $0.split(separator: "|", omittingEmptySubsequences: false).map(String.init) }
        #expect(lines.count == 6, "\(out)")
        for l in lines where l.count == 5 {
            #expect(l[2] == "42" || l[2] == "0x0000002a", "GRE inside, with its key: \(l)")
            #expect(l[3] == "8" || l[3] == "0", "ICMP echo inside: \(l)")
            #expect(l[4].contains("10.1.0.2") || l[4].contains("10.2.0.2"), "inner addresses: \(l)")
        }
    }
}
