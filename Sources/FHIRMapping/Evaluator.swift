import FHIRModel
import FHIRSources

#if canImport(Glibc)
import Glibc
#endif

/// Why a row did not become resources. The message names columns and elements, never cell values; `value` holds
/// the offending value for the rejects file only.
public struct RowFailure: Error, Sendable, Equatable {
    public var message: String
    public var value: String?

    public init(_ message: String, value: String? = nil) {
        self.message = message
        self.value = value
    }
}

/// One resource produced from a row, as compact JSON bytes, with what bundling needs: its conditional URL and
/// `urn:uuid:` full URL, each in arrays of its own: for callers that keep a row's resources (tests, tools). The
/// conversion reads them in place from `RowResources` instead.
public final class ProducedResource: Sendable {
    /// Index of the template in its step.
    public let member: Int
    public let resourceType: String
    public let identifierSystem: String
    public let identifierValue: String
    /// The resource in bundle form (`urn:uuid:` references to other members of its group), compact JSON.
    public let bytes: [UInt8]
    /// The NDJSON form when it differs: `urn:uuid:` references replaced by conditional references.
    public let ndjsonBytes: [UInt8]?
    /// `Type?identifier=system|value`, the URL of the conditional update.
    public let conditionalURL: String
    /// `urn:uuid:` derived from type and identifier (stable across runs); empty in batch steps, which do not use it.
    public let fullUrl: String

    init(member: Int, resourceType: String, identifierSystem: String, identifierValue: String, bytes: [UInt8],
         ndjsonBytes: [UInt8]?, conditionalURL: String, fullUrl: String) {
        self.member = member
        self.resourceType = resourceType
        self.identifierSystem = identifierSystem
        self.identifierValue = identifierValue
        self.bytes = bytes
        self.ndjsonBytes = ndjsonBytes
        self.conditionalURL = conditionalURL
        self.fullUrl = fullUrl
    }

    /// The resource as a JSON value (parsed back from `bytes`; for tests and indented output).
    public var json: JSONValue { (try? JSONParser.parse(bytes)) ?? .null }
}

/// The resources of one row, rendered into one buffer that the conversion reuses from row to row.
public final class RowResources {
    /// One produced resource: its member, identity, and where its two forms lie in the buffer.
    public struct Resource {
        /// Index of the template in its step.
        public let member: Int
        public let identifierValue: String
        /// `Type?identifier=system|value`, the URL of the conditional update.
        public let conditionalURL: String
        /// `urn:uuid:` derived from type and identifier; empty in batch steps, which do not use it.
        public let fullUrl: String
        var bundleForm: Range<Int>
        var ndjsonForm: Range<Int>
    }

    // Used by one thread at a time, for every row: the state skips the runtime exclusivity checks.
    /// The row's resources, in template order (members whose `$if` is false are left out).
    @exclusivity(unchecked) public internal(set) var resources: [Resource] = []
    @exclusivity(unchecked) var buffer = RenderBuffer()
    @exclusivity(unchecked) var scratch = RenderBuffer(capacity: 1024)
    @exclusivity(unchecked) var urns: [String?] = []
    @exclusivity(unchecked) var conditionalURLs: [String?] = []

    public init() {}

    deinit {
        buffer.free()
        scratch.free()
    }

    func reset() {
        resources.removeAll(keepingCapacity: true)
        buffer.count = 0
    }

    /// Resource `i` in bundle form (`urn:uuid:` references to other members of its group), compact JSON; the bytes
    /// are valid during the call only.
    public func withBundleForm<R>(_ i: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        let r = resources[i].bundleForm
        return try body(UnsafeBufferPointer(start: buffer.base + r.lowerBound, count: r.count))
    }

    /// Resource `i` in NDJSON form (conditional references instead of `urn:uuid:`; usually the bundle form).
    public func withNDJSONForm<R>(_ i: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        let r = resources[i].ndjsonForm
        return try body(UnsafeBufferPointer(start: buffer.base + r.lowerBound, count: r.count))
    }
}

/// Counts how often a combination of values has occurred so far in a step, for `occurrence()`: identical source
/// rows (Synthea repeats some lab results) get distinct, still deterministic, identifiers.
final class OccurrenceCounter: @unchecked Sendable {
    private var seen: [String: Int] = [:]
    private var last: (key: String, value: Int)?

    func next(_ key: String, counting: Bool) -> Int {
        if !counting {
            // Recomputing the key of the row just evaluated: give the same number again.
            if let last, last.key == key { return last.value }
            return (seen[key] ?? 0) + 1
        }
        let n = (seen[key] ?? 0) + 1
        seen[key] = n
        last = (key, n)
        return n
    }
}

/// What expressions read besides the row: lookup tables and specs, value maps, occurrence counts. One object, so
/// that each row's evaluation context holds a single reference to it.
final class EvaluationTables: Sendable {
    let lookupSpecs: [CompiledLookup]
    let lookups: LookupTables
    let maps: [ValueMap]
    let occurrences = OccurrenceCounter()

