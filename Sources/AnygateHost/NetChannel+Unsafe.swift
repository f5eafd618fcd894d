public import Synchronization

/// A net channel (Van Jacobson's): a bounded ring from exactly one producer
/// thread to exactly one consumer thread, the way workers hand each other
/// packets, control-plane changes and neighbour resolutions.
///
/// - The producer's index and the consumer's index live on cache lines of
///   their own, and each side keeps the last value it saw of the other's
///   index, so a side touches the other's line only when its cached view
///   says the ring is full (producer) or empty (consumer).
/// - Publishing is batched: `push` fills slots, `publish` makes all of them
///   visible with one release store (and at most one wake-up).
/// - A consumer that sleeps in its event loop says so (`prepareToSleep`);
///   the producer writes the channel's eventfd only then, so a busy consumer
///   costs the producer no system call.
///
/// Memory orderings: the producer's slot writes happen before its release
/// store of `tail`; the consumer's acquire load of `tail` makes them visible
/// (and symmetrically for `head`, which returns slots). The sleep handshake
/// is Dekker's: each side stores its flag, then loads the other side's
/// state, both sequentially consistent, so at least one of them sees the
/// other and no wake-up is lost.
///
/// Nothing here allocates after `init`; the element type is any type that
/// may cross threads (packet handles, small enums of changes).
public final class NetChannel<Element: Sendable>: @unchecked Sendable {
    public let capacity: Int
    @usableFromInline let mask: Int
    @usableFromInline let slots: UnsafeMutablePointer<Element>
    /// Lines of 64 bytes: [0] tail (published by the producer), [1] head
    /// (released by the consumer), [2] the consumer's sleeping flag, [3] the
    /// producer's private state, [4] the consumer's private state.
    @usableFromInline let lines: UnsafeMutableRawPointer
    @usableFromInline let wake: (@Sendable () -> Void)?

    @usableFromInline struct ProducerState {
        @usableFromInline var next = 0
        @usableFromInline var seenHead = 0
        @usableFromInline var wakeUps: UInt64 = 0
        init() {}
    }

    @usableFromInline struct ConsumerState {
        @usableFromInline var next = 0
        @usableFromInline var seenTail = 0
        init() {}
    }

    /// A ring of `capacity` slots (rounded up to a power of two). `wake`, if
    /// given, is called by `publish` when the consumer said it sleeps (it
    /// writes the consumer's eventfd; see `EventChannel`).
    public init(capacity: Int, wake: (@Sendable () -> Void)? = nil) {
        precondition(capacity >= 2 && capacity <= 1 << 24, "net channel capacity out of range")
        var size = 2
        while size < capacity { size <<= 1 }
        self.capacity = size
        mask = size - 1
        slots = .allocate(capacity: size)
        lines = .allocate(byteCount: 5 * 64, alignment: 64)
        for line in 0..<3 { (lines + line * 64).bindMemory(to: Atomic<Int>.self, capacity: 1).initialize(to: Atomic(0)) }
        (lines + 3 * 64).bindMemory(to: ProducerState.self, capacity: 1).initialize(to: ProducerState())
        (lines + 4 * 64).bindMemory(to: ConsumerState.self, capacity: 1).initialize(to: ConsumerState())
        self.wake = wake
    }

    deinit {
        let c = consumer.pointee
        var i = c.next
        while i != producer.pointee.next {
            (slots + (i & mask)).deinitialize(count: 1)
            i &+= 1
        }
        for line in 0..<3 { (lines + line * 64).assumingMemoryBound(to: Atomic<Int>.self).deinitialize(count: 1) }
        slots.deallocate()
        lines.deallocate()
    }

    // The shared words, each on its own line: an `Atomic` needs a stable
    // address, and these are placed on lines the channel allocated.
    @usableFromInline var tail: UnsafePointer<Atomic<Int>> { UnsafePointer(lines.assumingMemoryBound(to: Atomic<Int>.self)) }
    @usableFromInline var head: UnsafePointer<Atomic<Int>> { UnsafePointer((lines + 64).assumingMemoryBound(to: Atomic<Int>.self)) }
    @usableFromInline var sleeping: UnsafePointer<Atomic<Int>> { UnsafePointer((lines + 128).assumingMemoryBound(to: Atomic<Int>.self)) }
    @usableFromInline var producer: UnsafeMutablePointer<ProducerState> { (lines + 3 * 64).assumingMemoryBound(to: ProducerState.self) }
    @usableFromInline var consumer: UnsafeMutablePointer<ConsumerState> { (lines + 4 * 64).assumingMemoryBound(to: ConsumerState.self) }

