import AnygateWire
import Testing

/// Software segmentation (GSO) and checksum completion, checked against
/// segments built independently and checksums computed here byte by byte.
@Suite("Segmentation of super-frames")
struct SegmentationTests {
    /// RFC 1071 the slow way: 16-bit big-endian words, end-around carry.
    static func referenceSum(_ bytes: [UInt8]) -> UInt32 {
        var s: UInt32 = 0
        var i = 0
        while i < bytes.count {
            s += UInt32(bytes[i]) << 8 | (i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0)
            i += 2
        }
        while s > 0xFFFF { s = (s & 0xFFFF) + (s >> 16) }
        return s
    }

    /// Whether a packet's TCP/UDP checksum is right (pseudo-header built here).
    static func transportChecksumOK(_ packet: [UInt8]) -> Bool {
        let v6 = packet[0] >> 4 == 6
        let hl = v6 ? 40 : Int(packet[0] & 0x0F) * 4
        let proto = v6 ? packet[6] : packet[9]
        let l4 = Array(packet[hl...])
        var pseudo = v6 ? Array(packet[8..<40]) : Array(packet[12..<20])
        pseudo += v6 ? [UInt8(l4.count >> 24), UInt8((l4.count >> 16) & 0xFF), UInt8((l4.count >> 8) & 0xFF), UInt8(l4.count & 0xFF), 0, 0, 0, proto]
                     : [0, proto, UInt8(l4.count >> 8), UInt8(l4.count & 0xFF)]
        return referenceSum(pseudo + l4 + (l4.count % 2 == 1 ? [0] : [])) == 0xFFFF
            || referenceSum(pseudo + l4) == 0xFFFF
    }

    /// An IPv4 TCP super-frame: 32-byte TCP header (timestamps), flags
    /// CWR|PSH|FIN|ACK, the payload bytes counting up, checksum partial
    /// (the pseudo-header sum over the whole length, as the kernel leaves it).
    static func tcpSuperFrame(payload: Int, id: UInt16 = 0x1234, seq: UInt32 = 0xFFFF_F000, flags: UInt8 = 0x80 | 0x10 | 0x08 | 0x01) -> [UInt8] {
        let tcpLength = 32 + payload
        var p = [UInt8](repeating: 0, count: 20 + tcpLength)
        p.withUnsafeMutableBytes { b in
            IPv4Repr(source: IPv4Address(10, 1, 0, 2), destination: IPv4Address(10, 2, 0, 2), proto: .tcp, payloadLength: tcpLength,
                     identification: id, dontFragment: true).emit(into: b)
        }
        let tcp: [UInt8] = [0x13, 0x88, 0x00, 0x50, UInt8(seq >> 24), UInt8((seq >> 16) & 0xFF), UInt8((seq >> 8) & 0xFF), UInt8(seq & 0xFF),
                            0, 0, 0, 1, 0x80, flags, 0x01, 0xF5, 0, 0, 0, 0,
                            1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]
        for (i, x) in tcp.enumerated() { p[20 + i] = x }
        for i in 0..<payload { p[52 + i] = UInt8(truncatingIfNeeded: i &* 7 &+ 3) }
        // Partial: the folded pseudo-header sum in the field.
        let partial = UInt16(referenceSum([10, 1, 0, 2, 10, 2, 0, 2, 0, 6, UInt8(tcpLength >> 8), UInt8(tcpLength & 0xFF)]))
        p[36] = UInt8(partial >> 8); p[37] = UInt8(partial & 0xFF)
        return p
    }

    /// The same as an IPv6 packet from 2001:db8:1::2 to 2001:db8:2::2.
    static func tcp6SuperFrame(payload: Int, flags: UInt8 = 0x18) -> [UInt8] {
        let v4 = tcpSuperFrame(payload: payload, flags: flags)
        let tcpLength = 32 + payload
        var p = [UInt8](repeating: 0, count: 40)
        let source = IPv6Address("2001:db8:1::2")!, destination = IPv6Address("2001:db8:2::2")!
        p.withUnsafeMutableBytes { IPv6Repr(source: source, destination: destination, nextHeader: .tcp, payloadLength: tcpLength).emit(into: $0) }
        p += v4[20...]
        var pseudo = Array(p[8..<40])
        pseudo += [UInt8(tcpLength >> 24), UInt8((tcpLength >> 16) & 0xFF), UInt8((tcpLength >> 8) & 0xFF), UInt8(tcpLength & 0xFF), 0, 0, 0, 6]
        let partial = UInt16(referenceSum(pseudo))
        p[40 + 16] = UInt8(partial >> 8); p[40 + 17] = UInt8(partial & 0xFF)
        return p
    }

