public import AnygateWire

/// IPSELSRC (NetBSD in_getifa(9)): choosing which of an interface's
/// addresses a packet the stack originates leaves from, by an ordered list
/// of scorers. Runs after routing has chosen the interface; considers only
/// that interface's IPv4 addresses; scores against the real destination.

/// One scoring function; a bigger score is better.
public enum SourceScorer: String, CaseIterable, Hashable, Sendable {
    /// −(position in the interface's address list), position 0 being the
    /// link-layer entry, so the first IPv4 address scores −1.
    case index
    /// The address's preference number (NetBSD 2009 and later: higher wins).
    case preference
    /// Leading bits shared by the address and the destination, 0...32.
    case commonPrefixLength = "common-prefix-len"
    /// 2 when address and destination are in the same category, 1 for the
    /// near pairs (see `SourceSelection.sameCategory`), else 0.
    case sameCategory = "same-category"
}

/// The category of an address, for `same-category`.
public enum AddressCategory: String, Hashable, Sendable {
    /// 169.254/16, and the local multicast groups 224.0.0/24.
    case linkLocal = "link-local"
    /// 10/8, 172.16/12, 192.168/16.
    case `private`
    case other

    /// Link-local is checked first, then private; everything else is other
    /// (so 127/8 and 100.64/10 are "other", as in NetBSD).
    public init(_ a: IPv4Address) {
        if a.isLinkLocal || a.rawValue >> 8 == 0xE0_0000 { self = .linkLocal } else if a.isPrivate { self = .private } else { self = .other }
    }
}

/// Why a policy was refused (NetBSD's EINVAL and EFBIG).
public enum SourcePolicyError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownScorer(String)
    case tooManyScorers(Int)

    public var description: String {
        switch self {
        case .unknownScorer(let s):
            "unknown scorer \"\(s)\" (choose from \(SourceScorer.allCases.map(\.rawValue).joined(separator: ", ")))"
        case .tooManyScorers(let n): "\(n) scorers: a policy has at most \(SourcePolicy.maxScorers)"
        }
    }
}

/// An ordered list of at most eight scorers, compared lexicographically.
public struct SourcePolicy: Equatable, Hashable, Sendable, CustomStringConvertible {
    public static let maxScorers = 8
    public private(set) var scorers: [SourceScorer]

    public init(_ scorers: [SourceScorer]) throws(SourcePolicyError) {
        guard scorers.count <= SourcePolicy.maxScorers else { throw .tooManyScorers(scorers.count) }
        self.scorers = scorers
    }

    /// Parses NetBSD's text form: names separated by commas. An unknown
    /// name is an error; an empty element ("a,,b", a trailing comma, "")
    /// ends the list there; more than eight names is an error.
    public init(parsing text: String) throws(SourcePolicyError) {
        var out: [SourceScorer] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            // A ninth element is refused even when empty (eight names and a trailing comma).
            guard out.count < SourcePolicy.maxScorers else { throw .tooManyScorers(out.count + 1) }
            if part.isEmpty { break }
            guard let s = SourceScorer(rawValue: String(part)) else { throw .unknownScorer(String(part)) }
            out.append(s)
        }
        scorers = out
    }

    public var isEmpty: Bool { scorers.isEmpty }

    /// The canonical text: names joined by commas.
    public var description: String { scorers.map(\.rawValue).joined(separator: ",") }
}

/// One address as the selector sees it.
public struct SourceCandidate: Hashable, Sendable {
    public var address: IPv4Address
    public var preference: Int16
    /// Position in the interface's address list (the link-layer entry is 0).
    public var index: Int
    public init(address: IPv4Address, preference: Int16, index: Int) {
        self.address = address; self.preference = preference; self.index = index
    }
}

/// The decision trail of one selection, for `explain source`.
public struct SourceSelectionTrail: Hashable, Sendable {
    public var destination: IPv4Address
    public var policy: SourcePolicy?
    public var incumbent: IPv4Address
    /// Every candidate with its score vector, in list order.
    public var scores: [(candidate: SourceCandidate, score: [Int])] { zip(candidates, vectors).map { ($0, $1) } }
    public var candidates: [SourceCandidate]
    public var vectors: [[Int]]
    public var chosen: IPv4Address
    /// Why the winner won, in a sentence.
    public var reason: String
}

public enum SourceSelection {
    /// NetBSD's same-category table: equal categories 2; (destination,
    /// source) = (link-local, private), (private, link-local) or
    /// (other, private) 1; every other pair 0.
    public static func sameCategory(destination d: AddressCategory, source s: AddressCategory) -> Int {
        if d == s { return 2 }
        switch (d, s) {
        case (.linkLocal, .private), (.private, .linkLocal), (.other, .private): return 1
        default: return 0
        }
    }

    /// One scorer's value for a candidate. `preferenceSign` is +1 (2009 and
    /// later: higher wins) or −1 (NetBSD 2006: lower wins).
    public static func score(_ scorer: SourceScorer, _ c: SourceCandidate, destination: IPv4Address, preferenceSign: Int = 1) -> Int {
        switch scorer {
        case .index: -c.index
        case .preference: preferenceSign * Int(c.preference)
        case .commonPrefixLength: c.address.commonPrefixLength(with: destination)
        case .sameCategory: sameCategory(destination: AddressCategory(destination), source: AddressCategory(c.address))
        }
    }

    /// The score vector of a candidate under a policy.
    public static func vector(_ policy: SourcePolicy, _ c: SourceCandidate, destination: IPv4Address, preferenceSign: Int = 1) -> [Int] {
        policy.scorers.map { score($0, c, destination: destination, preferenceSign: preferenceSign) }
    }

    /// Chooses among `candidates`: the incumbent is best so far; a challenger
    /// replaces the best only when its score vector is strictly greater
    /// (so ties keep the incumbent, then the earliest challenger).
    public static func select(incumbent: IPv4Address, destination: IPv4Address, candidates: [SourceCandidate],
                              policy: SourcePolicy, preferenceSign: Int = 1) -> SourceSelectionTrail {
        let vectors = candidates.map { vector(policy, $0, destination: destination, preferenceSign: preferenceSign) }
        var best = incumbent
        var bestVector = candidates.firstIndex { $0.address == incumbent }.map { vectors[$0] }
            ?? vector(policy, SourceCandidate(address: incumbent, preference: 0, index: 0), destination: destination,
                      preferenceSign: preferenceSign)
        var deciding: (scorer: SourceScorer, by: IPv4Address)? = nil
        for (k, c) in candidates.enumerated() where c.address != incumbent {
            if vectors[k].lexicographicallyPrecedes(bestVector) || vectors[k] == bestVector { continue }
            let firstDifference = vectors[k].indices.first { vectors[k][$0] != bestVector[$0] } ?? 0
            deciding = (policy.scorers[firstDifference], best)
            best = c.address
            bestVector = vectors[k]
        }
        let reason: String
        if let d = deciding {
            reason = "\(best) beats \(d.by) on \(d.scorer.rawValue)"
        } else {
            reason = "no candidate scores strictly higher than the route's address \(incumbent), which is kept"
        }
        return SourceSelectionTrail(destination: destination, policy: policy, incumbent: incumbent, candidates: candidates,
                                    vectors: vectors, chosen: best, reason: reason)
    }
}
