import FHIRConvert
import FHIRDiff
import FHIRModel
import FHIRTestServer
import FHIRTestSupport
import FHIRUpload
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Both waves converted, and the delta between them with its deletes.
private func convertWavesAndDelta(in dir: String, patients: Int, batchEntries: Int) throws -> (old: String, new: String, delta: String, waves: MigrationWaves) {
    let waves = try MigrationWaves.write(in: dir, patients: patients, batchEntries: batchEntries)
    _ = try Converter(options: ConvertOptions(mappingPath: waves.first, outputPath: dir + "/out1")).run()
    _ = try Converter(options: ConvertOptions(mappingPath: waves.second, outputPath: dir + "/out2")).run()
    let old = try ArtifactEntries(folder: dir + "/out1"), new = try ArtifactEntries(folder: dir + "/out2")
    var options = DeltaOptions(outputPath: dir + "/delta")
    options.deletes = true
    let summary = try DeltaWriter.write(old: old, new: new, report: ArtifactDiff.compare(old: old, new: new), options: options)
    #expect(summary.validation?.errors == 0)
    return (dir + "/out1", dir + "/out2", dir + "/delta", waves)
}

@Suite(.serialized)
struct DeltaUploadTests {
    /// The first wave loaded, then the delta killed mid-run and resumed: the server then holds the second wave
    /// exactly, the removed identities gone.
    @Test func aDeltaUploadedAfterTheFirstWaveLeavesTheServerEqualToTheSecond() async throws {
        let dir = NSTemporaryDirectory() + "delta-upload-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let folders = try convertWavesAndDelta(in: dir, patients: 2000, batchEntries: 20)
        try await UploadFixtures.withServer(folder: { folders.old }) { server, old in
            let first = try await Uploader(folder: old, options: UploadFixtures.options(server)).run()
            #expect(first.failures == 0)
            // Every answer comes late, so the kill lands with bundles written but not acknowledged.
            server.chaos(rate: 1, seed: 1, kinds: [.slow(seconds: 0.03)])
            let before = server.statistics.bundleRequests
            let arguments = [folders.delta, "--server", server.baseURL, "--concurrency", "4", "--quiet"]
            let killedErrors = dir + "/killed-run.stderr"
            let killed = try UploadFixtures.startUploader(arguments, stderr: killedErrors)
            let pid = killed.processIdentifier
            server.when({ $0.bundleRequests >= before + 12 }) { kill(pid, SIGKILL) }
            killed.waitUntilExit()
            // A run that ended before the kill says why (its status and standard error).
            let why = killed.terminationReason == .uncaughtSignal ? ""
                : "exit status \(killed.terminationStatus) after \(server.statistics.bundleRequests - before) bundle requests: " + ((try? String(contentsOfFile: killedErrors, encoding: .utf8)) ?? "")
            #expect(killed.terminationReason == .uncaughtSignal, "\(why)")
            let resumed = try UploadFixtures.startUploader(arguments)
            resumed.waitUntilExit()
            #expect(resumed.terminationStatus == 0)
            server.chaos(rate: 0, seed: 1, kinds: [])

            try await expectExactlyTheArtifacts(folders.new, on: server)
            let verifyDelta = try await Verifier(folder: folders.delta, options: UploadFixtures.options(server)).run()
            #expect(verifyDelta.deletesExpected == folders.waves.removed.count && verifyDelta.stillPresent.isEmpty && verifyDelta.isClean)
            let renamed = server.resources(ofType: "Patient").filter { $0["name"]?.arrayValue?.first?["family"]?.stringValue == "Renamed1" }
            #expect(renamed.count == 1)
            // A replay changes nothing: every entry, deletes included, is journalled as done.
            let replay = try await Uploader(folder: folders.delta, options: UploadFixtures.options(server)).run()
            #expect(replay.written == 0 && replay.deleted.isEmpty && replay.failures == 0)
        }
    }

    @Test func aDeltaUploadedToSekmetLeavesItEqualToTheSecondWave() async throws {
        let server = try await SekmetServer.start(executable: try TestPrerequisite.sekmet.path())
        defer { server.stop() }
        let dir = NSTemporaryDirectory() + "delta-sekmet-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let folders = try convertWavesAndDelta(in: dir, patients: 40, batchEntries: 20)
        var options = UploadOptions(server: server.base)
        options.retry = RetryPolicy(maxAttempts: 3, baseDelay: 0.05, maxDelay: 0.2)
        let first = try await Uploader(folder: folders.old, options: options).run()
        #expect(first.failures == 0)
        let delta = try await Uploader(folder: folders.delta, options: options).run()
        #expect(delta.failures == 0)
        #expect(delta.deleted == ["Patient": 4, "Condition": 4, "Encounter": 4])
        let verifyNew = try await Verifier(folder: folders.new, options: options).run()
        #expect(verifyNew.isClean, "missing \(verifyNew.missing.count), duplicated \(verifyNew.duplicated.count), links \(verifyNew.links.problems)")
        let verifyDelta = try await Verifier(folder: folders.delta, options: options).run()
        #expect(verifyDelta.deletesExpected == 12 && verifyDelta.stillPresent.isEmpty)
        for (type, e) in folders.waves.expected {
            let total = try await server.search("\(type)?_summary=count")["total"]
            #expect(total == .number(String(e.added + e.changed + e.unchanged)), "\(type)")
        }
    }
}
