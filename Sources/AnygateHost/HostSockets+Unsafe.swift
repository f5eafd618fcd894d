public import AnygateStack
import AnygateWire
import CAnygateHost
#if canImport(Glibc)
import Glibc
#endif

/// A host socket's batched and segmented I/O: the raw-pointer side of
/// `HostSocket` (message headers, the 64 KiB scratch buffer).
extension HostSocket {
    /// Sends what waits: runs of equal-sized datagrams (the last of a run
    /// may be shorter) as one `UDP_SEGMENT` send each, copied together;
    /// single ones as they are. Returns the errno of a refusal, if any.
    func flushPending(pool: PacketPool) -> Int32? {
        if raw { return flushBatched(pool: pool) }
        var error: Int32? = nil
        var i = 0
        let to = peer
        while i < pending.count {
            let size = Int(pending[i].length)
            var j = i + 1, total = size
            while j < pending.count, j - i < 64, Int(pending[j].length) <= size, total + Int(pending[j].length) <= HostSocket.maxSegmentedBytes {
                total += Int(pending[j].length)
                j += 1
                if Int(pending[j - 1].length) < size { break }
            }
            let r: Int
            if j - i == 1 {
                r = Sys.sendto(fd, pool.bytes(pending[i]), to: to).count == size ? 1 : 0
            } else {
                var at = 0
                for k in i..<j {
                    let b = pool.bytes(pending[k])
                    scratch.slice(at, b.count).copyMemory(from: UnsafeRawBufferPointer(b))
                    at += b.count
                }
                r = Sys.sendSegmented(fd, scratch.slice(0, total), to: to, segment: UInt16(size)).count == total ? 1 : 0
            }
            if r == 0 {
                sendFailures += UInt64(j - i)
                error = errno
            }
            for k in i..<j { pool.free(pending[k]) }
            i = j
        }
        pending.removeAll(keepingCapacity: true)
        return error
    }

    /// A raw socket's waiting sends, 64 to a `sendmmsg` (the socket is connected).
    func flushBatched(pool: PacketPool) -> Int32? {
        var error: Int32? = nil
        var at = 0
        while at < pending.count {
            let count = min(64, pending.count - at)
            for k in 0..<count { messages.set(k, vnet: false, pool.bytes(pending[at + k]), receiving: false) }
            let r = Sys.sendmmsg(fd, messages.messages, count)
            let sent = max(0, r.count)
            if sent < count {
                // The first refused one's error stands for the rest of this batch.
                sendFailures += UInt64(count - sent)
                error = r.count < 0 ? r.errno : EAGAIN
            }
            at += count
        }
        for p in pending { pool.free(p) }
        pending.removeAll(keepingCapacity: true)
        return error
    }

    /// A raw socket's datagrams, up to a batch with one `recvmmsg`; the IP
    /// header is removed (the socket is connected: only the peer's arrive).
    func receiveBatched(into batch: UnsafeMutableBufferPointer<PacketHandle>, pool: PacketPool) -> (count: Int, port: UInt16) {
        let m = messages
        let want = min(batch.count, m.capacity)
        var have = 0
        while have < want, let p = pool.allocate() {
            batch[have] = p
            m.set(have, vnet: false, pool.buffer(p).tail(from: Int(p.offset)).slice(0, pool.dataCapacity), receiving: true)
            have += 1
        }
        guard have > 0 else { return (0, 0) }
        let r = Sys.recvmmsg(fd, m.messages, have)
        var n = 0
        for k in 0..<have {
            var p = batch[k]
            guard k < max(0, r.count) else { pool.free(p); continue }
            withUnsafePointer(to: &m.messages[k].msg_hdr) { _ = ag_rxq_overflow($0, &kernelDrops) }
            let length = m.length(k)
            // IPv4 raw sockets hand over the IP header; IPv6 ones never do.
            let hl = remote.isIPv6 ? 0 : length >= 20 ? Int(pool.buffer(p).tail(from: Int(p.offset)).be8(0) & 0x0F) * 4 : -1
            guard hl >= 0, hl <= length else { pool.free(p); continue }
            p.length = UInt32(length)
            pool.consume(&p, hl)
            batch[n] = p
            n += 1
            received += 1
        }
        return (n, 0)
    }

