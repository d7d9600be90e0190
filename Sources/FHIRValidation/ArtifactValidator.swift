import Crypto
import FHIRArtifacts
import FHIRModel
import Foundation
import ParallelWork

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
    /// Count the values of the NDJSON resources' coded elements (`ValidationReport.codedValues`), for the report.
    public var countCodedValues = false
    /// Threads that read, hash, parse and check the structure of files ahead of the checks that need the whole
    /// folder (1: everything on the calling thread). The findings are the same whatever the number.
    public var threads = Cores.available

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
    /// With `ValidationOptions.countCodedValues`: the coded values of the NDJSON resources.
    public var codedValues: CodedValues?
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
///
/// This file holds the run's state, its order of passes and the listing of files; each pass is an extension in a
/// file of its own: `+Manifest` (schema, checksums, figures), `+Bundles` (envelopes, entries, caps, conditional
/// writes), `+NDJSON`, `+References` (urn:uuid, conditional, literal; order and target types) and `+Identifiers`
/// (the index and uniqueness). A new rule goes in the pass that reads what it checks; rules on one resource's
/// elements go in `ResourceChecker`, and every rule is a case of `Rule` with a fixture folder.
public final class ArtifactValidator {
    let folder: String
    let options: ValidationOptions
    /// The limits checked (from the options and the manifest).
    @exclusivity(unchecked) var limits = BundleLimits.medplum
    var limitsOrigin = ""
    let checker = ResourceChecker()
    /// Resources on the server that references may point at: the options' and the folder's `known-identifiers.txt`.
    var knownIdentifiers: Set<String> = []
    let tables = StructureTables.r4
    // A run is single-threaded: the per-access exclusivity checks of these hot properties cost about 7% of it.
    /// Storage for the file or NDJSON line being checked, reused. Passes that read it begin with
    /// `let tape = self.tape`: one retain for the pass, where each read of the class's property retained its buffers
    /// (a quarter of a validation's time). Only `run` and `scanNDJSON` parse, with no such copy alive.
    @exclusivity(unchecked) var tape = JSONTape()
    @exclusivity(unchecked) var findings: [Finding] = []
    @exclusivity(unchecked) var resources = 0
    /// Identifier (hash of `Type|system|value`) → where resources with it are written.
    @exclusivity(unchecked) var index = HashedKeyMap<IndexEntry>(empty: IndexEntry())
    /// How many times an identifier was indexed for one more resource than the first: a bundle during whose checks
    /// this did not change holds no identifier another resource has, and skips looking its identifiers up again.
    @exclusivity(unchecked) var repeatedIdentifiers = 0
    /// `Type/id` of resources with an id.
    @exclusivity(unchecked) var literalIDs: Set<String> = []
    @exclusivity(unchecked) var duplicates: [DuplicateSighting] = []
    /// True for a folder without a manifest: any shape of FHIR data is read, in the order its references give.
    var foreign = false
    /// Set when `options.isCancelled` said yes inside an NDJSON file: the remaining lines are skipped.
    @exclusivity(unchecked) var cancelled = false
    @exclusivity(unchecked) var bundleCounter: Int32 = 0
    /// Fed mode (`checkWritten`): the bundle files checked while written, and their SHA-256 and size.
    var fedFiles: [String] = []
    /// Twins without urn references count their identifiers for the NDJSON mirror when read (see `recordTwin`);
    /// false once `settleMirrorCredit` found the mirror differs and counts line by line.
    @exclusivity(unchecked) var creditsMirror = true
    /// The same for the coded values (`ValidationOptions.countCodedValues`): every twin counts its own.
    @exclusivity(unchecked) var creditsCodedValues = true
    /// Fed mode: the NDJSON files checked while written.
    var fedNDJSON: Set<String> = []
    var writtenDigests: [String: (sha256: String, size: Int)] = [:]
    /// Transactions seen so far (a transaction is known by its bundle's number).
    var transactions: Int32 = 0
    /// Paths that are not regular files (reported once by `listFiles`, never opened).
    var irregular: Set<String> = []
    var expectedCounts: [String: Int]?
    /// Manifest artifacts whose checksum has not been compared yet: path → (index in the manifest, size, sha256).
    @exclusivity(unchecked) var unverified: [String: (index: Int, bytes: Int, sha256: String)] = [:]
    @exclusivity(unchecked) var identifierKeys = IdentifierKeys()
    var ndjsonTypeCounts: [String: Int] = [:]
    @exclusivity(unchecked) var bundleTypeCounts = TypeCounts()
    /// The same, step by step (for a folder with a manifest), to check `steps[].resources`.
    @exclusivity(unchecked) var stepTypeCounts: [TypeCounts] = []
    /// DELETE entries (a delta's conditional deletes), checked against its manifest.
    var deleteEntries = 0
    @exclusivity(unchecked) var codedCounter = CodedValueCounter()
    /// Per resource type (index of `StructureTables.types`), its coded top-level elements.
    var codedPlans: [[CodedElementPlan]?] = []
    @exclusivity(unchecked) var pending: [PendingReference] = []
    /// The bundle resources checked (folders with a manifest), by resource type (index of `StructureTables.types`),
    /// for their NDJSON mirror lines; and the urn references of the twins that have some.
    @exclusivity(unchecked) var mirrorTwins = [MirrorTwins](repeating: MirrorTwins(), count: StructureTables.r4.types.count)
    @exclusivity(unchecked) var twinReferences: [TwinReference] = []
    /// The facts of the bundles of the file being checked (see `BundleFacts`).
    @exclusivity(unchecked) var facts = BundleFacts()
    @exclusivity(unchecked) var pendingLiterals: [(literal: String, file: String, line: Int?, pointer: String)] = []

