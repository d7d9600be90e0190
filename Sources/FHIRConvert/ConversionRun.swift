import FHIRArtifacts
import FHIRMapping
import FHIRModel
import FHIRSources
import FHIRValidation
import Foundation

/// One conversion in progress: reads lookups, then each step's rows, writing NDJSON, bundles and rejects into the
/// staging folder and keeping the counts the manifest reports.
struct ConversionRun {
    let mapping: CompiledMapping
    let profile: ServerProfile
    let limits: BundleLimits
    let layout: BundleLayout
    let folder: ArtifactFolder
    let knownIdentifiers: Set<String>
    /// Worker threads that evaluate rows (see `StepWorkers`); 0: the converter thread evaluates them itself.
    let evaluationThreads: Int
    weak var progress: (any ConvertProgress)?

    private var rejects: HashingFileWriter
    private var rejectCount = 0
    /// The rejects grouped by reason, for the summary.
    private(set) var rejectDigest = RejectDigest()
    private var ndjson: [String: HashingFileWriter] = [:]
    /// The NDJSON writer of each resource template of the current step, to skip the dictionary on the hot path.
    private var stepWriters: [HashingFileWriter?] = []
    private var artifacts: [Manifest.Artifact] = []
    private var sourceStats: [Int: Manifest.Source] = [:]
    private var resourceCounts: [String: Int] = [:]
    /// Duplicate lookup keys in a source that a step also converts: not rejects (the step converts those rows),
    /// but said in the summary. Lookup name → (count, first lines).
    private(set) var lookupDuplicates: [LookupDuplicates] = []
    /// Identifier hash → line that first produced it; a second row with the same identifier is a reject, because a
    /// conditional update would silently overwrite the first.
    private var seenIdentifiers = IdentifierIndex()
    private let compact = JSONWriter()

    let isCancelled: @Sendable () -> Bool
    /// Told each bundle file once it is written and closed, and each NDJSON file after the last step writing its type.
    let written: ((ValidationWhileWriting.Written) -> Void)?

    init(mapping: CompiledMapping, profile: ServerProfile, limits: BundleLimits, layout: BundleLayout, folder: ArtifactFolder,
         knownIdentifiers: Set<String> = [], evaluationThreads: Int = 0, progress: (any ConvertProgress)?, isCancelled: @escaping @Sendable () -> Bool,
         written: ((ValidationWhileWriting.Written) -> Void)? = nil) throws {
        self.written = written
        self.knownIdentifiers = knownIdentifiers
        self.evaluationThreads = evaluationThreads
        self.isCancelled = isCancelled
        self.mapping = mapping
        self.profile = profile
        self.limits = limits
        self.layout = layout
        self.folder = folder
        self.progress = progress
        try folder.makeFolder("ndjson")
        try folder.makeFolder("bundles")
        rejects = try folder.writer("rejects.ndjson")
    }

    mutating func execute(toolVersion: String) throws -> Manifest {
        let lookups = try buildLookups()
        var steps: [Manifest.Step] = []
        for index in mapping.steps.indices {
            if isCancelled() { throw ConvertError.cancelled }
            steps.append(try runStep(index, lookups: lookups))
            try finishNDJSON(after: index)
        }
        if isCancelled() { throw ConvertError.cancelled }
        let r = try rejects.finish()
        artifacts.append(Manifest.Artifact(path: "rejects.ndjson", sha256: r.sha256, bytes: r.size))
        for (type, writer) in ndjson {
            let f = try writer.finish()
            artifacts.append(Manifest.Artifact(path: "ndjson/\(type).ndjson", sha256: f.sha256, bytes: f.size))
        }
        if !knownIdentifiers.isEmpty {
            artifacts.append(try folder.write(KnownIdentifiers.fileBytes(knownIdentifiers), to: KnownIdentifiers.fileName))
        }
        artifacts.sort { $0.path < $1.path }
        let manifest = Manifest(
            tool: .init(name: "fhirbundle", version: toolVersion),
            profile: profile,
            mapping: .init(file: (mapping.document.path as NSString).lastPathComponent, sha256: sha256Hex(mapping.document.bytes)),
            limits: limits,
            sources: mapping.sources.indices.compactMap { sourceStats[$0] },
            steps: steps, artifacts: artifacts, resourceCounts: resourceCounts, rejects: rejectCount)
        var bytes = JSONWriter(indent: 2).bytes(manifest.json)
        bytes.append(UInt8(ascii: "\n"))
        let writer = try folder.writer("manifest.json")
        try writer.write(bytes)
        _ = try writer.finish()
        return manifest
    }

