import AnygateWire
import Foundation
import Testing

/// An IPv6 packet from a source, a destination and a chain of (next
/// header, header bytes) pairs, then the upper layer's bytes.
func ipv6Packet(_ chain: [(IPProtocol, [UInt8])], upper: IPProtocol, payload: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8],
                source: IPv6Address = IPv6Address("2001:db8::1")!, destination: IPv6Address = IPv6Address("2001:db8::2")!,
                hopLimit: UInt8 = 64) -> [UInt8] {
    var body: [UInt8] = []
    for (k, h) in chain.enumerated() {
        var bytes = h.1
        bytes[0] = k + 1 < chain.count ? chain[k + 1].0.rawValue : upper.rawValue
        body += bytes
    }
    body += payload
    var b = [UInt8](repeating: 0, count: 40) + body
    b.withUnsafeMutableBytes {
        IPv6Repr(source: source, destination: destination, nextHeader: chain.first?.0 ?? upper,
                 payloadLength: body.count, hopLimit: hopLimit).emit(into: $0)
    }
    return b
}

/// An options header (hop-by-hop or destination) holding `options`, padded to 8 bytes.
func optionsHeader(_ options: [UInt8]) -> [UInt8] {
    var h: [UInt8] = [0, 0] + options
    let pad = (8 - h.count % 8) % 8
    if pad == 1 { h += [0] } else if pad > 1 { h += [1, UInt8(pad - 2)] + [UInt8](repeating: 0, count: pad - 2) }
    h[1] = UInt8(h.count / 8 - 1)
    return h
}

func walk(_ b: [UInt8]) -> Result<IPv6HeaderChain, IPv6ChainError> {
    var b = b
    return b.withUnsafeMutableBytes { raw in
        let p = try! IPv6Packet(validating: raw)
        do throws(IPv6ChainError) { return .success(try IPv6HeaderChain(walking: p)) } catch { return .failure(error) }
    }
}

@Suite("IPv6 extension headers")
struct IPv6ExtensionTests {
    static let hopByHop = IPProtocol(rawValue: 0), routing = IPProtocol(rawValue: 43)
    static let destinationOptions = IPProtocol(rawValue: 60)

    @Test("no extension headers: the upper layer starts at byte 40")
    func plain() throws {
        let c = try walk(ipv6Packet([], upper: .udp)).get()
        #expect(c.upperLayer == .udp && c.upperLayerOffset == 40 && c.extensionHeaders == 0 && c.upperLayerPresent)
    }

    @Test("hop-by-hop with a Router Alert, then destination options: walked to ICMPv6")
    func hopByHopAndDestinationOptions() throws {
        let b = ipv6Packet([(Self.hopByHop, optionsHeader([5, 2, 0, 0])), (Self.destinationOptions, optionsHeader([1, 4, 0, 0, 0, 0, 0, 0, 0, 0]))],
                           upper: .icmpv6)
        let c = try walk(b).get()
        #expect(c.hasHopByHop && c.routerAlert == 0 && c.extensionHeaders == 2)
        #expect(c.upperLayer == .icmpv6 && c.upperLayerOffset == 40 + 8 + 16)
    }

    @Test("a hop-by-hop header after another: parameter problem 1 at the Next Header that named it")
    func hopByHopNotFirst() {
        let b = ipv6Packet([(Self.destinationOptions, optionsHeader([])), (Self.hopByHop, optionsHeader([]))], upper: .udp)
        #expect(walk(b) == .failure(.parameterProblem(code: ICMPv6ParameterProblem.unrecognizedNextHeader, pointer: 40)))
    }

