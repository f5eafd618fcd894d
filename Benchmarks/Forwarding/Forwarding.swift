// Forwarding benchmarks: one router stack between two memory ports.
//
// Each scaled iteration is one packet (scalingFactor .kilo: 1000 packets
// per measured iteration, fed in batches of 250), so the reported time is
// nanoseconds per packet and the malloc count is allocations per packet.
import AnygateStack
import AnygateWire
import Benchmark
import BenchSupport

/// A host for the router under test: a fixed clock, and a transmit that
/// hands the frames straight back to the pool (a NIC that sends instantly).
final class SinkHost: Hypercalls {
    var pool: PacketPool!
    var sent = 0
    func now() -> Timestamp { Timestamp(nanoseconds: 1_000_000_000) }
    func random() -> UInt64 { 42 }
    func transmit(_ packets: UnsafeBufferPointer<PacketHandle>, interface: InterfaceIndex, stack: Stack) {
        for p in packets { pool.free(p) }
        sent &+= packets.count
    }
}

/// Random prefixes shaped like a BGP table: mostly /24, then /17–/23, a
/// few short and a few longer than /24.
func randomPrefixes(_ count: Int, seed: UInt64) -> [IPv4Prefix] {
    var g = SplitMix64(seed: seed)
    var seen = Set<IPv4Prefix>()
    seen.reserveCapacity(count)
    var out: [IPv4Prefix] = []
    out.reserveCapacity(count)
    while out.count < count {
        let r = g.next() % 100
        let len: Int = r < 55 ? 24 : r < 90 ? 17 + Int(g.next() % 7) : r < 95 ? 8 + Int(g.next() % 9) : 25 + Int(g.next() % 8)
        var a = UInt32(truncatingIfNeeded: g.next())
        // Keep clear of the router's own subnets.
        if a >> 24 == 10 || a >> 24 == 172 { a ^= 0x4000_0000 }
        let p = IPv4Prefix(address: IPv4Address(rawValue: a), length: len)
        if seen.insert(p).inserted { out.append(p) }
    }
    return out
}

/// A router with lan (10.1.0.1/24) and wan (172.16.0.1/24) ports, a resolved
/// gateway 172.16.0.2 on wan, a default route and `prefixes` via the gateway.
/// Frames: 64-byte UDP packets from 10.1.0.2 to random destinations.
final class Bench {
    let host = SinkHost()
    let pool = PacketPool(capacity: 2048, dataSize: 2048)
    let router: Stack
    let lan: InterfaceIndex, wan: InterfaceIndex
    var frames: [[UInt8]] = []
    let destinations: [IPv4Address]
    var batch: [PacketHandle] = []

