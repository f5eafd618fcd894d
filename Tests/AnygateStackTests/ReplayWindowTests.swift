import AnygateStack
import Testing

/// The bitmap window against a plain set of seen numbers (the obviously
/// right model): every verdict the same, over random arrivals.
@Suite struct ReplayWindowTests {
    struct Model {
        var seen = Set<UInt64>()
        var top: UInt64 = 0
        func check(_ s: UInt64) -> ReplayWindow.Verdict {
            if s == 0 { return .tooOld }
            if s > top { return .fresh }
            if top - s >= ReplayWindow.size { return .tooOld }
            return seen.contains(s) ? .replayed : .fresh
        }
        mutating func accept(_ s: UInt64) { seen.insert(s); top = max(top, s) }
    }

    @Test func window() {
        var w = ReplayWindow(extendedSequenceNumbers: false)
        #expect(ReplayWindow.size >= 1024)  // RFC 4303 asks for at least 32; the issue for 1024
        #expect(w.check(0) == .tooOld)
        #expect(w.check(1) == .fresh)
        w.accept(1)
        #expect(w.check(1) == .replayed)
        w.accept(5000)
        #expect(w.check(5000) == .replayed)
        #expect(w.check(4999) == .fresh)
        #expect(w.check(5000 - ReplayWindow.size + 1) == .fresh)
        #expect(w.check(5000 - ReplayWindow.size) == .tooOld)
        #expect(w.check(1) == .tooOld)
        // A jump of more than the whole ring clears it all.
        w.accept(4999)
        w.accept(100_000)
        #expect(w.check(4999) == .tooOld)
        #expect(w.check(100_000 - 64) == .fresh)
    }

    @Test(arguments: [1, 2, 3])
    func againstModel(seed: UInt64) {
        var g = SplitMix64(seed: seed)
        var w = ReplayWindow(extendedSequenceNumbers: true)
        var m = Model()
        var next: UInt64 = 1
        for _ in 0..<20_000 {
            // Mostly in order, some reordered within and beyond the window, some repeats, some jumps.
            let r = g.next() % 100
            let s: UInt64
            switch r {
            case 0..<60: s = next; next += 1
            case 60..<80: s = next > 3000 ? next - 1 - g.next() % 3000 : next
            case 80..<95: s = next > 10 ? next - 1 - g.next() % 10 : next
            case 95..<99: next += g.next() % 5000; s = next
            default: s = next > 1 ? next - 1 : next
            }
            let v = w.check(s)
            #expect(v == m.check(s), "sequence \(s), top \(m.top)")
            if v == .fresh { w.accept(s); m.accept(s) }
        }
        #expect(w.top == m.top)
    }

    /// Extended sequence numbers: the high half recovered across a 2^32
    /// boundary, from both sides of it (RFC 4303 Appendix A2.2's cases).
    @Test func extendedSequenceNumbers() {
        var w = ReplayWindow(extendedSequenceNumbers: true)
        #expect(w.infer(low: 1) == 1)
        #expect(w.infer(low: 0xFFFF_FFF0) == nil)  // before the sequence space starts
        let edge: UInt64 = 1 << 32
        w.accept(edge - 10)
        #expect(w.infer(low: 0xFFFF_FFF7) == edge - 9)
        #expect(w.infer(low: 3) == edge + 3)  // past the boundary: the next subspace
        w.accept(edge + 3)
        #expect(w.infer(low: 0xFFFF_FFF8) == edge - 8)  // late, from before the boundary
        #expect(w.check(edge - 8) == .fresh)
        #expect(w.check(edge - 10) == .replayed)
        #expect(w.infer(low: 100) == edge + 100)
        // The window's edges, where Tl - W + 1 is 0 or wraps (a 32-bit overflow here once crashed the daemon).
        for top in [ReplayWindow.size - 2, ReplayWindow.size - 1, ReplayWindow.size, ReplayWindow.size + 1] {
            var e = ReplayWindow(extendedSequenceNumbers: true)
            e.accept(top)
            for low in [UInt32(0), 1, UInt32(top), UInt32(top) + 1, UInt32(top) - 1, 0xFFFF_FFFF, 0xFFFF_FFF0] {
                let full = e.infer(low: low)
                // Whatever it says must be the number of that low half nearest the window.
                if let full { #expect(UInt32(truncatingIfNeeded: full) == low && (full >> 32) <= 1, "top \(top) low \(low)") }
            }
            #expect(e.infer(low: UInt32(top) + 5) == top + 5)
        }
        // Without ESN the low half is the number.
        #expect(ReplayWindow(extendedSequenceNumbers: false).infer(low: 0xFFFF_FFF0) == 0xFFFF_FFF0)
    }
}
