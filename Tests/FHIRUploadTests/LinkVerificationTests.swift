import FHIRModel
import FHIRTestServer
@testable import FHIRUpload
import Foundation
import Testing

/// `verify` checks the links of the server's copies, and the uploader makes sure a server that does not resolve
/// conditional references in batches still ends with resolved links.
@Suite(.serialized)
struct LinkVerificationTests {
    private static var storingUnresolved: ServerLimits {
        var limits = ServerLimits()
        limits.resolvesBatchConditionalReferences = false
        return limits
    }

    @Test func linksOnAServerThatResolvesThemVerifyClean() async throws {
        try await UploadFixtures.withServer { server, folder in
            _ = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            let verify = try await Verifier(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(verify.isClean)
            // 3 Condition.subject, 2 Encounter.subject, 2 ClinicalImpression.subject and .encounter.
            #expect(verify.links.checked == 9 && verify.links.resourcesChecked == 7)
        }
    }

    @Test func aServerThatStoresBatchReferencesUnresolvedGetsThoseBatchesAsTransactions() async throws {
        try await UploadFixtures.withServer(limits: Self.storingUnresolved) { server, folder in
            let log = EventLog()
            let report = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run(events: log.record)
            #expect(report.failures == 0)
            #expect(report.created["Condition"] == 3 && report.updated["Condition"] == nil)  // the probe's writes count once
            #expect(report.transactionSteps == ["conditions"])
            #expect(log.all.contains { if case .batchReferencesUnresolved(step: "conditions", chunkSize: 8) = $0 { true } else { false } })
            let patients = Set(server.resources(ofType: "Patient").compactMap { $0["id"]?.stringValue.map { "Patient/" + $0 } })
            for condition in server.resources(ofType: "Condition") {
                #expect(patients.contains(condition["subject"]?["reference"]?.stringValue ?? ""))
            }
            let verify = try await Verifier(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(verify.isClean, "\(verify.links.examples)")
            // What the uploader learnt is kept: a rerun sends transactions straight away and skips what they wrote.
            let rerun = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(rerun.written == 0 && rerun.skipped == 9 && rerun.transactionSteps == ["conditions"])
        }
    }

    @Test func verifyFailsWhereTheServerKeptConditionalReferencesUnresolved() async throws {
        try await UploadFixtures.withServer(limits: Self.storingUnresolved) { server, folder in
            // An earlier run saw this server resolve them (it changed since): batches go as they are.
            let uploader = Uploader(folder: folder, options: UploadFixtures.options(server))
            let directory = uploader.target.directory(inFolder: folder)
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let manifest = try #require(FileManager.default.contents(atPath: folder + "/manifest.json"))
            try TargetRecord(server: uploader.target.server, principal: uploader.target.principal, manifestSHA256: sha256Hex(Array(manifest)),
                             resolvesBatchConditionalReferences: true).write(directory: directory)
            _ = try await uploader.run()
            let verify = try await Verifier(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(verify.missing.isEmpty && verify.duplicated.isEmpty)
            #expect(!verify.isClean)
            #expect(verify.links.problems[.unresolved] == ["Condition.subject → Patient": 3])
            #expect(verify.links.examples.first?.contains("stored unresolved (Patient?…)") == true)
        }
    }

    @Test func aReferenceToAResourceThatIsGoneIsDangling() async throws {
        try await UploadFixtures.withServer { server, folder in
            _ = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            server.delete(type: "Patient", system: "http://your-source-system.com/patientId", value: "P001")
            let verify = try await Verifier(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(verify.missing.map(\.value) == ["P001"])
            // P001's two conditions, its encounter and that encounter's note refer to it.
            #expect(verify.links.problems[.dangling]?["Condition.subject → Patient"] == 2)
            #expect(verify.links.problemCount == 4)
        }
    }

    @Test func aSampleChecksTheLinksOfTheFirstResourcesOfEachType() async throws {
        try await UploadFixtures.withServer { server, folder in
            _ = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            let verify = try await Verifier(folder: folder, options: UploadFixtures.options(server), links: .sample(1)).run()
            #expect(verify.links.resourcesChecked == 3 && verify.links.resourcesSkipped == 4)
            let none = try await Verifier(folder: folder, options: UploadFixtures.options(server), links: .none).run()
            #expect(none.links.checked == 0 && none.isClean)
        }
    }
}
