import AnygateWire

/// The wire parsers, each over bytes as a port or a socket hands them in.
enum WireHarnesses {
    static let a6 = IPv6Address("fe80::1")!, b6 = IPv6Address("ff02::1")!

    /// Ethernet frames as the stack's printers and views read them.
    static func ethernet(_ input: [UInt8]) {
        withBuffer(input) { b in
            _ = PacketPrinter.describe(frame: b)
            if let f = try? EthernetFrame(validating: b) { _ = EthernetRepr(parsing: f) }
            _ = try? ARPRepr(parsing: b)
        }
    }

    static func ipv4(_ input: [UInt8]) {
        withBuffer(input) { b in
            _ = PacketPrinter.describe(ipv4: b)
            guard let p = try? IPv4Packet(validating: b, verifyChecksum: false) else { return }
            if p.optionsAreWellFormed {
                var it = IPv4OptionIterator(options: p.options)
                while it.next() != nil {}
            }
            _ = try? IPv4Repr(parsing: b, verifyChecksum: false)
            _ = try? ICMPv4Repr(parsing: b.tail(from: p.headerLength), verifyChecksum: false)
            _ = try? UDPDatagram(validating: b.tail(from: p.headerLength), source: p.source, destination: p.destination)
        }
    }

    /// IPv6 and its extension headers; ICMPv6 (with the checksum made right, so the messages are reached).
    static func ipv6(_ input: [UInt8]) {
        withBuffer(input) { b in
            _ = PacketPrinter.describe(ipv6: b)
            guard let p = try? IPv6Packet(validating: b) else { return }
            _ = try? IPv6Repr(parsing: b)
            guard let chain = try? IPv6HeaderChain(walking: p), chain.upperLayer == .icmpv6,
                  chain.upperLayerOffset <= b.count else { return }
            let icmp = b.tail(from: chain.upperLayerOffset)
            fixICMPv6Checksum(icmp, source: p.source, destination: p.destination)
            if let m = try? ICMPv6Repr(parsing: icmp, source: p.source, destination: p.destination) {
                _ = try? NeighborDiscovery.check(m, bytes: icmp, hopLimit: p.hopLimit, source: p.source, destination: p.destination)
            }
        }
    }

    /// Neighbour discovery and MLD bodies: options, router advertisements, queries.
    static func nd(_ input: [UInt8]) {
        withBuffer(input) { b in
            fixICMPv6Checksum(b, source: a6, destination: b6)
            if let m = try? ICMPv6Repr(parsing: b, source: a6, destination: b6) {
                _ = try? NeighborDiscovery.check(m, bytes: b, hopLimit: 255, source: a6, destination: b6)
            }
            _ = try? RouterAdvertisementRepr(parsing: b)
            _ = try? MLDQueryRepr(parsing: b)
            if b.count >= 8 {
                _ = try? NDOptions(parsing: b, from: 8)
                var r = NDOptionReader(b, from: 8)
                while (try? r.next()) != nil {}
            }
        }
    }

    static func fixICMPv6Checksum(_ b: UnsafeMutableRawBufferPointer, source: IPv6Address, destination: IPv6Address) {
        guard b.count >= 4 else { return }
        b.setBE16(2, 0)
        let initial = InternetChecksum.pseudoHeaderSum(source: source, destination: destination, nextHeader: .icmpv6, length: b.count)
        b.setBE16(2, InternetChecksum.checksum(b, initial: initial))
    }

    static func gre(_ input: [UInt8]) {
        withBuffer(input) { b in
            if let g = try? GREHeader(validating: b) { _ = (g.key, g.sequence, g.headerLength, g.protocolType) }
            _ = try? GRERepr(parsing: b)
        }
    }

    static func esp(_ input: [UInt8]) {
        withBuffer(input) { b in
            _ = try? ESPPacket(validating: b)
            _ = ESPPacket.readTrailer(UnsafeRawBufferPointer(b))
            _ = UDPEncapsulation.classify(UnsafeRawBufferPointer(b))
        }
    }

    /// A TCP header and its options (as a segment's header arrives).
    static func tcp(_ input: [UInt8]) {
        withBuffer(input) { b in
            guard let t = try? TCPHeader(validating: b) else { return }
            let o = t.options
            for k in 0..<o.sackCount { _ = o.sack(k) }
            _ = t.clampMSS(to: 1200)
        }
    }

    /// A classic BPF program (the first 8·n bytes) checked, then run over the rest.
    static func bpf(_ input: [UInt8]) {
        guard input.count >= 2 else { return }
        let n = min(Int(input[0]), (input.count - 1) / 8)
        var ins: [BPFInstruction] = []
        for k in 0..<n {
            let o = 1 + 8 * k
            ins.append(BPFInstruction(code: UInt16(input[o]) | UInt16(input[o + 1]) << 8, jt: input[o + 2], jf: input[o + 3],
                                      k: UInt32(input[o + 4]) | UInt32(input[o + 5]) << 8 | UInt32(input[o + 6]) << 16 | UInt32(input[o + 7]) << 24))
        }
        guard let p = try? BPFProgram(ins) else { return }
        let packet = Array(input[(1 + 8 * n)...])
        packet.withUnsafeBytes { _ = p.run($0) }
    }
}
