import AnygateWire
import Testing

/// Runs `body` over a mutable copy of `bytes`.
func with<R>(_ bytes: [UInt8], _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
    var b = bytes
    return try b.withUnsafeMutableBytes { try body($0) }
}

/// The error a parse of `bytes` produced, or nil when it succeeded.
func parseError(_ bytes: [UInt8], _ body: (UnsafeMutableRawBufferPointer) throws(WireError) -> Void) -> WireError? {
    var b = bytes
    return b.withUnsafeMutableBytes { x in
        do throws(WireError) { try body(x); return nil } catch { return error }
    }
}

@Suite("Ethernet and ARP")
struct EthernetARPTests {
    @Test("untagged and 802.1Q frames")
    func ethernet() throws {
        var f = [UInt8](repeating: 0, count: 64)
        f.withUnsafeMutableBytes { b in
            EthernetRepr(destination: .broadcast, source: MACAddress(2, 0, 0, 0, 0, 1),
                         vlan: VLANTag(identifier: 100, priority: 5), etherType: .ipv4).emit(into: b)
        }
        try with(f) { b in
            let e = try EthernetFrame(validating: b)
            #expect(e.isTagged && e.vlanID == 100 && e.priority == 5 && e.etherType == .ipv4 && e.headerLength == 18)
            let r = EthernetRepr(parsing: e)
            #expect(r.vlan?.identifier == 100 && r.source == MACAddress(2, 0, 0, 0, 0, 1))
        }
        #expect(parseError(Array(f[0..<13])) { b throws(WireError) in _ = try EthernetFrame(validating: b) } == .truncated)
        // Tagged but cut inside the tag.
        #expect(parseError(Array(f[0..<16])) { b throws(WireError) in _ = try EthernetFrame(validating: b) } == .truncated)
        #expect(EtherType(rawValue: 0x1234).description == "0x1234")
    }

    @Test("ARP round trip and refusals")
    func arp() throws {
        let r = ARPRepr(operation: .request, senderMAC: MACAddress(2, 0, 0, 0, 0, 1), senderIP: IPv4Address(10, 0, 0, 1),
                        targetMAC: .zero, targetIP: IPv4Address(10, 0, 0, 2))
        var buf = [UInt8](repeating: 0, count: 28)
        buf.withUnsafeMutableBytes { r.emit(into: $0) }
        #expect(try with(buf) { try ARPRepr(parsing: $0) } == r)
        #expect(parseError(Array(buf[0..<27])) { b throws(WireError) in _ = try ARPRepr(parsing: b) } == .truncated)
        var tokenRing = buf; tokenRing[1] = 6
        #expect(parseError(tokenRing) { b throws(WireError) in _ = try ARPRepr(parsing: b) } == .unsupported)
        var v6 = buf; v6[2] = 0x86; v6[3] = 0xDD
        #expect(parseError(v6) { b throws(WireError) in _ = try ARPRepr(parsing: b) } == .unsupported)
    }
}

@Suite("IPv4")
struct IPv4Tests {
    static let repr = IPv4Repr(source: IPv4Address(192, 0, 2, 1), destination: IPv4Address(198, 51, 100, 7), proto: .udp,
                               payloadLength: 8, ttl: 64, tos: 0x10, identification: 0x1234, dontFragment: true)

    static var packet: [UInt8] {
        var b = [UInt8](repeating: 0xEE, count: 28)
        b.withUnsafeMutableBytes { repr.emit(into: $0) }
        return b
    }

    @Test("emit, then parse, gives the same value, with a valid checksum")
    func roundTrip() throws {
        #expect(try with(Self.packet) { try IPv4Repr(parsing: $0) } == Self.repr)
        try with(Self.packet) { b in
            let p = try IPv4Packet(validating: b)
            #expect(p.dontFragment && !p.moreFragments && !p.isFragment && p.payload.count == 8)
        }
    }

