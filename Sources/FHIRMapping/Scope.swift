import FHIRModel
import Foundation

/// What an expression gives, known when the mapping is checked.
enum StaticType: Equatable {
    case scalar
    /// A list of values (split(), repeated XML children, a field of a multi-row lookup).
    case list
    /// One row of source `s` (a single lookup, or a `$each` alias over rows).
    case record(Int)
    /// Rows of source `s` (a multi-row lookup).
    case records(Int)
}

/// Name resolution and type checking for the expressions of one step.
struct Scope {
    let mapping: MappingCompiler
    let sources: [CompiledSource]
    let lookups: [CompiledLookup]
    let maps: [ValueMap]
    let constants: [String: String]
    let sourceIndex: Int
    var aliases: [(name: String, slot: Int, type: StaticType)]
    var nextSlot: Int
    /// Resource names of the current step, for `uuid(name)`.
    let members: [String]
    let bundle: BundleKind
    let stepIndex: Int
    let identities: [[(name: String, type: String, system: String)]]
    let stepNames: [String]
    var dependsOn: [Int]
    var usesLocalReferences: Bool
    /// Whether an expression calls `occurrence()`, whose value depends on the rows before: the step's rows are then
    /// evaluated in file order, on one thread.
    var countsOccurrences = false
    /// Columns read from rows of other sources (lookup results), by source index: what a lookup table keeps.
    var columnsRead: [Int: Set<Int>] = [:]
    /// Every column an expression reads, the step's own included, by source index: the summary lists the others.
    var columnsUsed: [Int: Set<Int>] = [:]
    /// The template element being compiled (`Patient.name.given`), nil outside templates (keys, conditions).
    var currentPath: String?
    /// Source index → column → the template elements it fills, for the review report.
    var columnPaths: [Int: [Int: Set<String>]] = [:]

    /// Notes that an expression reads `column` of source `source`, and where in the template.
    mutating func use(column: Int, of source: Int) {
        columnsUsed[source, default: []].insert(column)
        if let currentPath { columnPaths[source, default: [:]][column, default: []].insert(currentPath) }
    }

    mutating func pushAlias(_ name: String, type: StaticType) -> Int {
        let slot = nextSlot
        nextSlot += 1
        aliases.append((name, slot, type))
        return slot
    }

    mutating func popAlias() {
        aliases.removeLast()
    }

    private func fail(_ at: MappingLocation, _ message: String) -> MappingError {
        MappingError(file: mapping.document.path, line: at.line, column: at.column, message: message)
    }

    private var columns: [String] { sources[sourceIndex].fieldNames }

    /// Compiles `e`, resolving names in this order: `$each` aliases, constants, lookups, columns of the step's
    /// source. A name that is both a column and a constant or lookup is an error, so a mapping never means two things.
    mutating func compile(_ e: Expression) throws(MappingError) -> (expression: CompiledExpression, type: StaticType) {
        switch e {
        case .string(let s, _): return (.literal(.string(s)), .scalar)
        case .number(let n, _): return (.literal(.string(n)), .scalar)
        case .name(let n, let at):
            if let a = aliases.last(where: { $0.name == n }) { return (.alias(slot: a.slot), a.type) }
            let column = columns.firstIndex(of: n)
            if let c = constants[n] {
                if column != nil { throw fail(at, "'\(n)' is both a constant and a column of source '\(sources[sourceIndex].name)'; rename the constant") }
                return (.literal(.string(c)), .scalar)
            }
            if lookups.contains(where: { $0.name == n }) {
                throw fail(at, "'\(n)' is a lookup; index it with a key, e.g. \(n)[some_column]")
            }
            if let column {
                use(column: column, of: sourceIndex)
                return (.column(column, name: n), .scalar)
            }
            let known = columns + Array(constants.keys) + aliases.map(\.name)
            throw fail(at, "unknown name '\(n)': not a column of source '\(sources[sourceIndex].name)', a constant or a $each alias\(mapping.suggest(n, known))\(Self.delimiterHint(sources[sourceIndex].fieldNames))")
        case .member(let base, let field, let at):
            let b = try compile(base)
            switch b.type {
            case .record(let s), .records(let s):
                guard let col = sources[s].fieldNames.firstIndex(of: field) else {
                    throw fail(at, "source '\(sources[s].name)' has no column '\(field)'\(mapping.suggest(field, sources[s].fieldNames))")
                }
                columnsRead[s, default: []].insert(col)
                use(column: col, of: s)
                let isList = if case .records = b.type { true } else { false }
                return (.field(b.expression, column: col, name: field), isList ? .list : .scalar)
            default:
                throw fail(at, "'.\(field)' needs a row (a lookup result or a $each alias over rows)")
            }
        case .index(let base, let keys, let at):
            guard case .name(let n, _) = base, let li = lookups.firstIndex(where: { $0.name == n }) else {
                throw fail(at, "only lookups can be indexed with [key]; declare one under 'lookups:'\(base.nameHint.map { mapping.suggest($0, lookups.map(\.name)) } ?? "")")
            }
            let l = lookups[li]
            guard keys.count == l.keyColumns.count else {
                let names = l.keyColumns.map { sources[l.sourceIndex].fieldNames[$0] }
                throw fail(at, "lookup '\(n)' is keyed by \(names.count == 1 ? "one column" : "\(names.count) columns") (\(names.joined(separator: ", "))), so it takes \(names.count == 1 ? "one key" : "\(names.count) keys in that order"), e.g. \(n)[\(names.joined(separator: ", "))]")
            }
            var compiled: [CompiledExpression] = []
            for key in keys {
                let k = try compile(key)
                guard k.type == .scalar || k.type == .list else { throw fail(key.location, "a lookup key must be a value, not a row") }
                compiled.append(k.expression)
            }
            return (.lookup(li, keys: compiled), l.multiple ? .records(l.sourceIndex) : .record(l.sourceIndex))
        case .call(let name, let args, let at):
            return try compileCall(name, args, at)
        }
    }

