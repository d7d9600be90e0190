import FHIRArtifacts
import FHIRConvert
import FHIRModel
import FHIRTestServer
import FHIRTestSupport
@testable import FHIRUpload
import FHIRValidation
import Foundation
import Testing

/// A folder is checked against the limits it was written under, recorded in its manifest.
struct ManifestLimitsTests {
    @Test func aFolderConvertedWithRaisedLimitsValidatesAndUploadsWithoutForce() async throws {
        let dir = NSTemporaryDirectory() + "raised-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = ConvertOptions(mappingPath: TestRepository.fixture("synthea/mapping.yaml"), outputPath: dir)
        options.limitOverrides = [.bundleBytes: 5_000_000, .batchEntries: 12_000]
        let summary = try Converter(options: options).run()
        #expect(summary.manifest.limits.bundleBytes == 5_000_000 && summary.manifest.limits.batchEntries == 12_000)
        let report = try ArtifactValidator(folder: dir).run()
        #expect(report.errors == 0 && report.warnings == 0)
        #expect(report.limitsOrigin.contains("manifest"))
        // Medplum's own limits, asked for explicitly, do not fit this folder.
        var medplum = ValidationOptions()
        medplum.profile = .medplum
        #expect(try ArtifactValidator(folder: dir, options: medplum).run().findings.contains { $0.rule == "bundle-bytes" })

        var limits = ServerLimits()
        limits.bodyBytes = 6_000_000
        try await UploadFixtures.withServer(limits: limits, folder: { dir }) { server, folder in
            let upload = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(upload.failures == 0 && upload.written == summary.resourcesWritten)
        }
    }

    @Test func aLimitSwitchedOffIsRecordedAsNoLimit() throws {
        let dir = NSTemporaryDirectory() + "unlimited-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = ConvertOptions(mappingPath: TestRepository.fixture("medplum-example/mapping.yaml"), outputPath: dir)
        options.profile = .generic
        options.limitOverrides = [.batchEntries: 100]
        let summary = try Converter(options: options).run()
        #expect(summary.manifest.profile == .generic)
        #expect(summary.manifest.limits[.bundleBytes] == nil && summary.manifest.limits[.batchEntries] == 100)
        let text = try String(contentsOfFile: dir + "/manifest.json", encoding: .utf8)
        #expect(text.contains(#""profile": "generic""#) && text.contains(#""bundleBytes": null"#))
        let reread = try Manifest(json: JSONParser.parse(Array(text.utf8)))
        #expect(reread.limits == summary.manifest.limits && reread.mapping != nil)
    }

    @Test(arguments: ["bundleBytes=none", "batchEntries=50"])
    func limitOverridesParseFromTheirOneDefinition(text: String) throws {
        let (limit, value) = try BundleLimit.parseOverride(text).get()
        #expect(limit.rawValue == String(text.prefix { $0 != "=" }))
        #expect(value == (text.hasSuffix("none") ? nil : 50))
    }

    @Test func aBadLimitSaysWhichLimitsThereAre() {
        guard case .failure(let error) = BundleLimit.parseOverride("bundleSize=5") else {
            Issue.record("bundleSize was accepted")
            return
        }
        #expect(error.description.contains("unknown limit 'bundleSize'") && error.description.contains(BundleLimit.names))
    }
}
