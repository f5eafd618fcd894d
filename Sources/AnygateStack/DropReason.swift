/// Why the stack dropped a packet. Every drop has exactly one reason, and
/// each reason has its own counter (see `counterIndex`): the counter's
/// index is the case's position, and `description` is one exhaustive
/// switch, so a new reason cannot lack a counter or a name.
public enum DropReason: Int, CaseIterable, Hashable, Sendable, CustomStringConvertible {
    // Link layer
    case frameTruncated
    case notForUs
    case vlanNotConfigured
    case unknownEtherType
    case interfaceDown
    /// A frame whose source MAC is the receiving interface's own: another
    /// device on the link uses our address (or the link loops).
    case ownSourceMAC
    // ARP
    case arpMalformed
    case arpNotForUs
    case arpQueueOverflow
    case neighborUnresolved
    case neighborTableFull
    // IPv4 validation (RFC 1812 section 5.2.2)
    case ipTruncated
    case ipBadVersion
    case ipBadHeaderLength
    case ipBadTotalLength
    case ipBadChecksum
    case ipBadOption
    case martianSource
    case martianDestination
    case linkBroadcastNotForwarded
    case multicastNotSupported
    case ipv6NotSupported
    /// An IPv6 header that does not parse, or a payload length past the frame.
    case ipv6Malformed
    /// An IPv6 extension-header chain refused (`IPv6HeaderChain`).
    case ipv6HeaderChain
    /// A neighbour-discovery message that fails RFC 4861's checks.
    case ndInvalid
    // Forwarding
    case notForwarding
    case ttlExpired
    case noRoute
    case fragmentationNeeded
    case blackhole
    // Fragments and reassembly
    case fragmentOverlap
    case fragmentTooLarge
    case fragmentTooManyPieces
    case reassemblyTimeout
    case reassemblyQueueEvicted
    // Local delivery
    case icmpMalformed
    case protocolUnreachable
    case portUnreachable
    case broadcastEchoIgnored
    /// A UDP datagram for us with a bad checksum: discarded silently (RFC 1122 4.1.3.4).
    case udpBadChecksum
    case udpMalformed
    // Sockets and tunnels
    case socketQueueFull
    case greMalformed
    case greBadChecksum
    case greUnsupported
    case greKeyMismatch
    case greSequence
    case greUnknownProtocol
    case tunnelNesting
    case tunnelDown
    /// The host socket of a host-backed socket or tunnel refused a datagram.
    case hostSocketSendFailed
    /// Datagrams for a socket closed while they were on their way.
    case socketClosed
    /// More packets to the stack's own addresses than its loopback queue holds.
    case loopbackOverflow
    /// A packet the stack originated had no source address to leave with.
    case noSourceAddress
    case hostOwned
    /// The source would not be routed back through the arrival interface
    /// (strict) or has no route at all (loose): RFC 3704 reverse-path check.
    case rpfFailed
    /// Outer CE over a Not-ECT inner packet at decapsulation (RFC 6040 4.2).
    case ecnNotECT
    // IPsec (RFC 4303)
    /// Too short for ESP, a reserved SPI, or neither ESP, IKE nor a keepalive on port 4500.
    case espMalformed
    /// No inbound SA of this SPI on the tunnel it arrived for.
    case espUnknownSPI
    /// A sequence number the replay window has seen.
    case espReplayed
    /// A sequence number behind the replay window.
    case espOutOfWindow
    /// The ICV did not verify: forged, corrupted, or another key.
    case espAuthFailed
    /// An authentic packet whose trailer is inconsistent.
    case espBadPadding
    /// A protected tunnel without an outbound SA (IKE has not finished).
    case ipsecNoSA
    /// An SA past a hard lifetime or its sequence space.
    case ipsecSAExpired
    /// Plaintext GRE from the peer of a tunnel configured with protection (no downgrade).
    case ipsecPlaintextRefused
    /// An inner packet outside a policy-based link's subnets (RFC 4301 section 5).
    case ipsecSelectorMismatch
    /// A super-frame or partial checksum whose headers cannot be cut or completed.
    case segmentationFailed
    // Several workers
    /// A packet for the replica that owns its tunnel's SAs found that
    /// worker's channel full (or the host has none).
    case handOffRefused
    // Host twins
    /// A packet for a host twin past the twin's rate limit.
    case puntRateLimited
    /// A packet for a host twin whose device is gone or full.
    case puntRefused
    /// A frame from a host twin that cannot leave (too short, not IP, or
    /// the interface is down).
    case injectRefused
    // TCP
    /// A segment too short for its header or with a bad data offset.
    case tcpMalformed
    case tcpBadChecksum
    /// No connection, vestige or listener: answered with a RST (RFC 9293 3.10.7.1).
    case tcpNoListener
    /// A segment outside its connection's window, or refused by its state
    /// (answered with an ACK where RFC 9293 says so).
    case tcpOutOfWindow
    /// A SYN from a source the listener does not allow.
    case tcpSourceNotAllowed
    /// A completed handshake whose listener's accept queue was full, or a
    /// SYN when no connection slot was left.
    case tcpListenOverflow
    /// An ACK to a listener that matched no SYN cache entry and no valid cookie.
    case tcpBadCookie
    /// A segment to a vestige that needs no answer, or a TCP segment to a broadcast.
    case tcpIgnored
    // Resources
    case poolExhausted
    case headroomExhausted
    // Reported by the host, outside the stack: losses at the port.
    /// The kernel dropped frames before the daemon read them (the packet
    /// socket's or TAP's queue was full: `PACKET_STATISTICS`, TAP tx_dropped).
    case kernelReceiveQueue
    /// A frame was waiting in the kernel but no pool buffer was free.
    case portNoBuffer
    /// The port's own transmit queue (frames the device would not take yet) was full.
    case portQueueFull
    /// The device refused a frame.
    case portTransmitFailed
    /// Frames for a port whose device is gone.
    case portUnattached
    /// A frame whose virtio-net header was malformed or asked for an offload
    /// the stack does not do (refused by the port, never trusted).
    case badOffloadHeader
    /// A frame longer than the port's buffers (a super-frame where the port
    /// takes none): the kernel cut it; dropped, never passed on short.
    case portFrameTruncated

