/// A packet: which pool buffer it lives in, where its bytes start in that
/// buffer and how many there are, and what the device left for the stack
/// or the next device to finish (virtio-net's checksum and segmentation
/// offloads). A small value (16 bytes), copied freely; whoever holds a
/// handle owns the buffer until it passes the handle on or frees it.
public struct PacketHandle: Hashable, Sendable {
    public var index: UInt32
    public var offset: UInt32
    public var length: UInt32
    /// A super-frame: its TCP or UDP payload is to be cut into segments of
    /// this many bytes on the way out (GSO). 0 for an ordinary packet.
    public var segmentSize: UInt16
    /// `PacketHandle.checksumPartial` and `.checksumVerified`.
    public var offload: UInt8

    /// The transport checksum is partial: its field holds the pseudo-header
    /// sum and whoever sends the packet on a link without checksum offload
    /// completes it (virtio-net's NEEDS_CSUM). Only for TCP and UDP.
    public static let checksumPartial: UInt8 = 1
    /// The device verified the transport checksum (virtio-net's DATA_VALID).
    public static let checksumVerified: UInt8 = 2

    @inlinable public init(index: UInt32, offset: UInt32, length: UInt32, segmentSize: UInt16 = 0, offload: UInt8 = 0) {
        self.index = index; self.offset = offset; self.length = length
        self.segmentSize = segmentSize; self.offload = offload
    }

    /// Whether the packet needs a device with offloads, or work before it
    /// can leave by one without (segmentation, a checksum to complete).
    @inlinable public var needsOffload: Bool { segmentSize != 0 || offload & PacketHandle.checksumPartial != 0 }
}

/// A fixed set of packet buffers, allocated once. Each buffer keeps
/// `headroom` bytes in front of where received data starts, so an
/// encapsulation can prepend headers without copying the packet.
///
/// Two size classes: `capacity` buffers for frames (up to a 9216-byte jumbo
/// frame by default) and `superFrames` buffers for 64 KiB super-frames
/// (`allocateSuperFrame`). A super-frame buffer spans `superFrameStride`
/// frame buffers and is indexed like the first of them, so finding a
/// packet's bytes is one multiplication for both classes.
///
/// Allocation pops a free-list of 32-bit indices (LIFO, so the buffers in use
/// stay cache-warm); exhaustion returns nil and is counted, never grows.
public final class PacketPool {
    /// Bytes in each frame buffer, headroom included.
    public let bufferSize: Int
    /// Bytes reserved in front of the data of a fresh buffer.
    public let headroom: Int
    /// Number of frame buffers.
    public let capacity: Int
    /// Number of super-frame buffers.
    public let superFrames: Int
    /// How many frame-buffer sizes one super-frame buffer spans.
    public let superFrameStride: Int
    /// The largest super-frame: an IP packet of 65535 bytes in an 802.1Q frame.
    public static let superFrameDataSize = 65535 + 18

    @usableFromInline let base: UnsafeMutableRawPointer
    @usableFromInline let freeList: UnsafeMutablePointer<UInt32>
    @usableFromInline let superFreeList: UnsafeMutablePointer<UInt32>
    @usableFromInline let state: UnsafeMutablePointer<State>

    @usableFromInline struct State {
        @usableFromInline var freeCount: Int
        @usableFromInline var superFreeCount: Int
        @usableFromInline var exhausted: UInt64
        @usableFromInline var allocations: UInt64
    }

    /// Room in front of what arrives: the deepest encapsulation the stack
    /// builds around a packet it originated itself — an IPv6 datagram (48)
    /// in GRE with key and sequence (16) in ESP (16) in UDP (8) over IPv6
    /// (40) on Ethernet (14) — is 142 bytes.
    public static let defaultHeadroom = 192
    /// Room for a 9216-byte jumbo frame or reassembled datagram.
    public static let defaultDataSize = 9216

    public init(capacity: Int = 4096, dataSize: Int = PacketPool.defaultDataSize, headroom: Int = PacketPool.defaultHeadroom,
                superFrames: Int = 0) {
        precondition(capacity > 0 && superFrames >= 0, "pool capacity out of range")
        precondition(headroom >= 64 && dataSize >= 1518, "pool buffers too small")
        // Round to a cache line so buffers do not share lines.
        let size = (headroom + dataSize + 63) & ~63
        let stride = (headroom + PacketPool.superFrameDataSize + size - 1) / size
        precondition(capacity + superFrames * stride < Int(UInt32.max), "pool capacity out of range")
        self.bufferSize = size
        self.headroom = headroom
        self.capacity = capacity
        self.superFrames = superFrames
        self.superFrameStride = stride
        base = UnsafeMutableRawPointer.allocate(byteCount: size * (capacity + superFrames * stride), alignment: 64)
        freeList = .allocate(capacity: capacity)
        // Hand out low indices first so a light load touches few pages.
        for i in 0..<capacity { freeList[i] = UInt32(capacity - 1 - i) }
        superFreeList = .allocate(capacity: max(1, superFrames))
        for i in 0..<superFrames { superFreeList[i] = UInt32(capacity + (superFrames - 1 - i) * stride) }
        state = .allocate(capacity: 1)
        state.initialize(to: State(freeCount: capacity, superFreeCount: superFrames, exhausted: 0, allocations: 0))
    }

