import FHIRTestServer
import FHIRUpload
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The Synthea mapping's output (about 26,000 resources in some 270 bundle requests) uploaded through faults and
/// kills: the server must end up holding exactly the artifacts, nothing missing and nothing twice.
@Suite(.serialized)
struct ResilienceTests {
    @Test func anUploadThroughRandomFaultsEndsWithExactlyTheArtifacts() async throws {
        try await UploadFixtures.withServer(folder: UploadFixtures.syntheaCopy) { server, folder in
            server.chaos(rate: 0.3, seed: 20261125, kinds: [
                .dropConnection, .dropAfterApplying, .status(500), .status(503), .status(429, retryAfter: 0),
                .rateLimitFromEntry(40, resetSeconds: 0), .failEntries([3, 7, 50], status: 503), .slow(seconds: 0.05),
            ])
            var options = UploadFixtures.options(server)
            options.concurrency = 8
            options.retry.maxAttempts = 25  // 0.3^24: no request runs out of attempts by bad luck
            let report = try await Uploader(folder: folder, options: options).run()
            #expect(report.failures == 0)
            #expect(report.written == (try UploadFixtures.expectedCounts(folder)).values.reduce(0, +))
            #expect(server.statistics.faultsInjected > 50)
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test(arguments: [3, 60, 180])
    func killingTheUploaderMidRunAndRerunningLosesAndDuplicatesNothing(afterRequests: Int) async throws {
        try await UploadFixtures.withServer(folder: UploadFixtures.syntheaCopy) { server, folder in
            // Every answer comes late, so the kill lands while bundles are written but not yet acknowledged.
            server.chaos(rate: 1, seed: 1, kinds: [.slow(seconds: 0.03)])
            let first = try UploadFixtures.startUploader([folder, "--server", server.baseURL, "--concurrency", "8", "--quiet"])
            let pid = first.processIdentifier
            server.when({ $0.bundleRequests >= afterRequests }) { kill(pid, SIGKILL) }
            first.waitUntilExit()
            #expect(first.terminationReason == .uncaughtSignal)
            let journal = try String(contentsOfFile: UploadFixtures.targetFolder(folder) + "/journal.ndjson", encoding: .utf8)
            #expect(!journal.isEmpty)

            let second = try UploadFixtures.startUploader([folder, "--server", server.baseURL, "--concurrency", "8", "--quiet"])
            second.waitUntilExit()
            #expect(second.terminationStatus == 0)
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }
}
