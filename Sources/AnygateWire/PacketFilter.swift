/// What `trace` matches: a tcpdump expression compiled by libpcap (the
/// daemon's, `init(frame:inner:description:)`), or a small match language
/// of the stack's own, for in-process use where libpcap is not at hand:
///
///     expr      := and-expr ("or" and-expr)*
///     and-expr  := unary ("and" unary)*
///     unary     := "not" unary | "(" expr ")" | primitive
///     primitive := [src|dst] host ADDR | [src|dst] net PREFIX | [src|dst] port N
///                | proto N | icmp | tcp | udp | gre | ip | arp | ADDR | PREFIX
///
/// `&&`, `||` and `!` may stand for and, or, not. An empty expression
/// matches everything. An IPv4 packet carried in GRE or GRE-in-UDP (RFC
/// 8086, port 4754) matches when the outer packet or the inner one does, so
/// one filter follows a flow into and out of a tunnel. Matching reads the
/// bytes and allocates nothing.
public struct PacketFilter: Sendable, CustomStringConvertible {
    indirect enum Node: Sendable {
        case all
        case and(Node, Node), or(Node, Node), not(Node)
        case host(IPv4Address, Direction)
        case net(IPv4Prefix, Direction)
        case port(UInt16, Direction)
        case proto(UInt8)
        case ip, arp
    }

    enum Direction: Sendable { case either, source, destination }

    let root: Node
    public let description: String
    /// Classic BPF for Ethernet frames and for IP packets (a tunnel's inner ones), when set.
    let programs: (frame: BPFProgram, inner: BPFProgram)?

    /// Matches everything.
    public static let all = PacketFilter(root: .all, description: "")

    init(root: Node, description: String) {
        self.root = root
        self.description = description
        self.programs = nil
    }

    /// A filter of two programs of one expression: `frame` runs on Ethernet
    /// frames, `inner` on a bare IP packet (what a GRE header carries).
    public init(frame: BPFProgram, inner: BPFProgram, description: String) {
        self.root = .all
        self.description = description
        self.programs = (frame, inner)
    }

    /// What a filter is matched against: the facts of one packet.
    public struct Facts {
        public var isARP = false
        public var isIPv4 = false
        public var source: UInt32 = 0
        public var destination: UInt32 = 0
        public var proto: UInt8 = 0
        public var ttl: UInt8 = 0
        public var ports: (source: UInt16, destination: UInt16)? = nil
    }

    /// Whether an Ethernet frame matches.
    public func matches(frame bytes: UnsafeMutableRawBufferPointer) -> Bool {
        if let programs {
            if programs.frame.run(UnsafeRawBufferPointer(bytes)) > 0 { return true }
            guard bytes.count >= EthernetFrame.headerLength, bytes.be16(EthernetFrame.Field.etherType) == EtherType.ipv4.rawValue,
                  let (_, gre) = PacketFilter.facts(ipv4: bytes.tail(from: EthernetFrame.headerLength)),
                  let gre, let inner = PacketFilter.innerOfGRE(gre) else { return false }
            return programs.inner.run(UnsafeRawBufferPointer(inner)) > 0
        }
        if case .all = root { return true }
        guard bytes.count >= EthernetFrame.headerLength else { return false }
        let type = bytes.be16(EthernetFrame.Field.etherType)
        if type == EtherType.arp.rawValue { return evaluate(root, Facts(isARP: true)) }
        guard type == EtherType.ipv4.rawValue else { return false }
        return matches(ipv4: bytes.tail(from: EthernetFrame.headerLength))
    }

    /// Whether an IPv4 packet (or the IPv4 packet it carries in GRE) matches.
    public func matches(ipv4 bytes: UnsafeMutableRawBufferPointer) -> Bool {
        if case .all = root { return true }
        guard let (facts, gre) = PacketFilter.facts(ipv4: bytes) else { return false }
        if evaluate(root, facts) { return true }
        guard let gre, let inner = PacketFilter.innerOfGRE(gre), let (innerFacts, _) = PacketFilter.facts(ipv4: inner) else {
            return false
        }
        return evaluate(root, innerFacts)
    }

