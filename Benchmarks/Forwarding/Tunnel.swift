// Encapsulation and decapsulation cost: 64-byte frames from a LAN through
// two gateways, once routed plainly across the link between them and once
// through a GRE tunnel over that link; the difference is encap + decap.
import AnygateCrypto
import AnygateStack
import AnygateWire
import Benchmark

final class TunnelBench {
    let net = MemoryNetwork(pool: PacketPool(capacity: 4096, dataSize: 2048))
    let gw1: Stack, gw2: Stack
    let lan1: InterfaceIndex
    var frames: [[UInt8]] = []
    var batch: [PacketHandle] = []

    /// `protection`: GRE over IPsec with AES-GCM-128 SAs installed by hand (as IKE would).
    init(tunnel: TunnelEncapsulation?, ipflow: Bool = false, protection: ESPEncapsulation? = nil) throws {
        var config = StackConfiguration()
        config.ipflow.enabled = ipflow  // off: measure the path itself; on: the fast path through the tunnel
        gw1 = net.addStack(name: "gw1", configuration: config)
        gw2 = net.addStack(name: "gw2", configuration: config)
        lan1 = try gw1.addInterface(name: "lan", mac: MACAddress(2, 0, 0, 1, 0, 1))
        let wan1 = try gw1.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 1, 0, 2))
        let wan2 = try gw2.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 2, 0, 2))
        let lan2 = try gw2.addInterface(name: "lan", mac: MACAddress(2, 0, 0, 2, 0, 1))
        net.connect(gw1, wan1, gw2, wan2)  // gw2's lan goes nowhere: frames leaving it are freed
        try gw1.addAddress(IPv4InterfaceAddress("10.1.0.1/24"), to: lan1)
        try gw1.addAddress(IPv4InterfaceAddress("192.0.2.1/24"), to: wan1)
        try gw2.addAddress(IPv4InterfaceAddress("192.0.2.2/24"), to: wan2)
        try gw2.addAddress(IPv4InterfaceAddress("10.2.0.1/24"), to: lan2)
        for (s, i) in [(gw1, lan1), (gw1, wan1), (gw2, wan2), (gw2, lan2)] { try s.setUp(i, true) }
        if let encapsulation = tunnel {
            var c1 = TunnelConfiguration(name: "gre0", local: IPv4Address(192, 0, 2, 1), remote: IPv4Address(192, 0, 2, 2))
            c1.encapsulation = encapsulation; c1.key = 7
            var c2 = TunnelConfiguration(name: "gre0", local: IPv4Address(192, 0, 2, 2), remote: IPv4Address(192, 0, 2, 1))
            c2.encapsulation = encapsulation; c2.key = 7
            if let protection {
                c1.protection = TunnelProtection(encapsulation: protection)
                c2.protection = TunnelProtection(encapsulation: protection)
            }
            let t1 = try gw1.addTunnel(c1), t2 = try gw2.addTunnel(c2)
            if protection != nil {
                let a = AEADAlgorithm.aes128GCM
                let k1 = SecretBytes((0..<a.keyMaterialLength).map { UInt8($0) }), k2 = SecretBytes((0..<a.keyMaterialLength).map { UInt8($0 + 100) })
                try gw1.setOutboundSA(tunnel: t1, SAConfiguration(spi: 0x1001, algorithm: a, keyMaterial: k1))
                try gw2.addInboundSA(tunnel: t2, SAConfiguration(spi: 0x1001, algorithm: a, keyMaterial: k1))
                try gw2.setOutboundSA(tunnel: t2, SAConfiguration(spi: 0x2002, algorithm: a, keyMaterial: k2))
                try gw1.addInboundSA(tunnel: t1, SAConfiguration(spi: 0x2002, algorithm: a, keyMaterial: k2))
            }
            try gw1.addAddress(IPv4InterfaceAddress("172.16.0.1/30"), to: t1)
            try gw2.addAddress(IPv4InterfaceAddress("172.16.0.2/30"), to: t2)
            try gw1.addRoute(IPv4Prefix("10.2.0.0/16"), via: IPv4Address(172, 16, 0, 2))
            // The way back, which the tunnel's strict reverse-path check also consults.
            try gw2.addRoute(IPv4Prefix("10.1.0.0/16"), via: IPv4Address(172, 16, 0, 1))
        } else {
            try gw1.addRoute(IPv4Prefix("10.2.0.0/16"), via: IPv4Address(192, 0, 2, 2))
        }
        // Resolve the link and the far LAN's next hop once.
        try gw1.ping(IPv4Address(192, 0, 2, 2))
        net.run()
        try gw2.addRoute(IPv4Prefix("10.2.0.0/16"), interface: lan2)
        for k in 0..<64 {
            var f = [UInt8](repeating: 0, count: 64)
            f.withUnsafeMutableBytes { b in
                EthernetRepr(destination: MACAddress(2, 0, 0, 1, 0, 1), source: MACAddress(2, 0, 0, 0, 7, 7), etherType: .ipv4).emit(into: b)
                IPv4Repr(source: IPv4Address(10, 1, 0, 2), destination: IPv4Address(10, 2, 0, UInt8(2 + k % 4)), proto: .udp,
                         payloadLength: 30).emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
            }
            frames.append(f)
        }
        batch.reserveCapacity(250)
        // gw2 resolves its LAN hosts (they never answer): pretend with ARP replies.
        for k in 0..<4 {
            var arp = [UInt8](repeating: 0, count: 42)
            arp.withUnsafeMutableBytes { b in
                EthernetRepr(destination: MACAddress(2, 0, 0, 2, 0, 1), source: MACAddress(2, 0, 0, 9, 9, UInt8(k)), etherType: .arp).emit(into: b)
                ARPRepr(operation: .reply, senderMAC: MACAddress(2, 0, 0, 9, 9, UInt8(k)), senderIP: IPv4Address(10, 2, 0, UInt8(2 + k)),
                        targetMAC: MACAddress(2, 0, 0, 2, 0, 1), targetIP: IPv4Address(10, 2, 0, 1))
                    .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
            }
            gw2.receive(net.pool.make(copying: arp)!, on: lan2)
        }
        var at = 0
        forward(64, startAt: &at)
        precondition(net.unconnectedDrops >= 64, "frames must come out of gw2's LAN port")
    }

    func forward(_ count: Int, startAt: inout Int) {
        feed(count, frames: frames, pool: net.pool, batch: &batch, startAt: &startAt) { packets in
            gw1.receive(packets, on: lan1)
            net.run()
        }
    }
}

