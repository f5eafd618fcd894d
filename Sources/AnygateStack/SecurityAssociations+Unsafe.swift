internal import AnygateCrypto

/// One direction of a child SA on the packet path: plain data read and
/// written in place by the replica that owns it (its sequence counter and
/// replay window have one owner, so a nonce is never used twice).
struct SAState {
    var inUse = false
    var inbound = false
    var spi: UInt32 = 0
    /// The tunnel slot the SA protects.
    var tunnel: Int32 = -1
    var cipher: AEADCipher? = nil
    var algorithm = AEADAlgorithm.aes128GCM
    var esn = false
    /// Outbound: the last sequence number sent (the next is one more).
    var sequence: UInt64 = 0
    /// Inbound: what has been accepted.
    var window = ReplayWindow(extendedSequenceNumbers: false)
    var lifetime = SALifetime()
    var installed: Int64 = 0
    /// The soft limit was reported; a hard limit (or the sequence space) stopped the SA.
    var expiring = false
    var expired = false
    var counters = SACounters()
    var hashNext: UInt32 = .max
}

/// The SA database of a replica: a preallocated table of SAs, the inbound
/// ones found by SPI through hash chains of 32-bit indices. Bounded: when
/// every slot is taken, installing fails (IKE refuses the child SA).
struct SecurityAssociations {
    let capacity: Int
    let entries: UnsafeMutablePointer<SAState>
    let buckets: UnsafeMutablePointer<UInt32>
    let bucketMask: Int

    init(capacity: Int) {
        self.capacity = capacity
        entries = .allocate(capacity: max(capacity, 1))
        entries.initialize(repeating: SAState(), count: max(capacity, 1))
        var b = 1
        while b < max(capacity, 1) * 2 { b <<= 1 }
        bucketMask = b - 1
        buckets = .allocate(capacity: b)
        buckets.initialize(repeating: .max, count: b)
    }

    /// Frees every cipher context (wiping its key) and the table.
    func deallocate() {
        for i in 0..<capacity where entries[i].inUse { entries[i].cipher?.destroy() }
        entries.deallocate()
        buckets.deallocate()
    }

    @inline(__always)
    func bucket(_ spi: UInt32) -> Int { Int(truncatingIfNeeded: (spi &* 0x9E37_79B1) >> 7) & bucketMask }

    /// The inbound SA of this SPI, or nil.
    @inline(__always)
    func inbound(_ spi: UInt32) -> UnsafeMutablePointer<SAState>? {
        var i = buckets[bucket(spi)]
        while i != .max {
            let e = entries + Int(i)
            if e.pointee.spi == spi { return e }
            i = e.pointee.hashNext
        }
        return nil
    }

    /// A free slot, or nil.
    func freeSlot() -> Int? { (0..<capacity).first { !entries[$0].inUse } }

    /// Puts an inbound SA in its chain.
    func link(_ i: Int) {
        let b = bucket(entries[i].spi)
        entries[i].hashNext = buckets[b]
        buckets[b] = UInt32(i)
    }

    /// Takes an SA out of use: out of its chain if inbound, its cipher
    /// destroyed (the key wiped), the slot cleared.
    func remove(_ i: Int) {
        let e = entries + i
        guard e.pointee.inUse else { return }
        if e.pointee.inbound {
            let b = bucket(e.pointee.spi)
            if buckets[b] == UInt32(i) {
                buckets[b] = e.pointee.hashNext
            } else {
                var j = buckets[b]
                while j != .max {
                    if entries[Int(j)].hashNext == UInt32(i) { entries[Int(j)].hashNext = e.pointee.hashNext; break }
                    j = entries[Int(j)].hashNext
                }
            }
        }
        e.pointee.cipher?.destroy()
        e.pointee = SAState()
    }

    /// The slots in use, for `show sas`.
    var live: [Int] { (0..<capacity).filter { entries[$0].inUse } }

    /// Every inbound SA is in exactly one chain, the one of its SPI.
    func checkInvariants() {
        var seen = 0
        for b in 0...bucketMask {
            var i = buckets[b]
            while i != .max {
                precondition(entries[Int(i)].inUse && entries[Int(i)].inbound && bucket(entries[Int(i)].spi) == b)
                seen += 1
                i = entries[Int(i)].hashNext
            }
        }
        precondition(seen == (0..<capacity).count { entries[$0].inUse && entries[$0].inbound })
    }
}
