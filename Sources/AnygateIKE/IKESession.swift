public import AnygateCrypto
internal import Crypto

/// An address and UDP port as IKE sees them (for NAT detection).
public struct IKEEndpoint: Hashable, Sendable {
    public var address: [UInt8]
    public var port: UInt16
    public init(address: [UInt8], port: UInt16) { self.address = address; self.port = port }
}

/// The keys and parameters of a child SA, both directions, for the stack.
public struct ChildSAKeys: Sendable {
    public var inboundSPI: UInt32
    public var outboundSPI: UInt32
    public var suite: ESPSuite
    public var inboundKey: SecretBytes
    public var outboundKey: SecretBytes
    public var transportMode: Bool
    public var localSelectors: [TrafficSelector]
    public var remoteSelectors: [TrafficSelector]
}

/// What a session asks its owner to do.
public enum IKEOutput: Sendable {
    /// Send this message to the peer (prefixed with the non-ESP marker on
    /// port 4500 when `natTraversal` says so).
    case send([UInt8])
    /// Install this child SA.
    case childSA(ChildSAKeys)
    /// The IKE SA and its first child are up.
    case established
    /// The attempt failed; the reason, logged once.
    case failed(String)
    /// The peer deleted the IKE SA, or stopped answering (DPD).
    case closed(String)
    /// A rekey made `new` to replace `old` (RFC 7296 section 2.8): add its
    /// inbound SA now, beside the old one; send with it now if
    /// `outboundNow`, else when `outboundSwitch` comes.
    case rekeyed(new: ChildSAKeys, old: ChildSAKeys, outboundNow: Bool)
    /// Send with this child SA from now on (the old one is being deleted).
    case outboundSwitch(ChildSAKeys)
    /// This child SA is gone: remove its inbound SA (and its outbound one,
    /// if still in use).
    case childDeleted(ChildSAKeys)
    /// The IKE SA was rekeyed (its child SAs carry on).
    case ikeRekeyed
}

/// One IKEv2 SA (RFC 7296) with a pre-shared key, as initiator or
/// responder: IKE_SA_INIT then IKE_AUTH with the first child SA, then
/// INFORMATIONAL exchanges (delete, liveness). A plain state machine: it
/// takes messages and the time, and returns what to send and to install;
/// the owner does the I/O.
public final class IKESession {
    public enum Role: Sendable { case initiator, responder }
    public enum State: Equatable, Sendable {
        case idle
        case initSent
        case authSent
        case established
        case closed
    }

    /// Which side started this IKE SA (after a rekey: the side that rekeyed it).
    public private(set) var role: Role
    public let policy: IKEPolicy
    public private(set) var state = State.idle
    /// A NAT between the peers (or a peer that claims one): IKE moves to
    /// port 4500 after IKE_SA_INIT and ESP goes in UDP (RFC 3948).
    public private(set) var natDetected = false
    /// This side's own address is translated: the peer saw another one (it
    /// keeps the NAT's mapping open with keepalives, RFC 3948 section 2.3).
    public private(set) var behindNAT = false
    public private(set) var suite: IKESuite?
    public private(set) var initiatorSPI: UInt64 = 0
    public private(set) var responderSPI: UInt64 = 0

    let local: IKEEndpoint
    let remote: IKEEndpoint
    let random: () -> UInt64
    var dh: DHKeyPair?
    var nonceI: [UInt8] = [], nonceR: [UInt8] = []
    var message1: [UInt8] = [], message2: [UInt8] = []
    var cookie: [UInt8]? = nil
    var skD: [UInt8] = [], skPi: [UInt8] = [], skPr: [UInt8] = []
    var aeadI: IKEAEAD?, aeadR: IKEAEAD?
    var ivCounter: UInt64 = 0
    var childInboundSPI: UInt32 = 0
    var nextRequestID: UInt32 = 0
    var expectedRequestID: UInt32 = 0
    var lastRequest: [UInt8]? = nil
    var requestSentAt: Int64 = 0
    var retries = 0
    var lastResponse: (id: UInt32, bytes: [UInt8])? = nil
    var lastHeard: Int64 = 0
    /// The child SA in use, and one being made by a rekey we started.
    public private(set) var child: ChildSAKeys?
    var rekeying: (inbound: UInt32, nonce: [UInt8], old: ChildSAKeys, dh: DHKeyPair?)?
    /// A child the peer rekeyed whose old SA it has yet to delete.
    var replaced: (old: ChildSAKeys, new: ChildSAKeys)?
    /// An old child we rekeyed, deleted once the peer answers our Delete.
    var deleting: ChildSAKeys?
    public private(set) var rekeys = 0
    /// The outstanding request is a dead-peer-detection probe.
    var probing = false

    public init(role: Role, policy: IKEPolicy, local: IKEEndpoint, remote: IKEEndpoint, random: @escaping () -> UInt64) {
        self.role = role; self.policy = policy; self.local = local; self.remote = remote; self.random = random
    }

    /// The IKE SA's own keys go with it (the SK_e keys are `SecretBytes`,
    /// wiped by themselves).
    deinit {
        skD.withUnsafeMutableBytes { wipe($0) }
        skPi.withUnsafeMutableBytes { wipe($0) }
        skPr.withUnsafeMutableBytes { wipe($0) }
    }

    // MARK: Initiator

    /// Starts the exchange (initiator): the IKE_SA_INIT request.
    public func start(now: Int64) -> [IKEOutput] {
        precondition(role == .initiator)
        initiatorSPI = nonZero()
        return sendInit(group: policy.ikeSuites[0].group, now: now)
    }