    init(mapping: CompiledMapping, lookups: LookupTables) {
        lookupSpecs = mapping.lookups
        self.lookups = lookups
        maps = mapping.maps
    }
}

/// Turns the rows of one step into resources.
public struct StepEvaluator: Sendable {
    public let mapping: CompiledMapping
    public let step: CompiledStep
    let tables: EvaluationTables
    /// Per resource: its `uuid(...)` values appear only as whole string leaves, so its NDJSON form is its bundle
    /// form with those strings swapped for conditional references (no second rendering).
    let swapsLocalReferences: [Bool]
    /// Each resource's template, flattened for rendering.
    let programs: [TemplateProgram]

    public init(mapping: CompiledMapping, stepIndex: Int, lookups: LookupTables) {
        self.mapping = mapping
        self.step = mapping.steps[stepIndex]
        tables = EvaluationTables(mapping: mapping, lookups: lookups)
        swapsLocalReferences = step.resources.map { $0.usesLocalReferences && LocalReferences.onlyWholeLeaves($0.template) }
        programs = step.resources.map { TemplateProgram($0.template) }
    }

    /// The resources that `row` becomes (members whose `$if` is false are left out), or the reason it cannot.
    public func evaluate(_ row: [FieldValue], group: [[FieldValue]] = []) -> Result<[ProducedResource], RowFailure> {
        let out = RowResources()
        if let failure = evaluate(row, group: group, into: out) { return .failure(failure) }
        return .success(out.resources.indices.map { i in
            let r = out.resources[i]
            let resource = step.resources[r.member]
            let bytes = out.withBundleForm(i) { Array($0) }
            let ndjson = resource.usesLocalReferences ? out.withNDJSONForm(i) { Array($0) } : nil
            return ProducedResource(member: r.member, resourceType: resource.resourceType, identifierSystem: resource.identifierSystem,
                                    identifierValue: r.identifierValue, bytes: bytes, ndjsonBytes: ndjson,
                                    conditionalURL: r.conditionalURL, fullUrl: r.fullUrl)
        })
    }

    /// Renders the resources of `row` into `out` (emptied first); returns why it cannot, or nil. The conversion calls
    /// this for every row with the same `out`, so a row costs no object or array per resource. In a step that
    /// groups rows, `row` is the group's first row and `group` all its rows.
    public func evaluate(_ row: [FieldValue], group: [[FieldValue]] = [], into out: RowResources) -> RowFailure? {
        out.reset()
        var context = Context(row: row, aliases: groupAliases(group), memberURNs: [], tables: tables, counting: true)
        do {
            // Conditions and identities first: `uuid(member)` may point at a member rendered later.
            for (i, resource) in step.resources.enumerated() {
                if let condition = resource.condition, !(try context.evaluate(condition).isTruthy) { continue }
                let value = try context.identity(resource)
                // Batch entries carry no fullUrl, so the SHA-1 behind a urn:uuid is spent only where it is written.
                let urn = step.bundle == .batch
                    ? "" : NameUUID.urn(type: resource.resourceType, system: resource.identifierSystem, value: value)
                // `Type?identifier=system|value`: the member's update URL, and what NDJSON refers to it by.
                out.resources.append(RowResources.Resource(
                    member: i, identifierValue: value, conditionalURL: ConditionalURL.appending(token: value, to: resource.conditionalURLPrefix),
                    fullUrl: urn, bundleForm: 0..<0, ndjsonForm: 0..<0))
            }
            if step.usesLocalReferences {
                // Refilled in place: the arrays keep their storage from row to row.
                out.urns.removeAll(keepingCapacity: true)
                out.urns.append(contentsOf: repeatElement(nil, count: step.resources.count))
                out.conditionalURLs.removeAll(keepingCapacity: true)
                out.conditionalURLs.append(contentsOf: repeatElement(nil, count: step.resources.count))
                for r in out.resources {
                    out.urns[r.member] = r.fullUrl
                    out.conditionalURLs[r.member] = r.conditionalURL
                }
                context.memberURNs = out.urns
            }
            for k in out.resources.indices {
                let i = out.resources[k].member
                let start = out.buffer.count
                guard try context.render(programs[i], at: 0, into: &out.buffer) else {
                    throw RowFailure("resource '\(step.resources[i].name)' came out empty")
                }
                let bundleForm = start..<out.buffer.count
                var ndjsonForm = bundleForm
                if swapsLocalReferences[i] {
                    out.scratch.count = 0
                    LocalReferences.swap(in: UnsafeBufferPointer(start: out.buffer.base + start, count: bundleForm.count),
                                         urns: out.urns, conditionalURLs: out.conditionalURLs, into: &out.scratch)
                    ndjsonForm = out.buffer.count..<(out.buffer.count + out.scratch.count)
                    out.buffer.append(bytes: UnsafeBufferPointer(start: out.scratch.base, count: out.scratch.count))
                } else if step.resources[i].usesLocalReferences {
                    // NDJSON has no transaction to resolve urn:uuid references: render again with conditional ones.
                    context.memberURNs = out.conditionalURLs
                    let again = out.buffer.count
                    _ = try context.render(programs[i], at: 0, into: &out.buffer)
                    ndjsonForm = again..<out.buffer.count
                    context.memberURNs = out.urns
                }
                out.resources[k].bundleForm = bundleForm
                out.resources[k].ndjsonForm = ndjsonForm
            }
            return nil
        } catch let failure as RowFailure {
            return failure
        } catch {
            return RowFailure("\(error)")
        }
    }

