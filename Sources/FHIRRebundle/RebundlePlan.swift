import FHIRArtifacts
import FHIRDefinitions
import FHIRModel
import Foundation

/// What pass one keeps of each input resource: enough to choose its identity, resolve references and order the
/// writes, without the resource itself.
struct ResourceFacts {
    let type: String
    let location: InputLocation
    let fullUrl: String?
    let id: String?
    /// Identifiers with both a system and a value, in order.
    let identifiers: [Token]
    /// Of the resource without `id` and server-assigned `meta` fields: equal for identical copies.
    let contentHash: UInt128
    let references: [ReferenceWalkResult]
    let transaction: Int?
    let producerKey: Token?
}

/// A reference of a resource, classified once in pass one.
struct ReferenceWalkResult {
    var pointer: String
    var reference: String
    var kind: ReferenceKind
    /// `Type|system|value` of a conditional reference by identifier.
    var conditionalKey: String?

    init(pointer: String, reference: String) {
        self.pointer = pointer
        self.reference = reference
        kind = ReferenceKind.of(reference)
        if kind == .conditional, let parsed = ConditionalURL.identifierCriterion(reference) {
            conditionalKey = parsed.type + "|" + parsed.system + "|" + parsed.value
        }
    }
}

/// How one kept resource is written.
struct PlannedResource {
    /// The identifier its conditional update searches for.
    var key: Token
    /// True when `key` is derived (from the fullUrl or id) and is added to the resource's identifiers.
    var derived: Bool
    /// For a type without an `identifier` element (Provenance, ...): the id it is written under, `PUT Type/id`,
    /// a name-based UUID of its derived key, so that a replay writes the same resource again.
    var literalID: String?
    /// References to rewrite: JSON pointer → the resource it points at.
    var rewrites: [(pointer: String, target: Int)]
    var unit: Int
}

/// One step of the output: units of one kind, all of whose targets are in earlier steps.
struct PlannedStep {
    var name: String
    var packing: BundlePacking
    var units: [Int]
}

/// The decisions of a rebundle, from the facts alone: which resources are kept and under which identifier, what
/// references become, which resources land together (units) and in which order (steps).
struct RebundlePlan {
    var planned: [PlannedResource?]
    /// Resource → why it is not written.
    var rejects: [Int: String]
    /// Unit → its resources, in input order; a unit of several resources is written as one transaction.
    var units: [[Int]]
    var steps: [PlannedStep]
    /// What was changed in the input's structure, and why (for the summary and manifest readers).
    var notes: [String]

    /// The identifier system of identifiers derived from a full URL or an id (RFC 3986: a URI).
    static let derivedSystem = "urn:ietf:rfc:3986"

