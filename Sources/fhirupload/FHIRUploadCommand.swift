import ArgumentParser
import CommandLineSupport
import FHIRUpload
import Foundation

#if canImport(Glibc)
import Glibc
#endif

@main
struct FHIRUploadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fhirupload",
        abstract: "Upload an artifact folder written by `fhirbundle convert` to a FHIR R4 server, and check the result.",
        discussion: """
            `fhirupload DIR --server URL` uploads (the `upload` subcommand is the default); \
            `fhirupload verify DIR --server URL` checks afterwards that the server holds exactly one resource \
            for every identifier the folder writes.

            Exit status: 0 on success, 1 when entries failed, the folder was refused or the server differs.
            """,
        subcommands: [Upload.self, Verify.self],
        defaultSubcommand: Upload.self
    )
}

/// Where the server is and how to log in: shared by `upload` and `verify`.
struct ServerOptions: ParsableArguments {
    @Option(name: .customLong("server"),
            help: ArgumentHelp("The server's FHIR base URL, e.g. https://api.medplum.com/fhir/R4 (default: MEDPLUM_BASE_URL + fhir/R4, as Medplum's own tools read it).",
                               valueName: "url"))
    var serverOption: String?

    /// The FHIR base: `--server`, else Medplum's `MEDPLUM_BASE_URL` (the server's origin) with `fhir/R4`.
    var server: String {
        if let serverOption { return serverOption }
        guard var base = ProcessInfo.processInfo.environment["MEDPLUM_BASE_URL"], !base.isEmpty else { return "" }
        while base.hasSuffix("/") { base.removeLast() }
        return base.contains("/fhir") ? base : base + "/fhir/R4"
    }

    @Option(help: ArgumentHelp("An environment variable holding a bearer token.", valueName: "name"))
    var tokenEnv: String?

    @Option(help: ArgumentHelp("A file holding a bearer token.", valueName: "path"))
    var tokenFile: String?

    @Option(help: ArgumentHelp("OAuth2 client credentials: the client id (Medplum: a ClientApplication's id).", valueName: "id"))
    var clientId: String?

    @Option(help: ArgumentHelp("An environment variable holding the client secret.", valueName: "name"))
    var clientSecretEnv: String?

    @Option(help: ArgumentHelp("A file holding the client secret.", valueName: "path"))
    var clientSecretFile: String?

    @Option(help: ArgumentHelp("The OAuth2 token endpoint (default: Medplum's, <origin>/oauth2/token).", valueName: "url"))
    var tokenUrl: String?

    @Flag(help: "Allow plain http:// to a host other than this machine (credentials and health data would travel unencrypted).")
    var allowInsecureHttp = false

    @Option(help: ArgumentHelp("Seconds one request may take, its answer's headers and body together; then it is retried.", valueName: "seconds"))
    var timeout = 120.0

    @Option(help: ArgumentHelp("Seconds the server may stay unreachable (no answer, or 502, 503, 504) before the run stops; a rerun resumes.",
                               valueName: "seconds"))
    var maxOutage = 300.0

    @Option(help: ArgumentHelp("The longest wait a server may ask for (Retry-After, RateLimit); a longer one stops the run with a message.",
                               valueName: "seconds"))
    var maxServerWait = 300.0

    func validate() throws {
        guard !server.isEmpty else { throw ValidationError("give the server's FHIR base URL with --server (or set MEDPLUM_BASE_URL)") }
        try Self.checkURL(server, option: serverOption == nil ? "MEDPLUM_BASE_URL" : "--server", allowInsecure: allowInsecureHttp)
        if let tokenUrl { try Self.checkURL(tokenUrl, option: "--token-url", allowInsecure: allowInsecureHttp) }
        for (value, name) in [(timeout, "--timeout"), (maxOutage, "--max-outage"), (maxServerWait, "--max-server-wait")] where !(value > 0) {
            throw ValidationError("\(name) must be a number of seconds above 0")
        }
        let ways = [tokenEnv != nil, tokenFile != nil, clientId != nil].filter { $0 }.count
        if ways > 1 { throw ValidationError("give one of --token-env, --token-file or --client-id") }
        if clientId != nil && (clientSecretEnv == nil) == (clientSecretFile == nil) {
            throw ValidationError("--client-id needs the secret from --client-secret-env or --client-secret-file (one of them)")
        }
        if clientId == nil && (clientSecretEnv != nil || clientSecretFile != nil || tokenUrl != nil) {
            throw ValidationError("--client-secret-env, --client-secret-file and --token-url go with --client-id")
        }
    }