    /// The IKE_SA_INIT request; after a COOKIE (RFC 7296 section 2.6) the
    /// same again with the cookie in front, after INVALID_KE_PAYLOAD with a
    /// key of the group asked for.
    func sendInit(group: DHGroup, now: Int64) -> [IKEOutput] {
        if dh?.group != group { dh = DHKeyPair(group) }
        if nonceI.isEmpty { nonceI = randomBytes(32) }
        let proposals = policy.ikeSuites.filter { $0.group == group } + policy.ikeSuites.filter { $0.group != group }
        var payloads: [IKEPayload] = []
        if let cookie { payloads.append(.notify(IKENotify(IKENotify.cookie, data: cookie))) }
        payloads += [
            .sa(proposals.enumerated().map { k, s in
                IKEProposal(number: UInt8(k + 1), protocolID: IKEProposal.ike, spi: [], transforms: s.proposalTransforms)
            }),
            .ke(group: group.rawValue, data: dh!.publicValue),
            .nonce(nonceI),
            .notify(IKENotify(IKENotify.natDetectionSourceIP, data: natHash(initiatorSPI, 0, local))),
            .notify(IKENotify(IKENotify.natDetectionDestinationIP, data: natHash(initiatorSPI, 0, remote))),
        ]
        message1 = plainMessage(.saInit, id: 0, response: false, payloads)
        state = .initSent
        return [request(message1, now: now)]
    }

    func initResponse(_ h: IKEHeader, _ payloads: [IKEPayload], now: Int64) -> [IKEOutput] {
        for case .notify(let n) in payloads {
            if n.type == IKENotify.cookie, cookie == nil {
                cookie = n.data
                nextRequestID = 0
                return sendInit(group: dh!.group, now: now)
            }
            if n.type == IKENotify.invalidKEPayload, n.data.count == 2,
               let g = DHGroup(rawValue: n.data.be16(0)), policy.ikeSuites.contains(where: { $0.group == g }), g != dh!.group {
                nextRequestID = 0
                return sendInit(group: g, now: now)
            }
            if n.isError { return fail("the responder refused IKE_SA_INIT: \(notifyName(n.type))") }
        }
        guard case .sa(let chosen)? = payloads.first(where: { $0.type == IKEPayloadType.sa }), chosen.count == 1,
              let s = suite(of: chosen[0]), policy.ikeSuites.contains(s) else {
            return fail("the responder chose no proposal of ours")
        }
        guard case .ke(let group, let pub)? = payloads.first(where: { $0.type == IKEPayloadType.ke }), group == s.group.rawValue,
              group == dh!.group.rawValue, let shared = dh!.shared(with: pub) else {
            return fail("the responder's key exchange does not match")
        }
        guard case .nonce(let nr)? = payloads.first(where: { $0.type == IKEPayloadType.nonce }) else { return fail("no responder nonce") }
        responderSPI = h.responderSPI
        nonceR = nr
        suite = s
        message2 = lastInbound
        detectNAT(payloads)
        deriveKeys(shared)
        return sendAuth(now: now)
    }

    func sendAuth(now: Int64) -> [IKEOutput] {
        childInboundSPI = childSPI()
        let idBody = IKEPayload.idI(policy.localID).body
        let auth = authentication(message: message1, nonce: nonceR, key: skPi, idBody: idBody)
        var payloads: [IKEPayload] = [.idI(policy.localID), .auth(method: 2, data: auth)]
        if policy.transportMode { payloads.append(.notify(IKENotify(IKENotify.useTransportMode))) }
        payloads += [
            .sa(policy.espSuites.enumerated().map { k, s in
                IKEProposal(number: UInt8(k + 1), protocolID: IKEProposal.esp, spi: spiBytes(childInboundSPI), transforms: s.proposalTransforms)
            }),
            .tsI(policy.localSelectors), .tsR(policy.remoteSelectors),
        ]
        state = .authSent
        return [request(sealedMessage(.auth, id: nextRequestID, response: false, payloads), now: now)]
    }

    func authResponse(_ payloads: [IKEPayload], now: Int64) -> [IKEOutput] {
        for case .notify(let n) in payloads where n.isError {
            return fail("the responder refused IKE_AUTH: \(notifyName(n.type))")
        }
        guard case .idR(let id)? = payloads.first(where: { $0.type == IKEPayloadType.idR }) else { return fail("no responder identity") }
        guard id == policy.remoteID else { return fail("the responder is \(id), not \(policy.remoteID)") }
        guard case .auth(2, let data)? = payloads.first(where: { $0.type == IKEPayloadType.auth }),
              authentication(message: message2, nonce: nonceI, key: skPr, idBody: IKEPayload.idR(id).body) == data else {
            return fail("the responder's AUTH does not verify (wrong pre-shared key?)")
        }
        guard case .sa(let chosen)? = payloads.first(where: { $0.type == IKEPayloadType.sa }), chosen.count == 1,
              chosen[0].protocolID == IKEProposal.esp, chosen[0].spi.count == 4, let esp = espSuite(of: chosen[0])?.withoutGroup,
              policy.espSuites.map(\.withoutGroup).contains(esp) else {
            return fail("the responder chose no ESP proposal of ours")
        }
        guard case .tsI(let tsi)? = payloads.first(where: { $0.type == IKEPayloadType.tsI }),
              case .tsR(let tsr)? = payloads.first(where: { $0.type == IKEPayloadType.tsR }),
              tsi.allSatisfy({ t in policy.localSelectors.contains { $0.contains(t) } }),
              tsr.allSatisfy({ t in policy.remoteSelectors.contains { $0.contains(t) } }) else {
            return fail("the responder's traffic selectors are outside ours")
        }
        let transport = payloads.contains { if case .notify(let n) = $0 { n.type == IKENotify.useTransportMode } else { false } }
        guard transport == policy.transportMode else { return fail("the responder did not agree to \(policy.transportMode ? "transport" : "tunnel") mode") }
        state = .established
        lastHeard = now
        let keys = childKeys(esp, inbound: childInboundSPI, outbound: chosen[0].spi.be32(0), local: tsi, remote: tsr)
        child = keys
        return [.childSA(keys), .established]
    }

    // MARK: Responder