    /// Whether a GRE packet (bytes from its GRE header) carries a match.
    public func matches(gre bytes: UnsafeMutableRawBufferPointer) -> Bool {
        if let programs {
            guard let inner = PacketFilter.innerOfGRE(bytes) else { return false }
            return programs.inner.run(UnsafeRawBufferPointer(inner)) > 0
        }
        if case .all = root { return true }
        guard let inner = PacketFilter.innerOfGRE(bytes), let (facts, _) = PacketFilter.facts(ipv4: inner) else { return false }
        return evaluate(root, facts)
    }

    /// The facts of an IPv4 packet, and its GRE header if it carries one
    /// (protocol 47, or UDP to port 4754).
    public static func facts(ipv4 b: UnsafeMutableRawBufferPointer) -> (Facts, UnsafeMutableRawBufferPointer?)? {
        guard b.count >= IPv4Packet.minimumHeaderLength, b.be8(0) >> 4 == 4 else { return nil }
        let hl = Int(b.be8(0) & 0x0F) * 4
        guard hl >= IPv4Packet.minimumHeaderLength, b.count >= hl else { return nil }
        var f = Facts(isIPv4: true, source: b.be32(12), destination: b.be32(16), proto: b.be8(9), ttl: b.be8(8))
        let firstFragment = b.be16(6) & 0x1FFF == 0
        let payload = b.tail(from: hl)
        var gre: UnsafeMutableRawBufferPointer? = nil
        if firstFragment && (f.proto == IPProtocol.tcp.rawValue || f.proto == IPProtocol.udp.rawValue) && payload.count >= 4 {
            f.ports = (payload.be16(0), payload.be16(2))
            if f.proto == IPProtocol.udp.rawValue && payload.be16(2) == 4754 && payload.count > 8 { gre = payload.tail(from: 8) }
        }
        if firstFragment && f.proto == IPProtocol.gre.rawValue { gre = payload }
        return (f, gre)
    }

    /// The IPv4 packet inside a GRE header, if it carries one.
    public static func innerOfGRE(_ g: UnsafeMutableRawBufferPointer) -> UnsafeMutableRawBufferPointer? {
        guard let h = try? GRERepr(parsing: g), h.protocolType == .ipv4, g.count > h.headerLength else { return nil }
        return g.tail(from: h.headerLength)
    }

    func evaluate(_ n: Node, _ f: Facts) -> Bool {
        switch n {
        case .all: return true
        case .and(let a, let b): return evaluate(a, f) && evaluate(b, f)
        case .or(let a, let b): return evaluate(a, f) || evaluate(b, f)
        case .not(let a): return !evaluate(a, f)
        case .arp: return f.isARP
        case .ip: return f.isIPv4
        case .proto(let p): return f.isIPv4 && f.proto == p
        case .host(let a, let d): return f.isIPv4 && PacketFilter.either(d, f.source == a.rawValue, f.destination == a.rawValue)
        case .net(let p, let d):
            return f.isIPv4 && PacketFilter.either(d, p.contains(IPv4Address(rawValue: f.source)),
                                                   p.contains(IPv4Address(rawValue: f.destination)))
        case .port(let n, let d):
            guard let ports = f.ports else { return false }
            return PacketFilter.either(d, ports.source == n, ports.destination == n)
        }
    }

    static func either(_ d: Direction, _ source: Bool, _ destination: Bool) -> Bool {
        switch d {
        case .either: source || destination
        case .source: source
        case .destination: destination
        }
    }
}

/// Why a filter expression was refused.
public struct PacketFilterError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
}

