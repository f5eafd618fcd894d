import AnygateWire
import Testing

/// The classic BPF machine that runs tcpdump's filter language in the
/// stack: programs libpcap compiled (taken from `tcpdump -dd`), checked
/// and run over frames built here.
@Suite struct BPFTests {
    static func program(_ rows: [(UInt16, UInt8, UInt8, UInt32)]) throws -> BPFProgram {
        try BPFProgram(rows.map { BPFInstruction(code: $0.0, jt: $0.1, jf: $0.2, k: $0.3) })
    }

    /// `tcpdump -dd "udp port 53"` (libpcap 1.10, Ethernet): IPv6 and IPv4, unfragmented, either port.
    static let udpPort53: [(UInt16, UInt8, UInt8, UInt32)] = [
        (0x28, 0, 0, 0x0000000c), (0x15, 0, 6, 0x000086dd), (0x30, 0, 0, 0x00000014), (0x15, 0, 15, 0x00000011),
        (0x28, 0, 0, 0x00000036), (0x15, 12, 0, 0x00000035), (0x28, 0, 0, 0x00000038), (0x15, 10, 11, 0x00000035),
        (0x15, 0, 10, 0x00000800), (0x30, 0, 0, 0x00000017), (0x15, 0, 8, 0x00000011), (0x28, 0, 0, 0x00000014),
        (0x45, 6, 0, 0x00001fff), (0xb1, 0, 0, 0x0000000e), (0x48, 0, 0, 0x0000000e), (0x15, 2, 0, 0x00000035),
        (0x48, 0, 0, 0x00000010), (0x15, 0, 1, 0x00000035), (0x6, 0, 0, 0x00040000), (0x6, 0, 0, 0x00000000),
    ]

