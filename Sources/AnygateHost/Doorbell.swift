/// An eventfd one thread rings to wake another thread's event loop: the
/// wake-up of net channels whose consumer sleeps (`NetChannel`'s `wake`).
/// Ringing is a single `write`; rings made while the owner was awake
/// collapse into one wake-up.
public final class Doorbell: Sendable {
    public let fd: Int32

    public init(_ name: String = "doorbell") throws(SystemError) {
        fd = try Sys.eventfd(name)
    }

    deinit { Sys.close(fd) }

    /// Wakes the owner (any thread may ring).
    public func ring() { Sys.ring(fd) }

    /// Clears the bell (the owner, on waking); returns the rings it collected.
    @discardableResult
    public func answer() -> UInt64 { Sys.drain(fd) }
}
