import AnygateCrypto
@testable import AnygateIKE
import Testing

/// Two sessions in one process, messages handed across by hand.
struct Pair {
    let i: IKESession, r: IKESession
    var log: [String] = []
    var childI: ChildSAKeys?, childR: ChildSAKeys?
    var failedI: String?, failedR: String?
    var establishedI = false, establishedR = false
    var messages = 0

    static let siteA = TrafficSelector(type: TrafficSelector.ipv4Range, start: [10, 1, 0, 0], end: [10, 1, 255, 255])
    static let siteB = TrafficSelector(type: TrafficSelector.ipv4Range, start: [10, 2, 0, 0], end: [10, 2, 255, 255])

    static func policy(local: String, remote: String, psk: String, ike: [IKESuite] = IKESuite.defaults, esp: [ESPSuite] = ESPSuite.defaults,
                       localTS: [TrafficSelector], remoteTS: [TrafficSelector], transport: Bool = false) -> IKEPolicy {
        var p = IKEPolicy(localID: IKEIdentity(local), remoteID: IKEIdentity(remote), psk: SecretBytes(Array(psk.utf8)),
                          localSelectors: localTS, remoteSelectors: remoteTS)
        p.ikeSuites = ike; p.espSuites = esp; p.transportMode = transport
        return p
    }

    init(iPolicy: IKEPolicy, rPolicy: IKEPolicy, natBetween: Bool = false, seed: UInt64 = 1) {
        var g1 = SplitMix(seed), g2 = SplitMix(seed &+ 100)
        let a = IKEEndpoint(address: [192, 0, 2, 1], port: 500), b = IKEEndpoint(address: [192, 0, 2, 2], port: 500)
        // Behind a NAT the initiator believes it is 10.0.0.5; the responder sees the NAT's address.
        i = IKESession(role: .initiator, policy: iPolicy, local: natBetween ? IKEEndpoint(address: [10, 0, 0, 5], port: 500) : a, remote: b,
                       random: { g1.next() })
        r = IKESession(role: .responder, policy: rPolicy, local: b, remote: a, random: { g2.next() })
    }

    static func standard(pskI: String = "secret", pskR: String = "secret", ikeI: [IKESuite] = IKESuite.defaults,
                         ikeR: [IKESuite] = IKESuite.defaults, espI: [ESPSuite] = ESPSuite.defaults, espR: [ESPSuite] = ESPSuite.defaults,
                         transportI: Bool = false, transportR: Bool = false, natBetween: Bool = false) -> Pair {
        Pair(iPolicy: policy(local: "gw1.example", remote: "gw2.example", psk: pskI, ike: ikeI, esp: espI, localTS: [siteA], remoteTS: [siteB],
                             transport: transportI),
             rPolicy: policy(local: "gw2.example", remote: "gw1.example", psk: pskR, ike: ikeR, esp: espR, localTS: [siteB], remoteTS: [siteA],
                             transport: transportR),
             natBetween: natBetween)
    }

    /// Runs the exchange to its end; `tamper` may change a message on its way.
    mutating func run(now: Int64 = 0, tamper: (Int, inout [UInt8]) -> Bool = { _, _ in true }) {
        var toR: [[UInt8]] = [], toI: [[UInt8]] = []
        func take(_ outs: [IKEOutput], initiator: Bool, _ queue: inout [[UInt8]]) {
            for o in outs {
                switch o {
                case .send(let m): queue.append(m)
                case .childSA(let k): if initiator { childI = k } else { childR = k }
                case .established: if initiator { establishedI = true } else { establishedR = true }
                case .failed(let why): if initiator { failedI = why } else { failedR = why }
                case .closed(let why): log.append("closed: \(why)")
                case .rekeyed, .outboundSwitch, .childDeleted, .ikeRekeyed: log.append("\(o)")
                }
            }
        }
        take(i.start(now: now), initiator: true, &toR)
        var rounds = 0
        while (!toR.isEmpty || !toI.isEmpty) && rounds < 20 {
            rounds += 1
            for var m in toR {
                messages += 1
                if tamper(messages, &m) { take(r.receive(m, now: now), initiator: false, &toI) }
            }
            toR = []
            for var m in toI {
                messages += 1
                if tamper(messages, &m) { take(i.receive(m, now: now), initiator: true, &toR) }
            }
            toI = []
        }
    }
}

struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func bytes(_ s: SecretBytes) -> [UInt8] { s.withUnsafeBytes { Array($0) } }