    /// 'Z', '+01:00', '-0500', '+01': what a UTC offset argument looks like (no date format does).
    static func looksLikeOffset(_ s: String) -> Bool {
        s == "Z" || s.range(of: #"^[+-]\d\d(:?\d\d)?$"#, options: .regularExpression) != nil
    }

    /// The decimals argument of div() and round(): a whole number written in the mapping.
    private func decimalPlaces(_ e: Expression) throws(MappingError) -> Int {
        let text: String
        switch e {
        case .number(let n, _): text = n
        case .string(let s, _): text = s
        default: throw fail(e.location, "the number of decimals must be written in the mapping, e.g. 2")
        }
        guard let places = Int(text), (0...ExactDecimal.maxScale).contains(places) else {
            throw fail(e.location, "the number of decimals must be a whole number from 0 to \(ExactDecimal.maxScale)")
        }
        return places
    }

    private func literalString(_ e: Expression, _ what: String) throws(MappingError) -> String {
        switch e {
        case .string(let s, _): return s
        case .name(let n, _) where constants[n] != nil: return constants[n]!
        default: throw fail(e.location, "\(what) must be written as a quoted text, e.g. 'value'")
        }
    }

    private mutating func compileCall(_ name: String, _ args: [Expression], _ at: MappingLocation) throws(MappingError) -> (expression: CompiledExpression, type: StaticType) {
        func arity(_ range: ClosedRange<Int>, _ usage: String) throws(MappingError) {
            guard range.contains(args.count) else { throw fail(at, "\(name)() takes \(usage)") }
        }
        func values() throws(MappingError) -> [CompiledExpression] {
            var out: [CompiledExpression] = []
            for a in args { out.append(try compile(a).expression) }
            return out
        }
        /// Operands of arithmetic: a literal must be a number (found now, not once per row).
        func numbers() throws(MappingError) -> [CompiledExpression] {
            for a in args {
                if case .string(let text, let at) = a, ExactDecimal(text) == nil {
                    throw fail(at, "\(name)() takes numbers; '\(text)' is not one")
                }
                if case .number(let text, let at) = a, ExactDecimal(text) == nil {
                    throw fail(at, "\(name)() takes numbers; '\(text)' is not one")
                }
            }
            return try values()
        }
        switch name {
        case "date", "dateTime":
            // date(x, 'format', ...) and dateTime(x, 'format', ..., 'offset'): formats are tried in order; the
            // last argument of dateTime is the offset when it reads as one ('Z', '+01:00'), never a format.
            try arity(name == "date" ? 2...9 : 2...10, name == "date"
                ? "a value and its source format, or several tried in order: date(birth_date, 'yyyy-MM-dd', 'MM/dd/yyyy')"
                : "a value, its source format (or several, tried in order) and optionally a UTC offset: dateTime(start, 'yyyy-MM-dd HH:mm', 'Z')")
            var formatArgs = Array(args.dropFirst())
            var offset: String?
            if name == "dateTime", formatArgs.count >= 2, let last = formatArgs.last, case .string(let o, _) = last, Self.looksLikeOffset(o) {
                offset = o
                formatArgs.removeLast()
            }
            var formats: [DateFormat] = []
            for arg in formatArgs {
                let pattern = try literalString(arg, "the date format")
                if name == "dateTime" && Self.looksLikeOffset(pattern) {
                    throw fail(arg.location, "'\(pattern)' is a UTC offset; it goes last, after the formats")
                }
                let format: DateFormat
                do { format = try DateFormat(pattern) } catch { throw fail(arg.location, "bad date format '\(pattern)': \(error.message)") }
                if formats.contains(format) { throw fail(arg.location, "the format '\(pattern)' is given twice") }
                if name == "dateTime" && format.hasTime && !format.hasOffset && offset == nil {
                    throw fail(arg.location, "the format '\(pattern)' has a time but no UTC offset (XXX); FHIR needs one: add it to the format or give dateTime a last argument such as 'Z'")
                }
                formats.append(format)
            }
            if let offset, !(offset == "Z" || offset.range(of: #"^[+-](0\d|1[0-4]):[0-5]\d$"#, options: .regularExpression) != nil) {
                throw fail(args[args.count - 1].location, "the UTC offset must be 'Z' or like '+01:00' / '-05:00'")
            }
            let value = try compile(args[0]).expression
            if name == "date" { return (.call(.date(formats, value.describe), [value]), .scalar) }
            return (.call(.dateTime(formats, value.describe, offset: offset), [value]), .scalar)
        case "map":
            try arity(2...2, "a value and the name of a map: map(gender, 'gender')")
            let mapName = try literalString(args[1], "the map name")
            guard let mi = maps.firstIndex(where: { $0.name == mapName }) else {
                throw fail(args[1].location, "unknown map '\(mapName)'; declare it under 'maps:'\(mapping.suggest(mapName, maps.map(\.name)))")
            }
            return (.call(.map(mi), [try compile(args[0]).expression]), .scalar)
        case "ref":
            try arity(2...2, "a step (or step.resource) and the key: ref('patients', patient_id)")
            let target = try literalString(args[0], "the step name")
            let pieces = target.split(separator: ".", maxSplits: 1).map(String.init)
            guard let si = stepNames.firstIndex(of: pieces[0]) else {
                throw fail(args[0].location, "unknown step '\(pieces[0])'\(mapping.suggest(pieces[0], stepNames))")
            }
            let candidates = identities[si]
            let chosen: (name: String, type: String, system: String)
            if pieces.count == 2 {
                guard let c = candidates.first(where: { $0.name == pieces[1] }) else {
                    throw fail(args[0].location, "step '\(pieces[0])' has no resource '\(pieces[1])'; it has \(candidates.map(\.name).joined(separator: ", "))")
                }
                chosen = c
            } else {
                guard candidates.count == 1 else {
                    throw fail(args[0].location, "step '\(pieces[0])' writes several resources; name one: ref('\(pieces[0]).\(candidates[0].name)', ...)")
                }
                chosen = candidates[0]
            }
            if si != stepIndex { dependsOn.append(si) }
            return (.call(.ref(prefix: ConditionalURL.prefix(type: chosen.type, system: chosen.system)), [try compile(args[1]).expression]), .scalar)
        case "uuid":
            try arity(1...1, "the name of a resource of this step: uuid('encounter')")
            let member = try literalString(args[0], "the resource name")
            guard let mi = members.firstIndex(of: member) else {
                throw fail(args[0].location, "this step has no resource '\(member)'; it has \(members.joined(separator: ", "))")
            }
            guard bundle != .batch else {
                throw fail(at, "uuid() gives a urn:uuid reference, which only resolves inside a transaction; this step's bundle is batch (use ref() or bundle: transaction)")
            }
            usesLocalReferences = true
            return (.call(.uuid(member: mi), []), .scalar)
        case "hashId":
            try arity(1...16, "one or more values: hashId(PATIENT, ENCOUNTER, CODE, START)")
            return (.call(.hashID, try values()), .scalar)
        case "occurrence":
            try arity(1...16, "the values that identify a record: occurrence(PATIENT, DATE, CODE) gives 1 the first time they appear together, 2 the second time, ...")
            countsOccurrences = true
            return (.call(.occurrence, try values()), .scalar)
        case "concat":
            try arity(1...32, "one or more values")
            return (.call(.concat, try values()), .scalar)
        case "upper", "lower", "trim":
            try arity(1...1, "one value")
            let a = try compile(args[0])
            let f: Function = name == "upper" ? .upper : name == "lower" ? .lower : .trim
            return (.call(f, [a.expression]), a.type == .list ? .list : .scalar)
        case "replace":
            try arity(3...3, "a value, the text to find and its replacement")
            let a = try compile(args[0])
            return (.call(.replace, [a.expression] + [try compile(args[1]).expression, try compile(args[2]).expression]), a.type == .list ? .list : .scalar)
        case "split":
            try arity(2...2, "a value and a separator: split(given_names, ' ')")
            return (.call(.split, try values()), .list)
        case "join":
            try arity(2...2, "a list and a separator")
            return (.call(.join, try values()), .scalar)
        case "coalesce", "default":
            try arity(1...16, "one or more values; it gives the first that is not empty")
            var out: [CompiledExpression] = []
            var type: StaticType = .scalar
            for a in args {
                let c = try compile(a)
                out.append(c.expression)
                if c.type != .scalar { type = c.type }
            }
            return (.call(.coalesce, out), type)
        case "if":
            try arity(2...3, "a condition, a value when true and optionally a value when false")
            var out: [CompiledExpression] = []
            var type: StaticType = .scalar
            for (i, a) in args.enumerated() {
                let c = try compile(a)
                out.append(c.expression)
                if i > 0 && c.type != .scalar { type = c.type }
            }
            return (.call(.ifThen, out), type)
        case "eq", "ne":
            try arity(2...2, "two values")
            return (.call(name == "eq" ? .eq : .ne, try values()), .scalar)
        case "not", "empty", "present":
            try arity(1...1, "one value")
            return (.call(name == "not" ? .not : name == "empty" ? .empty : .present, try values()), .scalar)
        case "and", "or":
            try arity(2...16, "two or more conditions")
            return (.call(name == "and" ? .and : .or, try values()), .scalar)
        case "gt", "ge", "lt", "le":
            try arity(2...2, "two numbers: \(name)(systolic, '140')")
            let comparison: Function = name == "gt" ? .greater : name == "ge" ? .greaterOrEqual : name == "lt" ? .less : .lessOrEqual
            return (.call(comparison, try numbers()), .scalar)
        case "add", "mul":
            try arity(2...16, "two or more numbers: \(name)(a, b)")
            return (.call(name == "add" ? .add : .multiply, try numbers()), .scalar)
        case "sub":
            try arity(2...2, "two numbers: sub(a, b) is a − b")
            return (.call(.subtract, try numbers()), .scalar)
        case "div":
            try arity(3...3, "two numbers and the decimals to round to: div(weight_g, 1000, 2)")
            let places = try decimalPlaces(args[2])
            return (.call(.divide(places: places), [try compile(args[0]).expression, try compile(args[1]).expression]), .scalar)
        case "round":
            try arity(2...2, "a number and the decimals to keep: round(temperature, 1)")
            let places = try decimalPlaces(args[1])
            return (.call(.round(places: places), [try compile(args[0]).expression]), .scalar)
        default:
            let known = ["date", "dateTime", "map", "ref", "uuid", "hashId", "occurrence", "concat", "upper", "lower", "trim", "replace", "split", "join",
                         "coalesce", "default", "if", "eq", "ne", "not", "and", "or", "empty", "present",
                         "gt", "ge", "lt", "le", "add", "sub", "mul", "div", "round"]
            throw fail(at, "unknown function '\(name)'\(mapping.suggest(name, known)); see docs/mapping.md for the list")
        }
    }
}

extension Expression {
    var nameHint: String? {
        if case .name(let n, _) = self { return n }
        return nil
    }
}

extension Scope {
    /// When a CSV header was read as one column that holds another common delimiter (`id;name;dob`), the source
    /// was read with the wrong one: say which to declare.
    static func delimiterHint(_ fieldNames: [String]) -> String {
        guard fieldNames.count == 1, let only = fieldNames.first else { return "" }
        let delimiters: [(Character, String)] = [(";", "';'"), ("\t", "'\\t'"), ("|", "'|'")]
        for (character, spelled) in delimiters where only.contains(character) {
            return "; the header was read as one column, which holds \(spelled): declare `delimiter: \(spelled)` on the source"
        }
        return ""
    }
}
