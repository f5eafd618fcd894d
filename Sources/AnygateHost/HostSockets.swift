public import AnygateStack
import AnygateWire
import CAnygateHost
#if canImport(Glibc)
import Glibc
#endif

/// The `host` socket backend: a stack socket carried by a socket of the
/// host kernel (rump's sockin role). A raw IPPROTO_GRE socket is bound to
/// the local address and connected to the remote, so the kernel gives it
/// only that peer's GRE and, because a raw socket takes the packets, does
/// not answer them with protocol unreachable. A UDP socket is bound to the
/// local port and not connected, so peers may send from any source port
/// (GRE-in-UDP varies it per flow); datagrams from others are dropped.
final class HostSocket {
    let fd: Int32
    let raw: Bool
    let remote: IPv4Address
    let remotePort: UInt16
    var received: UInt64 = 0
    var foreign: UInt64 = 0
    /// Datagrams the kernel dropped because the receive queue was full, as
    /// the kernel last reported it (cumulative, SO_RXQ_OVFL).
    var kernelDrops: UInt32 = 0
    /// UDP GSO/GRO: sends wait here until the stack is done with its batch,
    /// then go as few `UDP_SEGMENT` sends as their sizes allow; receives may
    /// hold several datagrams the kernel coalesced (`UDP_GRO`).
    let segments: Bool
    var pending: [PacketHandle] = []
    /// Datagrams the host refused after the stack handed them over.
    var sendFailures: UInt64 = 0
    /// Datagrams of a coalesced read no pool buffer was free for.
    var receiveLost: UInt64 = 0
    /// A 64 KiB buffer for coalesced receives and segmented sends.
    let scratch: UnsafeMutableRawBufferPointer
    /// Message headers for batched reads and writes on a raw (GRE) socket.
    let messages = MessageBatch(capacity: 64)

    init(fd: Int32, raw: Bool, remote: IPv4Address, remotePort: UInt16, segments: Bool) {
        self.fd = fd; self.raw = raw; self.remote = remote; self.remotePort = remotePort
        self.segments = segments
        scratch = .allocate(byteCount: segments ? 65536 : 0, alignment: 64)
        pending.reserveCapacity(segments ? 256 : 0)
    }

    deinit { scratch.deallocate() }

    /// The most a segmented send carries (a UDP payload's limit).
    static let maxSegmentedBytes = 65507

    static func sockaddr(_ a: IPv4Address, _ port: UInt16) -> sockaddr_in {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = a.rawValue.bigEndian
        return sin
    }

