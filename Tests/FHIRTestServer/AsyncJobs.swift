import FHIRModel
import Foundation

/// One asynchronous batch job: its entries, how far it got, and its result. Used under the server's lock.
///
/// Modelled on Medplum (medplum/medplum, `packages/server/src/async-batch.ts`, `asyncBatchHandler`;
/// `packages/server/src/workers/batch.ts`, `execBatchJob`; `packages/server/src/fhir/job.ts`;
/// `packages/server/src/fhir/operations/asyncjobcancel.ts`): the job applies its entries one by one, outside the
/// interaction quota, checkpointing every 10; a restart resumes it from its last checkpoint (at-least-once per
/// entry); it ends `completed`, with the batch-response in a Binary named by `AsyncJob.output` (parameter
/// `results`), or `error`, with an OperationOutcome (parameter `outcome`), and is never retried by the server.
final class AsyncJobState {
    let id: String
    let entries: [JSONValue]
    let requestTime: String
    var status = "accepted"
    var responses: [JSONValue] = []
    var checkpoint = 0
    var fault: JobFault
    let entryFaults: [Int: Int]
    let reverse: Bool
    var binaryID: String?
    var error: String?

    static let checkpointInterval = 10

    init(id: String, entries: [JSONValue], fault: JobFault, entryFaults: [Int: Int], reverse: Bool) {
        self.id = id
        self.entries = entries
        self.fault = fault
        self.entryFaults = entryFaults
        self.reverse = reverse
        requestTime = ISO8601DateFormatter().string(from: Date())
    }

    var next: Int { responses.count }

    /// A restart loses the entries applied since the last checkpoint: they are applied again.
    func rewindToCheckpoint() {
        guard status == "accepted" else { return }
        responses.removeLast(responses.count - checkpoint)
    }
}

extension FHIRTestServer {
    /// `POST [base]` with `Prefer: respond-async`: 202, the status URL in `Content-Location` and in the
    /// OperationOutcome's `diagnostics`; the job runs on its own.
    func kickoff(_ body: [UInt8], service: FHIRService, entryFaults: [Int: Int], reverse: Bool) -> ServiceResponse {
        if body.count > limits.asyncBodyBytes {
            stats.asyncRefused += 1
            return service.failure(413, "too-costly", "The request body is \(body.count) bytes; the limit of an asynchronous batch is \(limits.asyncBodyBytes)")
        }
        guard let bundle = try? JSONParser.parse(body), bundle["resourceType"]?.stringValue == "Bundle" else {
            stats.asyncRefused += 1
            return service.failure(400, "invalid", "Expected request body to be a Bundle")
        }
        if bundle["type"]?.stringValue == "transaction" && limits.refusesAsyncTransactions {
            stats.asyncRefused += 1
            return service.failure(400, "invalid", "Transaction batches cannot be executed asynchronously")
        }
        // Creating the AsyncJob is a write.
        guard service.charge(InteractionQuota.writeCost) else { return service.failure(429, "throttled", "Too Many Requests") }
        let id = store.newID()
        let fault = jobFaults.isEmpty ? JobFault.pass : jobFaults.removeFirst()
        jobs[id] = AsyncJobState(id: id, entries: bundle["entry"]?.arrayValue ?? [], fault: fault, entryFaults: entryFaults, reverse: reverse)
        stats.asyncJobs += 1
        Task.detached { [self] in await runJob(id) }
        let url = "\(baseURL)/job/\(id)/status"
        return ServiceResponse(status: 202, headers: [("Content-Location", url)],
                               body: informational(url))
    }

    /// `GET` (status) and `DELETE` (cancel) on `job/{id}/status`.
    func jobRequest(method: String, path: String, service: FHIRService) -> ServiceResponse {
        let parts = path.split(separator: "/").map(String.init)
        guard parts.count == 3, parts[2] == "status" else { return service.failure(404, "not-found", "No resource at \(path)") }
        guard service.charge(InteractionQuota.readCost) else { return service.failure(429, "throttled", "Too Many Requests") }
        guard let job = jobs[parts[1]] else { return service.failure(404, "not-found", "Not found") }
        switch method {
        case "GET":
            stats.asyncPolls += 1
            // Only completed and error are final (job.ts, finalJobStatusCodes): a cancelled job answers 202 too.
            let final = job.status == "completed" || job.status == "error"
            return ServiceResponse(status: final ? 200 : 202, body: resource(of: job))
        case "DELETE":
            stats.asyncCancels += 1
            switch job.status {
            case "accepted":
                job.status = "cancelled"
                return ServiceResponse(status: 202, body: informational(nil))
            case "cancelled":
                return ServiceResponse(status: 202, body: informational(nil))
            default:
                return service.failure(400, "invalid", "AsyncJob cannot be cancelled if status is not 'accepted', job had status '\(job.status)'")
            }
        default:
            return service.failure(405, "not-supported", "\(method) \(path) is not supported")
        }
    }

