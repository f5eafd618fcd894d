import AnygateCrypto
import AnygateStack
import AnygateWire

/// A host for the fuzzed router: the clock moves 10 ms per input, and
/// what the router transmits goes straight back to the pool.
final class FuzzHost: Hypercalls {
    var pool: PacketPool!
    var clock: Int64 = 1_000_000_000
    var state: UInt64 = 0x1234_5678
    func now() -> Timestamp { Timestamp(nanoseconds: clock) }
    func random() -> UInt64 { state = state &* 6_364_136_223_846_793_005 &+ 1; return state }
    func transmit(_ packets: UnsafeBufferPointer<PacketHandle>, interface: InterfaceIndex, stack: Stack) {
        for p in packets { pool.free(p) }
    }
}

/// `Stack.receive` on a router with what an appliance has: two Ethernet
/// ports with IPv4 and IPv6, GRE and GRE-in-UDP tunnels, a GRE tunnel
/// protected by ESP with its SAs, ipflow, a UDP socket and a TCP listener.
/// The first byte of an input picks the port; the rest is the frame.
/// After each input: no buffer unaccounted for, the ledger balances, and
/// every table's invariants hold (a failure stops the fuzzer).
final class StackHarness {
    nonisolated(unsafe) static let shared = try! StackHarness()
    static let lanMAC = MACAddress(2, 0, 0, 0, 0, 1), wanMAC = MACAddress(2, 0, 0, 0, 0, 2)
    static let peerMAC = MACAddress(2, 0, 0, 0, 9, 9)
    static let key = (0..<AEADAlgorithm.aes128GCM.keyMaterialLength).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }

    let host = FuzzHost()
    // Small tables and pool: the invariant checks after each input walk them whole.
    let pool = PacketPool(capacity: 512, dataSize: 2048)
    let stack: Stack
    let lan: InterfaceIndex, wan: InterfaceIndex
    let udp: SocketID
    let listener: TCPListenerID
    var inputs = 0

    init() throws {
        host.pool = pool
        var c = StackConfiguration()
        c.ipflow.enabled = true
        c.ipflow.maxFlows = 256
        c.arp.maxEntries = 256
        c.maxInterfaces = 8
        c.maxSockets = 32
        c.maxSAs = 8
        c.transmitQueueCapacity = 64
        stack = Stack(name: "fuzz", configuration: c, pool: pool, hypercalls: host)
        lan = try stack.addInterface(name: "lan", mac: Self.lanMAC)
        wan = try stack.addInterface(name: "wan", mac: Self.wanMAC)
        try stack.addAddress(IPv4InterfaceAddress("10.1.0.1/24"), to: lan)
        try stack.addAddress(IPv4InterfaceAddress("192.0.2.1/24"), to: wan)
        for i in [lan, wan] { try stack.setUp(i, true); try stack.enableIPv6(on: i) }
        try stack.addAddress(IPv6InterfaceAddress("2001:db8:1::1/64"), to: lan)
        try stack.addAddress(IPv6InterfaceAddress("2001:db8:ffff::1/64"), to: wan)
        try stack.addRoute(.any, via: IPv4Address(192, 0, 2, 254))
        try stack.addRoute(IPv6Prefix("::/0"), via: IPv6Address("2001:db8:ffff::fe")!, interface: wan)
        let u1 = IPAddress.v4(IPv4Address(192, 0, 2, 1))
        var gre = TunnelConfiguration(name: "gre0", local: u1, remote: .v4(IPv4Address(192, 0, 2, 2)))
        gre.key = 7
        gre.sequence = true
        let t0 = try stack.addTunnel(gre)
        try stack.addAddress(IPv4InterfaceAddress("172.16.0.1/30"), to: t0)
        try stack.addRoute(IPv4Prefix("10.2.0.0/16"), via: IPv4Address(172, 16, 0, 2))
        var udpTunnel = TunnelConfiguration(name: "gre1", local: u1, remote: .v4(IPv4Address(192, 0, 2, 3)))
        udpTunnel.encapsulation = .greInUDP
        let t1 = try stack.addTunnel(udpTunnel)
        try stack.addAddress(IPv4InterfaceAddress("172.16.1.1/30"), to: t1)
        try stack.addRoute(IPv4Prefix("10.3.0.0/16"), via: IPv4Address(172, 16, 1, 2))
        var protected = TunnelConfiguration(name: "gre2", local: u1, remote: .v4(IPv4Address(192, 0, 2, 4)))
        protected.protection = TunnelProtection(encapsulation: .natTraversal, auto: true)
        let t2 = try stack.addTunnel(protected)
        try stack.addAddress(IPv4InterfaceAddress("172.16.2.1/30"), to: t2)
        try stack.addRoute(IPv4Prefix("10.4.0.0/16"), via: IPv4Address(172, 16, 2, 2))
        try stack.addInboundSA(tunnel: t2, SAConfiguration(spi: 0x1000, algorithm: .aes128GCM, keyMaterial: SecretBytes(Self.key)))
        try stack.setOutboundSA(tunnel: t2, SAConfiguration(spi: 0x2000, algorithm: .aes128GCM, keyMaterial: SecretBytes(Self.key)))
        udp = try stack.openSocket(.udp)
        try stack.bind(udp, address: .v4(IPv4Address(10, 1, 0, 1)), port: 53)
        listener = try stack.tcpListen(address: .v4(IPv4Address(10, 1, 0, 1)), port: 80)
        // The underlay's gateway and the peers resolved, as in steady state.
        for (ip, mac) in [(IPv4Address(192, 0, 2, 254), Self.peerMAC), (IPv4Address(192, 0, 2, 2), Self.peerMAC),
                          (IPv4Address(192, 0, 2, 3), Self.peerMAC), (IPv4Address(192, 0, 2, 4), Self.peerMAC)] {
            run([1] + Self.arpReply(from: ip, mac: mac, to: IPv4Address(192, 0, 2, 1), Self.wanMAC))
        }
    }

    static func arpReply(from ip: IPv4Address, mac: MACAddress, to target: IPv4Address, _ targetMAC: MACAddress) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 42)
        f.withUnsafeMutableBytes { b in
            EthernetRepr(destination: targetMAC, source: mac, etherType: .arp).emit(into: b)
            ARPRepr(operation: .reply, senderMAC: mac, senderIP: ip, targetMAC: targetMAC, targetIP: target)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
        }
        return f
    }

    func run(_ input: [UInt8]) {
        guard let first = input.first, input.count - 1 <= 2000 else { return }
        let frame = Array(input.dropFirst())
        host.clock &+= 10_000_000
        if let p = pool.make(copying: frame) { stack.receive(p, on: first & 1 == 0 ? lan : wan) }
        _ = stack.runTimers(now: host.clock)
        stack.flush()
        // What reached the sockets is read and let go; connections are accepted and reset.
        while let d = stack.socketReceive(udp) { pool.free(d.packet) }
        while let c = stack.tcpAccept(listener) { stack.tcpAbort(c) }
        stack.flush()
        let l = stack.ledger
        precondition(l.balanced, "ledger: \(l.violations)")
        precondition(pool.inUse == stack.buffersHeld,
                     "buffers in use \(pool.inUse), held by the stack \(stack.buffersHeld) (fragments held \(l.heldForReassembly),"
                     + " for neighbours \(l.heldForNeighbor)): a buffer leaked")
        inputs &+= 1
        stack.checkInvariants(fibs: inputs % 1024 == 0)
        pool.checkInvariants()
    }
}