    static func open(protocol proto: SocketProtocol, local: IPv4Address, localPort: UInt16, remote: IPv4Address,
                     remotePort: UInt16, ttl: UInt8, tos: UInt8, dontFragment: Bool) throws(SystemError) -> HostSocket {
        let what = "\(proto) \(local) -> \(remote)"
        let raw: Bool
        let fd: Int32
        var segments = false
        switch proto {
        case .raw(let p):
            raw = true
            fd = try Sys.socket(AF_INET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                                Int32(p.rawValue), what)
        case .udp:
            raw = false
            fd = try Sys.socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                                0, what)
        }
        do {
            try Sys.setsockopt(fd, Int32(IPPROTO_IP), IP_TTL, Int32(ttl), "IP_TTL", what)
            try Sys.setsockopt(fd, Int32(IPPROTO_IP), IP_TOS, Int32(tos), "IP_TOS", what)
            // DF and the kernel's path MTU for the peer: a send larger than
            // it fails with EMSGSIZE, and IP_MTU then says the path MTU.
            try Sys.setsockopt(fd, Int32(IPPROTO_IP), IP_MTU_DISCOVER, Int32(dontFragment ? IP_PMTUDISC_DO : IP_PMTUDISC_DONT),
                               "IP_MTU_DISCOVER", what)
            if !raw { try Sys.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, Int32(1), "SO_REUSEADDR", what) }
            // Each read then says how many datagrams the full queue dropped (SO_RXQ_OVFL).
            try Sys.setsockopt(fd, SOL_SOCKET, ag_SO_RXQ_OVFL, Int32(1), "SO_RXQ_OVFL", what)
            // A tunnel socket takes bursts at line rate while the loop is busy
            // elsewhere: give it room (beyond rmem_max when privileged). For a
            // raw GRE socket this also matters for correctness: Linux passes
            // over a raw socket whose buffer is full, and then answers the
            // packet with protocol unreachable.
            let room = Int32(4 << 20)
            if (try? Sys.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, room, "SO_RCVBUFFORCE", what)) == nil {
                try? Sys.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, room, "SO_RCVBUF", what)
            }
            var l = sockaddr(local, raw ? 0 : localPort)
            let b = withUnsafePointer(to: &l) {
                $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            _ = try Sys.check(b, "bind", what)
            // UDP: datagrams of one peer may arrive coalesced (Linux 5.0+); best effort.
            if !raw { segments = (try? Sys.setsockopt(fd, Int32(IPPROTO_UDP), ag_UDP_GRO, Int32(1), "UDP_GRO", what)) != nil }
            if raw {
                var r = sockaddr(remote, 0)
                let c = withUnsafePointer(to: &r) {
                    $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                _ = try Sys.check(c, "connect", what)
            }
        } catch {
            Sys.close(fd)
            throw error
        }
        return HostSocket(fd: fd, raw: raw, remote: remote, remotePort: remotePort, segments: segments)
    }

    /// Sends a payload; the kernel adds the IP (and UDP) header.
    /// Sends one payload; on failure, the errno.
    func send(_ bytes: UnsafeMutableRawBufferPointer) -> Int32? {
        let n = Sys.sendto(fd, bytes, to: raw ? nil : HostSocket.sockaddr(remote, remotePort))
        return n.count == bytes.count ? nil : n.errno
    }

    /// The kernel's path MTU towards the peer (the socket is connected).
    var pathMTU: Int? { Sys.getsockoptInt(fd, Int32(IPPROTO_IP), IP_MTU).map(Int.init) }

    /// Sends what waits: runs of equal-sized datagrams (the last of a run
    /// may be shorter) as one `UDP_SEGMENT` send each, copied together;
    /// single ones as they are. Returns the errno of a refusal, if any.
    func flushPending(pool: PacketPool) -> Int32? {
        if raw { return flushBatched(pool: pool) }
        var error: Int32? = nil
        var i = 0
        let to = HostSocket.sockaddr(remote, remotePort)
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
    private func flushBatched(pool: PacketPool) -> Int32? {
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
    private func receiveBatched(into batch: UnsafeMutableBufferPointer<PacketHandle>, pool: PacketPool) -> (count: Int, port: UInt16) {
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
            let hl = length >= 20 ? Int(pool.buffer(p).tail(from: Int(p.offset)).be8(0) & 0x0F) * 4 : 0
            guard hl >= 20, hl <= length else { pool.free(p); continue }
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
            var from = sockaddr_in()
            let r = ag_recv_counting_drops(fd, pool.buffer(p).baseAddress! + Int(p.offset), pool.dataCapacity, &from, &kernelDrops)
            guard r > 0 else { pool.free(p); break }
            p.length = UInt32(r)
            if UInt32(bigEndian: from.sin_addr.s_addr) != remote.rawValue {
                foreign += 1
                pool.free(p)
                continue
            }
            if raw {
                let hl = Int(pool.bytes(p).be8(0) & 0x0F) * 4
                guard hl >= 20, hl <= r else { pool.free(p); continue }
                pool.consume(&p, hl)
            }
            port = UInt16(bigEndian: from.sin_port)
            batch[n] = p
            n += 1
            received += 1
        }
        return (n, port)
    }

    /// UDP with GRO: one read may hold several datagrams of one size; each
    /// becomes a packet of its own.
    private func receiveCoalesced(into batch: UnsafeMutableBufferPointer<PacketHandle>, pool: PacketPool) -> (count: Int, port: UInt16) {
        var n = 0
        var port: UInt16 = 0
        // The kernel coalesces at most 64 datagrams into one read: read while that many fit.
        while batch.count - n >= 64 {
            var from = sockaddr_in()
            var segment: Int32 = 0
            let r = ag_recv_gro(fd, scratch.baseAddress!, scratch.count, &from, &kernelDrops, &segment)
            guard r > 0 else { break }
            if UInt32(bigEndian: from.sin_addr.s_addr) != remote.rawValue { foreign += 1; continue }
            port = UInt16(bigEndian: from.sin_port)
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

    func close() { Sys.close(fd) }
}

extension HostRuntime {
    func openHostSocket(_ id: SocketID, protocol proto: SocketProtocol, local: IPv4Address, localPort: UInt16,
                        remote: IPv4Address, remotePort: UInt16, ttl: UInt8, tos: UInt8, dontFragment: Bool) -> String? {
        closeHostSocket(id)
        let s: HostSocket
        do {
            s = try HostSocket.open(protocol: proto, local: local, localPort: localPort, remote: remote, remotePort: remotePort,
                                    ttl: ttl, tos: tos, dontFragment: dontFragment)
        } catch {
            return "host socket: \(error)"
        }
        hostSockets[id] = s
        do {
            try loop.register(s.fd) { [weak self] _ in self?.serveHostSocket(id) }
        } catch {
            s.close()
            hostSockets[id] = nil
            return "host socket: \(error)"
        }
        return nil
    }

    func closeHostSocket(_ id: SocketID) {
        reportedSocketDrops[id] = nil
        reportedSendFailures[id] = nil
        guard let s = hostSockets.removeValue(forKey: id) else { return }
        for p in s.pending { pool.free(p) }
        s.pending.removeAll()
        loop.unregister(s.fd)
        s.close()
    }

    func sendHostSocket(_ id: SocketID, _ payload: PacketHandle) -> Bool {
        guard let s = hostSockets[id] else { return false }
        if s.segments || s.raw {
            // Sent when the stack's batch is done (`flushHostSockets`), together.
            if s.pending.isEmpty { pendingHostSockets.append(id) }
            s.pending.append(payload)
            return true
        }
        guard let error = s.send(pool.bytes(payload)) else {
            pool.free(payload)
            return true
        }
        // Too big for the path the kernel knows (it took the ICMP): tell
        // the stack, which lowers the tunnel MTU. Deferred: the stack is
        // in the middle of sending.
        if error == EMSGSIZE, let mtu = s.pathMTU { pendingPathMTU[id] = mtu }
        return false
    }

    /// Sends what host sockets were given during the last stack entries.
    func flushHostSockets() {
        guard !pendingHostSockets.isEmpty else { return }
        for id in pendingHostSockets {
            guard let s = hostSockets[id] else { continue }
            if let error = s.flushPending(pool: pool), error == EMSGSIZE, let mtu = s.pathMTU { pendingPathMTU[id] = mtu }
        }
        pendingHostSockets.removeAll(keepingCapacity: true)
    }

    private func serveHostSocket(_ id: SocketID) {
        guard let s = hostSockets[id] else { return }
        for _ in 0..<16 {
            let (n, port) = s.receive(into: batch, pool: pool)
            if n > 0 { stack.hostSocketReceived(id, UnsafeBufferPointer(start: batch.baseAddress, count: n), from: .v4(s.remote), port: port) }
            flushHostSockets()
            // A coalesced read fills the batch only by chance: read until nothing is left.
            if n == 0 || (!s.segments && n < batch.count) { return }
        }
    }
}
