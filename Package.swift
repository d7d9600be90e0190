// swift-tools-version:6.0
import PackageDescription

/// Shared Swift settings for every target.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "fhirbundle",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "fhirbundle", targets: ["fhirbundle"]),
        .executable(name: "fhirupload", targets: ["fhirupload"]),
        .library(name: "FHIRConvert", targets: ["FHIRConvert"]),
    ],
    dependencies: [
        // Command-line parsing, help text and exit codes for the thin executables.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // Mapping files are YAML; Yams keeps node marks so mapping errors carry line and column.
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        // SHA-256 for the manifest checksums and SHA-1 for name-based UUIDs (RFC 9562 v5).
        .package(url: "https://github.com/apple/swift-crypto", from: "3.0.0"),
        // HTTP for the uploader only (its first build takes minutes; nothing else links it).
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.20.0"),
        // ByteBuffer, for reading AsyncHTTPClient's response bodies.
        .package(url: "https://github.com/apple/swift-nio", from: "2.60.0"),
    ],
    targets: [
        // MARK: C glue for libxml2 (only FHIRSources sees it)
        .systemLibrary(
            name: "CLibXML2",
            pkgConfig: "libxml-2.0",
            providers: [.apt(["libxml2-dev"]), .brew(["libxml2"])]
        ),
        .target(name: "CXMLShim", dependencies: ["CLibXML2"]),
        // renameat2(RENAME_EXCHANGE) and syncfs for swapping in a complete, durable output folder.
        .target(name: "CFileOps"),

        // MARK: Engine
        .target(
            name: "FHIRSources",
            dependencies: ["CXMLShim", "FileIO"],
            swiftSettings: swiftSettings
        ),
        .target(name: "FHIRDefinitions", swiftSettings: swiftSettings),
        // Reading and writing files: EINTR, hashing as read, page-cache release, regular files only.
        .target(name: "FileIO", dependencies: [.product(name: "Crypto", package: "swift-crypto")], swiftSettings: swiftSettings),
        // Order-preserving worker threads: the pipeline stages of convert and validate.
        .target(name: "ParallelWork", swiftSettings: swiftSettings),
        .target(
            name: "FHIRModel",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "FHIRMapping",
            dependencies: ["FHIRModel", "FHIRDefinitions", "FHIRSources", "Yams"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "FHIRArtifacts",
            dependencies: ["FHIRModel", "CFileOps", "FileIO", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        // Offline checks of an artifact folder; shared by convert and the uploader, so no source readers here.
        .target(
            name: "FHIRValidation",
            dependencies: ["FHIRModel", "FHIRDefinitions", "FHIRArtifacts", "FileIO", "ParallelWork", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        // The uploader's engine (plan, journal, retries, outcomes). Never depends on the source readers or libxml2.
        .target(
            name: "FHIRUpload",
            dependencies: ["FHIRModel", "FHIRArtifacts", "FHIRValidation", .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "FHIRConvert",
            dependencies: ["FHIRSources", "FHIRMapping", "FHIRArtifacts", "FHIRModel", "FHIRValidation", "FHIRReport", "ParallelWork"],
            swiftSettings: swiftSettings
        ),

        // report.html, the page a reviewer reads beside the artifacts.
        .target(
            name: "FHIRReport",
            dependencies: ["FHIRModel", "FHIRArtifacts", "FHIRValidation"],
            swiftSettings: swiftSettings
        ),
        // Two artifact folders compared by resource identity, and the delta folder between them.
        .target(
            name: "FHIRDiff",
            dependencies: ["FHIRModel", "FHIRArtifacts", "FHIRValidation", "FHIRReport"],
            swiftSettings: swiftSettings
        ),
        // FHIR data that fhirbundle did not write, made into an artifact folder (no source readers, no HTTP).
        .target(
            name: "FHIRRebundle",
            dependencies: ["FHIRModel", "FHIRDefinitions", "FHIRArtifacts", "FHIRValidation"],
            swiftSettings: swiftSettings
        ),

        // MARK: Executables (thin shells)
        // What both command lines share: --profile, --limit, --known-identifiers, standard error.
        .target(
            name: "CommandLineSupport",
            dependencies: ["FHIRModel", "FHIRArtifacts", "ParallelWork", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "fhirbundle",
            dependencies: ["FHIRConvert", "FHIRRebundle", "FHIRDiff", "FHIRArtifacts", "FHIRValidation", "CommandLineSupport",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings
        ),

        .executableTarget(
            name: "fhirupload",
            dependencies: ["FHIRUpload", "FHIRArtifacts", "FHIRModel", "CommandLineSupport",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings
        ),

        // MARK: Tests
        // What every test target shares: the repository root, built executables, a process runner, and the
        // external programs some tests need (found, or a failure that says what to install).
        .target(name: "FHIRTestSupport", path: "Tests/FHIRTestSupport", swiftSettings: swiftSettings),
        // A FHIR server that behaves as Medplum documents and injects faults, for the uploader's tests and benchmark.
        .target(
            name: "FHIRTestServer",
            dependencies: ["FHIRModel", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOHTTP1", package: "swift-nio")],
            path: "Tests/FHIRTestServer",
            swiftSettings: swiftSettings
        ),
        // The same server as a process (`scripts/benchmark-upload.sh` runs the uploader against it).
        .executableTarget(name: "fhir-test-server", dependencies: ["FHIRTestServer"], path: "Tests/fhir-test-server", swiftSettings: swiftSettings),
        .testTarget(name: "FHIRDiffTests", dependencies: ["FHIRDiff", "FHIRConvert", "FHIRArtifacts", "FHIRValidation", "FHIRModel", "FHIRTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "FHIRRebundleTests", dependencies: ["FHIRRebundle", "FHIRConvert", "FHIRValidation", "FHIRTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "FHIRTestSupportTests", dependencies: ["FHIRTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "FHIRSourcesTests", dependencies: ["FHIRSources"], swiftSettings: swiftSettings),
        .testTarget(name: "FHIRDefinitionsTests", dependencies: ["FHIRDefinitions", "FHIRTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "FHIRModelTests", dependencies: ["FHIRModel"], swiftSettings: swiftSettings),
        .testTarget(name: "ParallelWorkTests", dependencies: ["ParallelWork"], swiftSettings: swiftSettings),
        .testTarget(name: "FileIOTests", dependencies: ["FileIO"], swiftSettings: swiftSettings),
        .testTarget(name: "FHIRMappingTests", dependencies: ["FHIRMapping", "FHIRModel"], swiftSettings: swiftSettings),
        .testTarget(
            name: "FHIRUploadTests",
            dependencies: ["FHIRUpload", "FHIRModel", "FHIRArtifacts", "FHIRConvert", "FHIRRebundle", "FHIRDiff", "FHIRValidation", "FHIRTestServer", "FHIRTestSupport",
                           "fhirupload",
                           .product(name: "AsyncHTTPClient", package: "async-http-client"), .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "FHIRValidationTests", dependencies: ["FHIRValidation", "FHIRModel", "FHIRConvert", "FHIRTestSupport"], swiftSettings: swiftSettings),
        // Runs the built executable; depends on it so that `swift test` builds it first.
        .testTarget(name: "EndToEndTests", dependencies: ["fhirbundle", "FHIRModel", "FHIRTestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "FHIRConvertTests",
            dependencies: ["FHIRConvert", "FHIRModel", "FHIRSources", "FHIRArtifacts", "FHIRReport", "FHIRValidation", "FHIRTestSupport"],
            swiftSettings: swiftSettings
        ),
    ]
)
