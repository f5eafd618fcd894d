/// Segmentation offload done in software (GSO): a TCP or UDP super-frame —
/// one IP header, one transport header and up to 64 KiB of payload, with
/// the segment size beside it — cut into the packets a NIC would have sent,
/// and partial checksums completed. IPv4 and IPv6 alike. Pure byte work:
/// the caller supplies each segment's buffer.
public enum Segmentation {
    /// Where a super-frame's headers are, read and checked once.
    public struct Layout: Equatable, Sendable {
        /// Offset of the IP header in the frame (the link header's length).
        public var network: Int
        public var ipHeaderLength: Int
        public var transportHeaderLength: Int
        public var isIPv6: Bool
        public var isTCP: Bool
        /// Payload bytes after the transport header.
        public var payloadLength: Int

        public init(network: Int, ipHeaderLength: Int, transportHeaderLength: Int, isIPv6: Bool, isTCP: Bool, payloadLength: Int) {
            self.network = network; self.ipHeaderLength = ipHeaderLength; self.transportHeaderLength = transportHeaderLength
            self.isIPv6 = isIPv6; self.isTCP = isTCP; self.payloadLength = payloadLength
        }

        /// Offset of the transport header in the frame.
        public var transport: Int { network + ipHeaderLength }
        /// Bytes of headers each segment repeats.
        public var headersLength: Int { transport + transportHeaderLength }
        /// Offset of the transport checksum in the frame.
        public var checksumField: Int { transport + (isTCP ? 16 : 6) }
    }

    /// Reads the headers of an IPv4 or IPv6 TCP/UDP packet that starts at
    /// `network` in `frame`. Nil for anything else, or when a length does
    /// not add up (IPv6 extension headers are not walked: nil).
    public static func layout(_ frame: UnsafeMutableRawBufferPointer, network: Int) -> Layout? {
        guard frame.count >= network + 20 else { return nil }
        let version = frame.be8(network) >> 4
        var l = Layout(network: network, ipHeaderLength: 0, transportHeaderLength: 0, isIPv6: version == 6, isTCP: false,
                       payloadLength: 0)
        let proto: UInt8
        let ipLength: Int
        if version == 4 {
            l.ipHeaderLength = Int(frame.be8(network) & 0x0F) * 4
            guard l.ipHeaderLength >= 20, frame.count >= network + l.ipHeaderLength else { return nil }
            proto = frame.be8(network + 9)
            ipLength = Int(frame.be16(network + 2))
            // Not a fragment: a fragment cannot be segmented.
            guard frame.be16(network + 6) & 0x3FFF == 0 else { return nil }
        } else if version == 6 {
            l.ipHeaderLength = 40
            guard frame.count >= network + 40 else { return nil }
            proto = frame.be8(network + 6)
            ipLength = 40 + Int(frame.be16(network + 4))
        } else {
            return nil
        }
        guard ipLength >= l.ipHeaderLength, network + ipLength <= frame.count else { return nil }
        let t = l.transport
        if proto == 6 {
            guard network + ipLength >= t + 20 else { return nil }
            l.isTCP = true
            l.transportHeaderLength = Int(frame.be8(t + 12) >> 4) * 4
            guard l.transportHeaderLength >= 20 else { return nil }
        } else if proto == 17 {
            l.transportHeaderLength = 8
        } else {
            return nil
        }
        guard network + ipLength >= l.headersLength else { return nil }
        l.payloadLength = network + ipLength - l.headersLength
        return l
    }

    /// The most segments one super-frame may be cut into (a 64 KiB TSO
    /// frame at an MSS of 536 makes 123); anything asking for more is refused.
    public static let maxSegments = 128

    /// How many segments of `segmentSize` payload bytes the super-frame makes.
    public static func segmentCount(_ l: Layout, segmentSize: Int) -> Int {
        precondition(segmentSize > 0)
        return max(1, (l.payloadLength + segmentSize - 1) / segmentSize)
    }

