public import AnygateWire
import Synchronization

/// One virtual network kernel: interfaces, addresses, the FIB, the ARP
/// cache, reassembly, ICMP and the forwarding path.
///
/// A stack never performs a syscall, reads a clock or starts a thread: its
/// owner feeds it frames (`receive`) and timer ticks (`tick`), and it hands
/// frames back through `Hypercalls.transmit`. It is not thread-safe by
/// design — one stack runs on one thread (DESIGN.md, data-path rule 1).
///
/// State touched per packet sits behind raw pointers held in `let`
/// properties (`Stack+Unsafe` conventions), so the packet path performs no
/// allocation, reference counting or exclusivity checks.
public final class Stack {
    public let name: String
    public let configuration: StackConfiguration
    public let pool: PacketPool
    let hypercalls: any Hypercalls

    // Packet-path state.
    @usableFromInline let ifs: UnsafeMutablePointer<InterfaceSlot>
    @usableFromInline let txQueues: UnsafeMutablePointer<PacketHandle>
    @usableFromInline let dirty: UnsafeMutablePointer<Int>
    @usableFromInline let dropCounters: UnsafeMutablePointer<UInt64>
    /// The same per interface: `maxInterfaces` rows of `DropReason.counterCount`.
    @usableFromInline let interfaceDropCounters: UnsafeMutablePointer<UInt64>
    @usableFromInline let hot: UnsafeMutablePointer<HotState>
    @usableFromInline let neighbors: NeighborTable<UInt32>
    /// IPv6 neighbours (`Stack+IPv6`), with ARP's limits and timers.
    let neighbors6: NeighborTable<IPv6Address>
    @usableFromInline let flows: FlowTable
    /// ip6flow (`Flow6Table`).
    @usableFromInline let flows6: Flow6Table
    @usableFromInline let txCapacity: Int
    /// Scratch for coalescing a transmit queue (`Stack+Coalesce`): the next
    /// member of each entry's run, whether an entry was merged away, the open runs.
    let coalesceLinks: UnsafeMutablePointer<Int32>
    let coalesceAbsorbed: UnsafeMutablePointer<Bool>
    let coalesceOpenRuns: UnsafeMutablePointer<CoalesceRun>
    /// `warmRoutes6`'s scratch: the lookup word and the key of each frame of a batch.
    static let warmBatch = 256
    let warmValues: UnsafeMutablePointer<UInt32>
    let warmKeys: UnsafeMutablePointer<IPv6Address>

    @usableFromInline
    struct HotState {
        @usableFromInline var now: Int64 = 0
        @usableFromInline var counters = StackCounters()
        @usableFromInline var dirtyCount = 0
        var nextIPID: UInt16 = 0
        var icmpBucket = TokenBucket(rate: 0, burst: 1, now: 0)
        var nextFlowSweep: Int64 = 0
        /// How many tunnel encapsulations the current packet is inside.
        var tunnelDepth = 0
        /// Neighbour entries the timers looked at (each one was due).
        var timerVisits: UInt64 = 0
        /// The earliest keepalive or MTU check of any tunnel; 0 when none.
        var nextTunnelTimer: Int64 = 0
        /// When an SA's time lifetime is next due; 0 when none is.
        var nextIPsecTimer: Int64 = 0
        /// When a withdrawn ECMP next hop is next asked again; 0 when none is.
        var nextHopRetry: Int64 = 0
        /// When the next router advertisement is due; 0 when none is.
        var nextAdvertisement: Int64 = 0
        /// When the next answer to an MLD query is due; 0 when none is.
        var nextMLDReport: Int64 = 0
        /// When duplicate address detection next has a step due; 0 when none.
        var nextDAD: Int64 = 0
        /// Fault injection for the ledger's own test: drops of this reason
        /// (its raw value) free the packet and count nothing. -1: off.
        var uncountedReason = -1
        /// A trace session wants packets: the one branch tracing costs when off.
        @usableFromInline var traceArmed = false
        /// Some interface has a capture on (`Stack+Capture`): the tunnel paths look no further otherwise.
        @usableFromInline var capturing = false
        /// What `warmRoutes6` read, kept so that its loads are not optimized away.
        var warmSink: UInt32 = 0
        /// The batch position of the frame being processed when `warmRoutes6`
        /// looked its destination up (-1: none), and the FIB it looked in.
        var warmIndex = -1
        var warmGeneration: UInt64 = 0
    }

    @usableFromInline let fibView: UnsafeMutablePointer<FIBView<IPv4Prefix>>

