/// The longest chain of a hash table whose `count` buckets hold the first
/// entry of a chain linked through `next` by 32-bit indices (`UInt32.max`
/// ends a chain). Tests use it to show keys stay spread.
func longestHashChain(buckets: UnsafeMutablePointer<UInt32>, count: Int, next: (UInt32) -> UInt32) -> Int {
    var longest = 0
    for b in 0..<count {
        var n = 0, i = buckets[b]
        while i != .max {
            n += 1
            i = next(i)
        }
        longest = max(longest, n)
    }
    return longest
}
