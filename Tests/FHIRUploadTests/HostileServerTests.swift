import FHIRConvert
import FHIRModel
import FHIRTestServer
import FHIRTestSupport
@testable import FHIRUpload
import Foundation
import Testing

/// Collects the uploader's events (for checks on what it told the user).
final class EventLog: @unchecked Sendable {  // `events` behind `lock`
    private let lock = NSLock()
    private var events: [UploadEvent] = []
    var record: @Sendable (UploadEvent) -> Void { { event in self.lock.withLock { self.events.append(event) } } }
    var all: [UploadEvent] { lock.withLock { events } }

    var journalNotes: [String] {
        all.flatMap { event -> [String] in
            guard case .journal(_, _, _, let notes) = event else { return [] }
            return notes
        }
    }
    var earlierEntries: Int? {
        all.compactMap { event -> Int? in
            guard case .journal(_, _, let n, _) = event else { return nil }
            return n
        }.first
    }
}

/// A moment to measure from, set from any thread.
final class TimeMark: @unchecked Sendable {  // `date` behind `lock`
    private let lock = NSLock()
    private var date: Date?
    func set() { lock.withLock { if date == nil { date = Date() } } }
    var elapsed: Double { lock.withLock { Date().timeIntervalSince(date ?? Date()) } }
}

/// The journal belongs to a server: another server, or the same one as someone else, starts from nothing.
@Suite(.serialized)
struct JournalPerServerTests {
    @Test func aSecondServerGetsEverythingAndTheFirstResumesItsOwnJournal() async throws {
        try await UploadFixtures.withServer { a, folder in
            try await UploadFixtures.withOtherServer { b in
                let toA = try await Uploader(folder: folder, options: UploadFixtures.options(a)).run()
                #expect(toA.written == 9 && toA.target?.server == a.baseURL)
                let log = EventLog()
                let toB = try await Uploader(folder: folder, options: UploadFixtures.options(b)).run(events: log.record)
                #expect(toB.written == 9 && toB.skipped == 0)
                #expect(log.earlierEntries == 0)
                #expect(b.resourceCounts == (try UploadFixtures.expectedCounts(folder)))
                let again = EventLog()
                let rerunA = try await Uploader(folder: folder, options: UploadFixtures.options(a)).run(events: again.record)
                #expect(rerunA.written == 0 && rerunA.skipped == 9)
                #expect(again.earlierEntries == 7)  // entries: 2 patients, 3 conditions, 2 encounter transactions
                let servers = try FileManager.default.contentsOfDirectory(atPath: folder + "/upload").sorted()
                #expect(servers.count == 2 && servers.allSatisfy { $0.hasPrefix("127.0.0.1-") })
                let verify = try await Verifier(folder: folder, options: UploadFixtures.options(b)).run()
                #expect(verify.isClean && verify.expected == 9)
            }
        }
    }

