import FHIRModel
import FHIRTestServer
import FHIRUpload
import Foundation
import Synchronization
import Testing

/// What is sent is exactly what was verified: a bundle edited while the upload runs is refused, not sent.
@Suite struct ChangedFileTests {
    @Test func aBundleEditedWhileAnEarlierStepIsInFlightIsRefusedBeforeItIsSent() async throws {
        try await UploadFixtures.withServer { server, folder in
            let later = folder + "/bundles/02-conditions/0001.json"
            let original = try String(contentsOfFile: later, encoding: .utf8)
            let edited = Mutex(false)
            do {
                _ = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run(progress: { progress in
                    // Step 1 has just finished a request and step 2 has not started: edit a step-2 bundle now.
                    guard progress.stepNumber == 1 else { return }
                    edited.withLock { done in
                        guard !done else { return }
                        done = true
                        try? original.replacingOccurrences(of: "Hypertension", with: "Hypotension").write(toFile: later, atomically: true, encoding: .utf8)
                    }
                })
                Issue.record("expected the edited bundle to be refused")
            } catch let error as UploadError {
                guard case .changed(let file, let why) = error else {
                    Issue.record("\(error)")
                    return
                }
                #expect(file == "bundles/02-conditions/0001.json")
                #expect(why.contains("no longer matches manifest.json"))
                #expect(error.description.contains("It was not sent; the run stopped"))
            }
            #expect(edited.withLock { $0 })
            #expect(server.resourceCounts["Patient"] == 2)
            #expect(server.resourceCounts["Condition"] == nil)  // nothing of step 2 reached the server
        }
    }

    @Test func reorderedStepsAreRefusedNamingTheManifestEvenWithForce() async throws {
        try await UploadFixtures.withServer { server, folder in
            let path = folder + "/manifest.json"
            let manifest = try JSONParser.parse(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
            let steps = try #require(manifest["steps"]?.arrayValue)
            try Data(JSONWriter(indent: 2).bytes(manifest.setting("/steps", to: .array([steps[1], steps[0]] + steps.dropFirst(2)))))
                .write(to: URL(fileURLWithPath: path))
            var options = UploadFixtures.options(server)
            options.force = true
            do {
                _ = try await Uploader(folder: folder, options: options).run()
                Issue.record("expected a refusal")
            } catch let refusal as UploadRefusal {
                #expect(refusal.description.contains("manifest.json#/steps/0/folder: step"), "\(refusal)")
                #expect(refusal.description.contains("the steps were reordered"))
            }
            #expect(server.statistics.bundleRequests == 0)
        }
    }
}