    // Control-plane state.
    /// The routing table. Every change refreshes the packet path's view of
    /// it. A reader of a shared FIB holds an empty one and looks up the
    /// writer's through `fibView` (`FIBSharing`).
    public internal(set) var fib: RoutingTable {
        didSet { if fibReader == nil { fibView.pointee = FIBView(fib) } }
    }
    /// A reader of a shared FIB: the table, its reader index, whether it
    /// has announced itself awake, the generation it last read, and its
    /// own changes that flush cached routes (interface state, MTU).
    /// The IPv6 routing table (`Stack+Routes6`).
    public internal(set) var fib6: RoutingTable6 {
        didSet { fib6View.pointee = FIBView(fib6) }
    }
    /// The packet path's pointers into `fib6`.
    let fib6View: UnsafeMutablePointer<FIBView<IPv6Prefix>>
    let fibReader: (shared: SharedFIB, index: Int)?
    /// The same reader's two words, read and written once per batch
    /// (raw pointers: no reference counting there).
    let fibPublished: UnsafeMutablePointer<Atomic<UInt64>>?
    let fibAnnouncement: UnsafeMutablePointer<Atomic<UInt64>>?
    var fibAwake = false
    var fibSeen: UInt64 = 0
    var localGeneration: UInt64 = 0
    /// Whether this stack changes its FIB (its own, or the shared one as its writer).
    public var writesFIB: Bool { fibReader == nil }
    var reassembly: ReassemblyTable
    var interfaceNames: [String] = []
    var interfaceAddresses: [[InterfaceAddress]] = []
    var interfaceAddresses6: [[IPv6InterfaceAddress]] = []
    /// The identification of the last IPv6 packet this stack fragmented.
    var fragmentID6: UInt32 = 0
    /// Interfaces sending router advertisements (`Stack+IPv6`).
    var advertising: [InterfaceIndex: AdvertisingState] = [:]
    /// Interfaces owing an answer to an MLD query, and when.
    var mldReportDue: [InterfaceIndex: Int64] = [:]
    /// IPv6 addresses under duplicate address detection, with the probes
    /// left and when the next step is due; and those found duplicated.
    var tentative6: [AddressKey6: (probesLeft: Int, due: Int64)] = [:]
    var duplicated6: Set<AddressKey6> = []
    /// IPSELSRC preference numbers of IPv6 addresses (absent: 0).
    var preferences6: [AddressKey6: Int16] = [:]
    var events: [StackEvent] = []
    var sourcePolicies = SourcePolicies()
    /// Sockets and tunnels: fixed tables of plain values, read and written
    /// in place on the packet path (no copies, no reference counting).
    let socketTable: UnsafeMutablePointer<PCB>
    var socketCount = 0
    var socketQueues: [Int: [(packet: PacketHandle, from: IPAddress, port: UInt16)]] = [:]
    let tunnelStates: UnsafeMutablePointer<TunnelState>
    /// The SA database of protected tunnels (`Stack+IPsec`).
    let sas: SecurityAssociations
    var tunnelConfigs: [Int: TunnelConfiguration] = [:]
    var tunnelDownReasons: [Int: String] = [:]
    /// Where each tunnel's learned path MTU came from.
    var pathMTUSources: [Int: String] = [:]
    /// ECMP next hops withdrawn because they did not answer ARP, with when
    /// to ask them again.
    var failedNextHops: [NextHopKey: Int64] = [:]
    /// The trace session, if one runs (`startTrace`).
    var tracer: Tracer?
    /// Captures by interface (`Stack+Capture`); an interface's `capture` bits say which way.
    var captures: [InterfaceIndex: Capturer] = [:]
    /// Interfaces with a host twin: what they punt and their rate limit (`Stack+Twins`).
    var twins: [InterfaceIndex: TwinState] = [:]
    /// What removed interfaces had counted (the ledger sums live and removed ones).
    var retiredCounters = InterfaceCounters()
    /// TCP: connections, listeners, the SYN cache and the vestiges (`Stack+TCP`).
    let tcp: TCPTable
    /// What the stack sent to its own addresses, with the interface that
    /// owns the address: delivered at the next `flush`, after the output
    /// that made it has finished (as a loopback interface's queue), so no
    /// input runs inside the send that caused it. Bounded by `loopbackLimit`.
    var loopback: [(packet: PacketHandle, rx: InterfaceIndex)] = []
    static let loopbackLimit = 256
    /// Route-cache counters of the stack's sockets.
    public internal(set) var routeCacheStatistics = RouteCache.Statistics()