    static func make(_ facts: [ResourceFacts], limits: BundleLimits, keepTransactions: Bool) -> RebundlePlan {
        var plan = RebundlePlan(planned: Array(repeating: nil, count: facts.count), rejects: [:], units: [], steps: [], notes: [])
        // Identical copies (same identifier, same content) are written once: references to a copy go to the first.
        var alias = Array(0..<facts.count)
        var carriers: [String: [Int]] = [:]  // "Type|system|value" → resources, in input order
        for (i, f) in facts.enumerated() {
            for token in f.identifiers { carriers[f.type + "|" + token.description, default: []].append(i) }
        }
        // Identifiers a write or a reference depends on: they must name one resource.
        var used = Set<String>()
        for f in facts {
            if let key = f.producerKey { used.insert(f.type + "|" + key.description) }
            for r in f.references { if let key = r.conditionalKey { used.insert(key) } }
        }
        for (key, list) in carriers.sorted(by: { $0.value[0] < $1.value[0] }) where list.count > 1 {
            let first = list[0]
            for other in list.dropFirst() where plan.rejects[other] == nil && alias[other] == other {
                if facts[other].contentHash == facts[first].contentHash {
                    alias[other] = alias[first]
                    plan.rejects[other] = "duplicate: identical to \(facts[first].location) (same identifier \(key.split(separator: "|", maxSplits: 1)[1]) and content); written once"
                } else if used.contains(key) {
                    plan.rejects[other] = "conflict: \(facts[first].location) has the same identifier \(key.split(separator: "|", maxSplits: 1)[1]) with other content, "
                        + "and a conditional operation uses it; the first is kept, as the server would with ifNoneExist"
                }
            }
        }
        // The identity of each resource: its first identifier that no other kept resource carries, else one derived
        // from its full URL or id.
        let definitions = FHIRDefinitions.r4
        var tokens: [Token?] = Array(repeating: nil, count: facts.count)
        var derived = Array(repeating: false, count: facts.count)
        var literalIDs: [String?] = Array(repeating: nil, count: facts.count)
        var taken = Set<String>()
        var byID: [String: Int] = [:]
        for (i, f) in facts.enumerated() where plan.rejects[i] == nil {
            guard definitions.isResourceType(f.type) else {
                plan.rejects[i] = "'\(f.type)' is not a FHIR R4 resource type"
                continue
            }
            guard definitions.type(named: f.type)?.element(forJSONKey: "identifier") != nil else {
                // No identifier to search by: written under an id of our own making, `PUT Type/id`.
                guard let token = derivedToken(f) else {
                    plan.rejects[i] = "\(f.type) has no identifier element, and the resource has no fullUrl and no id to make one from: it cannot be made idempotent"
                    continue
                }
                tokens[i] = token
                literalIDs[i] = NameUUID.v5(f.type + "|" + token.description)
                byID[f.type, default: 0] += 1
                continue
            }
            let unique = f.identifiers.first { token in
                let key = f.type + "|" + token.description
                return !taken.contains(key) && (carriers[key] ?? []).allSatisfy { $0 == i || alias[$0] != $0 || (plan.rejects[$0] != nil && alias[$0] == $0) }
            }
            let repeats = definitions.type(named: f.type)?.element(forJSONKey: "identifier")?.element.isArray ?? true
            if let unique {
                tokens[i] = unique
            } else if !repeats && !f.identifiers.isEmpty {
                plan.rejects[i] = "its identifier is not its own (another resource carries it) and \(f.type).identifier holds one identifier, so none can be added"
                continue
            } else if let token = derivedToken(f) {
                tokens[i] = token
                derived[i] = true
            } else {
                plan.rejects[i] = "no identifier of its own (with system and value), no fullUrl and no id: nothing to make a conditional update on"
                continue
            }
            taken.insert(f.type + "|" + tokens[i]!.description)
        }
        // References: to a resource of the input, they become conditional references by its identifier (or stay
        // urn:uuid: inside one transaction). A resource referring to a rejected one is rejected in turn.
        var fullUrls: [String: [Int]] = [:]
        var literals: [String: [Int]] = [:]
        for (i, f) in facts.enumerated() {
            if let fullUrl = f.fullUrl { fullUrls[fullUrl, default: []].append(i) }
            if let id = f.id { literals[f.type + "/" + id, default: []].append(i) }
        }
        var targets: [[(pointer: String, target: Int, rewrite: Bool)]] = Array(repeating: [], count: facts.count)
        var otherServers = 0
        for (i, f) in facts.enumerated() {
            for r in f.references {
                guard let (target, rewrite) = resolve(r, from: i, facts: facts, fullUrls: fullUrls, literals: literals, carriers: carriers)
                else {
                    if r.kind == .absolute, let literal = literalKey(r.reference), literals[literal] != nil { otherServers += 1 }
                    continue
                }
                targets[i].append((r.pointer, alias[target], rewrite))
            }
        }
        if otherServers > 0 {
            plan.notes.append("\(otherServers) absolute references name a Type/id of the input on another server than the resource's own (its full URL's base, or the referring resource's): they are kept as written, not pointed at the input's resource")
        }
        func rejectReferrers() {
            var changed = true
            while changed {
                changed = false
                for i in facts.indices where plan.rejects[i] == nil {
                    if let bad = targets[i].first(where: { plan.rejects[$0.target] != nil }) {
                        plan.rejects[i] = "refers (at \(bad.pointer)) to \(facts[bad.target].location), which is not written: \(plan.rejects[bad.target]!)"
                        changed = true
                    }
                }
            }
        }
        rejectReferrers()
        // Units: an input transaction that fits one transaction of the profile stays one (when the profile keeps
        // them); resources that refer to each other in a cycle must land together too.
        let cap = min(limits.transactionEntries, limits.conditionalTransactionEntries, limits.transactionUpdates)
        var group = Array(0..<facts.count)
        var byTransaction: [Int: [Int]] = [:]
        for (i, f) in facts.enumerated() where plan.rejects[i] == nil {
            if let t = f.transaction { byTransaction[t, default: []].append(i) }
        }
        var split = 0
        for (_, members) in byTransaction.sorted(by: { $0.key < $1.key }) where members.count > 1 {
            if keepTransactions && members.count <= cap {
                for m in members { group[m] = members[0] }
            } else {
                split += 1
            }
        }
        for (type, n) in byID.sorted(by: { $0.key < $1.key }) {
            plan.notes.append("\(n) \(type) have no identifier element in FHIR R4: they are written as PUT \(type)/<id> with a stable id derived from their full URL (the server must accept ids chosen by the client)")
        }
        if split > 0 {
            plan.notes.append("\(split) input transactions were written as separate conditional updates: "
                + (keepTransactions ? "they hold more entries than one transaction may (\(cap))" : "this profile caps transactions at \(cap) entries")
                + "; references between their resources became conditional references by identifier, and the steps upload every target first")
        }
        let kept = facts.indices.filter { plan.rejects[$0] == nil }
        var groups: [Int: [Int]] = [:]
        for i in kept { groups[group[i], default: []].append(i) }
        let groupIDs = groups.keys.sorted()
        let groupIndex = Dictionary(uniqueKeysWithValues: groupIDs.enumerated().map { ($1, $0) })
        let edges: [Set<Int>] = groupIDs.map { g in
            var out = Set<Int>()
            for m in groups[g]! { for t in targets[m] where plan.rejects[t.target] == nil { out.insert(groupIndex[group[t.target]]!) } }
            out.remove(groupIndex[g]!)
            return out
        }
        let components = StronglyConnected.components(count: groupIDs.count) { edges[$0] }
        var unitOfGroup = Array(repeating: 0, count: groupIDs.count)
        for (u, members) in components.enumerated() { for m in members { unitOfGroup[m] = u } }
        var units: [[Int]] = components.map { members in members.flatMap { groups[groupIDs[$0]]! }.sorted() }
        var cyclic = 0
        for (u, members) in units.enumerated() where components[u].count > 1 {
            cyclic += 1
            if members.count > cap {
                for m in members {
                    plan.rejects[m] = "its references form a cycle of \(members.count) resources, more than one transaction of this profile may hold (\(cap))"
                }
                units[u] = []
            }
        }
        if cyclic > 0 { plan.notes.append("\(cyclic) groups of resources refer to each other in a cycle and are written as one transaction each") }
        // What refers to a cycle too large to write is not written either.
        rejectReferrers()
        units = units.map { $0.filter { plan.rejects[$0] == nil } }
        // Steps: a unit's level is one more than that of any unit it refers to (components come dependencies first).
        var level = Array(repeating: 0, count: units.count)
        for u in units.indices {
            for g in components[u] { for d in edges[g] where unitOfGroup[d] != u { level[u] = max(level[u], level[unitOfGroup[d]] + 1) } }
        }
        var unitOf = Array(repeating: -1, count: facts.count)
        for (u, members) in units.enumerated() { for m in members { unitOf[m] = u } }
        for i in facts.indices where plan.rejects[i] == nil {
            plan.planned[i] = PlannedResource(key: tokens[i]!, derived: derived[i], literalID: literalIDs[i],
                                              rewrites: targets[i].filter { $0.rewrite }.map { ($0.pointer, $0.target) }, unit: unitOf[i])
        }
        plan.units = units
        let maxLevel = level.max() ?? -1
        if maxLevel >= 0 {
            for l in 0...maxLevel {
                let atLevel = units.indices.filter { level[$0] == l && !units[$0].isEmpty }.sorted { units[$0][0] < units[$1][0] }
                let singles = atLevel.filter { units[$0].count == 1 }
                let together = atLevel.filter { units[$0].count > 1 }
                for (list, packing) in [(singles, BundlePacking.batch), (together, BundlePacking.transaction)] where !list.isEmpty {
                    var name = stepName(list.flatMap { units[$0] }.map { facts[$0].type })
                    if plan.steps.contains(where: { $0.name == name }) { name += "-\(plan.steps.count + 1)" }
                    plan.steps.append(PlannedStep(name: name, packing: packing, units: list))
                }
            }
        }
        return plan
    }

