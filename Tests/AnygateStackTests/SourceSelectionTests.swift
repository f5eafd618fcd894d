import AnygateStack
import AnygateWire
import Testing

/// NetBSD in_getifa(9) behaviour: the worked examples and the test list of
/// the IPSELSRC reference (section 1), table-driven.
@Suite("IPSELSRC source selection", .ledgerAudited)
struct SourceSelectionTests {
    /// ath0 from the man page: [0] is the link-layer entry.
    static let ath0: [SourceCandidate] = [
        SourceCandidate(address: IPv4Address(64, 198, 255, 1), preference: 0, index: 1),
        SourceCandidate(address: IPv4Address(10, 0, 0, 1), preference: 0, index: 2),
        SourceCandidate(address: IPv4Address(169, 254, 1, 1), preference: 0, index: 3),
        SourceCandidate(address: IPv4Address(192, 168, 49, 1), preference: 5, index: 4),
        SourceCandidate(address: IPv4Address(192, 168, 37, 1), preference: 9, index: 5),
    ]
    static let P = try! SourcePolicy(parsing: "same-category,common-prefix-len,preference")

    static func pick(_ policy: SourcePolicy, incumbent: String = "64.198.255.1", dst: String, sign: Int = 1) -> IPv4Address {
        SourceSelection.select(incumbent: IPv4Address(incumbent)!, destination: IPv4Address(dst)!, candidates: ath0,
                               policy: policy, preferenceSign: sign).chosen
    }

    @Test("worked examples 1-5: policy P", arguments: [
        ("192.168.49.77", "192.168.49.1"),
        ("8.8.8.8", "64.198.255.1"),
        ("169.254.7.7", "169.254.1.1"),
        ("172.16.5.5", "192.168.37.1"),
        ("224.0.0.251", "169.254.1.1"),
    ])
    func workedExamples(dst: String, expected: String) {
        #expect(Self.pick(Self.P, dst: dst) == IPv4Address(expected)!)
        // The winner does not depend on which address the route started from.
        for c in Self.ath0 {
            #expect(Self.pick(Self.P, incumbent: "\(c.address)", dst: dst) == IPv4Address(expected)!)
        }
    }

    @Test("example 1 in detail: category scores, then prefix lengths")
    func example1Scores() {
        let t = SourceSelection.select(incumbent: IPv4Address(64, 198, 255, 1), destination: IPv4Address(192, 168, 49, 77),
                                       candidates: Self.ath0, policy: Self.P)
        #expect(t.vectors.map { $0[0] } == [0, 2, 1, 2, 2])
        #expect(t.vectors.map { $0[1] } == [0, 0, 1, 25, 19])
    }

    @Test("example 4 with 2006 semantics (lower preference wins) picks 192.168.49.1")
    func example4Old() {
        #expect(Self.pick(Self.P, dst: "172.16.5.5", sign: -1) == IPv4Address(192, 168, 49, 1))
    }

    @Test("example 6: the index policy makes the first address win even on-subnet")
    func example6() throws {
        #expect(Self.pick(try SourcePolicy([.index]), incumbent: "10.0.0.1", dst: "10.0.0.9") == IPv4Address(64, 198, 255, 1))
    }

