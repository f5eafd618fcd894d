@testable import AnygateStack
import AnygateWire
import Testing

/// The stack's timers: a wake-up looks only at what is due.
@Suite("Timers: neighbour deadlines in a heap", .ledgerAudited)
struct TimerTests {
    /// A router with `n` reachable neighbours on one link, learnt from ARP.
    func router(neighbors n: Int) throws -> (MemoryNetwork, Stack, InterfaceIndex) {
        var c = StackConfiguration()
        c.arp.maxEntries = 4096
        let (net, s, eth) = try singleStack(c, mac: MACAddress(2, 0, 0, 0, 0, 1), address: "10.0.0.1/16")
        for k in 0..<n {
            try s.learnNeighbor(IPv4Address(rawValue: 0x0A00_1000 + UInt32(k)), on: eth, mac: MACAddress(rawValue: 0x0200_0000_1000 + UInt64(k)))
        }
        return (net, s, eth)
    }

    @Test("wake-ups with nothing due look at no neighbour entry; the ones that fall due are each looked at once")
    func onlyDueEntries() throws {
        let (net, s, _) = try router(neighbors: 1000)
        let before = s.hot.pointee.timerVisits
        for _ in 0..<100 {
            net.advance(by: .milliseconds(100), step: .milliseconds(100))
            s.tick()
        }
        #expect(s.hot.pointee.timerVisits == before, "10 s in, none of 1000 reachable entries is due (reachable for 30 s)")
        #expect(s.nextDeadline?.nanoseconds ?? 0 > s.now.nanoseconds)
        // At 30 s every entry turns stale once; at 90 s each is removed once.
        net.advance(by: .seconds(21), step: .seconds(1))
        #expect(s.hot.pointee.timerVisits == before + 1000)
        #expect(s.neighborList.allSatisfy { $0.state == .stale })
        net.advance(by: .seconds(61), step: .seconds(1))
        #expect(s.hot.pointee.timerVisits == before + 2000)
        #expect(s.neighborList.isEmpty)
        #expect(s.nextDeadline == nil)
        s.checkInvariants()
    }

    @Test("the heap agrees with a scan of the table through creation, confirmation, probing, failure and removal")
    func heapMatchesScan() throws {
        let (net, s, eth) = try router(neighbors: 200)
        var rng = SystemRandomNumberGenerator()
        for step in 0..<300 {
            let k = UInt32.random(in: 0..<400, using: &rng)
            let a = IPv4Address(rawValue: 0x0A00_1000 + k)
            if step % 3 == 0 {
                try s.learnNeighbor(a, on: eth, mac: MACAddress(rawValue: 0x0200_0000_2000 + UInt64(k)))
            } else {
                // Something to send makes an incomplete entry that probes, then fails.
                _ = try? s.ping(a)
            }
            net.advance(by: .milliseconds(Int64.random(in: 1...700, using: &rng)), step: .milliseconds(50))
            s.checkInvariants()
        }
        _ = s.drainEvents()
        let reach = s.configuration.arp.reachableTime.nanoseconds, stale = s.configuration.arp.staleTime.nanoseconds
        let scan = s.neighbors.liveIndices.map { i -> Int64 in
            let e = s.neighbors.entries[Int(i)]
            switch e.state {
            case .incomplete: return e.nextProbe
            case .reachable: return e.confirmed + reach
            case .stale: return e.confirmed + reach + stale
            }
        }.min()
        #expect(s.neighbors.nextTimer?.deadline == scan)
    }
}
