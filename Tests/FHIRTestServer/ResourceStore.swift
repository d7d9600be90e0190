import FHIRModel
import Foundation

/// The test server's database: resources by type and id, with an index of `system|value` identifiers, so that
/// conditional updates and identifier searches behave as on a real server (including 412 on many matches).
///
/// Not thread-safe on its own: `FHIRTestServer` serialises access with its lock. A transaction records an undo
/// log and rolls back on failure, so it is all or nothing.
final class ResourceStore {
    /// Type → id → stored resource (with `id` and `meta.versionId`).
    private(set) var resources: [String: [String: JSONValue]] = [:]
    /// "Type|system|value" → ids holding that identifier.
    private var index: [String: Set<String>] = [:]
    private var versions: [String: Int] = [:]
    private var undoLog: [(type: String, id: String, previous: JSONValue?)]?
    private var counter = 0

    func newID() -> String {
        counter += 1
        return UUID().uuidString.lowercased()
    }

    func read(type: String, id: String) -> JSONValue? { resources[type]?[id] }

    /// Ids of `type` matching every parameter; each parameter is a list of OR'ed tokens (`system|value`,
    /// `|value` for no system, or a bare `value` for any system).
    func search(type: String, identifierParameters: [[SearchToken]]) -> [String] {
        var result: Set<String>?
        for tokens in identifierParameters {
            var matches = Set<String>()
            for token in tokens {
                if let system = token.system {
                    matches.formUnion(index["\(type)|\(system)|\(token.value)"] ?? [])
                } else {
                    // Any system: a scan (tests only use it on small data).
                    for (id, resource) in resources[type] ?? [:] where Self.identifiers(of: resource).contains(where: { $0.value == token.value }) {
                        matches.insert(id)
                    }
                }
            }
            result = result.map { $0.intersection(matches) } ?? matches
        }
        if let result { return result.sorted() }
        return (resources[type] ?? [:]).keys.sorted()
    }

    /// Writes `resource` as `type/id`; returns its new version.
    @discardableResult
    func write(type: String, id: String, resource: JSONValue) -> Int {
        let previous = resources[type]?[id]
        undoLog?.append((type, id, previous))
        if let previous { unindex(type: type, id: id, resource: previous) }
        let version = (versions["\(type)/\(id)"] ?? 0) + 1
        versions["\(type)/\(id)"] = version
        let stored = Self.stamped(resource, id: id, version: version)
        resources[type, default: [:]][id] = stored
        for identifier in Self.identifiers(of: stored) {
            index["\(type)|\(identifier.system)|\(identifier.value)", default: []].insert(id)
        }
        return version
    }

    func beginTransaction() { undoLog = [] }

    func commit() { undoLog = nil }

    func rollback() {
        for change in (undoLog ?? []).reversed() {
            if let current = resources[change.type]?[change.id] { unindex(type: change.type, id: change.id, resource: current) }
            if let previous = change.previous {
                resources[change.type]![change.id] = previous
                for identifier in Self.identifiers(of: previous) {
                    index["\(change.type)|\(identifier.system)|\(identifier.value)", default: []].insert(change.id)
                }
            } else {
                resources[change.type]?[change.id] = nil
            }
            versions["\(change.type)/\(change.id)", default: 1] -= 1
        }
        undoLog = nil
    }

    private func unindex(type: String, id: String, resource: JSONValue) {
        for identifier in Self.identifiers(of: resource) {
            let key = "\(type)|\(identifier.system)|\(identifier.value)"
            index[key]?.remove(id)
            if index[key]?.isEmpty == true { index[key] = nil }
        }
    }

    static func identifiers(of resource: JSONValue) -> [(system: String, value: String)] {
        (resource["identifier"]?.arrayValue ?? []).compactMap { identifier in
            guard let value = identifier["value"]?.stringValue else { return nil }
            return (identifier["system"]?.stringValue ?? "", value)
        }
    }

    /// The resource with `id` after `resourceType` and `meta.versionId` after it, as servers return them.
    private static func stamped(_ resource: JSONValue, id: String, version: Int) -> JSONValue {
        guard case .object(let members) = resource else { return resource }
        var out: [JSONMember] = []
        for member in members where member.key != "id" && member.key != "meta" {
            out.append(member)
            if member.key == "resourceType" {
                out.append(JSONMember("id", .string(id)))
                out.append(JSONMember("meta", .object([JSONMember("versionId", .string(String(version)))])))
            }
        }
        return .object(out)
    }
}

/// One token of an identifier search: `system|value`; `system` nil means any system.
struct SearchToken: Equatable {
    var system: String?
    var value: String

    /// Parses a decoded `identifier` parameter value into its OR'ed tokens, honouring FHIR's backslash escapes
    /// (`\,` `\|` `\$` `\\`).
    static func parseList(_ text: String) -> [SearchToken] {
        var tokens: [SearchToken] = []
        var parts: [String] = []
        var current = ""
        var escaped = false
        func endToken() {
            parts.append(current)
            current = ""
            if parts.count == 1 {
                tokens.append(SearchToken(system: nil, value: parts[0]))
            } else {
                tokens.append(SearchToken(system: parts[0], value: parts.dropFirst().joined(separator: "|")))
            }
            parts = []
        }
        for c in text {
            if escaped {
                current.append(c)
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else if c == "|" && parts.isEmpty {
                parts.append(current)
                current = ""
            } else if c == "," {
                endToken()
            } else {
                current.append(c)
            }
        }
        endToken()
        return tokens
    }
}

extension ResourceStore {
    /// Deletes `type/id` (tests plant and remove data directly).
    func remove(type: String, id: String) {
        guard let resource = resources[type]?[id] else { return }
        unindex(type: type, id: id, resource: resource)
        resources[type]?[id] = nil
    }
}