    func initRequest(_ h: IKEHeader, _ payloads: [IKEPayload], now: Int64) -> [IKEOutput] {
        guard state == .idle else { return [] }
        guard case .sa(let offered)? = payloads.first(where: { $0.type == IKEPayloadType.sa }),
              case .ke(let group, let pub)? = payloads.first(where: { $0.type == IKEPayloadType.ke }),
              case .nonce(let ni)? = payloads.first(where: { $0.type == IKEPayloadType.nonce }) else {
            return [.send(plainMessage(.saInit, id: h.messageID, response: true, [.notify(IKENotify(IKENotify.invalidSyntax))],
                                       spiI: h.initiatorSPI, spiR: 0))]
        }
        // Our order of preference among what the initiator offers.
        guard let s = policy.ikeSuites.first(where: { mine in offered.contains { suite(of: $0) == mine } }) else {
            return [.send(plainMessage(.saInit, id: h.messageID, response: true, [.notify(IKENotify(IKENotify.noProposalChosen))],
                                       spiI: h.initiatorSPI, spiR: 0)),
                    .failed("no IKE proposal in common: offered \(offered.compactMap(suite(of:)).map(\.description).joined(separator: ", "))")]
        }
        guard group == s.group.rawValue else {
            let g = s.group.rawValue
            return [.send(plainMessage(.saInit, id: h.messageID, response: true,
                                       [.notify(IKENotify(IKENotify.invalidKEPayload, data: [UInt8(g >> 8), UInt8(g & 0xFF)]))],
                                       spiI: h.initiatorSPI, spiR: 0))]
        }
        dh = DHKeyPair(s.group)
        guard let shared = dh!.shared(with: pub) else {
            return [.send(plainMessage(.saInit, id: h.messageID, response: true, [.notify(IKENotify(IKENotify.invalidSyntax))],
                                       spiI: h.initiatorSPI, spiR: 0)), .failed("the initiator's key exchange is not a valid point")]
        }
        initiatorSPI = h.initiatorSPI
        responderSPI = nonZero()
        nonceI = ni
        nonceR = randomBytes(32)
        suite = s
        message1 = lastInbound
        detectNAT(payloads)
        deriveKeys(shared)
        let chosen = IKEProposal(number: offered.first { suite(of: $0) == s }!.number, protocolID: IKEProposal.ike, spi: [],
                                 transforms: s.proposalTransforms)
        message2 = plainMessage(.saInit, id: 0, response: true, [
            .sa([chosen]), .ke(group: s.group.rawValue, data: dh!.publicValue), .nonce(nonceR),
            .notify(IKENotify(IKENotify.natDetectionSourceIP, data: natHash(initiatorSPI, responderSPI, local))),
            .notify(IKENotify(IKENotify.natDetectionDestinationIP, data: natHash(initiatorSPI, responderSPI, remote))),
        ])
        expectedRequestID = 1
        lastResponse = (0, message2)
        state = .initSent
        return [.send(message2)]
    }

    func authRequest(_ h: IKEHeader, _ payloads: [IKEPayload], now: Int64) -> [IKEOutput] {
        func refuse(_ n: UInt16, _ why: String) -> [IKEOutput] {
            state = .closed
            return [respond(h, [.notify(IKENotify(n))]), .failed(why)]
        }
        guard case .idI(let id)? = payloads.first(where: { $0.type == IKEPayloadType.idI }),
              case .auth(let method, let data)? = payloads.first(where: { $0.type == IKEPayloadType.auth }) else {
            return refuse(IKENotify.invalidSyntax, "IKE_AUTH without identity or AUTH")
        }
        guard id == policy.remoteID else { return refuse(IKENotify.authenticationFailed, "the initiator is \(id), not \(policy.remoteID)") }
        guard method == 2, authentication(message: message1, nonce: nonceR, key: skPi, idBody: IKEPayload.idI(id).body) == data else {
            return refuse(IKENotify.authenticationFailed, "the initiator's AUTH does not verify (wrong pre-shared key?)")
        }
        // No key exchange in IKE_AUTH: a proposal's group waits for the first rekey (RFC 7296 section 1.2).
        guard case .sa(let offered)? = payloads.first(where: { $0.type == IKEPayloadType.sa }),
              let esp = policy.espSuites.map(\.withoutGroup).first(where: { mine in
                  offered.contains { $0.spi.count == 4 && espSuite(of: $0)?.withoutGroup == mine } }),
              let proposal = offered.first(where: { $0.spi.count == 4 && espSuite(of: $0)?.withoutGroup == esp }) else {
            return refuse(IKENotify.noProposalChosen, "no ESP proposal in common")
        }
        guard case .tsI(let tsi)? = payloads.first(where: { $0.type == IKEPayloadType.tsI }),
              case .tsR(let tsr)? = payloads.first(where: { $0.type == IKEPayloadType.tsR }) else {
            return refuse(IKENotify.tsUnacceptable, "no traffic selectors")
        }
        // Narrow to our policy: their TSi is our remote side, their TSr our local side.
        let remoteTS = narrow(tsi, to: policy.remoteSelectors), localTS = narrow(tsr, to: policy.localSelectors)
        guard !remoteTS.isEmpty, !localTS.isEmpty else {
            return refuse(IKENotify.tsUnacceptable, "traffic selectors outside the policy")
        }
        let transport = payloads.contains { if case .notify(let n) = $0 { n.type == IKENotify.useTransportMode } else { false } }
        guard transport == policy.transportMode else {
            return refuse(IKENotify.noProposalChosen, "the initiator asked for \(transport ? "transport" : "tunnel") mode")
        }
        childInboundSPI = childSPI()
        var reply: [IKEPayload] = [.idR(policy.localID),
                                   .auth(method: 2, data: authentication(message: message2, nonce: nonceI, key: skPr,
                                                                         idBody: IKEPayload.idR(policy.localID).body))]
        if transport { reply.append(.notify(IKENotify(IKENotify.useTransportMode))) }
        reply += [.sa([IKEProposal(number: proposal.number, protocolID: IKEProposal.esp, spi: spiBytes(childInboundSPI),
                                   transforms: esp.proposalTransforms)]),
                  .tsI(remoteTS), .tsR(localTS)]
        state = .established
        lastHeard = now
        let keys = childKeys(esp, inbound: childInboundSPI, outbound: proposal.spi.be32(0), local: localTS, remote: remoteTS)
        child = keys
        return [respond(h, reply), .childSA(keys), .established]
    }

    // MARK: Receive and time

    var lastInbound: [UInt8] = []

