import FHIRModel
import FHIRSources

/// The expression language, evaluated against one row: names, lookups, functions, conditions.
extension RowContext {
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
            return .string(Self.hashID(parts))
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

extension RowContext {
    /// The namespace of `hashId` names whose values hold the separator: fixed forever, like fhirbundle's own.
    static let escapedHashIDNamespace: [UInt8] = [
        0x25, 0x92, 0xcf, 0x10, 0xa6, 0xd8, 0x5f, 0x28, 0x91, 0xfe, 0xce, 0xc7, 0xe2, 0x25, 0xbd, 0xfc,
    ]

    /// `hashId(a, b, ...)`: the version-5 UUID of the values joined with `|`. Values that hold a `|` themselves would
    /// make `('a|b', 'c')` and `('a', 'b|c')` one id: those are joined with `\|` and `\\` escaped, in a namespace of
    /// their own, so that every other row keeps the id it always had (ids already on a server stay theirs).
    static func hashID(_ parts: [String]) -> String {
        guard parts.count > 1, parts.contains(where: { $0.contains("|") }) else { return NameUUID.v5(parts.joined(separator: "|")) }
        let escaped = parts.map { part in
            var e = String.UnicodeScalarView()
            for c in part.unicodeScalars {
                if c == "\\" || c == "|" { e.append("\\") }
                e.append(c)
            }
            return String(e)
        }
        return NameUUID.v5(escaped.joined(separator: "|"), namespace: escapedHashIDNamespace)
    }
}
