/// Capture files as tcpdump, tshark and Wireshark read them: pcapng
/// (a section, one interface with its name and nanosecond timestamps, and
/// each packet with its direction) or classic pcap (nanosecond variant).
/// Little-endian; the readers take either byte order.
public enum CaptureFile {
    public enum Format: String, Sendable, CaseIterable {
        case pcapng, pcap
    }

    /// What opens the file: pcapng's section and interface blocks, or pcap's header.
    public static func header(_ format: Format, linkType: UInt16, snaplen: Int, interface: String) -> [UInt8] {
        var out: [UInt8] = []
        switch format {
        case .pcap:
            out.le32(0xA1B2_3C4D)  // nanosecond timestamps
            out.le16(2); out.le16(4)
            out.le32(0); out.le32(0)
            out.le32(UInt32(clamping: snaplen))
            out.le32(UInt32(linkType))
        case .pcapng:
            // Section header block: byte-order magic, version 1.0, length unknown.
            block(&out, type: 0x0A0D_0D0A) { b in
                b.le32(0x1A2B_3C4D); b.le16(1); b.le16(0)
                b.le32(0xFFFF_FFFF); b.le32(0xFFFF_FFFF)
                option(&b, code: 4, Array("anygated".utf8))  // shb_userappl
                option(&b, code: 0, [])
            }
            // Interface description block: link type, snap length, if_name, if_tsresol (10^-9).
            block(&out, type: 1) { b in
                b.le16(linkType); b.le16(0); b.le32(UInt32(clamping: snaplen))
                option(&b, code: 2, Array(interface.utf8))
                option(&b, code: 9, [9])
                option(&b, code: 0, [])
            }
        }
        return out
    }

    /// One packet: `time` in nanoseconds since 1970, `length` its whole
    /// length (`data` may be shorter), `outbound` its direction (pcapng only).
    public static func record(_ format: Format, time: Int64, length: Int, data: [UInt8], outbound: Bool, into out: inout [UInt8]) {
        let t = UInt64(max(0, time))
        switch format {
        case .pcap:
            out.le32(UInt32(truncatingIfNeeded: t / 1_000_000_000)); out.le32(UInt32(truncatingIfNeeded: t % 1_000_000_000))
            out.le32(UInt32(data.count)); out.le32(UInt32(clamping: length))
            out += data
        case .pcapng:
            // Enhanced packet block on interface 0, with epb_flags' direction (1 inbound, 2 outbound).
            block(&out, type: 6) { b in
                b.le32(0)
                b.le32(UInt32(truncatingIfNeeded: t >> 32)); b.le32(UInt32(truncatingIfNeeded: t))
                b.le32(UInt32(data.count)); b.le32(UInt32(clamping: length))
                b += data
                b += [UInt8](repeating: 0, count: (4 - data.count % 4) % 4)
                var flags: [UInt8] = []
                flags.le32(outbound ? 2 : 1)
                option(&b, code: 2, flags)
                option(&b, code: 0, [])
            }
        }
    }

    /// A block: type, total length, body, total length again.
    static func block(_ out: inout [UInt8], type: UInt32, _ body: (inout [UInt8]) -> Void) {
        var b: [UInt8] = []
        body(&b)
        let total = UInt32(12 + b.count)
        out.le32(type); out.le32(total)
        out += b
        out.le32(total)
    }

    /// An option: code, length, value padded to 4.
    static func option(_ out: inout [UInt8], code: UInt16, _ value: [UInt8]) {
        out.le16(code); out.le16(UInt16(value.count))
        out += value
        out += [UInt8](repeating: 0, count: (4 - value.count % 4) % 4)
    }
}

extension [UInt8] {
    mutating func le16(_ v: UInt16) { append(UInt8(v & 0xFF)); append(UInt8(v >> 8)) }
    mutating func le32(_ v: UInt32) { for s in stride(from: 0, to: 32, by: 8) { append(UInt8(truncatingIfNeeded: v >> UInt32(s))) } }
}