    /// Position of this reason's counter in the stack's drop-counter array:
    /// the case's declaration order, so the counters cannot fall out of step
    /// with the reasons.
    @inlinable public var counterIndex: Int { rawValue }

    public static let counterCount = allCases.count

    /// A stable name for logs, metrics and the CLI.
    public var description: String {
        switch self {
        case .frameTruncated: "frame-truncated"
        case .notForUs: "not-for-us"
        case .vlanNotConfigured: "vlan-not-configured"
        case .unknownEtherType: "unknown-ethertype"
        case .interfaceDown: "interface-down"
        case .ownSourceMAC: "own-source-mac"
        case .arpMalformed: "arp-malformed"
        case .arpNotForUs: "arp-not-for-us"
        case .arpQueueOverflow: "arp-queue-overflow"
        case .neighborUnresolved: "neighbor-unresolved"
        case .neighborTableFull: "neighbor-table-full"
        case .ipTruncated: "ip-truncated"
        case .ipBadVersion: "ip-bad-version"
        case .ipBadHeaderLength: "ip-bad-header-length"
        case .ipBadTotalLength: "ip-bad-total-length"
        case .ipBadChecksum: "ip-bad-checksum"
        case .ipBadOption: "ip-bad-option"
        case .martianSource: "martian-source"
        case .martianDestination: "martian-destination"
        case .linkBroadcastNotForwarded: "link-broadcast-not-forwarded"
        case .multicastNotSupported: "multicast-not-supported"
        case .ipv6NotSupported: "ipv6-not-supported"
        case .ipv6Malformed: "ipv6-malformed"
        case .ipv6HeaderChain: "ipv6-header-chain"
        case .ndInvalid: "nd-invalid"
        case .notForwarding: "not-forwarding"
        case .ttlExpired: "ttl-expired"
        case .noRoute: "no-route"
        case .fragmentationNeeded: "fragmentation-needed"
        case .blackhole: "blackhole"
        case .fragmentOverlap: "fragment-overlap"
        case .fragmentTooLarge: "fragment-too-large"
        case .fragmentTooManyPieces: "fragment-too-many-pieces"
        case .reassemblyTimeout: "reassembly-timeout"
        case .reassemblyQueueEvicted: "reassembly-queue-evicted"
        case .icmpMalformed: "icmp-malformed"
        case .protocolUnreachable: "protocol-unreachable"
        case .portUnreachable: "port-unreachable"
        case .segmentationFailed: "segmentation-failed"
        case .poolExhausted: "pool-exhausted"
        case .headroomExhausted: "headroom-exhausted"
        case .kernelReceiveQueue: "kernel-rx-queue"
        case .portNoBuffer: "port-no-buffer"
        case .portQueueFull: "port-queue-full"
        case .portTransmitFailed: "port-transmit-failed"
        case .portUnattached: "port-unattached"
        case .badOffloadHeader: "bad-offload-header"
        case .portFrameTruncated: "port-frame-truncated"
        case .broadcastEchoIgnored: "broadcast-echo-ignored"
        case .udpBadChecksum: "udp-bad-checksum"
        case .udpMalformed: "udp-malformed"
        case .socketQueueFull: "socket-queue-full"
        case .greMalformed: "gre-malformed"
        case .greBadChecksum: "gre-bad-checksum"
        case .greUnsupported: "gre-unsupported"
        case .greKeyMismatch: "gre-key-mismatch"
        case .greSequence: "gre-sequence"
        case .greUnknownProtocol: "gre-unknown-protocol"
        case .tunnelNesting: "tunnel-nesting"
        case .tunnelDown: "tunnel-down"
        case .hostSocketSendFailed: "host-socket-send-failed"
        case .socketClosed: "socket-closed"
        case .loopbackOverflow: "loopback-overflow"
        case .noSourceAddress: "no-source-address"
        case .hostOwned: "host-owned"
        case .rpfFailed: "rpf-failed"
        case .ecnNotECT: "ecn-not-ect"
        case .espMalformed: "esp-malformed"
        case .espUnknownSPI: "esp-unknown-spi"
        case .espReplayed: "esp-replayed"
        case .espOutOfWindow: "esp-out-of-window"
        case .espAuthFailed: "esp-auth-failed"
        case .espBadPadding: "esp-bad-padding"
        case .ipsecNoSA: "ipsec-no-sa"
        case .ipsecSAExpired: "ipsec-sa-expired"
        case .ipsecPlaintextRefused: "ipsec-plaintext-refused"
        case .ipsecSelectorMismatch: "ipsec-selector-mismatch"
        case .handOffRefused: "handoff-refused"
        case .puntRateLimited: "punt-rate-limited"
        case .puntRefused: "punt-refused"
        case .injectRefused: "inject-refused"
        case .tcpMalformed: "tcp-malformed"
        case .tcpBadChecksum: "tcp-bad-checksum"
        case .tcpNoListener: "tcp-no-listener"
        case .tcpOutOfWindow: "tcp-out-of-window"
        case .tcpSourceNotAllowed: "tcp-source-not-allowed"
        case .tcpListenOverflow: "tcp-listen-overflow"
        case .tcpBadCookie: "tcp-bad-cookie"
        case .tcpIgnored: "tcp-ignored"
        }
    }
}

