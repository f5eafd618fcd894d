public import AnygateStack
import Synchronization

/// Work the control thread sends a worker: it runs on the worker's thread,
/// with the worker's runtime (its stack replica, pool and ports).
public typealias WorkerJob = @Sendable (HostRuntime) -> Void

/// Workers (DESIGN.md, "Several workers"): each a thread with its own event
/// loop, packet pool and `Stack` replica, touched by no other thread. The
/// control thread reaches a worker only through its inbox, a net channel of
/// jobs, and the worker's doorbell; answers come back through `gather`'s
/// reply slots, and what the replicas report (their stack events) through
/// each worker's outbox to the control thread, which rings `notifications`.
/// Nothing here is on the packet path: jobs are control-plane changes and
/// questions, a closure each.
///
/// What one replica's ARP learns, the others learn too: the replicas report
/// it (`arp.shareLearned` is set when there are several), and `collect`
/// hands it on to the other workers (`Stack.learnNeighbor`) — the answer to
/// one worker's request may reach another worker's queue or socket.
/// ICMP error budgets are shared out: each replica may send
/// `errorsPerSecond / count` (and a burst of `errorBurst / count`).
/// ARP runs once per link: only worker 0's replica sends requests and
/// announcements; another that needs a neighbour asks it (`resolveNeighbor`).
/// So does neighbour discovery, and duplicate address detection, router
/// advertisements and MLD reports run on worker 0's replica only: router
/// solicitations and MLD queries that reach another worker are handed to
/// it, and a duplicate it finds to the others (`markDuplicated`).
/// Tunnel keepalives run once: worker 0's replica owns them and decides each
/// tunnel's line; answers that reach another worker are handed to it, and
/// the lines it decides to the others (`StackConfiguration.Replica`).
public final class WorkerGroup: @unchecked Sendable {
    public let count: Int
    private let workers: [Worker]
    /// Rung when a worker has put something in its outbox while the
    /// control thread said it sleeps (`prepareToSleep`); watch its `fd`.
    public let notifications: Doorbell
    /// The lanes packets cross between workers on (nil with one worker).
    let lanes: HandOffLanes?

    /// Starts `count` workers, each building its runtime on its own thread
    /// with `configuration` and a pool from `makePool`, then running its loop.
    /// Returns once every worker is ready.
    ///
    /// With `sharedFIB`, the replicas read that FIB (reader k is worker k)
    /// instead of keeping one each; its writer is the control thread's stack.
    public init(count: Int, configuration: StackConfiguration, sharedFIB: SharedFIB? = nil, inboxCapacity: Int = 4096,
                makePool: @escaping @Sendable () -> PacketPool) throws(SystemError) {
        precondition(sharedFIB.map { $0.readerCount == count } ?? true, "one reader per worker")
        precondition(count >= 1, "at least one worker")
        self.count = count
        let bell = try Doorbell("worker notifications")
        notifications = bell
        var bells: [Doorbell] = []
        for k in 0..<count { bells.append(try Doorbell("worker \(k)")) }
        let pools = (0..<count).map { _ in makePool() }
        // Packets for the worker that owns their tunnel's SAs cross on these.
        let lanes = count > 1 ? HandOffLanes(pools: pools, bells: bells) : nil
        self.lanes = lanes
        var made: [Worker] = []
        for k in 0..<count {
            var replica = configuration
            if let sharedFIB { replica.fib = .reader(sharedFIB, index: k) }
            if count > 1 {
                replica.arp.shareLearned = true
                replica.replica = k == 0 ? .owner : .follower
                // ICMP errors: each replica gets its share of the budget, so
                // the gateway as a whole keeps to the configured rate.
                replica.icmp.errorsPerSecond = max(1, configuration.icmp.errorsPerSecond / count)
                replica.icmp.errorBurst = max(1, configuration.icmp.errorBurst / count)
            }
            made.append(try Worker(index: k, configuration: replica, inboxCapacity: inboxCapacity, bell: bells[k],
                                   notify: { bell.ring() }, pool: pools[k], handOffs: lanes?.endpoint(k)))
        }
        workers = made
        for w in workers { w.waitReady() }
        if let failed = workers.first(where: { $0.startError != nil }) {
            stop()
            throw failed.startError!
        }
    }

    deinit { stop() }

    /// Stops every worker's loop and joins its thread.
    public func stop() {
        for w in workers { w.stop() }
    }

    /// Sends `job` to every worker (in order with the jobs sent before it);
    /// false if a worker's inbox was full (the job did not reach that one).
    @discardableResult
    public func perform(_ job: @escaping WorkerJob) -> Bool {
        var all = true
        for w in workers where !w.send(job) { all = false }
        return all
    }