    private static func checkURL(_ text: String, option: String, allowInsecure: Bool) throws {
        if let refusal = URLPolicy(allowInsecureHTTP: allowInsecure).refusal(of: text) { throw ValidationError("\(option): \(refusal)") }
    }

    /// The upload options these arguments give (credentials read from the environment or files).
    func options() throws -> UploadOptions {
        var options = UploadOptions(server: server)
        options.credentials = try credentials()
        options.timeout = timeout
        options.maxOutage = maxOutage
        options.retry.maxServerWait = maxServerWait
        options.allowInsecureHTTP = allowInsecureHttp
        return options
    }

    /// The credentials, read from the environment or files; their values are never printed.
    func credentials() throws -> Credentials {
        if let tokenEnv { return .bearer(try Self.secret(env: tokenEnv, what: "token")) }
        if let tokenFile { return .bearer(try Self.secret(file: tokenFile, what: "token")) }
        if let clientId {
            let secret = try clientSecretEnv.map { try Self.secret(env: $0, what: "client secret") }
                ?? Self.secret(file: clientSecretFile!, what: "client secret")
            return .clientCredentials(tokenURL: tokenUrl ?? Credentials.defaultTokenURL(forServer: server), clientID: clientId, clientSecret: secret)
        }
        // Medplum's own tools read these; so do we, when no credential option is given.
        let environment = ProcessInfo.processInfo.environment
        if let id = environment["MEDPLUM_CLIENT_ID"], !id.isEmpty {
            guard let secret = environment["MEDPLUM_CLIENT_SECRET"], !secret.isEmpty else {
                throw ValidationError("MEDPLUM_CLIENT_ID is set but MEDPLUM_CLIENT_SECRET is not")
            }
            return .clientCredentials(tokenURL: Credentials.defaultTokenURL(forServer: server), clientID: id, clientSecret: secret)
        }
        return .none
    }

    private static func secret(env name: String, what: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
            throw ValidationError("the environment variable \(name) (the \(what)) is not set")
        }
        return value
    }

    private static func secret(file path: String, what: String) throws -> String {
        guard let value = try? String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !value.isEmpty else {
            throw ValidationError("cannot read the \(what) from \(path)")
        }
        return value
    }
}