    @Test("a known header: the RFC 1071 worked checksum of a real packet")
    func knownHeader() throws {
        // 45 00 00 73 00 00 40 00 40 11 b8 61 c0 a8 00 01 c0 a8 00 c7 (checksum 0xb861)
        let h: [UInt8] = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xB8, 0x61,
                          0xC0, 0xA8, 0x00, 0x01, 0xC0, 0xA8, 0x00, 0xC7] + [UInt8](repeating: 0, count: 0x73 - 20)
        let r = try with(h) { try IPv4Repr(parsing: $0) }
        #expect(r.source == IPv4Address(192, 168, 0, 1) && r.proto == .udp && r.payloadLength == 0x73 - 20)
        var copy = h
        copy.withUnsafeMutableBytes { r.emit(into: $0) }
        #expect(copy[10] == 0xB8 && copy[11] == 0x61)
    }

    func parse(_ b: [UInt8]) -> WireError? {
        parseError(b) { x throws(WireError) in _ = try IPv4Packet(validating: x) }
    }

    @Test("every malformed header is an error value")
    func malformed() {
        let p = Self.packet
        #expect(parse(Array(p[0..<19])) == .truncated)
        var v = p; v[0] = 0x65
        #expect(parse(v) == .badVersion)
        var ihlLow = p; ihlLow[0] = 0x44
        #expect(parse(ihlLow) == .badHeaderLength)
        var ihlHigh = p; ihlHigh[0] = 0x48   // 32 bytes of header in a 28-byte buffer
        #expect(parse(ihlHigh) == .badHeaderLength)
        var tooLong = p; tooLong[3] = 29
        #expect(parse(tooLong) == .badTotalLength)
        var tooShort = p; tooShort[3] = 19
        #expect(parse(tooShort) == .badTotalLength)
        var sum = p; sum[11] ^= 1
        #expect(parse(sum) == .badChecksum)
        #expect(parseError(sum) { x throws(WireError) in _ = try IPv4Packet(validating: x, verifyChecksum: false) } == nil)
    }

    @Test("options are walked and malformed ones refused")
    func options() {
        func packet(options: [UInt8]) -> [UInt8] {
            var b = [UInt8](repeating: 0, count: 20 + options.count + 4)
            b.withUnsafeMutableBytes { x in
                var r = Self.repr
                r.payloadLength = options.count + 4
                r.emit(into: x)
                x.setBE8(0, 0x40 | UInt8((20 + options.count) / 4))
                for (i, o) in options.enumerated() { x.setBE8(20 + i, o) }
                IPv4Packet(unchecked: x).fillChecksum()
            }
            return b
        }
        #expect(parse(packet(options: [1, 1, 1, 0])) == nil)                 // NOPs then end of list
        #expect(parse(packet(options: [0x94, 4, 0, 0])) == nil)              // router alert
        #expect(parse(packet(options: [0x07, 0, 0, 0])) == .badOption)       // zero length
        #expect(parse(packet(options: [0x07, 1, 0, 0])) == .badOption)       // length below 2
        #expect(parse(packet(options: [0x07, 8, 4, 0])) == .badOption)       // runs past the header
        #expect(parse(packet(options: [1, 1, 1, 0x07])) == .badOption)       // no room for the length byte
        with(packet(options: [0x94, 4, 0, 0, 1, 0x07, 3, 0])) { b in
            var it = IPv4OptionIterator(options: IPv4Packet(unchecked: b).options)
            var seen: [(UInt8, Bool)] = []
            while let o = it.next() { seen.append((o.type, o.isCopied)) }
            #expect(seen.map(\.0) == [0x94, 1, 0x07])
            #expect(seen.map(\.1) == [true, false, false])
        }
    }
}

