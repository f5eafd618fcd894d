import CPcap
public import AnygateWire

/// Compiles a tcpdump filter expression (pcap-filter(7)) into classic BPF
/// with libpcap, for the stack to run (`capture --filter`, `trace
/// --filter`). Nothing is opened: libpcap compiles against a dead handle of
/// the interface's link type.
public enum FilterCompiler {
    /// What the bytes a program reads start with.
    public enum LinkType: Int32, Sendable {
        /// An Ethernet frame (DLT_EN10MB).
        case ethernet = 1
        /// An IP packet, IPv4 or IPv6 by its version (DLT_RAW, LINKTYPE_RAW 101).
        case raw = 12

        /// The number a capture file records (LINKTYPE_*).
        public var fileLinkType: UInt16 { self == .ethernet ? 1 : 101 }
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// The program for `expression` (an empty one accepts every packet,
    /// keeping `snaplen` bytes).
    public static func compile(_ expression: String, linkType: LinkType, snaplen: Int = 262_144) throws(Failure) -> BPFProgram {
        guard let handle = pcap_open_dead(linkType.rawValue, Int32(clamping: snaplen)) else {
            throw Failure(description: "libpcap could not make a handle")
        }
        defer { pcap_close(handle) }
        var program = bpf_program()
        guard pcap_compile(handle, &program, expression, 1, PCAP_NETMASK_UNKNOWN) == 0 else {
            throw Failure(description: String(cString: pcap_geterr(handle)))
        }
        defer { pcap_freecode(&program) }
        let instructions = UnsafeBufferPointer(start: program.bf_insns, count: Int(program.bf_len)).map {
            BPFInstruction(code: $0.code, jt: $0.jt, jf: $0.jf, k: $0.k)
        }
        do {
            return try BPFProgram(instructions)
        } catch {
            throw Failure(description: "libpcap's program for \"\(expression)\" is not one the stack runs: \(error)")
        }
    }
}
