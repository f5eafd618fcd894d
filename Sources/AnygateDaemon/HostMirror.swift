import AnygateHost
public import AnygateNetlink
public import AnygateStack
import AnygateWire
public import Foundation
import Logging

/// Applies host changes (netlink events) to the stack: mirrored interfaces
/// follow their host interface's MAC, MTU, state, addresses and neighbours
/// (IPv4 and IPv6); selected host routes of both families become the
/// stack's (origin `mirror`). Works on
/// events alone, so tests drive it without netlink.
///
/// The daemon writes to the host's netlink only for its host twins, whose
/// events the mirror hands to the daemon (`twinEvent`) instead of
/// applying them: no echo of the daemon's own changes reaches the stack.
public final class HostMirror {
    /// Stack interface of each mirrored host interface, by host name.
    let mirrored: [String: InterfaceIndex]
    let routes: MirrorRoutesConfig?
    /// Host interface index -> name, as far as netlink has told us.
    private(set) var hostNames: [Int32: String] = [:]
    /// Host routes imported, by their identity in the host table; the value
    /// is a compact fingerprint (a million routes are held here too).
    private(set) var imported: [HostRouteKey: ImportedRoute] = [:]
    private(set) var imported6: [HostRouteKey6: ImportedRoute] = [:]
    public private(set) var eventsApplied: UInt64 = 0
    public private(set) var resyncs: UInt64 = 0
    public private(set) var lastResync: (date: Date, reason: String)? = nil
    /// Host routes that could not be installed (no mirrored interface for a next hop, ...).
    public private(set) var skippedRoutes: UInt64 = 0
    var log: (String) -> Void = { _ in }
    /// Host twins by host name: the stack interface each pairs with.
    /// Routes through a twin become routes through its stack interface;
    /// the twin's own link and addresses are the daemon's to keep (`twinEvent`).
    public var twins: [String: InterfaceIndex] = [:]
    /// Told of every link and address event of a twin.
    public var twinEvent: (String, NetlinkEvent) -> Void = { _, _ in }

    public init(mirrored: [String: InterfaceIndex], routes: MirrorRoutesConfig?) {
        self.mirrored = mirrored
        self.routes = routes
    }

    /// Stack interface for a host interface index, when it is mirrored.
    func stackInterface(_ hostIndex: Int32) -> InterfaceIndex? {
        hostNames[hostIndex].flatMap { mirrored[$0] }
    }

    /// Stack interface a route's next hop leaves by: a mirrored interface's or a twin's.
    func routeInterface(_ hostIndex: Int32) -> InterfaceIndex? {
        hostNames[hostIndex].flatMap { mirrored[$0] ?? twins[$0] }
    }

    /// The twin a link or address event is about, if any.
    private func twinName(_ e: NetlinkEvent) -> String? {
        switch e {
        case .linkChanged(let l): twins[l.name] != nil ? l.name : nil
        case .linkRemoved(_, let name): twins[name] != nil ? name : nil
        case .addressAdded(let i, _), .addressRemoved(let i, _), .address6Added(let i, _), .address6Removed(let i, _):
            hostNames[i].flatMap { twins[$0] != nil ? $0 : nil }
        default: nil
        }
    }

    /// Whether netlink currently shows a host interface of that name.
    public func isPresent(_ host: String) -> Bool { hostNames.values.contains(host) }

    /// Imported routes per "table/protocol".
    public var importedCounts: [String: Int] {
        struct Group: Hashable { var table: UInt32; var proto: UInt8 }
        var counts: [Group: Int] = [:]
        for (k, r) in imported { counts[Group(table: k.table, proto: r.proto), default: 0] += 1 }
        for (k, r) in imported6 { counts[Group(table: k.table, proto: r.proto), default: 0] += 1 }
        var out: [String: Int] = [:]
        for (g, n) in counts { out["\(g.table)/\(RouteProtocols.name(g.proto))"] = n }
        return out
    }

    public func apply(_ events: [NetlinkEvent], to stack: Stack) {
        for e in events { apply(e, to: stack) }
    }

