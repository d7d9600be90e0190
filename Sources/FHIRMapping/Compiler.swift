import FHIRDefinitions
import FHIRModel
import Foundation
import Yams

/// What the compiler needs to know about one FHIR element, looked up by JSON key.
struct ElementInfo {
    /// Position in FHIR JSON element order.
    let order: Int
    /// The concrete type: a primitive (`date`), a complex type (`HumanName`) or a backbone path (`Encounter.participant`).
    let typeName: String
    let isArray: Bool
    /// Set for primitive types: how their JSON is written.
    let primitiveKind: LeafKind?
    /// For a Reference: the resource types it may point at (empty: any).
    var referenceTargets: [String] = []
    /// A required value set binding: a fixed code must be one of its codes. Set on `code` elements, and passed
    /// down from a bound Coding or CodeableConcept to the `code` of its codings.
    var binding: Binding?
    /// True when `binding` is a bound Coding's or CodeableConcept's, passed down: a concept needs only one coding
    /// in the value set (the validator's rule), so such codes are checked at compile time, never row by row.
    var bindingIsInherited = false
}

/// An element a type requires (min 1 or more), with every JSON key that fills it (`value[x]` has one a type).
struct RequiredElement {
    let name: String
    let jsonKeys: [String]
    let min: Int
}

/// The FHIR definitions the compiler checks templates against.
protocol FHIRTypeCatalog: Sendable {
    func isResourceType(_ name: String) -> Bool
    /// Whether the catalog describes `typeName`; templates of unknown types are taken as written.
    func hasType(_ typeName: String) -> Bool
    func element(of typeName: String, jsonKey: String) -> ElementInfo?
    /// Element names of a type, for "did you mean" hints.
    func elementNames(of typeName: String) -> [String]
    /// The elements of a type with a minimum cardinality of 1 or more.
    func requiredElements(of typeName: String) -> [RequiredElement]
}

/// Resolves a `MappingDocument` against the sources' columns and the FHIR definitions.
///
/// Everything that can be wrong in a mapping is found here, before a row is read: unknown sources, columns,
/// lookups, maps, functions, steps and FHIR elements, wrong argument counts, bad date formats, references to
/// steps that are not earlier in the upload order.
public struct MappingCompiler {
    let document: MappingDocument
    let catalog: any FHIRTypeCatalog
    let fieldNames: [String: [String]]

    /// Compiles `document`; `fieldNames` gives each source's columns (CSV header or XML fields), read beforehand.
    public static func compile(_ document: MappingDocument, fieldNames: [String: [String]]) throws(MappingError) -> CompiledMapping {
        try MappingCompiler(document: document, catalog: R4Catalog.shared, fieldNames: fieldNames).compile()
    }

    private func fail(_ at: MappingLocation, _ message: String) -> MappingError {
        MappingError(file: document.path, line: at.line, column: at.column, message: message)
    }

    private func location(_ node: Node) -> MappingLocation {
        MappingLocation(line: node.mark?.line ?? 1, column: node.mark?.column ?? 1)
    }

    // MARK: Top level

