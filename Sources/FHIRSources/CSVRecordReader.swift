
#if canImport(Glibc)
import Glibc
#endif

/// A problem that stops reading a source file, with the file, the 1-based line and column, and what to do.
public struct SourceError: Error, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int?
    public var message: String

    public init(file: String, line: Int, column: Int? = nil, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String {
        "\(file):\(line):\(column.map { "\($0):" } ?? "") \(message)"
    }
}

/// Streams an RFC 4180 CSV file: quoted fields with delimiters, doubled quotes and line breaks; CRLF or LF; UTF-8
/// with or without a byte order mark, or a declared encoding decoded to UTF-8 as it is read; the first row is the
/// header.
///
/// A byte-level state machine over 1 MiB reads: the CSV libraries available here measured about ten times slower.
/// Strings are made only for finished fields. A row with the wrong number of fields or bytes that are not UTF-8
/// becomes a reject naming its line; reading goes on.
public final class CSVRecordReader: RecordReader {
    // The reader is used by one thread at a time; its hot state skips the runtime exclusivity checks (about 6 a row).
    public let path: String
    @exclusivity(unchecked) public private(set) var fieldNames: [String]
    public var bytesRead: Int { text.file.bytesRead }
    private let text: SourceText
    private let delimiter: UInt8
    private let quote: UInt8
    @exclusivity(unchecked) private var buffer: [UInt8]
    @exclusivity(unchecked) private var start = 0
    @exclusivity(unchecked) private var end = 0
    @exclusivity(unchecked) private var eof = false
    /// Line number of the next unread byte.
    @exclusivity(unchecked) private var line = 1
    /// The encoding the mapping declares; nil: UTF-8, and a file that is not stops with an error naming the likely
    /// encoding (instead of one reject per row with an accent).
    private let declared: SourceEncoding?

    /// Opens `path` and reads its header row.
    public init(path: String, delimiter: UInt8 = UInt8(ascii: ","), quote: UInt8 = UInt8(ascii: "\""), encoding: SourceEncoding? = nil) throws {
        self.path = path
        self.delimiter = delimiter
        self.quote = quote
        declared = encoding
        buffer = [UInt8](repeating: 0, count: 1 << 20)
        text = try SourceText(path: path, encoding: encoding)
        fieldNames = []
        try fill()
        var header: [[UInt8]]? = nil
        while header == nil {
            guard let row = try readRow() else {
                throw SourceError(file: path, line: 1, message: "the file is empty: a header row with the column names is expected")
            }
            if row.fieldCount == 1 && rowBytes.isEmpty { continue }  // leading blank lines
            if row.unterminated { throw SourceError(file: path, line: row.line, message: "the header row has a quote that is never closed") }
            var from = 0
            header = fieldEnds.map { to in
                defer { from = to }
                return Array(rowBytes[from..<to])
            }
        }
        var names: [String] = []
        var columnOf: [String: Int] = [:]  // a set, not a scan: a header of 100,000 columns is read in linear time
        for (i, raw) in header!.enumerated() {
            // NUL is valid UTF-8, but in a header it means UTF-16 read as bytes.
            guard let s = String(validating: raw, as: UTF8.self), declared != nil || !raw.contains(0) else {
                throw raw.withUnsafeBufferPointer { notDecodable(line: 1, field: i, column: "of the header", $0) }
            }
            let name = s.trimmingWhitespace
            // Columns without a name (the trailing commas a spreadsheet leaves) cannot be named by a mapping, so
            // several of them are no ambiguity.
            if !name.isEmpty, let j = columnOf.updateValue(i, forKey: name) {
                throw SourceError(file: path, line: 1, message: "the header names column '\(name)' twice (columns \(j + 1) and \(i + 1))")
            }
            names.append(name)
        }
        fieldNames = names
    }

    public var sha256: String { text.file.digest ?? "" }

    public func next() throws -> ReadResult? {
        while true {
            guard let row = try readRow() else { return nil }
            if row.fieldCount == 1 && rowBytes.isEmpty && !row.quoted { continue }  // blank line
            if let reason = problem(row) { return .reject(line: row.line, reason: reason) }
            var values: [FieldValue] = []
            values.reserveCapacity(row.fieldCount)
            var failed: Int?
            rowBytes.withUnsafeBufferPointer { p in
                var from = 0
                for (i, to) in fieldEnds.enumerated() {
                    guard let s = utf8String(UnsafeBufferPointer(rebasing: p[from..<to])) else {
                        failed = i
                        return
                    }
                    values.append(.single(s))
                    from = to
                }
            }
            if let i = failed { return .reject(line: row.line, reason: try undecodable(line: row.line, field: i)) }
            return .record(SourceRecord(line: row.line, values: values))
        }
    }

