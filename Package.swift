// swift-tools-version: 6.1
import PackageDescription

// Layers (DESIGN.md): AnygateWire knows bytes; AnygateCrypto keys ESP's
// AEAD ciphers (libcrypto, in place); AnygateStack is the virtual
// network kernel; AnygateHost runs a stack on Linux (epoll, TAP, AF_PACKET);
// AnygateDaemon owns configuration, control and metrics; AnygateControl is
// the control protocol shared with anygatectl.
let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "anygate",
    products: [
        .library(name: "AnygateWire", targets: ["AnygateWire"]),
        .library(name: "AnygateCrypto", targets: ["AnygateCrypto"]),
        .library(name: "AnygateStack", targets: ["AnygateStack"]),
        .library(name: "AnygateHost", targets: ["AnygateHost"]),
        .executable(name: "anygated", targets: ["anygated"]),
        .executable(name: "anygatectl", targets: ["anygatectl"]),
        .executable(name: "anygate-demo", targets: ["anygate-demo"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
    ],
    targets: [
        .target(name: "AnygateWire", swiftSettings: strict),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .target(name: "AnygateCrypto", dependencies: ["CCrypto"], swiftSettings: strict),
        .target(name: "AnygateStack", dependencies: ["AnygateWire", "AnygateCrypto"], swiftSettings: strict),
        .target(name: "AnygateIKE", dependencies: ["AnygateWire", "AnygateCrypto", .product(name: "Crypto", package: "swift-crypto")],
                swiftSettings: strict),
        .target(name: "CAnygateHost"),
        .systemLibrary(name: "CPcap", providers: [.apt(["libpcap-dev"])]),
        .target(name: "AnygateHost", dependencies: ["AnygateStack", "AnygateWire", "CAnygateHost", "CPcap"], swiftSettings: strict),
        .target(name: "AnygateControl", swiftSettings: strict),
        .systemLibrary(name: "CNetlink", pkgConfig: "libnl-route-3.0", providers: [.apt(["libnl-3-dev", "libnl-route-3-dev"])]),
        .target(name: "AnygateNetlink", dependencies: ["CNetlink", "AnygateWire"], swiftSettings: strict),
        .target(
            name: "AnygateDaemon",
            dependencies: [
                "AnygateStack", "AnygateWire", "AnygateHost", "AnygateControl", "AnygateNetlink", "AnygateIKE", "AnygateCrypto",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "anygated",
            dependencies: ["AnygateDaemon", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict),
        .executableTarget(
            name: "anygatectl",
            dependencies: ["AnygateControl", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict),
        .executableTarget(name: "anygate-demo", dependencies: ["AnygateStack", "AnygateWire"], swiftSettings: strict),
        .testTarget(name: "AnygateWireTests", dependencies: ["AnygateWire"], swiftSettings: strict),
        .testTarget(name: "AnygateCryptoTests", dependencies: ["AnygateCrypto"], swiftSettings: strict),
        .testTarget(name: "AnygateIKETests", dependencies: ["AnygateIKE", "AnygateCrypto"], swiftSettings: strict),
        .testTarget(name: "AnygateHostTests", dependencies: ["AnygateCrypto", "AnygateHost", "AnygateStack", "AnygateWire"], swiftSettings: strict),
        .testTarget(name: "AnygateStackTests", dependencies: ["AnygateStack", "AnygateWire", .product(name: "Crypto", package: "swift-crypto")],
                    swiftSettings: strict),
        .testTarget(name: "AnygateDaemonTests", dependencies: ["AnygateDaemon", "AnygateControl", "AnygateStack", "AnygateWire",
                                                             .product(name: "Logging", package: "swift-log"),
                                                             .product(name: "Yams", package: "Yams")],
                    swiftSettings: strict),
        .testTarget(name: "AnygateSystemTests", dependencies: ["AnygateControl"], swiftSettings: strict),
        .testTarget(name: "AnygateNetlinkTests", dependencies: ["AnygateNetlink", "AnygateDaemon", "AnygateStack", "AnygateWire"],
                    swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)

// The libFuzzer harnesses (Fuzz/, FUZZING.md): built only by `make fuzz`,
// with ANYGATE_FUZZ=1 and --sanitize=fuzzer, since their entry point is
// libFuzzer's and not a main of their own.
if Context.environment["ANYGATE_FUZZ"] != nil {
    package.targets.append(.executableTarget(
        name: "anygate-fuzz",
        dependencies: ["AnygateWire", "AnygateStack", "AnygateCrypto", "AnygateIKE", "AnygateDaemon",
                       .product(name: "Logging", package: "swift-log")],
        path: "Fuzz/Harness"))
    package.products.append(.executable(name: "anygate-fuzz", targets: ["anygate-fuzz"]))
}