    func compile() throws(MappingError) -> CompiledMapping {
        var sources: [CompiledSource] = []
        for s in document.sources {
            guard let fields = fieldNames[s.name] else { throw fail(s.location, "internal: no fields read for source '\(s.name)'") }
            let path = s.file.hasPrefix("/") ? s.file : document.directory + "/" + s.file
            sources.append(CompiledSource(name: s.name, path: path, declaration: s, fieldNames: fields))
        }
        var lookups: [CompiledLookup] = []
        for l in document.lookups {
            let si = try sourceIndex(l.source.name, at: l.source.location, sources)
            var columns: [Int] = []
            for key in l.keys {
                guard let col = sources[si].fieldNames.firstIndex(of: key.name) else {
                    throw fail(key.location, "source '\(l.source.name)' has no column '\(key.name)'\(suggest(key.name, sources[si].fieldNames))")
                }
                columns.append(col)
            }
            lookups.append(CompiledLookup(name: l.name, sourceIndex: si, keyColumns: columns, multiple: l.multiple, rejectWhenMissing: l.rejectWhenMissing))
        }
        var maps: [ValueMap] = []
        for m in document.maps {
            maps.append(ValueMap(name: m.name, table: Dictionary(m.entries, uniquingKeysWith: { a, _ in a }), defaultValue: m.defaultValue))
        }
        let constants = try resolveConstants()
        var limits = BundleLimits()
        for l in document.limits { if let limit = BundleLimit(rawValue: l.name) { limits[limit] = l.value } }

        // Identity (type and identifier system) of every step's resources, needed by ref() before templates compile.
        var identities: [[(name: String, type: String, system: String)]] = []
        for step in document.steps {
            var list: [(String, String, String)] = []
            for r in step.resources {
                list.append((r.name, try resourceType(of: r.template, at: r.location), try identifierSystem(of: r.template, constants: constants, resource: r.name)))
            }
            identities.append(list)
        }
        var names: Set<String> = []
        for step in document.steps where !names.insert(step.name).inserted {
            throw fail(step.location, "two steps are named '\(step.name)'")
        }

        var steps: [CompiledStep] = []
        var columnsRead: [Int: Set<Int>] = [:]
        var columnsUsed: [Int: Set<Int>] = [:]
        var columnPaths: [Int: [Int: Set<String>]] = [:]
        for l in lookups { columnsUsed[l.sourceIndex, default: []].formUnion(l.keyColumns) }
        for (stepIndex, step) in document.steps.enumerated() {
            let si = try sourceIndex(step.source.name, at: step.source.location, sources)
            guard let kind = BundleKind(rawValue: step.bundle.name) else {
                throw fail(step.bundle.location, "unknown bundle kind '\(step.bundle.name)'; use batch, transaction or batch-of-transactions")
            }
            var scope = Scope(
                mapping: self, sources: sources, lookups: lookups, maps: maps, constants: constants, sourceIndex: si,
                aliases: [], nextSlot: 0, members: step.resources.map(\.name), bundle: kind, stepIndex: stepIndex,
                identities: identities, stepNames: document.steps.map(\.name), dependsOn: [], usesLocalReferences: false)
            var group: CompiledGroup?
            if let g = step.group {
                var columns: [Int] = []
                for c in g.columns {
                    guard let col = sources[si].fieldNames.firstIndex(of: c.name) else {
                        throw fail(c.location, "source '\(step.source.name)' has no column '\(c.name)'\(suggest(c.name, sources[si].fieldNames))")
                    }
                    columns.append(col)
                }
                scope.columnsUsed[si, default: []].formUnion(columns)
                // `where` reads one row, before it joins a group: it cannot see the group's rows.
                let condition = try g.condition.map { (c) throws(MappingError) in try compileCondition(c, scope: &scope) }
                if sources[si].fieldNames.contains(g.alias.name) || constants[g.alias.name] != nil {
                    throw fail(g.alias.location, "group.as '\(g.alias.name)' is already a column or a constant; choose another name")
                }
                let slot = scope.pushAlias(g.alias.name, type: .records(si))
                group = CompiledGroup(columns: columns, columnNames: g.columns.map(\.name), slot: slot, window: g.window, condition: condition)
            }
            var resources: [CompiledResource] = []
            for (ri, r) in step.resources.enumerated() {
                resources.append(try compileResource(r.template, name: r.name, identity: identities[stepIndex][ri], scope: &scope))
            }
            columnsRead.merge(scope.columnsRead) { $0.union($1) }
            columnsUsed.merge(scope.columnsUsed) { $0.union($1) }
            for (source, byColumn) in scope.columnPaths {
                for (column, paths) in byColumn { columnPaths[source, default: [:]][column, default: []].formUnion(paths) }
            }
            steps.append(CompiledStep(
                name: step.name, sourceIndex: si, bundle: kind, resources: resources,
                usesLocalReferences: scope.usesLocalReferences, countsOccurrences: scope.countsOccurrences,
                dependsOn: Array(Set(scope.dependsOn)).sorted(), group: group, location: step.location))
        }
        for i in lookups.indices { lookups[i].columnsRead = columnsRead[lookups[i].sourceIndex] ?? [] }
        let unused = sources.indices.compactMap { si -> UnusedColumns? in
            let used = columnsUsed[si] ?? []
            let names = sources[si].fieldNames.enumerated().filter { !used.contains($0.offset) }.map { $0.element.isEmpty ? "(column \($0.offset + 1), unnamed)" : $0.element }
            return names.isEmpty ? nil : UnusedColumns(source: sources[si].name, file: sources[si].declaration.file, columns: names)
        }
        let uses = sources.indices.map { si in
            SourceColumns(source: sources[si].name, file: sources[si].declaration.file, columns: sources[si].fieldNames.enumerated().map { c in
                (name: c.element, used: columnsUsed[si]?.contains(c.offset) ?? false, paths: (columnPaths[si]?[c.offset] ?? []).sorted())
            })
        }
        return CompiledMapping(document: document, sources: sources, lookups: lookups, steps: try uploadOrder(steps), limits: limits,
                               unusedColumns: unused, columnUses: uses, maps: maps)
    }

