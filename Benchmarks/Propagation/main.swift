// Route-change propagation to workers: the control thread's stack changes
// the shared FIB at a fixed rate (default 10 000 changes a second), and each
// worker, running batches of lookups, notes how long after a change began
// the first batch that sees it started. Prints the achieved rate, the
// latency percentiles per worker, and any change a worker did not see.
// Usage: Propagation [WORKERS] [RATE] [SECONDS]
import AnygateHost
import AnygateStack
import AnygateWire
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

func now() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// Latencies one worker noted; written by that worker only, read after a gather.
final class Log: @unchecked Sendable {
    var latencies: [Int64]
    init(_ n: Int) { latencies = []; latencies.reserveCapacity(n) }
}

let args = CommandLine.arguments
let workers = args.count > 1 ? Int(args[1]) ?? 2 : 2
let rate = args.count > 2 ? Int(args[2]) ?? 10_000 : 10_000
let seconds = args.count > 3 ? Double(args[3]) ?? 3 : 3
let changes = Int(Double(rate) * seconds)

// The control thread's stack writes the FIB the workers' replicas read
// (SharedFIB), as in anygated with several workers.
final class Quiet: Hypercalls {
    var rng = SplitMix64(seed: 1)
    func now() -> Timestamp { Timestamp(nanoseconds: 1_000_000_000) }
    func random() -> UInt64 { rng.next() }
    func transmit(_ packets: UnsafeBufferPointer<PacketHandle>, interface: InterfaceIndex, stack: Stack) {
        for p in packets { stack.pool.free(p) }
    }
}
let shared = SharedFIB(readers: workers)
var wc = StackConfiguration()
wc.fib = .writer(shared)
let writer = Stack(name: "control", configuration: wc, pool: PacketPool(capacity: 64, dataSize: 2048), hypercalls: Quiet())
let setUpLAN: @Sendable (Stack) -> Void = { s in
    let lan = try! s.addInterface(name: "lan", mac: MACAddress(2, 0, 0, 0, 0, 1))
    try! s.addAddress(IPv4InterfaceAddress("10.9.0.1/24"), to: lan)
    try! s.setUp(lan, true)
}
setUpLAN(writer)
let group = try WorkerGroup(count: workers, configuration: StackConfiguration(), sharedFIB: shared, inboxCapacity: 65536,
                            makePool: { PacketPool(capacity: 256, dataSize: 2048) })
_ = group.gather { setUpLAN($0.stack!) }
// A FIB of 10 000 routes, so changes land in a real table.
for k in 0..<10_000 {
    let p = IPv4Prefix(address: IPv4Address(rawValue: 0x3000_0000 | UInt32(k) << 8), length: 24)
    try writer.addRoute(p, via: IPv4Address(10, 9, 0, 254))
}

/// What the control thread tells the workers: the newest change it has
/// finished and when each began.
final class Changes: @unchecked Sendable {
    let sent: UnsafeMutablePointer<Int64>
    let last = Atomic<Int>(-1)
    let begun = Atomic<Int>(-1)
    let done = Atomic<Bool>(false)
    init(_ n: Int) { sent = .allocate(capacity: n) }
}
let board = Changes(changes)
func probe(_ k: Int) -> IPv4Prefix {
    IPv4Prefix(address: IPv4Address(rawValue: 0x4000_0000 | UInt32(k / 2 % 1000) << 8), length: 24)
}
// Each worker runs batches as its loop would: a quiescent point (where it
// reads the FIB's generation), then 64 lookups. At the first batch after a
// change it checks that the change shows and notes how long after the
// change began that batch started.
let logs = (0..<workers).map { _ in Log(changes) }
let wrong = Atomic<Int>(0)
for w in 0..<workers {
    let log = logs[w]
    _ = group.perform(on: w) { runtime in
        let s = runtime.stack!
        var seen = -1
        var x: UInt32 = 0x3000_0001
        while true {
            s.resumeReading()
            let t = now()
            let k = board.last.load(ordering: .acquiring)
            if k > seen {
                let shows = s.lookup(IPv4Address(rawValue: probe(k).address.rawValue | 1))?.prefix == probe(k)
                // (Unless the next change, which undoes this one, has begun.)
                if shows != (k % 2 == 0) && board.begun.load(ordering: .acquiring) == k {
                    wrong.add(1, ordering: .relaxed)
                }
                for j in (seen + 1)...k { log.latencies.append(t - board.sent[j]) }
                seen = k
            }
            if board.done.load(ordering: .acquiring) && seen == changes - 1 { break }
            for _ in 0..<64 {
                x = x &* 1_103_515_245 &+ 12345
                _ = s.lookup(IPv4Address(rawValue: 0x3000_0000 | (x >> 8) % (10_000 << 8)))
            }
        }
    }
}

let interval = 1_000_000_000 / Int64(rate)
let start = now()
for k in 0..<changes {
    let due = start + Int64(k) * interval
    while now() < due {
        let left = due - now()
        if left > 60_000 {
            var ts = timespec(tv_sec: 0, tv_nsec: Int(left - 50_000))
            nanosleep(&ts, nil)
        }
    }
    // Alternately add and remove one of 1 000 prefixes.
    board.begun.store(k, ordering: .releasing)
    board.sent[k] = now()
    if k % 2 == 0 { try? writer.addRoute(probe(k), via: IPv4Address(10, 9, 0, 254)) } else { _ = try? writer.deleteRoute(probe(k)) }
    board.last.store(k, ordering: .releasing)
}
let elapsed = Double(now() - start) / 1e9
board.done.store(true, ordering: .releasing)
_ = group.gather { _ in true }
group.stop()

func pct(_ sorted: [Int64], _ q: Double) -> Double {
    Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]) / 1000
}
func f1(_ x: Double) -> String { String(Double(Int(x * 10)) / 10) }
let achieved = Int(Double(changes) / elapsed)
print("workers \(workers), \(changes) route changes in \(f1(elapsed)) s (\(achieved) a second), "
      + "a shared FIB of 10 000 routes, \(wrong.load(ordering: .relaxed)) not seen as made, writer's table \(writer.fib.memoryBytes / 1024) KiB")
for (w, log) in logs.enumerated() {
    let s = log.latencies.sorted()
    let p50 = f1(pct(s, 0.5)), p90 = f1(pct(s, 0.9)), p99 = f1(pct(s, 0.99))
    let worst = f1(Double(s.last ?? 0) / 1000)
    print("  worker \(w): applied \(s.count); latency µs p50 \(p50) p90 \(p90) p99 \(p99) max \(worst)")
}
