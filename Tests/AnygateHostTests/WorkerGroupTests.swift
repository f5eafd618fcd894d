import AnygateCrypto
import AnygateHost
import AnygateStack
import AnygateWire
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("Workers")
struct WorkerGroupTests {
    static func group(_ n: Int) throws -> WorkerGroup {
        try WorkerGroup(count: n, configuration: StackConfiguration(), makePool: { PacketPool(capacity: 256, dataSize: 2048) })
    }

    /// Each worker's replica gets a LAN with 10.9.0.1/24.
    static let setUpLAN: WorkerJob = { runtime in
        let s = runtime.stack!
        guard let lan = try? s.addInterface(name: "lan", mac: MACAddress(2, 0, 0, 0, 0, 1)) else { return }
        try? s.addAddress(IPv4InterfaceAddress("10.9.0.1/24"), to: lan)
        try? s.setUp(lan, true)
    }

    @Test("each worker runs its jobs on a thread of its own, with a replica of its own")
    func ownThreadsAndReplicas() throws {
        let g = try Self.group(2)
        defer { g.stop() }
        let answers = try #require(g.gather { runtime in
            (thread: UInt(pthread_self()),
             stack: ObjectIdentifier(runtime.stack!), pool: ObjectIdentifier(runtime.pool))
        })
        #expect(answers.count == 2)
        #expect(answers[0].thread != answers[1].thread)
        #expect(!answers.contains { $0.thread == UInt(pthread_self()) })
        #expect(answers[0].stack != answers[1].stack)
        #expect(answers[0].pool != answers[1].pool)
    }

    @Test("replicas: worker 0 owns what runs once, the others follow; the ICMP budget is shared out")
    func roles() throws {
        var c = StackConfiguration()
        c.icmp.errorsPerSecond = 100
        c.icmp.errorBurst = 50
        let g = try WorkerGroup(count: 2, configuration: c, makePool: { PacketPool(capacity: 64, dataSize: 2048) })
        defer { g.stop() }
        let settings = try #require(g.gather { r in
            (r.stack!.configuration.replica, r.stack!.configuration.icmp.errorsPerSecond, r.stack!.configuration.icmp.errorBurst,
             r.stack!.configuration.arp.shareLearned)
        })
        #expect(settings.map(\.0) == [.owner, .follower])
        #expect(settings.allSatisfy { $0.1 == 50 && $0.2 == 25 && $0.3 })
    }

    @Test("changes reach every replica, in the order sent")
    func changesInOrder() throws {
        let g = try Self.group(2)
        defer { g.stop() }
        #expect(g.perform(Self.setUpLAN))
        for k in 0..<1000 {
            let prefix = IPv4Prefix(address: IPv4Address(rawValue: 0x2000_0000 | UInt32(k) << 8), length: 24)
            #expect(g.perform { try? $0.stack!.addRoute(prefix, via: IPv4Address(10, 9, 0, 254)) })
        }
        // Removing every odd prefix after adding it: an out-of-order replica would keep some.
        for k in stride(from: 1, to: 1000, by: 2) {
            let prefix = IPv4Prefix(address: IPv4Address(rawValue: 0x2000_0000 | UInt32(k) << 8), length: 24)
            #expect(g.perform { _ = $0.stack!.removeRoutes(prefix, origin: .static) })
        }
        // 1500 changes queued ahead of the question: under ThreadSanitizer on two cores they can take
        // longer than gather's default 2 s to run, which this test is not about.
        let counts = try #require(g.gather(timeoutNanoseconds: 30_000_000_000) { $0.stack!.routes.filter { $0.origin == .static }.count })
        #expect(counts == [500, 500])
        let generations = try #require(g.gather { $0.stack!.routes.map(\.prefix) })
        #expect(generations[0] == generations[1])
    }

    @Test("a sleeping worker wakes for a job (no wake-up lost over many idle periods)")
    func wakesFromSleep() throws {
        let g = try Self.group(2)
        defer { g.stop() }
        for round in 0..<200 {
            if round % 20 == 0 { usleep(20_000) }  // long enough for both to sleep
            let answers = g.gather(timeoutNanoseconds: 1_000_000_000) { _ in round }
            #expect(answers == [round, round])
            if answers == nil { break }
        }
    }

    /// Worker 1's replica holds the protected tunnel's SAs; worker 0's
    /// hands it every packet it routes into the tunnel, and worker 1 seals
    /// each with the one sequence counter. Worker 0 gets its buffers back.
    @Test("packets for a tunnel whose SAs another worker owns cross to that worker; one counter seals them all; the buffers come back")
    func handOff() throws {
        let g = try WorkerGroup(count: 2, configuration: StackConfiguration(), makePool: { PacketPool(capacity: 1024, dataSize: 2048) })
        defer { g.stop() }
        #expect(g.perform(Self.setUpLAN))
        let key = SecretBytes((0..<AEADAlgorithm.aes128GCM.keyMaterialLength).map { UInt8($0) })
        for k in 0..<2 {
            #expect(g.perform(on: k) { r in
                let s = r.stack!
                var t = TunnelConfiguration(name: "sec0", local: IPv4Address(10, 9, 0, 1), remote: IPv4Address(10, 9, 0, 7))
                t.protection = TunnelProtection(encapsulation: .esp)
                guard let i = try? s.addTunnel(t) else { return }
                try? s.addAddress(IPv4InterfaceAddress("172.16.0.1/30"), to: i)
                try? s.setUp(i, true)
                try? s.addRoute(IPv4Prefix(address: IPv4Address(10, 50, 0, 0), length: 16), interface: i)
                try? s.setSAOwner(tunnel: i, replica: k == 0 ? 1 : nil)
                if k == 1 { try? s.setOutboundSA(tunnel: i, SAConfiguration(spi: 0x4242, algorithm: .aes128GCM, keyMaterial: key)) }
            })
        }
        let baseline = try #require(g.gather { $0.pool.inUse })
        let n = 300
        // In bursts, each taken over before the next, so neither the lane nor
        // worker 0's pool (its buffers come back only once copied) runs short
        // however slowly the workers are scheduled.
        for burst in 0..<3 {
            #expect(g.perform(on: 0) { r in
                for q in 0..<100 { try? r.stack!.ping(IPv4Address(10, 50, 0, 9), sequence: UInt16(burst * 100 + q)) }
            })
            let until = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < until,
                  (g.gather { $0.stack!.counters.takenOver }?[1] ?? 0) < UInt64((burst + 1) * 100) { usleep(1000) }
        }
        var counts: [(handed: UInt64, taken: UInt64)] = []
        var sealed: UInt64 = 0
        let deadline = ContinuousClock.now + .seconds(20)
        repeat {
            counts = try #require(g.gather { ($0.stack!.counters.handedOff, $0.stack!.counters.takenOver) })
            sealed = try #require(g.gather { $0.stack!.saList.first { !$0.inbound }?.counters.packets ?? 0 }).reduce(0, +)
            if counts[1].taken == UInt64(n) && sealed == UInt64(n) { break }
            usleep(1000)
        } while ContinuousClock.now < deadline
        #expect(counts[0].handed == UInt64(n) && counts[0].taken == 0, "worker 0: \(counts[0])")
        #expect(counts[1].taken == UInt64(n) && counts[1].handed == 0, "worker 1: \(counts[1])")
        let sas = try #require(g.gather { $0.stack!.saList.filter { !$0.inbound } })
        #expect(sas[0].isEmpty, "worker 0 holds no SA")
        #expect(sas[1].first?.sequence == UInt64(n), "one counter: \(sas[1])")
        // Worker 0's buffers came back (it frees them as it next runs).
        var inUse: [Int] = []
        repeat {
            inUse = try #require(g.gather { $0.pool.inUse })
            if inUse[0] == baseline[0] { break }
            usleep(1000)
        } while ContinuousClock.now < deadline + .seconds(2)
        #expect(inUse[0] == baseline[0], "worker 0's pool: \(inUse[0]) in use, \(baseline[0]) before")
        let ledgers = try #require(g.gather { $0.stack!.ledger })
        #expect(ledgers.allSatisfy { $0.balanced }, "\(ledgers.map(\.violations))")
    }

    /// An ARP reply for 10.9.0.7 (at 02:00:00:00:00:07) addressed to the replicas' LAN.
    static let arpReply: [UInt8] = {
        var f = [UInt8](repeating: 0, count: 42)
        f.withUnsafeMutableBytes { b in
            EthernetRepr(destination: MACAddress(2, 0, 0, 0, 0, 1), source: MACAddress(2, 0, 0, 0, 0, 7), etherType: .arp).emit(into: b)
            ARPRepr(operation: .reply, senderMAC: MACAddress(2, 0, 0, 0, 0, 7), senderIP: IPv4Address(10, 9, 0, 7),
                    targetMAC: MACAddress(2, 0, 0, 0, 0, 1), targetIP: IPv4Address(10, 9, 0, 1))
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: b[14...]))
        }
        return f
    }()

    /// Worker 1 pings 10.9.0.7 (its request waits for ARP); the reply to
    /// the ARP request reaches worker 0 only (as a fanout hash may send it).
    /// Worker 0 reports what it learnt, the control thread hands it on, and
    /// worker 1's waiting packet goes out.
    @Test("what one replica's ARP learns reaches the others, and releases what waits there")
    func neighborsShared() throws {
        let g = try Self.group(2)
        defer { g.stop() }
        #expect(g.perform(Self.setUpLAN))
        #expect(g.perform(on: 1) { try? $0.stack!.ping(IPv4Address(10, 9, 0, 7)) })
        let waiting = try #require(g.gather { $0.stack!.neighborList.first { $0.address == IPv4Address(10, 9, 0, 7) }?.pending ?? -1 })
        #expect(waiting == [-1, 1])
        #expect(g.perform(on: 0) { runtime in
            if let p = runtime.pool.make(copying: Self.arpReply) { runtime.stack!.receive(p, on: 0) }
        })
        // Collect on the control thread until worker 0's report arrived and was handed on.
        var learned: [(Int, StackEvent)] = []
        let deadline = ContinuousClock.now + .seconds(2)
        while learned.isEmpty && ContinuousClock.now < deadline {
            g.collect { k, e in if case .neighborLearned = e { learned.append((k, e)) } }
            if learned.isEmpty { usleep(1000) }
        }
        try #require(!learned.isEmpty)
        #expect(learned.allSatisfy { $0.0 == 0 }, "only the owner learns from the link")
        let after = try #require(g.gather { runtime in
            runtime.stack!.neighborList.first { $0.address == IPv4Address(10, 9, 0, 7) }
        })
        for n in after {
            #expect(n?.mac == MACAddress(2, 0, 0, 0, 0, 7) && n?.state == .reachable && n?.pending == 0)
        }
        // Worker 1's echo request left once the address was known (no port: counted as sent to an unattached interface).
        let sent = try #require(g.gather { $0.stack!.counters.originated })
        #expect(sent[1] >= 1)
    }

    /// Worker 1 needs 10.9.0.9: as a follower it does not ask the link
    /// itself, it reports what it wants; the owner (worker 0) asks, once.
    @Test("ARP runs once: a follower's need is asked on the link by the owner")
    func ownerAsks() throws {
        let g = try Self.group(2)
        defer { g.stop() }
        #expect(g.perform(Self.setUpLAN))
        _ = g.gather { _ in true }
        let announced = try #require(g.gather { $0.stack!.counters.arpRequestsSent })
        #expect(announced[1] == 0, "a follower announces nothing: \(announced)")
        #expect(g.perform(on: 1) { try? $0.stack!.ping(IPv4Address(10, 9, 0, 9)) })
        var wanted = 0
        let deadline = ContinuousClock.now + .seconds(2)
        while wanted == 0 && ContinuousClock.now < deadline {
            g.collect { k, e in if case .neighborWanted = e, k == 1 { wanted += 1 } }
            if wanted == 0 { usleep(1000) }
        }
        #expect(wanted == 1)
        let sent = try #require(g.gather { $0.stack!.counters.arpRequestsSent })
        #expect(sent[1] == 0 && sent[0] == announced[0] + 1, "requests sent: \(sent), announcements \(announced)")
        let owner = try #require(g.gather { $0.stack!.neighborList.first { $0.address == IPv4Address(10, 9, 0, 9) }?.state })
        #expect(owner[0] == .incomplete)
    }

    @Test("a full inbox refuses a job instead of blocking or dropping it silently")
    func fullInbox() throws {
        let g = try WorkerGroup(count: 1, configuration: StackConfiguration(), inboxCapacity: 4,
                                makePool: { PacketPool(capacity: 64, dataSize: 2048) })
        defer { g.stop() }
        // Hold the worker in a job so the next ones queue up.
        let entered = Gate(), release = Gate()
        #expect(g.perform { _ in entered.open(); release.wait() })
        entered.wait()
        var accepted = 0
        for _ in 0..<10 where g.perform({ _ in }) { accepted += 1 }
        release.open()
        #expect(accepted == 4)
        #expect(g.gather { _ in true } == [true])
    }
}

