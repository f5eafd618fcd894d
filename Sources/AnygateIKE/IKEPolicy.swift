public import AnygateCrypto

/// An IKE SA's transforms: an AEAD for its SK payloads, a PRF and a
/// Diffie-Hellman group. Written as strongSwan does: `aes128gcm16-prfsha256-curve25519`.
public struct IKESuite: Hashable, Sendable, CustomStringConvertible {
    public var encryption: AEADAlgorithm
    public var prf: IKEPRF
    public var group: DHGroup

    public init(encryption: AEADAlgorithm, prf: IKEPRF, group: DHGroup) {
        self.encryption = encryption; self.prf = prf; self.group = group
    }

    /// Parses `ENCR-PRF-GROUP` in any order; nil names the part it did not know.
    public init(parsing text: String) throws(IKEConfigError) {
        var e: AEADAlgorithm?, p: IKEPRF?, g: DHGroup?
        for part in text.split(separator: "-").map(String.init) {
            if let a = AEADAlgorithm(name: part) { e = a } else if let f = IKEPRF.allCases.first(where: { $0.name == part }) { p = f }
            else if let d = DHGroup.allCases.first(where: { $0.name == part }) { g = d }
            else { throw .unknownTransform(part, in: text) }
        }
        guard let e, let p, let g else { throw .incompleteProposal(text, needs: "an AEAD, a PRF and a DH group") }
        self.init(encryption: e, prf: p, group: g)
    }

    public var description: String { "\(encryption.name)-\(prf.name)-\(group.name)" }

    /// The safe default: AES-GCM-128 (then 256, then ChaCha20-Poly1305), SHA-256, Curve25519 then P-256.
    public static let defaults: [IKESuite] = [
        IKESuite(encryption: .aes128GCM, prf: .hmacSHA256, group: .curve25519),
        IKESuite(encryption: .aes256GCM, prf: .hmacSHA384, group: .curve25519),
        IKESuite(encryption: .aes128GCM, prf: .hmacSHA256, group: .p256),
        IKESuite(encryption: .chacha20Poly1305, prf: .hmacSHA256, group: .curve25519),
    ]

    var proposalTransforms: [IKETransform] {
        [encryption.transform, IKETransform(type: IKETransform.prf, id: prf.rawValue),
         IKETransform(type: IKETransform.keyExchange, id: group.rawValue)]
    }
}

/// A child SA's transforms: an AEAD, whether sequence numbers are
/// extended, and for perfect forward secrecy a Diffie-Hellman group whose
/// fresh exchange keys every rekeyed child SA (the first child SA, made in
/// IKE_AUTH, has none: RFC 7296 section 1.2).
public struct ESPSuite: Hashable, Sendable, CustomStringConvertible {
    public var encryption: AEADAlgorithm
    public var extendedSequenceNumbers: Bool
    public var group: DHGroup?

    public init(encryption: AEADAlgorithm, extendedSequenceNumbers: Bool = false, group: DHGroup? = nil) {
        self.encryption = encryption; self.extendedSequenceNumbers = extendedSequenceNumbers; self.group = group
    }

    /// Parses `aes128gcm16`, `aes128gcm16-esn`, `aes128gcm16-curve25519-noesn`, …
    public init(parsing text: String) throws(IKEConfigError) {
        let parts = text.split(separator: "-").map(String.init)
        guard let first = parts.first, let a = AEADAlgorithm(name: first) else {
            throw .unknownTransform(parts.first ?? text, in: text)
        }
        var esn = false
        var group: DHGroup?
        for p in parts.dropFirst() {
            switch p {
            case "esn": esn = true
            case "noesn": esn = false
            default:
                guard let g = DHGroup.allCases.first(where: { $0.name == p }) else { throw .unknownTransform(p, in: text) }
                group = g
            }
        }
        self.init(encryption: a, extendedSequenceNumbers: esn, group: group)
    }

    public var description: String { encryption.name + (group.map { "-" + $0.name } ?? "") + (extendedSequenceNumbers ? "-esn" : "") }

    /// The suite without its group (what IKE_AUTH negotiates).
    public var withoutGroup: ESPSuite { ESPSuite(encryption: encryption, extendedSequenceNumbers: extendedSequenceNumbers) }

    public static let defaults: [ESPSuite] = [
        ESPSuite(encryption: .aes128GCM), ESPSuite(encryption: .aes256GCM), ESPSuite(encryption: .chacha20Poly1305),
    ]

    var proposalTransforms: [IKETransform] {
        [encryption.transform, IKETransform(type: IKETransform.esn, id: extendedSequenceNumbers ? 1 : 0)]
            + (group.map { [IKETransform(type: IKETransform.keyExchange, id: $0.rawValue)] } ?? [])
    }
}

/// A config error in IKE settings.
public enum IKEConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownTransform(String, in: String)
    case incompleteProposal(String, needs: String)

    public var description: String {
        switch self {
        case .unknownTransform(let t, let p): "unknown transform \"\(t)\" in proposal \"\(p)\""
        case .incompleteProposal(let p, let n): "proposal \"\(p)\" needs \(n)"
        }
    }
}

extension AEADAlgorithm {
    var transform: IKETransform {
        switch self {
        case .aes128GCM: IKETransform(type: IKETransform.encryption, id: 20, keyLength: 128)
        case .aes256GCM: IKETransform(type: IKETransform.encryption, id: 20, keyLength: 256)
        case .chacha20Poly1305: IKETransform(type: IKETransform.encryption, id: 28)
        }
    }

    init?(transform t: IKETransform) {
        switch (t.id, t.keyLength) {
        case (20, 128): self = .aes128GCM
        case (20, 256): self = .aes256GCM
        case (28, nil): self = .chacha20Poly1305
        default: return nil
        }
    }
}

/// What one side of an IKE SA needs to know: who it is, who the peer must
/// be, the shared key, what it proposes or accepts, and for the child SA
/// its selectors and mode.
public struct IKEPolicy: Sendable {
    public var localID: IKEIdentity
    public var remoteID: IKEIdentity
    public var psk: SecretBytes
    public var ikeSuites: [IKESuite] = IKESuite.defaults
    public var espSuites: [ESPSuite] = ESPSuite.defaults
    /// The child SA's traffic selectors, as this side sees them.
    public var localSelectors: [TrafficSelector]
    public var remoteSelectors: [TrafficSelector]
    /// Transport mode (GRE over IPsec between the two endpoints) rather than tunnel mode.
    public var transportMode = false
    /// Retransmission of an unanswered request: after 1, 2, 4, … seconds, this many times.
    public var retransmissions = 5
    /// Dead-peer detection: an empty INFORMATIONAL after this long without hearing from the peer (nil: off).
    public var dpdInterval: Int? = 30

    public init(localID: IKEIdentity, remoteID: IKEIdentity, psk: SecretBytes, localSelectors: [TrafficSelector],
                remoteSelectors: [TrafficSelector]) {
        self.localID = localID; self.remoteID = remoteID; self.psk = psk
        self.localSelectors = localSelectors; self.remoteSelectors = remoteSelectors
    }
}
