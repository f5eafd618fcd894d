import AnygateStack
import AnygateWire
import Testing

@Suite("Fragmentation and reassembly", .ledgerAudited)
struct FragmentationTests {
    @Test("a 4000-byte datagram crosses a 1500-byte link as fragments and B reassembles it")
    func routerFragments() throws {
        // Jumbo host links, a 1500-byte link between the routers.
        let t = try Topology(linkMTU: 1500, hostMTU: 9000)
        var sizes: [Int] = []
        t.net.observer = { from, _, frame in
            // Record IPv4 total lengths of frames R1 puts on the R1–R2 link.
            if from.stack == 1, from.interface == t.r1Wan, frame.count > 14, frame.be16(12) == 0x0800 {
                sizes.append(Int(frame.be16(16)))
            }
        }
        // 4000-byte IP datagram: 20 IP + 8 ICMP + 3972 payload.
        try t.a.ping(Topology.bAddr, identifier: 4, sequence: 4, payloadSize: 3972)
        t.net.run()
        #expect(t.r1.counters.fragmentsCreated == 3)
        #expect(sizes.allSatisfy { $0 <= 1500 })
        #expect(sizes == [1500, 1500, 1040])  // 1480 + 1480 + 1020 payload bytes
        #expect(t.b.counters.datagramsReassembled == 1)
        // B's 4000-byte reply is fragmented by R2 and reassembled by A.
        #expect(t.r2.counters.fragmentsCreated == 3)
        #expect(t.a.counters.datagramsReassembled == 1)
        let replies = t.a.echoReplies()
        #expect(replies.count == 1 && replies.first?.length == 3972)
        #expect(t.net.pool.inUse == 0)
        t.checkInvariants()
    }

    @Test("a host fragments its own datagram for its link and the far host reassembles")
    func hostFragments() throws {
        let t = try Topology()
        try t.a.ping(Topology.bAddr, payloadSize: 3972)
        t.net.run()
        #expect(t.a.counters.fragmentsCreated == 3)
        #expect(t.r1.counters.fragmentsCreated == 0)
        #expect(t.b.counters.datagramsReassembled == 1)
        #expect(t.a.echoReplies().first?.length == 3972)
    }

    @Test("fragment options: only copied options go into later fragments")
    func copiedOptions() throws {
        let t = try Topology(linkMTU: 600, hostMTU: 1500)
        try t.warmUp()
        var headerLengths: [Int] = []
        t.net.observer = { from, _, frame in
            if from.stack == 1, from.interface == t.r1Wan, frame.be16(12) == 0x0800 {
                headerLengths.append(Int(frame.be8(14) & 0x0F) * 4)
            }
        }
        // Options: a copied one (type 0x94, router alert, 4 bytes) and a
        // non-copied one (type 0x07 record route, 8 bytes with pointer 4... padded).
        let options: [UInt8] = [0x94, 4, 0, 0, 0x07, 7, 4, 0, 0, 0, 0, 1]
        let echo = FrameBuilder.echoRequest(identifier: 5, sequence: 5, payload: (0..<1200).map { UInt8($0 & 0xFF) })
        let frame = FrameBuilder.ipv4(to: t.r1.status(t.r1Lan).mac,
                                      IPv4Repr(source: Topology.aAddr, destination: Topology.bAddr, proto: .icmp,
                                               payloadLength: 0, ttl: 64, identification: 77),
                                      payload: echo, options: options)
        t.net.inject(frame, into: t.r1, on: t.r1Lan)
        #expect(headerLengths.first == 32)
        #expect(headerLengths.dropFirst().allSatisfy { $0 == 24 })
        #expect(headerLengths.count == 3)
        #expect(t.b.counters.datagramsReassembled == 1)
    }

    /// Fragments of one datagram from A to B, injected straight into B.
    func fragment(_ t: Topology, id: UInt16 = 99, offset: Int, more: Bool, bytes: Int, fill: UInt8 = 0xAB) -> [UInt8] {
        FrameBuilder.ipv4(to: t.b.status(t.bEth).mac,
                          IPv4Repr(source: Topology.aAddr, destination: Topology.bAddr, proto: .udp,
                                   payloadLength: 0, identification: id, moreFragments: more, fragmentOffset: offset),
                          payload: [UInt8](repeating: fill, count: bytes))
    }

    @Test("overlapping fragments drop the datagram and are counted")
    func overlap() throws {
        let t = try Topology()
        t.net.inject(fragment(t, offset: 0, more: true, bytes: 16), into: t.b, on: t.bEth)
        t.net.inject(fragment(t, offset: 8, more: true, bytes: 16), into: t.b, on: t.bEth)
        // Counted in packets: the fragment held and the one that overlapped it.
        #expect(t.b.drops(.fragmentOverlap) == 2)
        // The rest of the datagram no longer completes anything.
        t.net.inject(fragment(t, offset: 16, more: false, bytes: 8), into: t.b, on: t.bEth)
        #expect(t.b.counters.datagramsReassembled == 0)
        t.net.advance(by: .seconds(31))
        #expect(t.b.drops(.reassemblyTimeout) == 1)  // the last fragment's fresh queue
        #expect(t.net.pool.inUse == 0)
    }

