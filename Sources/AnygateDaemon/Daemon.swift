import AnygateControl
import AnygateHost
import AnygateNetlink
public import AnygateStack
import AnygateWire
import Foundation
public import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Why the daemon could not start: one line for the operator.
public struct DaemonError: Error, CustomStringConvertible {
    public var description: String
    init(_ s: String) { description = s }
}

/// The running appliance: one stack on one event loop, its ports, the
/// control socket, metrics, and the configuration it was built from.
public final class Daemon {
    public let configPath: String
    public private(set) var config: DaemonConfig
    public var logger: Logger
    let loop: EventLoop
    /// The control thread's runtime. With one worker it carries the
    /// traffic; with several it holds the daemon's own stack — the
    /// configuration, checked here before the workers apply it — and no ports.
    let runtime: HostRuntime
    public var stack: Stack { runtime.stack }
    /// The workers, when `stack.workers` is more than one.
    var workers: WorkerGroup?
    /// Interfaces given a fanout group so far (each gets a new group id).
    var fanoutGroupsMade = 0
    var control: StreamServer?
    /// The trace session the control socket started: its filter and interface, as asked.
    var traceSession: (filter: String, interface: String?)?
    /// Captures running, by interface name (`Daemon+Capture`).
    var captureSessions: [String: CaptureSession] = [:]
    var metrics: StreamServer?
    /// Services on the stack's own TCP, and the bandwidth test running from it.
    var stackServices: [any StackTCPService] = []
    var stackMetrics: StackStreamServer?
    var stackControl: StackStreamServer?
    var bandwidthResponder: BandwidthResponder?
    var bandwidthRun: BandwidthTestRun?
    var controlToken: [UInt8]?
    var controlRefusedToken: UInt64 = 0
    let started = Date()
    /// Stack interface index of each configured interface, by name.
    var interfaceIndex: [String: InterfaceIndex] = [:]
    /// How each interface is attached (for status output).
    var attachments: [InterfaceIndex: InterfaceConfig.Attachment] = [:]
    /// The netlink mirror, when the config mirrors anything.
    var mirror: HostMirror?
    var netlink: NetlinkMonitor?
    /// Generated MACs and other state kept across restarts.
    let state: StateDirectory
    /// The state directory's problem already logged, so it is said once.
    var stateProblemLogged: String?
    /// IKE for each protected tunnel and policy-based link, by name.
    var ikePeers: [String: IKEPeer] = [:]
    /// Protected tunnels' SAs go to the workers in turn.
    var nextSAOwner = 0
    /// Host twins by host name.
    var twins: [String: HostTwin] = [:]
    /// The twins' carriers are being watched (`watchTwinCarriers`).
    var twinWatch = false
    /// IKE's counts for the metrics endpoint.
    var ikeMetrics = IKEMetrics()

