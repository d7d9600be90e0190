import FHIRModel
import FileIO

#if canImport(Glibc)
import Glibc
#endif

/// A JSON text parsed into a flat array of tokens over its bytes: no tree, no `String` per value.
///
/// The validator reads every resource of an artifact set; building `JSONValue` trees (an allocation per object,
/// array and string, then their release) cost more than all of its checks. A tape is parsed into storage that is
/// reused from file to file, and values are read in place. Syntax is exactly as strict as `JSONParser`, which is
/// asked for the line, column and message when a text does not parse.
///
/// Layout: an object token is followed by its members, each a key (string token) and the value's tokens; an array
/// token by its items. `next` skips a value with its subtree.
struct JSONTape: Sendable {
    enum Kind: UInt8, Sendable { case object, array, string, number, `true`, `false`, null }

    struct Token: Sendable {
        var kind: Kind
        /// Strings: holds a backslash escape, so its bytes are not its value.
        var escaped: Bool
        /// Members of an object, items of an array.
        var count: UInt32 = 0
        /// Index of the token after this value and its subtree.
        var next: UInt32 = 0
        /// Byte range: a string's without its quotes, a number's text, a container's from its opening bracket.
        var start: UInt32
        var end: UInt32 = 0
    }

    private(set) var bytes: [UInt8] = []
    private(set) var tokens: [Token] = []

    /// Parses `text` (taking it over); false when it is not one valid JSON value.
    mutating func parse(_ text: [UInt8]) -> Bool {
        bytes = text
        return build()
    }

    enum ReadResult { case read, unreadable, tooLarge(Int) }

