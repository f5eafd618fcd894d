#if canImport(Glibc)
import Glibc
#endif
// The in-process demo: the appliance's main job with five stacks in one
// process joined by memory links. Two sites, each a host behind its own
// gateway, the gateways joined by a GRE tunnel across an "internet" router
// that knows nothing of the sites' prefixes:
//
//   A 10.1.0.2 ── GW1 198.51.100.1 ── U ── 203.0.113.2 GW2 ── B 10.2.0.2
//                   ╚═══════ GRE key 7, 172.16.0.1 ⇄ 172.16.0.2 ═══════╝
//
// Pings across (the first one traced frame by frame, GRE on the underlay),
// a bulk of large pings that the tunnel's smaller MTU fragments, TTL and
// unreachable errors through the tunnel, garbage into a gateway. Then
// dual-stack: the sites (2001:db8:1::/64, 2001:db8:2::/64) send IPv6 inside
// gre0, and the gateways' second tunnel gre6 runs over the IPv6 underlay
// (2001:db8:ff01::1 ⇄ 2001:db8:ff02::2) and takes the sites' IPv4; a UDP
// stream each way checked byte for byte. Last, each gateway's tunnels,
// flows, routes and counters.
import AnygateStack
import AnygateWire

func fail(_ message: String) -> Never {
    print("demo: \(message)")
    exit(1)
}

func must<T, E: Error>(_ what: String, _ body: () throws(E) -> T) -> T {
    do { return try body() } catch { fail("\(what): \(error)") }
}

let net = MemoryNetwork()
let a = net.addStack(name: "A", configuration: .host)
let gw1 = net.addStack(name: "GW1")
let u = net.addStack(name: "U")
let gw2 = net.addStack(name: "GW2")
let b = net.addStack(name: "B", configuration: .host)

func iface(_ s: Stack, _ name: String, _ mac: String, _ addr: String) -> InterfaceIndex {
    must("interface \(s.name)/\(name)") { () throws -> InterfaceIndex in
        let i = try s.addInterface(name: name, mac: MACAddress(mac)!)
        try s.addAddress(IPv4InterfaceAddress(addr), to: i)
        try s.setUp(i, true)
        return i
    }
}

let aEth = iface(a, "eth0", "02:00:00:00:00:0a", "10.1.0.2/24")
let gw1Lan = iface(gw1, "lan0", "02:00:00:00:11:01", "10.1.0.1/24")
let gw1Wan = iface(gw1, "wan0", "02:00:00:00:11:02", "198.51.100.1/24")
let uWest = iface(u, "west", "02:00:00:00:99:01", "198.51.100.254/24")
let uEast = iface(u, "east", "02:00:00:00:99:02", "203.0.113.254/24")
let gw2Wan = iface(gw2, "wan0", "02:00:00:00:22:02", "203.0.113.2/24")
let gw2Lan = iface(gw2, "lan0", "02:00:00:00:22:01", "10.2.0.1/24")
let bEth = iface(b, "eth0", "02:00:00:00:00:0b", "10.2.0.2/24")
net.connect(a, aEth, gw1, gw1Lan)
net.connect(gw1, gw1Wan, u, uWest)
net.connect(u, uEast, gw2, gw2Wan)
net.connect(gw2, gw2Lan, b, bEth)

func tunnel(_ s: Stack, local: IPv4Address, remote: IPv4Address, address: String) -> InterfaceIndex {
    must("tunnel on \(s.name)") { () throws -> InterfaceIndex in
        var c = TunnelConfiguration(name: "gre0", local: local, remote: remote)
        c.key = 7
        c.mssClamp = .auto
        let t = try s.addTunnel(c)
        try s.addAddress(IPv4InterfaceAddress(address), to: t)
        return t
    }
}
let gw1Tunnel = tunnel(gw1, local: IPv4Address(198, 51, 100, 1), remote: IPv4Address(203, 0, 113, 2), address: "172.16.0.1/30")
let gw2Tunnel = tunnel(gw2, local: IPv4Address(203, 0, 113, 2), remote: IPv4Address(198, 51, 100, 1), address: "172.16.0.2/30")
must("routes") { () throws in
    try a.addRoute(.any, via: IPv4Address(10, 1, 0, 1))
    try b.addRoute(.any, via: IPv4Address(10, 2, 0, 1))
    try gw1.addRoute(.any, via: IPv4Address(198, 51, 100, 254))
    try gw2.addRoute(.any, via: IPv4Address(203, 0, 113, 254))
    try gw1.addRoute(IPv4Prefix("10.2.0.0/16"), via: IPv4Address(172, 16, 0, 2))
    try gw2.addRoute(IPv4Prefix("10.1.0.0/16"), via: IPv4Address(172, 16, 0, 1))
}
net.run()

