public import AnygateStack
import AnygateWire

/// Runs one stack on an event loop: reads ports in batches into the stack,
/// hands the stack's frames to the ports, drives its timers from the
/// monotonic clock, and copes with ports whose devices vanish.
public final class HostRuntime {
    public let loop: EventLoop
    public let pool: PacketPool
    public private(set) var stack: Stack!
    /// Ports by interface index (indices are small and dense: a wake-up
    /// finds its port without hashing).
    private var ports: [(any Port)?] = []
    /// Interfaces whose port lost its device; retried every second.
    private var lostPorts: Set<InterfaceIndex> = []
    private var lastRetry: Int64 = 0
    let batch: UnsafeMutableBufferPointer<PacketHandle>
    var hostSockets: [SocketID: HostSocket] = [:]
    /// Path MTUs host sockets reported during a send, handed to the stack
    /// at the next wake-up (it must not be re-entered from a send).
    var pendingPathMTU: [SocketID: Int] = [:]
    /// Called with a human-readable line when a port is lost or comes back,
    /// or when the kernel starts dropping a port's frames.
    public var log: (String) -> Void = { _ in }
    /// Port losses already recorded in the stack, per interface (`syncPortLosses`).
    var reportedLosses: [InterfaceIndex: PortLosses] = [:]
    var kernelDropWarned: [InterfaceIndex: Int64] = [:]
    /// Frames the stack sent to an interface whose port has no device, per interface.
    var unattachedByInterface: [InterfaceIndex: UInt64] = [:]
    var lastLossSync: Int64 = 0
    var reportedSocketDrops: [SocketID: UInt64] = [:]
    /// Host-socket losses already recorded: refused sends, reads without a buffer.
    var reportedSendFailures: [SocketID: (sent: UInt64, received: UInt64)] = [:]
    /// Host sockets with sends waiting (UDP GSO), flushed after each stack entry.
    var pendingHostSockets: [SocketID] = []

    /// The stack's view of the host: clock, randomness, transmit.
    ///
    /// Nothing refers to the runtime weakly (here, in the event loop's
    /// handlers or its timers): a weak reference gives an object a side
    /// table, and then every retain and release of it takes the slow path
    /// — on every wake-up. The runtime owns the stack that owns these
    /// calls, and unregisters its handlers when it goes.
    final class Calls: Hypercalls {
        unowned var runtime: HostRuntime?
        func now() -> Timestamp { Timestamp(nanoseconds: Sys.monotonicNanoseconds()) }
        func random() -> UInt64 { Sys.randomUInt64() }
        func transmit(_ packets: UnsafeBufferPointer<PacketHandle>, interface: InterfaceIndex, stack: Stack) {
            runtime?.transmit(packets, interface: interface)
        }
        func openHostSocket(_ socket: SocketID, protocol: SocketProtocol, local: IPAddress, localPort: UInt16,
                            remote: IPAddress, remotePort: UInt16, ttl: UInt8, tos: UInt8, dontFragment: Bool) -> String? {
            guard let runtime else { return "the runtime is gone" }
            return runtime.openHostSocket(socket, protocol: `protocol`, local: local, localPort: localPort, remote: remote,
                                          remotePort: remotePort, ttl: ttl, tos: tos, dontFragment: dontFragment)
        }
        func closeHostSocket(_ socket: SocketID) { runtime?.closeHostSocket(socket) }
        func sendHostSocket(_ socket: SocketID, _ payload: PacketHandle, sourcePort: UInt16?) -> Bool {
            runtime?.sendHostSocket(socket, payload) ?? false
        }
        func handOff(_ packet: PacketHandle, to replica: Int, _ work: HandOffWork, stack: Stack) -> Bool {
            runtime?.handOffs?.send(packet, to: replica, work) ?? false
        }
        func punt(_ packet: PacketHandle, interface: InterfaceIndex, stack: Stack) -> Bool {
            guard let runtime, let twin = runtime.twins[interface], twin.send(runtime.pool.bytes(packet)) else { return false }
            runtime.pool.free(packet)
            return true
        }
    }