    /// Orders steps so that each follows the steps it refers to; declaration order breaks ties. A cycle is an error.
    private func uploadOrder(_ steps: [CompiledStep]) throws(MappingError) -> [CompiledStep] {
        var placed: [Int] = []
        var done = Set<Int>()
        while placed.count < steps.count {
            guard let next = steps.indices.first(where: { candidate in
                !done.contains(candidate) && steps[candidate].dependsOn.allSatisfy { done.contains($0) || $0 == candidate }
            }) else {
                let stuck = steps.indices.filter { !done.contains($0) }.map { steps[$0].name }
                throw fail(steps[stuck.isEmpty ? 0 : steps.firstIndex { $0.name == stuck[0] }!].location,
                           "steps \(stuck.joined(separator: ", ")) refer to each other in a cycle; a step can only refer to earlier steps")
            }
            placed.append(next)
            done.insert(next)
        }
        // Renumber dependencies to positions in the new order.
        let position = Dictionary(uniqueKeysWithValues: placed.enumerated().map { ($1, $0) })
        return placed.map { i in
            let s = steps[i]
            return CompiledStep(name: s.name, sourceIndex: s.sourceIndex, bundle: s.bundle, resources: s.resources,
                                usesLocalReferences: s.usesLocalReferences, countsOccurrences: s.countsOccurrences, dependsOn: s.dependsOn.map { position[$0]! }.sorted(),
                                group: s.group, location: s.location)
        }
    }

    private func sourceIndex(_ name: String, at: MappingLocation, _ sources: [CompiledSource]) throws(MappingError) -> Int {
        guard let i = sources.firstIndex(where: { $0.name == name }) else {
            throw fail(at, "unknown source '\(name)'\(suggest(name, sources.map(\.name)))")
        }
        return i
    }

    /// Constants may use earlier constants: `patientSystem: "{{ base }}/patientId"`.
    private func resolveConstants() throws(MappingError) -> [String: String] {
        var out: [String: String] = [:]
        for c in document.constants {
            out[c.name] = try fixedText(c.value, at: c.location, constants: out, what: "constant '\(c.name)'")
        }
        return out
    }

    /// Text that may only combine literal text and constants, resolved when the mapping is checked.
    private func fixedText(_ text: String, at origin: MappingLocation, constants: [String: String], what: String) throws(MappingError) -> String {
        var s = ""
        for p in try ExpressionParser(origin: origin, file: document.path).parseTemplate(text) {
            switch p {
            case .text(let t): s += t
            case .expression(.name(let n, let at)):
                guard let v = constants[n] else { throw fail(at, "\(what) must be fixed: '\(n)' is not an earlier constant") }
                s += v
            case .expression(let e): throw fail(e.location, "\(what) must be fixed text and constants, not computed per row")
            }
        }
        return s
    }

    private func resourceType(of template: Node, at: MappingLocation) throws(MappingError) -> String {
        guard let m = template.mapping else { throw fail(at, "a resource template must be a mapping that starts with resourceType") }
        guard let t = m["resourceType"]?.scalar?.string else {
            throw fail(location(template), "the resource template needs 'resourceType', e.g. resourceType: Patient")
        }
        guard catalog.isResourceType(t) else {
            throw fail(location(m["resourceType"]!), "'\(t)' is not a FHIR R4 resource type")
        }
        return t
    }

