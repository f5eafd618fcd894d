/// The virtio-net header a TAP opened with `IFF_VNET_HDR` (or a packet
/// socket with `PACKET_VNET_HDR`) puts in front of every frame: how the
/// kernel left the frame's checksum and whether it is a super-frame to be
/// cut into segments (GSO). 10 bytes, 12 with `TUNSETVNETHDRSZ` 12 (the
/// mergeable-buffers layout, whose last field is unused here); fields are
/// little-endian on the hosts this runs on (virtio 1.0 on x86 and arm64).
public struct VirtioNetHeader: Equatable, Sendable {
    public static let length = 12

    /// `flags`: the checksum from `checksumStart` to the end is still to be
    /// computed and stored at `checksumStart + checksumOffset` (the field
    /// holds the pseudo-header sum).
    public static let needsChecksum: UInt8 = 1
    /// `flags`: the checksum was verified (receive side).
    public static let dataValid: UInt8 = 2

    public enum GSOType: UInt8, Sendable {
        case none = 0
        case tcpv4 = 1
        case udp = 3
        case tcpv6 = 4
        case udpL4 = 5
    }
    /// Or'ed into `gso_type` when the TCP super-frame carries ECN's CWR.
    public static let gsoECN: UInt8 = 0x80

    public var flags: UInt8 = 0
    public var gsoType: UInt8 = 0
    public var headerLength: UInt16 = 0
    public var gsoSize: UInt16 = 0
    public var checksumStart: UInt16 = 0
    public var checksumOffset: UInt16 = 0

    public init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
                checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0) {
        self.flags = flags; self.gsoType = gsoType; self.headerLength = headerLength; self.gsoSize = gsoSize
        self.checksumStart = checksumStart; self.checksumOffset = checksumOffset
    }

    /// Reads the header (at least 10 bytes).
    public init(parsing b: UnsafeRawBufferPointer) {
        flags = b[0]
        gsoType = b[1]
        headerLength = UInt16(b[2]) | UInt16(b[3]) << 8
        gsoSize = UInt16(b[4]) | UInt16(b[5]) << 8
        checksumStart = UInt16(b[6]) | UInt16(b[7]) << 8
        checksumOffset = UInt16(b[8]) | UInt16(b[9]) << 8
    }

    /// The layout packet sockets use (`PACKET_VNET_HDR`): without the last field.
    public static let shortLength = 10

    /// Writes the header: 10 bytes, or the 12-byte layout (the last two
    /// bytes zero) when there is room for it.
    public func emit(into b: UnsafeMutableRawBufferPointer) {
        b[0] = flags
        b[1] = gsoType
        b[2] = UInt8(truncatingIfNeeded: headerLength); b[3] = UInt8(truncatingIfNeeded: headerLength >> 8)
        b[4] = UInt8(truncatingIfNeeded: gsoSize); b[5] = UInt8(truncatingIfNeeded: gsoSize >> 8)
        b[6] = UInt8(truncatingIfNeeded: checksumStart); b[7] = UInt8(truncatingIfNeeded: checksumStart >> 8)
        b[8] = UInt8(truncatingIfNeeded: checksumOffset); b[9] = UInt8(truncatingIfNeeded: checksumOffset >> 8)
        if b.count >= VirtioNetHeader.length { b[10] = 0; b[11] = 0 }
    }
}

extension VirtioNetHeader {
    /// Where the IP header of an Ethernet frame starts (after one 802.1Q
    /// tag, if any), or nil when it carries neither IPv4 nor IPv6.
    public static func network(of frame: UnsafeMutableRawBufferPointer) -> Int? {
        guard frame.count >= 18 else { return nil }
        var at = 12
        if frame.be16(at) == 0x8100 { at += 4 }
        let type = frame.be16(at)
        return type == 0x0800 || type == 0x86DD ? at + 2 : nil
    }

    /// What a received frame's header asks of the stack, checked against the
    /// frame itself: a segment size (0: not a super-frame), whether the
    /// transport checksum is partial, and whether the device verified it.
    /// Nil when the header is malformed or asks for what this stack does
    /// not do: unknown flags or GSO types, UFO, a GSO frame without a
    /// partial checksum or with segment size 0, a checksum position that is
    /// not the TCP or UDP checksum of the frame's own headers, a GSO type
    /// that does not match them.
    public func offloads(for frame: UnsafeMutableRawBufferPointer) -> (segmentSize: UInt16, partial: Bool, verified: Bool)? {
        guard flags & ~(VirtioNetHeader.needsChecksum | VirtioNetHeader.dataValid) == 0 else { return nil }
        let partial = flags & VirtioNetHeader.needsChecksum != 0
        let verified = flags & VirtioNetHeader.dataValid != 0
        guard let type = GSOType(rawValue: gsoType & ~VirtioNetHeader.gsoECN), type != .udp else { return nil }
        if type == .none && !partial { return (0, false, verified) }
        guard let network = VirtioNetHeader.network(of: frame), let l = Segmentation.layout(frame, network: network) else { return nil }
        if partial {
            guard Int(checksumStart) == l.transport, Int(checksumOffset) == (l.isTCP ? 16 : 6) else { return nil }
        }
        switch type {
        case .none: return (0, partial, verified)
        case .tcpv4: guard l.isTCP && !l.isIPv6 else { return nil }
        case .tcpv6: guard l.isTCP && l.isIPv6 else { return nil }
        case .udpL4: guard !l.isTCP else { return nil }
        case .udp: return nil
        }
        guard partial, gsoSize > 0, l.headersLength + Int(gsoSize) <= 65535 else { return nil }
        // A segment size that would make one frame into a flood of tiny packets is refused.
        guard Segmentation.segmentCount(l, segmentSize: Int(gsoSize)) <= Segmentation.maxSegments else { return nil }
        return (gsoSize, partial, verified)
    }

    /// The header to send a frame with: a super-frame's GSO type, segment
    /// size and header length, and the checksum position when its transport
    /// checksum is partial. Nil when the frame's headers cannot carry what
    /// is asked (the caller then cuts or completes it itself).
    public static func sending(_ frame: UnsafeMutableRawBufferPointer, segmentSize: UInt16, partial: Bool) -> VirtioNetHeader? {
        if segmentSize == 0 && !partial { return VirtioNetHeader() }
        guard let network = network(of: frame), let l = Segmentation.layout(frame, network: network) else { return nil }
        var h = VirtioNetHeader(flags: needsChecksum, checksumStart: UInt16(l.transport), checksumOffset: l.isTCP ? 16 : 6)
        if segmentSize != 0 {
            h.gsoType = l.isTCP ? (l.isIPv6 ? GSOType.tcpv6 : .tcpv4).rawValue : GSOType.udpL4.rawValue
            h.gsoSize = segmentSize
            h.headerLength = UInt16(l.headersLength)
        }
        return h
    }
}