    @Test("routing type 0 with segments left is refused (RFC 5095); with none left it is ignored")
    func routingType0() throws {
        var rh = [UInt8](repeating: 0, count: 24)
        rh[1] = 2; rh[2] = 0; rh[3] = 1
        #expect(walk(ipv6Packet([(Self.routing, rh)], upper: .udp))
            == .failure(.parameterProblem(code: ICMPv6ParameterProblem.erroneousField, pointer: 42)))
        rh[3] = 0
        let c = try walk(ipv6Packet([(Self.routing, rh)], upper: .udp)).get()
        #expect(c.routingType == 0 && c.segmentsLeft == 0 && c.upperLayer == .udp && c.upperLayerOffset == 64)
    }

    @Test("fragments: the first carries the chain on, a later one ends it")
    func fragments() throws {
        var f = [UInt8](repeating: 0, count: 8)
        f.withUnsafeMutableBytes { IPv6FragmentRepr(nextHeader: .udp, offset: 0, moreFragments: true, identification: 0xDEAD_BEEF).emit(into: $0) }
        let first = try walk(ipv6Packet([(.ipv6Fragment, f)], upper: .udp)).get()
        #expect(first.fragment == IPv6FragmentRepr(nextHeader: .udp, offset: 0, moreFragments: true, identification: 0xDEAD_BEEF))
        #expect(first.fragmentHeaderOffset == 40 && first.upperLayer == .udp && first.upperLayerOffset == 48 && first.upperLayerPresent)
        f.withUnsafeMutableBytes { IPv6FragmentRepr(nextHeader: .udp, offset: 1232, moreFragments: false, identification: 7).emit(into: $0) }
        let later = try walk(ipv6Packet([(.ipv6Fragment, f), (Self.destinationOptions, optionsHeader([]))], upper: .tcp)).get()
        #expect(!later.upperLayerPresent && later.fragment?.offset == 1232 && later.extensionHeaders == 1)
    }

    @Test("a first fragment whose chain does not fit: parameter problem 3 (RFC 7112); unfragmented: malformed")
    func incompleteChain() {
        var f = [UInt8](repeating: 0, count: 8)
        f.withUnsafeMutableBytes { IPv6FragmentRepr(nextHeader: .udp, offset: 0, moreFragments: true, identification: 1).emit(into: $0) }
        var d = optionsHeader([1, 20] + [UInt8](repeating: 0, count: 20))
        d[1] = 3  // claims 32 bytes
        let cut = ipv6Packet([(.ipv6Fragment, f), (Self.destinationOptions, Array(d.prefix(16)))], upper: .udp, payload: [])
        #expect(walk(cut) == .failure(.parameterProblem(code: ICMPv6ParameterProblem.incompleteChain, pointer: 0)))
        let unfragmented = ipv6Packet([(Self.destinationOptions, Array(d.prefix(16)))], upper: .udp, payload: [])
        #expect(walk(unfragmented) == .failure(.malformed(.truncated)))
    }

    @Test("more than eight extension headers is refused")
    func tooMany() {
        let nine = (0..<9).map { _ in (Self.destinationOptions, optionsHeader([])) }
        #expect(walk(ipv6Packet(nine, upper: .udp)) == .failure(.tooManyHeaders))
        let eight = Array(nine.prefix(8))
        #expect((try? walk(ipv6Packet(eight, upper: .udp)).get())?.extensionHeaders == 8)
    }

    @Test("hop-by-hop options: one past its header, an unknown one that asks for an error, one to skip, one to discard")
    func options() throws {
        // An option claiming 9 bytes in a 6-byte room: code 0 at its length byte.
        #expect(walk(ipv6Packet([(Self.hopByHop, [0, 0, 0x1E, 9, 0, 0, 0, 0])], upper: .udp))
            == .failure(.parameterProblem(code: ICMPv6ParameterProblem.erroneousField, pointer: 43)))
        // Type 10xxxxxx unknown: code 2 at the option.
        #expect(walk(ipv6Packet([(Self.hopByHop, optionsHeader([0x80, 2, 0, 0]))], upper: .udp))
            == .failure(.parameterProblem(code: ICMPv6ParameterProblem.unrecognizedOption, pointer: 42)))
        // A Router Alert of the wrong length.
        #expect(walk(ipv6Packet([(Self.hopByHop, optionsHeader([5, 3, 0, 0, 0]))], upper: .udp))
            == .failure(.parameterProblem(code: ICMPv6ParameterProblem.erroneousField, pointer: 43)))
        // 00xxxxxx unknown: skipped; 01xxxxxx: discard without a word.
        let skip = try walk(ipv6Packet([(Self.hopByHop, optionsHeader([0x1E, 2, 0, 0]))], upper: .udp)).get()
        #expect(!skip.discardSilently && skip.upperLayer == .udp)
        let discard = try walk(ipv6Packet([(Self.hopByHop, optionsHeader([0x5E, 2, 0, 0]))], upper: .udp)).get()
        #expect(discard.discardSilently)
    }

    @Test("random chains: never a trap, and an accepted chain ends inside the packet")
    func randomChains() {
        var r = PropertyTests.Rand(s: 61)
        let kinds: [UInt8] = [0, 43, 44, 60, 51, 17, 6, 58, 59, 250]
        var accepted = 0, refused = 0
        for _ in 0..<20_000 {
            let n = Int(r.next() % 64) + 8
            var b = [UInt8](repeating: 0, count: 40) + r.bytes(n)
            // Bias the chain's next-header and length bytes towards extension headers.
            var at = 40
            var next = kinds[Int(r.next() % UInt64(kinds.count))]
            while at + 2 <= b.count && r.next() % 4 != 0 {
                b[at] = kinds[Int(r.next() % UInt64(kinds.count))]
                b[at + 1] = UInt8(r.next() % 3)
                at += (Int(b[at + 1]) + 1) * 8
            }
            if r.next() % 5 == 0 { next = 0 }
            b.withUnsafeMutableBytes {
                IPv6Repr(source: .any, destination: .any, nextHeader: IPProtocol(rawValue: next), payloadLength: n).emit(into: $0)
            }
            switch walk(b) {
            case .success(let c):
                accepted += 1
                #expect(c.upperLayerOffset <= 40 + n && c.extensionHeaders <= IPv6HeaderChain.maxExtensionHeaders)
            case .failure:
                refused += 1
            }
        }
        #expect(accepted > 1000 && refused > 1000, "both paths exercised: \(accepted) accepted, \(refused) refused")
    }
}

