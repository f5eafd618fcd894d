public import AnygateStack
import AnygateWire
import CAnygateHost
#if canImport(Glibc)
import Glibc
#endif

/// Batched I/O for packet sockets: one `recvmmsg` reads a batch of frames
/// straight into pool buffers, one `sendmmsg` writes a batch. With
/// virtio-net headers (`PACKET_VNET_HDR`) each frame has its 10-byte header
/// in a slot of its own, and each read may spill into a super-frame buffer
/// held in reserve for that message. Everything is allocated once per port.
final class MessageBatch {
    let capacity: Int
    let messages: UnsafeMutablePointer<ag_mmsghdr>
    /// Three pieces per message: header, frame buffer, spill.
    let pieces: UnsafeMutablePointer<iovec>
    let addresses: UnsafeMutablePointer<sockaddr_ll>
    /// One 16-byte slot per message for its virtio-net header.
    let headers: UnsafeMutableRawPointer
    /// Room per message for a PACKET_AUXDATA control message (ports without offloads).
    let controls: UnsafeMutableRawPointer
    /// Super-frame buffers kept ready, one per message slot (vnet reads).
    var reserves: [PacketHandle?]

    init(capacity: Int) {
        self.capacity = capacity
        messages = .allocate(capacity: capacity)
        messages.initialize(repeating: ag_mmsghdr(), count: capacity)
        pieces = .allocate(capacity: 3 * capacity)
        pieces.initialize(repeating: iovec(), count: 3 * capacity)
        addresses = .allocate(capacity: capacity)
        addresses.initialize(repeating: sockaddr_ll(), count: capacity)
        headers = .allocate(byteCount: 16 * capacity, alignment: 16)
        controls = .allocate(byteCount: Int(ag_auxdata_space) * capacity, alignment: 16)
        reserves = Array(repeating: nil, count: capacity)
    }

    deinit {
        messages.deallocate(); pieces.deallocate(); addresses.deallocate(); headers.deallocate(); controls.deallocate()
    }

    func header(_ k: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: headers + 16 * k, count: VirtioNetHeader.shortLength)
    }

    /// Points message `k` at its pieces: the header slot (when `vnet`), the
    /// frame bytes, and a spill area; its address slot when receiving.
    func set(_ k: Int, vnet: Bool, _ bytes: UnsafeMutableRawBufferPointer, spill: UnsafeMutableRawBufferPointer? = nil,
             receiving: Bool) {
        let p = pieces + 3 * k
        var n = 0
        if vnet { p[n] = iovec(iov_base: headers + 16 * k, iov_len: VirtioNetHeader.shortLength); n += 1 }
        p[n] = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count); n += 1
        if let spill { p[n] = iovec(iov_base: spill.baseAddress, iov_len: spill.count); n += 1 }
        var h = msghdr()
        h.msg_iov = p
        h.msg_iovlen = n
        if receiving {
            h.msg_name = UnsafeMutableRawPointer(addresses + k)
            h.msg_namelen = socklen_t(MemoryLayout<sockaddr_ll>.size)
            if !vnet {
                h.msg_control = controls + Int(ag_auxdata_space) * k
                h.msg_controllen = Int(ag_auxdata_space)
            }
        }
        messages[k] = ag_mmsghdr(msg_hdr: h, msg_len: 0)
    }

    func length(_ k: Int) -> Int { Int(messages[k].msg_len) }
    /// The frame did not fit the buffers it was read into (the kernel cut it).
    func truncated(_ k: Int) -> Bool { messages[k].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 }
    func packetType(_ k: Int) -> Int32 { Int32(addresses[k].sll_pkttype) }
    /// The kernel left the frame's transport checksum to be filled in.
    func checksumNotReady(_ k: Int) -> Bool {
        withUnsafePointer(to: &messages[k].msg_hdr) { ag_checksum_not_ready($0) != 0 }
    }

    func releaseReserves(pool: PacketPool) {
        for k in reserves.indices { if let r = reserves[k] { pool.free(r) }; reserves[k] = nil }
    }
}

extension PacketPort {
    /// How many frames one read takes with virtio-net headers: each needs a
    /// super-frame buffer in reserve.
    static let vnetBatch = 64

    /// Reads a batch of frames with one system call.
    public func receive(into batch: UnsafeMutableBufferPointer<PacketHandle>, pool: PacketPool) -> PortRead {
        let m = messages
        let want = min(batch.count, offloads ? PacketPort.vnetBatch : m.capacity)
        let small = pool.dataCapacity
        var have = 0
        while have < want {
            if offloads && m.reserves[have] == nil { m.reserves[have] = pool.allocateSuperFrame() }
            guard !offloads || m.reserves[have] != nil, let p = pool.allocate() else { break }
            batch[have] = p
            let spill = m.reserves[have].map { pool.buffer($0).tail(from: pool.headroom + small) }
            m.set(have, vnet: offloads, pool.buffer(p).tail(from: Int(p.offset)).slice(0, small), spill: spill, receiving: true)
            have += 1
        }
        guard have > 0 else {
            if offloads { return .frames(0) }  // never read a super-frame without room for it
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
            guard !m.truncated(k) else {
                // A frame larger than our buffers (a super-frame from a peer with
                // offloads, on a port without them): never passed on cut short.
                counters.rxTruncated += 1
                pool.free(p)
                continue
            }
            var length = m.length(k)
            if offloads {
                length -= VirtioNetHeader.shortLength
                guard length > 0 else { pool.free(p); counters.rxBadOffload += 1; continue }
                if length > small, let big = m.reserves[k] {
                    // A super-frame: its first part joins the rest in the reserve buffer.
                    let first = pool.buffer(p).tail(from: Int(p.offset)).slice(0, small)
                    pool.buffer(big).tail(from: pool.headroom).slice(0, small).copyMemory(from: UnsafeRawBufferPointer(first))
                    pool.free(p)
                    p = big
                    m.reserves[k] = nil
                }
            }
            p.length = UInt32(length)
            if !offloads && m.checksumNotReady(k) {
                // Without virtio-net headers the auxiliary data says it: a frame the host
                // sent with its checksum left partial (completed where it leaves).
                if VirtioNetHeader.network(of: pool.bytes(p)).flatMap({ Segmentation.layout(pool.bytes(p), network: $0) }) != nil {
                    p.offload = PacketHandle.checksumPartial
                }
            }
            if offloads {
                let h = VirtioNetHeader(parsing: UnsafeRawBufferPointer(m.header(k)))
                guard acceptOffloads(h, &p, pool: pool) else { continue }
            }
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
            for k in 0..<count {
                let p = packets[at + k]
                if offloads { writeHeader(p, into: m.header(k), pool: pool) }
                m.set(k, vnet: offloads, pool.bytes(p), receiving: false)
            }
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

    /// The virtio-net header for a frame the stack sends (its offloads, or none).
    func writeHeader(_ p: PacketHandle, into slot: UnsafeMutableRawBufferPointer, pool: PacketPool) {
        let h = VirtioNetHeader.sending(pool.bytes(p), segmentSize: p.segmentSize,
                                        partial: p.offload & PacketHandle.checksumPartial != 0) ?? VirtioNetHeader()
        h.emit(into: slot)
    }
}