    /// Builds the stack, attaches every interface, installs routes, and
    /// opens the control socket and metrics listener.
    public init(config: DaemonConfig, configPath: String, logger: Logger) throws(DaemonError) {
        self.config = config
        self.configPath = configPath
        self.logger = logger
        state = StateDirectory(path: config.stateDirectory)
        do { loop = try EventLoop() } catch { throw DaemonError("cannot start the event loop: \(error)") }
        var sc = StackConfiguration()
        sc.arp.maxEntries = config.arpMaxEntries
        sc.arp.pendingPerNeighbor = config.arpPendingPerNeighbor
        sc.icmp.errorsPerSecond = config.icmpErrorsPerSecond
        sc.ipflow.enabled = config.ipflowEnabled
        sc.ipflow.maxFlows = config.ipflowMaxFlows
        sc.ipflow.idleTimeout = config.ipflowIdleTimeout
        sc.ecmpHash = config.ecmpHash
        sc.tcp.mslLoopback = config.tcpMSLLoopback
        sc.tcp.mslLocal = config.tcpMSLLocal
        sc.tcp.mslRemote = config.tcpMSLRemote
        sc.tcp.mslt = config.tcpMSLT
        sc.tcp.vtw = config.tcpVTW
        sc.tcp.timeWaitMax = config.tcpTimeWaitMax
        sc.tcp.maxConnections = config.tcpMaxConnections
        let workerCount = config.workers ?? HostThread.usableCPUs
        // Beside workers, the daemon's own stack holds the configuration and
        // carries no traffic: it asks nothing on links (a follower), opens no
        // host sockets, and takes tunnel lines from worker 0 like the others.
        // It also writes the one FIB the workers' replicas read (SharedFIB).
        var own = sc
        let sharedFIB = workerCount > 1 ? SharedFIB(readers: workerCount) : nil
        if let sharedFIB {
            own.replica = .follower
            own.fib = .writer(sharedFIB)
        }
        runtime = HostRuntime(loop: loop, configuration: own,
                              pool: workerCount > 1 ? PacketPool(capacity: 512, dataSize: 2048)
                                  : PacketPool(capacity: 8192, superFrames: Daemon.superFrameBuffers),
                              opensHostSockets: workerCount <= 1)
        runtime.log = { [weak self] line in self?.logger.warning("\(line)") }
        if workerCount > 1 {
            do {
                workers = try WorkerGroup(count: workerCount, configuration: sc, sharedFIB: sharedFIB,
                                          makePool: { PacketPool(capacity: 8192, superFrames: Daemon.superFrameBuffers) })
            } catch {
                throw DaemonError("cannot start \(workerCount) workers: \(error)")
            }
            logger.info("workers started", metadata: ["workers": "\(workerCount)"])
        }
        let policy = config.sourcePolicy
        change { $0.setDefaultSourcePolicy(policy) }
        do throws(DaemonError) {
            for i in config.interfaces { try addInterface(i) }
            for t in config.tunnels { try addTunnel(t) }
            for r in config.routes6 {
                do { try addRoute6(r) } catch { throw DaemonError("route \(r): \(error)") }
            }
            for r in config.routes {
                do { try addRoute(r) } catch { throw DaemonError("route \(r): \(error)") }
            }
            try openControl()
            try openMetrics()
            try openStackServices()
            try startMirror()
            try syncTwins()
            logStateProblem()
        } catch {
            runtime.detachAll()
            workers?.stop()
            throw error
        }
    }

    // MARK: Interfaces and routes

    /// Super-frame buffers in the pool (64 KiB each): what TAPs with
    /// offloads read into, and what waits in queues while they drain.
    static let superFrameBuffers = 512

    /// A port for the interface; `fanout`, when several workers share the
    /// interface: a queue of a multi-queue TAP, or a socket in that
    /// PACKET_FANOUT group.
    func makePort(_ i: InterfaceConfig, fanout: UInt16? = nil) throws(DaemonError) -> any AnygateHost.Port {
        do {
            switch i.attach {
            case .tap(let name): return try TapPort(name: name, mtu: i.mtu, offloads: i.offloads, multiQueue: fanout != nil)
            case .packet(let name), .mirror(let name):
                let m = (i.mac ?? .zero).rawValue
                let mac = (0..<6).map { UInt8(truncatingIfNeeded: m >> UInt64(40 - 8 * $0)) }
                return try PacketPort(interface: name, mac: mac, offloads: i.offloads, fanoutGroup: fanout)
            }
        } catch {
            throw DaemonError(Daemon.explain(error, attach: i.attach, interface: i.name))
        }
    }

    /// One clear line for the usual start-up failures.
    static func explain(_ e: SystemError, attach: InterfaceConfig.Attachment, interface: String) -> String {
        let what = "interface \(interface) (\(attach))"
        switch (e.errno, attach) {
        case (ENOENT, .tap) where e.object == "/dev/net/tun", (ENODEV, .tap) where e.object == "/dev/net/tun":
            return "\(what): /dev/net/tun is missing (load the tun module, or give the container /dev/net/tun)"
        case (EPERM, _), (EACCES, _):
            return "\(what): permission denied (anygated needs CAP_NET_ADMIN, and CAP_NET_RAW for packet attachments)"
        case (ENODEV, .packet), (ENXIO, .packet), (ENODEV, .mirror), (ENXIO, .mirror):
            return "\(what): host interface \(attach.hostName) not found"
        case (EBUSY, .tap):
            return "\(what): \(attach.hostName) exists and is not a free TAP device"
        default:
            return "\(what): \(e)"
        }
    }

