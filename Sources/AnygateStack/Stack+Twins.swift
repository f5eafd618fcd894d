public import AnygateWire

/// Which packets a host twin takes: what a routing daemon on the host
/// speaks, arriving for the stack's own addresses (or the link-local groups
/// of those protocols) and not consumed by the stack itself.
public struct PuntSet: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// OSPF (protocol 89; 224.0.0.5/6, ff02::5/6).
    public static let ospf = PuntSet(rawValue: 1)
    /// BGP (TCP port 179 either way).
    public static let bgp = PuntSet(rawValue: 2)
    /// BFD (UDP 3784, 3785 echo, 4784 multihop).
    public static let bfd = PuntSet(rawValue: 4)
    /// RIP (UDP 520; 224.0.0.9) and RIPng (UDP 521; ff02::9).
    public static let rip = PuntSet(rawValue: 8)
    /// PIM (protocol 103; 224.0.0.13, ff02::d).
    public static let pim = PuntSet(rawValue: 16)
    /// Anything else for the stack's addresses it would refuse (port or
    /// protocol unreachable), ICMP aside.
    public static let allUnclaimed = PuntSet(rawValue: 32)
    /// The default: OSPF, BGP and BFD.
    public static let routing: PuntSet = [.ospf, .bgp, .bfd]

    /// The names the config uses (`punt: [ospf, bgp, bfd, rip, pim, all-unclaimed]`).
    public static let names: [(String, PuntSet)] = [("ospf", .ospf), ("bgp", .bgp), ("bfd", .bfd), ("rip", .rip), ("pim", .pim),
                                                    ("all-unclaimed", .allUnclaimed)]
    public init?(name: String) {
        guard let e = PuntSet.names.first(where: { $0.0 == name }) else { return nil }
        self = e.1
    }
}

/// A host twin's settings in the stack.
public struct TwinSettings: Sendable, Equatable {
    public var punt: PuntSet
    /// Packets a second the twin is handed at most (and as many at once).
    public var packetsPerSecond: Int
    public init(punt: PuntSet = .routing, packetsPerSecond: Int = 10_000) {
        self.punt = punt; self.packetsPerSecond = packetsPerSecond
    }
}

/// What a twin's traffic counted.
public struct TwinCounters: Sendable, Equatable, Hashable {
    public var punted: UInt64 = 0
    public var rateLimited: UInt64 = 0
    public var refused: UInt64 = 0
    public var injected: UInt64 = 0
    public init() {}
}

struct TwinState {
    var settings: TwinSettings
    /// The rate limit: `packetsPerSecond`, as many at once.
    var bucket: TokenBucket
    var counters = TwinCounters()
}



/// Host twins (VPP's linux-cp pairs): a host interface paired with a stack
/// interface or tunnel, so that a routing daemon on the host speaks over
/// the stack's links. What arrives for the stack that the stack does not
/// consume and the twin wants is punted to it unchanged (rate-limited and
/// counted); what the host sends out of the twin is injected: it leaves by
/// the paired interface, encapsulated when that is a tunnel.
extension Stack {
    /// Pairs `interface` with a host twin (nil: no twin).
    public func setTwin(_ interface: InterfaceIndex, _ settings: TwinSettings?) throws(InterfaceError) {
        guard interface >= 0, interface < configuration.maxInterfaces, ifs[interface].exists else { throw .noSuchInterface(interface) }
        ifs[interface].twin = settings != nil
        if let settings {
            twins[interface] = TwinState(settings: settings, bucket: TokenBucket(rate: max(1, settings.packetsPerSecond),
                                                                                 burst: settings.packetsPerSecond, now: hot.pointee.now))
        } else {
            twins[interface] = nil
        }
    }

    /// The counters of the twin of `interface`, if it has one.
    public func twinCounters(_ interface: InterfaceIndex) -> TwinCounters? { twins[interface]?.counters }

    /// Whether the twin of `rx` takes this packet: `proto` and, for TCP
    /// and UDP, the ports at the start of `transport`; `group` for a
    /// link-local multicast destination (its last byte: 5, 6, 9, 13).
    func twinWants(rx: InterfaceIndex, proto: UInt8, transport: UnsafeMutableRawBufferPointer, group: UInt8?) -> Bool {
        guard let set = twins[rx]?.settings.punt else { return false }
        let ports = transport.count >= 4 ? (source: transport.be16(0), destination: transport.be16(2)) : nil
        if let group {
            switch (proto, group) {
            case (89, 5), (89, 6): return set.contains(.ospf)
            case (17, 9): return set.contains(.rip) && (ports?.destination == 520 || ports?.destination == 521)
            case (103, 13): return set.contains(.pim)
            default: return set.contains(.allUnclaimed) && proto != 1 && proto != 58
            }
        }
        switch proto {
        case 89: if set.contains(.ospf) { return true }
        case 103: if set.contains(.pim) { return true }
        case 6: if set.contains(.bgp), let ports, ports.source == 179 || ports.destination == 179 { return true }
        case 17:
            if set.contains(.bfd), let d = ports?.destination, d == 3784 || d == 3785 || d == 4784 { return true }
            if set.contains(.rip), let d = ports?.destination, d == 520 || d == 521 { return true }
        default: break
        }
        return set.contains(.allUnclaimed) && proto != 1 && proto != 58
    }

