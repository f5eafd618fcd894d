// IPv6 forwarding in process: 64-byte frames (Ethernet, IPv6, UDP and two
// bytes) through a router whose IPv6 FIB holds 200 000 BGP-shaped
// prefixes via one resolved gateway; every packet takes the full path
// with ip6flow off: chain walk, hop limit, trie, neighbour; with it on, a
// flow-cache hit. The frames are fed as IPv4's are (`feed`).
import AnygateHost
import AnygateStack
import AnygateWire
import Benchmark
import BenchSupport

final class Bench6 {
    let host = SinkHost()
    let pool = PacketPool(capacity: 2048, dataSize: 2048)
    let router: Stack
    let lan: InterfaceIndex, wan: InterfaceIndex
    var frames: [[UInt8]] = []
    var batch: [PacketHandle] = []

    init(prefixes: [IPv6Prefix], flows: Int, ip6flow: Bool) throws {
        host.pool = pool
        var c = StackConfiguration()
        c.dadTransmits = 0
        c.ipflow.enabled = ip6flow
        router = Stack(name: "bench6", configuration: c, pool: pool, hypercalls: host)
        lan = try router.addInterface(name: "lan", mac: MACAddress(2, 0, 0, 0, 0, 1))
        wan = try router.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 0, 0, 2))
        for i in [lan, wan] { try router.setUp(i, true); try router.enableIPv6(on: i) }
        try router.addAddress(IPv6InterfaceAddress("2001:db8:ffff:1::1/64"), to: lan)
        try router.addAddress(IPv6InterfaceAddress("2001:db8:ffff:2::1/64"), to: wan)
        let gw = IPv6Address("2001:db8:ffff:2::2")!, gwMAC = MACAddress(2, 0, 0, 0, 9, 9)
        for p in prefixes { try router.addRoute(p, via: gw, interface: wan) }
        // Resolve the gateway: a packet for it starts a solicitation, its advertisement answers.
        let destinations = addressesInside(prefixes, count: flows, seed: 12)
        frames = destinations.enumerated().map { i, d in Bench6.frame(from: IPv6Address(high: 0x2001_0DB8_FFFF_0001, low: UInt64(i) + 2), to: d) }
        router.receive(pool.make(copying: frames[0])!, on: lan)
        var na = [UInt8](repeating: 0, count: 14 + 40 + 32)
        na.withUnsafeMutableBytes { b in
            EthernetRepr(destination: MACAddress(2, 0, 0, 0, 0, 2), source: gwMAC, etherType: .ipv6).emit(into: b)
            IPv6Repr(source: gw, destination: IPv6Address("2001:db8:ffff:2::1")!, nextHeader: .icmpv6, payloadLength: 32, hopLimit: 255)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
            let m = UnsafeMutableRawBufferPointer(rebasing: b[54...])
            NDOption.targetLinkLayer(gwMAC).emit(into: UnsafeMutableRawBufferPointer(rebasing: m[24...]))
            ICMPv6Repr.neighborAdvertisement(target: gw, flags: NAFlags.solicited | NAFlags.override)
                .emit(into: m, source: gw, destination: IPv6Address("2001:db8:ffff:2::1")!)
        }
        router.receive(pool.make(copying: na)!, on: wan)
        precondition(router.neighborList6.contains { $0.address == gw && $0.state == .reachable })
        batch.reserveCapacity(256)
        // Every frame once: installs the flows when ip6flow is on.
        var at = 0
        forward(frames.count, startAt: &at)
    }

    static func frame(from source: IPv6Address, to destination: IPv6Address) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 64)
        f.withUnsafeMutableBytes { b in
            EthernetRepr(destination: MACAddress(2, 0, 0, 0, 0, 1), source: MACAddress(2, 0, 0, 0, 7, 7), etherType: .ipv6).emit(into: b)
            IPv6Repr(source: source, destination: destination, nextHeader: .udp, payloadLength: 10)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
            b.storeBytes(of: UInt16(1000).bigEndian, toByteOffset: 54, as: UInt16.self)
            b.storeBytes(of: UInt16(2000).bigEndian, toByteOffset: 56, as: UInt16.self)
            b.storeBytes(of: UInt16(10).bigEndian, toByteOffset: 58, as: UInt16.self)
        }
        return f
    }

    @inline(__always)
    func forward(_ count: Int, startAt: inout Int) {
        feed(count, frames: frames, pool: pool, batch: &batch, startAt: &startAt) { router.receive($0, on: lan) }
    }
}

nonisolated(unsafe) var benches6: [Bool: Bench6] = [:]

func ipv6ForwardingBenchmarks(_ perPacket: Benchmark.Configuration) {
    for ip6flow in [false, true] {
        let what = ip6flow ? "ip6flow hit, 1024 flows" : "full lookup, 1024 destinations"
        Benchmark("IPv6 forward 64B, \(what), FIB 200000 BGP-shaped prefixes", configuration: perPacket) { benchmark in
            if benches6[ip6flow] == nil {
                benches6 = [:]  // one 200 000-prefix router at a time
                benches6[ip6flow] = try! Bench6(prefixes: bgpShapedIPv6Prefixes(200_000, seed: 6), flows: 1024, ip6flow: ip6flow)
            }
            let b = benches6[ip6flow]!
            var at = 0
            let before = b.host.sent, hits = b.router.counters.flowHits
            benchmark.startMeasurement()
            b.forward(benchmark.scaledIterations.count, startAt: &at)
            benchmark.stopMeasurement()
            precondition(b.host.sent - before == benchmark.scaledIterations.count, "every packet must be forwarded")
            precondition(!ip6flow || b.router.counters.flowHits - hits == UInt64(benchmark.scaledIterations.count), "every packet must hit")
        }
    }
}