    /// Closes the NDJSON files of the types no later step writes, so that they can be checked while the next
    /// steps run.
    private mutating func finishNDJSON(after step: Int) throws {
        let later = Set(mapping.steps[(step + 1)...].flatMap { $0.resources.map(\.resourceType) })
        for type in ndjson.keys.sorted() where !later.contains(type) {
            let f = try ndjson.removeValue(forKey: type)!.finish()
            let path = "ndjson/\(type).ndjson"
            artifacts.append(Manifest.Artifact(path: path, sha256: f.sha256, bytes: f.size))
            written?(.ndjson(path))
        }
    }

    // MARK: Lookups

    /// Reads every source that lookups index, once per source, into the lookup tables (as bytes: no String per field).
    private mutating func buildLookups() throws -> LookupTables {
        var tables = LookupTables.Builder(mapping: mapping)
        let stepSources = Set(mapping.steps.map(\.sourceIndex))
        let bySource = Dictionary(grouping: mapping.lookups.indices, by: { mapping.lookups[$0].sourceIndex })
        for sourceIndex in bySource.keys.sorted() {
            let indexes = bySource[sourceIndex]!
            let names = indexes.map { mapping.lookups[$0].name }.joined(separator: ", ")
            let task = "lookup \(names)"
            try read(sourceIndex: sourceIndex, task: task, readerRejects: stepSources.contains(sourceIndex) ? .count : .file, as: .bytes) { record, run in
                guard case .bytes(let record) = record else { return }
                for li in indexes {
                    let lookup = run.mapping.lookups[li]
                    if case .duplicate(let key) = tables.add(index: li, record: record, keyColumns: lookup.keyColumns, multiple: lookup.multiple) {
                        let columns = lookup.keyColumns.map { run.mapping.sources[sourceIndex].fieldNames[$0] }
                        if stepSources.contains(sourceIndex) {
                            // A self-join: a step converts this row all the same, so it is no reject.
                            run.noteDuplicate(lookup: lookup.name, keyColumns: columns, file: run.mapping.sources[sourceIndex].declaration.file, line: record.line)
                        } else {
                            try run.reject(sourceIndex: sourceIndex, line: record.line, task: task, key: key,
                                           reason: "duplicate key in \(LookupDuplicates.keyText(columns)) for lookup '\(lookup.name)'; the first row with this key is used")
                        }
                    }
                }
            }
        }
        return tables.build()
    }

    private mutating func noteDuplicate(lookup: String, keyColumns: [String], file: String, line: Int) {
        if let i = lookupDuplicates.firstIndex(where: { $0.lookup == lookup }) {
            lookupDuplicates[i].count += 1
            if lookupDuplicates[i].firstLines.count < 5 { lookupDuplicates[i].firstLines.append(line) }
        } else {
            lookupDuplicates.append(LookupDuplicates(lookup: lookup, keyColumns: keyColumns, file: file, count: 1, firstLines: [line]))
        }
    }

    // MARK: Steps