    func addInterface(_ config: InterfaceConfig) throws(DaemonError) {
        var i = config
        if case .mirror(let host) = i.attach {
            // The host's identity: its MAC and MTU (then followed through netlink).
            do {
                let b = try HostInterface.hardwareAddress(host)
                i.mac = MACAddress(b[0], b[1], b[2], b[3], b[4], b[5])
                i.mtu = try HostInterface.mtu(host)
            } catch {
                throw DaemonError(Daemon.explain(error, attach: i.attach, interface: i.name))
            }
        }
        if i.mac == nil { i.mac = state.mac(for: i.name) }
        let mac = i.mac!
        // One port per worker (a TAP queue or a fanout socket each), or one.
        var ports: [any AnygateHost.Port] = []
        do throws(DaemonError) {
            if let workers {
                fanoutGroupsMade += 1
                let group = Daemon.fanoutGroup(interface: fanoutGroupsMade)
                for _ in 0..<workers.count { ports.append(try makePort(i, fanout: group)) }
            } else {
                ports.append(try makePort(i))
            }
        } catch {
            for p in ports { p.close(pool: runtime.pool) }
            throw error
        }
        var handedOver = false
        do {
            let name = i.name, mtu = i.mtu, policy = i.sourcePolicy, rpf = i.rpf
            let idx = try change { s throws(InterfaceError) in try s.addInterface(name: name, mac: mac, mtu: mtu) }
            for a in i.addresses {
                let address = a.address, preference = a.preference
                try change { s throws(InterfaceError) in try s.addAddress(address, to: idx, preference: preference) }
            }
            if let v6 = i.ipv6 {
                try change { s throws(InterfaceError) in try s.enableIPv6(on: idx) }
                for a in v6.addresses { try change { s throws(InterfaceError) in try s.addAddress(a, to: idx) } }
                for (a, p) in v6.preferences { try change { s throws(InterfaceError) in try s.setPreference(a, on: idx, p) } }
                let ra = v6.routerAdvertisements
                try change { s throws(InterfaceError) in try s.setRouterAdvertisements(ra, on: idx) }
            }
            try change { s throws(InterfaceError) in try s.setSourcePolicy(policy, for: idx) }
            try change { s throws(InterfaceError) in try s.setReversePathFilter(idx, rpf) }
            if case .mirror = i.attach { try change { s throws(InterfaceError) in try s.setHostOwned(idx, true) } }
            if let workers {
                handedOver = true
                for (k, p) in ports.enumerated() {
                    let handOver = PortHandOver(port: p)
                    workers.perform(on: k) { r in
                        do { try r.attach(handOver.port, to: idx) } catch { handOver.port.close(pool: r.pool) }
                    }
                }
            } else {
                try runtime.attach(ports[0], to: idx)
            }
            interfaceIndex[i.name] = idx
            attachments[idx] = i.attach
            try change { s throws(InterfaceError) in try s.setUp(idx, true) }
        } catch let e as InterfaceError {
            if !handedOver { for p in ports { p.close(pool: runtime.pool) } }
            throw DaemonError("interface \(i.name): \(e)")
        } catch {
            if !handedOver { for p in ports { p.close(pool: runtime.pool) } }
            throw DaemonError("interface \(i.name): \(error)")
        }
        logger.info("interface up", metadata: ["interface": "\(i.name)", "attach": "\(i.attach)", "mac": "\(mac)"])
    }

    /// Makes the interface's IPv6 addresses what `v6` says (nil: none,
    /// the link-local one included, so IPv6 is off).
    func reconcileIPv6(_ v6: IPv6InterfaceConfig?, on idx: InterfaceIndex) throws(InterfaceError) {
        let linkLocal = stack.addresses6(on: idx).first { $0.address.isLinkLocal }
        for a in stack.addresses6(on: idx) where !(v6?.addresses.contains(a) ?? false) && (v6 == nil || a != linkLocal) {
            let address = a.address
            change { s in try? s.removeAddress(address, from: idx) }
        }
        let ra = v6?.routerAdvertisements
        try change { s throws(InterfaceError) in try s.setRouterAdvertisements(ra, on: idx) }
        guard let v6 else { return }
        try change { s throws(InterfaceError) in try s.enableIPv6(on: idx) }
        let have = Set(stack.addresses6(on: idx))
        for a in v6.addresses where !have.contains(a) {
            try change { s throws(InterfaceError) in try s.addAddress(a, to: idx) }
        }
        for a in v6.addresses {
            let address = a.address, p = v6.preferences[a.address] ?? 0
            try change { s throws(InterfaceError) in try s.setPreference(address, on: idx, p) }
        }
    }