    public func apply(_ e: NetlinkEvent, to stack: Stack) {
        eventsApplied &+= 1
        if !twins.isEmpty, let twin = twinName(e) {
            if case .linkChanged(let l) = e { hostNames[l.index] = l.name }
            if case .linkRemoved(let index, _) = e { hostNames[index] = nil }
            return twinEvent(twin, e)
        }
        switch e {
        case .linkChanged(let l):
            hostNames[l.index] = l.name
            guard let i = mirrored[l.name] else { return }
            if let mac = l.mac { try? stack.setMAC(i, mac) }
            if l.mtu != stack.status(i).mtu { try? stack.setMTU(i, l.mtu) }
            let up = l.adminUp && l.operUp
            if up != stack.status(i).up { try? stack.setUp(i, up) }
        case .linkRemoved(let index, let name):
            hostNames[index] = nil
            if let i = mirrored[name] { try? stack.setUp(i, false) }
        case .addressAdded(let index, let a):
            guard let i = stackInterface(index) else { return }
            if !stack.status(i).addresses.contains(where: { $0.address == a }) {
                do { try stack.addAddress(a, to: i) } catch { log("mirror: address \(a) on \(stack.interfaceName(i)): \(error)") }
            }
        case .addressRemoved(let index, let a):
            guard let i = stackInterface(index) else { return }
            try? stack.removeAddress(a.address, from: i)
        case .neighborChanged(let index, let address, let mac):
            guard let i = stackInterface(index), let mac else { return }
            try? stack.learnNeighbor(address, on: i, mac: mac)
        case .neighborRemoved:
            return  // the stack's own entry ages out, or its own resolution keeps it
        case .routeAdded(let r):
            guard wanted(r) else { return }
            if imported[r.key] != nil { uninstall(r.key, from: stack) }
            install(r, into: stack)
        case .routeRemoved(let r):
            guard imported[r.key] != nil else { return }
            uninstall(r.key, from: stack)
        case .address6Added(let index, let a):
            guard let i = stackInterface(index), !stack.addresses6(on: i).contains(a) else { return }
            do { try stack.addAddress(a, to: i) } catch { log("mirror: address \(a) on \(stack.interfaceName(i)): \(error)") }
        case .address6Removed(let index, let a):
            guard let i = stackInterface(index) else { return }
            try? stack.removeAddress(a.address, from: i)
        case .neighbor6Changed(let index, let address, let mac):
            guard let i = stackInterface(index), let mac else { return }
            try? stack.learnNeighbor(address, on: i, mac: mac)
        case .neighbor6Removed:
            return
        case .route6Added(let r):
            guard wanted(r) else { return }
            if imported6[r.key] != nil { uninstall(r.key, from: stack) }
            install(r, into: stack)
        case .route6Removed(let r):
            guard imported6[r.key] != nil else { return }
            uninstall(r.key, from: stack)
        }
    }

    /// Whether a host IPv6 route is one the config imports: as for IPv4,
    /// and never a link-local or multicast prefix (each link has its own).
    func wanted(_ r: HostRoute6) -> Bool {
        if routes == nil, !twins.isEmpty { return viaTwin(r) && !r.prefix.address.isLinkLocal && !r.prefix.address.isMulticast }
        guard let cfg = routes, r.table == cfg.table, !cfg.exclude6.contains(r.prefix), !r.prefix.address.isLinkLocal,
              !r.prefix.address.isMulticast else { return false }
        if let protocols = cfg.protocols { return protocols.contains(r.proto) }
        return r.proto != RouteProtocols.byName["kernel"]!
    }

    /// Without `mirror.routes`, twins still bring back what a routing daemon
    /// installs through them: main-table routes, not the kernel's own, with
    /// a next hop by a twin.
    private func viaTwin<P, A>(_ r: HostRouteOf<P, A>) -> Bool {
        r.table == 254 && r.proto != RouteProtocols.byName["kernel"]!
            && r.nextHops.contains { hostNames[$0.interface].map { twins[$0] != nil } ?? false }
    }

    private func install(_ r: HostRoute6, into stack: Stack) {
        let done = installHops(r) { (gateway, i) throws(RouteError) in
            do throws(RouteError) { try stack.addRoute(r.prefix, via: gateway, interface: i, metric: r.metric, origin: .mirror) } catch {
                if case .exists6 = error { return }
                throw error
            }
        }
        if done { imported6[r.key] = ImportedRoute(r) }
    }

    private func uninstall(_ key: HostRouteKey6, from stack: Stack) {
        stack.removeRoutes(key.prefix, origin: .mirror, metric: key.metric)
        imported6[key] = nil
    }

