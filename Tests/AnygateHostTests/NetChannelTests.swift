import AnygateHost
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("Net channels")
struct NetChannelTests {
    @Test("capacity rounds up to a power of two; a full ring refuses, and nothing is visible before publish")
    func fullAndPublish() {
        let ch = NetChannel<Int>(capacity: 5)
        #expect(ch.capacity == 8)
        for i in 0..<8 { #expect(ch.push(i)) }
        #expect(!ch.push(8))
        #expect(ch.pop() == nil)
        #expect(ch.count == 0)
        ch.publish()
        #expect(ch.count == 8)
        #expect(ch.freeSlots == 0)
        var out = [Int](repeating: -1, count: 3)
        let n = out.withUnsafeMutableBufferPointer { ch.pop(into: $0) }
        #expect(n == 3 && out == [0, 1, 2])
        #expect(ch.freeSlots == 3)
        #expect(ch.push(8))
        ch.publish()
        var rest: [Int] = []
        while let v = ch.pop() { rest.append(v) }
        #expect(rest == [3, 4, 5, 6, 7, 8])
    }

    @Test("order survives thousands of wrap-arounds with every batch size")
    func wrapAround() {
        let ch = NetChannel<UInt32>(capacity: 16)
        var next: UInt32 = 0, expected: UInt32 = 0
        var out = [UInt32](repeating: 0, count: 16)
        for round in 0..<20_000 {
            let k = 1 + round % 16
            for _ in 0..<k where ch.push(next) { next += 1 }
            ch.publish()
            let n = out.withUnsafeMutableBufferPointer { ch.pop(into: UnsafeMutableBufferPointer(rebasing: $0[0..<(1 + round % 7)])) }
            for v in out[0..<n] {
                #expect(v == expected)
                expected += 1
            }
        }
        while let v = ch.pop() { #expect(v == expected); expected += 1 }
        #expect(expected == next && next > 50_000)
    }

    @Test("elements left in a channel are released with it")
    func releasesLeftovers() {
        final class Token: Sendable {}
        weak var probe: Token?
        do {
            let ch = NetChannel<Token>(capacity: 4)
            let t = Token()
            probe = t
            #expect(ch.push(t))
            ch.publish()
        }
        #expect(probe == nil)
    }

    /// Pushes 0..<total in batches of 1…64, publishing each batch.
    static func produce(_ total: Int, into ch: NetChannel<Int>) {
        var i = 0
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        while i < total {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let batch = 1 + Int(seed >> 58)
            var pushed = 0
            while pushed < batch && i < total && ch.push(i) {
                i += 1
                pushed += 1
            }
            ch.publish()
            if pushed == 0 || seed & 0xFF == 0 { sched_yield() }
        }
    }

    /// One producer thread and one consumer thread; the consumer sleeps on
    /// a doorbell whenever the ring is empty. Everything arrives, in order,
    /// and no sleep ever needs its safety timeout (a lost wake-up would).
    @Test("two threads: nothing lost or reordered, no wake-up lost", arguments: [false, true])
    func twoThreads(consumerSleeps: Bool) throws {
        let total = 2_000_000
        let bell = try Doorbell()
        let ring: @Sendable () -> Void = { bell.ring() }
        let ch = NetChannel<Int>(capacity: 256, wake: consumerSleeps ? ring : nil)
        let producer = try HostThread("test-producer") { Self.produce(total, into: ch) }
        var expected = 0, outOfOrder = 0, sleeps = 0, timeouts = 0
        let started = clock()
        var out = [Int](repeating: 0, count: 64)
        while expected < total {
            let n = out.withUnsafeMutableBufferPointer { ch.pop(into: $0) }
            for v in out[0..<n] {
                if v != expected { outOfOrder += 1 }
                expected = v + 1
            }
            if n == 0 {
                if consumerSleeps {
                    if ch.prepareToSleep() {
                        sleeps += 1
                        var p = pollfd(fd: bell.fd, events: Int16(POLLIN), revents: 0)
                        if poll(&p, 1, 1000) == 0 { timeouts += 1 }
                        ch.awake()
                        bell.answer()
                    }
                } else {
                    sched_yield()
                }
            }
            if (clock() - started) / CLOCKS_PER_SEC > 60 { break }
        }
        producer.join()
        #expect(expected == total)
        #expect(outOfOrder == 0)
        #expect(timeouts == 0)
        #expect(ch.pop() == nil)
        if consumerSleeps { #expect(ch.wakeUps > 0 && sleeps > 0) }
    }

    /// Waits on `bell` for something in `ch` (sleeping only when the
    /// channel agrees); returns false if a sleep ran into its 1 s timeout.
    static func take(_ ch: NetChannel<Int>, _ bell: Doorbell) -> (Int, Bool) {
        var timedOut = false
        while true {
            if let v = ch.pop() { return (v, !timedOut) }
            if ch.prepareToSleep() {
                var p = pollfd(fd: bell.fd, events: Int16(POLLIN), revents: 0)
                if poll(&p, 1, 1000) == 0 { timedOut = true }
                ch.awake()
                bell.answer()
            }
        }
    }

    /// Ping-pong: each side publishes one element and sleeps until the
    /// answer comes, so every exchange races a publish against a sleep. A
    /// lost wake-up leaves one side asleep with an element waiting (seen
    /// as a 1 s timeout).
    @Test("ping-pong between two sleeping threads: every wake-up arrives")
    func pingPong() throws {
        let rounds = 20_000
        let bellA = try Doorbell(), bellB = try Doorbell()
        let ringA: @Sendable () -> Void = { bellA.ring() }
        let ringB: @Sendable () -> Void = { bellB.ring() }
        let toB = NetChannel<Int>(capacity: 2, wake: ringB)
        let toA = NetChannel<Int>(capacity: 2, wake: ringA)
        let echo = try HostThread("test-echo") {
            for _ in 0..<rounds {
                let (v, _) = Self.take(toB, bellB)
                if v < 0 { return }
                _ = toA.push(v + 1)
                toA.publish()
            }
        }
        var lateWakes = 0, wrong = 0
        for i in 0..<rounds {
            _ = toB.push(2 * i)
            toB.publish()
            let (v, onTime) = Self.take(toA, bellA)
            if !onTime { lateWakes += 1 }
            if v != 2 * i + 1 { wrong += 1 }
            if lateWakes > 3 { break }
        }
        if lateWakes > 3 { _ = toB.push(-1); toB.publish(); bellB.ring() }
        echo.join()
        #expect(wrong == 0)
        #expect(lateWakes == 0)
        #expect(toA.wakeUps + toB.wakeUps > 0)
    }
}
