import Crypto

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
/// with or without a byte order mark; the first row is the header.
///
/// A byte-level state machine over 1 MiB reads: the CSV libraries available here measured about ten times slower.
/// Strings are made only for finished fields. A row with the wrong number of fields or bytes that are not UTF-8
/// becomes a reject naming its line; reading goes on.
public final class CSVRecordReader: RecordReader {
    // The reader is used by one thread at a time; its hot state skips the runtime exclusivity checks (about 6 a row).
    public let path: String
    @exclusivity(unchecked) public private(set) var fieldNames: [String]
    @exclusivity(unchecked) public private(set) var bytesRead = 0
    private var digest: String?
    @exclusivity(unchecked) private var hasher = SHA256()

    private let fd: Int32
    private let delimiter: UInt8
    private let quote: UInt8
    @exclusivity(unchecked) private var buffer: [UInt8]
    @exclusivity(unchecked) private var start = 0
    @exclusivity(unchecked) private var end = 0
    @exclusivity(unchecked) private var eof = false
    private var closed = false
    /// Line number of the next unread byte.
    @exclusivity(unchecked) private var line = 1

    /// Opens `path` and reads its header row.
    public init(path: String, delimiter: UInt8 = UInt8(ascii: ","), quote: UInt8 = UInt8(ascii: "\"")) throws {
        self.path = path
        self.delimiter = delimiter
        self.quote = quote
        buffer = [UInt8](repeating: 0, count: 1 << 20)
        fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            throw SourceError(file: path, line: 1, message: "cannot open the file: \(String(cString: strerror(errno)))")
        }
        fieldNames = []
        try fill()
        // Byte order mark.
        if end - start >= 3 && buffer[start] == 0xEF && buffer[start + 1] == 0xBB && buffer[start + 2] == 0xBF { start += 3 }
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
            guard let s = String(validating: raw, as: UTF8.self) else {
                throw SourceError(file: path, line: 1, message: "column \(i + 1) of the header is not valid UTF-8")
            }
            let name = s.trimmingWhitespace
            if let j = columnOf.updateValue(i, forKey: name) {
                throw SourceError(file: path, line: 1, message: "the header names column '\(name)' twice (columns \(j + 1) and \(i + 1))")
            }
            names.append(name)
        }
        fieldNames = names
    }

    deinit {
        if !closed { close(fd) }
    }

    public var sha256: String { digest ?? "" }

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
            if let i = failed {
                return .reject(line: row.line, reason: "invalid UTF-8 in field \(i + 1) (column '\(fieldNames[i])')")
            }
            return .record(SourceRecord(line: row.line, values: values))
        }
    }

    /// `next()` without Strings: the row's bytes are checked for UTF-8 and copied into `record`.
    public func next(into record: inout RecordBytes) throws -> BytesReadResult? {
        while true {
            guard let row = try readRow() else { return nil }
            if row.fieldCount == 1 && rowBytes.isEmpty && !row.quoted { continue }  // blank line
            if let reason = problem(row) { return .reject(line: row.line, reason: reason) }
            if let i = invalidUTF8Field() {
                return .reject(line: row.line, reason: "invalid UTF-8 in field \(i + 1) (column '\(fieldNames[i])')")
            }
            record.line = row.line
            record.bytes.removeAll(keepingCapacity: true)
            record.bytes.append(contentsOf: rowBytes)
            record.ends.removeAll(keepingCapacity: true)
            record.ends.append(contentsOf: fieldEnds)
            record.lists.removeAll(keepingCapacity: true)
            return .record
        }
    }

    /// Why a row read whole is still a reject (an unclosed quote, a wrong field count), or nil.
    private func problem(_ row: RawRow) -> String? {
        if row.unterminated {
            return "a quoted field is never closed (the quote opened on this line runs to the end of the file)"
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
        while true {
            if start >= end {
                try fill()
                if start >= end {
                    // End of file: the last record had no line break.
                    fieldEnds.append(rowBytes.count)
                    return RawRow(fieldCount: fieldEnds.count, line: rowLine, quoted: anyQuoted, unterminated: inQuotes)
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
            rowBytes.append(contentsOf: buffer[start..<i])
            start = i
            if i == end { continue }
            let b = buffer[i]
            start += 1
            if b == delimiter {
                fieldEnds.append(rowBytes.count)
                fieldStart = rowBytes.count
            } else if b == quote {
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
                return RawRow(fieldCount: fieldEnds.count, line: rowLine, quoted: anyQuoted, unterminated: false)
            }
        }
    }

    /// Moves unread bytes to the front and reads more; hashes what it reads.
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
        if end == buffer.count { buffer.append(contentsOf: repeatElement(0, count: buffer.count)) }
        let n = buffer.withUnsafeMutableBufferPointer { p -> Int in
            while true {
                let r = read(fd, p.baseAddress! + end, p.count - end)
                if r < 0 && errno == EINTR { continue }
                return r
            }
        }
        if n < 0 { throw SourceError(file: path, line: line, message: "reading failed: \(String(cString: strerror(errno)))") }
        if n == 0 {
            eof = true
            let hex = Array("0123456789abcdef".utf8)
            digest = String(decoding: hasher.finalize().flatMap { [hex[Int($0 >> 4)], hex[Int($0 & 0xF)]] }, as: UTF8.self)
            closed = true
            close(fd)
            return
        }
        let readEnd = end + n
        buffer.withUnsafeBytes { p in hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: p[end..<readEnd])) }
        end += n
        bytesRead += n
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