    func addTunnel(_ t: TunnelConfig) throws(DaemonError) {
        let tunnel = t.tunnel, name = t.name
        do {
            let idx = try change { s throws(TunnelError) in try s.addTunnel(tunnel) }
            for a in t.addresses {
                let address = a.address, preference = a.preference
                try change { s throws(InterfaceError) in try s.addAddress(address, to: idx, preference: preference) }
            }
            if let v6 = t.ipv6 {
                try change { s throws(InterfaceError) in try s.enableIPv6(on: idx) }
                for a in v6.addresses { try change { s throws(InterfaceError) in try s.addAddress(a, to: idx) } }
            }
        } catch let e as TunnelError {
            change { s in try? s.removeTunnel(named: name) }
            throw DaemonError("tunnel \(t.name): \(e)")
        } catch {
            change { s in try? s.removeTunnel(named: name) }
            throw DaemonError("tunnel \(t.name): \(error)")
        }
        if t.ike != nil {
            do throws(DaemonError) { try startIKE(t, interface: stack.interface(named: t.name) ?? -1) } catch {
                change { s in try? s.removeTunnel(named: name) }
                throw error
            }
        }
        logger.info("tunnel up", metadata: ["tunnel": "\(t.name)", "encapsulation": "\(t.tunnel.encapsulation.rawValue)",
                                            "backend": "\(t.tunnel.backend.rawValue)", "remote": "\(t.tunnel.remote)"])
    }

    /// Says once why generated MACs will not survive a restart.
    func logStateProblem() {
        guard let p = state.problem, p != stateProblemLogged else { return }
        stateProblemLogged = p
        logger.warning("state directory: \(p); interfaces without mac: in the config get a random MAC that changes at every start")
    }

    func removeInterface(_ name: String) {
        guard let idx = interfaceIndex.removeValue(forKey: name) else { return }
        runtime.detach(idx)
        workers?.perform { $0.detach(idx) }
        attachments[idx] = nil
        change { s in try? s.removeInterface(idx) }
        logger.info("interface removed", metadata: ["interface": "\(name)"])
    }

    /// IPv6 routes are each replica's own (the shared FIB is IPv4's): they go to every replica.
    func addRoute6(_ r: Route6Config) throws(RouteError) {
        guard let i = interfaceIndex[r.interface] ?? stack.interface(named: r.interface) else {
            throw .invalid("no interface named \(r.interface)")
        }
        try change { s throws(RouteError) in try s.addRoute(r.to, via: r.via, interface: i, metric: r.metric, weight: r.weight) }
    }

    func addRoute(_ r: RouteConfig) throws(RouteError) {
        let dev = r.interface.flatMap { interfaceIndex[$0] ?? stack.interface(named: $0) }
        try changeRoutes { s throws(RouteError) in try s.addRoute(r.to, via: r.via, interface: dev, metric: r.metric, weight: r.weight) }
    }

    /// A PACKET_FANOUT group id for an interface's sockets: unique to this
    /// process and its n-th interface (ids are shared by the whole network
    /// namespace; an interface added again by a reload gets a new one).
    static func fanoutGroup(interface: Int) -> UInt16 {
        UInt16(truncatingIfNeeded: Int(getpid()) &* 64 &+ interface)
    }

    // MARK: Running

    /// Runs until SIGTERM or SIGINT; SIGHUP reloads the config file.
    public func run() throws(DaemonError) {
        do {
            try loop.handleSignals { [weak self] sig in
                guard let self else { return }
                if sig == SIGHUP {
                    self.logger.notice("SIGHUP: reloading \(self.configPath)")
                    _ = self.reload()
                } else {
                    self.logger.notice("signal \(sig): shutting down")
                    self.loop.stop()
                }
            }
        } catch {
            throw DaemonError("cannot install signal handling: \(error)")
        }
        logger.notice("anygated running", metadata: ["config": "\(configPath)", "control": "\(config.controlSocket)"])
        if let workers {
            do {
                try loop.register(workers.notifications.fd) { [unowned self] _ in collectFromWorkers() }
            } catch {
                throw DaemonError("cannot watch the workers: \(error)")
            }
        }
        loop.run { [self] in
            var next = runtime.runTimers()
            if let ike = serviceIKE() { next = min(next ?? ike, ike) }
            if let c = expireCaptures() { next = min(next ?? c, c) }
            if stack.hasEvents { handleStackEvents() }
            if let workers {
                collectFromWorkers()
                // Something came in meanwhile: look again before sleeping.
                if !workers.prepareToSleep() { return 0 }
            }
            return next
        }
        shutdown()
    }

