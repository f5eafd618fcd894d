// anygated: the Anygate router daemon. Reads the YAML config, builds the
// stack, attaches its interfaces, and runs until SIGTERM/SIGINT; SIGHUP
// reloads the config. Exit status: 0 ok, 1 runtime failure, 2 bad usage
// or invalid config.
import AnygateDaemon
import ArgumentParser
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Writes one line to standard error.
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

struct Anygated: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "anygated",
        abstract: "Anygate userspace router and tunnel daemon.")

    @Option(name: .long, help: "The YAML configuration file.")
    var config = "etc/anygate/anygate.yaml"

    @Flag(name: .long, help: "Validate the configuration, print a one-line summary and exit.")
    var check = false

    @Option(name: .customLong("log-format"), help: "Override log.format: text or json.")
    var logFormat: String?

    func run() throws {
        let cfg: DaemonConfig
        do {
            cfg = try ConfigReader.load(path: config)
        } catch {
            printError("anygated: \(error)")
            throw ExitCode(2)
        }
        if check {
            print("\(config): OK: \(cfg.summary)")
            print("needs: \(cfg.hostRequirements.joined(separator: " "))")
            return
        }
        var json = cfg.logFormat == .json
        if let f = logFormat {
            guard let parsed = DaemonConfig.LogFormat(rawValue: f) else {
                printError("anygated: --log-format must be text or json")
                throw ExitCode(2)
            }
            json = parsed == .json
        }
        let level = cfg.logLevel.loggerLevel
        LoggingSystem.bootstrap { StderrLogHandler(label: $0, level: level, json: json) }
        var logger = Logger(label: "anygated")
        logger.logLevel = level
        do {
            let daemon = try Daemon(config: cfg, configPath: config, logger: logger)
            try daemon.run()
        } catch {
            printError("anygated: \(error)")
            throw ExitCode(1)
        }
    }
}

// Bad usage exits 2 (the contract), not ArgumentParser's 64.
do {
    var command = try Anygated.parseAsRoot()
    try command.run()
} catch let code as ExitCode {
    exit(code.rawValue)
} catch {
    let code = Anygated.exitCode(for: error)
    if code == .success {
        print(Anygated.fullMessage(for: error))
        exit(0)
    }
    printError(Anygated.fullMessage(for: error))
    exit(code == .validationFailure ? 2 : code.rawValue)
}