let names = ["A", "GW1", "U", "GW2", "B"]
var tracing = true
net.observer = { from, to, frame in
    guard tracing else { return }
    print("  \(names[from.stack]).\(from.interface) -> \(names[to.stack]).\(to.interface)  \(PacketPrinter.describe(frame: frame))")
}

func printEvents(_ s: Stack) {
    for e in s.drainEvents() { print("  \(s.name) event: \(e)") }
}

func replies(_ s: Stack) -> (count: Int, bytes: Int) {
    var n = 0, bytes = 0
    for case let .echoReply(_, _, _, len, _) in s.drainEvents() { n += 1; bytes += len }
    return (n, bytes)
}

print("== U, the internet, routes only the underlay:")
for r in u.routes where !r.isInternal { print("  \(r.prefix) dev \(u.interfaceName(r.interface))") }

print("\n== 1. ping A -> B through the tunnel (the first one resolves ARP on every hop; frames shown)")
must("ping") { () throws in try a.ping(IPv4Address(10, 2, 0, 2), identifier: 1, sequence: 1) }
net.run()
printEvents(a)
tracing = false

print("\n== 2. ping B -> A, five times")
for seq in 1...5 { must("ping") { () throws in try b.ping(IPv4Address(10, 1, 0, 2), identifier: 2, sequence: UInt16(seq)) } }
net.run()
printEvents(b)

print("\n== 3. 1000 pings of 1472 bytes A -> B: bigger than the tunnel MTU, so fragmented at GW1 and reassembled by B")
for seq in 1...1000 {
    must("ping") { () throws in try a.ping(IPv4Address(10, 2, 0, 2), identifier: 3, sequence: UInt16(seq), payloadSize: 1472) }
    if seq % 50 == 0 { net.run() }
}
net.run()
let bulk = replies(a)
print("  \(bulk.count) of 1000 answered, \(bulk.bytes) payload bytes back")
if bulk.count != 1000 { fail("only \(bulk.count) of 1000 large pings were answered") }

print("\n== 4. TTL 2 from A: GW2 answers time exceeded, back through the tunnel")
must("ping") { () throws in try a.ping(IPv4Address(10, 2, 0, 2), identifier: 4, sequence: 1, ttl: 2) }
net.run()
printEvents(a)

print("\n== 5. 1472 bytes with DF set: the tunnel's MTU is smaller, GW1 says so")
must("ping") { () throws in try a.ping(IPv4Address(10, 2, 0, 2), identifier: 5, sequence: 1, payloadSize: 1472, dontFragment: true) }
net.run()
printEvents(a)

// MARK: Dual-stack