struct Upload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Upload an artifact folder (the default subcommand).",
        discussion: """
            The folder is checked first: every file against the manifest's sha256 (an altered folder is always \
            refused), then the offline validation (refused on errors unless --force). Steps are sent in manifest \
            order, each finished before the next; the bundles of a step concurrently, never two writing the same \
            identifier at once. Connection errors, timeouts, 408, 429 and 5xx are retried with backoff, honouring \
            Retry-After and Medplum's RateLimit header; a batch resends only its failed entries.

            A journal per server in DIR/upload/<server>/ records every entry's outcome, so a rerun (after a \
            crash, a kill, Ctrl-C or a network failure) resumes where the last one stopped; another server, or \
            the same one with other credentials, starts from nothing. --restart replays everything, which is safe \
            because every write is a conditional update. Entries that fail for good are listed, with the \
            server's OperationOutcome, in the journal's folder as failures.ndjson.

            Every wait is bounded: --timeout per request, --max-server-wait for a Retry-After, --max-outage for a \
            server that stays down. Redirects to another origin are never followed.

            Examples:
              fhirupload out --server https://api.medplum.com/fhir/R4 \\
                  --client-id ID --client-secret-env MEDPLUM_SECRET
              fhirupload out --server http://127.0.0.1:8103/fhir --split-transactions
            """
    )

    @Argument(help: ArgumentHelp("The artifact folder.", valueName: "dir"))
    var folder: String

    @OptionGroup var connection: ServerOptions

    @Option(help: "Bundles of a step in flight at once.")
    var concurrency = 4

    @Flag(help: "Send each inner transaction of a batch of transactions on its own (servers without nested bundles).")
    var splitTransactions = false

    @Flag(name: .customLong("async"),
          help: ArgumentHelp("Send batches as Medplum's asynchronous jobs (Prefer: respond-async): outside the FHIR interaction quota, up to 50 MB each; results read when each job ends. Transactions still go synchronously.",
                             discussion: "See docs/upload.md, \"Asynchronous batches\"."))
    var asyncBatches = false

    @Flag(help: "With --async: on Ctrl-C, cancel the jobs in flight (DELETE on their status URLs) instead of leaving them running for the next run to read.")
    var cancelOnInterrupt = false

    @Flag(help: "Forget the journal and send everything again.")
    var restart = false

    @Flag(help: "Upload even when the offline validation finds errors (never when files differ from the manifest).")
    var force = false

    @Flag(help: "Do not check the server's CapabilityStatement (GET metadata) before sending; what the server refuses is listed in failures.ndjson.")
    var skipPreflight = false

    @Option(help: ArgumentHelp("Where to keep the journal (default: DIR/upload, or, on read-only media, ~/.local/state/fhirupload/<manifest checksum>).",
                               valueName: "dir"))
    var journalDir: String?

    @OptionGroup(title: "Limits checked before the upload (by default, those the folder's manifest records)")
    var sizing: LimitOptions

    @Flag(help: "Print the plan (steps, requests, entries) and what an earlier run already wrote; send nothing.")
    var dryRun = false

    @Flag(name: .shortAndLong, help: "No progress line; only the summary and errors.")
    var quiet = false

    func validate() throws {
        if concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
        if cancelOnInterrupt && !asyncBatches { throw ValidationError("--cancel-on-interrupt goes with --async") }
    }

    func run() async throws {
        var options = try connection.options()
        options.concurrency = concurrency
        options.splitTransactions = splitTransactions
        options.restart = restart
        options.force = force
        options.skipPreflight = skipPreflight
        options.journalRoot = journalDir
        options.async = asyncBatches
        options.cancelOnInterrupt = cancelOnInterrupt
        options.validation.profile = sizing.profile
        options.validation.limitOverrides = try sizing.overrides()
        let uploader = Uploader(folder: folder, options: options)
        if dryRun {
            let (plan, written, validation) = try uploader.dryRun()
            var lines = ["Plan for \(uploader.target.description) (nothing sent): validation \(validation.errors) errors, \(validation.warnings) warnings."]
            for step in plan.steps {
                lines.append("  \(step.name): \(step.requests.count) requests, \(step.requests.reduce(0) { $0 + $1.resourceCount }) resources")
            }
            lines.append("\(written) entries were already written to this server by an earlier run\(restart ? " (--restart sends them again)" : "").")
            print(lines.joined(separator: "\n"))
            if validation.errors > 0 && !force { throw ExitCode.failure }
            return
        }
        let folder = self.folder
        let quiet = self.quiet
        let outcome: Result<UploadReport, any Error> = await ProgressLine.capture(quiet: quiet) { line in
            try await Interruption.cancelOnSignal(notice: "interrupting: no new request starts; the journal is being synced (Ctrl-C again to quit at once)") {
                try await uploader.run(progress: { p in
                    let rate = Int(Double(p.resourcesDone) / max(p.seconds, 0.001))
                    line.draw("\(p.step) (step \(p.stepNumber)/\(p.stepCount)): \(p.resourcesDone)/\(p.resourcesTotal) resources, \(rate)/s, \(p.failed) failed")
                }, events: { event in
                    line.note(Self.describe(event, folder: folder))
                })
            }
        }
        switch outcome {
        case .success(let report):
            Stderr.print(Self.summary(report, folder: folder))
            if report.failures > 0 { throw ExitCode.failure }
        case .failure(let stopped as UploadStopped):
            Stderr.print(Self.summary(stopped.report, folder: folder, stopped: true))
            Stderr.print("error: \(stopped)")
            if case .interrupted = stopped.reason { throw ExitCode(130) }
            throw ExitCode.failure
        case .failure(let error):
            Stderr.print("error: \(error)")
            throw ExitCode.failure
        }
    }

    static func describe(_ event: UploadEvent, folder: String) -> String {
        switch event {
        case .journal(let target, let directory, let earlier, let notes):
            let relative = directory.hasPrefix(folder + "/") ? String(directory.dropFirst(folder.count + 1)) : directory
            var text = earlier > 0
                ? "Resuming the upload to \(target.description): \(earlier) entries were written by earlier runs (journal \(relative))."
                : "Uploading to \(target.description); nothing was written there from this folder before (journal \(relative))."
            for note in notes { text += "\nnote: " + note }
            return text
        case .waiting(let request, let seconds, let reason):
            return "waiting \(HumanDuration.describe(seconds)) before resending \(request): \(reason)"
        case .preflightSkipped(let reason):
            return "note: the server's capabilities were not checked: \(reason)"
        case .synchronousStep(let step, let requests):
            return "note: with --async, \(requests) request\(requests == 1 ? "" : "s") of step \(step) go synchronously: transactions must land all or nothing, "
                + "and an asynchronous job runs its entries one by one"
        case .jobFailed(let request, let issues, let resubmitted):
            return "the asynchronous job for \(request) ended in error: \(issues.joined(separator: "; "))"
                + (resubmitted ? "; its entries are sent again (every one is a conditional update or delete, so a replay is safe)" : "")
        case .batchReferencesUnresolved(let step, let size):
            return "note: the server stored a conditional reference inside a batch entry unresolved (FHIR requires resolution only in transactions); "
                + "from step \(step) on, batches with conditional references are sent as transactions of \(size) entries"
        }
    }

    static func summary(_ report: UploadReport, folder: String, stopped: Bool = false) -> String {
        let rate = Double(report.written) / max(report.seconds, 0.001)
        var lines = ["\(stopped ? "Stopped after" : "Uploaded in") \(String(format: "%.2f", report.seconds)) s (\(Int(rate)) resources/s): \(report.written) written, \(report.failures) failed, \(report.skipped) already written by an earlier run (\(report.requests) requests)."]
        if let target = report.target { lines.append("Server: \(target.description).") }
        for type in Set(report.created.keys).union(report.updated.keys).union(report.deleted.keys).union(report.failed.keys).sorted() {
            let deleted = report.deleted[type].map { ", \($0) deleted" } ?? ""
            lines.append("  \(type): \(report.created[type] ?? 0) created, \(report.updated[type] ?? 0) updated\(deleted), \(report.failed[type] ?? 0) failed")
        }
        if report.asyncJobs > 0 {
            lines.append("Asynchronous jobs: \(report.asyncJobs) submitted\(report.jobsCancelled > 0 ? ", \(report.jobsCancelled) cancelled" : "")\(report.jobsLeftRunning > 0 ? ", \(report.jobsLeftRunning) still running" : "").")
        }
        if report.throttled > 0 || report.quotaWait >= 1 {
            lines.append("Rate limit: \(report.throttled) answers 429 (retried); requests waited \(HumanDuration.describe(report.quotaWait)) in all to stay within the server's quota.")
        }
        if !report.transactionSteps.isEmpty {
            lines.append("Sent as transactions (the server does not resolve conditional references in batches): \(report.transactionSteps.joined(separator: ", ")).")
        }
        if report.failures > 0, let target = report.target {
            lines.append("Failed entries, with the server's OperationOutcome: \(target.directory(inFolder: folder))/failures.ndjson")
        }
        return lines.joined(separator: "\n")
    }
}

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that the server holds exactly one resource for every identifier the folder writes.",
        discussion: """
            Reads the conditional-update URLs of the folder's bundles and searches the server for them, many \
            identifiers per search (identifier=a,b,c, paged). Reports the identifiers no resource carries \
            (missing: not uploaded, or failed) and those several resources carry (duplicated: a conditional \
            update on them now fails with 412). Then checks links: each reference the folder writes must, on \
            the server's copy, point at an existing resource of the right type; references stored unresolved \
            (still Type?identifier=… or urn:uuid:…) are counted by element. Sends no writes.

            Example:
              fhirupload verify out --server https://api.medplum.com/fhir/R4 \\
                  --client-id ID --client-secret-env MEDPLUM_SECRET
            """
    )

    @Argument(help: ArgumentHelp("The artifact folder.", valueName: "dir"))
    var folder: String

    @OptionGroup var connection: ServerOptions

    @Option(help: "Searches in flight at once.")
    var concurrency = 4

    @Option(help: "Identifiers per search.")
    var batchSize = 50

    @Option(help: ArgumentHelp("Whose references to check on the server: all, none, or a number N (the first N resources of each type).",
                               valueName: "all|none|N"))
    var links = LinkCheckArgument(check: .all)

    @Flag(name: .shortAndLong, help: "No progress line.")
    var quiet = false

    func validate() throws {
        if concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
        if !(1...500).contains(batchSize) { throw ValidationError("--batch-size must be between 1 and 500") }
    }

    func run() async throws {
        var options = try connection.options()
        options.concurrency = concurrency
        let report = try await ProgressLine.run(quiet: quiet) { line in
            try await Verifier(folder: folder, options: options, batchSize: batchSize, links: links.check).run { done, total in
                line.draw("verify: \(done)/\(total) identifiers checked")
            }
        }
        var lines = ["Verified \(report.expected) identifiers with \(report.searches) searches in \(String(format: "%.2f", report.seconds)) s: \(report.missing.count) missing, \(report.duplicated.count) duplicated."]
        if report.unverifiable > 0 { lines.append("\(report.unverifiable) entries are not conditional updates by one identifier and were not checked.") }
        for m in report.missing.prefix(20) { lines.append("  missing: \(m.searchURL)") }
        if report.missing.count > 20 { lines.append("  … and \(report.missing.count - 20) more missing") }
        for d in report.duplicated.prefix(20) { lines.append("  duplicated (\(d.count) resources): \(d.identifier.searchURL)") }
        if report.deletesExpected > 0 {
            lines.append("Deletes: \(report.deletesExpected) identities the folder deletes, \(report.stillPresent.count) still on the server.")
            for s in report.stillPresent.prefix(20) { lines.append("  still present: \(s.searchURL)") }
            if report.stillPresent.count > 20 { lines.append("  … and \(report.stillPresent.count - 20) more still present") }
        }
        if report.duplicated.count > 20 { lines.append("  … and \(report.duplicated.count - 20) more duplicated") }
        let l = report.links
        if l.checked > 0 || links.check != .none {
            lines.append("Checked \(l.checked) references of \(l.resourcesChecked) resources\(l.resourcesSkipped > 0 ? " (\(l.resourcesSkipped) not sampled)" : ""): \(l.problemCount) problems.")
            for (problem, byLink) in l.problems.sorted(by: { $0.key < $1.key }) {
                for (link, n) in byLink.sorted(by: { $0.key < $1.key }) { lines.append("  \(problem.rawValue): \(n) × \(link)") }
            }
            for example in l.examples.prefix(10) { lines.append("    e.g. \(example)") }
            if l.problems[.unresolved] != nil {
                lines.append("Unresolved: the server stored conditional references as written; upload again with this fhirupload, which sends such batches as transactions (delete the folder's upload/ or use --restart).")
            }
            if l.problems[.dangling] != nil { lines.append("Dangling: the resources they point at are not on the server; rerun fhirupload, then verify again.") }
        }
        if !report.missing.isEmpty { lines.append("Missing: rerun fhirupload (it resumes), then look at failures.ndjson in DIR/upload/<server>/ for entries the server refused.") }
        if !report.duplicated.isEmpty { lines.append("Duplicated: keep one resource per identifier on the server (merge or delete the others); conditional updates need exactly one match.") }
        if !report.stillPresent.isEmpty { lines.append("Still present: rerun fhirupload (it resumes); a delete the server refused is in failures.ndjson in DIR/upload/<server>/.") }
        print(lines.joined(separator: "\n"))
        if !report.isClean { throw ExitCode.failure }
    }
}

