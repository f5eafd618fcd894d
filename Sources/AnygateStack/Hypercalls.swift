public import AnygateWire

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

    /// Opens (binds, connects) a host socket carrying `socket`'s payloads;
    /// returns nil on success or the reason it failed.
    func openHostSocket(_ socket: SocketID, protocol: SocketProtocol, local: IPAddress, localPort: UInt16,
                        remote: IPAddress, remotePort: UInt16, ttl: UInt8, tos: UInt8, dontFragment: Bool) -> String?
    func closeHostSocket(_ socket: SocketID)
    /// Sends a payload through the host socket and takes ownership of it;
    /// returns false, leaving the payload to the caller, if it refused.
    func sendHostSocket(_ socket: SocketID, _ payload: PacketHandle, sourcePort: UInt16?) -> Bool

    /// Hands `packet` to replica `replica`, which finishes `work` (it owns
    /// what the work needs: a tunnel's SAs), taking ownership; false,
    /// leaving the packet to the caller, if that replica's channel is full.
    func handOff(_ packet: PacketHandle, to replica: Int, _ work: HandOffWork, stack: Stack) -> Bool

    /// Hands `packet` to the host twin of `interface` (an IP packet for a
    /// TUN, an Ethernet frame for a TAP), taking ownership; false, leaving
    /// it to the caller, when there is no twin device or it refused.
    func punt(_ packet: PacketHandle, interface: InterfaceIndex, stack: Stack) -> Bool
}

/// Host sockets (the `host` socket backend, in the role of rump's sockin):
/// a stack asks its host to carry a socket's payloads through a socket of
/// the host kernel. Hosts without them refuse, which these defaults do.
extension Hypercalls {
    /// Opens (and binds and connects) a host socket for `socket`; returns
    /// nil on success or the reason it failed.
    public func openHostSocket(_ socket: SocketID, protocol: SocketProtocol, local: IPAddress, localPort: UInt16,
                               remote: IPAddress, remotePort: UInt16, ttl: UInt8, tos: UInt8, dontFragment: Bool) -> String? {
        "this host has no host sockets"
    }
    public func closeHostSocket(_ socket: SocketID) {}
    /// Sends a payload (taking ownership); false if the host refused it.
    public func sendHostSocket(_ socket: SocketID, _ payload: PacketHandle, sourcePort: UInt16?) -> Bool { false }
}

/// Hosts of one stack have no other replica to hand packets to.
extension Hypercalls {
    public func handOff(_ packet: PacketHandle, to replica: Int, _ work: HandOffWork, stack: Stack) -> Bool { false }
    public func punt(_ packet: PacketHandle, interface: InterfaceIndex, stack: Stack) -> Bool { false }
}
