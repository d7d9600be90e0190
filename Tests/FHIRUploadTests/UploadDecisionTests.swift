import FHIRModel
@testable import FHIRUpload
import Foundation
import Testing

/// The uploader's decisions that need no network: redirects, URLs, waits, redaction, journal names.
struct RedirectDecisionTests {
    private let policy = URLPolicy()
    private let base = "https://fhir.example.org/fhir/R4"

    @Test func aRedirectToAnotherOriginIsNeverFollowed() {
        for status in [301, 302, 303, 307, 308] {
            for method in ["GET", "POST"] {
                let decision = RedirectDecision.decide(method: method, url: base, status: status, location: "https://elsewhere.example/fhir",
                                                       hops: 0, policy: policy)
                guard case .refuse(let message) = decision else {
                    Issue.record("\(method) \(status) to another origin was \(decision)")
                    continue
                }
                #expect(message.contains("another origin, https://elsewhere.example/fhir"))
            }
        }
        // Another port or scheme is another origin too.
        #expect(RedirectDecision.decide(method: "GET", url: base, status: 307, location: "https://fhir.example.org:8443/fhir/R4",
                                        hops: 0, policy: policy) != .follow("https://fhir.example.org:8443/fhir/R4"))
        #expect(RedirectDecision.decide(method: "GET", url: base, status: 307, location: "http://fhir.example.org/fhir/R4",
                                        hops: 0, policy: policy) != .follow("http://fhir.example.org/fhir/R4"))
    }

    @Test func onTheSameOriginAPostFollowsOnlyTheRedirectsThatKeepItsBody() {
        #expect(RedirectDecision.decide(method: "POST", url: base, status: 307, location: "/fhir/R4/", hops: 0, policy: policy)
                == .follow("https://fhir.example.org/fhir/R4/"))
        #expect(RedirectDecision.decide(method: "POST", url: base, status: 308, location: "https://fhir.example.org/v2", hops: 0, policy: policy)
                == .follow("https://fhir.example.org/v2"))
        for status in [301, 302, 303] {
            guard case .refuse(let message) = RedirectDecision.decide(method: "POST", url: base, status: status, location: "/fhir/R4/",
                                                                      hops: 0, policy: policy) else {
                Issue.record("POST \(status) was followed")
                continue
            }
            #expect(message.contains("turn the POST into a GET"))
        }
        #expect(RedirectDecision.decide(method: "GET", url: base + "/Patient?identifier=x", status: 302, location: "/fhir/R4/Patient?page=2",
                                        hops: 0, policy: policy) == .follow("https://fhir.example.org/fhir/R4/Patient?page=2"))
    }

    @Test func redirectsEndAfterFiveHopsAndWithoutALocation() {
        #expect(RedirectDecision.decide(method: "GET", url: base, status: 302, location: "/x", hops: 5, policy: policy) != .follow("https://fhir.example.org/x"))
        #expect(RedirectDecision.decide(method: "GET", url: base, status: 302, location: nil, hops: 0, policy: policy) != .none)
        #expect(RedirectDecision.decide(method: "GET", url: base, status: 200, location: "/x", hops: 0, policy: policy) == .none)
    }

    @Test func theHTTPRuleAppliesToWhereARedirectLeads() {
        // Loopback over plain http is allowed; a same-origin redirect stays on it.
        let local = "http://127.0.0.1:8103/fhir/R4"
        #expect(RedirectDecision.decide(method: "POST", url: local, status: 307, location: "/fhir/R4/", hops: 0, policy: policy)
                == .follow("http://127.0.0.1:8103/fhir/R4/"))
        #expect(URLPolicy().refusal(of: "http://10.255.255.1/fhir") != nil)
        #expect(URLPolicy(allowInsecureHTTP: true).refusal(of: "http://10.255.255.1/fhir") == nil)
        #expect(URLPolicy().refusal(of: "https://user:secret@fhir.example.org/fhir")?.contains("user name or password") == true)
        #expect(URLPolicy.shown("https://user:secret@fhir.example.org/fhir/Patient?identifier=x|MRN123") == "https://fhir.example.org/fhir/Patient?…")
    }
}