    @Test("example 7: a tie keeps the incumbent")
    func example7() throws {
        #expect(Self.pick(try SourcePolicy([.sameCategory]), incumbent: "192.168.49.1", dst: "192.168.1.1")
                == IPv4Address(192, 168, 49, 1))
    }

    @Test("example 8: preference only; in 2006 every preference-0 address ties and the incumbent stays")
    func example8() throws {
        let pref = try SourcePolicy([.preference])
        #expect(Self.pick(pref, dst: "8.8.8.8") == IPv4Address(192, 168, 37, 1))
        #expect(Self.pick(pref, incumbent: "10.0.0.1", dst: "8.8.8.8", sign: -1) == IPv4Address(10, 0, 0, 1))
    }

    @Test("prefix arithmetic", arguments: [
        ("10.1.2.3", "10.1.2.3", 32), ("10.0.0.1", "10.128.0.1", 8), ("64.198.255.1", "8.8.8.8", 1),
        ("192.168.37.1", "192.168.49.77", 19), ("0.0.0.0", "128.0.0.0", 0), ("10.1.0.1", "10.1.0.129", 24),
        ("192.168.49.1", "192.168.49.77", 25),
    ])
    func prefixLengths(a: String, b: String, n: Int) {
        let c = SourceCandidate(address: IPv4Address(a)!, preference: 0, index: 1)
        #expect(SourceSelection.score(.commonPrefixLength, c, destination: IPv4Address(b)!) == n)
    }

    @Test("category boundaries", arguments: [
        ("172.15.255.255", AddressCategory.other), ("172.16.0.0", .private), ("172.31.255.255", .private),
        ("172.32.0.0", .other), ("224.0.0.255", .linkLocal), ("224.0.1.0", .other), ("169.254.0.1", .linkLocal),
        ("127.0.0.1", .other), ("100.64.0.1", .other), ("10.255.255.255", .private), ("192.168.0.0", .private),
    ])
    func categories(address: String, category: AddressCategory) {
        #expect(AddressCategory(IPv4Address(address)!) == category)
    }

    @Test("the same-category table")
    func sameCategoryTable() {
        let all: [AddressCategory] = [.linkLocal, .private, .other]
        var table: [String] = []
        for d in all { for s in all { table.append("\(SourceSelection.sameCategory(destination: d, source: s))") } }
        // rows: destination link-local, private, other; columns: source link-local, private, other
        #expect(table == ["2", "1", "0",
                          "1", "2", "0",
                          "0", "1", "2"])
    }

    @Test("parsing: truncation at an empty element, unknown names, too many, canonical readback")
    func parsing() throws {
        #expect(try SourcePolicy(parsing: "index,,preference").description == "index")
        #expect(try SourcePolicy(parsing: "index,").description == "index")
        #expect(try SourcePolicy(parsing: "").isEmpty)
        #expect(throws: SourcePolicyError.unknownScorer("bogus")) { try SourcePolicy(parsing: "bogus") }
        #expect(throws: SourcePolicyError.unknownScorer("bogus")) { try SourcePolicy(parsing: "index,bogus") }
        let nine = Array(repeating: "index", count: 9).joined(separator: ",")
        #expect(throws: SourcePolicyError.tooManyScorers(9)) { try SourcePolicy(parsing: nine) }
        let eight = Array(repeating: "preference", count: 8).joined(separator: ",")
        #expect(try SourcePolicy(parsing: eight).scorers.count == 8)
        #expect(throws: SourcePolicyError.tooManyScorers(9)) { try SourcePolicy(parsing: eight + ",") }
        let p = try SourcePolicy(parsing: "same-category,common-prefix-len,preference,index")
        #expect(try SourcePolicy(parsing: p.description) == p)
    }

    /// A stack whose interface e0 has the ath0 addresses.
    func stack() throws -> (MemoryNetwork, Stack, InterfaceIndex, InterfaceIndex) {
        let net = MemoryNetwork()
        let s = net.addStack(name: "S")
        let e0 = try s.addInterface(name: "ath0", mac: MACAddress(2, 0, 0, 0, 0, 1))
        let e1 = try s.addInterface(name: "e1", mac: MACAddress(2, 0, 0, 0, 0, 2))
        for (a, p) in [("64.198.255.1/24", 0), ("10.0.0.1/24", 0), ("169.254.1.1/24", 0), ("192.168.49.1/24", 5), ("192.168.37.1/24", 9)] {
            try s.addAddress(IPv4InterfaceAddress(a), to: e0, preference: Int16(p))
        }
        try s.addAddress(IPv4InterfaceAddress("10.9.0.1/24"), to: e1)
        try s.addAddress(IPv4InterfaceAddress("10.9.1.1/24"), to: e1, preference: 7)
        try s.setUp(e0, true)
        try s.setUp(e1, true)
        try s.addRoute(.any, via: IPv4Address(64, 198, 255, 254))
        return (net, s, e0, e1)
    }

    @Test("per-interface policy overrides the default; an empty one defers to it; none uses the route's address")
    func policies() throws {
        let (net, s, e0, e1) = try stack()
        _ = net
        // No policy anywhere: the route's own address.
        #expect(s.explainSource(IPv4Address(8, 8, 8, 8))?.chosen == IPv4Address(64, 198, 255, 1))
        #expect(s.explainSource(IPv4Address(10, 0, 0, 9))?.chosen == IPv4Address(10, 0, 0, 1))
        s.setDefaultSourcePolicy(try SourcePolicy([.preference]))
        #expect(s.explainSource(IPv4Address(8, 8, 8, 8))?.chosen == IPv4Address(192, 168, 37, 1))
        #expect(s.explainSource(IPv4Address(10, 9, 0, 5))?.chosen == IPv4Address(10, 9, 1, 1), "the default reaches every interface")
        try s.setSourcePolicy(Self.P, for: e0)
        let e = try #require(s.explainSource(IPv4Address(8, 8, 8, 8)))
        #expect(e.chosen == IPv4Address(64, 198, 255, 1) && e.policyOrigin == "interface")
        #expect(s.explainSource(IPv4Address(10, 9, 0, 5))?.chosen == IPv4Address(10, 9, 1, 1), "other interfaces are unaffected")
        try s.setSourcePolicy(try SourcePolicy(parsing: ""), for: e0)
        #expect(s.effectiveSourcePolicy(for: e0).origin == "default")
        #expect(s.explainSource(IPv4Address(8, 8, 8, 8))?.chosen == IPv4Address(192, 168, 37, 1))
        // Preferences change at run time, and the choice follows.
        try s.setPreference(IPv4Address(64, 198, 255, 1), on: e0, 20)
        #expect(s.explainSource(IPv4Address(8, 8, 8, 8))?.chosen == IPv4Address(64, 198, 255, 1))
        #expect(throws: InterfaceError.noSuchAddress(IPv4Address(10, 9, 0, 1))) {
            try s.setPreference(IPv4Address(10, 9, 0, 1), on: e0, 1)
        }
        #expect(throws: InterfaceError.noSuchInterface(9)) { try s.setPreference(IPv4Address(10, 9, 0, 1), on: 9, 1) }
        _ = e1
    }

    @Test("policy and preference changes invalidate cached decisions")
    func invalidation() throws {
        let (net, s, e0, _) = try stack()
        _ = net
        var g = s.fib.generation
        s.setDefaultSourcePolicy(Self.P)
        #expect(s.fib.generation > g)
        g = s.fib.generation
        try s.setSourcePolicy(try SourcePolicy([.index]), for: e0)
        #expect(s.fib.generation > g)
        g = s.fib.generation
        try s.setPreference(IPv4Address(10, 0, 0, 1), on: e0, 3)
        #expect(s.fib.generation > g)
    }

    @Test("explain lists every candidate's score vector and says why the winner won")
    func explain() throws {
        let (net, s, e0, _) = try stack()
        _ = net
        try s.setSourcePolicy(Self.P, for: e0)
        let e = try #require(s.explainSource(IPv4Address(172, 16, 5, 5)))
        #expect(e.incumbent == IPv4Address(64, 198, 255, 1))
        #expect(e.vectors == [[0, 0, 0], [2, 0, 0], [1, 5, 0], [2, 1, 5], [2, 1, 9]])
        #expect(e.chosen == IPv4Address(192, 168, 37, 1))
        #expect(e.reason == "192.168.37.1 beats 192.168.49.1 on preference")
        let onIf = try #require(s.explainSource(IPv4Address(224, 0, 0, 251), interface: e0))
        #expect(onIf.route == nil && onIf.chosen == IPv4Address(169, 254, 1, 1))
    }
}

