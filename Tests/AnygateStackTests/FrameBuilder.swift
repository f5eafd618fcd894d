import AnygateStack
import AnygateWire

/// Builds Ethernet/IPv4 frames byte by byte for injecting into a stack.
enum FrameBuilder {
    /// An Ethernet frame carrying an IPv4 packet with the given header fields and payload.
    static func ipv4(to dstMAC: MACAddress, from srcMAC: MACAddress = MACAddress(2, 0, 0, 0, 9, 9),
                     _ repr: IPv4Repr, payload: [UInt8], options: [UInt8] = []) -> [UInt8] {
        precondition(options.count % 4 == 0)
        let hl = 20 + options.count
        var frame = [UInt8](repeating: 0, count: 14 + hl + payload.count)
        frame.withUnsafeMutableBytes { b in
            EthernetRepr(destination: dstMAC, source: srcMAC, etherType: .ipv4).emit(into: b)
            var r = repr
            r.payloadLength = payload.count + options.count
            let ip = b.tail(from: 14)
            r.emit(into: ip)
            if !options.isEmpty {
                // Rewrite IHL and put the options in place, then re-checksum.
                ip.setBE8(0, 0x40 | UInt8(hl / 4))
                for (i, o) in options.enumerated() { ip.storeBytes(of: o, toByteOffset: 20 + i, as: UInt8.self) }
                IPv4Packet(unchecked: ip).fillChecksum()
            }
            for (i, x) in payload.enumerated() { b.storeBytes(of: x, toByteOffset: 14 + hl + i, as: UInt8.self) }
        }
        return frame
    }

    /// An ICMP echo request message (header + payload), checksummed.
    static func echoRequest(identifier: UInt16, sequence: UInt16, payload: [UInt8]) -> [UInt8] {
        var m = [UInt8](repeating: 0, count: 8) + payload
        m.withUnsafeMutableBytes { ICMPv4Repr.echoRequest(identifier: identifier, sequence: sequence).emit(into: $0) }
        return m
    }
}

extension MemoryNetwork {
    /// Puts a super-frame (or a packet with a partial checksum) into a
    /// stack's interface, as a port with virtio-net offloads would.
    func inject(_ frame: [UInt8], into stack: Stack, on interface: InterfaceIndex, segmentSize: UInt16, offload: UInt8) {
        guard var p = pool.make(copying: frame) else { fatalError("pool empty in test") }
        p.segmentSize = segmentSize
        p.offload = offload
        stack.receive(p, on: interface)
        run()
    }

    /// Puts a frame straight into a stack's interface, as if it came off the wire.
    func inject(_ frame: [UInt8], into stack: Stack, on interface: InterfaceIndex) {
        guard let p = pool.make(copying: frame) else { fatalError("pool empty in test") }
        stack.receive(p, on: interface)
        run()
    }
}
