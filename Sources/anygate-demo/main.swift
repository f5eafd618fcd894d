#if canImport(Glibc)
import Glibc
#endif
// The in-process demo: four stacks in one process joined by memory links,
//
//   A 10.1.0.2 ── R1 ── 10.12.0.0/30 (MTU 1400) ── R2 ── B 10.2.0.2
//
// pinging across, provoking each kind of ICMP error, sending a datagram
// that must be fragmented, and printing the routers' tables and counters.
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
let r1 = net.addStack(name: "R1")
let r2 = net.addStack(name: "R2")
let b = net.addStack(name: "B", configuration: .host)

func iface(_ s: Stack, _ name: String, _ mac: String, _ addr: String, mtu: Int = 1500) -> InterfaceIndex {
    must("interface \(s.name)/\(name)") { () throws -> InterfaceIndex in
        let i = try s.addInterface(name: name, mac: MACAddress(mac)!, mtu: mtu)
        try s.addAddress(IPv4InterfaceAddress(addr), to: i)
        try s.setUp(i, true)
        return i
    }
}

let aEth = iface(a, "eth0", "02:00:00:00:00:0a", "10.1.0.2/24")
let r1Lan = iface(r1, "lan0", "02:00:00:00:01:01", "10.1.0.1/24")
let r1Wan = iface(r1, "wan0", "02:00:00:00:01:02", "10.12.0.1/30", mtu: 1400)
let r2Wan = iface(r2, "wan0", "02:00:00:00:02:02", "10.12.0.2/30", mtu: 1400)
let r2Lan = iface(r2, "lan0", "02:00:00:00:02:01", "10.2.0.1/24")
let bEth = iface(b, "eth0", "02:00:00:00:00:0b", "10.2.0.2/24")
net.connect(a, aEth, r1, r1Lan)
net.connect(r1, r1Wan, r2, r2Wan)
net.connect(r2, r2Lan, b, bEth)
must("routes") { () throws in
    try a.addRoute(.any, via: IPv4Address(10, 1, 0, 1))
    try b.addRoute(.any, via: IPv4Address(10, 2, 0, 1))
    try r1.addRoute(IPv4Prefix("10.2.0.0/16"), via: IPv4Address(10, 12, 0, 2))
    try r2.addRoute(IPv4Prefix("10.1.0.0/16"), via: IPv4Address(10, 12, 0, 1))
}
net.run()

let names = ["A", "R1", "R2", "B"]
var tracing = true
net.observer = { from, to, frame in
    guard tracing else { return }
    print("  \(names[from.stack]).\(from.interface) -> \(names[to.stack]).\(to.interface)  \(PacketPrinter.describe(frame: frame))")
}

func printEvents(_ s: Stack) {
    for e in s.drainEvents() { print("  \(s.name) event: \(e)") }
}

print("== 1. ping A -> B (the first one resolves ARP on every hop; frames shown)")
must("ping") { () throws in try a.ping(IPv4Address(10, 2, 0, 2), identifier: 1, sequence: 1) }
net.run()
printEvents(a)
tracing = false

print("\n== 2. ping B -> A, five times")
for seq in 1...5 { must("ping") { () throws in try b.ping(IPv4Address(10, 1, 0, 2), identifier: 2, sequence: UInt16(seq)) } }
net.run()
printEvents(b)

print("\n== 3. TTL 2 from A: R2 answers time exceeded")
must("ping") { () throws in try a.ping(IPv4Address(10, 2, 0, 2), identifier: 3, sequence: 1, ttl: 2) }
net.run()
printEvents(a)

print("\n== 4. ping to 192.0.2.1: R1 has no route, answers net unreachable")
must("ping") { () throws in try a.ping(IPv4Address(192, 0, 2, 1), identifier: 4, sequence: 1) }
net.run()
printEvents(a)

print("\n== 5. 1472-byte payload with DF set: the 1400-byte link needs fragmentation")
must("ping") { () throws in try a.ping(IPv4Address(10, 2, 0, 2), identifier: 5, sequence: 1, payloadSize: 1472, dontFragment: true) }
net.run()
printEvents(a)

print("\n== 6. 4000-byte datagram without DF: fragmented by A and R1, reassembled by B")
tracing = true
must("ping") { () throws in try a.ping(IPv4Address(10, 2, 0, 2), identifier: 6, sequence: 1, payloadSize: 3972) }
net.run()
tracing = false
printEvents(a)

print("\n== 7. 20 frames of garbage into R1: counted, not fatal")
var seed: UInt64 = 1
for n in 0..<20 {
    var f = [UInt8](repeating: 0, count: 14 + n * 3)
    for i in f.indices { seed = seed &* 6364136223846793005 &+ 1; f[i] = UInt8(truncatingIfNeeded: seed >> 33) }
    f.withUnsafeMutableBytes { MACAddress("02:00:00:00:01:01")!.write(to: $0, at: 0) }
    if f.count >= 14 { f[12] = 0x08; f[13] = 0x00 }
    guard let p = net.pool.make(copying: f) else { fail("pool empty") }
    r1.receive(p, on: r1Lan)
}
net.run()
must("ping") { () throws in try a.ping(IPv4Address(10, 2, 0, 2), identifier: 7, sequence: 1) }
net.run()
printEvents(a)

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }

for s in [r1, r2] {
    print("\n== \(s.name): interfaces")
    print("  " + pad("name", 7) + pad("mac", 19) + pad("mtu", 6) + pad("state", 7) + pad("addresses", 18) + "rx/tx packets  rx drops")
    for i in s.interfaces {
        print("  " + pad(i.name, 7) + pad("\(i.mac)", 19) + pad("\(i.mtu)", 6) + pad(i.up ? "up" : "down", 7)
              + pad(i.addresses.map(\.description).joined(separator: ","), 18)
              + pad("\(i.counters.rxPackets)/\(i.counters.txPackets)", 15) + "\(i.counters.rxDrops)")
    }
    print("== \(s.name): routes")
    for r in s.routes {
        print("  " + pad("\(r.prefix)", 16) + pad(r.nextHop.map { "via \($0)" } ?? "", 16)
              + pad("dev \(s.interfaceName(r.interface))", 10) + pad("metric \(r.metric)", 10) + "\(r.origin)")
    }
    print("== \(s.name): neighbors")
    for n in s.neighborList {
        print("  " + pad("\(n.address)", 16) + pad(n.mac.map(\.description) ?? "-", 19) + pad(s.interfaceName(n.interface), 7) + "\(n.state)")
    }
    let c = s.counters
    print("== \(s.name): counters")
    print("  forwarded \(c.ipForwarded)  delivered \(c.ipDelivered)  fragments created \(c.fragmentsCreated)"
          + "  icmp errors sent \(c.icmpErrorsSent)  arp requests sent \(c.arpRequestsSent)")
    print("  drops: " + s.dropCounts.sorted { $0.key.description < $1.key.description }
        .map { "\($0.key) \($0.value)" }.joined(separator: ", "))
}
print("\npool: \(net.pool.inUse) of \(net.pool.capacity) buffers in use after the run")
