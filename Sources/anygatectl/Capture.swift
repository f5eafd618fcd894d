import AnygateControl
import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Set by SIGINT and SIGTERM: the capture ends and the file is complete.
nonisolated(unsafe) var captureInterrupted: sig_atomic_t = 0

struct Capture: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "capture IF [--direction rx|tx|both] [--count N] [--snaplen N] [--filter EXPR]: packets to standard output as pcapng.",
        discussion: """
            EXPR is a tcpdump filter expression (pcap-filter(7)), run in the stack. On an Ethernet interface the packets \
            are frames; on a tunnel's interface they are the inner IP packets (the underlay's interface shows them \
            encapsulated). Ends after --count packets, --seconds, or Ctrl-C. A reader that cannot keep up loses \
            captured copies (counted, reported at the end), never forwarded packets. \
            Example: anygatectl capture wan0 --filter "icmp" | tcpdump -nr -
            """)
    @ParentCommand var root: Anygatectl
    @Argument(help: "The interface.") var interface: String
    @Option(name: .long, help: "rx, tx or both.") var direction = "both"
    @Option(name: .long, help: "Stop after this many packets.") var count: Int?
    @Option(name: .long, help: "Keep at most this many bytes of each packet.") var snaplen = 262_144
    @Option(name: .long, help: "Only packets matching this tcpdump expression.") var filter: String?
    @Option(name: .long, help: "Stop after this many seconds.") var seconds: Double?
    @Option(name: .long, help: "pcapng (with interface and direction) or pcap.") var format = "pcapng"

    func validate() throws {
        guard ["rx", "tx", "both"].contains(direction) else { throw ValidationError("--direction is rx, tx or both") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        guard (1...262_144).contains(snaplen) else { throw ValidationError("--snaplen must be 1 to 262144") }
        if let seconds, seconds <= 0 { throw ValidationError("--seconds must be positive") }
        guard CaptureFile.Format(rawValue: format) != nil else { throw ValidationError("--format is pcapng or pcap") }
    }

    func run() {
        let format = CaptureFile.Format(rawValue: format)!
        signal(SIGPIPE, SIG_IGN)
        signal(SIGINT) { _ in captureInterrupted = 1 }
        signal(SIGTERM) { _ in captureInterrupted = 1 }
        let info = call(ControlRequest(verb: .captureStart, dev: interface, count: count, filter: filter ?? "",
                                       direction: direction, snaplen: snaplen), root, as: CaptureInfo.self)
        let deadline = seconds.map { Date().addingTimeInterval($0) }
        var written = 0, lost: UInt64 = 0, finished = false
        var open = Capture.write(CaptureFile.header(format, linkType: info.linkType, snaplen: info.snaplen, interface: interface))
        while open && captureInterrupted == 0 && !finished {
            let chunk = call(ControlRequest(verb: .captureRead, dev: interface), root, as: CaptureChunk.self)
            var out: [UInt8] = []
            for p in chunk.packets {
                CaptureFile.record(format, time: p.time, length: p.length, data: Array(p.data), outbound: p.outbound, into: &out)
            }
            written += chunk.packets.count
            lost = chunk.lost
            finished = chunk.finished
            if !out.isEmpty { open = Capture.write(out) }
            if let deadline, Date() >= deadline { break }
            if chunk.packets.isEmpty && !finished { usleep(50_000) }
        }
        if !finished { _ = call(ControlRequest(verb: .captureStop, dev: interface), root, as: Done.self) }
        printError("\(written) packet\(written == 1 ? "" : "s") captured on \(interface), \(lost) lost (reader too slow)")
    }

    /// Writes all of `bytes` to standard output; false when the reader went away.
    static func write(_ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(1, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            done += n
        }
        return true
    }
}
