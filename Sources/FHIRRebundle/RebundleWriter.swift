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
    /// Step → its spill file: one line per entry, `{"unit":…,"url":…,"fullUrl":…,"resource":…}`.
    private var spills: [FileHandle] = []
    private let spillFolder: String
    private var stepOfUnit: [Int]
    private var resourceCounts: [String: Int] = [:]
    private var stepCounts: [[String: Int]]
    var sources: [Manifest.Source] = []

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
        var ndjsonForm = body
        var bundleForm = body
        let multi = plan.units[planned.unit].count > 1
        for rewrite in planned.rewrites {
            let conditional = JSONValue.string(address(rewrite.target).url)  // Type?identifier=…, or Type/id
            ndjsonForm = ndjsonForm.setting(rewrite.pointer, to: conditional)
            let together = multi && plan.planned[rewrite.target]?.unit == planned.unit
            bundleForm = bundleForm.setting(rewrite.pointer, to: together ? .string(address(rewrite.target).fullUrl) : conditional)
        }
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
        var spill = compact.bytes(.object([JSONMember("unit", .number(String(planned.unit))), JSONMember("url", .string(url)),
                                           JSONMember("fullUrl", .string(fullUrl)), JSONMember("resource", bundleForm)]))
        spill.append(0x0A)
        spills[step].write(Data(spill))
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
    func finish(profile: ServerProfile, toolVersion: String) throws -> Manifest {
        for handle in spills { try handle.close() }
        var artifacts: [Manifest.Artifact] = []
        var steps: [Manifest.Step] = []
        for (s, step) in plan.steps.enumerated() {
            let folderName = "bundles/" + (s + 1 < 10 ? "0\(s + 1)" : String(s + 1)) + "-" + step.name
            try folder.makeFolder(folderName)
            var bundleFiles: [String] = []
            let emit: ([UInt8]) throws -> Void = { [folder] bytes in
                let path = folderName + "/" + Self.pad(bundleFiles.count + 1, 4) + ".json"
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
        for line in data.split(separator: 0x0A) where !line.isEmpty {
            let record = try JSONParser.parse(Array(line))
            guard case .number(let u)? = record["unit"], let unit = Int(u), let url = record["url"]?.stringValue,
                  let fullUrl = record["fullUrl"]?.stringValue, let resource = record["resource"] else {
                throw ArtifactError(path: spillFolder + "/\(step)", message: "a spilled entry cannot be read back")
            }
            try body(unit, PlannedEntry(compactResource: compact.bytes(resource), url: url, fullUrl: fullUrl))
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

    static func pad(_ n: Int, _ width: Int) -> String {
        let s = String(n)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }
}
