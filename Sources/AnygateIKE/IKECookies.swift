internal import Crypto

/// Stateless cookies for IKE_SA_INIT (RFC 7296 section 2.6): while
/// requests pour in faster than `threshold` a second, a request without a
/// valid cookie gets only a COOKIE notify back — no state, no
/// Diffie-Hellman — and a real initiator, which receives it, asks again
/// with the cookie. A spoofed flood never sees its cookies, so it never
/// costs a key exchange. Cookie = version | HMAC-SHA-256(secret, Ni | IPi | SPIi),
/// the secret drawn at start.
public struct IKECookieJar {
    public let threshold: Int
    let secret: SymmetricKey
    static let version: UInt8 = 1
    var windowStart: Int64 = 0
    var inWindow = 0
    public private(set) var cookiesSent: UInt64 = 0

    public init(threshold: Int = 10) {
        self.threshold = threshold
        secret = SymmetricKey(size: .bits256)
    }

    /// Whether cookies are required now; counts this request.
    public mutating func underPressure(now: Int64) -> Bool {
        if now - windowStart >= 1_000_000_000 {
            windowStart = now
            inWindow = 0
        }
        inWindow += 1
        return inWindow > threshold
    }

    func cookie(nonce: [UInt8], address: [UInt8], spi: UInt64) -> [UInt8] {
        [IKECookieJar.version] + Array(HMAC<SHA256>.authenticationCode(for: nonce + address + spiBytes64(spi), using: secret))
    }

    /// For an IKE_SA_INIT request from `address`: nil when it may go on (no
    /// pressure, or a valid cookie), else the COOKIE response to send.
    public mutating func check(_ request: [UInt8], from address: [UInt8], now: Int64) -> [UInt8]? {
        guard underPressure(now: now) else { return nil }
        guard let h = try? IKEHeader(parsing: request),
              let (payloads, _) = try? IKEPayload.parse(request, from: IKEHeader.length, first: h.nextPayload),
              case .nonce(let ni)? = payloads.first(where: { $0.type == IKEPayloadType.nonce }) else { return nil }
        let expected = cookie(nonce: ni, address: address, spi: h.initiatorSPI)
        // The cookie must come first (RFC 7296 section 2.6).
        if case .notify(let n)? = payloads.first, n.type == IKENotify.cookie, n.data == expected { return nil }
        cookiesSent += 1
        let body = IKEPayload.emit([.notify(IKENotify(IKENotify.cookie, data: expected))])
        var m: [UInt8] = []
        IKEHeader(initiatorSPI: h.initiatorSPI, responderSPI: 0, nextPayload: IKEPayloadType.notify, exchange: .saInit,
                  flags: IKEHeader.flagResponse, messageID: 0, length: UInt32(IKEHeader.length + body.count)).emit(into: &m)
        return m + body
    }
}