    /// The aliases a group's templates start with: its rows, in the group's slot.
    private func groupAliases(_ group: [[FieldValue]]) -> [Value] {
        guard let g = step.group else { return [] }
        var aliases = [Value](repeating: .null, count: g.slot + 1)
        aliases[g.slot] = .list(group.map { .row($0) })
        return aliases
    }

    /// Whether a row joins a group (`group.where`); true in steps without a condition.
    public func joinsGroup(_ row: [FieldValue]) -> Result<Bool, RowFailure> {
        guard let condition = step.group?.condition else { return .success(true) }
        var context = Context(row: row, aliases: [], memberURNs: [], tables: tables, counting: false)
        do {
            return .success(try context.evaluate(condition).isTruthy)
        } catch let failure as RowFailure {
            return .failure(failure)
        } catch {
            return .failure(RowFailure("\(error)"))
        }
    }

    /// The identities (`Type?identifier=system|value`, unescaped) of the resources a rejected row would have
    /// written, where they can be computed: a reference to one of them is dangling because of this reject.
    public func identities(ofRejected row: [FieldValue], group: [[FieldValue]] = []) -> [String] {
        var context = Context(row: row, aliases: groupAliases(group), memberURNs: [], tables: tables, counting: false)
        return step.resources.compactMap { resource in
            if let condition = resource.condition, let holds = try? context.evaluate(condition).isTruthy, !holds { return nil }
            guard let value = try? context.identity(resource), !value.isEmpty else { return nil }
            return "\(resource.resourceType)?identifier=\(resource.identifierSystem)|\(value)"
        }
    }

    /// The key a reject is filed under: the first resource's identifier value, when it can be computed.
    public func rejectKey(_ row: [FieldValue], group: [[FieldValue]] = []) -> String? {
        guard let first = step.resources.first(where: { $0.condition == nil }) ?? step.resources.first else { return nil }
        var context = Context(row: row, aliases: groupAliases(group), memberURNs: [], tables: tables, counting: false)
        return try? context.identity(first)
    }
}

/// The NDJSON form of a resource whose template uses `uuid(...)`: NDJSON has no transaction to resolve `urn:uuid:`
/// references, so they become conditional references.
enum LocalReferences {
    /// Whether every `uuid(...)` of `node` is a whole string leaf (`"{{ uuid('encounter') }}"`): the urn then appears
    /// in the rendered bytes only as a complete JSON string, and swapping it there gives exactly what rendering again
    /// with conditional references would. Any other use (in text, a condition, a function) needs the second render.
    static func onlyWholeLeaves(_ node: TemplateNode) -> Bool {
        switch node {
        case .literal: return true
        case .leaf(let leaf):
            if leaf.parts.count == 1, case .expression(.call(.uuid, _)) = leaf.parts[0] { return leaf.kind == .string }
            return !leaf.parts.contains { if case .expression(let e) = $0 { return usesUUID(e) } else { return false } }
        case .object(let members, let condition):
            return !(condition.map(usesUUID) ?? false) && members.allSatisfy { onlyWholeLeaves($0.node) }
        case .array(let items):
            return items.allSatisfy { item in
                switch item {
                case .node(let n): return onlyWholeLeaves(n)
                case .each(let list, _, let body): return !usesUUID(list) && onlyWholeLeaves(body)
                }
            }
        }
    }

    private static func usesUUID(_ e: CompiledExpression) -> Bool {
        switch e {
        case .call(.uuid, _): return true
        case .call(_, let args): return args.contains(where: usesUUID)
        case .field(let base, _, _): return usesUUID(base)
        case .lookup(_, let keys): return keys.contains(where: usesUUID)
        case .literal, .column, .alias: return false
        }
    }

    /// Writes `p` into `out` with each JSON string `"urn:uuid:…"` that is a member's urn replaced by that member's
    /// conditional URL. Urns are name-based UUIDs of type and identifier, so no other string of a resource holds one.
    static func swap(in p: UnsafeBufferPointer<UInt8>, urns: [String?], conditionalURLs: [String?], into out: inout RenderBuffer) {
        let base = p.baseAddress!
        var copied = 0
        var i = 0
        while i < p.count, let hit = memchr(base + i, 0x22, p.count - i) {  // the next '"'
            let at = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
            i = at + 1
            guard at + marker.count <= p.count, memcmp(base + at, marker, marker.count) == 0 else { continue }
            for (j, urn) in urns.enumerated() {
                // `"` urn `"`
                guard let urn, let url = conditionalURLs[j] else { continue }
                let end = at + 1 + urn.utf8.count
                guard end < p.count, base[end] == 0x22,
                      urn.utf8.withContiguousStorageIfAvailable({ memcmp(base + at + 1, $0.baseAddress!, $0.count) == 0 }) == true
                else { continue }
                out.append(bytes: UnsafeBufferPointer(rebasing: p[copied..<at]))
                JSONWriter.writeString(url, into: &out)
                i = end + 1
                copied = i
                break
            }
        }
        out.append(bytes: UnsafeBufferPointer(rebasing: p[copied...]))
    }

