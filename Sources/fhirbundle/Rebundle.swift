import ArgumentParser
import CommandLineSupport
import FHIRArtifacts
import FHIRRebundle
import Foundation

struct Rebundle: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make FHIR data that fhirbundle did not write (Synthea, another tool, a bulk export) safe to upload.",
        discussion: """
            Reads a folder of Bundle JSON (batch, transaction, collection, searchset, ...), single resources and \
            NDJSON, and writes an artifact folder like `convert` does: every write a conditional update \
            (PUT Type?identifier=system|value) on an identifier the resource carries; where it carries none of \
            its own, one derived from what the producer gave, identifier urn:ietf:rfc:3986|<its urn:uuid fullUrl> \
            (or a name-based urn:uuid of Type/id). No id in the bodies. References between resources become \
            conditional references by identifier (urn:uuid stays only inside a transaction); steps follow the \
            references; bundles stay within the profile's limits. Identical copies are written once; a resource \
            that cannot be made idempotent is listed in rejects.ndjson with file, pointer and reason.

            Medplum caps transactions with conditional updates at 8 entries, so with --profile medplum the input's \
            transactions become conditional updates in ordered steps; with hapi and generic they stay transactions.

            Exit status: 0 when the folder was written, 1 when the run failed, 64 for a usage error.

            Example:
              fhirbundle rebundle fixtures/synthea-fhir --out /tmp/synthea-rebundled
            """
    )

    @Argument(help: ArgumentHelp("The folder of FHIR data.", valueName: "dir"))
    var input: String

    @Option(name: [.short, .long], help: ArgumentHelp("The artifact folder to write (replaced when the run completes).", valueName: "dir"))
    var out: String = "out"

    @OptionGroup var sizing: LimitOptions

    @OptionGroup var known: KnownIdentifierOptions

    @Flag(help: "Indent bundle files for reading (about three times larger).")
    var pretty = false

    @Flag(name: [.short, .long], help: "Print nothing but errors.")
    var quiet = false

    @Flag(help: "Skip the offline validation of the new artifacts before they replace the output folder.")
    var noValidate = false

    func run() throws {
        var options = RebundleOptions(inputPath: input, outputPath: out)
        options.profile = sizing.profile ?? .medplum
        options.limitOverrides = try sizing.overrides()
        options.layout = pretty ? .pretty : .entryPerLine
        options.validate = !noValidate
        options.knownIdentifiers = try known.load()
        let summary: RebundleSummary
        do {
            summary = try Rebundler(options: options).run()
        } catch let RebundleFailure.invalid(report, keptAt) {
            Stderr.print(report.text())
            Stderr.print("error: \(RebundleFailure.invalid(report, keptAt: keptAt))")
            throw ExitCode.failure
        } catch {
            Stderr.print("error: \(error)")
            throw ExitCode.failure
        }
        if quiet { return }
        let m = summary.manifest
        let written = m.resourceCounts.values.reduce(0, +)
        let bundles = m.steps.reduce(0) { $0 + $1.bundles.count }
        var lines = ["Wrote \(out)/ in \(String(format: "%.2f", summary.seconds)) s for profile \(m.profile.rawValue): \(written) resources in \(bundles) bundles "
                     + "from \(summary.read) read in \(m.sources.count) files, \(m.rejects) rejected."]
        for step in m.steps {
            let resources = step.resources.keys.sorted().map { "\(step.resources[$0]!) \($0)" }.joined(separator: ", ")
            lines.append("  \(step.folder) (\(step.bundle)): \(resources), \(step.bundles.count) bundles")
        }
        for note in summary.notes { lines.append("note: \(note)") }
        if m.rejects > 0 { lines.append("Rejected resources are listed with file, pointer and reason in \(out)/rejects.ndjson.") }
        if let v = summary.validation {
            lines.append("Validated: \(v.errors) errors, \(v.warnings) warnings in \(v.resources) resources (fhirbundle validate \(out) for details).")
        }
        Stderr.print(lines.joined(separator: "\n"))
    }
}
