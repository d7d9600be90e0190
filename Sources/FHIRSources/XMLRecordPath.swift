/// The path of an XML source's repeating record element: absolute steps by local name, each with an optional
/// namespace prefix and `[@attribute='value']` predicates (`/mysqldump/database/table_data[@name='patients']/row`).
/// No other XPath is read: the reader matches it while streaming, element by element.
public struct XMLRecordPath: Sendable, Equatable, CustomStringConvertible {
    public struct Predicate: Sendable, Equatable {
        /// Matched by local name.
        public var attribute: String
        public var value: String
    }

    public struct Step: Sendable, Equatable {
        public var prefix: String?
        public var local: String
        /// All must hold.
        public var predicates: [Predicate]
    }

    /// Why a record path cannot be read, and where in its text (0-based character offset).
    public struct SyntaxError: Error, Sendable, Equatable {
        public var message: String
        public var offset: Int
    }

    public let text: String
    public let steps: [Step]

    public var description: String { text }

    public init(parsing text: String) throws(SyntaxError) {
        self.text = text
        let chars = Array(text)
        var i = 0
        func fail(_ message: String) -> SyntaxError { SyntaxError(message: message, offset: i) }
        func isNameCharacter(_ c: Character) -> Bool {
            !(c == "/" || c == "[" || c == "]" || c == "@" || c == "=" || c == "'" || c == "\"" || c == "*" || c == "(" || c == ")" || c.isWhitespace)
        }
        func name(_ what: String) throws(SyntaxError) -> String {
            let start = i
            while i < chars.count, isNameCharacter(chars[i]) { i += 1 }
            guard i > start else {
                let found = i < chars.count ? "'\(chars[i])'" : "the end"
                throw fail("expected \(what), found \(found); a record path is /step/step/..., each step an element name with optional [@attribute='value']")
            }
            return String(chars[start..<i])
        }
        func skipSpaces() { while i < chars.count, chars[i] == " " { i += 1 } }
        var steps: [Step] = []
        if i < chars.count, chars[i] == "/" { i += 1 }
        guard i < chars.count else { throw fail("the record path is empty; give the path of the repeating element, e.g. /export/patient") }
        while true {
            if chars[i] == "/" { throw fail("'//' (any depth) is not read here; give every step from the root element down") }
            let qualified = try name("an element name")
            let parts = qualified.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            if parts.count == 2 && (parts[0].isEmpty || parts[1].isEmpty || parts[1].contains(":")) {
                throw SyntaxError(message: "'\(qualified)' is not an element name (prefix:name)", offset: i - qualified.count)
            }
            var step = Step(prefix: parts.count == 2 ? parts[0] : nil, local: parts.last!, predicates: [])
            while i < chars.count, chars[i] == "[" {
                i += 1
                skipSpaces()
                guard i < chars.count, chars[i] == "@" else {
                    throw fail("only [@attribute='value'] predicates are read in a record path")
                }
                i += 1
                let attribute = try name("an attribute name")
                if attribute.hasPrefix("xsi:") || attribute.hasPrefix("xmlns") {
                    throw SyntaxError(message: "@\(attribute) cannot be matched: xsi: attributes and namespace declarations are not read as attributes", offset: i - attribute.count)
                }
                skipSpaces()
                guard i < chars.count, chars[i] == "=" else { throw fail("expected '=' after @\(attribute)") }
                i += 1
                skipSpaces()
                guard i < chars.count, chars[i] == "'" || chars[i] == "\"" else {
                    throw fail("the value of @\(attribute) must be quoted: [@\(attribute)='value']")
                }
                let quote = chars[i]
                i += 1
                let start = i
                while i < chars.count, chars[i] != quote { i += 1 }
                guard i < chars.count else { throw SyntaxError(message: "the value of @\(attribute) has no closing quote", offset: start - 1) }
                let value = String(chars[start..<i])
                i += 1
                skipSpaces()
                guard i < chars.count, chars[i] == "]" else { throw fail("expected ']' to close the predicate on @\(attribute)") }
                i += 1
                step.predicates.append(Predicate(attribute: attribute.split(separator: ":").last.map(String.init) ?? attribute, value: value))
            }
            steps.append(step)
            if i == chars.count { break }
            guard chars[i] == "/" else { throw fail("unexpected '\(chars[i])'; steps are separated by '/'") }
            i += 1
            guard i < chars.count else { throw fail("the record path ends with '/'; name the repeating element last") }
        }
        self.steps = steps
    }

    /// The namespace prefixes the steps use, for checking them against a source's `namespaces`.
    public var prefixes: [String] { steps.compactMap(\.prefix) }
}
