/// The syntax tree of an expression written between `{{` and `}}` in a mapping template.
///
/// The language is deliberately small: names (columns, constants, lookups, `$each` aliases), string and number
/// literals, function calls, field access `row.column`, lookup indexing `lookup[key]`, and pipes
/// `value | function(args)` which read left to right as `function(value, args)`.
indirect enum Expression: Sendable {
    case name(String, MappingLocation)
    case string(String, MappingLocation)
    case number(String, MappingLocation)
    case call(String, [Expression], MappingLocation)
    case member(Expression, String, MappingLocation)
    /// `lookup[key]`, or `lookup[a, b]` for a lookup keyed by several columns.
    case index(Expression, [Expression], MappingLocation)

    var location: MappingLocation {
        switch self {
        case .name(_, let l), .string(_, let l), .number(_, let l), .call(_, _, let l), .member(_, _, let l), .index(_, _, let l):
            return l
        }
    }
}

/// One piece of a template string: literal text or an embedded expression.
enum TemplatePart: Sendable {
    case text(String)
    case expression(Expression)
}

/// Parses template strings (`"{{ base }}/patientId"`) and the expressions inside them.
struct ExpressionParser {
    /// Where the template string starts in the mapping file, for error positions.
    let origin: MappingLocation
    let file: String

    /// Splits `text` into literal parts and parsed expressions. Text without `{{` is a single literal part.
    func parseTemplate(_ text: String) throws(MappingError) -> [TemplatePart] {
        var parts: [TemplatePart] = []
        var rest = Substring(text)
        while let open = rest.firstRange(of: "{{") {
            if open.lowerBound > rest.startIndex { parts.append(.text(String(rest[rest.startIndex..<open.lowerBound]))) }
            guard let close = rest[open.upperBound...].firstRange(of: "}}") else {
                throw error(at: text.distance(from: text.startIndex, to: open.lowerBound), "'{{' without a closing '}}'")
            }
            let inner = rest[open.upperBound..<close.lowerBound]
            let offset = text.distance(from: text.startIndex, to: open.upperBound)
            parts.append(.expression(try parseExpression(String(inner), offset: offset)))
            rest = rest[close.upperBound...]
        }
        if !rest.isEmpty { parts.append(.text(String(rest))) }
        return parts
    }

    private func error(at offset: Int, _ message: String) -> MappingError {
        MappingError(file: file, line: origin.line, column: origin.column + offset, message: message)
    }

    /// Parses one expression; `offset` is its column offset inside the template string.
    func parseExpression(_ source: String, offset: Int) throws(MappingError) -> Expression {
        var lexer = Lexer(chars: Array(source.unicodeScalars), offset: offset, parser: self)
        let tokens = try lexer.tokenize()
        var state = TokenStream(tokens: tokens, parser: self)
        guard !state.atEnd else { throw error(at: offset, "empty expression between '{{' and '}}'") }
        let expr = try state.parsePipeline()
        if !state.atEnd { throw error(at: state.peek.offset, "unexpected '\(state.peek.text)' in expression") }
        return expr
    }

    fileprivate func location(_ offset: Int) -> MappingLocation {
        MappingLocation(line: origin.line, column: origin.column + offset)
    }

    fileprivate func fail(_ offset: Int, _ message: String) -> MappingError { error(at: offset, message) }
}

private struct Token {
    enum Kind { case name, string, number, punct }
    var kind: Kind
    var text: String
    var offset: Int
}

private struct Lexer {
    let chars: [Unicode.Scalar]
    let offset: Int
    let parser: ExpressionParser
    var i = 0

    init(chars: [Unicode.Scalar], offset: Int, parser: ExpressionParser) {
        self.chars = chars
        self.offset = offset
        self.parser = parser
    }

