import AnygateStack
import AnygateWire
import Testing

/// Every drop is counted per interface as well as in total: by the
/// interface it arrived on, or the one it was leaving by.
@Suite("Drops per interface and reason", .ledgerAudited)
struct InterfaceDropTests {
    @Test("receive-side drops count on the arrival interface; output-side ones on the outgoing interface; host-reported ones where the host says")
    func perInterface() throws {
        let t = try Topology()
        try t.warmUp()
        // A bad header checksum, arriving on R1's lan.
        var bad = FlowTests.udp(t)
        bad[14 + 10] ^= 0x40
        t.net.inject(bad, into: t.r1, on: t.r1Lan)
        #expect(t.r1.drops(.ipBadChecksum, on: t.r1Lan) == 1)
        #expect(t.r1.drops(.ipBadChecksum, on: t.r1Wan) == 0)
        #expect(t.r1.dropCounts(on: t.r1Lan) == [.ipBadChecksum: 1])
        // More packets for a next hop on wan that never answers than its
        // pending queue holds (8): the overflow counts on wan, the way out.
        try t.r1.addRoute(IPv4Prefix("10.9.0.0/16"), via: IPv4Address(10, 12, 0, 3))
        var batch: [PacketHandle] = []
        for _ in 0..<10 { batch.append(t.net.pool.make(copying: FlowTests.udp(t, to: IPv4Address(10, 9, 0, 1)))!) }
        batch.withUnsafeBufferPointer { t.r1.receive($0, on: t.r1Lan) }
        t.net.run()
        #expect(t.r1.drops(.arpQueueOverflow, on: t.r1Wan) == 2)
        #expect(t.r1.status(t.r1Wan).counters.txDrops == 2)
        #expect(t.r1.drops(.arpQueueOverflow, on: t.r1Lan) == 0)
        // What the host saw outside the stack joins the same table.
        t.r1.recordDrops(.kernelReceiveQueue, count: 42, on: t.r1Wan)
        #expect(t.r1.drops(.kernelReceiveQueue, on: t.r1Wan) == 42 && t.r1.drops(.kernelReceiveQueue) == 42)
        // Totals are the sum of the interfaces' rows.
        for r in DropReason.allCases {
            let sum = [t.r1Lan, t.r1Wan].reduce(UInt64(0)) { $0 + t.r1.drops(r, on: $1) }
            #expect(sum <= t.r1.drops(r), "\(r)")
        }
        t.checkInvariants()
    }
}