    /// Reads a whole file, if it is a regular file of at most `limit` bytes, into the tape's storage when it is large
    /// enough (a tape reused from file to file), else into new storage, not zero-filled first (a prepared file's
    /// tape is new each time: zero-filling it cost the workers 3% of their time). `parse()` then parses it.
    mutating func read(_ path: String, limit: Int = DataFile.defaultMaxBytes) -> ReadResult {
        guard let reader = try? FileReader(path: path, releasingPages: true) else { return .unreadable }
        if reader.size > limit { return .tooLarge(reader.size) }
        var filled = 0
        // One byte more than the size, to see the end at once.
        var size = max(reader.size, 1) + 1
        if bytes.capacity < size {
            var failed = false
            bytes = [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                while filled < size {
                    guard let n = try? reader.read(into: UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[filled...])) else {
                        failed = true
                        break
                    }
                    if n == 0 { break }
                    filled += n
                }
                count = filled
            }
            if failed { return .unreadable }
            if filled > limit { return .tooLarge(filled) }  // it grew while read
            guard filled == size else { return .read }
            size = min(size * 2, limit + 1)  // it grew while read: read on
        } else {
            bytes.removeAll(keepingCapacity: true)
        }
        while true {
            if bytes.count < size { bytes.append(contentsOf: repeatElement(0, count: size - bytes.count)) }
            let n: Int
            do {
                n = try bytes.withUnsafeMutableBytes { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[filled...])) }
            } catch {
                return .unreadable
            }
            if n == 0 { break }
            filled += n
            if filled > limit { return .tooLarge(filled) }  // it grew while read
            if filled == bytes.count { size = min(bytes.count * 2, limit + 1) }
        }
        bytes.removeLast(bytes.count - filled)
        return .read
    }

    /// Parses what `read` loaded.
    mutating func parse() -> Bool {
        build()
    }

    /// Parses a copy of `text` into the reused storage (for NDJSON lines, valid only during a callback).
    mutating func parse(copying text: UnsafeBufferPointer<UInt8>) -> Bool {
        bytes.removeAll(keepingCapacity: true)
        bytes.append(contentsOf: text)
        return build()
    }

    private mutating func build() -> Bool {
        // The builder owns the token storage while it fills it (one reference: appends do not copy).
        var storage: [Token] = []
        swap(&storage, &tokens)
        storage.removeAll(keepingCapacity: true)
        // About one token per 6 bytes of FHIR JSON: a new tape (an NDJSON line parsed by a worker) grows once at most.
        if storage.capacity < bytes.count / 6 { storage.reserveCapacity(bytes.count / 6 + 16) }
        guard bytes.count < Int(UInt32.max) else { return false }
        let ok = bytes.withUnsafeBufferPointer { p in
            var builder = TapeBuilder(p: p, tokens: [])
            swap(&builder.tokens, &storage)
            let ok = builder.document()
            swap(&builder.tokens, &storage)
            return ok
        }
        swap(&storage, &tokens)
        return ok
    }

    // MARK: Reading

    @inline(__always) func kind(_ i: Int) -> Kind { tokens[i].kind }
    @inline(__always) func count(_ i: Int) -> Int { Int(tokens[i].count) }

    /// The value of the first member of object `i` whose key is `key` (nil when `i` is not an object or has none).
    func member(_ i: Int, _ key: StaticString) -> Int? {
        guard tokens[i].kind == .object else { return nil }
        var k = i + 1
        for _ in 0..<tokens[i].count {
            if equals(k, key) { return k + 1 }
            k = Int(tokens[k + 1].next)
        }
        return nil
    }

    /// Calls `body` with the key and value token of each member of object `i`.
    @inline(__always)
    func forEachMember(_ i: Int, _ body: (_ key: Int, _ value: Int) throws -> Void) rethrows {
        var k = i + 1
        for _ in 0..<tokens[i].count {
            try body(k, k + 1)
            k = Int(tokens[k + 1].next)
        }
    }

    /// Calls `body` with the position and token of each item of array `i`.
    @inline(__always)
    func forEachItem(_ i: Int, _ body: (_ position: Int, _ item: Int) throws -> Void) rethrows {
        var k = i + 1
        for n in 0..<Int(tokens[i].count) {
            try body(n, k)
            k = Int(tokens[k].next)
        }
    }

    /// Calls `body` with the token of each Identifier of the resource at token `resource`: the items of its
    /// `identifier` array, or its one Identifier object (Bundle, Composition, QuestionnaireResponse and a few other
    /// types have a single identifier).
    func forEachIdentifier(of resource: Int, _ body: (_ identifier: Int) -> Void) {
        guard let identifiers = member(resource, "identifier") else { return }
        switch kind(identifiers) {
        case .object: body(identifiers)
        case .array: forEachItem(identifiers) { _, identifier in if kind(identifier) == .object { body(identifier) } }
        default: return
        }
    }

    /// Whether token `i` is a string whose value is `s`.
    func equals(_ i: Int, _ s: StaticString) -> Bool {
        let t = tokens[i]
        guard t.kind == .string else { return false }
        if t.escaped { return string(i) == s.description }
        let n = Int(t.end - t.start)
        guard n == s.utf8CodeUnitCount else { return false }
        return bytes.withUnsafeBufferPointer { p in memcmp(p.baseAddress! + Int(t.start), s.utf8Start, n) == 0 }
    }

    /// A hash of the bytes of value `i` as written (a container from its opening to its closing bracket).
    func hashOfBytes(_ i: Int) -> UInt128 {
        hashOfBytes(Int(tokens[i].start)..<Int(tokens[i].end))
    }

    /// The hash of the bytes in `range` (of the text parsed).
    func hashOfBytes(_ range: Range<Int>) -> UInt128 {
        bytes.withUnsafeBufferPointer { p in FastHash.hash128(UnsafeBufferPointer(rebasing: p[range])) }
    }

    /// Where token `i`'s bytes start and end (a string's without its quotes).
    func start(_ i: Int) -> Int { Int(tokens[i].start) }
    func end(_ i: Int) -> Int { Int(tokens[i].end) }
    var tokenCount: Int { tokens.count }

    /// Whether string tokens `a` and `b` hold the same value (escapes undone).
    func sameString(_ a: Int, _ b: Int) -> Bool {
        withString(a) { x in withString(b) { y in sameBytes(x, y) } ?? false } ?? false
    }

    /// The value of the first member of object `i` whose key is the string token `key` without its first
    /// `dropFirst` bytes, or with `prefix` before it: the twin of `_given` is `given`, and the reverse.
    func twin(in i: Int, of key: Int) -> Int? {
        guard tokens[i].kind == .object else { return nil }
        return withString(key) { name -> Int? in
            let underscore = name.first == UInt8(ascii: "_")
            var k = i + 1
            for _ in 0..<tokens[i].count {
                let found = withString(k) { other -> Bool in
                    underscore ? other.elementsEqual(name.dropFirst()) : other.first == UInt8(ascii: "_") && other.dropFirst().elementsEqual(name)
                } ?? false
                if found { return k + 1 }
                k = Int(tokens[k + 1].next)
            }
            return nil
        } ?? nil
    }

    /// The item at `position` of array `i` (nil when out of range).
    func item(_ i: Int, _ position: Int) -> Int? {
        guard tokens[i].kind == .array, position < count(i) else { return nil }
        var k = i + 1
        for _ in 0..<position { k = Int(tokens[k].next) }
        return k
    }

    /// Whether string token `i` contains `s` (bytes compared in place: the generic `firstRange(of:)` cost a tenth of
    /// a validation).
    func contains(_ i: Int, _ s: StaticString) -> Bool {
        withString(i) { p in
            let n = s.utf8CodeUnitCount
            guard n > 0, p.count >= n else { return n == 0 }
            for start in 0...(p.count - n) where p[start] == s.utf8Start[0] && memcmp(p.baseAddress! + start, s.utf8Start, n) == 0 {
                return true
            }
            return false
        } ?? false
    }

    /// Whether token `i` is a string that starts with `prefix`.
    func hasPrefix(_ i: Int, _ prefix: StaticString) -> Bool {
        withString(i) { p in
            p.count >= prefix.utf8CodeUnitCount && memcmp(p.baseAddress!, prefix.utf8Start, prefix.utf8CodeUnitCount) == 0
        } ?? false
    }

    /// The first control character of string token `i` that FHIR strings forbid (below U+0020 except tab, line feed
    /// and carriage return), or nil. Only an escaped string can hold one: the parser refuses raw control bytes.
    func forbiddenControlCharacter(_ i: Int) -> UInt8? {
        let t = tokens[i]
        guard t.kind == .string, t.escaped else { return nil }
        // A raw control character is not valid JSON, so only an escape can give one: \b, \f or \u0000-\u001F.
        // The escapes are read in place (a note full of \n is not decoded for this).
        return bytes.withUnsafeBufferPointer { p -> UInt8? in
            func hex(_ b: UInt8) -> UInt8 { b <= UInt8(ascii: "9") ? b &- UInt8(ascii: "0") : (b | 0x20) &- UInt8(ascii: "a") &+ 10 }
            var k = Int(t.start)
            let end = Int(t.end)
            while k + 1 < end {
                guard p[k] == UInt8(ascii: "\\") else {
                    k += 1
                    continue
                }
                switch p[k + 1] {
                case UInt8(ascii: "b"): return 0x08
                case UInt8(ascii: "f"): return 0x0C
                case UInt8(ascii: "u") where k + 5 < end && p[k + 2] == UInt8(ascii: "0") && p[k + 3] == UInt8(ascii: "0") && p[k + 4] <= UInt8(ascii: "1"):
                    let c = hex(p[k + 4]) << 4 | hex(p[k + 5])
                    if c != 0x09 && c != 0x0A && c != 0x0D { return c }
                default: break
                }
                k += 2  // past the escape's first two bytes (a \\ is not the start of another)
            }
            return nil
        }
    }

    /// Whether string token `i` is `""` (an escape is never empty, so its raw bytes tell).
    func isEmptyString(_ i: Int) -> Bool { tokens[i].start == tokens[i].end }

    /// The value of string token `i` (nil when it is not a string).
    func string(_ i: Int) -> String? {
        let t = tokens[i]
        guard t.kind == .string else { return nil }
        return bytes.withUnsafeBufferPointer { p in
            let raw = UnsafeBufferPointer(rebasing: p[Int(t.start)..<Int(t.end)])
            return t.escaped ? String(decoding: JSONTape.unescape(raw), as: UTF8.self) : String(decoding: raw, as: UTF8.self)
        }
    }

    /// The text of a number token (nil for other kinds).
    func numberText(_ i: Int) -> String? {
        let t = tokens[i]
        guard t.kind == .number else { return nil }
        return String(decoding: bytes[Int(t.start)..<Int(t.end)], as: UTF8.self)
    }

    /// Calls `body` with the UTF-8 bytes of string token `i`'s value (unescaped); nil when it is not a string.
    @inline(__always)
    func withString<R>(_ i: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R? {
        let t = tokens[i]
        guard t.kind == .string else { return nil }
        if t.escaped {
            let decoded = bytes.withUnsafeBufferPointer { p in JSONTape.unescape(UnsafeBufferPointer(rebasing: p[Int(t.start)..<Int(t.end)])) }
            return try decoded.withUnsafeBufferPointer(body)
        }
        return try bytes.withUnsafeBufferPointer { p in try body(UnsafeBufferPointer(rebasing: p[Int(t.start)..<Int(t.end)])) }
    }

    /// One step from a container into a member or item, on the way to a token.
    enum Step {
        case key(Int)  // the key's token
        case index(Int)
    }

    /// The steps from the value at `root` down to token `target`, found by descending the tape: paths are worked
    /// out only for findings, never on the hot path.
    func steps(to target: Int, from root: Int) -> [Step] {
        var out: [Step] = []
        var i = root
        descending: while i != target {
            var k = i + 1
            switch tokens[i].kind {
            case .object:
                for _ in 0..<tokens[i].count {
                    let v = k + 1
                    if target >= v && target < Int(tokens[v].next) {
                        out.append(.key(k))
                        i = v
                        continue descending
                    }
                    k = Int(tokens[v].next)
                }
            case .array:
                for n in 0..<Int(tokens[i].count) {
                    if target >= k && target < Int(tokens[k].next) {
                        out.append(.index(n))
                        i = k
                        continue descending
                    }
                    k = Int(tokens[k].next)
                }
            default: break
            }
            break  // `target` is not inside `i`
        }
        return out
    }

    /// The JSON pointer (RFC 6901) of token `target` inside the value at `root`.
    func pointer(to target: Int, from root: Int) -> String {
        steps(to: target, from: root).map { step in
            switch step {
            case .key(let k): "/" + escapePointer(string(k) ?? "")
            case .index(let n): "/\(n)"
            }
        }.joined()
    }

    /// The member keys on the way from `root` to `target` (array positions left out): a FHIR path's elements.
    func keys(to target: Int, from root: Int) -> [String] {
        steps(to: target, from: root).compactMap { if case .key(let k) = $0 { string(k) ?? "" } else { nil } }
    }

    /// Decodes the escapes of a string's raw bytes (already checked by the parser).
    static func unescape(_ raw: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var i = 0
        func hex4(_ at: Int) -> UInt32 {
            var v: UInt32 = 0
            for k in at..<at + 4 {
                let b = raw[k]
                let d: UInt32 = b <= 0x39 ? UInt32(b - 0x30) : UInt32((b | 0x20) - 0x61 + 10)
                v = v << 4 | d
            }
            return v
        }
        while i < raw.count {
            let b = raw[i]
            if b != UInt8(ascii: "\\") {
                out.append(b)
                i += 1
                continue
            }
            let e = raw[i + 1]
            i += 2
            if let byte = JSONEscape.byte(for: e) {
                out.append(byte)
                continue
            }
            // `\uXXXX` (the parser refused any other letter), a surrogate pair as two.
            var scalar = hex4(i)
            i += 4
            if (0xD800...0xDBFF).contains(scalar) {
                let low = hex4(i + 2)
                i += 6
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            }
            if let u = Unicode.Scalar(scalar) { out.append(contentsOf: UTF8.encode(u)!) }
        }
        return out
    }
}

