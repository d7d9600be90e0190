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
    /// Seconds one request may take, headers and body together.
    public var timeout = 120.0
    /// Seconds the server may stay unreachable (no answer, or 502, 503, 504) before the run stops.
    public var maxOutage = 300.0
    /// Plain `http://` to another machine (refused by default, for every URL contacted).
    public var allowInsecureHTTP = false
    /// How the folder is validated before the upload (by default against the limits its manifest records).
    public var validation = ValidationOptions()
    /// Upload without first checking the server's CapabilityStatement against what the folder writes.
    public var skipPreflight = false
    /// Where the journals are kept (one folder per server inside). By default `DIR/upload`, or, when the folder
    /// cannot be written (read-only media), a folder of the user's named after the manifest's checksum.
    public var journalRoot: String?
    /// Send batches as Medplum's asynchronous jobs (`Prefer: respond-async`), outside the interaction quota.
    public var async = false
    /// On Ctrl-C, cancel the asynchronous jobs in flight (`DELETE` on their status URLs) instead of leaving them
    /// running for the next run to read.
    public var cancelOnInterrupt = false
    /// First and longest wait between two polls of an asynchronous job, in seconds.
    public var firstPoll = 0.2
    public var longestPoll = 10.0

    public init(server: String) {
        self.server = server
    }

    var urlPolicy: URLPolicy { URLPolicy(allowInsecureHTTP: allowInsecureHTTP) }
}

/// Counts of one upload, per resource type.
public struct UploadReport: Sendable {
    public var created: [String: Int] = [:]
    public var updated: [String: Int] = [:]
    /// Conditional deletes (a delta's) the server carried out, per type.
    public var deleted: [String: Int] = [:]
    public var failed: [String: Int] = [:]
    /// Entries an earlier run already wrote, skipped now.
    public var skipped = 0
    public var requests = 0
    public var seconds = 0.0
    /// The server and principal whose journal this run used.
    public var target: UploadTarget?
    /// Steps whose batches went as transactions, because the server stores conditional references in batch
    /// entries unresolved.
    public var transactionSteps: [String] = []
    /// Entries and requests the server answered 429 (rate limit or quota), and seconds requests waited, summed,
    /// so as not to exceed the server's interaction quota.
    public var throttled = 0
    public var quotaWait = 0.0
    /// Asynchronous jobs submitted by this run, left running on the server when it stopped, and cancelled.
    public var asyncJobs = 0
    public var jobsLeftRunning = 0
    public var jobsCancelled = 0
    /// With `--async`: steps sent synchronously all the same (transactions, batches of transactions), whose
    /// atomicity an asynchronous job would not keep.
    public var synchronousSteps: [String] = []

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

/// What the uploader tells the user while it runs, besides progress.
public enum UploadEvent: Sendable {
    /// The journal in use: whose it is, where, how many entries earlier runs wrote to this server, and notes
    /// (a changed manifest, an old journal that names no server).
    case journal(target: UploadTarget, directory: String, earlierEntries: Int, notes: [String])
    /// A wait before resending `request`, and why.
    case waiting(request: String, seconds: Double, reason: String)
    /// The server stored a batch entry's conditional reference unresolved; from `step` on, such batches go as
    /// transactions of `chunkSize` entries.
    case batchReferencesUnresolved(step: String, chunkSize: Int)
    /// The server's capabilities could not be read, so they were not checked.
    case preflightSkipped(reason: String)
    /// With `--async`, `requests` requests of `step` go synchronously: they are transactions (or batches of them),
    /// which an asynchronous job would run entry by entry, not all or nothing.
    case synchronousStep(step: String, requests: Int)
    /// An asynchronous job ended in error; `resubmitted` when its entries are sent again (all are conditional
    /// updates or deletes, so a replay is safe).
    case jobFailed(request: String, issues: [String], resubmitted: Bool)
}

/// An upload that stopped before its end, with what it did until then (also in the journal).
public struct UploadStopped: Error, CustomStringConvertible {
    public enum Reason: Sendable {
        /// Ctrl-C or SIGTERM.
        case interrupted
        /// No answer (or only 502, 503, 504) for `seconds`.
        case serverDown(seconds: Double, lastProblem: String)
        /// The server asked to wait `asked` seconds, more than the cap.
        case serverWaitTooLong(asked: Double, cap: Double, request: String, step: String)
    }

    public var reason: Reason
    public var report: UploadReport