    /// Host twins by the interface they pair with (`TwinDevice`).
    private(set) var twins: [InterfaceIndex: TwinDevice] = [:]

    /// Pairs a twin device with `interface`: what the host sends out of it
    /// is injected there; what the stack punts is written to it.
    public func attachTwin(_ device: TwinDevice, to interface: InterfaceIndex) throws(SystemError) {
        detachTwin(interface)
        twins[interface] = device
        try loop.register(device.fd, events: EventLoop.readable) { [unowned self] _ in serveTwin(interface) }
    }

    /// Unpairs (and closes) the twin of `interface`.
    public func detachTwin(_ interface: InterfaceIndex) {
        guard let d = twins.removeValue(forKey: interface) else { return }
        if d.fd >= 0 { loop.unregister(d.fd) }
        d.close()
    }

    /// The twin paired with `interface`, if any.
    public func twin(_ interface: InterfaceIndex) -> TwinDevice? { twins[interface] }

    private func serveTwin(_ interface: InterfaceIndex) {
        guard let d = twins[interface] else { return }
        for _ in 0..<16 {
            var n = 0
            var gone: Int32? = nil
            reading: while n < batch.count {
                switch d.receive(pool: pool) {
                case .packet(let p):
                    batch[n] = p
                    n += 1
                case .gone(let e):
                    gone = e
                    break reading
                case .empty, .noBuffer:
                    break reading
                }
            }
            if n > 0 { stack.inject(UnsafeBufferPointer(start: batch.baseAddress, count: n), from: interface) }
            flushHostSockets()
            if let e = gone {
                // Deleted from outside: the daemon makes it again when netlink says so.
                log("twin \(d.name) of \(stack.interfaceName(interface)) is gone (\(SystemError("read", d.name, errno: e))); waiting to make it again")
                loop.unregister(d.fd)
                d.close()
                return
            }
            if n < batch.count { return }
        }
    }

    /// With several workers, this worker's end of the lanes packets cross
    /// to the worker that owns their tunnel's SAs (`HandOffLanes`).
    var handOffs: HandOffEndpoint?

    /// Frees what other workers returned and finishes what they handed
    /// this one; then publishes what this one handed on meanwhile.
    func serveHandOffs() {
        guard let h = handOffs else { return }
        h.serve(stack: stack, pool: pool)
        flushHostSockets()
        h.publish()
    }

    /// False for a runtime that carries no traffic: its stack's tunnels get
    /// no host sockets (they would take a share of the real ones' packets).
    let opensHostSockets: Bool

    public init(loop: EventLoop, configuration: StackConfiguration, pool: PacketPool, batchSize: Int = 64,
                opensHostSockets: Bool = true) {
        self.opensHostSockets = opensHostSockets
        self.loop = loop
        self.pool = pool
        batch = .allocate(capacity: batchSize)
        let calls = Calls()
        stack = Stack(name: "anygated", configuration: configuration, pool: pool, hypercalls: calls)
        calls.runtime = self
    }

    deinit {
        for case let port? in ports where port.fd >= 0 { loop.unregister(port.fd) }
        for socket in hostSockets.values { loop.unregister(socket.fd) }
        batch.deallocate()
    }

    /// The port serving `interface`, if any.
    public func port(for interface: InterfaceIndex) -> (any Port)? { interface < ports.count ? ports[interface] : nil }
    public var attachedPorts: [(InterfaceIndex, any Port)] {
        ports.indices.compactMap { i in ports[i].map { (i, $0) } }
    }

    /// Connects a port to a stack interface and starts reading it.
    public func attach(_ port: any Port, to interface: InterfaceIndex) throws(SystemError) {
        if interface >= ports.count { ports += Array(repeating: nil, count: interface + 1 - ports.count) }
        ports[interface] = port
        try? stack.setOffloads(interface, port.offloads)
        try watch(interface)
    }

    private func watch(_ interface: InterfaceIndex) throws(SystemError) {
        guard let port = port(for: interface), port.fd >= 0 else { return }
        try loop.register(port.fd, events: EventLoop.readable) { [unowned self] events in
            serve(interface, events: events)
        }
    }

