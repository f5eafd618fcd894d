public import AnygateWire

/// RFC 6724 default source address selection for IPv6: among the usable
/// addresses of the interface a packet leaves by, prefer (in order) the
/// destination itself (rule 1), the narrowest scope that still reaches the
/// destination (rule 2), a matching policy-table label (rule 6) and the
/// longest common prefix (rule 8); the first configured wins a tie. Rules
/// 3, 4, 5 and 7 decide nothing here: tentative and duplicated addresses
/// are never candidates, there are no home or temporary addresses, and
/// every candidate is on the outgoing interface. Where the rules leave a
/// tie, the higher IPSELSRC preference number wins (`setPreference`), and
/// then the first configured.
public struct SourceExplanation6: Sendable {
    public var destination: IPv6Address
    public var route: Route6?
    public var interface: InterfaceIndex
    public var candidates: [IPv6Address]
    /// Per candidate: the score for each rule, in `SourceExplanation6.rules` order.
    public var scores: [[Int]]
    public var chosen: IPv6Address
    public var reason: String

    public static let rules = ["same-address", "scope", "label", "longest-prefix", "preference"]
}

/// RFC 6724 section 2.1's default policy table: the label of an address.
enum IPv6Policy {
    static let table: [(prefix: IPv6Prefix, label: Int)] = [
        (IPv6Prefix(address: IPv6Address(high: 0, low: 1), length: 128), 0),
        (IPv6Prefix(address: IPv6Address(high: 0, low: 0xFFFF_0000_0000), length: 96), 4),
        (IPv6Prefix(address: IPv6Address(high: 0x2002_0000_0000_0000, low: 0), length: 16), 2),
        (IPv6Prefix(address: IPv6Address(high: 0x2001_0000_0000_0000, low: 0), length: 32), 5),
        (IPv6Prefix(address: IPv6Address(high: 0xFC00_0000_0000_0000, low: 0), length: 7), 13),
        (IPv6Prefix(address: .any, length: 96), 3),
        (IPv6Prefix(address: IPv6Address(high: 0xFEC0_0000_0000_0000, low: 0), length: 10), 11),
        (IPv6Prefix(address: IPv6Address(high: 0x3FFE_0000_0000_0000, low: 0), length: 16), 12),
        (IPv6Prefix(address: .any, length: 0), 1),
    ]

    static func label(_ a: IPv6Address) -> Int {
        table.filter { $0.prefix.contains(a) }.max { $0.prefix.length < $1.prefix.length }?.label ?? 1
    }

    /// The scope (RFC 4007 values): link-local unicast and loopback 2, a
    /// multicast address its own field, anything else global (14).
    static func scope(_ a: IPv6Address) -> Int {
        if a.isMulticast { return Int(a.multicastScope) }
        if a.isLinkLocal || a.isLoopback { return 2 }
        return 14
    }

    static func commonPrefix(_ a: IPv6Address, _ b: IPv6Address) -> Int {
        let h = a.high ^ b.high
        return h != 0 ? h.leadingZeroBitCount : 64 + (a.low ^ b.low).leadingZeroBitCount
    }
}

extension Stack {
    /// Explains the source address the stack uses towards `destination`
    /// (leaving by `interface`, or by the route's), or nil without a way out.
    public func explainSource(_ destination: IPv6Address, interface: InterfaceIndex? = nil) -> SourceExplanation6? {
        let route = fib6.lookup(destination)
        guard let i = interface ?? route.map(\.interface), i >= 0, i < interfaceAddresses6.count else { return nil }
        let candidates = interfaceAddresses6[i].map(\.address).filter { usable6($0, on: i) }
        guard !candidates.isEmpty else { return nil }
        let dScope = IPv6Policy.scope(destination), dLabel = IPv6Policy.label(destination)
        let scores = candidates.map { a -> [Int] in
            let s = IPv6Policy.scope(a)
            // Rule 2: a scope that reaches the destination, the narrowest such; else the widest.
            let scope = s >= dScope ? 100 - s : s - 100
            return [a == destination ? 1 : 0, scope, IPv6Policy.label(a) == dLabel ? 1 : 0,
                    min(IPv6Policy.commonPrefix(a, destination), 64), Int(preference(of: a, on: i))]
        }
        var best = 0
        for k in scores.indices.dropFirst() where scores[k].lexicographicallyPrecedes(scores[best]) == false && scores[k] != scores[best] {
            best = k
        }
        // What decided it: the first rule where the chosen one beats the runner-up.
        var decided = "the only usable address"
        if let runnerUp = scores.indices.filter({ $0 != best })
            .max(by: { scores[$0].lexicographicallyPrecedes(scores[$1]) || (scores[$0] == scores[$1] && $0 > $1) }) {
            decided = (0..<SourceExplanation6.rules.count).first { scores[best][$0] != scores[runnerUp][$0] }
                .map { "rule \(SourceExplanation6.rules[$0])" } ?? "the first configured of equals"
        }
        return SourceExplanation6(destination: destination, route: route, interface: i, candidates: candidates, scores: scores,
                                  chosen: candidates[best], reason: decided)
    }
}
