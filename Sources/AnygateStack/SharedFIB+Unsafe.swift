import Synchronization
import AnygateWire

/// One FIB for several stack replicas on several threads: the control
/// thread's stack writes it, the workers' replicas read it, and its memory
/// does not grow with the number of workers.
///
/// Read-copy-update, with the route slot as the unit that is never changed
/// under a reader:
/// - the writer stores each lookup word atomically (`LPMTable`), so a
///   reader finds the old route or the new one, never a torn one;
/// - the node and route-slot arrays are made at their full size and never
///   move (their untouched pages cost nothing);
/// - a route slot freed by a change is retired, not reused, until every
///   reader has passed a quiescent point after the change: each reader
///   announces, once per batch (`Stack.enter`), the generation it has seen,
///   or that it is idle (asleep, holding nothing); the writer reuses a slot
///   once every announcement is at least the generation that unlinked it.
///
/// Readers never write here except their own announcement (a plain
/// release store, on a cache line of its own); the writer publishes the
/// generation with a release store after the words it covers.
public final class SharedFIB: @unchecked Sendable {
    /// How many replicas read the table.
    public let readerCount: Int
    /// Route slots and LPM nodes the table can ever hold.
    public let maxRoutes: Int
    public let maxNodes: Int
    /// The writer's generation, published after the changes it covers
    /// (behind a pointer, so that a reader's batch reads it without
    /// reference counting).
    let generation: UnsafeMutablePointer<Atomic<UInt64>>
    /// One announcement per reader, each on its own 64-byte line.
    private let announcements: UnsafeMutablePointer<Atomic<UInt64>>
    private static let stride = 8
    static let idle = UInt64.max
    /// The writer's arrays, set when the writer's table is made (one writer per table).
    var level0: UnsafeMutablePointer<LPMWord>?
    var nodes: UnsafeMutablePointer<LPMWord>?
    var slots: UnsafeMutablePointer<RouteSlot<IPv4Address>>?

    /// A table for `readers` replicas; a million routes (62–202 MB of
    /// table, by how they spread) fit the defaults.
    public init(readers: Int, maxRoutes: Int = 1 << 22, maxNodes: Int = 1 << 18) {
        precondition(readers > 0 && maxRoutes > 0 && maxNodes > 0)
        readerCount = readers
        self.maxRoutes = maxRoutes
        self.maxNodes = maxNodes
        generation = .allocate(capacity: SharedFIB.stride)
        generation.initialize(to: Atomic(1))
        announcements = .allocate(capacity: readers * SharedFIB.stride)
        for i in 0..<(readers * SharedFIB.stride) { (announcements + i).initialize(to: Atomic(SharedFIB.idle)) }
    }

    /// The lookup words and route slots outlive the writer's stack: a
    /// reader may still hold the table, so the last holder frees them.
    deinit {
        announcements.deinitialize(count: readerCount * SharedFIB.stride)
        announcements.deallocate()
        generation.deinitialize(count: 1)
        generation.deallocate()
        level0?.deallocate()
        nodes?.deallocate()
        slots?.deallocate()
    }

    /// The generation the writer last published.
    func publish(_ g: UInt64) { generation.pointee.store(g, ordering: .sequentiallyConsistent) }

    /// Reader `index`'s announcement: the generation it has seen, holding
    /// nothing from before it (stored at the start of a batch), or `idle`.
    func announcement(_ index: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        announcements + index * SharedFIB.stride
    }

    /// Reader `index` comes back from idle: its announcement must be seen
    /// by the writer before it reads the table, or it must see the writer's
    /// latest generation (the two sequentially consistent operations make
    /// one of them true). Returns the generation to read with.
    func wake(_ index: Int) -> UInt64 {
        let a = announcements + index * SharedFIB.stride
        a.pointee.store(generation.pointee.load(ordering: .sequentiallyConsistent), ordering: .sequentiallyConsistent)
        let g = generation.pointee.load(ordering: .sequentiallyConsistent)
        a.pointee.store(g, ordering: .releasing)
        return g
    }

    /// Reader `index` holds nothing from the table until `wake`.
    func sleep(_ index: Int) {
        announcements[index * SharedFIB.stride].store(SharedFIB.idle, ordering: .releasing)
    }

    /// The oldest generation a reader may still hold something from
    /// (`idle` when every reader is idle).
    func oldestHeld() -> UInt64 {
        var m = SharedFIB.idle
        for i in 0..<readerCount {
            m = min(m, announcements[i * SharedFIB.stride].load(ordering: .sequentiallyConsistent))
        }
        return m
    }
}

/// How a stack holds its FIB.
public enum FIBSharing: Sendable {
    /// Its own table (one stack, or replicas that each keep one).
    case own
    /// It writes the shared table (the control thread's stack).
    case writer(SharedFIB)
    /// It reads the shared table as reader `index`; route changes reach it
    /// through the writer, not through its own calls.
    case reader(SharedFIB, index: Int)
}
