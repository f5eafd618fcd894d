public import AnygateWire

/// Which way a capture looks at an interface's packets.
public struct CaptureDirections: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// What arrives: frames from the port, or inner packets out of a tunnel.
    public static let rx = CaptureDirections(rawValue: 1)
    /// What leaves: frames to the port, or inner packets into a tunnel.
    public static let tx = CaptureDirections(rawValue: 2)
    public static let both: CaptureDirections = [.rx, .tx]
}

/// One captured copy: an Ethernet frame on an Ethernet interface, an IP
/// packet on a tunnel's.
public struct CapturedPacket: Hashable, Sendable {
    /// The stack's clock when it was seen.
    public var time: Timestamp
    public var outbound: Bool
    /// The packet's whole length; `bytes` may hold fewer (the snap length).
    public var wireLength: Int
    public var bytes: [UInt8]
}

/// What a capture read returns: the copies since the last read, and what
/// the capture could not keep.
public struct CaptureBatch: Sendable {
    public var packets: [CapturedPacket]
    /// Copies the filter accepted that found the buffer full (a slow reader).
    public var lost: UInt64
    /// Packets the filter accepted, kept or lost.
    public var matched: UInt64
    /// The capture has taken its count: nothing more will come.
    public var finished: Bool
}

/// A capture on one interface: its filter, the copies waiting to be read.
final class Capturer {
    let directions: CaptureDirections
    let program: BPFProgram?
    let snaplen: Int
    /// Copies still to take (`Int.max`: until stopped).
    var remaining: Int
    let buffer: CaptureBuffer
    var matched: UInt64 = 0
    var lost: UInt64 = 0

    init(directions: CaptureDirections, program: BPFProgram?, snaplen: Int, count: Int?, bufferBytes: Int) {
        self.directions = directions
        self.program = program
        self.snaplen = snaplen
        self.remaining = count ?? .max
        self.buffer = CaptureBuffer(capacity: bufferBytes)
    }
}

extension Stack {
    // MARK: Control

    /// Starts copying `interface`'s packets (`directions`) that `program`
    /// accepts, at most `snaplen` bytes of each and `count` packets in all,
    /// into a buffer of `bufferBytes`; replaces a capture on it. The packets
    /// themselves go on untouched: a full buffer loses copies, never them.
    /// On an Ethernet interface the copies are frames; on a tunnel's, the
    /// inner IP packets (the underlay's interface shows them encapsulated).
    public func startCapture(interface: InterfaceIndex, directions: CaptureDirections, program: BPFProgram?, snaplen: Int,
                             count: Int? = nil, bufferBytes: Int = 4 << 20) {
        precondition(interface >= 0 && interface < configuration.maxInterfaces, "interface index out of range")
        captures[interface] = Capturer(directions: directions, program: program, snaplen: max(1, snaplen), count: count,
                                       bufferBytes: max(4096, bufferBytes))
        ifs[interface].capture = count == 0 ? 0 : directions.rawValue
        hot.pointee.capturing = true
    }

    /// The copies since the last read (nil: no capture on `interface`).
    public func readCapture(interface: InterfaceIndex) -> CaptureBatch? {
        guard let c = captures[interface] else { return nil }
        return CaptureBatch(packets: c.buffer.drain(), lost: c.lost, matched: c.matched, finished: c.remaining == 0)
    }

    /// Ends the capture on `interface`; its buffer is freed.
    public func stopCapture(interface: InterfaceIndex) {
        guard interface >= 0 && interface < configuration.maxInterfaces else { return }
        captures[interface] = nil
        ifs[interface].capture = 0
        hot.pointee.capturing = !captures.isEmpty
    }

    /// Whether `interface` is a tunnel's (its packets are IP, not Ethernet).
    public func isTunnelInterface(_ interface: InterfaceIndex) -> Bool {
        interface >= 0 && interface < configuration.maxInterfaces && ifs[interface].tunnel >= 0
    }

    /// Whether `interface` carries what IPsec protects: a protected GRE
    /// tunnel's or a policy-based link's (its packets are plaintext here).
    public func isProtectedInterface(_ interface: InterfaceIndex) -> Bool {
        guard isTunnelInterface(interface) else { return false }
        let st = tunnelStates[Int(ifs[interface].tunnel)]
        return st.protected || st.espTunnelMode
    }

    /// Interfaces with a capture running.
    public var capturedInterfaces: [InterfaceIndex] { captures.keys.sorted() }

    // MARK: The tap

    /// A tunnel's inner packet passes its interface: copied when a capture
    /// looks at it that way. Off, this is one test of a flag in the stack's
    /// hot state.
    @inline(__always)
    func captureTunnelPacket(_ p: PacketHandle, interface: InterfaceIndex, outbound: Bool) {
        guard _slowPath(hot.pointee.capturing) else { return }
        let bit = outbound ? CaptureDirections.tx.rawValue : CaptureDirections.rx.rawValue
        if ifs[interface].capture & bit != 0 { captureCopy(p, interface: interface, outbound: outbound) }
    }

    /// A packet passes an interface with a capture on (the caller checked
    /// the interface's direction bit): a copy if the filter takes it and the
    /// buffer has room. Bytes start at the frame (Ethernet) or the IP header (tunnel).
    @inline(never)
    func captureCopy(_ p: PacketHandle, interface: InterfaceIndex, outbound: Bool) {
        guard let c = captures[interface] else {
            ifs[interface].capture = 0
            return
        }
        let bytes = UnsafeRawBufferPointer(pool.bytes(p))
        let keep: Int
        if let program = c.program {
            let k = program.run(bytes, wireLength: Int(p.length))
            guard k > 0 else { return }
            keep = min(Int(k), c.snaplen)
        } else {
            keep = c.snaplen
        }
        c.matched &+= 1
        if c.buffer.append(bytes, keep: keep, wireLength: Int(p.length), time: hot.pointee.now, outbound: outbound) {
            c.remaining -= 1
            if c.remaining == 0 { ifs[interface].capture = 0 }
        } else {
            c.lost &+= 1
        }
    }
}
