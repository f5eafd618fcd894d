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
    /// The peer, IPv4 or IPv6 (the socket's family follows it).
    let remote: IPAddress
    let remotePort: UInt16
    /// `remote` as the kernel takes it, with `remotePort`.
    let peer: KernelAddress
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

    init(fd: Int32, raw: Bool, remote: IPAddress, remotePort: UInt16, segments: Bool) {
        self.fd = fd; self.raw = raw; self.remote = remote; self.remotePort = remotePort
        peer = KernelAddress(remote, port: remotePort)
        self.segments = segments
        scratch = .allocate(byteCount: segments ? 65536 : 0, alignment: 64)
        pending.reserveCapacity(segments ? 256 : 0)
    }

    deinit { scratch.deallocate() }

    /// The most a segmented send carries (a UDP payload's limit).
    static let maxSegmentedBytes = 65507

    /// `replica`: with several workers each replica opens the tunnel's
    /// socket. UDP sockets share the port (SO_REUSEPORT: the kernel spreads
    /// the peers' flows, which GRE-in-UDP varies by inner flow); of the raw
    /// GRE sockets, which would each get a copy of every packet, only the
    /// owner's receives — the followers' only send (a filter that takes nothing).
    static func open(protocol proto: SocketProtocol, local: IPAddress, localPort: UInt16, remote: IPAddress,
                     remotePort: UInt16, ttl: UInt8, tos: UInt8, dontFragment: Bool,
                     replica: StackConfiguration.Replica = .alone) throws(SystemError) -> HostSocket {
        let what = "\(proto) \(local) -> \(remote)"
        let raw: Bool
        let fd: Int32
        var segments = false
        let v6 = remote.isIPv6
        let domain = v6 ? AF_INET6 : AF_INET
        switch proto {
        case .raw(let p):
            raw = true
            fd = try Sys.socket(domain, Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                                Int32(p.rawValue), what)
        case .udp:
            raw = false
            fd = try Sys.socket(domain, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                                0, what)
        }
        do {
            if v6 {
                // IPv6 only (no mapped IPv4 peers), hop limit and traffic class; a
                // refused send (EMSGSIZE) and IPV6_MTU give the path MTU as over IPv4.
                if !raw { try Sys.setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, Int32(1), "IPV6_V6ONLY", what) }
                try Sys.setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_UNICAST_HOPS, Int32(ttl), "IPV6_UNICAST_HOPS", what)
                try Sys.setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_TCLASS, Int32(tos), "IPV6_TCLASS", what)
                try Sys.setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_MTU_DISCOVER,
                                   Int32(dontFragment ? IPV6_PMTUDISC_DO : IPV6_PMTUDISC_DONT), "IPV6_MTU_DISCOVER", what)
            } else {
                try Sys.setsockopt(fd, Int32(IPPROTO_IP), IP_TTL, Int32(ttl), "IP_TTL", what)
                try Sys.setsockopt(fd, Int32(IPPROTO_IP), IP_TOS, Int32(tos), "IP_TOS", what)
                // DF and the kernel's path MTU for the peer: a send larger than
                // it fails with EMSGSIZE, and IP_MTU then says the path MTU.
                try Sys.setsockopt(fd, Int32(IPPROTO_IP), IP_MTU_DISCOVER, Int32(dontFragment ? IP_PMTUDISC_DO : IP_PMTUDISC_DONT),
                                   "IP_MTU_DISCOVER", what)
            }
            if !raw { try Sys.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, Int32(1), "SO_REUSEADDR", what) }
            if !raw && replica != .alone { try Sys.setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, Int32(1), "SO_REUSEPORT", what) }
            if raw && replica == .follower { try Sys.acceptNone(fd, what) }
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
            try Sys.bind(fd, KernelAddress(local, port: raw ? 0 : localPort), connect: false, what)
            // UDP: datagrams of one peer may arrive coalesced (Linux 5.0+); best effort.
            if !raw { segments = (try? Sys.setsockopt(fd, Int32(IPPROTO_UDP), ag_UDP_GRO, Int32(1), "UDP_GRO", what)) != nil }
            if raw { try Sys.bind(fd, KernelAddress(remote, port: 0), connect: true, what) }
        } catch {
            Sys.close(fd)
            throw error
        }
        return HostSocket(fd: fd, raw: raw, remote: remote, remotePort: remotePort, segments: segments)
    }

    /// Sends a payload; the kernel adds the IP (and UDP) header.
    /// Sends one payload; on failure, the errno.
    func send(_ bytes: UnsafeMutableRawBufferPointer) -> Int32? {
        let n = Sys.sendto(fd, bytes, to: raw ? nil : peer)
        return n.count == bytes.count ? nil : n.errno
    }

    /// The kernel's path MTU towards the peer (the socket is connected).
    var pathMTU: Int? {
        (remote.isIPv6 ? Sys.getsockoptInt(fd, Int32(IPPROTO_IPV6), IPV6_MTU) : Sys.getsockoptInt(fd, Int32(IPPROTO_IP), IP_MTU)).map(Int.init)
    }

    func close() { Sys.close(fd) }
}

extension HostRuntime {
    func openHostSocket(_ id: SocketID, protocol proto: SocketProtocol, local: IPAddress, localPort: UInt16,
                        remote: IPAddress, remotePort: UInt16, ttl: UInt8, tos: UInt8, dontFragment: Bool) -> String? {
        closeHostSocket(id)
        // A runtime that carries no traffic (the daemon's configuration
        // stack beside workers) must not take a share of the tunnel's packets.
        guard opensHostSockets else { return nil }
        let s: HostSocket
        do {
            s = try HostSocket.open(protocol: proto, local: local, localPort: localPort, remote: remote, remotePort: remotePort,
                                    ttl: ttl, tos: tos, dontFragment: dontFragment, replica: stack.configuration.replica)
        } catch {
            return "host socket: \(error)"
        }
        hostSockets[id] = s
        do {
            try loop.register(s.fd) { [unowned self] _ in serveHostSocket(id) }
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
            if n > 0 { stack.hostSocketReceived(id, UnsafeBufferPointer(start: batch.baseAddress, count: n), from: s.remote, port: port) }
            flushHostSockets()
            handOffs?.publish()
            // A coalesced read fills the batch only by chance: read until nothing is left.
            if n == 0 || (!s.segments && n < batch.count) { return }
        }
    }
}