    /// `urn:ietf:rfc:3986|<fullUrl>` for a urn:uuid or absolute full URL; else one from the id, as a name-based
    /// UUID of `Type/id`.
    static func derivedToken(_ f: ResourceFacts) -> Token? {
        if let fullUrl = f.fullUrl, fullUrl.hasPrefix("urn:uuid:") || fullUrl.contains("://") { return Token(system: derivedSystem, value: fullUrl) }
        if let id = f.id { return Token(system: derivedSystem, value: "urn:uuid:" + NameUUID.v5(f.type + "/" + id)) }
        return nil
    }

    /// The input resource a reference points at, and whether it must be rewritten (urn:uuid, literal and full-URL
    /// references; a conditional reference stays as it is); nil for a reference outside the input.
    ///
    /// A `Type/id` names a resource on one server: an absolute URL that is no full URL of the input is the input's
    /// resource `Type/id` only where that resource comes from the URL's server (its full URL has the same base or,
    /// without an absolute full URL, the referring resource's has); a relative one resolves against the referring
    /// resource's base (FHIR's rule for bundles), so it never picks a resource whose full URL names another server.
    /// Exports from two servers can both hold a `Patient/1`, and pointing one's data at the other's patient is
    /// the worst thing a migration can do.
    static func resolve(_ found: ReferenceWalkResult, from i: Int, facts: [ResourceFacts], fullUrls: [String: [Int]], literals: [String: [Int]],
                        carriers: [String: [Int]]) -> (Int, Bool)? {
        let reference = found.reference
        switch found.kind {
        case .contained, .other:
            return nil
        case .conditional:
            return found.conditionalKey.flatMap { carriers[$0]?.first }.map { ($0, false) }
        case .urn, .absolute:
            guard let candidates = fullUrls[reference] else {
                guard found.kind == .absolute, let literal = literalKey(reference), let sameType = literals[literal] else { return nil }
                let base = serverBase(reference)
                let referrer = facts[i].fullUrl.flatMap(serverBase)
                return sameType.first { t in (facts[t].fullUrl.flatMap(serverBase) ?? referrer) == base }.map { ($0, true) }
            }
            // The same (inner) bundle first: a fullUrl is unique only there.
            let scope = facts[i].transaction
            let target = candidates.first { facts[$0].transaction == scope && facts[$0].location.file == facts[i].location.file }
                ?? candidates.first { facts[$0].location.file == facts[i].location.file } ?? candidates[0]
            return (target, true)
        case .literal:
            guard let literal = literalKey(reference), let sameType = literals[literal] else { return nil }
            let referrer = facts[i].fullUrl.flatMap(serverBase)
            return sameType.first { t in referrer == nil || facts[t].fullUrl.flatMap(serverBase).map { $0 == referrer } ?? true }.map { ($0, true) }
        }
    }

