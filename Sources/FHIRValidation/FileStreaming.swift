import FHIRModel
import FileIO

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