/// A one-shot gate one thread waits at until another opens it.
final class Gate: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var isOpen = false
    init() { pthread_mutex_init(&mutex, nil); pthread_cond_init(&cond, nil) }
    func wait() {
        pthread_mutex_lock(&mutex)
        while !isOpen { pthread_cond_wait(&cond, &mutex) }
        pthread_mutex_unlock(&mutex)
    }
    func open() {
        pthread_mutex_lock(&mutex)
        isOpen = true
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
    }
}

/// The FIB the control thread writes and the workers' replicas read,
/// changed while they look it up (this suite also runs under ThreadSanitizer).
@Suite("Workers: a shared FIB under churn")
struct SharedFIBChurnTests {
    final class Quiet: Hypercalls {
        var rng = SplitMix64(seed: 3)
        func now() -> Timestamp { Timestamp(nanoseconds: 1_000_000_000) }
        func random() -> UInt64 { rng.next() }
        func transmit(_ packets: UnsafeBufferPointer<PacketHandle>, interface: InterfaceIndex, stack: Stack) {
            for p in packets { stack.pool.free(p) }
        }
    }

    final class Tally: Sendable {
        let looked = Atomic<Int>(0)
        let found = Atomic<Int>(0)
        let wrong = Atomic<Int>(0)
    }