    private mutating func runStep(_ index: Int, lookups: LookupTables) throws -> Manifest.Step {
        let step = mapping.steps[index]
        let evaluator = StepEvaluator(mapping: mapping, stepIndex: index, lookups: lookups)
        let folderName = BundlePaths.stepFolder(index, step.name)
        try folder.makeFolder(folderName)
        var bundleFiles: [String] = []
        var newArtifacts: [Manifest.Artifact] = []
        let staging = folder
        let written = self.written
        let assembler = BundleAssembler(packing: BundlePacking(rawValue: step.bundle.rawValue)!, limits: limits, layout: layout) { bytes in
            let path = BundlePaths.bundleFile(in: folderName, number: bundleFiles.count + 1)
            let writer = try staging.writer(path)
            try writer.write(bytes)
            let f = try writer.finish()
            bundleFiles.append(path)
            newArtifacts.append(Manifest.Artifact(path: path, sha256: f.sha256, bytes: f.size))
            written?(.bundle(path, step: index))
        }
        var perMember = [Int](repeating: 0, count: step.resources.count)
        var rows = 0
        var rejected = 0
        var groups = 0
        let task = "step \(step.name)"
        let before = rejectCount
        stepWriters = Array(repeating: nil, count: step.resources.count)
        let produced = RowResources()

        /// Checks, bundles and writes what a row (or a group's rows) became. A reject of a group files each of its
        /// rows, so that rows read = rows converted + rejects. `records` holds a group's rows (the first is
        /// `first`), and is empty in steps that do not group: no array per row on that path.
        func write(_ first: SourceRecord, group records: [SourceRecord], _ outcome: RowOutcome, _ row: RenderedRow,
                   _ run: inout ConversionRun) throws {
            func reject(_ reason: String, key: String?, value: String? = nil, identities: [String] = []) throws {
                for (i, r) in (records.isEmpty ? [first] : records).enumerated() {
                    try run.reject(sourceIndex: step.sourceIndex, line: r.line, task: task, key: key, reason: reason, value: value,
                                   identities: i == 0 ? identities : [])
                }
            }
            switch outcome {
            case .failed(let failure, let key, let identities):
                return try reject(failure.message, key: key, value: failure.value, identities: identities)
            case .filtered(let key):
                return try reject("filtered: the $if of every resource of this step is false", key: key)
            case .produced:
                break
            }
            // Fields are read in place (`resources[k].member`): a copy of a `Resource` retains its three strings.
            let resources = row.resources
            for k in resources.indices {
                if let firstLine = run.seenIdentifiers.line(of: resources[k].conditionalURLHash) {
                    return try reject("duplicate identifier: line \(firstLine) already produced \(step.resources[resources[k].member].resourceType) with this identifier; a conditional update would overwrite it",
                                      key: resources[k].identifierValue)
                }
            }
            do {
                try assembler.add(group: row)
            } catch let tooLarge as GroupTooLarge {
                return try reject(tooLarge.message + "; raise the limit or split the group", key: resources.first?.identifierValue,
                                  identities: evaluator.identities(ofRejected: first.values, group: records.map(\.values)))
            }
            for k in resources.indices {
                run.seenIdentifiers.insert(resources[k].conditionalURLHash, line: first.line)
                try run.writeNDJSON(member: resources[k].member, of: step, line: row.ndjsonForm(k - resources.startIndex))
                perMember[resources[k].member] += 1
            }
            groups += 1
        }

        func write(_ batch: StepWorkers.Batch, _ run: inout ConversionRun) throws {
            try batch.rendered.withRows { row in
                for item in batch.items {
                    switch item {
                    case .rows(let first, let records, let outcome, let resources):
                        try write(first, group: records, outcome, row(resources), &run)
                    case .reject(let line, let reason, let value):
                        try run.reject(sourceIndex: step.sourceIndex, line: line, task: task, key: nil, reason: reason, value: value)
                    }
                }
            }
        }

        // Rows are evaluated on worker threads when there are several and the step's values do not depend on the
        // rows before; the items reach `write` in the same order either way.
        var workers = evaluationThreads > 0 && !step.countsOccurrences
            ? StepWorkers(mapping: mapping, stepIndex: index, lookups: lookups, threads: evaluationThreads) : nil
        func next(_ item: StepItem, _ run: inout ConversionRun) throws {
            if workers != nil { return try workers!.add(item) { try write($0, &run) } }
            switch item {
            case .rows(let first, let records):
                let outcome = evaluator.convert(first.values, group: records.map(\.values), into: produced)
                try produced.withRow { try write(first, group: records, outcome, $0, &run) }
            case .reject(let line, let reason, let value):
                try run.reject(sourceIndex: step.sourceIndex, line: line, task: task, key: nil, reason: reason, value: value)
            }
        }

        var grouper = step.group.map { RowGrouper(columns: $0.columns, window: $0.window) }
        func handle(_ outcomes: [RowGrouper.Outcome], _ run: inout ConversionRun) throws {
            for outcome in outcomes {
                switch outcome {
                case .group(let records):
                    try next(.rows(first: records[0], group: records), &run)
                case .late(let record, let firstLine):
                    let columns = step.group!.columnNames.joined(separator: ", ")
                    try next(.reject(line: record.line, reason: "rows with these values of \(columns) already formed a group at line \(firstLine), written when \(step.group!.window) rows had passed without another; sort the file by \(columns), or raise group.within", value: nil), &run)
                case .tooLarge(let record):
                    try next(.reject(line: record.line, reason: "its group already has \(RowGrouper.maxRowsPerGroup) rows, the most one group may hold; check group.by", value: nil), &run)
                }
            }
        }

        try read(sourceIndex: step.sourceIndex, task: task, readerRejects: .inRowOrder, as: .strings) { record, run in
            switch record {
            case .strings(let record):
                rows += 1
                guard step.group != nil else { return try next(.rows(first: record, group: []), &run) }
                switch evaluator.joinsGroup(record.values) {
                case .failure(let failure):
                    return try next(.reject(line: record.line, reason: failure.message, value: failure.value), &run)
                case .success(false):
                    return try next(.reject(line: record.line, reason: "filtered: group.where is false for this row", value: nil), &run)
                case .success(true):
                    try handle(grouper!.add(record), &run)
                }
            case .rejected(let line, let reason):
                try next(.reject(line: line, reason: reason, value: nil), &run)
            case .bytes:
                return
            }
        }
        if var grouper { try handle(grouper.finish(), &self) }
        try workers?.finish { try write($0, &self) }
        try assembler.finish()
        rejected = rejectCount - before
        var counts: [String: Int] = [:]
        for (member, n) in perMember.enumerated() where n > 0 { counts[step.resources[member].resourceType, default: 0] += n }
        for (type, n) in counts { resourceCounts[type, default: 0] += n }
        artifacts.append(contentsOf: newArtifacts)
        var manifestStep = Manifest.Step(name: step.name, source: mapping.sources[step.sourceIndex].name, bundle: step.bundle.rawValue,
                                         folder: folderName, rows: rows + readerRejects(task), rejects: rejected, resources: counts, bundles: bundleFiles)
        if step.group != nil { manifestStep.groups = groups }
        return manifestStep
    }