    @Test func anotherIdentityOnTheSameServerStartsFromNothing() async throws {
        try await UploadFixtures.withServer { server, folder in
            func jwt(subject: String) -> String { UploadFixtures.unsignedJWT(claims: #"{"iss":"http://127.0.0.1","sub":"\#(subject)"}"#) }
            var options = UploadFixtures.options(server)
            options.credentials = .bearer(jwt(subject: "staging-project-user"))
            #expect(try await Uploader(folder: folder, options: options).run().written == 9)
            options.credentials = .bearer(jwt(subject: "production-project-user"))
            let second = try await Uploader(folder: folder, options: options).run()
            #expect(second.written == 9 && second.skipped == 0)
        }
    }

    @Test func aFolderCarriedWithItsUploadFolderResumesForTheSameServerOnly() async throws {
        try await UploadFixtures.withServer { server, folder in
            #expect(try await Uploader(folder: folder, options: UploadFixtures.options(server)).run().written == 9)
            let carried = NSTemporaryDirectory() + "carried-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: carried) }
            try FileManager.default.copyItem(atPath: folder, toPath: carried)
            let resumed = try await Uploader(folder: carried, options: UploadFixtures.options(server)).run()
            #expect(resumed.written == 0 && resumed.skipped == 9)
        }
    }

    @Test func aRegeneratedFolderIsSentAgainAndTheOldJournalKept() async throws {
        try await UploadFixtures.withServer { server, folder in
            let options = UploadFixtures.options(server)
            #expect(try await Uploader(folder: folder, options: options).run().written == 9)
            // The artifacts were converted again: the manifest the journal was written for is gone.
            let directory = try UploadFixtures.targetFolder(folder)
            var record = try #require(TargetRecord.read(directory: directory))
            record.manifestSHA256 = String(repeating: "0", count: 64)
            try record.write(directory: directory)
            let log = EventLog()
            let again = try await Uploader(folder: folder, options: options).run(events: log.record)
            #expect(again.written == 9 && again.skipped == 0)
            #expect(log.journalNotes.contains { $0.contains("manifest changed") })
            #expect(FileManager.default.fileExists(atPath: directory + "/journal-of-manifest-000000000000.ndjson"))
            #expect(server.duplicatedIdentifiers().isEmpty)
        }
    }

    @Test func anOldJournalThatNamesNoServerIsIgnoredAndSaidSo() async throws {
        try await UploadFixtures.withServer { server, folder in
            try FileManager.default.createDirectory(atPath: folder + "/upload", withIntermediateDirectories: true)
            try #"{"request":"bundles/01-patients/0001.json","entries":[{"index":0,"status":201},{"index":1,"status":201}]}"#
                .appending("\n").write(toFile: folder + "/upload/journal.ndjson", atomically: true, encoding: .utf8)
            let log = EventLog()
            let report = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run(events: log.record)
            #expect(report.written == 9)
            #expect(log.journalNotes.contains { $0.contains("upload/journal.ndjson") && $0.contains("ignored") })
        }
    }
}

/// Redirects are decided by the uploader, never followed to another origin; no credential or bundle leaves.
@Suite(.serialized)
struct RedirectTests {
    @Test func aRedirectOfTheUploadToAnotherOriginStopsWithNothingSentThere() async throws {
        try await UploadFixtures.withServer { server, folder in
            try await UploadFixtures.withOtherServer { elsewhere in
                server.redirect(Redirect(path: "/fhir/R4", status: 307, location: elsewhere.baseURL))
                do {
                    _ = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
                    Issue.record("expected the redirect to be refused")
                } catch let failure as ConnectionFailure {
                    #expect(failure.description.contains("another origin, http://127.0.0.1:\(elsewhere.port)/fhir/R4"))
                }
                #expect(elsewhere.statistics.requests == 0)
                let journal = try String(contentsOfFile: UploadFixtures.targetFolder(folder) + "/journal.ndjson", encoding: .utf8)
                #expect(journal.isEmpty)
            }
        }
    }

    @Test func aRedirectedTokenRequestIsNotResentWithTheSecret() async throws {
        try await UploadFixtures.withServer { server, folder in
            try await UploadFixtures.withOtherServer { elsewhere in
                server.requireClientCredentials(id: "migrator", secret: "s3cr3t-value")
                server.redirect(Redirect(path: "/oauth2/token", status: 307, location: elsewhere.tokenURL))
                var options = UploadFixtures.options(server)
                options.credentials = .clientCredentials(tokenURL: server.tokenURL, clientID: "migrator", clientSecret: "s3cr3t-value")
                do {
                    _ = try await Uploader(folder: folder, options: options).run()
                    Issue.record("expected the redirect to be refused")
                } catch let failure as ConnectionFailure {
                    #expect(failure.description.contains("no access token") && failure.description.contains("another origin"))
                    #expect(!failure.description.contains("s3cr3t-value"))
                }
                #expect(elsewhere.statistics.requests == 0)
                #expect(server.statistics.bundleRequests == 0)
            }
        }
    }

    @Test func aRedirectToPlainHTTPOnAnotherMachineIsRefusedWithoutConnecting() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.redirect(Redirect(path: "/fhir/R4", status: 307, location: "http://10.255.255.1/fhir/R4"))
            // The refusal is decided from the Location header alone: the error names the redirect, not a failed connection.
            do {
                _ = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
                Issue.record("expected the redirect to be refused")
            } catch let failure as ConnectionFailure {
                #expect(failure.description.contains("another origin, http://10.255.255.1/fhir/R4; not followed"))
            }
            #expect(server.statistics.bundleRequests == 0)
        }
    }