    /// An Ethernet frame with an IPv4 header of `ihl` words and a UDP header.
    static func ipv4UDP(sourcePort: UInt16, destinationPort: UInt16, ihl: Int = 5, fragmentOffset: UInt16 = 0,
                        proto: UInt8 = 17) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 14 + ihl * 4 + 8 + 4)
        f[12] = 0x08; f[13] = 0x00
        f[14] = 0x40 | UInt8(ihl)
        let total = UInt16(f.count - 14)
        f[16] = UInt8(total >> 8); f[17] = UInt8(total & 0xFF)
        f[20] = UInt8(fragmentOffset >> 8); f[21] = UInt8(fragmentOffset & 0xFF)
        f[22] = 64; f[23] = proto
        let u = 14 + ihl * 4
        f[u] = UInt8(sourcePort >> 8); f[u + 1] = UInt8(sourcePort & 0xFF)
        f[u + 2] = UInt8(destinationPort >> 8); f[u + 3] = UInt8(destinationPort & 0xFF)
        return f
    }

    static func ipv6UDP(sourcePort: UInt16, destinationPort: UInt16) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 14 + 40 + 8)
        f[12] = 0x86; f[13] = 0xDD
        f[14] = 0x60
        f[19] = 8; f[20] = 17; f[21] = 64
        f[54] = UInt8(sourcePort >> 8); f[55] = UInt8(sourcePort & 0xFF)
        f[56] = UInt8(destinationPort >> 8); f[57] = UInt8(destinationPort & 0xFF)
        return f
    }

    static func run(_ p: BPFProgram, _ f: [UInt8], wireLength: Int? = nil) -> UInt32 {
        f.withUnsafeBytes { p.run($0, wireLength: wireLength) }
    }

    @Test func libpcapsUDPPort53MatchesWhatTcpdumpWouldAndNothingElse() throws {
        let p = try Self.program(Self.udpPort53)
        #expect(Self.run(p, Self.ipv4UDP(sourcePort: 5000, destinationPort: 53)) == 0x40000)
        #expect(Self.run(p, Self.ipv4UDP(sourcePort: 53, destinationPort: 5000)) == 0x40000)
        // The IPv4 header length comes from the packet (ldx msh): options move the ports.
        #expect(Self.run(p, Self.ipv4UDP(sourcePort: 53, destinationPort: 1, ihl: 7)) == 0x40000)
        #expect(Self.run(p, Self.ipv6UDP(sourcePort: 1, destinationPort: 53)) == 0x40000)
        #expect(Self.run(p, Self.ipv4UDP(sourcePort: 5000, destinationPort: 54)) == 0)
        #expect(Self.run(p, Self.ipv4UDP(sourcePort: 53, destinationPort: 53, proto: 6)) == 0)  // TCP
        // A later fragment has no ports to match.
        #expect(Self.run(p, Self.ipv4UDP(sourcePort: 53, destinationPort: 53, fragmentOffset: 100)) == 0)
        #expect(Self.run(p, Self.ipv6UDP(sourcePort: 1, destinationPort: 80)) == 0)
    }

    @Test func aLoadPastTheCapturedBytesRejectsThePacket() throws {
        let p = try Self.program(Self.udpPort53)
        let whole = Self.ipv4UDP(sourcePort: 5000, destinationPort: 53)
        // Cut inside the UDP header: the port load fails and the packet is not taken.
        #expect(Self.run(p, Array(whole.prefix(14 + 20 + 3))) == 0)
        #expect(Self.run(p, []) == 0)
        #expect(Self.run(p, Array(whole.prefix(13))) == 0)
    }

    @Test func arithmeticScratchMemoryAndTheLengthWork() throws {
        // X = 7; A = X; A *= 6; A %= 5; return A.
        let p = try Self.program([(0x01, 0, 0, 7), (0x87, 0, 0, 0), (0x24, 0, 0, 6), (0x94, 0, 0, 5), (0x16, 0, 0, 0)])
        #expect(Self.run(p, [1, 2, 3]) == 2)  // 42 % 5
        // A = len (the wire's, not the captured bytes'); M[3] = A; X = M[3]; A += X: twice the length.
        let q = try Self.program([(0x80, 0, 0, 0), (0x02, 0, 0, 3), (0x61, 0, 0, 3), (0x0C, 0, 0, 0), (0x16, 0, 0, 0)])
        #expect(Self.run(q, [0, 0], wireLength: 1500) == 3000)
        // Division by X = 0 at run time rejects the packet.
        let r = try Self.program([(0x00, 0, 0, 10), (0x01, 0, 0, 0), (0x3C, 0, 0, 0), (0x06, 0, 0, 1)])
        #expect(Self.run(r, [0]) == 0)
        // jset and ja.
        let s = try Self.program([(0x30, 0, 0, 0), (0x45, 0, 1, 0x80), (0x05, 0, 0, 1), (0x06, 0, 0, 0), (0x06, 0, 0, 99)])
        #expect(Self.run(s, [0x80]) == 99)
        #expect(Self.run(s, [0x7F]) == 0)
    }

    @Test(arguments: [
        ([], BPFProgram.Invalid.empty),
        ([(0x06, 0, 0, 0), (0x00, 0, 0, 0)], .noReturnAtEnd),
        ([(0x15, 1, 0, 0), (0x06, 0, 0, 0)], .jumpOutOfRange(at: 0)),
        ([(0x05, 0, 0, 0xFFFF_FFFF), (0x06, 0, 0, 0)], .jumpOutOfRange(at: 0)),
        ([(0x02, 0, 0, 16), (0x06, 0, 0, 0)], .memoryIndex(at: 0)),
        ([(0x60, 0, 0, 99), (0x06, 0, 0, 0)], .memoryIndex(at: 0)),
        ([(0x34, 0, 0, 0), (0x06, 0, 0, 0)], .divisionByZero(at: 0)),
        ([(0x94, 0, 0, 0), (0x06, 0, 0, 0)], .divisionByZero(at: 0)),
        ([(0xFF, 0, 0, 0), (0x06, 0, 0, 0)], .unknownOpcode(at: 0, code: 0xFF)),
        ([(0x38, 0, 0, 0), (0x06, 0, 0, 0)], .unknownOpcode(at: 0, code: 0x38)),
    ] as [([(UInt16, UInt8, UInt8, UInt32)], BPFProgram.Invalid)])
    func badProgramsAreRefusedWithTheInstruction(_ rows: [(UInt16, UInt8, UInt8, UInt32)], _ why: BPFProgram.Invalid) {
        #expect(throws: why) { try Self.program(rows) }
    }

    @Test func randomProgramsThatPassTheCheckAlwaysEndAndNeverReadOutOfBounds() {
        // Any program the check accepts runs to a return on any input.
        var g = XorShift(state: 0x9E37_79B9_7F4A_7C15)
        let codes: [UInt16] = [0x00, 0x20, 0x28, 0x30, 0x40, 0x48, 0x50, 0x60, 0x80, 0x01, 0x61, 0x81, 0xB1, 0x02, 0x03,
                               0x04, 0x0C, 0x14, 0x24, 0x34, 0x3C, 0x44, 0x54, 0x64, 0x74, 0x84, 0x94, 0xA4, 0x05, 0x15,
                               0x1D, 0x25, 0x35, 0x45, 0x06, 0x16, 0x07, 0x87]
        var accepted = 0
        for _ in 0..<2000 {
            let n = Int.random(in: 1...12, using: &g)
            var rows = (0..<n).map { _ in
                BPFInstruction(code: codes.randomElement(using: &g)!, jt: UInt8.random(in: 0...4, using: &g),
                               jf: UInt8.random(in: 0...4, using: &g), k: UInt32.random(in: 0...40, using: &g))
            }
            rows.append(BPFInstruction(code: 0x16))  // ret A
            guard let p = try? BPFProgram(rows) else { continue }
            accepted += 1
            let frame = (0..<Int.random(in: 0...64, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
            _ = Self.run(p, frame)
        }
        #expect(accepted > 200)
    }
}

/// A seeded generator, so the random programs are the same on every run.
struct XorShift: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}
