public import AnygateCrypto
internal import Crypto
internal import Foundation

/// IKEv2's pseudo-random functions (RFC 7296 section 2.13, RFC 4868).
public enum IKEPRF: UInt16, Sendable, CaseIterable {
    case hmacSHA256 = 5
    case hmacSHA384 = 6
    case hmacSHA512 = 7

    public var name: String {
        switch self {
        case .hmacSHA256: "prfsha256"
        case .hmacSHA384: "prfsha384"
        case .hmacSHA512: "prfsha512"
        }
    }

    /// Bytes of output, and of the keys it derives for itself (SK_d, SK_pi, SK_pr).
    public var length: Int {
        switch self {
        case .hmacSHA256: 32
        case .hmacSHA384: 48
        case .hmacSHA512: 64
        }
    }

    public func callAsFunction(_ key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        let k = SymmetricKey(data: key)
        switch self {
        case .hmacSHA256: return Array(HMAC<SHA256>.authenticationCode(for: data, using: k))
        case .hmacSHA384: return Array(HMAC<SHA384>.authenticationCode(for: data, using: k))
        case .hmacSHA512: return Array(HMAC<SHA512>.authenticationCode(for: data, using: k))
        }
    }

    /// prf+ (RFC 7296 section 2.13): T1 | T2 | … cut to `count` bytes, where
    /// T1 = prf(K, S | 0x01) and Tn = prf(K, Tn-1 | S | n).
    public func plus(_ key: [UInt8], _ seed: [UInt8], count: Int) -> [UInt8] {
        precondition(count <= 255 * length, "prf+ makes at most 255 blocks")
        var out: [UInt8] = []
        var t: [UInt8] = []
        var n: UInt8 = 1
        while out.count < count {
            t = self(key, t + seed + [n])
            out += t
            n += 1
        }
        return Array(out.prefix(count))
    }
}

/// Diffie-Hellman groups (IANA "Transform Type 4").
public enum DHGroup: UInt16, Sendable, CaseIterable {
    /// NIST P-256 (RFC 5903): public values X | Y, 64 bytes; the shared secret is X.
    case p256 = 19
    /// Curve25519 (RFC 8031): 32-byte public values and secret.
    case curve25519 = 31

    public var name: String {
        switch self {
        case .p256: "ecp256"
        case .curve25519: "curve25519"
        }
    }

    public var publicLength: Int { self == .p256 ? 64 : 32 }
}

/// One side's ephemeral key of an exchange.
public struct DHKeyPair: Sendable {
    public let group: DHGroup
    private let x25519: Curve25519.KeyAgreement.PrivateKey?
    private let p256: P256.KeyAgreement.PrivateKey?

    public init(_ group: DHGroup) {
        self.group = group
        switch group {
        case .curve25519: x25519 = Curve25519.KeyAgreement.PrivateKey(); p256 = nil
        case .p256: p256 = P256.KeyAgreement.PrivateKey(); x25519 = nil
        }
    }

    public var publicValue: [UInt8] {
        switch group {
        case .curve25519: Array(x25519!.publicKey.rawRepresentation)
        case .p256: Array(p256!.publicKey.rawRepresentation)
        }
    }

    /// g^ir from the peer's public value; nil if it is not a valid point.
    public func shared(with peer: [UInt8]) -> SecretBytes? {
        guard peer.count == group.publicLength else { return nil }
        do {
            let secret: SharedSecret
            switch group {
            case .curve25519: secret = try x25519!.sharedSecretFromKeyAgreement(with: Curve25519.KeyAgreement.PublicKey(rawRepresentation: peer))
            case .p256: secret = try p256!.sharedSecretFromKeyAgreement(with: P256.KeyAgreement.PublicKey(rawRepresentation: peer))
            }
            return secret.withUnsafeBytes { SecretBytes(copying: $0) }
        } catch {
            return nil
        }
    }
}

/// The AEAD of an IKE SA's SK payloads (RFC 5282 for AES-GCM, RFC 7634
/// for ChaCha20-Poly1305): key material is the key and a 4-byte salt;
/// each message carries an 8-byte IV.
struct IKEAEAD {
    let algorithm: AEADAlgorithm
    let key: SecretBytes

    /// Seals `plain`; returns IV | ciphertext | ICV.
    func seal(_ plain: [UInt8], aad: [UInt8], iv: UInt64) -> [UInt8] {
        let ivBytes = withUnsafeBytes(of: iv.bigEndian) { Array($0) }
        let (k, salt) = split()
        let nonce = salt + ivBytes
        switch algorithm {
        case .aes128GCM, .aes256GCM:
            let box = try! AES.GCM.seal(plain, using: k, nonce: AES.GCM.Nonce(data: nonce), authenticating: aad)
            return ivBytes + Array(box.ciphertext) + Array(box.tag)
        case .chacha20Poly1305:
            let box = try! ChaChaPoly.seal(plain, using: k, nonce: ChaChaPoly.Nonce(data: nonce), authenticating: aad)
            return ivBytes + Array(box.ciphertext) + Array(box.tag)
        }
    }

    /// Opens IV | ciphertext | ICV; nil when it is not authentic.
    func open(_ sealed: ArraySlice<UInt8>, aad: [UInt8]) -> [UInt8]? {
        guard sealed.count >= 8 + 16 else { return nil }
        let s = Array(sealed)
        let (k, salt) = split()
        let nonce = salt + s[0..<8]
        let ciphertext = s[8..<(s.count - 16)], tag = s[(s.count - 16)...]
        do {
            switch algorithm {
            case .aes128GCM, .aes256GCM:
                let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: nonce), ciphertext: ciphertext, tag: tag)
                return Array(try AES.GCM.open(box, using: k, authenticating: aad))
            case .chacha20Poly1305:
                let box = try ChaChaPoly.SealedBox(nonce: ChaChaPoly.Nonce(data: nonce), ciphertext: ciphertext, tag: tag)
                return Array(try ChaChaPoly.open(box, using: k, authenticating: aad))
            }
        } catch {
            return nil
        }
    }

    private func split() -> (SymmetricKey, [UInt8]) {
        key.withUnsafeBytes { b in
            (SymmetricKey(data: UnsafeRawBufferPointer(rebasing: b[..<algorithm.keyLength])), Array(b[algorithm.keyLength...]))
        }
    }
}