    public init(folder: String, options: ValidationOptions = ValidationOptions()) {
        self.folder = folder.hasSuffix("/") && folder.count > 1 ? String(folder.dropLast()) : folder
        self.options = options
    }

    /// Bundle files being read ahead while one is checked.
    static let readAhead = 4

    /// What the listing of the folder found: its files, manifest, upload steps and NDJSON files.
    struct Listing {
        var all: [String]
        var manifest: Manifest?
        var steps: [[String]]
        var ndjsonFiles: [String]
        var inferred: UploadOrder?
    }

    /// Runs every rule; throws `ValidationFailure` only when the folder cannot be read.
    public func run() throws -> ValidationReport {
        let listing = try list()
        try checkBundles(of: listing)
        return try finish(listing)
    }

    /// Lists the folder, reads its manifest (or infers the upload order of foreign data), and sets the limits and
    /// the known identifiers.
    func list() throws -> Listing {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            throw ValidationFailure(message: "\(folder): no such folder")
        }
        var ndjsonFiles: [String] = []
        var all = listFiles()
        // A Bulk Data export's manifest (or another tool's) beside data from elsewhere: not this tool's, and not data.
        if all.contains(ManifestFile.name) && ManifestFile.isForeign(inFolder: folder) { all.removeAll { $0 == ManifestFile.name } }
        for path in all where path.hasSuffix(".ndjson") && path != "rejects.ndjson" && !isJournal(path) { ndjsonFiles.append(path) }
        var steps: [[String]] = []
        var manifest: Manifest?
        if all.contains("manifest.json") {
            manifest = readManifest(files: all)
            steps = manifest?.steps.map(\.bundles) ?? []
        }
        (limits, limitsOrigin) = options.effectiveLimits(manifest: manifest)
        knownIdentifiers = options.knownIdentifiers
        if let manifest, manifest.artifacts.contains(where: { $0.path == KnownIdentifiers.fileName }),
           let text = try? String(contentsOfFile: folder + "/" + KnownIdentifiers.fileName, encoding: .utf8) {
            // The folder's own list (its checksum is checked with the other listed files).
            knownIdentifiers.formUnion(KnownIdentifiers.parse(text))
        }
        var inferred: UploadOrder?
        if !all.contains("manifest.json") {
            // Not written by fhirbundle: any FHIR data, in the order its references ask for.
            foreign = true
            let dataFiles = all.filter { ($0.hasSuffix(".json") || $0.hasSuffix(".ndjson")) && !isJournal($0) && $0 != "rejects.ndjson" }
            // A wrong path, or a folder emptied on its way, must not pass as valid.
            if dataFiles.isEmpty { throw ValidationFailure(message: "\(folder) holds no manifest.json and no .json or .ndjson file: nothing to validate") }
            let order = UploadOrder.infer(folder: folder, files: dataFiles, maxJSONBytes: options.maxJSONBytes, threads: options.threads)
            inferred = order
            steps = order.steps
            for cycle in order.cycles {
                findings.append(Finding(rule: .fileCycle, file: cycle[0],
                                        message: "these files refer to each other, so none can be uploaded before the others: \(cycle.joined(separator: ", "))"))
            }
            ndjsonFiles = []  // read in their step, as data
        }
        if manifest != nil && stepTypeCounts.count < steps.count {
            stepTypeCounts.append(contentsOf: Array(repeating: TypeCounts(), count: steps.count - stepTypeCounts.count))
        }
        return Listing(all: all, manifest: manifest, steps: steps, ndjsonFiles: ndjsonFiles, inferred: inferred)
    }

    /// One pass over the bundles in upload order: each bundle is indexed (so references within it resolve), then
    /// checked; conditional references to targets not seen yet wait until the end.
    func checkBundles(of listing: Listing) throws {
        let steps = listing.steps
        let order = steps.flatMap { $0 }
        let jsonOrder = order.filter { !$0.hasSuffix(".ndjson") }
        let preparation = options.threads > 1 && jsonOrder.count > 1
            ? FilePreparation(files: jsonOrder, folder: folder, digest: Set(unverified.keys), maxBytes: options.maxJSONBytes, twins: !foreign,
                              threads: options.threads)
            : nil
        defer { preparation?.cancel() }
        var position = 0
        for (s, files) in steps.enumerated() {
            for file in files {
                if preparation == nil {
                    // Ask for the bundles after this one while it is checked: from a cold cache, each small file
                    // read would otherwise wait for the disk in turn (the workers read ahead when there are some).
                    for ahead in (position == 0 ? 1 : position + Self.readAhead)...(position + Self.readAhead) where ahead < order.count {
                        FileStreaming.prefetch(folder + "/" + order[ahead])
                    }
                }
                position += 1
                if options.isCancelled() { throw ValidationCancelled() }
                if file.hasSuffix(".ndjson") {
                    scanNDJSON(file, mirror: false, step: Int32(s))
                    continue
                }
                let prepared = preparation?.next() ?? PreparedFile(file: file, folder: folder, digest: unverified[file] != nil,
                                                                   maxBytes: options.maxJSONBytes)
                check(prepared, step: Int32(s))
            }
        }
    }

    /// Checks a bundle file (or, in a folder of foreign data, a JSON resource) read by `PreparedFile`.
    func check(_ prepared: PreparedFile, step: Int32) {
        guard accept(prepared) else { return }
        let file = prepared.file
        tape = prepared.tape
        facts = prepared.facts
        defer { facts = BundleFacts() }
        let size = tape.bytes.count
        if let sha256 = prepared.sha256, unverified[file] != nil { checkDigest(file, sha256: sha256, size: size) }
        guard prepared.parsed else {
            reportSyntaxError(in: tape.bytes, file: file)
            return
        }
        checkBundle(file: file, size: size, step: step, transactionCounter: &transactions)
    }

    /// The passes after the bundles: figures, NDJSON, pending references, duplicates, checksums and counts.
    func finish(_ listing: Listing) throws -> ValidationReport {
        let (all, manifest, steps, ndjsonFiles) = (listing.all, listing.manifest, listing.steps, listing.ndjsonFiles)
        if let manifest, all.contains("rejects.ndjson") { checkFigures(of: manifest) }
        for file in ndjsonFiles where !fedNDJSON.contains(file) {
            if options.isCancelled() { throw ValidationCancelled() }
            scanNDJSON(file, mirror: !steps.isEmpty, step: nil)
        }
        if cancelled || options.isCancelled() { throw ValidationCancelled() }
        if !foreign && !steps.isEmpty && !ndjsonFiles.isEmpty {
            settleMirrorCredit(ndjsonFiles: ndjsonFiles)
            if cancelled || options.isCancelled() { throw ValidationCancelled() }
        }
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
        var report = ValidationReport(findings: findings, resources: resources, files: all.count, limits: limits, limitsOrigin: limitsOrigin,
                                      inferredOrder: listing.inferred)
        if options.countCodedValues { report.codedValues = codedCounter.values }
        return report
    }

    /// The folder's files, hidden ones left out; those, and whatever the uploader did not write under `upload/`,
    /// are reported (a reviewer sees everything the folder holds), a hidden folder once as a whole.
    func listFiles() -> [String] {
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

    /// What `fhirupload` keeps under `upload/<server>/`: its journal, failures, target record and old journals.
    static func isUploaderFile(_ path: String) -> Bool {
        let parts = path.split(separator: "/")
        guard parts.count == 3 else { return false }
        let name = parts[2]
        return ["journal.ndjson", "failures.ndjson", "target.json"].contains(name)
            || (name.hasPrefix("journal-of-manifest-") && name.hasSuffix(".ndjson"))
    }

    /// Reads a JSON file into the tape (not parsed), reporting why it cannot be used.
    func read(_ file: String) -> Bool {
        let prepared = PreparedFile(file: file, folder: folder, digest: false, maxBytes: options.maxJSONBytes, parse: false)
        guard accept(prepared) else { return false }
        tape = prepared.tape
        return true
    }

    /// Reports a file that could not be read, or is too large to read whole; false when it cannot be used.
    func accept(_ prepared: PreparedFile) -> Bool {
        let file = prepared.file
        switch prepared.reading {
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

    /// The structure check of the resource at `root` (or, with `envelope`, of a bundle without its entries) that is
    /// not part of a batch or transaction (those are checked with their bundle's facts).
    func checkStructure(_ root: Int, file: String, envelope: Bool = false, references: inout [FoundReference]) {
        checker.check(tape, root: root, pointerRoot: 0, file: file, line: nil, envelope: envelope, findings: &findings, references: &references)
    }

    /// Reports why `bytes` is not JSON, with the line and column `JSONParser` gives.
    func reportSyntaxError(in bytes: [UInt8], file: String) {
        do {
            _ = try JSONParser.parse(bytes)
            findings.append(Finding(rule: .jsonSyntax, file: file, line: 1, message: "invalid JSON"))
        } catch {
            findings.append(Finding(rule: .jsonSyntax, file: file, line: error.line, message: "invalid JSON at column \(error.column): \(error.message)"))
        }
    }

    /// Files the uploader keeps in the folder (its journal), which the manifest does not list.
    func isJournal(_ file: String) -> Bool { file.hasPrefix("upload/") }

}
