import AnygateStack
import AnygateWire
import Testing

@Suite("ipflow fast forwarding", .ledgerAudited)
struct FlowTests {
    /// A UDP frame from A's side into R1's LAN port.
    static func udp(_ t: Topology, from src: IPv4Address = Topology.aAddr, to dst: IPv4Address = Topology.bAddr,
                    tos: UInt8 = 0, ttl: UInt8 = 64, options: [UInt8] = [], fragment: Int? = nil, size: Int = 32) -> [UInt8] {
        FrameBuilder.ipv4(to: t.r1.status(t.r1Lan).mac, from: t.a.status(t.aEth).mac,
                          IPv4Repr(source: src, destination: dst, proto: .udp, payloadLength: 0, ttl: ttl, tos: tos,
                                   moreFragments: fragment != nil, fragmentOffset: fragment ?? 0),
                          payload: [0x13, 0x88, 0x13, 0x89, 0, UInt8(8 + size - 8), 0, 0] + [UInt8](repeating: 0x5A, count: size - 8),
                          options: options)
    }

    /// Frames R1 sends on `interface`, recorded as they cross the link.
    final class Tap {
        var frames: [[UInt8]] = []
    }
    func record(_ t: Topology, stack: Int = 1, interface: InterfaceIndex) -> Tap {
        let tap = Tap()
        t.net.observer = { from, _, f in
            if from.stack == stack && from.interface == interface && f.be16(12) == 0x0800 { tap.frames.append(Array(f)) }
        }
        return tap
    }

    @Test("the first packet creates a flow and the next ones hit it, each forwarded intact")
    func createThenHit() throws {
        let t = try Topology()
        try t.warmUp()
        let wan = record(t, interface: t.r1Wan)
        for _ in 0..<5 { t.net.inject(Self.udp(t), into: t.r1, on: t.r1Lan) }
        #expect(t.r1.counters.flowsCreated == 1)
        #expect(t.r1.counters.flowHits == 4)
        #expect(wan.frames.count == 5)
        // Every copy left with TTL 63, a valid header checksum and R2's MAC.
        for f in wan.frames {
            f.withUnsafeBytes { b in
                let m = UnsafeMutableRawBufferPointer(mutating: b)
                #expect(IPv4Packet(unchecked: m.tail(from: 14)).ttl == 63)
                #expect(InternetChecksum.verifies(m.slice(14, 20)))
                #expect(MACAddress(bytes: m, at: 0) == t.r2.status(t.r2Wan).mac)
            }
        }
        #expect(Set(wan.frames).count == 1, "the fast path and the slow path wrote the same bytes")
        #expect(t.b.drops(.portUnreachable) == 5)
        let flows = t.r1.flowList
        #expect(flows.count == 1)
        #expect(flows.first?.source == Topology.aAddr && flows.first?.destination == Topology.bAddr)
        #expect(flows.first?.nextHop == Topology.r2WanAddr && flows.first?.interface == t.r1Wan)
        #expect(flows.first?.packets == 4 && flows.first?.bytes == 4 * 52)
        t.checkInvariants()
    }

    @Test("TOS is part of the key; ports and protocol are not; ICMP makes no flow")
    func key() throws {
        let t = try Topology()
        try t.warmUp()
        t.net.inject(Self.udp(t, tos: 0), into: t.r1, on: t.r1Lan)
        t.net.inject(Self.udp(t, tos: 0x10), into: t.r1, on: t.r1Lan)
        #expect(t.r1.flowCount == 2)
        try t.a.ping(Topology.bAddr, sequence: 77)
        t.net.run()
        #expect(t.r1.flowCount == 2, "no flow for ICMP")
    }

    @Test("a more specific route moves the very next packet; none leaves by the old path")
    func routeChangeMovesNextPacket() throws {
        let t = try Topology()
        // A second way towards B's subnet: R1 alt -> R3 (which only counts what arrives).
        // The network holds stacks weakly: R3 must live to the end of the test.
        let (r3, alt) = try t.addSideRouter()
        defer { withExtendedLifetime(r3) {} }
        try t.warmUp()
        try t.r1.ping(IPv4Address(10, 13, 0, 2))  // resolve R3
        t.net.run()
        var byInterface: [InterfaceIndex: Int] = [:]
        t.net.observer = { from, _, f in
            if from.stack == 1, f.be16(12) == 0x0800 { byInterface[from.interface, default: 0] += 1 }
        }
        for _ in 0..<10 { t.net.inject(Self.udp(t), into: t.r1, on: t.r1Lan) }
        #expect(byInterface[t.r1Wan] == 10 && t.r1.counters.flowHits == 9)
        try t.r1.addRoute(IPv4Prefix("10.2.0.0/24"), via: IPv4Address(10, 13, 0, 2))
        byInterface = [:]
        t.net.inject(Self.udp(t), into: t.r1, on: t.r1Lan)
        #expect(byInterface[t.r1Wan] == nil, "nothing by the old path after the change")
        #expect(byInterface[alt] == 1)
        #expect(t.r1.counters.flowsInvalidated == 1)
        for _ in 0..<5 { t.net.inject(Self.udp(t), into: t.r1, on: t.r1Lan) }
        #expect(byInterface[alt] == 6 && byInterface[t.r1Wan] == nil)
        #expect(t.r1.counters.flowHits == 9 + 5, "the refreshed flow is used again")
        // Replacing the route back moves traffic back at once.
        try t.r1.deleteRoute(IPv4Prefix("10.2.0.0/24"))
        byInterface = [:]
        t.net.inject(Self.udp(t), into: t.r1, on: t.r1Lan)
        #expect(byInterface[t.r1Wan] == 1 && byInterface[alt] == nil)
    }

