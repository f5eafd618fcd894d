// Route-change propagation to workers: the control thread sends route
// changes at a fixed rate (default 10 000 a second) to every worker's
// replica through its inbox (a net channel), and each worker notes how long
// after the send it applied the change. Prints the achieved rate and the
// latency percentiles per worker. Usage: Propagation [WORKERS] [RATE] [SECONDS]
import AnygateHost
import AnygateStack
import AnygateWire
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

let group = try WorkerGroup(count: workers, configuration: StackConfiguration(), inboxCapacity: 65536,
                            makePool: { PacketPool(capacity: 256, dataSize: 2048) })
group.perform { runtime in
    let s = runtime.stack!
    let lan = try! s.addInterface(name: "lan", mac: MACAddress(2, 0, 0, 0, 0, 1))
    try! s.addAddress(IPv4InterfaceAddress("10.9.0.1/24"), to: lan)
    try! s.setUp(lan, true)
}
// A FIB of 10 000 routes in each replica, so changes land in a real table.
for k in 0..<10_000 {
    let p = IPv4Prefix(address: IPv4Address(rawValue: 0x3000_0000 | UInt32(k) << 8), length: 24)
    while !group.perform({ try? $0.stack!.addRoute(p, via: IPv4Address(10, 9, 0, 254)) }) { usleep(100) }
}
_ = group.gather { _ in true }

let logs = (0..<workers).map { _ in Log(changes) }
let interval = 1_000_000_000 / Int64(rate)
let start = now()
var refused = 0
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
    let p = IPv4Prefix(address: IPv4Address(rawValue: 0x4000_0000 | UInt32(k / 2 % 1000) << 8), length: 24)
    let add = k % 2 == 0
    let sent = now()
    for w in 0..<workers {
        let log = logs[w]
        let ok = group.perform(on: w) { runtime in
            if add { try? runtime.stack!.addRoute(p, via: IPv4Address(10, 9, 0, 254)) } else {
                _ = runtime.stack!.removeRoutes(p, origin: .static)
            }
            log.latencies.append(now() - sent)
        }
        if !ok { refused += 1 }
    }
}
let elapsed = Double(now() - start) / 1e9
_ = group.gather { _ in true }
group.stop()

func pct(_ sorted: [Int64], _ q: Double) -> Double {
    Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]) / 1000
}
func f1(_ x: Double) -> String { String(Double(Int(x * 10)) / 10) }
let achieved = Int(Double(changes) / elapsed)
print("workers \(workers), \(changes) route changes in \(f1(elapsed)) s (\(achieved) a second), "
      + "10 000 routes in each replica, \(refused) refused")
for (w, log) in logs.enumerated() {
    let s = log.latencies.sorted()
    let p50 = f1(pct(s, 0.5)), p90 = f1(pct(s, 0.9)), p99 = f1(pct(s, 0.99))
    let worst = f1(Double(s.last ?? 0) / 1000)
    print("  worker \(w): applied \(s.count); latency µs p50 \(p50) p90 \(p90) p99 \(p99) max \(worst)")
}
