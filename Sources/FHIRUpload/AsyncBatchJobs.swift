import FHIRModel
import Foundation
import NIOHTTP1
import Synchronization

/// What the server answered to one bundle request, redacted of credentials before anything keeps it.
struct BundleResponse: Sendable {
    var status: Int
    var headers: [(name: String, value: String)]
    var outcomes: [EntryOutcome]?
    var issues: [String]
    /// An asynchronous job that ended in `error`: the issues of its OperationOutcome.
    var jobFailure: [String]?

    init(status: Int, headers: [(name: String, value: String)], outcomes: [EntryOutcome]?, issues: [String], jobFailure: [String]? = nil) {
        self.status = status
        self.headers = headers
        self.outcomes = outcomes
        self.issues = issues
        self.jobFailure = jobFailure
    }

    /// Reads a response whose body may be a batch- or transaction-response bundle, or an OperationOutcome.
    init(_ response: FHIRResponse, redactor: Redactor, body: [UInt8]? = nil) {
        let json = (try? JSONParser.parse(body ?? response.body))
        let redact = redactor.redact
        let outcomes = json.flatMap { EntryOutcome.parse(responseBundle: $0) }?.map { outcome in
            var o = outcome
            o.issues = o.issues.map(redact)
            if let location = o.location { o.location = redact(location) }
            return o
        }
        self.init(status: response.status, headers: response.headers, outcomes: outcomes,
                  issues: EntryOutcome.operationOutcomeIssues(json).map(redact))
    }
}

/// The asynchronous jobs of one run, for its report: submitted, left running at an interruption, cancelled.
final class JobRegistry: Sendable {
    private let state = Mutex(State())

    private struct State {
        var submitted = 0
        var running: Set<String> = []
        var cancelled = 0
    }

    func submitted(_ url: String) { state.withLock { $0.submitted += 1; $0.running.insert(url) } }
    func ended(_ url: String) { state.withLock { _ = $0.running.remove(url) } }
    func cancelled(_ url: String) { state.withLock { $0.cancelled += 1; _ = $0.running.remove(url) } }
    func polling(_ url: String) { state.withLock { _ = $0.running.insert(url) } }

    var counts: (submitted: Int, running: Int, cancelled: Int) {
        state.withLock { ($0.submitted, $0.running.count, $0.cancelled) }
    }
}

/// Medplum's asynchronous batch (its docs, "Processing Asynchronous Bundles"; source `packages/server/src/
/// async-batch.ts`, `fhir/job.ts`): `POST [base]` with `Prefer: respond-async` answers 202 and the job's status
/// URL (`Content-Location`, and the OperationOutcome's `diagnostics`); `GET` on it answers 202 while the job runs
/// and 200 with the `AsyncJob` once it is `completed` (its `output` names a `Binary` holding the batch-response)
/// or `error` (an OperationOutcome). A cancelled job keeps answering 202, so the `AsyncJob`'s own status is read
/// every time. The entries of a job do not count against the FHIR interaction quota; the kickoff is a write and a
/// poll a read.
///
/// The job URL is journalled as soon as the server names it, so a rerun after a kill polls the job instead of
/// submitting its entries again (two jobs writing the same identifiers at once could race into duplicates).
struct AsyncBatchJobs: Sendable {
    let client: FHIRClient
    let journal: UploadJournal
    let outage: OutageClock
    let retry: RetryPolicy
    let cancelOnInterrupt: Bool
    let registry: JobRegistry
    let pacer: QuotaPacer
    /// First wait between polls, and the longest (each poll waits half as long again as the last).
    var firstPoll = 0.2
    var longestPoll = 10.0

