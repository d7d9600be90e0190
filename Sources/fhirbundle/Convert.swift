import ArgumentParser
import CommandLineSupport
import FHIRArtifacts
import FHIRConvert
import FHIRValidation
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert source exports into FHIR artifacts, as a mapping file describes.",
        discussion: """
            The mapping is checked before any row is read; an error names the mapping file's line and column. \
            Rows that cannot be converted are written to rejects.ndjson with file, line and reason; the run goes on. \
            The output folder is replaced only when the run completes, so an interrupted run leaves the previous \
            artifacts as they were.

            Exit status: 0 when the artifacts were written (see the summary for rejects), 1 when the run failed, \
            64 for a usage error, 130 when Ctrl-C or SIGTERM interrupted it (at any moment: the previous output stays, \
            unless the signal came during the final swap, which the message then says).
            """
    )

    @Argument(help: ArgumentHelp("The mapping file (YAML).", valueName: "mapping.yaml"))
    var mapping: String

    @Option(name: [.short, .long], help: ArgumentHelp("The artifact folder to write (replaced when the run completes).", valueName: "dir"))
    var out: String = "out"

    @Option(help: ArgumentHelp("Entries per batch bundle (for batch-of-transactions: inner transactions per batch).", valueName: "n"))
    var batchSize: Int?

    @OptionGroup var sizing: LimitOptions

    @OptionGroup var known: KnownIdentifierOptions

    @Flag(help: "Indent bundle files for reading (about three times larger). By default each entry is one compact line, so a diff of two runs shows one line per changed resource.")
    var pretty = false

    @Flag(name: [.short, .long], help: "Print nothing but errors.")
    var quiet = false

    @Flag(help: "Exit with status 1 when any row was rejected.")
    var failOnRejects = false

    @Flag(help: "Skip the offline validation of the new artifacts (`fhirbundle validate`), which otherwise runs before they replace the output folder.")
    var noValidate = false

    @OptionGroup var threading: ThreadOptions

    func validate() throws {
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
    }

    func run() throws {
        var overrides = try sizing.overrides()
        if let batchSize { overrides[.batchEntries] = batchSize }
        let progress = quiet ? nil : TerminalProgress()
        installInterruptHandler()
        var options = ConvertOptions(mappingPath: mapping, outputPath: out, limitOverrides: overrides, bundleLayout: pretty ? .pretty : .entryPerLine)
        options.validate = !noValidate
        options.threads = threading.threads
        options.profile = sizing.profile ?? .medplum
        options.knownIdentifiers = try known.load()
        let converter = Converter(options: options, progress: progress, isCancelled: { interrupted.load(ordering: .relaxed) })
        let summary: ConvertSummary
        do {
            summary = try converter.run()
        } catch let ConvertError.invalid(summary, keptAt) {
            progress?.clearLine()
            Stderr.print(summary.invalidText(keptAt: keptAt))
            Stderr.print("error: \(ConvertError.invalid(summary, keptAt: keptAt))")
            throw ExitCode.failure
        } catch let ConvertError.mapping(e) {
            // Compiler-style, so terminals and editors link the mapping file's line and column.
            progress?.clearLine()
            Stderr.print(e.description)
            throw ExitCode.failure
        } catch let e where e.isInterruption {
            progress?.clearLine()
            Stderr.print("error: \(e)")
            throw ExitCode(130)  // 128 + SIGINT, as shells report an interrupted command
        } catch {
            progress?.clearLine()
            Stderr.print("error: \(error)")
            throw ExitCode.failure
        }
        progress?.clearLine()
        if !quiet { Stderr.print(summary.text()) }
        if failOnRejects && summary.manifest.rejects > 0 { throw ExitCode.failure }
    }
}

/// Set by Ctrl-C (SIGINT) or SIGTERM.
private let interrupted = Atomic<Bool>(false)

/// Ctrl-C stops the run at the next checkpoint; the staging folder is removed and the old output stays.
private func installInterruptHandler() {
    signal(SIGINT) { _ in interrupted.store(true, ordering: .relaxed) }
    signal(SIGTERM) { _ in interrupted.store(true, ordering: .relaxed) }
    HandledSignals.unblock()
}
