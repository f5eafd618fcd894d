import AnygateStack
import AnygateWire
import Testing

/// IPv6 routes through the route machinery IPv4 uses: longest match, ECMP
/// sets, withdrawal while an interface is down, refusals.
@Suite("IPv6 routes")
struct Routing6Tests {
    final class Quiet: Hypercalls {
        var rng = SplitMix64(seed: 5)
        func now() -> Timestamp { Timestamp(nanoseconds: 1_000_000_000) }
        func random() -> UInt64 { rng.next() }
        func transmit(_ packets: UnsafeBufferPointer<PacketHandle>, interface: InterfaceIndex, stack: Stack) {
            for p in packets { stack.pool.free(p) }
        }
    }

    static func stack() throws -> (Stack, [InterfaceIndex]) {
        let s = Stack(name: "R6", pool: PacketPool(capacity: 64, dataSize: 2048), hypercalls: Quiet())
        let ifs = try (0..<3).map { k in try s.addInterface(name: "wan\(k)", mac: MACAddress(2, 0, 0, 0, 0, UInt8(k + 1))) }
        for i in ifs { try s.setUp(i, true) }
        return (s, ifs)
    }

    static let gw1 = IPv6Address("fe80::1")!, gw2 = IPv6Address("fe80::2")!

    @Test("the longest prefix wins; a duplicate and a missing route are refused by name")
    func longestMatch() throws {
        let (s, ifs) = try Self.stack()
        try s.addRoute(IPv6Prefix("::/0"), via: Self.gw1, interface: ifs[0])
        try s.addRoute(IPv6Prefix("2001:db8::/32"), via: Self.gw2, interface: ifs[1])
        try s.addRoute(IPv6Prefix("2001:db8:1::/48"), interface: ifs[2])
        #expect(s.lookup(IPv6Address("2001:db8:1::5")!)?.interface == ifs[2])
        #expect(s.lookup(IPv6Address("2001:db8:1::5")!)?.kind == .connected)
        #expect(s.lookup(IPv6Address("2001:db8:2::5")!)?.nextHop == Self.gw2)
        #expect(s.lookup(IPv6Address("2a00::1")!)?.nextHop == Self.gw1)
        #expect(throws: RouteError.exists6(try IPv6Prefix("2001:db8::/32"))) {
            try s.addRoute(IPv6Prefix("2001:db8::/32"), via: Self.gw2, interface: ifs[1])
        }
        #expect(throws: RouteError.notFound6(try IPv6Prefix("2001:db9::/32"))) { try s.deleteRoute(IPv6Prefix("2001:db9::/32")) }
        #expect(throws: RouteError.self) { try s.addRoute(IPv6Prefix("2001:db8:2::/48"), via: IPv6Address.allNodes, interface: ifs[0]) }
        #expect(throws: RouteError.noSuchInterface(9)) { try s.addRoute(IPv6Prefix("2001:db8:2::/48"), interface: 9) }
        try s.deleteRoute(IPv6Prefix("2001:db8::/32"))
        #expect(s.lookup(IPv6Address("2001:db8:2::5")!)?.nextHop == Self.gw1)
        #expect(s.routes6.count == 2)
        s.checkInvariants()
    }

    @Test("two next hops of one metric are an ECMP set; an interface going down withdraws its member and its routes")
    func ecmpAndWithdrawal() throws {
        let (s, ifs) = try Self.stack()
        let p = try IPv6Prefix("2001:db8::/32")
        try s.addRoute(p, via: Self.gw1, interface: ifs[0])
        try s.addRoute(p, via: Self.gw2, interface: ifs[1], weight: 3)
        try s.addRoute(IPv6Prefix("::/0"), via: Self.gw1, interface: ifs[2], metric: 10)
        #expect(s.equalCostSet(for: p).map(\.nextHop) == [Self.gw1, Self.gw2])
        try s.setUp(ifs[0], false)
        #expect(s.equalCostSet(for: p).map(\.nextHop) == [Self.gw2])
        try s.setUp(ifs[1], false)
        #expect(s.lookup(IPv6Address("2001:db8::1")!)?.interface == ifs[2], "the default takes over")
        try s.setUp(ifs[0], true)
        try s.setUp(ifs[1], true)
        #expect(s.equalCostSet(for: p).count == 2)
        try s.removeInterface(ifs[1])
        #expect(s.routes(for: p).map(\.nextHop) == [Self.gw1])
        s.checkInvariants()
    }

    @Test("random IPv6 routes added and deleted through the stack: lookups agree with a linear scan")
    func againstLinearScan() throws {
        let (s, ifs) = try Self.stack()
        var rng = SplitMix64(seed: 66)
        var reference: [IPv6Prefix: InterfaceIndex] = [:]
        let lengths = [16, 20, 29, 32, 36, 40, 44, 48, 56, 64, 128]
        func address() -> IPv6Address {
            IPv6Address(high: 0x2001_0DB8_0000_0000 | rng.next() & 0x0000_0003_0F0F_00FF, low: rng.next() & 0xFF)
        }
        for round in 0..<4 {
            for _ in 0..<400 {
                let p = IPv6Prefix(address: address(), length: lengths[Int(rng.next() % UInt64(lengths.count))])
                guard reference[p] == nil else { continue }
                let i = ifs[Int(rng.next() % 3)]
                try s.addRoute(p, interface: i)
                reference[p] = i
            }
            for p in Array(reference.keys).shuffled(using: &rng).prefix(100 + 20 * round) {
                try s.deleteRoute(p)
                reference[p] = nil
            }
            for _ in 0..<2000 {
                let a = address()
                let best = reference.keys.filter { $0.contains(a) }.max { $0.length < $1.length }
                let got = s.lookup(a)
                #expect(got?.prefix == best, "lookup \(a)")
                if let best { #expect(got?.interface == reference[best]) }
            }
            s.checkInvariants()
        }
    }
}
