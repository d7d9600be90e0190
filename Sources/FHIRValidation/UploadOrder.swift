import FHIRModel
import Foundation
import ParallelWork

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
    public static func infer(folder: String, files: [String], maxJSONBytes: Int = DataFile.defaultMaxBytes, threads: Int = 1) -> UploadOrder {
        // Key → the first file that writes it, and the others (rare: most keys have one writer).
        var firstWriter = HashedKeyMap<Int32>(empty: -1)
        var otherWriters: [UInt128: [Int]] = [:]
        var references: [[UInt128]] = []
        // Each file's facts depend on it alone: read on workers, gathered in file order.
        let read: @Sendable (Int) -> FileFacts = { i in
            var facts = FileFacts()
            var tape = JSONTape()
            facts.read(folder + "/" + files[i], ndjson: files[i].hasSuffix(".ndjson"), tape: &tape, maxJSONBytes: maxJSONBytes)
            facts.references.subtract(facts.writes)  // what it writes itself needs no other file
            return facts
        }
        func gather(_ i: Int, _ facts: FileFacts) {
            for key in facts.writes {
                firstWriter.update(key, startingAt: -1) { first in
                    if first < 0 { first = Int32(i) } else { otherWriters[key, default: []].append(i) }
                }
            }
            references.append(Array(facts.references))
        }
        if threads > 1 && files.count > 1 {
            let map = OrderedParallelMap(threads: min(threads, files.count), window: 2 * threads, count: files.count, work: read)
            var i = 0
            while let facts = map.next() {
                gather(i, facts)
                i += 1
            }
        } else {
            for i in files.indices { gather(i, read(i)) }
        }
        var dependsOn = Array(repeating: Set<Int>(), count: files.count)
        for (i, refs) in references.enumerated() {
            for key in refs {
                guard let first = firstWriter[key] else { continue }
                if Int(first) != i { dependsOn[i].insert(Int(first)) }
                for w in otherWriters[key] ?? [] where w != i { dependsOn[i].insert(w) }
            }
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

/// What one file writes and refers to, as keys `Type|system|value` and `Type/id`, hashed (`FastHash`) from bytes on
/// the tape: a folder of a million resources would otherwise build two million Strings.
struct FileFacts: Sendable {
    var writes = Set<UInt128>()
    var references = Set<UInt128>()
    private var key: [UInt8] = []

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

    /// The hash of `parts` joined by `separator`.
    private mutating func hash(_ parts: UnsafeBufferPointer<UInt8>..., separator: UInt8) -> UInt128 {
        key.removeAll(keepingCapacity: true)
        for (i, part) in parts.enumerated() {
            if i > 0 { key.append(separator) }
            key.append(contentsOf: part)
        }
        return key.withUnsafeBufferPointer { FastHash.hash128($0) }
    }

    private mutating func hash(_ key: String) -> UInt128 {
        var key = key
        return key.withUTF8 { FastHash.hash128($0) }
    }

    mutating func add(resource: Int, type typeToken: Int, _ tape: JSONTape) {
        guard tape.kind(typeToken) == .string else { return }
        tape.withString(typeToken) { type in
            if let id = tape.member(resource, "id"), tape.kind(id) == .string {
                if let h = tape.withString(id, { hash(type, $0, separator: UInt8(ascii: "/")) }) { writes.insert(h) }
            }
            tape.forEachIdentifier(of: resource) { identifier in
                guard let system = tape.member(identifier, "system"), tape.kind(system) == .string,
                      let value = tape.member(identifier, "value"), tape.kind(value) == .string else { return }
                let h: UInt128?? = tape.withString(system) { s in tape.withString(value) { v in hash(type, s, v, separator: UInt8(ascii: "|")) } }
                if let h = h ?? nil { writes.insert(h) }
            }
        }
        collectReferences(tape, resource)
    }

    private mutating func collectReferences(_ tape: JSONTape, _ token: Int) {
        switch tape.kind(token) {
        case .object:
            tape.forEachMember(token) { key, value in
                if tape.equals(key, "reference"), tape.kind(value) == .string {
                    if let h = tape.withString(value, { self.key(ofReference: $0) }) ?? nil { references.insert(h) }
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

    /// The hash of `Type|system|value` for `Type?identifier=system|value`, of `Type/id` for a relative literal
    /// reference; read from the bytes, but for escaped or non-ASCII references, which go through `key(ofReference:)`.
    mutating func key(ofReference r: UnsafeBufferPointer<UInt8>) -> UInt128? {
        guard !r.contains(where: { $0 >= 0x80 || $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "\\") }) else {
            return Self.key(ofReference: String(decoding: r, as: UTF8.self)).map { hash($0) }
        }
        if r.first == UInt8(ascii: "#") || (r.count >= 4 && r[0] == UInt8(ascii: "u") && r[1] == UInt8(ascii: "r") && r[2] == UInt8(ascii: "n") && r[3] == UInt8(ascii: ":")) {
            return nil
        }
        if let q = r.firstIndex(of: UInt8(ascii: "?")) {
            let type = UnsafeBufferPointer(rebasing: r[..<q])
            let query = UnsafeBufferPointer(rebasing: r[(q + 1)...])
            let prefix: StaticString = "identifier="
            let prefixBytes = UnsafeBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount)
            // Other criteria beside the identifier (`&active=true`) are rare: read as a string.
            if query.contains(UInt8(ascii: "&")) { return Self.key(ofReference: String(decoding: r, as: UTF8.self)).map { hash($0) } }
            guard !type.isEmpty, query.starts(with: prefixBytes), !query.contains(UInt8(ascii: ",")) else { return nil }
            let token = UnsafeBufferPointer(rebasing: query[prefixBytes.count...])
            guard let bar = token.firstIndex(of: UInt8(ascii: "|")) else { return nil }
            return hash(type, UnsafeBufferPointer(rebasing: token[..<bar]), UnsafeBufferPointer(rebasing: token[(bar + 1)...]), separator: UInt8(ascii: "|"))
        }
        // `Type/id`, or `…/Type/id` and `Type/id/_history/version`; empty parts do not count (as String.split).
        var parts: [Range<Int>] = []
        var start = 0
        for i in 0...r.count where i == r.count || r[i] == UInt8(ascii: "/") {
            if i > start { parts.append(start..<i) }
            start = i + 1
        }
        if r.count >= 3 && (0...(r.count - 3)).contains(where: { r[$0] == UInt8(ascii: ":") && r[$0 + 1] == UInt8(ascii: "/") && r[$0 + 2] == UInt8(ascii: "/") }) {
            return nil  // an absolute URL
        }
        if parts.count >= 4 && r[parts[parts.count - 2]].elementsEqual("_history".utf8) { parts.removeLast(2) }
        guard parts.count >= 2 else { return nil }
        return hash(UnsafeBufferPointer(rebasing: r[parts[parts.count - 2]]), UnsafeBufferPointer(rebasing: r[parts[parts.count - 1]]), separator: UInt8(ascii: "/"))
    }

    /// `Type|system|value` for `Type?identifier=system|value`, `Type/id` for a relative literal reference.
    static func key(ofReference reference: String) -> String? {
        if reference.hasPrefix("#") || reference.hasPrefix("urn:") { return nil }
        if let q = reference.firstIndex(of: "?") {
            let type = String(reference[..<q])
            guard let parsed = ConditionalURL.identifierCriterion(reference) else { return nil }
            return type + "|" + parsed.system + "|" + parsed.value
        }
        if reference.contains("://") { return nil }
        var parts = reference.split(separator: "/")
        if parts.count >= 4 && parts[parts.count - 2] == "_history" { parts.removeLast(2) }  // Type/id/_history/version
        guard parts.count >= 2 else { return nil }
        return parts[parts.count - 2] + "/" + parts[parts.count - 1]
    }
}
