/// Limits and timers of one stack. Every table is sized here, up front.
public struct StackConfiguration: Sendable {
    /// Forward packets not addressed to the stack (a router); false makes a host.
    public var forwarding = true
    /// TTL of packets the stack originates.
    public var defaultTTL: UInt8 = 64
    public var maxInterfaces = 64
    /// Sockets the stack can hold (tunnels use one each).
    public var maxSockets = 256
    /// IPsec SAs (each direction of a child SA is one; two more per tunnel during a rekey).
    public var maxSAs = 256
    /// Frames an interface can hold between two flushes.
    public var transmitQueueCapacity = 1024
    /// Events kept until the owner reads them; more are counted and lost.
    public var eventCapacity = 1024
    public var arp = ARP()
    /// Duplicate address detection (RFC 4862 section 5.4): solicitations
    /// sent for a new IPv6 address before it is used, one `arp.retransmitInterval`
    /// apart; 0 uses addresses at once (Linux's dad_transmits).
    public var dadTransmits = 1
    public var icmp = ICMP()
    public var reassembly = Reassembly()
    public var ipflow = IPFlow()
    /// What an ECMP set hashes to pick a member (and what keys ipflow flows).
    public var ecmpHash = ECMPHash.l4
    /// How this stack takes part when it is one of several replicas
    /// (workers). Alone (the default) it does everything itself.
    public var replica = Replica.alone
    /// Whether the stack keeps its own FIB or writes or reads one shared
    /// with other replicas (`SharedFIB`).
    public var fib = FIBSharing.own
    /// The stack's TCP: buffers, timers, limits, MSLT and VTW (`TCPTable`).
    public var tcp = TCP()

    public enum Replica: Sendable, Equatable {
        /// The only stack: it runs the tunnels' keepalives and judges their lines.
        case alone
        /// The replica that owns what must happen once on a link or a
        /// tunnel: it sends the ARP requests and announcements and the
        /// tunnels' keepalives, and decides the tunnels' lines, reporting
        /// every change (`StackEvent.tunnelLine`) for the others.
        case owner
        /// Another replica: it sends no ARP requests or announcements (it
        /// reports `StackEvent.neighborWanted` for the owner's
        /// `resolveNeighbor` and learns the answer through `learnNeighbor`)
        /// and no keepalives (answers that reach it are reported,
        /// `StackEvent.keepaliveAnswered`, for the owner); it takes tunnel
        /// lines from the owner (`setTunnelLine`).
        case follower
    }

    /// The fields of a packet an equal-cost multipath set hashes on.
    public enum ECMPHash: String, Sendable, CaseIterable {
        /// Source and destination address.
        case l3
        /// Addresses, and the ports of TCP and UDP packets that are not
        /// fragments; flows are then keyed by the ports too.
        case l4
    }

    public struct ARP: Sendable {
        public var maxEntries = 4096
        /// Packets held per unresolved next hop; the oldest is dropped beyond this.
        public var pendingPerNeighbor = 8
        /// A confirmed entry turns stale after this long.
        public var reachableTime = Interval.seconds(30)
        /// A stale entry is removed after this long without confirmation.
        public var staleTime = Interval.seconds(60)
        /// Time between requests for an unresolved next hop.
        public var retransmitInterval = Interval.seconds(1)
        /// Requests sent before the next hop is declared unreachable.
        public var maxProbes = 3
        /// Report what ARP teaches this stack (`StackEvent.neighborLearned`)
        /// so that its owner can tell the other replicas: with several
        /// workers, the answer to one worker's request may reach another.
        public var shareLearned = false
        /// A confirmation of an entry that is already reachable with the
        /// same MAC is reported at most this often (a new entry, a new MAC
        /// or an answered request always is).
        public var shareInterval = Interval.seconds(1)
        public init() {}
    }

    public struct ICMP: Sendable {
        /// Token-bucket rate for ICMP errors (RFC 1812 section 4.3.2.8).
        public var errorsPerSecond = 100
        /// Bucket depth: errors that may go out back to back.
        public var errorBurst = 50
        public init() {}
    }

    public struct Reassembly: Sendable {
        /// Datagrams being reassembled at once.
        public var maxQueues = 64
        /// Disjoint pieces one datagram may arrive in.
        public var maxPieces = 64
        public var timeout = Interval.seconds(30)
        public init() {}
    }

    /// The ipflow fast path: remembered forwarding decisions per
    /// (destination, source, TOS).
    public struct IPFlow: Sendable {
        public var enabled = true
        /// Flows kept; the oldest is evicted when a new one needs room.
        public var maxFlows = 65536
        /// A flow unused this long is removed.
        public var idleTimeout = Interval.seconds(30)
        public init() {}
    }

    public init() {}

    /// A host: no forwarding, small tables.
    public static var host: StackConfiguration {
        var c = StackConfiguration()
        c.forwarding = false
        c.maxInterfaces = 8
        c.arp.maxEntries = 256
        c.reassembly.maxQueues = 16
        c.ipflow.enabled = false
        c.ipflow.maxFlows = 0
        return c
    }
}
