// ESP's AEAD transforms in process: one packet's payload sealed in place
// (AAD: SPI and sequence number, as ESP authenticates them) and opened
// again with the peer's context, per packet of 64 and 1400 bytes. One
// iteration is one seal and one open; nothing is allocated per packet.
import AnygateCrypto
import Benchmark

final class AEADBench {
    let seal: AEADCipher, open: AEADCipher
    let text: UnsafeMutableRawBufferPointer
    let icv = UnsafeMutableRawPointer.allocate(byteCount: AEADAlgorithm.icvLength, alignment: 16)
    let aad = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
    var iv: UInt64 = 0

    init(_ a: AEADAlgorithm, size: Int) throws {
        let km = (0..<a.keyMaterialLength).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
        seal = try km.withUnsafeBytes { try AEADCipher(a, keyMaterial: $0, sealing: true) }
        open = try km.withUnsafeBytes { try AEADCipher(a, keyMaterial: $0, sealing: false) }
        text = .allocate(byteCount: size, alignment: 64)
        text.initializeMemory(as: UInt8.self, repeating: 0x5A)
        aad.initializeMemory(as: UInt8.self, repeating: 1)
    }

    @inline(__always)
    func roundTrip(_ count: Int) {
        for _ in 0..<count {
            iv &+= 1
            aad.storeBytes(of: UInt32(truncatingIfNeeded: iv).bigEndian, toByteOffset: 4, as: UInt32.self)
            let sealed = seal.seal(iv: iv, aad: UnsafeRawBufferPointer(aad), text: text, icv: icv)
            let opened = open.open(iv: iv, aad: UnsafeRawBufferPointer(aad), text: text, icv: icv)
            precondition(sealed && opened, "every packet must seal and open")
        }
    }
}

func espBenchmarks(_ perPacket: Benchmark.Configuration) {
    nonisolated(unsafe) var benches: [String: AEADBench] = [:]
    for a in AEADAlgorithm.allCases {
        for size in [64, 1400] {
            let name = "ESP \(a.name) seal + open, \(size)B"
            Benchmark(name, configuration: perPacket) { benchmark in
                if benches[name] == nil { benches[name] = try! AEADBench(a, size: size) }
                let b = benches[name]!
                benchmark.startMeasurement()
                b.roundTrip(benchmark.scaledIterations.count)
                benchmark.stopMeasurement()
            }
        }
    }
}