    deinit {
        base.deallocate()
        freeList.deallocate()
        superFreeList.deallocate()
        state.deallocate()
    }

    /// Bytes of data a frame buffer can hold after the headroom.
    public var dataCapacity: Int { bufferSize - headroom }
    /// Bytes of data a super-frame buffer can hold after the headroom.
    public var superFrameDataCapacity: Int { bufferSize * superFrameStride - headroom }
    /// Frame buffers currently free.
    public var available: Int { state.pointee.freeCount }
    /// Super-frame buffers currently free.
    public var superFramesAvailable: Int { state.pointee.superFreeCount }
    /// Buffers of either size currently handed out.
    public var inUse: Int { capacity - state.pointee.freeCount + superFrames - state.pointee.superFreeCount }

    /// Whether the packet lives in a super-frame buffer.
    @inlinable public func isSuperFrame(_ packet: PacketHandle) -> Bool { Int(packet.index) >= capacity }

    /// Bytes the packet's buffer can hold from its start (headroom included).
    @inlinable public func bufferCapacity(_ packet: PacketHandle) -> Int {
        isSuperFrame(packet) ? bufferSize * superFrameStride : bufferSize
    }
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

    /// A free super-frame buffer with an empty packet at the headroom, or
    /// nil (counted) when none is left.
    @inlinable public func allocateSuperFrame() -> PacketHandle? {
        let n = state.pointee.superFreeCount
        guard n > 0 else {
            state.pointee.exhausted &+= 1
            return nil
        }
        state.pointee.superFreeCount = n &- 1
        state.pointee.allocations &+= 1
        return PacketHandle(index: superFreeList[n &- 1], offset: UInt32(truncatingIfNeeded: headroom), length: 0)
    }

    /// Returns the packet's buffer to the pool.
    @inlinable @inline(__always) public func free(_ packet: PacketHandle) {
        if _slowPath(isSuperFrame(packet)) { return freeSuperFrame(packet) }
        let n = state.pointee.freeCount
        precondition(n < capacity, "packet freed twice or not from this pool")
        freeList[n] = packet.index
        state.pointee.freeCount = n &+ 1
    }

    @usableFromInline @inline(never) func freeSuperFrame(_ packet: PacketHandle) {
        let n = state.pointee.superFreeCount
        let k = Int(packet.index) - capacity
        precondition(n < superFrames && k % superFrameStride == 0 && k / superFrameStride < superFrames,
                     "packet freed twice or not from this pool")
        superFreeList[n] = packet.index
        state.pointee.superFreeCount = n &+ 1
    }

    /// The packet's bytes, `length` of them from `offset`.
    @inlinable public func bytes(_ packet: PacketHandle) -> UnsafeMutableRawBufferPointer {
        let start: Int = Int(packet.index) &* bufferSize &+ Int(packet.offset)
        return UnsafeMutableRawBufferPointer(start: base + start, count: Int(packet.length))
    }

    /// The whole buffer behind a packet, from its first byte.
    @inlinable public func buffer(_ packet: PacketHandle) -> UnsafeMutableRawBufferPointer {
        let start: Int = Int(packet.index) &* bufferSize
        return UnsafeMutableRawBufferPointer(start: base + start, count: bufferCapacity(packet))
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
        precondition(length >= 0 && Int(packet.offset) + length <= bufferCapacity(packet))
        packet.length = UInt32(truncatingIfNeeded: length)
    }

    /// A new packet holding a copy of `data`, or nil when the pool is empty
    /// or `data` does not fit.
    public func make(copying data: UnsafeRawBufferPointer) -> PacketHandle? {
        let fits = data.count <= dataCapacity
        guard fits || data.count <= superFrameDataCapacity, var p = fits ? allocate() : allocateSuperFrame() else { return nil }
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

    /// Checks the free-lists: every index in range and none twice.
    public func checkInvariants() {
        var seen = [Bool](repeating: false, count: capacity + superFrames * superFrameStride)
        let n = state.pointee.freeCount
        precondition(n >= 0 && n <= capacity)
        for i in 0..<n {
            let idx = Int(freeList[i])
            precondition(idx < capacity && !seen[idx], "pool free-list corrupt")
            seen[idx] = true
        }
        let m = state.pointee.superFreeCount
        precondition(m >= 0 && m <= superFrames)
        for i in 0..<m {
            let idx = Int(superFreeList[i])
            precondition(idx >= capacity && (idx - capacity) % superFrameStride == 0 && idx < seen.count && !seen[idx],
                         "pool super-frame free-list corrupt")
            seen[idx] = true
        }
    }
}
