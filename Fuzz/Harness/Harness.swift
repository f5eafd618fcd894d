// libFuzzer harnesses, one binary: FUZZ_TARGET names the harness (see
// `Harnesses.all`), `make fuzz` runs each in turn. Built only with
// ANYGATE_FUZZ=1 (Package.swift), with --sanitize=fuzzer --sanitize=address.
// FUZZ_WRITE_SEEDS=DIR writes each harness's seed inputs under DIR/NAME and exits.
import AnygateWire
import Foundation

/// One harness: what it feeds the input to.
struct Harness {
    let name: String
    let run: ([UInt8]) -> Void
    /// Inputs to start from (valid messages of the kind, to mutate).
    let seeds: () -> [[UInt8]]
}

nonisolated(unsafe) var selected: Harness?

@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    let env = ProcessInfo.processInfo.environment
    if let dir = env["FUZZ_WRITE_SEEDS"] {
        for h in Harnesses.all {
            let d = "\(dir)/\(h.name)"
            try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
            for (k, s) in h.seeds().enumerated() {
                FileManager.default.createFile(atPath: "\(d)/seed-\(k)", contents: Data(s))
            }
        }
        exit(0)
    }
    guard let name = env["FUZZ_TARGET"], let h = Harnesses.all.first(where: { $0.name == name }) else {
        FileHandle.standardError.write(Data("FUZZ_TARGET must be one of: \(Harnesses.all.map(\.name).joined(separator: " "))\n".utf8))
        exit(2)
    }
    selected = h
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    selected!.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// Runs `body` over a private, exactly sized copy of `bytes` (so the
/// address sanitizer sees any read past the end).
func withBuffer(_ bytes: [UInt8], _ body: (UnsafeMutableRawBufferPointer) -> Void) {
    let b = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
    defer { b.deallocate() }
    bytes.withUnsafeBytes { b.copyMemory(from: $0) }
    body(b)
}
