/// Everything a stack needs from the world outside it, in the role of
/// NetBSD's rumpuser hypercalls: the time, randomness, and a way to put
/// frames on a wire. The stack calls nothing else; tests and the in-process
/// network implement this with a hand-driven clock and memory links.
///
/// A stack holds its hypercalls strongly; an implementation that also owns
/// stacks must hold them weakly (as `MemoryNetwork` does) to avoid a cycle.
public protocol Hypercalls: AnyObject {
    /// The monotonic clock. Read once per batch or timer run.
    func now() -> Timestamp
    /// Random bits (seeds the IP identification counter).
    func random() -> UInt64
    /// Takes ownership of `packets`, Ethernet frames to send on `interface`
    /// of `stack`, in order. Called once per interface at the end of a batch.
    func transmit(_ packets: UnsafeBufferPointer<PacketHandle>, interface: InterfaceIndex, stack: Stack)
}
