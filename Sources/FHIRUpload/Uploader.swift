import FHIRArtifacts
import FHIRModel
import FHIRValidation
import Foundation
import NIOCore

/// What to upload where, and how.
public struct UploadOptions: Sendable {
    /// FHIR base URL, e.g. `https://api.medplum.com/fhir/R4`.
    public var server: String
    public var concurrency = 4
    /// Send each inner transaction of a batch-of-transactions on its own (for servers without nested bundles).
    public var splitTransactions = false
    /// Forget the journal and replay everything (safe: every write is a conditional update).
    public var restart = false
    /// Upload even when offline validation finds errors.
    public var force = false
    /// Bearer token or OAuth2 client credentials; never printed or journaled.
    public var credentials = Credentials.none
    public var retry = RetryPolicy()
    /// Seconds to wait for one response.
    public var timeout: Int64 = 120

    public init(server: String) {
        self.server = server
    }
}

/// Counts of one upload, per resource type.
public struct UploadReport: Sendable {
    public var created: [String: Int] = [:]
    public var updated: [String: Int] = [:]
    public var failed: [String: Int] = [:]
    /// Entries an earlier run already wrote, skipped now.
    public var skipped = 0
    public var requests = 0
    public var seconds = 0.0

    public var failures: Int { failed.values.reduce(0, +) }
    public var written: Int { created.values.reduce(0, +) + updated.values.reduce(0, +) }
}

/// Where an upload stands, for a progress line.
public struct UploadProgress: Sendable {
    public var step: String
    /// 1-based number of the step, and how many there are.
    public var stepNumber: Int
    public var stepCount: Int
    /// Resources of the whole plan settled so far (written, failed, or written by an earlier run), and in all.
    public var resourcesDone: Int
    public var resourcesTotal: Int
    public var failed: Int
    public var seconds: Double
}

/// Why an upload did not start.
public enum UploadRefusal: Error, CustomStringConvertible {
    /// Files differ from the manifest (altered or damaged): never uploaded, not even with `--force`.
    case altered([Finding])
    case invalid(ValidationReport)
    case manifest(String)

    public var description: String {
        switch self {
        case .altered(let findings):
            let files = findings.prefix(5).map { "\($0.file): \($0.message)" }.joined(separator: "; ")
            return "the folder does not match its manifest (\(files)\(findings.count > 5 ? "; …" : "")); recopy or regenerate it. Nothing was sent."
        case .invalid(let r): return "the artifacts have \(r.errors) validation errors (run `fhirbundle validate` for details); nothing was sent (--force uploads anyway)"
        case .manifest(let m): return m
        }
    }
}

/// Replays an artifact folder against a FHIR server: steps in order, bundles of a step concurrently (never two
/// writing the same identifier at once), retried with backoff, recorded in a journal so that a rerun resumes.
public final class Uploader: @unchecked Sendable {
    private let folder: String
    private let options: UploadOptions
    private let lock = NSLock()
    private var report = UploadReport()
    private var failuresFile: FileHandle?

    public init(folder: String, options: UploadOptions) {
        self.folder = folder
        self.options = options
    }

    /// Validates and plans without sending anything (`--dry-run`): what would be sent, step by step, and how much
    /// an earlier run already wrote.
    public func dryRun() throws -> (plan: UploadPlan, alreadyWritten: Int, validation: ValidationReport) {
        let validation = try ArtifactValidator(folder: folder).run()
        let plan = try UploadPlan.make(folder: folder, manifest: try readManifest(), splitTransactions: options.splitTransactions)
        var written = 0
        if FileManager.default.fileExists(atPath: folder + "/" + UploadJournal.relativePath) && !options.restart {
            let journal = try UploadJournal(folder: folder, exclusive: false)
            for step in plan.steps { for r in step.requests { written += journal.succeededEntries(of: r.id).count } }
        }
        return (plan, written, validation)
    }

