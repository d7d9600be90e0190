import FileIO

#if canImport(Glibc)
import Glibc
#endif

/// A source file read in chunks through `FileIO.FileReader`: hashed as it is read (the manifest's checksum is of
/// the file as it is on disk, whatever its encoding), closed at its end, read errors reported with the line they
/// stopped. Shared by the CSV, fixed-width and XML readers.
final class HashedFile {
    let path: String
    private let reader: FileReader
    var bytesRead: Int { reader.bytesRead }
    /// SHA-256 of the whole file (lowercase hex), once its end was read.
    var digest: String? { reader.sha256 }
    var atEnd: Bool { reader.atEnd }

    init(path: String) throws {
        self.path = path
        do {
            // Not only regular files: a source may be a pipe (`<(unzip -p export.zip patients.csv)`).
            reader = try FileReader(path: path, regularOnly: false, hashing: true)
        } catch {
            throw SourceError(file: path, line: 1, message: "cannot open the file: \(error.reason)")
        }
    }

    /// Reads the next bytes into `p`; 0 at the end of the file. `line` is where a read error is reported.
    func read(into p: UnsafeMutableRawBufferPointer, line: Int) throws -> Int {
        do {
            return try reader.read(into: p)
        } catch {
            throw SourceError(file: path, line: line, message: "reading failed: \(error.reason)")
        }
    }

    /// Bytes at `offset`, without moving the stream or hashing (to count lines for an error message); 0 once the
    /// file is closed.
    func read(into p: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
        reader.read(into: p, at: offset)
    }
}

/// A source file's text as UTF-8, for the CSV and fixed-width readers: read through `HashedFile`, decoded from a
/// declared encoding (`StreamDecoder`), a leading byte order mark dropped.
final class SourceText {
    let file: HashedFile
    private var decoder: StreamDecoder?
    private var raw: [UInt8] = []
    private var atStart = true

    init(path: String, encoding: SourceEncoding?) throws {
        file = try HashedFile(path: path)
        if let encoding, encoding != .utf8 {
            decoder = StreamDecoder(encoding)
            raw = [UInt8](repeating: 0, count: 1 << 18)
        }
    }

    /// Writes the next text into `buffer` from `end` on (growing it when needed), until some came out or the file
    /// ended (half a UTF-16 code unit gives none); returns the bytes written, 0 at the end of the file.
    func read(into buffer: inout [UInt8], at end: Int, line: Int) throws -> Int {
        var n = 0
        while n == 0 && !file.atEnd { n = try readChunk(into: &buffer, at: end, line: line) }
        if atStart && n > 0 {
            atStart = false
            if n >= 3 && buffer[end] == 0xEF && buffer[end + 1] == 0xBB && buffer[end + 2] == 0xBF {
                buffer.withUnsafeMutableBufferPointer { p in _ = memmove(p.baseAddress! + end, p.baseAddress! + end + 3, n - 3) }
                n -= 3
            }
        }
        return n
    }

    private func readChunk(into buffer: inout [UInt8], at end: Int, line: Int) throws -> Int {
        guard var decoder else {
            if end == buffer.count { buffer.append(contentsOf: repeatElement(0, count: max(buffer.count, 1 << 16))) }
            return try buffer.withUnsafeMutableBytes { p in try file.read(into: UnsafeMutableRawBufferPointer(rebasing: p[end...]), line: line) }
        }
        while buffer.count - end < raw.count * decoder.encoding.maxExpansion + 8 {
            buffer.append(contentsOf: repeatElement(0, count: max(buffer.count, 1 << 16)))
        }
        let n = try raw.withUnsafeMutableBytes { try file.read(into: $0, line: line) }
        let written = buffer.withUnsafeMutableBufferPointer { out in
            n == 0 ? decoder.finish(into: out.baseAddress! + end)
                : raw.withUnsafeBytes { decoder.decode(UnsafeRawBufferPointer(rebasing: $0[0..<n]), into: out.baseAddress! + end) }
        }
        self.decoder = decoder
        if decoder.missingByteOrderMark {
            throw SourceError(file: file.path, line: 1, message: "the source declares utf-16, but the file does not start with a byte order mark; declare utf-16le or utf-16be")
        }
        return written
    }
}
