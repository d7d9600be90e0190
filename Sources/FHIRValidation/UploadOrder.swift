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
    public static func infer(folder: String, files: [String], maxJSONBytes: Int = DataFile.defaultMaxBytes) -> UploadOrder {
        var writers: [String: [Int]] = [:]  // key → files that write it
        var references: [[String]] = []
        var tape = JSONTape()
        for (i, file) in files.enumerated() {
            var facts = FileFacts()
            facts.read(folder + "/" + file, ndjson: file.hasSuffix(".ndjson"), tape: &tape, maxJSONBytes: maxJSONBytes)
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

    /// Reads the file on a tape, as the validator does: NDJSON streamed a line at a time, JSON whole within the
    /// size limit (a file it cannot read contributes nothing; the validation reports it).
    mutating func read(_ path: String, ndjson: Bool, tape: inout JSONTape, maxJSONBytes: Int) {
        if ndjson {
            FileStreaming.forEachLine(path, maxLine: maxJSONBytes) { _, line in
                if !NDJSONLine.isBlank(line) && tape.parse(copying: line) { add(tape, 0) }
            }
        } else if case .read = tape.read(path, limit: maxJSONBytes), tape.parse() {
            add(tape, 0)
        }
    }

    /// A resource, or a Bundle whose entries (and nested bundles) hold resources.
    mutating func add(_ tape: JSONTape, _ token: Int) {
        guard let type = tape.member(token, "resourceType") else { return }
        guard tape.equals(type, "Bundle") else { return add(resource: token, type: type, tape) }
        guard let entries = tape.member(token, "entry"), tape.kind(entries) == .array else { return }
        tape.forEachItem(entries) { _, entry in
            guard let resource = tape.member(entry, "resource"), let inner = tape.member(resource, "resourceType") else { return }
            if tape.equals(inner, "Bundle") { add(tape, resource) } else { add(resource: resource, type: inner, tape) }
        }
    }

    mutating func add(resource: Int, type typeToken: Int, _ tape: JSONTape) {
        guard let type = tape.string(typeToken) else { return }
        if let id = tape.member(resource, "id").flatMap({ tape.string($0) }) { writes.insert(type + "/" + id) }
        if let identifiers = tape.member(resource, "identifier"), tape.kind(identifiers) == .array {
            tape.forEachItem(identifiers) { _, identifier in
                if let system = tape.member(identifier, "system").flatMap({ tape.string($0) }),
                   let value = tape.member(identifier, "value").flatMap({ tape.string($0) }) {
                    writes.insert(type + "|" + system + "|" + value)
                }
            }
        }
        collectReferences(tape, resource)
    }

    private mutating func collectReferences(_ tape: JSONTape, _ token: Int) {
        switch tape.kind(token) {
        case .object:
            tape.forEachMember(token) { key, value in
                if tape.equals(key, "reference"), let reference = tape.string(value) {
                    if let key = Self.key(ofReference: reference) { references.insert(key) }
                } else if !tape.equals(key, "contained") {
                    collectReferences(tape, value)
                }
            }
        case .array:
            tape.forEachItem(token) { _, item in collectReferences(tape, item) }
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
        var parts = reference.split(separator: "/")
        if parts.count >= 4 && parts[parts.count - 2] == "_history" { parts.removeLast(2) }  // Type/id/_history/version
        guard parts.count >= 2 else { return nil }
        return parts[parts.count - 2] + "/" + parts[parts.count - 1]
    }
}
