import FHIRArtifacts
import FHIRDefinitions
import FHIRModel
import Foundation

/// Pass two of a rebundle: rewrites each kept resource, writes its NDJSON line and spills its bundle entry to the
/// file of its step; `finish` assembles each step's bundles from its spill file and writes rejects and manifest.
final class RebundleWriter {
    private let folder: ArtifactFolder
    private let plan: RebundlePlan
    private let facts: [ResourceFacts]
    private let limits: BundleLimits
    private let layout: BundleLayout
    private let compact = JSONWriter()
    private var ndjson: [String: HashingFileWriter] = [:]
    private var rejects: HashingFileWriter
    private var rejectCount = 0
    /// Step → its spill file: one line per entry, `unit TAB url TAB fullUrl TAB compact resource` (URLs are
    /// percent-encoded and JSON escapes its control characters, so neither tab nor newline occurs in a field).
    private var spills: [FileHandle] = []
    /// Spill bytes not written yet, per step.
    private var spillBuffers: [[UInt8]] = []
    private let spillFolder: String
    private var stepOfUnit: [Int]
    private var resourceCounts: [String: Int] = [:]
    private var stepCounts: [[String: Int]]
    var sources: [Manifest.Source] = []

    /// Carried as `known-identifiers.txt` (see `KnownIdentifiers`).
    var knownIdentifiers: Set<String> = []