    /// Reads datagrams into pool buffers: payloads (a raw socket's IP header removed).
    func receive(into batch: UnsafeMutableBufferPointer<PacketHandle>, pool: PacketPool) -> (count: Int, port: UInt16) {
        if segments { return receiveCoalesced(into: batch, pool: pool) }
        if raw { return receiveBatched(into: batch, pool: pool) }
        var n = 0
        var port: UInt16 = 0
        while n < batch.count {
            guard var p = pool.allocate() else { break }
            var from = sockaddr_storage()
            let r = ag_recv_counting_drops(fd, pool.buffer(p).baseAddress! + Int(p.offset), pool.dataCapacity, &from, &kernelDrops)
            guard r > 0 else { pool.free(p); break }
            p.length = UInt32(r)
            let sender = KernelAddress.decode(from)
            if sender?.address != remote {
                foreign += 1
                pool.free(p)
                continue
            }
            if raw && !remote.isIPv6 {
                let hl = Int(pool.bytes(p).be8(0) & 0x0F) * 4
                guard hl >= 20, hl <= r else { pool.free(p); continue }
                pool.consume(&p, hl)
            }
            port = sender?.port ?? 0
            batch[n] = p
            n += 1
            received += 1
        }
        return (n, port)
    }

    /// UDP with GRO: one read may hold several datagrams of one size; each
    /// becomes a packet of its own.
    func receiveCoalesced(into batch: UnsafeMutableBufferPointer<PacketHandle>, pool: PacketPool) -> (count: Int, port: UInt16) {
        var n = 0
        var port: UInt16 = 0
        // The kernel coalesces at most 64 datagrams into one read: read while that many fit.
        while batch.count - n >= 64 {
            var from = sockaddr_storage()
            var segment: Int32 = 0
            let r = ag_recv_gro(fd, scratch.baseAddress!, scratch.count, &from, &kernelDrops, &segment)
            guard r > 0 else { break }
            guard let sender = KernelAddress.decode(from), sender.address == remote else { foreign += 1; continue }
            port = sender.port
            let size = segment > 0 ? Int(segment) : r
            var at = 0
            while at < r {
                let length = min(size, r - at)
                guard n < batch.count, length <= pool.dataCapacity, var p = pool.allocate() else {
                    receiveLost += UInt64((r - at + size - 1) / size)
                    return (n, port)
                }
                pool.setLength(&p, length)
                pool.bytes(p).copyMemory(from: UnsafeRawBufferPointer(scratch.slice(at, length)))
                batch[n] = p
                n += 1
                received += 1
                at += length
            }
        }
        return (n, port)
    }
}

/// An address of either family as the kernel takes it: a `sockaddr_in` or
/// `sockaddr_in6` inside a `sockaddr_storage`, with its length.
struct KernelAddress {
    var storage = sockaddr_storage()
    var length: socklen_t = 0

    init(_ address: IPAddress, port: UInt16) {
        switch address {
        case .v4(let a):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = a.rawValue.bigEndian
            withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: UnsafeRawBufferPointer(start: &sin, count: MemoryLayout<sockaddr_in>.size)) }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        case .v6(let a):
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { a.write(to: $0, at: 0) }
            withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: UnsafeRawBufferPointer(start: &sin6, count: MemoryLayout<sockaddr_in6>.size)) }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        }
    }

    /// The address and port a received datagram came from, or nil for another family.
    static func decode(_ storage: sockaddr_storage) -> (address: IPAddress, port: UInt16)? {
        var s = storage
        return withUnsafeMutableBytes(of: &s) { b in
            switch Int32(storage.ss_family) {
            case AF_INET:
                let sin = b.load(as: sockaddr_in.self)
                return (.v4(IPv4Address(rawValue: UInt32(bigEndian: sin.sin_addr.s_addr))), UInt16(bigEndian: sin.sin_port))
            case AF_INET6:
                let sin6 = b.load(as: sockaddr_in6.self)
                var addr = sin6.sin6_addr
                let a = withUnsafeMutableBytes(of: &addr) { IPv6Address(bytes: $0, at: 0) }
                return (.v6(a), UInt16(bigEndian: sin6.sin6_port))
            default:
                return nil
            }
        }
    }
}
