import FHIRArtifacts
import FHIRConvert
import FHIRModel
import FHIRTestSupport
@testable import FHIRUpload
import Foundation
import Testing

private let root = TestRepository.root

private func seedArtifacts() throws -> (folder: String, manifest: Manifest) {
    let dir = NSTemporaryDirectory() + "upload-\(UUID().uuidString)"
    let summary = try Converter(options: ConvertOptions(mappingPath: root + "/fixtures/medplum-example/mapping.yaml", outputPath: dir)).run()
    return (dir, summary.manifest)
}

struct RetryPolicyTests {
    @Test(arguments: [(408, true), (429, true), (500, true), (503, true), (400, false), (404, false), (412, false), (201, false)])
    func retryableStatuses(status: Int, retryable: Bool) {
        #expect(RetryPolicy.isRetryable(status: status) == retryable)
    }

    @Test func backoffGrowsExponentiallyWithJitterAndStops() {
        let policy = RetryPolicy(maxAttempts: 4, baseDelay: 1, maxDelay: 10)
        #expect(policy.delay(afterAttempt: 1, random: { 0.5 }) == 0.5)
        #expect(policy.delay(afterAttempt: 3, random: { 0.5 }) == 2)
        #expect(policy.delay(afterAttempt: 3, random: { 0.999 })! < 4)
        #expect(policy.delay(afterAttempt: 4, random: { 0.5 }) == nil)
    }

    @Test func retryAfterWinsOverBackoff() {
        #expect(RetryPolicy().delay(afterAttempt: 1, headers: [("Retry-After", "7")], random: { 0 }) == 7)
    }

    @Test func medplumRateLimitHeaderGivesTheWaitOfAnExhaustedPolicy() {
        let headers = [(name: "RateLimit", value: #""requests";r=59539;t=4, "fhirInteractions";r=0;t=3"#)]
        #expect(RateLimitPolicy.parse(headers[0].value) == [
            RateLimitPolicy(name: "requests", remaining: 59539, secondsUntilReset: 4),
            RateLimitPolicy(name: "fhirInteractions", remaining: 0, secondsUntilReset: 3),
        ])
        #expect(RetryPolicy.serverDelay(headers) == 3)
        #expect(RetryPolicy.serverDelay([("RateLimit", #""requests";r=5;t=60"#)]) == nil)
    }
}

struct EntryOutcomeTests {
    @Test func batchResponseEntriesGiveStatusLocationAndOperationOutcome() throws {
        let response = try JSONParser.parse("""
            {"resourceType":"Bundle","type":"batch-response","entry":[
              {"response":{"status":"201 Created","location":"Patient/1/_history/1"}},
              {"response":{"status":"412 Precondition Failed","outcome":{"resourceType":"OperationOutcome","issue":[
                {"severity":"error","code":"duplicate","diagnostics":"Multiple resources found matching condition","expression":["Patient.identifier"]}]}}},
              {"response":{"status":"429"}}
            ]}
            """)
        let outcomes = try #require(EntryOutcome.parse(responseBundle: response))
        #expect(outcomes.map(\.status) == [201, 412, 429])
        #expect(outcomes[0].succeeded && outcomes[0].location == "Patient/1/_history/1")
        #expect(outcomes[1].issues == ["error duplicate: Multiple resources found matching condition (Patient.identifier)"])
        #expect(!outcomes[1].isRetryable && outcomes[2].isRetryable)
        #expect(EntryOutcome.parse(responseBundle: .object([JSONMember("resourceType", .string("Patient"))])) == nil)
    }
}

struct UploadJournalTests {
    @Test func succeededEntriesSurviveARestartOfTheProcess() throws {
        let (folder, _) = try seedArtifacts()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        do {
            let journal = try UploadJournal(directory: folder + "/upload/test")
            try journal.record(request: "bundles/01-patients/0001.json", outcomes: [
                (0, EntryOutcome(status: 201, location: "Patient/a", issues: [])),
                (1, EntryOutcome(status: 503, location: nil, issues: [])),
            ])
        }
        let reopened = try UploadJournal(directory: folder + "/upload/test")
        #expect(reopened.succeededEntries(of: "bundles/01-patients/0001.json") == [0])
        try reopened.record(request: "bundles/01-patients/0001.json", outcomes: [(1, EntryOutcome(status: 200, location: nil, issues: []))])
        #expect(try UploadJournal(directory: folder + "/upload/test", exclusive: false).succeededEntries(of: "bundles/01-patients/0001.json") == [0, 1])
    }

