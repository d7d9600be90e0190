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

/// `fhirupload --async` against the test server's model of Medplum's asynchronous batches (see
/// Tests/FHIRTestServer/AsyncJobs.swift) and of its FHIR interaction quota (InteractionQuota.swift).
@Suite(.serialized)
struct AsyncUploadTests {
    static func asyncOptions(_ server: FHIRTestServer) -> UploadOptions {
        var options = UploadFixtures.options(server)
        options.async = true
        options.firstPoll = 0.02
        options.longestPoll = 0.2
        return options
    }

    @Test func batchesGoAsJobsAndTransactionsSynchronouslyLeavingExactlyTheArtifacts() async throws {
        try await UploadFixtures.withServer { server, folder in
            let log = EventLog()
            let report = try await Uploader(folder: folder, options: Self.asyncOptions(server)).run(events: log.record)
            #expect(report.failures == 0 && report.created.values.reduce(0, +) == 9)
            // Patients and conditions are batches: one job each. Encounters are a batch of transactions: synchronous.
            #expect(report.asyncJobs == 2 && server.statistics.asyncJobs == 2 && server.statistics.asyncRefused == 0)
            #expect(report.synchronousSteps == ["encounters"])
            #expect(log.all.contains { if case .synchronousStep("encounters", 1) = $0 { true } else { false } })
            #expect(server.statistics.binaryReads == 2)
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test(arguments: [false, true])
    func theResultIsReadAsRawBytesOrAsABinaryResource(binaryAsResource: Bool) async throws {
        var limits = ServerLimits()
        limits.binaryAsResource = binaryAsResource
        try await UploadFixtures.withServer(limits: limits) { server, folder in
            let report = try await Uploader(folder: folder, options: Self.asyncOptions(server)).run()
            #expect(report.failures == 0 && report.written == 9)
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test func anAsyncUploadThroughEveryFaultEndsWithExactlyTheArtifacts() async throws {
        try await UploadFixtures.withServer(folder: UploadFixtures.syntheaCopy) { server, folder in
            // Kickoffs: dropped, answered after the job was created (the client submits again: a second job of the
            // same conditional updates), refused with 5xx or 429, slow; jobs: entries that fail retryably, answers in
            // reverse order (refused as a mismatch), jobs that end in error, jobs the server forgets, slow jobs.
            server.chaos(rate: 0.3, seed: 20261204, kinds: [
                .dropConnection, .dropAfterApplying, .status(500), .status(503), .status(429, retryAfter: 0), .slow(seconds: 0.05),
                .failEntries([0, 7], status: 503), .rateLimitFromEntry(10, resetSeconds: 0), .reverseResponses,
            ])
            var jobFaults: [JobFault] = []
            for k in 0..<60 {
                switch k % 6 {
                case 1: jobFaults.append(.fail(afterEntries: 30, message: "Worker lost its database connection"))
                case 3: jobFaults.append(.forget(afterEntries: 5))
                case 4: jobFaults.append(.slow(secondsPerEntry: 0.002))
                default: jobFaults.append(.pass)
                }
            }
            server.inject(jobFaults: jobFaults)
            var options = Self.asyncOptions(server)
            options.concurrency = 8
            options.retry.maxAttempts = 25
            let restart = Task {
                // A restart while jobs run: connections drop, polls fail, the jobs resume from their checkpoints.
                while server.statistics.asyncJobs < 40 { try await Task.sleep(nanoseconds: 5_000_000) }
                server.restart(downFor: 0.5)
            }
            let log = EventLog()
            let report = try await Uploader(folder: folder, options: options).run(events: log.record)
            restart.cancel()
            #expect(report.failures == 0)
            #expect(report.written == (try UploadFixtures.expectedCounts(folder)).values.reduce(0, +))
            #expect(server.statistics.faultsInjected > 30 && server.statistics.asyncJobs > 100)
            #expect(log.all.contains { if case .jobFailed(_, let issues, true) = $0 { issues.contains { $0.contains("database connection") } } else { false } })
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test func aJobThatKeepsFailingLeavesItsEntriesInFailuresWithTheJobsOperationOutcome() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.inject(jobFaults: [.fail(afterEntries: 1, message: "Batch worker crashed"), .fail(afterEntries: 1, message: "Batch worker crashed")])
            var options = Self.asyncOptions(server)
            options.retry.maxAttempts = 2
            let log = EventLog()
            let report = try await Uploader(folder: folder, options: options).run(events: log.record)
            // The patients' job failed twice, with no result for any entry: both patients are given up on.
            #expect(report.failed["Patient"] == 2)
            let failures = try String(contentsOfFile: UploadFixtures.targetFolder(folder) + "/failures.ndjson", encoding: .utf8)
            #expect(failures.contains("Batch worker crashed") && failures.contains("gave up after 2 attempts"))
            let resubmitted = log.all.compactMap { if case .jobFailed(_, _, let again) = $0 { again } else { nil } }
            #expect(resubmitted == [true, false])
            #expect(server.jobStatuses["error"] == 2)
        }
    }

    @Test func killedWhileItsJobRunsTheRerunPollsThatJobInsteadOfSubmittingItAgain() async throws {
        var limits = ServerLimits()
        limits.asyncSecondsPerEntry = 0.4  // the patients' job takes 0.8 s
        try await UploadFixtures.withServer(limits: limits) { server, folder in
            let arguments = [folder, "--server", server.baseURL, "--async", "--quiet"]
            let first = try UploadFixtures.startUploader(arguments)
            // Killed at its first poll: the job is journalled by then, and runs for 0.8 s.
            let pid = first.processIdentifier
            server.when({ $0.asyncPolls >= 1 }) { kill(pid, SIGKILL) }
            first.waitUntilExit()
            #expect(first.terminationReason == .uncaughtSignal)
            let journal = try String(contentsOfFile: UploadFixtures.targetFolder(folder) + "/journal.ndjson", encoding: .utf8)
            #expect(journal.contains("\"job\":\"\(server.baseURL)/job/"))
            #expect(server.jobStatuses["accepted"] == 1)

            let stderr = NSTemporaryDirectory() + "async-rerun-\(UUID().uuidString).txt"
            let second = try UploadFixtures.startUploader(arguments, stderr: stderr)
            second.waitUntilExit()
            #expect(second.terminationStatus == 0, "\((try? String(contentsOfFile: stderr, encoding: .utf8)) ?? "")")
            // Two batches, two jobs in all: the running one was read by the second run, not submitted again.
            #expect(server.statistics.asyncJobs == 2 && server.jobStatuses["completed"] == 2)
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test(arguments: [false, true])
    func ctrlCLeavesTheJobRunningOrCancelsItAsAskedAndSaysWhich(cancel: Bool) async throws {
        var limits = ServerLimits()
        limits.asyncSecondsPerEntry = 0.5
        try await UploadFixtures.withServer(limits: limits) { server, folder in
            let stderr = NSTemporaryDirectory() + "async-interrupt-\(UUID().uuidString).txt"
            let arguments = [folder, "--server", server.baseURL, "--async", "--quiet"] + (cancel ? ["--cancel-on-interrupt"] : [])
            let first = try UploadFixtures.startUploader(arguments, stderr: stderr)
            let pid = first.processIdentifier
            server.when({ $0.asyncPolls >= 1 }) { kill(pid, SIGINT) }
            first.waitUntilExit()
            let said = (try? String(contentsOfFile: stderr, encoding: .utf8)) ?? ""
            #expect(first.terminationStatus == 130, "\(said)")
            if cancel {
                #expect(said.contains("1 asynchronous job was cancelled"), "\(said)")
                #expect(server.jobStatuses["cancelled"] == 1 && server.statistics.asyncCancels == 1)
            } else {
                #expect(said.contains("1 asynchronous job keeps running on the server"), "\(said)")
                #expect(server.statistics.asyncCancels == 0)
            }
            let second = try UploadFixtures.startUploader([folder, "--server", server.baseURL, "--async", "--quiet"])
            second.waitUntilExit()
            #expect(second.terminationStatus == 0)
            // Left running, the job is read by the rerun; cancelled, its entries go in a new one.
            #expect(server.statistics.asyncJobs == (cancel ? 3 : 2))
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test func anAsyncTransactionIsRefusedAsMedplumDoesAndTheUploaderNeverSendsOne() async throws {
        try await UploadFixtures.withServer { server, folder in
            // Medplum (with the transaction-bundles feature) refuses an asynchronous transaction with a 400.
            let client = FHIRClient(base: server.baseURL, credentials: .none, timeout: 10)
            let transaction = Array(#"{"resourceType":"Bundle","type":"transaction","entry":[]}"#.utf8)
            let refused = try await client.send(method: .POST, url: client.base, body: transaction, prefer: "respond-async")
            await client.shutdown()
            #expect(refused.status == 400)
            #expect(EntryOutcome.operationOutcomeIssues(refused.json) == ["error invalid: Transaction batches cannot be executed asynchronously"])

            // The uploader sends transactions (here a batch of them) synchronously, and says so.
            let report = try await Uploader(folder: folder, options: Self.asyncOptions(server)).run()
            #expect(report.failures == 0 && report.synchronousSteps == ["encounters"])
            #expect(server.statistics.asyncRefused == 1)  // only the one above
        }
    }

    @Test func aServerThatRefusesAsyncBatchesGetsEntriesFailedWithWhatToDo() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.inject([.status(400)])
            let report = try await Uploader(folder: folder, options: Self.asyncOptions(server)).run()
            #expect(report.failed["Patient"] == 2)  // and what refers to them
            let failures = try String(contentsOfFile: UploadFixtures.targetFolder(folder) + "/failures.ndjson", encoding: .utf8)
            #expect(failures.contains("upload without --async"))
        }
    }

    @Test func aSynchronousBodyOver1MBIs413AndTheSameBodyAsAJobIsAccepted() async throws {
        var limits = ServerLimits()
        limits.asyncBodyBytes = 3_000_000
        try await UploadFixtures.withServer(limits: limits) { server, _ in
            let client = FHIRClient(base: server.baseURL, credentials: .none, timeout: 10)
            func batch(bytes: Int) -> [UInt8] {
                let filler = String(repeating: "x", count: bytes)
                return Array(#"{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Basic","identifier":[{"system":"s","value":"1"}],"code":{"text":"\#(filler)"}},"request":{"method":"PUT","url":"Basic?identifier=s|1"}}]}"#.utf8)
            }
            let synchronous = try await client.send(method: .POST, url: client.base, body: batch(bytes: 1_500_000))
            let job = try await client.send(method: .POST, url: client.base, body: batch(bytes: 1_500_000), prefer: "respond-async")
            let tooLarge = try await client.send(method: .POST, url: client.base, body: batch(bytes: 3_500_000), prefer: "respond-async")
            await client.shutdown()
            #expect(synchronous.status == 413)  // Medplum's maxJsonSize, 1 MB
            #expect(job.status == 202 && job.headers.contains { $0.name == "Content-Location" && $0.value.hasPrefix(server.baseURL + "/job/") })
            #expect(tooLarge.status == 413)  // maxBatchSize
        }
    }

    @Test func aFolderConvertedWithTheMedplumAsyncProfileUploadsWithAsync() async throws {
        try await UploadFixtures.withServer(folder: {
            let dir = NSTemporaryDirectory() + "async-profile-\(UUID().uuidString)"
            var options = ConvertOptions(mappingPath: TestRepository.fixture("medplum-example/mapping.yaml"), outputPath: dir)
            options.profile = .medplumAsync
            _ = try Converter(options: options).run()
            return dir
        }) { server, folder in
            let report = try await Uploader(folder: folder, options: Self.asyncOptions(server)).run()
            #expect(report.failures == 0 && report.asyncJobs == 2)
            // The batch of transactions goes one inner transaction per request, synchronously (1 MB each at most).
            #expect(report.requests == 4)
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test func aFolderPackedForAsyncBatchesIsRefusedWithoutAsync() async throws {
        try await UploadFixtures.withServer { server, folder in
            let path = folder + "/manifest.json"
            let text = try String(contentsOfFile: path, encoding: .utf8)
            try text.replacingOccurrences(of: "\"profile\": \"medplum\"", with: "\"profile\": \"medplum-async\"")
                .write(toFile: path, atomically: true, encoding: .utf8)
            // The edited manifest no longer matches the manifest checksum journal naming, which is fine: nothing is sent.
            await #expect(throws: UploadRefusal.self) { try await Uploader(folder: folder, options: UploadFixtures.options(server)).run() }
            #expect(server.statistics.bundleRequests == 0)
        }
    }
}

/// Uploads under the test server's model of Medplum's FHIR interaction quota.
@Suite(.serialized)
struct QuotaUploadTests {
    @Test func aBatchThatSpendsTheQuotaGetsEveryLaterEntry429AndTheRateLimitHeader() async throws {
        var limits = ServerLimits()
        limits.quota = InteractionQuota(points: 300, windowSeconds: 60)
        try await UploadFixtures.withServer(limits: limits) { server, _ in
            let client = FHIRClient(base: server.baseURL, credentials: .none, timeout: 10)
            let entries = (0..<4).map { i in
                #"{"resource":{"resourceType":"Patient","identifier":[{"system":"s","value":"\#(i)"}]},"request":{"method":"PUT","url":"Patient?identifier=s|\#(i)"}}"#
            }
            let batch = Array(#"{"resourceType":"Bundle","type":"batch","entry":[\#(entries.joined(separator: ","))]}"#.utf8)
            let response = try await client.send(method: .POST, url: client.base, body: batch)
            await client.shutdown()
            // 120 points per conditional update: two fit in 300, the third finds the quota spent.
            #expect(response.status == 200)
            #expect(EntryOutcome.parse(responseBundle: try #require(response.json))?.map(\.status) == [201, 201, 429, 429])
            let header = try #require(response.headers.first { $0.name == "RateLimit" }?.value)
            #expect(RateLimitPolicy.parse(header).first == RateLimitPolicy(name: "fhirInteractions", remaining: 0, secondsUntilReset: 60))
            #expect(server.statistics.throttled == 2)
        }
    }

    @Test func aPacedUploadUnderTheQuotaMeetsNo429() async throws {
        var limits = ServerLimits()
        // About 26,000 conditional updates at 120 points: some 3.1 million points, in windows of 250,000 per second
        // (less than the debug build sends unpaced).
        limits.quota = InteractionQuota(points: 250_000, windowSeconds: 1)
        try await UploadFixtures.withServer(limits: limits, folder: UploadFixtures.syntheaCopy) { server, folder in
            var options = UploadFixtures.options(server)
            options.concurrency = 8
            let report = try await Uploader(folder: folder, options: options).run()
            #expect(report.failures == 0)
            #expect(report.throttled == 0 && server.statistics.throttled == 0, "\(report.throttled) answers 429")
            #expect(report.quotaWait > 0)  // it had to wait for windows to reset
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test func asyncJobsAreNotChargedAgainstTheQuota() async throws {
        var limits = ServerLimits()
        // Enough for the kickoffs (100 each), the polls (1 each) and the synchronous transactions (4 x 120), not
        // for the batches' 5 conditional updates had they been sent synchronously as well.
        limits.quota = InteractionQuota(points: 900, windowSeconds: 3)
        try await UploadFixtures.withServer(limits: limits) { server, folder in
            let report = try await Uploader(folder: folder, options: AsyncUploadTests.asyncOptions(server)).run()
            #expect(report.failures == 0 && report.written == 9)
            #expect(server.statistics.throttled == 0)
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }
}
