import AnygateStack
import AnygateWire
import Testing

/// Super-frames and partial checksums through the stack: whole where the
/// egress takes offloads, cut into segments (checksums completed) where it
/// does not, and per segment for DF and the MTU.
@Suite("Offloads: super-frames and partial checksums", .ledgerAudited)
struct OffloadTests {
    /// A TCP super-frame A → B into R1's lan (Ethernet + the Wire test's packet).
    static func superFrame(_ t: Topology, payload: Int, dontFragment: Bool = true) -> [UInt8] {
        var ip = SegmentationTests.tcpSuperFrame(payload: payload)
        if !dontFragment {
            ip[6] = 0
            ip[10] = 0; ip[11] = 0
            ip.withUnsafeMutableBytes { IPv4Packet(unchecked: $0).fillChecksum() }
        }
        return ethernet(to: t.r1.status(t.r1Lan).mac, from: t.a.status(t.aEth).mac) + ip
    }

    /// An Ethernet header carrying IPv4.
    static func ethernet(to: MACAddress, from: MACAddress) -> [UInt8] {
        var eth = [UInt8](repeating: 0, count: 14)
        eth.withUnsafeMutableBytes { EthernetRepr(destination: to, source: from, etherType: .ipv4).emit(into: $0) }
        return eth
    }

    /// A TCP super-frame from A into GW1's lan.
    static func superFrame(_ s: TwoSites, payload: Int, flags: UInt8 = 0x80 | 0x10 | 0x08 | 0x01) -> [UInt8] {
        ethernet(to: s.gw1.status(s.gw1Lan).mac, from: s.a.status(0).mac) + SegmentationTests.tcpSuperFrame(payload: payload, flags: flags)
    }

    final class Wire { var frames: [[UInt8]] = [] }

    /// IPv4 frames R1 sends on `interface`.
    func record(_ t: Topology, _ interface: InterfaceIndex) -> Wire {
        let w = Wire()
        t.net.observer = { from, _, f in
            if from.stack == 1 && from.interface == interface && f.be16(12) == 0x0800 { w.frames.append(Array(f)) }
        }
        return w
    }

    @Test("a super-frame is cut into checksummed segments for a link without offloads, and leaves whole by one with them")
    func cutOrWhole() throws {
        let t = try Topology(superFrames: 8)
        try t.warmUp()
        try t.r1.setOffloads(t.r1Lan, true)
        let wan = record(t, t.r1Wan)
        t.net.inject(Self.superFrame(t, payload: 20_000), into: t.r1, on: t.r1Lan, segmentSize: 1448,
                     offload: PacketHandle.checksumPartial)
        #expect(wan.frames.count == 14, "20 000 bytes in 1448-byte segments")
        for (k, f) in wan.frames.enumerated() {
            let ip = Array(f[14...])
            #expect(ip.count == (k < 13 ? 1500 : 52 + 20_000 - 13 * 1448))
            #expect(ip[8] == 63, "TTL decremented once, carried to every segment")
            #expect(SegmentationTests.referenceSum(Array(ip[0..<20])) == 0xFFFF)
            #expect(SegmentationTests.transportChecksumOK(ip), "segment \(k)")
        }
        #expect(t.r1.counters.segmented == 1 && t.r1.counters.segmentsCreated == 14)
        #expect(t.r1.ledger.segmentsCreated == 14 && t.r1.ledger.balanced)
        // With offloads on the wan too, it leaves as one frame; R2 cuts it for B's link.
        try t.r1.setOffloads(t.r1Wan, true)
        wan.frames = []
        t.net.inject(Self.superFrame(t, payload: 20_000), into: t.r1, on: t.r1Lan, segmentSize: 1448,
                     offload: PacketHandle.checksumPartial)
        #expect(wan.frames.count == 1 && wan.frames.first?.count == 14 + 52 + 20_000)
        #expect(t.r1.counters.segmented == 1, "R1 did not cut it")
        #expect(t.r2.counters.segmented == 1 && t.r2.counters.segmentsCreated == 14)
    }

