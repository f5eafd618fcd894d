import AnygateControl
import AnygateHost
import AnygateStack
import AnygateWire
import Foundation

/// A capture the daemon runs for `anygatectl capture`: on one interface,
/// in every replica, read in turns by the client.
struct CaptureSession {
    let interface: InterfaceIndex
    let info: CaptureInfo
    /// Packets still to hand out (`Int.max`: until stopped).
    var remaining: Int
    /// When the client last read (monotonic ns): an abandoned capture ends.
    var lastRead: Int64
}

extension Daemon {
    /// The most bytes kept of one packet (a super-frame is at most 64 KiB and a header).
    static let maxSnaplen = 262_144
    /// A capture nobody reads for this long ends (its client went away).
    static let captureIdleNanoseconds: Int64 = 10_000_000_000
    /// Each replica's buffer of copies waiting for the reader.
    static let captureBufferBytes = 8 << 20

    func capture(_ r: ControlRequest, local: Bool) -> [UInt8] {
        guard let dev = r.dev else { return fail("a capture needs an interface") }
        switch r.verb {
        case .captureStart: return startCapture(r, dev: dev, local: local)
        case .captureStop:
            guard let s = captureSessions.removeValue(forKey: dev) else { return fail("no capture is running on \(dev)") }
            let i = s.interface
            change { $0.stopCapture(interface: i) }
            logger.notice("capture stopped", metadata: ["interface": "\(dev)"])
            return encode(ControlResponse(ok: true, result: Done(message: "capture on \(dev) stopped")))
        default:
            return readCapture(dev: dev)
        }
    }

    func startCapture(_ r: ControlRequest, dev: String, local: Bool) -> [UInt8] {
        guard let i = stack.interface(named: dev) else { return fail("no interface named \(dev)") }
        if !local && stack.isProtectedInterface(i) {
            return fail("\(dev) carries what IPsec protects: its plaintext is captured only over the local control socket")
        }
        guard captureSessions[dev] == nil else { return fail("a capture is already running on \(dev) (capture-stop ends it)") }
        let directions: CaptureDirections
        switch r.direction ?? "both" {
        case "rx", "in": directions = .rx
        case "tx", "out": directions = .tx
        case "both", "inout": directions = .both
        case let other: return fail("capture --direction is rx, tx or both, not \(other)")
        }
        let snaplen = r.snaplen ?? Daemon.maxSnaplen
        guard (1...Daemon.maxSnaplen).contains(snaplen) else { return fail("capture --snaplen must be 1 to \(Daemon.maxSnaplen), not \(snaplen)") }
        if let n = r.count, n < 1 { return fail("capture --count must be at least 1, not \(n)") }
        let linkType: FilterCompiler.LinkType = stack.isTunnelInterface(i) ? .raw : .ethernet
        let expression = r.filter ?? ""
        let program: BPFProgram?
        do {
            program = expression.isEmpty ? nil : try FilterCompiler.compile(expression, linkType: linkType, snaplen: snaplen)
        } catch {
            return fail("bad filter \"\(expression)\": \(error)")
        }
        let count = r.count, bytes = Daemon.captureBufferBytes
        change { $0.startCapture(interface: i, directions: directions, program: program, snaplen: snaplen, count: count, bufferBytes: bytes) }
        let info = CaptureInfo(interface: dev, linkType: linkType.fileLinkType, snaplen: snaplen, direction: r.direction ?? "both",
                               filter: expression)
        captureSessions[dev] = CaptureSession(interface: i, info: info, remaining: count ?? .max, lastRead: runtime.clock)
        logger.notice("capture started", metadata: ["interface": "\(dev)", "filter": "\(expression)", "direction": "\(info.direction)",
                                                    "count": "\(count.map(String.init) ?? "-")"])
        return encode(ControlResponse(ok: true, result: info))
    }

    func readCapture(dev: String) -> [UInt8] {
        guard var s = captureSessions[dev] else { return fail("no capture is running on \(dev)") }
        let i = s.interface
        // Each replica copies what passes through it; merged by time.
        let batches: [CaptureBatch] = workers.map { $0.gather { $0.stack.readCapture(interface: i) }?.compactMap { $0 } ?? [] }
            ?? [stack.readCapture(interface: i)].compactMap { $0 }
        let offset = HostClock.wallClockOffset()
        var packets = batches.flatMap(\.packets).sorted { $0.time < $1.time }
        if packets.count > s.remaining { packets.removeLast(packets.count - s.remaining) }
        if s.remaining != .max { s.remaining -= packets.count }
        let gone = stack.interface(named: dev) != i
        let finished = s.remaining == 0 || gone || (!batches.isEmpty && batches.allSatisfy(\.finished))
        let chunk = CaptureChunk(packets: packets.map {
            CaptureRecord(time: $0.time.nanoseconds &+ offset, outbound: $0.outbound, length: $0.wireLength, data: Data($0.bytes))
        }, lost: batches.reduce(0) { $0 &+ $1.lost }, finished: finished)
        s.lastRead = runtime.clock
        if finished {
            captureSessions[dev] = nil
            if !gone { change { $0.stopCapture(interface: i) } }
        } else {
            captureSessions[dev] = s
        }
        return encode(ControlResponse(ok: true, result: chunk))
    }

    /// Ends captures nobody has read for a while; returns when to look again.
    func expireCaptures() -> Int64? {
        guard !captureSessions.isEmpty else { return nil }
        let now = runtime.clock
        for (dev, s) in captureSessions where now - s.lastRead > Daemon.captureIdleNanoseconds {
            captureSessions[dev] = nil
            let i = s.interface
            if stack.interface(named: dev) == i { change { $0.stopCapture(interface: i) } }
            logger.notice("capture ended: nobody read it for \(Daemon.captureIdleNanoseconds / 1_000_000_000) s", metadata: ["interface": "\(dev)"])
        }
        return now + 1_000_000_000
    }
}
