import Crypto
import FHIRModel

#if canImport(Glibc)
import Glibc
#endif

/// What a data file may be: a regular file (after symbolic links), and a JSON file or NDJSON line of bounded size.
///
/// Whatever the folder holds is opened only through `open(_:)`: a FIFO named `x.json` would block the open or the
/// read forever, and a link to `/dev/zero` never ends, so neither is read at all. A JSON file is read whole (a
/// bundle is checked with its references inside it), and its parse takes about five times its size, so a file
/// above the limit is refused before memory is spent; NDJSON is streamed, and only a line must fit.
public enum DataFile {
    /// The most bytes of a JSON file or NDJSON line that is read (64 MiB: 300 times Medplum's 1 MB bundle cap, and
    /// more than the largest Synthea patient bundle; `--max-json-bytes` raises it).
    public static let defaultMaxBytes = 64 << 20

    /// What `path` is when it is not a regular file ("a FIFO", "a character device", ...), nil for a regular file,
    /// and "missing" when it cannot be examined.
    public static func irregularity(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return "missing or unreadable (\(String(cString: strerror(errno))))" }
        return kind(info.st_mode)
    }

    static func kind(_ mode: mode_t) -> String? {
        switch mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFDIR: return "a folder"
        case S_IFIFO: return "a FIFO (named pipe)"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        default: return "not a regular file"
        }
    }

    /// Opens `path` for reading if it is a regular file: the descriptor and its size, or nil. Opened without
    /// blocking, so that a FIFO does not wait for a writer, then checked with `fstat` (no race with a `stat`).
    static func open(_ path: String) -> (fd: Int32, size: Int)? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        var info = stat()
        guard fstat(fd, &info) == 0, kind(info.st_mode) == nil else {
            close(fd)
            return nil
        }
        return (fd, Int(info.st_size))
    }
}

/// Reads large files in chunks, so memory does not grow with an NDJSON file's size.
public enum FileStreaming {
    private static let chunk = 4 << 20

    /// Starts reading `path` into the page cache in the background (a hint; errors are ignored).
    static func prefetch(_ path: String) {
        guard let (fd, _) = DataFile.open(path) else { return }
        _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_WILLNEED))
        close(fd)
    }

    /// Tells the kernel that the `count` bytes at `offset` of `fd`, just read, will not be read again, so their
    /// pages are freed at once and reused for what is read next. Validation reads gigabytes once; left in the page
    /// cache they push out what the machine was using, and on a virtual machine that returns free memory to its
    /// host every fresh page is slow to get (see `WriteBehind` in FHIRArtifacts).
    static func release(_ fd: Int32, offset: Int, count: Int) {
        _ = posix_fadvise(fd, off_t(offset), off_t(count), Int32(POSIX_FADV_DONTNEED))
    }

    /// SHA-256 and size of a file, or nil when it cannot be read.
    static func digest(_ path: String) -> (sha256: String, size: Int)? {
        guard let (fd, _) = DataFile.open(path) else { return nil }
        defer { close(fd) }
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: chunk)
        var size = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n < 0 { if errno == EINTR { continue } else { return nil } }
            if n == 0 { break }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            release(fd, offset: size, count: n)
            size += n
        }
        return (Hex.encode(hasher.finalize()), size)
    }

    /// Calls `body` with each line (1-based number, bytes without the line break, valid only during the call), and
    /// `tooLong` with the number of a line longer than `maxLine` bytes instead (its bytes are skipped, not kept).
    /// Returns the file's size and, with `digest`, its SHA-256 (computed on the same read); nil if it cannot be read.
    @discardableResult
    public static func forEachLine(_ path: String, digest: Bool = false, maxLine: Int = DataFile.defaultMaxBytes, tooLong: (Int) -> Void = { _ in },
                            _ body: (Int, UnsafeBufferPointer<UInt8>) -> Void) -> (sha256: String, size: Int)? {
        guard let (fd, _) = DataFile.open(path) else { return nil }
        defer { close(fd) }
        var skipping = false  // inside a line longer than maxLine: its bytes are dropped up to its line break
        var hasher = SHA256()
        var size = 0
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
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if n < 0 { if errno == EINTR { continue } else { return nil } }
            let atEnd = n == 0
            if digest && n > 0 { buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[filled..<filled + n])) } }
            if n > 0 { release(fd, offset: size, count: n) }
            size += n
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
            if atEnd { return (digest ? Hex.encode(hasher.finalize()) : "", size) }
        }
    }
}