    init(folder: ArtifactFolder, plan: RebundlePlan, facts: [ResourceFacts], limits: BundleLimits, layout: BundleLayout) throws {
        self.folder = folder
        self.plan = plan
        self.facts = facts
        self.limits = limits
        self.layout = layout
        try folder.makeFolder("ndjson")
        try folder.makeFolder("bundles")
        rejects = try folder.writer("rejects.ndjson")
        spillFolder = folder.staging + "/.spill"
        try? FileManager.default.createDirectory(atPath: spillFolder, withIntermediateDirectories: true)
        stepOfUnit = Array(repeating: -1, count: plan.units.count)
        for (s, step) in plan.steps.enumerated() { for u in step.units { stepOfUnit[u] = s } }
        stepCounts = Array(repeating: [:], count: plan.steps.count)
        for s in plan.steps.indices {
            let path = spillFolder + "/\(s)"
            guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
                throw ArtifactError(path: path, message: "cannot create the step's spill file")
            }
            spills.append(handle)
            spillBuffers.append([])
        }
    }

    /// The resource without what a server assigns (`id`, `meta.versionId`, `meta.lastUpdated`): the body of a
    /// conditional update, and what identical copies have in common.
    static func withoutServerFields(_ resource: JSONValue) -> JSONValue {
        guard case .object(var members) = resource else { return resource }
        members.removeAll { $0.key == "id" }
        if let m = members.firstIndex(where: { $0.key == "meta" }), case .object(var meta) = members[m].value {
            meta.removeAll { $0.key == "versionId" || $0.key == "lastUpdated" }
            if meta.isEmpty { members.remove(at: m) } else { members[m].value = .object(meta) }
        }
        return .object(members)
    }

    /// The conditional update URL (or `Type/id`) and urn:uuid full URL of a kept resource.
    private func address(_ i: Int) -> (url: String, fullUrl: String) {
        if let id = plan.planned[i]!.literalID { return (facts[i].type + "/" + id, "urn:uuid:" + id) }
        let key = plan.planned[i]!.key
        return (ConditionalURL.identifier(type: facts[i].type, system: key.system, value: key.value),
                NameUUID.urn(type: facts[i].type, system: key.system, value: key.value))
    }

    /// Rewrites and writes resource `index` of pass one (or files its reject).
    func add(_ input: InputResource, index i: Int) throws {
        guard let planned = plan.planned[i] else {
            return try reject(input.location, type: facts[i].type, reason: plan.rejects[i] ?? "not written")
        }
        var body = Self.withoutServerFields(input.resource)
        if planned.derived { body = Self.adding(identifier: planned.key, to: body, type: facts[i].type) }
        if let id = planned.literalID, case .object(var members) = body {
            members.insert(JSONMember("id", .string(id)), at: members.first?.key == "resourceType" ? 1 : 0)
            body = .object(members)
        }
        let multi = plan.units[planned.unit].count > 1
        var inNDJSON: [String: JSONValue] = [:]
        var inBundle: [String: JSONValue] = [:]
        for rewrite in planned.rewrites {
            let target = address(rewrite.target)
            let conditional = JSONValue.string(target.url)  // Type?identifier=…, or Type/id
            inNDJSON[rewrite.pointer] = conditional
            let together = multi && plan.planned[rewrite.target]?.unit == planned.unit
            inBundle[rewrite.pointer] = together ? .string(target.fullUrl) : conditional
        }
        let ndjsonForm = body.replacing(inNDJSON)
        let bundleForm = multi ? body.replacing(inBundle) : ndjsonForm
        let type = facts[i].type
        let writer: HashingFileWriter
        if let w = ndjson[type] {
            writer = w
        } else {
            writer = try folder.writer("ndjson/\(type).ndjson")
            ndjson[type] = writer
        }
        var line = compact.bytes(ndjsonForm)
        line.append(0x0A)
        try writer.write(line)
        let (url, fullUrl) = address(i)
        let step = stepOfUnit[planned.unit]
        spillBuffers[step].append(contentsOf: String(planned.unit).utf8)
        spillBuffers[step].append(0x09)
        spillBuffers[step].append(contentsOf: url.utf8)
        spillBuffers[step].append(0x09)
        spillBuffers[step].append(contentsOf: fullUrl.utf8)
        spillBuffers[step].append(0x09)
        if multi { compact.write(bundleForm, into: &spillBuffers[step], level: 0) } else { spillBuffers[step].append(contentsOf: line.dropLast()) }
        spillBuffers[step].append(0x0A)
        if spillBuffers[step].count >= 1 << 20 { flushSpill(step) }
        resourceCounts[type, default: 0] += 1
        stepCounts[step][type, default: 0] += 1
    }

    /// Files one reject: where, what and why.
    func reject(_ location: InputLocation, type: String?, reason: String) throws {
        var members = [JSONMember("file", .string(location.file))]
        if let line = location.line { members.append(JSONMember("line", .number(String(line)))) }
        if let pointer = location.pointer { members.append(JSONMember("pointer", .string(pointer))) }
        members.append(JSONMember("task", .string("rebundle")))
        if let type { members.append(JSONMember("resourceType", .string(type))) }
        members.append(JSONMember("reason", .string(reason)))
        var bytes = compact.bytes(.object(members))
        bytes.append(0x0A)
        try rejects.write(bytes)
        rejectCount += 1
    }

    /// Assembles every step's bundles, then writes the rejects, the NDJSON and the manifest.
    private func flushSpill(_ step: Int) {
        spills[step].write(Data(spillBuffers[step]))
        spillBuffers[step].removeAll(keepingCapacity: true)
    }

    func finish(profile: ServerProfile, toolVersion: String) throws -> Manifest {
        for step in spills.indices { flushSpill(step) }
        for handle in spills { try handle.close() }
        var artifacts: [Manifest.Artifact] = []
        var steps: [Manifest.Step] = []
        for (s, step) in plan.steps.enumerated() {
            let folderName = BundlePaths.stepFolder(s, step.name)
            try folder.makeFolder(folderName)
            var bundleFiles: [String] = []
            let emit: ([UInt8]) throws -> Void = { [folder] bytes in
                let path = BundlePaths.bundleFile(in: folderName, number: bundleFiles.count + 1)
                let writer = try folder.writer(path)
                try writer.write(bytes)
                let f = try writer.finish()
                bundleFiles.append(path)
                artifacts.append(Manifest.Artifact(path: path, sha256: f.sha256, bytes: f.size))
            }
            let batch = BundleAssembler(packing: .batch, limits: limits, layout: layout, emit: emit)
            var pending: [Int: [PlannedEntry]] = [:]
            var rows = 0
            try forEachSpilled(step: s) { unit, entry in
                rows += 1
                guard step.packing == .transaction else { return try add(batch, [entry], step: step.name) }
                pending[unit, default: []].append(entry)
                if pending[unit]!.count == plan.units[unit].count {
                    // One transaction per unit: what must land together, nothing more.
                    let transaction = BundleAssembler(packing: .transaction, limits: limits, layout: layout, emit: emit)
                    try add(transaction, pending.removeValue(forKey: unit)!, step: step.name)
                    try transaction.finish()
                }
            }
            try batch.finish()
            steps.append(Manifest.Step(name: step.name, source: "input", bundle: step.packing.rawValue, folder: folderName, rows: rows,
                                       rejects: 0, resources: stepCounts[s], bundles: bundleFiles))
        }
        try? FileManager.default.removeItem(atPath: spillFolder)
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
        let manifest = Manifest(tool: .init(name: "fhirbundle", version: toolVersion), profile: profile, mapping: nil, limits: limits,
                                sources: sources, steps: steps, artifacts: artifacts, resourceCounts: resourceCounts, rejects: rejectCount)
        var bytes = JSONWriter(indent: 2).bytes(manifest.json)
        bytes.append(0x0A)
        let writer = try folder.writer("manifest.json")
        try writer.write(bytes)
        _ = try writer.finish()
        return manifest
    }

    private func add(_ assembler: BundleAssembler, _ entries: [PlannedEntry], step: String) throws {
        do {
            try assembler.add(group: entries)
        } catch let tooLarge as GroupTooLarge {
            throw RebundleError("step \(step): \(tooLarge.message); raise the limit (--limit) or choose another --profile")
        }
    }

    /// Reads a step's spill file back, entry by entry.
    private func forEachSpilled(step: Int, _ body: (_ unit: Int, _ entry: PlannedEntry) throws -> Void) throws {
        guard let data = FileManager.default.contents(atPath: spillFolder + "/\(step)") else {
            throw ArtifactError(path: spillFolder + "/\(step)", message: "the step's spill file cannot be read")
        }
        let bytes = [UInt8](data)
        var start = 0
        while start < bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            // unit, url and fullUrl, then the resource: the rest of the line.
            var fields: [Range<Int>] = []
            var from = start
            for i in start..<end where bytes[i] == 0x09 && fields.count < 3 {
                fields.append(from..<i)
                from = i + 1
            }
            guard fields.count == 3, let unit = Int(String(decoding: bytes[fields[0]], as: UTF8.self)) else {
                throw ArtifactError(path: spillFolder + "/\(step)", message: "a spilled entry cannot be read back")
            }
            try body(unit, PlannedEntry(compactResource: Array(bytes[from..<end]), url: String(decoding: bytes[fields[1]], as: UTF8.self),
                                        fullUrl: String(decoding: bytes[fields[2]], as: UTF8.self)))
            start = end + 1
        }
    }

    /// Adds a derived identifier, creating the element at its place in FHIR element order when the resource has
    /// none (a list, or one Identifier where the element does not repeat).
    static func adding(identifier token: Token, to resource: JSONValue, type: String) -> JSONValue {
        guard case .object(var members) = resource else { return resource }
        let value = JSONValue.object([JSONMember("system", .string(token.system)), JSONMember("value", .string(token.value))])
        if let i = members.firstIndex(where: { $0.key == "identifier" }) {
            if case .array(var list) = members[i].value {
                list.append(value)
                members[i].value = .array(list)
            }
            return .object(members)
        }
        let definition = FHIRDefinitions.r4.type(named: type)
        let repeats = definition?.element(forJSONKey: "identifier")?.element.isArray ?? true
        let order = definition?.order(ofJSONKey: "identifier") ?? Int.max
        let at = members.firstIndex { member in
            member.key != "resourceType" && (definition?.order(ofJSONKey: member.key.hasPrefix("_") ? String(member.key.dropFirst()) : member.key) ?? Int.max) > order
        } ?? members.count
        members.insert(JSONMember("identifier", repeats ? .array([value]) : value), at: at)
        return .object(members)
    }

}