    /// A datagram from the peer (the IKE message, without a non-ESP marker).
    public func receive(_ message: [UInt8], now: Int64) -> [IKEOutput] {
        guard state != .closed, let h = try? IKEHeader(parsing: message) else { return [] }
        lastInbound = message
        // Our SA only (a new initiator's request has no responder SPI yet).
        if role == .responder, state == .idle {
            guard h.exchange == .saInit, !h.isResponse, h.messageID == 0, h.responderSPI == 0 else { return [] }
            guard let (payloads, sk) = try? IKEPayload.parse(message, from: IKEHeader.length, first: h.nextPayload), sk == nil else { return [] }
            return initRequest(h, payloads, now: now)
        }
        if let old = previous, h.initiatorSPI == old.spiI, h.responderSPI == old.spiR { return receiveOnPrevious(message, h, now: now) }
        guard h.initiatorSPI == initiatorSPI, h.responderSPI == responderSPI || h.exchange == .saInit else { return [] }
        if h.isResponse {
            guard let request = lastRequest, h.messageID == nextRequestID else { return [] }
            _ = request
            lastRequest = nil
            nextRequestID &+= 1
            retries = 0
            probing = false
            lastHeard = now
            if h.exchange == .saInit {
                guard let (payloads, _) = try? IKEPayload.parse(message, from: IKEHeader.length, first: h.nextPayload) else {
                    return fail("unreadable IKE_SA_INIT response")
                }
                return initResponse(h, payloads, now: now)
            }
            guard let payloads = open(message, h) else { return [] }
            switch (h.exchange, state) {
            case (.auth, .authSent): return authResponse(payloads, now: now)
            case (.createChildSA, .established) where ikeRekeying != nil: return ikeRekeyResponse(payloads, now: now)
            case (.createChildSA, .established): return rekeyResponse(payloads, now: now)
            case (.informational, _):
                // The answer to our Delete of a rekeyed child: now it goes.
                if let old = deleting {
                    deleting = nil
                    return [.childDeleted(old)]
                }
                return []
            default: return []
            }
        }
        // A request from the peer: a retransmission gets the same answer.
        if let last = lastResponse, h.messageID == last.id { return [.send(last.bytes)] }
        guard h.messageID == expectedRequestID else { return [] }
        guard let payloads = open(message, h) else { return [] }
        expectedRequestID &+= 1
        lastHeard = now
        switch h.exchange {
        case .auth where role == .responder && state == .initSent: return authRequest(h, payloads, now: now)
        case .informational:
            let deletesIKE = payloads.contains { if case .delete(IKEProposal.ike, _) = $0 { true } else { false } }
            if deletesIKE {
                state = .closed
                return [respond(h, []), .closed("the peer deleted the IKE SA")]
            }
            return deleteRequest(h, payloads)
        case .createChildSA where state == .established:
            let rekeysIKE = payloads.contains { if case .sa(let ps) = $0 { ps.contains { $0.protocolID == IKEProposal.ike } } else { false } }
            return rekeysIKE ? ikeRekeyRequest(h, payloads, now: now) : rekeyRequest(h, payloads)
        default:
            return [respond(h, [.notify(IKENotify(IKENotify.noAdditionalSAs))])]
        }
    }

    // MARK: Rekeying the IKE SA (RFC 7296 sections 1.3.2 and 2.18)

    /// What identifies and protects an IKE SA, kept for the old one after a
    /// rekey until its Delete exchange is over.
    struct SAContext {
        var spiI: UInt64, spiR: UInt64, role: Role
        var aeadI: IKEAEAD?, aeadR: IKEAEAD?
        var nextRequestID: UInt32, expectedRequestID: UInt32
        var lastResponse: (id: UInt32, bytes: [UInt8])?
        var ivCounter: UInt64
    }
    var previous: SAContext?
    /// Our Delete of the previous IKE SA, until answered: when it was last sent, and how often again.
    var previousDelete: (bytes: [UInt8], sentAt: Int64, retries: Int)?
    var ikeRekeying: (spi: UInt64, nonce: [UInt8], dh: DHKeyPair)?
    public private(set) var ikeRekeys = 0

    var context: SAContext {
        get {
            SAContext(spiI: initiatorSPI, spiR: responderSPI, role: role, aeadI: aeadI, aeadR: aeadR, nextRequestID: nextRequestID,
                      expectedRequestID: expectedRequestID, lastResponse: lastResponse, ivCounter: ivCounter)
        }
        set {
            initiatorSPI = newValue.spiI; responderSPI = newValue.spiR; role = newValue.role; aeadI = newValue.aeadI; aeadR = newValue.aeadR
            nextRequestID = newValue.nextRequestID; expectedRequestID = newValue.expectedRequestID
            lastResponse = newValue.lastResponse; ivCounter = newValue.ivCounter
        }
    }

    /// Makes the new IKE SA current: its SPIs, keys from the old SK_d, message IDs from 0.
    func switchIKE(spiI: UInt64, spiR: UInt64, role newRole: Role, suite s: IKESuite, ni: [UInt8], nr: [UInt8], shared: SecretBytes) {
        var oldSKd = skD
        defer { oldSKd.withUnsafeMutableBytes { wipe($0) } }
        skD.withUnsafeMutableBytes { wipe($0) }
        skPi.withUnsafeMutableBytes { wipe($0) }
        skPr.withUnsafeMutableBytes { wipe($0) }
        previous = context
        initiatorSPI = spiI; responderSPI = spiR; role = newRole; suite = s
        nonceI = ni; nonceR = nr
        deriveKeys(shared, rekeying: oldSKd)
        nextRequestID = 0; expectedRequestID = 0; lastResponse = nil; lastRequest = nil; ivCounter = 0; retries = 0; probing = false
        ikeRekeys += 1
    }

    /// Starts a rekey of the IKE SA (the child SAs move to the new one).
    public func rekeyIKE(now: Int64) -> [IKEOutput] {
        guard state == .established, let s = suite, lastRequest == nil, rekeying == nil, ikeRekeying == nil, previous == nil else { return [] }
        let spi = nonZero(), ni = randomBytes(32), dh = DHKeyPair(s.group)
        ikeRekeying = (spi, ni, dh)
        let payloads: [IKEPayload] = [
            .sa([IKEProposal(number: 1, protocolID: IKEProposal.ike, spi: spiBytes64(spi), transforms: s.proposalTransforms)]),
            .nonce(ni), .ke(group: s.group.rawValue, data: dh.publicValue),
        ]
        return [request(sealedMessage(.createChildSA, id: nextRequestID, response: false, payloads), now: now)]
    }

