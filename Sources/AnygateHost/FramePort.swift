public import AnygateStack
import AnygateWire
#if canImport(Glibc)
import Glibc
#endif

/// What one raw read from a device gave.
enum RawRead {
    case frame(Int)
    /// A frame to ignore (our own transmission seen on a packet socket).
    case skip
    case error(Int32)
}

/// The batching, queueing and counting shared by the TAP and packet
/// ports; each supplies only its raw read and write and says which errors
/// mean the device is gone.
protocol FramePort: Port {
    var counters: PortCounters { get set }
    var queue: [PacketHandle] { get set }
    var queueCapacity: Int { get }
    func rawRead(into buffer: UnsafeMutableRawPointer, capacity: Int) -> RawRead
    /// Writes one packet: true when all of it went, else the errno (0 for a short write).
    func rawWrite(_ packet: PacketHandle, pool: PacketPool) -> (written: Bool, errno: Int32)
    /// Whether a failed write with this errno means the device is gone or down.
    func writeLost(_ errno: Int32) -> Bool
}

extension FramePort {
    public var offloads: Bool { false }

    /// Applies a received frame's virtio-net header to its handle. A header
    /// that is malformed or asks for what the stack does not do refuses the
    /// frame: counted (`rxBadOffload`) and freed, never trusted.
    func acceptOffloads(_ h: VirtioNetHeader, _ p: inout PacketHandle, pool: PacketPool) -> Bool {
        guard let o = h.offloads(for: pool.bytes(p)) else {
            counters.rxBadOffload += 1
            pool.free(p)
            return false
        }
        p.segmentSize = o.segmentSize
        p.offload = (o.partial ? PacketHandle.checksumPartial : 0) | (o.verified ? PacketHandle.checksumVerified : 0)
        return true
    }

    public func receive(into batch: UnsafeMutableBufferPointer<PacketHandle>, pool: PacketPool) -> PortRead {
        readFrames(into: batch, pool: pool)
    }

    /// One frame per read, each into a frame buffer.
    func readFrames(into batch: UnsafeMutableBufferPointer<PacketHandle>, pool: PacketPool) -> PortRead {
        var n = 0
        var scratch: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        while n < batch.count {
            guard var p = pool.allocate() else {
                // No buffer: take one frame off the device anyway, so its queue moves, and count it.
                let r = withUnsafeMutableBytes(of: &scratch) { rawRead(into: $0.baseAddress!, capacity: $0.count) }
                if case .frame = r { counters.rxNoBuffer += 1; continue }
                break
            }
            switch rawRead(into: pool.buffer(p).baseAddress! + Int(p.offset), capacity: pool.dataCapacity) {
            case .frame(let len):
                p.length = UInt32(len)
                batch[n] = p
                n += 1
                counters.rxFrames += 1
                counters.rxBytes += UInt64(len)
            case .skip:
                pool.free(p)
            case .error(let e):
                pool.free(p)
                if e == EAGAIN || e == EWOULDBLOCK || e == EINTR { return .frames(n) }
                if n > 0 { return .frames(n) }
                counters.rxErrors += 1
                return .lost(SystemError("read", name, errno: e))
            }
        }
        return .frames(n)
    }

    public func send(_ packets: UnsafeBufferPointer<PacketHandle>, pool: PacketPool) -> SystemError? {
        sendOneByOne(packets, pool: pool)
    }

    /// One write per frame; what the device would not take yet waits in the queue.
    func sendOneByOne(_ packets: UnsafeBufferPointer<PacketHandle>, pool: PacketPool) -> SystemError? {
        var lost: SystemError? = nil
        for p in packets {
            if !queue.isEmpty || lost != nil {
                if lost == nil && queue.count < queueCapacity { queue.append(p) } else { counters.txQueueDrops += 1; pool.free(p) }
                continue
            }
            let (written, e) = rawWrite(p, pool: pool)
            if written {
                counters.txFrames += 1
                counters.txBytes += UInt64(p.length)
                pool.free(p)
                continue
            }
            if e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS {
                if queue.count < queueCapacity { queue.append(p) } else { counters.txQueueDrops += 1; pool.free(p) }
            } else {
                counters.txErrors += 1
                pool.free(p)
                if e != 0 && writeLost(e) { lost = SystemError("write", name, errno: e) }
            }
        }
        return lost
    }

    public var hasQueued: Bool { !queue.isEmpty }

    public func flushQueue(pool: PacketPool) {
        var sent = 0
        for p in queue {
            let (written, e) = rawWrite(p, pool: pool)
            if !written && (e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS) { break }
            if written { counters.txFrames += 1; counters.txBytes += UInt64(p.length) } else { counters.txErrors += 1 }
            pool.free(p)
            sent += 1
        }
        queue.removeFirst(sent)
    }

    public func markLost(pool: PacketPool) {
        counters.detaches += 1
        for p in queue { pool.free(p) }
        counters.txQueueDrops += UInt64(queue.count)
        queue.removeAll(keepingCapacity: true)
    }

    /// Drops what waits and releases the descriptor.
    func closeDescriptor(_ fd: Int32, pool: PacketPool) {
        for p in queue { pool.free(p) }
        queue.removeAll()
        if fd >= 0 { Sys.close(fd) }
    }
}