    @Test func aSameOriginRedirectThatKeepsTheBodyIsFollowedAndOneThatWouldNotIsRefused() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.redirect(Redirect(path: "/fhir/R4", status: 308, location: "/fhir/R4/"))
            let report = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(report.written == 9 && server.statistics.redirected == 3)
        }
        try await UploadFixtures.withServer { server, folder in
            server.redirect(Redirect(path: "/fhir/R4", status: 302, location: "/fhir/R4/"))
            do {
                _ = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
                Issue.record("expected a 302 on a POST to be refused")
            } catch let failure as ConnectionFailure {
                #expect(failure.description.contains("would turn the POST into a GET"))
            }
            #expect(server.resourceCounts.isEmpty)
        }
    }
}

/// Every wait ends: a request's whole answer has a deadline, a server's long wait stops the run, and a server that
/// stays down ends the run after the outage limit, not after every request's attempts.
@Suite(.serialized)
struct BoundedWaitTests {
    @Test func aBodyThatStallsOrTricklesTimesOutAndIsResent() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.inject([.stallBody(afterBytes: 25), .trickle(interval: 0.2)])
            var options = UploadFixtures.options(server)
            options.timeout = 1
            options.concurrency = 1
            let report = try await Uploader(folder: folder, options: options).run()
            #expect(report.written == 9 && report.failures == 0)
            // Without a deadline on the whole answer, the trickled one (a byte every 0.2 s, so never idle for the
            // 1 s read timeout) would be read to its end, 100 s later: the client hung up on it instead and resent.
            // Said by the server, not by a clock that a busy machine skews.
            #expect(server.statistics.faultsInjected == 2)
            // The server notices the hang-up at its next byte, up to 0.2 s later.
            for _ in 0..<50 where server.statistics.tricklesAbandoned == 0 { try await Task.sleep(nanoseconds: 100_000_000) }
            #expect(server.statistics.tricklesAbandoned == 1)
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test func aRetryAfterBeyondTheCapStopsTheRunAndSaysHowLongTheServerAsked() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.inject([.status(429, retryAfter: 999_999)])
            let log = EventLog()
            do {
                _ = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run(events: log.record)
                Issue.record("expected the run to stop")
            } catch let stopped as UploadStopped {
                #expect(stopped.description.contains("the server asks to wait 11 days before bundles/01-patients/0001.json"))
                #expect(stopped.description.contains("giving up on step patients"))
            }
            let waits = log.all.filter { if case .waiting = $0 { return true } else { return false } }
            #expect(waits.isEmpty)  // it stopped at once instead of starting the wait
        }
    }

    @Test func aWaitTheServerAsksForIsSaid() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.inject([.status(503, retryAfter: 1)])
            let log = EventLog()
            _ = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run(events: log.record)
            let waits = log.all.compactMap { event -> (String, Double, String)? in
                guard case .waiting(let request, let seconds, let reason) = event else { return nil }
                return (request, seconds, reason)
            }
            #expect(waits.count == 1)
            #expect(waits.first?.0 == "bundles/01-patients/0001.json" && waits.first?.1 == 1)
            #expect(waits.first?.2.contains("the server asks for it (HTTP 503") == true)
        }
    }

    @Test func aServerGoneForGoodEndsTheRunAfterTheOutageLimitOverall() async throws {
        try await UploadFixtures.withServer(folder: UploadFixtures.syntheaCopy) { server, folder in
            let base = server.baseURL
            try await server.shutdown()  // nothing listens there any more
            var options = UploadOptions(server: base)
            options.retry = RetryPolicy(maxAttempts: 10, baseDelay: 0.05, maxDelay: 0.5)
            options.maxOutage = 2
            options.timeout = 1
            options.skipPreflight = true  // what is measured is the upload itself
            let sendingStarted = TimeMark()
            do {
                _ = try await Uploader(folder: folder, options: options).run(events: { event in
                    if case .journal = event { sendingStarted.set() }  // validated and planned: sending starts
                })
                Issue.record("expected the run to stop")
            } catch let stopped as UploadStopped {
                guard case .serverDown(let seconds, let problem) = stopped.reason else {
                    Issue.record("stopped for \(stopped.reason)")
                    return
                }
                #expect(seconds > 2 && seconds < 4)
                #expect(problem.contains("no answer"))
                #expect(stopped.description.contains("run the same command again to resume"))
            }
            // 280 requests in 6 steps, each allowed 10 attempts: without the overall limit this takes minutes.
            #expect(sendingStarted.elapsed < 60)
        }
    }
}