/// `--links all|none|N`.
struct LinkCheckArgument: ExpressibleByArgument {
    var check: LinkCheck

    init(check: LinkCheck) {
        self.check = check
    }

    init?(argument: String) {
        switch argument {
        case "all": check = .all
        case "none": check = .none
        default:
            guard let n = Int(argument), n > 0 else { return nil }
            check = .sample(n)
        }
    }

    var defaultValueDescription: String { "all" }
}

/// One progress line on stderr, redrawn at most four times a second, only on a terminal.
final class ProgressLine: @unchecked Sendable {  // state behind `lock`
    private let enabled: Bool
    private let lock = NSLock()
    private var last = Date.distantPast
    private var drawn = false

    init(enabled: Bool) {
        self.enabled = enabled
    }

    /// Runs `work` with a progress line (on a terminal, unless `quiet`); an error ends the line, is printed, and
    /// exits with status 1.
    static func run<T>(quiet: Bool, _ work: (ProgressLine) async throws -> T) async throws -> T {
        switch await capture(quiet: quiet, work) {
        case .success(let result): return result
        case .failure(let error):
            Stderr.print("error: \(error)")
            throw ExitCode.failure
        }
    }

    /// Runs `work` with a progress line and returns its result or error, the line ended either way.
    static func capture<T>(quiet: Bool, _ work: (ProgressLine) async throws -> T) async -> Result<T, any Error> {
        let line = ProgressLine(enabled: !quiet && isatty(2) == 1)
        do {
            let result = try await work(line)
            line.finish()
            return .success(result)
        } catch {
            line.finish()
            return .failure(error)
        }
    }

