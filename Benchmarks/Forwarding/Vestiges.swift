// The VTW table (TIME-WAIT vestiges) at 64k and 1M entries: one insert
// (into a full table, so it also evicts the oldest of its class), one
// lookup that hits, one that misses, and one expiry of the oldest entry.
// The table is filled before measuring; nothing is allocated per operation.
@_spi(Benchmarks) import AnygateStack
import Benchmark

final class VestigeBench {
    let table: Vestiges<UInt32>
    var next: UInt32 = 0
    var clock: UInt32 = 1
    let size: Int

    init(size: Int) {
        self.size = size
        table = Vestiges(capacity: size, mslt: true, key0: 0x1234_5678_9ABC_DEF0, key1: 0x0FED_CBA9_8765_4321)
        for _ in 0..<size { insert() }
    }

    @inline(__always) static func vestige(_ n: UInt32) -> Vestige<UInt32> {
        Vestige(localAddress: 0x0A01_0001, remoteAddress: 0x0B00_0000 &+ n >> 4, localPort: 443, remotePort: UInt16(truncatingIfNeeded: 1024 &+ n),
                rcvNxt: n, sndNxt: n, tsRecent: 0, expire: 0, window: 0, flags: 0)
    }

    @inline(__always) func insert() {
        let c: MSLClass = next % 3 == 0 ? .remote : (next % 3 == 1 ? .local : .loopback)
        table.insert(Self.vestige(next), class: c, expire: clock &+ 1_000_000)
        next &+= 1
        clock &+= 1
    }

    /// A live four-tuple (among the newest half) and one never inserted.
    @inline(__always) func lookups(_ k: UInt32) -> Int {
        let live = next &- 1 &- (k % UInt32(size / 2))
        let dead = next &+ 0x0100_0000 &+ k
        var found = 0
        if table.lookup(local: 0x0A01_0001, remote: 0x0B00_0000 &+ live >> 4, localPort: 443,
                        remotePort: UInt16(truncatingIfNeeded: 1024 &+ live)) != nil {
            found += 1
        }
        if table.lookup(local: 0x0A01_0001, remote: 0x0B00_0000 &+ dead >> 4, localPort: 443,
                        remotePort: UInt16(truncatingIfNeeded: 1024 &+ dead)) != nil {
            found += 1
        }
        return found
    }
}

func vestigeBenchmarks(_ perPacket: Benchmark.Configuration) {
    nonisolated(unsafe) var benches: [Int: VestigeBench] = [:]
    for size in [65536, 1 << 20] {
        func bench() -> VestigeBench {
            if let b = benches[size] { return b }
            let b = VestigeBench(size: size)
            benches[size] = b
            return b
        }
        let label = size == 65536 ? "64k" : "1M"
        Benchmark("vestige insert into a full table (evicts the oldest), \(label) vestiges", configuration: perPacket) { benchmark in
            let b = bench()
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { b.insert() }
            benchmark.stopMeasurement()
        }
        Benchmark("vestige lookup, one hit and one miss, \(label) vestiges", configuration: perPacket) { benchmark in
            let b = bench()
            var found = 0
            benchmark.startMeasurement()
            for k in benchmark.scaledIterations { found &+= b.lookups(UInt32(truncatingIfNeeded: k)) }
            benchmark.stopMeasurement()
            precondition(found == benchmark.scaledIterations.count, "every live four-tuple is found, no absent one")
        }
        Benchmark("vestige expire the oldest, then insert, \(label) vestiges", configuration: perPacket) { benchmark in
            let b = bench()
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                // The clock passes the oldest entry's expiry: one goes, one comes.
                b.table.expire(now: b.clock &- UInt32(b.size) &+ 1_000_000)
                b.insert()
            }
            benchmark.stopMeasurement()
        }
    }
}