nonisolated(unsafe) var tunnelBenches: [String: TunnelBench] = [:]

func tunnelBenchmarks(_ configuration: Benchmark.Configuration) {
    let cases: [(String, TunnelEncapsulation?, Bool, ESPEncapsulation?)] = [
        ("plain", nil, false, nil), ("gre", .gre, false, nil), ("gre-in-udp", .greInUDP, false, nil),
        ("plain, ipflow", nil, true, nil), ("gre, ipflow", .gre, true, nil), ("gre-in-udp, ipflow", .greInUDP, true, nil),
        ("gre over ipsec (esp, aes128gcm16)", .gre, false, .esp), ("gre over ipsec (udp 4500, aes128gcm16)", .gre, false, .natTraversal),
        ("gre over ipsec (esp, aes128gcm16), ipflow", .gre, true, .esp),
    ]
    for (name, encapsulation, ipflow, protection) in cases {
        Benchmark("two gateways, 64B, \(name)", configuration: configuration) { benchmark in
            let b = tunnelBenches[name] ?? (try! TunnelBench(tunnel: encapsulation, ipflow: ipflow, protection: protection))
            tunnelBenches[name] = b
            var at = 0
            let before = b.net.unconnectedDrops
            benchmark.startMeasurement()
            b.forward(benchmark.scaledIterations.count, startAt: &at)
            benchmark.stopMeasurement()
            precondition(b.net.unconnectedDrops - before == benchmark.scaledIterations.count, "every packet must cross")
        }
    }
}