    private static let marker = Array("\"urn:uuid:".utf8)
}

/// Evaluation state for one row.
private struct Context {
    var row: [FieldValue]
    var aliases: [Value]
    var memberURNs: [String?]
    let tables: EvaluationTables
    /// Whether `occurrence()` counts this evaluation (not when only recomputing a reject's key).
    let counting: Bool
    /// One row asks for the same occurrence from its identity and its template: count it once.
    var occurrenceMemo: [String: Int] = [:]
    /// Lookup rows already found for this row.
    var lookupMemo: [(index: Int, key: String, value: Value)] = []

    mutating func identity(_ resource: CompiledResource) throws -> String {
        var value = ""
        switch resource.identifierValue {
        case .literal(.string(let s), _): value = s
        case .leaf(let leaf): value = try leafValue(leaf).text(leaf.path)
        default: break
        }
        guard !value.isBlank else {
            throw RowFailure("the identifier value of '\(resource.name)' (\(resource.resourceType).identifier[0].value) is empty")
        }
        return value
    }

    // MARK: Templates

    /// Writes the node at `pc` of `program` as compact JSON into `out`; returns false (writing nothing) when it is
    /// empty, so that FHIR's "no empty values" holds without building a tree first.
    mutating func render(_ program: TemplateProgram, at pc: Int, into out: inout RenderBuffer) throws -> Bool {
        switch program.ops[pc] {
        case .literal(let start, let count):
            out.append(bytes: UnsafeBufferPointer(rebasing: program.bytes[start..<(start + count)]))
            return true
        case .nothing:
            return false
        case .leaf(let index):
            let leaf = program.leaves[index]
            return try Self.writeLeaf(try leafValue(leaf), leaf, into: &out)
        case .object(let condition, let end):
            if condition >= 0, !(try evaluate(program.expressions[condition]).isTruthy) { return false }
            let start = out.count
            out.append(UInt8(ascii: "{"))
            // A condition that held makes the object row-dependent even when its members are fixed. Otherwise an
            // object whose row-dependent parts are all empty is dropped with its fixed parts: a coding whose code
            // is empty must not survive as a bare `system`.
            var hasDynamicValue = condition >= 0
            var wrote = false
            var p = pc + 1
            while p < end {
                guard case .member(let keyStart, let keyCount, let literal) = program.ops[p] else { preconditionFailure("object member expected") }
                let mark = out.beginItem(after: wrote ? 1 : 0)
                out.append(bytes: UnsafeBufferPointer(rebasing: program.bytes[keyStart..<(keyStart + keyCount)]))
                if try render(program, at: p + 1, into: &out) {
                    wrote = true
                    if !literal { hasDynamicValue = true }
                } else {
                    out.count = mark
                }
                p = program.next(after: p + 1)
            }
            guard wrote && hasDynamicValue else {
                out.count = start
                return false
            }
            out.append(UInt8(ascii: "}"))
            return true
        case .array(let end):
            let start = out.count
            out.append(UInt8(ascii: "["))
            var count = 0
            var p = pc + 1
            while p < end {
                switch program.ops[p] {
                case .leaf(let index):
                    let leaf = program.leaves[index]
                    let value = try leafValue(leaf)
                    if case .list(let values) = value {
                        // A list-valued leaf fills the array (e.g. `given: "{{ split(first_names, ' ') }}"`).
                        for v in values {
                            let mark = out.beginItem(after: count)
                            if try Self.writeLeaf(v, leaf, into: &out) { count += 1 } else { out.count = mark }
                        }
                    } else {
                        let mark = out.beginItem(after: count)
                        if try Self.writeLeaf(value, leaf, into: &out) { count += 1 } else { out.count = mark }
                    }
                    p += 1
                case .each(let list, let slot, let eachEnd):
                    let listValue = try evaluate(program.expressions[list])
                    let elements: [Value]
                    switch listValue {
                    case .list(let l): elements = l
                    case .null: elements = []
                    default: elements = [listValue]
                    }
                    if aliases.count <= slot { aliases.append(contentsOf: repeatElement(.null, count: slot + 1 - aliases.count)) }
                    for element in elements {
                        aliases[slot] = element
                        let mark = out.beginItem(after: count)
                        if try render(program, at: p + 1, into: &out) { count += 1 } else { out.count = mark }
                    }
                    aliases[slot] = .null
                    p = eachEnd
                default:
                    let mark = out.beginItem(after: count)
                    if try render(program, at: p, into: &out) { count += 1 } else { out.count = mark }
                    p = program.next(after: p)
                }
            }
            guard count > 0 else {
                out.count = start
                return false
            }
            out.append(UInt8(ascii: "]"))
            return true
        case .member, .each:
            preconditionFailure("not a node")
        }
    }