/// Fills a tape from bytes; mirrors `JSONParser`'s grammar (RFC 8259, depth limit 512, UTF-8 checked).
private struct TapeBuilder {
    let p: UnsafeBufferPointer<UInt8>
    var tokens: [JSONTape.Token]
    var pos = 0
    var depth = 0

    mutating func document() -> Bool {
        skipWhitespace()
        guard value() else { return false }
        skipWhitespace()
        return pos == p.count
    }

    @inline(__always) mutating func skipWhitespace() {
        while pos < p.count {
            switch p[pos] {
            case 0x20, 0x0A, 0x0D, 0x09: pos += 1
            default: return
            }
        }
    }

    mutating func value() -> Bool {
        guard pos < p.count else { return false }
        switch p[pos] {
        case UInt8(ascii: "{"): return container(object: true)
        case UInt8(ascii: "["): return container(object: false)
        case UInt8(ascii: "\""): return string()
        case UInt8(ascii: "t"): return literal("true", .true)
        case UInt8(ascii: "f"): return literal("false", .false)
        case UInt8(ascii: "n"): return literal("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return number()
        default: return false
        }
    }

    mutating func literal(_ text: StaticString, _ kind: JSONTape.Kind) -> Bool {
        let n = text.utf8CodeUnitCount
        guard pos + n <= p.count, memcmp(p.baseAddress! + pos, text.utf8Start, n) == 0 else { return false }
        tokens.append(JSONTape.Token(kind: kind, escaped: false, next: UInt32(tokens.count + 1), start: UInt32(pos), end: UInt32(pos + n)))
        pos += n
        return true
    }

    mutating func container(object: Bool) -> Bool {
        depth += 1
        defer { depth -= 1 }
        if depth > 512 { return false }
        let index = tokens.count
        tokens.append(JSONTape.Token(kind: object ? .object : .array, escaped: false, start: UInt32(pos)))
        let close = object ? UInt8(ascii: "}") : UInt8(ascii: "]")
        pos += 1
        var count: UInt32 = 0
        skipWhitespace()
        if pos < p.count && p[pos] == close {
            pos += 1
        } else {
            while true {
                skipWhitespace()
                if object {
                    guard pos < p.count, p[pos] == UInt8(ascii: "\""), string() else { return false }
                    skipWhitespace()
                    guard pos < p.count, p[pos] == UInt8(ascii: ":") else { return false }
                    pos += 1
                    skipWhitespace()
                }
                guard value() else { return false }
                count += 1
                skipWhitespace()
                guard pos < p.count else { return false }
                if p[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if p[pos] == close { pos += 1; break }
                return false
            }
        }
        tokens[index].count = count
        tokens[index].next = UInt32(tokens.count)
        tokens[index].end = UInt32(pos)
        return true
    }

    @inline(__always) func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

    mutating func number() -> Bool {
        let start = pos
        if p[pos] == UInt8(ascii: "-") { pos += 1 }
        guard pos < p.count, isDigit(p[pos]) else { return false }
        if p[pos] == UInt8(ascii: "0") {
            pos += 1
            if pos < p.count && isDigit(p[pos]) { return false }
        } else {
            while pos < p.count && isDigit(p[pos]) { pos += 1 }
        }
        if pos < p.count && p[pos] == UInt8(ascii: ".") {
            pos += 1
            guard pos < p.count, isDigit(p[pos]) else { return false }
            while pos < p.count && isDigit(p[pos]) { pos += 1 }
        }
        if pos < p.count && (p[pos] == UInt8(ascii: "e") || p[pos] == UInt8(ascii: "E")) {
            pos += 1
            if pos < p.count && (p[pos] == UInt8(ascii: "+") || p[pos] == UInt8(ascii: "-")) { pos += 1 }
            guard pos < p.count, isDigit(p[pos]) else { return false }
            while pos < p.count && isDigit(p[pos]) { pos += 1 }
        }
        tokens.append(JSONTape.Token(kind: .number, escaped: false, next: UInt32(tokens.count + 1), start: UInt32(start), end: UInt32(pos)))
        return true
    }

    mutating func string() -> Bool {
        pos += 1
        let start = pos
        var escaped = false
        var ascii = true
        while pos < p.count {
            // Eight plain bytes at a time: none a quote, backslash, control character or non-ASCII.
            while pos + 8 <= p.count {
                let w = UnsafeRawPointer(p.baseAddress! + pos).loadUnaligned(as: UInt64.self)
                let ones: UInt64 = 0x0101_0101_0101_0101
                let high: UInt64 = 0x8080_8080_8080_8080
                let quote = w ^ (ones &* 0x22)
                let backslash = w ^ (ones &* 0x5C)
                let special = ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | ((w &- ones &* 0x20) & ~w) | w
                if special & high != 0 {
                    // The lowest flagged byte is a real match (the tricks above only misfire above one).
                    pos += (special & high).trailingZeroBitCount >> 3
                    break
                }
                pos += 8
            }
            guard pos < p.count else { break }
            let b = p[pos]
            if b == UInt8(ascii: "\"") {
                let end = pos
                pos += 1
                if !ascii && !validUTF8(start, end) { return false }
                tokens.append(JSONTape.Token(kind: .string, escaped: escaped, next: UInt32(tokens.count + 1), start: UInt32(start), end: UInt32(end)))
                return true
            }
            if b < 0x20 { return false }
            if b >= 0x80 { ascii = false }
            if b == UInt8(ascii: "\\") {
                escaped = true
                guard escape() else { return false }
                continue
            }
            pos += 1
        }
        return false
    }

    /// Checks one escape sequence at `pos` (the backslash) and moves past it.
    mutating func escape() -> Bool {
        guard pos + 1 < p.count else { return false }
        if JSONEscape.byte(for: p[pos + 1]) != nil {
            pos += 2
            return true
        }
        switch p[pos + 1] {
        case UInt8(ascii: "u"):
            pos += 2
            guard let high = hex4() else { return false }
            if (0xD800...0xDBFF).contains(high) {
                guard pos + 1 < p.count, p[pos] == UInt8(ascii: "\\"), p[pos + 1] == UInt8(ascii: "u") else { return false }
                pos += 2
                guard let low = hex4(), (0xDC00...0xDFFF).contains(low) else { return false }
            } else if (0xDC00...0xDFFF).contains(high) {
                return false
            }
            return true
        default:
            return false
        }
    }

    mutating func hex4() -> UInt32? {
        guard pos + 4 <= p.count else { return nil }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let b = p[pos]
            let d: UInt32
            switch b {
            case 0x30...0x39: d = UInt32(b - 0x30)
            case 0x61...0x66: d = UInt32(b - 0x61 + 10)
            case 0x41...0x46: d = UInt32(b - 0x41 + 10)
            default: return nil
            }
            v = v << 4 | d
            pos += 1
        }
        return v
    }

    /// Well-formed UTF-8 (no overlong forms, surrogates or code points above U+10FFFF), as `String(validating:)`.
    func validUTF8(_ start: Int, _ end: Int) -> Bool {
        var i = start
        while i < end {
            let b = p[i]
            if b < 0x80 { i += 1; continue }
            let n: Int
            var lo: UInt8 = 0x80
            var hi: UInt8 = 0xBF
            switch b {
            case 0xC2...0xDF: n = 1
            case 0xE0: n = 2; lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: n = 2
            case 0xED: n = 2; hi = 0x9F
            case 0xF0: n = 3; lo = 0x90
            case 0xF1...0xF3: n = 3
            case 0xF4: n = 3; hi = 0x8F
            default: return false
            }
            guard i + n < end else { return false }
            let b1 = p[i + 1]
            guard b1 >= lo && b1 <= hi else { return false }
            var k = 2
            while k <= n {
                guard p[i + k] >= 0x80 && p[i + k] <= 0xBF else { return false }
                k += 1
            }
            i += n + 1
        }
        return true
    }
}

/// Whether two byte ranges hold the same bytes (`elementsEqual` compares element by element, generically).
@inline(__always)
func sameBytes(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
    a.count == b.count && (a.count == 0 || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0)
}
