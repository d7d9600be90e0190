import ArgumentParser
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
    @Option(help: ArgumentHelp("The server's FHIR base URL, e.g. https://api.medplum.com/fhir/R4.", valueName: "url"))
    var server: String

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

    func validate() throws {
        try Self.checkURL(server, option: "--server", allowInsecure: allowInsecureHttp)
        if let tokenUrl { try Self.checkURL(tokenUrl, option: "--token-url", allowInsecure: allowInsecureHttp) }
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
        guard let url = URL(string: text), let scheme = url.scheme, scheme == "https" || scheme == "http", url.host != nil else {
            throw ValidationError("\(option) must be an http(s) URL such as https://api.medplum.com/fhir/R4")
        }
        if scheme == "http" && !allowInsecure && !["127.0.0.1", "localhost", "::1", "[::1]"].contains(url.host ?? "") {
            throw ValidationError("\(text) is plain http:// to another machine; use https:// or --allow-insecure-http")
        }
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

            A journal in DIR/upload/ records every entry's outcome, so a rerun (after a crash, a kill or a \
            network failure) resumes where the last one stopped; --restart replays everything, which is safe \
            because every write is a conditional update. Entries that fail for good are listed, with the \
            server's OperationOutcome, in DIR/upload/failures.ndjson.

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

    @Flag(help: "Forget the journal and send everything again.")
    var restart = false

    @Flag(help: "Upload even when the offline validation finds errors (never when files differ from the manifest).")
    var force = false

    @Flag(help: "Print the plan (steps, requests, entries) and what an earlier run already wrote; send nothing.")
    var dryRun = false

    @Flag(name: .shortAndLong, help: "No progress line; only the summary and errors.")
    var quiet = false

    func validate() throws {
        if concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
    }

    func run() async throws {
        var options = UploadOptions(server: connection.server)
        options.concurrency = concurrency
        options.splitTransactions = splitTransactions
        options.restart = restart
        options.force = force
        options.credentials = try connection.credentials()
        if dryRun {
            let (plan, written, validation) = try Uploader(folder: folder, options: options).dryRun()
            var lines = ["Plan for \(connection.server) (nothing sent): validation \(validation.errors) errors, \(validation.warnings) warnings."]
            for step in plan.steps {
                lines.append("  \(step.name): \(step.requests.count) requests, \(step.requests.reduce(0) { $0 + $1.resourceCount }) resources")
            }
            lines.append("\(written) entries were already written by an earlier run\(restart ? " (--restart sends them again)" : "").")
            print(lines.joined(separator: "\n"))
            if validation.errors > 0 && !force { throw ExitCode.failure }
            return
        }
        let report = try await ProgressLine.run(quiet: quiet) { line in
            try await Uploader(folder: folder, options: options).run(progress: { p in
                let rate = Int(Double(p.resourcesDone) / max(p.seconds, 0.001))
                line.draw("\(p.step) (step \(p.stepNumber)/\(p.stepCount)): \(p.resourcesDone)/\(p.resourcesTotal) resources, \(rate)/s, \(p.failed) failed")
            })
        }
        let rate = Double(report.written) / max(report.seconds, 0.001)
        var lines = ["Uploaded in \(String(format: "%.2f", report.seconds)) s (\(Int(rate)) resources/s): \(report.written) written, \(report.failures) failed, \(report.skipped) already written by an earlier run (\(report.requests) requests)."]
        for type in Set(report.created.keys).union(report.updated.keys).union(report.failed.keys).sorted() {
            lines.append("  \(type): \(report.created[type] ?? 0) created, \(report.updated[type] ?? 0) updated, \(report.failed[type] ?? 0) failed")
        }
        if report.failures > 0 { lines.append("Failed entries, with the server's OperationOutcome: \(folder)/upload/failures.ndjson") }
        Stderr.print(lines.joined(separator: "\n"))
        if report.failures > 0 { throw ExitCode.failure }
    }
}

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that the server holds exactly one resource for every identifier the folder writes.",
        discussion: """
            Reads the conditional-update URLs of the folder's bundles and searches the server for them, many \
            identifiers per search (identifier=a,b,c, paged). Reports the identifiers no resource carries \
            (missing: not uploaded, or failed) and those several resources carry (duplicated: a conditional \
            update on them now fails with 412). Sends no writes.

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

    @Flag(name: .shortAndLong, help: "No progress line.")
    var quiet = false

    func validate() throws {
        if concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
        if !(1...500).contains(batchSize) { throw ValidationError("--batch-size must be between 1 and 500") }
    }

    func run() async throws {
        var options = UploadOptions(server: connection.server)
        options.concurrency = concurrency
        options.credentials = try connection.credentials()
        let report = try await ProgressLine.run(quiet: quiet) { line in
            try await Verifier(folder: folder, options: options, batchSize: batchSize).run { done, total in
                line.draw("verify: \(done)/\(total) identifiers checked")
            }
        }
        var lines = ["Verified \(report.expected) identifiers with \(report.searches) searches in \(String(format: "%.2f", report.seconds)) s: \(report.missing.count) missing, \(report.duplicated.count) duplicated."]
        if report.unverifiable > 0 { lines.append("\(report.unverifiable) entries are not conditional updates by one identifier and were not checked.") }
        for m in report.missing.prefix(20) { lines.append("  missing: \(m.searchURL)") }
        if report.missing.count > 20 { lines.append("  … and \(report.missing.count - 20) more missing") }
        for d in report.duplicated.prefix(20) { lines.append("  duplicated (\(d.count) resources): \(d.identifier.searchURL)") }
        if report.duplicated.count > 20 { lines.append("  … and \(report.duplicated.count - 20) more duplicated") }
        if !report.missing.isEmpty { lines.append("Missing: rerun fhirupload (it resumes), then look at DIR/upload/failures.ndjson for entries the server refused.") }
        if !report.duplicated.isEmpty { lines.append("Duplicated: keep one resource per identifier on the server (merge or delete the others); conditional updates need exactly one match.") }
        print(lines.joined(separator: "\n"))
        if !report.isClean { throw ExitCode.failure }
    }
}

enum Stderr {
    static func print(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
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
        let line = ProgressLine(enabled: !quiet && isatty(2) == 1)
        do {
            let result = try await work(line)
            line.finish()
            return result
        } catch {
            line.finish()
            Stderr.print("error: \(error)")
            throw ExitCode.failure
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