@Suite struct IKESessionTests {
    @Test("initiator and responder agree: IKE SA and first child SA, keys and SPIs crosswise, selectors narrowed")
    func establish() throws {
        var p = Pair.standard()
        p.run()
        #expect(p.failedI == nil && p.failedR == nil, "\(p.failedI ?? "") \(p.failedR ?? "")")
        #expect(p.establishedI && p.establishedR)
        #expect(p.messages == 4, "IKE_SA_INIT and IKE_AUTH, a request and a response each")
        let ci = try #require(p.childI), cr = try #require(p.childR)
        #expect(ci.outboundSPI == cr.inboundSPI && ci.inboundSPI == cr.outboundSPI)
        #expect(bytes(ci.outboundKey) == bytes(cr.inboundKey) && bytes(ci.inboundKey) == bytes(cr.outboundKey))
        #expect(bytes(ci.outboundKey) != bytes(ci.inboundKey))
        #expect(ci.suite == ESPSuite(encryption: .aes128GCM) && ci.suite == cr.suite)
        #expect(ci.outboundKey.count == 20)
        #expect(ci.localSelectors == [Pair.siteA] && ci.remoteSelectors == [Pair.siteB])
        #expect(cr.localSelectors == [Pair.siteB] && cr.remoteSelectors == [Pair.siteA])
        #expect(!p.i.natDetected && !p.r.natDetected)
        #expect(p.i.suite == IKESuite.defaults[0])
    }

    @Test("a NAT between them is detected on both sides")
    func natDetection() {
        var p = Pair.standard(natBetween: true)
        p.run()
        #expect(p.establishedI && p.establishedR)
        #expect(p.i.natDetected && p.r.natDetected)
    }

    @Test("a wrong pre-shared key brings nothing up, and says so on both sides")
    func wrongPSK() {
        var p = Pair.standard(pskI: "secret", pskR: "other")
        p.run()
        #expect(!p.establishedI && !p.establishedR && p.childI == nil && p.childR == nil)
        #expect(p.failedR?.contains("AUTH does not verify") == true, "\(p.failedR ?? "nil")")
        #expect(p.failedI?.contains("AUTHENTICATION_FAILED") == true, "\(p.failedI ?? "nil")")
    }

    @Test("no IKE proposal in common: NO_PROPOSAL_CHOSEN")
    func ikeProposalMismatch() {
        var p = Pair.standard(ikeI: [IKESuite(encryption: .aes256GCM, prf: .hmacSHA512, group: .curve25519)],
                              ikeR: [IKESuite(encryption: .aes128GCM, prf: .hmacSHA256, group: .curve25519)])
        p.run()
        #expect(!p.establishedI && !p.establishedR)
        #expect(p.failedI?.contains("NO_PROPOSAL_CHOSEN") == true && p.failedR?.contains("no IKE proposal in common") == true)
    }

    @Test("no ESP proposal in common: the IKE SA fails at IKE_AUTH")
    func espProposalMismatch() {
        var p = Pair.standard(espI: [ESPSuite(encryption: .chacha20Poly1305)], espR: [ESPSuite(encryption: .aes256GCM)])
        p.run()
        #expect(p.childI == nil && p.childR == nil)
        #expect(p.failedI?.contains("NO_PROPOSAL_CHOSEN") == true && p.failedR == "no ESP proposal in common")
    }

    @Test("the initiator's first group is not the responder's: INVALID_KE_PAYLOAD, then again with the group asked for")
    func invalidKE() {
        var p = Pair.standard(ikeI: [IKESuite(encryption: .aes128GCM, prf: .hmacSHA256, group: .p256),
                                     IKESuite(encryption: .aes128GCM, prf: .hmacSHA256, group: .curve25519)],
                              ikeR: [IKESuite(encryption: .aes128GCM, prf: .hmacSHA256, group: .curve25519)])
        p.run()
        #expect(p.establishedI && p.establishedR)
        #expect(p.messages == 6)
        #expect(p.i.suite?.group == .curve25519)
    }

    @Test("ESN and transport mode are negotiated; a mode mismatch is refused")
    func esnAndTransport() {
        var p = Pair.standard(espI: [ESPSuite(encryption: .aes256GCM, extendedSequenceNumbers: true)],
                              espR: [ESPSuite(encryption: .aes256GCM, extendedSequenceNumbers: true)], transportI: true, transportR: true)
        p.run()
        #expect(p.childI?.suite == ESPSuite(encryption: .aes256GCM, extendedSequenceNumbers: true) && p.childI?.transportMode == true)
        #expect(p.childR?.outboundKey.count == 36)
        var q = Pair.standard(transportI: true, transportR: false)
        q.run()
        #expect(q.childI == nil && q.childR == nil && q.failedR != nil)
    }