    func ikeRekeyResponse(_ payloads: [IKEPayload], now: Int64) -> [IKEOutput] {
        guard let r = ikeRekeying else { return [] }
        ikeRekeying = nil
        guard case .sa(let chosen)? = payloads.first(where: { $0.type == IKEPayloadType.sa }), chosen.count == 1, chosen[0].spi.count == 8,
              let s = suite(of: chosen[0]), policy.ikeSuites.contains(s), s.group == r.dh.group,
              case .nonce(let nr)? = payloads.first(where: { $0.type == IKEPayloadType.nonce }),
              case .ke(_, let pub)? = payloads.first(where: { $0.type == IKEPayloadType.ke }), let shared = r.dh.shared(with: pub) else {
            return []  // refused: the old IKE SA stays; try again later
        }
        switchIKE(spiI: r.spi, spiR: chosen[0].spi.be64(0), role: .initiator, suite: s, ni: r.nonce, nr: nr, shared: shared)
        // Delete the old IKE SA, on the old IKE SA (sent again until answered, `tick`).
        let current = context
        context = previous!
        let delete = sealedMessage(.informational, id: nextRequestID, response: false, [.delete(protocolID: IKEProposal.ike, spis: [])])
        nextRequestID &+= 1
        previous = context
        context = current
        previousDelete = (delete, now, 0)
        return [.send(delete), .ikeRekeyed]
    }

    /// The peer rekeys the IKE SA: answer on the old one, then the new one is current.
    func ikeRekeyRequest(_ h: IKEHeader, _ payloads: [IKEPayload], now: Int64) -> [IKEOutput] {
        if ikeRekeying != nil || rekeying != nil || previous != nil {
            return [respond(h, [.notify(IKENotify(IKENotify.temporaryFailure))])]
        }
        guard case .sa(let offered)? = payloads.first(where: { $0.type == IKEPayloadType.sa }),
              case .nonce(let ni)? = payloads.first(where: { $0.type == IKEPayloadType.nonce }),
              case .ke(let group, let pub)? = payloads.first(where: { $0.type == IKEPayloadType.ke }) else {
            return [respond(h, [.notify(IKENotify(IKENotify.invalidSyntax))])]
        }
        guard let s = policy.ikeSuites.first(where: { mine in offered.contains { $0.spi.count == 8 && suite(of: $0) == mine } }),
              let proposal = offered.first(where: { $0.spi.count == 8 && suite(of: $0) == s }) else {
            return [respond(h, [.notify(IKENotify(IKENotify.noProposalChosen))])]
        }
        guard group == s.group.rawValue else {
            let g = s.group.rawValue
            return [respond(h, [.notify(IKENotify(IKENotify.invalidKEPayload, data: [UInt8(g >> 8), UInt8(g & 0xFF)]))])]
        }
        let dh = DHKeyPair(s.group)
        guard let shared = dh.shared(with: pub) else { return [respond(h, [.notify(IKENotify(IKENotify.invalidSyntax))])] }
        let spi = nonZero(), nr = randomBytes(32)
        let reply = respond(h, [
            .sa([IKEProposal(number: proposal.number, protocolID: IKEProposal.ike, spi: spiBytes64(spi), transforms: s.proposalTransforms)]),
            .nonce(nr), .ke(group: s.group.rawValue, data: dh.publicValue),
        ])
        switchIKE(spiI: proposal.spi.be64(0), spiR: spi, role: .responder, suite: s, ni: ni, nr: nr, shared: shared)
        return [reply, .ikeRekeyed]
    }

    /// A message on the old IKE SA after a rekey: its Delete (answered, then
    /// the old SA is gone) or the answer to ours; anything else is ignored.
    func receiveOnPrevious(_ message: [UInt8], _ h: IKEHeader, now: Int64) -> [IKEOutput] {
        let current = context
        context = previous!
        defer { previous = previous == nil ? nil : context; context = current }
        if h.isResponse {
            // The answer to our Delete of the old IKE SA.
            if h.exchange == .informational, open(message, h) != nil {
                previous = nil
                previousDelete = nil
            }
            return []
        }
        if let last = lastResponse, h.messageID == last.id { return [.send(last.bytes)] }
        guard let payloads = open(message, h) else { return [] }
        let deletes = payloads.contains { if case .delete(IKEProposal.ike, _) = $0 { true } else { false } }
        let reply = respond(h, [])
        if deletes {
            previous = nil
            previousDelete = nil
        }
        return [reply]
    }

    // MARK: Rekeying child SAs (RFC 7296 sections 1.3.3 and 2.8)

    /// Starts a rekey of the child SA (make-before-break): a CREATE_CHILD_SA
    /// request; the old SA is deleted once the new one is in place.
    public func rekeyChild(now: Int64) -> [IKEOutput] {
        guard state == .established, let old = child, rekeying == nil, lastRequest == nil else { return [] }
        let inbound = childSPI()
        let ni = randomBytes(32)
        // PFS: a fresh key exchange in the group of our first suite that has one.
        let dh = policy.espSuites.first(where: { $0.group != nil })?.group.map(DHKeyPair.init)
        rekeying = (inbound, ni, old, dh)
        var payloads: [IKEPayload] = [.notify(IKENotify(IKENotify.rekeySA, protocolID: IKEProposal.esp, spi: spiBytes(old.inboundSPI)))]
        if policy.transportMode { payloads.append(.notify(IKENotify(IKENotify.useTransportMode))) }
        let suites = policy.espSuites.filter { dh == nil || $0.group == dh?.group }
        payloads += [
            .sa(suites.enumerated().map { k, s in
                IKEProposal(number: UInt8(k + 1), protocolID: IKEProposal.esp, spi: spiBytes(inbound), transforms: s.proposalTransforms)
            }),
            .nonce(ni),
        ]
        if let dh { payloads.append(.ke(group: dh.group.rawValue, data: dh.publicValue)) }
        payloads += [.tsI(old.localSelectors), .tsR(old.remoteSelectors)]
        return [request(sealedMessage(.createChildSA, id: nextRequestID, response: false, payloads), now: now)]
    }

