import FHIRModel
import FHIRSources

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
