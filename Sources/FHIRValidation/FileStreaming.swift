import FHIRModel
import FileIO
import ParallelWork

#if canImport(Glibc)
import Glibc
#endif

/// What a data file may be: a regular file (after symbolic links), and a JSON file or NDJSON line of bounded size.
///
/// Whatever the folder holds is opened only through `FileIO.FileReader`, regular files only: a FIFO named `x.json`
/// would block the open or the read forever, and a link to `/dev/zero` never ends, so neither is read at all. A JSON file is read whole (a
/// bundle is checked with its references inside it), and its parse takes about five times its size, so a file
/// above the limit is refused before memory is spent; NDJSON is streamed, and only a line must fit.
public enum DataFile {
    /// The most bytes of a JSON file or NDJSON line that is read (64 MiB: 300 times Medplum's 1 MB bundle cap, and
    /// more than the largest Synthea patient bundle; `--max-json-bytes` raises it).
    public static let defaultMaxBytes = 64 << 20

    /// What `path` is when it is not a regular file ("a FIFO", "a character device", ...), nil for a regular file,
    /// and "missing" when it cannot be examined.
    public static func irregularity(_ path: String) -> String? { FileKind.irregularity(path) }
}

/// Reads large files in chunks, so memory does not grow with an NDJSON file's size.
public enum FileStreaming {
    private static let chunk = 4 << 20

    /// Starts reading `path` into the page cache in the background (a hint; errors are ignored).
    static func prefetch(_ path: String) { FileReader.prefetch(path) }

    /// SHA-256 and size of a file, or nil when it cannot be read.
    static func digest(_ path: String) -> (sha256: String, size: Int)? { try? FileReader.digest(path) }

    /// Calls `body` with each line (1-based number, bytes without the line break, valid only during the call), and
    /// `tooLong` with the number of a line longer than `maxLine` bytes instead (its bytes are skipped, not kept).
    /// Returns the file's size and, with `digest`, its SHA-256 (computed on the same read); nil if it cannot be read.
    @discardableResult
    public static func forEachLine(_ path: String, digest: Bool = false, maxLine: Int = DataFile.defaultMaxBytes, tooLong: (Int) -> Void = { _ in },
                            _ body: (Int, UnsafeBufferPointer<UInt8>) -> Void) -> (sha256: String, size: Int)? {
        // Gigabytes read once: their pages are handed back as they are read (see `WriteBehind` in FHIRArtifacts).
        guard let reader = try? FileReader(path: path, hashing: digest, releasingPages: true) else { return nil }
        var skipping = false  // inside a line longer than maxLine: its bytes are dropped up to its line break
        var buffer = [UInt8](repeating: 0, count: chunk)
        var filled = 0
        var line = 0
        while true {
            if filled == buffer.count {
                if filled >= maxLine {  // the line is too long: report it once, and drop its bytes as they come
                    if !skipping { line += 1; tooLong(line) }
                    skipping = true
                    filled = 0
                } else {
                    buffer.append(contentsOf: repeatElement(0, count: min(buffer.count, maxLine - buffer.count + 1)))  // a long line
                }
            }
            let n: Int
            do {
                n = try buffer.withUnsafeMutableBytes { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[filled...])) }
            } catch {
                return nil
            }
            let atEnd = n == 0
            filled += n
            let consumed = buffer.withUnsafeBufferPointer { p -> Int in
                var start = 0
                while start < filled {
                    guard let hit = memchr(p.baseAddress! + start, 0x0A, filled - start) else { break }
                    let end = p.baseAddress!.distance(to: hit.assumingMemoryBound(to: UInt8.self))
                    if skipping {
                        skipping = false  // the end of the long line
                    } else {
                        line += 1
                        if end - start > maxLine { tooLong(line) } else { body(line, UnsafeBufferPointer(rebasing: p[start..<end])) }
                    }
                    start = end + 1
                }
                if skipping { return filled }
                if atEnd && start < filled {
                    line += 1
                    if filled - start > maxLine { tooLong(line) } else { body(line, UnsafeBufferPointer(rebasing: p[start..<filled])) }
                    start = filled
                }
                return start
            }
            if consumed > 0 {
                buffer.withUnsafeMutableBytes { p in _ = memmove(p.baseAddress!, p.baseAddress! + consumed, filled - consumed) }
                filled -= consumed
            }
            if atEnd { return (reader.sha256 ?? "", reader.bytesRead) }
        }
    }
}

/// `FileStreaming.forEachLine` with its work shared among threads: one worker at a time reads the next chunk of
/// whole lines and hashes it into the file's SHA-256 (in file order), any worker splits a chunk into lines and hashes
/// each line (`NDJSONLine.trimmedHash`), and the caller's thread gets the lines in order. Lines, numbers, long lines
/// and the digest are those of `forEachLine`; memory is bounded by a few chunks.
enum ParallelLines {
    /// A chunk of whole lines, or what ends the file.
    enum Chunk: Sendable {
        /// `bytes` holds whole lines (the last may lack its line break at the end of the file); `lines` are their
        /// ends and hashes, filled by a worker.
        case lines(bytes: [UInt8], lines: [Line])
        /// A line longer than the limit, whose bytes were dropped as they came.
        case tooLong
        case end(sha256: String?, size: Int)
        case unreadable
    }

    struct Line: Sendable {
        /// Where the line starts and ends in its chunk (without its line break); `start` -1 marks a line over the limit.
        var start: Int32
        var end: Int32
        var hash: UInt64
    }

    /// The reading state, owned by the one worker that holds the feed's lock.
    struct Source: ~Copyable {
        enum State { case reading, endPending(sha256: String?, size: Int), done }
        let reader: FileReader
        var carry: [UInt8] = []
        /// Inside a line over the limit, whose bytes are dropped up to its line break.
        var skipping = false
        var state = State.reading
        let chunkSize: Int
        let maxLine: Int
    }