    public init(name: String, configuration: StackConfiguration = StackConfiguration(),
                pool: PacketPool, hypercalls: any Hypercalls) {
        self.name = name
        self.configuration = configuration
        self.pool = pool
        self.hypercalls = hypercalls
        let n = configuration.maxInterfaces
        ifs = .allocate(capacity: n)
        for i in 0..<n {
            (ifs + i).initialize(to: InterfaceSlot(mac: 0, mtu: 1500, up: false, exists: false, primaryAddress: 0,
                                                   counters: InterfaceCounters(), txCount: 0))
        }
        txCapacity = configuration.transmitQueueCapacity
        coalesceLinks = .allocate(capacity: txCapacity)
        coalesceLinks.initialize(repeating: -1, count: txCapacity)
        coalesceAbsorbed = .allocate(capacity: txCapacity)
        coalesceAbsorbed.initialize(repeating: false, count: txCapacity)
        coalesceOpenRuns = .allocate(capacity: Stack.coalesceRuns)
        coalesceOpenRuns.initialize(repeating: CoalesceRun(), count: Stack.coalesceRuns)
        warmValues = .allocate(capacity: Stack.warmBatch)
        warmValues.initialize(repeating: 0, count: Stack.warmBatch)
        warmKeys = .allocate(capacity: Stack.warmBatch)
        warmKeys.initialize(repeating: .any, count: Stack.warmBatch)
        txQueues = .allocate(capacity: n * txCapacity)
        dirty = .allocate(capacity: n)
        dropCounters = .allocate(capacity: DropReason.counterCount)
        dropCounters.initialize(repeating: 0, count: DropReason.counterCount)
        interfaceDropCounters = .allocate(capacity: n * DropReason.counterCount)
        interfaceDropCounters.initialize(repeating: 0, count: n * DropReason.counterCount)
        hot = .allocate(capacity: 1)
        hot.initialize(to: HotState())
        switch configuration.fib {
        case .own:
            fib = RoutingTable()
            fibReader = nil
        case .writer(let shared):
            fib = RoutingTable(writing: shared)
            fibReader = nil
        case .reader(let shared, let index):
            precondition(shared.slots != nil, "a shared FIB's writer is made before its readers")
            precondition(index >= 0 && index < shared.readerCount, "reader index out of range")
            fib = RoutingTable()
            fibReader = (shared, index)
        }
        fibPublished = fibReader?.shared.generation
        fibAnnouncement = fibReader.map { $0.shared.announcement($0.index) }
        let table6 = RoutingTable6()
        fib6 = table6
        fib6View = .allocate(capacity: 1)
        fib6View.initialize(to: FIBView(table6))
        fibView = .allocate(capacity: 1)
        if let r = fibReader {
            fibView.initialize(to: FIBView(r.shared, generation: 0))
        } else {
            fibView.initialize(to: FIBView(fib))
        }
        socketTable = .allocate(capacity: configuration.maxSockets)
        socketTable.initialize(repeating: PCB(proto: .udp, backend: .stack), count: configuration.maxSockets)
        tunnelStates = .allocate(capacity: configuration.maxInterfaces)
        tunnelStates.initialize(repeating: TunnelState(), count: configuration.maxInterfaces)
        let seed = FlowSeed(hypercalls.random(), hypercalls.random(), hypercalls.random())
        neighbors = NeighborTable<UInt32>(capacity: configuration.arp.maxEntries,
                                  pendingPerEntry: configuration.arp.pendingPerNeighbor,
                                  reachableTime: configuration.arp.reachableTime.nanoseconds,
                                  staleTime: configuration.arp.staleTime.nanoseconds, seed: seed)
        neighbors6 = NeighborTable<IPv6Address>(capacity: configuration.arp.maxEntries,
                                                pendingPerEntry: configuration.arp.pendingPerNeighbor,
                                                reachableTime: configuration.arp.reachableTime.nanoseconds,
                                                staleTime: configuration.arp.staleTime.nanoseconds, seed: seed)
        flows = FlowTable(capacity: configuration.ipflow.enabled ? configuration.ipflow.maxFlows : 0, seed: seed)
        flows6 = Flow6Table(maxFlows: configuration.ipflow.enabled ? configuration.ipflow.maxFlows : 0, seed: seed)
        sas = SecurityAssociations(capacity: configuration.maxSAs)
        reassembly = ReassemblyTable(queues: configuration.reassembly.maxQueues,
                                     maxPieces: configuration.reassembly.maxPieces,
                                     timeout: configuration.reassembly.timeout)
        events.reserveCapacity(configuration.eventCapacity)
        tcp = TCPTable(configuration: configuration.tcp, random: hypercalls.random, now: hypercalls.now().nanoseconds)
        hot.pointee.nextIPID = UInt16(truncatingIfNeeded: hypercalls.random())
        hot.pointee.now = hypercalls.now().nanoseconds
        hot.pointee.icmpBucket = TokenBucket(rate: configuration.icmp.errorsPerSecond, burst: configuration.icmp.errorBurst,
                                             now: hot.pointee.now)
    }

    deinit {
        releaseHeldPackets()
        ifs.deallocate(); txQueues.deallocate(); dirty.deallocate()
        coalesceLinks.deallocate(); coalesceAbsorbed.deallocate(); coalesceOpenRuns.deallocate()
        warmValues.deallocate(); warmKeys.deallocate()
        dropCounters.deallocate(); interfaceDropCounters.deallocate(); hot.deallocate(); fibView.deallocate()
        socketTable.deinitialize(count: configuration.maxSockets); socketTable.deallocate()
        tunnelStates.deinitialize(count: configuration.maxInterfaces); tunnelStates.deallocate()
        neighbors.deallocate(); neighbors6.deallocate(); flows.deallocate(); flows6.deallocate(); fib.deallocate(); fib6.deallocate(); fib6View.deallocate()
        sas.deallocate()
    }

