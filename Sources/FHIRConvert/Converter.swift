import FHIRArtifacts
import FHIRMapping
import FHIRModel
import FHIRReport
import FHIRSources
import FHIRValidation
import Foundation
import ParallelWork

/// What to convert and where to.
public struct ConvertOptions: Sendable {
    public var mappingPath: String
    public var outputPath: String
    /// The server the bundles are sized for; the mapping's `limits:` and `limitOverrides` adjust its limits.
    public var profile: ServerProfile = .medplum
    /// Limits that override the profile's and the mapping's (`.batchEntries` → 50, nil: no limit).
    public var limitOverrides: [BundleLimit: Int?]
    public var toolVersion: String
    /// One entry per line (default) or indented bundle files.
    public var bundleLayout: BundleLayout
    /// Validate the artifacts before swapping them in (default); errors fail the run.
    public var validate = true
    /// Resources already on the server that references may point at (`Type|system|value` or `Type/id`); the folder
    /// carries them as `known-identifiers.txt`, so its later validations accept the same references.
    public var knownIdentifiers: Set<String> = []
    /// Threads to use: with more than one, the bundles are validated on their own thread while the conversion
    /// goes on, validation reads ahead on the others, and rows are evaluated on those left (see `StepWorkers`).
    /// The artifacts are the same whatever the number.
    public var threads = Cores.available

    public init(mappingPath: String, outputPath: String = "out", limitOverrides: [BundleLimit: Int?] = [:],
                toolVersion: String = FHIRBundleVersion.current, bundleLayout: BundleLayout = .entryPerLine) {
        self.mappingPath = mappingPath
        self.outputPath = outputPath
        self.limitOverrides = limitOverrides
        self.toolVersion = toolVersion
        self.bundleLayout = bundleLayout
    }
}

/// Receives progress while converting (the command line draws it on a terminal).
public protocol ConvertProgress: AnyObject {
    /// A step (or a lookup table) starts reading `source`, of `totalBytes` bytes.
    func started(task: String, source: String, totalBytes: Int)
    /// Periodic update: rows read so far, bytes read so far.
    func advanced(rows: Int, bytes: Int)
    /// The task ended.
    func finished(task: String, rows: Int, rejects: Int)
}

/// Rows of a source that a step converts and a lookup indexes, whose lookup key repeats: the lookup uses the
/// first; the rows themselves are converted by the step (so they are no rejects), and the summary says so.
public struct LookupDuplicates: Sendable, Equatable {
    public var lookup: String
    /// The lookup's key: one column, or several together.
    public var keyColumns: [String]
    public var file: String
    public var count: Int
    /// The first few lines with a repeated key.
    public var firstLines: [Int]

    public init(lookup: String, keyColumns: [String], file: String, count: Int, firstLines: [Int]) {
        self.lookup = lookup
        self.keyColumns = keyColumns
        self.file = file
        self.count = count
        self.firstLines = firstLines
    }

    /// `column 'ID'`, or `columns 'PATIENT', 'CODE'` for a key of several.
    public var keyText: String { LookupDuplicates.keyText(keyColumns) }

    static func keyText(_ columns: [String]) -> String {
        (columns.count == 1 ? "column '" : "columns '") + columns.joined(separator: "', '") + "'"
    }
}

/// What a run produced, for the summary.
public struct ConvertSummary: Sendable {
    public var manifest: Manifest
    /// Repeated keys of lookups on sources that steps convert too.
    public var lookupDuplicates: [LookupDuplicates] = []
    /// The rejects grouped by reason, with the identities rejected rows would have written.
    public var rejects = RejectDigest()
    /// Per source, the columns the mapping never reads.
    public var unusedColumns: [UnusedColumns] = []
    /// The validation of the new artifacts, unless it was turned off.
    public var validation: ValidationReport?
    public var outputPath: String
    public var seconds: Double
    public var rowsRead: Int { manifest.steps.reduce(0) { $0 + $1.rows } }
    public var resourcesWritten: Int { manifest.resourceCounts.values.reduce(0, +) }
    public var bundleCount: Int { manifest.steps.reduce(0) { $0 + $1.bundles.count } }
}

/// Why a run stopped before writing artifacts.
public enum ConvertError: Error, CustomStringConvertible {
    case mapping(MappingError)
    case source(name: String, underlying: any Error)
    case artifacts(ArtifactError)
    case cancelled
    /// A signal came after the new artifacts had replaced the output: they are complete, but the run was interrupted.
    case cancelledAfterCommit(outputPath: String)
    /// The artifacts have validation errors (`summary.validation`); they were kept for review at `keptAt`, the
    /// previous output is unchanged. The summary says what the run did, rejects included, which often explain why.
    case invalid(ConvertSummary, keptAt: String)

    /// True when a signal stopped the run (exit status 130).
    public var isInterruption: Bool {
        switch self {
        case .cancelled, .cancelledAfterCommit: return true
        default: return false
        }
    }

    public var description: String {
        switch self {
        case .mapping(let e): return e.description
        case .source(let name, let e): return "source '\(name)': \(e)"
        case .artifacts(let e): return "cannot write artifacts: \(e)"
        case .cancelled: return "interrupted; the previous output folder is unchanged"
        case .cancelledAfterCommit(let path):
            return "interrupted just after the new artifacts replaced \(path); they are complete and validated as the run intended, but check them before relying on them"
        case .invalid(let summary, let keptAt):
            return "the artifacts have \(summary.validation?.errors ?? 0) validation errors; the previous output folder is unchanged and the new artifacts are in \(keptAt) for review"
        }
    }
}

