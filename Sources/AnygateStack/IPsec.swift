public import AnygateCrypto
public import AnygateWire

/// How a protected tunnel carries ESP (RFC 4303) between its endpoints.
public enum ESPEncapsulation: Hashable, Sendable, CustomStringConvertible {
    /// ESP directly over IP, protocol 50.
    case esp
    /// ESP inside UDP (RFC 3948) from and to these ports (4500 unless a
    /// NAT in between changed the peer's): what crosses NATs.
    case udp(localPort: UInt16, remotePort: UInt16)

    public static let natTraversal = ESPEncapsulation.udp(localPort: UDPEncapsulation.port, remotePort: UDPEncapsulation.port)

    public var description: String {
        switch self {
        case .esp: "esp"
        case .udp(let l, let r): l == UDPEncapsulation.port && r == l ? "udp" : "udp \(l)->\(r)"
        }
    }
}

/// A tunnel's IPsec protection as the stack applies it: ESP in transport
/// mode around the tunnel's GRE packets (GRE over IPsec), or, for a tunnel
/// with `TunnelEncapsulation.ipsec`, ESP in tunnel mode around the inner IP
/// packets (a policy-based link between subnets). The keys come later, from
/// IKE (`Stack.addInboundSA`, `Stack.setOutboundSA`).
public struct TunnelProtection: Hashable, Sendable {
    public var encapsulation: ESPEncapsulation
    /// Tunnel mode only: the inner sources this side sends from and the
    /// peer's subnets (the traffic selectors); inbound packets outside them
    /// are dropped (RFC 4301 section 5.2).
    public var localSubnets: [IPPrefix] = []
    public var remoteSubnets: [IPPrefix] = []
    /// Both ways open — protocol 50 and UDP (`encapsulation`'s ports) —
    /// sending as protocol 50 until the owner finds a NAT (`Stack.setESPInUDP`).
    public var auto = false

    public init(encapsulation: ESPEncapsulation = .natTraversal, localSubnets: [IPPrefix] = [], remoteSubnets: [IPPrefix] = [],
                auto: Bool = false) {
        self.encapsulation = encapsulation
        self.localSubnets = localSubnets
        self.remoteSubnets = remoteSubnets
        self.auto = auto
    }

    /// Bytes ESP adds at most (header, IV, padding, trailer, ICV, and the
    /// UDP header when encapsulated).
    public var overhead: Int {
        ESPPacket.maximumOverhead + (encapsulation == .esp && !auto ? 0 : UDPDatagram.headerLength)
    }
}

/// An IPv4 or IPv6 prefix (traffic selectors take either).
public enum IPPrefix: Hashable, Sendable, CustomStringConvertible {
    case v4(IPv4Prefix)
    case v6(IPv6Prefix)

    public init?(_ text: some StringProtocol) {
        if let p = try? IPv4Prefix(text) { self = .v4(p) } else if let p = try? IPv6Prefix(text) { self = .v6(p) } else { return nil }
    }

    public var description: String {
        switch self {
        case .v4(let p): "\(p)"
        case .v6(let p): "\(p)"
        }
    }
}

/// SA lifetimes (RFC 4301 section 4.4.2.1): at the soft limit the owner
/// is told to rekey (`StackEvent.saExpiring`), at the hard one the SA stops
/// carrying packets. nil: no limit of that kind.
public struct SALifetime: Hashable, Sendable {
    public var softBytes: UInt64? = nil
    public var hardBytes: UInt64? = nil
    public var softSeconds: Int? = nil
    public var hardSeconds: Int? = nil
    public init(softBytes: UInt64? = nil, hardBytes: UInt64? = nil, softSeconds: Int? = nil, hardSeconds: Int? = nil) {
        self.softBytes = softBytes; self.hardBytes = hardBytes; self.softSeconds = softSeconds; self.hardSeconds = hardSeconds
    }
}

/// One direction of a child SA as IKE negotiated it.
public struct SAConfiguration: Sendable {
    public var spi: UInt32
    public var algorithm: AEADAlgorithm
    /// The key and the 4-byte salt (`algorithm.keyMaterialLength` bytes).
    public var keyMaterial: SecretBytes
    public var extendedSequenceNumbers = false
    public var lifetime = SALifetime()