    /// Returns every packet the stack holds (pending, reassembly, transmit) to the pool.
    func releaseHeldPackets() {
        for (_, q) in socketQueues { for d in q { pool.free(d.packet) } }
        socketQueues.removeAll()
        neighbors.forEachLive { i in neighbors.drainPending(i) { pool.free($0) } }
        reassembly.releaseAll(pool: pool)
        for i in 0..<configuration.maxInterfaces {
            for j in 0..<ifs[i].txCount { pool.free(txQueues[i * txCapacity + j]) }
            ifs[i].txCount = 0
        }
        hot.pointee.dirtyCount = 0
    }

    // MARK: Observation

    /// The stack's clock as of the last entry point.
    public var now: Timestamp { Timestamp(nanoseconds: hot.pointee.now) }
    public var counters: StackCounters { hot.pointee.counters }
    /// Packets dropped for `reason` since the stack started.
    public func drops(_ reason: DropReason) -> UInt64 { dropCounters[reason.counterIndex] }
    /// Every non-zero drop counter.
    public var dropCounts: [DropReason: UInt64] {
        var d: [DropReason: UInt64] = [:]
        for r in DropReason.allCases where dropCounters[r.counterIndex] != 0 { d[r] = dropCounters[r.counterIndex] }
        return d
    }
    public var totalDrops: UInt64 { DropReason.allCases.reduce(0) { $0 + dropCounters[$1.counterIndex] } }

    /// Packets dropped for `reason` that arrived on (or were leaving by) `interface`.
    public func drops(_ reason: DropReason, on interface: InterfaceIndex) -> UInt64 {
        guard interface >= 0, interface < configuration.maxInterfaces else { return 0 }
        return interfaceDropCounters[interface &* DropReason.counterCount &+ reason.counterIndex]
    }

    /// Every non-zero drop counter of one interface.
    public func dropCounts(on interface: InterfaceIndex) -> [DropReason: UInt64] {
        var d: [DropReason: UInt64] = [:]
        for r in DropReason.allCases where drops(r, on: interface) != 0 { d[r] = drops(r, on: interface) }
        return d
    }

    /// Counts losses the host saw outside the stack (kernel queues, port
    /// buffers, devices gone), so every packet lost is in one table.
    public func recordDrops(_ reason: DropReason, count: UInt64, on interface: InterfaceIndex) {
        guard count > 0, interface >= 0, interface < configuration.maxInterfaces else { return }
        dropCounters[reason.counterIndex] &+= count
        interfaceDropCounters[interface &* DropReason.counterCount &+ reason.counterIndex] &+= count
        hot.pointee.counters.dropsOutsideStack &+= count
    }

    /// Whether events are waiting (one compare; the owner polls it per wake-up).
    public var hasEvents: Bool { !events.isEmpty }
    /// Takes the oldest pending event.
    public func popEvent() -> StackEvent? { events.isEmpty ? nil : events.removeFirst() }
    /// Takes every pending event.
    public func drainEvents() -> [StackEvent] {
        defer { events.removeAll(keepingCapacity: true) }
        return events
    }

    func report(_ e: StackEvent) {
        if events.count < configuration.eventCapacity { events.append(e) } else { hot.pointee.counters.eventsLost += 1 }
    }

    // MARK: Interfaces

    public func interface(named name: String) -> InterfaceIndex? {
        interfaceNames.indices.first { interfaceNames[$0] == name && ifs[$0].exists }
    }

    public func interfaceName(_ i: InterfaceIndex) -> String {
        i < interfaceNames.count ? interfaceNames[i] : "#\(i)"
    }

    public var interfaces: [InterfaceStatus] {
        interfaceNames.indices.filter { ifs[$0].exists }.map(status)
    }

    public func status(_ i: InterfaceIndex) -> InterfaceStatus {
        InterfaceStatus(name: interfaceNames[i], index: i, mac: MACAddress(rawValue: ifs[i].mac), mtu: ifs[i].mtu,
                        up: ifs[i].up, addresses: interfaceAddresses[i], counters: ifs[i].counters)
    }

    /// Adds an interface, down, with no addresses.
    @discardableResult
    public func addInterface(name: String, mac: MACAddress, mtu: Int = 1500) throws(InterfaceError) -> InterfaceIndex {
        guard interface(named: name) == nil else { throw .duplicateName(name) }
        guard mtu >= 68, mtu <= pool.dataCapacity - EthernetFrame.taggedHeaderLength else { throw .mtuOutOfRange(mtu) }
        let index: Int
        if let reuse = interfaceNames.indices.first(where: { !ifs[$0].exists }) {
            index = reuse
            interfaceNames[index] = name
            interfaceAddresses[index] = []
            interfaceAddresses6[index] = []
        } else {
            guard interfaceNames.count < configuration.maxInterfaces else { throw .tooManyInterfaces(configuration.maxInterfaces) }
            index = interfaceNames.count
            interfaceNames.append(name)
            interfaceAddresses.append([])
            interfaceAddresses6.append([])
        }
        ifs[index] = InterfaceSlot(mac: mac.rawValue, mtu: mtu, up: false, exists: true, primaryAddress: 0,
                                   counters: InterfaceCounters(), txCount: 0)
        captures[index] = nil
        (interfaceDropCounters + index &* DropReason.counterCount).update(repeating: 0, count: DropReason.counterCount)
        if writesFIB { fib.setInterface(index, up: false) }
        fib6.setInterface(index, up: false)
        return index
    }