func v6(_ s: Stack, _ i: InterfaceIndex, _ address: String) {
    must("IPv6 on \(s.name)") { () throws in try s.addAddress(IPv6InterfaceAddress(address), to: i) }
}
v6(a, aEth, "2001:db8:1::2/64"); v6(gw1, gw1Lan, "2001:db8:1::1/64"); v6(gw1, gw1Wan, "2001:db8:ff01::1/64")
v6(u, uWest, "2001:db8:ff01::fe/64"); v6(u, uEast, "2001:db8:ff02::fe/64")
v6(gw2, gw2Wan, "2001:db8:ff02::2/64"); v6(gw2, gw2Lan, "2001:db8:2::1/64"); v6(b, bEth, "2001:db8:2::2/64")
func tunnel6(_ s: Stack, local: String, remote: String, address: String) -> InterfaceIndex {
    must("gre6 on \(s.name)") { () throws -> InterfaceIndex in
        var c = TunnelConfiguration(name: "gre6", local: IPAddress(local)!, remote: IPAddress(remote)!)
        c.key = 6
        c.mssClamp = .auto
        let t = try s.addTunnel(c)
        try s.addAddress(IPv4InterfaceAddress(address), to: t)
        return t
    }
}
let gw1Tunnel6 = tunnel6(gw1, local: "2001:db8:ff01::1", remote: "2001:db8:ff02::2", address: "172.16.6.1/30")
let gw2Tunnel6 = tunnel6(gw2, local: "2001:db8:ff02::2", remote: "2001:db8:ff01::1", address: "172.16.6.2/30")
must("IPv6 routes") { () throws in
    try gw1.enableIPv6(on: gw1Tunnel)
    try gw2.enableIPv6(on: gw2Tunnel)
    try a.addRoute(IPv6Prefix("::/0"), via: IPv6Address("2001:db8:1::1"), interface: aEth)
    try b.addRoute(IPv6Prefix("::/0"), via: IPv6Address("2001:db8:2::1"), interface: bEth)
    try gw1.addRoute(IPv6Prefix("::/0"), via: IPv6Address("2001:db8:ff01::fe"), interface: gw1Wan)
    try gw2.addRoute(IPv6Prefix("::/0"), via: IPv6Address("2001:db8:ff02::fe"), interface: gw2Wan)
    // The sites' IPv6 inside gre0, over IPv4.
    try gw1.addRoute(IPv6Prefix("2001:db8:2::/48"), interface: gw1Tunnel)
    try gw2.addRoute(IPv6Prefix("2001:db8:1::/48"), interface: gw2Tunnel)
}
// Duplicate address detection: a second with no answer, and the addresses are ours.
net.run()
net.advance(by: .seconds(2))

/// Sends `count` UDP datagrams of `size` bytes from A to B on `family`'s
/// addresses and says whether B received exactly what A sent, in order.
@MainActor func stream(_ label: String, from: IPAddress, to: IPAddress, count: Int, size: Int) {
    let server = must("socket") { () throws in try b.openSocket(.udp, queueCapacity: 4096) }
    let client = must("socket") { () throws in try a.openSocket(.udp) }
    must("bind") { () throws in
        try b.bind(server, address: to, port: 9000)
        try a.bind(client, address: from, port: 5555)
        try a.connect(client, to: to, port: 9000)
    }
    var sent: [UInt8] = [], received: [UInt8] = []
    var x: UInt64 = 0x5EED
    for n in 0..<count {
        var d = [UInt8](repeating: 0, count: size)
        for i in d.indices { x = x &* 6364136223846793005 &+ 1442695040888963407; d[i] = UInt8(truncatingIfNeeded: x >> 56) }
        sent += d
        guard let p = net.pool.make(copying: d) else { fail("pool empty") }
        must("send") { () throws in try a.socketSend(client, p) }
        if n % 50 == 49 {
            net.run()
            while let r = b.socketReceive(server) { received += net.pool.copyBytes(r.packet); net.pool.free(r.packet) }
        }
    }
    net.run()
    while let r = b.socketReceive(server) { received += net.pool.copyBytes(r.packet); net.pool.free(r.packet) }
    a.closeSocket(client)
    b.closeSocket(server)
    let same = received == sent
    print("  \(label): \(count) datagrams of \(size) bytes, \(received.count) of \(sent.count) bytes received, "
          + (same ? "identical byte for byte" : "DIFFERENT"))
    if !same { fail("\(label): the stream arrived damaged or incomplete") }
}

print("\n== 6. dual-stack: IPv6 from A to B inside gre0 (GRE over IPv4); the first datagram's frames shown")
tracing = true
stream("IPv6 inside gre0", from: .v6(IPv6Address("2001:db8:1::2")!), to: .v6(IPv6Address("2001:db8:2::2")!), count: 1, size: 64)
tracing = false
stream("IPv6 inside gre0", from: .v6(IPv6Address("2001:db8:1::2")!), to: .v6(IPv6Address("2001:db8:2::2")!), count: 1000, size: 1200)