    /// Calls `body` with each line's number, bytes and `trimmedHash`, as `FileStreaming.forEachLine` does, on the
    /// caller's thread, with `threads` workers reading and splitting ahead.
    @discardableResult
    static func forEachLine(_ path: String, digest: Bool, maxLine: Int, threads: Int, chunkSize: Int = 2 << 20,
                            tooLong: (Int) -> Void = { _ in },
                            _ body: (Int, UnsafeBufferPointer<UInt8>, UInt64) -> Void) -> (sha256: String, size: Int)? {
        // Gigabytes read once: their pages are handed back as they are read (see `WriteBehind` in FHIRArtifacts).
        guard let reader = try? FileReader(path: path, hashing: digest, releasingPages: true) else { return nil }
        let map = OrderedParallelMap<Chunk, Chunk>(
            threads: threads, window: 2 * threads + 2, source: Source(reader: reader, chunkSize: max(chunkSize, 1), maxLine: maxLine),
            produce: { next(&$0) }, work: { split($0, maxLine: maxLine) })
        var line = 0
        var outcome: (sha256: String, size: Int)?
        while let chunk = map.next() {
            switch chunk {
            case .lines(let bytes, let lines):
                bytes.withUnsafeBufferPointer { p in
                    for l in lines {
                        line += 1
                        if l.start < 0 { tooLong(line) } else { body(line, UnsafeBufferPointer(rebasing: p[Int(l.start)..<Int(l.end)]), l.hash) }
                    }
                }
            case .tooLong:
                line += 1
                tooLong(line)
            case .end(let sha256, let size):
                outcome = (sha256 ?? "", size)
            case .unreadable:
                outcome = nil
            }
        }
        return outcome
    }

    /// The next chunk of whole lines (read from the file after the carry), a long line's marker, or the end.
    static func next(_ s: inout Source) -> Chunk? {
        switch s.state {
        case .done: return nil
        case .endPending(let sha256, let size):
            s.state = .done
            return .end(sha256: sha256, size: size)
        case .reading: break
        }
        var buffer = s.carry
        s.carry = []
        while true {
            // Read into the new chunk's own storage (no zero fill, no copy but the carry's few bytes).
            let n: Int
            do {
                (buffer, n) = try read(&s, after: buffer)
            } catch {
                s.state = .done
                return .unreadable
            }
            if s.skipping {
                if let nl = buffer.firstIndex(of: 0x0A) {
                    buffer.removeFirst(nl + 1)
                    s.skipping = false
                } else {
                    buffer.removeAll(keepingCapacity: true)
                    if n == 0 {
                        s.state = .done
                        return .end(sha256: s.reader.sha256, size: s.reader.bytesRead)
                    }
                    continue
                }
            }
            if n == 0 {
                if buffer.isEmpty {
                    s.state = .done
                    return .end(sha256: s.reader.sha256, size: s.reader.bytesRead)
                }
                // The last line, without its line break; the end comes next.
                s.state = .endPending(sha256: s.reader.sha256, size: s.reader.bytesRead)
                return .lines(bytes: buffer, lines: [])
            }
            if let nl = buffer.lastIndex(of: 0x0A) {
                s.carry = Array(buffer[(nl + 1)...])
                buffer.removeLast(buffer.count - nl - 1)
                return .lines(bytes: buffer, lines: [])
            }
            if buffer.count > s.maxLine {
                s.skipping = true
                return .tooLong
            }
        }
    }

    /// `prefix` followed by up to a chunk of the file; the bytes read (0 at its end).
    private static func read(_ s: inout Source, after prefix: [UInt8]) throws -> ([UInt8], Int) {
        var n = 0
        let reader = s.reader
        let buffer = try [UInt8](unsafeUninitializedCapacity: prefix.count + s.chunkSize) { p, count in
            prefix.withUnsafeBufferPointer { q in
                if let from = q.baseAddress { p.baseAddress!.initialize(from: from, count: q.count) }
            }
            n = try reader.read(into: UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: p[prefix.count...])))
            count = prefix.count + n
        }
        return (buffer, n)
    }

    /// A chunk's lines: where each starts and ends, and its hash; lines over `maxLine` marked.
    static func split(_ chunk: Chunk, maxLine: Int) -> Chunk {
        guard case .lines(let bytes, _) = chunk else { return chunk }
        var lines: [Line] = []
        bytes.withUnsafeBufferPointer { p in
            guard let base = p.baseAddress else { return }
            var start = 0
            func add(_ end: Int) {
                if end - start > maxLine {
                    lines.append(Line(start: -1, end: -1, hash: 0))
                } else {
                    lines.append(Line(start: Int32(start), end: Int32(end), hash: trimmedHash(UnsafeBufferPointer(rebasing: p[start..<end]))))
                }
            }
            while start < p.count {
                guard let hit = memchr(base + start, 0x0A, p.count - start) else {
                    add(p.count)  // the last line of the file, without its line break
                    break
                }
                let end = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
                add(end)
                start = end + 1
            }
        }
        return .lines(bytes: bytes, lines: lines)
    }

    /// The hash by which an NDJSON line is compared with its bundle twin: of its bytes without the white space
    /// around them (64 bits of `FastHash`).
    static func trimmedHash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var start = 0
        var end = bytes.count
        while start < end && NDJSONLine.isSpace(bytes[start]) { start += 1 }
        while end > start && NDJSONLine.isSpace(bytes[end - 1]) { end -= 1 }
        return UInt64(truncatingIfNeeded: FastHash.hash128(UnsafeBufferPointer(rebasing: bytes[start..<end])))
    }
}
