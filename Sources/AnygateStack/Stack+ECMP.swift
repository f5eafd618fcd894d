public import AnygateWire

/// A next hop: its address on an interface.
struct NextHopKey: Hashable {
    var address: UInt32
    var interface: InterfaceIndex
}

extension Stack {
    // MARK: ECMP members whose next hop fails

    /// How long a withdrawn ECMP next hop waits before it is asked again.
    static let failedNextHopRetry: Int64 = 10_000_000_000

    /// ARP resolution of `address` failed: if it is a member of an ECMP
    /// set, the set withdraws it (its flows move to the other members;
    /// theirs stay) and it is asked again later.
    ///
    /// A reader of a shared FIB reports the failure
    /// (`StackEvent.nextHopFailed`) for the writer's `setNextHop`, which
    /// tells it to ask again (`retryNextHop`) if the set withdrew it.
    func nextHopFailed(_ address: UInt32, on i: InterfaceIndex) {
        let key = NextHopKey(address: address, interface: i)
        if !writesFIB {
            report(.nextHopFailed(address: IPv4Address(rawValue: address), interface: i, failed: true))
            if failedNextHops[key] != nil { retryNextHop(IPv4Address(rawValue: address), interface: i) }
            return
        }
        if fib.setNextHop(IPv4Address(rawValue: address), interface: i, failed: true) || failedNextHops[key] != nil {
            retryNextHop(IPv4Address(rawValue: address), interface: i)
        }
    }

    /// Asks a withdrawn ECMP next hop again later (and keeps asking until
    /// it answers).
    public func retryNextHop(_ address: IPv4Address, interface i: InterfaceIndex) {
        failedNextHops[NextHopKey(address: address.rawValue, interface: i)] = hot.pointee.now + Stack.failedNextHopRetry
        scheduleNextHopRetry()
    }

    /// The writer of the FIB marks a next hop failed or alive for every
    /// ECMP set it is in; returns whether a set changed (its reader then
    /// asks it again later, `retryNextHop`).
    @discardableResult
    public func setNextHop(_ address: IPv4Address, interface i: InterfaceIndex, failed: Bool) -> Bool {
        guard writesFIB else { return false }
        return fib.setNextHop(address, interface: i, failed: failed)
    }

    /// `address` answered: a withdrawn ECMP member rejoins its sets.
    @inline(__always)
    func nextHopAnswered(_ address: UInt32, on i: InterfaceIndex) {
        guard !failedNextHops.isEmpty,
              failedNextHops.removeValue(forKey: NextHopKey(address: address, interface: i)) != nil else { return }
        if writesFIB {
            fib.setNextHop(IPv4Address(rawValue: address), interface: i, failed: false)
        } else {
            report(.nextHopFailed(address: IPv4Address(rawValue: address), interface: i, failed: false))
        }
        scheduleNextHopRetry()
    }

    /// Sends an ARP request to each withdrawn next hop whose wait is over;
    /// an answer brings it back, silence keeps it out another round.
    func retryFailedNextHops() {
        let now = hot.pointee.now
        guard hot.pointee.nextHopRetry != 0, now >= hot.pointee.nextHopRetry else { return }
        for (key, due) in failedNextHops where due <= now {
            failedNextHops[key] = now + Stack.failedNextHopRetry
            guard ifs[key.interface].exists, ifs[key.interface].up else { continue }
            var idx = neighbors.find(key.address, UInt16(key.interface))
            if idx == NeighborTable<UInt32>.none {
                idx = createNeighbor(key.address, key.interface)
                neighbors.entries[Int(idx)].probes = 1
                neighbors.entries[Int(idx)].nextProbe = now + configuration.arp.retransmitInterval.nanoseconds
                neighbors.schedule(idx)
            }
            sendARPRequest(for: IPv4Address(rawValue: key.address), on: key.interface, unicastTo: nil, gratuitous: false)
        }
        scheduleNextHopRetry()
    }

    func scheduleNextHopRetry() {
        hot.pointee.nextHopRetry = failedNextHops.values.min() ?? 0
    }
}