    /// Validates, plans and uploads; returns the report. Throws `UploadRefusal` before sending anything, and
    /// `ConnectionFailure` when the server refuses the credentials (what was written stays in the journal).
    public func run(progress: @escaping @Sendable (UploadProgress) -> Void = { _ in }) async throws -> UploadReport {
        let started = Date()
        let validation = try ArtifactValidator(folder: folder).run()
        let altered = validation.findings.filter { Self.integrityRules.contains($0.rule) }
        if !altered.isEmpty { throw UploadRefusal.altered(altered) }
        if validation.errors > 0 && !options.force { throw UploadRefusal.invalid(validation) }
        let manifest = try readManifest()
        let plan = try UploadPlan.make(folder: folder, manifest: manifest, splitTransactions: options.splitTransactions)
        let journal = try UploadJournal(folder: folder)
        if options.restart { try journal.restart() }
        FileManager.default.createFile(atPath: folder + "/upload/failures.ndjson", contents: Data())
        failuresFile = FileHandle(forWritingAtPath: folder + "/upload/failures.ndjson")
        defer { try? failuresFile?.close() }
        let client = FHIRClient(base: options.server, credentials: options.credentials, timeout: options.timeout)
        let total = plan.steps.reduce(0) { $0 + $1.requests.reduce(0) { $0 + $1.resourceCount } }
        let bodies = RequestBodies(folder: folder, plan: plan)
        do {
            for (number, step) in plan.steps.enumerated() {
                try await runStep(step.requests, client: client, journal: journal, bodies: bodies) { [self] in
                    let (done, failed) = lock.withLock { (report.written + report.failures + report.skipped, report.failures) }
                    progress(UploadProgress(step: step.name, stepNumber: number + 1, stepCount: plan.steps.count, resourcesDone: done,
                                            resourcesTotal: total, failed: failed, seconds: Date().timeIntervalSince(started)))
                }
                try journal.sync()
            }
        } catch {
            try? journal.sync()
            await client.shutdown()
            throw error
        }
        await client.shutdown()
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    /// Findings that mean the folder is not what `convert` wrote.
    static let integrityRules: Set<String> = [Rule.manifestChecksum.id, Rule.manifestMissingFile.id, Rule.manifestInvalid.id, Rule.manifestCounts.id]

    private func readManifest() throws -> Manifest {
        guard let data = FileManager.default.contents(atPath: folder + "/manifest.json") else {
            throw UploadRefusal.manifest("\(folder)/manifest.json is missing: fhirupload takes a folder written by fhirbundle convert")
        }
        do {
            return try Manifest(json: JSONParser.parse(Array(data)))
        } catch {
            throw UploadRefusal.manifest("\(folder)/manifest.json cannot be read: \(error)")
        }
    }

    /// Runs a step's requests, at most `concurrency` at once and never two that write the same identifier.
    private func runStep(_ requests: [UploadRequest], client: FHIRClient, journal: UploadJournal, bodies: RequestBodies,
                         finished: @escaping @Sendable () -> Void) async throws {
        var pending = requests[...]
        var waiting: [UploadRequest] = []
        var inFlight: [Int: Set<UInt128>] = [:]
        var nextID = 0
        try await withThrowingTaskGroup(of: Int.self) { group in
            func startable() -> UploadRequest? {
                let busy = inFlight.values.reduce(into: Set<UInt128>()) { $0.formUnion($1) }
                if let i = waiting.firstIndex(where: { busy.isDisjoint(with: $0.writes) }) { return waiting.remove(at: i) }
                while let r = pending.popFirst() {
                    if busy.isDisjoint(with: r.writes) { return r }
                    waiting.append(r)
                }
                return nil
            }
            while true {
                while inFlight.count < max(1, options.concurrency), let r = startable() {
                    let id = nextID
                    nextID += 1
                    inFlight[id] = Set(r.writes)
                    group.addTask { [self] in
                        defer { bodies.finished(r) }
                        try await self.send(r, body: bodies.body(of: r), client: client, journal: journal)
                        return id
                    }
                }
                guard let done = try await group.next() else { break }
                inFlight[done] = nil
                finished()
            }
        }
    }

    /// Sends one request until every entry has succeeded or failed for good.
    private func send(_ request: UploadRequest, body requestBody: [UInt8], client: FHIRClient, journal: UploadJournal) async throws {
        guard let bundle = try? JSONParser.parse(requestBody), let entries = bundle["entry"]?.arrayValue else {
            // The plan parsed it, so the file changed since: stop rather than skip it silently.
            throw UploadError.plan(file: request.file, message: "the bundle can no longer be read as a Bundle with entries")
        }
        let isTransaction = bundle["type"]?.stringValue == "transaction"
        let alreadyWritten = journal.succeededEntries(of: request.id)
        let remainingAtStart = Array(entries.indices).filter { !alreadyWritten.contains($0) }
        addSkipped(alreadyWritten.filter { $0 < entries.count }.reduce(0) { $0 + resourceTypes(entries[$1]).count })
        var remaining = remainingAtStart
        var attempt = 0
        var lastProblem = ""
        while !remaining.isEmpty {
            attempt += 1
            // A batch resends only what is left; a transaction is all or nothing.
            let body: [UInt8]
            if isTransaction || remaining.count == entries.count {
                body = requestBody
            } else {
                var subset = bundle
                if case .object(var members) = subset, let i = members.firstIndex(where: { $0.key == "entry" }) {
                    members[i].value = .array(remaining.map { entries[$0] })
                    subset = .object(members)
                }
                body = JSONWriter().bytes(subset)
            }
            let result = await post(body, client: client)
            if case .failure(let error as ConnectionFailure) = result { throw error }
            var outcomes: [(index: Int, outcome: EntryOutcome)] = []
            var headers: [(name: String, value: String)] = []
            switch result {
            case .failure(let error):
                // Connection error or timeout: nothing known, retry everything left.
                lastProblem = "no answer (\(error))"
            case .success(let response):
                headers = response.headers
                if let parsed = response.outcomes, parsed.count == remaining.count {
                    outcomes = zip(remaining, parsed).map { ($0, $1) }
                    if let failed = parsed.first(where: { $0.isRetryable }) { lastProblem = "the entry's status was \(failed.status)" }
                } else if (200...299).contains(response.status) {
                    // Success without the response bundle (a proxy's page, a truncated body): nothing known, retry.
                    lastProblem = "HTTP \(response.status) without a \(isTransaction ? "transaction" : "batch")-response bundle of \(remaining.count) entries"
                } else if RetryPolicy.isRetryable(status: response.status) {
                    lastProblem = "HTTP \(response.status)" + response.issues.map { "; " + $0 }.joined()
                } else {
                    // The whole request was refused (e.g. a transaction): every entry fails with the server's outcome.
                    let outcome = EntryOutcome(status: response.status, location: nil, issues: response.issues)
                    outcomes = remaining.map { ($0, outcome) }
                }
            }
            if !outcomes.isEmpty { try journal.record(request: request.id, outcomes: outcomes) }
            let retryable = Set(outcomes.filter { $0.outcome.isRetryable }.map(\.index))
            let permanent = outcomes.filter { !$0.outcome.succeeded && !$0.outcome.isRetryable }
            tally(outcomes.filter { $0.outcome.succeeded }, entries: entries)
            for failure in permanent { recordFailure(request: request, index: failure.index, outcome: failure.outcome, entries: entries) }
            remaining = outcomes.isEmpty ? remaining : remaining.filter { retryable.contains($0) }
            if remaining.isEmpty { break }
            guard let delay = options.retry.delay(afterAttempt: attempt, headers: headers) else {
                for i in remaining {
                    recordFailure(request: request, index: i, outcome: EntryOutcome(status: 0, location: nil, issues: ["gave up after \(attempt) attempts; last: \(lastProblem)"]), entries: entries)
                }
                break
            }
            try await Task.sleep(nanoseconds: UInt64(delay * 1_000_000_000))
        }
        addRequest()
    }

    private struct Response {
        var status: Int
        var headers: [(name: String, value: String)]
        var outcomes: [EntryOutcome]?
        var issues: [String]
    }

    private func post(_ body: [UInt8], client: FHIRClient) async -> Result<Response, any Error> {
        do {
            let response = try await client.send(method: .POST, url: client.base, body: body)
            let json = response.json
            return .success(Response(status: response.status, headers: response.headers,
                                     outcomes: json.flatMap { EntryOutcome.parse(responseBundle: $0) },
                                     issues: EntryOutcome.operationOutcomeIssues(json)))
        } catch {
            return .failure(error)
        }
    }

    private func tally(_ successes: [(index: Int, outcome: EntryOutcome)], entries: [JSONValue]) {
        lock.lock()
        defer { lock.unlock() }
        for s in successes {
            let types = resourceTypes(entries[s.index])
            // A nested transaction reports each inner entry's status in its transaction-response.
            let statuses = s.outcome.innerStatuses.count == types.count ? s.outcome.innerStatuses : Array(repeating: s.outcome.status, count: types.count)
            for (type, status) in zip(types, statuses) {
                if status == 201 { report.created[type, default: 0] += 1 } else { report.updated[type, default: 0] += 1 }
            }
        }
    }

    /// The resource type(s) an entry writes (an inner transaction writes several).
    private func resourceTypes(_ entry: JSONValue) -> [String] {
        if entry["request"]?["url"]?.stringValue == "/" {
            return (entry["resource"]?["entry"]?.arrayValue ?? []).compactMap { $0["resource"]?["resourceType"]?.stringValue }
        }
        return [entry["resource"]?["resourceType"]?.stringValue ?? "?"]
    }

    private func recordFailure(request: UploadRequest, index: Int, outcome: EntryOutcome, entries: [JSONValue]) {
        lock.lock()
        defer { lock.unlock() }
        for type in resourceTypes(entries[index]) { report.failed[type, default: 0] += 1 }
        let record = JSONValue.object([
            JSONMember("request", .string(request.id)), JSONMember("entry", .number(String(index))),
            JSONMember("url", .string(entries[index]["request"]?["url"]?.stringValue ?? "")),
            JSONMember("status", .number(String(outcome.status))),
            JSONMember("issues", .array(outcome.issues.map { .string($0) })),
        ])
        var bytes = JSONWriter().bytes(record)
        bytes.append(0x0A)
        failuresFile?.write(Data(bytes))
    }

    private func addSkipped(_ n: Int) {
        lock.lock()
        report.skipped += n
        lock.unlock()
    }

    private func addRequest() {
        lock.lock()
        report.requests += 1
        lock.unlock()
    }
}