    /// Hands a packet that arrived on `rx` to its twin, within the twin's
    /// rate; it ends there (punted) or is dropped with the reason. An
    /// Ethernet twin (a TAP) takes frames: an IP packet gets a header to the
    /// twin's MAC (the interface's) or the group's; an ARP packet (`arpFrom`:
    /// its sender) one to the twin from its sender.
    @inline(never)
    func punt(_ packet: PacketHandle, rx: InterfaceIndex, arpFrom sender: MACAddress? = nil) {
        guard twins[rx] != nil else { return drop(packet, .puntRefused, rx: rx) }
        guard twins[rx]!.bucket.take(now: hot.pointee.now) else {
            twins[rx]!.counters.rateLimited &+= 1
            return drop(packet, .puntRateLimited, rx: rx)
        }
        var p = packet
        if ifs[rx].tunnel < 0 {
            guard pool.prepend(&p, EthernetFrame.headerLength) else { return drop(packet, .headroomExhausted, rx: rx) }
            let b = pool.bytes(p)
            let own = MACAddress(rawValue: ifs[rx].mac)
            var destination = own, type = EtherType.arp
            if sender == nil {
                let v6 = b.be8(EthernetFrame.headerLength) >> 4 == 6
                type = v6 ? .ipv6 : .ipv4
                if v6, b.count >= EthernetFrame.headerLength + IPv6Packet.headerLength {
                    let d = IPv6Packet(unchecked: b.tail(from: EthernetFrame.headerLength)).destination
                    if d.isMulticast { destination = d.multicastMAC }
                } else if !v6, b.count >= EthernetFrame.headerLength + IPv4Packet.minimumHeaderLength {
                    let d = IPv4Packet(unchecked: b.tail(from: EthernetFrame.headerLength)).destination
                    if d.isMulticast { destination = d.multicastMAC }
                }
            }
            EthernetRepr(destination: destination, source: sender ?? own, etherType: type).emit(into: b)
        }
        guard hypercalls.punt(p, interface: rx, stack: self) else {
            twins[rx]!.counters.refused &+= 1
            return drop(p, .puntRefused, rx: rx)
        }
        twins[rx]!.counters.punted &+= 1
        hot.pointee.counters.punted &+= 1
    }

    /// Packets a host twin sent (taking ownership): out through the paired
    /// interface — an IP packet into the tunnel it is paired with, an
    /// Ethernet frame onto the link as the host built it.
    public func inject(_ packets: UnsafeBufferPointer<PacketHandle>, from interface: InterfaceIndex) {
        enter()
        defer { flush() }
        guard interface >= 0, interface < configuration.maxInterfaces, ifs[interface].exists else {
            for p in packets {
                hot.pointee.counters.injected &+= 1
                drop(p, .injectRefused, side: .output)
            }
            return
        }
        for p in packets {
            hot.pointee.counters.injected &+= 1
            twins[interface]?.counters.injected &+= 1
            let b = pool.bytes(p)
            guard ifs[interface].up else {
                drop(p, .interfaceDown, tx: interface)
                continue
            }
            if ifs[interface].tunnel >= 0 {
                let version = b.count >= IPv4Packet.minimumHeaderLength ? b.be8(0) >> 4 : 0
                guard version == 4 || (version == 6 && b.count >= IPv6Packet.headerLength) else {
                    drop(p, .injectRefused, tx: interface)
                    continue
                }
                ifs[interface].counters.txPackets &+= 1
                ifs[interface].counters.txBytes &+= UInt64(p.length)
                tunnelOutput(Int(ifs[interface].tunnel), p)
            } else {
                guard b.count >= EthernetFrame.headerLength, b.count <= ifs[interface].mtu + EthernetFrame.headerLength + 4 else {
                    drop(p, .injectRefused, tx: interface)
                    continue
                }
                enqueueTransmit(p, on: interface)
            }
        }
    }
}