struct WaitDecisionTests {
    @Test func aServerWaitAboveTheCapStopsInsteadOfWaiting() {
        let policy = RetryPolicy(maxServerWait: 300)
        #expect(policy.decision(afterAttempt: 1, headers: [("Retry-After", "999999")]) == .serverWaitTooLong(999_999))
        #expect(policy.decision(afterAttempt: 1, headers: [("Retry-After", "30")]) == .retry(after: 30, serverAsked: true))
        #expect(policy.decision(afterAttempt: 1, headers: [("RateLimit", #""requests";r=0;t=3600"#)]) == .serverWaitTooLong(3600))
        #expect(policy.decision(afterAttempt: 8) == .exhausted)
    }

    @Test(arguments: [(0.42, "0.4 s"), (42, "42 s"), (302, "5 min 2 s"), (7200, "2 h"), (999_999, "11 days")])
    func durationsReadAsPeopleSayThem(seconds: Double, text: String) {
        #expect(HumanDuration.describe(seconds) == text)
    }
}

struct RedactorTests {
    @Test func knownSecretsAndCredentialShapesAreMasked() {
        let redactor = Redactor(secrets: ["client-secret-4711"])
        redactor.add("opaque-token-value")
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
        let text = """
            Access denied for Authorization: Bearer opaque-token-value; client_secret=client-secret-4711; \
            token \(jwt); {"access_token":"abcdefgh123"} Basic dXNlcjpwYXNz
            """
        let redacted = redactor.redact(text)
        for secret in ["opaque-token-value", "client-secret-4711", jwt, "abcdefgh123", "dXNlcjpwYXNz"] {
            #expect(!redacted.contains(secret), "\(secret) is still in \(redacted)")
        }
        #expect(redacted.contains("Access denied for Authorization"))
        #expect(redactor.redact("error invalid: The conditional reference Patient?… matches 0 resources")
                == "error invalid: The conditional reference Patient?… matches 0 resources")
    }
}

struct UploadTargetTests {
    @Test func theJournalFolderIsNamedAfterTheServerAndWhoWeAreThere() {
        let a = UploadTarget(server: "HTTPS://API.Medplum.com:443/fhir/R4/", principal: "client one")
        let b = UploadTarget(server: "https://api.medplum.com/fhir/R4", principal: "client one")
        let c = UploadTarget(server: "https://api.medplum.com/fhir/R4", principal: "client two")
        let d = UploadTarget(server: "https://staging.example.org/fhir/R4", principal: "client one")
        #expect(a == b && a.folderName == b.folderName)
        #expect(a.server == "https://api.medplum.com/fhir/R4")
        #expect(a.folderName.hasPrefix("api.medplum.com-"))
        #expect(Set([a.folderName, c.folderName, d.folderName]).count == 3)
        #expect(UploadTarget(server: "http://127.0.0.1:8103/fhir", principal: "x").folderName.hasPrefix("127.0.0.1-8103-"))
    }

    @Test func aBearerJWTIsKnownByItsIssuerAndSubjectAndAnOpaqueTokenIsNot() {
        #expect(Credentials.bearer(UploadFixtures.unsignedJWT(claims: #"{"iss":"https://api.medplum.com/","sub":"u1","login_id":"L9","exp":1}"#)).principal
                == "a bearer token with iss https://api.medplum.com/, sub u1, login_id L9")
        #expect(Credentials.bearer("opaque").principal == "a bearer token")
        #expect(Credentials.clientCredentials(tokenURL: "https://x/oauth2/token", clientID: "abc", clientSecret: "s").principal == "client abc")
    }
}

struct ResponseMatchTests {
    private func entry(_ type: String) -> JSONValue {
        .object([JSONMember("request", .object([JSONMember("method", .string("PUT")), JSONMember("url", .string("\(type)?identifier=s|v"))])),
                 JSONMember("resource", .object([JSONMember("resourceType", .string(type))]))])
    }

    @Test func aLocationNamingAnotherTypeThanTheEntryMeansTheAnswerIsNotForThisRequest() {
        let entries = [entry("Patient"), entry("Practitioner")]
        let inOrder = [EntryOutcome(status: 201, location: "Patient/1/_history/1", issues: []),
                       EntryOutcome(status: 200, location: "https://x.org/fhir/Practitioner/2/_history/3", issues: [])]
        #expect(Uploader.mismatch(inOrder, entries) == nil)
        #expect(Uploader.mismatch(inOrder.reversed(), entries) == "entry 0 writes a Patient, its answer names a Practitioner")
        #expect(ResourceLocation.type(of: "http://127.0.0.1:1/fhir/Condition/abc/_history/1") == "Condition")
        #expect(ResourceLocation.type(of: "Patient/1") == "Patient")
        #expect(ResourceLocation.readURL("Patient/1/_history/2", base: "http://h/fhir") == "http://h/fhir/Patient/1")
        #expect(ResourceLocation.readURL("http://other/fhir/Patient/1", base: "http://h/fhir") == nil)
    }
}