    @Test("a corrupted IKE_AUTH is ignored, not answered; the initiator's retransmission then completes")
    func corruptedThenRetransmitted() {
        var p = Pair.standard()
        var corrupted = false
        p.run { n, m in
            if n == 3 && !corrupted { corrupted = true; m[m.count - 5] ^= 1 }
            return true
        }
        #expect(!p.establishedI && !p.establishedR && p.failedR == nil)
        // One second later the initiator sends its IKE_AUTH again.
        let again = p.i.tick(now: 1_000_000_000)
        guard case .send(let m)? = again.first else { Issue.record("no retransmission"); return }
        var established = false
        for o in p.r.receive(m, now: 1_000_000_000) {
            if case .send(let reply) = o { for x in p.i.receive(reply, now: 1_000_000_000) { if case .established = x { established = true } } }
        }
        #expect(established)
    }

    @Test("an unanswered initiator gives up after its retransmissions")
    func givesUp() {
        var g = SplitMix(5)
        let i = IKESession(role: .initiator, policy: Pair.policy(local: "a", remote: "b", psk: "k", localTS: [Pair.siteA], remoteTS: [Pair.siteB]),
                           local: IKEEndpoint(address: [1, 1, 1, 1], port: 500), remote: IKEEndpoint(address: [2, 2, 2, 2], port: 500),
                           random: { g.next() })
        _ = i.start(now: 0)
        var sent = 0, failed = false
        var t: Int64 = 0
        while t < 200_000_000_000 {
            t += 500_000_000
            for o in i.tick(now: t) {
                if case .send = o { sent += 1 }
                if case .failed = o { failed = true }
            }
        }
        #expect(sent == 5 && failed && i.state == .closed)
    }

    @Test("garbage and truncated messages never trap a responder")
    func garbage() {
        var p = Pair.standard()
        p.run()
        var g = SplitMix(9)
        for n in 0..<2000 {
            var m = (0..<(Int(g.next() % 200))).map { _ in UInt8(truncatingIfNeeded: g.next()) }
            if n % 2 == 0, m.count >= 28 {
                // A plausible header pointing at this SA.
                var h: [UInt8] = []
                IKEHeader(initiatorSPI: p.r.initiatorSPI, responderSPI: p.r.responderSPI, nextPayload: UInt8(truncatingIfNeeded: g.next()),
                          exchange: IKEExchange(rawValue: 34 + UInt8(g.next() % 4)), flags: IKEHeader.flagInitiator,
                          messageID: UInt32(g.next() % 4), length: UInt32(m.count)).emit(into: &h)
                m.replaceSubrange(0..<28, with: h)
            }
            _ = p.r.receive(m, now: 0)
        }
        #expect(p.r.state == .established)
    }
}

@Suite struct IKERekeyTests {
    /// Hands messages back and forth until none is left; returns every non-send output per side.
    static func exchange(_ first: [IKEOutput], from a: IKESession, to b: IKESession) -> (a: [IKEOutput], b: [IKEOutput]) {
        var outA: [IKEOutput] = [], outB: [IKEOutput] = []
        var toB = first, toA: [IKEOutput] = []
        for _ in 0..<10 {
            var nextToA: [IKEOutput] = []
            for case .send(let m) in toB {
                for o in b.receive(m, now: 0) { if case .send = o { nextToA.append(o) } else { outB.append(o) } }
            }
            toA += nextToA
            var nextToB: [IKEOutput] = []
            for case .send(let m) in toA {
                for o in a.receive(m, now: 0) { if case .send = o { nextToB.append(o) } else { outA.append(o) } }
            }
            toA = []
            toB = nextToB
            if toB.isEmpty { break }
        }
        outA += first.filter { if case .send = $0 { false } else { true } }
        return (outA, outB)
    }