@Suite("Neighbour discovery and MLD messages")
struct NeighborDiscoveryWireTests {
    static let router = IPv6Address("fe80::1")!, host = IPv6Address("fe80::5054:ff:fe12:3456")!

    @Test("addresses: EUI-64 link-local, solicited-node group, its Ethernet address")
    func addresses() {
        let mac = MACAddress("52:54:00:12:34:56")!
        #expect(IPv6Address.linkLocal(mac) == IPv6Address("fe80::5054:ff:fe12:3456")!)
        #expect(IPv6Address("2001:db8::1:2:3")!.solicitedNode == IPv6Address("ff02::1:ff02:3")!)
        #expect(IPv6Address("ff02::1:ff02:3")!.multicastMAC == MACAddress("33:33:ff:02:00:03")!)
        #expect(IPv6Address.allNodes.multicastMAC == MACAddress("33:33:00:00:00:01")!)
        #expect(IPv6Address.allNodes.multicastScope == 2 && IPv6Address("ff0e::1")!.multicastScope == 14)
        #expect(IPv6Address.any.isUnspecified && !IPv6Address.allNodes.isUnspecified)
    }

    /// A router advertisement with a source link-layer address, an MTU and a prefix.
    static func advertisement(_ ra: RouterAdvertisementRepr = RouterAdvertisementRepr(routerLifetime: 1800)) -> [UInt8] {
        let options: [NDOption] = [.sourceLinkLayer(MACAddress("02:00:00:00:00:01")!), .mtu(1480),
                                   .prefixInformation(NDPrefixInformation(prefix: IPv6Address("2001:db8:1::")!, prefixLength: 64))]
        var m = [UInt8](repeating: 0, count: 16 + options.reduce(0) { $0 + $1.encodedLength })
        m.withUnsafeMutableBytes { b in
            var at = 16
            for o in options { at += o.emit(into: UnsafeMutableRawBufferPointer(rebasing: b[at...])) }
            ICMPv6Repr.routerAdvertisement(ra).emit(into: b, source: router, destination: .allNodes)
        }
        return m
    }

