import AnygateStack
import AnygateWire
import Testing

/// Captures in the stack: copies of what passes an interface, either way,
/// frames on Ethernet and inner packets on a tunnel, through a filter into
/// a bounded buffer that loses copies, never packets.
@Suite("Capture in the stack", .ledgerAudited)
struct CaptureTests {
    /// tcpdump's "icmp" on Ethernet frames, as libpcap compiles it.
    static let icmpFrames = try! BPFProgram([
        BPFInstruction(code: 0x28, k: 12), BPFInstruction(code: 0x15, jt: 0, jf: 3, k: 0x0800),
        BPFInstruction(code: 0x30, k: 23), BPFInstruction(code: 0x15, jt: 0, jf: 1, k: 1),
        BPFInstruction(code: 0x06, k: 262_144), BPFInstruction(code: 0x06, k: 0),
    ])

    func ping(_ s: TwoSites, _ n: Int) throws {
        for k in 1...n { try s.a.ping(IPv4Address(10, 2, 0, 2), identifier: 5, sequence: UInt16(k)) }
        s.net.run()
    }

    @Test("a ping through GRE: the LAN's frames both ways, the tunnel's inner packets, the underlay's GRE frames")
    func threeInterfaces() throws {
        let s = try TwoSites()
        try ping(s, 1)  // neighbours resolved
        s.gw1.startCapture(interface: s.gw1Lan, directions: .both, program: Self.icmpFrames, snaplen: 65535)
        s.gw1.startCapture(interface: s.gw1Tunnel, directions: .rx, program: nil, snaplen: 65535)
        s.gw1.startCapture(interface: s.gw1Wan, directions: .tx, program: nil, snaplen: 34)
        #expect(s.gw1.capturedInterfaces == [s.gw1Lan, s.gw1Wan, s.gw1Tunnel].sorted())
        try ping(s, 1)
        #expect(s.a.echoReplies().count == 2)
        let lan = try #require(s.gw1.readCapture(interface: s.gw1Lan))
        try #require(lan.packets.count == 2, "\(lan.packets)")
        #expect(!lan.packets[0].outbound && lan.packets[1].outbound)
        // Whole frames: the request from A's MAC, the reply to it.
        #expect(lan.packets[0].bytes.count == lan.packets[0].wireLength && lan.packets[0].bytes[6..<12] == [2, 0, 0, 0, 0, 0xA])
        #expect(lan.packets[0].bytes[34] == 8 && lan.packets[1].bytes[34] == 0, "echo request in, echo reply out")
        #expect(lan.lost == 0 && lan.matched == 2 && !lan.finished)
        // Inside the tunnel: the reply as it came out of GRE, an IPv4 packet from B.
        let tunnel = try #require(s.gw1.readCapture(interface: s.gw1Tunnel))
        try #require(tunnel.packets.count == 1)
        let inner = tunnel.packets[0].bytes
        #expect(inner[0] == 0x45 && inner[9] == 1 && inner[12..<16] == [10, 2, 0, 2] && !tunnel.packets[0].outbound)
        // On the underlay, going out: the request in GRE (protocol 47), cut to 34 bytes (Ethernet and IPv4 headers).
        let wan = try #require(s.gw1.readCapture(interface: s.gw1Wan))
        try #require(wan.packets.count == 1)
        #expect(wan.packets[0].bytes.count == 34 && wan.packets[0].wireLength > 34 && wan.packets[0].bytes[23] == 47)
        // Read once: the buffer is empty until more passes.
        #expect(s.gw1.readCapture(interface: s.gw1Lan)?.packets.isEmpty == true)
        for i in [s.gw1Lan, s.gw1Tunnel, s.gw1Wan] { s.gw1.stopCapture(interface: i) }
        #expect(s.gw1.readCapture(interface: s.gw1Lan) == nil && s.gw1.capturedInterfaces.isEmpty)
        try ping(s, 1)
        #expect(s.a.echoReplies().count == 1, "the replies since the last look")
    }

    @Test("a reader that does not keep up loses copies, counted; every packet still goes through")
    func slowReader() throws {
        let s = try TwoSites()
        try ping(s, 1)
        // Room for a few copies only (a 98-byte echo frame takes 16 + 104 bytes).
        s.gw1.startCapture(interface: s.gw1Lan, directions: .both, program: nil, snaplen: 65535, bufferBytes: 4096)
        try ping(s, 100)
        #expect(s.a.echoReplies().count == 101, "every ping answered")
        let c = try #require(s.gw1.readCapture(interface: s.gw1Lan))
        #expect(c.packets.count == 4096 / 120)
        #expect(c.matched == 200 && c.lost == 200 - UInt64(c.packets.count))
        // Read out, the buffer takes copies again.
        try ping(s, 1)
        #expect(s.gw1.readCapture(interface: s.gw1Lan)?.packets.count == 2)
    }

    @Test("a counted capture ends by itself; a removed interface ends its capture")
    func endings() throws {
        let s = try TwoSites()
        try ping(s, 1)
        s.gw1.startCapture(interface: s.gw1Lan, directions: .rx, program: nil, snaplen: 65535, count: 3)
        try ping(s, 5)
        let c = try #require(s.gw1.readCapture(interface: s.gw1Lan))
        #expect(c.packets.count == 3 && c.finished && c.matched == 3 && c.packets.allSatisfy { !$0.outbound })
        s.gw1.startCapture(interface: s.gw1Wan, directions: .both, program: nil, snaplen: 65535)
        try s.gw1.removeInterface(s.gw1Wan)
        #expect(s.gw1.readCapture(interface: s.gw1Wan)?.finished == true)
    }
}