    public var description: String {
        var resume = "What was written is in the journal: run the same command again to resume."
        if report.jobsLeftRunning > 0 {
            resume += " \(report.jobsLeftRunning) asynchronous job\(report.jobsLeftRunning == 1 ? " keeps" : "s keep") running on the server: "
                + "the next run reads \(report.jobsLeftRunning == 1 ? "its" : "their") results instead of sending the entries again (--cancel-on-interrupt cancels jobs on Ctrl-C)."
        }
        if report.jobsCancelled > 0 {
            resume += " \(report.jobsCancelled) asynchronous job\(report.jobsCancelled == 1 ? " was" : "s were") cancelled (DELETE on the status URL); "
                + "the next run sends their entries again (safe: conditional updates)."
        }
        switch reason {
        case .interrupted:
            return "interrupted after \(HumanDuration.describe(report.seconds)): \(report.written) written in this run. \(resume)"
        case .serverDown(let seconds, let problem):
            return "the server has not answered for \(HumanDuration.describe(seconds)) (last: \(problem)); stopping after \(HumanDuration.describe(report.seconds)). \(resume)"
        case .serverWaitTooLong(let asked, let cap, let request, let step):
            return "the server asks to wait \(HumanDuration.describe(asked)) before \(request) is sent again, more than --max-server-wait (\(HumanDuration.describe(cap))); "
                + "giving up on step \(step) after \(HumanDuration.describe(report.seconds)). \(resume)"
        }
    }
}

/// Durations as people read them: "0.4 s", "42 s", "5 min 2 s", "11 days".
public enum HumanDuration {
    public static func describe(_ seconds: Double) -> String {
        if seconds < 10 { return String(format: "%.1f s", seconds) }
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s) s" }
        if s < 3600 { return "\(s / 60) min" + (s % 60 == 0 ? "" : " \(s % 60) s") }
        if s < 86_400 { return "\(s / 3600) h" + (s % 3600 / 60 == 0 ? "" : " \(s % 3600 / 60) min") }
        let days = s / 86_400
        return "\(days) day\(days == 1 ? "" : "s")"
    }
}

/// Why an upload did not start.
public enum UploadRefusal: Error, CustomStringConvertible {
    /// Files differ from the manifest (altered or damaged): never uploaded, not even with `--force`.
    case altered([Finding])
    case invalid(ValidationReport)
    case manifest(String)
    /// The server's CapabilityStatement lacks what the folder needs: one line per type or interaction.
    case preflight([String])
    /// Resources the folder's references expect on the server (`known-identifiers.txt`) that it does not hold.
    case knownIdentifiersMissing([String], of: Int)
    /// A folder packed for asynchronous batches (bodies over the synchronous limit), uploaded without `--async`.
    case needsAsync

    public var description: String {
        switch self {
        case .preflight(let problems):
            return "the server cannot take everything this folder writes, says its CapabilityStatement (GET metadata):\n"
                + problems.map { "  - " + $0 }.joined(separator: "\n")
                + "\nNothing was sent. --skip-preflight uploads anyway; what the server refuses is then listed in failures.ndjson."
        case .altered(let findings):
            let files = findings.prefix(5).map { "\($0.location): \($0.message)" }.joined(separator: "; ")
            return "the folder does not match its manifest (\(files)\(findings.count > 5 ? "; …" : "")); recopy or regenerate it. Nothing was sent."
        case .invalid(let r):
            let errors = r.findings.filter { $0.severity == .error }
            let shown = errors.prefix(5).map { "\($0.location): \($0.message)" }.joined(separator: "; ")
            return "the artifacts have \(r.errors) validation errors (\(shown)\(errors.count > 5 ? "; …" : "")); run `fhirbundle validate` for all of them. Nothing was sent (--force uploads anyway)."
        case .manifest(let m): return m
        case .needsAsync:
            return "this folder was written with --profile medplum-async: its batches may be up to 50 MB, which Medplum takes only as asynchronous "
                + "jobs (1 MB otherwise). Upload it with --async, or write it again with --profile medplum. Nothing was sent."
        case .knownIdentifiersMissing(let missing, let total):
            return "\(missing.count) of the \(total) resources that known-identifiers.txt says are on the server are not (or not once), so references to them would fail: "
                + missing.prefix(5).joined(separator: ", ") + (missing.count > 5 ? ", …" : "")
                + ". Load them first, or convert without them in --known-identifiers. Nothing was sent (--skip-preflight uploads anyway)."
        }
    }
}

/// Replays an artifact folder against a FHIR server: steps in order, bundles of a step concurrently (never two
/// writing the same identifier at once), retried with backoff, recorded in the server's journal so that a rerun
/// resumes.
public final class Uploader: @unchecked Sendable {  // `report` and `failuresFile` behind `lock`
    private let folder: String
    private let options: UploadOptions
    private let lock = NSLock()
    private var report = UploadReport()
    private var failuresFile: FileHandle?
    /// Conditional URLs of resources this run created and then wrote again in another form (a probe batch sent
    /// again as transactions): their second write still counts as a creation.
    private var createdBefore = Set<String>()

    public init(folder: String, options: UploadOptions) {
        self.folder = folder
        self.options = options
    }

    /// The server and principal this upload is for, which name its journal.
    public var target: UploadTarget { UploadTarget(server: options.server, principal: options.credentials.principal) }

    /// Where this folder's journals are kept, and why there when it is not the folder itself.
    public func journalRoot(manifestSHA256: String) -> (path: String, note: String?) {
        let inside = folder + "/upload"
        let writable = FileManager.default.fileExists(atPath: inside) ? access(inside, W_OK) == 0 : access(folder, W_OK) == 0
        return Self.journalRoot(folder: folder, explicit: options.journalRoot, writable: writable, manifestSHA256: manifestSHA256,
                                environment: ProcessInfo.processInfo.environment)
    }