    /// `next()` without Strings: the row's bytes are checked for UTF-8 and copied into `record`.
    public func next(into record: inout RecordBytes) throws -> BytesReadResult? {
        while true {
            guard let row = try readRow() else { return nil }
            if row.fieldCount == 1 && rowBytes.isEmpty && !row.quoted { continue }  // blank line
            if let reason = problem(row) { return .reject(line: row.line, reason: reason) }
            if let i = invalidUTF8Field() { return .reject(line: row.line, reason: try undecodable(line: row.line, field: i)) }
            record.line = row.line
            record.bytes.removeAll(keepingCapacity: true)
            record.bytes.append(contentsOf: rowBytes)
            record.ends.removeAll(keepingCapacity: true)
            record.ends.append(contentsOf: fieldEnds)
            record.lists.removeAll(keepingCapacity: true)
            return .record
        }
    }

    /// The reject reason for field `field` of the current row, whose bytes are not text in the file's encoding; throws
    /// instead when no encoding was declared: the file is most likely in another one, and every row with an accent
    /// would be a reject.
    private func undecodable(line: Int, field: Int) throws -> String {
        guard let declared else {
            let bytes = Array(rowBytes[(field == 0 ? 0 : fieldEnds[field - 1])..<fieldEnds[field]])
            throw bytes.withUnsafeBufferPointer { notDecodable(line: line, field: field, column: "(column '\(fieldNames[field])')", $0) }
        }
        let what = declared == .utf8 ? "invalid UTF-8" : "bytes that are not \(declared.rawValue)"
        return "\(what) in field \(field + 1) (column '\(fieldNames[field])')"
    }

    /// The error for bytes that are not UTF-8 in an undeclared file (or in the header), naming the likely encoding.
    private func notDecodable(line: Int, field: Int, column: String, _ bytes: UnsafeBufferPointer<UInt8>) -> SourceError {
        if let declared, declared != .utf8 {
            return SourceError(file: path, line: line, message: "field \(field + 1) \(column) holds bytes that are not \(declared.rawValue)")
        }
        var message = "field \(field + 1) \(column) is not UTF-8"
        if let (encoding, character) = StreamDecoder.guess(bytes) {
            message += encoding == .windows1252
                ? "; its first such bytes read as Windows-1252 '\(character)'"
                : "; it looks like UTF-16 (every other byte is zero)"
            message += ". Declare the file's encoding on its source, e.g. `encoding: \(encoding.rawValue)`"
        } else {
            message += ". Declare the file's encoding on its source (`encoding:` windows-1252, iso-8859-1, iso-8859-15, utf-16le, utf-16be or utf-16)"
        }
        if declared == nil { message += ", or `encoding: utf-8` to reject such rows one by one" }
        return SourceError(file: path, line: line, message: message)
    }

    /// Why a row read whole is still a reject (an unclosed quote, a wrong field count), or nil.
    private func problem(_ row: RawRow) -> String? {
        if row.unterminated {
            return "a quoted field is never closed (the quote opened on this line runs to the end of the file: every line after it is inside the field, none is read as a row); close or double the quote"
        }
        if let field = row.textAfterQuote {
            return "field \(field + 1) has text after its closing quote; quote the whole field and double the quotes inside it (\"Dr. \"\"Bob\"\" Smith\")"
        }
        guard row.fieldCount == fieldNames.count else {
            return "expected \(fieldNames.count) fields, found \(row.fieldCount)"
        }
        return nil
    }

    /// The index of the first field of the current row that is not UTF-8, or nil.
    private func invalidUTF8Field() -> Int? {
        rowBytes.withUnsafeBufferPointer { p in
            var acc: UInt8 = 0
            for b in p { acc |= b }
            if acc < 0x80 { return nil }  // ASCII
            var from = 0
            for (i, to) in fieldEnds.enumerated() {
                if String(validating: UnsafeBufferPointer(rebasing: p[from..<to]), as: UTF8.self) == nil { return i }
                from = to
            }
            return nil
        }
    }

