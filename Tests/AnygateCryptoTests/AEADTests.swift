import AnygateCrypto
import Testing

func hex(_ s: String) -> [UInt8] {
    let digits = Array(s.filter { !$0.isWhitespace })
    return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
}

/// Seals `plain` in a copy and returns ciphertext followed by the ICV.
func seal(_ a: AEADAlgorithm, keyMaterial: [UInt8], iv: UInt64, aad: [UInt8], plain: [UInt8]) throws -> [UInt8] {
    let c = try keyMaterial.withUnsafeBytes { try AEADCipher(a, keyMaterial: $0, sealing: true) }
    defer { c.destroy() }
    var out = plain + [UInt8](repeating: 0, count: AEADAlgorithm.icvLength)
    let ok = out.withUnsafeMutableBytes { b in
        aad.withUnsafeBytes { aad in
            c.seal(iv: iv, aad: aad, text: UnsafeMutableRawBufferPointer(rebasing: b[..<plain.count]), icv: b.baseAddress! + plain.count)
        }
    }
    #expect(ok)
    return out
}

/// Opens ciphertext followed by the ICV; nil when it is not authentic.
func open(_ a: AEADAlgorithm, keyMaterial: [UInt8], iv: UInt64, aad: [UInt8], sealed: [UInt8]) throws -> [UInt8]? {
    let c = try keyMaterial.withUnsafeBytes { try AEADCipher(a, keyMaterial: $0, sealing: false) }
    defer { c.destroy() }
    var text = Array(sealed.dropLast(AEADAlgorithm.icvLength))
    let icv = Array(sealed.suffix(AEADAlgorithm.icvLength))
    let ok = text.withUnsafeMutableBytes { t in
        aad.withUnsafeBytes { aad in icv.withUnsafeBytes { c.open(iv: iv, aad: aad, text: t, icv: $0.baseAddress!) } }
    }
    return ok ? text : nil
}

@Suite struct AEADTests {
    // The GCM specification's test cases 4 (AES-128) and 16 (AES-256): a
    // 12-byte nonce cafebabe facedbad decaf888, split here as ESP does into
    // the salt (last four bytes of the key material) and the 8-byte IV.
    static let gcmPlain = hex("""
        d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
        1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39
        """)
    static let gcmAAD = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2")

    @Test func aes128GCMKnownAnswer() throws {
        let km = hex("feffe9928665731c6d6a8f9467308308") + hex("cafebabe")
        let sealed = try seal(.aes128GCM, keyMaterial: km, iv: 0xFACE_DBAD_DECA_F888, aad: Self.gcmAAD, plain: Self.gcmPlain)
        #expect(sealed == hex("""
            42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e
            21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091
            5bc94fbc3221a5db94fae95ae7121a47
            """))
        #expect(try open(.aes128GCM, keyMaterial: km, iv: 0xFACE_DBAD_DECA_F888, aad: Self.gcmAAD, sealed: sealed) == Self.gcmPlain)
    }

    @Test func aes256GCMKnownAnswer() throws {
        let key = hex("feffe9928665731c6d6a8f9467308308")
        let km = key + key + hex("cafebabe")
        let sealed = try seal(.aes256GCM, keyMaterial: km, iv: 0xFACE_DBAD_DECA_F888, aad: Self.gcmAAD, plain: Self.gcmPlain)
        #expect(sealed == hex("""
            522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
            8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662
            76fc6ece0f4e1768cddf8853bb2d551b
            """))
    }

    // RFC 8439 section 2.8.2: nonce 07000000 4041424344454647.
    @Test func chacha20Poly1305KnownAnswer() throws {
        let km = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f") + hex("07000000")
        let plain = Array("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".utf8)
        let aad = hex("50515253c0c1c2c3c4c5c6c7")
        let sealed = try seal(.chacha20Poly1305, keyMaterial: km, iv: 0x4041_4243_4445_4647, aad: aad, plain: plain)
        #expect(sealed == hex("""
            d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6
            3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36
            92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc
            3ff4def08e4b7a9de576d26586cec64b6116
            1ae10b594f09e26a7e902ecbd0600691
            """))
        #expect(try open(.chacha20Poly1305, keyMaterial: km, iv: 0x4041_4243_4445_4647, aad: aad, sealed: sealed) == plain)
    }

    /// A flipped bit anywhere — text, ICV, AAD — or another IV fails to open.
    @Test(arguments: AEADAlgorithm.allCases)
    func forgeriesFail(_ a: AEADAlgorithm) throws {
        let km = (0..<a.keyMaterialLength).map { UInt8($0 &* 7 &+ 1) }
        let aad: [UInt8] = [1, 2, 3, 4, 0, 0, 0, 9]
        let plain = (0..<100).map { UInt8($0) }
        let sealed = try seal(a, keyMaterial: km, iv: 9, aad: aad, plain: plain)
        #expect(try open(a, keyMaterial: km, iv: 9, aad: aad, sealed: sealed) == plain)
        for i in [0, 50, 99, 100, 115] {
            var bad = sealed
            bad[i] ^= 0x10
            #expect(try open(a, keyMaterial: km, iv: 9, aad: aad, sealed: bad) == nil, "byte \(i) flipped")
        }
        var badAAD = aad
        badAAD[7] = 10
        #expect(try open(a, keyMaterial: km, iv: 9, aad: badAAD, sealed: sealed) == nil)
        #expect(try open(a, keyMaterial: km, iv: 10, aad: aad, sealed: sealed) == nil)
        // One context, many packets: each with its own IV opens (the context is reused).
        let c = try km.withUnsafeBytes { try AEADCipher(a, keyMaterial: $0, sealing: false) }
        defer { c.destroy() }
        for iv in [UInt64(9), 9, 9] {
            var text = Array(sealed.dropLast(16))
            let icv = Array(sealed.suffix(16))
            let ok = text.withUnsafeMutableBytes { t in aad.withUnsafeBytes { aad in icv.withUnsafeBytes { c.open(iv: iv, aad: aad, text: t, icv: $0.baseAddress!) } } }
            #expect(ok && text == plain)
        }
    }

    @Test func wrongKeyMaterialLengthIsRefused() {
        #expect(throws: CryptoError.keyMaterialLength(expected: 20, got: 16)) {
            try [UInt8](repeating: 0, count: 16).withUnsafeBytes { try AEADCipher(.aes128GCM, keyMaterial: $0, sealing: true) }
        }
    }

    @Test func wipeAndCompare() {
        var secret: [UInt8] = [1, 2, 3, 4]
        secret.withUnsafeMutableBytes { wipe($0) }
        #expect(secret == [0, 0, 0, 0])
        #expect([UInt8]([1, 2]).withUnsafeBytes { a in [UInt8]([1, 2]).withUnsafeBytes { constantTimeEqual(a, $0) } })
        #expect(![UInt8]([1, 2]).withUnsafeBytes { a in [UInt8]([1, 3]).withUnsafeBytes { constantTimeEqual(a, $0) } })
    }
}