    /// The decision of `journalRoot`, from what it depends on: the option, whether the folder can be written, the
    /// manifest's checksum and the user's state folder (`XDG_STATE_HOME`, else `~/.local/state`).
    static func journalRoot(folder: String, explicit: String?, writable: Bool, manifestSHA256: String,
                            environment: [String: String]) -> (path: String, note: String?) {
        if let explicit { return (explicit, nil) }
        if writable { return (folder + "/upload", nil) }
        let state = environment["XDG_STATE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? ((environment["HOME"] ?? NSTemporaryDirectory()) + "/.local/state")
        let root = state + "/fhirupload/" + manifestSHA256.prefix(16)
        return (root, "the folder cannot be written (read-only media?): the journal is kept in \(root), named after the manifest's checksum, so a rerun from this folder finds it (--journal-dir chooses another place)")
    }

    /// Validates and plans without sending anything (`--dry-run`): what would be sent, step by step, and how much
    /// an earlier run already wrote to this server.
    public func dryRun() throws -> (plan: UploadPlan, alreadyWritten: Int, validation: ValidationReport) {
        let (manifest, manifestSHA256) = try readManifest()
        let validation = try ArtifactValidator(folder: folder, options: options.validation).run()
        let directory = target.directory(inRoot: journalRoot(manifestSHA256: manifestSHA256).path)
        let record = TargetRecord.read(directory: directory)
        let current = record?.manifestSHA256 == manifestSHA256 ? record : nil
        let plan = try UploadPlan.make(folder: folder, manifest: manifest, splitTransactions: splitTransactions(manifest),
                                       batchesAsTransactions: current?.resolvesBatchConditionalReferences == false)
        var written = 0
        if current != nil && !options.restart && FileManager.default.fileExists(atPath: directory + "/" + UploadJournal.fileName) {
            let journal = try UploadJournal(directory: directory, exclusive: false)
            written = Self.entriesWritten(plan, journal)
        }
        return (plan, written, validation)
    }

    /// Validates, plans and uploads; returns the report. Throws `UploadRefusal` before sending anything,
    /// `ConnectionFailure` when the server refuses the credentials or redirects elsewhere, and `UploadStopped`
    /// (with the report so far) when interrupted, when the server stays down or asks for too long a wait. What
    /// was written is in the journal in every case.
    public func run(progress: @escaping @Sendable (UploadProgress) -> Void = { _ in },
                    events: @escaping @Sendable (UploadEvent) -> Void = { _ in }) async throws -> UploadReport {
        let started = Date()
        let (manifest, manifestSHA256) = try readManifest()
        let validation = try ArtifactValidator(folder: folder, options: options.validation).run()
        let altered = validation.findings.filter { Self.integrityRules.contains($0.rule) }
        if !altered.isEmpty { throw UploadRefusal.altered(altered) }
        if validation.errors > 0 && !options.force { throw UploadRefusal.invalid(validation) }
        if manifest.profile == .medplumAsync && !options.async { throw UploadRefusal.needsAsync }
        if let refusal = options.urlPolicy.refusal(of: options.server) { throw ConnectionFailure.refusedURL(refusal) }
        let target = self.target
        let (root, rootNote) = journalRoot(manifestSHA256: manifestSHA256)
        let directory = target.directory(inRoot: root)
        let client = FHIRClient(base: options.server, credentials: options.credentials, timeout: options.timeout, policy: options.urlPolicy)
        if !options.skipPreflight {
            let known = TargetRecord.read(directory: directory)
            let preflightPlan = try UploadPlan.make(folder: folder, manifest: manifest, splitTransactions: splitTransactions(manifest),
                                                    batchesAsTransactions: known?.manifestSHA256 == manifestSHA256 && known?.resolvesBatchConditionalReferences == false)
            do {
                try await preflight(preflightPlan.needs, client: client, events: events)
                try await checkKnownIdentifiers(manifest, client: client)
            } catch {
                await client.shutdown()
                throw error
            }
        }
        let journal: UploadJournal
        var record: TargetRecord
        var notes: [String]
        do {
            journal = try UploadJournal(directory: directory)
            (record, notes) = try openRecord(directory: directory, target: target, manifestSHA256: manifestSHA256, journal: journal)
        } catch {
            await client.shutdown()
            throw error
        }
        if let rootNote { notes.insert(rootNote, at: 0) }
        if options.restart {
            // Start over: forget what was written and what was learnt about the server.
            try journal.restart()
            record.resolvesBatchConditionalReferences = nil
            try record.write(directory: directory)
        }
        var plan = try UploadPlan.make(folder: folder, manifest: manifest, splitTransactions: splitTransactions(manifest),
                                       batchesAsTransactions: record.resolvesBatchConditionalReferences == false)
        report.target = target
        if record.resolvesBatchConditionalReferences == false { report.transactionSteps = Self.stepsWithTransactionChunks(plan) }
        events(.journal(target: target, directory: directory, earlierEntries: Self.entriesWritten(plan, journal), notes: notes))
        guard FileManager.default.createFile(atPath: directory + "/failures.ndjson", contents: Data()),
              let failures = FileHandle(forWritingAtPath: directory + "/failures.ndjson") else {
            await client.shutdown()
            throw UploadError.journal(path: directory + "/failures.ndjson", message: "cannot be written")
        }
        failuresFile = failures
        defer { try? failuresFile?.close() }
        let outage = OutageClock(limit: options.maxOutage)
        let pacer = QuotaPacer()
        let registry = JobRegistry()
        let jobs = options.async ? AsyncBatchJobs(client: client, journal: journal, outage: outage, retry: options.retry,
                                                  cancelOnInterrupt: options.cancelOnInterrupt, registry: registry, pacer: pacer,
                                                  firstPoll: options.firstPoll, longestPoll: options.longestPoll) : nil
        let context = SendContext(client: client, journal: journal, outage: outage, events: events, started: started,
                                  files: VerifiedFiles(folder: folder, manifest: manifest), pacer: pacer, jobs: jobs)
        func finishReport() async {
            let waited = await pacer.waited
            let counts = registry.counts
            lock.withLock {
                report.seconds = Date().timeIntervalSince(started)
                report.quotaWait = waited
                (report.asyncJobs, report.jobsLeftRunning, report.jobsCancelled) = counts
            }
        }
        let total = plan.steps.reduce(0) { $0 + $1.requests.reduce(0) { $0 + $1.resourceCount } }
        do {
            for number in plan.steps.indices {
                let name = plan.steps[number].name
                var requests = plan.steps[number].requests
                if record.resolvesBatchConditionalReferences == nil, let probe = requests.first(where: \.batchConditionalReferences) {
                    // The first batch whose entries hold conditional references goes alone, and one of the written
                    // resources is read back: does this server resolve them in a batch?
                    let (failuresMark, failedBefore) = lock.withLock { (failuresFile?.offsetInFile ?? 0, report.failed) }
                    let sent = try await send(probe, body: probe.loadBody(from: context.files), step: name, context: context)
                    requests.removeAll { $0.id == probe.id }
                    if let resolves = try await probeBatchReferences(sent, client: client) {
                        record.resolvesBatchConditionalReferences = resolves
                        try record.write(directory: directory)
                        if !resolves {
                            // Written with unresolved links: sent again, as transactions (conditional updates, so
                            // the resources are updated, not duplicated). Their first tally no longer counts.
                            untally(sent)
                            // Its failures are tried again with the rest: reported once, by the transactions.
                            lock.withLock {
                                report.failed = failedBefore
                                try? failuresFile?.truncate(atOffset: failuresMark)
                                _ = try? failuresFile?.seekToEnd()
                            }
                            plan = try UploadPlan.make(folder: folder, manifest: manifest, splitTransactions: splitTransactions(manifest),
                                                       batchesAsTransactions: true)
                            requests = plan.steps[number].requests
                            report.transactionSteps = Self.stepsWithTransactionChunks(plan)
                            events(.batchReferencesUnresolved(step: name, chunkSize: manifest.limits.conditionalTransactionEntries))
                        }
                    }
                }
                let stepCount = plan.steps.count
                if options.async {
                    let synchronous = requests.filter { !$0.runsAsJob }.count
                    if synchronous > 0 {
                        lock.withLock { report.synchronousSteps.append(name) }
                        events(.synchronousStep(step: name, requests: synchronous))
                    }
                }
                try await runStep(requests, step: name, context: context) { [self] in
                    let (done, failed) = lock.withLock { (report.written + report.failures + report.skipped, report.failures) }
                    progress(UploadProgress(step: name, stepNumber: number + 1, stepCount: stepCount, resourcesDone: done,
                                            resourcesTotal: total, failed: failed, seconds: Date().timeIntervalSince(started)))
                }
                try journal.sync()
            }
        } catch {
            try? journal.sync()
            await client.shutdown()
            await finishReport()
            let partial = lock.withLock { report }
            if let reason = error as? StopReason { throw UploadStopped(reason: reason.reason, report: partial) }
            if error is CancellationError || Task.isCancelled { throw UploadStopped(reason: .interrupted, report: partial) }
            throw error
        }
        await client.shutdown()
        await finishReport()
        return lock.withLock { report }
    }

    /// Reads the server's CapabilityStatement and refuses, naming types and counts, what it cannot take.
    private func preflight(_ needs: ServerNeeds, client: FHIRClient, events: @Sendable (UploadEvent) -> Void) async throws {
        switch try await client.read(client.base + "/metadata", type: "CapabilityStatement", retry: options.retry) {
        case .found(let capability):
            let problems = Preflight.problems(capability: capability, needs: needs)
            if !problems.isEmpty { throw UploadRefusal.preflight(problems) }
        case .refused(_, let problem):
            events(.preflightSkipped(reason: "GET metadata answered \(problem) without a CapabilityStatement"))
        case .gaveUp(let problem, let attempts):
            throw UploadRefusal.manifest("the server does not answer GET metadata (\(problem), \(attempts) attempts); nothing was sent")
        }
    }

    /// The resources the folder's references expect on the server must be there: otherwise every entry that refers
    /// to one fails, halfway through the upload.
    private func checkKnownIdentifiers(_ manifest: Manifest, client: FHIRClient) async throws {
        guard manifest.artifacts.contains(where: { $0.path == KnownIdentifiers.fileName }),
              let text = try? String(contentsOfFile: folder + "/" + KnownIdentifiers.fileName, encoding: .utf8) else { return }
        let known = KnownIdentifiers.parse(text)
        let (missing, _) = try await Verifier(folder: folder, options: options).missingKnownIdentifiers(known, client: client)
        if !missing.isEmpty { throw UploadRefusal.knownIdentifiersMissing(missing, of: known.count) }
    }

    /// Whether inner transactions go one per request: when asked, and for a `medplum-async` folder, whose batches of
    /// transactions are packed for a 50 MB job body but must go synchronously (all or nothing), where Medplum
    /// takes 1 MB.
    private func splitTransactions(_ manifest: Manifest) -> Bool {
        options.splitTransactions || manifest.profile == .medplumAsync
    }

    /// Findings that mean the folder is not what `convert` wrote.
    static let integrityRules: Set<String> = [Rule.manifestChecksum.id, Rule.manifestMissingFile.id, Rule.manifestInvalid.id, Rule.manifestCounts.id]

    /// Entries of `plan` that the journal records as written.
    private static func entriesWritten(_ plan: UploadPlan, _ journal: UploadJournal) -> Int {
        plan.steps.reduce(0) { sum, step in sum + step.requests.reduce(0) { $0 + journal.succeededEntries(of: $1.id).count } }
    }

    private static func stepsWithTransactionChunks(_ plan: UploadPlan) -> [String] {
        plan.steps.filter { step in step.requests.contains { if case .transactionChunk? = $0.part { true } else { false } } }.map(\.name)
    }

    /// The target's record: a new one, or the existing one if it belongs to this manifest. A journal written for
    /// another manifest (the folder was regenerated) is set aside and the upload starts from nothing.
    private func openRecord(directory: String, target: UploadTarget, manifestSHA256: String,
                            journal: UploadJournal) throws -> (TargetRecord, [String]) {
        var notes: [String] = []
        for old in ["journal.ndjson", "failures.ndjson"] where FileManager.default.fileExists(atPath: folder + "/upload/" + old) {
            notes.append("upload/\(old) was written by an earlier fhirupload that did not record which server it was for; it is ignored (delete it once you no longer need it)")
        }
        var record = TargetRecord(server: target.server, principal: target.principal, manifestSHA256: manifestSHA256)
        if let existing = TargetRecord.read(directory: directory) {
            if existing.manifestSHA256 == manifestSHA256 {
                record = existing
            } else if journal.succeededCount > 0 || existing.resolvesBatchConditionalReferences != nil {
                let aside = directory + "/journal-of-manifest-\(existing.manifestSHA256.prefix(12)).ndjson"
                try? FileManager.default.removeItem(atPath: aside)
                try? FileManager.default.copyItem(atPath: journal.path, toPath: aside)
                try journal.restart()
                record.resolvesBatchConditionalReferences = existing.resolvesBatchConditionalReferences
                notes.append("the folder's manifest changed since the last upload to this server (the artifacts were regenerated); everything is sent again, and the old journal is kept as \((aside as NSString).lastPathComponent)")
            }
        } else if journal.succeededCount > 0 {
            // A journal without its record cannot be trusted to belong to these artifacts.
            try journal.restart()
            notes.append("the journal had no target.json; it is ignored and everything is sent again")
        }
        try record.write(directory: directory)
        return (record, notes)
    }

    private func readManifest() throws -> (Manifest, String) {
        guard let data = FileManager.default.contents(atPath: folder + "/manifest.json") else {
            throw UploadRefusal.manifest("\(folder) has no manifest.json: fhirupload uploads artifact folders written by fhirbundle convert or "
                + "fhirbundle rebundle. For FHIR data written by another tool, run `fhirbundle rebundle \(folder) --out OUT` and upload OUT.")
        }
        do {
            return (try Manifest(json: JSONParser.parse(Array(data))), sha256Hex(Array(data)))
        } catch {
            throw UploadRefusal.manifest("\(folder)/manifest.json cannot be read: \(error)")
        }
    }

    /// Reads back one resource that a batch wrote with a conditional reference: true when the server stored the
    /// reference resolved (`Patient/123`), false when it kept `Patient?identifier=…`, nil when it cannot be told.
    private func probeBatchReferences(_ sent: SentRequest, client: FHIRClient) async throws -> Bool? {
        for (index, outcome) in sent.successes {
            guard let resource = sent.entries[index]["resource"],
                  let conditional = ReferenceWalk.references(in: resource).first(where: { ReferenceWalk.isConditional($0.reference) }),
                  let location = outcome.location, let url = ResourceLocation.readURL(location, base: client.base) else { continue }
            let response: FHIRResponse
            do {
                response = try await client.send(method: .GET, url: url)
            } catch let failure as ConnectionFailure {
                throw failure
            } catch {
                return nil
            }
            guard response.status == 200, let stored = response.json, stored["resourceType"] == resource["resourceType"] else { return nil }
            guard let reference = ReferenceWalk.value(at: conditional.pointer, in: stored)?.stringValue else { return false }
            return !ReferenceWalk.isConditional(reference) && !reference.hasPrefix("urn:")
        }
        return nil
    }

    /// What the requests of one run share.
    private struct SendContext: Sendable {
        let client: FHIRClient
        let journal: UploadJournal
        let outage: OutageClock
        let events: @Sendable (UploadEvent) -> Void
        let started: Date
        /// Bundle bytes as the manifest lists them, or a refusal.
        let files: VerifiedFiles
        let pacer: QuotaPacer
        /// With `--async`: how batches are sent as jobs.
        let jobs: AsyncBatchJobs?
    }

    /// Runs a step's requests, at most `concurrency` at once and never two that write the same identifier.
    private func runStep(_ requests: [UploadRequest], step: String, context: SendContext,
                         finished: @escaping @Sendable () -> Void) async throws {
        let bodies = RequestBodies(files: context.files, requests: requests)
        var scheduler = StepScheduler(requests, concurrency: options.concurrency)
        try await withThrowingTaskGroup(of: Int.self) { group in
            while true {
                while let (ticket, r) = scheduler.start() {
                    group.addTask { [self] in
                        defer { bodies.finished(r) }
                        _ = try await self.send(r, body: bodies.body(of: r), step: step, context: context)
                        return ticket
                    }
                }
                guard let done = try await group.next() else { break }
                scheduler.finished(done)
                finished()
            }
        }
    }

    /// What one request wrote: its entries as sent and the outcomes of those that succeeded in this run.
    private struct SentRequest {
        var entries: [JSONValue]
        var successes: [(index: Int, outcome: EntryOutcome)]
    }

    /// Sends one request until every entry has succeeded or failed for good (`RequestProgress` decides what to
    /// send and what an answer means; this does the I/O and the waits).
    private func send(_ request: UploadRequest, body requestBody: [UInt8], step: String, context: SendContext) async throws -> SentRequest {
        guard let bundle = try? JSONParser.parse(requestBody), let entries = bundle["entry"]?.arrayValue else {
            // The plan parsed it, so the file changed since: stop rather than skip it silently.
            throw UploadError.plan(file: request.file, message: "the bundle can no longer be read as a Bundle with entries")
        }
        let journal = context.journal
        let isTransaction = bundle["type"]?.stringValue == "transaction"
        let alreadyWritten = journal.succeededEntries(of: request.id)
        addSkipped(alreadyWritten.filter { $0 < entries.count }.reduce(0) { $0 + resourceTypes(entries[$1]).count })
        var divisible = false
        if case .transactionChunk? = request.part { divisible = true }
        var progress = RequestProgress(entryCount: entries.count, alreadyWritten: alreadyWritten, isTransaction: isTransaction, divisible: divisible)
        var sent = SentRequest(entries: entries, successes: [])
        let jobs = request.runsAsJob ? context.jobs : nil
        while !progress.isDone {
            var attemptEntries = progress.nextAttempt()
            // A job an earlier attempt or run submitted is read, not submitted again: its entries still open.
            var resumed: UploadJournal.PendingJob?
            if jobs != nil, let pending = journal.pendingJob(of: request.id) {
                let open = Set(attemptEntries)
                let held = pending.entries.filter(open.contains)
                if held.isEmpty {
                    try journal.recordJobEnded(request: request.id, url: pending.url, how: "its entries are settled")
                } else {
                    attemptEntries = held
                    resumed = pending
                }
            }
            // A batch larger than the server's quota window is sent in parts that fit, so that none meets a 429.
            var cut = false
            if jobs == nil, !isTransaction,
               let fitting = await context.pacer.entriesFitting(attemptEntries.map { resourceTypes(entries[$0]).count }), fitting < attemptEntries.count {
                attemptEntries = Array(attemptEntries.prefix(fitting))
                cut = true
            }
            let body: [UInt8]
            if resumed != nil {
                body = []
            } else if attemptEntries.count == entries.count {
                body = requestBody
            } else {
                var subset = bundle
                if case .object(var members) = subset, let i = members.firstIndex(where: { $0.key == "entry" }) {
                    members[i].value = .array(attemptEntries.map { entries[$0] })
                    subset = .object(members)
                }
                body = JSONWriter().bytes(subset)
            }
            var result: Result<BundleResponse, any Error>
            if let jobs {
                result = try await jobs.run(body, request: request.id, entries: attemptEntries, resume: resumed?.url)
                if let resumed, case .success(var response) = result, let outcomes = response.outcomes, outcomes.count == resumed.entries.count {
                    let open = Set(attemptEntries)
                    response.outcomes = zip(resumed.entries, outcomes).filter { open.contains($0.0) }.map(\.1)
                    result = .success(response)
                }
            } else {
                let entryCount = attemptEntries.reduce(0) { $0 + resourceTypes(entries[$1]).count }
                let points = try await context.pacer.admit(points: context.pacer.estimate(entries: entryCount))
                result = await post(body, client: context.client)
                let headers = (try? result.get())?.headers ?? []
                await context.pacer.settle(points: points, entries: entryCount, headers: headers)
            }
            if case .failure(let error as ConnectionFailure) = result { throw error }
            if case .success(let response) = result {
                let throttled = response.status == 429 ? 1 : (response.outcomes ?? []).filter { $0.status == 429 }.count
                if throttled > 0 {
                    lock.withLock { report.throttled += throttled }
                    await context.pacer.throttled()
                }
            }
            var headers: [(name: String, value: String)] = []
            let answer: RequestProgress.Answer
            switch result {
            case .failure(let error):
                if error is CancellationError || Task.isCancelled { throw CancellationError() }
                // Connection error or timeout: nothing known, retry everything left.
                let problem = "no answer (\(context.client.redactor.redact("\(error)")))"
                try context.outage.failed(problem)
                answer = .none(problem: problem)
            case .success(let response) where response.jobFailure != nil:
                let issues = response.jobFailure ?? []
                let safe = Self.replaySafe(attemptEntries.map { entries[$0] })
                context.events(.jobFailed(request: request.id, issues: issues, resubmitted: safe && progress.attempt < options.retry.maxAttempts))
                answer = safe ? .none(problem: "the asynchronous job ended in error (" + issues.joined(separator: "; ") + ")")
                    : .refused(status: 500, issues: issues + ["the job ended in error and its entries are not all conditional updates, so they are not resubmitted"])
            case .success(let response):
                headers = response.headers
                if [502, 503, 504].contains(response.status) {
                    try context.outage.failed("HTTP \(response.status)")
                } else {
                    context.outage.answered()
                }
                if let parsed = response.outcomes, parsed.count == attemptEntries.count {
                    if let mismatch = Self.mismatch(parsed, attemptEntries.map { entries[$0] }) {
                        // The answer's order cannot be trusted: nothing it says is recorded, everything is resent.
                        answer = .none(problem: "the server's response does not match the request (\(mismatch))")
                    } else {
                        answer = .outcomes(parsed)
                    }
                } else if (200...299).contains(response.status) {
                    // Success without the response bundle (a proxy's page, a truncated body): nothing known, retry.
                    answer = .none(problem: "HTTP \(response.status) without a \(isTransaction ? "transaction" : "batch")-response bundle of \(attemptEntries.count) entries"
                        + (response.outcomes.map { " (it has \($0.count))" } ?? ""))
                } else if response.status == 0 {
                    answer = .none(problem: response.issues.joined(separator: "; "))  // a job without a usable result
                } else if RetryPolicy.isRetryable(status: response.status) {
                    answer = .none(problem: "HTTP \(response.status)" + response.issues.map { "; " + $0 }.joined())
                } else if jobs != nil && response.status != 200 {
                    answer = .refused(status: response.status, issues: response.issues
                        + ["the server refused the asynchronous batch (Prefer: respond-async); upload without --async, or ask its administrator"])
                } else {
                    answer = .refused(status: response.status, issues: response.issues)
                }
            }
            let settlement = progress.receive(answer, for: attemptEntries)
            if !settlement.journal.isEmpty { try journal.record(request: request.id, outcomes: settlement.journal) }
            sent.successes += settlement.succeeded
            tally(settlement.succeeded, entries: entries)
            for failure in settlement.failed { recordFailure(request: request, index: failure.index, outcome: failure.outcome, entries: entries) }
            if progress.isDone || settlement.split { continue }
            if cut && !attemptEntries.contains(where: progress.remaining.contains) {
                progress.partSettled()
                continue
            }
            if !settlement.succeeded.isEmpty || !settlement.failed.isEmpty, progress.perEntry, !progress.remaining.contains(attemptEntries[0]) {
                continue  // that entry is settled: the next one starts at once
            }
            switch options.retry.decision(afterAttempt: progress.attempt, headers: headers) {
            case .exhausted:
                for failure in progress.giveUp(attemptEntries) {
                    recordFailure(request: request, index: failure.index, outcome: failure.outcome, entries: entries)
                }
            case .serverWaitTooLong(let asked):
                throw StopReason(reason: .serverWaitTooLong(asked: asked, cap: options.retry.maxServerWait, request: request.id, step: step))
            case .retry(let delay, let serverAsked):
                if delay >= 1 {
                    context.events(.waiting(request: request.id, seconds: delay,
                                            reason: serverAsked ? "the server asks for it (\(progress.lastProblem))" : progress.lastProblem))
                }
                try await Task.sleep(nanoseconds: UInt64(delay * 1_000_000_000))
            }
        }
        addRequest()
        return sent
    }

    /// Why the answers of a response cannot belong to the entries sent, in their order: a `location` naming
    /// another resource type than the entry writes (also inside nested transactions).
    static func mismatch(_ outcomes: [EntryOutcome], _ entries: [JSONValue]) -> String? {
        for (k, (outcome, entry)) in zip(outcomes, entries).enumerated() where outcome.succeeded {
            if entry["request"]?["url"]?.stringValue == "/" {
                let inner = entry["resource"]?["entry"]?.arrayValue ?? []
                if !outcome.innerStatuses.isEmpty && outcome.innerStatuses.count != inner.count {
                    return "entry \(k) is a transaction of \(inner.count) entries, its answer has \(outcome.innerStatuses.count)"
                }
                for (j, (location, innerEntry)) in zip(outcome.innerLocations, inner).enumerated() {
                    if let location, let named = ResourceLocation.type(of: location), let written = innerEntry["resource"]?["resourceType"]?.stringValue,
                       named != written {
                        return "entry \(k).\(j) writes a \(written), its answer names a \(named)"
                    }
                }
            } else if let location = outcome.location, let named = ResourceLocation.type(of: location),
                      let written = entry["resource"]?["resourceType"]?.stringValue, named != written {
                return "entry \(k) writes a \(written), its answer names a \(named)"
            }
        }
        return nil
    }

    /// POSTs a bundle; what the server says is redacted of credentials here, before anything keeps it.
    private func post(_ body: [UInt8], client: FHIRClient) async -> Result<BundleResponse, any Error> {
        do {
            return .success(BundleResponse(try await client.send(method: .POST, url: client.base, body: body), redactor: client.redactor))
        } catch {
            return .failure(error)
        }
    }

    /// Whether entries may be sent again after a job failed part-way: each one a conditional update or delete, or an
    /// update by id, whose replay leaves the server as one application would.
    static func replaySafe(_ entries: [JSONValue]) -> Bool {
        entries.allSatisfy { entry in
            let method = entry["request"]?["method"]?.stringValue
            return method == "PUT" || method == "DELETE"
        }
    }

    private func tally(_ successes: [(index: Int, outcome: EntryOutcome)], entries: [JSONValue], sign: Int = 1) {
        lock.lock()
        defer { lock.unlock() }
        for s in successes {
            let types = resourceTypes(entries[s.index])
            if entries[s.index]["request"]?["method"]?.stringValue == "DELETE" {
                for type in types { report.deleted[type, default: 0] += sign }
                continue
            }
            // A nested transaction reports each inner entry's status in its transaction-response.
            let statuses = s.outcome.innerStatuses.count == types.count ? s.outcome.innerStatuses : Array(repeating: s.outcome.status, count: types.count)
            let urls = entryURLs(entries[s.index])
            for (k, (type, status)) in zip(types, statuses).enumerated() {
                let url = k < urls.count ? urls[k] : ""
                var created = status == 201
                if sign < 0 && created {
                    createdBefore.insert(url)
                } else if sign > 0 && !created && createdBefore.remove(url) != nil {
                    created = true
                }
                if created { report.created[type, default: 0] += sign } else { report.updated[type, default: 0] += sign }
            }
        }
        report.created = report.created.filter { $0.value != 0 }
        report.updated = report.updated.filter { $0.value != 0 }
        report.deleted = report.deleted.filter { $0.value != 0 }
    }

    /// Takes back the counts of a request whose writes are superseded (sent again in another form).
    private func untally(_ sent: SentRequest) {
        tally(sent.successes, entries: sent.entries, sign: -1)
    }

    /// The request URL(s) of an entry (one per inner entry of a nested transaction).
    private func entryURLs(_ entry: JSONValue) -> [String] {
        if entry["request"]?["url"]?.stringValue == "/" {
            return (entry["resource"]?["entry"]?.arrayValue ?? []).map { $0["request"]?["url"]?.stringValue ?? "" }
        }
        return [entry["request"]?["url"]?.stringValue ?? ""]
    }

    /// The resource type(s) an entry writes (an inner transaction writes several).
    private func resourceTypes(_ entry: JSONValue) -> [String] {
        if entry["request"]?["url"]?.stringValue == "/" {
            return (entry["resource"]?["entry"]?.arrayValue ?? []).compactMap { $0["resource"]?["resourceType"]?.stringValue }
        }
        if entry["request"]?["method"]?.stringValue == "DELETE", let url = entry["request"]?["url"]?.stringValue {
            return [String(url.prefix { $0 != "?" && $0 != "/" })]
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

/// A reason to stop the whole run, thrown from inside a request and turned into `UploadStopped` with the report.
struct StopReason: Error {
    var reason: UploadStopped.Reason
}

/// How long the server has been unreachable, across all requests of a run: a server that stays down ends the
/// run after `limit` seconds overall, instead of every request spending its own attempts one after another.
final class OutageClock: @unchecked Sendable {  // `lastAnswer` behind `lock`
    private let lock = NSLock()
    private var lastAnswer = Date()
    private let limit: Double

    init(limit: Double) {
        self.limit = limit
    }

    /// The server answered (with anything but 502, 503 or 504).
    func answered() {
        lock.withLock { lastAnswer = Date() }
    }

    /// A request got no usable answer; throws once the server has been unreachable for longer than the limit.
    func failed(_ problem: String) throws {
        let down = lock.withLock { Date().timeIntervalSince(lastAnswer) }
        if down > limit { throw StopReason(reason: .serverDown(seconds: down, lastProblem: problem)) }
    }
}