    private struct RawRow {
        var fieldCount: Int
        var line: Int
        var quoted: Bool
        var unterminated: Bool
        /// The first field (0-based) with text between its closing quote and the next delimiter: RFC 4180 allows
        /// none, and reading on would change the value (`"a"b` is not `ab`).
        var textAfterQuote: Int? = nil
    }

    /// The current row's unescaped field bytes, back to back, and where each field ends: reused from row to row so
    /// that reading allocates nothing per field.
    @exclusivity(unchecked) private var rowBytes: [UInt8] = []
    @exclusivity(unchecked) private var fieldEnds: [Int] = []

    /// Reads the bytes of one record into `rowBytes` and `fieldEnds`, or nil at the end of the file.
    private func readRow() throws -> RawRow? {
        if start >= end {
            try fill()
            if start >= end { return nil }
        }
        rowBytes.removeAll(keepingCapacity: true)
        fieldEnds.removeAll(keepingCapacity: true)
        var fieldStart = 0
        let rowLine = line
        var inQuotes = false
        var anyQuoted = false
        var justClosed = false
        var textAfterQuote: Int?
        while true {
            if start >= end {
                try fill()
                if start >= end {
                    // End of file: the last record had no line break.
                    fieldEnds.append(rowBytes.count)
                    return RawRow(fieldCount: fieldEnds.count, line: rowLine, quoted: anyQuoted, unterminated: inQuotes, textAfterQuote: textAfterQuote)
                }
            }
            if inQuotes {
                // Copy everything up to the next quote in one go.
                var i = start
                while i < end && buffer[i] != quote {
                    if buffer[i] == 0x0A { line += 1 }
                    i += 1
                }
                rowBytes.append(contentsOf: buffer[start..<i])
                start = i
                if i < end {
                    // A quote: doubled means a literal quote, otherwise the field's quotes close.
                    start += 1
                    if start >= end { try fill() }
                    if start < end && buffer[start] == quote {
                        rowBytes.append(quote)
                        start += 1
                    } else {
                        inQuotes = false
                        justClosed = true
                    }
                }
                continue
            }
            // Unquoted: scan to the next delimiter, quote or line break.
            var i = start
            while i < end {
                let b = buffer[i]
                if b == delimiter || b == 0x0A || b == 0x0D || b == quote { break }
                i += 1
            }
            if justClosed && i > start && textAfterQuote == nil { textAfterQuote = fieldEnds.count }
            rowBytes.append(contentsOf: buffer[start..<i])
            start = i
            if i == end { continue }
            let b = buffer[i]
            start += 1
            if b != quote { justClosed = false }
            if b == delimiter {
                fieldEnds.append(rowBytes.count)
                fieldStart = rowBytes.count
            } else if b == quote {
                if justClosed && textAfterQuote == nil { textAfterQuote = fieldEnds.count }
                if rowBytes.count == fieldStart {
                    inQuotes = true
                    anyQuoted = true
                } else {
                    rowBytes.append(b)  // a stray quote inside an unquoted field is kept as text
                }
            } else {
                // Line break: CRLF, LF or a lone CR.
                if b == 0x0D {
                    if start >= end { try fill() }
                    if start < end && buffer[start] == 0x0A { start += 1 }
                }
                line += 1
                fieldEnds.append(rowBytes.count)
                return RawRow(fieldCount: fieldEnds.count, line: rowLine, quoted: anyQuoted, unterminated: false, textAfterQuote: textAfterQuote)
            }
        }
    }

    /// Moves unread bytes to the front and reads (and decodes) more.
    private func fill() throws {
        if eof {
            return
        }
        if start > 0 {
            if start < end { buffer.withUnsafeMutableBufferPointer { p in
                _ = memmove(p.baseAddress!, p.baseAddress! + start, end - start)
            } }
            end -= start
            start = 0
        }
        let n = try text.read(into: &buffer, at: end, line: line)
        if n == 0 { eof = true }
        end += n
    }
}

/// The bytes as a String, or nil when they are not UTF-8. ASCII, the common case, skips the generic validator.
@inline(__always)
func utf8String(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
    var acc: UInt8 = 0
    for b in bytes { acc |= b }
    if acc < 0x80 { return String(decoding: bytes, as: UTF8.self) }
    return String(validating: bytes, as: UTF8.self)
}

extension String {
    var trimmingWhitespace: String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