    /// The identifier system of a template: `identifier[0].system`, which must be known without reading rows.
    private func identifierSystem(of template: Node, constants: [String: String], resource: String) throws(MappingError) -> String {
        let hint = "every resource needs identifier[0] with a fixed system and a value from the row: conditional updates (PUT Type?identifier=system|value) and references match on it"
        guard let idNode = template.mapping?["identifier"] else { throw fail(location(template), "resource '\(resource)' has no identifier; \(hint)") }
        let first: Node? = idNode.sequence?.first ?? (idNode.mapping != nil ? idNode : nil)
        guard let first, let m = first.mapping, let sys = m["system"], let text = sys.scalar?.string else {
            throw fail(location(idNode), "resource '\(resource)': \(hint)")
        }
        guard m["value"] != nil else { throw fail(location(first), "resource '\(resource)': identifier[0] needs a value; \(hint)") }
        guard m["$each"] == nil, m["$if"] == nil else { throw fail(location(first), "identifier[0] of '\(resource)' must always be present (no $each or $if on it)") }
        let s = try fixedText(text, at: quotedOrigin(sys), constants: constants, what: "identifier[0].system")
        guard !s.isBlank else { throw fail(location(sys), "identifier[0].system of '\(resource)' is empty") }
        return s
    }

    private func quotedOrigin(_ node: Node) -> MappingLocation {
        var l = location(node)
        if let style = node.scalar?.style, style == .singleQuoted || style == .doubleQuoted { l.column += 1 }
        return l
    }

    // MARK: Resources and templates

    private func compileResource(_ template: Node, name: String, identity: (name: String, type: String, system: String), scope: inout Scope) throws(MappingError) -> CompiledResource {
        let m = template.mapping!
        var condition: CompiledExpression?
        if let c = m["$if"] { condition = try compileCondition(c, scope: &scope) }
        let localReferencesBefore = scope.usesLocalReferences
        scope.usesLocalReferences = false
        defer { scope.usesLocalReferences = scope.usesLocalReferences || localReferencesBefore }
        let node = try compileObject(template, typeName: identity.type, path: identity.type, scope: &scope, allowIf: false)
        // The identity node: identifier[0].value compiled on its own so it can be evaluated before the template.
        let idItem: Node = m["identifier"]!.sequence?.first ?? m["identifier"]!
        let valueNode = idItem.mapping!["value"]!
        let identityValue = try compileValue(valueNode, info: ElementInfo(order: 0, typeName: "string", isArray: false, primitiveKind: .string),
                                             path: "\(identity.type).identifier[0].value", scope: &scope)
        return CompiledResource(name: name, resourceType: identity.type, identifierSystem: identity.system,
                                conditionalURLPrefix: ConditionalURL.prefix(type: identity.type, system: identity.system),
                                identifierValue: identityValue, condition: condition, template: node,
                                usesLocalReferences: scope.usesLocalReferences)
    }

    private func compileCondition(_ node: Node, scope: inout Scope) throws(MappingError) -> CompiledExpression {
        guard let text = node.scalar?.string else { throw fail(location(node), "$if takes one expression, e.g. \"{{ present(note) }}\"") }
        let parts = try ExpressionParser(origin: quotedOrigin(node), file: document.path).parseTemplate(text)
        guard parts.count == 1, case .expression(let e) = parts[0] else {
            throw fail(location(node), "$if takes exactly one expression in {{ }}, e.g. \"{{ eq(type, 'emergency') }}\"")
        }
        return try scope.compile(e).expression
    }

