public import AnygateStack
public import AnygateWire

/// Counters kept by a port, beside the stack's own interface counters.
public struct PortCounters: Sendable, Hashable {
    public var rxFrames: UInt64 = 0
    public var rxBytes: UInt64 = 0
    /// Frames the kernel had but no pool buffer was free for.
    public var rxNoBuffer: UInt64 = 0
    public var rxErrors: UInt64 = 0
    public var txFrames: UInt64 = 0
    public var txBytes: UInt64 = 0
    public var txErrors: UInt64 = 0
    /// Frames larger than the buffers they were read into, dropped.
    public var rxTruncated: UInt64 = 0
    /// Frames refused for a malformed virtio-net header.
    public var rxBadOffload: UInt64 = 0
    /// Frames dropped because the port's own transmit queue was full.
    public var txQueueDrops: UInt64 = 0
    /// Times the port lost its device (deleted or gone down) and came back.
    public var detaches: UInt64 = 0
    public var reattaches: UInt64 = 0
    public init() {}
}

/// What a read from a port found.
public enum PortRead: Equatable {
    /// `count` frames were read; the port may have more.
    case frames(Int)
    /// The device behind the port is gone or unusable.
    case lost(SystemError)
}

/// A source and sink of Ethernet frames on the host: a TAP device or an
/// AF_PACKET socket on an existing interface.
public protocol Port: AnyObject {
    /// The host-side interface name.
    var name: String { get }
    /// The descriptor to watch for readability; -1 while detached.
    var fd: Int32 { get }
    var counters: PortCounters { get }
    /// Frames the kernel dropped for this port before we read them, since
    /// it was opened (0 where the kernel does not say).
    var kernelDrops: UInt64 { get }
    /// The port reads and writes virtio-net headers: it takes super-frames
    /// and partial checksums (the stack's interface is told so).
    var offloads: Bool { get }
    /// Reads frames into new pool buffers, at most `into.count` of them.
    func receive(into batch: UnsafeMutableBufferPointer<PacketHandle>, pool: PacketPool) -> PortRead
    /// Sends frames, taking ownership. Returns an error when the device is gone.
    func send(_ packets: UnsafeBufferPointer<PacketHandle>, pool: PacketPool) -> SystemError?
    /// Sends what an earlier `send` could not (the descriptor became writable).
    func flushQueue(pool: PacketPool)
    var hasQueued: Bool { get }
    /// Records that the device was lost and drops what waits to be sent.
    func markLost(pool: PacketPool)
    /// Tries to get the device back after it was lost. True on success.
    func reattach() -> Bool
    /// Releases the descriptor (and, for a TAP, deletes the device).
    func close(pool: PacketPool)
    /// The multicast MACs the stack listens to on this port (neighbour
    /// discovery's groups): a port whose device filters multicast has the
    /// device take them in. A TAP gets every frame the host sends anyway.
    func setMulticast(_ macs: Set<MACAddress>) throws(SystemError)
}

extension Port {
    public func setMulticast(_ macs: Set<MACAddress>) throws(SystemError) {}
}