    @Test("DF holds per segment: a segment larger than the next link draws fragmentation-needed; without DF, segments are fragmented")
    func perSegmentMTU() throws {
        let t = try Topology(linkMTU: 1000, superFrames: 8)
        try t.warmUp()
        try t.r1.setOffloads(t.r1Lan, true)
        t.net.inject(Self.superFrame(t, payload: 5000), into: t.r1, on: t.r1Lan, segmentSize: 1448,
                     offload: PacketHandle.checksumPartial)
        let errors = t.a.drainEvents().compactMap { e -> UInt16? in
            if case .icmpError(let r) = e { return r.nextHopMTU }
            return nil
        }
        #expect(errors == [1000])
        #expect(t.r1.drops(.fragmentationNeeded) == 1)
        // The same segments fit a 1500 link: no error for a super-frame whose total is far above it.
        let wan = record(t, t.r1Wan)
        t.net.inject(Self.superFrame(t, payload: 5000, dontFragment: false), into: t.r1, on: t.r1Lan, segmentSize: 1448,
                     offload: PacketHandle.checksumPartial)
        // 4 segments (1448 ×3 + 656), each over 1000 but the last: 3 × 2 fragments + 1.
        #expect(wan.frames.count == 7)
        #expect(t.r1.counters.segmentsCreated == 4 && t.r1.counters.fragmentsCreated == 6)
    }

    @Test("a partial checksum is completed for a link without offloads and left partial for one with them")
    func partialChecksum() throws {
        let t = try Topology(superFrames: 8)
        try t.warmUp()
        try t.r1.setOffloads(t.r1Lan, true)
        let wan = record(t, t.r1Wan)
        // The first takes the slow path and installs a flow; the second is completed on the fast path.
        for _ in 0..<2 {
            t.net.inject(Self.superFrame(t, payload: 600), into: t.r1, on: t.r1Lan, segmentSize: 0, offload: PacketHandle.checksumPartial)
        }
        try #require(wan.frames.count == 2)
        // The second segment, and B's second RST on its way back (B has no listener).
        #expect(t.r1.counters.flowHits == 2)
        #expect(wan.frames.allSatisfy { SegmentationTests.transportChecksumOK(Array($0[14...])) })
        try t.r1.setOffloads(t.r1Wan, true)
        t.net.inject(Self.superFrame(t, payload: 600), into: t.r1, on: t.r1Lan, segmentSize: 0, offload: PacketHandle.checksumPartial)
        try #require(wan.frames.count == 3)
        #expect(!SegmentationTests.transportChecksumOK(Array(wan.frames[2][14...])), "still partial: the next device completes it")
        #expect(t.r1.counters.segmented == 0)
    }

    @Test("a super-frame into a GRE tunnel is cut to segments, each encapsulated; the far gateway delivers every one")
    func throughTunnel() throws {
        let s = try TwoSites(superFrames: 8)
        try s.a.ping(IPv4Address(10, 2, 0, 2))
        try s.b.ping(IPv4Address(10, 1, 0, 2))
        s.net.run()
        try s.gw1.setOffloads(s.gw1Lan, true)
        var received: [[UInt8]] = []
        let gw2Lan = s.gw2Lan
        s.net.observer = { from, _, f in
            if from.stack == 2 && from.interface == gw2Lan && f.be16(12) == 0x0800 && f[14 + 9] == 6 { received.append(Array(f[14...])) }
        }
        let frame = Self.superFrame(s, payload: 10_000)
        s.net.inject(frame, into: s.gw1, on: s.gw1Lan, segmentSize: 1400, offload: PacketHandle.checksumPartial)
        #expect(received.count == 8, "10 000 bytes in 1400-byte segments")
        #expect(received.allSatisfy { SegmentationTests.transportChecksumOK($0) })
        #expect(s.gw1.status(s.gw1Tunnel).counters.txPackets >= 8)
        #expect(s.gw1.counters.segmentsCreated == 8)
    }

    /// Completes a merged super-frame's partial TCP checksum the way the
    /// receiving kernel would, and checks the result independently.
    static func completesToValid(_ ip: [UInt8]) -> Bool {
        var b = ip
        return b.withUnsafeMutableBytes { raw -> Bool in
            guard let l = Segmentation.layout(raw, network: 0) else { return false }
            Segmentation.completeChecksum(raw, layout: l)
            return true
        } && SegmentationTests.transportChecksumOK(b.withUnsafeMutableBytes { Array($0) })
    }

