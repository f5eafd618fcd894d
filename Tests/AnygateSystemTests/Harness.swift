import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs shell commands for the system tests and owns the per-run names.
/// Everything a test creates carries `prefix`, so runs never collide and
/// teardown removes exactly what this run made.
enum Shell {
    /// Runs `/bin/sh -c command` with a time limit; returns status and output (stdout + stderr).
    @discardableResult
    static func run(_ command: String, timeout: Int = 60) -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "timeout -k 5 \(timeout) /bin/sh -c \(quote(command))"]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { return (127, "cannot run: \(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Starts `/bin/sh -c command` in the background with stdout to `output`;
    /// the caller waits for it or terminates it.
    static func spawn(_ command: String, output: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        // createFile replaces what is there: never a device (it would replace /dev/null with a file).
        precondition(!output.hasPrefix("/dev/"), "spawn's output must be a file of the test's own")
        FileManager.default.createFile(atPath: output, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    static func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
}

enum SystemEnvironment {
    static var isRoot: Bool { getuid() == 0 }
    static var hasTun: Bool { FileManager.default.fileExists(atPath: "/dev/net/tun") }
    static var hasTools: Bool {
        ["ip", "ping", "nc", "ethtool", "curl", "sha256sum"].allSatisfy { Shell.run("command -v \($0)").status == 0 }
    }
    static var canRun: Bool { isRoot && hasTun && hasTools }
    static var skipReason: String {
        if !isRoot { return "system tests need root (network namespaces, TAP devices)" }
        if !hasTun { return "system tests need /dev/net/tun" }
        return "system tests need ip, ping, nc, ethtool, curl and sha256sum (make test installs them)"
    }

    /// The package root, from this file's path.
    static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    static func binary(_ name: String) -> String {
        let bin = Shell.run("cd \(root) && swift build --show-bin-path").output.trimmingCharacters(in: .whitespacesAndNewlines)
        return bin + "/" + name
    }
}

/// A running anygated started by a test, stopped by PID only.
final class DaemonProcess {
    let process = Process()
    let logPath: String

    init(binary: String, config: String, namespace: String, logPath: String, arguments: [String]? = nil) throws {
        self.logPath = logPath
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        if !FileManager.default.fileExists(atPath: "/usr/sbin/ip") { process.executableURL = URL(fileURLWithPath: "/sbin/ip") }
        process.arguments = ["netns", "exec", namespace] + (arguments ?? [binary, "--config", config])
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func signal(_ sig: Int32) { if process.isRunning { kill(pid, sig) } }

    /// SIGTERM, then wait up to `seconds`; SIGKILL if it is still there.
    func stop(seconds: Double = 10) -> Int32? {
        signal(SIGTERM)
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(50_000) }
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    /// Waits until `condition` holds, polling, for at most `seconds`.
    static func wait(seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(100_000)
        }
        return condition()
    }
}

/// Sends `megabytes` of random data from namespace `from` to `address` in
/// namespace `to` over one TCP connection (nc) and compares the sha256 of
/// what left and what arrived; nil when they match, else what went wrong.
func sha256Transfer(megabytes: Int, dir: String, from: String, to: String, address: String) throws -> String? {
    let src = "\(dir)/data.bin", dst = "\(dir)/recv.bin"
    Shell.run("head -c \(megabytes * 1_000_000) /dev/urandom > \(src); rm -f \(dst)")
    let listener = try Shell.spawn("exec ip netns exec \(to) timeout 120 nc -l -N \(address) 5001", output: dst)
    defer { if listener.isRunning { listener.terminate() } }
    _ = DaemonProcess.wait(seconds: 10) { Shell.run("ip netns exec \(to) ss -ltn").output.contains("\(address):5001") }
    let send = Shell.run("ip netns exec \(from) timeout 120 nc -N \(address) 5001 < \(src)", timeout: 130)
    guard send.status == 0 else { return "nc: \(send.output)" }
    _ = DaemonProcess.wait(seconds: 60) { !listener.isRunning }
    let sums = Shell.run("sha256sum \(src) \(dst) | cut -d' ' -f1").output.split(separator: "\n")
    return sums.count == 2 && sums[0] == sums[1] ? nil : "checksums differ: \(sums)"
}
