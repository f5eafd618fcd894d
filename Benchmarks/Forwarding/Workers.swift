// Workers: replicas of the router, each with its own pool and tables but
// reading one FIB (written by a copy standing for the control thread), each
// driven by its own thread (issue 14's shape: replicated virtual-unicpu
// stacks). A scaled iteration is still one packet; with two replicas the
// packets are split between them and the iteration ends when both are done,
// so the reported time per packet against one replica's is the speed-up.
import AnygateHost
import AnygateStack
import AnygateWire
import Benchmark
import Synchronization

/// Replicas of one router; replica 0 runs on the benchmark's thread, the
/// others each on a thread of their own that spins waiting for a round
/// (no sleep, no lock: the measured time is forwarding, not wake-ups).
final class Replicas: @unchecked Sendable {
    let replicas: [Bench]
    private let round = Atomic<Int>(0)
    private let finished = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private var share = 0
    private var threads: [HostThread] = []

    /// The control thread's copy of the router, which writes the FIB the replicas read.
    let writer: Bench

    init(count: Int, prefixes: [IPv4Prefix], flows: Int, ipflow: Bool) throws {
        let shared = SharedFIB(readers: count)
        writer = try Bench(prefixes: prefixes, flows: flows, ipflow: ipflow, fib: .writer(shared))
        replicas = try (0..<count).map { k in
            try Bench(prefixes: prefixes, flows: flows, ipflow: ipflow, fib: .reader(shared, index: k))
        }
        for k in 1..<count {
            threads.append(try HostThread("bench-replica\(k)") { [unowned self] in self.serve(replica: k) })
        }
    }

    deinit {
        stopping.store(true, ordering: .releasing)
        round.add(1, ordering: .releasing)
        for t in threads { t.join() }
    }

    private func serve(replica k: Int) {
        var seen = 0
        var at = 0
        while true {
            var now = round.load(ordering: .acquiring)
            while now == seen { now = round.load(ordering: .acquiring) }
            seen = now
            if stopping.load(ordering: .acquiring) { return }
            replicas[k].forward(share, startAt: &at)
            finished.add(1, ordering: .releasing)
        }
    }

    private var cursor = 0

    /// Forwards `count` packets split evenly over the replicas; returns
    /// when every replica is done.
    func forward(_ count: Int) {
        let others = replicas.count - 1
        share = count / replicas.count
        let target = finished.load(ordering: .relaxed) + others
        if others > 0 { round.add(1, ordering: .releasing) }
        replicas[0].forward(count - others * share, startAt: &cursor)
        while finished.load(ordering: .acquiring) != target {}
    }

    var sent: Int { replicas.reduce(0) { $0 + $1.host.sent } }
}

func workerBenchmarks(_ perPacket: Benchmark.Configuration) {
    nonisolated(unsafe) var current: (key: Int, replicas: Replicas)?
    for workers in [1, 2] {
        Benchmark("workers: \(workers) replica(s) on \(workers) thread(s), forward 64B, ipflow hit, 1024 flows each, FIB 10000 prefixes",
                  configuration: perPacket) { benchmark in
            if current?.key != workers {
                current = nil
                let prefixes = prefixSets[10_000] ?? randomPrefixes(10_000, seed: 10_000)
                current = (workers, try! Replicas(count: workers, prefixes: prefixes, flows: 1024, ipflow: true))
            }
            let r = current!.replicas
            let before = r.sent
            benchmark.startMeasurement()
            r.forward(benchmark.scaledIterations.count)
            benchmark.stopMeasurement()
            precondition(r.sent - before == benchmark.scaledIterations.count, "every packet must be forwarded")
        }
    }
}