    @Test("a TCP super-frame cut at 1448: lengths, IDs, sequence numbers, flags, and checksums an independent sum accepts")
    func tcpSegments() throws {
        var frame = Self.tcpSuperFrame(payload: 4000)
        let segments: [[UInt8]] = try frame.withUnsafeMutableBytes { b in
            let l = try #require(Segmentation.layout(b, network: 0))
            #expect(l.headersLength == 52 && l.payloadLength == 4000 && l.isTCP && !l.isIPv6)
            #expect(Segmentation.segmentCount(l, segmentSize: 1448) == 3)
            return (0..<3).map { k in
                var out = [UInt8](repeating: 0xEE, count: 1500)
                let n = out.withUnsafeMutableBytes { Segmentation.writeSegment(k, of: b, layout: l, segmentSize: 1448, into: $0) }
                return Array(out[..<n])
            }
        }
        #expect(segments.map(\.count) == [1500, 1500, 52 + 4000 - 2 * 1448])
        for (k, s) in segments.enumerated() {
            // IPv4: total length, identification + k, DF kept, a valid header checksum.
            #expect(Int(s[2]) << 8 | Int(s[3]) == s.count)
            #expect(UInt16(s[4]) << 8 | UInt16(s[5]) == 0x1234 + UInt16(k))
            #expect(s[6] & 0x40 != 0)
            #expect(Self.referenceSum(Array(s[0..<20])) == 0xFFFF, "segment \(k): IPv4 header checksum")
            // TCP: sequence advanced by the payload before it, options copied.
            let seq = UInt32(s[24]) << 24 | UInt32(s[25]) << 16 | UInt32(s[26]) << 8 | UInt32(s[27])
            #expect(seq == 0xFFFF_F000 &+ UInt32(k * 1448))
            #expect(Array(s[40..<52]) == [1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9])
            // CWR on the first segment only; PSH and FIN on the last only; ACK on all.
            #expect((s[33] & 0x80 != 0) == (k == 0))
            #expect((s[33] & 0x09 != 0) == (k == 2) && s[33] & 0x10 != 0)
            // The payload is the super-frame's, in order.
            #expect(Array(s[52...]) == Array(frame[(52 + k * 1448)..<(52 + k * 1448 + s.count - 52)]))
            #expect(Self.transportChecksumOK(s), "segment \(k): TCP checksum")
        }
        // One flipped bit in a segment's payload: the independent check notices.
        var bad = segments[1]
        bad[700] ^= 0x04
        #expect(!Self.transportChecksumOK(bad))
    }

    @Test("a partial checksum completed in place equals the one computed from scratch")
    func completion() throws {
        var partial = Self.tcpSuperFrame(payload: 999)
        partial.withUnsafeMutableBytes { b in
            let l = Segmentation.layout(b, network: 0)!
            Segmentation.completeChecksum(b, layout: l)
            #expect(Segmentation.verifiesChecksum(b, layout: l))
        }
        #expect(Self.transportChecksumOK(partial))
    }

    @Test("IPv6 UDP (USO): payload length and UDP length per segment, checksum over the IPv6 pseudo-header; behind a link header")
    func udp6() throws {
        let payload = 3000
        var p = [UInt8](repeating: 0, count: 14 + 40 + 8 + payload)
        p.withUnsafeMutableBytes { b in
            IPv6Repr(source: IPv6Address("2001:db8::1")!, destination: IPv6Address("2001:db8:2::2")!, nextHeader: .udp,
                     payloadLength: 8 + payload).emit(into: b.tail(from: 14))
        }
        p[12] = 0x86; p[13] = 0xDD
        p[54] = 0x30; p[55] = 0x39; p[56] = 0x00; p[57] = 0x35
        for i in 0..<payload { p[62 + i] = UInt8(truncatingIfNeeded: i) }
        let segments: [[UInt8]] = try p.withUnsafeMutableBytes { b in
            let l = try #require(Segmentation.layout(b, network: 14))
            #expect(l.isIPv6 && !l.isTCP && l.headersLength == 62)
            return (0..<Segmentation.segmentCount(l, segmentSize: 1200)).map { k in
                var out = [UInt8](repeating: 0, count: 1300)
                let n = out.withUnsafeMutableBytes { Segmentation.writeSegment(k, of: b, layout: l, segmentSize: 1200, into: $0) }
                return Array(out[..<n])
            }
        }
        #expect(segments.map(\.count) == [1262, 1262, 662])
        for s in segments {
            let ip = Array(s[14...])
            #expect(Int(ip[4]) << 8 | Int(ip[5]) == ip.count - 40)
            #expect(Int(ip[44]) << 8 | Int(ip[45]) == ip.count - 40)
            #expect(Array(s[..<14]) == Array(p[..<14]), "the link header is repeated")
            #expect(Self.transportChecksumOK(ip))
        }
    }