    /// Compiles a mapping node into an object of FHIR type `typeName`, keys sorted into FHIR element order.
    /// `element` describes the element the object fills, whose binding or reference targets its children inherit.
    private func compileObject(_ node: Node, typeName: String?, path: String, scope: inout Scope, allowIf: Bool = true,
                               element: ElementInfo? = nil) throws(MappingError) -> TemplateNode {
        guard let m = node.mapping else { throw fail(location(node), "\(path) must be a mapping of elements") }
        if let typeName, catalog.hasType(typeName) { try checkRequiredElements(of: m, typeName: typeName, path: path, at: location(node)) }
        var condition: CompiledExpression?
        var members: [(order: Int, seq: Int, key: String, node: TemplateNode)] = []
        for (seq, pair) in m.enumerated() {
            guard let key = pair.key.scalar?.string else { throw fail(location(pair.key), "element names must be plain text") }
            if key.hasPrefix("$") {
                switch key {
                case "$if" where allowIf: condition = try compileCondition(pair.value, scope: &scope)
                case "$if": continue  // resource-level $if, compiled by the caller
                case "$each", "$as": throw fail(location(pair.key), "\(key) belongs to an item of a list (an element that repeats)")
                default: throw fail(location(pair.key), "unknown directive '\(key)'; directives are $if, $each and $as")
                }
                continue
            }
            if key == "resourceType" {
                if typeName.map({ catalog.isResourceType($0) }) ?? true {
                    members.append((-1, seq, key, .constant(.string(pair.value.scalar?.string ?? ""))))
                    continue
                }
            }
            var info: ElementInfo?
            if let typeName, catalog.hasType(typeName) {
                info = catalog.element(of: typeName, jsonKey: key)
                if info == nil {
                    throw fail(location(pair.key), "'\(key)' is not an element of \(typeName)\(suggest(key, catalog.elementNames(of: typeName)))")
                }
                // A bound CodeableConcept binds the codes of its codings; a Reference's targets are its reference's.
                if (typeName == "CodeableConcept" && key == "coding") || (typeName == "Coding" && key == "code") {
                    info?.binding = element?.binding
                    info?.bindingIsInherited = true
                }
                if typeName == "Reference" && key == "reference" { info?.referenceTargets = element?.referenceTargets ?? [] }
            }
            let child = try compileValue(pair.value, info: info, path: "\(path).\(key)", scope: &scope)
            members.append((info?.order ?? Int.max, seq, key, child))
        }
        members.sort { ($0.order, $0.seq) < ($1.order, $1.seq) }
        let ordered = members.filter { if case .literal(let v, _) = $0.node { return !v.isPrunable } else { return true } }
            .map { ObjectMember(key: $0.key, node: $0.node) }
        if condition == nil, ordered.allSatisfy(\.node.isLiteral) {
            let values = ordered.compactMap { m -> JSONMember? in
                if case .literal(let v, _) = m.node, !v.isPrunable { return JSONMember(m.key, v) }
                return nil
            }
            return .constant(values.isEmpty ? .null : .object(values))
        }
        return .object(ordered, condition: condition)
    }

    /// Compiles the value of one element: wraps single values into arrays for repeating elements, expands `$each`.
    private func compileValue(_ node: Node, info: ElementInfo?, path: String, scope: inout Scope) throws(MappingError) -> TemplateNode {
        let isArray = info?.isArray ?? (node.sequence != nil)
        if isArray {
            let items: [Node] = node.sequence.map(Array.init) ?? [node]
            var compiled: [ArrayItem] = []
            for (i, item) in items.enumerated() {
                compiled.append(try compileItem(item, info: info, path: "\(path)[\(i)]", scope: &scope))
            }
            if compiled.allSatisfy({ if case .node(.literal) = $0 { return true } else { return false } }) {
                let values = compiled.compactMap { item -> JSONValue? in
                    if case .node(.literal(let v, _)) = item, !v.isPrunable { return v }
                    return nil
                }
                return .constant(values.isEmpty ? .null : .array(values))
            }
            return .array(compiled)
        }
        if node.sequence != nil { throw fail(location(node), "\(path) takes one value, not a list") }
        if let m = node.mapping, m["$each"] != nil { throw fail(location(node), "\(path) does not repeat, so $each cannot be used here") }
        return try compileSingle(node, info: info, path: path, scope: &scope)
    }

    private func compileItem(_ node: Node, info: ElementInfo?, path: String, scope: inout Scope) throws(MappingError) -> ArrayItem {
        guard let m = node.mapping, let eachNode = m["$each"] else {
            if node.sequence != nil { throw fail(location(node), "\(path): a list inside a list is not FHIR JSON") }
            return .node(try compileSingle(node, info: info, path: path, scope: &scope))
        }
        guard let text = eachNode.scalar?.string else { throw fail(location(eachNode), "$each takes one expression that gives a list") }
        let parts = try ExpressionParser(origin: quotedOrigin(eachNode), file: document.path).parseTemplate(text)
        guard parts.count == 1, case .expression(let e) = parts[0] else {
            throw fail(location(eachNode), "$each takes exactly one expression in {{ }}, e.g. \"{{ notes[encounter_id] }}\"")
        }
        let list = try scope.compile(e)
        guard let asNode = m["$as"], let alias = asNode.scalar?.string, !alias.isEmpty else {
            throw fail(location(node), "$each needs $as: the name each element goes by inside the item")
        }
        let elementType: StaticType
        switch list.type {
        case .records(let s): elementType = .record(s)
        case .record(let s): elementType = .record(s)
        default: elementType = .scalar
        }
        let slot = scope.pushAlias(alias, type: elementType)
        defer { scope.popAlias() }
        // The body is the item without the directives.
        var bodyPairs: [(Node, Node)] = []
        for pair in m where !["$each", "$as"].contains(pair.key.scalar?.string ?? "") { bodyPairs.append((pair.key, pair.value)) }
        let body: TemplateNode
        if bodyPairs.count == 1, bodyPairs[0].0.scalar?.string == "$value" {
            body = try compileSingle(bodyPairs[0].1, info: info, path: path, scope: &scope)
        } else {
            let bodyNode = Node.mapping(Node.Mapping(bodyPairs, Tag(.map), .any, node.mark))
            body = try compileSingle(bodyNode, info: info, path: path, scope: &scope)
        }
        return .each(list: list.expression, slot: slot, body: body)
    }