    @Test("either side rekeys the child SA make-before-break: new keys agree, the old SA is deleted last", arguments: [true, false])
    func rekey(initiatorRekeys: Bool) throws {
        var p = Pair.standard()
        p.run()
        let old = try #require(p.childI)
        let (a, b) = initiatorRekeys ? (p.i, p.r) : (p.r, p.i)
        let (outA, outB) = Self.exchange(a.rekeyChild(now: 0), from: a, to: b)
        // The side that asked: new SA both ways at once, then the old one goes when its Delete is answered.
        guard case .rekeyed(let newA, let oldA, true)? = outA.first else { Issue.record("\(outA)"); return }
        guard case .childDeleted(let goneA)? = outA.last else { Issue.record("\(outA)"); return }
        // The side that answered: new inbound first, outbound only once the old SA is deleted.
        guard outB.count == 3, case .rekeyed(let newB, _, false) = outB[0], case .outboundSwitch(let switched) = outB[1],
              case .childDeleted(let goneB) = outB[2] else { Issue.record("\(outB)"); return }
        #expect(newA.outboundSPI == newB.inboundSPI && newA.inboundSPI == newB.outboundSPI)
        #expect(bytes(newA.outboundKey) == bytes(newB.inboundKey) && bytes(newA.inboundKey) == bytes(newB.outboundKey))
        #expect(switched.outboundSPI == newB.outboundSPI)
        #expect(bytes(newA.outboundKey) != bytes(initiatorRekeys ? old.outboundKey : old.inboundKey))
        #expect(goneA.inboundSPI == oldA.inboundSPI && goneB.outboundSPI == oldA.inboundSPI)
        #expect(a.child?.inboundSPI == newA.inboundSPI && b.child?.inboundSPI == newB.inboundSPI)
        #expect(a.rekeys == 1 && b.rekeys == 1)
        // And again: a rekey of the rekeyed SA.
        let (again, _) = Self.exchange(a.rekeyChild(now: 0), from: a, to: b)
        guard case .rekeyed(let third, _, true)? = again.first else { Issue.record("\(again)"); return }
        #expect(third.inboundSPI != newA.inboundSPI && a.rekeys == 2)
    }

    @Test("PFS: with a group in the ESP suites, the first child SA has none (IKE_AUTH), each rekey a fresh key exchange", arguments: [true, false])
    func pfs(initiatorRekeys: Bool) throws {
        let suites = [ESPSuite(encryption: .aes128GCM, group: .curve25519)]
        var p = Pair.standard(espI: suites, espR: suites)
        p.run()
        #expect(p.childI?.suite == ESPSuite(encryption: .aes128GCM), "IKE_AUTH: no group")
        let (a, b) = initiatorRekeys ? (p.i, p.r) : (p.r, p.i)
        let (outA, outB) = Self.exchange(a.rekeyChild(now: 0), from: a, to: b)
        guard case .rekeyed(let newA, _, true)? = outA.first, case .rekeyed(let newB, _, false)? = outB.first else {
            Issue.record("\(outA) \(outB)"); return
        }
        #expect(newA.suite.group == .curve25519 && newB.suite.group == .curve25519)
        #expect(bytes(newA.outboundKey) == bytes(newB.inboundKey) && bytes(newA.inboundKey) == bytes(newB.outboundKey))
    }

    @Test("a peer's child rekey with a key exchange we did not configure is refused, the child SA untouched")
    func refusedRekeys() throws {
        var p = Pair.standard()
        p.run()
        let before = try #require(p.r.child)
        var suite = ESPSuite.defaults[0].proposalTransforms
        suite.append(IKETransform(type: IKETransform.keyExchange, id: 31))
        let msg = p.i.sealedMessage(.createChildSA, id: p.i.nextRequestID, response: false, [
            .notify(IKENotify(IKENotify.rekeySA, protocolID: IKEProposal.esp, spi: spiBytes(before.outboundSPI))),
            .sa([IKEProposal(number: 1, protocolID: IKEProposal.esp, spi: [1, 2, 3, 4], transforms: suite)]),
            .nonce([UInt8](repeating: 3, count: 32)), .ke(group: 31, data: DHKeyPair(.curve25519).publicValue),
            .tsI(before.remoteSelectors), .tsR(before.localSelectors),
        ])
        let out = p.r.receive(msg, now: 0)
        guard case .send(let reply)? = out.first, out.count == 1 else { Issue.record("\(out)"); return }
        let h = try IKEHeader(parsing: reply)
        let payloads = try #require(p.i.open(reply, h))
        #expect(payloads.contains { if case .notify(let n) = $0 { n.type == IKENotify.noProposalChosen } else { false } })
        #expect(p.r.child?.inboundSPI == before.inboundSPI)
    }
}

