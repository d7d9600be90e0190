import FHIRDefinitions
import FHIRModel
import FHIRSources

/// Evaluation state for one row.
struct RowContext {
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
            if leaf.checksValues { try Self.check(s, leaf) }
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
            if leaf.checksValues { try check(s, leaf) }
            return try LeafCoercion.coerce(s, kind: leaf.kind, path: leaf.path)
        }
    }

    /// A value that its element's FHIR type or required value set refuses fails the row (a reject naming the
    /// element, with the value beside the reason), as the validation would fail the whole run for it.
    static func check(_ s: String, _ leaf: Leaf) throws {
        var s = s
        if leaf.format != .any, !s.withUTF8({ PrimitiveFormats.check($0, leaf.format) }) {
            let hint: String
            switch leaf.format {
            case .date: hint = "YYYY, YYYY-MM or YYYY-MM-DD; read other layouts with date(value, 'format')"
            case .dateTime: hint = "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss with a time zone; read other layouts with dateTime(value, 'format')"
            case .instant: hint = "YYYY-MM-DDThh:mm:ss with a time zone"
            case .time: hint = "hh:mm:ss"
            case .code: hint = "no leading, trailing or doubled spaces"
            case .id: hint = "1 to 64 letters, digits, '-' and '.'"
            case .uri: hint = "no spaces"
            default: hint = "see the FHIR R4 definition of \(leaf.typeName)"
            }
            throw RowFailure("\(leaf.path) is a FHIR \(leaf.typeName), but the value is not one (\(hint))", value: s)
        }
        if let required = leaf.requiredCodes, !required.codes.contains(s) {
            throw RowFailure("\(leaf.path) is bound to the required value set \(required.valueSet), which does not have the value; translate the source's codes with map()", value: s)
        }
    }
}