    @Test("segments decapsulated in one batch are merged into one super-frame for a port with offloads; a corrupted one is never merged")
    func coalescing() throws {
        let s = try TwoSites(superFrames: 8)
        try s.a.ping(IPv4Address(10, 2, 0, 2))
        try s.b.ping(IPv4Address(10, 1, 0, 2))
        s.net.run()
        try s.gw1.setOffloads(s.gw1Lan, true)
        try s.gw2.setOffloads(s.gw2Lan, true)
        var toB: [[UInt8]] = []
        var greSeen = 0
        let (gw1Wan, gw2Lan) = (s.gw1Wan, s.gw2Lan)
        var corrupt = false
        s.net.observer = { from, _, f in
            if from.stack == 1 && from.interface == gw1Wan && f.be16(12) == 0x0800 && f[14 + 9] == 47 {
                greSeen += 1
                // The 4th segment's payload gets one bit flipped on the underlay.
                if corrupt && greSeen == 4 { f[f.count - 100] ^= 0x10 }
            }
            if from.stack == 2 && from.interface == gw2Lan && f.be16(12) == 0x0800 && f[14 + 9] == 6 { toB.append(Array(f[14...])) }
        }
        func send() {
            // Bulk data: ACK, and PSH at the end (CWR or FIN would end a merge, as in Linux GRO).
            let frame = Self.superFrame(s, payload: 10_000, flags: 0x18)
            s.net.inject(frame, into: s.gw1, on: s.gw1Lan, segmentSize: 1400, offload: PacketHandle.checksumPartial)
        }
        send()
        // 8 segments crossed the tunnel; B's port gets one super-frame holding all 10 000 bytes.
        #expect(greSeen == 8)
        try #require(toB.count == 1, "\(toB.map(\.count))")
        #expect(toB[0].count == 52 + 10_000)
        #expect(Array(toB[0][52...]) == Array(SegmentationTests.tcpSuperFrame(payload: 10_000, flags: 0x18)[52...]))
        #expect(Self.completesToValid(toB[0]))
        #expect(toB[0][33] == 0x18, "the last segment's PSH")
        #expect(s.gw2.counters.coalescedSegments == 8 && s.gw2.counters.coalescedFrames == 1)
        // Again with the 4th segment corrupted: segments 1–3 merge, the 4th goes alone, 5–8 merge.
        toB = []; greSeen = 0; corrupt = true
        send()
        try #require(toB.count == 3, "\(toB.map(\.count))")
        #expect(toB.map(\.count) == [52 + 3 * 1400, 52 + 1400, 52 + 10_000 - 4 * 1400])
        #expect(Self.completesToValid(toB[0]) && Self.completesToValid(toB[2]))
        #expect(!SegmentationTests.transportChecksumOK(toB[1]), "passed on with its bad checksum, for B to drop")
    }