    /// `GET Binary/{id}`: the raw bytes, or (Accept `application/fhir+json`, or `binaryAsResource`) a Binary
    /// resource with the bytes in base64 `data`.
    func binary(_ id: String, accept: String, service: FHIRService) -> Action {
        guard service.charge(InteractionQuota.readCost) else { return reply(service.failure(429, "throttled", "Too Many Requests")) }
        guard let bytes = binaries[id] else { return reply(service.failure(404, "not-found", "Not found")) }
        stats.binaryReads += 1
        if limits.binaryAsResource || accept.hasPrefix("application/fhir+json") {
            return reply(ServiceResponse(status: 200, body: .object([
                JSONMember("resourceType", .string("Binary")), JSONMember("id", .string(id)),
                JSONMember("contentType", .string("application/fhir+json")), JSONMember("data", .string(Data(bytes).base64EncodedString())),
            ])))
        }
        return .respond(status: 200, headers: [("Content-Type", "application/fhir+json")], body: bytes, delay: 0)
    }

    /// Applies a job's entries one by one until it ends, is cancelled or forgotten; pauses while the server is down.
    func runJob(_ id: String) async {
        while true {
            let pause = lock.withLock { () -> Double? in
                guard let job = jobs[id], job.status == "accepted" else { return nil }
                if down { return 0.02 }
                switch job.fault {
                case .fail(let after, let message) where job.next >= after:
                    job.status = "error"
                    job.error = message
                    return nil
                case .forget(let after) where job.next >= after:
                    jobs[id] = nil
                    return nil
                default: break
                }
                guard job.next < job.entries.count else {
                    finish(job)
                    return nil
                }
                let service = self.service(chargingTo: nil)
                let index = job.next
                if let status = job.entryFaults[index] {
                    job.responses.append(.object([JSONMember("response", .object([
                        JSONMember("status", .string("\(status) \(FHIRService.reason(status))")),
                        JSONMember("outcome", service.outcome(status == 429 ? "throttled" : "exception", "Injected failure \(status)")),
                    ]))]))
                } else {
                    job.responses.append(service.batchEntry(job.entries[index], nestedAsBatch: true))
                }
                if job.next % AsyncJobState.checkpointInterval == 0 { job.checkpoint = job.next }
                if case .slow(let seconds) = job.fault { return seconds }
                return limits.asyncSecondsPerEntry
            }
            guard let pause else { return }
            if pause > 0 {
                try? await Task.sleep(nanoseconds: UInt64(pause * 1_000_000_000))
            } else {
                await Task.yield()
            }
        }
    }

    private func finish(_ job: AsyncJobState) {
        let service = self.service(chargingTo: nil)
        let responses = job.reverse ? job.responses.reversed() : job.responses
        let binaryID = store.newID()
        binaries[binaryID] = JSONWriter().bytes(service.responseBundle("batch-response", responses))
        job.binaryID = binaryID
        job.status = "completed"
    }

    /// The job as an `AsyncJob` resource.
    private func resource(of job: AsyncJobState) -> JSONValue {
        var members = [
            JSONMember("resourceType", .string("AsyncJob")), JSONMember("id", .string(job.id)),
            JSONMember("status", .string(job.status)), JSONMember("requestTime", .string(job.requestTime)),
            JSONMember("request", .string(baseURL)),
        ]
        if let binaryID = job.binaryID {
            members.append(JSONMember("output", .object([JSONMember("resourceType", .string("Parameters")), JSONMember("parameter", .array([
                .object([JSONMember("name", .string("results")), JSONMember("valueReference", .object([JSONMember("reference", .string("Binary/\(binaryID)"))]))]),
            ]))])))
        } else if let error = job.error {
            let outcome = FHIRService(store: store, limits: limits, baseURL: baseURL).outcome("exception", error)
            members.append(JSONMember("output", .object([JSONMember("resourceType", .string("Parameters")), JSONMember("parameter", .array([
                .object([JSONMember("name", .string("outcome")), JSONMember("resource", outcome)]),
            ]))])))
        }
        return .object(members)
    }

    /// Medplum's `accepted(url)` OperationOutcome (core outcomes.ts).
    private func informational(_ diagnostics: String?) -> JSONValue {
        var issue = [JSONMember("severity", .string("information")), JSONMember("code", .string("informational")),
                     JSONMember("details", .object([JSONMember("text", .string("Accepted"))]))]
        if let diagnostics { issue.append(JSONMember("diagnostics", .string(diagnostics))) }
        return .object([JSONMember("resourceType", .string("OperationOutcome")), JSONMember("id", .string("accepted")),
                        JSONMember("issue", .array([.object(issue)]))])
    }
}