    /// Closes the ports (which deletes the TAP devices the daemon created)
    /// and removes the control socket.
    public func shutdown() {
        for name in Array(ikePeers.keys) { stopIKE(name) }
        control?.close(removing: config.controlSocket)
        control = nil
        metrics?.close()
        metrics = nil
        closeStackServices()
        runtime.detachAll()
        // Each worker closes its own ports as its thread ends.
        if let w = workers { loop.unregister(w.notifications.fd) }
        workers?.stop()
        logger.notice("anygated stopped")
    }

    /// Logs what the stack reported: warnings an operator must see, the
    /// rest at debug level.
    /// Takes what the workers reported: neighbour resolutions are handed
    /// on to the other workers, everything is logged.
    func collectFromWorkers() {
        guard let workers else { return }
        workers.awake()
        workers.collect { k, e in
            switch e {
            case let .tunnelLine(tunnel, up):
                stack.setTunnelLine(tunnel: tunnel, up: up)
            case let .duplicateAddress(i, address) where k == 0:
                // `show addresses` reads the daemon's own stack: it learns what the owner found.
                stack.markDuplicated(address, on: i)
            case let .datagram(socket, _, _, bytes):
                // IKE's, read by whichever worker the kernel gave it to.
                ikeDatagram(socket: socket, bytes: bytes)
                return
            case let .saExpiring(tunnel, _, _):
                saExpiring(tunnel: tunnel)
            case let .nextHopFailed(address, i, failed):
                // The FIB's writer withdraws the member (or brings it back);
                // the worker that asks the links asks it again later.
                if stack.setNextHop(address, interface: i, failed: failed), failed {
                    _ = workers.perform(on: k) { $0.stack.retryNextHop(address, interface: i) }
                }
            default:
                break
            }
            logStackEvent(e, worker: k)
        }
    }

    func handleStackEvents() {
        while let e = stack.popEvent() {
            if case .multicastChanged(let i) = e { applyMulticast(on: i) }
            if case .saExpiring(let tunnel, _, _) = e { saExpiring(tunnel: tunnel) }
            switch e {
            case .tcp, .tcpAcceptable: stackTCPEvent(e)
            default: logStackEvent(e)
            }
        }
    }

    /// The port's device takes in the multicast MACs neighbour discovery needs.
    func applyMulticast(on i: InterfaceIndex) {
        do { try runtime.port(for: i)?.setMulticast(stack.multicastMACs(on: i)) } catch {
            logger.warning("\(stack.interfaceName(i)): cannot set its multicast MACs: \(error)")
        }
    }

    /// Logs what a stack reported — the daemon's own, or a worker's
    /// replica (`worker`): warnings an operator must see, the rest at debug
    /// level or below.
    func logStackEvent(_ e: StackEvent, worker: Int? = nil) {
        var metadata: Logger.Metadata = worker.map { ["worker": "\($0)"] } ?? [:]
        switch e {
        case let .duplicateMAC(i, mac):
            metadata["interface"] = "\(stack.interfaceName(i))"
            metadata["mac"] = "\(mac)"
            logger.warning("duplicate MAC \(mac): another device on \(stack.interfaceName(i)) uses it", metadata: metadata)
        case let .neighborUnreachable(address, i, dropped):
            metadata["address"] = "\(address)"
            metadata["interface"] = "\(stack.interfaceName(i))"
            metadata["dropped"] = "\(dropped)"
            logger.debug("neighbor unreachable", metadata: metadata)
        case let .tunnelLine(i, up) where worker != nil:
            logger.notice("tunnel \(stack.interfaceName(i)) \(up ? "up" : "down")", metadata: metadata)
        case let .nextHopFailed(address, i, failed):
            metadata["address"] = "\(address)"
            metadata["interface"] = "\(stack.interfaceName(i))"
            logger.debug("\(failed ? "ECMP next hop failed" : "ECMP next hop answers again")", metadata: metadata)
        case let .duplicateAddress(i, address):
            metadata["interface"] = "\(stack.interfaceName(i))"
            metadata["address"] = "\(address)"
            logger.warning("duplicate address \(address) on \(stack.interfaceName(i)): another node on the link uses it; it stays unused",
                           metadata: metadata)
        case let .saExpired(i, spi, inbound):
            metadata["tunnel"] = "\(stack.interfaceName(i))"
            logger.warning("\(inbound ? "inbound" : "outbound") SA 0x\(String(spi, radix: 16)) reached a hard limit and carries nothing more",
                           metadata: metadata)
        case .echoReply, .icmpError, .neighborLearned, .keepaliveAnswered, .tunnelLine, .neighborWanted, .multicastChanged,
             .neighbor6Learned, .neighbor6Wanted, .routerSolicited, .multicastQueried, .saExpiring, .datagram, .tcp, .tcpAcceptable:
            logger.trace("\(e)", metadata: metadata)
        }
    }

