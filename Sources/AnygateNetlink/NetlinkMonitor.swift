import AnygateWire
import CNetlink
#if canImport(Glibc)
import Glibc
#endif

/// Why the netlink monitor failed.
public struct NetlinkError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var code: Int32
    public var description: String { "\(operation): \(String(cString: nl_geterror(code))) (libnl \(code))" }
}

/// Follows the host's links, IPv4 and IPv6 addresses, routes and neighbours on the
/// caller's event loop (no thread of its own). Links, addresses and
/// neighbours come through a libnl cache manager; IPv4 routes through a
/// socket of their own whose messages libnl parses one by one, without a
/// route cache (a full table is a million routes: libnl's cache would hold
/// hundreds of MB and slow down as it grows). Each readable wake-up yields
/// typed events; a lost message (ENOBUFS) or libnl error asks for a
/// resync: `refill()` then a fresh `snapshot()`.
public final class NetlinkMonitor {
    private var manager: OpaquePointer?
    private var syncSocket: OpaquePointer?
    private var routeSocket: OpaquePointer?
    private let sink: UnsafeMutablePointer<ag_route_sink>
    private var caches: [OpaquePointer] = []
    private var pending: [NetlinkEvent] = []
    /// Routes from the last dump, until `snapshot()` hands them over.
    private var dumped: [NetlinkEvent] = []
    private var dumping = false
    /// Changes processed since start.
    public private(set) var eventsProcessed: UInt64 = 0
    /// Route message batches read per wake-up before the loop gets a turn.
    static let batchesPerWakeup = 64

    /// What a wake-up found.
    public enum Update {
        case events([NetlinkEvent])
        /// Messages were lost or libnl failed: resync (the caller refills and diffs).
        case resync(String)
    }