extension PacketFilter {
    /// Parses an expression; the error names the word it stopped at.
    public init(_ text: String) throws(PacketFilterError) {
        var tokens: [String] = []
        var word = ""
        for c in text {
            if c == "(" || c == ")" || c == " " || c == "\t" || c == "!" {
                if !word.isEmpty { tokens.append(word); word = "" }
                if c != " " && c != "\t" { tokens.append(String(c)) }
            } else {
                word.append(c)
            }
        }
        if !word.isEmpty { tokens.append(word) }
        var parser = Parser(tokens: tokens.map { t in
            switch t { case "&&": "and"; case "||": "or"; case "!": "not"; default: t.lowercased() }
        })
        if tokens.isEmpty {
            self.init(root: .all, description: "")
            return
        }
        let root = try parser.expression()
        guard parser.position == parser.tokens.count else {
            throw PacketFilterError(description: "unexpected \"\(parser.tokens[parser.position])\"")
        }
        self.init(root: root, description: tokens.joined(separator: " "))
    }

    struct Parser {
        let tokens: [String]
        var position = 0

        var next: String? { position < tokens.count ? tokens[position] : nil }

        mutating func take() -> String? {
            defer { position += 1 }
            return next
        }

        mutating func expression() throws(PacketFilterError) -> Node {
            var n = try conjunction()
            while next == "or" {
                position += 1
                n = .or(n, try conjunction())
            }
            return n
        }

        mutating func conjunction() throws(PacketFilterError) -> Node {
            var n = try unary()
            while next == "and" {
                position += 1
                n = .and(n, try unary())
            }
            return n
        }

        mutating func unary() throws(PacketFilterError) -> Node {
            switch next {
            case "not":
                position += 1
                return .not(try unary())
            case "(":
                position += 1
                let n = try expression()
                guard take() == ")" else { throw PacketFilterError(description: "a \"(\" is not closed") }
                return n
            default:
                return try primitive()
            }
        }

        mutating func primitive() throws(PacketFilterError) -> Node {
            guard let word = take() else { throw PacketFilterError(description: "the expression ends where a match was expected") }
            var direction = Direction.either
            var kind = word
            if word == "src" || word == "dst" {
                direction = word == "src" ? .source : .destination
                guard let k = take() else { throw PacketFilterError(description: "\"\(word)\" needs host, net or port after it") }
                kind = k
            }
            switch kind {
            case "host":
                let v = try value(after: kind)
                guard let a = IPv4Address(v) else { throw PacketFilterError(description: "\"\(v)\" is not an IPv4 address") }
                return .host(a, direction)
            case "net":
                let v = try value(after: kind)
                do { return .net(try IPv4Prefix(v), direction) } catch {
                    throw PacketFilterError(description: "\"\(v)\" is not a prefix: \(error)")
                }
            case "port":
                let v = try value(after: kind)
                guard let n = UInt16(v) else { throw PacketFilterError(description: "\"\(v)\" is not a port number") }
                return .port(n, direction)
            default:
                guard direction == .either else {
                    throw PacketFilterError(description: "\"\(word)\" needs host, net or port after it, not \"\(kind)\"")
                }
            }
            switch kind {
            case "icmp": return .proto(IPProtocol.icmp.rawValue)
            case "tcp": return .proto(IPProtocol.tcp.rawValue)
            case "udp": return .proto(IPProtocol.udp.rawValue)
            case "gre": return .proto(IPProtocol.gre.rawValue)
            case "ip": return .ip
            case "arp": return .arp
            case "proto":
                let v = try value(after: kind)
                guard let n = UInt8(v) else { throw PacketFilterError(description: "\"\(v)\" is not a protocol number (0-255)") }
                return .proto(n)
            default:
                if let a = IPv4Address(kind) { return .host(a, .either) }
                if kind.contains("/"), let p = try? IPv4Prefix(kind) { return .net(p, .either) }
                throw PacketFilterError(description: "unknown word \"\(kind)\" (host, net, port, proto, icmp, tcp, udp, gre, ip, arp, and, or, not)")
            }
        }

        mutating func value(after word: String) throws(PacketFilterError) -> String {
            guard let v = take(), v != "(", v != ")" else { throw PacketFilterError(description: "\"\(word)\" needs a value") }
            return v
        }
    }
}
