import AnygateWire
import Testing

@Suite struct ESPTests {
    @Test func headerFields() throws {
        var b: [UInt8] = [0x00, 0x00, 0x12, 0x34, 0x00, 0x00, 0x00, 0x07, 1, 2, 3, 4, 5, 6, 7, 8] + [UInt8](repeating: 0, count: 20)
        try b.withUnsafeMutableBytes { m in
            let esp = try ESPPacket(validating: m)
            #expect(esp.spi == 0x1234)
            #expect(esp.sequence == 7)
            #expect(esp.iv == 0x0102_0304_0506_0708)
            #expect(esp.encryptedLength == 4)
        }
    }

    @Test func tooShortAndReservedSPIsAreRefused() {
        var short = [UInt8](repeating: 1, count: ESPPacket.minimumLength - 1)
        #expect(throws: WireError.truncated) { try short.withUnsafeMutableBytes { _ = try ESPPacket(validating: $0) } }
        var reserved = [UInt8](repeating: 0, count: ESPPacket.minimumLength)
        reserved[3] = 255
        #expect(throws: WireError.unsupported) { try reserved.withUnsafeMutableBytes { _ = try ESPPacket(validating: $0) } }
    }

    /// Padding puts the ICV on a 4-byte boundary, counts 1, 2, 3, and the
    /// trailer reads back; bad pad lengths and pad bytes are refused.
    @Test(arguments: 0..<9)
    func trailerRoundTrip(payload: Int) {
        var b = [UInt8](repeating: 0xAA, count: payload + 8)
        let n = b.withUnsafeMutableBytes { ESPPacket.writeTrailer($0, payloadLength: payload, nextHeader: 47) }
        #expect((payload + n) % 4 == 0 && n >= 2 && n <= 5)
        #expect(Array(b[payload..<payload + n - 2]) == (0..<(n - 2)).map { UInt8($0 + 1) })
        let t = b.withUnsafeBytes { ESPPacket.readTrailer(UnsafeRawBufferPointer(rebasing: $0[..<(payload + n)])) }
        #expect(t?.payloadLength == payload && t?.nextHeader == 47)
        if n > 2 {
            b[payload] = 9
            #expect(b.withUnsafeBytes { ESPPacket.readTrailer(UnsafeRawBufferPointer(rebasing: $0[..<(payload + n)])) } == nil)
        }
    }

    @Test func padLengthPastThePayloadIsRefused() {
        let b: [UInt8] = [1, 2, 200, 4]
        #expect(b.withUnsafeBytes { ESPPacket.readTrailer($0) } == nil)
    }

    @Test func udpEncapsulationKinds() {
        func kind(_ b: [UInt8]) -> UDPEncapsulation.Kind { b.withUnsafeBytes { UDPEncapsulation.classify($0) } }
        #expect(kind([0xFF]) == .keepalive)
        #expect(kind([0x00]) == .malformed)
        #expect(kind([0, 0, 0, 0, 0x12, 0x34]) == .ike)
        #expect(kind([0, 0, 1, 0] + [UInt8](repeating: 0, count: ESPPacket.minimumLength - 4)) == .esp)
        #expect(kind([0, 0, 1, 0, 0]) == .malformed)
    }
}
