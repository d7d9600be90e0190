#if canImport(Glibc)
import Glibc
#endif
import Crypto

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
    public private(set) var bytesRead = 0
    private var digest: String?
    private var hasher = SHA256()
    private let columns: [FixedWidthColumn]
    private let recordLength: Int
    private let encoding: SourceEncoding
    /// False when the mapping declared no encoding: a line that is not UTF-8 then stops with the likely encoding.
    private let declared: Bool
    private var decoder: StreamDecoder?
    private let fd: Int32
    private var closed = false
    private var eof = false
    /// Decoded UTF-8 not yet split into lines.
    private var pending: [UInt8] = []
    private var pendingStart = 0
    private var raw = [UInt8](repeating: 0, count: 1 << 18)
    private var decoded: [UInt8] = []
    private var line = 0
    private var checkedByteOrderMark = false

    /// Opens `path`; `headerLines` lines are skipped before the first record.
    public init(path: String, columns: [FixedWidthColumn], headerLines: Int = 0, encoding: SourceEncoding? = nil) throws {
        self.path = path
        self.columns = columns
        self.encoding = encoding ?? .utf8
        declared = encoding != nil
        fieldNames = columns.map(\.name)
        recordLength = columns.map(\.end).max() ?? 0
        if self.encoding != .utf8 { decoder = StreamDecoder(self.encoding) }
        fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SourceError(file: path, line: 1, message: "cannot open the file: \(String(cString: strerror(errno)))") }
        for _ in 0..<headerLines where try nextLine() != nil {}
    }

    deinit {
        if !closed { close(fd) }
    }

    public var sha256: String { digest ?? "" }

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
            if let lf = pending[pendingStart...].firstIndex(of: 0x0A) {
                var end = lf
                if end > pendingStart && pending[end - 1] == 0x0D { end -= 1 }
                let bytes = pending[pendingStart..<end]
                pendingStart = lf + 1
                line += 1
                return bytes
            }
            if eof {
                guard pendingStart < pending.count else { return nil }
                var end = pending.count
                if pending[end - 1] == 0x0D { end -= 1 }
                let bytes = pending[pendingStart..<end]
                pendingStart = pending.count
                line += 1
                return bytes
            }
            try readChunk()
        }
    }

    /// Reads and decodes the next chunk into `pending` (what was already split off is dropped first).
    private func readChunk() throws {
        pending.removeSubrange(0..<pendingStart)
        pendingStart = 0
        let n = raw.withUnsafeMutableBytes { p -> Int in
            while true {
                let r = read(fd, p.baseAddress!, p.count)
                if r < 0 && errno == EINTR { continue }
                return r
            }
        }
        if n < 0 { throw SourceError(file: path, line: line + 1, message: "reading failed: \(String(cString: strerror(errno)))") }
        if n > 0 {
            raw.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            bytesRead += n
        }
        guard var decoder else {
            pending.append(contentsOf: raw[0..<n])
            if n == 0 { finishFile() }
            skipByteOrderMark()
            return
        }
        if decoded.count < raw.count * encoding.maxExpansion + 8 { decoded = [UInt8](repeating: 0, count: raw.count * encoding.maxExpansion + 8) }
        let written = decoded.withUnsafeMutableBufferPointer { out in
            n == 0 ? decoder.finish(into: out.baseAddress!)
                : raw.withUnsafeBytes { decoder.decode(UnsafeRawBufferPointer(rebasing: $0[0..<n]), into: out.baseAddress!) }
        }
        self.decoder = decoder
        if decoder.missingByteOrderMark {
            throw SourceError(file: path, line: 1, message: "the source declares utf-16, but the file does not start with a byte order mark; declare utf-16le or utf-16be")
        }
        pending.append(contentsOf: decoded[0..<written])
        skipByteOrderMark()
        if n == 0 { finishFile() }
    }

    /// A UTF-8 byte order mark (as read, or decoded from UTF-16's) is not text.
    private func skipByteOrderMark() {
        guard !checkedByteOrderMark, pending.count >= 3 || eof else { return }
        checkedByteOrderMark = true
        if pending.starts(with: [0xEF, 0xBB, 0xBF]) { pending.removeFirst(3) }
    }

    private func finishFile() {
        eof = true
        let hex = Array("0123456789abcdef".utf8)
        digest = String(decoding: hasher.finalize().flatMap { [hex[Int($0 >> 4)], hex[Int($0 & 0xF)]] }, as: UTF8.self)
        closed = true
        close(fd)
    }
}
