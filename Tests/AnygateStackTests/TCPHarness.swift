@_spi(Benchmarks) @testable import AnygateStack
import AnygateWire
import Crypto
import Testing

/// One TCP segment as it crossed a link, decoded for assertions.
struct SeenSegment {
    var fromStack: Int
    var source: IPv4Address, destination: IPv4Address
    var sourcePort: UInt16, destinationPort: UInt16
    var sequence: UInt32, acknowledgment: UInt32
    var flags: UInt8
    var window: UInt16
    var options: TCPOptions
    var payloadLength: Int
    var frame: [UInt8]

    func has(_ f: UInt8) -> Bool { flags & f != 0 }
    var syn: Bool { has(TCPHeader.flagSYN) }
    var fin: Bool { has(TCPHeader.flagFIN) }
    var rst: Bool { has(TCPHeader.flagRST) }
    var ack: Bool { has(TCPHeader.flagACK) }

    /// Decodes an Ethernet/IPv4/TCP frame, or nil for anything else.
    init?(_ f: UnsafeMutableRawBufferPointer, fromStack: Int) {
        guard f.count >= 54, f.be16(12) == 0x0800, f.be8(23) == 6 else { return nil }
        let ip = f.tail(from: 14)
        let hl = Int(ip.be8(0) & 0x0F) * 4
        let total = Int(ip.be16(2))
        let t = TCPHeader(unchecked: ip.slice(hl, total - hl))
        self.fromStack = fromStack
        source = IPv4Address(rawValue: ip.be32(12))
        destination = IPv4Address(rawValue: ip.be32(16))
        sourcePort = t.sourcePort; destinationPort = t.destinationPort
        sequence = t.sequence; acknowledgment = t.acknowledgment
        flags = t.flags; window = t.window
        options = t.options
        payloadLength = total - hl - t.headerLength
        frame = Array(f.prefix(14 + total))
    }
}

/// A client and a server stack on one link (10.0.0.1 — 10.0.0.2), every
/// TCP segment recorded.
final class TCPLink {
    let net: MemoryNetwork
    let client: Stack, server: Stack
    let clientEth: InterfaceIndex, serverEth: InterfaceIndex
    var seen: [SeenSegment] = []
    static let clientAddr = IPv4Address(10, 0, 0, 1)
    static let serverAddr = IPv4Address(10, 0, 0, 2)
    static let clientMAC = MACAddress(2, 0, 0, 0, 0, 1)
    static let serverMAC = MACAddress(2, 0, 0, 0, 0, 2)

    init(client clientConfig: StackConfiguration = StackConfiguration(),
         server serverConfig: StackConfiguration = StackConfiguration(), mtu: Int = 1500) throws {
        net = MemoryNetwork(pool: PacketPool(capacity: 8192))
        client = net.addStack(name: "C", configuration: clientConfig)
        server = net.addStack(name: "S", configuration: serverConfig)
        clientEth = try client.addInterface(name: "eth0", mac: TCPLink.clientMAC, mtu: mtu)
        serverEth = try server.addInterface(name: "eth0", mac: TCPLink.serverMAC, mtu: mtu)
        net.connect(client, clientEth, server, serverEth)
        try client.addAddress(IPv4InterfaceAddress("10.0.0.1/24"), to: clientEth)
        try server.addAddress(IPv4InterfaceAddress("10.0.0.2/24"), to: serverEth)
        try client.setUp(clientEth, true)
        try server.setUp(serverEth, true)
        net.observer = { [unowned self] from, _, f in
            if let s = SeenSegment(f, fromStack: from.stack) { seen.append(s) }
        }
        try client.ping(TCPLink.serverAddr, identifier: 0xFFFF)
        net.run()
        _ = client.drainEvents(); _ = server.drainEvents()
    }

    /// Opens a connection from the client to a listener on the server's `port`.
    func open(port: UInt16 = 80, localPort: UInt16 = 0) throws -> (client: TCPSocketID, server: TCPSocketID, listener: TCPListenerID) {
        let l = try server.tcpListen(address: .v4(TCPLink.serverAddr), port: port)
        let c = try client.tcpConnect(to: .v4(TCPLink.serverAddr), port: port, localPort: localPort)
        net.run()
        let s = try #require(server.tcpAccept(l))
        return (c, s, l)
    }

    /// A segment from the client's side, as if the client's stack had sent it.
    func segmentFromClient(_ repr: TCPRepr, payload: [UInt8] = []) -> [UInt8] {
        TCPLink.frame(repr, payload: payload, from: TCPLink.clientAddr, to: TCPLink.serverAddr, mac: TCPLink.serverMAC)
    }

    static func frame(_ repr: TCPRepr, payload: [UInt8], from src: IPv4Address, to dst: IPv4Address, mac: MACAddress) -> [UInt8] {
        var seg = [UInt8](repeating: 0, count: repr.headerLength + payload.count)
        seg.withUnsafeMutableBytes { b in
            repr.emitHeader(into: b)
            for (i, x) in payload.enumerated() { b[repr.headerLength + i] = x }
            TCPRepr.finish(b, pseudo: InternetChecksum.pseudoHeaderSum(source: src, destination: dst, protocol: .tcp, length: b.count))
        }
        return FrameBuilder.ipv4(to: mac, IPv4Repr(source: src, destination: dst, proto: .tcp, payloadLength: seg.count), payload: seg)
    }

    func segments(from stack: Stack, after index: Int = 0) -> [SeenSegment] {
        let k = stack === client ? 0 : 1
        return seen[index...].filter { $0.fromStack == k }
    }
}

extension Stack {
    func send(_ id: TCPSocketID, _ bytes: ArraySlice<UInt8>) -> Int {
        bytes.withUnsafeBytes { tcpSend(id, $0) }
    }

    /// Everything readable now.
    func receiveAll(_ id: TCPSocketID) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { tcpReceive(id, into: $0) }
            if n == 0 { return out }
            out += buf[0..<n]
        }
    }

    func state(_ id: TCPSocketID) -> TCPState? { tcpInfo(id)?.state }
}

/// Sends `data` from one end to the other and closes the sending side,
/// moving the clock in `step`s; returns what the receiver read before it
/// saw the end of the stream, or after `limit` of simulated time.
func pump(_ net: MemoryNetwork, from sender: Stack, _ sid: TCPSocketID, to receiver: Stack, _ rid: TCPSocketID,
          _ data: [UInt8], step: Interval = .milliseconds(5), limit: Interval = .seconds(120)) -> [UInt8] {
    var sent = 0
    var got: [UInt8] = []
    var shut = false
    let end = net.clock + limit
    while net.clock < end {
        if sent < data.count { sent += sender.send(sid, data[sent...]) }
        if sent == data.count && !shut {
            sender.tcpShutdown(sid)
            shut = true
        }
        net.run()
        got += receiver.receiveAll(rid)
        if receiver.tcpAtEnd(rid) { break }
        net.advance(by: step, step: step)
    }
    return got
}

func pattern(_ n: Int, seed: UInt64) -> [UInt8] {
    var g = SplitMix64(seed: seed)
    var out = [UInt8](repeating: 0, count: n)
    var i = 0
    while i < n {
        let v = g.next()
        for k in 0..<8 where i + k < n { out[i + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(k))) }
        i += 8
    }
    return out
}

func sha256(_ b: [UInt8]) -> String {
    SHA256.hash(data: b).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}
