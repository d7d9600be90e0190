/// Serialises `JSONValue` into UTF-8 bytes, compact (NDJSON) or indented (bundle files for review).
///
/// Hand-written because Foundation's `JSONEncoder` is several times slower and its key order is not stable on
/// Linux. The output is canonical for a given value: the same value always gives the same bytes.
public struct JSONWriter: Sendable {
    /// Spaces per indentation level; nil writes compact JSON on one line.
    public var indent: Int?

    public init(indent: Int? = nil) {
        self.indent = indent
    }

    /// Appends the serialisation of `value` to `out`, as if nested `level` levels deep (for indentation).
    public func write(_ value: JSONValue, into out: inout [UInt8], level: Int = 0) {
        switch value {
        case .null: out.append(contentsOf: JSONWriter.nullBytes)
        case .bool(let b): out.append(contentsOf: b ? JSONWriter.trueBytes : JSONWriter.falseBytes)
        case .number(let n): out.append(contentsOf: n.utf8)
        case .string(let s): JSONWriter.writeString(s, into: &out)
        case .array(let items):
            if items.isEmpty {
                out.append(UInt8(ascii: "[")); out.append(UInt8(ascii: "]")); return
            }
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                newline(level + 1, &out)
                write(item, into: &out, level: level + 1)
            }
            newline(level, &out)
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            if members.isEmpty {
                out.append(UInt8(ascii: "{")); out.append(UInt8(ascii: "}")); return
            }
            out.append(UInt8(ascii: "{"))
            for (i, member) in members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                newline(level + 1, &out)
                JSONWriter.writeString(member.key, into: &out)
                out.append(UInt8(ascii: ":"))
                if indent != nil { out.append(UInt8(ascii: " ")) }
                write(member.value, into: &out, level: level + 1)
            }
            newline(level, &out)
            out.append(UInt8(ascii: "}"))
        }
    }

    /// The serialisation of `value` as a new byte array.
    public func bytes(_ value: JSONValue) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        write(value, into: &out)
        return out
    }

    /// The serialisation of `value` as a String.
    public func string(_ value: JSONValue) -> String {
        String(decoding: bytes(value), as: UTF8.self)
    }

    @inline(__always)
    private func newline(_ level: Int, _ out: inout [UInt8]) {
        guard let indent else { return }
        out.append(UInt8(ascii: "\n"))
        var count = level * indent
        while count > 0 {
            let n = min(count, JSONWriter.spaces.count)
            out.append(contentsOf: JSONWriter.spaces[0..<n])
            count -= n
        }
    }

    private static let spaces = [UInt8](repeating: UInt8(ascii: " "), count: 64)
    private static let nullBytes = Array("null".utf8)
    private static let trueBytes = Array("true".utf8)
    private static let falseBytes = Array("false".utf8)

    /// Appends `s` as a JSON string literal. Escapes only what JSON requires (quote, backslash, control characters),
    /// so non-ASCII text stays readable UTF-8.
    @inlinable
    /// - Returns: the first control character that FHIR strings forbid (below 0x20 but tab, line feed and carriage
    ///   return), escaped as JSON asks, or nil when there is none: found on the escape path, so it costs nothing.
    @discardableResult
    public static func writeString<Sink: JSONByteSink>(_ s: String, into out: inout Sink) -> UInt8? {
        if let forbidden = s.utf8.withContiguousStorageIfAvailable({ writeString(utf8: $0, into: &out) }) { return forbidden }
        var copy = s  // a bridged or lazy string: make it native first
        return copy.withUTF8 { writeString(utf8: $0, into: &out) }
    }

    /// Appends UTF-8 text as a JSON string literal (see `writeString(_:into:)`). Inlinable, so that each kind of
    /// sink gets its own compiled copy (this runs for every string of every resource).
    @inlinable @discardableResult
    public static func writeString<Sink: JSONByteSink>(utf8 buffer: UnsafeBufferPointer<UInt8>, into out: inout Sink) -> UInt8? {
        out.append(UInt8(ascii: "\""))
        var forbidden: UInt8?
        var runStart = 0
        var i = 0
        let n = buffer.count
        while i < n {
            // Eight plain bytes at a time: none a quote, backslash or control character (the lowest flagged byte is
            // a real one; the borrow tricks only misfire above it).
            while i + 8 <= n {
                let w = UInt64(littleEndian: UnsafeRawPointer(buffer.baseAddress! + i).loadUnaligned(as: UInt64.self))
                let ones: UInt64 = 0x0101_0101_0101_0101
                let quote = w ^ (ones &* 0x22)
                let backslash = w ^ (ones &* 0x5C)
                let special = ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | ((w &- ones &* 0x20) & ~w)
                let flagged = special & 0x8080_8080_8080_8080
                if flagged != 0 {
                    i += flagged.trailingZeroBitCount >> 3
                    break
                }
                i += 8
            }
            guard i < n else { break }
            let byte = buffer[i]
            if byte >= 0x20 && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\") {
                i += 1
                continue
            }
            if runStart < i { out.append(bytes: UnsafeBufferPointer(rebasing: buffer[runStart..<i])) }
            out.append(UInt8(ascii: "\\"))
            switch byte {
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\""))
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
            case 0x0A: out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(UInt8(ascii: "r"))
            case 0x09: out.append(UInt8(ascii: "t"))
            case 0x08:
                out.append(UInt8(ascii: "b"))
                if forbidden == nil { forbidden = byte }
            case 0x0C:
                out.append(UInt8(ascii: "f"))
                if forbidden == nil { forbidden = byte }
            default:
                if forbidden == nil { forbidden = byte }
                let hex = { (d: UInt8) -> UInt8 in d < 10 ? d + 0x30 : d + 0x57 }
                out.append(UInt8(ascii: "u")); out.append(UInt8(ascii: "0")); out.append(UInt8(ascii: "0"))
                out.append(hex(byte >> 4)); out.append(hex(byte & 0xF))
            }
            i += 1
            runStart = i
        }
        if runStart < n { out.append(bytes: UnsafeBufferPointer(rebasing: buffer[runStart..<n])) }
        out.append(UInt8(ascii: "\""))
        return forbidden
    }
}

/// Where JSON text is written: a byte array, or a renderer's own buffer.
public protocol JSONByteSink {
    mutating func append(_ byte: UInt8)
    mutating func append(bytes: UnsafeBufferPointer<UInt8>)
}

extension Array: JSONByteSink where Element == UInt8 {
    @inlinable
    public mutating func append(bytes: UnsafeBufferPointer<UInt8>) { append(contentsOf: bytes) }
}
