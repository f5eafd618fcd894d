import AnygateWire

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
    func nextHopFailed(_ address: UInt32, on i: InterfaceIndex) {
        if fib.setNextHop(IPv4Address(rawValue: address), interface: i, failed: true)
            || failedNextHops[NextHopKey(address: address, interface: i)] != nil {
            failedNextHops[NextHopKey(address: address, interface: i)] = hot.pointee.now + Stack.failedNextHopRetry
            scheduleNextHopRetry()
        }
    }

    /// `address` answered: a withdrawn ECMP member rejoins its sets.
    @inline(__always)
    func nextHopAnswered(_ address: UInt32, on i: InterfaceIndex) {
        guard !failedNextHops.isEmpty,
              failedNextHops.removeValue(forKey: NextHopKey(address: address, interface: i)) != nil else { return }
        fib.setNextHop(IPv4Address(rawValue: address), interface: i, failed: false)
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
            if idx == NeighborTable.none {
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