    public init(spi: UInt32, algorithm: AEADAlgorithm, keyMaterial: SecretBytes, extendedSequenceNumbers: Bool = false,
                lifetime: SALifetime = SALifetime()) {
        self.spi = spi; self.algorithm = algorithm; self.keyMaterial = keyMaterial
        self.extendedSequenceNumbers = extendedSequenceNumbers; self.lifetime = lifetime
    }
}

/// What one SA carried and refused.
public struct SACounters: Hashable, Sendable {
    public var packets: UInt64 = 0
    public var bytes: UInt64 = 0
    /// Inbound: packets seen before (`esp-replayed`) or behind the window (`esp-out-of-window`).
    public var replayed: UInt64 = 0
    public var outOfWindow: UInt64 = 0
    /// Inbound: packets whose ICV did not verify (`esp-auth-failed`).
    public var authFailures: UInt64 = 0
    public init() {}
}

/// Why an SA could not be installed.
public enum IPsecError: Error, Equatable, Sendable, CustomStringConvertible {
    case notProtected(String)
    case spiInUse(UInt32)
    case reservedSPI(UInt32)
    case tableFull
    case crypto(CryptoError)

    public var description: String {
        switch self {
        case .notProtected(let t): "tunnel \(t) has no IPsec protection"
        case .spiInUse(let s): "SPI 0x\(String(s, radix: 16)) is already in use"
        case .reservedSPI(let s): "SPI \(s) is reserved (RFC 4303: 1 to 255)"
        case .tableFull: "no free SA slot"
        case .crypto(let e): "\(e)"
        }
    }
}

/// One SA as `show sas` lists it.
public struct SAStatus: Hashable, Sendable {
    public var tunnel: InterfaceIndex
    public var inbound: Bool
    public var spi: UInt32
    public var algorithm: AEADAlgorithm
    public var extendedSequenceNumbers: Bool
    /// Outbound: the last sequence number sent; inbound: the highest accepted.
    public var sequence: UInt64
    public var counters: SACounters
    /// Seconds since the SA was installed.
    public var age: Interval
    /// Whether its soft limit has been reported, and whether a hard limit stopped it.
    public var expiring: Bool
    public var expired: Bool
}

/// A policy-based link's subnets on one side, kept as plain values the
/// packet path reads in place (at most `capacity`, either family).
struct SelectorList {
    static let capacity = 8

    struct Prefix {
        /// IPv4: the address in the top 32 bits of `high`.
        var high: UInt64 = 0
        var low: UInt64 = 0
        var length: UInt8 = 0
        var v6 = false
    }

    var count = 0
    var items: InlineArray<8, Prefix> = .init(repeating: Prefix())

    init() {}

    init(_ prefixes: [IPPrefix]) {
        for p in prefixes.prefix(SelectorList.capacity) {
            switch p {
            case .v4(let q): items[count] = Prefix(high: UInt64(q.address.rawValue) << 32, low: 0, length: UInt8(q.length), v6: false)
            case .v6(let q): items[count] = Prefix(high: q.address.high, low: q.address.low, length: UInt8(q.length), v6: true)
            }
            count += 1
        }
    }

    @inline(__always)
    static func matches(_ p: Prefix, high: UInt64, low: UInt64) -> Bool {
        let n = Int(p.length)
        if n == 0 { return true }
        if n <= 64 { return (p.high ^ high) >> (64 - n) == 0 }
        return p.high == high && (n == 128 || (p.low ^ low) >> (128 - n) == 0)
    }

    func contains(_ a: IPv4Address) -> Bool {
        let h = UInt64(a.rawValue) << 32
        for i in 0..<count where !items[i].v6 && SelectorList.matches(items[i], high: h, low: 0) { return true }
        return false
    }

    func contains(_ a: IPv6Address) -> Bool {
        for i in 0..<count where items[i].v6 && SelectorList.matches(items[i], high: a.high, low: a.low) { return true }
        return false
    }
}