    /// The peer rekeys the child SA: answer with our new SPI and nonce, add
    /// the new inbound SA now, and keep sending on the old one until the
    /// peer deletes it (it may not have the new one yet).
    func rekeyRequest(_ h: IKEHeader, _ payloads: [IKEPayload]) -> [IKEOutput] {
        guard let old = child else { return [respond(h, [.notify(IKENotify(IKENotify.childSANotFound))])] }
        let rekey = payloads.contains { p in
            if case .notify(let n) = p, n.type == IKENotify.rekeySA, n.spi.count == 4 {
                let spi = n.spi.be32(0)
                return spi == old.outboundSPI || spi == old.inboundSPI
            }
            return false
        }
        // Both sides rekeying at once: ours goes on, the peer tries again later (RFC 7296 section 2.25).
        if rekey, rekeying != nil || replaced != nil { return [respond(h, [.notify(IKENotify(IKENotify.temporaryFailure))])] }
        // A new child SA (not a rekey), or an IKE SA rekey, is not offered: the peer falls back to reauthentication.
        guard rekey,
              case .sa(let offered)? = payloads.first(where: { $0.type == IKEPayloadType.sa }),
              case .nonce(let ni)? = payloads.first(where: { $0.type == IKEPayloadType.nonce }) else {
            return [respond(h, [.notify(IKENotify(IKENotify.noAdditionalSAs))])]
        }
        // With a key exchange (PFS) the suite's group must be the KE's; without, a suite without group.
        var ke: (group: UInt16, data: [UInt8])?
        if case .ke(let g, let d)? = payloads.first(where: { $0.type == IKEPayloadType.ke }) { ke = (g, d) }
        guard let esp = policy.espSuites.first(where: { mine in
                  mine.group?.rawValue == ke?.group && offered.contains { $0.spi.count == 4 && espSuite(of: $0) == mine } }),
              let proposal = offered.first(where: { $0.spi.count == 4 && espSuite(of: $0) == esp }) else {
            return [respond(h, [.notify(IKENotify(IKENotify.noProposalChosen))])]
        }
        var shared: SecretBytes?, ours: DHKeyPair?
        if let ke, let g = esp.group {
            let dh = DHKeyPair(g)
            guard let s = dh.shared(with: ke.data) else { return [respond(h, [.notify(IKENotify(IKENotify.invalidSyntax))])] }
            shared = s
            ours = dh
        }
        let inbound = childSPI()
        let nr = randomBytes(32)
        var reply: [IKEPayload] = []
        if policy.transportMode { reply.append(.notify(IKENotify(IKENotify.useTransportMode))) }
        reply += [.sa([IKEProposal(number: proposal.number, protocolID: IKEProposal.esp, spi: spiBytes(inbound), transforms: esp.proposalTransforms)]),
                  .nonce(nr)]
        if let ours { reply.append(.ke(group: ours.group.rawValue, data: ours.publicValue)) }
        reply += [.tsI(old.remoteSelectors), .tsR(old.localSelectors)]
        let new = childKeys(esp, inbound: inbound, outbound: proposal.spi.be32(0), local: old.localSelectors, remote: old.remoteSelectors,
                            ni: ni, nr: nr, exchangeInitiator: false, shared: shared)
        replaced = (old, new)
        child = new
        rekeys += 1
        return [respond(h, reply), .rekeyed(new: new, old: old, outboundNow: false)]
    }

    /// Our rekey answered: the new SA goes in both ways at once (the peer
    /// has it), then the old one is deleted.
    func rekeyResponse(_ payloads: [IKEPayload], now: Int64) -> [IKEOutput] {
        guard let r = rekeying else { return [] }
        rekeying = nil
        guard case .sa(let chosen)? = payloads.first(where: { $0.type == IKEPayloadType.sa }), chosen.count == 1, chosen[0].spi.count == 4,
              let esp = espSuite(of: chosen[0]), policy.espSuites.contains(esp), esp.group == r.dh?.group,
              case .nonce(let nr)? = payloads.first(where: { $0.type == IKEPayloadType.nonce }) else {
            // Refused (TEMPORARY_FAILURE in a collision, or no proposal): the old SA stays; try again later.
            return []
        }
        var shared: SecretBytes?
        if let dh = r.dh {
            guard case .ke(let g, let pub)? = payloads.first(where: { $0.type == IKEPayloadType.ke }), g == dh.group.rawValue,
                  let s = dh.shared(with: pub) else { return [] }
            shared = s
        }
        let new = childKeys(esp, inbound: r.inbound, outbound: chosen[0].spi.be32(0), local: r.old.localSelectors,
                            remote: r.old.remoteSelectors, ni: r.nonce, nr: nr, exchangeInitiator: true, shared: shared)
        child = new
        deleting = r.old
        rekeys += 1
        let delete = request(sealedMessage(.informational, id: nextRequestID, response: false,
                                           [.delete(protocolID: IKEProposal.esp, spis: [spiBytes(r.old.inboundSPI)])]), now: now)
        return [.rekeyed(new: new, old: r.old, outboundNow: true), delete]
    }

    /// The peer deletes child SAs (its inbound SPIs: our outbound ones).
    func deleteRequest(_ h: IKEHeader, _ payloads: [IKEPayload]) -> [IKEOutput] {
        var spis: [[UInt8]] = []
        var outputs: [IKEOutput] = []
        for case .delete(IKEProposal.esp, let list) in payloads {
            for s in list where s.count == 4 {
                let spi = s.be32(0)
                if let r = replaced, r.old.outboundSPI == spi {
                    // The rekey's old SA: the new one takes over both ways.
                    replaced = nil
                    spis.append(spiBytes(r.old.inboundSPI))
                    outputs += [.outboundSwitch(r.new), .childDeleted(r.old)]
                } else if let c = child, c.outboundSPI == spi {
                    spis.append(spiBytes(c.inboundSPI))
                    child = nil
                    outputs.append(.childDeleted(c))
                }
            }
        }
        let reply = respond(h, spis.isEmpty ? [] : [.delete(protocolID: IKEProposal.esp, spis: spis)])
        return [reply] + outputs
    }

