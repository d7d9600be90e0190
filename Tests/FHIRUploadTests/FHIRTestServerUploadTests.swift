import FHIRArtifacts
import FHIRConvert
import FHIRModel
import FHIRTestServer
import FHIRTestSupport
@testable import FHIRUpload
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// This test process's folder for the converted fixtures, removed when the process exits.
private let fixtureScratchPath = NSTemporaryDirectory() + "upload-fixtures-\(getpid())"
private let fixtureScratch: String = {
    try? FileManager.default.createDirectory(atPath: fixtureScratchPath, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: fixtureScratchPath) }
    return fixtureScratchPath
}()

/// Artifact folders for the upload tests, converted once and copied per test (each test gets its own journal).
///
/// A conversion that fails is kept as its error, so each test that needs the folder fails with it and the others
/// run on (a crash here would take the whole test process down).
enum UploadFixtures {
    private static let seed = convert("medplum-example/mapping.yaml", batchSize: nil)
    /// The Synthea mapping's output in bundles of 100 entries: about 26,000 resources in some 270 requests.
    private static let synthea = convert("synthea/mapping.yaml", batchSize: 100)

    private static func convert(_ mapping: String, batchSize: Int?) -> Result<String, any Error> {
        let dir = fixtureScratch + "/\(UUID().uuidString)"
        var options = ConvertOptions(mappingPath: TestRepository.fixture(mapping), outputPath: dir)
        if let batchSize { options.limitOverrides[.batchEntries] = batchSize }
        return Result { _ = try Converter(options: options).run(); return dir }
    }