    /// Takes what the workers reported since the last call, in each
    /// worker's order: hands neighbour resolutions on to the other workers,
    /// and passes every event to `handle` with the worker's index. Returns
    /// how many it took. Control thread only.
    @discardableResult
    public func collect(_ handle: (Int, StackEvent) -> Void = { _, _ in }) -> Int {
        var n = 0
        for (k, w) in workers.enumerated() {
            while let e = w.outbox.pop() {
                n += 1
                switch e {
                case let .neighborLearned(address, interface, mac):
                    for j in 0..<count where j != k {
                        perform(on: j) { try? $0.stack.learnNeighbor(address, on: interface, mac: mac) }
                    }
                case let .neighborWanted(address, interface):
                    perform(on: 0) { $0.stack.resolveNeighbor(address, on: interface) }
                case let .neighbor6Learned(address, interface, mac):
                    for j in 0..<count where j != k {
                        perform(on: j) { try? $0.stack.learnNeighbor(address, on: interface, mac: mac) }
                    }
                case let .neighbor6Wanted(address, interface):
                    perform(on: 0) { $0.stack.resolveNeighbor(address, on: interface) }
                case let .routerSolicited(interface):
                    perform(on: 0) { $0.stack.routerSolicited(on: interface) }
                case let .multicastQueried(interface, delay):
                    perform(on: 0) { $0.stack.multicastQueried(on: interface, maximumDelay: delay) }
                case let .duplicateAddress(interface, address) where k == 0:
                    for j in 1..<count { perform(on: j) { $0.stack.markDuplicated(address, on: interface) } }
                case let .multicastChanged(interface):
                    // The device takes in the groups' MACs through this worker's own socket.
                    perform(on: k) { r in try? r.port(for: interface)?.setMulticast(r.stack.multicastMACs(on: interface)) }
                case let .keepaliveAnswered(tunnel):
                    perform(on: 0) { $0.stack.keepaliveAnswered(tunnel: tunnel) }
                case let .tunnelLine(tunnel, up):
                    for j in 1..<count { perform(on: j) { $0.stack.setTunnelLine(tunnel: tunnel, up: up) } }
                default:
                    break
                }
                handle(k, e)
            }
        }
        return n
    }

    /// Before the control thread blocks: false (and nothing marked) if a
    /// worker's outbox has something already — collect first.
    public func prepareToSleep() -> Bool {
        for (k, w) in workers.enumerated() where !w.outbox.prepareToSleep() {
            for j in 0...k { workers[j].outbox.awake() }
            return false
        }
        return true
    }

    /// The control thread is running again.
    public func awake() {
        for w in workers { w.outbox.awake() }
        notifications.answer()
    }

    /// Reports a worker could not put in its outbox (full): lost, counted.
    public var notesLost: Int { workers.reduce(0) { $0 + $1.notesLost } }
    /// Jobs a full inbox refused (control thread only).
    public var jobsRefused: Int { workers.reduce(0) { $0 + $1.refused } }

    /// Sends `job` to one worker.
    @discardableResult
    public func perform(on worker: Int, _ job: @escaping WorkerJob) -> Bool { workers[worker].send(job) }

    /// Asks every worker and waits for the answers (in worker order); nil
    /// if some worker did not answer within `timeoutNanoseconds`.
    public func gather<T: Sendable>(timeoutNanoseconds: Int64 = 2_000_000_000,
                                    _ question: @escaping @Sendable (HostRuntime) -> T) -> [T]? {
        let slots = (0..<count).map { _ in ReplySlot<T>() }
        let deadline = Sys.monotonicNanoseconds() + timeoutNanoseconds
        for (k, w) in workers.enumerated() {
            let slot = slots[k]
            // A full inbox drains as the worker runs: ask again until the deadline.
            while !w.send({ runtime in slot.fill(question(runtime)) }) {
                if Sys.monotonicNanoseconds() > deadline { return nil }
                Sys.pause(microseconds: 20)
            }
        }
        var answers: [T] = []
        for slot in slots {
            guard let v = slot.wait(until: deadline) else { return nil }
            answers.append(v)
        }
        return answers
    }
}

/// One answer, written once by a worker and read by the control thread
/// (the value is published by the release store of `done`).
final class ReplySlot<T: Sendable>: @unchecked Sendable {
    private let done = Atomic<Bool>(false)
    private var value: T?

    func fill(_ v: T) {
        value = v
        done.store(true, ordering: .releasing)
    }

    /// Waits (yielding the CPU) until filled or `deadline` (monotonic ns).
    func wait(until deadline: Int64) -> T? {
        var spins = 0
        while !done.load(ordering: .acquiring) {
            spins += 1
            if spins > 64 { Sys.pause(microseconds: 20) }
            if Sys.monotonicNanoseconds() > deadline { return nil }
        }
        return value
    }
}

