/// Checks a FHIR narrative (`Narrative.div`): well-formed XHTML as FHIR R4 requires it (narrative.html).
///
/// A small XML reader of its own rather than libxml2: the validator also runs inside the uploader, which must not
/// need libxml2, and a narrative is a short fragment whose rules fit here: well-formed XML without a DOCTYPE (so no
/// entity but XML's five and character references: `&nbsp;` is HTML, not XML), one root `div` in the XHTML
/// namespace, only the elements of txt-1 (no script, form, iframe, object, ...), no event handler attribute nor
/// `javascript:` URL, and some text or an image (txt-2).
enum NarrativeChecker {
    static let xhtml = "http://www.w3.org/1999/xhtml"

    /// The elements FHIR R4 allows in a narrative (invariant txt-1: HTML 4.0 chapters 7-11 and 15 without forms,
    /// scripts, frames, objects, head and body), as the reference validator lists them.
    static let allowedElements: Set<String> = [
        "a", "abbr", "acronym", "address", "area", "b", "bdo", "big", "blockquote", "br", "caption", "cite", "code", "col",
        "colgroup", "dd", "dfn", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li",
        "map", "ol", "p", "pre", "q", "samp", "small", "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th",
        "thead", "tr", "tt", "ul", "var",
    ]

    /// Why `text` is not a valid narrative, or nil when it is one.
    static func problem(_ text: UnsafeBufferPointer<UInt8>) -> String? {
        var reader = Reader(p: text)
        do {
            try reader.document()
            return nil
        } catch {
            return error.message
        }
    }

    struct Problem: Error {
        let message: String
    }

    private struct Reader {
        let p: UnsafeBufferPointer<UInt8>
        var i = 0
        /// Open elements: qualified name, and how many namespace declarations each added to `namespaces`.
        var open: [(name: ArraySlice<UInt8>, declared: Int)] = []
        /// In-scope namespace declarations, innermost last: prefix ("" for the default) and URI.
        var namespaces: [(prefix: String, uri: String)] = []
        var elements = 0
        var hasContent = false
        var rootClosed = false

        mutating func document() throws(Problem) {
            skipSpace()
            if starts("<?xml") { try skip(past: "?>", what: "XML declaration") }
            while i < p.count {
                if p[i] == UInt8(ascii: "<") {
                    try markup()
                } else {
                    try text()
                }
            }
            if let last = open.last { throw Problem(message: "never closes <\(string(last.name))>") }
            if elements == 0 { throw Problem(message: "must be one <div xmlns=\"\(xhtml)\"> element") }
            if !hasContent { throw Problem(message: "has no text nor image (txt-2: a narrative must have some non-whitespace content)") }
        }

        func string<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 { String(decoding: Array(bytes), as: UTF8.self) }

        func starts(_ s: StaticString) -> Bool {
            let n = s.utf8CodeUnitCount
            guard i + n <= p.count else { return false }
            for k in 0..<n where p[i + k] != s.utf8Start[k] { return false }
            return true
        }

        mutating func skip(past end: StaticString, what: String) throws(Problem) {
            while i < p.count {
                if starts(end) {
                    i += end.utf8CodeUnitCount
                    return
                }
                i += 1
            }
            throw Problem(message: "never closes a \(what)")
        }

        static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }
        static func isNameByte(_ b: UInt8) -> Bool {
            (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39) || b == 0x2D || b == 0x2E || b == 0x5F || b == 0x3A || b >= 0x80
        }

        mutating func skipSpace() { while i < p.count && Self.isSpace(p[i]) { i += 1 } }

        mutating func name(_ what: String) throws(Problem) -> ArraySlice<UInt8> {
            let start = i
            guard i < p.count, Self.isNameByte(p[i]), !(p[i] >= 0x30 && p[i] <= 0x39), p[i] != 0x2D, p[i] != 0x2E else {
                throw Problem(message: "lacks \(what) at byte \(i + 1)")
            }
            while i < p.count && Self.isNameByte(p[i]) { i += 1 }
            return ArraySlice(p[start..<i])
        }

        mutating func text() throws(Problem) {
            while i < p.count && p[i] != UInt8(ascii: "<") {
                let b = p[i]
                if b == UInt8(ascii: "&") {
                    try reference()
                    if !open.isEmpty { hasContent = true }
                    continue
                }
                if !Self.isSpace(b) {
                    if open.isEmpty { throw Problem(message: "has text outside its <div>") }
                    hasContent = true
                }
                i += 1
            }
        }

        /// `&lt;` and the other four entities XML defines, or a character reference.
        mutating func reference() throws(Problem) {
            let start = i
            i += 1
            guard let semicolon = p[i...].prefix(12).firstIndex(of: UInt8(ascii: ";")) else {
                throw Problem(message: "has a '&' that starts no entity; write &amp;")
            }
            let body = string(p[i..<semicolon])
            i = semicolon + 1
            if ["lt", "gt", "amp", "quot", "apos"].contains(body) { return }
            if body.hasPrefix("#x"), let n = UInt32(body.dropFirst(2), radix: 16), Self.isXMLCharacter(n) { return }
            if body.hasPrefix("#"), !body.hasPrefix("#x"), let n = UInt32(body.dropFirst()), Self.isXMLCharacter(n) { return }
            throw Problem(message: "holds \(string(p[start..<i])), which XML does not define (an HTML entity? write a character reference such as &#160;)")
        }