    @Test("what cannot be cut is refused: a fragment, ICMP, a TCP header longer than the packet, lengths past the buffer")
    func refusals() {
        var frame = Self.tcpSuperFrame(payload: 100)
        frame.withUnsafeMutableBytes { b in
            b.setBE16(6, 0x2000)  // more fragments
            #expect(Segmentation.layout(b, network: 0) == nil)
            b.setBE16(6, 0x4000)
            b.setBE8(9, 1)  // ICMP
            #expect(Segmentation.layout(b, network: 0) == nil)
            b.setBE8(9, 6)
            b.setBE8(32, 0xF0)  // a 60-byte TCP header, and an IP length of 40
            b.setBE16(2, 40)
            #expect(Segmentation.layout(b, network: 0) == nil)
            b.setBE16(2, 5000)
            #expect(Segmentation.layout(b, network: 0) == nil)
        }
    }
}

@Suite("virtio-net headers")
struct VirtioNetHeaderTests {
    /// An Ethernet frame holding the TCP super-frame of `SegmentationTests`.
    static func frame(payload: Int = 4000) -> [UInt8] {
        [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00] + SegmentationTests.tcpSuperFrame(payload: payload)
    }

    func offloads(_ h: VirtioNetHeader, _ f: [UInt8] = VirtioNetHeaderTests.frame()) -> (UInt16, Bool, Bool)? {
        var b = f
        return b.withUnsafeMutableBytes { h.offloads(for: $0) }.map { ($0.segmentSize, $0.partial, $0.verified) }
    }

    @Test("a well-formed TSO header is taken; each malformed or unsupported one is refused")
    func validation() {
        let good = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.GSOType.tcpv4.rawValue,
                                   headerLength: 66, gsoSize: 1448, checksumStart: 34, checksumOffset: 16)
        #expect(offloads(good).map { $0.0 == 1448 && $0.1 && !$0.2 } == true)
        var ecn = good
        ecn.gsoType |= VirtioNetHeader.gsoECN
        #expect(offloads(ecn) != nil, "TCP with ECN")
        #expect(offloads(VirtioNetHeader()).map { $0.0 == 0 && !$0.1 } == true, "nothing asked")
        var verified = VirtioNetHeader()
        verified.flags = VirtioNetHeader.dataValid
        #expect(offloads(verified).map { $0.2 } == true)
        var bad: [(String, VirtioNetHeader)] = []
        var h = good; h.gsoSize = 0; bad.append(("segment size 0", h))
        h = good; h.checksumStart = 20_000; bad.append(("checksum start past the frame", h))
        h = good; h.checksumStart = 14; bad.append(("checksum start at the IP header", h))
        h = good; h.checksumOffset = 6; bad.append(("UDP's checksum offset on TCP", h))
        h = good; h.gsoType = VirtioNetHeader.GSOType.udp.rawValue; bad.append(("UFO", h))
        h = good; h.gsoType = 9; bad.append(("unknown GSO type", h))
        h = good; h.flags |= 4; bad.append(("unknown flag", h))
        h = good; h.gsoType = VirtioNetHeader.GSOType.tcpv6.rawValue; bad.append(("TCPv6 on an IPv4 frame", h))
        h = good; h.gsoType = VirtioNetHeader.GSOType.udpL4.rawValue; bad.append(("UDP GSO on TCP", h))
        h = good; h.flags = 0; bad.append(("GSO without a partial checksum", h))
        h = good; h.gsoSize = 8; bad.append(("a segment size that makes 500 segments of one frame", h))
        for (what, header) in bad { #expect(offloads(header) == nil, "\(what)") }
        // A frame that is not IPv4/IPv6 TCP or UDP cannot have a partial checksum.
        var arp = Self.frame()
        arp[12] = 0x08; arp[13] = 0x06
        #expect(offloads(good, arp) == nil)
    }

    @Test("the header written for a super-frame describes it; read back it gives the same offloads")
    func roundTrip() throws {
        var f = Self.frame()
        let h = try #require(f.withUnsafeMutableBytes { VirtioNetHeader.sending($0, segmentSize: 1448, partial: true) })
        #expect(h.gsoType == VirtioNetHeader.GSOType.tcpv4.rawValue && h.gsoSize == 1448 && h.headerLength == 66)
        #expect(h.checksumStart == 34 && h.checksumOffset == 16 && h.flags == VirtioNetHeader.needsChecksum)
        var bytes = [UInt8](repeating: 0xFF, count: VirtioNetHeader.length)
        bytes.withUnsafeMutableBytes { h.emit(into: $0) }
        let back = bytes.withUnsafeBytes { VirtioNetHeader(parsing: $0) }
        #expect(back == h)
        #expect(offloads(back).map { $0.0 == 1448 && $0.1 } == true)
    }
}