    /// Whether a host route is one the config imports.
    func wanted(_ r: HostRoute) -> Bool {
        if routes == nil, !twins.isEmpty { return viaTwin(r) }
        guard let cfg = routes, r.table == cfg.table, !cfg.exclude.contains(r.prefix) else { return false }
        if let protocols = cfg.protocols { return protocols.contains(r.proto) }
        return r.proto != RouteProtocols.byName["kernel"]!
    }

    private func install(_ r: HostRoute, into stack: Stack) {
        let done = installHops(r) { (gateway, i) throws(RouteError) in
            do throws(RouteError) { try stack.addRoute(r.prefix, via: gateway, interface: i, metric: r.metric, origin: .mirror) } catch {
                if case .exists = error { return }
                throw error
            }
        }
        if done { imported[r.key] = ImportedRoute(r) }
    }

    /// Installs each next hop of a host route (of either family) that leaves
    /// by a mirrored interface, in a fixed order; false, counted as skipped,
    /// when none could be (a refused one is logged).
    private func installHops<P, A: Comparable>(_ r: HostRouteOf<P, A>,
                                               _ add: (A?, InterfaceIndex) throws(RouteError) -> Void) -> Bool {
        var installed = 0
        let hops = r.nextHops.sorted { a, b in
            if a.gateway != b.gateway {
                guard let x = a.gateway else { return true }
                guard let y = b.gateway else { return false }
                return x < y
            }
            return a.interface < b.interface
        }
        for hop in hops {
            guard let i = routeInterface(hop.interface) else { continue }
            do {
                try add(hop.gateway, i)
                installed += 1
            } catch {
                log("mirror: route \(r): \(error)")
            }
        }
        if installed == 0 { skippedRoutes &+= 1 }
        return installed > 0
    }

    private func uninstall(_ key: HostRouteKey, from stack: Stack) {
        stack.removeRoutes(key.prefix, origin: .mirror, metric: key.metric)
        imported[key] = nil
    }

    /// Makes the stack match a full dump of the host: applies every object,
    /// then removes what the dump no longer shows (addresses on mirrored
    /// interfaces, imported routes).
    public func resync(snapshot: [NetlinkEvent], to stack: Stack, reason: String) {
        resyncs &+= 1
        lastResync = (Date(), reason)
        // Links first, so interface names are known for the rest.
        let links = snapshot.filter { if case .linkChanged = $0 { return true } else { return false } }
        var names: [Int32: String] = [:]
        for case .linkChanged(let l) in links { names[l.index] = l.name }
        for (index, name) in hostNames where names[index] == nil {
            apply(.linkRemoved(index: index, name: name), to: stack)
        }
        apply(links, to: stack)
        // Addresses: exactly the host's on each mirrored interface.
        var wantedAddresses: [InterfaceIndex: Set<IPv4InterfaceAddress>] = [:]
        for i in mirrored.values { wantedAddresses[i] = [] }
        for case .addressAdded(let index, let a) in snapshot {
            if let i = stackInterface(index) { wantedAddresses[i, default: []].insert(a) }
        }
        for (i, want) in wantedAddresses {
            for a in stack.status(i).addresses.map(\.address) where !want.contains(a) { try? stack.removeAddress(a.address, from: i) }
            for a in want where !stack.status(i).addresses.contains(where: { $0.address == a }) { try? stack.addAddress(a, to: i) }
        }
        // Routes: exactly the wanted host routes.
        var seen = Set<HostRouteKey>()
        for case .routeAdded(let r) in snapshot where wanted(r) {
            seen.insert(r.key)
            if imported[r.key] != ImportedRoute(r) {
                if imported[r.key] != nil { uninstall(r.key, from: stack) }
                install(r, into: stack)
            }
        }
        for key in Array(imported.keys) where !seen.contains(key) { uninstall(key, from: stack) }
        // The same for IPv6.
        var wanted6: [InterfaceIndex: Set<IPv6InterfaceAddress>] = [:]
        for i in mirrored.values { wanted6[i] = [] }
        for case .address6Added(let index, let a) in snapshot {
            if let i = stackInterface(index) { wanted6[i, default: []].insert(a) }
        }
        for (i, want) in wanted6 {
            for a in stack.addresses6(on: i) where !want.contains(a) { try? stack.removeAddress(a.address, from: i) }
            for a in want where !stack.addresses6(on: i).contains(a) { try? stack.addAddress(a, to: i) }
        }
        var seen6 = Set<HostRouteKey6>()
        for case .route6Added(let r) in snapshot where wanted(r) {
            seen6.insert(r.key)
            if imported6[r.key] != ImportedRoute(r) {
                if imported6[r.key] != nil { uninstall(r.key, from: stack) }
                install(r, into: stack)
            }
        }
        for key in Array(imported6.keys) where !seen6.contains(key) { uninstall(key, from: stack) }
        // Neighbours: learn what the host knows.
        for e in snapshot {
            switch e {
            case .neighborChanged, .neighbor6Changed: apply(e, to: stack)
            default: break
            }
        }
    }
}