/// What a worker's thread takes over from the control thread that made it.
struct WorkerOwned: @unchecked Sendable {
    let pool: PacketPool
    let handOffs: HandOffEndpoint?
}

/// A worker thread: its inbox and doorbell are shared with the control
/// thread; its event loop and runtime are created on, and used only by, its
/// own thread.
final class Worker: @unchecked Sendable {
    let index: Int
    private let inbox: NetChannel<WorkerJob>
    /// What the replica reported (its stack events), for the control thread.
    let outbox: NetChannel<StackEvent>
    private let bell: Doorbell
    private let notesLostCount = Atomic<Int>(0)
    var notesLost: Int { notesLostCount.load(ordering: .relaxed) }
    private let ready = Atomic<Bool>(false)
    /// Why the worker's thread could not build its loop (read after `waitReady`).
    private(set) var startError: SystemError?
    private let stopping = Atomic<Bool>(false)
    private var thread: HostThread?
    /// Jobs a full inbox refused (control thread only).
    private(set) var refused = 0

    init(index: Int, configuration: StackConfiguration, inboxCapacity: Int, bell: Doorbell, notify: @escaping @Sendable () -> Void,
         pool: PacketPool, handOffs: HandOffEndpoint?) throws(SystemError) {
        self.index = index
        self.bell = bell
        inbox = NetChannel(capacity: inboxCapacity, wake: { bell.ring() })
        outbox = NetChannel(capacity: 4096, wake: notify)
        // The pool and the lane endpoint were made on the control thread and
        // are used only by this worker's thread from here on.
        let owned = WorkerOwned(pool: pool, handOffs: handOffs)
        thread = try HostThread("anygate-w\(index)") { [unowned self] in
            self.main(configuration: configuration, owned)
        }
    }

    /// The worker thread: builds its runtime and serves its loop until stopped.
    private func main(configuration: StackConfiguration, _ owned: WorkerOwned) {
        let loop: EventLoop
        let runtime: HostRuntime
        do {
            loop = try EventLoop()
            runtime = HostRuntime(loop: loop, configuration: configuration, pool: owned.pool)
            runtime.handOffs = owned.handOffs
            try loop.register(bell.fd) { [unowned self] _ in
                bell.answer()
                runJobs(runtime)
            }
        } catch {
            startError = error
            ready.store(true, ordering: .releasing)
            return
        }
        ready.store(true, ordering: .releasing)
        loop.run { [unowned self] in
            inbox.awake()
            runtime.handOffs?.awake()
            runJobs(runtime)
            if stopping.load(ordering: .acquiring) {
                loop.stop()
                return 0
            }
            runtime.serveHandOffs()
            let next = runtime.runTimers()
            report(runtime.stack)
            // Something arrived after the jobs were run: look again at once.
            guard inbox.prepareToSleep(), runtime.handOffs?.prepareToSleep() ?? true else { return Sys.monotonicNanoseconds() }
            // It may sleep: it holds nothing from a shared FIB until it wakes.
            runtime.stack.quiesce()
            return next
        }
        runtime.detachAll()
        loop.unregister(bell.fd)
    }

    /// Hands the replica's events to the control thread.
    private func report(_ stack: Stack) {
        guard stack.hasEvents else { return }
        while let e = stack.popEvent() {
            if !outbox.push(e) { notesLostCount.add(1, ordering: .relaxed) }
        }
        outbox.publish()
    }

    private func runJobs(_ runtime: HostRuntime) {
        // Between two jobs the replica holds nothing from a shared FIB: a
        // quiescent point each, so a long run of jobs does not hold up the
        // reuse of the FIB's freed route slots.
        var first = true
        while let job = inbox.pop() {
            if first {
                // Packets handed over before the job was sent go first: an SA
                // a job removes (the peer deleted it after a rekey) still
                // opens what the peer sent on it before the delete.
                runtime.serveHandOffs()
                first = false
            }
            runtime.stack.resumeReading()
            job(runtime)
        }
    }

    func waitReady() {
        while !ready.load(ordering: .acquiring) { Sys.pause(microseconds: 50) }
    }

    /// Queues `job` and wakes the worker if it sleeps (control thread only).
    func send(_ job: @escaping WorkerJob) -> Bool {
        guard inbox.push(job) else {
            refused += 1
            return false
        }
        inbox.publish()
        return true
    }

    func stop() {
        guard let t = thread else { return }
        thread = nil
        stopping.store(true, ordering: .releasing)
        bell.ring()
        t.join()
    }
}
