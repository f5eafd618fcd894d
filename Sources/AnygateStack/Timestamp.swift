/// A point on the stack's monotonic clock, in nanoseconds from an arbitrary
/// start. The stack never reads a clock: the host hands it one of these.
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64

    @inlinable public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public static let zero = Timestamp(nanoseconds: 0)
    /// Far enough in the future to mean "never".
    public static let distantFuture = Timestamp(nanoseconds: .max / 2)

    @inlinable public static func < (a: Self, b: Self) -> Bool { a.nanoseconds < b.nanoseconds }
    @inlinable public static func + (a: Self, b: Interval) -> Self { Timestamp(nanoseconds: a.nanoseconds &+ b.nanoseconds) }
    @inlinable public static func - (a: Self, b: Self) -> Interval { Interval(nanoseconds: a.nanoseconds &- b.nanoseconds) }

    public var description: String { "t+\(Interval(nanoseconds: nanoseconds))" }
}

/// A span of time on the stack's clock.
public struct Interval: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64

    @inlinable public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }
    @inlinable public static func seconds(_ s: Int64) -> Self { Interval(nanoseconds: s * 1_000_000_000) }
    @inlinable public static func milliseconds(_ ms: Int64) -> Self { Interval(nanoseconds: ms * 1_000_000) }
    @inlinable public static func < (a: Self, b: Self) -> Bool { a.nanoseconds < b.nanoseconds }
    @inlinable public static func * (a: Self, n: Int64) -> Self { Interval(nanoseconds: a.nanoseconds * n) }

    public var seconds: Double { Double(nanoseconds) / 1e9 }
    public var description: String {
        if nanoseconds % 1_000_000_000 == 0 { return "\(nanoseconds / 1_000_000_000)s" }
        if nanoseconds % 1_000_000 == 0 { return "\(nanoseconds / 1_000_000)ms" }
        return "\(nanoseconds)ns"
    }
}