    private func compileSingle(_ node: Node, info: ElementInfo?, path: String, scope: inout Scope) throws(MappingError) -> TemplateNode {
        if node.mapping != nil {
            if let kind = info?.primitiveKind {
                _ = kind
                throw fail(location(node), "\(path) is a FHIR \(info!.typeName), so it takes a value, not a mapping")
            }
            var typeName = info?.typeName
            if typeName == "Resource" { typeName = node.mapping?["resourceType"]?.scalar?.string }
            return try compileObject(node, typeName: typeName, path: path, scope: &scope, element: info)
        }
        guard let scalar = node.scalar else { throw fail(location(node), "\(path): unsupported YAML value (aliases are not supported)") }
        if let info, info.primitiveKind == nil {
            throw fail(location(node), "\(path) is a FHIR \(info.typeName), so it needs a mapping of its elements, not a single value")
        }
        let kind = info?.primitiveKind ?? untypedKind(scalar)
        let parts = try ExpressionParser(origin: quotedOrigin(node), file: document.path).parseTemplate(scalar.string)
        var compiled: [CompiledPart] = []
        for p in parts {
            switch p {
            case .text(let t): compiled.append(.text(t))
            case .expression(let e):
                // Where the columns go, without list positions: `Patient.name.given`.
                scope.currentPath = path.replacing(/\[\d+\]/, with: "")
                defer { scope.currentPath = nil }
                let c = try scope.compile(e)
                if case .record = c.type { throw fail(e.location, "\(path): this gives a whole row; pick a field, e.g. row.column") }
                if let info { try checkReferenceTargets(c.expression, at: e.location, info: info, path: path, scope: scope) }
                // Constants are text: "{{ base }}/patientId" is fixed and folds like plain text.
                if case .literal(.string(let text)) = c.expression {
                    compiled.append(.text(text))
                } else {
                    compiled.append(.expression(c.expression))
                }
            }
        }
        if compiled.allSatisfy({ if case .text = $0 { return true } else { return false } }) {
            let text = compiled.map { if case .text(let t) = $0 { return t } else { return "" } }.joined()
            if text.isBlank { return .constant(.null) }
            if let binding = info?.binding, let codes = binding.codes, !codes.contains(text) {
                throw fail(location(node), "\(path) is bound to the required value set \(binding.valueSet), which has no code '\(text)'\(suggest(text, Array(codes))); its codes are \(Self.listed(codes))")
            }
            if let info, kind == .string, !PrimitiveFormats.isValid(text, type: info.typeName) {
                throw fail(location(node), "\(path) is a FHIR \(info.typeName), and '\(text)' is not a valid one")
            }
            do {
                return .constant(try LeafCoercion.coerce(text, kind: kind, path: path))
            } catch let failure as RowFailure {
                throw fail(location(node), failure.message)
            } catch {
                throw fail(location(node), "\(error)")
            }
        }
        if let binding = info?.binding, let codes = binding.codes, compiled.count == 1, case .expression(.call(.map(let mi), _)) = compiled[0] {
            // A value map gives only its listed codes (and its default): each must be in the value set.
            let map = scope.maps[mi]
            for code in (Array(map.table.values) + (map.defaultValue.map { [$0] } ?? [])).sorted() where !code.isEmpty && !codes.contains(code) {
                throw fail(location(node), "\(path) is bound to the required value set \(binding.valueSet), but map '\(map.name)' gives '\(code)', which it does not have\(suggest(code, Array(codes))); its codes are \(Self.listed(codes))")
            }
        }
        // What each row's value must be, checked as it is rendered: a bad cell rejects its row, not the whole run
        // at validation. Strings need only be non-empty (an empty value drops the element); narratives are left to
        // the validation.
        var format = info.map { PrimitiveFormats.Format(type: $0.typeName) } ?? .any
        if kind != .string || format == .nonEmpty || format == .xhtml { format = .any }
        let codes = info?.bindingIsInherited == false ? info?.binding.flatMap { b in b.codes.map { (valueSet: b.valueSet, codes: $0) } } : nil
        return .leaf(Leaf(parts: compiled, kind: kind, path: path, format: format, typeName: info?.typeName ?? "string", requiredCodes: codes))
    }

