import Crypto
import FHIRArtifacts
import FHIRModel
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Options of a validation run.
///
/// The bundle limits checked are, in this order of precedence: `limits` when given, else the `profile`'s, else the
/// ones the folder's manifest records, else Medplum's; `limitOverrides` then adjust them.
public struct ValidationOptions: Sendable {
    public var limits: BundleLimits?
    public var profile: ServerProfile?
    public var limitOverrides: [BundleLimit: Int?] = [:]
    /// `Type|system|value` or `Type/id` lines naming resources that already exist on the server.
    public var knownIdentifiers: Set<String>
    /// Asked between files and every few thousand NDJSON lines; when it says yes, `run()` throws `ValidationCancelled`
    /// (`convert` answers from its Ctrl-C handler, so a late signal is not swallowed by a long validation).
    public var isCancelled: @Sendable () -> Bool = { false }
    /// The largest JSON file read whole, and the longest NDJSON line (see `DataFile`).
    public var maxJSONBytes = DataFile.defaultMaxBytes

    public init(limits: BundleLimits? = nil, knownIdentifiers: Set<String> = []) {
        self.limits = limits
        self.knownIdentifiers = knownIdentifiers
    }

    /// The limits to check a folder against, given its manifest's (if it has one), and where they come from.
    func effectiveLimits(manifest: Manifest?) -> (BundleLimits, String) {
        var (limits, origin): (BundleLimits, String)
        if let explicit = self.limits {
            (limits, origin) = (explicit, "those the folder was just written with")
        } else if let profile {
            (limits, origin) = (profile.limits, "profile \(profile.rawValue)")
        } else if let manifest {
            (limits, origin) = (manifest.limits, "the manifest's (profile \(manifest.profile.rawValue))")
        } else {
            (limits, origin) = (ServerProfile.medplum.limits, "profile medplum (the default; --profile chooses another)")
        }
        for (limit, value) in limitOverrides { limits[limit] = value }
        if !limitOverrides.isEmpty { origin += ", with --limit" }
        return (limits, origin)
    }
}

/// What a validation found.
public struct ValidationReport: Sendable {
    public var findings: [Finding]
    public var resources: Int
    public var files: Int
    /// The bundle limits checked, and where they came from.
    public var limits = BundleLimits.medplum
    public var limitsOrigin = ""
    /// For a folder without a manifest: the upload order worked out from the references between its files.
    public var inferredOrder: UploadOrder?
    /// Findings left out by `selecting(rules:severity:)`.
    public var unselected = 0
    public var errors: Int { findings.lazy.filter { $0.severity == .error }.count }
    public var warnings: Int { findings.lazy.filter { $0.severity == .warning }.count }
}

/// Why validation could not run at all (exit status 2).
/// The validation was stopped by `ValidationOptions.isCancelled`.
public struct ValidationCancelled: Error {}

public struct ValidationFailure: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Validates an artifact folder offline: written by `fhirbundle convert` (with a manifest) or any folder of Bundle
/// JSON and NDJSON files (without one, each folder of bundles is taken as one upload step, in path order).
public final class ArtifactValidator {
    private let folder: String
    private let options: ValidationOptions
    /// The limits checked (from the options and the manifest).
    @exclusivity(unchecked) private var limits = BundleLimits.medplum
    private var limitsOrigin = ""
    private let checker = ResourceChecker()
    private let tables = StructureTables.r4
    // A run is single-threaded: the per-access exclusivity checks of these hot properties cost about 7% of it.
    /// Storage for the file or NDJSON line being checked, reused.
    @exclusivity(unchecked) private var tape = JSONTape()
    @exclusivity(unchecked) private var findings: [Finding] = []
    @exclusivity(unchecked) private var resources = 0
    /// Identifier (hash of `Type|system|value`) → where resources with it are written.
    @exclusivity(unchecked) private var index = HashedKeyMap<IndexEntry>(empty: IndexEntry())
    /// `Type/id` of resources with an id.
    @exclusivity(unchecked) private var literalIDs: Set<String> = []

    /// What the index knows of one identifier, in 16 bytes (with its 16-byte key, a 32-byte slot): counts and step
    /// saturate far beyond any real folder.
    private struct IndexEntry {
        private var storedCount: UInt16 = 0
        private var storedNDJSONCount: UInt16 = 0
        private var storedStep: UInt16 = .max
        private var storedCreates: UInt16 = 0
        /// The bundle (batch or transaction, numbered in reading order) whose entry writes it first.
        var bundle: Int32 = -1
        private var storedPosition: UInt16 = 0
        private var flags: UInt8 = 0

        var count: Int32 {
            get { Int32(storedCount) }
            set { storedCount = UInt16(clamping: newValue) }
        }
        var ndjsonCount: Int32 {
            get { Int32(storedNDJSONCount) }
            set { storedNDJSONCount = UInt16(clamping: newValue) }
        }
        /// Upload step that writes it (bundles); -1: none.
        var step: Int32 {
            get { storedStep == .max ? -1 : Int32(storedStep) }
            set { storedStep = newValue < 0 ? .max : UInt16(clamping: min(newValue, 65_534)) }
        }
        /// The transaction it is written in (its bundle's number), or -1.
        var transaction: Int32 {
            get { flags & 2 != 0 ? bundle : -1 }
            set { flags = newValue >= 0 ? flags | 2 : flags & ~2 }
        }
        /// Its entry's position in that bundle.
        var position: Int32 {
            get { Int32(storedPosition) }
            set { storedPosition = UInt16(clamping: newValue) }
        }
        /// Carriers written by a conditional create (`ifNoneExist`) on this identifier.
        var conditionalCreates: Int32 {
            get { Int32(storedCreates) }
            set { storedCreates = UInt16(clamping: newValue) }
        }
        /// Used as the key of a conditional update or create, or as the target of a conditional reference: then
        /// it must be unique.
        var used: Bool {
            get { flags & 1 != 0 }
            set { flags = newValue ? flags | 1 : flags & ~1 }
        }
    }

    /// Where a bundle entry is read: for the order of references inside one batch.
    private struct EntryPlace {
        var step: Int32
        var transaction: Int32
        var bundle: Int32
        var position: Int32
        /// A data bundle or file (collection, searchset, a single resource, NDJSON): not an upload, so references
        /// need only resolve, in any order.
        var data: Bool
    }

    /// A resource that shares an identifier with an earlier one; judged at the end, once it is known whether a
    /// conditional operation uses the identifier.
    private struct DuplicateSighting {
        let hash: UInt128
        let file: String
        let line: Int?
        let pointer: String
        let type: String
        let identifier: String
    }

    @exclusivity(unchecked) private var duplicates: [DuplicateSighting] = []
    /// True for a folder without a manifest: any shape of FHIR data is read, in the order its references give.
    private var foreign = false
    /// Set when `options.isCancelled` said yes inside an NDJSON file: the remaining lines are skipped.
    @exclusivity(unchecked) private var cancelled = false
    @exclusivity(unchecked) private var bundleCounter: Int32 = 0

    public init(folder: String, options: ValidationOptions = ValidationOptions()) {
        self.folder = folder.hasSuffix("/") && folder.count > 1 ? String(folder.dropLast()) : folder
        self.options = options
    }

    /// Bundle files being read ahead while one is checked.
    private static let readAhead = 4

