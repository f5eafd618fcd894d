/// ESP's anti-replay window (RFC 4303 section 3.4.3) kept as the bitmap
/// of RFC 6479: 32 blocks of 64 bits used as a ring, so moving the window
/// forward clears whole blocks instead of shifting bits. A packet up to
/// `size` (1 984) behind the highest sequence number accepted so far is
/// accepted once; older ones are refused.
///
/// With extended sequence numbers (RFC 4303 section 2.2.1) a packet
/// carries only the low 32 bits: `infer(low:)` recovers the high half
/// from the window's position (Appendix A2.2), and the result goes into
/// the ICV's AAD, so a wrong guess fails authentication rather than
/// moving the window. The window moves (`accept`) only after the ICV has
/// verified.
public struct ReplayWindow: Sendable {
    public static let blocks = 32
    /// How far behind the highest accepted number a packet may be.
    public static let size: UInt64 = UInt64(blocks - 1) * 64

    public enum Verdict: Equatable, Sendable {
        case fresh
        case replayed
        case tooOld
    }

    var bitmap: InlineArray<32, UInt64> = .init(repeating: 0)
    /// The highest sequence number accepted; 0 before the first packet.
    public private(set) var top: UInt64 = 0
    public let extendedSequenceNumbers: Bool

    public init(extendedSequenceNumbers: Bool) { self.extendedSequenceNumbers = extendedSequenceNumbers }

    /// The full sequence number of a packet that carries `low`, or nil when
    /// it would lie before the start of the sequence space.
    public func infer(low: UInt32) -> UInt64? {
        guard extendedSequenceNumbers else { return UInt64(low) }
        let w = UInt32(ReplayWindow.size)
        let tl = UInt32(truncatingIfNeeded: top), th = UInt32(truncatingIfNeeded: top >> 32)
        let high: UInt32
        // The window's bottom, Tl - W + 1 (mod 2^32).
        let bottom = tl &- (w - 1)
        if tl >= w - 1 {
            // The window lies inside one 2^32 subspace.
            if low >= bottom { high = th } else {
                guard th < .max else { return nil }
                high = th + 1
            }
        } else if low >= bottom {
            // The window straddles subspaces and `low` is in its older part.
            guard th > 0 else { return nil }
            high = th - 1
        } else {
            high = th
        }
        return UInt64(high) << 32 | UInt64(low)
    }

    /// Whether a packet of this sequence number may be accepted.
    public func check(_ sequence: UInt64) -> Verdict {
        if sequence == 0 { return .tooOld }  // numbering starts at 1
        if sequence > top { return .fresh }
        if top - sequence >= ReplayWindow.size { return .tooOld }
        let bit = UInt64(1) << (sequence & 63)
        return bitmap[Int(truncatingIfNeeded: sequence >> 6) & (ReplayWindow.blocks - 1)] & bit != 0 ? .replayed : .fresh
    }

    /// Marks a checked, authenticated packet's number as seen, moving the
    /// window forward when it is the highest yet.
    public mutating func accept(_ sequence: UInt64) {
        let mask = ReplayWindow.blocks - 1
        if sequence > top {
            let from = top >> 6, to = sequence >> 6
            let clear = Int(min(to - from, UInt64(ReplayWindow.blocks)))
            var i = 1
            while i <= clear {
                bitmap[Int(truncatingIfNeeded: from &+ UInt64(i)) & mask] = 0
                i += 1
            }
            top = sequence
        }
        bitmap[Int(truncatingIfNeeded: sequence >> 6) & mask] |= UInt64(1) << (sequence & 63)
    }
}