    /// One batch of two types: each patient of the example and a Practitioner with the same id (4 entries).
    private static let mixedBatch: Result<String, any Error> = Result {
        let dir = fixtureScratch + "/mixed-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try """
            version: 1
            sources:
              patients: { file: \(TestRepository.fixture("medplum-example/patients.csv")) }
            steps:
              - name: people
                source: patients
                bundle: batch
                resources:
                  patient:
                    resourceType: Patient
                    identifier: [{ system: "http://example.org/patient", value: "{{ patient_id }}" }]
                    name: [{ family: "{{ last_name }}" }]
                  practitioner:
                    resourceType: Practitioner
                    identifier: [{ system: "http://example.org/practitioner", value: "{{ patient_id }}" }]
                    name: [{ family: "{{ last_name }}" }]
            """.write(toFile: dir + "/mapping.yaml", atomically: true, encoding: .utf8)
        _ = try Converter(options: ConvertOptions(mappingPath: dir + "/mapping.yaml", outputPath: dir + "/out")).run()
        return dir + "/out"
    }

    /// A fresh copy of the seed example's artifacts (Medplum's three steps, 9 resources).
    static func seedCopy() throws -> String { try copy(seed.get()) }
    static func syntheaCopy() throws -> String { try copy(synthea.get()) }
    static func mixedBatchCopy() throws -> String { try copy(mixedBatch.get()) }

    private static func copy(_ folder: String) throws -> String {
        let dir = NSTemporaryDirectory() + "upload-\(UUID().uuidString)"
        try FileManager.default.copyItem(atPath: folder, toPath: dir)
        return dir
    }

    /// A JSON Web Token with these claims and a meaningless signature (the uploader only reads the claims).
    static func unsignedJWT(claims: String) -> String {
        let payload = Data(claims.utf8).base64EncodedString()
            .replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        return "eyJhbGciOiJSUzI1NiJ9.\(payload).c2lnbmF0dXJl"
    }

    /// Runs `body` with another test server (another origin), shut down afterwards.
    static func withOtherServer(_ body: (FHIRTestServer) async throws -> Void) async throws {
        let other = try await FHIRTestServer.start()
        do {
            try await body(other)
        } catch {
            try? await other.shutdown()
            throw error
        }
        try? await other.shutdown()
    }

    /// The one server folder under `folder/upload/` (its journal, failures and target record), for tests that
    /// upload to one server.
    static func targetFolder(_ folder: String) throws -> String {
        let names = try FileManager.default.contentsOfDirectory(atPath: folder + "/upload").filter { name in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: folder + "/upload/" + name, isDirectory: &isDirectory) && isDirectory.boolValue
        }
        try #require(names.count == 1, "expected one server folder under upload/, found \(names)")
        return folder + "/upload/" + names[0]
    }

    /// "Type system|value" of every identifier the folder's conditional updates search for.
    static func keyIdentifiers(_ folder: String) throws -> Set<String> {
        let manifest = try Manifest(json: JSONParser.parse(Array(try #require(FileManager.default.contents(atPath: folder + "/manifest.json")))))
        var keys = Set<String>()
        func collect(_ bundle: JSONValue) {
            for entry in bundle["entry"]?.arrayValue ?? [] {
                if entry["request"]?["url"]?.stringValue == "/", let inner = entry["resource"] { collect(inner) }
                if let url = entry["request"]?["url"]?.stringValue, let parsed = ConditionalURL.parseIdentifier(url) {
                    keys.insert("\(parsed.type) \(parsed.system)|\(parsed.value)")
                }
            }
        }
        for file in manifest.steps.flatMap(\.bundles) {
            collect(try JSONParser.parse(Array(try #require(FileManager.default.contents(atPath: folder + "/" + file)))))
        }
        return keys
    }

    /// The resource counts the manifest promises.
    static func expectedCounts(_ folder: String) throws -> [String: Int] {
        let manifest = try JSONParser.parse(Array(try #require(FileManager.default.contents(atPath: folder + "/manifest.json"))))
        var counts: [String: Int] = [:]
        for member in manifest["resourceCounts"]?.objectMembers ?? [] {
            if case .number(let n) = member.value { counts[member.key] = Int(n) }
        }
        return counts
    }

    /// Runs `body` with a fresh test server and a fresh copy of an artifact folder (the seed example unless
    /// `folder` says otherwise), then shuts the server down and removes the copy.
    static func withServer(limits: ServerLimits = ServerLimits(), folder copy: () throws -> String = seedCopy,
                           _ body: (FHIRTestServer, String) async throws -> Void) async throws {
        let server = try await FHIRTestServer.start(limits: limits)
        let folder: String
        do { folder = try copy() } catch {
            try? await server.shutdown()
            throw error
        }
        do {
            try await body(server, folder)
        } catch {
            try? await server.shutdown()
            try? FileManager.default.removeItem(atPath: folder)
            throw error
        }
        try? await server.shutdown()
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// Starts the built `fhirupload` (beside the test bundle) with `arguments`, output discarded.
    /// Starts `fhirupload`; with `stderr`, its standard error goes to that file (to say why a run ended early).
    static func startUploader(_ arguments: [String], stderr: String? = nil) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestRepository.builtExecutable("fhirupload"))
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        if let stderr, FileManager.default.createFile(atPath: stderr, contents: nil), let handle = FileHandle(forWritingAtPath: stderr) {
            process.standardError = handle
        } else {
            process.standardError = FileHandle.nullDevice
        }
        try process.run()
        return process
    }

    /// Fast retries, so fault tests take seconds.
    static func options(_ server: FHIRTestServer) -> UploadOptions {
        var options = UploadOptions(server: server.baseURL)
        options.retry = RetryPolicy(maxAttempts: 10, baseDelay: 0.05, maxDelay: 0.5)
        options.timeout = 10
        return options
    }
}

/// The server holds exactly what the folder promises: the counts per type, no key identifier twice (identifiers
/// that no conditional update uses, such as Synthea's claim group, may be shared), and `fhirupload verify` agrees.
func expectExactlyTheArtifacts(_ folder: String, on server: FHIRTestServer, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    #expect(server.resourceCounts == (try UploadFixtures.expectedCounts(folder)), sourceLocation: sourceLocation)
    let keys = try UploadFixtures.keyIdentifiers(folder)
    #expect(server.duplicatedIdentifiers().filter { keys.contains($0.key) }.isEmpty, sourceLocation: sourceLocation)
    let verify = try await Verifier(folder: folder, options: UploadFixtures.options(server)).run()
    #expect(verify.isClean && verify.expected > 0, "missing \(verify.missing.count), duplicated \(verify.duplicated.count)", sourceLocation: sourceLocation)
}

@Suite(.serialized)
struct FHIRTestServerUploadTests {
    @Test func theSeedUploadsWithNestedTransactionsAndConditionalReferencesResolved() async throws {
        try await UploadFixtures.withServer { server, folder in
            let report = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(report.created == ["Patient": 2, "Condition": 3, "Encounter": 2, "ClinicalImpression": 2])
            #expect(report.failures == 0 && report.requests == 3)
            // Conditional references (Condition.subject) and urn:uuid references (ClinicalImpression.encounter) became ids.
            let patientIDs = Set(server.resources(ofType: "Patient").compactMap { $0["id"]?.stringValue })
            for condition in server.resources(ofType: "Condition") {
                let reference = try #require(condition["subject"]?["reference"]?.stringValue)
                #expect(patientIDs.contains(String(reference.dropFirst("Patient/".count))))
            }
            let encounterIDs = Set(server.resources(ofType: "Encounter").compactMap { $0["id"]?.stringValue })
            for note in server.resources(ofType: "ClinicalImpression") {
                #expect(encounterIDs.contains(String((note["encounter"]?["reference"]?.stringValue ?? "").dropFirst("Encounter/".count))))
            }
        }
    }

    @Test func uploadingTwiceSkipsAndRestartingUpdatesWithoutDuplicates() async throws {
        try await UploadFixtures.withServer { server, folder in
            var options = UploadFixtures.options(server)
            _ = try await Uploader(folder: folder, options: options).run()
            let second = try await Uploader(folder: folder, options: options).run()
            #expect(second.skipped == 9 && second.written == 0 && server.statistics.bundleRequests == 3)
            options.restart = true
            let third = try await Uploader(folder: folder, options: options).run()
            #expect(third.updated == ["Patient": 2, "Condition": 3, "Encounter": 2, "ClinicalImpression": 2])
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test(arguments: [
        [Fault.dropConnection, .dropConnection],
        [Fault.status(500), .status(503)],
        [Fault.dropAfterApplying],
        [Fault.status(429, retryAfter: nil)],
        [Fault.notFHIR],
    ])
    func transientFaultsAreRetriedUntilEverythingIsWritten(faults: [Fault]) async throws {
        try await UploadFixtures.withServer { server, folder in
            server.inject(faults)
            let report = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(report.failures == 0 && report.written == 9)
            #expect(server.statistics.bundleRequests == 3 + faults.count)
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test func entriesThatNeverSucceedAreReportedWithTheLastProblem() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.inject([.notFHIR, .notFHIR, .notFHIR])
            var options = UploadFixtures.options(server)
            options.retry.maxAttempts = 3
            let report = try await Uploader(folder: folder, options: options).run()
            #expect(report.failed["Patient"] == 2)  // two entries that were never written
            let failures = try String(contentsOfFile: UploadFixtures.targetFolder(folder) + "/failures.ndjson", encoding: .utf8)
            #expect(failures.contains("gave up after 3 attempts; last: HTTP 200 without a batch-response bundle of 2 entries"))
            #expect(server.resourceCounts["Patient"] == nil)
        }
    }

    @Test func retryAfterIsHonoured() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.inject([.status(429, retryAfter: 1)])
            let started = Date()
            let report = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(Date().timeIntervalSince(started) >= 1)
            #expect(report.failures == 0)
        }
    }

    @Test func medplumsRateLimitInABatchResendsOnlyTheThrottledEntriesAfterTheReset() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.inject([.rateLimitFromEntry(1, resetSeconds: 1)])  // the Patient batch: entry 0 written, entry 1 throttled
            let started = Date()
            let report = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(Date().timeIntervalSince(started) >= 1)  // waited for the RateLimit reset (no Retry-After sent)
            #expect(report.failures == 0 && report.created["Patient"] == 2)
            #expect(server.statistics.bundleEntryCounts.prefix(2) == [2, 1])  // the resend carried only the throttled entry
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test func aPermanentEntryFailureIsReportedWithItsOperationOutcomeAndTheRestGoesOn() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.inject([.failEntries([0], status: 400)])  // Patient P001
            let report = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            // What refers to P001 fails in turn (its conditional reference matches nothing): two Conditions and one
            // Encounter transaction. The other patient's resources are written.
            #expect(report.failed == ["Patient": 1, "Condition": 2, "Encounter": 1, "ClinicalImpression": 1])
            #expect(report.written == 4)
            let failures = try String(contentsOfFile: UploadFixtures.targetFolder(folder) + "/failures.ndjson", encoding: .utf8)
            #expect(failures.contains("\"status\":400") && failures.contains("Injected failure 400"))
            #expect(failures.contains("The conditional reference Patient?… matches 0 resources"))
            let verify = try await Verifier(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(verify.missing.map(\.type) == ["ClinicalImpression", "Condition", "Condition", "Encounter", "Patient"])
            // A rerun sends the failed entries again, and only them.
            let rerun = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(rerun.written == 5 && rerun.skipped == 4 && rerun.failures == 0)
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test func aSlowResponseTimesOutAndTheResendUpdatesInsteadOfDuplicating() async throws {
        try await UploadFixtures.withServer { server, folder in
            // The answer comes 30 s after the write, far beyond the 1 s timeout, so that a loaded machine (where the
            // client's event loop may stall for seconds) cannot let it arrive in time: a resend must follow.
            server.inject([.slow(seconds: 30)])
            var options = UploadFixtures.options(server)
            options.timeout = 1
            let report = try await Uploader(folder: folder, options: options).run()
            #expect(report.failures == 0)
            #expect(report.updated["Patient"] == 2)  // the slow request had written them; the resend matched them
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test func aServerCrashMidUploadIsWaitedOut() async throws {
        try await UploadFixtures.withServer { server, folder in
            // The second request (the Condition batch) finds the server dying; it is back a second later.
            server.inject([.pass, .crash(downFor: 1)])
            var options = UploadFixtures.options(server)
            options.retry.maxAttempts = 40  // backoff with full jitter must outlast the second of downtime, always
            let first = try await Uploader(folder: folder, options: options).run()
            #expect(first.failures == 0)
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test func nestedTransactionsBeyondTheServersCapAreRefusedAsAWhole() async throws {
        var limits = ServerLimits()
        limits.conditionalTransactionEntries = 1
        try await UploadFixtures.withServer(limits: limits) { server, folder in
            let report = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(report.failed == ["Encounter": 2, "ClinicalImpression": 2])
            #expect(server.resourceCounts["Encounter"] == nil)  // all or nothing
            let failures = try String(contentsOfFile: UploadFixtures.targetFolder(folder) + "/failures.ndjson", encoding: .utf8)
            #expect(failures.contains("conditional operations may hold 1 entries"))
        }
    }

    @Test func verifyReportsWhatIsMissingAndWhatIsDuplicated() async throws {
        try await UploadFixtures.withServer { server, folder in
            let before = try await Verifier(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(before.missing.count == 9 && before.expected == 9)
            _ = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            server.delete(type: "Patient", system: "http://your-source-system.com/patientId", value: "P002")
            server.insertDirectly(.object([JSONMember("resourceType", .string("Condition")), JSONMember("identifier", .array([.object([
                JSONMember("system", .string("http://your-source-system.com/patientConditionId")), JSONMember("value", .string("PC001")),
            ])]))]))
            let after = try await Verifier(folder: folder, options: UploadFixtures.options(server), batchSize: 2).run()
            #expect(after.missing == [ExpectedIdentifier(type: "Patient", system: "http://your-source-system.com/patientId", value: "P002")])
            #expect(after.duplicated.map(\.identifier.value) == ["PC001"] && after.duplicated.first?.count == 2)
            #expect(after.searches >= 5)  // batches of two identifiers
        }
    }
}
