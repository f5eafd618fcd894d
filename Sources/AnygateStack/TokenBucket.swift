/// A token bucket: `rate` tokens a second, at most `burst` held; a taker
/// either gets one or is told no. ICMP errors (RFC 1812 4.3.2.8, RFC 4443
/// section 2.4) and what is punted to host twins are limited with it.
struct TokenBucket {
    let rate: Int64
    let burst: Int64
    private var tokens: Int64
    private var lastRefill: Int64

    /// A full bucket at `now`.
    init(rate: Int, burst: Int, now: Int64) {
        self.rate = Int64(max(0, rate))
        self.burst = Int64(max(1, burst))
        tokens = self.burst
        lastRefill = now
    }

    /// Takes a token if one is there (refilling for the time since the last
    /// refill, in whole tokens); false when empty or the rate is 0.
    mutating func take(now: Int64) -> Bool {
        guard rate > 0 else { return false }
        let perToken = max(1, 1_000_000_000 / rate)
        let earned = (now - lastRefill) / perToken
        if earned > 0 {
            tokens = min(burst, tokens + earned)
            lastRefill += earned * perToken
        }
        if tokens >= burst { lastRefill = now }
        guard tokens > 0 else { return false }
        tokens -= 1
        return true
    }
}