@Suite("IPSELSRC in a topology", .ledgerAudited)
struct SourceSelectionTopologyTests {
    /// R1's LAN carries three addresses; its ICMP errors to A follow the policy.
    @Test("ICMP errors leave from the address the policy picks, and follow preference changes")
    func icmpErrorSource() throws {
        let t = try Topology()
        try t.r1.addAddress(IPv4InterfaceAddress("192.168.5.1/24"), to: t.r1Lan)
        try t.r1.addAddress(IPv4InterfaceAddress("100.64.0.1/24"), to: t.r1Lan)
        try t.warmUp()
        func errorSources() -> [IPv4Address] {
            t.a.drainEvents().compactMap { if case .icmpError(let r) = $0 { return r.from } else { return nil } }
        }
        func provoke() throws {
            try t.a.ping(Topology.bAddr, ttl: 1)              // time exceeded at R1
            try t.a.ping(IPv4Address(198, 51, 100, 1))        // net unreachable at R1
            t.net.run()
        }
        try provoke()
        #expect(errorSources() == [Topology.r1LanAddr, Topology.r1LanAddr], "no policy: the route's own address")

        try t.r1.setSourcePolicy(try SourcePolicy([.preference]), for: t.r1Lan)
        try t.r1.setPreference(IPv4Address(192, 168, 5, 1), on: t.r1Lan, 10)
        try provoke()
        #expect(errorSources() == [IPv4Address(192, 168, 5, 1), IPv4Address(192, 168, 5, 1)])

        try t.r1.setPreference(IPv4Address(100, 64, 0, 1), on: t.r1Lan, 20)
        try provoke()
        #expect(errorSources() == [IPv4Address(100, 64, 0, 1), IPv4Address(100, 64, 0, 1)])

        // same-category first: A is private, so a private address beats 100.64.0.1 (other).
        try t.r1.setSourcePolicy(try SourcePolicy([.sameCategory, .preference]), for: t.r1Lan)
        try provoke()
        #expect(errorSources() == [IPv4Address(192, 168, 5, 1), IPv4Address(192, 168, 5, 1)])
    }

    @Test("a bound source is never changed")
    func boundSource() throws {
        let t = try Topology()
        try t.r1.addAddress(IPv4InterfaceAddress("192.168.5.1/24"), to: t.r1Lan)
        try t.warmUp()
        t.r1.setDefaultSourcePolicy(try SourcePolicy([.preference]))
        try t.r1.setPreference(IPv4Address(192, 168, 5, 1), on: t.r1Lan, 10)
        var sources: [IPv4Address] = []
        t.net.observer = { from, _, f in
            if from.stack == 1, f.be16(12) == 0x0800 { sources.append(IPv4Address(rawValue: f.be32(26))) }
        }
        try t.r1.ping(Topology.aAddr, source: Topology.r1LanAddr)
        try t.r1.ping(Topology.aAddr)
        t.net.run()
        #expect(sources == [Topology.r1LanAddr, IPv4Address(192, 168, 5, 1)])
    }
}
