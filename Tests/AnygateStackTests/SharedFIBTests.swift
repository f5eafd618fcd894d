import AnygateStack
import AnygateWire
import Testing

/// One FIB written by one stack and read by others (workers' replicas):
/// what a reader sees, when a freed route slot may be reused, the table's
/// fixed room, and that its memory does not depend on how many read it.
@Suite("Shared FIB: one writer, several readers")
struct SharedFIBTests {
    final class Quiet: Hypercalls {
        var time: Int64 = 1_000_000_000
        var rng = SplitMix64(seed: 9)
        func now() -> Timestamp { Timestamp(nanoseconds: time) }
        func random() -> UInt64 { rng.next() }
        func transmit(_ packets: UnsafeBufferPointer<PacketHandle>, interface: InterfaceIndex, stack: Stack) {
            for p in packets { stack.pool.free(p) }
        }
    }

    /// A stack with wan 172.16.0.1/24 up, holding the FIB as `fib` says.
    static func stack(_ fib: FIBSharing) throws -> Stack {
        var c = StackConfiguration()
        c.fib = fib
        let s = Stack(name: "S", configuration: c, pool: PacketPool(capacity: 64, dataSize: 2048), hypercalls: Quiet())
        let wan = try s.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 0, 0, 1))
        try s.addAddress(IPv4InterfaceAddress("172.16.0.1/24"), to: wan)
        try s.setUp(wan, true)
        return s
    }

    @Test("a reader finds the writer's routes, and keeps none of its own")
    func readerSeesWriter() throws {
        let shared = SharedFIB(readers: 2)
        let writer = try Self.stack(.writer(shared))
        let readers = try (0..<2).map { try Self.stack(.reader(shared, index: $0)) }
        let p = try IPv4Prefix("198.51.100.0/24")
        try writer.addRoute(p, via: IPv4Address(172, 16, 0, 2))
        for r in readers {
            // Its own addRoute changes nothing: the writer's call does.
            try r.addRoute(p, via: IPv4Address(172, 16, 0, 2))
            r.resumeReading()
            #expect(r.lookup(IPv4Address(198, 51, 100, 7))?.nextHop == IPv4Address(172, 16, 0, 2))
            #expect(r.routes.isEmpty)
            #expect(r.fib.count == 0)
        }
        try writer.deleteRoute(p)
        for r in readers {
            r.resumeReading()
            #expect(r.lookup(IPv4Address(198, 51, 100, 7)) == nil)
        }
        #expect(writer.fib.isShared)
        writer.checkInvariants()
    }

    @Test("a freed route slot waits until every reader has passed a quiescent point, or sleeps")
    func retirement() throws {
        let shared = SharedFIB(readers: 2)
        let writer = try Self.stack(.writer(shared))
        let readers = try (0..<2).map { try Self.stack(.reader(shared, index: $0)) }
        for r in readers { r.resumeReading() }
        let gw = IPv4Address(172, 16, 0, 2)
        try writer.addRoute(try IPv4Prefix("198.51.100.0/24"), via: gw)
        try writer.deleteRoute(try IPv4Prefix("198.51.100.0/24"))
        #expect(writer.fib.retiredSlots == 1)
        // Reader 0 passes a quiescent point; reader 1 still may hold the slot.
        readers[0].resumeReading()
        try writer.addRoute(try IPv4Prefix("198.51.101.0/24"), via: gw)
        #expect(writer.fib.retiredSlots == 1, "reused while reader 1 may still read it")
        // Reader 1 goes to sleep: it holds nothing.
        readers[1].quiesce()
        try writer.addRoute(try IPv4Prefix("198.51.102.0/24"), via: gw)
        #expect(writer.fib.retiredSlots == 0)
        // A sleeping reader that wakes reads the current table.
        readers[1].resumeReading()
        #expect(readers[1].lookup(IPv4Address(198, 51, 102, 1))?.nextHop == gw)
        #expect(readers[1].lookup(IPv4Address(198, 51, 100, 1)) == nil)
        writer.checkInvariants()
    }

    @Test("an ECMP set that changes is relinked in fresh slots; the old ones are retired")
    func ecmpCopyOnWrite() throws {
        let shared = SharedFIB(readers: 1)
        let writer = try Self.stack(.writer(shared))
        let reader = try Self.stack(.reader(shared, index: 0))
        reader.resumeReading()
        let p = try IPv4Prefix("198.51.100.0/24")
        try writer.addRoute(p, via: IPv4Address(172, 16, 0, 2))
        let before = writer.fib.retiredSlots
        try writer.addRoute(p, via: IPv4Address(172, 16, 0, 3))
        // Both members move to fresh slots (the new route's first slot is
        // retired too, unseen): nothing a reader may walk was relinked.
        #expect(writer.fib.retiredSlots == before + 2, "the old slots are retired, not relinked")
        #expect(writer.equalCostSet(for: p).count == 2)
        reader.resumeReading()
        var seen = Set<IPv4Address>()
        for k in 0..<64 {
            let e = reader.explainRoute(IPv4Address(198, 51, 100, UInt8(k)), source: IPv4Address(10, 0, 0, UInt8(k)))
            if let nh = e.chosen?.nextHop { seen.insert(nh) }
        }
        #expect(seen == [IPv4Address(172, 16, 0, 2), IPv4Address(172, 16, 0, 3)], "the reader spreads over both members")
        writer.checkInvariants()
    }

    @Test("the table's room is fixed: a route beyond it is refused, not a crash")
    func tableFull() throws {
        let shared = SharedFIB(readers: 1, maxRoutes: 8, maxNodes: 64)
        let writer = try Self.stack(.writer(shared))
        // The address made 3 internal routes (local, subnet, broadcast).
        var added = 0
        var refusal: RouteError?
        for k in 0..<16 {
            do {
                try writer.addRoute(try IPv4Prefix("198.51.\(k).0/24"), via: IPv4Address(172, 16, 0, 2))
                added += 1
            } catch {
                refusal = error as? RouteError
                break
            }
        }
        #expect(added == 5)
        #expect(refusal == .tableFull(capacity: 8))
        #expect(writer.routes.count == 1 + 5, "the subnet route and the five that fitted")
        writer.checkInvariants()
    }

    @Test("the FIB's memory is the writer's alone: readers hold no copy")
    func memoryIsTheWriters() throws {
        let shared = SharedFIB(readers: 4)
        let writer = try Self.stack(.writer(shared))
        let readers = try (0..<4).map { try Self.stack(.reader(shared, index: $0)) }
        var rng = SplitMix64(seed: 4)
        for _ in 0..<20_000 {
            let a = IPv4Address(rawValue: UInt32(truncatingIfNeeded: rng.next()) & 0xFFFF_FF00)
            try? writer.addRoute(IPv4Prefix(address: a, length: 24), via: IPv4Address(172, 16, 0, 2))
        }
        #expect(writer.fib.memoryBytes > 10_000_000, "nodes are counted: \(writer.fib.memoryBytes)")
        for r in readers {
            r.resumeReading()
            #expect(r.fib.memoryBytes < 512 * 1024, "a reader's own table stays empty: \(r.fib.memoryBytes)")
            #expect(r.lookup(IPv4Address(rawValue: 0x0A00_0001))?.nextHop == writer.lookup(IPv4Address(rawValue: 0x0A00_0001))?.nextHop)
        }
    }
}