    init(prefixes: [IPv4Prefix], flows: Int = 1024, ipflow: Bool = false, fib: FIBSharing = .own) throws {
        host.pool = pool
        var config = StackConfiguration()
        config.fib = fib
        config.ipflow.enabled = ipflow
        config.ipflow.maxFlows = 65536
        router = Stack(name: "bench", configuration: config, pool: pool, hypercalls: host)
        lan = try router.addInterface(name: "lan", mac: MACAddress(2, 0, 0, 0, 0, 1))
        wan = try router.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 0, 0, 2))
        try router.addAddress(IPv4InterfaceAddress("10.1.0.1/24"), to: lan)
        try router.addAddress(IPv4InterfaceAddress("172.16.0.1/24"), to: wan)
        try router.setUp(lan, true)
        try router.setUp(wan, true)
        let gw = IPv4Address(172, 16, 0, 2)
        try router.addRoute(.any, via: gw)
        for p in prefixes { try router.addRoute(p, via: gw) }
        // Resolve the gateway with an ARP reply addressed to the router.
        var arp = [UInt8](repeating: 0, count: 42)
        arp.withUnsafeMutableBytes { b in
            EthernetRepr(destination: MACAddress(2, 0, 0, 0, 0, 2), source: MACAddress(2, 0, 0, 0, 9, 9), etherType: .arp).emit(into: b)
            ARPRepr(operation: .reply, senderMAC: MACAddress(2, 0, 0, 0, 9, 9), senderIP: gw,
                    targetMAC: MACAddress(2, 0, 0, 0, 0, 2), targetIP: IPv4Address(172, 16, 0, 1)).emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
        }
        router.receive(pool.make(copying: arp)!, on: wan)
        precondition(router.neighborList.contains { $0.address == gw && $0.state == .reachable })

        // Destinations: half inside installed prefixes, half anywhere.
        var g = SplitMix64(seed: 99)
        var dsts: [IPv4Address] = []
        for i in 0..<flows {
            var a = UInt32(truncatingIfNeeded: g.next())
            if i % 2 == 0, !prefixes.isEmpty {
                let p = prefixes[Int(g.next() % UInt64(prefixes.count))]
                a = p.address.rawValue | (a & ~p.mask)
            }
            if a >> 24 == 10 || a >> 24 == 172 || a >> 24 == 127 || a >> 28 >= 14 || a >> 24 == 0 { a = 0x0808_0808 ^ (a & 0xFFFF) }
            dsts.append(IPv4Address(rawValue: a))
        }
        destinations = dsts
        for (i, d) in dsts.enumerated() {
            // A distinct source per frame (10.64.0.0/10), so N frames are N flows.
            let src = IPv4Address(rawValue: 0x0A40_0000 | UInt32(i))
            var f = [UInt8](repeating: 0, count: 64)
            f.withUnsafeMutableBytes { b in
                EthernetRepr(destination: MACAddress(2, 0, 0, 0, 0, 1), source: MACAddress(2, 0, 0, 0, 7, 7), etherType: .ipv4).emit(into: b)
                IPv4Repr(source: src, destination: d, proto: .udp, payloadLength: 30).emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
                UDPRepr(sourcePort: 1000, destinationPort: 2000, payloadLength: 22)
                    .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[34..<64]), source: src, destination: d)
            }
            frames.append(f)
        }
        batch.reserveCapacity(256)
        // Send every frame once: resolves nothing new (the gateway is
        // resolved), but installs the flows when ipflow is on.
        var at = 0
        forward(frames.count, startAt: &at)
        precondition(!ipflow || router.flowCount == frames.count, "every flow installed")
    }

    /// Feeds `count` packets (in batches of `batchSize`) to the LAN port.
    @inline(__always)
    func forward(_ count: Int, batchSize: Int = 250, startAt: inout Int) {
        feed(count, frames: frames, pool: pool, batch: &batch, batchSize: batchSize, startAt: &startAt) { router.receive($0, on: lan) }
    }
}

/// Feeds `count` packets in batches of `batchSize` to `receive`, each a
/// 64-byte frame copied into a pool buffer as a NIC would DMA it, cycling
/// through `frames` (a power of two of them).
@inline(__always)
func feed(_ count: Int, frames: [[UInt8]], pool: PacketPool, batch: inout [PacketHandle], batchSize: Int = 250, startAt: inout Int,
          into receive: (UnsafeBufferPointer<PacketHandle>) -> Void) {
    var left = count
    frames.withUnsafeBufferPointer { frames in
        while left > 0 {
            let n = min(batchSize, left)
            batch.removeAll(keepingCapacity: true)
            for _ in 0..<n {
                var p = pool.allocate()!
                p.length = 64
                frames[startAt].withUnsafeBytes { src in
                    pool.bytes(p).baseAddress!.copyMemory(from: src.baseAddress!, byteCount: 64)
                }
                startAt = (startAt + 1) & (frames.count - 1)
                batch.append(p)
            }
            batch.withUnsafeBufferPointer { receive($0) }
            left -= n
        }
    }
}

struct BenchKey: Hashable { var prefixes: Int; var flows: Int; var ipflow: Bool }
extension Bench {
    /// What `forward` does minus the stack: the same feed, each batch freed.
    func harnessOnly(_ count: Int, startAt: inout Int) {
        feed(count, frames: frames, pool: pool, batch: &batch, startAt: &startAt) { packets in
            for p in packets { pool.free(p) }
        }
    }
}

