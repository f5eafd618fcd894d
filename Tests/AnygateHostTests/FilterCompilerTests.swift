import AnygateHost
import AnygateWire
import Testing

/// tcpdump expressions compiled by libpcap into programs the stack runs.
@Suite("Filter expressions through libpcap")
struct FilterCompilerTests {
    /// An Ethernet frame with an IPv4 header (20 bytes) and the first 4 bytes of a UDP or TCP header.
    func frame(proto: UInt8, sourcePort: UInt16, destinationPort: UInt16) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 14 + 20 + 8)
        f[12] = 0x08; f[13] = 0x00
        f[14] = 0x45; f[14 + 9] = proto
        f[14 + 2] = 0; f[14 + 3] = 28
        f[34] = UInt8(sourcePort >> 8); f[35] = UInt8(sourcePort & 0xFF)
        f[36] = UInt8(destinationPort >> 8); f[37] = UInt8(destinationPort & 0xFF)
        return f
    }

    func run(_ p: BPFProgram, _ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { p.run($0) } }

    @Test("udp port 53 on frames: a DNS datagram either way matches, TCP to 53 and UDP to 54 do not")
    func udpPort() throws {
        let p = try FilterCompiler.compile("udp port 53", linkType: .ethernet, snaplen: 1000)
        #expect(run(p, frame(proto: 17, sourcePort: 4000, destinationPort: 53)) == 1000)
        #expect(run(p, frame(proto: 17, sourcePort: 53, destinationPort: 4000)) > 0)
        #expect(run(p, frame(proto: 6, sourcePort: 4000, destinationPort: 53)) == 0)
        #expect(run(p, frame(proto: 17, sourcePort: 4000, destinationPort: 54)) == 0)
    }

    @Test("on a tunnel's inner packets (raw IP), the same expression reads from the IP header")
    func rawIP() throws {
        let p = try FilterCompiler.compile("icmp", linkType: .raw)
        var packet = [UInt8](repeating: 0, count: 28)
        packet[0] = 0x45; packet[9] = 1
        #expect(run(p, packet) > 0)
        packet[9] = 17
        #expect(run(p, packet) == 0)
        #expect(FilterCompiler.LinkType.raw.fileLinkType == 101 && FilterCompiler.LinkType.ethernet.fileLinkType == 1)
    }

    @Test("a bad expression is refused with libpcap's reason")
    func refused() {
        #expect(throws: FilterCompiler.Failure.self) { try FilterCompiler.compile("port port", linkType: .ethernet) }
        do {
            _ = try FilterCompiler.compile("udp and frobnicate 7", linkType: .ethernet)
            Issue.record("accepted")
        } catch {
            #expect(error.description.contains("syntax error") || error.description.contains("unknown"), "\(error)")
        }
    }
}