    /// Writes one leaf value as the JSON primitive its FHIR type needs; false when it is empty. A list must hold at
    /// most one non-empty value (only arrays take several, item by item).
    // Static: called on an inout Context, an instance method would copy the whole context (six retains) each time.
    static func writeLeaf(_ value: Value, _ leaf: Leaf, into out: inout RenderBuffer) throws -> Bool {
        if case .string(let s) = value, leaf.kind == .string {  // the common case, without a JSONValue
            if s.isBlank { return false }
            if let control = JSONWriter.writeString(s, into: &out) { throw controlCharacter(control, leaf, s) }
            return true
        }
        guard let json = try Self.json(value, leaf) else { return false }
        switch json {
        case .string(let s):
            if let control = JSONWriter.writeString(s, into: &out) { throw controlCharacter(control, leaf, s) }
        case .number(let n): out.append(n)
        case .bool(let b): out.append(b ? "true" : "false")
        default:
            let bytes = JSONWriter().bytes(json)
            bytes.withUnsafeBufferPointer { out.append(bytes: $0) }
        }
        return true
    }

    /// FHIR strings forbid control characters other than tab, line feed and carriage return (`[ \r\n\t\S]+`).
    static func controlCharacter(_ byte: UInt8, _ leaf: Leaf, _ value: String) -> RowFailure {
        RowFailure("\(leaf.path) would hold the control character U+\(String(format: "%04X", byte)), which FHIR strings forbid (only tab, line feed and carriage return are allowed); clean the source value",
                   value: value)
    }

    mutating func leafValue(_ leaf: Leaf) throws -> Value {
        if let e = leaf.single { return try evaluate(e) }
        var s = ""
        var anyValue = false
        for part in leaf.parts {
            switch part {
            case .text(let t): s += t
            case .expression(let e):
                let v = try evaluate(e)
                let text = try v.text(leaf.path)
                if !text.isEmpty { anyValue = true }
                s += text
            }
        }
        // A template whose expressions are all empty is empty: "{{base}}/x" keeps, "Dr. {{name}}" with no name drops.
        return anyValue ? .string(s) : .null
    }

    static func json(_ value: Value, _ leaf: Leaf) throws -> JSONValue? {
        switch value {
        case .null: return nil
        case .bool(let b):
            switch leaf.kind {
            case .boolean: return .bool(b)
            case .string: return .string(b ? "true" : "false")
            default: throw RowFailure("\(leaf.path) needs a number, but the expression gave true/false")
            }
        case .record, .row: throw RowFailure("\(leaf.path): a whole row cannot be a value; pick a field with '.column'")
        case .list(let items):
            let nonEmpty = items.filter { !$0.isEmpty }
            if nonEmpty.isEmpty { return nil }
            if nonEmpty.count > 1 { throw RowFailure("\(leaf.path) takes one value, but the expression gave \(nonEmpty.count)") }
            return try Self.json(nonEmpty[0], leaf)
        case .string(let s):
            if s.isBlank { return nil }
            return try LeafCoercion.coerce(s, kind: leaf.kind, path: leaf.path)
        }
    }

    // MARK: Expressions

    mutating func evaluate(_ e: CompiledExpression) throws -> Value {
        switch e {
        case .literal(let v): return v
        case .column(let i, _): return Value(row[i])
        case .alias(let slot): return slot < aliases.count ? aliases[slot] : .null
        case .field(let base, let column, _):
            switch try evaluate(base) {
            case .record(let r): return r.value(column)
            case .row(let fields): return column < fields.count ? Value(fields[column]) : .null
            case .list(let rows):
                return .list(rows.map { row in
                    switch row {
                    case .record(let r): return r.value(column)
                    case .row(let fields): return column < fields.count ? Value(fields[column]) : .null
                    default: return .null
                    }
                })
            default: return .null
            }
        case .lookup(let index, let keyExprs):
            let key: String
            if keyExprs.count == 1 {
                key = try evaluate(keyExprs[0]).text("lookup key")
            } else {
                var parts: [String] = []
                for k in keyExprs { parts.append(try evaluate(k).text("lookup key")) }
                key = parts.allSatisfy(\.isEmpty) ? "" : LookupKey.composite(parts)
            }
            // Templates read several fields of one lookup row (code, display, text): look it up once per row.
            for m in lookupMemo where m.index == index && m.key == key { return m.value }
            let value = try Self.lookup(tables, index, key: key, keyExprs)
            lookupMemo.append((index, key, value))
            return value
        case .call(let f, let args): return try call(f, args)
        }
    }