    public init(receiveBuffer: Int32? = nil) throws(NetlinkError) {
        sink = .allocate(capacity: 1)
        sink.initialize(to: ag_route_sink(fn: { obj, removed, ctx in
            guard let obj, let ctx else { return }
            Unmanaged<NetlinkMonitor>.fromOpaque(ctx).takeUnretainedValue().routeMessage(obj, removed: removed != 0)
        }, ctx: nil, removed: 0))
        sink.pointee.ctx = Unmanaged.passUnretained(self).toOpaque()
        var m: OpaquePointer? = nil
        var r = nl_cache_mngr_alloc(nil, Int32(NETLINK_ROUTE), Int32(ag_NL_AUTO_PROVIDE), &m)
        guard r == 0, let mgr = m else { throw NetlinkError(operation: "nl_cache_mngr_alloc", code: r) }
        manager = mgr
        syncSocket = nl_socket_alloc()
        guard let sync = syncSocket else { throw NetlinkError(operation: "nl_socket_alloc", code: -Int32(ag_NLE_NOMEM)) }
        r = nl_connect(sync, Int32(NETLINK_ROUTE))
        guard r == 0 else { throw NetlinkError(operation: "nl_connect", code: r) }
        let ctx = Unmanaged.passUnretained(self)
        for name in ["route/link", "route/addr", "route/neigh"] {
            var c: OpaquePointer? = nil
            r = nl_cache_alloc_name(name, &c)
            guard r == 0, let cache = c else { throw NetlinkError(operation: "nl_cache_alloc_name \(name)", code: r) }
            r = nl_cache_mngr_add_cache_v2(mgr, cache, { _, old, new, _, action, data in
                guard let data else { return }
                Unmanaged<NetlinkMonitor>.fromOpaque(data).takeUnretainedValue().changed(old: old, new: new, action: action)
            }, ctx.toOpaque())
            guard r == 0 else { throw NetlinkError(operation: "nl_cache_mngr_add_cache_v2 \(name)", code: r) }
            caches.append(cache)
        }
        routeSocket = nl_socket_alloc()
        guard let rs = routeSocket else { throw NetlinkError(operation: "nl_socket_alloc", code: -Int32(ag_NLE_NOMEM)) }
        r = ag_route_listen(rs, sink)
        guard r == 0 else { throw NetlinkError(operation: "route socket", code: r) }
        for d in fds {
            if let size = receiveBuffer {
                _ = setsockopt(d, SOL_SOCKET, SO_RCVBUF, [size], socklen_t(MemoryLayout<Int32>.size))
            } else {
                // Route bursts from a routing daemon are large: ask for room.
                var size: Int32 = 8 << 20
                if setsockopt(d, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
                    _ = setsockopt(d, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
                }
            }
        }
        pending.removeAll()  // the initial fill is read through snapshot()
        try dumpRoutes()
    }

    deinit {
        if let m = manager { nl_cache_mngr_free(m) }
        if let s = syncSocket { nl_socket_free(s) }
        if let s = routeSocket { nl_socket_free(s) }
        sink.deallocate()
    }

    /// The descriptors to watch for readability.
    public var fds: [Int32] {
        [manager.map { nl_cache_mngr_get_fd($0) } ?? -1, routeSocket.map { nl_socket_get_fd($0) } ?? -1].filter { $0 >= 0 }
    }

    /// Reads what netlink has and returns the changes, or asks for a resync.
    /// Route messages are read a bounded number of batches at a time; the
    /// rest waits for the next wake-up (the descriptor stays readable).
    public func receive() -> Update {
        guard let m = manager, let rs = routeSocket else { return .resync("no netlink sockets") }
        pending.removeAll(keepingCapacity: true)
        var r = nl_cache_mngr_data_ready(m)
        if r >= 0 {
            for _ in 0..<NetlinkMonitor.batchesPerWakeup {
                r = ag_route_read(rs)
                if r <= 0 { break }
            }
        }
        if r < 0 {
            // libnl reports the kernel's ENOBUFS as "out of memory".
            if r == -Int32(ag_NLE_NOMEM) { return .resync("netlink messages lost (receive buffer overflowed)") }
            return .resync(String(cString: nl_geterror(r)))
        }
        eventsProcessed &+= UInt64(pending.count)
        return .events(pending)
    }

    /// Dumps every cache and the route table afresh from the kernel.
    /// Whatever still sits in the event sockets is thrown away first: after
    /// a lost message those events are older than the dump, and replaying
    /// them on top of it would bring back a route whose deletion was the
    /// message lost.
    public func refill() throws(NetlinkError) {
        guard let s = syncSocket else { return }
        for d in fds { drain(d) }
        for c in caches {
            let r = nl_cache_refill(s, c)
            if r < 0 { throw NetlinkError(operation: "nl_cache_refill", code: r) }
        }
        try dumpRoutes()
    }

    private func dumpRoutes() throws(NetlinkError) {
        guard let s = syncSocket else { return }
        var r: Int32 = 0
        // A dump interrupted by a change is started again.
        for _ in 0..<5 {
            dumped.removeAll(keepingCapacity: true)
            dumping = true
            r = ag_route_dump(s, sink)
            dumping = false
            if r != -Int32(ag_NLE_DUMP_INTR) { break }
        }
        if r < 0 { throw NetlinkError(operation: "route dump", code: r) }
    }

    private func drain(_ d: Int32) {
        var scratch = [UInt8](repeating: 0, count: 65536)
        // Bounded: a host changing faster than this is read is resynced again.
        for _ in 0..<100_000 {
            let n = scratch.withUnsafeMutableBytes { recv(d, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n < 0 && errno == ENOBUFS { continue }
            if n <= 0 { break }
        }
    }

    /// Every object now, as events: links first, then addresses and
    /// neighbours from the caches, then the routes of the last dump.
    public func snapshot() -> [NetlinkEvent] {
        var out: [NetlinkEvent] = []
        for c in caches {
            var o = nl_cache_get_first(c)
            while let obj = o {
                if let e = NetlinkMonitor.translate(obj, removed: false) { out.append(e) }
                o = nl_cache_get_next(obj)
            }
        }
        out.append(contentsOf: dumped)
        dumped = []
        return out
    }

    private func routeMessage(_ obj: OpaquePointer, removed: Bool) {
        guard let e = NetlinkMonitor.translate(obj, removed: removed) else { return }
        if dumping { dumped.append(e) } else { pending.append(e) }
    }

    private func changed(old: OpaquePointer?, new: OpaquePointer?, action: Int32) {
        switch action {
        case Int32(ag_NL_ACT_DEL):
            if let o = old ?? new, let e = NetlinkMonitor.translate(o, removed: true) { pending.append(e) }
        case Int32(ag_NL_ACT_CHANGE):
            // A changed route or address is the old one gone and the new one come.
            if let o = old, let e = NetlinkMonitor.translate(o, removed: true) {
                if case .linkRemoved = e {} else { pending.append(e) }
            }
            if let n = new, let e = NetlinkMonitor.translate(n, removed: false) { pending.append(e) }
        default:
            if let n = new, let e = NetlinkMonitor.translate(n, removed: false) { pending.append(e) }
        }
    }

    // MARK: Translation (libnl objects stay in here)

    static func ipv4(_ a: OpaquePointer?) -> IPv4Address? {
        guard let a, nl_addr_get_family(a) == AF_INET, nl_addr_get_len(a) == 4, let p = nl_addr_get_binary_addr(a) else { return nil }
        let b = p.assumingMemoryBound(to: UInt8.self)
        return IPv4Address(b[0], b[1], b[2], b[3])
    }

    static func ipv6(_ a: OpaquePointer?) -> IPv6Address? {
        guard let a, nl_addr_get_family(a) == AF_INET6, nl_addr_get_len(a) == 16, let p = nl_addr_get_binary_addr(a) else { return nil }
        let b = p.assumingMemoryBound(to: UInt8.self)
        var high: UInt64 = 0, low: UInt64 = 0
        for i in 0..<8 { high = high << 8 | UInt64(b[i]); low = low << 8 | UInt64(b[8 + i]) }
        return IPv6Address(high: high, low: low)
    }

    /// A unicast route's next hops, of either family.
    static func nextHops<A>(_ obj: OpaquePointer, _ gateway: (OpaquePointer?) -> A?) -> Set<HostNextHopOf<A>> {
        var hops = Set<HostNextHopOf<A>>()
        for i in 0..<rtnl_route_get_nnexthops(obj) {
            guard let nh = rtnl_route_nexthop_n(obj, i) else { continue }
            hops.insert(HostNextHopOf(gateway: gateway(rtnl_route_nh_get_gateway(nh)), interface: Int32(rtnl_route_nh_get_ifindex(nh))))
        }
        return hops
    }

    static func mac(_ a: OpaquePointer?) -> MACAddress? {
        guard let a, nl_addr_get_len(a) == 6, let p = nl_addr_get_binary_addr(a) else { return nil }
        let b = p.assumingMemoryBound(to: UInt8.self)
        return MACAddress(b[0], b[1], b[2], b[3], b[4], b[5])
    }

    static func translate(_ obj: OpaquePointer, removed: Bool) -> NetlinkEvent? {
        let type = String(cString: ag_object_type(obj))
        switch type {
        case "route/link":
            let index = rtnl_link_get_ifindex(obj)
            let name = rtnl_link_get_name(obj).map { String(cString: $0) } ?? "if\(index)"
            if removed { return .linkRemoved(index: index, name: name) }
            let flags = rtnl_link_get_flags(obj)
            return .linkChanged(HostLink(index: index, name: name, mac: mac(rtnl_link_get_addr(obj)),
                                         mtu: Int(rtnl_link_get_mtu(obj)), adminUp: flags & ag_IFF_UP != 0,
                                         operUp: flags & (ag_IFF_LOWER_UP | ag_IFF_RUNNING) != 0))
        case "route/addr" where rtnl_addr_get_family(obj) == AF_INET6:
            guard let a = ipv6(rtnl_addr_get_local(obj)) else { return nil }
            let len = Int(rtnl_addr_get_prefixlen(obj))
            guard len >= 0, len <= 128 else { return nil }
            let address = IPv6InterfaceAddress(address: a, prefixLength: len)
            let index = Int32(rtnl_addr_get_ifindex(obj))
            // The host's own DAD decides: an address it is still checking, or
            // found duplicated, is not the stack's to use (it comes with the change that ends the check).
            let unusable = UInt32(rtnl_addr_get_flags(obj)) & (ag_IFA_F_TENTATIVE | ag_IFA_F_DADFAILED) != 0
            return removed || unusable ? .address6Removed(index: index, address: address) : .address6Added(index: index, address: address)
        case "route/addr":
            guard rtnl_addr_get_family(obj) == AF_INET, let a = ipv4(rtnl_addr_get_local(obj)) else { return nil }
            let len = Int(rtnl_addr_get_prefixlen(obj))
            guard len >= 0, len <= 32 else { return nil }
            let address = IPv4InterfaceAddress(address: a, prefixLength: len)
            let index = Int32(rtnl_addr_get_ifindex(obj))
            return removed ? .addressRemoved(index: index, address: address) : .addressAdded(index: index, address: address)
        case "route/route" where rtnl_route_get_family(obj) == UInt8(AF_INET6):
            guard rtnl_route_get_type(obj) == 1 /* RTN_UNICAST */ else { return nil }
            let dst = rtnl_route_get_dst(obj)
            let len = dst.map { Int(nl_addr_get_prefixlen($0)) } ?? 0
            guard len >= 0, len <= 128 else { return nil }
            let route = HostRoute6(table: rtnl_route_get_table(obj), prefix: IPv6Prefix(address: ipv6(dst) ?? .any, length: len),
                                   nextHops: nextHops(obj, ipv6), metric: rtnl_route_get_priority(obj), proto: rtnl_route_get_protocol(obj))
            return removed ? .route6Removed(route) : .route6Added(route)
        case "route/route":
            guard rtnl_route_get_family(obj) == UInt8(AF_INET), rtnl_route_get_type(obj) == 1 /* RTN_UNICAST */ else { return nil }
            let dst = rtnl_route_get_dst(obj)
            let len = dst.map { Int(nl_addr_get_prefixlen($0)) } ?? 0
            let base = ipv4(dst) ?? .any
            guard len >= 0, len <= 32 else { return nil }
            let route = HostRoute(table: rtnl_route_get_table(obj), prefix: IPv4Prefix(address: base, length: len),
                                  nextHops: nextHops(obj, ipv4), metric: rtnl_route_get_priority(obj), proto: rtnl_route_get_protocol(obj))
            return removed ? .routeRemoved(route) : .routeAdded(route)
        case "route/neigh" where rtnl_neigh_get_family(obj) == AF_INET6:
            guard let a = ipv6(rtnl_neigh_get_dst(obj)), !a.isMulticast else { return nil }
            let index = Int32(rtnl_neigh_get_ifindex(obj))
            if removed { return .neighbor6Removed(index: index, address: a) }
            let state = rtnl_neigh_get_state(obj)
            let usable = state & (Int32(ag_NUD_INCOMPLETE) | Int32(ag_NUD_FAILED)) == 0
            return .neighbor6Changed(index: index, address: a, mac: usable ? mac(rtnl_neigh_get_lladdr(obj)) : nil)
        case "route/neigh":
            guard rtnl_neigh_get_family(obj) == AF_INET, let a = ipv4(rtnl_neigh_get_dst(obj)) else { return nil }
            let index = Int32(rtnl_neigh_get_ifindex(obj))
            if removed { return .neighborRemoved(index: index, address: a) }
            let state = rtnl_neigh_get_state(obj)
            let usable = state & (Int32(ag_NUD_INCOMPLETE) | Int32(ag_NUD_FAILED)) == 0
            return .neighborChanged(index: index, address: a, mac: usable ? mac(rtnl_neigh_get_lladdr(obj)) : nil)
        default:
            return nil
        }
    }
}