    /// Removes an interface with its addresses, routes and neighbours.
    public func removeInterface(_ i: InterfaceIndex) throws(InterfaceError) {
        try check(i)
        for a in interfaceAddresses[i] { try removeAddress(a.address.address, from: i) }
        for a in interfaceAddresses6[i] { try removeAddress(a.address, from: i) }
        advertising[i] = nil
        scheduleAdvertisements()
        if writesFIB { fib.removeAll(through: i) }
        fib6.removeAll(through: i)
        flushNeighbors(on: i)
        for j in 0..<ifs[i].txCount { pool.free(txQueues[i * txCapacity + j]) }
        ifs[i].txCount = 0
        ifs[i].exists = false
        // A capture on it ends: what it holds can still be read.
        ifs[i].capture = 0
        captures[i]?.remaining = 0
        // The ledger keeps what the interface counted.
        retiredCounters.add(ifs[i].counters)
        ifs[i].counters = InterfaceCounters()
        ifs[i].up = false
        if writesFIB { fib.setInterface(i, up: true) }
        fib6.setInterface(i, up: true)
        sourcePolicies.perInterface[i] = nil
    }

    func check(_ i: InterfaceIndex) throws(InterfaceError) {
        guard i >= 0, i < interfaceNames.count, ifs[i].exists else { throw .noSuchInterface(i) }
    }

    public func setUp(_ i: InterfaceIndex, _ up: Bool) throws(InterfaceError) {
        try check(i)
        guard ifs[i].up != up else { return }
        enter()
        ifs[i].up = up
        if writesFIB { fib.setInterface(i, up: up) }
        fib6.setInterface(i, up: up)
        if up {
            for a in interfaceAddresses[i] { sendARPRequest(for: a.address.address, on: i, unicastTo: nil, gratuitous: true) }
            reportGroupChange(on: i, before: [])
        } else {
            flushNeighbors(on: i)
        }
        fibChanged()
        flush()
    }

    public func setMTU(_ i: InterfaceIndex, _ mtu: Int) throws(InterfaceError) {
        try check(i)
        guard mtu >= 68, mtu <= pool.dataCapacity - EthernetFrame.taggedHeaderLength else { throw .mtuOutOfRange(mtu) }
        ifs[i].mtu = mtu
        fibChanged()
    }

    public func setMAC(_ i: InterfaceIndex, _ mac: MACAddress) throws(InterfaceError) {
        try check(i)
        ifs[i].mac = mac.rawValue
    }

    /// Marks an interface as mirrored from the host: the host answers ARP
    /// and ICMP for its addresses; the stack forwards and runs its sockets.
    public func setHostOwned(_ i: InterfaceIndex, _ owned: Bool) throws(InterfaceError) {
        try check(i)
        ifs[i].hostOwned = owned
    }

    /// Records a neighbour learnt elsewhere (the host's table): reachable
    /// now, aging as usual; packets waiting for it go out.
    public func learnNeighbor(_ address: IPv4Address, on i: InterfaceIndex, mac: MACAddress) throws(InterfaceError) {
        try check(i)
        enter()
        var idx = neighbors.find(address.rawValue, UInt16(i))
        if idx == NeighborTable<UInt32>.none { idx = createNeighbor(address.rawValue, i) }
        neighbors.confirm(idx, mac: mac.rawValue, now: hot.pointee.now)
        nextHopAnswered(address.rawValue, on: i)
        releasePending(idx, interface: i)
        flush()
    }

    /// The owner replica resolves a neighbour a follower needs: asks for
    /// it (broadcast, or unicast to confirm a stale entry), or, if it is
    /// known and confirmed, reports it again for the followers.
    public func resolveNeighbor(_ address: IPv4Address, on i: InterfaceIndex) {
        guard (try? check(i)) != nil, ifs[i].up, ifs[i].tunnel < 0 else { return }
        enter()
        resolveOnBehalf(neighbors, address.rawValue, on: i, create: { createNeighbor(address.rawValue, i) },
                        ask: { sendARPRequest(for: address, on: i, unicastTo: $0, gratuitous: false) },
                        known: { report(.neighborLearned(address: address, interface: i, mac: MACAddress(rawValue: $0))) })
        flush()
    }