@Suite("ICMP, UDP and GRE")
struct TransportTests {
    @Test("ICMP echo and fragmentation-needed round trips; bad input refused")
    func icmp() throws {
        var m = [UInt8](repeating: 0, count: 8) + [1, 2, 3]
        m.withUnsafeMutableBytes { ICMPv4Repr.echoRequest(identifier: 0xABCD, sequence: 7).emit(into: $0) }
        #expect(try with(m) { try ICMPv4Repr(parsing: $0) } == .echoRequest(identifier: 0xABCD, sequence: 7))
        var f = [UInt8](repeating: 0, count: 8 + 28)
        f.withUnsafeMutableBytes { ICMPv4Repr.destinationUnreachable(code: 4, nextHopMTU: 1400).emit(into: $0) }
        #expect(try with(f) { try ICMPv4Repr(parsing: $0) } == .destinationUnreachable(code: 4, nextHopMTU: 1400))
        var bad = m; bad[9] ^= 0xFF
        #expect(parseError(bad) { b throws(WireError) in _ = try ICMPv4Repr(parsing: b) } == .badChecksum)
        #expect(parseError(Array(m[0..<7])) { b throws(WireError) in _ = try ICMPv4Repr(parsing: b) } == .truncated)
        #expect(ICMPv4Type(rawValue: 200).description == "type-200")
    }

    @Test("UDP checksum over the pseudo-header; zero means none; lengths checked")
    func udp() throws {
        let s = IPv4Address(10, 0, 0, 1), d = IPv4Address(10, 0, 0, 2)
        var u = [UInt8](repeating: 0, count: 8) + Array("hello".utf8)
        u.withUnsafeMutableBytes { UDPRepr(sourcePort: 5000, destinationPort: 53, payloadLength: 5).emit(into: $0, source: s, destination: d) }
        #expect(try with(u) { try UDPRepr(parsing: $0, source: s, destination: d) } == UDPRepr(sourcePort: 5000, destinationPort: 53, payloadLength: 5))
        // The wrong pseudo-header fails the checksum.
        #expect(parseError(u) { b throws(WireError) in _ = try UDPRepr(parsing: b, source: s, destination: s) } == .badChecksum)
        var none = u; none[6] = 0; none[7] = 0
        #expect(parseError(none) { b throws(WireError) in _ = try UDPRepr(parsing: b, source: s, destination: s) } == nil)
        var long = u; long[5] = 14
        #expect(parseError(long) { b throws(WireError) in _ = try UDPRepr(parsing: b, source: s, destination: d) } == .badTotalLength)
        var short = u; short[5] = 7
        #expect(parseError(short) { b throws(WireError) in _ = try UDPRepr(parsing: b, source: s, destination: d) } == .badTotalLength)
        #expect(parseError(Array(u[0..<7])) { b throws(WireError) in _ = try UDPRepr(parsing: b, source: s, destination: d) } == .truncated)
        // Over IPv6 a zero checksum is an error.
        let s6 = IPv6Address("2001:db8::1")!, d6 = IPv6Address("2001:db8::2")!
        var u6 = u
        u6.withUnsafeMutableBytes { UDPRepr(sourcePort: 1, destinationPort: 2, payloadLength: 5).emit(into: $0, source: s6, destination: d6) }
        #expect(parseError(u6) { b throws(WireError) in _ = try UDPDatagram(validating: b, source: s6, destination: d6) } == nil)
        var z6 = u6; z6[6] = 0; z6[7] = 0
        #expect(parseError(z6) { b throws(WireError) in _ = try UDPDatagram(validating: b, source: s6, destination: d6) } == .badChecksum)
    }

    @Test("GRE: every combination of checksum, key and sequence round-trips", arguments: [
        (false, nil, nil), (true, nil, nil), (false, UInt32(42), nil), (false, nil, UInt32(7)), (true, UInt32(0xDEADBEEF), UInt32(1)),
    ] as [(Bool, UInt32?, UInt32?)])
    func greRoundTrip(checksum: Bool, key: UInt32?, sequence: UInt32?) throws {
        let r = GRERepr(protocolType: .ipv4, checksumPresent: checksum, key: key, sequence: sequence)
        var b = [UInt8](repeating: 0, count: r.headerLength) + [0x45, 0, 0, 20, 9, 9, 9]
        b.withUnsafeMutableBytes { r.emit(into: $0) }
        #expect(try with(b) { try GRERepr(parsing: $0) } == r)
        let payloadCount = try with(b) { x in try GREHeader(validating: x).payload.count }
        #expect(payloadCount == 7)
        if checksum {
            var bad = b; bad[b.count - 1] ^= 1
            #expect(parseError(bad) { x throws(WireError) in _ = try GRERepr(parsing: x) } == .badChecksum)
        }
    }