    /// Static for the same reason as `writeLeaf`: no copy of the context.
    private static func lookup(_ tables: EvaluationTables, _ index: Int, key: String, _ keyExprs: [CompiledExpression]) throws -> Value {
        let spec = tables.lookupSpecs[index]
        if spec.multiple { return .list(tables.lookups.rows(index, key).map { .record($0) }) }
        if let row = tables.lookups.row(index, key) { return .record(row) }
        if spec.rejectWhenMissing && !key.isEmpty {
            throw RowFailure("lookup '\(spec.name)' has no row for \(keyExprs.map(\.describe).joined(separator: " and ")) of this row (set 'missing: empty' on the lookup to allow it)",
                             value: keyExprs.count == 1 ? key : nil)
        }
        return .null
    }

    mutating func call(_ f: Function, _ args: [CompiledExpression]) throws -> Value {
        switch f {
        case .date(let formats, let what), .dateTime(let formats, let what, _):
            let text = try evaluate(args[0]).text(what)
            if text.isBlank { return .null }
            // A loop, not `lazy.compactMap(...).first`, which parses the matching format twice.
            var parsed: DateFormat.Parts?
            for format in formats {
                parsed = format.parse(text)
                if parsed != nil { break }
            }
            guard let parts = parsed else {
                let declared = formats.map { "'\($0.pattern)'" }.joined(separator: ", ")
                throw RowFailure("\(args[0].describe) is not a date in the declared format\(formats.count > 1 ? "s" : "") \(declared)", value: text)
            }
            if case .dateTime(_, _, let offset) = f {
                guard let s = parts.fhirDateTime(defaultOffset: offset) else {
                    throw RowFailure("\(args[0].describe) has a time but no UTC offset; give dateTime a last argument such as 'Z' or '+01:00'", value: text)
                }
                return .string(s)
            }
            return .string(parts.fhirDate)
        case .map(let index):
            let map = tables.maps[index]
            let text = try evaluate(args[0]).text("map")
            if text.isBlank { return .null }
            if let v = map.table[text] ?? map.defaultValue { return .string(v) }
            throw RowFailure("\(args[0].describe) has a value that map '\(map.name)' does not list (add it to maps.\(map.name), or give the map a default)", value: text)
        case .ref(let prefix):
            let value = try evaluate(args[0]).text("reference key")
            if value.isBlank { return .null }
            return .string(ConditionalURL.appending(token: value, to: prefix))
        case .occurrence:
            var parts: [String] = []
            for a in args { parts.append(try evaluate(a).text("occurrence")) }
            let key = parts.joined(separator: "\u{1F}")
            if let n = occurrenceMemo[key] { return .string(String(n)) }
            let n = tables.occurrences.next(key, counting: counting)
            occurrenceMemo[key] = n
            return .string(String(n))
        case .uuid(let member):
            // The urns are known from the identities on: before that (in a `$if`) there is none yet.
            guard member < memberURNs.count else { return .null }
            return memberURNs[member].map { .string($0) } ?? .null
        case .hashID:
            var parts: [String] = []
            for a in args { parts.append(try evaluate(a).text("id")) }
            if parts.allSatisfy(\.isBlank) { return .null }
            return .string(NameUUID.v5(parts.joined(separator: "|")))
        case .concat:
            var s = ""
            for a in args { s += try evaluate(a).text("concat") }
            return s.isEmpty ? .null : .string(s)
        case .upper: return try mapText(args[0]) { $0.uppercased() }
        case .lower: return try mapText(args[0]) { $0.lowercased() }
        case .trim: return try mapText(args[0]) { $0.trimmingBlanks }
        case .replace:
            let from = try evaluate(args[1]).text("replace")
            let to = try evaluate(args[2]).text("replace")
            return try mapText(args[0]) { from.isEmpty ? $0 : $0.replacingAll(from, with: to) }
        case .split:
            let text = try evaluate(args[0]).text("split")
            let sep = try evaluate(args[1]).text("split")
            if text.isBlank { return .list([]) }
            if sep.isEmpty { return .list([.string(text)]) }
            return .list(text.splitAll(sep).map { .string($0.trimmingBlanks) }.filter { !$0.isEmpty })
        case .join:
            let sep = try evaluate(args[1]).text("join")
            let v = try evaluate(args[0])
            let items: [Value] = if case .list(let l) = v { l } else { [v] }
            let texts = try items.map { try $0.text("join") }.filter { !$0.isBlank }
            return texts.isEmpty ? .null : .string(texts.joined(separator: sep))
        case .coalesce:
            for a in args {
                let v = try evaluate(a)
                if !v.isEmpty { return v }
            }
            return .null
        case .ifThen:
            if try evaluate(args[0]).isTruthy { return try evaluate(args[1]) }
            return args.count > 2 ? try evaluate(args[2]) : .null
        case .eq, .ne:
            let a = try evaluate(args[0]).text("eq")
            let b = try evaluate(args[1]).text("eq")
            if case .eq = f { return .bool(a == b) }
            return .bool(a != b)
        case .not: return .bool(!(try evaluate(args[0]).isTruthy))
        case .and:
            for a in args where !(try evaluate(a).isTruthy) { return .bool(false) }
            return .bool(true)
        case .or:
            for a in args where try evaluate(a).isTruthy { return .bool(true) }
            return .bool(false)
        case .empty: return .bool(try evaluate(args[0]).isEmpty)
        case .present: return .bool(!(try evaluate(args[0]).isEmpty))
        case .greater, .greaterOrEqual, .less, .lessOrEqual:
            // An empty operand makes the comparison false: `$if: gt(dose, 0)` leaves out rows without a dose.
            guard let a = try number(args[0], f), let b = try number(args[1], f) else { return .bool(false) }
            guard let order = a.compare(b) else { throw RowFailure("\(f.name)() compares numbers too large to align (more than 38 digits)") }
            switch f {
            case .greater: return .bool(order > 0)
            case .greaterOrEqual: return .bool(order >= 0)
            case .less: return .bool(order < 0)
            default: return .bool(order <= 0)
            }
        case .add, .subtract, .multiply:
            // An empty operand gives an empty result, as a missing value stays missing.
            guard var result = try number(args[0], f) else { return .null }
            for arg in args.dropFirst() {
                guard let operand = try number(arg, f) else { return .null }
                let next: ExactDecimal? = switch f {
                case .add: result.adding(operand)
                case .subtract: result.subtracting(operand)
                default: result.multiplied(by: operand)
                }
                guard let next else { throw RowFailure("the result of \(f.name)() needs more than 38 digits or 30 decimals") }
                result = next
            }
            return .string(result.text)
        case .divide(let places):
            guard let a = try number(args[0], f), let b = try number(args[1], f) else { return .null }
            if b.significand == 0 { throw RowFailure("div() divides \(args[0].describe) by zero (\(args[1].describe))") }
            guard let q = a.divided(by: b, places: places) else { throw RowFailure("the result of div() needs more than 38 digits") }
            return .string(q.text)
        case .round(let places):
            guard let a = try number(args[0], f) else { return .null }
            guard let r = a.rounded(places: places) else { throw RowFailure("the result of round() needs more than 38 digits") }
            return .string(r.text)
        }
    }