    /// Retransmits an unanswered request (1, 2, 4, … s), gives up after
    /// `policy.retransmissions`, and probes a quiet peer (DPD).
    public func tick(now: Int64) -> [IKEOutput] {
        guard state != .closed else { return [] }
        // Our Delete of the old IKE SA after a rekey: again at 1, 2, 4 s,
        // then the old SA is forgotten whether or not the peer answered.
        if let d = previousDelete, now - d.sentAt >= Int64(1_000_000_000) << Int64(d.retries) {
            if d.retries >= 3 {
                previous = nil
                previousDelete = nil
            } else {
                previousDelete = (d.bytes, now, d.retries + 1)
                return [.send(d.bytes)] + tick(now: now)
            }
        }
        if let r = lastRequest {
            let wait = Int64(1_000_000_000) << Int64(min(retries, 6))
            guard now - requestSentAt >= wait else { return [] }
            // A liveness check gives up sooner: 1 + 2 + 4 s after the probe.
            let limit = probing ? min(3, policy.retransmissions) : policy.retransmissions
            if retries >= limit {
                let wasUp = state == .established
                state = .closed
                return wasUp ? [.closed("the peer stopped answering (dead-peer detection)")]
                    : [.failed("no answer from the peer after \(retries) retransmissions")]
            }
            retries += 1
            requestSentAt = now
            return [.send(r)]
        }
        if state == .established, let dpd = policy.dpdInterval, now - lastHeard >= Int64(dpd) * 1_000_000_000 {
            probing = true
            return [request(sealedMessage(.informational, id: nextRequestID, response: false, []), now: now)]
        }
        return []
    }

    /// Deletes the IKE SA (and with it its children): an INFORMATIONAL with Delete.
    public func close(now: Int64) -> [IKEOutput] {
        guard state == .established else { state = .closed; return [] }
        let m = sealedMessage(.informational, id: nextRequestID, response: false, [.delete(protocolID: IKEProposal.ike, spis: [])])
        state = .closed
        return [.send(m)]
    }

    // MARK: Messages

    func request(_ m: [UInt8], now: Int64) -> IKEOutput {
        if !m.isEmpty, m.count > 18, IKEExchange(rawValue: m[18]) != .informational { probing = false }
        lastRequest = m
        requestSentAt = now
        return .send(m)
    }

    func respond(_ h: IKEHeader, _ payloads: [IKEPayload]) -> IKEOutput {
        let m = sealedMessage(h.exchange, id: h.messageID, response: true, payloads)
        lastResponse = (h.messageID, m)
        return .send(m)
    }

    var ourFlags: UInt8 { role == .initiator ? IKEHeader.flagInitiator : 0 }

    func plainMessage(_ x: IKEExchange, id: UInt32, response: Bool, _ payloads: [IKEPayload], spiI: UInt64? = nil, spiR: UInt64? = nil) -> [UInt8] {
        let body = IKEPayload.emit(payloads)
        var m: [UInt8] = []
        IKEHeader(initiatorSPI: spiI ?? initiatorSPI, responderSPI: spiR ?? responderSPI, nextPayload: payloads.first?.type ?? 0,
                  exchange: x, flags: ourFlags | (response ? IKEHeader.flagResponse : 0), messageID: id,
                  length: UInt32(IKEHeader.length + body.count)).emit(into: &m)
        return m + body
    }

    /// A message whose payloads travel in an SK payload (RFC 7296 section
    /// 3.14, RFC 5282): the header and SK's generic header are the AAD.
    func sealedMessage(_ x: IKEExchange, id: UInt32, response: Bool, _ payloads: [IKEPayload]) -> [UInt8] {
        let aead = role == .initiator ? aeadI! : aeadR!
        let plain = IKEPayload.emit(payloads) + [0]  // no padding, pad length 0
        let skLength = 4 + 8 + plain.count + 16
        var m: [UInt8] = []
        IKEHeader(initiatorSPI: initiatorSPI, responderSPI: responderSPI, nextPayload: IKEPayloadType.sk, exchange: x,
                  flags: ourFlags | (response ? IKEHeader.flagResponse : 0), messageID: id,
                  length: UInt32(IKEHeader.length + skLength)).emit(into: &m)
        m += [payloads.first?.type ?? 0, 0, UInt8(skLength >> 8), UInt8(skLength & 0xFF)]
        ivCounter &+= 1
        return m + aead.seal(plain, aad: m, iv: ivCounter)
    }

    /// The payloads inside a message's SK payload, or nil if it has none or does not verify.
    func open(_ m: [UInt8], _ h: IKEHeader) -> [IKEPayload]? {
        guard let (_, sk) = try? IKEPayload.parse(m, from: IKEHeader.length, first: h.nextPayload), let sk else { return nil }
        let aead = role == .initiator ? aeadR! : aeadI!
        guard let plain = aead.open(m[(sk.offset + 4)...], aad: Array(m[..<(sk.offset + 4)])), let pad = plain.last,
              Int(pad) < plain.count else { return nil }
        let inner = Array(plain[..<(plain.count - 1 - Int(pad))])
        return (try? IKEPayload.parse(inner, from: 0, first: sk.firstInner))?.payloads
    }

    // MARK: Keys

    /// SKEYSEED and the IKE SA's keys (RFC 7296 section 2.14); AEAD: no SK_a.
    /// `rekeying`: the old SK_d, for a rekeyed IKE SA (RFC 7296 section
    /// 2.18: SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)).
    func deriveKeys(_ shared: SecretBytes, rekeying oldSKd: [UInt8]? = nil) {
        let s = suite!
        let secret = shared.withUnsafeBytes { Array($0) }
        let seed = oldSKd.map { s.prf($0, secret + nonceI + nonceR) } ?? s.prf(nonceI + nonceR, secret)
        let k = s.encryption.keyMaterialLength, p = s.prf.length
        let keys = s.prf.plus(seed, nonceI + nonceR + spiBytes64(initiatorSPI) + spiBytes64(responderSPI), count: 3 * p + 2 * k)
        skD = Array(keys[0..<p])
        aeadI = IKEAEAD(algorithm: s.encryption, key: SecretBytes(Array(keys[p..<(p + k)])))
        aeadR = IKEAEAD(algorithm: s.encryption, key: SecretBytes(Array(keys[(p + k)..<(p + 2 * k)])))
        skPi = Array(keys[(p + 2 * k)..<(2 * p + 2 * k)])
        skPr = Array(keys[(2 * p + 2 * k)...])
    }