/// Nothing the server says is kept or shown with a credential in it; answers that cannot be the request's are not
/// believed.
@Suite(.serialized)
struct UntrustedAnswerTests {
    @Test func aServerEchoingTheTokenLeavesNoCredentialInTheJournalOrFailures() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.inject([.echoAuthorization(status: 403)])
            var options = UploadFixtures.options(server)
            options.credentials = .bearer("opaque-bearer-token-0042")
            let report = try await Uploader(folder: folder, options: options).run()
            #expect(report.failed["Patient"] == 2)
            let directory = try UploadFixtures.targetFolder(folder)
            let failures = try String(contentsOfFile: directory + "/failures.ndjson", encoding: .utf8)
            #expect(failures.contains("Access denied for Authorization") && failures.contains(Redactor.mask))
            for file in ["journal.ndjson", "failures.ndjson", "target.json"] {
                let text = try String(contentsOfFile: directory + "/" + file, encoding: .utf8)
                #expect(!text.contains("opaque-bearer-token-0042"), "\(file)")
            }
        }
    }

    @Test func answersInAnotherOrderThanTheRequestAreNotRecordedAsWritten() async throws {
        try await UploadFixtures.withServer(folder: UploadFixtures.mixedBatchCopy) { server, folder in
            server.inject([.reverseResponses])
            let report = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(report.failures == 0 && report.written == 4)
            // The reversed answer was not journaled; the resend's was.
            let journal = try String(contentsOfFile: UploadFixtures.targetFolder(folder) + "/journal.ndjson", encoding: .utf8)
            #expect(journal.split(separator: "\n").count == 1)
            try await expectExactlyTheArtifacts(folder, on: server)
        }
        try await UploadFixtures.withServer(folder: UploadFixtures.mixedBatchCopy) { server, folder in
            server.chaos(rate: 1, seed: 1, kinds: [.reverseResponses])  // every answer reversed
            var options = UploadFixtures.options(server)
            options.retry = RetryPolicy(maxAttempts: 3, baseDelay: 0.01, maxDelay: 0.05)
            let report = try await Uploader(folder: folder, options: options).run()
            #expect(report.written == 0 && report.failures == 4)
            let failures = try String(contentsOfFile: UploadFixtures.targetFolder(folder) + "/failures.ndjson", encoding: .utf8)
            #expect(failures.contains("does not match the request (entry 0 writes a Patient, its answer names a Practitioner)"))
            let rerun = try await Uploader(folder: folder, options: options).run()
            #expect(rerun.skipped == 0)  // nothing was taken for written
        }
    }
}
