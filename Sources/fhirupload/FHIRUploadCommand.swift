import ArgumentParser
import FHIRUpload
import Foundation

@main
struct FHIRUploadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fhirupload",
        abstract: "Upload an artifact folder written by `fhirbundle convert` to a FHIR R4 server.",
        discussion: """
            The folder is checked first (checksums against its manifest, then the offline validation); steps are
            sent in manifest order, the bundles of a step concurrently, retried on connection errors, timeouts,
            408, 429 and 5xx. A journal in DIR/upload/ records every entry's outcome, so a rerun resumes where
            the last one stopped; --restart replays everything, which is safe because every write is a
            conditional update. Entries that fail for good are listed in DIR/upload/failures.ndjson.

            Exit status: 0 when every entry was written, 1 when some failed or the folder was refused.

            Example:
              fhirupload out --server http://127.0.0.1:8103/fhir --split-transactions
            """
    )

    @Argument(help: ArgumentHelp("The artifact folder.", valueName: "dir"))
    var folder: String

    @Option(help: ArgumentHelp("The server's FHIR base URL, e.g. https://api.medplum.com/fhir/R4.", valueName: "url"))
    var server: String

    @Option(help: "Bundles of a step in flight at once.")
    var concurrency = 4

    @Flag(help: "Send each inner transaction of a batch of transactions on its own (servers without nested bundles).")
    var splitTransactions = false

    @Flag(help: "Forget the journal and send everything again.")
    var restart = false

    @Flag(help: "Upload even when the offline validation finds errors.")
    var force = false

    @Flag(help: "Print the plan (steps, requests, entries) and what an earlier run already wrote; send nothing.")
    var dryRun = false

    @Option(help: ArgumentHelp("An environment variable holding a bearer token.", valueName: "name"))
    var tokenEnv: String?

    @Option(help: ArgumentHelp("A file holding a bearer token.", valueName: "path"))
    var tokenFile: String?

    @Flag(help: "Allow plain http:// to a host other than this machine (credentials and health data would travel unencrypted).")
    var allowInsecureHttp = false

    func validate() throws {
        guard let url = URL(string: server), let scheme = url.scheme, scheme == "https" || scheme == "http", url.host != nil else {
            throw ValidationError("--server must be an http(s) URL such as https://api.medplum.com/fhir/R4")
        }
        if scheme == "http" && !allowInsecureHttp && !["127.0.0.1", "localhost", "::1", "[::1]"].contains(url.host ?? "") {
            throw ValidationError("\(server) is plain http:// to another machine; use https:// or --allow-insecure-http")
        }
        if concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
        if tokenEnv != nil && tokenFile != nil { throw ValidationError("give --token-env or --token-file, not both") }
    }

    func run() async throws {
        var options = UploadOptions(server: server)
        options.concurrency = concurrency
        options.splitTransactions = splitTransactions
        options.restart = restart
        options.force = force
        if let tokenEnv {
            guard let token = ProcessInfo.processInfo.environment[tokenEnv], !token.isEmpty else {
                throw ValidationError("the environment variable \(tokenEnv) is not set")
            }
            options.bearerToken = token
        }
        if let tokenFile {
            guard let token = try? String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !token.isEmpty else {
                throw ValidationError("cannot read a token from \(tokenFile)")
            }
            options.bearerToken = token
        }
        if dryRun {
            let (plan, written, validation) = try Uploader(folder: folder, options: options).dryRun()
            var lines = ["Plan for \(server) (nothing sent): validation \(validation.errors) errors, \(validation.warnings) warnings."]
            for step in plan.steps {
                lines.append("  \(step.name): \(step.requests.count) requests, \(step.requests.reduce(0) { $0 + $1.entryCount }) entries")
            }
            lines.append("\(written) entries were already written by an earlier run\(restart ? " (--restart sends them again)" : "").")
            print(lines.joined(separator: "\n"))
            if validation.errors > 0 && !force { throw ExitCode.failure }
            return
        }
        let report: UploadReport
        do {
            report = try await Uploader(folder: folder, options: options).run(log: { line in
                FileHandle.standardError.write(Data((line + "\n").utf8))
            })
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode.failure
        }
        var lines = ["Uploaded in \(String(format: "%.2f", report.seconds)) s: \(report.written) written, \(report.failures) failed, \(report.skipped) already written by an earlier run (\(report.requests) requests)."]
        for type in Set(report.created.keys).union(report.updated.keys).union(report.failed.keys).sorted() {
            lines.append("  \(type): \(report.created[type] ?? 0) created, \(report.updated[type] ?? 0) updated, \(report.failed[type] ?? 0) failed")
        }
        if report.failures > 0 { lines.append("Failed entries, with the server's OperationOutcome: \(folder)/upload/failures.ndjson") }
        FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        if report.failures > 0 { throw ExitCode.failure }
    }
}
