@testable import AnygateIKE
import Testing

@Suite struct IKEMessageTests {
    static let saInit: [IKEPayload] = [
        .sa([IKEProposal(number: 1, protocolID: IKEProposal.ike, spi: [], transforms: [
            IKETransform(type: IKETransform.encryption, id: 20, keyLength: 128),
            IKETransform(type: IKETransform.prf, id: 5),
            IKETransform(type: IKETransform.keyExchange, id: 31),
        ])]),
        .ke(group: 31, data: [UInt8](repeating: 7, count: 32)),
        .nonce([UInt8](repeating: 9, count: 32)),
        .notify(IKENotify(IKENotify.natDetectionSourceIP, data: [UInt8](repeating: 1, count: 20))),
        .idI(IKEIdentity("gw1.example")),
        .auth(method: 2, data: [1, 2, 3]),
        .tsI([TrafficSelector(type: TrafficSelector.ipv4Range, start: [10, 1, 0, 0], end: [10, 1, 255, 255])]),
        .delete(protocolID: 3, spis: [[0, 0, 0x10, 1], [0, 0, 0x10, 2]]),
    ]

    @Test func payloadsRoundTrip() throws {
        let bytes = IKEPayload.emit(Self.saInit)
        let (parsed, sk) = try IKEPayload.parse(bytes, from: 0, first: IKEPayloadType.sa)
        #expect(sk == nil)
        #expect(parsed == Self.saInit)
    }

    @Test func headerRoundTripAndChecks() throws {
        let body = IKEPayload.emit(Self.saInit)
        var m: [UInt8] = []
        IKEHeader(initiatorSPI: 0x0102_0304_0506_0708, responderSPI: 0, nextPayload: IKEPayloadType.sa, exchange: .saInit,
                  flags: IKEHeader.flagInitiator, messageID: 0, length: UInt32(IKEHeader.length + body.count)).emit(into: &m)
        m += body
        let h = try IKEHeader(parsing: m)
        #expect(h.initiatorSPI == 0x0102_0304_0506_0708 && h.exchange == .saInit && h.fromInitiator && !h.isResponse)
        #expect(throws: IKEParseError.length(declared: m.count, actual: m.count - 1)) { try IKEHeader(parsing: Array(m.dropLast())) }
        var v1 = m
        v1[17] = 0x10
        #expect(throws: IKEParseError.version(0x10)) { try IKEHeader(parsing: v1) }
    }

    /// Every truncation of a valid chain is refused, never trapped on.
    @Test func truncationsAreRefused() {
        let bytes = IKEPayload.emit(Self.saInit)
        for n in 1..<bytes.count {
            let cut = Array(bytes.prefix(n))
            #expect(throws: IKEParseError.self) { _ = try IKEPayload.parse(cut, from: 0, first: IKEPayloadType.sa) }
        }
    }

    @Test func unknownCriticalPayloadIsRefusedUnknownOtherIsSkipped() throws {
        var b = IKEPayload.emit([.nonce([UInt8](repeating: 1, count: 16))], nextAfter: 200)
        b += [0, 0, 0, 8, 1, 2, 3, 4]
        let (p, _) = try IKEPayload.parse(b, from: 0, first: IKEPayloadType.nonce)
        #expect(p.count == 1)
        b[b.count - 7] = 0x80
        #expect(throws: IKEParseError.unsupportedCritical(200)) { _ = try IKEPayload.parse(b, from: 0, first: IKEPayloadType.nonce) }
    }

    @Test func identities() {
        #expect(IKEIdentity("192.0.2.1") == IKEIdentity(type: IKEIdentity.ipv4, data: [192, 0, 2, 1]))
        #expect(IKEIdentity("2001:db8::1").type == IKEIdentity.ipv6)
        #expect(IKEIdentity("vpn@example.com").type == IKEIdentity.rfc822)
        #expect(IKEIdentity("gw.example").description == "gw.example")
    }

    @Test func selectorNarrowing() {
        let wide = TrafficSelector(type: TrafficSelector.ipv4Range, start: [10, 0, 0, 0], end: [10, 255, 255, 255])
        let site = TrafficSelector(type: TrafficSelector.ipv4Range, start: [10, 1, 0, 0], end: [10, 1, 255, 255])
        #expect(wide.intersection(site) == site)
        #expect(wide.contains(site) && !site.contains(wide))
        let other = TrafficSelector(type: TrafficSelector.ipv4Range, start: [192, 168, 0, 0], end: [192, 168, 0, 255])
        #expect(site.intersection(other) == nil)
    }
}

@Suite struct IKECryptoTests {
    /// RFC 4231 test case 2 (HMAC-SHA-256, key "Jefe").
    @Test func prfKnownAnswer() {
        let mac = IKEPRF.hmacSHA256(Array("Jefe".utf8), Array("what do ya want for nothing?".utf8))
        #expect(mac.map { String(format: "%02x", $0) }.joined() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    /// prf+ is T1 | T2 | … with T1 = prf(K, S | 1), Tn = prf(K, Tn-1 | S | n).
    @Test(arguments: IKEPRF.allCases)
    func prfPlus(_ prf: IKEPRF) {
        let k: [UInt8] = [1, 2, 3], s: [UInt8] = [9, 8]
        let out = prf.plus(k, s, count: prf.length * 2 + 5)
        let t1 = prf(k, s + [1]), t2 = prf(k, t1 + s + [2]), t3 = prf(k, t2 + s + [3])
        #expect(out == t1 + t2 + Array(t3.prefix(5)))
    }

    @Test(arguments: DHGroup.allCases)
    func keyAgreement(_ g: DHGroup) {
        let a = DHKeyPair(g), b = DHKeyPair(g)
        #expect(a.publicValue.count == g.publicLength)
        let s1 = a.shared(with: b.publicValue), s2 = b.shared(with: a.publicValue)
        #expect(s1 != nil && s1!.withUnsafeBytes { Array($0) } == s2!.withUnsafeBytes { Array($0) })
        #expect(a.shared(with: [1, 2, 3]) == nil)
        if g == .p256 { #expect(a.shared(with: [UInt8](repeating: 0, count: 64)) == nil, "not a point on the curve") }
    }
}
