import FHIRArtifacts
import FHIRModel
import FHIRReport
import FHIRValidation
import Foundation

/// What a delta folder holds, as its manifest's `delta` member records it.
public typealias DeltaFigures = Manifest.Delta

/// Options of `diff --out`.
public struct DeltaOptions: Sendable {
    public var outputPath: String
    /// Write conditional deletes for the removed identities (never implicit).
    public var deletes = false
    public var layout: BundleLayout = .entryPerLine
    /// Validate the delta before it replaces the output, as `convert` does.
    public var validate = true

    public init(outputPath: String) {
        self.outputPath = outputPath
    }
}

/// What `diff --out` wrote.
public struct DeltaSummary: Sendable {
    public var manifest: Manifest
    public var validation: ValidationReport?
}

/// Why a delta was not written; the previous output is unchanged.
public enum DeltaFailure: Error, CustomStringConvertible {
    case input(String)
    case artifacts(ArtifactError)
    case invalid(ValidationReport, keptAt: String)

    public var description: String {
        switch self {
        case .input(let message): return message
        case .artifacts(let e): return "cannot write the delta: \(e)"
        case .invalid(let report, let keptAt):
            return "the delta has \(report.errors) validation errors; the previous output folder is unchanged and the delta is in \(keptAt) for review"
        }
    }
}

/// Writes the artifact folder that takes a server holding OLD to NEW: NEW's steps, in NEW's order, holding only the
/// added and changed resources (a changed resource's whole transaction, since what must land together is re-sent
/// together), their NDJSON lines, the identities they refer to but do not carry (`known-identifiers.txt`: the
/// server holds them already), and with `deletes` steps of conditional deletes, one per old step, the last first.
public enum DeltaWriter {
    public static func write(old: ArtifactEntries, new: ArtifactEntries, report: DiffReport, options: DeltaOptions) throws(DeltaFailure) -> DeltaSummary {
        let folder: ArtifactFolder
        do { folder = try ArtifactFolder(target: options.outputPath) } catch { throw .artifacts(error) }
        do {
            var manifest = try fill(folder, old: old, new: new, report: report, options: options)
            var validation: ValidationReport?
            if options.validate {
                let known = manifest.artifacts.contains { $0.path == KnownIdentifiers.fileName }
                    ? KnownIdentifiers.parse((try? String(contentsOfFile: folder.staging + "/" + KnownIdentifiers.fileName, encoding: .utf8)) ?? "") : []
                var validationOptions = ValidationOptions(limits: manifest.limits, knownIdentifiers: known)
                validationOptions.countCodedValues = true
                let (result, keptAt) = try folder.validateBeforeCommit(validationOptions)
                if let keptAt { throw DeltaFailure.invalid(result, keptAt: keptAt) }
                validation = result
            }
            var page = ReviewReport(title: "Delta to \((new.folder as NSString).lastPathComponent) from \((old.folder as NSString).lastPathComponent)", manifest: manifest)
            page.validation = validation
            page.delta = ReviewReport.DeltaChanges(types: report.types.mapValues { [$0.added, $0.changed, $0.removed, $0.unchanged] })
            manifest = try folder.addReport(page)
            try folder.commit()
            return DeltaSummary(manifest: manifest, validation: validation)
        } catch let failure as DeltaFailure {
            if case .invalid = failure {} else { folder.discard() }
            throw failure
        } catch let error as ArtifactError {
            folder.discard()
            throw .artifacts(error)
        } catch {
            folder.discard()
            throw .input("\(error)")
        }
    }

