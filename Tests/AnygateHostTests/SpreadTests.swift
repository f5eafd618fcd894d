import AnygateHost
import AnygateStack
import AnygateWire
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// How the kernel spreads one port's traffic over the sockets or queues of
/// several workers: a packet socket per worker in one PACKET_FANOUT group
/// (hash mode), a queue per worker on a multi-queue TAP. 64 UDP flows, 50
/// datagrams each, sent by the kernel in a namespace of the test's own;
/// every frame must reach exactly one worker's socket or queue, every flow
/// only one of them, and each of two at least 30 % (the flows hash
/// independently: the chance of a 30/70 split or worse over 64 flows is
/// below one in a thousand).
@Suite("Spreading a port over workers", .serialized,
       .enabled(if: getuid() == 0 && FileManager.default.fileExists(atPath: "/dev/net/tun"), "needs root and /dev/net/tun"))
struct SpreadTests {
    static let flows = 64, perFlow = 50

    static func sh(_ command: String) -> Int32 {
        guard let p = start(command) else { return 127 }
        p.waitUntilExit()
        return p.terminationStatus
    }

    static func start(_ command: String) -> Process? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "timeout -k 5 60 /bin/sh -c '\(command)'"]
        do { try p.run() } catch { return nil }
        return p
    }

    /// Sends the flows from namespace `ns` to `destination` (source ports
    /// 20000…) while both ports are read; returns what each port read.
    static func exchange(in ns: String, to destination: String, _ a: any AnygateHost.Port, _ b: any AnygateHost.Port,
                         pool: PacketPool) throws -> ([UInt16], [UInt16]) {
        let sender = try #require(send(in: ns, to: destination))
        var fromA: [UInt16] = [], fromB: [UInt16] = []
        let deadline = Date().addingTimeInterval(10)
        while fromA.count + fromB.count < flows * perFlow && Date() < deadline {
            fromA += drain(a, pool: pool)
            fromB += drain(b, pool: pool)
            if !sender.isRunning { usleep(1000) }
        }
        sender.waitUntilExit()
        #expect(sender.terminationStatus == 0)
        return (fromA, fromB)
    }

    /// The TAP's tx_dropped as its namespace sees it (frames its queues refused).
    static func txDropped(_ dev: String, in ns: String) -> Int {
        let path = "/tmp/\(ns).dropped"
        defer { unlink(path) }
        guard sh("ip netns exec \(ns) cat /sys/class/net/\(dev)/statistics/tx_dropped > \(path)") == 0,
              let text = try? String(contentsOfFile: path, encoding: .utf8) else { return -1 }
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    static func send(in ns: String, to destination: String) -> Process? {
        start("ip netns exec \(ns) python3 -c \"import socket, time\nfor f in range(\(flows)):\n  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n  s.bind((\\\"\\\", 20000 + f))\n  for i in range(\(perFlow)): s.sendto(b\\\"x\\\" * 32, (\\\"\(destination)\\\", 9))\n  s.close()\n  time.sleep(0.002)\"")
    }

    /// Reads every frame waiting on `port`; returns the UDP source ports of
    /// the test's datagrams among them (20000…).
    static func drain(_ port: any AnygateHost.Port, pool: PacketPool) -> [UInt16] {
        let batch = UnsafeMutableBufferPointer<PacketHandle>.allocate(capacity: 64)
        defer { batch.deallocate() }
        var ports: [UInt16] = []
        for _ in 0..<16 {
            guard case .frames(let n) = port.receive(into: batch, pool: pool), n > 0 else { break }
            for p in batch[0..<n] {
                let b = pool.bytes(p)
                if b.count >= 42, b[12] == 0x08, b[13] == 0x00, b[23] == 17 {
                    let ihl = Int(b[14] & 0x0F) * 4
                    let sport = UInt16(b[14 + ihl]) << 8 | UInt16(b[15 + ihl])
                    if sport >= 20000 && sport < 20000 + UInt16(flows) { ports.append(sport) }
                }
                pool.free(p)
            }
        }
        return ports
    }

    /// `dropped`: what the kernel reports it dropped on the way to the
    /// sockets or queues (a reader slowed down, e.g. by ThreadSanitizer).
    static func check(_ a: [UInt16], _ b: [UInt16], dropped: Int) {
        #expect(a.count + b.count + dropped == flows * perFlow)
        #expect(dropped <= flows * perFlow / 20)
        #expect(Set(a).isDisjoint(with: Set(b)), "a flow must stay on one worker")
        let total = Double(a.count + b.count)
        #expect(Double(a.count) >= 0.3 * total && Double(b.count) >= 0.3 * total, "shares \(a.count) / \(b.count)")
    }

    @Test("packet sockets in a fanout group: each flow to one socket, both sockets busy")
    func packetFanout() throws {
        let ns = "agsp\(getpid() % 100_000)f"
        defer { _ = Self.sh("ip netns del \(ns) 2>/dev/null") }
        #expect(Self.sh("ip netns add \(ns) && ip -n \(ns) link add \(ns)a type veth peer name \(ns)b && "
                        + "ip -n \(ns) link set \(ns)a up && ip -n \(ns) link set \(ns)b up && "
                        + "ip -n \(ns) addr add 10.77.0.2/24 dev \(ns)b && "
                        + "ip -n \(ns) neigh add 10.77.0.1 lladdr 02:00:00:77:00:01 dev \(ns)b") == 0)
        let pool = PacketPool(capacity: 8192, dataSize: 2048, superFrames: 160)
        // Open both sockets from a thread inside the namespace (sockets stay in the namespace they were made in).
        let opened = OpenedPorts()
        let t = try HostThread("spread-open") {
            guard (try? HostThread.enterNetworkNamespace("/var/run/netns/\(ns)")) != nil else { return }
            let mac: [UInt8] = [2, 0, 0, 0x77, 0, 1]
            opened.ports = (0..<2).compactMap { _ in try? PacketPort(interface: "\(ns)a", mac: mac, fanoutGroup: 0x4147) }
        }
        t.join()
        let ports = opened.ports
        try #require(ports.count == 2)
        defer { for p in ports { p.close(pool: pool) } }
        let (a, b) = try Self.exchange(in: ns, to: "10.77.0.1", ports[0], ports[1], pool: pool)
        Self.check(a, b, dropped: Int(ports[0].kernelDrops + ports[1].kernelDrops))
    }

    @Test("a multi-queue TAP: each flow to one queue, both queues busy")
    func tapQueues() throws {
        let ns = "agsp\(getpid() % 100_000)t"
        let tap = "\(ns)q"
        defer { _ = Self.sh("ip netns del \(ns) 2>/dev/null; ip link del \(tap) 2>/dev/null") }
        #expect(Self.sh("ip netns add \(ns)") == 0)
        let pool = PacketPool(capacity: 8192, dataSize: 2048, superFrames: 160)
        let q0 = try TapPort(name: tap, mtu: 1500, multiQueue: true)
        let q1 = try TapPort(name: tap, mtu: 1500, multiQueue: true)
        defer { q0.close(pool: pool); q1.close(pool: pool) }
        #expect(Self.sh("ip link set \(tap) netns \(ns) && ip -n \(ns) link set \(tap) up && "
                        + "ip -n \(ns) addr add 10.78.0.2/24 dev \(tap) && "
                        + "ip -n \(ns) neigh add 10.78.0.1 lladdr 02:00:00:78:00:01 dev \(tap)") == 0)
        _ = Self.drain(q0, pool: pool)
        _ = Self.drain(q1, pool: pool)
        let (a, b) = try Self.exchange(in: ns, to: "10.78.0.1", q0, q1, pool: pool)
        Self.check(a, b, dropped: Self.txDropped(tap, in: ns))
    }
}

final class OpenedPorts: @unchecked Sendable { var ports: [PacketPort] = [] }