    static let wanJob: WorkerJob = { runtime in
        let s = runtime.stack!
        guard let wan = try? s.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 0, 0, 1)) else { return }
        try? s.addAddress(IPv4InterfaceAddress("172.16.0.1/16"), to: wan)
        try? s.setUp(wan, true)
    }

    @Test("two workers look up while the control thread adds, deletes and splits routes: every answer is the prefix's own route, and freed slots come back")
    func churn() throws {
        // Room for 1 024 routes: 8 000 adds fit only if freed slots are reused.
        let shared = SharedFIB(readers: 2, maxRoutes: 1024, maxNodes: 256)
        var c = StackConfiguration()
        c.fib = .writer(shared)
        let writer = Stack(name: "control", configuration: c, pool: PacketPool(capacity: 64, dataSize: 2048), hypercalls: Quiet())
        let wan = try writer.addInterface(name: "wan", mac: MACAddress(2, 0, 0, 0, 0, 1))
        try writer.addAddress(IPv4InterfaceAddress("172.16.0.1/16"), to: wan)
        try writer.setUp(wan, true)
        let g = try WorkerGroup(count: 2, configuration: StackConfiguration(), sharedFIB: shared,
                                makePool: { PacketPool(capacity: 64, dataSize: 2048) })
        defer { g.stop() }
        #expect(g.gather(Self.wanJob) != nil)
        let tally = Tally()
        var rng = SplitMix64(seed: 11)
        var adds = 0, full = 0
        for round in 0..<320 {
            // The lookups first, so that the changes race them.
            for w in 0..<2 {
                let seed = UInt64(round * 2 + w)
                _ = g.perform(on: w) { runtime in
                    var r = SplitMix64(seed: seed)
                    for _ in 0..<200 {
                        let k = UInt8(r.next() % 64), host = UInt8(r.next() % 256)
                        let a = IPv4Address(198, 51, k, host)
                        tally.looked.add(1, ordering: .relaxed)
                        guard let route = runtime.stack.lookup(a) else { continue }
                        tally.found.add(1, ordering: .relaxed)
                        let nh = route.nextHop?.rawValue ?? 0
                        let right = route.prefix == IPv4Prefix(address: IPv4Address(198, 51, k, 0), length: 24)
                            && nh >> 16 == 0xAC10 && UInt8(truncatingIfNeeded: nh >> 8) == k && (nh & 0xFF == 2 || nh & 0xFF == 3)
                        if !right { tally.wrong.add(1, ordering: .relaxed) }
                    }
                }
            }
            for _ in 0..<25 {
                let k = UInt8(rng.next() % 64)
                let p = IPv4Prefix(address: IPv4Address(198, 51, k, 0), length: 24)
                // A second member makes the prefix an ECMP set. A full table
                // waits (bounded) for the workers' next quiescent points, as
                // the freed slots come back only then (a worker may be
                // descheduled on a loaded machine); it stays full only if
                // they never do.
                func add(via last: UInt8) {
                    for _ in 0..<(full == 0 ? 400 : 1) {
                        do {
                            try writer.addRoute(p, via: IPv4Address(172, 16, k, last))
                            adds += 1
                            return
                        } catch .tableFull {
                            usleep(5_000)
                        } catch {
                            return
                        }
                    }
                    full += 1
                }
                switch rng.next() % 4 {
                case 0: try? writer.deleteRoute(p)
                case 1: add(via: 3)
                default: add(via: 2)
                }
            }
        }
        #expect(g.gather { _ in true }?.count == 2, "the workers finished their lookups")
        #expect(tally.looked.load(ordering: .relaxed) > 100_000)
        #expect(tally.found.load(ordering: .relaxed) > 10_000)
        #expect(tally.wrong.load(ordering: .relaxed) == 0)
        #expect(adds > 1500 && full == 0, "\(adds) adds in 1 024 slots, \(full) still refused after 2 s: freed slots were reused")
        // Idle workers hold nothing: the next change frees every retired slot.
        var retired = writer.fib.retiredSlots
        for _ in 0..<200 where retired > 0 {
            usleep(5_000)
            try? writer.deleteRoute(IPv4Prefix(address: IPv4Address(198, 51, 200, 0), length: 24))
            try? writer.addRoute(IPv4Prefix(address: IPv4Address(198, 51, 200, 0), length: 24), via: IPv4Address(172, 16, 200, 2))
            retired = writer.fib.retiredSlots
        }
        #expect(retired <= 1, "slots still retired with both workers asleep: \(retired)")
        writer.checkInvariants()
    }
}