    private var readerRejectCounts: [String: Int] = [:]
    private func readerRejects(_ task: String) -> Int { readerRejectCounts[task] ?? 0 }

    // MARK: Reading

    /// How `read` hands records over.
    private enum Reading { case strings, bytes }
    private enum Record {
        case strings(SourceRecord)
        /// Valid during the call only: the next record reuses its storage.
        case bytes(RecordBytes)
        /// A record the reader could not read (with `.inRowOrder`).
        case rejected(line: Int, reason: String)
    }
    /// What `read` does with the records its reader rejects.
    private enum ReaderRejects {
        /// Files them at once.
        case file
        /// Hands them to `handle` (as `.rejected`), which files them in row order with the rows' own rejects.
        case inRowOrder
        /// Counts them only: a step reading the same source files them.
        case count
    }

    /// Streams a source, handing records to `handle` and filing the reader's own rejects; records source statistics.
    private mutating func read(sourceIndex: Int, task: String, readerRejects: ReaderRejects, as reading: Reading,
                               _ handle: (Record, inout ConversionRun) throws -> Void) throws {
        let source = mapping.sources[sourceIndex]
        let reader: any RecordReader
        do {
            reader = try SourceOpener.open(source.declaration, path: source.path, directory: mapping.document.directory)
        } catch {
            throw ConvertError.source(name: source.name, underlying: error)
        }
        let total = (try? FileManager.default.attributesOfItem(atPath: source.path)[.size] as? Int) ?? 0
        progress?.started(task: task, source: source.declaration.file, totalBytes: total)
        var rows = 0
        var readerRejectCount = 0
        var bytes = RecordBytes()
        while true {
            let next: BytesReadResult?
            var record: SourceRecord?
            do {
                switch reading {
                case .bytes:
                    next = try reader.next(into: &bytes)
                case .strings:
                    switch try reader.next() {
                    case nil: next = nil
                    case .reject(let line, let reason): next = .reject(line: line, reason: reason)
                    case .record(let r):
                        record = r
                        next = .record
                    }
                }
            } catch { throw ConvertError.source(name: source.name, underlying: error) }
            guard let next else { break }
            rows += 1
            switch next {
            case .record:
                try handle(record.map { .strings($0) } ?? .bytes(bytes), &self)
            case .reject(let line, let reason):
                readerRejectCount += 1
                switch readerRejects {
                case .file: try reject(sourceIndex: sourceIndex, line: line, task: task, key: nil, reason: reason)
                case .inRowOrder: try handle(.rejected(line: line, reason: reason), &self)
                case .count: break
                }
            }
            if rows & 0xFFF == 0 {
                progress?.advanced(rows: rows, bytes: reader.bytesRead)
                if isCancelled() { throw ConvertError.cancelled }
            }
        }
        readerRejectCounts[task] = readerRejectCount
        progress?.finished(task: task, rows: rows, rejects: readerRejectCount)
        if sourceStats[sourceIndex] == nil {
            sourceStats[sourceIndex] = Manifest.Source(name: source.name, file: source.declaration.file, sha256: reader.sha256,
                                                       bytes: reader.bytesRead, rows: rows, rejects: readerRejectCount)
        }
    }