    mutating func tokenize() throws(MappingError) -> [Token] {
        var tokens: [Token] = []
        while i < chars.count {
            let c = chars[i]
            let start = offset + i
            if c == " " || c == "\t" || c == "\n" {
                i += 1
            } else if isNameStart(c) {
                var s = ""
                while i < chars.count && isNamePart(chars[i]) {
                    s.unicodeScalars.append(chars[i])
                    i += 1
                }
                tokens.append(Token(kind: .name, text: s, offset: start))
            } else if c.properties.numericType != nil && ("0"..."9").contains(c) || (c == "-" && i + 1 < chars.count && ("0"..."9").contains(chars[i + 1])) {
                var s = String(c)
                i += 1
                while i < chars.count && (("0"..."9").contains(chars[i]) || chars[i] == ".") {
                    s.unicodeScalars.append(chars[i])
                    i += 1
                }
                tokens.append(Token(kind: .number, text: s, offset: start))
            } else if c == "'" || c == "\"" {
                i += 1
                var s = ""
                var closed = false
                while i < chars.count {
                    if chars[i] == "\\" && i + 1 < chars.count {
                        s.unicodeScalars.append(chars[i + 1])
                        i += 2
                        continue
                    }
                    if chars[i] == c {
                        closed = true
                        i += 1
                        break
                    }
                    s.unicodeScalars.append(chars[i])
                    i += 1
                }
                if !closed { throw parser.fail(start, "string literal without closing \(c)") }
                tokens.append(Token(kind: .string, text: s, offset: start))
            } else if c == "`" {
                // A column whose name is no plain name: `Date of Birth`, `1st-visit`, an XML attribute's `@id`.
                i += 1
                var s = ""
                while i < chars.count && chars[i] != "`" {
                    s.unicodeScalars.append(chars[i])
                    i += 1
                }
                if i == chars.count { throw parser.fail(start, "column name without closing `") }
                i += 1
                if s.isEmpty { throw parser.fail(start, "empty column name between backticks") }
                tokens.append(Token(kind: .name, text: s, offset: start))
            } else if "().,[]|".unicodeScalars.contains(c) {
                tokens.append(Token(kind: .punct, text: String(c), offset: start))
                i += 1
            } else {
                throw parser.fail(start, "unexpected character '\(c)' in expression")
            }
        }
        return tokens
    }

    private func isNameStart(_ c: Unicode.Scalar) -> Bool {
        c == "_" || c == "$" || c.properties.isAlphabetic
    }

    private func isNamePart(_ c: Unicode.Scalar) -> Bool {
        isNameStart(c) || ("0"..."9").contains(c) || c == "-"
    }
}

private struct TokenStream {
    let tokens: [Token]
    let parser: ExpressionParser
    var i = 0

    var atEnd: Bool { i >= tokens.count }
    var peek: Token { tokens[i] }

    func isPunct(_ p: String) -> Bool { !atEnd && tokens[i].kind == .punct && tokens[i].text == p }

    mutating func expectPunct(_ p: String) throws(MappingError) {
        guard isPunct(p) else {
            let off = atEnd ? (tokens.last.map { $0.offset + $0.text.count } ?? 0) : peek.offset
            throw parser.fail(off, "expected '\(p)'")
        }
        i += 1
    }

    mutating func parsePipeline() throws(MappingError) -> Expression {
        var value = try parsePostfix()
        while isPunct("|") {
            i += 1
            guard !atEnd, peek.kind == .name else { throw parser.fail(atEnd ? 0 : peek.offset, "expected a function name after '|'") }
            let name = peek
            i += 1
            var args = [value]
            if isPunct("(") { args += try parseArguments() }
            value = .call(name.text, args, parser.location(name.offset))
        }
        return value
    }

    mutating func parseArguments() throws(MappingError) -> [Expression] {
        try expectPunct("(")
        var args: [Expression] = []
        if isPunct(")") {
            i += 1
            return args
        }
        while true {
            args.append(try parsePipeline())
            if isPunct(",") {
                i += 1
                continue
            }
            try expectPunct(")")
            return args
        }
    }

    mutating func parsePostfix() throws(MappingError) -> Expression {
        var value = try parsePrimary()
        while true {
            if isPunct(".") {
                i += 1
                guard !atEnd, peek.kind == .name else { throw parser.fail(atEnd ? 0 : peek.offset, "expected a field name after '.'") }
                value = .member(value, peek.text, parser.location(peek.offset))
                i += 1
            } else if isPunct("[") {
                let at = peek.offset
                i += 1
                var keys = [try parsePipeline()]
                while isPunct(",") {
                    i += 1
                    keys.append(try parsePipeline())
                }
                try expectPunct("]")
                value = .index(value, keys, parser.location(at))
            } else {
                return value
            }
        }
    }

    mutating func parsePrimary() throws(MappingError) -> Expression {
        guard !atEnd else { throw parser.fail(tokens.last.map { $0.offset + $0.text.count } ?? 0, "expression ends too early") }
        let t = peek
        i += 1
        switch t.kind {
        case .string: return .string(t.text, parser.location(t.offset))
        case .number: return .number(t.text, parser.location(t.offset))
        case .name:
            if isPunct("(") { return .call(t.text, try parseArguments(), parser.location(t.offset)) }
            return .name(t.text, parser.location(t.offset))
        case .punct:
            if t.text == "(" {
                let inner = try parsePipeline()
                try expectPunct(")")
                return inner
            }
            throw parser.fail(t.offset, "unexpected '\(t.text)' in expression")
        }
    }
}
