/// One column of a fixed-width file: its name and the characters it spans (1-based start, as record layouts give it).
public struct FixedWidthColumn: Sendable, Equatable {
    public var name: String
    public var start: Int
    public var width: Int

    public init(name: String, start: Int, width: Int) {
        self.name = name
        self.start = start
        self.width = width
    }

    var end: Int { start + width - 1 }
}

/// Streams a fixed-width text file (mainframe and older lab exports): one record per line, each field at fixed
/// character positions, padded with spaces (trimmed). Lines may end in LF or CRLF; header lines can be skipped.
/// A line shorter than the columns need, or with text beyond the last column, is a reject naming its line; a
/// blank line is skipped. The file is decoded from its declared encoding as it is read, like a CSV file.
public final class FixedWidthRecordReader: RecordReader {
    public let path: String
    public let fieldNames: [String]
    public var bytesRead: Int { text.file.bytesRead }
    private let text: SourceText
    private let columns: [FixedWidthColumn]
    private let recordLength: Int
    private let encoding: SourceEncoding
    /// False when the mapping declared no encoding: a line that is not UTF-8 then stops with the likely encoding.
    private let declared: Bool
    private var eof = false
    /// Decoded UTF-8: `buffer[start..<end]` is not yet split into lines.
    private var buffer = [UInt8](repeating: 0, count: 1 << 18)
    private var start = 0
    private var end = 0
    private var line = 0

    /// Opens `path`; `headerLines` lines are skipped before the first record.
    public init(path: String, columns: [FixedWidthColumn], headerLines: Int = 0, encoding: SourceEncoding? = nil) throws {
        self.path = path
        self.columns = columns
        self.encoding = encoding ?? .utf8
        declared = encoding != nil
        fieldNames = columns.map(\.name)
        recordLength = columns.map(\.end).max() ?? 0
        text = try SourceText(path: path, encoding: encoding)
        for _ in 0..<headerLines where try nextLine() != nil {}
    }

    public var sha256: String { text.file.digest ?? "" }

    public func next() throws -> ReadResult? {
        while let bytes = try nextLine() {
            if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }  // blank line
            guard let text = String(validating: bytes, as: UTF8.self) else {
                if !declared {
                    var message = "the line is not UTF-8"
                    if let (likely, character) = Array(bytes).withUnsafeBufferPointer({ StreamDecoder.guess($0) }) {
                        message += likely == .windows1252 ? "; its first such bytes read as Windows-1252 '\(character)'" : "; it looks like UTF-16"
                        message += ". Declare the file's encoding on its source, e.g. `encoding: \(likely.rawValue)`"
                    } else {
                        message += ". Declare the file's encoding on its source (`encoding:`)"
                    }
                    throw SourceError(file: path, line: line, message: message + ", or `encoding: utf-8` to reject such lines one by one")
                }
                let what = encoding == .utf8 ? "invalid UTF-8" : "bytes that are not \(encoding.rawValue)"
                return .reject(line: line, reason: "\(what) in the line; declare the file's encoding on its source (`encoding:`) if it is not \(encoding.rawValue)")
            }
            let characters = Array(text.unicodeScalars)
            if characters.count < recordLength {
                return .reject(line: line, reason: "the line has \(characters.count) characters, the columns need \(recordLength)")
            }
            if characters[recordLength...].contains(where: { $0 != " " && $0 != "\t" }) {
                return .reject(line: line, reason: "the line has text after character \(recordLength), where the last column ends")
            }
            var values: [FieldValue] = []
            values.reserveCapacity(columns.count)
            for column in columns {
                var field = String.UnicodeScalarView()
                field.append(contentsOf: characters[(column.start - 1)..<column.end])
                values.append(.single(String(field).trimmingWhitespace))
            }
            return .record(SourceRecord(line: line, values: values))
        }
        return nil
    }

    /// The next line's bytes (UTF-8, without its line break), or nil at the end of the file.
    private func nextLine() throws -> ArraySlice<UInt8>? {
        while true {
            if let lf = buffer[start..<end].firstIndex(of: 0x0A) {
                return takeLine(upTo: lf, next: lf + 1)
            }
            if eof {
                guard start < end else { return nil }
                return takeLine(upTo: end, next: end)
            }
            // Move the unsplit rest to the front, then read (and decode) more after it.
            buffer.replaceSubrange(0..<start, with: [])
            end -= start
            start = 0
            if buffer.count < end + (1 << 16) { buffer.append(contentsOf: repeatElement(0, count: 1 << 16)) }
            let n = try text.read(into: &buffer, at: end, line: line + 1)
            if n == 0 { eof = true }
            end += n
        }
    }

    /// `buffer[start..<lineEnd]` without a trailing CR, as the next line; the following one starts at `next`.
    private func takeLine(upTo lineEnd: Int, next: Int) -> ArraySlice<UInt8> {
        var stop = lineEnd
        if stop > start && buffer[stop - 1] == 0x0D { stop -= 1 }
        let bytes = buffer[start..<stop]
        start = next
        line += 1
        return bytes
    }
}
