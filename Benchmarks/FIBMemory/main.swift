// The FIB's memory as replicas (workers) are added: a million random
// prefixes (lengths as in a full table: mostly /24, /16–/23, some longer),
// then 1 and 2 replicas reading one shared FIB, against 1 and 2 replicas
// each holding its own. Reports the table's own count (`memoryBytes`) and
// the growth of the process's resident memory (RSS) from the route list on.
// With mode v6: ROUTES BGP-shaped IPv6 routes in one stack instead.
// Usage: FIBMemory [ROUTES] [shared|own|v6] [REPLICAS]
import AnygateStack
import BenchSupport
import AnygateWire
#if canImport(Glibc)
import Glibc
#endif

final class Quiet: Hypercalls {
    var rng = SplitMix64(seed: 1)
    func now() -> Timestamp { Timestamp(nanoseconds: 1_000_000_000) }
    func random() -> UInt64 { rng.next() }
    func transmit(_ packets: UnsafeBufferPointer<PacketHandle>, interface: InterfaceIndex, stack: Stack) {
        for p in packets { stack.pool.free(p) }
    }
}

let routes = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 1_000_000 : 1_000_000
var rng = SplitMix64(seed: 2026)
let prefixes: [IPv4Prefix] = (0..<routes).map { _ in
    let r = rng.next()
    let roll = r % 100
    let length = roll < 60 ? 24 : roll < 90 ? 16 + Int(r >> 8 % 8) : 25 + Int(r >> 8 % 8)
    return IPv4Prefix(address: IPv4Address(rawValue: UInt32(truncatingIfNeeded: r >> 16)), length: length)
}

func router(_ fib: FIBSharing, routes: Bool) -> Stack {
    var c = StackConfiguration()
    c.fib = fib
    let s = Stack(name: "R", configuration: c, pool: PacketPool(capacity: 64, dataSize: 2048), hypercalls: Quiet())
    let wan = try! s.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 0, 0, 1))
    try! s.addAddress(IPv4InterfaceAddress("172.16.0.1/24"), to: wan)
    try! s.setUp(wan, true)
    if routes { for p in prefixes { try? s.addRoute(p, via: IPv4Address(172, 16, 0, 2)) } }
    return s
}

func mb(_ b: Int) -> String { "\(b / 1_000_000) MB" }
let mode = CommandLine.arguments.count > 2 ? CommandLine.arguments[2] : "shared"
let replicas = CommandLine.arguments.count > 3 ? Int(CommandLine.arguments[3]) ?? 1 : 1
let before = residentBytes()
if mode == "v6" {
    // IPv6: BGP-shaped prefixes in one stack's fib6.
    let prefixes6 = bgpShapedIPv6Prefixes(routes, seed: 6)
    let start = residentBytes()
    let s = router(.own, routes: false)
    for p in prefixes6 { try? s.addRoute(p, via: IPv6Address("fe80::1")!, interface: 0) }
    let after = residentBytes()
    print("\(routes) IPv6 routes: table \(mb(s.fib6.memoryBytes)) (\(s.fib6.memoryBytes / max(1, s.fib6.count)) bytes a prefix), "
          + "\(s.fib6.prefixCount) prefixes, resident +\(mb(after - start))")
    // Lookup time, for a feel (the benchmark suite has the real figure).
    for (label, n) in [("64Ki addresses", 65536), ("1Ki addresses", 1024)] {
        let addrs = addressesInside(prefixes6, count: n, seed: 7)
        var clock = timespec()
        clock_gettime(CLOCK_MONOTONIC, &clock)
        let t0 = Int(clock.tv_sec) * 1_000_000_000 + clock.tv_nsec
        var found = 0
        for i in 0..<2_000_000 where s.fib6.bestRouteIndex(addrs[i & (n - 1)]) != nil { found += 1 }
        clock_gettime(CLOCK_MONOTONIC, &clock)
        let t1 = Int(clock.tv_sec) * 1_000_000_000 + clock.tv_nsec
        print("  lookups inside, \(label): \(Double(t1 - t0) / 2_000_000) ns each (\(found) found)")
    }
    withExtendedLifetime(s) {}
} else if mode == "shared" {
    let shared = SharedFIB(readers: replicas)
    let writer = router(.writer(shared), routes: true)
    let readers = (0..<replicas).map { router(.reader(shared, index: $0), routes: true) }
    let after = residentBytes()
    print("\(routes) routes, shared FIB, \(replicas) replica(s): table \(mb(writer.fib.memoryBytes)), "
          + "readers' own \(mb(readers.reduce(0) { $0 + $1.fib.memoryBytes })), resident +\(mb(after - before))")
    withExtendedLifetime((writer, readers)) {}
} else {
    let own = (0..<replicas).map { _ in router(.own, routes: true) }
    let after = residentBytes()
    print("\(routes) routes, one FIB per replica, \(replicas) replica(s): tables \(mb(own.reduce(0) { $0 + $1.fib.memoryBytes })), "
          + "resident +\(mb(after - before))")
    withExtendedLifetime(own) {}
}