/// Counters of one interface.
public struct InterfaceCounters: Hashable, Sendable {
    public var rxPackets: UInt64 = 0
    public var rxBytes: UInt64 = 0
    public var txPackets: UInt64 = 0
    public var txBytes: UInt64 = 0
    /// Packets received on this interface and dropped, for any reason.
    public var rxDrops: UInt64 = 0
    /// Packets meant for this interface and dropped before transmit.
    public var txDrops: UInt64 = 0
    public var forwarded: UInt64 = 0
    public init() {}

    /// Adds another replica's counts (workers: `show` sums them).
    public mutating func add(_ o: InterfaceCounters) {
        rxPackets &+= o.rxPackets; rxBytes &+= o.rxBytes; txPackets &+= o.txPackets; txBytes &+= o.txBytes
        rxDrops &+= o.rxDrops; txDrops &+= o.txDrops; forwarded &+= o.forwarded
    }
}

/// Stack-wide event counters that are not drops.
public struct StackCounters: Hashable, Sendable {
    public var ipReceived: UInt64 = 0
    public var ipDelivered: UInt64 = 0
    public var ipForwarded: UInt64 = 0
    public var ipSent: UInt64 = 0
    public var fragmentsCreated: UInt64 = 0
    public var fragmentsReceived: UInt64 = 0
    public var datagramsReassembled: UInt64 = 0
    public var arpRequestsSent: UInt64 = 0
    public var arpRepliesSent: UInt64 = 0
    public var arpRequestsReceived: UInt64 = 0
    public var arpRepliesReceived: UInt64 = 0
    public var neighborEvictions: UInt64 = 0
    public var icmpEchoRepliesSent: UInt64 = 0
    public var icmpErrorsSent: UInt64 = 0
    public var icmpErrorsRateLimited: UInt64 = 0
    public var icmpErrorsSuppressed: UInt64 = 0
    public var eventsLost: UInt64 = 0
    /// ipflow: packets forwarded by a flow.
    public var flowHits: UInt64 = 0
    /// ipflow: IPv4 packets for which no flow existed.
    public var flowMisses: UInt64 = 0
    public var flowsCreated: UInt64 = 0
    /// ipflow: flows removed to make room for a new one.
    public var flowsEvicted: UInt64 = 0
    /// ipflow: flows removed by the timer (idle, or stale since a change).
    public var flowsExpired: UInt64 = 0
    /// ipflow: packets whose flow was stale (FIB or neighbour changed): they took the slow path.
    public var flowsInvalidated: UInt64 = 0
    /// ipflow: flows removed by a flush.
    public var flowsFlushed: UInt64 = 0
    /// ICMP fragmentation-needed that matched no tunnel's outer packets (ignored).
    public var pmtuReportsIgnored: UInt64 = 0

