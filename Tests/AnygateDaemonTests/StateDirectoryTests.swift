@testable import AnygateDaemon
import AnygateWire
import Foundation
import Testing

@Suite("State directory: generated MACs")
struct StateDirectoryTests {
    func scratch() throws -> String {
        let d = NSTemporaryDirectory() + "anygate-state-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    @Test("two instances get different MACs for an interface of the same name; each keeps its own across restarts")
    func uniqueAndPersistent() throws {
        let a = try scratch(), b = try scratch()
        defer { try? FileManager.default.removeItem(atPath: a); try? FileManager.default.removeItem(atPath: b) }
        var first: StateDirectory? = StateDirectory(path: a + "/state")
        let second = StateDirectory(path: b + "/state")
        let macA = first!.mac(for: "wan"), macB = second.mac(for: "wan")
        #expect(macA != macB)
        for m in [macA, macB] {
            #expect(!m.isMulticast && m.rawValue & 0x0200_0000_0000 != 0, "locally administered unicast: \(m)")
        }
        #expect(first!.problem == nil)
        #expect(first!.mac(for: "wan") == macA, "asked again: the same")
        #expect(first!.mac(for: "lan") != macA)
        first = nil  // the daemon stops; its lock goes
        let restarted = StateDirectory(path: a + "/state")
        #expect(restarted.mac(for: "wan") == macA)
        #expect(restarted.problem == nil)
        let text = try String(contentsOfFile: a + "/state/mac-addresses", encoding: .utf8)
        #expect(text.contains("wan \(macA)"))
    }

    @Test("a directory another daemon holds, or one that cannot be made: random MACs, not saved, and a reason")
    func unusable() throws {
        let a = try scratch()
        defer { try? FileManager.default.removeItem(atPath: a) }
        let holder = StateDirectory(path: a)
        let m = holder.mac(for: "wan")
        let second = StateDirectory(path: a)
        #expect(second.problem?.contains("in use by another anygated") == true)
        #expect(second.mac(for: "wan") != m, "no shared MAC with the daemon holding the directory")
        #expect(!(try String(contentsOfFile: a + "/mac-addresses", encoding: .utf8)).contains("\(second.mac(for: "wan"))"))
        // A path under a regular file cannot be a directory.
        try "x".write(toFile: a + "/file", atomically: true, encoding: .utf8)
        let broken = StateDirectory(path: a + "/file/state")
        #expect(broken.problem?.contains("cannot create") == true)
        #expect(!broken.mac(for: "wan").isMulticast)
    }
}