    /// The answer to `body` (entries `entries` of `request`) run as a job: submitted now, or `resume`, the job an
    /// earlier run submitted. Throws only what stops the run (credentials, an interruption, a long outage).
    func run(_ body: [UInt8], request: String, entries: [Int], resume: String?) async throws -> Result<BundleResponse, any Error> {
        let url: String
        if let resume {
            url = resume
            registry.polling(url)
        } else {
            let response: FHIRResponse
            let points = try await pacer.admit(points: InteractionCost.write)
            do {
                response = try await client.send(method: .POST, url: client.base, body: body, prefer: "respond-async")
            } catch let failure as ConnectionFailure {
                await pacer.settle(points: points, entries: 0, headers: [])
                throw failure
            } catch {
                await pacer.settle(points: points, entries: 0, headers: [])
                return .failure(error)
            }
            await pacer.settle(points: points, entries: 0, headers: response.headers)
            guard response.status == 202 else {
                // A server that ignores `respond-async` answers the batch itself (200 and its batch-response);
                // anything else (429, 5xx, a refusal) is read as for a synchronous batch.
                return .success(BundleResponse(response, redactor: client.redactor))
            }
            guard let named = statusURL(response) else {
                return .success(BundleResponse(status: 202, headers: response.headers, outcomes: nil,
                                               issues: ["202 Accepted without a job status URL on the server's origin (Content-Location missing, "
                                                        + "or naming another origin, which is never contacted)"]))
            }
            url = named
            try journal.recordJob(request: request, url: url, entries: entries)
            registry.submitted(url)
        }
        return try await poll(url, request: request)
    }

    /// The job's status URL: `Content-Location`, else the OperationOutcome's first `diagnostics`; only on the
    /// server's origin (credentials go nowhere else).
    private func statusURL(_ response: FHIRResponse) -> String? {
        let named = response.headers.first { $0.name.lowercased() == "content-location" }?.value
            ?? response.json?["issue"]?.arrayValue?.first?["diagnostics"]?.stringValue
        guard let named, !named.isEmpty else { return nil }
        let absolute = Origin(named) != nil ? named : client.base + "/" + named.drop { $0 == "/" }
        return Origin(absolute) == Origin(client.base) ? absolute : nil
    }

    /// Polls until the job ends; its batch-response, or why there is none.
    private func poll(_ url: String, request: String) async throws -> Result<BundleResponse, any Error> {
        var wait = firstPoll
        while true {
            do {
                try await Task.sleep(nanoseconds: UInt64(wait * 1_000_000_000))
            } catch {
                try await interrupted(url, request: request)
            }
            wait = min(longestPoll, wait * 1.5)
            let response: FHIRResponse
            do {
                response = try await client.send(method: .GET, url: url)
            } catch let failure as ConnectionFailure {
                throw failure
            } catch {
                if Task.isCancelled { try await interrupted(url, request: request) }
                // The job runs on without us: keep polling while the server is away, up to --max-outage.
                try outage.failed("no answer to the job's status (\(client.redactor.redact("\(error)")))")
                continue
            }
            await pacer.settle(points: 0, entries: 0, headers: response.headers)
            if [502, 503, 504].contains(response.status) {
                try outage.failed("HTTP \(response.status) for the job's status")
                continue
            }
            outage.answered()
            if let asked = RetryPolicy.serverDelay(response.headers), RetryPolicy.isRetryable(status: response.status) || response.status == 202 {
                if asked > retry.maxServerWait {
                    throw StopReason(reason: .serverWaitTooLong(asked: asked, cap: retry.maxServerWait, request: request, step: "polling \(url)"))
                }
                wait = max(asked, firstPoll)
            }
            let job = response.json
            switch response.status {
            case 202 where job?["status"]?.stringValue == "cancelled", 200 where job?["status"]?.stringValue == "cancelled":
                try ended(url, request: request, how: "cancelled")
                return .success(BundleResponse(status: 0, headers: [], outcomes: nil, issues: ["the job \(url) was cancelled on the server"]))
            case 202:
                continue
            case 200 where job?["status"]?.stringValue == "completed":
                let result = await results(of: job!, jobURL: url)
                if case .success = result { try ended(url, request: request, how: "completed") }
                return result
            case 200 where job?["status"]?.stringValue == "error":
                try ended(url, request: request, how: "error")
                let issues = Self.failure(of: job!).map(client.redactor.redact)
                return .success(BundleResponse(status: 200, headers: [], outcomes: nil, issues: issues, jobFailure: issues))
            case 404, 410:
                try ended(url, request: request, how: "unknown to the server")
                return .success(BundleResponse(status: 0, headers: [], outcomes: nil, issues: ["the server no longer knows the job \(url) (HTTP \(response.status))"]))
            default:
                if RetryPolicy.isRetryable(status: response.status) { continue }
                // A status this client cannot read: the job may still run, so it stays journalled for a rerun.
                return .success(BundleResponse(status: 0, headers: [], outcomes: nil,
                                               issues: ["the job's status answered HTTP \(response.status)" + EntryOutcome.operationOutcomeIssues(job).map { "; " + client.redactor.redact($0) }.joined()]))
            }
        }
    }

