// swift-tools-version: 6.1
import PackageDescription

// Layers (see DESIGN.md): AnygateWire knows bytes; AnygateStack is the virtual
// network kernel built on it. Later layers (host, netlink, daemon, control)
// arrive with their issues.
let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "anygate",
    products: [
        .library(name: "AnygateWire", targets: ["AnygateWire"]),
        .library(name: "AnygateStack", targets: ["AnygateStack"]),
        .executable(name: "anygate-demo", targets: ["anygate-demo"]),
    ],
    targets: [
        .target(name: "AnygateWire", swiftSettings: strict),
        .target(name: "AnygateStack", dependencies: ["AnygateWire"], swiftSettings: strict),
        .executableTarget(name: "anygate-demo", dependencies: ["AnygateStack", "AnygateWire"], swiftSettings: strict),
        .testTarget(name: "AnygateWireTests", dependencies: ["AnygateWire"], swiftSettings: strict),
        .testTarget(name: "AnygateStackTests", dependencies: ["AnygateStack", "AnygateWire"], swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