    @Test("a router advertisement and its options round-trip and pass the RFC 4861 checks")
    func routerAdvertisement() throws {
        let ra = RouterAdvertisementRepr(currentHopLimit: 64, managed: false, otherConfiguration: true, routerLifetime: 1800,
                                         reachableTime: 30_000, retransmitTimer: 1000)
        let m = Self.advertisement(ra)
        let parsed = try with(m) { try ICMPv6Repr(parsing: $0, source: Self.router, destination: .allNodes) }
        #expect(parsed == .routerAdvertisement(ra))
        let options = try with(m) { try NeighborDiscovery.check(parsed, bytes: $0, hopLimit: 255, source: Self.router, destination: .allNodes) }
        #expect(options.sourceLinkLayer == MACAddress("02:00:00:00:00:01")! && options.mtu == 1480)
        #expect(options.prefixes == [NDPrefixInformation(prefix: IPv6Address("2001:db8:1::")!, prefixLength: 64)])
        // From off the link (hop limit below 255), or from a global address: not believed.
        #expect(throws: WireError.self) { try with(m) { try NeighborDiscovery.check(parsed, bytes: $0, hopLimit: 254, source: Self.router, destination: .allNodes) } }
        #expect(throws: WireError.self) {
            try with(m) { try NeighborDiscovery.check(parsed, bytes: $0, hopLimit: 255, source: IPv6Address("2001:db8::1")!, destination: .allNodes) }
        }
    }

    @Test("malformed options make the whole message invalid: length 0, past the end, a link-layer option of the wrong size")
    func badOptions() {
        var m = Self.advertisement()
        m[16 + 1] = 0
        #expect(parseError(m) { x throws(WireError) in _ = try NDOptions(parsing: x, from: 16) } == .badOption)
        m = Self.advertisement()
        m[16 + 1] = 9
        #expect(parseError(m) { x throws(WireError) in _ = try NDOptions(parsing: x, from: 16) } == .truncated)
        m = Self.advertisement()
        m[16 + 1] = 2  // a 16-byte source link-layer option: not Ethernet's
        #expect(parseError(m) { x throws(WireError) in _ = try NDOptions(parsing: x, from: 16) } == .badOption)
        m = Self.advertisement()
        m += [0xC8]  // a lone byte after the options
        #expect(parseError(m) { x throws(WireError) in _ = try NDOptions(parsing: x, from: 16) } == .truncated)
    }

    @Test("duplicate address detection: a solicitation from :: to the solicited-node group, without a link-layer option")
    func dadProbe() throws {
        let tentative = IPv6Address("2001:db8::7")!
        func solicitation(withSource mac: MACAddress?, to destination: IPv6Address) -> [UInt8] {
            var m = [UInt8](repeating: 0, count: 24 + (mac == nil ? 0 : 8))
            m.withUnsafeMutableBytes { b in
                if let mac { NDOption.sourceLinkLayer(mac).emit(into: UnsafeMutableRawBufferPointer(rebasing: b[24...])) }
                ICMPv6Repr.neighborSolicitation(target: tentative).emit(into: b, source: .any, destination: destination)
            }
            return m
        }
        let ok = solicitation(withSource: nil, to: tentative.solicitedNode)
        #expect(try with(ok) { try NeighborDiscovery.check(.neighborSolicitation(target: tentative), bytes: $0, hopLimit: 255,
                                                             source: .any, destination: tentative.solicitedNode) } == NDOptions())
        let withMAC = solicitation(withSource: MACAddress("02:00:00:00:00:09")!, to: tentative.solicitedNode)
        #expect(throws: WireError.self) {
            try with(withMAC) { try NeighborDiscovery.check(.neighborSolicitation(target: tentative), bytes: $0, hopLimit: 255,
                                                            source: .any, destination: tentative.solicitedNode) }
        }
        let unicast = solicitation(withSource: nil, to: tentative)
        #expect(throws: WireError.self) {
            try with(unicast) { try NeighborDiscovery.check(.neighborSolicitation(target: tentative), bytes: $0, hopLimit: 255,
                                                            source: .any, destination: tentative) }
        }
        // A solicited advertisement to a multicast group is not believed either.
        var na = [UInt8](repeating: 0, count: 24)
        let adv = ICMPv6Repr.neighborAdvertisement(target: tentative, flags: NAFlags.solicited)
        na.withUnsafeMutableBytes { adv.emit(into: $0, source: Self.host, destination: .allNodes) }
        #expect(throws: WireError.self) {
            try with(na) { try NeighborDiscovery.check(adv, bytes: $0, hopLimit: 255, source: Self.host, destination: .allNodes) }
        }
    }

    @Test("MLD: v1 and v2 queries (the floating-point response code), and a v2 report that round-trips")
    func mld() throws {
        var q = [UInt8](repeating: 0, count: 28)
        q.withUnsafeMutableBytes { ICMPv6Repr.multicastListenerQuery(MLDQueryRepr(maximumResponseDelay: 10_000)).emit(into: $0, source: Self.router, destination: .allNodes) }
        #expect(try with(q) { try ICMPv6Repr(parsing: $0, source: Self.router, destination: .allNodes) }
            == .multicastListenerQuery(MLDQueryRepr(maximumResponseDelay: 10_000, group: .any, isVersion2: true, sourceCount: 0)))
        // Code 0x8F00: exponent 0, mantissa 0xF00 -> (0xF00 | 0x1000) << 3 ms.
        let floating = try with(q) { b -> MLDQueryRepr in
            b.storeBytes(of: UInt16(0x8F00).bigEndian, toByteOffset: 4, as: UInt16.self)
            return try MLDQueryRepr(parsing: b)
        }
        #expect(floating.maximumResponseDelay == 0x1F00 << 3)
        let v1 = try with(Array(q.prefix(24))) { try MLDQueryRepr(parsing: $0) }
        #expect(!v1.isVersion2 && v1.maximumResponseDelay == 10_000)
        // A query that claims more sources than it holds.
        q[27] = 3
        #expect(parseError(q) { x throws(WireError) in _ = try MLDQueryRepr(parsing: x) } == .truncated)

        let groups = [IPv6Address("ff02::1:ff12:3456")!, IPv6Address.allRouters]
        var r = [UInt8](repeating: 0, count: MLDv2Report.length(groups: 2))
        r.withUnsafeMutableBytes { MLDv2Report.emit(recordType: MLDv2Report.changeToExclude, groups: groups, into: $0, source: Self.host) }
        #expect(try with(r) { try ICMPv6Packet(validating: $0, source: Self.host, destination: .allMLDv2Routers).type } == .multicastListenerReportV2)
        let records = try with(r) { try MLDv2Report.records(parsing: $0) }
        #expect(records.map(\.group) == groups && records.allSatisfy { $0.type == MLDv2Report.changeToExclude })
        #expect(parseError(Array(r.prefix(20))) { x throws(WireError) in _ = try MLDv2Report.records(parsing: x) } == .truncated)
    }

    /// Ethernet + IPv6 (+ hop-by-hop) around an ICMPv6 message.
    static func frame(_ icmp: [UInt8], source: IPv6Address, destination: IPv6Address, routerAlert: Bool = false) -> [UInt8] {
        var hbh = [UInt8](repeating: 0, count: routerAlert ? 8 : 0)
        if routerAlert { hbh.withUnsafeMutableBytes { MLDv2Report.emitHopByHopRouterAlert(into: $0) } }
        var f = [UInt8](repeating: 0, count: 14 + 40) + hbh + icmp
        f.withUnsafeMutableBytes { b in
            EthernetRepr(destination: destination.multicastMAC, source: MACAddress("02:00:00:00:00:01")!, etherType: .ipv6)
                .emit(into: b)
            IPv6Repr(source: source, destination: destination, nextHeader: routerAlert ? IPProtocol(rawValue: 0) : .icmpv6,
                     payloadLength: hbh.count + icmp.count, hopLimit: routerAlert ? 1 : 255)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
        }
        return f
    }

    @Test("tshark decodes what we write: a router advertisement with its options, and an MLDv2 report behind a Router Alert")
    func tsharkDecodes() throws {
        let ra = Self.frame(Self.advertisement(RouterAdvertisementRepr(routerLifetime: 1234)), source: Self.router, destination: .allNodes)
        var report = [UInt8](repeating: 0, count: MLDv2Report.length(groups: 1))
        report.withUnsafeMutableBytes {
            MLDv2Report.emit(recordType: MLDv2Report.changeToExclude, groups: [IPv6Address("ff02::1:ff12:3456")!], into: $0, source: Self.host)
        }
        let mld = Self.frame(report, source: Self.host, destination: .allMLDv2Routers, routerAlert: true)
        // A pcap file: the global header, then each frame with its record header.
        var pcap: [UInt8] = []
        func le32(_ v: UInt32) { pcap += withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        func le16(_ v: UInt16) { pcap += withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        le32(0xA1B2_C3D4); le16(2); le16(4); le32(0); le32(0); le32(65535); le32(1)
        for f in [ra, mld] {
            le32(0); le32(0); le32(UInt32(f.count)); le32(UInt32(f.count))
            pcap += f
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("anygate-nd-\(getpid()).pcap")
        try Data(pcap).write(to: path)
        defer { try? FileManager.default.removeItem(at: path) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["tshark", "-r", path.path, "-T", "fields", "-E", "separator=|",
                       "-e", "icmpv6.type", "-e", "icmpv6.checksum.status", "-e", "icmpv6.nd.ra.router_lifetime",
                       "-e", "icmpv6.opt.prefix", "-e", "icmpv6.opt.mtu", "-e", "icmpv6.opt.linkaddr",
                       "-e", "icmpv6.mldr.nb_mcast_records", "-e", "icmpv6.mldr.mar.multicast_address", "-e", "ipv6.opt.router_alert"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let lines = text.split(separator: "\n").map { $0.split(separator: "|", omittingEmptySubsequences: false).map(String.init) }
        try #require(lines.count == 2, "\(text)")
        #expect(lines[0][0] == "134" && lines[0][1] == "1", "RA, checksum good (status 1): \(lines[0])")
        #expect(lines[0][2] == "1234" && lines[0][3] == "2001:db8:1::" && lines[0][4] == "1480" && lines[0][5] == "02:00:00:00:00:01",
                "\(lines[0])")
        #expect(lines[1][0] == "143" && lines[1][1] == "1" && lines[1][6] == "1" && lines[1][7] == "ff02::1:ff12:3456", "\(lines[1])")
        #expect(lines[1][8] == "0", "a Router Alert of 0 (MLD): \(lines[1])")
    }
}
