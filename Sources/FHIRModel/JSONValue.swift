/// A JSON value whose objects keep their member order.
///
/// FHIR JSON has a defined element order and artifacts must be byte-identical from run to run, so objects are
/// ordered member lists rather than dictionaries. Numbers keep their source text: FHIR decimals carry precision
/// (`1.50` is not `1.5`), which a `Double` would lose.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// A number as its JSON text, e.g. `"49.2"` or `"-3"`.
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([JSONMember])

    /// The member value for `key` when this is an object (first match), else nil.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first(where: { $0.key == key })?.value
    }

    /// The string payload, if this is a string.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The elements, if this is an array.
    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// The members, if this is an object.
    public var objectMembers: [JSONMember]? {
        if case .object(let m) = self { return m }
        return nil
    }
}

/// One member of a JSON object.
public struct JSONMember: Sendable, Equatable {
    public var key: String
    public var value: JSONValue

    public init(_ key: String, _ value: JSONValue) {
        self.key = key
        self.value = value
    }
}