    @Test("replacing the default route moves flows that used it")
    func replaceDefault() throws {
        let t = try Topology()
        try t.r1.addRoute(.any, via: Topology.r2WanAddr)
        try t.warmUp()
        let far = IPv4Address(203, 0, 113, 5)
        for _ in 0..<3 { t.net.inject(Self.udp(t, to: far), into: t.r1, on: t.r1Lan) }
        #expect(t.r1.counters.flowHits == 2)
        try t.r1.replaceRoute(.any, via: Topology.aAddr, interface: t.r1Lan)
        let lan = record(t, interface: t.r1Lan)
        t.net.inject(Self.udp(t, to: far), into: t.r1, on: t.r1Lan)
        #expect(lan.frames.filter { IPv4Address(rawValue: $0.withUnsafeBytes { UnsafeMutableRawBufferPointer(mutating: $0).be32(30) }) == far }.count == 1)
    }

    @Test("interface down invalidates its flows")
    func interfaceDown() throws {
        let t = try Topology()
        try t.warmUp()
        for _ in 0..<3 { t.net.inject(Self.udp(t), into: t.r1, on: t.r1Lan) }
        #expect(t.r1.counters.flowHits == 2)
        try t.r1.setUp(t.r1Wan, false)
        t.net.inject(Self.udp(t), into: t.r1, on: t.r1Lan)
        #expect(t.r1.counters.flowHits == 2)
        #expect(t.r1.counters.flowsInvalidated == 1)
        #expect(t.r1.drops(.noRoute) == 1, "its route is withdrawn")
    }

    @Test("a next hop's new MAC is used by the very next packet")
    func neighborMACChange() throws {
        let t = try Topology()
        try t.warmUp()
        for _ in 0..<3 { t.net.inject(Self.udp(t), into: t.r1, on: t.r1Lan) }
        let newMAC = MACAddress(2, 0, 0, 0, 2, 0x77)
        try t.r2.setMAC(t.r2Wan, newMAC)
        try t.r2.setUp(t.r2Wan, false)
        try t.r2.setUp(t.r2Wan, true)  // announces the new MAC
        t.net.run()
        let wan = record(t, interface: t.r1Wan)
        t.net.inject(Self.udp(t), into: t.r1, on: t.r1Lan)
        t.net.inject(Self.udp(t), into: t.r1, on: t.r1Lan)
        #expect(wan.frames.count == 2)
        #expect(wan.frames.allSatisfy { $0.withUnsafeBytes { MACAddress(bytes: UnsafeMutableRawBufferPointer(mutating: $0), at: 0) } == newMAC })
        #expect(t.b.drops(.portUnreachable) == 5, "B got every packet")
    }

    @Test("a full table evicts the oldest flow")
    func eviction() throws {
        var cfg = StackConfiguration()
        cfg.ipflow.maxFlows = 4
        let t = try Topology(routerConfig: cfg)
        try t.warmUp()
        for k in 0..<5 {
            t.net.inject(Self.udp(t, from: IPv4Address(10, 1, 0, UInt8(10 + k))), into: t.r1, on: t.r1Lan)
        }
        #expect(t.r1.counters.flowsEvicted == 1)
        #expect(t.r1.flowList.map(\.source) == (11...14).map { IPv4Address(10, 1, 0, UInt8($0)) })
        t.checkInvariants()
    }

    @Test("idle flows expire; a flow in use stays")
    func idleTimeout() throws {
        var cfg = StackConfiguration()
        cfg.ipflow.idleTimeout = .seconds(3)
        let t = try Topology(routerConfig: cfg)
        try t.warmUp()
        t.net.inject(Self.udp(t, from: IPv4Address(10, 1, 0, 20)), into: t.r1, on: t.r1Lan)
        t.net.inject(Self.udp(t, from: IPv4Address(10, 1, 0, 21)), into: t.r1, on: t.r1Lan)
        for _ in 0..<5 {
            t.net.advance(by: .seconds(1))
            t.net.inject(Self.udp(t, from: IPv4Address(10, 1, 0, 21)), into: t.r1, on: t.r1Lan)
        }
        #expect(t.r1.flowList.map(\.source) == [IPv4Address(10, 1, 0, 21)])
        #expect(t.r1.counters.flowsExpired == 1)
        t.net.advance(by: .seconds(4))
        #expect(t.r1.flowCount == 0)
    }