extension Daemon {
    /// Starts following the host through netlink when the config mirrors
    /// interfaces or routes: a full sync first, then the change stream.
    func startMirror() throws(DaemonError) {
        var mirrored: [String: InterfaceIndex] = [:]
        for i in config.interfaces {
            if case .mirror(let host) = i.attach, let idx = interfaceIndex[i.name] { mirrored[host] = idx }
        }
        guard !mirrored.isEmpty || config.mirrorRoutes != nil || !config.twins.isEmpty else { return }
        let monitor: NetlinkMonitor
        // ANYGATE_NETLINK_RCVBUF (bytes) shrinks the netlink receive buffer,
        // for tests that must provoke lost messages and a resync.
        let rcvbuf = ProcessInfo.processInfo.environment["ANYGATE_NETLINK_RCVBUF"].flatMap { Int32($0) }
        do { monitor = try NetlinkMonitor(receiveBuffer: rcvbuf) } catch { throw DaemonError("netlink: \(error)") }
        let m = HostMirror(mirrored: mirrored, routes: config.mirrorRoutes)
        m.log = { [weak self] in self?.logger.warning("\($0)") }
        m.twinEvent = { [weak self] name, e in self?.twinEvent(name, e) }
        m.twins = Dictionary(uniqueKeysWithValues: config.twins.map { ($0.twinName, interfaceIndex[$0.stackName] ?? stack.interface(named: $0.stackName) ?? -1) })
        mirror = m
        netlink = monitor
        m.resync(snapshot: monitor.snapshot(), to: stack, reason: "start")
        do {
            for fd in monitor.fds { try loop.register(fd) { [weak self] _ in self?.netlinkReadable() } }
        } catch {
            throw DaemonError("netlink: \(error)")
        }
        logger.info("mirror", metadata: ["interfaces": "\(mirrored.keys.sorted())", "routes": "\(m.imported.count) imported"])
    }

    func netlinkReadable() {
        guard let monitor = netlink, let m = mirror else { return }
        switch monitor.receive() {
        case .events(let events):
            m.apply(events, to: stack)
        case .resync(let reason):
            logger.warning("netlink: \(reason); resyncing from a full dump")
            do {
                try monitor.refill()
                m.resync(snapshot: monitor.snapshot(), to: stack, reason: reason)
            } catch {
                logger.error("netlink resync failed: \(error); retrying in 1s")
                loop.after(nanoseconds: 1_000_000_000) { [weak self] in self?.netlinkReadable() }
            }
        }
    }
}

/// What the mirror remembers of an imported host route: its protocol and
/// its next hops (exactly for one next hop, by a hash of the set for ECMP),
/// enough to tell in a resync whether the host's route changed.
struct ImportedRoute: Equatable {
    var proto: UInt8
    var hopCount: UInt16
    var gateway: UInt32
    var interface: Int32
    var hopsHash: Int

    /// An IPv6 route's next hops are told apart by a hash of the set.
    init(_ r: HostRoute6) {
        proto = r.proto
        hopCount = UInt16(clamping: r.nextHops.count)
        gateway = 0
        interface = r.nextHops.count == 1 ? r.nextHops.first!.interface : 0
        hopsHash = r.nextHops.hashValue
    }

    init(_ r: HostRoute) {
        proto = r.proto
        hopCount = UInt16(clamping: r.nextHops.count)
        if r.nextHops.count == 1, let h = r.nextHops.first {
            gateway = h.gateway?.rawValue ?? 0
            interface = h.interface
            hopsHash = 0
        } else {
            gateway = 0
            interface = 0
            hopsHash = r.nextHops.hashValue
        }
    }
}