    /// AUTH with a shared key (RFC 7296 section 2.15).
    func authentication(message: [UInt8], nonce: [UInt8], key: [UInt8], idBody: [UInt8]) -> [UInt8] {
        let prf = suite!.prf
        let signed = message + nonce + prf(key, idBody)
        let pad = Array("Key Pad for IKEv2".utf8)
        return policy.psk.withUnsafeBytes { prf(prf(Array($0), pad), signed) }
    }

    /// KEYMAT = prf+(SK_d, Ni | Nr): initiator-to-responder key first (section 2.17).
    /// `exchangeInitiator`: whether this side started the exchange that made
    /// the SA (IKE_AUTH: the IKE initiator; a rekey: whoever asked), whose
    /// nonces `ni`, `nr` seed KEYMAT.
    func childKeys(_ esp: ESPSuite, inbound: UInt32, outbound: UInt32, local: [TrafficSelector], remote: [TrafficSelector],
                   ni: [UInt8]? = nil, nr: [UInt8]? = nil, exchangeInitiator: Bool? = nil, shared: SecretBytes? = nil) -> ChildSAKeys {
        let n = esp.encryption.keyMaterialLength
        // With PFS, KEYMAT = prf+(SK_d, g^ir (new) | Ni | Nr) (RFC 7296 section 2.17).
        let fresh = shared?.withUnsafeBytes { Array($0) } ?? []
        let keymat = suite!.prf.plus(skD, fresh + (ni ?? nonceI) + (nr ?? nonceR), count: 2 * n)
        let iToR = SecretBytes(Array(keymat[..<n])), rToI = SecretBytes(Array(keymat[n...]))
        let initiator = exchangeInitiator ?? (role == .initiator)
        return ChildSAKeys(inboundSPI: inbound, outboundSPI: outbound, suite: esp,
                           inboundKey: initiator ? rToI : iToR, outboundKey: initiator ? iToR : rToI,
                           transportMode: policy.transportMode, localSelectors: local, remoteSelectors: remote)
    }

    // MARK: NAT detection (RFC 7296 section 2.23)

    func natHash(_ spiI: UInt64, _ spiR: UInt64, _ e: IKEEndpoint) -> [UInt8] {
        Array(Insecure.SHA1.hash(data: spiBytes64(spiI) + spiBytes64(spiR) + e.address + [UInt8(e.port >> 8), UInt8(e.port & 0xFF)]))
    }

    func detectNAT(_ payloads: [IKEPayload]) {
        let spiR = role == .initiator ? responderSPI : 0
        let myHash = natHash(initiatorSPI, spiR, local), theirHash = natHash(initiatorSPI, spiR, remote)
        var sawSource = false, sawDestination = false, sourceMatches = false, destinationMatches = false
        for case .notify(let n) in payloads {
            if n.type == IKENotify.natDetectionSourceIP { sawSource = true; sourceMatches = sourceMatches || n.data == theirHash }
            if n.type == IKENotify.natDetectionDestinationIP { sawDestination = true; destinationMatches = n.data == myHash }
        }
        behindNAT = sawDestination && !destinationMatches
        natDetected = (sawSource && !sourceMatches) || behindNAT
    }

    // MARK: Helpers

    func fail(_ why: String) -> [IKEOutput] {
        state = .closed
        return [.failed(why)]
    }

    func suite(of p: IKEProposal) -> IKESuite? {
        guard p.protocolID == IKEProposal.ike,
              let e = p.transforms.first(where: { $0.type == IKETransform.encryption }).flatMap(AEADAlgorithm.init(transform:)),
              let f = p.transforms.first(where: { $0.type == IKETransform.prf }).flatMap({ IKEPRF(rawValue: $0.id) }),
              let g = p.transforms.first(where: { $0.type == IKETransform.keyExchange }).flatMap({ DHGroup(rawValue: $0.id) }) else { return nil }
        // A proposal offering several of a type: take the combination we know (the first of each).
        return IKESuite(encryption: e, prf: f, group: g)
    }

    func espSuite(of p: IKEProposal) -> ESPSuite? {
        // A group we do not know makes the proposal one we cannot take.
        let ke = p.transforms.first { $0.type == IKETransform.keyExchange && $0.id != 0 }
        let group = ke.flatMap { DHGroup(rawValue: $0.id) }
        guard ke == nil || group != nil else { return nil }
        guard p.protocolID == IKEProposal.esp,
              let e = p.transforms.first(where: { $0.type == IKETransform.encryption }).flatMap(AEADAlgorithm.init(transform:)) else { return nil }
        let esn = p.transforms.filter { $0.type == IKETransform.esn }.map(\.id)
        // No ESN transform means none; with both offered, take what our list prefers.
        let wanted = policy.espSuites.first { $0.encryption == e }?.extendedSequenceNumbers ?? false
        let chosen = esn.isEmpty ? false : (esn.contains(wanted ? 1 : 0) ? wanted : esn[0] == 1)
        return ESPSuite(encryption: e, extendedSequenceNumbers: chosen, group: group)
    }

    func narrow(_ offered: [TrafficSelector], to policy: [TrafficSelector]) -> [TrafficSelector] {
        offered.flatMap { o in policy.compactMap { o.intersection($0) } }
    }

    func nonZero() -> UInt64 {
        var v = random()
        while v == 0 { v = random() }
        return v
    }

    func childSPI() -> UInt32 {
        var v = UInt32(truncatingIfNeeded: random())
        while v < 256 { v = UInt32(truncatingIfNeeded: random()) }
        return v
    }

    func randomBytes(_ n: Int) -> [UInt8] {
        var out: [UInt8] = []
        while out.count < n { out += spiBytes64(random()) }
        return Array(out.prefix(n))
    }

    func notifyName(_ t: UInt16) -> String {
        switch t {
        case IKENotify.noProposalChosen: "NO_PROPOSAL_CHOSEN"
        case IKENotify.authenticationFailed: "AUTHENTICATION_FAILED"
        case IKENotify.invalidKEPayload: "INVALID_KE_PAYLOAD"
        case IKENotify.tsUnacceptable: "TS_UNACCEPTABLE"
        case IKENotify.invalidSyntax: "INVALID_SYNTAX"
        default: "notify \(t)"
        }
    }
}

func spiBytes(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
func spiBytes64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