    // The packet ledger's own terms (see `PacketLedger`); the rest of the
    // ledger is summed from the interface counters.
    /// Packets the stack took in: given to a socket or a tunnel, or
    /// absorbed by ARP and ICMP (an answered request included).
    public var consumed: UInt64 = 0
    /// Packets the stack made: ARP, ICMP, socket sends, keepalives, tunnel encapsulations.
    public var originated: UInt64 = 0
    /// Packets the stack sent to its own addresses (out and back in without a wire).
    public var looped: UInt64 = 0
    /// Datagrams read from host sockets (host-backed tunnels).
    public var fromHostSockets: UInt64 = 0
    /// Packets handed to host sockets.
    public var toHostSockets: UInt64 = 0
    /// Datagrams split into fragments (each is 1 in, `fragmentsCreated` counts the N out).
    public var fragmented: UInt64 = 0
    /// Super-frames cut into segments in software (each is 1 in, `segmentsCreated` counts the N out).
    public var segmented: UInt64 = 0
    public var segmentsCreated: UInt64 = 0
    /// Segments merged into super-frames for ports with offloads (GRO), and the super-frames made.
    public var coalescedSegments: UInt64 = 0
    /// UDP super-frames for us cut into their datagrams on input (1 in), and the datagrams (N out).
    public var unbundled: UInt64 = 0
    public var unbundledPackets: UInt64 = 0
    public var coalescedFrames: UInt64 = 0
    /// Fragments that became part of a reassembled datagram (N in; `datagramsReassembled` is the 1 out).
    public var fragmentsReassembled: UInt64 = 0
    /// Input drops that belong to no interface (a full socket queue, a closed socket).
    public var inputDropsElsewhere: UInt64 = 0
    /// Output drops that belong to no interface (no route, no source address, a neighbour table making room).
    public var outputDropsElsewhere: UInt64 = 0
    /// Losses the host reported outside the stack (kernel queues, ports).
    public var dropsOutsideStack: UInt64 = 0
    // Rarer events after the per-packet ones (the hot ones keep their cache lines).
    /// Several workers: packets handed to the replica that owns their
    /// tunnel's SAs, and packets another replica handed this one.
    public var handedOff: UInt64 = 0
    public var takenOver: UInt64 = 0
    /// Host twins: packets handed to a twin (an end of the ledger's input
    /// side), and packets a twin sent out through the stack (a start of its
    /// output side).
    public var punted: UInt64 = 0
    public var injected: UInt64 = 0
    public init() {}
}