        static func isXMLCharacter(_ n: UInt32) -> Bool {
            n == 0x9 || n == 0xA || n == 0xD || (0x20...0xD7FF).contains(n) || (0xE000...0xFFFD).contains(n) || (0x10000...0x10FFFF).contains(n)
        }

        mutating func markup() throws(Problem) {
            if starts("<!--") { return try skip(past: "-->", what: "comment") }
            if starts("<![CDATA[") {
                guard !open.isEmpty else { throw Problem(message: "has a CDATA section outside its <div>") }
                let start = i + 9
                try skip(past: "]]>", what: "CDATA section")
                if p[start..<(i - 3)].contains(where: { !Self.isSpace($0) }) { hasContent = true }
                return
            }
            if starts("<!") { throw Problem(message: "holds a DOCTYPE or other declaration, which a narrative cannot have") }
            if starts("<?") { return try skip(past: "?>", what: "processing instruction") }
            if starts("</") { return try endTag() }
            try startTag()
        }

        mutating func startTag() throws(Problem) {
            if rootClosed { throw Problem(message: "has more than one root element; wrap everything in one <div>") }
            i += 1
            let qname = try name("an element name")
            var attributes: [(name: ArraySlice<UInt8>, value: String)] = []
            var empty = false
            while true {
                let hadSpace = i < p.count && Self.isSpace(p[i])
                skipSpace()
                guard i < p.count else { throw Problem(message: "never closes <\(string(qname))>") }
                if p[i] == UInt8(ascii: ">") { i += 1; break }
                if starts("/>") { i += 2; empty = true; break }
                guard hadSpace else { throw Problem(message: "has a malformed <\(string(qname))> at byte \(i + 1)") }
                let attribute = try name("an attribute name")
                skipSpace()
                guard i < p.count, p[i] == UInt8(ascii: "=") else { throw Problem(message: "gives attribute \(string(attribute)) of <\(string(qname))> no value") }
                i += 1
                skipSpace()
                guard i < p.count, p[i] == UInt8(ascii: "\"") || p[i] == UInt8(ascii: "'") else {
                    throw Problem(message: "leaves the value of attribute \(string(attribute)) of <\(string(qname))> unquoted")
                }
                let quote = p[i]
                i += 1
                let start = i
                while i < p.count && p[i] != quote {
                    if p[i] == UInt8(ascii: "<") { throw Problem(message: "has '<' in the value of attribute \(string(attribute)); write &lt;") }
                    if p[i] == UInt8(ascii: "&") { try reference() } else { i += 1 }
                }
                guard i < p.count else { throw Problem(message: "never closes the value of attribute \(string(attribute))") }
                let value = string(p[start..<i])
                i += 1
                if attributes.contains(where: { $0.name == attribute }) {
                    throw Problem(message: "gives <\(string(qname))> attribute \(string(attribute)) twice")
                }
                attributes.append((attribute, value))
            }
            // Namespaces declared here apply to the element itself.
            var declared = 0
            for (attribute, value) in attributes {
                let a = string(attribute)
                if a == "xmlns" { namespaces.append(("", value)); declared += 1 }
                if a.hasPrefix("xmlns:") { namespaces.append((String(a.dropFirst(6)), value)); declared += 1 }
            }
            let q = string(qname)
            let prefix = q.firstIndex(of: ":").map { String(q[..<$0]) } ?? ""
            let local = q.firstIndex(of: ":").map { String(q[q.index(after: $0)...]) } ?? q
            let uri = namespaces.last(where: { $0.prefix == prefix })?.uri
            elements += 1
            if elements == 1 && (local != "div" || uri != xhtml) {
                throw Problem(message: "must be one <div xmlns=\"\(xhtml)\"> element, not <\(q)>\(uri == nil ? " without the XHTML namespace" : "")")
            }
            guard uri == xhtml, Self.allowed(local) else {
                throw Problem(message: "holds <\(q)>, which a FHIR narrative does not allow (txt-1)")
            }
            for (attribute, value) in attributes {
                let a = string(attribute).lowercased()
                if a.hasPrefix("on") { throw Problem(message: "gives <\(q)> the event handler attribute \(a), which a FHIR narrative does not allow (txt-1)") }
                if value.drop(while: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }).lowercased().hasPrefix("javascript:") {
                    throw Problem(message: "has a javascript: URL in <\(q) \(a)>, which a FHIR narrative does not allow (txt-1)")
                }
            }
            if local == "img" { hasContent = true }
            if empty {
                namespaces.removeLast(declared)
                if open.isEmpty { rootClosed = true }
            } else {
                open.append((qname, declared))
            }
        }

        static func allowed(_ local: String) -> Bool { allowedElements.contains(local) }

        mutating func endTag() throws(Problem) {
            i += 2
            let qname = try name("an element name")
            skipSpace()
            guard i < p.count, p[i] == UInt8(ascii: ">") else { throw Problem(message: "has a malformed </\(string(qname))>") }
            i += 1
            guard let last = open.popLast() else { throw Problem(message: "has </\(string(qname))>, which closes no element") }
            guard last.name == qname else { throw Problem(message: "closes <\(string(last.name))> with </\(string(qname))>") }
            namespaces.removeLast(last.declared)
            if open.isEmpty { rootClosed = true }
        }
    }
}
