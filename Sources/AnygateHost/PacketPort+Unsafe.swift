public import AnygateStack
import CAnygateHost
#if canImport(Glibc)
import Glibc
#endif

/// Batched I/O for packet sockets: one `recvmmsg` reads up to a batch of
/// frames straight into pool buffers, one `sendmmsg` writes a batch. The
/// message headers are allocated once per port.
final class MessageBatch {
    let capacity: Int
    let messages: UnsafeMutablePointer<ag_mmsghdr>
    let pieces: UnsafeMutablePointer<iovec>
    let addresses: UnsafeMutablePointer<sockaddr_ll>

    init(capacity: Int) {
        self.capacity = capacity
        messages = .allocate(capacity: capacity)
        messages.initialize(repeating: ag_mmsghdr(), count: capacity)
        pieces = .allocate(capacity: capacity)
        pieces.initialize(repeating: iovec(), count: capacity)
        addresses = .allocate(capacity: capacity)
        addresses.initialize(repeating: sockaddr_ll(), count: capacity)
    }

    deinit {
        messages.deallocate(); pieces.deallocate(); addresses.deallocate()
    }

    /// Points message `k` at `bytes` (and at its address slot when receiving).
    func set(_ k: Int, _ bytes: UnsafeMutableRawBufferPointer, receiving: Bool) {
        pieces[k] = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
        var h = msghdr()
        h.msg_iov = pieces + k
        h.msg_iovlen = 1
        if receiving {
            h.msg_name = UnsafeMutableRawPointer(addresses + k)
            h.msg_namelen = socklen_t(MemoryLayout<sockaddr_ll>.size)
        }
        messages[k] = ag_mmsghdr(msg_hdr: h, msg_len: 0)
    }

    func length(_ k: Int) -> Int { Int(messages[k].msg_len) }
    func packetType(_ k: Int) -> Int32 { Int32(addresses[k].sll_pkttype) }
}

extension PacketPort {
    /// Reads a batch of frames with one system call.
    public func receive(into batch: UnsafeMutableBufferPointer<PacketHandle>, pool: PacketPool) -> PortRead {
        let m = messages
        let want = min(batch.count, m.capacity)
        var have = 0
        while have < want, let p = pool.allocate() {
            batch[have] = p
            m.set(have, pool.buffer(p).tail(from: Int(p.offset)).slice(0, pool.dataCapacity), receiving: true)
            have += 1
        }
        guard have > 0 else {
            // No buffer: take frames off the socket anyway, so its queue moves, and count them.
            return readFrames(into: batch, pool: pool)
        }
        let r = Sys.recvmmsg(fd, m.messages, have)
        if r.count <= 0 {
            for k in 0..<have { pool.free(batch[k]) }
            if r.count == 0 || r.errno == EAGAIN || r.errno == EWOULDBLOCK || r.errno == EINTR { return .frames(0) }
            counters.rxErrors += 1
            return .lost(SystemError("recvmmsg", name, errno: r.errno))
        }
        var n = 0
        for k in 0..<have {
            var p = batch[k]
            guard k < r.count, filtersOutgoing || m.packetType(k) != ag_PACKET_OUTGOING else {
                pool.free(p)
                continue
            }
            p.length = UInt32(m.length(k))
            batch[n] = p
            n += 1
            counters.rxFrames += 1
            counters.rxBytes += UInt64(p.length)
        }
        return .frames(n)
    }

    /// Sends a batch with `sendmmsg`; what the socket would not take yet waits in the queue.
    public func send(_ packets: UnsafeBufferPointer<PacketHandle>, pool: PacketPool) -> SystemError? {
        guard queue.isEmpty else { return sendOneByOne(packets, pool: pool) }
        let m = messages
        var at = 0
        while at < packets.count {
            let count = min(packets.count - at, m.capacity)
            for k in 0..<count { m.set(k, pool.bytes(packets[at + k]), receiving: false) }
            let r = Sys.sendmmsg(fd, m.messages, count)
            let sent = max(0, r.count)
            for k in 0..<sent {
                counters.txFrames += 1
                counters.txBytes += UInt64(packets[at + k].length)
                pool.free(packets[at + k])
            }
            at += sent
            if sent < count {
                // The first one not sent failed: its error decides for the rest.
                return sendOneByOne(UnsafeBufferPointer(rebasing: packets[at...]), pool: pool)
            }
        }
        return nil
    }
}