struct RequestProgressTests {
    private let created = EntryOutcome(status: 201, location: nil, issues: [])
    private let throttled = EntryOutcome(status: 429, location: nil, issues: [])
    private let refused = EntryOutcome(status: 400, location: nil, issues: ["error invalid: bad"])

    @Test func aBatchResendsOnlyItsRetryableEntriesAndSkipsWhatWasWritten() {
        var progress = RequestProgress(entryCount: 4, alreadyWritten: [0], isTransaction: false, divisible: false)
        let first = progress.nextAttempt()
        #expect(first == [1, 2, 3])
        let settlement = progress.receive(.outcomes([created, throttled, refused]), for: first)
        #expect(settlement.succeeded.map(\.index) == [1] && settlement.failed.map(\.index) == [3] && settlement.journal.count == 3)
        #expect(progress.nextAttempt() == [2] && progress.attempt == 2)
    }

    @Test func noAnswerSettlesNothingAndExhaustedAttemptsFailWhatIsLeft() {
        var progress = RequestProgress(entryCount: 2, alreadyWritten: [], isTransaction: true, divisible: false)
        let sent = progress.nextAttempt()
        #expect(progress.receive(.none(problem: "no answer (timeout)"), for: sent).journal.isEmpty)
        #expect(progress.remaining == [0, 1])
        let failures = progress.giveUp(sent)
        #expect(failures.map(\.outcome.status) == [0, 0] && failures[0].outcome.issues == ["gave up after 1 attempts; last: no answer (timeout)"])
        #expect(progress.isDone)
    }

    @Test func aTransactionWeMadeUpIsSentEntryByEntryWhenRefusedWhole() {
        var progress = RequestProgress(entryCount: 3, alreadyWritten: [], isTransaction: true, divisible: true)
        let all = progress.nextAttempt()
        let split = progress.receive(.refused(status: 400, issues: ["error not-found: entry 1 refers to nothing"]), for: all)
        #expect(split.split && split.failed.isEmpty && progress.perEntry)
        #expect(progress.nextAttempt() == [0] && progress.attempt == 1)
        _ = progress.receive(.outcomes([created]), for: [0])
        #expect(progress.nextAttempt() == [1] && progress.attempt == 1)
        let bad = progress.receive(.refused(status: 400, issues: ["error not-found"]), for: [1])
        #expect(bad.failed.map(\.index) == [1])
        #expect(progress.nextAttempt() == [2])
    }

    @Test func aTransactionFromTheMappingFailsWholeWhenRefused() {
        var progress = RequestProgress(entryCount: 2, alreadyWritten: [], isTransaction: true, divisible: false)
        let all = progress.nextAttempt()
        let settlement = progress.receive(.refused(status: 422, issues: ["error invalid"]), for: all)
        #expect(settlement.failed.map(\.index) == [0, 1] && progress.isDone && !progress.perEntry)
    }
}

struct StepSchedulerTests {
    private func request(_ id: String, writes: [UInt128]) -> UploadRequest {
        UploadRequest(id: id, file: id, part: nil, entryCount: 1, resourceCount: 1, writes: writes, batchConditionalReferences: false)
    }

    @Test func twoRequestsWritingOneIdentifierNeverRunTogetherAndTheRestGoAhead() {
        var scheduler = StepScheduler([request("a", writes: [1, 2]), request("b", writes: [2]), request("c", writes: [3])], concurrency: 4)
        let first = scheduler.start()
        let second = scheduler.start()
        #expect(first?.request.id == "a" && second?.request.id == "c")  // b waits for a
        #expect(scheduler.start() == nil)
        scheduler.finished(first!.ticket)
        #expect(scheduler.start()?.request.id == "b")
    }

    @Test func concurrencyCapsRequestsInFlight() {
        var scheduler = StepScheduler((0..<5).map { request("r\($0)", writes: [UInt128($0)]) }, concurrency: 2)
        let a = scheduler.start(), b = scheduler.start()
        #expect(a != nil && b != nil && scheduler.start() == nil)
        scheduler.finished(a!.ticket)
        #expect(scheduler.start()?.request.id == "r2")
        #expect(!scheduler.isFinished)
    }
}