print("\n== 7. dual-stack: the sites' IPv4 moves to gre6, GRE over the IPv6 underlay (one route change each side)")
must("reroute") { () throws in
    try gw1.deleteRoute(IPv4Prefix("10.2.0.0/16"), via: IPv4Address(172, 16, 0, 2))
    try gw1.addRoute(IPv4Prefix("10.2.0.0/16"), via: IPv4Address(172, 16, 6, 2))
    try gw2.deleteRoute(IPv4Prefix("10.1.0.0/16"), via: IPv4Address(172, 16, 0, 1))
    try gw2.addRoute(IPv4Prefix("10.1.0.0/16"), via: IPv4Address(172, 16, 6, 1))
}
tracing = true
stream("IPv4 inside gre6", from: .v4(IPv4Address(10, 1, 0, 2)), to: .v4(IPv4Address(10, 2, 0, 2)), count: 1, size: 64)
tracing = false
stream("IPv4 inside gre6", from: .v4(IPv4Address(10, 1, 0, 2)), to: .v4(IPv4Address(10, 2, 0, 2)), count: 1000, size: 1200)

print("\n== 8. 20 frames of garbage into GW1: counted, not fatal")
var seed: UInt64 = 1
for n in 0..<20 {
    var f = [UInt8](repeating: 0, count: 14 + n * 3)
    for i in f.indices { seed = seed &* 6364136223846793005 &+ 1; f[i] = UInt8(truncatingIfNeeded: seed >> 33) }
    f.withUnsafeMutableBytes { MACAddress("02:00:00:00:11:01")!.write(to: $0, at: 0) }
    if f.count >= 14 { f[12] = 0x08; f[13] = 0x00 }
    guard let p = net.pool.make(copying: f) else { fail("pool empty") }
    gw1.receive(p, on: gw1Lan)
}
net.run()
must("ping") { () throws in try a.ping(IPv4Address(10, 2, 0, 2), identifier: 6, sequence: 1) }
net.run()
printEvents(a)

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }

for s in [gw1, gw2] {
    print("\n== \(s.name): tunnels")
    for t in s.tunnelList {
        let c = t.counters
        print("  \(t.configuration.name) \(t.up ? "up" : "down") \(t.configuration.local) -> \(t.configuration.remote) key \(t.configuration.key.map { "\($0)" } ?? "-")"
              + " mtu \(t.mtu)  tx \(c.txPackets) pkts/\(c.txBytes) B  rx \(c.rxPackets) pkts/\(c.rxBytes) B  mss clamped \(c.mssClamped)")
    }
    print("== \(s.name): flows (ipflow)")
    for f in s.flowList {
        print("  " + pad("\(f.source) -> \(f.destination)", 24) + pad("dev \(s.interfaceName(f.interface))", 10)
              + pad("via \(f.nextHop)", 18) + "\(f.packets) pkts \(f.valid ? "valid" : "stale")")
    }
    for f in s.flow6List {
        print("  " + pad("\(f.source) -> \(f.destination)", 34) + pad("dev \(s.interfaceName(f.interface))", 10)
              + pad("via \(f.nextHop)", 22) + "\(f.packets) pkts \(f.valid ? "valid" : "stale")")
    }
    print("== \(s.name): routes")
    for r in s.routes where !r.isInternal {
        print("  " + pad("\(r.prefix)", 18) + pad(r.nextHop.map { "via \($0)" } ?? "", 23)
              + pad("dev \(s.interfaceName(r.interface))", 10) + "\(r.origin)")
    }
    for r in s.routes6 where !r.isInternal {
        print("  " + pad("\(r.prefix)", 18) + pad(r.nextHop.map { "via \($0)" } ?? "", 23)
              + pad("dev \(s.interfaceName(r.interface))", 10) + "\(r.origin)")
    }
    let c = s.counters
    print("== \(s.name): counters")
    print("  received \(c.ipReceived)  forwarded \(c.ipForwarded)  delivered \(c.ipDelivered)  sent \(c.ipSent)"
          + "  fragments created \(c.fragmentsCreated)  icmp errors sent \(c.icmpErrorsSent)")
    print("  drops: " + s.dropCounts.sorted { $0.key.description < $1.key.description }
        .map { "\($0.key) \($0.value)" }.joined(separator: ", "))
}
_ = (gw1Tunnel, gw2Tunnel, gw1Tunnel6, gw2Tunnel6, uWest, uEast, gw2Wan, gw1Wan, bEth)
print("\npool: \(net.pool.inUse) of \(net.pool.capacity) buffers in use after the run")