    /// The owner's side of a follower's question, for ARP and neighbour
    /// discovery alike: an unknown neighbour is asked for (and its entry
    /// waits, timed), a reachable one is reported again, a stale one is
    /// asked again once its probe is due; one being asked is left alone.
    func resolveOnBehalf<A>(_ table: NeighborTable<A>, _ key: A, on i: InterfaceIndex, create: () -> UInt32,
                            ask: (_ unicastTo: UInt64?) -> Void, known: (_ mac: UInt64) -> Void) {
        let idx = table.find(key, UInt16(i))
        if idx == NeighborTable<A>.none {
            let n = create()
            let e = table.entries + Int(n)
            e.pointee.probes = 1
            e.pointee.nextProbe = hot.pointee.now + configuration.arp.retransmitInterval.nanoseconds
            table.schedule(n)
            return ask(nil)
        }
        let e = table.entries + Int(idx)
        switch e.pointee.state {
        case .reachable:
            known(e.pointee.mac)
        case .stale where hot.pointee.now >= e.pointee.nextProbe:
            e.pointee.nextProbe = hot.pointee.now + configuration.arp.retransmitInterval.nanoseconds
            ask(e.pointee.mac)
        default:
            break  // being asked already
        }
    }

    /// Removes the routes of one origin for a prefix (with this metric, if
    /// given). Returns how many went.
    @discardableResult
    public func removeRoutes(_ prefix: IPv4Prefix, origin: RouteOrigin, metric: UInt32? = nil) -> Int {
        guard writesFIB else { return 0 }
        return fib.removeRoutes(prefix, origin: origin, metric: metric)
    }

    /// Adds an address: its subnet becomes a connected route, the address a
    /// local route and the subnet broadcast a broadcast route. A gratuitous
    /// ARP announces it when the interface is up.
    public func addAddress(_ a: IPv4InterfaceAddress, to i: InterfaceIndex, preference: Int16 = 0) throws(InterfaceError) {
        try check(i)
        for list in interfaceAddresses where list.contains(where: { $0.address.address == a.address }) {
            throw .addressExists(a)
        }
        enter()
        interfaceAddresses[i].append(InterfaceAddress(address: a, preference: preference))
        if ifs[i].primaryAddress == 0 { ifs[i].primaryAddress = a.address.rawValue }
        if writesFIB {
            try? fib.add(Route(prefix: IPv4Prefix(address: a.address, length: 32), interface: i, origin: .connected, kind: .local))
            if a.prefixLength < 32 {
                try? fib.add(Route(prefix: a.subnet, interface: i, origin: .connected, kind: .connected))
            }
            if let b = a.broadcast {
                try? fib.add(Route(prefix: IPv4Prefix(address: b, length: 32), interface: i, origin: .connected, kind: .broadcast))
            }
        } else {
            fibChanged()
        }
        if ifs[i].up { sendARPRequest(for: a.address, on: i, unicastTo: nil, gratuitous: true) }
        flush()
    }

    public func removeAddress(_ address: IPv4Address, from i: InterfaceIndex) throws(InterfaceError) {
        try check(i)
        guard let k = interfaceAddresses[i].firstIndex(where: { $0.address.address == address }) else {
            throw .noSuchAddress(address)
        }
        let a = interfaceAddresses[i].remove(at: k).address
        ifs[i].primaryAddress = interfaceAddresses[i].first?.address.address.rawValue ?? 0
        guard writesFIB else { return fibChanged() }
        fib.remove(IPv4Prefix(address: a.address, length: 32), interface: i, kind: .local)
        if a.prefixLength < 32, !interfaceAddresses[i].contains(where: { $0.address.subnet == a.subnet }) {
            fib.remove(a.subnet, interface: i, kind: .connected, origin: .connected)
            // Gateway routes whose next hop was only reachable through this subnet go too.
            for r in fib.routes where r.kind == .gateway && r.interface == i {
                if let nh = r.nextHop, a.subnet.contains(nh) { fib.remove(r.prefix, nextHop: nh, interface: i) }
            }
        }
        if let b = a.broadcast, !interfaceAddresses[i].contains(where: { $0.address.broadcast == b }) {
            fib.remove(IPv4Prefix(address: b, length: 32), interface: i, kind: .broadcast)
        }
    }

    /// Sets an address's IPSELSRC preference number.
    public func setPreference(_ address: IPv4Address, on i: InterfaceIndex, _ preference: Int16) throws(InterfaceError) {
        try check(i)
        guard let k = interfaceAddresses[i].firstIndex(where: { $0.address.address == address }) else {
            throw .noSuchAddress(address)
        }
        interfaceAddresses[i][k].preference = preference
        fibChanged()
    }

    /// True when `address` is configured on any interface.
    public func isLocal(_ address: IPv4Address) -> Bool {
        fibView.pointee.lookupRoute(address)?.kind == .local
    }

    // MARK: Routes

    /// Adds a route. With `via` and no interface, the interface is the one
    /// whose connected subnet holds the gateway; with neither, it is refused.
    /// Routes to one prefix with the same metric form an ECMP set: each
    /// flow takes one member, chosen by a hash (`StackConfiguration.ecmpHash`),
    /// members drawing flows in proportion to their `weight`.
    public func addRoute(_ prefix: IPv4Prefix, via gateway: IPv4Address? = nil, interface: InterfaceIndex? = nil,
                         metric: UInt32 = 0, origin: RouteOrigin = .static, weight: UInt8 = 1) throws(RouteError) {
        var r = try makeRoute(prefix, via: gateway, interface: interface, metric: metric, origin: origin)
        r.weight = min(max(weight, 1), Route.maxWeight)
        guard writesFIB else { return }
        try fib.add(r)
    }

