/// Why a header could not be parsed. Malformed bytes are data, not a crash:
/// every parser in this module returns one of these instead of trapping.
public enum WireError: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    /// The buffer ends before the header (or a length it declares) does.
    case truncated
    /// The version field is not the one this header type describes.
    case badVersion
    /// The header-length field is below the minimum or past the buffer.
    case badHeaderLength
    /// A total/payload length field is inconsistent with the header or the buffer.
    case badTotalLength
    /// The checksum does not verify.
    case badChecksum
    /// An IPv4 option is malformed (zero length, or runs past the header).
    case badOption
    /// A well-formed header that uses a feature this implementation refuses
    /// (GRE routing bits, a non-Ethernet ARP hardware type, ...).
    case unsupported

    public var description: String {
        switch self {
        case .truncated: "truncated"
        case .badVersion: "bad version"
        case .badHeaderLength: "bad header length"
        case .badTotalLength: "bad total length"
        case .badChecksum: "bad checksum"
        case .badOption: "bad option"
        case .unsupported: "unsupported"
        }
    }
}
