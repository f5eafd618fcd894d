internal import CCrypto

/// The AEAD transforms ESP and IKE use: AES-GCM with a 16-byte ICV
/// (RFC 4106, RFC 5282) and ChaCha20-Poly1305 (RFC 7634). Each takes
/// key material of the key followed by a 4-byte salt; the nonce of a
/// packet is the salt and an 8-byte IV.
public enum AEADAlgorithm: Sendable, Hashable, CaseIterable {
    case aes128GCM
    case aes256GCM
    case chacha20Poly1305

    /// Bytes of the cipher key.
    public var keyLength: Int {
        switch self {
        case .aes128GCM: 16
        case .aes256GCM, .chacha20Poly1305: 32
        }
    }

    /// Bytes of salt after the key in the key material (RFC 4106 §8.1, RFC 7634 §2).
    public static let saltLength = 4
    /// Bytes of the explicit IV each packet carries.
    public static let ivLength = 8
    /// Bytes of the integrity check value (the tag).
    public static let icvLength = 16

    /// Bytes of key material an SA of this algorithm takes (key and salt).
    public var keyMaterialLength: Int { keyLength + AEADAlgorithm.saltLength }

    /// The IKEv2 transform ID (RFC 7296 §3.3.2, IANA "Transform Type 1"):
    /// ENCR_AES_GCM_16 is 20 with a key-length attribute, ENCR_CHACHA20_POLY1305 28.
    public var ikeTransformID: UInt16 {
        switch self {
        case .aes128GCM, .aes256GCM: 20
        case .chacha20Poly1305: 28
        }
    }

    /// The name proposals use (strongSwan's spelling).
    public var name: String {
        switch self {
        case .aes128GCM: "aes128gcm16"
        case .aes256GCM: "aes256gcm16"
        case .chacha20Poly1305: "chacha20poly1305"
        }
    }

    public init?(name: String) {
        guard let a = AEADAlgorithm.allCases.first(where: { $0.name == name }) else { return nil }
        self = a
    }

    fileprivate var cipher: OpaquePointer? {
        switch self {
        case .aes128GCM: EVP_aes_128_gcm()
        case .aes256GCM: EVP_aes_256_gcm()
        case .chacha20Poly1305: EVP_chacha20_poly1305()
        }
    }
}

/// Why a cipher could not be set up.
public enum CryptoError: Error, Equatable, CustomStringConvertible {
    case keyMaterialLength(expected: Int, got: Int)
    case library(String)

    public var description: String {
        switch self {
        case .keyMaterialLength(let e, let g): "key material of \(g) bytes where \(e) are needed"
        case .library(let what): "libcrypto: \(what) failed"
        }
    }
}

/// One direction of an AEAD key: a libcrypto cipher context keyed once,
/// then used for packet after packet in place, each with its own IV. No
/// allocation per packet. A value type over a context the owner frees
/// with `destroy()` (which also wipes the key schedule); one thread uses
/// it at a time, like the stack replica that owns the SA.
public struct AEADCipher {
    public let algorithm: AEADAlgorithm
    public let sealing: Bool
    let context: OpaquePointer
    /// The salt as it goes into the first four bytes of the nonce.
    let salt: UInt32

    /// Keys a cipher for sealing (`sealing`) or opening with `keyMaterial`:
    /// the key followed by the 4-byte salt.
    public init(_ algorithm: AEADAlgorithm, keyMaterial: UnsafeRawBufferPointer, sealing: Bool) throws(CryptoError) {
        guard keyMaterial.count == algorithm.keyMaterialLength else {
            throw .keyMaterialLength(expected: algorithm.keyMaterialLength, got: keyMaterial.count)
        }
        guard let ctx = EVP_CIPHER_CTX_new() else { throw .library("EVP_CIPHER_CTX_new") }
        let key = keyMaterial.baseAddress!.assumingMemoryBound(to: UInt8.self)
        guard EVP_CipherInit_ex(ctx, algorithm.cipher, nil, key, nil, sealing ? 1 : 0) == 1 else {
            EVP_CIPHER_CTX_free(ctx)
            throw .library("EVP_CipherInit_ex")
        }
        self.algorithm = algorithm
        self.sealing = sealing
        context = ctx
        salt = keyMaterial.loadUnaligned(fromByteOffset: algorithm.keyLength, as: UInt32.self)
    }

    /// Frees the context; libcrypto wipes the key schedule as it does.
    public func destroy() { EVP_CIPHER_CTX_free(context) }

    @inline(__always)
    private func start(iv: UInt64, aad: UnsafeRawBufferPointer) -> Bool {
        // The nonce: salt, then the IV as it travels (big-endian).
        var nonce = (salt, UInt32(truncatingIfNeeded: iv >> 32).bigEndian, UInt32(truncatingIfNeeded: iv).bigEndian)
        let ok = withUnsafeBytes(of: &nonce) { n in
            EVP_CipherInit_ex(context, nil, nil, nil, n.baseAddress!.assumingMemoryBound(to: UInt8.self), -1) == 1
        }
        guard ok else { return false }
        var written: Int32 = 0
        return aad.isEmpty
            || EVP_CipherUpdate(context, nil, &written, aad.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(aad.count)) == 1
    }

    @inline(__always)
    private func crypt(_ text: UnsafeMutableRawBufferPointer) -> Bool {
        guard !text.isEmpty else { return true }
        var written: Int32 = 0
        let p = text.baseAddress!.assumingMemoryBound(to: UInt8.self)
        return EVP_CipherUpdate(context, p, &written, p, Int32(text.count)) == 1 && Int(written) == text.count
    }

    /// Encrypts `text` in place under the nonce of `iv`, authenticating
    /// `aad` as well, and writes the 16-byte ICV to `icv`. False only if
    /// libcrypto fails.
    public func seal(iv: UInt64, aad: UnsafeRawBufferPointer, text: UnsafeMutableRawBufferPointer,
                     icv: UnsafeMutableRawPointer) -> Bool {
        guard start(iv: iv, aad: aad), crypt(text) else { return false }
        var written: Int32 = 0
        var scratch: UInt8 = 0
        guard EVP_CipherFinal_ex(context, &scratch, &written) == 1 else { return false }
        return EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_AEAD_GET_TAG, Int32(AEADAlgorithm.icvLength), icv) == 1
    }

    /// Decrypts `text` in place and checks the ICV over it and `aad`.
    /// False when the packet is not authentic (its bytes are then garbage).
    public func open(iv: UInt64, aad: UnsafeRawBufferPointer, text: UnsafeMutableRawBufferPointer,
                     icv: UnsafeRawPointer) -> Bool {
        guard start(iv: iv, aad: aad) else { return false }
        guard EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_AEAD_SET_TAG, Int32(AEADAlgorithm.icvLength), UnsafeMutableRawPointer(mutating: icv)) == 1,
              crypt(text) else { return false }
        var written: Int32 = 0
        var scratch: UInt8 = 0
        return EVP_CipherFinal_ex(context, &scratch, &written) == 1
    }
}

/// Overwrites secret bytes in a way the compiler may not drop.
public func wipe(_ secret: UnsafeMutableRawBufferPointer) {
    guard let p = secret.baseAddress, !secret.isEmpty else { return }
    OPENSSL_cleanse(p, secret.count)
}

/// Compares secrets in time independent of where they differ.
public func constantTimeEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    guard let pa = a.baseAddress, let pb = b.baseAddress, !a.isEmpty else { return true }
    return CRYPTO_memcmp(pa, pb, a.count) == 0
}
