import FHIRModel
import FHIRRebundle
import FHIRTestServer
import FHIRTestSupport
@testable import FHIRUpload
import Foundation
import Testing

/// Synthea's own FHIR output, rebundled, uploaded: exactly once, through faults, and verified.
enum RebundledSynthea {
    /// The rebundled fixture, made once per test process.
    private static let folder: Result<String, any Error> = Result {
        let out = NSTemporaryDirectory() + "rebundled-synthea-\(getpid())"
        try? FileManager.default.removeItem(atPath: out)
        _ = try Rebundler(options: RebundleOptions(inputPath: TestRepository.fixture("synthea-fhir"), outputPath: out)).run()
        atexit { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "rebundled-synthea-\(getpid())") }
        return out
    }

    /// A fresh copy (each test gets its own journal).
    static func copy() throws -> String {
        let dir = NSTemporaryDirectory() + "upload-\(UUID().uuidString)"
        try FileManager.default.copyItem(atPath: try folder.get(), toPath: dir)
        return dir
    }
}

@Suite(.serialized)
struct ForeignDataUploadTests {
    @Test func rebundledSyntheaLandsExactlyOnceThroughFaultsAndVerifiesClean() async throws {
        try await UploadFixtures.withServer(folder: RebundledSynthea.copy) { server, folder in
            server.chaos(rate: 0.3, seed: 42, kinds: [.dropConnection, .dropAfterApplying, .status(503), .rateLimitFromEntry(3), .failEntries([1], status: 500)])
            let report = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(report.failures == 0 && report.written == 1040)
            try await expectExactlyTheArtifacts(folder, on: server)
            let verify = try await Verifier(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(verify.links.checked > 1000 && verify.links.isClean, "\(verify.links.examples.prefix(3))")
            #expect(verify.unverifiable == 3)  // the Provenances, written by id: there is no identifier to search for
            // A replay sends nothing.
            let again = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(again.written == 0 && again.skipped == 1040)
        }
    }
}