    /// Stops reading a port and releases it.
    public func detach(_ interface: InterfaceIndex) {
        guard let port = port(for: interface) else { return }
        ports[interface] = nil
        if port.fd >= 0 { loop.unregister(port.fd) }
        port.close(pool: pool)
        lostPorts.remove(interface)
        reportedLosses[interface] = nil
        unattachedByInterface[interface] = nil
        kernelDropWarned[interface] = nil
    }

    /// Closes every port and host socket.
    public func detachAll() {
        for i in Array(twins.keys) { detachTwin(i) }
        for i in ports.indices { detach(i) }
        for id in Array(hostSockets.keys) { closeHostSocket(id) }
    }

    private func serve(_ interface: InterfaceIndex, events: UInt32) {
        guard let port = port(for: interface) else { return }
        if events & EventLoop.writable != 0 {
            port.flushQueue(pool: pool)
            if !port.hasQueued { loop.modify(port.fd, events: EventLoop.readable) }
        }
        if events & (EventLoop.readable | EventLoop.hangup) != 0 {
            // A bounded number of batches per wake-up keeps other ports served.
            for _ in 0..<16 {
                switch port.receive(into: batch, pool: pool) {
                case .frames(let n):
                    if n > 0 { stack.receive(UnsafeBufferPointer(start: batch.baseAddress, count: n), on: interface) }
                    flushHostSockets()
                    handOffs?.publish()
                    if n < batch.count { return }
                case .lost(let error):
                    portLost(interface, error)
                    return
                }
            }
        }
    }

    func transmit(_ packets: UnsafeBufferPointer<PacketHandle>, interface: InterfaceIndex) {
        guard let port = port(for: interface), port.fd >= 0, lostPorts.isEmpty || !lostPorts.contains(interface) else {
            for p in packets { pool.free(p) }
            unattachedByInterface[interface, default: 0] += UInt64(packets.count)
            return
        }
        if let error = port.send(packets, pool: pool) {
            portLost(interface, error)
        } else if port.hasQueued {
            loop.modify(port.fd, events: EventLoop.readable | EventLoop.writable)
        }
    }

    private func portLost(_ interface: InterfaceIndex, _ error: SystemError) {
        guard let port = port(for: interface), !lostPorts.contains(interface) else { return }
        log("\(stack.interfaceName(interface)) (\(port.name)) lost: \(error); interface down until it returns")
        lostPorts.insert(interface)
        if port.fd >= 0 { loop.unregister(port.fd) }
        port.markLost(pool: pool)
        try? stack.setUp(interface, false)
    }

    private func retryLostPorts() {
        for interface in lostPorts {
            guard let port = port(for: interface), port.reattach() else { continue }
            lostPorts.remove(interface)
            try? stack.setOffloads(interface, port.offloads)
            try? watch(interface)
            try? stack.setUp(interface, true)
            log("\(stack.interfaceName(interface)) (\(port.name)) is back")
        }
    }

    /// Whether `interface`'s port has lost its device.
    public func isLost(_ interface: InterfaceIndex) -> Bool { lostPorts.contains(interface) }

    /// The host's monotonic clock, in the stack's nanoseconds.
    public var clock: Int64 { Sys.monotonicNanoseconds() }

    /// Runs the stack's timers if one is due; returns when they next want
    /// to run (one call per wake-up).
    public func runTimers() -> Int64? {
        flushHostSockets()
        if !pendingPathMTU.isEmpty {
            let reports = pendingPathMTU
            pendingPathMTU.removeAll()
            for (id, mtu) in reports { stack.hostSocketPathMTU(id, mtu) }
        }
        let now = Sys.monotonicNanoseconds()
        if now - lastLossSync >= HostRuntime.lossSyncInterval { syncPortLosses() }
        if !lostPorts.isEmpty && now - lastRetry >= 1_000_000_000 {
            lastRetry = now
            retryLostPorts()
        }
        let next = stack.runTimers(now: now)
        handOffs?.publish()
        return next
    }
}