    /// Prints a message on a line of its own, above the progress line (printed even when there is none).
    func note(_ text: String) {
        lock.withLock {
            let clear = drawn ? "\r\u{1B}[K" : ""
            drawn = false
            last = .distantPast
            FileHandle.standardError.write(Data((clear + text + "\n").utf8))
        }
    }

    func draw(_ text: String) {
        guard enabled else { return }
        lock.withLock {
            let now = Date()
            guard now.timeIntervalSince(last) > 0.25 else { return }
            last = now
            drawn = true
            FileHandle.standardError.write(Data("\r\u{1B}[K\(text)".utf8))
        }
    }

    func finish() {
        lock.withLock {
            if drawn { FileHandle.standardError.write(Data("\n".utf8)) }
            drawn = false
        }
    }
}

/// Ctrl-C and SIGTERM cancel the work instead of killing the process, so that it can sync its journal and say
/// what it did; a second signal ends the process at once (the journal is append-only, so it stays readable).
enum Interruption {
    static func cancelOnSignal<T: Sendable>(notice: String, _ work: @escaping @Sendable () async throws -> T) async throws -> T {
        let task = Task { try await work() }
        let signals = SignalCount()
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                if signals.increment() > 1 { exit(130) }
                Stderr.print("\n" + notice)
                task.cancel()
            }
            source.resume()
            sources.append(source)
        }
        HandledSignals.unblock()
        defer {
            for source in sources { source.cancel() }
            signal(SIGINT, SIG_DFL)
            signal(SIGTERM, SIG_DFL)
        }
        return try await task.value
    }
}

private final class SignalCount: @unchecked Sendable {  // `count` behind `lock`
    private let lock = NSLock()
    private var count = 0
    func increment() -> Int { lock.withLock { count += 1; return count } }
}
