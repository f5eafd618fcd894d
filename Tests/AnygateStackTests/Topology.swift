import AnygateStack
import AnygateWire
import Testing

/// A — R1 — R2 — B, the topology most stack tests run on.
///
///     A 10.1.0.2/24 ── 10.1.0.1 R1 10.12.0.1 ── 10.12.0.2 R2 10.2.0.1 ── 10.2.0.2/24 B
///
/// A and B are hosts with a default route to their router; R1 routes
/// 10.2/16 via R2 and R2 routes 10.1/16 via R1. `linkMTU` sets the MTU of
/// the R1–R2 link; the host links use `hostMTU`.
struct Topology {
    let net: MemoryNetwork
    let a: Stack, r1: Stack, r2: Stack, b: Stack
    let aEth: InterfaceIndex, r1Lan: InterfaceIndex, r1Wan: InterfaceIndex
    let r2Wan: InterfaceIndex, r2Lan: InterfaceIndex, bEth: InterfaceIndex

    static let aAddr = IPv4Address(10, 1, 0, 2)
    static let r1LanAddr = IPv4Address(10, 1, 0, 1)
    static let r1WanAddr = IPv4Address(10, 12, 0, 1)
    static let r2WanAddr = IPv4Address(10, 12, 0, 2)
    static let r2LanAddr = IPv4Address(10, 2, 0, 1)
    static let bAddr = IPv4Address(10, 2, 0, 2)

    init(linkMTU: Int = 1500, hostMTU: Int = 1500, routerConfig: StackConfiguration = StackConfiguration(),
         poolCapacity: Int = 4096, superFrames: Int = 0) throws {
        net = MemoryNetwork(pool: PacketPool(capacity: poolCapacity, superFrames: superFrames))
        a = net.addStack(name: "A", configuration: .host)
        r1 = net.addStack(name: "R1", configuration: routerConfig)
        r2 = net.addStack(name: "R2", configuration: routerConfig)
        b = net.addStack(name: "B", configuration: .host)
        aEth = try a.addInterface(name: "eth0", mac: MACAddress(2, 0, 0, 0, 0, 0x0A), mtu: hostMTU)
        r1Lan = try r1.addInterface(name: "lan", mac: MACAddress(2, 0, 0, 0, 1, 1), mtu: hostMTU)
        r1Wan = try r1.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 0, 1, 2), mtu: linkMTU)
        r2Wan = try r2.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 0, 2, 2), mtu: linkMTU)
        r2Lan = try r2.addInterface(name: "lan", mac: MACAddress(2, 0, 0, 0, 2, 1), mtu: hostMTU)
        bEth = try b.addInterface(name: "eth0", mac: MACAddress(2, 0, 0, 0, 0, 0x0B), mtu: hostMTU)
        net.connect(a, aEth, r1, r1Lan)
        net.connect(r1, r1Wan, r2, r2Wan)
        net.connect(r2, r2Lan, b, bEth)
        try a.addAddress(IPv4InterfaceAddress("10.1.0.2/24"), to: aEth)
        try r1.addAddress(IPv4InterfaceAddress("10.1.0.1/24"), to: r1Lan)
        try r1.addAddress(IPv4InterfaceAddress("10.12.0.1/30"), to: r1Wan)
        try r2.addAddress(IPv4InterfaceAddress("10.12.0.2/30"), to: r2Wan)
        try r2.addAddress(IPv4InterfaceAddress("10.2.0.1/24"), to: r2Lan)
        try b.addAddress(IPv4InterfaceAddress("10.2.0.2/24"), to: bEth)
        for (s, i) in [(a, aEth), (r1, r1Lan), (r1, r1Wan), (r2, r2Wan), (r2, r2Lan), (b, bEth)] {
            try s.setUp(i, true)
        }
        try a.addRoute(.any, via: Topology.r1LanAddr)
        try b.addRoute(.any, via: Topology.r2LanAddr)
        try r1.addRoute(IPv4Prefix("10.2.0.0/16"), via: Topology.r2WanAddr)
        try r2.addRoute(IPv4Prefix("10.1.0.0/16"), via: Topology.r1WanAddr)
        net.run()
    }

    var stacks: [Stack] { [a, r1, r2, b] }

    /// A second way out of R1: its interface `alt` (10.13.0.1/30) to a new
    /// stack R3 (10.13.0.2/30), both up, for tests that move traffic there.
    /// The caller keeps R3 alive (the network holds stacks weakly).
    func addSideRouter() throws -> (r3: Stack, alt: InterfaceIndex) {
        let r3 = net.addStack(name: "R3")
        let alt = try r1.addInterface(name: "alt", mac: MACAddress(2, 0, 0, 0, 1, 4))
        let r3e = try r3.addInterface(name: "e0", mac: MACAddress(2, 0, 0, 0, 3, 1))
        net.connect(r1, alt, r3, r3e)
        try r1.addAddress(IPv4InterfaceAddress("10.13.0.1/30"), to: alt)
        try r3.addAddress(IPv4InterfaceAddress("10.13.0.2/30"), to: r3e)
        try r1.setUp(alt, true)
        try r3.setUp(r3e, true)
        return (r3, alt)
    }

    /// One ping each way, so that every ARP cache on the path is filled;
    /// the events it caused are discarded.
    func warmUp() throws {
        try a.ping(Topology.bAddr, identifier: 0xFFFF)
        try b.ping(Topology.aAddr, identifier: 0xFFFF)
        net.run()
        for s in stacks { _ = s.drainEvents() }
    }

    /// Every table consistent and no packet buffer leaked: what is in use is
    /// exactly what the stacks still hold.
    func checkInvariants() {
        for s in stacks {
            s.checkInvariants()
            #expect(s.ledger.balanced, "\(s.name): \(s.ledger.violations)")
        }
        net.pool.checkInvariants()
    }
}

extension Stack {
    /// The events so far, of the echo-reply kind.
    func echoReplies() -> [(from: IPv4Address, sequence: UInt16, length: Int)] {
        drainEvents().compactMap {
            if case let .echoReply(from, _, seq, len, _) = $0 { return (from, seq, len) }
            return nil
        }
    }
}

/// One stack with one interface up on `address`, for tests of a single table.
func singleStack(_ configuration: StackConfiguration, mac: MACAddress, address: String) throws
    -> (net: MemoryNetwork, stack: Stack, eth: InterfaceIndex) {
    let net = MemoryNetwork()
    let s = net.addStack(name: "S", configuration: configuration)
    let eth = try s.addInterface(name: "eth0", mac: mac)
    try s.addAddress(IPv4InterfaceAddress(address), to: eth)
    try s.setUp(eth, true)
    return (net, s, eth)
}