    /// The server base of an absolute `…/Type/id` URL (a `_history` suffix dropped): `https://a.org/fhir` of
    /// `https://a.org/fhir/Patient/1`; nil for a urn or a URL without `Type/id`.
    static func serverBase(_ url: String) -> Substring? {
        guard url.contains("://") else { return nil }
        var path = Substring(url)
        if let h = path.range(of: "/_history/") { path = path[..<h.lowerBound] }
        guard let idSlash = path.lastIndex(of: "/") else { return nil }
        let typePart = path[..<idSlash]
        guard let typeSlash = typePart.lastIndex(of: "/"), typePart[typePart.index(after: typeSlash)...].first?.isUppercase == true else { return nil }
        return path[..<typeSlash]
    }

    /// `Type/id` at the end of a literal or absolute reference (a `_history` suffix dropped).
    static func literalKey(_ reference: String) -> String? {
        var path = Substring(reference)
        if let h = path.range(of: "/_history/") { path = path[..<h.lowerBound] }
        let parts = path.split(separator: "/")
        guard parts.count >= 2, parts[parts.count - 2].first?.isUppercase == true else { return nil }
        return parts[parts.count - 2] + "/" + parts[parts.count - 1]
    }

    /// The step's most frequent resource types, lowercased: `observation-procedure-and-more` (its folder adds `NN-`).
    static func stepName(_ types: [String]) -> String {
        var counts: [String: Int] = [:]
        for t in types { counts[t, default: 0] += 1 }
        let ranked = counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map { $0.key.lowercased() }
        return ranked.prefix(3).joined(separator: "-") + (ranked.count > 3 ? "-and-more" : "")
    }
}

/// What a reference string is.
enum ReferenceKind {
    case contained, urn, conditional, absolute, literal, other

    static func of(_ reference: String) -> ReferenceKind {
        if reference.hasPrefix("#") { return .contained }
        if reference.hasPrefix("urn:") { return .urn }
        if let q = reference.firstIndex(of: "?"), !reference[..<q].contains("/"), !reference[..<q].contains(":") { return .conditional }
        if reference.contains("://") { return .absolute }
        return reference.split(separator: "/").count >= 2 ? .literal : .other
    }
}