    /// The ECMP set that forwards for `prefix` (a single route when there is one path).
    public func equalCostSet(for prefix: IPv4Prefix) -> [Route] { fib.equalCostSet(for: prefix) }

    /// Replaces the routes for `prefix` with the same metric (and origin) by
    /// this one, or adds it if there are none (`ip route replace`).
    public func replaceRoute(_ prefix: IPv4Prefix, via gateway: IPv4Address? = nil, interface: InterfaceIndex? = nil,
                             metric: UInt32 = 0, origin: RouteOrigin = .static) throws(RouteError) {
        let r = try makeRoute(prefix, via: gateway, interface: interface, metric: metric, origin: origin)
        guard writesFIB else { return }
        for old in fib.routes(for: prefix) where old.metric == metric && !old.isInternal && old.origin == origin {
            fib.remove(prefix, nextHop: old.nextHop, interface: old.interface, kind: old.kind, origin: origin)
        }
        try fib.add(r)
    }

    /// Deletes the non-internal routes for `prefix` (only those via `gateway`, if given).
    public func deleteRoute(_ prefix: IPv4Prefix, via gateway: IPv4Address? = nil) throws(RouteError) {
        guard writesFIB else { return }
        var removed = 0
        for old in fib.routes(for: prefix) where !old.isInternal {
            if let g = gateway, old.nextHop != g { continue }
            removed += fib.remove(prefix, nextHop: old.nextHop, interface: old.interface, kind: old.kind, origin: old.origin)
        }
        guard removed > 0 else { throw .notFound(prefix) }
    }

    func makeRoute(_ prefix: IPv4Prefix, via gateway: IPv4Address?, interface: InterfaceIndex?,
                   metric: UInt32, origin: RouteOrigin) throws(RouteError) -> Route {
        if let i = interface {
            guard i >= 0, i < interfaceNames.count, ifs[i].exists else { throw .noSuchInterface(i) }
        }
        guard let g = gateway else {
            guard let i = interface else { throw .invalid("a route needs a next hop or an interface") }
            return Route(prefix: prefix, interface: i, metric: metric, origin: origin, kind: .connected)
        }
        // The gateway must be on a connected subnet (of the given interface, if any).
        let onLink = interfaceAddresses.indices.first { i in
            ifs[i].exists && (interface == nil || interface == i)
                && interfaceAddresses[i].contains { $0.address.subnet.contains(g) && $0.address.address != g }
        }
        guard let i = onLink else { throw .nextHopUnreachable(g) }
        return Route(prefix: prefix, nextHop: g, interface: i, metric: metric, origin: origin, kind: .gateway)
    }

    /// The operator's routes for exactly `prefix`.
    public func routes(for prefix: IPv4Prefix) -> [Route] { fib.routes(for: prefix).filter { !$0.isInternal } }

    /// The routes an operator manages (local and broadcast host routes left out).
    public var routes: [Route] { fib.routes.filter { !$0.isInternal } }

    /// The route a packet to `destination` would take.
    public func lookup(_ destination: IPv4Address) -> Route? { fibView.pointee.lookupRoute(destination) }

    /// Called after any change that can alter a forwarding decision.
    func fibChanged() {
        // Holders of cached routes compare against the FIB generation;
        // interface changes count as route changes for them.
        if writesFIB {
            fib.touch()
        } else {
            localGeneration &+= 1
            fibView.pointee.generation = fibSeen &+ localGeneration
        }
    }

    // MARK: Neighbours

    public var neighborList: [Neighbor] {
        neighbors.liveIndices.map { i in
            let e = neighbors.entries[Int(i)]
            return Neighbor(address: IPv4Address(rawValue: e.address), interface: Int(e.interface),
                            mac: e.state == .incomplete ? nil : MACAddress(rawValue: e.mac), state: e.state,
                            pending: Int(e.pendingCount),
                            age: Interval(nanoseconds: hot.pointee.now - e.confirmed))
        }
    }

    func flushNeighbors(on i: InterfaceIndex) {
        neighbors.forEachLive { idx in
            guard Int(neighbors.entries[Int(idx)].interface) == i else { return }
            neighbors.drainPending(idx) { p in drop(p, .interfaceDown, tx: i) }
            neighbors.remove(idx)
        }
        neighbors6.forEachLive { idx in
            guard Int(neighbors6.entries[Int(idx)].interface) == i else { return }
            neighbors6.drainPending(idx) { p in drop(p, .interfaceDown, tx: i) }
            neighbors6.remove(idx)
        }
    }

    /// Checks every table's internal consistency (tests call this). The
    /// FIBs, which only control changes, may be left out (`fibs: false`:
    /// the fuzzer checks them now and then, the rest after every packet).
    public func checkInvariants(fibs: Bool = true) {
        if fibs {
            fib.checkInvariants()
            fib6.checkInvariants()
        }
        neighbors.checkInvariants()
        neighbors6.checkInvariants()
        flows.checkInvariants()
    }