    /// Writes segment `k` of the super-frame `frame` into `out` (which must
    /// hold `headersLength + segmentSize` bytes) and returns its length:
    /// the headers repeated with the IPv4 identification + k, the IP length,
    /// a fresh IPv4 header checksum; TCP's sequence number advanced, FIN and
    /// PSH kept on the last segment only and CWR on the first only; UDP's
    /// length; and the transport checksum computed over the segment.
    public static func writeSegment(_ k: Int, of frame: UnsafeMutableRawBufferPointer, layout l: Layout, segmentSize: Int,
                                    into out: UnsafeMutableRawBufferPointer) -> Int {
        let start = k * segmentSize
        let chunk = min(segmentSize, l.payloadLength - start)
        let length = l.headersLength + chunk
        out.slice(0, l.headersLength).copyMemory(from: UnsafeRawBufferPointer(frame.slice(0, l.headersLength)))
        out.slice(l.headersLength, chunk).copyMemory(from: UnsafeRawBufferPointer(frame.slice(l.headersLength + start, chunk)))
        let n = l.network, t = l.transport
        let ipLength = length - n
        if l.isIPv6 {
            out.setBE16(n + 4, UInt16(ipLength - 40))
        } else {
            out.setBE16(n + 2, UInt16(ipLength))
            out.setBE16(n + 4, frame.be16(n + 4) &+ UInt16(truncatingIfNeeded: k))
            out.setBE16(n + 10, 0)
            out.setBE16(n + 10, InternetChecksum.checksum(out.slice(n, t - n)))
        }
        let last = start + chunk >= l.payloadLength
        if l.isTCP {
            out.setBE32(t + 4, frame.be32(t + 4) &+ UInt32(truncatingIfNeeded: start))
            var flags = frame.be8(t + 13)
            if !last { flags &= ~0x09 }  // FIN, PSH
            if k > 0 { flags &= ~0x80 }  // CWR
            out.setBE8(t + 13, flags)
        } else {
            out.setBE16(t + 4, UInt16(length - t))
        }
        let field = l.checksumField
        out.setBE16(field, 0)
        var sum = pseudoHeaderSum(frame, layout: l, transportLength: length - t)
        sum = InternetChecksum.sum(out.slice(t, length - t), initial: sum)
        var c = ~InternetChecksum.fold(sum)
        if !l.isTCP && c == 0 { c = 0xFFFF }
        out.setBE16(field, c)
        return length
    }

    /// Completes a checksum left partial (the field holds the pseudo-header
    /// sum, as the kernel leaves it for "checksum offload"): sums the
    /// transport header and payload and stores the complement.
    public static func completeChecksum(_ frame: UnsafeMutableRawBufferPointer, layout l: Layout) {
        let end = l.headersLength + l.payloadLength
        var c = ~InternetChecksum.fold(InternetChecksum.sum(frame.slice(l.transport, end - l.transport)))
        if !l.isTCP && c == 0 { c = 0xFFFF }
        frame.setBE16(l.checksumField, c)
    }

    /// The partial checksum a device leaves for the next one to complete:
    /// the pseudo-header sum over the transport length, folded, not complemented.
    public static func partialChecksum(_ frame: UnsafeMutableRawBufferPointer, layout l: Layout) -> UInt16 {
        InternetChecksum.fold(pseudoHeaderSum(frame, layout: l, transportLength: l.transportHeaderLength + l.payloadLength))
    }

    /// Whether the transport checksum of a whole packet is right.
    public static func verifiesChecksum(_ frame: UnsafeMutableRawBufferPointer, layout l: Layout) -> Bool {
        let end = l.headersLength + l.payloadLength
        if !l.isTCP && frame.be16(l.checksumField) == 0 && !l.isIPv6 { return true }  // UDP over IPv4: no checksum
        let sum = pseudoHeaderSum(frame, layout: l, transportLength: end - l.transport)
        return InternetChecksum.fold(InternetChecksum.sum(frame.slice(l.transport, end - l.transport), initial: sum)) == 0xFFFF
    }

    static func pseudoHeaderSum(_ frame: UnsafeMutableRawBufferPointer, layout l: Layout, transportLength: Int) -> UInt32 {
        let proto: UInt32 = l.isTCP ? 6 : 17
        let n = l.network
        let addresses = l.isIPv6 ? frame.slice(n + 8, 32) : frame.slice(n + 12, 8)
        return InternetChecksum.sum(addresses) &+ proto &+ UInt32(transportLength >> 16) &+ UInt32(transportLength & 0xFFFF)
    }
}
