import FHIRModel
import FHIRTestServer
import FHIRTestSupport
@testable import FHIRUpload
import Foundation
import Testing

/// Before anything is sent, the server's CapabilityStatement is checked against what the folder writes.
struct PreflightTests {
    /// A CapabilityStatement shaped like sekmet-fhir's: Provenance without an identifier search, no CareTeam.
    private func capability() throws -> JSONValue {
        try JSONParser.parse(#"""
        {"resourceType":"CapabilityStatement","rest":[{"mode":"server","interaction":[{"code":"batch"}],"resource":[
          {"type":"Patient","interaction":[{"code":"update"},{"code":"create"}],"conditionalUpdate":true,"searchParam":[{"name":"identifier"},{"name":"name"}]},
          {"type":"Provenance","interaction":[{"code":"update"},{"code":"create"}],"conditionalUpdate":true,"searchParam":[{"name":"target"}]},
          {"type":"Device","interaction":[{"code":"read"}]}
        ]}]}
        """#)
    }

    @Test func whatTheServerLacksIsNamedByTypeAndCount() throws {
        let capability = try capability()
        var needs = ServerNeeds()
        needs.transaction = true
        needs.types["Patient"] = .init(resources: 3, conditionalUpdates: 3)
        needs.types["Provenance"] = .init(resources: 2, conditionalUpdates: 2)
        needs.types["CareTeam"] = .init(resources: 5, conditionalUpdates: 5)
        needs.types["Device"] = .init(resources: 1, conditionalUpdates: 1)
        #expect(Preflight.problems(capability: capability, needs: needs) == [
            "the server offers no transaction interaction, which this folder's transactions need",
            "CareTeam (5 resources): the server does not offer this type",
            "Device (1 resource): no update",
            "Provenance (2 resources): no identifier search, which its conditional updates need",
        ])
        // A delta's conditional deletes need delete, conditional delete and the identifier search.
        let deleting = try JSONParser.parse("""
            {"resourceType":"CapabilityStatement","rest":[{"mode":"server","interaction":[{"code":"batch"}],"resource":[
              {"type":"Patient","interaction":[{"code":"update"},{"code":"delete"}],"conditionalDelete":"single","searchParam":[{"name":"identifier"}]},
              {"type":"Condition","interaction":[{"code":"update"}],"searchParam":[{"name":"identifier"}]},
              {"type":"Encounter","interaction":[{"code":"update"},{"code":"delete"}],"conditionalDelete":"not-supported"}]}]}
            """)
        var deletes = ServerNeeds()
        deletes.batch = true
        deletes.types["Patient"] = .init(conditionalDeletes: 4)
        deletes.types["Condition"] = .init(conditionalDeletes: 1)
        deletes.types["Encounter"] = .init(resources: 2, conditionalUpdates: 2, conditionalDeletes: 3)
        #expect(Preflight.problems(capability: deleting, needs: deletes) == [
            "Condition (1 delete): no delete",
            "Encounter (2 resources, 3 deletes): no conditional delete, which the delta's deletes need",
        ])
        // Provenance written by PUT Provenance/id needs no search.
        var byID = ServerNeeds()
        byID.types["Provenance"] = .init(resources: 2, updatesByID: 2)
        #expect(Preflight.problems(capability: capability, needs: byID).isEmpty)
    }

    @Test func aServerWithoutATypeIsRefusedBeforeAnyWriteAndSkipPreflightSendsTheRest() async throws {
        var limits = ServerLimits()
        limits.offeredTypes = ["Patient", "Condition", "Encounter"]
        try await UploadFixtures.withServer(limits: limits) { server, folder in
            do {
                _ = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
                Issue.record("expected a preflight refusal")
            } catch let UploadRefusal.preflight(problems) {
                #expect(problems == ["ClinicalImpression (2 resources): the server does not offer this type"])
            }
            #expect(server.statistics.bundleRequests == 0)
            #expect(!FileManager.default.fileExists(atPath: folder + "/upload"))  // nothing written locally either
            var options = UploadFixtures.options(server)
            options.skipPreflight = true
            let report = try await Uploader(folder: folder, options: options).run()
            #expect(report.written == 9)  // this test server takes any type, whatever it says
        }
    }

    @Test func aFolderWithoutAManifestIsSentToRebundle() async throws {
        do {
            _ = try await Uploader(folder: TestRepository.fixture("synthea-fhir"), options: UploadOptions(server: "http://127.0.0.1:9")).run()
            Issue.record("expected a refusal")
        } catch let refusal as UploadRefusal {
            #expect(refusal.description.contains("has no manifest.json") && refusal.description.contains("fhirbundle rebundle"))
        }
    }
}

/// Where the journal goes when the folder cannot be written.
struct JournalLocationTests {
    @Test func aReadOnlyFolderKeepsItsJournalInTheUsersStateFolderNamedAfterTheManifest() throws {
        let folder = NSTemporaryDirectory() + "readonly-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let uploader = Uploader(folder: folder, options: UploadOptions(server: "http://127.0.0.1:9"))
        #expect(uploader.journalRoot(manifestSHA256: "ab").path == folder + "/upload")
        let state = NSTemporaryDirectory() + "state-\(UUID().uuidString)"
        let elsewhere = Uploader.journalRoot(folder: folder, explicit: nil, writable: false, manifestSHA256: "0123456789abcdef0123", environment: ["XDG_STATE_HOME": state])
        #expect(elsewhere.path == state + "/fhirupload/0123456789abcdef")
        #expect(elsewhere.note?.contains("cannot be written") == true)
        var options = UploadOptions(server: "http://127.0.0.1:9")
        options.journalRoot = "/media/usb/journal"
        #expect(Uploader(folder: folder, options: options).journalRoot(manifestSHA256: "ab").path == "/media/usb/journal")
    }
}
