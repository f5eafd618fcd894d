/// One-line, one-layer-after-another descriptions of frames, for traces and
/// debugging (allocates; never on the packet path). Malformed layers print
/// what is wrong instead of their fields.
public enum PacketPrinter {
    /// "02:00:00:00:00:0a > 02:00:00:00:01:01 ipv4 10.1.0.2 > 10.2.0.2 ttl 64 len 84 | icmp echo-request id 1 seq 1"
    public static func describe(frame bytes: UnsafeMutableRawBufferPointer) -> String {
        let eth: EthernetFrame
        do { eth = try EthernetFrame(validating: bytes) } catch { return "ethernet \(error)" }
        var s = "\(eth.source) > \(eth.destination)"
        if let vlan = eth.vlanID { s += " vlan \(vlan)" }
        switch eth.etherType {
        case .ipv4: s += " " + describe(ipv4: eth.payload)
        case .arp: s += " " + describe(arp: eth.payload)
        case .ipv6: s += " " + describe(ipv6: eth.payload)
        default: s += " \(eth.etherType) len \(eth.payload.count)"
        }
        return s
    }

    public static func describe(arp bytes: UnsafeMutableRawBufferPointer) -> String {
        do {
            let a = try ARPRepr(parsing: bytes)
            switch a.operation {
            case .request: return "arp who-has \(a.targetIP) tell \(a.senderIP)"
            case .reply: return "arp \(a.senderIP) is-at \(a.senderMAC)"
            default: return "arp op \(a.operation) \(a.senderIP) > \(a.targetIP)"
            }
        } catch {
            return "arp \(error)"
        }
    }

    public static func describe(ipv4 bytes: UnsafeMutableRawBufferPointer) -> String {
        let ip: IPv4Packet
        do { ip = try IPv4Packet(validating: bytes) } catch { return "ipv4 \(error)" }
        var s = "ipv4 \(ip.source) > \(ip.destination) ttl \(ip.ttl) len \(ip.totalLength)"
        if ip.headerLength > IPv4Packet.minimumHeaderLength { s += " options \(ip.headerLength - 20)" }
        if ip.dontFragment { s += " df" }
        if ip.isFragment {
            s += " frag id \(ip.identification) off \(ip.fragmentOffset)\(ip.moreFragments ? "+" : "")"
            if ip.fragmentOffset != 0 { return s }
        }
        let payload = ip.payload
        switch ip.proto {
        case .icmp:
            guard payload.count >= ICMPv4Packet.headerLength else { return s + " | icmp truncated" }
            let m = ICMPv4Repr(parsing: ICMPv4Packet(unchecked: payload))
            switch m {
            case let .echoRequest(id, seq), let .echoReply(id, seq):
                s += " | icmp \(m.type) id \(id) seq \(seq)"
            case let .destinationUnreachable(code, mtu):
                s += " | icmp unreachable code \(code)" + (code == ICMPv4UnreachableCode.fragmentationNeeded ? " mtu \(mtu)" : "")
            case let .timeExceeded(code):
                s += " | icmp time-exceeded code \(code)"
            default:
                s += " | icmp \(m.type)"
            }
        case .udp:
            guard payload.count >= UDPDatagram.headerLength else { return s + " | udp truncated" }
            let u = UDPDatagram(unchecked: payload)
            s += " | udp \(u.sourcePort) > \(u.destinationPort) len \(u.length)"
        case .gre:
            do {
                let g = try GRERepr(parsing: payload)
                s += " | gre \(g.protocolType)" + (g.key.map { " key \($0)" } ?? "") + (g.sequence.map { " seq \($0)" } ?? "")
            } catch {
                s += " | gre \(error)"
            }
        default:
            s += " | \(ip.proto)"
        }
        return s
    }

    public static func describe(ipv6 bytes: UnsafeMutableRawBufferPointer) -> String {
        do {
            let r = try IPv6Repr(parsing: bytes)
            return "ipv6 \(r.source) > \(r.destination) hlim \(r.hopLimit) next \(r.nextHeader) len \(r.payloadLength)"
        } catch {
            return "ipv6 \(error)"
        }
    }
}