nonisolated(unsafe) var benches: [BenchKey: Bench] = [:]
nonisolated(unsafe) var prefixSets: [Int: [IPv4Prefix]] = [:]
func bench(_ prefixes: Int, flows: Int = 1024, ipflow: Bool = false) -> Bench {
    let key = BenchKey(prefixes: prefixes, flows: flows, ipflow: ipflow)
    if let b = benches[key] { return b }
    let set = prefixSets[prefixes] ?? randomPrefixes(prefixes, seed: UInt64(prefixes))
    prefixSets[prefixes] = set
    // One router at a time: a 1M-prefix FIB is large.
    benches = [:]
    let b = try! Bench(prefixes: set, flows: flows, ipflow: ipflow)
    benches[key] = b
    return b
}

/// Where the next lookup sample starts, so samples walk all 64Ki addresses.
nonisolated(unsafe) var lookupCursor = 0
nonisolated(unsafe) var addressSets: [Int: [IPv4Address]] = [:]
/// 64Ki addresses, each inside a random installed prefix, so lookups reach
/// the deeper trie levels and miss the cache.
func lookupAddresses(_ count: Int) -> [IPv4Address] {
    if let a = addressSets[count] { return a }
    var g = SplitMix64(seed: 5)
    let prefixes = randomPrefixes(count, seed: UInt64(count))
    let addrs = (0..<65536).map { _ in
        let p = prefixes[Int(g.next() % UInt64(prefixes.count))]
        return IPv4Address(rawValue: p.address.rawValue | (UInt32(truncatingIfNeeded: g.next()) & ~p.mask))
    }
    addressSets[count] = addrs
    return addrs
}

