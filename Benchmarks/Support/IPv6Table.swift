// IPv6 prefixes shaped like today's IPv6 BGP table (about 200 000
// prefixes): almost all inside the RIRs' /12s of 2000::/3, about half
// /48s — most of them more-specifics inside a shorter allocation — then
// /32 (13 %), /44, /40, /36, /29 and the lengths between, a few shorter
// than /29.
import AnygateStack
import AnygateWire

public func bgpShapedIPv6Prefixes(_ count: Int, seed: UInt64) -> [IPv6Prefix] {
    var g = SplitMix64(seed: seed)
    let rirs: [UInt64] = [0x2001, 0x2400, 0x2600, 0x2800, 0x2A00, 0x2C00]
    // Cumulative percentages per length.
    let lengths: [(Int, Int)] = [(48, 50), (32, 63), (44, 70), (40, 76), (36, 79), (29, 82), (46, 85), (47, 87),
                                 (33, 89), (34, 90), (35, 91), (38, 92), (42, 94), (45, 96), (28, 97), (24, 98), (20, 99), (64, 100)]
    var seen = Set<IPv6Prefix>()
    var out: [IPv6Prefix] = []
    var allocations: [IPv6Address] = []
    out.reserveCapacity(count)
    while out.count < count {
        let roll = Int(g.next() % 100)
        let length = lengths.first { roll < $0.1 }!.0
        var a: IPv6Address
        if length > 32, !allocations.isEmpty, g.next() % 10 < 7 {
            // A more-specific inside an allocation already announced.
            let base = allocations[Int(g.next() % UInt64(allocations.count))]
            a = IPv6Address(high: base.high | (g.next() & 0x0000_0000_FFFF_FFFF), low: 0)
        } else {
            let rir = rirs[Int(g.next() % UInt64(rirs.count))]
            a = IPv6Address(high: rir << 48 | (g.next() & 0x000F_FFFF_FFFF_FFFF), low: 0)
        }
        let p = IPv6Prefix(address: a, length: length)
        if seen.insert(p).inserted {
            out.append(p)
            if length <= 32 { allocations.append(p.address) }
        }
    }
    return out
}

/// Addresses inside random prefixes of `prefixes`.
public func addressesInside(_ prefixes: [IPv6Prefix], count: Int, seed: UInt64) -> [IPv6Address] {
    var g = SplitMix64(seed: seed)
    return (0..<count).map { _ in
        let p = prefixes[Int(g.next() % UInt64(prefixes.count))]
        let m = IPv6Prefix.mask(Int(p.length))
        return IPv6Address(high: p.address.high | g.next() & ~m.high, low: p.address.low | g.next() & ~m.low)
    }
}