    // MARK: Entry bookkeeping

    /// Reads the clock once for this entry point.
    func enter() {
        hot.pointee.now = hypercalls.now().nanoseconds
        if fibPublished != nil { readFIB() }
    }

    /// A reader's quiescent point, once per batch: it holds nothing from
    /// the shared FIB here, announces the generation it now reads, and
    /// flushes its cached routes when that moved.
    @inline(__always)
    func readFIB() {
        let g: UInt64
        if _slowPath(!fibAwake) {
            g = fibReader!.shared.wake(fibReader!.index)
            fibAwake = true
        } else {
            g = fibPublished.unsafelyUnwrapped.pointee.load(ordering: .acquiring)
            guard g != fibSeen else { return }
            fibAnnouncement.unsafelyUnwrapped.pointee.store(g, ordering: .releasing)
        }
        fibSeen = g
        fibView.pointee.generation = g &+ localGeneration
    }

    /// Before the thread sleeps: a reader of a shared FIB says it holds
    /// nothing from it, so that the writer need not wait for it. Any call
    /// into the stack after this reads the FIB afresh.
    public func quiesce() {
        guard let r = fibReader, fibAwake else { return }
        r.shared.sleep(r.index)
        fibAwake = false
    }

    /// A reader of a shared FIB comes back (before work that is not a
    /// packet: jobs from the control thread, timers).
    public func resumeReading() {
        if fibPublished != nil { readFIB() }
    }

    /// A drop of a packet that arrived on `rx`, before it was forwarded or
    /// consumed (the ledger's input side).
    @inline(__always)
    func drop(_ packet: PacketHandle, _ reason: DropReason, rx: InterfaceIndex) {
        if _slowPath(reason.rawValue == hot.pointee.uncountedReason) { return pool.free(packet) }
        countDrops(reason, 1, rx: rx)
        pool.free(packet)
    }

    /// Makes every later drop of `reason` uncounted — the bug the packet
    /// ledger exists to catch (tests only).
    func dropWithoutCounting(_ reason: DropReason) { hot.pointee.uncountedReason = reason.rawValue }

    /// A drop on the way out of `tx` (its counters, not a receiving
    /// interface's): the ledger's output side.
    @inline(__always)
    func drop(_ packet: PacketHandle, _ reason: DropReason, tx: InterfaceIndex) {
        if _slowPath(reason.rawValue == hot.pointee.uncountedReason) { return pool.free(packet) }
        dropCounters[reason.counterIndex] &+= 1
        ifs[tx].counters.txDrops &+= 1
        interfaceDropCounters[tx &* DropReason.counterCount &+ reason.counterIndex] &+= 1
        pool.free(packet)
    }

    /// A drop that belongs to no interface (no route, a full socket queue,
    /// a neighbour table making room): counted on the ledger's `side`.
    func drop(_ packet: PacketHandle, _ reason: DropReason, side: PacketLedger.Side) {
        if _slowPath(reason.rawValue == hot.pointee.uncountedReason) { return pool.free(packet) }
        dropCounters[reason.counterIndex] &+= 1
        switch side {
        case .input: hot.pointee.counters.inputDropsElsewhere &+= 1
        case .output: hot.pointee.counters.outputDropsElsewhere &+= 1
        }
        pool.free(packet)
    }

    /// Counts `count` input drops on `rx` whose buffers are already gone
    /// (fragments held in a reassembly queue that is discarded).
    @inline(__always)
    func countDrops(_ reason: DropReason, _ count: Int, rx: InterfaceIndex) {
        let n = UInt64(count)
        dropCounters[reason.counterIndex] &+= n
        ifs[rx].counters.rxDrops &+= n
        interfaceDropCounters[rx &* DropReason.counterCount &+ reason.counterIndex] &+= n
    }

    /// Hands every queued frame to the host, one call per interface.
    /// The host must not re-enter the stack from `transmit`.
    public func flush() {
        if _slowPath(!loopback.isEmpty) { drainLoopback() }
        let n = hot.pointee.dirtyCount
        guard n > 0 else { return }
        for k in 0..<n { handOver(dirty[k]) }
        hot.pointee.dirtyCount = 0
    }

    /// Hands interface `i`'s queue to the host and empties it.
    @inline(__always)
    func handOver(_ i: InterfaceIndex) {
        var count = ifs[i].txCount
        ifs[i].txCount = 0
        // Segments of one flow become one super-frame for a port that takes them.
        if ifs[i].offloads && count > 1 { count = coalesceQueue(i, count: count) }
        if count > 0 {
            hypercalls.transmit(UnsafeBufferPointer(start: txQueues + i &* txCapacity, count: count), interface: i, stack: self)
        }
    }
}

extension IPRoutingTable {
    /// Advances the generation without a route change (interface state, MTU, preferences).
    mutating func touch() { bumpGeneration() }
}