let benchmarks: @Sendable () -> Void = {
    let perPacket = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .instructions],
        timeUnits: .nanoseconds, scalingFactor: .kilo, maxDuration: .seconds(3), maxIterations: 100_000)

    // The harness alone: a frame copied into a pool buffer and freed, as the
    // forwarding benchmarks do around the stack. Subtract it for the
    // stack's own cost.
    Benchmark("baseline: frame in and out, no stack", configuration: perPacket) { benchmark in
        let b = bench(1)
        var at = 0
        benchmark.startMeasurement()
        b.harnessOnly(benchmark.scaledIterations.count, startAt: &at)
        benchmark.stopMeasurement()
    }

    // The slow path: every packet through the FIB (ipflow off).
    for (prefixes, flows) in [(1, 1024), (10_000, 1024), (1_000_000, 1024), (1_000_000, 65536)] {
        Benchmark("forward 64B, full lookup, \(flows) destinations, FIB \(prefixes) prefixes", configuration: perPacket) { benchmark in
            let b = bench(prefixes, flows: flows)
            var at = 0
            let before = b.host.sent
            benchmark.startMeasurement()
            b.forward(benchmark.scaledIterations.count, startAt: &at)
            benchmark.stopMeasurement()
            precondition(b.host.sent - before == benchmark.scaledIterations.count, "every packet must be forwarded")
        }
    }

    // The fast path: every packet hits an installed flow.
    for (prefixes, flows) in [(10_000, 1), (10_000, 1024), (10_000, 65536), (1_000_000, 1024), (1_000_000, 65536)] {
        Benchmark("forward 64B, ipflow hit, \(flows) flows, FIB \(prefixes) prefixes", configuration: perPacket) { benchmark in
            let b = bench(prefixes, flows: flows, ipflow: true)
            var at = 0
            let hits = b.router.counters.flowHits
            benchmark.startMeasurement()
            b.forward(benchmark.scaledIterations.count, startAt: &at)
            benchmark.stopMeasurement()
            precondition(b.router.counters.flowHits - hits == UInt64(benchmark.scaledIterations.count), "every packet must hit")
        }
    }

    // Capture on both ports, both ways, with a filter that takes nothing
    // (tcpdump's "icmp" as libpcap compiles it): the filter runs on every
    // frame twice. With no capture running, the rows above pay one branch.
    Benchmark("forward 64B, ipflow hit, 1024 flows, FIB 10000 prefixes, capture on both ports, filter matching nothing",
              configuration: perPacket) { benchmark in
        let b = try! Bench(prefixes: prefixSets[10_000] ?? randomPrefixes(10_000, seed: 10_000), flows: 1024, ipflow: true)
        let icmp = try! BPFProgram([
            BPFInstruction(code: 0x28, k: 12), BPFInstruction(code: 0x15, jt: 0, jf: 3, k: 0x0800),
            BPFInstruction(code: 0x30, k: 23), BPFInstruction(code: 0x15, jt: 0, jf: 1, k: 1),
            BPFInstruction(code: 0x06, k: 262_144), BPFInstruction(code: 0x06, k: 0),
        ])
        for i in [b.lan, b.wan] { b.router.startCapture(interface: i, directions: .both, program: icmp, snaplen: 262_144) }
        var at = 0
        b.forward(1024, startAt: &at)
        let hits = b.router.counters.flowHits
        benchmark.startMeasurement()
        b.forward(benchmark.scaledIterations.count, startAt: &at)
        benchmark.stopMeasurement()
        precondition(b.router.counters.flowHits - hits == UInt64(benchmark.scaledIterations.count), "every packet must hit")
        precondition(b.router.readCapture(interface: b.lan)?.matched == 0, "the filter takes nothing")
    }

    tunnelBenchmarks(perPacket)
    offloadBenchmarks()
    workerBenchmarks(perPacket)
    ipv6ForwardingBenchmarks(perPacket)
    espBenchmarks(perPacket)
    vestigeBenchmarks(perPacket)

    // Control: proves the malloc counter counts (one array per iteration).
    Benchmark("control: one heap allocation per iteration", configuration: perPacket) { benchmark in
        for i in benchmark.scaledIterations {
            blackHole([UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 64 + (i & 7)))
        }
    }

    Benchmark("IPv6 FIB lookup inside installed prefixes, 200000 BGP-shaped prefixes", configuration: perPacket) { benchmark in
        let (router, addrs) = ipv6Router()
        let fib6 = router.fib6
        var found = 0
        benchmark.startMeasurement()
        let start = lookupCursor
        for i in benchmark.scaledIterations {
            if fib6.bestRouteIndex(addrs[(start &+ i) & 65535]) != nil { found &+= 1 }
        }
        lookupCursor = (start &+ benchmark.scaledIterations.count) & 65535
        benchmark.stopMeasurement()
        precondition(found == benchmark.scaledIterations.count, "every address is inside a prefix")
    }

    for prefixes in [10_000, 1_000_000] {
        Benchmark("FIB lookup inside installed prefixes, \(prefixes) prefixes", configuration: perPacket) { benchmark in
            let b = bench(prefixes)
            let fib = b.router.fib
            let addrs = lookupAddresses(prefixes)
            var found = 0
            benchmark.startMeasurement()
            let start = lookupCursor
            for i in benchmark.scaledIterations {
                if fib.bestRouteIndex(addrs[(start &+ i) & 65535]) != nil { found &+= 1 }
            }
            lookupCursor = (start &+ benchmark.scaledIterations.count) & 65535
            benchmark.stopMeasurement()
            blackHole(found)
        }
    }
}

nonisolated(unsafe) var ipv6Bench: (Stack, [IPv6Address])?
/// A stack holding 200 000 BGP-shaped IPv6 routes via one next hop, and
/// 64Ki addresses inside them.
func ipv6Router() -> (Stack, [IPv6Address]) {
    if let b = ipv6Bench { return b }
    let host = SinkHost()
    let pool = PacketPool(capacity: 64, dataSize: 2048)
    host.pool = pool
    let s = Stack(name: "bench6", pool: pool, hypercalls: host)
    let wan = try! s.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 0, 0, 2))
    try! s.setUp(wan, true)
    let prefixes = bgpShapedIPv6Prefixes(200_000, seed: 6)
    for p in prefixes { try! s.addRoute(p, via: IPv6Address("fe80::1")!, interface: wan) }
    ipv6Bench = (s, addressesInside(prefixes, count: 65536, seed: 7))
    return ipv6Bench!
}