    /// Ctrl-C while a job runs: cancel it when asked (`--cancel-on-interrupt`), else leave it running, journalled,
    /// for the next run to read; either way the run's report says so.
    private func interrupted(_ url: String, request: String) async throws -> Never {
        if cancelOnInterrupt {
            let client = self.client
            // The interrupted task cannot send; a detached one can, within a short deadline.
            let answer = await Task.detached { () -> Int? in
                try? await withDeadline(seconds: 10) { try await client.send(method: .DELETE, url: url).status }
            }.value
            if answer == 202 {
                try? ended(url, request: request, how: "cancelled on interrupt")
                registry.cancelled(url)
            }
        }
        throw CancellationError()
    }

    private func ended(_ url: String, request: String, how: String) throws {
        try journal.recordJobEnded(request: request, url: url, how: how)
        registry.ended(url)
    }

    /// Reads the job's batch-response from the Binary its output names: raw bytes, or a Binary resource with base64
    /// `data` (both are seen); asked for as raw bytes, which Medplum sends unless Accept is FHIR JSON.
    private func results(of job: JSONValue, jobURL: String) async -> Result<BundleResponse, any Error> {
        let parameter = job["output"]?["parameter"]?.arrayValue?.first { $0["name"]?.stringValue == "results" }
        guard let reference = parameter?["valueReference"]?["reference"]?.stringValue,
              let url = ResourceLocation.readURL(reference, base: client.base) else {
            return .success(BundleResponse(status: 0, headers: [], outcomes: nil, issues: ["the completed job \(jobURL) names no result Binary on this server"]))
        }
        let response: FHIRResponse
        do {
            response = try await client.send(method: .GET, url: url, accept: "*/*")
        } catch {
            return .failure(error)
        }
        await pacer.settle(points: 0, entries: 0, headers: response.headers)
        guard response.status == 200 else {
            return .success(BundleResponse(status: 0, headers: response.headers, outcomes: nil, issues: ["the job's result \(reference) answered HTTP \(response.status)"]))
        }
        var body = response.body
        if let json = response.json, json["resourceType"]?.stringValue == "Binary" {
            guard let data = json["data"]?.stringValue.flatMap({ Data(base64Encoded: $0) }) else {
                return .success(BundleResponse(status: 0, headers: [], outcomes: nil, issues: ["the job's result \(reference) is a Binary without data"]))
            }
            body = Array(data)
        }
        return .success(BundleResponse(FHIRResponse(status: 200, headers: [], body: body), redactor: client.redactor))
    }

    /// The issues of a failed job: its `outcome` OperationOutcome, else its `error` text.
    static func failure(of job: JSONValue) -> [String] {
        let parameters = job["output"]?["parameter"]?.arrayValue ?? []
        var issues: [String] = []
        for p in parameters {
            if p["name"]?.stringValue == "outcome" { issues += EntryOutcome.operationOutcomeIssues(p["resource"]) }
            if p["name"]?.stringValue == "error", let text = p["valueString"]?.stringValue { issues.append("error: " + text) }
        }
        return issues.isEmpty ? ["the job ended in error without an OperationOutcome"] : issues
    }
}

/// Medplum's interaction costs the uploader plans with (`packages/server/src/fhir/fhirquota.ts`).
enum InteractionCost {
    static let write = 100
}
