/// A packet: which pool buffer it lives in, where its bytes start in that
/// buffer and how many there are. A small value, copied freely; whoever
/// holds a handle owns the buffer until it passes the handle on or frees it.
public struct PacketHandle: Hashable, Sendable {
    public var index: UInt32
    public var offset: UInt32
    public var length: UInt32

    @inlinable public init(index: UInt32, offset: UInt32, length: UInt32) {
        self.index = index; self.offset = offset; self.length = length
    }
}

/// A fixed set of equal-sized packet buffers, allocated once. Each buffer
/// keeps `headroom` bytes in front of where received data starts, so an
/// encapsulation can prepend headers without copying the packet.
///
/// Allocation pops a free-list of 32-bit indices (LIFO, so the buffers in use
/// stay cache-warm); exhaustion returns nil and is counted, never grows.
public final class PacketPool {
    /// Bytes in each buffer, headroom included.
    public let bufferSize: Int
    /// Bytes reserved in front of the data of a fresh buffer.
    public let headroom: Int
    /// Number of buffers.
    public let capacity: Int

    @usableFromInline let base: UnsafeMutableRawPointer
    @usableFromInline let freeList: UnsafeMutablePointer<UInt32>
    @usableFromInline let state: UnsafeMutablePointer<State>

    @usableFromInline struct State {
        @usableFromInline var freeCount: Int
        @usableFromInline var exhausted: UInt64
        @usableFromInline var allocations: UInt64
    }

    public static let defaultHeadroom = 128
    /// Room for a 9216-byte jumbo frame or reassembled datagram.
    public static let defaultDataSize = 9216

    public init(capacity: Int = 4096, dataSize: Int = PacketPool.defaultDataSize, headroom: Int = PacketPool.defaultHeadroom) {
        precondition(capacity > 0 && capacity < Int(UInt32.max), "pool capacity out of range")
        precondition(headroom >= 64 && dataSize >= 1518, "pool buffers too small")
        // Round to a cache line so buffers do not share lines.
        let size = (headroom + dataSize + 63) & ~63
        self.bufferSize = size
        self.headroom = headroom
        self.capacity = capacity
        base = UnsafeMutableRawPointer.allocate(byteCount: size * capacity, alignment: 64)
        freeList = .allocate(capacity: capacity)
        // Hand out low indices first so a light load touches few pages.
        for i in 0..<capacity { freeList[i] = UInt32(capacity - 1 - i) }
        state = .allocate(capacity: 1)
        state.initialize(to: State(freeCount: capacity, exhausted: 0, allocations: 0))
    }

    deinit {
        base.deallocate()
        freeList.deallocate()
        state.deallocate()
    }

    /// Bytes of data a buffer can hold after the headroom.
    public var dataCapacity: Int { bufferSize - headroom }
    /// Buffers currently free.
    public var available: Int { state.pointee.freeCount }
    /// Buffers currently handed out.
    public var inUse: Int { capacity - state.pointee.freeCount }
    /// Allocations refused because every buffer was in use.
    public var exhaustedCount: UInt64 { state.pointee.exhausted }
    /// Successful allocations since creation.
    public var allocationCount: UInt64 { state.pointee.allocations }

    /// A free buffer with an empty packet at the headroom, or nil (counted) when none is left.
    @inlinable public func allocate() -> PacketHandle? {
        let n = state.pointee.freeCount
        guard n > 0 else {
            state.pointee.exhausted &+= 1
            return nil
        }
        state.pointee.freeCount = n &- 1
        state.pointee.allocations &+= 1
        return PacketHandle(index: freeList[n &- 1], offset: UInt32(truncatingIfNeeded: headroom), length: 0)
    }

    /// Returns the packet's buffer to the pool.
    @inlinable public func free(_ packet: PacketHandle) {
        let n = state.pointee.freeCount
        precondition(n < capacity && Int(packet.index) < capacity, "packet freed twice or not from this pool")
        freeList[n] = packet.index
        state.pointee.freeCount = n &+ 1
    }

    /// The packet's bytes, `length` of them from `offset`.
    @inlinable public func bytes(_ packet: PacketHandle) -> UnsafeMutableRawBufferPointer {
        let start: Int = Int(packet.index) &* bufferSize &+ Int(packet.offset)
        return UnsafeMutableRawBufferPointer(start: base + start, count: Int(packet.length))
    }

    /// The whole buffer behind a packet, from its first byte.
    @inlinable public func buffer(_ packet: PacketHandle) -> UnsafeMutableRawBufferPointer {
        let start: Int = Int(packet.index) &* bufferSize
        return UnsafeMutableRawBufferPointer(start: base + start, count: bufferSize)
    }

    /// Moves the start of the packet `count` bytes earlier, into the headroom.
    /// False (packet unchanged) if the headroom is too small.
    @inlinable public func prepend(_ packet: inout PacketHandle, _ count: Int) -> Bool {
        guard Int(packet.offset) >= count else { return false }
        packet.offset &-= UInt32(truncatingIfNeeded: count)
        packet.length &+= UInt32(truncatingIfNeeded: count)
        return true
    }

    /// Drops `count` bytes from the front of the packet.
    @inlinable public func consume(_ packet: inout PacketHandle, _ count: Int) {
        precondition(count >= 0 && count <= Int(packet.length))
        packet.offset &+= UInt32(truncatingIfNeeded: count)
        packet.length &-= UInt32(truncatingIfNeeded: count)
    }

    /// Sets the length, which must fit in the buffer after the offset.
    @inlinable public func setLength(_ packet: inout PacketHandle, _ length: Int) {
        precondition(length >= 0 && Int(packet.offset) + length <= bufferSize)
        packet.length = UInt32(truncatingIfNeeded: length)
    }

    /// A new packet holding a copy of `data`, or nil when the pool is empty
    /// or `data` does not fit.
    public func make(copying data: UnsafeRawBufferPointer) -> PacketHandle? {
        guard data.count <= dataCapacity, var p = allocate() else { return nil }
        p.length = UInt32(data.count)
        if let src = data.baseAddress, data.count > 0 {
            bytes(p).baseAddress!.copyMemory(from: src, byteCount: data.count)
        }
        return p
    }

    public func make(copying data: [UInt8]) -> PacketHandle? {
        data.withUnsafeBytes { make(copying: $0) }
    }

    /// A copy of the packet's bytes, for tests and diagnostics (allocates).
    public func copyBytes(_ packet: PacketHandle) -> [UInt8] {
        Array(UnsafeRawBufferPointer(bytes(packet)))
    }

    /// Checks the free-list: every index in range and none twice.
    public func checkInvariants() {
        var seen = [Bool](repeating: false, count: capacity)
        let n = state.pointee.freeCount
        precondition(n >= 0 && n <= capacity)
        for i in 0..<n {
            let idx = Int(freeList[i])
            precondition(idx < capacity && !seen[idx], "pool free-list corrupt")
            seen[idx] = true
        }
    }
}