    // MARK: Producer side (one thread)

    /// Places `element` in the next slot, not yet visible to the consumer;
    /// false (the element not taken) when the ring is full.
    @inlinable
    public func push(_ element: Element) -> Bool {
        let p = producer
        if p.pointee.next &- p.pointee.seenHead == capacity {
            p.pointee.seenHead = head.pointee.load(ordering: .acquiring)
            if p.pointee.next &- p.pointee.seenHead == capacity { return false }
        }
        (slots + (p.pointee.next & mask)).initialize(to: element)
        p.pointee.next &+= 1
        return true
    }

    /// Slots the producer can still fill (as far as it knows; never more
    /// than are free).
    public var freeSlots: Int {
        let p = producer
        p.pointee.seenHead = head.pointee.load(ordering: .acquiring)
        return capacity - (p.pointee.next &- p.pointee.seenHead)
    }

    /// Makes every pushed element visible to the consumer and wakes it if
    /// it sleeps.
    @inlinable
    public func publish() {
        let p = producer
        guard p.pointee.next != tail.pointee.load(ordering: .relaxed) else { return }
        if wake == nil {
            tail.pointee.store(p.pointee.next, ordering: .releasing)
            return
        }
        tail.pointee.store(p.pointee.next, ordering: .sequentiallyConsistent)
        if sleeping.pointee.load(ordering: .sequentiallyConsistent) != 0, sleeping.pointee.exchange(0, ordering: .sequentiallyConsistent) != 0 {
            p.pointee.wakeUps &+= 1
            wake?()
        }
    }

    /// Times `publish` found the consumer asleep and woke it.
    public var wakeUps: UInt64 { producer.pointee.wakeUps }

    // MARK: Consumer side (one thread)

    /// Moves up to `output.count` elements out of the ring, oldest first,
    /// and returns their slots to the producer; returns how many.
    @inlinable
    public func pop(into output: UnsafeMutableBufferPointer<Element>) -> Int {
        let c = consumer
        var available = c.pointee.seenTail &- c.pointee.next
        if available == 0 {
            c.pointee.seenTail = tail.pointee.load(ordering: .acquiring)
            available = c.pointee.seenTail &- c.pointee.next
            if available == 0 { return 0 }
        }
        let n = min(available, output.count)
        for k in 0..<n {
            (output.baseAddress! + k).initialize(to: (slots + ((c.pointee.next &+ k) & mask)).move())
        }
        c.pointee.next &+= n
        head.pointee.store(c.pointee.next, ordering: .releasing)
        return n
    }

    /// Takes the oldest element, if any (one at a time: control messages).
    @inlinable
    public func pop() -> Element? {
        let c = consumer
        if c.pointee.seenTail == c.pointee.next {
            c.pointee.seenTail = tail.pointee.load(ordering: .acquiring)
            if c.pointee.seenTail == c.pointee.next { return nil }
        }
        let e = (slots + (c.pointee.next & mask)).move()
        c.pointee.next &+= 1
        head.pointee.store(c.pointee.next, ordering: .releasing)
        return e
    }

    /// Whether the consumer may block: marks it sleeping, then looks once
    /// more. False (and not marked) when something arrived meanwhile — the
    /// consumer must not sleep then.
    public func prepareToSleep() -> Bool {
        sleeping.pointee.store(1, ordering: .sequentiallyConsistent)
        let c = consumer
        c.pointee.seenTail = tail.pointee.load(ordering: .sequentiallyConsistent)
        if c.pointee.seenTail != c.pointee.next {
            sleeping.pointee.store(0, ordering: .relaxed)
            return false
        }
        return true
    }

    /// The consumer is running again (called after it wakes, however it woke).
    public func awake() { sleeping.pointee.store(0, ordering: .relaxed) }

    /// Elements published and not yet taken (either side may ask; a snapshot).
    public var count: Int { tail.pointee.load(ordering: .acquiring) &- head.pointee.load(ordering: .acquiring) }
}
