import AnygateStack
import AnygateWire

/// Valid inputs to start each harness from, built with the wire emitters
/// (and, for tunnels and ESP, by the fuzzed router itself).
enum Seeds {
    static let lanMAC = StackHarness.lanMAC, wanMAC = StackHarness.wanMAC, peer = StackHarness.peerMAC

    /// An IPv4 packet: UDP (with `payload`) or an ICMP echo request.
    static func ipv4(_ s: IPv4Address, _ d: IPv4Address, udp ports: (UInt16, UInt16)? = nil, payload: [UInt8] = Array("anygate".utf8)) -> [UInt8] {
        let l4 = ports == nil ? 8 + payload.count : 8 + payload.count
        var b = [UInt8](repeating: 0, count: 20 + l4)
        b.withUnsafeMutableBytes { p in
            IPv4Repr(source: s, destination: d, proto: ports == nil ? .icmp : .udp, payloadLength: l4).emit(into: p)
            let body = UnsafeMutableRawBufferPointer(rebasing: p[20...])
            for (k, v) in payload.enumerated() { body[8 + k] = v }
            if let ports {
                UDPRepr(sourcePort: ports.0, destinationPort: ports.1, payloadLength: payload.count).emit(into: body, source: s, destination: d)
            } else {
                ICMPv4Repr.echoRequest(identifier: 1, sequence: 1).emit(into: body)
            }
        }
        return b
    }

    static func ethernet(_ dst: MACAddress, _ src: MACAddress, _ type: EtherType, _ payload: [UInt8]) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 14)
        f.withUnsafeMutableBytes { EthernetRepr(destination: dst, source: src, etherType: type).emit(into: $0) }
        return f + payload
    }

    static func ipv6Echo(_ s: IPv6Address, _ d: IPv6Address) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 40 + 16)
        b.withUnsafeMutableBytes { p in
            IPv6Repr(source: s, destination: d, nextHeader: .icmpv6, payloadLength: 16, hopLimit: 64).emit(into: p)
            ICMPv6Repr.echoRequest(identifier: 1, sequence: 1).emit(into: UnsafeMutableRawBufferPointer(rebasing: p[40...]), source: s, destination: d)
        }
        return b
    }

    /// A TCP SYN's header with MSS, SACK permitted, timestamps and window scale.
    static let tcpSYN: [UInt8] = [0x9C, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0xA0, 0x02, 0xFF, 0xFF, 0, 0, 0, 0,
                                  2, 4, 0x05, 0xB4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]

    static let gre: [UInt8] = [0x30, 0x00, 0x08, 0x00, 0, 0, 0, 7, 0, 0, 0, 1] + ipv4(IPv4Address(10, 2, 0, 5), IPv4Address(10, 1, 0, 9))

    /// What the router under fuzz sends into its tunnels, turned round as
    /// if the peers had sent it: GRE with key and sequence, GRE-in-UDP, ESP.
    static func reflectedTunnelFrames() -> [[UInt8]] {
        let h = StackHarness.shared
        h.stack.startCapture(interface: h.wan, directions: .tx, program: nil, snaplen: 2000)
        for d in [IPv4Address(10, 2, 0, 5), IPv4Address(10, 3, 0, 5), IPv4Address(10, 4, 0, 5)] {
            let f = ethernet(lanMAC, peer, .ipv4, ipv4(IPv4Address(10, 1, 0, 9), d, udp: (4000, 5000)))
            if let p = h.pool.make(copying: f) { h.stack.receive(p, on: h.lan) }
        }
        let sent = h.stack.readCapture(interface: h.wan)?.packets.map(\.bytes) ?? []
        h.stack.stopCapture(interface: h.wan)
        return sent.filter { $0.count > 34 && $0[12] == 8 && $0[13] == 0 }.map { f in
            var r = f
            r.replaceSubrange(0..<6, with: f[6..<12]); r.replaceSubrange(6..<12, with: f[0..<6])
            r.replaceSubrange(26..<30, with: f[30..<34]); r.replaceSubrange(30..<34, with: f[26..<30])
            // UDP: the ports too (GRE-in-UDP answers from 4754; ESP in UDP 4500 either way).
            if f[23] == 17 { r.replaceSubrange(34..<36, with: f[36..<38]); r.replaceSubrange(36..<38, with: f[34..<36]) }
            return [1] + r
        }
    }

    static func stack() -> [[UInt8]] {
        let a = IPv4Address(10, 1, 0, 9), us = IPv4Address(10, 1, 0, 1)
        var out: [[UInt8]] = [
            [0] + ethernet(lanMAC, peer, .ipv4, ipv4(a, us, udp: (4000, 53))),
            [0] + ethernet(lanMAC, peer, .ipv4, ipv4(a, us)),
            [0] + ethernet(lanMAC, peer, .ipv4, ipv4(a, IPv4Address(8, 8, 8, 8), udp: (4000, 443))),
            [0] + ethernet(lanMAC, peer, .ipv6, ipv6Echo(IPv6Address("2001:db8:1::9")!, IPv6Address("2001:db8:1::1")!)),
            [0] + ethernet(MACAddress(0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF), peer, .arp,
                           Array(StackHarness.arpReply(from: a, mac: peer, to: us, lanMAC).dropFirst(14))),
            [1] + ethernet(wanMAC, peer, .ipv4, {
                var p = ipv4(IPv4Address(192, 0, 2, 2), IPv4Address(192, 0, 2, 1), payload: [])
                p = Array(p[0..<20]) + gre
                p.withUnsafeMutableBytes { IPv4Repr(source: IPv4Address(192, 0, 2, 2), destination: IPv4Address(192, 0, 2, 1), proto: .gre,
                                                    payloadLength: gre.count).emit(into: $0) }
                return p
            }()),
        ]
        var tcp = ipv4(a, us, payload: [])
        tcp = Array(tcp[0..<20]) + tcpSYN
        tcp.withUnsafeMutableBytes { p in
            IPv4Repr(source: a, destination: us, proto: .tcp, payloadLength: tcpSYN.count).emit(into: p)
            let seg = UnsafeMutableRawBufferPointer(rebasing: p[20...])
            TCPRepr.finish(seg, pseudo: InternetChecksum.pseudoHeaderSum(source: a, destination: us, protocol: .tcp, length: tcpSYN.count))
        }
        out.append([0] + ethernet(lanMAC, peer, .ipv4, tcp))
        return out + reflectedTunnelFrames()
    }
}