    private static func fill(_ folder: ArtifactFolder, old: ArtifactEntries, new: ArtifactEntries, report: DiffReport, options: DeltaOptions) throws -> Manifest {
        let source = new.manifest
        let limits = source.limits
        try folder.makeFolder("bundles")
        try folder.makeFolder("ndjson")
        var artifacts: [Manifest.Artifact] = []
        var steps: [Manifest.Step] = []
        var resourceCounts: [String: Int] = [:]
        var resent = 0
        /// Per type, the positions (in NEW's bundle order, which its NDJSON mirrors) of the resources kept.
        var keptPositions: [String: [Int]] = [:]
        var positions: [String: Int] = [:]
        var referenced: Set<String> = []
        var carried: Set<UInt128> = []

        var current: [ArtifactEntry] = []
        var currentGroup = -1
        var stepIndex = 0
        var assembler: BundleAssembler?
        var bundleFiles: [String] = []
        var stepCounts: [String: Int] = [:]
        var stepRows = 0

        func openStep(_ index: Int) throws {
            let step = source.steps[index]
            let name = BundlePaths.stepFolder(index, step.name)
            try folder.makeFolder(name)
            bundleFiles = []
            stepCounts = [:]
            stepRows = 0
            guard let packing = BundlePacking(rawValue: step.bundle) else {
                throw DeltaFailure.input("step \(step.name) of the new folder has bundle type '\(step.bundle)', which a delta cannot repack")
            }
            assembler = BundleAssembler(packing: packing, limits: limits, layout: options.layout) { bytes in
                let path = BundlePaths.bundleFile(in: name, number: bundleFiles.count + 1)
                artifacts.append(try folder.write(bytes, to: path))
                bundleFiles.append(path)
            }
        }
        func closeStep(_ index: Int) throws {
            try assembler?.finish()
            let step = source.steps[index]
            steps.append(Manifest.Step(name: step.name, source: step.source, bundle: step.bundle, folder: BundlePaths.stepFolder(index, step.name),
                                       rows: stepRows, rejects: 0, resources: stepCounts, bundles: bundleFiles))
        }
        func flushGroup() throws {
            defer { current = [] }
            guard !current.isEmpty else { return }
            let keep = current.contains { e in e.identity.map { report.kept.contains(FastHash.hash128($0)) } ?? false }
            for e in current {
                guard let type = e.resourceType, e.resourceBytes != nil else { continue }
                let position = positions[type, default: 0]
                positions[type] = position + 1
                if keep { keptPositions[type, default: []].append(position) }
            }
            guard keep else { return }
            var planned: [PlannedEntry] = []
            for e in current {
                guard e.method == "PUT", let bytes = e.resourceBytes, let resource = e.resource, let identity = e.identity else {
                    throw DeltaFailure.input("step \(source.steps[e.step].name) of the new folder has a \(e.method) \(e.url.split(separator: "?").first ?? "") entry; a delta repacks conditional updates only")
                }
                let key = FastHash.hash128(identity)
                if !report.kept.contains(key) { resent += 1 }
                carried.insert(key)
                planned.append(PlannedEntry(compactResource: bytes, url: e.url, fullUrl: e.fullUrl ?? ""))
                collectReferences(resource, into: &referenced)
                stepCounts[e.resourceType ?? "", default: 0] += 1
                resourceCounts[e.resourceType ?? "", default: 0] += 1
                stepRows += 1
            }
            do {
                try assembler!.add(group: planned)
            } catch let tooLarge as GroupTooLarge {
                throw DeltaFailure.input("step \(source.steps[stepIndex].name): \(tooLarge.message)")
            }
        }
        if !source.steps.isEmpty { try openStep(0) }
        try new.forEach { entry in
            while entry.step > stepIndex {
                try flushGroup()
                currentGroup = -1
                try closeStep(stepIndex)
                stepIndex += 1
                try openStep(stepIndex)
            }
            if entry.group != currentGroup {
                try flushGroup()
                currentGroup = entry.group
            }
            current.append(entry)
        }
        try flushGroup()
        while stepIndex < source.steps.count {
            try closeStep(stepIndex)
            stepIndex += 1
            if stepIndex < source.steps.count { try openStep(stepIndex) }
        }

        // Conditional deletes of the removed identities, referrers first: one step per step of the old folder, the
        // last first (steps go up one after another; the bundles of one step go up together). An identity NEW lists
        // as known on the server (known-identifiers.txt) is still referred to: it is not deleted.
        var known = Set<String>()
        if let text = try? String(contentsOfFile: new.folder + "/" + KnownIdentifiers.fileName, encoding: .utf8) {
            known = KnownIdentifiers.parse(text)
        }
        func isKnown(_ identity: String) -> Bool {
            if let t = ConditionalURL.parseIdentifier(identity) { return known.contains("\(t.type)|\(t.system)|\(t.value)") }
            return known.contains(identity)
        }
        var deleted = 0
        if options.deletes && !report.removed.isEmpty {
            var byOldStep: [Int: [String]] = [:]
            for (i, identity) in report.removed.enumerated() {
                if isKnown(identity) { continue }
                byOldStep[report.removedSteps[i], default: []].append(identity)
            }
            for oldStep in byOldStep.keys.sorted(by: >) {
                let identities = Array(byOldStep[oldStep]!.reversed())
                let stepName = "delete-" + old.manifest.steps[oldStep].name
                let name = BundlePaths.stepFolder(steps.count, stepName)
                try folder.makeFolder(name)
                var files: [String] = []
                let perBundle = limits[.batchEntries] ?? 500
                var start = 0
                while start < identities.count {
                    var bytes = Array("{\"resourceType\":\"Bundle\",\"type\":\"batch\",\"entry\":[".utf8)
                    var end = start
                    while end < identities.count && end - start < perBundle {
                        let entry = JSONWriter().bytes(.object([JSONMember("request", .object([
                            JSONMember("method", .string("DELETE")), JSONMember("url", .string(identities[end])),
                        ]))]))
                        if let maxBytes = limits[.bundleBytes], end > start, bytes.count + entry.count + 2 + 4 > maxBytes { break }
                        bytes += (end > start ? Array(",\n".utf8) : [0x0A]) + entry
                        end += 1
                    }
                    bytes += Array("\n]}\n".utf8)
                    let path = BundlePaths.bundleFile(in: name, number: files.count + 1)
                    artifacts.append(try folder.write(bytes, to: path))
                    files.append(path)
                    start = end
                }
                deleted += identities.count
                steps.append(Manifest.Step(name: stepName, source: "", bundle: "batch", folder: name, rows: identities.count, rejects: 0,
                                           resources: [:], bundles: files))
            }
        }

        // NDJSON: NEW's lines of the kept resources, in order.
        for type in keptPositions.keys.sorted() {
            let wanted = keptPositions[type]!
            let writer = try folder.writer("ndjson/\(type).ndjson")
            var line = 0
            var next = 0
            var failure: (any Error)?
            let path = new.folder + "/ndjson/\(type).ndjson"
            let read = FileStreaming.forEachLine(path) { _, bytes in
                defer { line += 1 }
                guard next < wanted.count, wanted[next] == line, failure == nil else { return }
                next += 1
                do { try writer.write(bytes, then: 0x0A) } catch { failure = error }
            }
            if let failure { throw failure }
            guard read != nil, next == wanted.count, line == positions[type] ?? 0 else {
                throw DeltaFailure.input("\(path) does not mirror the new folder's bundles (\(line) lines for \(positions[type] ?? 0) \(type) entries); run fhirbundle validate on it")
            }
            let f = try writer.finish()
            artifacts.append(Manifest.Artifact(path: "ndjson/\(type).ndjson", sha256: f.sha256, bytes: f.size))
        }
        let rejects = try folder.writer("rejects.ndjson")
        let r = try rejects.finish()
        artifacts.append(Manifest.Artifact(path: "rejects.ndjson", sha256: r.sha256, bytes: r.size))

        // What the delta refers to without carrying it: on the server already (unchanged in NEW, or known to NEW).
        for reference in referenced {
            if let target = ConditionalURL.parseIdentifier(reference) {
                if !carried.contains(FastHash.hash128(reference)) { known.insert("\(target.type)|\(target.system)|\(target.value)") }
            } else if !reference.hasPrefix("urn:") && !reference.hasPrefix("#") && !reference.contains("://") {
                // A literal reference, as the validator reads it: Type/id, without a version.
                let parts = reference.split(separator: "/").prefix(2)
                guard parts.count == 2 else { continue }
                let literal = parts.joined(separator: "/")
                if !carried.contains(FastHash.hash128(literal)) { known.insert(literal) }
            }
        }
        if !known.isEmpty { artifacts.append(try folder.write(KnownIdentifiers.fileBytes(known), to: KnownIdentifiers.fileName)) }

        artifacts.sort { $0.path < $1.path }
        let total = report.total
        var manifest = Manifest(tool: .init(name: "fhirbundle", version: FHIRBundleVersion.current), profile: source.profile, mapping: source.mapping,
                                limits: limits, sources: source.sources, steps: steps, artifacts: artifacts, resourceCounts: resourceCounts, rejects: 0)
        manifest.delta = Manifest.Delta(base: old.manifestSHA256, new: new.manifestSHA256, added: total.added, changed: total.changed,
                                        resent: resent, unchanged: total.unchanged - resent, removed: total.removed, deleted: deleted)
        var bytes = JSONWriter(indent: 2).bytes(manifest.json)
        bytes.append(0x0A)
        _ = try folder.write(bytes, to: "manifest.json")
        return manifest
    }

    /// The `reference` strings of a resource, at any depth.
    static func collectReferences(_ value: JSONValue, into out: inout Set<String>) {
        switch value {
        case .object(let members):
            for m in members {
                if m.key == "reference", let s = m.value.stringValue { out.insert(s) } else { collectReferences(m.value, into: &out) }
            }
        case .array(let items):
            for item in items { collectReferences(item, into: &out) }
        default:
            break
        }
    }

}
