import AnygateDaemon
import AnygateIKE
import AnygateStack
import AnygateWire
import Foundation
import Testing

@Suite("Config: IPsec (protected tunnels and policy-based links)")
struct IPsecConfigTests {
    let reader = ConfigReader(file: "test.yaml")

    /// A key file of `mode` in a private temporary directory.
    func pskFile(mode: mode_t) throws -> (path: String, cleanup: () -> Void) {
        let dir = NSTemporaryDirectory() + "anygate-psk-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        let path = dir + "/key"
        try "a-key\n".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, mode)
        return (path, { try? FileManager.default.removeItem(atPath: dir) })
    }

    func config(_ psk: String, extra: String = "") -> String {
        """
        interfaces:
          - name: wan0
            attach: {packet: eth1}
            addresses: [192.0.2.1/24]
        ipsec:
          - name: site2
            local: 192.0.2.1
            remote: 198.51.100.7
            local-id: gw1.example
            remote-id: 198.51.100.7
            psk-file: \(psk)
            local-subnets: [10.1.0.0/16, 2001:db8:1::/48]
            remote-subnets: [10.2.0.0/16]
        \(extra)
        tunnels:
          - name: gre0
            local: 192.0.2.1
            remote: 198.51.100.9
            protection:
              local-id: gw1.example
              remote-id: gw9.example
              psk-file: \(psk)
              encapsulation: esp
              ike-proposals: [aes256gcm16-prfsha384-ecp256]
              esp-proposals: [aes256gcm16-esn]
              start: respond
              dpd: off

        """
    }

    @Test("both forms read into tunnels with IKE settings and safe defaults")
    func valid() throws {
        let (psk, cleanup) = try pskFile(mode: 0o600)
        defer { cleanup() }
        let c = try reader.parse(config(psk))
        let link = try #require(c.tunnels.first { $0.name == "site2" })
        #expect(link.tunnel.encapsulation == .ipsec)
        #expect(link.tunnel.protection?.encapsulation == .natTraversal)
        #expect(link.tunnel.protection?.localSubnets == [IPPrefix("10.1.0.0/16")!, IPPrefix("2001:db8:1::/48")!])
        #expect(link.ike?.ikeProposals == IKESuite.defaults && link.ike?.start == .initiate && link.ike?.dpd == 30)
        let gre = try #require(c.tunnels.first { $0.name == "gre0" })
        #expect(gre.tunnel.encapsulation == .gre && gre.tunnel.protection?.encapsulation == .esp)
        #expect(gre.ike?.ikeProposals == [IKESuite(encryption: .aes256GCM, prf: .hmacSHA384, group: .p256)])
        #expect(gre.ike?.espProposals == [ESPSuite(encryption: .aes256GCM, extendedSequenceNumbers: true)])
        #expect(gre.ike?.start == .respond && gre.ike?.dpd == nil)
    }

    @Test("a key file others can read is refused, naming the file and the fix")
    func pskMode() throws {
        for mode: mode_t in [0o640, 0o604, 0o644] {
            let (psk, cleanup) = try pskFile(mode: mode)
            defer { cleanup() }
            do {
                _ = try reader.parse(config(psk))
                Issue.record("mode \(String(mode, radix: 8)) accepted")
            } catch {
                #expect(error.keyPath.hasSuffix(".psk-file") && error.reason.contains("chmod 600") && error.reason.contains(psk), "\(error)")
            }
        }
        #expect(throws: ConfigError.self) { try reader.parse(config("/nonexistent/key")) }
        #expect(throws: ConfigError.self) { try reader.parse(config("relative/key")) }
    }

    @Test("unknown transforms and incomplete proposals are refused with the key path; several workers are taken")
    func refusals() throws {
        let (psk, cleanup) = try pskFile(mode: 0o600)
        defer { cleanup() }
        func reason(_ yaml: String) -> String {
            do { _ = try reader.parse(yaml); return "accepted" } catch { return "\(error.keyPath): \(error.reason)" }
        }
        let bad = config(psk).replacingOccurrences(of: "[aes256gcm16-prfsha384-ecp256]", with: "[aes256gcm16-prfmd5-ecp256]")
        #expect(reason(bad).hasPrefix("tunnels[0].protection.ike-proposals[0]: unknown transform \"prfmd5\""), "\(reason(bad))")
        let incomplete = config(psk).replacingOccurrences(of: "[aes256gcm16-prfsha384-ecp256]", with: "[aes256gcm16-ecp256]")
        #expect(reason(incomplete).contains("needs an AEAD, a PRF and a DH group"))
        let workers = config(psk, extra: "stack: {workers: 2}")
        #expect(reason(workers) == "accepted", "each SA lives in one worker's replica: \(reason(workers))")
        let greInUDP = config(psk).replacingOccurrences(of: "    protection:", with: "    encapsulation: gre-in-udp\n    protection:")
        #expect(reason(greInUDP).contains("protection carries GRE inside ESP"), "\(reason(greInUDP))")
    }
}