    /// Runs every rule; throws `ValidationFailure` only when the folder cannot be read.
    public func run() throws -> ValidationReport {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            throw ValidationFailure(message: "\(folder): no such folder")
        }
        var ndjsonFiles: [String] = []
        let all = listFiles()
        for path in all where path.hasSuffix(".ndjson") && path != "rejects.ndjson" && !isJournal(path) { ndjsonFiles.append(path) }
        var steps: [[String]] = []
        var manifest: Manifest?
        if all.contains("manifest.json") {
            manifest = readManifest(files: all)
            steps = manifest?.steps.map(\.bundles) ?? []
        }
        (limits, limitsOrigin) = options.effectiveLimits(manifest: manifest)
        var inferred: UploadOrder?
        if !all.contains("manifest.json") {
            // Not written by fhirbundle: any FHIR data, in the order its references ask for.
            foreign = true
            let dataFiles = all.filter { ($0.hasSuffix(".json") || $0.hasSuffix(".ndjson")) && !isJournal($0) && $0 != "rejects.ndjson" }
            let order = UploadOrder.infer(folder: folder, files: dataFiles, maxJSONBytes: options.maxJSONBytes)
            inferred = order
            steps = order.steps
            for cycle in order.cycles {
                findings.append(Finding(rule: .fileCycle, file: cycle[0],
                                        message: "these files refer to each other, so none can be uploaded before the others: \(cycle.joined(separator: ", "))"))
            }
            ndjsonFiles = []  // read in their step, as data
        }
        // One pass over the bundles in upload order: each bundle is indexed (so references within it resolve),
        // then checked; conditional references to targets not seen yet wait until the end.
        var transactionCounter: Int32 = 0
        if manifest != nil { stepTypeCounts = Array(repeating: TypeCounts(), count: steps.count) }
        let order = steps.flatMap { $0 }
        var position = 0
        for (s, files) in steps.enumerated() {
            for file in files {
                // Ask for the bundles after this one while it is checked: from a cold cache, each small file read
                // would otherwise wait for the disk in turn.
                for ahead in (position == 0 ? 1 : position + Self.readAhead)...(position + Self.readAhead) where ahead < order.count {
                    FileStreaming.prefetch(folder + "/" + order[ahead])
                }
                position += 1
                if options.isCancelled() { throw ValidationCancelled() }
                if file.hasSuffix(".ndjson") {
                    scanNDJSON(file, mirror: false, step: Int32(s))
                    continue
                }
                guard read(file) else { continue }
                let size = tape.bytes.count
                if unverified[file] != nil { checkDigest(file, sha256: Hex.encode(SHA256.hash(data: tape.bytes)), size: size) }
                guard tape.parse() else {
                    reportSyntaxError(in: tape.bytes, file: file)
                    continue
                }
                checkBundle(file: file, size: size, step: Int32(s), transactionCounter: &transactionCounter)
            }
        }
        if let manifest, all.contains("rejects.ndjson") { checkFigures(of: manifest) }
        for file in ndjsonFiles {
            if options.isCancelled() { throw ValidationCancelled() }
            scanNDJSON(file, mirror: !steps.isEmpty, step: nil)
        }
        if cancelled || options.isCancelled() { throw ValidationCancelled() }
        resolvePending()
        judgeDuplicates()
        // Listed files that the passes above did not read (rejects.ndjson, or files they could not use).
        for (path, listed) in unverified.sorted(by: { $0.key < $1.key }) where !irregular.contains(path) {
            guard let digest = FileStreaming.digest(folder + "/" + path) else {
                findings.append(Finding(rule: .manifestMissingFile, file: "manifest.json", pointer: "/artifacts/\(listed.index)", message: "\(path) is listed but missing"))
                continue
            }
            checkDigest(path, sha256: digest.sha256, size: digest.size)
        }
        if !foreign && !steps.isEmpty && !ndjsonFiles.isEmpty { compareNDJSONWithBundles() }
        if let expected = expectedCounts {
            let bundleTypeCounts = self.bundleTypeCounts.byName
            for type in Set(expected.keys).union(bundleTypeCounts.keys).union(ndjsonTypeCounts.keys).sorted() {
                let want = expected[type] ?? 0
                if !steps.isEmpty && bundleTypeCounts[type] ?? 0 != want {
                    findings.append(Finding(rule: .manifestCounts, file: "manifest.json", pointer: "/resourceCounts/\(type)",
                                            message: "the bundles hold \(bundleTypeCounts[type] ?? 0) \(type), the manifest says \(want)"))
                }
                if !ndjsonFiles.isEmpty && ndjsonTypeCounts[type] ?? 0 != want {
                    findings.append(Finding(rule: .manifestCounts, file: "manifest.json", pointer: "/resourceCounts/\(type)",
                                            message: "the NDJSON files hold \(ndjsonTypeCounts[type] ?? 0) \(type), the manifest says \(want)"))
                }
            }
        }
        return ValidationReport(findings: findings, resources: resources, files: all.count, limits: limits, limitsOrigin: limitsOrigin,
                                inferredOrder: inferred)
    }

    // MARK: Files

    /// The folder's files, hidden ones left out; those, and whatever the uploader did not write under `upload/`,
    /// are reported (a reviewer sees everything the folder holds), a hidden folder once as a whole.
    private func listFiles() -> [String] {
        var out: [String] = []
        var hidden: [String] = []
        guard let e = FileManager.default.enumerator(atPath: folder) else { return out }
        while let rel = e.nextObject() as? String {
            var isDir: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: folder + "/" + rel, isDirectory: &isDir)
            if (rel as NSString).lastPathComponent.hasPrefix(".") {
                if isDir.boolValue { e.skipDescendants() }
                if rel != ".gitkeep" { hidden.append(rel + (isDir.boolValue ? "/" : "")) }
                continue
            }
            if exists && isDir.boolValue { continue }
            if let what = DataFile.irregularity(folder + "/" + rel) {
                irregular.insert(rel)
                findings.append(Finding(rule: .notARegularFile, file: rel, message: "\(exists ? "is \(what)" : "is a link to a file that is not there"); it is not read, and nothing in it is uploaded"))
                continue
            }
            out.append(rel)
        }
        for path in hidden.sorted() {
            findings.append(Finding(rule: .unlistedHiddenFile, file: path, message: "a hidden \(path.hasSuffix("/") ? "folder" : "file") that manifest.json does not list; it is not uploaded"))
        }
        for path in out where isJournal(path) && !Self.isUploaderFile(path) {
            findings.append(Finding(rule: .unlistedHiddenFile, file: path, message: "not a file the uploader writes, and not listed in manifest.json; it is not uploaded"))
        }
        return out.sorted()
    }

    /// Paths that are not regular files (reported once by `listFiles`, never opened).
    private var irregular: Set<String> = []

    /// What `fhirupload` keeps under `upload/<server>/`: its journal, failures, target record and old journals.
    private static func isUploaderFile(_ path: String) -> Bool {
        let parts = path.split(separator: "/")
        guard parts.count == 3 else { return false }
        let name = parts[2]
        return ["journal.ndjson", "failures.ndjson", "target.json"].contains(name)
            || (name.hasPrefix("journal-of-manifest-") && name.hasSuffix(".ndjson"))
    }

    /// Reads a JSON file into the tape, reporting one that is too large to read whole; false when it cannot be used.
    private func read(_ file: String) -> Bool {
        switch tape.read(folder + "/" + file, limit: options.maxJSONBytes) {
        case .read:
            return true
        case .unreadable:
            // A missing file is the manifest's finding (manifest-missing-file); one that is there but unreadable is this.
            if !irregular.contains(file) && FileManager.default.fileExists(atPath: folder + "/" + file) {
                findings.append(Finding(rule: .notARegularFile, file: file, message: "cannot be read (permissions?)"))
            }
            return false
        case .tooLarge(let size):
            unverified[file] = nil  // not read: its checksum is not compared either
            findings.append(Finding(rule: .fileTooLarge, file: file,
                                    message: "the file is \(size) bytes, more than the \(options.maxJSONBytes) a JSON file may have to be read whole; it is not checked. Split it (NDJSON is streamed), or raise --max-json-bytes"))
            return false
        }
    }

    /// Reports why `bytes` is not JSON, with the line and column `JSONParser` gives.
    private func reportSyntaxError(in bytes: [UInt8], file: String) {
        do {
            _ = try JSONParser.parse(bytes)
            findings.append(Finding(rule: .jsonSyntax, file: file, line: 1, message: "invalid JSON"))
        } catch {
            findings.append(Finding(rule: .jsonSyntax, file: file, line: error.line, message: "invalid JSON at column \(error.column): \(error.message)"))
        }
    }

    /// Reads and parses a JSON file into a `JSONValue`, checking it against the manifest's checksum on the way.
    private func parseJSON(_ file: String) -> JSONValue? {
        guard read(file) else { return nil }
        if unverified[file] != nil { checkDigest(file, sha256: Hex.encode(SHA256.hash(data: tape.bytes)), size: tape.bytes.count) }
        do {
            return try JSONParser.parse(tape.bytes)
        } catch {
            findings.append(Finding(rule: .jsonSyntax, file: file, line: error.line, message: "invalid JSON at column \(error.column): \(error.message)"))
            return nil
        }
    }

    private func readManifest(files: [String]) -> Manifest? {
        guard let json = parseJSON("manifest.json") else { return nil }
        let manifest: Manifest
        do {
            manifest = try Manifest(json: json)
        } catch {
            findings.append(Finding(rule: .manifestInvalid, file: "manifest.json", pointer: error.pointer, message: error.message))
            return nil
        }
        var listed = Set<String>()
        for (i, artifact) in manifest.artifacts.enumerated() {
            listed.insert(artifact.path)
            // Checked when the passes read the file (or at the end, for files they do not read).
            unverified[artifact.path] = (i, artifact.bytes, artifact.sha256)
        }
        for file in files where file != "manifest.json" && !listed.contains(file) && !isJournal(file) {
            findings.append(Finding(rule: .manifestMissingFile, file: file, message: "the file is not listed in manifest.json"))
        }
        for (s, step) in manifest.steps.enumerated() {
            // fhirbundle numbers step folders in upload order: another number at this position means the steps were
            // reordered, and a later step would then be sent before what it refers to.
            let number = step.folder.split(separator: "/").last?.prefix { $0.isNumber }
            if let number, let n = Int(number), n != s + 1 {
                findings.append(Finding(rule: .manifestInvalid, file: "manifest.json", pointer: "/steps/\(s)/folder",
                                        message: "step \(step.name) is listed as step \(s + 1) but its folder is \(step.folder): the steps were reordered; restore manifest.json"))
            }
            for (b, bundle) in step.bundles.enumerated() where !listed.contains(bundle) {
                findings.append(Finding(rule: .manifestMissingFile, file: "manifest.json", pointer: "/steps/\(s)/bundles/\(b)", message: "\(bundle) is not among the artifacts"))
            }
        }
        expectedCounts = manifest.resourceCounts
        // Size the identifier index once: about one identifier per resource, at most 70% full (rounded up to a
        // power of two, so 35-70%). It is the validator's only per-resource memory: 32 bytes a slot.
        let expected = manifest.resourceCounts.values.reduce(0, +)
        if expected > index.count { index = HashedKeyMap(empty: IndexEntry(), capacity: expected * 10 / 7 + 16) }
        return manifest
    }

    private var expectedCounts: [String: Int]?
    /// Manifest artifacts whose checksum has not been compared yet: path → (index in the manifest, size, sha256).
    @exclusivity(unchecked) private var unverified: [String: (index: Int, bytes: Int, sha256: String)] = [:]

    private func checkDigest(_ path: String, sha256: String, size: Int) {
        guard let listed = unverified.removeValue(forKey: path) else { return }
        if size != listed.bytes || sha256 != listed.sha256 {
            findings.append(Finding(rule: .manifestChecksum, file: path,
                                    message: "the file's size or SHA-256 differs from manifest.json (\(size) bytes, manifest says \(listed.bytes))"))
        }
    }

    /// Checks the manifest's per-step and per-source figures against the bundles and `rejects.ndjson`: a reviewer
    /// signs off "rows read = rows converted + rejects", so an edited figure is an error like an edited count.
    private func checkFigures(of manifest: Manifest) {
        var rejectLines = 0
        var byTask: [String: Int] = [:]
        var byFile: [String: Int] = [:]
        let verify = unverified["rejects.ndjson"] != nil
        let digest = FileStreaming.forEachLine(folder + "/rejects.ndjson", digest: verify) { line, bytes in
            if NDJSONLine.isBlank(bytes) { return }
            rejectLines += 1
            guard let reject = try? JSONParser.parse(bytes) else {
                findings.append(Finding(rule: .ndjsonLine, file: "rejects.ndjson", line: line, message: "not one JSON object"))
                return
            }
            if let task = reject["task"]?.stringValue { byTask[task, default: 0] += 1 }
            if let file = reject["file"]?.stringValue { byFile[file, default: 0] += 1 }
        }
        if let digest, verify { checkDigest("rejects.ndjson", sha256: digest.sha256, size: digest.size) }
        func figure(_ pointer: String, _ message: String) {
            findings.append(Finding(rule: .manifestCounts, file: "manifest.json", pointer: pointer, message: message))
        }
        if rejectLines != manifest.rejects {
            figure("/rejects", "rejects.ndjson holds \(rejectLines) rejects, the manifest says \(manifest.rejects)")
        }
        let sources = Dictionary(manifest.sources.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for (s, step) in manifest.steps.enumerated() {
            let p = "/steps/\(s)"
            let found = s < stepTypeCounts.count ? stepTypeCounts[s].byName : [:]
            for type in Set(found.keys).union(step.resources.keys).sorted() where found[type] ?? 0 != step.resources[type] ?? 0 {
                figure("\(p)/resources/\(type)", "the bundles of step \(step.name) hold \(found[type] ?? 0) \(type), the manifest says \(step.resources[type] ?? 0)")
            }
            let filed = byTask["step \(step.name)"] ?? 0
            if manifest.mapping != nil && filed != step.rejects {
                figure("\(p)/rejects", "rejects.ndjson holds \(filed) rejects of step \(step.name), the manifest says \(step.rejects)")
            }
            let converted = step.rows - step.rejects
            let written = step.resources.values.reduce(0, +)
            if step.rejects > step.rows || converted > written || (converted == 0 && written > 0) {
                figure("\(p)/rows", "step \(step.name) read \(step.rows) rows and rejected \(step.rejects), which cannot give its \(written) resources (every row converted gives at least one)")
            }
            // Every step reads the whole of its source.
            if let source = sources[step.source], source.rows != step.rows {
                figure("\(p)/rows", "step \(step.name) read \(step.rows) rows of source \(source.name), which has \(source.rows) according to /sources")
            }
        }
        for (i, source) in manifest.sources.enumerated() where source.rejects > source.rows {
            figure("/sources/\(i)/rejects", "source \(source.name) has more rejects (\(source.rejects)) than rows (\(source.rows))")
        }
        if manifest.mapping == nil {
            // Written by rebundle: every resource read is written in one step or rejected, and rejects name their file.
            let read = manifest.sources.reduce(0) { $0 + $1.rows }
            let written = manifest.steps.reduce(0) { $0 + $1.rows }
            if read != written + manifest.rejects {
                figure("/sources", "the inputs hold \(read) resources, but the steps write \(written) and \(manifest.rejects) were rejected")
            }
            for (i, source) in manifest.sources.enumerated() where byFile[source.file] ?? 0 != source.rejects {
                figure("/sources/\(i)/rejects", "rejects.ndjson holds \(byFile[source.file] ?? 0) rejects of \(source.file), the manifest says \(source.rejects)")
            }
        }
    }

    /// Files the uploader keeps in the folder (its journal), which the manifest does not list.
    private func isJournal(_ file: String) -> Bool { file.hasPrefix("upload/") }

    // MARK: Identifiers

    /// Resource counts by type: by type index of the R4 tables (no String per resource), other names by name.
    private struct TypeCounts {
        var known: [Int] = Array(repeating: 0, count: StructureTables.r4.types.count)
        var other: [String: Int] = [:]

        mutating func add(_ tape: JSONTape, typeToken: Int?) {
            if let t = typeToken, let i = StructureTables.r4.resourceType(tape, t) {
                known[Int(i)] += 1
            } else {
                other[typeToken.flatMap { tape.string($0) } ?? "", default: 0] += 1
            }
        }

        var byName: [String: Int] {
            var out = other
            for (i, n) in known.enumerated() where n > 0 { out[StructureTables.r4.types[i].name, default: 0] += n }
            return out
        }
    }

    @exclusivity(unchecked) private var keyBuffer: [UInt8] = []

    /// Hash of `Type|system|value`, built in one reused buffer.
    private func identifierHash(type: UnsafeBufferPointer<UInt8>, system: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) -> UInt128 {
        keyBuffer.removeAll(keepingCapacity: true)
        keyBuffer.append(contentsOf: type)
        keyBuffer.append(UInt8(ascii: "|"))
        keyBuffer.append(contentsOf: system)
        keyBuffer.append(UInt8(ascii: "|"))
        keyBuffer.append(contentsOf: value)
        return keyBuffer.withUnsafeBufferPointer { FastHash.hash128($0) }
    }

    /// Appends the hashes of `Type|system|value` for the identifiers of the resource at token `resource` (each once)
    /// to `out`.
    private func identifierHashes(_ resource: Int, typeToken: Int, into out: inout [UInt128]) {
        guard let identifiers = tape.member(resource, "identifier") else { return }
        let first = out.count
        let tape = self.tape
        func add(_ identifier: Int) {
            guard let system = tape.member(identifier, "system"), let value = tape.member(identifier, "value") else { return }
            let hash: UInt128? = tape.withString(typeToken) { t in
                tape.withString(system) { s in tape.withString(value) { v in identifierHash(type: t, system: s, value: v) } } ?? nil
            } ?? nil
            if let hash, !out[first...].contains(hash) { out.append(hash) }
        }
        // An array, or one Identifier (Bundle.identifier, and a few other resources' single identifier).
        if tape.kind(identifiers) == .object {
            add(identifiers)
        } else if tape.kind(identifiers) == .array {
            tape.forEachItem(identifiers) { _, identifier in add(identifier) }
        }
    }

    /// Records the identifiers of a resource written at `place`, appending their hashes.
    private func index(_ resource: Int, typeToken: Int, place: EntryPlace, hashes: inout [UInt128]) {
        let step = place.step, transaction = place.transaction
        if let id = tape.member(resource, "id"), let idText = tape.string(id), let type = tape.string(typeToken) {
            literalIDs.insert(type + "/" + idText)
        }
        let first = hashes.count
        identifierHashes(resource, typeToken: typeToken, into: &hashes)
        for hash in hashes[first...] {
            var e = index[hash] ?? IndexEntry()
            e.count += 1
            if e.step < 0 || step < e.step {
                e.step = step
                e.bundle = place.bundle
                e.transaction = transaction
                e.position = place.position
            }
            index[hash] = e
        }
    }

    // MARK: NDJSON

    /// An NDJSON file: the mirror of the bundles in a folder with a manifest (`mirror`: counted against the bundles,
    /// its resources and references checked, not indexed again), or data of its own (checked, indexed and its
    /// references resolved; in upload step `step` of a folder without a manifest).
    private func scanNDJSON(_ file: String, mirror: Bool, step: Int32?) {
        var counts = TypeCounts()
        var hashes: [UInt128] = []
        var references: [FoundReference] = []
        let verify = unverified[file] != nil
        let tooLong = { (line: Int) in
            self.findings.append(Finding(rule: .fileTooLarge, file: file, line: line,
                                         message: "the line is longer than the \(self.options.maxJSONBytes) bytes a resource may have; it is not checked. Raise --max-json-bytes if it is one resource"))
        }
        let digest = FileStreaming.forEachLine(folder + "/" + file, digest: verify, maxLine: options.maxJSONBytes, tooLong: tooLong) { line, bytes in
            if line & 0xFFF == 0 && !cancelled { cancelled = options.isCancelled() }
            if cancelled || NDJSONLine.isBlank(bytes) { return }
            guard tape.parse(copying: bytes), tape.kind(0) == .object else {
                do throws(JSONSyntaxError) {
                    _ = try JSONParser.parse(bytes)
                    findings.append(Finding(rule: .ndjsonLine, file: file, line: line, message: "not one JSON resource"))
                } catch {
                    findings.append(Finding(rule: .ndjsonLine, file: file, line: line, message: "not one JSON resource (column \(error.column): \(error.message))"))
                }
                return
            }
            guard let typeToken = tape.member(0, "resourceType"), tape.kind(typeToken) == .string else {
                findings.append(Finding(rule: .ndjsonLine, file: file, line: line, message: "the line is not a resource (no resourceType)"))
                return
            }
            counts.add(tape, typeToken: typeToken)
            hashes.removeAll(keepingCapacity: true)
            identifierHashes(0, typeToken: typeToken, into: &hashes)
            for hash in hashes {
                var e = index[hash] ?? IndexEntry()
                e.ndjsonCount += 1
                if !mirror {
                    e.count += 1
                    if e.step < 0, let step { e.step = step }
                    if e.count >= 2 { sightDuplicate(hash, resource: 0, typeToken: typeToken, file: file, line: line) }
                }
                index[hash] = e
            }
            if !mirror {
                resources += 1
                if let id = tape.member(0, "id"), let idText = tape.string(id), let type = tape.string(typeToken) { literalIDs.insert(type + "/" + idText) }
            }
            references.removeAll(keepingCapacity: true)
            checker.check(tape, root: 0, pointerRoot: 0, file: file, line: line, findings: &findings, references: &references)
            if !mirror { checkIdentifiersHaveSystems(0, file: file, line: line) }
            // Data need only resolve, in any order: NDJSON is loaded as a whole (or mirrors bundles checked in order).
            let place = EntryPlace(step: step ?? 0, transaction: -1, bundle: -1, position: Int32(line), data: true)
            for reference in references { checkReference(reference, file: file, line: line, place: place, isTransaction: false, fullUrls: [:]) }
        }
        for (type, n) in counts.byName { ndjsonTypeCounts[type, default: 0] += n }
        if verify, let digest { checkDigest(file, sha256: digest.sha256, size: digest.size) }
    }

    private var ndjsonTypeCounts: [String: Int] = [:]
    @exclusivity(unchecked) private var bundleTypeCounts = TypeCounts()
    /// The same, step by step (for a folder with a manifest), to check `steps[].resources`.
    @exclusivity(unchecked) private var stepTypeCounts: [TypeCounts] = []

    private func compareNDJSONWithBundles() {
        var mismatches = 0
        for (_, e) in index.entries where e.count != e.ndjsonCount { mismatches += 1 }
        if mismatches > 0 {
            findings.append(Finding(rule: .ndjsonBundleMismatch, file: "ndjson/", message: "\(mismatches) identifiers appear a different number of times in the NDJSON files and in the bundles"))
        }
    }

    // MARK: Bundles

    /// The JSON pointer of a token of the bundle on the tape (built only for findings).
    private func pointer(_ token: Int) -> String { tape.pointer(to: token, from: 0) }

    private func checkBundle(file: String, size: Int, step: Int32, transactionCounter: inout Int32) {
        guard tape.kind(0) == .object, let type = tape.member(0, "resourceType"), tape.equals(type, "Bundle") else {
            if foreign, tape.kind(0) == .object, let type = tape.member(0, "resourceType"), tape.kind(type) == .string {
                return checkDataResource(0, typeToken: type, file: file, step: step)
            }
            findings.append(Finding(rule: .bundleType, file: file, pointer: "/resourceType", message: "the file is not a Bundle"))
            return
        }
        if size > limits.bundleBytes {
            findings.append(Finding(rule: .bundleBytes, file: file, message: "the bundle is \(size) bytes, more than \(limits.bundleBytes)"))
        }
        checkEntries(0, file: file, step: step, transactionCounter: &transactionCounter)
    }

    /// `request.method` and `request.url` string tokens of an entry.
    private func request(_ entry: Int) -> (method: Int, url: Int)? {
        guard let request = tape.member(entry, "request"), let method = tape.member(request, "method"), tape.kind(method) == .string,
              let url = tape.member(request, "url"), tape.kind(url) == .string else { return nil }
        return (method, url)
    }

    private func checkEntries(_ bundle: Int, file: String, step: Int32, transactionCounter: inout Int32) {
        checkEnvelope(bundle, file: file)
        let typeToken = tape.member(bundle, "type")
        let isBatch = typeToken.map { tape.equals($0, "batch") } ?? false
        let isTransaction = typeToken.map { tape.equals($0, "transaction") } ?? false
        let dataTypes: [StaticString] = ["collection", "searchset", "document", "message", "history"]
        let isData = foreign && bundle == 0 && (typeToken.map { t in dataTypes.contains { tape.equals(t, $0) } } ?? false)
        guard isBatch || isTransaction || isData else {
            let type = typeToken.flatMap { tape.string($0) } ?? ""
            findings.append(Finding(rule: .bundleType, file: file, pointer: pointer(bundle) + "/type",
                                    message: "bundle type '\(type)' cannot be uploaded; use batch or transaction\(foreign ? " (or collection, searchset, document, message, history for data)" : "")"))
            return
        }
        if isData { return checkDataEntries(bundle, file: file, step: step) }
        let bundleSerial = bundleCounter
        bundleCounter += 1
        // A transaction is known by its bundle's number.
        let transaction: Int32 = isTransaction ? bundleSerial : -1
        if isTransaction { transactionCounter += 1 }
        var entries: [Int] = []
        if let list = tape.member(bundle, "entry"), tape.kind(list) == .array {
            entries.reserveCapacity(tape.count(list))
            tape.forEachItem(list) { _, entry in entries.append(entry) }
        }
        if isTransaction {
            var conditional = 0
            var updates = 0
            for entry in entries {
                guard let request = tape.member(entry, "request") else { continue }
                if let url = tape.member(request, "url"), tape.withString(url, { $0.contains(UInt8(ascii: "?")) }) == true { conditional += 1 }
                if let method = tape.member(request, "method"), tape.equals(method, "PUT") || tape.equals(method, "PATCH") { updates += 1 }
            }
            if entries.count > limits.transactionEntries {
                findings.append(Finding(rule: .transactionEntries, file: file, pointer: pointer(bundle) + "/entry", message: "the transaction has \(entries.count) entries, more than \(limits.transactionEntries)"))
            }
            if conditional > 0 && entries.count > limits.conditionalTransactionEntries {
                findings.append(Finding(rule: .conditionalTransactionEntries, file: file, pointer: pointer(bundle) + "/entry",
                                        message: "the transaction has \(entries.count) entries with conditional operations, more than \(limits.conditionalTransactionEntries)"))
            }
            if updates > limits.transactionUpdates {
                findings.append(Finding(rule: .transactionUpdates, file: file, pointer: pointer(bundle) + "/entry", message: "\(updates) update operations, more than \(limits.transactionUpdates)"))
            }
        } else if entries.count > limits.batchEntries {
            findings.append(Finding(rule: .batchEntries, file: file, pointer: pointer(bundle) + "/entry", message: "the batch has \(entries.count) entries, more than \(limits.batchEntries)"))
        }
        // fullUrls of this bundle (hashed): unique (bdl-7), and the targets of urn:uuid references inside a
        // transaction, with their resource type.
        var fullUrls: [UInt128: String] = [:]
        var hashes: [UInt128] = []
        var hashRanges: [Range<Int>] = []
        hashRanges.reserveCapacity(entries.count)
        for entry in entries {
            // Index first, so that references within this bundle resolve whatever the entry order.
            let first = hashes.count
            let resource = tape.member(entry, "resource")
            let resourceTypeToken = resource.flatMap { tape.member($0, "resourceType") }.flatMap { tape.kind($0) == .string ? $0 : nil }
            // An inner transaction (POSTed to /) is indexed entry by entry when it is read; a Bundle written as a
            // resource (a document) is a resource like any other.
            let isInnerTransaction = request(entry).map { tape.equals($0.url, "/") } ?? false
            if let resource, let resourceTypeToken, !isInnerTransaction {
                let place = EntryPlace(step: step, transaction: transaction, bundle: bundleSerial, position: Int32(hashRanges.count), data: false)
                index(resource, typeToken: resourceTypeToken, place: place, hashes: &hashes)
            }
            hashRanges.append(first..<hashes.count)
            guard let fullUrl = tape.member(entry, "fullUrl"), tape.kind(fullUrl) == .string else { continue }
            let key = tape.withString(fullUrl) { FastHash.hash128($0) }!
            if fullUrls[key] != nil {
                findings.append(Finding(rule: .fullUrlDuplicate, file: file, pointer: pointer(fullUrl), message: "fullUrl \(tape.string(fullUrl)!) appears twice in the bundle"))
            }
            if tape.hasPrefix(fullUrl, "urn:uuid:"), !PrimitiveFormats.isValid(tape.string(fullUrl)!, type: "uuid") {
                findings.append(Finding(rule: .fullUrlInvalid, file: file, pointer: pointer(fullUrl), message: "'\(tape.string(fullUrl)!)' is not a valid urn:uuid"))
            }
            fullUrls[key] = resourceTypeToken.map { typeName($0) } ?? ""
        }
        var references: [FoundReference] = []
        for (i, entry) in entries.enumerated() {
            guard let (method, url) = request(entry) else {
                findings.append(Finding(rule: .entryRequest, file: file, pointer: pointer(entry) + "/request", message: "the entry has no request.method and request.url"))
                continue
            }
            guard let resource = tape.member(entry, "resource") else { continue }
            let resourceTypeToken = tape.member(resource, "resourceType").flatMap { tape.kind($0) == .string ? $0 : nil }
            let isPost = tape.equals(method, "POST")
            let isBundle = resourceTypeToken.map { tape.equals($0, "Bundle") } ?? false
            if isPost && tape.equals(url, "/") {
                guard !isTransaction, isBundle, let inner = tape.member(resource, "type"), tape.equals(inner, "transaction") else {
                    findings.append(Finding(rule: .batchOfTransactionsEntry, file: file, pointer: pointer(entry), message: "an entry POSTed to / must be a transaction Bundle inside a batch"))
                    continue
                }
                checkEntries(resource, file: file, step: step, transactionCounter: &transactionCounter)
                continue
            }
            // A PATCH body is a FHIRPath patch (Parameters) or a JSON patch (Binary), not the resource it changes.
            let isPatchBody = tape.equals(method, "PATCH") && (resourceTypeToken.map { tape.equals($0, "Parameters") || tape.equals($0, "Binary") } ?? false)
            // The type at the start of request.url must be the resource's (a resource without one matches none).
            let typeMatches = isPatchBody || tape.withString(url) { u -> Bool in
                let urlType = u.prefix { $0 != UInt8(ascii: "?") && $0 != UInt8(ascii: "/") }
                guard let resourceTypeToken else { return urlType.isEmpty }
                return tape.withString(resourceTypeToken) { $0.elementsEqual(urlType) } ?? false
            }!
            if !typeMatches {
                let urlType = tape.string(url)!.prefix { $0 != "?" && $0 != "/" }
                findings.append(Finding(rule: .entryResourceType, file: file, pointer: pointer(entry) + "/request/url",
                                        message: "request.url is for \(urlType) but the resource is a \(resourceTypeToken.map { typeName($0) } ?? "")"))
            }
            if isPost {
                if let ifNoneExist = tape.member(entry, "request").flatMap({ tape.member($0, "ifNoneExist") }), tape.kind(ifNoneExist) == .string {
                    // A conditional create: a replay finds the resource and creates nothing.
                    checkConditionalKey(entry: entry, resource: resource, search: ifNoneExist, typeToken: resourceTypeToken, file: file, create: true)
                } else {
                    findings.append(Finding(rule: .notIdempotent, file: file, pointer: pointer(entry) + "/request",
                                            message: "POST \(tape.string(url)!) creates a new \(resourceTypeToken.map { typeName($0) } ?? "") on every replay"))
                }
            }
            if tape.equals(method, "PUT") {
                checkConditionalUpdate(entry: entry, resource: resource, url: url, file: file)
                if tape.withString(url, { $0.contains(UInt8(ascii: "?")) }) == true {
                    checkConditionalKey(entry: entry, resource: resource, search: url, typeToken: resourceTypeToken, file: file, create: false)
                }
            }
            resources += 1
            bundleTypeCounts.add(tape, typeToken: resourceTypeToken)
            if Int(step) < stepTypeCounts.count { stepTypeCounts[Int(step)].add(tape, typeToken: resourceTypeToken) }
            references.removeAll(keepingCapacity: true)
            checker.check(tape, root: resource, pointerRoot: 0, file: file, line: nil, findings: &findings, references: &references)
            checkIdentifiersHaveSystems(resource, file: file, line: nil)
            for hash in hashes[hashRanges[i]] where (index[hash]?.count ?? 0) > 1 {
                if let resourceTypeToken { sightDuplicate(hash, resource: resource, typeToken: resourceTypeToken, file: file, line: nil) }
            }
            // A Bundle written as a resource (a document, a collection) is stored as it is: its references resolve
            // inside it, not against the upload.
            if isBundle { continue }
            let place = EntryPlace(step: step, transaction: transaction, bundle: bundleSerial, position: Int32(i), data: false)
            for reference in references {
                checkReference(reference, file: file, line: nil, place: place, isTransaction: isTransaction, fullUrls: fullUrls)
            }
        }
    }

    /// The Bundle itself, without its entries' resources: its elements (type, timestamp, entry.request.method, unknown
    /// keys, ...) as for any resource, and the Bundle invariants of FHIR R4 that concern its shape.
    private func checkEnvelope(_ bundle: Int, file: String) {
        var references: [FoundReference] = []
        checker.check(tape, root: bundle, pointerRoot: 0, file: file, line: nil, envelope: true, findings: &findings, references: &references)
        let type = tape.member(bundle, "type").flatMap { tape.string($0) } ?? ""
        func invariant(_ id: String, _ token: Int, _ message: String) {
            findings.append(Finding(rule: .bundleInvariant, file: file, pointer: pointer(token), message: "\(id): \(message)"))
        }
        if let total = tape.member(bundle, "total"), type != "searchset" && type != "history" {
            invariant("bdl-1", total, "total is only for a searchset or history bundle")
        }
        // bdl-3 and bdl-4 depend on the type: not judged when the type itself is wrong (reported above).
        let knownType = ["document", "message", "transaction", "transaction-response", "batch", "batch-response", "history", "searchset", "collection"].contains(type)
        let requests = !knownType || ["batch", "transaction", "history"].contains(type)
        let responses = ["batch-response", "transaction-response", "history"].contains(type)
        var first: Int?
        if let list = tape.member(bundle, "entry"), tape.kind(list) == .array {
            tape.forEachItem(list) { position, entry in
                guard tape.kind(entry) == .object else { return }
                let resource = tape.member(entry, "resource")
                if position == 0 { first = resource }
                if let search = tape.member(entry, "search"), type != "searchset" {
                    invariant("bdl-2", search, "entry.search is only for a searchset bundle")
                }
                if let request = tape.member(entry, "request"), !requests {
                    invariant("bdl-3", request, "entry.request is only for a batch, transaction or history bundle, not \(type.isEmpty ? "this one" : "a \(type)")")
                }
                let response = tape.member(entry, "response")
                if let response, !responses {
                    invariant("bdl-4", response, "entry.response is only for a batch-response, transaction-response or history bundle")
                } else if response == nil && responses && knownType {
                    invariant("bdl-4", entry, "an entry of a \(type) bundle needs a response")
                }
                if resource == nil && tape.member(entry, "request") == nil && response == nil {
                    invariant("bdl-5", entry, "the entry has neither a resource nor a request or response")
                }
                if let fullUrl = tape.member(entry, "fullUrl"), tape.withString(fullUrl, { $0.firstRange(of: "/_history/".utf8) != nil }) == true {
                    invariant("bdl-8", fullUrl, "fullUrl cannot be a version-specific reference")
                }
            }
        }
        let firstType = first.flatMap { tape.member($0, "resourceType") }.flatMap { tape.string($0) }
        if type == "document" {
            let identifier = tape.member(bundle, "identifier")
            if identifier.flatMap({ tape.member($0, "system") }) == nil || identifier.flatMap({ tape.member($0, "value") }) == nil {
                invariant("bdl-9", bundle, "a document needs an identifier with a system and a value")
            }
            if tape.member(bundle, "timestamp") == nil { invariant("bdl-10", bundle, "a document needs a timestamp") }
            if firstType != "Composition" { invariant("bdl-11", bundle, "a document's first entry must be a Composition") }
        }
        if type == "message" && firstType != "MessageHeader" { invariant("bdl-12", bundle, "a message's first entry must be a MessageHeader") }
    }

    /// A resource type's name: the tables' own string for R4 types (no allocation), else the token's text.
    private func typeName(_ token: Int) -> String {
        if let i = tables.resourceType(tape, token) { return tables.types[Int(i)].name }
        return tape.string(token) ?? ""
    }

    /// A conditional update (`PUT Type?identifier=system|value`) has no id in its body and carries the identifier it
    /// searches for.
    private func checkConditionalUpdate(entry: Int, resource: Int, url: Int, file: String) {
        guard tape.withString(url, { $0.contains(UInt8(ascii: "?")) }) == true else { return }
        if tape.member(resource, "id") != nil {
            findings.append(Finding(rule: .idInConditionalUpdate, file: file, pointer: pointer(entry) + "/resource/id", message: "a conditional update body must not contain id"))
        }
        let tape = self.tape
        let identifiers = tape.member(resource, "identifier").flatMap { tape.kind($0) == .array ? $0 : nil }
        // nil: not an identifier search; else the description of the identifier when the resource lacks it.
        let missing: String?? = tape.withString(url) { u -> String?? in
            guard let token = Self.identifierQuery(u) else { return .none }
            return withParsedToken(token) { system, value -> String? in
                var carries = false
                if let identifiers {
                    tape.forEachItem(identifiers) { _, identifier in
                        guard !carries, let s = tape.member(identifier, "system"), let v = tape.member(identifier, "value") else { return }
                        carries = tape.withString(s, { $0.elementsEqual(system) }) == true && tape.withString(v, { $0.elementsEqual(value) }) == true
                    }
                }
                return carries ? nil : String(decoding: system, as: UTF8.self) + "|" + String(decoding: value, as: UTF8.self)
            }
        } ?? .none
        if case .some(.some(let description)) = missing {
            findings.append(Finding(rule: .conditionalIdentifierMissing, file: file, pointer: pointer(entry) + "/resource/identifier",
                                    message: "the update searches for identifier \(description), which the resource does not carry"))
        }
    }

    /// The identifier a conditional update (`url`) or create (`ifNoneExist`) searches for is a key: it must be unique,
    /// and a conditional create must carry it.
    private func checkConditionalKey(entry: Int, resource: Int, search: Int, typeToken: Int?, file: String, create: Bool) {
        guard let typeToken else { return }
        let tape = self.tape
        let hash: UInt128?? = tape.withString(search) { u -> UInt128? in
            let query: UnsafeBufferPointer<UInt8>?
            if create {
                let prefix: StaticString = "identifier="
                query = u.count > prefix.utf8CodeUnitCount && memcmp(u.baseAddress!, prefix.utf8Start, prefix.utf8CodeUnitCount) == 0
                    ? UnsafeBufferPointer(rebasing: u[prefix.utf8CodeUnitCount...]) : nil
            } else {
                query = Self.identifierQuery(u)
            }
            guard let query else { return nil }
            return withParsedToken(query) { system, value in
                tape.withString(typeToken) { t in identifierHash(type: t, system: system, value: value) }
            } ?? nil
        }
        guard let hash = hash ?? nil else { return }
        guard var e = index[hash], e.count > 0 else {
            if create {
                findings.append(Finding(rule: .conditionalIdentifierMissing, file: file, pointer: pointer(entry) + "/resource/identifier",
                                        message: "the conditional create searches for identifier \(tape.string(search) ?? ""), which the resource does not carry"))
            }
            return
        }
        e.used = true
        if create { e.conditionalCreates += 1 }
        index[hash] = e
    }

    /// A resource in a data bundle or file of its own: checked, indexed, its references resolved.
    private func checkDataResource(_ resource: Int, typeToken: Int, file: String, step: Int32, fullUrls: [UInt128: String] = [:]) {
        let place = EntryPlace(step: step, transaction: -1, bundle: -1, position: 0, data: true)
        var hashes: [UInt128] = []
        if !tape.equals(typeToken, "Bundle") { index(resource, typeToken: typeToken, place: place, hashes: &hashes) }
        checkIndexedDataResource(resource, typeToken: typeToken, hashes: hashes[...], file: file, place: place, fullUrls: fullUrls)
    }

    private func checkIndexedDataResource(_ resource: Int, typeToken: Int, hashes: ArraySlice<UInt128>, file: String, place: EntryPlace,
                                          fullUrls: [UInt128: String]) {
        resources += 1
        bundleTypeCounts.add(tape, typeToken: typeToken)
        var references: [FoundReference] = []
        checker.check(tape, root: resource, pointerRoot: 0, file: file, line: nil, findings: &findings, references: &references)
        checkIdentifiersHaveSystems(resource, file: file, line: nil)
        for hash in hashes where (index[hash]?.count ?? 0) > 1 { sightDuplicate(hash, resource: resource, typeToken: typeToken, file: file, line: nil) }
        for reference in references { checkReference(reference, file: file, line: nil, place: place, isTransaction: false, fullUrls: fullUrls) }
    }

    /// The entries of a collection, searchset, document, message or history bundle: resources to check, not writes.
    private func checkDataEntries(_ bundle: Int, file: String, step: Int32) {
        var entries: [(resource: Int, type: Int)] = []
        var fullUrls: [UInt128: String] = [:]
        if let list = tape.member(bundle, "entry"), tape.kind(list) == .array {
            tape.forEachItem(list) { _, entry in
                guard let resource = tape.member(entry, "resource"), let type = tape.member(resource, "resourceType"), tape.kind(type) == .string else { return }
                entries.append((resource, type))
                if let fullUrl = tape.member(entry, "fullUrl"), tape.kind(fullUrl) == .string {
                    fullUrls[tape.withString(fullUrl) { FastHash.hash128($0) }!] = typeName(type)
                }
            }
        }
        let place = EntryPlace(step: step, transaction: -1, bundle: -1, position: 0, data: true)
        var hashes: [UInt128] = []
        var ranges: [Range<Int>] = []
        for (resource, type) in entries {
            let first = hashes.count
            index(resource, typeToken: type, place: place, hashes: &hashes)
            ranges.append(first..<hashes.count)
        }
        for (i, (resource, type)) in entries.enumerated() {
            checkIndexedDataResource(resource, typeToken: type, hashes: hashes[ranges[i]], file: file, place: place, fullUrls: fullUrls)
        }
    }

    private func checkIdentifiersHaveSystems(_ resource: Int, file: String, line: Int?) {
        guard let identifiers = tape.member(resource, "identifier"), tape.kind(identifiers) == .array else { return }
        tape.forEachItem(identifiers) { _, identifier in
            if tape.member(identifier, "system") == nil {
                findings.append(Finding(rule: .identifierNoSystem, file: file, line: line, pointer: pointer(identifier), message: "the identifier has no system"))
            }
        }
    }

    private func checkReference(_ reference: FoundReference, file: String, line: Int?, place: EntryPlace, isTransaction: Bool, fullUrls: [UInt128: String]) {
        let token = reference.token
        var targetType: String?
        if tape.hasPrefix(token, "urn:uuid:") || tape.hasPrefix(token, "urn:oid:") {
            guard isTransaction || (place.data && !fullUrls.isEmpty) else {
                findings.append(Finding(rule: .urnInBatch, file: file, line: line, pointer: pointer(token),
                                        message: "\(tape.string(token)!) is a urn reference \(place.data ? "outside a bundle" : "in a batch")"))
                return
            }
            guard let type = fullUrls[tape.withString(token) { FastHash.hash128($0) }!] else {
                findings.append(Finding(rule: .urnUnresolved, file: file, line: line, pointer: pointer(token), message: "no entry of this transaction has fullUrl \(tape.string(token)!)"))
                return
            }
            targetType = type
        } else if let search = tape.withString(token, { v -> (type: String, hash: UInt128?)? in
            guard let q = v.firstIndex(of: UInt8(ascii: "?")), !v[..<q].contains(UInt8(ascii: "/")) else { return nil }
            let type = UnsafeBufferPointer(rebasing: v[..<q])
            let hash = Self.identifierQuery(v).flatMap { query in withParsedToken(query) { system, value in identifierHash(type: type, system: system, value: value) } }
            return (String(decoding: type, as: UTF8.self), hash)
        }) ?? nil {
            targetType = search.type
            guard let hash = search.hash else { return }
            // `system|value`, for messages (worked out again from the token: rarely needed).
            let description = {
                self.tape.withString(token) { v in
                    Self.identifierQuery(v).flatMap { query in
                        self.withParsedToken(query) { system, value in String(decoding: system, as: UTF8.self) + "|" + String(decoding: value, as: UTF8.self) }
                    }
                }.flatMap { $0 } ?? ""
            }
            if !options.knownIdentifiers.isEmpty && options.knownIdentifiers.contains(search.type + "|" + description()) {
                return checkTarget(reference, targetType, file, line)
            }
            guard var e = index[hash], e.count > 0 else {
                // Perhaps written by a later bundle: decided once every bundle is indexed.
                pending.append(PendingReference(hash: hash, description: description(), type: search.type, place: place,
                                                file: file, line: line, pointer: pointer(token)))
                return checkTarget(reference, targetType, file, line)
            }
            if !e.used {
                e.used = true
                index[hash] = e
            }
            checkConditional(e, description: description, type: search.type, place: place, file: file, line: line, pointer: { self.pointer(token) })
        } else {
            let value = tape.string(token)!
            if value.hasPrefix("#") || value.utf8.firstRange(of: "://".utf8) != nil {
                return  // contained, or an absolute URL outside these artifacts
            }
            var parts = value.split(separator: "/", omittingEmptySubsequences: false)
            if parts.count >= 4 && parts[parts.count - 2] == "_history" { parts.removeLast(2) }  // Type/id/_history/version
            if parts.count >= 2 {
                let literal = parts[parts.count - 2] + "/" + parts[parts.count - 1]
                targetType = String(parts[parts.count - 2])
                if !literalIDs.contains(String(literal)) && !options.knownIdentifiers.contains(String(literal)) {
                    pendingLiterals.append((String(literal), file, line, pointer(token)))  // perhaps in a later bundle
                }
            }
        }
        checkTarget(reference, targetType, file, line)
    }

    private struct PendingReference {
        let hash: UInt128
        let description: String
        let type: String
        let place: EntryPlace
        let file: String
        let line: Int?
        let pointer: String
    }

    @exclusivity(unchecked) private var pending: [PendingReference] = []

    private func checkConditional(_ e: IndexEntry, description: () -> String, type: String, place: EntryPlace, file: String, line: Int?,
                                  pointer: () -> String) {
        let allConditionalCreates = e.conditionalCreates == e.count
        if e.count > 1 && !allConditionalCreates {
            findings.append(Finding(rule: .conditionalAmbiguous, file: file, line: line, pointer: pointer(),
                                    message: "\(e.count) resources have identifier \(description())"))
        } else if place.data {
            return  // data is not uploaded as it is: the target need only exist
        } else if e.step < place.step || (place.transaction >= 0 && e.transaction == place.transaction) {
            return
        } else if e.step == place.step && e.bundle == place.bundle && e.position < place.position {
            findings.append(Finding(rule: .conditionalSameBatch, file: file, line: line, pointer: pointer(),
                                    message: "the \(type) with identifier \(description()) is an earlier entry of the same batch"))
        } else {
            findings.append(Finding(rule: .conditionalLaterStep, file: file, line: line, pointer: pointer(),
                                    message: "the \(type) with identifier \(description()) is written in \(e.step == place.step ? "the same step, outside this transaction" : "a later step")"))
        }
    }

    @exclusivity(unchecked) private var pendingLiterals: [(literal: String, file: String, line: Int?, pointer: String)] = []

    private func resolvePending() {
        for p in pendingLiterals where !literalIDs.contains(p.literal) {
            findings.append(Finding(rule: .literalUnresolved, file: p.file, line: p.line, pointer: p.pointer, message: "\(p.literal) is not among the artifacts nor declared known"))
        }
        pendingLiterals = []
        for p in pending {
            guard var e = index[p.hash], e.count > 0 else {
                findings.append(Finding(rule: .conditionalUnresolved, file: p.file, line: p.line, pointer: p.pointer,
                                        message: "no \(p.type) in the artifacts has identifier \(p.description)"))
                continue
            }
            if !e.used {
                e.used = true
                index[p.hash] = e
            }
            checkConditional(e, description: { p.description }, type: p.type, place: p.place, file: p.file, line: p.line, pointer: { p.pointer })
        }
        pending = []
    }

    // MARK: Identifier uniqueness

    /// Notes a resource that carries an identifier an earlier one has.
    private func sightDuplicate(_ hash: UInt128, resource: Int, typeToken: Int, file: String, line: Int?) {
        var description = ""
        if let identifiers = tape.member(resource, "identifier"), tape.kind(identifiers) == .array {
            tape.forEachItem(identifiers) { _, identifier in
                guard description.isEmpty, let system = tape.member(identifier, "system"), let value = tape.member(identifier, "value") else { return }
                let h: UInt128? = tape.withString(typeToken) { t in
                    tape.withString(system) { s in tape.withString(value) { v in identifierHash(type: t, system: s, value: v) } } ?? nil
                } ?? nil
                if h == hash { description = (tape.string(system) ?? "") + "|" + (tape.string(value) ?? "") }
            }
        }
        duplicates.append(DuplicateSighting(hash: hash, file: file, line: line, pointer: line == nil ? pointer(resource) + "/identifier" : "/identifier",
                                            type: typeName(typeToken), identifier: description))
    }

    /// A shared identifier is an error where a conditional operation depends on it being unique, a warning otherwise.
    private func judgeDuplicates() {
        for d in duplicates {
            let e = index[d.hash] ?? IndexEntry()
            if e.conditionalCreates == e.count {
                findings.append(Finding(rule: .identifierShared, file: d.file, line: d.line, pointer: d.pointer,
                                        message: "\(e.count) \(d.type) are conditional creates (ifNoneExist) of identifier \(d.identifier): the server keeps the first one that arrives"))
            } else if e.used || foreign {
                guard e.used else {
                    findings.append(Finding(rule: .identifierShared, file: d.file, line: d.line, pointer: d.pointer,
                                            message: "\(e.count) \(d.type) share identifier \(d.identifier); no conditional operation uses it"))
                    continue
                }
                findings.append(Finding(rule: .identifierDuplicate, file: d.file, line: d.line, pointer: d.pointer,
                                        message: "another \(d.type) in the artifacts has identifier \(d.identifier), which a conditional update or reference uses"))
            }
            // In a folder with a manifest every write and reference goes by its key identifiers, checked above: an
            // identifier no conditional operation uses may be shared (a claim group, a family id).
        }
        duplicates = []
    }

    private func checkTarget(_ reference: FoundReference, _ targetType: String?, _ file: String, _ line: Int?) {
        let targets = tables.targetLists[Int(reference.targets)]
        guard let targetType, !targets.isEmpty, !targets.contains("Resource") else { return }
        if !targets.contains(targetType) {
            findings.append(Finding(rule: .referenceTarget, file: file, line: line, pointer: pointer(reference.token),
                                    message: "a \(targetType) cannot be referenced here; allowed: \(targets.joined(separator: ", "))"))
        }
    }

    /// Calls `body` with `system` and `value` of a token search (`system|value`), undoing percent-encoding and
    /// FHIR's backslash escapes; nil when the token has no `|`.
    private func withParsedToken<R>(_ token: UnsafeBufferPointer<UInt8>, _ body: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) -> R) -> R? {
        if !token.contains(UInt8(ascii: "%")) && !token.contains(UInt8(ascii: "\\")) {
            // The usual case: split in place.
            guard let bar = token.firstIndex(of: UInt8(ascii: "|")) else { return nil }
            return body(UnsafeBufferPointer(rebasing: token[..<bar]), UnsafeBufferPointer(rebasing: token[(bar + 1)...]))
        }
        var bytes = Array(token)
        if bytes.contains(UInt8(ascii: "%")) {
            guard let decoded = String(decoding: token, as: UTF8.self).removingPercentEncoding else { return nil }
            bytes = Array(decoded.utf8)
        }
        var system: [UInt8] = []
        var value: [UInt8] = []
        var inValue = false
        var escaped = false
        for b in bytes {
            if escaped {
                if inValue { value.append(b) } else { system.append(b) }
                escaped = false
            } else if b == UInt8(ascii: "\\") {
                escaped = true
            } else if b == UInt8(ascii: "|") && !inValue {
                inValue = true
            } else if inValue {
                value.append(b)
            } else {
                system.append(b)
            }
        }
        guard inValue else { return nil }
        return system.withUnsafeBufferPointer { s in value.withUnsafeBufferPointer { v in body(s, v) } }
    }

    /// The query of a search URL that starts with `identifier=`, after it (`Type?identifier=…`).
    private static func identifierQuery(_ url: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8>? {
        guard let q = url.firstIndex(of: UInt8(ascii: "?")) else { return nil }
        let query = UnsafeBufferPointer(rebasing: url[(q + 1)...])
        let prefix: StaticString = "identifier="
        guard query.count >= prefix.utf8CodeUnitCount, memcmp(query.baseAddress!, prefix.utf8Start, prefix.utf8CodeUnitCount) == 0 else { return nil }
        return UnsafeBufferPointer(rebasing: query[prefix.utf8CodeUnitCount...])
    }
}
