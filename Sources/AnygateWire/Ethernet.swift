/// An Ethernet II frame, optionally with one IEEE 802.1Q (or 802.1ad) tag.
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                   Destination MAC (6 bytes)                   |
/// +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                               |                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+     Source MAC (6 bytes)      +
/// |                                                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   EtherType or TPID 0x8100    | [PCP|DEI|  VLAN ID (12 bits)] |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  [inner EtherType if tagged]  |  payload ...
/// ```
public struct EthernetFrame {
    public enum Field {
        public static let destination = 0
        public static let source = 6
        public static let etherType = 12
        public static let tagControl = 14
        public static let innerEtherType = 16
    }
    public static let headerLength = 14
    public static let taggedHeaderLength = 18

    public var bytes: UnsafeMutableRawBufferPointer

    /// Wraps bytes already checked to hold `headerLength` bytes.
    @inlinable public init(unchecked bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    /// Checks that the buffer holds the header, including a VLAN tag if one is present.
    @inlinable public init(validating bytes: UnsafeMutableRawBufferPointer) throws(WireError) {
        guard bytes.count >= EthernetFrame.headerLength else { throw .truncated }
        self.bytes = bytes
        if isTagged, bytes.count < EthernetFrame.taggedHeaderLength { throw .truncated }
    }

    @inlinable public var destination: MACAddress {
        get { MACAddress(bytes: bytes, at: Field.destination) }
        nonmutating set { newValue.write(to: bytes, at: Field.destination) }
    }
    @inlinable public var source: MACAddress {
        get { MACAddress(bytes: bytes, at: Field.source) }
        nonmutating set { newValue.write(to: bytes, at: Field.source) }
    }
    /// The outer type field (the TPID when tagged).
    @inlinable public var outerEtherType: EtherType { EtherType(rawValue: bytes.be16(Field.etherType)) }
    @inlinable public var isTagged: Bool {
        let t = outerEtherType
        return t == .vlan || t == .qinq
    }
    /// The type of the payload, past any tag.
    @inlinable public var etherType: EtherType {
        isTagged ? EtherType(rawValue: bytes.be16(Field.innerEtherType)) : outerEtherType
    }
    /// The 12-bit VLAN identifier, or nil for an untagged frame.
    @inlinable public var vlanID: UInt16? { isTagged ? bytes.be16(Field.tagControl) & 0x0FFF : nil }
    /// The 3-bit priority code point, or nil for an untagged frame.
    @inlinable public var priority: UInt8? { isTagged ? UInt8(bytes.be16(Field.tagControl) >> 13) : nil }
    @inlinable public var headerLength: Int { isTagged ? EthernetFrame.taggedHeaderLength : EthernetFrame.headerLength }
    @inlinable public var payload: UnsafeMutableRawBufferPointer { bytes.tail(from: headerLength) }
}

/// One 802.1Q tag: priority and VLAN identifier.
public struct VLANTag: Hashable, Sendable {
    public var identifier: UInt16
    public var priority: UInt8
    public var dropEligible: Bool
    public var tpid: EtherType
    public init(identifier: UInt16, priority: UInt8 = 0, dropEligible: Bool = false, tpid: EtherType = .vlan) {
        self.identifier = identifier & 0x0FFF; self.priority = priority & 7
        self.dropEligible = dropEligible; self.tpid = tpid
    }
}

/// The parsed value of an Ethernet header.
public struct EthernetRepr: Hashable, Sendable {
    public var destination: MACAddress
    public var source: MACAddress
    public var vlan: VLANTag?
    public var etherType: EtherType

    public init(destination: MACAddress, source: MACAddress, vlan: VLANTag? = nil, etherType: EtherType) {
        self.destination = destination; self.source = source; self.vlan = vlan; self.etherType = etherType
    }

    public init(parsing frame: EthernetFrame) {
        destination = frame.destination
        source = frame.source
        etherType = frame.etherType
        if frame.isTagged {
            let tci = frame.bytes.be16(EthernetFrame.Field.tagControl)
            vlan = VLANTag(identifier: tci & 0x0FFF, priority: UInt8(tci >> 13),
                           dropEligible: tci & 0x1000 != 0, tpid: frame.outerEtherType)
        } else {
            vlan = nil
        }
    }

    public var headerLength: Int { vlan == nil ? EthernetFrame.headerLength : EthernetFrame.taggedHeaderLength }

    /// Writes the header at the start of `bytes`, which must hold `headerLength` bytes.
    public func emit(into bytes: UnsafeMutableRawBufferPointer) {
        precondition(bytes.count >= headerLength)
        destination.write(to: bytes, at: EthernetFrame.Field.destination)
        source.write(to: bytes, at: EthernetFrame.Field.source)
        if let tag = vlan {
            bytes.setBE16(EthernetFrame.Field.etherType, tag.tpid.rawValue)
            let tci = UInt16(tag.priority) << 13 | (tag.dropEligible ? 0x1000 : 0) | tag.identifier
            bytes.setBE16(EthernetFrame.Field.tagControl, tci)
            bytes.setBE16(EthernetFrame.Field.innerEtherType, etherType.rawValue)
        } else {
            bytes.setBE16(EthernetFrame.Field.etherType, etherType.rawValue)
        }
    }
}
