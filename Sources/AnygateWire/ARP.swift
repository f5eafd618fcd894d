/// An ARP packet for IPv4 over Ethernet (RFC 826); other hardware or
/// protocol types are refused as `.unsupported`.
///
/// ```
/// +-------------------------------+-------------------------------+
/// |   Hardware type (1)           |   Protocol type (0x0800)      |
/// +---------------+---------------+-------------------------------+
/// | HW len (6)    | Proto len (4) |   Operation                   |
/// +---------------+---------------+-------------------------------+
/// |  Sender MAC (6) | Sender IPv4 (4) | Target MAC (6) | Target IPv4 (4)
/// +---------------------------------------------------------------+
/// ```
public struct ARPPacket {
    public enum Field {
        public static let hardwareType = 0
        public static let protocolType = 2
        public static let hardwareLength = 4
        public static let protocolLength = 5
        public static let operation = 6
        public static let senderMAC = 8
        public static let senderIP = 14
        public static let targetMAC = 18
        public static let targetIP = 24
    }
    public static let length = 28

    public var bytes: UnsafeMutableRawBufferPointer

    @inlinable public init(unchecked bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    public init(validating bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        guard bytes.count >= ARPPacket.length else { throw .truncated }
        self.bytes = bytes
        guard bytes.be16(Field.hardwareType) == 1, bytes.be16(Field.protocolType) == EtherType.ipv4.rawValue,
              bytes.be8(Field.hardwareLength) == 6, bytes.be8(Field.protocolLength) == 4
        else { throw .unsupported }
    }

    @inlinable public var operation: ARPOperation { ARPOperation(rawValue: bytes.be16(Field.operation)) }
    @inlinable public var senderMAC: MACAddress { MACAddress(bytes: bytes, at: Field.senderMAC) }
    @inlinable public var senderIP: IPv4Address { IPv4Address(rawValue: bytes.be32(Field.senderIP)) }
    @inlinable public var targetMAC: MACAddress { MACAddress(bytes: bytes, at: Field.targetMAC) }
    @inlinable public var targetIP: IPv4Address { IPv4Address(rawValue: bytes.be32(Field.targetIP)) }
}

/// The parsed value of an Ethernet/IPv4 ARP packet.
public struct ARPRepr: Hashable, Sendable {
    public var operation: ARPOperation
    public var senderMAC: MACAddress
    public var senderIP: IPv4Address
    public var targetMAC: MACAddress
    public var targetIP: IPv4Address

    public init(operation: ARPOperation, senderMAC: MACAddress, senderIP: IPv4Address,
                targetMAC: MACAddress, targetIP: IPv4Address) {
        self.operation = operation; self.senderMAC = senderMAC; self.senderIP = senderIP
        self.targetMAC = targetMAC; self.targetIP = targetIP
    }

    public init(parsing p: ARPPacket) {
        self.init(operation: p.operation, senderMAC: p.senderMAC, senderIP: p.senderIP,
                  targetMAC: p.targetMAC, targetIP: p.targetIP)
    }

    public init(parsing bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        self.init(parsing: try ARPPacket(validating: bytes))
    }

    /// Writes the 28-byte packet at the start of `bytes`.
    public func emit(into bytes: UnsafeMutableRawBufferPointer) {
        precondition(bytes.count >= ARPPacket.length)
        bytes.setBE16(ARPPacket.Field.hardwareType, 1)
        bytes.setBE16(ARPPacket.Field.protocolType, EtherType.ipv4.rawValue)
        bytes.setBE8(ARPPacket.Field.hardwareLength, 6)
        bytes.setBE8(ARPPacket.Field.protocolLength, 4)
        bytes.setBE16(ARPPacket.Field.operation, operation.rawValue)
        senderMAC.write(to: bytes, at: ARPPacket.Field.senderMAC)
        bytes.setBE32(ARPPacket.Field.senderIP, senderIP.rawValue)
        targetMAC.write(to: bytes, at: ARPPacket.Field.targetMAC)
        bytes.setBE32(ARPPacket.Field.targetIP, targetIP.rawValue)
    }
}