    /// Every required element of `typeName` must have a key in the template: one it never fills would make every
    /// row's resource invalid, found only after the run.
    private func checkRequiredElements(of m: Node.Mapping, typeName: String, path: String, at: MappingLocation) throws(MappingError) {
        let keys = Set(m.compactMap { $0.key.scalar?.string })
        for required in catalog.requiredElements(of: typeName) where !required.jsonKeys.contains(where: keys.contains) {
            let form = required.name.hasSuffix("[x]") ? "one of \(required.jsonKeys.filter { !$0.hasPrefix("_") }.prefix(4).joined(separator: ", "))…" : "'\(required.name)'"
            throw fail(at, "\(path) requires \(form) (at least \(required.min)), which the template never fills; add it, or every resource would be invalid")
        }
    }

    /// `ref()` and `uuid()` in a Reference must name a resource type the element allows.
    private func checkReferenceTargets(_ e: CompiledExpression, at: MappingLocation, info: ElementInfo, path: String, scope: Scope) throws(MappingError) {
        let targets = info.referenceTargets
        guard !targets.isEmpty, !targets.contains("Resource") else { return }
        func referencedTypes(_ e: CompiledExpression) -> [String] {
            switch e {
            case .call(.ref(let prefix), let args):
                return [String(prefix.prefix { $0 != "?" })] + args.flatMap(referencedTypes)
            case .call(.uuid(let member), _):
                return [scope.identities[scope.stepIndex][member].type]
            case .call(_, let args): return args.flatMap(referencedTypes)
            case .field(let base, _, _): return referencedTypes(base)
            case .lookup(_, let keys): return keys.flatMap(referencedTypes)
            default: return []
            }
        }
        for type in referencedTypes(e) where !targets.contains(type) {
            let element = path.hasSuffix(".reference") ? String(path.dropLast(10)) : path
            throw fail(at, "\(element) may refer to \(targets.joined(separator: ", ")), but this gives a reference to \(type); check the step that ref() names")
        }
    }

    /// A value set's codes for a message: sorted, the first dozen.
    static func listed(_ codes: Set<String>) -> String {
        let sorted = codes.sorted()
        return sorted.prefix(12).joined(separator: ", ") + (sorted.count > 12 ? ", … (\(sorted.count) codes)" : "")
    }

    /// Outside known FHIR types, plain YAML booleans and numbers keep their JSON type.
    private func untypedKind(_ scalar: Node.Scalar) -> LeafKind {
        guard scalar.style == .plain else { return .string }
        switch scalar.string {
        case "true", "false": return .boolean
        default: return LeafCoercion.normalizedDecimal(scalar.string) != nil ? .decimal : .string
        }
    }

    /// " (did you mean 'x'?)" when a close name exists.
    func suggest(_ name: String, _ candidates: [String]) -> String {
        let lower = name.lowercased()
        let best = candidates.map { ($0, editDistance(lower, $0.lowercased())) }.min { $0.1 < $1.1 }
        guard let best, best.1 <= max(2, name.count / 3) else { return "" }
        // A name an expression cannot spell plainly is written between backticks.
        let plain = best.0.first.map { $0 == "_" || $0 == "$" || $0.isLetter } == true && best.0.allSatisfy { $0.isLetter || $0.isNumber || "_$-".contains($0) }
        return plain ? " (did you mean '\(best.0)'?)" : " (did you mean `\(best.0)`?)"
    }
}

private func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0...b.count)
    for i in 1...a.count {
        var cur = [i] + Array(repeating: 0, count: b.count)
        for j in 1...b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        prev = cur
    }
    return prev[b.count]
}

extension JSONValue {
    /// FHIR forbids `""`, `[]`, `{}` and `null`; such values are dropped from output.
    var isPrunable: Bool {
        switch self {
        case .null: return true
        case .string(let s): return s.isEmpty
        case .array(let a): return a.isEmpty
        case .object(let m): return m.isEmpty
        default: return false
        }
    }
}
