public import AnygateWire

/// Work one replica hands another, the one that owns what the work needs.
/// With several workers a protected tunnel's SAs — the outbound SA's
/// sequence counter, the inbound SAs' replay windows and keys — live in
/// one replica, the tunnel's SA owner (`Stack.setSAOwner`): a packet
/// another replica routes into the tunnel, or reads from the tunnel's ESP
/// socket, is handed there whole and finished there.
public enum HandOffWork: Sendable, Equatable {
    /// An inner packet routed into the tunnel at this interface: to
    /// encapsulate, seal and send.
    case tunnelOutput(InterfaceIndex)
    /// ESP (bytes from its header on) that arrived for the tunnel at this
    /// interface, from `from` (UDP `sourcePort`), in an outer header of
    /// `outerTOS`.
    case espInput(InterfaceIndex, from: IPAddress, sourcePort: UInt16, outerTOS: UInt8)
}

/// A packet and what to do with it, as it crosses between workers.
public struct HandOff: Sendable {
    public var packet: PacketHandle
    public var work: HandOffWork
    public init(packet: PacketHandle, work: HandOffWork) { self.packet = packet; self.work = work }
}

extension Stack {
    /// Makes replica `owner` the one that holds the protected tunnel's SAs
    /// (nil: this replica). The others hand it what needs them.
    public func setSAOwner(tunnel interface: InterfaceIndex, replica owner: Int?) throws(IPsecError) {
        let t = try protectedTunnel(interface)
        tunnelStates[t].saOwner = Int32(owner ?? -1)
    }

    /// The replica that holds the tunnel's SAs, nil when this one does.
    public func saOwner(tunnel interface: InterfaceIndex) -> Int? {
        guard let t = try? protectedTunnel(interface), tunnelStates[t].saOwner >= 0 else { return nil }
        return Int(tunnelStates[t].saOwner)
    }

    /// An inner packet for tunnel `t`, whose SAs another replica owns.
    /// Here it was sent on the tunnel; there it is originated.
    @inline(never)
    func handTunnelOutput(_ t: Int, _ packet: PacketHandle) {
        let interface = tunnelStates[t].interface
        guard hypercalls.handOff(packet, to: Int(tunnelStates[t].saOwner), .tunnelOutput(interface), stack: self) else {
            hot.pointee.counters.originated &+= 1
            return drop(packet, .handOffRefused, tx: interface)
        }
        hot.pointee.counters.handedOff &+= 1
    }

    /// ESP for tunnel `t`, whose SAs another replica owns: the outer packet
    /// was consumed here; the tunnel receives what it carries there.
    @inline(never)
    func handESPInput(_ t: Int, _ packet: PacketHandle, from: IPAddress, sourcePort: UInt16, outerTOS: UInt8) {
        let interface = tunnelStates[t].interface
        let work = HandOffWork.espInput(interface, from: from, sourcePort: sourcePort, outerTOS: outerTOS)
        guard hypercalls.handOff(packet, to: Int(tunnelStates[t].saOwner), work, stack: self) else {
            ifs[interface].counters.rxPackets &+= 1
            return drop(packet, .handOffRefused, rx: interface)
        }
        hot.pointee.counters.handedOff &+= 1
    }

    /// Packets other replicas handed this one (in this replica's pool now;
    /// it takes ownership): each finished as its work says.
    public func takeOver(_ items: UnsafeBufferPointer<HandOff>) {
        enter()
        for h in items {
            hot.pointee.counters.takenOver &+= 1
            switch h.work {
            case .tunnelOutput(let i):
                guard i >= 0, i < configuration.maxInterfaces, ifs[i].tunnel >= 0 else {
                    hot.pointee.counters.originated &+= 1
                    drop(h.packet, .tunnelDown, side: .output)
                    continue
                }
                tunnelOutput(Int(ifs[i].tunnel), h.packet)
            case let .espInput(i, from, port, tos):
                guard i >= 0, i < configuration.maxInterfaces else {
                    // Never from a replica built alike; it entered from outside the interfaces.
                    hot.pointee.counters.fromHostSockets &+= 1
                    drop(h.packet, .tunnelDown, side: .input)
                    continue
                }
                guard ifs[i].tunnel >= 0, tunnelStates[Int(ifs[i].tunnel)].protected else {
                    ifs[i].counters.rxPackets &+= 1
                    drop(h.packet, .tunnelDown, rx: i)
                    continue
                }
                espInput(Int(ifs[i].tunnel), h.packet, from: from, sourcePort: port, outerTOS: tos)
            }
        }
        flush()
    }
}
