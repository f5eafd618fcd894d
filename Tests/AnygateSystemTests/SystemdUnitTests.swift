import Foundation
import Testing

/// deploy/systemd/anygated.service checked by `systemd-analyze verify`
/// (with ExecStart pointing at the binary built here), when available.
enum SystemdAnalyze {
    static var available: Bool { Shell.run("command -v systemd-analyze").status == 0 }
}

@Suite("Deploy: systemd unit", .enabled(if: SystemdAnalyze.available, "systemd-analyze is not installed (apt-get install systemd)"))
struct SystemdUnitTests {
    @Test("systemd-analyze verify finds nothing to say about the unit")
    func verify() throws {
        let dir = NSTemporaryDirectory() + "anygate-unit-\(UInt32.random(in: 0..<0xFFFF))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let unit = try String(contentsOfFile: SystemEnvironment.root + "/deploy/systemd/anygated.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/local/bin/anygated --config /etc/anygate/anygate.yaml"))
        #expect(unit.contains("AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW"))
        let local = unit.replacingOccurrences(of: "/usr/local/bin/anygated", with: SystemEnvironment.binary("anygated"))
        try local.write(toFile: dir + "/anygated.service", atomically: true, encoding: .utf8)
        let r = Shell.run("systemd-analyze verify \(dir)/anygated.service 2>&1")
        let aboutUnit = r.output.split(separator: "\n").filter { $0.contains("anygated.service") }
        #expect(r.status == 0 && aboutUnit.isEmpty, "\(r.output)")
    }
}