    @Test("a datagram longer than 65535 bytes is refused")
    func oversized() throws {
        let t = try Topology()
        t.net.inject(fragment(t, offset: 65528, more: false, bytes: 100), into: t.b, on: t.bEth)
        #expect(t.b.drops(.fragmentTooLarge) == 1)
        #expect(t.net.pool.inUse == 0)
    }

    @Test("a datagram that arrives in too many pieces is refused")
    func tooManyPieces() throws {
        var cfg = StackConfiguration.host
        cfg.reassembly.maxPieces = 4
        let (net, b, eth) = try singleStack(cfg, mac: MACAddress(2, 0, 0, 0, 0, 0x0B), address: "10.2.0.2/24")
        for k in 0..<5 {
            let f = FrameBuilder.ipv4(to: MACAddress(2, 0, 0, 0, 0, 0x0B),
                                      IPv4Repr(source: IPv4Address(10, 2, 0, 9), destination: IPv4Address(10, 2, 0, 2),
                                               proto: .udp, payloadLength: 0, identification: 1, moreFragments: true,
                                               fragmentOffset: k * 16),
                                      payload: [UInt8](repeating: 0, count: 8))
            net.inject(f, into: b, on: eth)
        }
        // Counted in packets: the four fragments held and the fifth.
        #expect(b.drops(.fragmentTooManyPieces) == 5)
        #expect(net.pool.inUse == 0)
    }

    @Test("an incomplete datagram times out with time exceeded (reassembly) to its sender")
    func timeout() throws {
        let t = try Topology()
        try t.warmUp()
        let echo = FrameBuilder.echoRequest(identifier: 1, sequence: 1, payload: [UInt8](repeating: 7, count: 64))
        let first = FrameBuilder.ipv4(to: t.b.status(t.bEth).mac,
                                      IPv4Repr(source: Topology.aAddr, destination: Topology.bAddr, proto: .icmp,
                                               payloadLength: 0, identification: 5, moreFragments: true),
                                      payload: Array(echo[0..<32]))
        t.net.inject(first, into: t.b, on: t.bEth)
        #expect(t.b.counters.datagramsReassembled == 0)
        t.net.advance(by: .seconds(31))
        #expect(t.b.drops(.reassemblyTimeout) == 1)
        let errs = t.a.drainEvents().compactMap { e -> ICMPErrorReport? in if case .icmpError(let r) = e { r } else { nil } }
        #expect(errs.count == 1)
        #expect(errs.first?.type == .timeExceeded && errs.first?.code == ICMPv4TimeExceededCode.reassembly)
        #expect(t.net.pool.inUse == 0)
    }

    @Test("more concurrent datagrams than queues evict the oldest")
    func queueEviction() throws {
        let t = try Topology()
        for id in 0..<17 {  // hosts have 16 queues
            t.net.inject(fragment(t, id: UInt16(id), offset: 0, more: true, bytes: 16), into: t.b, on: t.bEth)
        }
        #expect(t.b.drops(.reassemblyQueueEvicted) == 1)
        t.net.advance(by: .seconds(31))
        #expect(t.b.drops(.reassemblyTimeout) == 16)
        #expect(t.net.pool.inUse == 0)
    }

    /// The stack fuzzer's first finding (FUZZING.md): its harness took the
    /// ledger's fragments held for reassembly for buffers held, but a queue
    /// copies its fragments into one buffer and lets them go.
    @Test("a reassembly queue holds one pool buffer however many fragments it took; buffersHeld accounts for every buffer out")
    func buffersHeldPerQueue() throws {
        let (net, s, eth) = try singleStack(.host, mac: MACAddress(2, 0, 0, 0, 0, 0x0B), address: "10.2.0.2/24")
        func piece(_ id: UInt16, offset: Int, more: Bool) -> [UInt8] {
            FrameBuilder.ipv4(to: MACAddress(2, 0, 0, 0, 0, 0x0B),
                              IPv4Repr(source: IPv4Address(10, 2, 0, 9), destination: IPv4Address(10, 2, 0, 2), proto: .udp,
                                       payloadLength: 0, identification: id, moreFragments: more, fragmentOffset: offset),
                              // The first piece starts with a UDP header (port 1000 to 9, 48 bytes, no checksum).
                              payload: offset == 0 ? [0x03, 0xE8, 0, 9, 0, 48, 0, 0] + [UInt8](repeating: 0, count: 8)
                                                   : [UInt8](repeating: 0, count: 16))
        }
        net.inject(piece(1, offset: 0, more: true), into: s, on: eth)
        net.inject(piece(1, offset: 16, more: true), into: s, on: eth)
        net.inject(piece(2, offset: 16, more: true), into: s, on: eth)
        #expect(s.ledger.heldForReassembly == 3)
        #expect(s.buffersHeld == 2 && net.pool.inUse == 2)
        // Datagram 1 completes: UDP to a closed port, answered with port
        // unreachable, which waits for 10.2.0.9's address (nobody answers ARP).
        net.inject(piece(1, offset: 32, more: false), into: s, on: eth)
        #expect(s.counters.datagramsReassembled == 1)
        #expect(s.ledger.heldForReassembly == 1 && s.ledger.heldForNeighbor == 1, "\(s.dropCounts)")
        #expect(s.buffersHeld == 2 && net.pool.inUse == 2)
        #expect(s.ledger.balanced, "\(s.ledger.violations)")
        net.advance(by: .seconds(31))
        #expect(s.buffersHeld == 0 && net.pool.inUse == 0)
    }
}
