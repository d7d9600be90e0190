import ArgumentParser
import CommandLineSupport
import FHIRModel
import FHIRValidation
import Foundation

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check an artifact folder offline before anything is uploaded.",
        discussion: """
            Checks JSON syntax, bundle structure, size limits, references (urn:uuid, conditional and literal), \
            identifier uniqueness, replay safety (conditional updates), the manifest's checksums and counts, and \
            FHIR R4 structure (elements, cardinality, primitive formats, required codes). Works on folders written by \
            `convert` and on any folder of Bundle JSON and NDJSON files.

            Exit status: 0 when there is no error (warnings allowed), 1 when there are errors, 2 when validation \
            could not run (a missing or unreadable folder, an unreadable --known-identifiers file), 64 for a usage \
            error (an unknown option or a bad value).
            """
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, json
    }

    @Argument(help: ArgumentHelp("The artifact folder.", valueName: "dir"))
    var folder: String = "out"

    @Option(help: "Output: text (grouped by rule, first examples) or json (every finding).")
    var format: Format = .text

    @OptionGroup var known: KnownIdentifierOptions

    @Option(name: .customLong("rule"), help: ArgumentHelp("Report only the findings of this rule (repeatable); the counts and the exit status then concern them alone.",
                                                         valueName: "rule-id"))
    var rules: [Rule] = []

    @Option(help: "Report only errors, or only warnings; the counts and the exit status then concern them alone.")
    var severity: Finding.Severity?

    @Option(help: ArgumentHelp("The largest JSON file read whole, and the longest NDJSON line, in bytes; larger ones are reported, not read (default: 64 MiB).",
                               valueName: "bytes"))
    var maxJSONBytes: Int = DataFile.defaultMaxBytes

    @OptionGroup var sizing: LimitOptions

    @OptionGroup var threading: ThreadOptions

    func run() throws {
        var options = ValidationOptions()
        options.threads = threading.threads
        options.profile = sizing.profile
        options.limitOverrides = try sizing.overrides()
        guard maxJSONBytes > 0 else { throw ValidationError("--max-json-bytes must be a positive number of bytes") }
        options.maxJSONBytes = maxJSONBytes
        do {
            options.knownIdentifiers = try known.load()
        } catch {
            Stderr.print("error: \(error)")
            throw ExitCode(2)
        }
        let report: ValidationReport
        do {
            report = try ArtifactValidator(folder: folder, options: options).run().selecting(rules: Set(rules), severity: severity)
        } catch {
            Stderr.print("error: \(error)")
            throw ExitCode(2)
        }
        switch format {
        case .text: print(report.text())
        case .json: print(JSONWriter(indent: 2).string(report.json))
        }
        if report.errors > 0 { throw ExitCode.failure }
    }
}

extension Rule: ExpressibleByArgument {}
extension Finding.Severity: ExpressibleByArgument, CaseIterable {
    public static var allCases: [Finding.Severity] { [.error, .warning] }
}
