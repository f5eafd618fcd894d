// Super-frames through one router: forwarded whole between ports with
// offloads, cut into segments in software for a port without them, and
// segments merged back (GRO) for a port with them. One iteration is one
// 64 000-byte payload (a TSO super-frame, or its 45 segments).
import AnygateStack
import AnygateWire
import Benchmark

final class OffloadBench {
    let host = SinkHost()
    let pool = PacketPool(capacity: 2048, dataSize: 2048, superFrames: 16)
    let router: Stack
    let lan: InterfaceIndex, wan: InterfaceIndex
    /// The super-frame's headers (Ethernet, IPv4 with DF, TCP with timestamps).
    var headers: [UInt8] = []
    /// Its 45 segments as a NIC without offloads would deliver them.
    var segments: [[UInt8]] = []
    var batch: [PacketHandle] = []
    static let payload = 64_000, segmentSize = 1448

    init(egressOffloads: Bool) throws {
        host.pool = pool
        router = Stack(name: "bench", pool: pool, hypercalls: host)
        lan = try router.addInterface(name: "lan", mac: MACAddress(2, 0, 0, 0, 0, 1))
        wan = try router.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 0, 0, 2))
        try router.addAddress(IPv4InterfaceAddress("10.1.0.1/24"), to: lan)
        try router.addAddress(IPv4InterfaceAddress("172.16.0.1/24"), to: wan)
        for i in [lan, wan] { try router.setUp(i, true) }
        try router.setOffloads(lan, true)
        try router.setOffloads(wan, egressOffloads)
        let gw = IPv4Address(172, 16, 0, 2)
        try router.addRoute(.any, via: gw)
        var arp = [UInt8](repeating: 0, count: 42)
        arp.withUnsafeMutableBytes { b in
            EthernetRepr(destination: MACAddress(2, 0, 0, 0, 0, 2), source: MACAddress(2, 0, 0, 0, 9, 9), etherType: .arp).emit(into: b)
            ARPRepr(operation: .reply, senderMAC: MACAddress(2, 0, 0, 0, 9, 9), senderIP: gw,
                    targetMAC: MACAddress(2, 0, 0, 0, 0, 2), targetIP: IPv4Address(172, 16, 0, 1))
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
        }
        router.receive(pool.make(copying: arp)!, on: wan)
        // Ethernet + IPv4 (DF) + TCP (32-byte header) of the whole super-frame.
        let tcpLength = 32 + OffloadBench.payload
        headers = [UInt8](repeating: 0, count: 14 + 20 + 32)
        headers.withUnsafeMutableBytes { b in
            EthernetRepr(destination: MACAddress(2, 0, 0, 0, 0, 1), source: MACAddress(2, 0, 0, 0, 7, 7), etherType: .ipv4).emit(into: b)
            IPv4Repr(source: IPv4Address(10, 1, 0, 2), destination: IPv4Address(192, 0, 2, 9), proto: .tcp, payloadLength: tcpLength,
                     dontFragment: true).emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
        }
        let tcp: [UInt8] = [0x13, 0x88, 0x00, 0x50, 0, 0, 0x10, 0, 0, 0, 0, 1, 0x80, 0x10, 0x01, 0xF5, 0, 0, 0, 0,
                            1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]
        for (i, x) in tcp.enumerated() { headers[34 + i] = x }
        // The segments, made once by the stack's own segmentation, with valid checksums.
        var whole = headers + [UInt8](repeating: 0x5A, count: OffloadBench.payload)
        whole.withUnsafeMutableBytes { b in
            let l = Segmentation.layout(b, network: 14)!
            for k in 0..<Segmentation.segmentCount(l, segmentSize: OffloadBench.segmentSize) {
                var s = [UInt8](repeating: 0, count: 66 + OffloadBench.segmentSize)
                let n = s.withUnsafeMutableBytes { Segmentation.writeSegment(k, of: b, layout: l, segmentSize: OffloadBench.segmentSize, into: $0) }
                segments.append(Array(s[..<n]))
            }
        }
        batch.reserveCapacity(64)
        // Warm: the first packets install the flow.
        for _ in 0..<2 { forwardSuperFrame(); forwardSegments() }
    }

    /// One super-frame in (its headers written into a super-frame buffer as
    /// a TAP would read them; the payload bytes are the buffer's).
    func forwardSuperFrame() {
        var p = pool.allocateSuperFrame()!
        p.length = UInt32(headers.count + OffloadBench.payload)
        headers.withUnsafeBytes { pool.bytes(p).baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        p.segmentSize = UInt16(OffloadBench.segmentSize)
        p.offload = PacketHandle.checksumPartial
        router.receive(p, on: lan)
    }

    /// Its 45 segments in, one batch, each copied in as a NIC would.
    func forwardSegments() {
        batch.removeAll(keepingCapacity: true)
        for s in segments {
            var p = pool.allocate()!
            p.length = UInt32(s.count)
            s.withUnsafeBytes { pool.bytes(p).baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            batch.append(p)
        }
        batch.withUnsafeBufferPointer { router.receive($0, on: lan) }
    }
}

nonisolated(unsafe) var offloadBenches: [Bool: OffloadBench] = [:]
func offloadBench(egressOffloads: Bool) -> OffloadBench {
    if let b = offloadBenches[egressOffloads] { return b }
    let b = try! OffloadBench(egressOffloads: egressOffloads)
    offloadBenches[egressOffloads] = b
    return b
}

func offloadBenchmarks() {
    let perSuperFrame = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        timeUnits: .nanoseconds, scalingFactor: .one, maxDuration: .seconds(3), maxIterations: 100_000)
    Benchmark("super-frame 64 KB: forwarded whole (offloads both sides)", configuration: perSuperFrame) { benchmark in
        let b = offloadBench(egressOffloads: true)
        for _ in benchmark.scaledIterations { b.forwardSuperFrame() }
    }
    Benchmark("super-frame 64 KB: cut into 45 segments (egress without offloads)", configuration: perSuperFrame) { benchmark in
        let b = offloadBench(egressOffloads: false)
        for _ in benchmark.scaledIterations { b.forwardSuperFrame() }
    }
    Benchmark("45 segments (64 KB): forwarded and merged into one super-frame (GRO)", configuration: perSuperFrame) { benchmark in
        let b = offloadBench(egressOffloads: true)
        let before = b.router.counters.coalescedFrames
        for _ in benchmark.scaledIterations { b.forwardSegments() }
        precondition(b.router.counters.coalescedFrames > before, "the segments must be merged")
    }
    Benchmark("45 segments (64 KB): forwarded one by one (egress without offloads)", configuration: perSuperFrame) { benchmark in
        let b = offloadBench(egressOffloads: false)
        for _ in benchmark.scaledIterations { b.forwardSegments() }
    }
}