    // MARK: Reload

    /// Reads the config file again and applies the difference. An invalid
    /// file changes nothing; the reason is logged and returned.
    @discardableResult
    public func reload() -> Result<String, DaemonError> {
        let next: DaemonConfig
        do {
            next = try ConfigReader.load(path: configPath)
        } catch {
            logger.error("reload refused, keeping the running config: \(error)")
            return .failure(DaemonError("reload refused, running config kept: \(error)"))
        }
        do {
            try apply(next)
        } catch {
            logger.error("reload partly applied: \(error)")
            return .failure(DaemonError("reload partly applied: \(error)"))
        }
        logger.notice("reloaded: \(next.summary)")
        return .success("reloaded: \(next.summary)")
    }

    /// Moves the running state from `config` to `next` without restarting
    /// the stack: interfaces, addresses and routes are diffed; settings that
    /// need a restart (stack limits, control socket, metrics) are logged.
    func apply(_ next: DaemonConfig) throws(DaemonError) {
        let old = config
        // Routes of the old config go first, so none points at a vanished address.
        let oldRoutes = Set(old.routes), newRoutes = Set(next.routes)
        let newRoutes6 = Set(next.routes6)
        for r in old.routes6 where !newRoutes6.contains(r) {
            let prefix = r.to, via = r.via
            change { s in try? s.deleteRoute(prefix, via: via) }
        }
        for r in old.routes where !newRoutes.contains(r) {
            changeRoutes { s in try? s.deleteRoute(r.to, via: r.via) }
        }
        let newByName = Dictionary(uniqueKeysWithValues: next.interfaces.map { ($0.name, $0) })
        for i in old.interfaces where newByName[i.name] == nil || newByName[i.name]!.attach != i.attach
            || newByName[i.name]!.mac != i.mac {
            removeInterface(i.name)
        }
        config.interfaces = old.interfaces.filter { interfaceIndex[$0.name] != nil }
        // Tunnels: removed or changed ones go, new or changed ones come; the others are untouched.
        let newTunnels = Dictionary(uniqueKeysWithValues: next.tunnels.map { ($0.name, $0) })
        for t in old.tunnels where newTunnels[t.name] != t {
            let name = t.name
            stopIKE(name)
            change { s in try? s.removeTunnel(named: name) }
            logger.info("tunnel removed", metadata: ["tunnel": "\(t.name)"])
        }
        for i in next.interfaces {
            guard let idx = interfaceIndex[i.name], let was = old.interfaces.first(where: { $0.name == i.name }) else {
                try addInterface(i)
                continue
            }
            let policy = i.sourcePolicy, rpf = i.rpf, mtu = i.mtu
            if was.sourcePolicy != i.sourcePolicy { change { s in try? s.setSourcePolicy(policy, for: idx) } }
            if was.rpf != i.rpf { change { s in try? s.setReversePathFilter(idx, rpf) } }
            if was.mtu != i.mtu {
                change { s in try? s.setMTU(idx, mtu) }
                if case .tap(let n) = i.attach { try? HostInterface.setMTU(n, i.mtu) }
            }
            let wanted = Dictionary(i.addresses.map { ($0.address.address, $0) }) { a, _ in a }
            for a in was.addresses where wanted[a.address.address]?.address != a.address {
                let address = a.address.address
                change { s in try? s.removeAddress(address, from: idx) }
            }
            let have = Set(stack.status(idx).addresses.map(\.address))
            for a in i.addresses {
                let address = a.address, preference = a.preference
                if !have.contains(a.address) {
                    do { try change { s throws(InterfaceError) in try s.addAddress(address, to: idx, preference: preference) } } catch {
                        throw DaemonError("interface \(i.name): \(error)")
                    }
                } else if was.addresses.first(where: { $0.address == a.address })?.preference != a.preference {
                    change { s in try? s.setPreference(address.address, on: idx, preference) }
                }
            }
            if was.ipv6 != i.ipv6 {
                do throws(InterfaceError) { try reconcileIPv6(i.ipv6, on: idx) } catch {
                    throw DaemonError("interface \(i.name): \(error)")
                }
            }
        }
        let oldTunnels = Dictionary(uniqueKeysWithValues: old.tunnels.map { ($0.name, $0) })
        for t in next.tunnels where oldTunnels[t.name] != t {
            try addTunnel(t)
        }
        for r in next.routes6 where !Set(old.routes6).contains(r) || stack.routes(for: r.to).isEmpty {
            do { try addRoute6(r) } catch {
                if case .exists6 = error { continue }
                throw DaemonError("route \(r): \(error)")
            }
        }
        for r in next.routes where !oldRoutes.contains(r) || stack.routes(for: r.to).isEmpty {
            do { try addRoute(r) } catch {
                if case .exists = error { continue }
                throw DaemonError("route \(r): \(error)")
            }
        }
        if next.arpMaxEntries != old.arpMaxEntries || next.arpPendingPerNeighbor != old.arpPendingPerNeighbor
            || next.icmpErrorsPerSecond != old.icmpErrorsPerSecond || next.ipflowEnabled != old.ipflowEnabled
            || next.ipflowMaxFlows != old.ipflowMaxFlows || next.ipflowIdleTimeout != old.ipflowIdleTimeout
            || next.ecmpHash != old.ecmpHash || next.stateDirectory != old.stateDirectory {
            logger.warning("stack settings (arp, icmp, ipflow, ecmp-hash, state) changed in the config; they take effect when anygated restarts")
        }
        if next.controlSocket != old.controlSocket || next.metricsListen != old.metricsListen || next.controlListen != old.controlListen
            || next.controlAllow != old.controlAllow || next.controlTokenFile != old.controlTokenFile
            || next.bandwidthTestListen != old.bandwidthTestListen {
            logger.warning("control, metrics or services addresses changed; they take effect when anygated restarts")
        }
        if next.tcpMSLLoopback != old.tcpMSLLoopback || next.tcpMSLLocal != old.tcpMSLLocal || next.tcpMSLRemote != old.tcpMSLRemote
            || next.tcpMSLT != old.tcpMSLT || next.tcpVTW != old.tcpVTW {
            let (lo, lc, rm, mslt, vtw) = (next.tcpMSLLoopback, next.tcpMSLLocal, next.tcpMSLRemote, next.tcpMSLT, next.tcpVTW)
            stack.setTCPTimeWait(mslLoopback: lo, mslLocal: lc, mslRemote: rm, mslt: mslt, vtw: vtw)
        }
        if next.tcpTimeWaitMax != old.tcpTimeWaitMax || next.tcpMaxConnections != old.tcpMaxConnections {
            logger.warning("stack.tcp sizes changed; they take effect when anygated restarts")
        }
        logStateProblem()
        if next.logLevel != old.logLevel { logger.logLevel = next.logLevel.loggerLevel }
        if next.sourcePolicy != old.sourcePolicy {
            let policy = next.sourcePolicy
            change { $0.setDefaultSourcePolicy(policy) }
        }
        if next.workers != old.workers {
            logger.warning("stack.workers changed in the config; it takes effect when anygated restarts")
        }
        var applied = next
        applied.controlSocket = old.controlSocket
        applied.metricsListen = old.metricsListen
        applied.controlListen = old.controlListen
        applied.controlAllow = old.controlAllow
        applied.controlTokenFile = old.controlTokenFile
        applied.bandwidthTestListen = old.bandwidthTestListen
        applied.tcpTimeWaitMax = old.tcpTimeWaitMax
        applied.tcpMaxConnections = old.tcpMaxConnections
        config = applied
        // Twins follow: made, removed, and given the interfaces' addresses as they are now.
        if netlink == nil, !config.twins.isEmpty { try startMirror() }
        try syncTwins()
    }
}