    @Test("GRE refusals")
    func greBad() {
        func parse(_ b: [UInt8]) -> WireError? { parseError(b) { x throws(WireError) in _ = try GRERepr(parsing: x) } }
        #expect(parse([0x00, 0x00, 0x08]) == .truncated)
        #expect(parse([0x00, 0x01, 0x08, 0x00]) == .badVersion)           // version 1 (PPTP)
        #expect(parse([0x40, 0x00, 0x08, 0x00]) == .unsupported)          // routing present
        #expect(parse([0x08, 0x00, 0x08, 0x00]) == .unsupported)          // strict source route
        #expect(parse([0x20, 0x00, 0x08, 0x00, 0, 0]) == .truncated)      // key flag without the key
        #expect(parse([0x00, 0x80, 0x08, 0x00]) == nil)                   // reserved bits 6-12 ignored
    }
}

@Suite("IPv6 and ICMPv6")
struct IPv6Tests {
    @Test("IPv6 header round trip and refusals")
    func ipv6() throws {
        let r = IPv6Repr(source: IPv6Address("2001:db8::1")!, destination: IPv6Address("ff02::1")!, nextHeader: .icmpv6,
                         payloadLength: 8, hopLimit: 255, trafficClass: 0xB8, flowLabel: 0x12345)
        var b = [UInt8](repeating: 0, count: 48)
        b.withUnsafeMutableBytes { r.emit(into: $0) }
        #expect(try with(b) { try IPv6Repr(parsing: $0) } == r)
        func parse(_ x: [UInt8]) -> WireError? { parseError(x) { y throws(WireError) in _ = try IPv6Packet(validating: y) } }
        #expect(parse(Array(b[0..<39])) == .truncated)
        var v4 = b; v4[0] = 0x45
        #expect(parse(v4) == .badVersion)
        var long = b; long[5] = 9
        #expect(parse(long) == .badTotalLength)
    }

    @Test("ICMPv6 checksum covers the pseudo-header; neighbour solicitation carries its target")
    func icmpv6() throws {
        let s = IPv6Address("fe80::1")!, d = IPv6Address("ff02::1:ff00:2")!
        let target = IPv6Address("2001:db8::2")!
        var m = [UInt8](repeating: 0, count: 24)
        m.withUnsafeMutableBytes { ICMPv6Repr.neighborSolicitation(target: target).emit(into: $0, source: s, destination: d) }
        #expect(try with(m) { try ICMPv6Repr(parsing: $0, source: s, destination: d) } == .neighborSolicitation(target: target))
        #expect(parseError(m) { x throws(WireError) in _ = try ICMPv6Repr(parsing: x, source: d, destination: s) } == nil,
                "the pseudo-header sum is symmetric in source and destination")
        #expect(parseError(m) { x throws(WireError) in _ = try ICMPv6Repr(parsing: x, source: s, destination: target) } == .badChecksum)
        var e = [UInt8](repeating: 0, count: 8)
        e.withUnsafeMutableBytes { ICMPv6Repr.packetTooBig(mtu: 1280).emit(into: $0, source: s, destination: d) }
        #expect(try with(e) { try ICMPv6Repr(parsing: $0, source: s, destination: d) } == .packetTooBig(mtu: 1280))
        #expect(parseError(Array(m[0..<20])) { x throws(WireError) in _ = try ICMPv6Repr(parsing: x, source: s, destination: d) } != nil)
    }
}
