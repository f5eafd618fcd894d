// swift-tools-version: 6.1
// The benchmarks are a package of their own so that `make test` does not
// build the benchmark harness. Run them with `make bench` from the top.
import PackageDescription

let package = Package(
    name: "anygate-benchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(name: "anygate", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // What more than one benchmark program builds its tables from.
        .target(
            name: "BenchSupport",
            dependencies: [
                .product(name: "AnygateStack", package: "anygate"),
                .product(name: "AnygateWire", package: "anygate"),
            ],
            path: "Support"
        ),
        .executableTarget(
            name: "Forwarding",
            dependencies: [
                "BenchSupport",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "AnygateCrypto", package: "anygate"),
                .product(name: "AnygateHost", package: "anygate"),
                .product(name: "AnygateStack", package: "anygate"),
                .product(name: "AnygateWire", package: "anygate"),
            ],
            path: "Forwarding",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // Route-change propagation to workers (a plain program: it paces
        // changes in real time): swift run -c release Propagation [WORKERS] [RATE] [SECONDS]
        .executableTarget(
            name: "Propagation",
            dependencies: [
                .product(name: "AnygateHost", package: "anygate"),
                .product(name: "AnygateStack", package: "anygate"),
                .product(name: "AnygateWire", package: "anygate"),
            ],
            path: "Propagation"
        ),
        // The FIB's memory with a million routes as replicas are added, for
        // a shared FIB and for one per replica: swift run -c release FIBMemory [ROUTES]
        .executableTarget(
            name: "FIBMemory",
            dependencies: [
                "BenchSupport",
                .product(name: "AnygateStack", package: "anygate"),
                .product(name: "AnygateWire", package: "anygate"),
            ],
            path: "FIBMemory"
        ),
        // Memory per TIME-WAIT connection, VTW on and off: swift run -c release TimeWaitMemory [N]
        .executableTarget(
            name: "TimeWaitMemory",
            dependencies: [
                "BenchSupport",
                .product(name: "AnygateStack", package: "anygate"),
                .product(name: "AnygateWire", package: "anygate"),
            ],
            path: "TimeWaitMemory"
        ),
    ],
    swiftLanguageModes: [.v6]
)
