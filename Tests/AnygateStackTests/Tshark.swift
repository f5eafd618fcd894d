import Foundation

/// Shell look-ups for tests that use a tool when it is there.
enum Shell {
    static func succeeds(_ command: String) -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }
}

/// Writes Ethernet frames to a pcap file in a private temporary directory
/// and returns what `tshark -r FILE OPTIONS` prints (or, when it fails,
/// its exit status and error output).
func tshark(_ frames: [[UInt8]], options: [String]) throws -> String {
    var pcap: [UInt8] = []
    func le32(_ v: UInt32) { pcap += withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    func le16(_ v: UInt16) { pcap += withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    le32(0xA1B2_C3D4); le16(2); le16(4); le32(0); le32(0); le32(65535); le32(1)
    for (n, f) in frames.enumerated() {
        le32(UInt32(n)); le32(0); le32(UInt32(f.count)); le32(UInt32(f.count))
        pcap += f
    }
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("anygate-pcap-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: false)
    defer { try? FileManager.default.removeItem(at: dir) }
    let path = dir.appendingPathComponent("frames.pcap")
    try Data(pcap).write(to: path)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["tshark", "-r", path.path] + options
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    // A failed run says why, where the expectation prints it.
    return p.terminationStatus == 0 ? text : "tshark exited \(p.terminationStatus): \(errors)"
}