    @Test("packets with options and fragments take the slow path and are still forwarded")
    func slowPathPackets() throws {
        let t = try Topology()
        try t.warmUp()
        t.net.inject(Self.udp(t), into: t.r1, on: t.r1Lan)  // creates the flow
        let hits = t.r1.counters.flowHits
        let wan = record(t, interface: t.r1Wan)
        t.net.inject(Self.udp(t, options: [0x94, 4, 0, 0]), into: t.r1, on: t.r1Lan)
        t.net.inject(Self.udp(t, fragment: 0), into: t.r1, on: t.r1Lan)
        t.net.inject(Self.udp(t, ttl: 1), into: t.r1, on: t.r1Lan)
        #expect(t.r1.counters.flowHits == hits)
        #expect(wan.frames.count == 2)
        #expect(wan.frames.first.map { Int($0[14] & 0x0F) * 4 } == 24, "options kept")
        #expect(t.r1.drops(.ttlExpired) == 1)
        t.net.inject(Self.udp(t), into: t.r1, on: t.r1Lan)
        #expect(t.r1.counters.flowHits == hits + 1)
    }

    @Test("a flow entry is one 64-byte cache line")
    func entrySize() {
        #expect(Stack.flowEntryBytes == 64)
    }

    @Test("flush empties the table and counts it")
    func flush() throws {
        let t = try Topology()
        try t.warmUp()
        for k in 0..<3 { t.net.inject(Self.udp(t, tos: UInt8(k * 4)), into: t.r1, on: t.r1Lan) }
        #expect(t.r1.flushFlows() == 3)
        #expect(t.r1.flowCount == 0 && t.r1.counters.flowsFlushed == 3)
        t.checkInvariants()
    }
}

@Suite("Route caches", .ledgerAudited)
struct RouteCacheTests {
    @Test("a cache hits until the FIB changes, and a new destination replaces it")
    func validation() throws {
        let net = MemoryNetwork()
        let s = net.addStack(name: "S")
        let i = try s.addInterface(name: "e0", mac: MACAddress(2, 0, 0, 0, 0, 1))
        try s.addAddress(IPv4InterfaceAddress("10.0.0.1/24"), to: i)
        try s.setUp(i, true)
        try s.addRoute(.any, via: IPv4Address(10, 0, 0, 2))
        var cache = RouteCache()
        var stats = RouteCache.Statistics()
        let d = IPv4Address(198, 51, 100, 1)
        #expect(cache.route(to: d, in: s.fib, statistics: &stats)?.nextHop == IPv4Address(10, 0, 0, 2))
        #expect(cache.route(to: d, in: s.fib, statistics: &stats)?.nextHop == IPv4Address(10, 0, 0, 2))
        #expect(stats.hits == 1 && stats.resolutions == 1)
        #expect(cache.isValid(for: d, in: s.fib))
        // Any change — even an unrelated route — invalidates every cache.
        try s.addRoute(IPv4Prefix("192.0.2.0/24"), via: IPv4Address(10, 0, 0, 3))
        #expect(!cache.isValid(for: d, in: s.fib))
        try s.addRoute(IPv4Prefix("198.51.100.0/24"), via: IPv4Address(10, 0, 0, 4))
        #expect(cache.route(to: d, in: s.fib, statistics: &stats)?.nextHop == IPv4Address(10, 0, 0, 4))
        #expect(stats.invalidations == 1 && stats.resolutions == 2)
        // A different destination is a fresh lookup, not an invalidation.
        _ = cache.route(to: IPv4Address(8, 8, 8, 8), in: s.fib, statistics: &stats)
        #expect(stats.resolutions == 3 && stats.invalidations == 1)
        // Interface changes advance the generation too.
        let g = s.fib.generation
        try s.setUp(i, false)
        #expect(s.fib.generation > g)
        try s.setUp(i, true)
        let g2 = s.fib.generation
        try s.setMTU(i, 1400)
        #expect(s.fib.generation > g2)
        // A cached "no route" answer is remembered and invalidated the same way.
        try s.deleteRoute(IPv4Prefix.any)
        #expect(cache.route(to: IPv4Address(8, 8, 8, 8), in: s.fib, statistics: &stats) == nil)
        #expect(cache.route(to: IPv4Address(8, 8, 8, 8), in: s.fib, statistics: &stats) == nil)
        #expect(stats.hits == 2)
    }
}
