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

    /// Writes the 12-byte layout (the last two bytes zero).
    public func emit(into b: UnsafeMutableRawBufferPointer) {
        b[0] = flags
        b[1] = gsoType
        b[2] = UInt8(truncatingIfNeeded: headerLength); b[3] = UInt8(truncatingIfNeeded: headerLength >> 8)
        b[4] = UInt8(truncatingIfNeeded: gsoSize); b[5] = UInt8(truncatingIfNeeded: gsoSize >> 8)
        b[6] = UInt8(truncatingIfNeeded: checksumStart); b[7] = UInt8(truncatingIfNeeded: checksumStart >> 8)
        b[8] = UInt8(truncatingIfNeeded: checksumOffset); b[9] = UInt8(truncatingIfNeeded: checksumOffset >> 8)
        b[10] = 0; b[11] = 0
    }
}
