import AnygateWire
import Testing

/// Parse -> emit -> parse is the identity, and no input traps (STYLE.md 14).
@Suite("Wire properties")
struct PropertyTests {
    /// SplitMix64 (the wire tests do not depend on the stack module).
    struct Rand {
        var s: UInt64
        mutating func next() -> UInt64 {
            s &+= 0x9E37_79B9_7F4A_7C15
            let z = (s ^ (s >> 30)) &* 0xBF58_476D_1CE4_E5B9
            let y = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return y ^ (y >> 31)
        }
        mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
    }

    @Test("random IPv4, UDP, GRE and ARP values survive emit -> parse")
    func roundTrips() throws {
        var r = Rand(s: 3)
        for _ in 0..<2000 {
            let ip = IPv4Repr(source: IPv4Address(rawValue: UInt32(truncatingIfNeeded: r.next())),
                              destination: IPv4Address(rawValue: UInt32(truncatingIfNeeded: r.next())),
                              proto: IPProtocol(rawValue: UInt8(truncatingIfNeeded: r.next())),
                              payloadLength: Int(r.next() % 64), ttl: UInt8(truncatingIfNeeded: r.next()),
                              tos: UInt8(truncatingIfNeeded: r.next()), identification: UInt16(truncatingIfNeeded: r.next()),
                              dontFragment: r.next() & 1 == 0, moreFragments: r.next() & 1 == 0,
                              fragmentOffset: Int(r.next() % 8191) * 8)
            var b = [UInt8](repeating: 0, count: ip.totalLength)
            b.withUnsafeMutableBytes { ip.emit(into: $0) }
            #expect(try with(b) { try IPv4Repr(parsing: $0) } == ip)

            let g = GRERepr(protocolType: EtherType(rawValue: UInt16(truncatingIfNeeded: r.next())),
                            checksumPresent: r.next() & 1 == 0,
                            key: r.next() & 1 == 0 ? UInt32(truncatingIfNeeded: r.next()) : nil,
                            sequence: r.next() & 1 == 0 ? UInt32(truncatingIfNeeded: r.next()) : nil)
            var gb = [UInt8](repeating: 0, count: g.headerLength) + r.bytes(Int(r.next() % 32))
            gb.withUnsafeMutableBytes { g.emit(into: $0) }
            #expect(try with(gb) { try GRERepr(parsing: $0) } == g)

            let s = IPv4Address(rawValue: UInt32(truncatingIfNeeded: r.next()))
            let d = IPv4Address(rawValue: UInt32(truncatingIfNeeded: r.next()))
            let u = UDPRepr(sourcePort: UInt16(truncatingIfNeeded: r.next()), destinationPort: UInt16(truncatingIfNeeded: r.next()),
                            payloadLength: Int(r.next() % 40))
            var ub = [UInt8](repeating: 0, count: 8) + r.bytes(u.payloadLength)
            ub.withUnsafeMutableBytes { u.emit(into: $0, source: s, destination: d) }
            #expect(try with(ub) { try UDPRepr(parsing: $0, source: s, destination: d) } == u)

            let a = ARPRepr(operation: ARPOperation(rawValue: UInt16(truncatingIfNeeded: r.next())),
                            senderMAC: MACAddress(rawValue: r.next()), senderIP: s,
                            targetMAC: MACAddress(rawValue: r.next()), targetIP: d)
            var ab = [UInt8](repeating: 0, count: 28)
            ab.withUnsafeMutableBytes { a.emit(into: $0) }
            #expect(try with(ab) { try ARPRepr(parsing: $0) } == a)
        }
    }

    @Test("random bytes never trap any parser")
    func noTraps() {
        var r = Rand(s: 11)
        var accepted = 0
        for n in 0..<20000 {
            var b = r.bytes(Int(r.next() % 96))
            // Bias some inputs towards plausible headers so parsers get past the first check.
            if !b.isEmpty, n % 3 == 0 { b[0] = 0x45 }
            if b.count > 3, n % 3 == 0 { b[2] = 0; b[3] = UInt8(b.count) }
            let s6 = IPv6Address(high: r.next(), low: r.next())
            b.withUnsafeMutableBytes { x in
                if n % 3 == 0, x.count >= 20 { IPv4Packet(unchecked: x).fillChecksum() }
                if (try? IPv4Packet(validating: x)) != nil { accepted += 1 }
                _ = try? EthernetFrame(validating: x)
                _ = try? ARPRepr(parsing: x)
                _ = try? ICMPv4Repr(parsing: x)
                _ = try? UDPRepr(parsing: x, source: .any, destination: .any)
                _ = try? GRERepr(parsing: x)
                _ = try? IPv6Repr(parsing: x)
                _ = try? ICMPv6Repr(parsing: x, source: s6, destination: s6)
                _ = PacketPrinter.describe(frame: x)
                _ = PacketPrinter.describe(ipv4: x)
            }
        }
        #expect(accepted > 0, "some inputs should be valid IPv4, or the test explores nothing")
    }
}