    /// An operand of arithmetic: nil when empty, a reject naming it when it is not a number.
    mutating func number(_ e: CompiledExpression, _ f: Function) throws -> ExactDecimal? {
        let text = try evaluate(e).text(f.name)
        if text.isBlank { return nil }
        guard let d = ExactDecimal(text) else { throw RowFailure("\(e.describe) is not a number, which \(f.name)() needs", value: text) }
        return d
    }

    mutating func mapText(_ arg: CompiledExpression, _ transform: (String) -> String) throws -> Value {
        let v = try evaluate(arg)
        if case .list(let items) = v {
            return .list(try items.map { item in
                let t = try item.text("text")
                return t.isEmpty ? .null : .string(transform(t))
            })
        }
        let t = try v.text("text")
        return t.isEmpty ? .null : .string(transform(t))
    }
}

extension CompiledExpression {
    /// Names the expression in a reject reason without showing data: "column 'birth_date'".
    var describe: String {
        switch self {
        case .column(_, let name): return "column '\(name)'"
        case .field(_, _, let name): return "field '\(name)'"
        case .call(let f, let args): return args.first.map { "the result of \(f.name)(\($0.describe))" } ?? "the expression"
        default: return "the expression"
        }
    }
}

extension Function {
    var name: String {
        switch self {
        case .date: "date"
        case .dateTime: "dateTime"
        case .map: "map"
        case .ref: "ref"
        case .uuid: "uuid"
        case .hashID: "hashId"
        case .occurrence: "occurrence"
        case .concat: "concat"
        case .upper: "upper"
        case .lower: "lower"
        case .trim: "trim"
        case .replace: "replace"
        case .split: "split"
        case .join: "join"
        case .coalesce: "coalesce"
        case .ifThen: "if"
        case .eq: "eq"
        case .ne: "ne"
        case .not: "not"
        case .and: "and"
        case .or: "or"
        case .empty: "empty"
        case .present: "present"
        case .greater: "gt"
        case .greaterOrEqual: "ge"
        case .less: "lt"
        case .lessOrEqual: "le"
        case .add: "add"
        case .subtract: "sub"
        case .multiply: "mul"
        case .divide: "div"
        case .round: "round"
        }
    }
}

extension Value {
    init(_ field: FieldValue) {
        switch field {
        case .single(let s): self = s.isEmpty ? .null : .string(s)
        case .list(let l): self = .list(l.map { $0.isEmpty ? .null : .string($0) })
        }
    }

    var isEmpty: Bool {
        switch self {
        case .null: return true
        case .string(let s): return s.isBlank
        case .bool: return false
        case .list(let l): return l.allSatisfy(\.isEmpty)
        case .record, .row: return false
        }
    }

