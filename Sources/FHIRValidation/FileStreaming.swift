import Crypto
import FHIRModel

#if canImport(Glibc)
import Glibc
#endif

/// Reads large files in chunks, so memory does not grow with an NDJSON file's size.
enum FileStreaming {
    private static let chunk = 4 << 20

    /// Starts reading `path` into the page cache in the background (a hint; errors are ignored).
    static func prefetch(_ path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
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
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
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

    /// Calls `body` with each line (1-based number, bytes without the line break, valid only during the call).
    /// Returns the file's size and, with `digest`, its SHA-256 (computed on the same read); nil if it cannot be read.
    @discardableResult
    static func forEachLine(_ path: String, digest: Bool = false, _ body: (Int, UnsafeBufferPointer<UInt8>) -> Void) -> (sha256: String, size: Int)? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var hasher = SHA256()
        var size = 0
        var buffer = [UInt8](repeating: 0, count: chunk)
        var filled = 0
        var line = 0
        while true {
            if filled == buffer.count { buffer.append(contentsOf: repeatElement(0, count: buffer.count)) }  // a very long line
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
                    line += 1
                    body(line, UnsafeBufferPointer(rebasing: p[start..<end]))
                    start = end + 1
                }
                if atEnd && start < filled {
                    line += 1
                    body(line, UnsafeBufferPointer(rebasing: p[start..<filled]))
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