    @Test("IPv6 through the tunnel: the super-frame is cut before GRE, and B's port gets the segments merged into one super-frame again")
    func coalescing6() throws {
        let s = try TwoSites(superFrames: 8, ipv6: true)
        try s.gw1.setOffloads(s.gw1Lan, true)
        try s.gw2.setOffloads(s.gw2Lan, true)
        // B known to GW2 (its first packet resolves it; the merge needs the frames to leave together).
        let server = try s.b.openSocket(.udp)
        try s.b.bind(server, address: .v6(TwoSites.b6), port: 9)
        let client = try s.a.openSocket(.udp)
        try s.a.connect(client, to: .v6(TwoSites.b6), port: 9)
        try s.a.socketSend(client, try #require(s.net.pool.make(copying: [1, 2, 3])))
        s.net.run()
        if let d = s.b.socketReceive(server) { s.net.pool.free(d.packet) }
        s.a.closeSocket(client); s.b.closeSocket(server)
        var toB: [[UInt8]] = [], greSeen = 0
        let (gw1Wan, gw2Lan) = (s.gw1Wan, s.gw2Lan)
        s.net.observer = { from, _, f in
            if from.stack == 1 && from.interface == gw1Wan && f.be16(12) == 0x0800 && f[14 + 9] == 47 { greSeen += 1 }
            if from.stack == 2 && from.interface == gw2Lan && f.be16(12) == 0x86DD && f[14 + 6] == 6 { toB.append(Array(f[14...])) }
        }
        let eth = EthernetRepr(destination: s.gw1.status(s.gw1Lan).mac, source: s.a.status(0).mac, etherType: .ipv6)
        var header = [UInt8](repeating: 0, count: 14)
        header.withUnsafeMutableBytes { eth.emit(into: $0) }
        let packet = SegmentationTests.tcp6SuperFrame(payload: 10_000)
        s.net.inject(header + packet, into: s.gw1, on: s.gw1Lan, segmentSize: 1400, offload: PacketHandle.checksumPartial)
        #expect(greSeen == 8, "8 segments of 1400 crossed the tunnel")
        try #require(toB.count == 1, "\(toB.map(\.count))")
        #expect(toB[0].count == 72 + 10_000 && Array(toB[0][72...]) == Array(packet[72...]))
        #expect(toB[0][7] == 62, "hop limit: one less at each gateway")
        #expect(Self.completesToValid(toB[0]))
        #expect(s.gw2.counters.coalescedSegments == 8 && s.gw2.counters.coalescedFrames == 1)
    }

    final class Recorded {
        /// UDP frames GW1 sends on the underlay, and TCP packets GW2 sends to B (from the IP header).
        var underlay: [[UInt8]] = [], toB: [[UInt8]] = []
    }

    /// Resolves both sites, turns offloads on at every gateway port, and
    /// records what crosses the underlay in UDP and what reaches B.
    func recordThroughTunnel(_ s: TwoSites) throws -> Recorded {
        try s.a.ping(IPv4Address(10, 2, 0, 2))
        try s.b.ping(IPv4Address(10, 1, 0, 2))
        s.net.run()
        for (st, i) in [(s.gw1, s.gw1Lan), (s.gw1, s.gw1Wan), (s.gw2, s.gw2Wan), (s.gw2, s.gw2Lan)] { try st.setOffloads(i, true) }
        let r = Recorded()
        let (gw1Wan, gw2Lan) = (s.gw1Wan, s.gw2Lan)
        s.net.observer = { from, _, f in
            if from.stack == 1 && from.interface == gw1Wan && f.be16(12) == 0x0800 && f[14 + 9] == 17 { r.underlay.append(Array(f)) }
            if from.stack == 2 && from.interface == gw2Lan && f.be16(12) == 0x0800 && f[14 + 9] == 6 { r.toB.append(Array(f[14...])) }
        }
        return r
    }

    @Test("GRE-in-UDP into an underlay with offloads: the segments travel as one UDP super-frame, cut into datagrams on arrival and merged again for B")
    func udpSuperFramesThroughTunnel() throws {
        let s = try TwoSites(encapsulation: .greInUDP, superFrames: 16)
        let r = try recordThroughTunnel(s)
        let frame = Self.superFrame(s, payload: 10_000, flags: 0x18)
        s.net.inject(frame, into: s.gw1, on: s.gw1Lan, segmentSize: 1400, offload: PacketHandle.checksumPartial)
        // One UDP frame on the underlay: 8 chunks of GRE (key: 8 bytes) + 52 header bytes + up to 1400.
        try #require(r.underlay.count == 1, "\(r.underlay.map(\.count))")
        #expect(r.underlay[0].count == 14 + 20 + 8 + 8 * (8 + 52) + 10_000)
        #expect(r.underlay[0][14 + 20 + 2] == 0x12 && r.underlay[0][14 + 20 + 3] == 0x92, "to port 4754")
        #expect(s.gw2.counters.unbundled == 1 && s.gw2.counters.unbundledPackets == 8)
        // B's port: the inner segments merged into one super-frame again, intact.
        try #require(r.toB.count == 1, "\(r.toB.map(\.count))")
        #expect(Array(r.toB[0][52...]) == Array(SegmentationTests.tcpSuperFrame(payload: 10_000, flags: 0x18)[52...]))
        #expect(Self.completesToValid(r.toB[0]))
        // Without offloads on the r.underlay, the same super-frame crosses as 8 datagrams.
        try s.gw1.setOffloads(s.gw1Wan, false)
        r.underlay = []; r.toB = []
        s.net.inject(frame, into: s.gw1, on: s.gw1Lan, segmentSize: 1400, offload: PacketHandle.checksumPartial)
        #expect(r.underlay.count == 8 && r.toB.count == 1)
    }

    @Test("GRE over IPsec in UDP 4500 into an underlay with offloads: one UDP super-frame of ESP packets, each opened on arrival, merged again for B")
    func espSuperFramesThroughTunnel() throws {
        let s = try TwoSites(superFrames: 16, protection: TunnelProtection(encapsulation: .natTraversal))
        try s.installSAs(.aes128GCM)
        let r = try recordThroughTunnel(s)
        let frame = Self.superFrame(s, payload: 10_000, flags: 0x18)
        s.net.inject(frame, into: s.gw1, on: s.gw1Lan, segmentSize: 1300, offload: PacketHandle.checksumPartial)
        // One UDP frame: 8 ESP packets, each around GRE (8 bytes) + 52 header bytes + up to 1300 (the tunnel MTU leaves room for ESP).
        let dropped = DropReason.allCases.filter { s.gw1.drops($0) > 0 }.map { "\($0) \(s.gw1.drops($0))" }
        try #require(r.underlay.count == 1, "\(r.underlay.map(\.count)) gw1 drops: \(dropped)")
        let sealed = (0..<8).map { k in ESPPacket.sealedLength(payload: 8 + 52 + (k < 7 ? 1300 : 10_000 - 7 * 1300)) }.reduce(0, +)
        #expect(r.underlay[0].count == 14 + 20 + 8 + sealed)
        #expect(r.underlay[0][14 + 20 + 2] == 0x11 && r.underlay[0][14 + 20 + 3] == 0x94, "to port 4500")
        #expect(s.gw2.counters.unbundled == 1 && s.gw2.counters.unbundledPackets == 8)
        // Opened one by one (each with its own sequence number), merged again for B, intact.
        try #require(r.toB.count == 1, "\(r.toB.map(\.count))")
        #expect(Array(r.toB[0][52...]) == Array(SegmentationTests.tcpSuperFrame(payload: 10_000, flags: 0x18)[52...]))
        #expect(Self.completesToValid(r.toB[0]))
        let inbound = try #require(s.gw2.saList.first { $0.inbound })
        #expect(inbound.counters.packets == 8 + 2 && inbound.counters.authFailures == 0)
        s.checkInvariants()
    }

    @Test("GRE-in-UDP super-frames with IPv6 inside, over an IPv6 underlay, or both: one UDP frame on the underlay, cut on arrival, merged for B",
          arguments: [(false, true), (true, false), (true, true)])
    func udpSuperFrames6(_ inner6: Bool, _ underlay6: Bool) throws {
        let s = try TwoSites(encapsulation: .greInUDP, superFrames: 16, underlay6: underlay6, ipv6: true)
        // Warm up both families end to end (neighbours on every link).
        try s.a.ping(IPv4Address(10, 2, 0, 2))
        try s.b.ping(IPv4Address(10, 1, 0, 2))
        let server = try s.b.openSocket(.udp)
        try s.b.bind(server, address: .v6(TwoSites.b6), port: 9)
        let client = try s.a.openSocket(.udp)
        try s.a.connect(client, to: .v6(TwoSites.b6), port: 9)
        try s.a.socketSend(client, try #require(s.net.pool.make(copying: [1, 2, 3])))
        s.net.run()
        if let d = s.b.socketReceive(server) { s.net.pool.free(d.packet) }
        s.a.closeSocket(client); s.b.closeSocket(server)
        for (st, i) in [(s.gw1, s.gw1Lan), (s.gw1, s.gw1Wan), (s.gw2, s.gw2Wan), (s.gw2, s.gw2Lan)] { try st.setOffloads(i, true) }
        var underlay: [[UInt8]] = [], toB: [[UInt8]] = []
        let (gw1Wan, gw2Lan) = (s.gw1Wan, s.gw2Lan)
        let outerType: UInt16 = underlay6 ? 0x86DD : 0x0800, innerType: UInt16 = inner6 ? 0x86DD : 0x0800
        s.net.observer = { from, _, f in
            let udp = underlay6 ? f[14 + 6] == 17 : f[14 + 9] == 17
            if from.stack == 1 && from.interface == gw1Wan && f.be16(12) == outerType && udp { underlay.append(Array(f)) }
            let tcp = inner6 ? f[14 + 6] == 6 : f[14 + 9] == 6
            if from.stack == 2 && from.interface == gw2Lan && f.be16(12) == innerType && tcp { toB.append(Array(f[14...])) }
        }
        var eth = [UInt8](repeating: 0, count: 14)
        eth.withUnsafeMutableBytes {
            EthernetRepr(destination: s.gw1.status(s.gw1Lan).mac, source: s.a.status(0).mac, etherType: inner6 ? .ipv6 : .ipv4).emit(into: $0)
        }
        let packet = inner6 ? SegmentationTests.tcp6SuperFrame(payload: 10_000) : SegmentationTests.tcpSuperFrame(payload: 10_000, flags: 0x18)
        let headers = inner6 ? 72 : 52
        s.net.inject(eth + packet, into: s.gw1, on: s.gw1Lan, segmentSize: 1300, offload: PacketHandle.checksumPartial)
        // One UDP frame: 8 chunks of GRE (key: 8 bytes) + the inner headers + up to 1300 bytes.
        try #require(underlay.count == 1, "\(underlay.map(\.count))")
        #expect(underlay[0].count == 14 + (underlay6 ? 40 : 20) + 8 + 8 * (8 + headers) + 10_000)
        #expect(s.gw2.counters.unbundled == 1 && s.gw2.counters.unbundledPackets == 8)
        try #require(toB.count == 1, "\(toB.map(\.count))")
        #expect(Array(toB[0][headers...]) == Array(packet[headers...]))
        #expect(Self.completesToValid(toB[0]))
    }

    @Test("a super-frame asking to be cut into hundreds of tiny segments is dropped with its reason, not multiplied")
    func tinySegments() throws {
        let t = try Topology(superFrames: 8)
        try t.warmUp()
        try t.r1.setOffloads(t.r1Lan, true)
        let wan = record(t, t.r1Wan)
        t.net.inject(Self.superFrame(t, payload: 4000), into: t.r1, on: t.r1Lan, segmentSize: 8, offload: PacketHandle.checksumPartial)
        #expect(wan.frames.isEmpty)
        #expect(t.r1.drops(.segmentationFailed) == 1 && t.r1.counters.segmentsCreated == 0)
    }

    @Test("segments of two flows interleaved in one batch become one super-frame per flow")
    func interleavedFlows() throws {
        let t = try Topology(superFrames: 8)
        try t.warmUp()
        try t.r1.setOffloads(t.r1Wan, true)
        let wan = record(t, t.r1Wan)
        // Two flows' segments (source ports 5000 and 5001), 6 each, alternating.
        func segments(port: UInt8) -> [[UInt8]] {
            var ip = SegmentationTests.tcpSuperFrame(payload: 6 * 1000, flags: 0x10)
            ip[21] = port
            var frame = Self.ethernet(to: t.r1.status(t.r1Lan).mac, from: t.a.status(t.aEth).mac) + ip
            return frame.withUnsafeMutableBytes { b in
                let l = Segmentation.layout(b, network: 14)!
                return (0..<6).map { k in
                    var out = [UInt8](repeating: 0, count: 1100)
                    let n = out.withUnsafeMutableBytes { Segmentation.writeSegment(k, of: b, layout: l, segmentSize: 1000, into: $0) }
                    return Array(out[..<n])
                }
            }
        }
        let a = segments(port: 0x88), b = segments(port: 0x89)
        var batch: [PacketHandle] = []
        for k in 0..<6 { batch.append(t.net.pool.make(copying: a[k])!); batch.append(t.net.pool.make(copying: b[k])!) }
        batch.withUnsafeBufferPointer { t.r1.receive($0, on: t.r1Lan) }
        t.net.run()
        try #require(wan.frames.count == 2, "\(wan.frames.map(\.count))")
        #expect(wan.frames.allSatisfy { $0.count == 14 + 52 + 6000 })
        #expect(Set(wan.frames.map { $0[14 + 21] }) == [0x88, 0x89])
        #expect(wan.frames.allSatisfy { Self.completesToValid(Array($0[14...])) })
        #expect(t.r1.counters.coalescedSegments == 12 && t.r1.counters.coalescedFrames == 2)
    }
}