/// Runs a conversion: mapping → sources → resources → artifact folder, swapped in atomically at the end.
public final class Converter {
    private let options: ConvertOptions
    private weak var progress: (any ConvertProgress)?
    private let isCancelled: @Sendable () -> Bool

    /// `isCancelled` is asked every few thousand rows (the command line answers from its Ctrl-C handler); when it
    /// says yes, the run stops and the previous output stays.
    public init(options: ConvertOptions, progress: (any ConvertProgress)? = nil, isCancelled: @escaping @Sendable () -> Bool = { false }) {
        self.options = options
        self.progress = progress
        self.isCancelled = isCancelled
    }

    /// Converts, or throws leaving the previous output untouched.
    public func run() throws(ConvertError) -> ConvertSummary {
        let started = Date()
        let document: MappingDocument
        do { document = try MappingDocument.load(path: options.mappingPath) } catch { throw .mapping(error) }

        // Field names come first (CSV header, XML declared or first-record fields) so the mapping is checked
        // against them before any row is converted.
        var fieldNames: [String: [String]] = [:]
        for s in document.sources {
            let path = resolve(s.file, document.directory)
            do {
                fieldNames[s.name] = try SourceOpener.open(s, path: path, directory: document.directory).fieldNames
            } catch {
                throw .source(name: s.name, underlying: error)
            }
        }
        let mapping: CompiledMapping
        do { mapping = try MappingCompiler.compile(document, fieldNames: fieldNames) } catch { throw .mapping(error) }
        try checkpoint()
        var limits = options.profile.limits
        for declared in document.limits { if let limit = BundleLimit(rawValue: declared.name) { limits[limit] = declared.value } }
        for (limit, value) in options.limitOverrides { limits[limit] = value }

        let folder: ArtifactFolder
        do { folder = try ArtifactFolder(target: options.outputPath) } catch { throw .artifacts(error) }
        var summary: ConvertSummary
        // The bundles are checked as they are written; the rest once the folder is complete.
        var validation: ValidationWhileWriting?
        if options.validate {
            var validationOptions = ValidationOptions(limits: limits, knownIdentifiers: options.knownIdentifiers)
            validationOptions.isCancelled = isCancelled
            validationOptions.countCodedValues = true
            validationOptions.threads = options.threads
            validation = ValidationWhileWriting(folder: folder.staging, options: validationOptions)
        }
        // The converter thread reads, checks and writes; worker threads evaluate rows on the cores it and the
        // validation (its workers and the validating thread) leave. Measured on 2 cores, 200,000 rows per table:
        // without validation 1 worker took 20% off the run; with it, the cores are busy already and workers added
        // 4-6% of CPU and wall time, so there the converter evaluates rows itself.
        let evaluationThreads = max(0, options.threads - (options.validate ? 2 : 1))
        do {
            var run = try ConversionRun(mapping: mapping, profile: options.profile, limits: limits, layout: options.bundleLayout, folder: folder,
                                        knownIdentifiers: options.knownIdentifiers, evaluationThreads: evaluationThreads, progress: progress, isCancelled: isCancelled,
                                        written: validation.map { v in { v.written($0) } })
            let manifest = try run.execute(toolVersion: options.toolVersion)
            summary = ConvertSummary(manifest: manifest, outputPath: options.outputPath, seconds: 0)
            summary.lookupDuplicates = run.lookupDuplicates
            summary.rejects = run.rejectDigest
            summary.unusedColumns = mapping.unusedColumns
            try checkpoint()
            if let validation {
                progress?.started(task: "validate", source: options.outputPath, totalBytes: 0)
                let report = try validation.finish()
                let keptAt = try folder.keepIfInvalid(report)
                progress?.finished(task: "validate", rows: report.resources, rejects: report.errors)
                summary.validation = report
                summary.seconds = Date().timeIntervalSince(started)
                if let keptAt { throw ConvertError.invalid(summary, keptAt: keptAt) }
            }
            summary.manifest = try folder.addReport(Self.report(summary, mapping: mapping))
            try checkpoint()
            try folder.flushToDisk()
            try checkpoint()  // the last moment the previous output can still be kept
            try folder.commit()
        } catch let e as ConvertError {
            validation?.abandon()
            folder.discard()
            throw e
        } catch let e as ArtifactError {
            validation?.abandon()
            folder.discard()
            throw .artifacts(e)
        } catch is ValidationCancelled {
            validation?.abandon()
            folder.discard()
            throw .cancelled
        } catch {
            validation?.abandon()
            folder.discard()
            throw .artifacts(ArtifactError(path: options.outputPath, message: "\(error)"))
        }
        // A signal during the swap itself is seen here: the run must not then report a plain success.
        if isCancelled() { throw .cancelledAfterCommit(outputPath: options.outputPath) }
        summary.seconds = Date().timeIntervalSince(started)
        return summary
    }

    /// The review page of a run: its figures, rejects, columns, validation and plan.
    static func report(_ summary: ConvertSummary, mapping: CompiledMapping) -> ReviewReport {
        var report = ReviewReport(title: "Conversion of \((mapping.document.path as NSString).lastPathComponent)", manifest: summary.manifest)
        report.rejects = summary.rejects.groups.map { ReviewReport.RejectGroup(reason: $0.reason, count: $0.count, examples: $0.examples.map(\.description)) }
        report.sources = mapping.columnUses.map { ReviewReport.SourceColumns(source: $0.source, file: $0.file, columns: $0.columns) }
        report.validation = summary.validation
        return report
    }

    private func checkpoint() throws(ConvertError) {
        if isCancelled() { throw .cancelled }
    }
}

func resolve(_ file: String, _ directory: String) -> String {
    file.hasPrefix("/") ? file : directory + "/" + file
}
