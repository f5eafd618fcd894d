@testable import AnygateDaemon
import AnygateIKE
import AnygateStack
import AnygateWire
import Foundation
import Logging

enum Harnesses {
    nonisolated(unsafe) static let all: [Harness] = [
        Harness(name: "ethernet", run: WireHarnesses.ethernet, seeds: {
            [Seeds.ethernet(Seeds.lanMAC, Seeds.peer, .ipv4, Seeds.ipv4(IPv4Address(10, 1, 0, 9), IPv4Address(10, 1, 0, 1))),
             StackHarness.arpReply(from: IPv4Address(10, 1, 0, 9), mac: Seeds.peer, to: IPv4Address(10, 1, 0, 1), Seeds.lanMAC)]
        }),
        Harness(name: "ipv4", run: WireHarnesses.ipv4, seeds: {
            [Seeds.ipv4(IPv4Address(10, 1, 0, 9), IPv4Address(10, 1, 0, 1)),
             Seeds.ipv4(IPv4Address(10, 1, 0, 9), IPv4Address(10, 1, 0, 1), udp: (4000, 53))]
        }),
        Harness(name: "ipv6", run: WireHarnesses.ipv6, seeds: {
            let echo = Seeds.ipv6Echo(IPv6Address("2001:db8:1::9")!, IPv6Address("2001:db8:1::1")!)
            // The same behind a hop-by-hop header (padding) and a fragment header.
            var withHeaders = echo
            withHeaders[6] = 0
            withHeaders.insert(contentsOf: [44, 0, 0, 0, 0, 0, 0, 7] as [UInt8], at: 40)
            withHeaders.insert(contentsOf: [58, 0, 1, 4, 0, 0, 0, 0] as [UInt8], at: 40)
            withHeaders[40 + 0] = 44
            withHeaders[5] = UInt8(withHeaders.count - 40)
            return [echo, withHeaders]
        }),
        Harness(name: "nd", run: WireHarnesses.nd, seeds: {
            // A neighbour solicitation with a source link-layer address option, and a router advertisement with a prefix.
            let ns: [UInt8] = [135, 0, 0, 0, 0, 0, 0, 0] + Array(repeating: 0, count: 15) + [1] + [1, 1, 2, 0, 0, 0, 9, 9]
            let ra: [UInt8] = [134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]
                + [3, 4, 64, 0xC0, 0, 0, 0x0E, 0x10, 0, 0, 0x0E, 0x10, 0, 0, 0, 0] + [0x20, 0x01, 0x0D, 0xB8] + Array(repeating: 0, count: 12)
                + [5, 1, 0, 0, 0, 0, 0x05, 0xDC]
            return [ns, ra]
        }),
        Harness(name: "gre", run: WireHarnesses.gre, seeds: { [Seeds.gre, [0, 0, 0x08, 0x00] + Seeds.ipv4(IPv4Address(1, 1, 1, 1), IPv4Address(2, 2, 2, 2))] }),
        Harness(name: "esp", run: WireHarnesses.esp, seeds: { [[0, 0, 0x10, 0, 0, 0, 0, 1] + Array(repeating: 0xAB, count: 40), [0xFF], [0, 0, 0, 0, 1, 2, 3]] }),
        Harness(name: "tcp", run: WireHarnesses.tcp, seeds: { [Seeds.tcpSYN] }),
        Harness(name: "bpf", run: WireHarnesses.bpf, seeds: {
            // tcpdump "icmp" on Ethernet, then an echo request frame.
            let program: [(UInt16, UInt8, UInt8, UInt32)] = [(0x28, 0, 0, 12), (0x15, 0, 3, 0x800), (0x30, 0, 0, 23), (0x15, 0, 1, 1), (6, 0, 0, 262_144), (6, 0, 0, 0)]
            var b: [UInt8] = [UInt8(program.count)]
            for (c, jt, jf, k) in program {
                b += [UInt8(c & 0xFF), UInt8(c >> 8), jt, jf, UInt8(k & 0xFF), UInt8(k >> 8 & 0xFF), UInt8(k >> 16 & 0xFF), UInt8(k >> 24)]
            }
            return [b + Seeds.ethernet(Seeds.lanMAC, Seeds.peer, .ipv4, Seeds.ipv4(IPv4Address(10, 1, 0, 9), IPv4Address(10, 1, 0, 1)))]
        }),
        Harness(name: "ike", run: ike, seeds: {
            let payloads = IKEPayload.emit([
                .sa([IKEProposal(number: 1, protocolID: 1, spi: [], transforms: [IKETransform(type: 1, id: 20, keyLength: 128),
                                                                                   IKETransform(type: 2, id: 5), IKETransform(type: 4, id: 31)])]),
                .ke(group: 31, data: Array(repeating: 9, count: 32)), .nonce(Array(repeating: 7, count: 32)),
                .notify(IKENotify(16388, data: Array(repeating: 1, count: 20))),
            ])
            var h: [UInt8] = []
            IKEHeader(initiatorSPI: 0x0102_0304_0506_0708, responderSPI: 0, nextPayload: IKEPayloadType.sa, exchange: .saInit,
                      flags: IKEHeader.flagInitiator, messageID: 0, length: UInt32(IKEHeader.length + payloads.count)).emit(into: &h)
            return [h + payloads]
        }),
        Harness(name: "stack", run: { StackHarness.shared.run($0) }, seeds: Seeds.stack),
        Harness(name: "config", run: config, seeds: {
            let files = (FileManager.default.enumerator(atPath: "etc")?.allObjects as? [String] ?? []).filter { $0.hasSuffix(".yaml") }
            return files.sorted().compactMap { FileManager.default.contents(atPath: "etc/\($0)").map { Array($0) } }
        }),
        Harness(name: "control", run: control, seeds: {
            [#"{"verb":"show","what":"interfaces"}"#, #"{"verb":"route-add","prefix":"10.9.0.0/16","dev":"lan0"}"#,
             #"{"verb":"trace-start","count":3,"filter":"icmp and host 10.2.0.2"}"#, #"{"verb":"capture-start","dev":"lan0","filter":"udp port 53"}"#,
             #"{"verb":"explain-route","destination":"10.2.0.9","source":"10.1.0.2","sourcePort":4000,"destinationPort":53}"#,
             #"{"verb":"address-preference","dev":"lan0","address":"10.1.0.1","preference":3}"#].map { Array(($0 + "\n").utf8) }
        }),
    ]

    /// An IKEv2 message as it comes off UDP 500: header, then the payload chain.
    static func ike(_ input: [UInt8]) {
        guard let h = try? IKEHeader(parsing: input) else { return }
        _ = try? IKEPayload.parse(input, from: IKEHeader.length, first: h.nextPayload)
    }

    /// The config reader over any text.
    static func config(_ input: [UInt8]) {
        _ = try? ConfigReader(file: "fuzz.yaml").parse(String(decoding: input, as: UTF8.self))
    }

    /// The control protocol, answered by a daemon (no interfaces, its socket in a temporary directory).
    nonisolated(unsafe) static var daemon: Daemon? = nil
    static func control(_ input: [UInt8]) {
        if daemon == nil {
            var c = DaemonConfig()
            let dir = NSTemporaryDirectory() + "anygate-fuzz-\(getpid())"
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            c.controlSocket = dir + "/control.sock"
            daemon = try! Daemon(config: c, configPath: dir + "/missing.yaml", logger: Logger(label: "fuzz"))
        }
        let out = daemon!.handleControl(input)
        precondition(out.last == 0x0A, "every request gets one line")
    }
}