    // MARK: Output

    /// Files a reject; `identities` are those of the resources the row would have written (see `RejectDigest`).
    mutating func reject(sourceIndex: Int, line: Int, task: String, key: String?, reason: String, value: String? = nil,
                         identities: [String] = []) throws {
        var members = [
            JSONMember("file", .string(mapping.sources[sourceIndex].declaration.file)),
            JSONMember("line", .number(String(line))),
            JSONMember("source", .string(mapping.sources[sourceIndex].name)),
            JSONMember("task", .string(task)),
        ]
        if let key, !key.isEmpty { members.append(JSONMember("key", .string(key))) }
        members.append(JSONMember("reason", .string(reason)))
        if let value { members.append(JSONMember("value", .string(value))) }
        var bytes = compact.bytes(.object(members))
        bytes.append(UInt8(ascii: "\n"))
        try rejects.write(bytes)
        rejectCount += 1
        rejectDigest.add(file: mapping.sources[sourceIndex].declaration.file, line: line, reason: reason, identities: identities)
    }

    /// Appends a resource to its type's NDJSON file (one file per type, shared by every step that writes the type).
    mutating func writeNDJSON(member: Int, of step: CompiledStep, line: UnsafeBufferPointer<UInt8>) throws {
        if let writer = stepWriters[member] {
            try writer.write(line, then: UInt8(ascii: "\n"))
            return
        }
        let type = step.resources[member].resourceType
        let writer: HashingFileWriter
        if let w = ndjson[type] {
            writer = w
        } else {
            writer = try folder.writer("ndjson/\(type).ndjson")
            ndjson[type] = writer
        }
        stepWriters[member] = writer
        try writer.write(line, then: UInt8(ascii: "\n"))
    }
}

/// A row's resources as the bundle assembler reads them: in place, where they were rendered.
extension RenderedRow: EntryGroup {
    public var entryCount: Int { count }

    public func withEntry<R>(_ i: Int, _ body: (UnsafeBufferPointer<UInt8>, String, String) throws -> R) rethrows -> R {
        let k = resources.startIndex + i
        return try body(bundleForm(i), resources[k].conditionalURL, resources[k].fullUrl)
    }
}