@Suite struct IKECookieTests {
    @Test("past the threshold a request without a cookie gets only a COOKIE; the initiator comes back with it and gets through")
    func cookies() throws {
        var jar = IKECookieJar(threshold: 2)
        var p = Pair.standard()
        let first = p.i.start(now: 0)
        guard case .send(let request)? = first.first else { Issue.record("no request"); return }
        let peer: [UInt8] = [192, 0, 2, 1]
        #expect(jar.check(request, from: peer, now: 0) == nil)
        #expect(jar.check(request, from: peer, now: 0) == nil)
        let third = jar.check(request, from: peer, now: 0)
        let reply = try #require(third, "the third in a second needs a cookie")
        #expect(jar.cookiesSent == 1)
        // The initiator answers the cookie with the same request plus the cookie.
        guard case .send(let again)? = p.i.receive(reply, now: 0).first else { Issue.record("no retry"); return }
        let withCookie = jar.check(again, from: peer, now: 0)
        #expect(withCookie == nil, "a request with the right cookie goes on")
        // The cookie is bound to the address: from elsewhere it does not count.
        let elsewhere = jar.check(again, from: [198, 51, 100, 9], now: 0)
        #expect(elsewhere != nil)
        // A second later the pressure is gone.
        let later = jar.check(request, from: peer, now: 2_000_000_000)
        #expect(later == nil)
        // And the exchange completes with the cookie in it.
        var established = false
        for o in p.r.receive(again, now: 0) {
            if case .send(let m) = o {
                for x in p.i.receive(m, now: 0) {
                    if case .send(let auth) = x {
                        for y in p.r.receive(auth, now: 0) {
                            if case .send(let last) = y { for z in p.i.receive(last, now: 0) { if case .established = z { established = true } } }
                        }
                    }
                }
            }
        }
        #expect(established)
    }
}

@Suite struct IKESARekeyTests {
    @Test("either side rekeys the IKE SA: new SPIs and keys on both, the old SA deleted, then DPD and child rekeys run on the new one", arguments: [true, false])
    func rekeyIKE(initiatorRekeys: Bool) throws {
        var p = Pair.standard()
        p.run()
        let (a, b) = initiatorRekeys ? (p.i, p.r) : (p.r, p.i)
        let oldSPIs = (a.initiatorSPI, a.responderSPI)
        let (outA, outB) = IKERekeyTests.exchange(a.rekeyIKE(now: 0), from: a, to: b)
        #expect(outA.contains { if case .ikeRekeyed = $0 { true } else { false } }, "\(outA)")
        #expect(outB.contains { if case .ikeRekeyed = $0 { true } else { false } }, "\(outB)")
        #expect(a.initiatorSPI == b.initiatorSPI && a.responderSPI == b.responderSPI)
        #expect((a.initiatorSPI, a.responderSPI) != oldSPIs)
        #expect(a.role == .initiator && b.role == .responder, "the side that rekeyed is the new SA's initiator")
        #expect(a.previous == nil && b.previous == nil, "the old IKE SA is gone on both sides")
        #expect(bytes(a.aeadI!.key) == bytes(b.aeadI!.key) && bytes(a.aeadR!.key) == bytes(b.aeadR!.key))
        // The new IKE SA works: a child rekey over it, from the other side.
        let (outB2, _) = IKERekeyTests.exchange(b.rekeyChild(now: 0), from: b, to: a)
        #expect(outB2.contains { if case .rekeyed = $0 { true } else { false } }, "\(outB2)")
        #expect(a.ikeRekeys == 1 && b.ikeRekeys == 1)
    }

    @Test("the Delete of the old IKE SA is sent again until answered (1, 2, 4 s), then the old SA is forgotten anyway")
    func deleteRetransmitted() throws {
        for answered in [true, false] {
            var p = Pair.standard()
            p.run()
            let (a, b) = (p.i, p.r)
            guard case .send(let request)? = a.rekeyIKE(now: 0).first,
                  case .send(let response)? = b.receive(request, now: 0).first else { Issue.record("no rekey exchange"); return }
            let out = a.receive(response, now: 0)
            // The Delete on the old SA is lost on the way.
            #expect(out.contains { if case .send = $0 { true } else { false } } && a.previous != nil && b.previous != nil)
            let sends = { (o: [IKEOutput]) in o.compactMap { if case .send(let m) = $0 { m } else { nil } } }
            #expect(sends(a.tick(now: 500_000_000)).isEmpty, "not before a second")
            let again = sends(a.tick(now: 1_000_000_000))
            #expect(again.count == 1, "sent again at 1 s")
            if answered {
                let reply = sends(b.receive(again[0], now: 1_000_000_000))
                #expect(reply.count == 1 && b.previous == nil)
                _ = a.receive(reply[0], now: 1_000_000_000)
                #expect(a.previous == nil, "answered: the old IKE SA is gone")
                #expect(sends(a.tick(now: 10_000_000_000)).allSatisfy { (try? IKEHeader(parsing: $0))?.initiatorSPI == a.initiatorSPI },
                        "nothing more on the old SA")
            } else {
                #expect(sends(a.tick(now: 3_000_000_000)).count == 1 && sends(a.tick(now: 7_000_000_000)).count == 1)
                #expect(a.previous != nil)
                _ = a.tick(now: 15_000_000_000)
                #expect(a.previous == nil, "given up after three retransmissions")
            }
        }
    }
}