    @Test func aTornLastLineIsIgnoredAndLaterRecordsStillCount() throws {
        let (folder, _) = try seedArtifacts()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try FileManager.default.createDirectory(atPath: folder + "/upload/test", withIntermediateDirectories: true)
        try #"{"request":"a","entries":[{"index":0,"status":201}]}"#.appending("\n{\"request\":\"b\",\"entr").write(
            toFile: folder + "/upload/test/" + UploadJournal.fileName, atomically: true, encoding: .utf8)
        let journal = try UploadJournal(directory: folder + "/upload/test")
        #expect(journal.succeededEntries(of: "a") == [0])
        try journal.record(request: "b", outcomes: [(0, EntryOutcome(status: 201, location: nil, issues: []))])
        #expect(try UploadJournal(directory: folder + "/upload/test", exclusive: false).succeededEntries(of: "b") == [0])
    }

    @Test func permanentFailuresAreKeptWithTheirOutcomeAndRestartForgetsEverything() throws {
        let (folder, _) = try seedArtifacts()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let journal = try UploadJournal(directory: folder + "/upload/test")
        try journal.record(request: "x", outcomes: [(2, EntryOutcome(status: 400, location: nil, issues: ["error invalid: bad"]))])
        #expect(journal.failedEntries(of: "x")[2]?.issues == ["error invalid: bad"])
        try journal.restart()
        #expect(try UploadJournal(directory: folder + "/upload/test", exclusive: false).failedEntries(of: "x").isEmpty)
    }

    @Test func aSecondUploaderOnTheSameFolderIsRefusedUntilTheFirstEnds() throws {
        let (folder, _) = try seedArtifacts()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        do {
            let first = try UploadJournal(directory: folder + "/upload/test")
            #expect(throws: UploadError.self) { _ = try UploadJournal(directory: folder + "/upload/test") }
            #expect(try UploadJournal(directory: folder + "/upload/test", exclusive: false).succeededEntries(of: "x").isEmpty)  // a dry run may read
            _ = first
        }
        _ = try UploadJournal(directory: folder + "/upload/test")  // the first has ended
    }

    @Test func theJournalDoesNotDisturbValidation() throws {
        let (folder, _) = try seedArtifacts()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try UploadJournal(directory: folder + "/upload/test").record(request: "x", outcomes: [(0, EntryOutcome(status: 201, location: nil, issues: []))])
        let report = try FHIRValidationShim.validate(folder)
        #expect(report == 0)
    }
}

struct UploadPlanTests {
    @Test func stepsFollowTheManifestAndNestedTransactionsSplitOnRequest() throws {
        let (folder, manifest) = try seedArtifacts()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let nested = try UploadPlan.make(folder: folder, manifest: manifest, splitTransactions: false)
        #expect(nested.steps.map(\.name) == ["patients", "conditions", "encounters"])
        #expect(nested.steps[2].requests.count == 1)
        #expect(nested.steps[2].requests[0].writes.count == 4)  // 2 encounters + 2 notes
        let split = try UploadPlan.make(folder: folder, manifest: manifest, splitTransactions: true)
        #expect(split.steps[2].requests.map(\.id) == ["bundles/03-encounters/0001.json#0", "bundles/03-encounters/0001.json#1"])
        let inner = try JSONParser.parse(split.steps[2].requests[0].loadBody(from: VerifiedFiles(folder: folder, manifest: manifest)))
        #expect(inner["type"] == .string("transaction"))
        #expect(split.steps[2].requests[0].entryCount == 2)
        #expect(Set(nested.steps[0].requests[0].writes).isDisjoint(with: Set(nested.steps[1].requests[0].writes)))
    }
}

struct DryRunTests {
    @Test func dryRunPlansAndCountsWhatAnEarlierRunWroteWithoutSending() throws {
        let (folder, _) = try seedArtifacts()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        // Nothing listens on port 9: a dry run must not connect.
        let uploader = Uploader(folder: folder, options: UploadOptions(server: "http://127.0.0.1:9"))
        let directory = uploader.target.directory(inFolder: folder)
        try UploadJournal(directory: directory).record(request: "bundles/01-patients/0001.json", outcomes: [
            (0, EntryOutcome(status: 201, location: nil, issues: [])), (1, EntryOutcome(status: 200, location: nil, issues: [])),
        ])
        let manifest = try #require(FileManager.default.contents(atPath: folder + "/manifest.json"))
        try TargetRecord(server: uploader.target.server, principal: uploader.target.principal, manifestSHA256: sha256Hex(Array(manifest)))
            .write(directory: directory)
        let (plan, written, validation) = try uploader.dryRun()
        #expect(plan.steps.map { $0.requests.count } == [1, 1, 1])
        #expect(written == 2)
        #expect(validation.errors == 0)
    }
}