    var isTruthy: Bool {
        if case .bool(let b) = self { return b }
        return !isEmpty
    }

    /// The value as text; a list of one value is that value.
    func text(_ what: String) throws -> String {
        switch self {
        case .null: return ""
        case .string(let s): return s
        case .bool(let b): return b ? "true" : "false"
        case .list(let items):
            let nonEmpty = items.filter { !$0.isEmpty }
            if nonEmpty.isEmpty { return "" }
            if nonEmpty.count == 1 { return try nonEmpty[0].text(what) }
            throw RowFailure("\(what) needs one value, but got a list of \(nonEmpty.count)")
        case .record, .row: throw RowFailure("\(what) needs a value, but got a whole row; pick a field with '.column'")
        }
    }
}

/// Turns leaf text into the JSON primitive its FHIR type needs.
enum LeafCoercion {
    static func coerce(_ s: String, kind: LeafKind, path: String) throws -> JSONValue {
        switch kind {
        case .string: return .string(s)
        case .boolean:
            switch s.trimmingBlanks.lowercased() {
            case "true": return .bool(true)
            case "false": return .bool(false)
            default: throw RowFailure("\(path) is a boolean, but the value is not true or false (use map() to translate it)", value: s)
            }
        case .integer:
            let t = s.trimmingBlanks
            guard isInteger(t), let n = Int(t), n >= Int(Int32.min), n <= Int(Int32.max) else {
                throw RowFailure("\(path) is an integer, but the value is not a whole number", value: s)
            }
            return .number(String(n))
        case .decimal:
            let t = s.trimmingBlanks
            guard let normalized = normalizedDecimal(t) else {
                throw RowFailure("\(path) is a decimal, but the value is not a number", value: s)
            }
            return .number(normalized)
        }
    }

    static func isInteger(_ s: String) -> Bool {
        var u = Substring(s).utf8[...]
        if u.first == UInt8(ascii: "-") || u.first == UInt8(ascii: "+") { u = u.dropFirst() }
        return !u.isEmpty && u.allSatisfy { $0 >= 48 && $0 <= 57 }
    }

    /// FHIR decimal text as a JSON number, keeping its precision; leading zeros dropped, a leading '+' removed.
    static func normalizedDecimal(_ s: String) -> String? {
        var bytes = Array(s.utf8)
        var sign: [UInt8] = []
        if bytes.first == UInt8(ascii: "-") { sign = [UInt8(ascii: "-")]; bytes.removeFirst() } else if bytes.first == UInt8(ascii: "+") { bytes.removeFirst() }
        var i = 0
        var intDigits = 0
        while i < bytes.count && bytes[i] >= 48 && bytes[i] <= 57 { i += 1; intDigits += 1 }
        var fracDigits = 0
        if i < bytes.count && bytes[i] == UInt8(ascii: ".") {
            i += 1
            while i < bytes.count && bytes[i] >= 48 && bytes[i] <= 57 { i += 1; fracDigits += 1 }
            if fracDigits == 0 { return nil }
        }
        if intDigits == 0 { return nil }
        if i < bytes.count && (bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E")) {
            i += 1
            if i < bytes.count && (bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-")) { i += 1 }
            var expDigits = 0
            while i < bytes.count && bytes[i] >= 48 && bytes[i] <= 57 { i += 1; expDigits += 1 }
            if expDigits == 0 { return nil }
        }
        if i != bytes.count { return nil }
        var start = 0
        while start < intDigits - 1 && bytes[start] == UInt8(ascii: "0") { start += 1 }
        return String(decoding: sign + bytes[start...], as: UTF8.self)
    }
}

extension UInt8 {
    /// Space, tab or line break.
    var isBlankByte: Bool { self == 0x20 || self == 0x09 || self == 0x0A || self == 0x0D }
}

extension String {
    /// Empty or only spaces, tabs and line breaks.
    var isBlank: Bool {
        // In place for native strings; most values stop at their first byte.
        utf8.withContiguousStorageIfAvailable { $0.allSatisfy(\.isBlankByte) } ?? utf8.allSatisfy(\.isBlankByte)
    }

    var trimmingBlanks: String {
        let u = Array(utf8)
        var a = 0
        var b = u.count
        while a < b && (u[a] == 0x20 || u[a] == 0x09 || u[a] == 0x0A || u[a] == 0x0D) { a += 1 }
        while b > a && (u[b - 1] == 0x20 || u[b - 1] == 0x09 || u[b - 1] == 0x0A || u[b - 1] == 0x0D) { b -= 1 }
        if a == 0 && b == u.count { return self }
        return String(decoding: u[a..<b], as: UTF8.self)
    }

    func splitAll(_ separator: String) -> [String] {
        var out: [String] = []
        var rest = Substring(self)
        while let r = rest.firstRange(of: separator) {
            out.append(String(rest[..<r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        out.append(String(rest))
        return out
    }

    func replacingAll(_ target: String, with replacement: String) -> String {
        splitAll(target).joined(separator: replacement)
    }
}
