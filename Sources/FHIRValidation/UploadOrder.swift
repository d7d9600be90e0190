import FHIRModel
import Foundation

/// The upload order of a folder without a manifest, worked out from the data: a file that writes what another
/// refers to goes first; files with no dependency between them share a step.
///
/// What a file writes: its resources' identifiers (`Type|system|value`) and ids (`Type/id`). What it refers to:
/// conditional references by identifier (`Type?identifier=system|value`) and literal ones (`Type/id`). A reference
/// to something the file writes itself needs no other file. Files that depend on each other in a cycle are put in
/// one step and reported.
public struct UploadOrder: Sendable, Equatable {
    /// Files by step, in upload order; each step's files sorted by path.
    public var steps: [[String]]
    /// Groups of files that refer to each other in a cycle (each sorted).
    public var cycles: [[String]]

    /// Infers the order of `files` (paths relative to `folder`: Bundle JSON, single resources, NDJSON). A file that
    /// cannot be read contributes no dependency (the validation reports it).
    public static func infer(folder: String, files: [String]) -> UploadOrder {
        var writers: [String: [Int]] = [:]  // key → files that write it
        var references: [[String]] = []
        for (i, file) in files.enumerated() {
            var facts = FileFacts()
            facts.read(folder + "/" + file, ndjson: file.hasSuffix(".ndjson"))
            for key in facts.writes { writers[key, default: []].append(i) }
            references.append(facts.references.filter { !facts.writes.contains($0) })
        }
        var dependsOn = Array(repeating: Set<Int>(), count: files.count)
        for (i, refs) in references.enumerated() {
            for key in refs { for w in writers[key] ?? [] where w != i { dependsOn[i].insert(w) } }
        }
        // Strongly connected components (Tarjan), so that a cycle becomes one node.
        let components = StronglyConnected.components(count: files.count) { dependsOn[$0] }
        var componentOf = Array(repeating: 0, count: files.count)
        for (c, members) in components.enumerated() { for m in members { componentOf[m] = c } }
        // Tarjan yields components with dependencies first, so a component's level follows from earlier ones.
        var level = Array(repeating: 0, count: components.count)
        for (c, members) in components.enumerated() {
            for m in members {
                for d in dependsOn[m] where componentOf[d] != c { level[c] = max(level[c], level[componentOf[d]] + 1) }
            }
        }
        var steps = Array(repeating: [String](), count: (level.max() ?? -1) + 1)
        for (c, members) in components.enumerated() { for m in members { steps[level[c]].append(files[m]) } }
        let cycles = components.filter { $0.count > 1 }.map { $0.map { files[$0] }.sorted() }.sorted { $0[0] < $1[0] }
        return UploadOrder(steps: steps.map { $0.sorted() }.filter { !$0.isEmpty }, cycles: cycles)
    }
}

/// What one file writes and refers to, as keys `Type|system|value` and `Type/id`.
private struct FileFacts {
    var writes = Set<String>()
    var references = Set<String>()

    mutating func read(_ path: String, ndjson: Bool) {
        guard let data = FileManager.default.contents(atPath: path) else { return }
        if ndjson {
            for line in data.split(separator: 0x0A) where !NDJSONLine.isBlank(line) {
                if let resource = try? JSONParser.parse(Array(line)) { add(resource: resource) }
            }
        } else if let json = try? JSONParser.parse(Array(data)) {
            add(json)
        }
    }

    /// A resource, or a Bundle whose entries (and nested bundles) hold resources.
    mutating func add(_ value: JSONValue) {
        guard value["resourceType"]?.stringValue == "Bundle" else { return add(resource: value) }
        for entry in value["entry"]?.arrayValue ?? [] {
            guard let resource = entry["resource"] else { continue }
            if resource["resourceType"]?.stringValue == "Bundle" { add(resource) } else { add(resource: resource) }
        }
    }

    mutating func add(resource: JSONValue) {
        guard let type = resource["resourceType"]?.stringValue else { return }
        if let id = resource["id"]?.stringValue { writes.insert(type + "/" + id) }
        for identifier in resource["identifier"]?.arrayValue ?? [] {
            if let system = identifier["system"]?.stringValue, let value = identifier["value"]?.stringValue {
                writes.insert(type + "|" + system + "|" + value)
            }
        }
        collectReferences(resource)
    }

    private mutating func collectReferences(_ value: JSONValue) {
        switch value {
        case .object(let members):
            for member in members {
                if member.key == "reference", let reference = member.value.stringValue {
                    if let key = Self.key(ofReference: reference) { references.insert(key) }
                } else if member.key != "contained" {
                    collectReferences(member.value)
                }
            }
        case .array(let items):
            for item in items { collectReferences(item) }
        default:
            break
        }
    }

    /// `Type|system|value` for `Type?identifier=system|value`, `Type/id` for a relative literal reference.
    static func key(ofReference reference: String) -> String? {
        if reference.hasPrefix("#") || reference.hasPrefix("urn:") { return nil }
        if let q = reference.firstIndex(of: "?") {
            let type = String(reference[..<q])
            guard let parsed = ConditionalURL.parseIdentifier(reference) else { return nil }
            return type + "|" + parsed.system + "|" + parsed.value
        }
        if reference.contains("://") { return nil }
        let parts = reference.split(separator: "/")
        guard parts.count >= 2 else { return nil }
        return parts[parts.count - 2] + "/" + parts[parts.count - 1]
    }
}
