import Crypto

#if canImport(Glibc)
import Glibc
#endif

/// Why a file could not be opened, read or written: its path, what was tried, and what the system said.
public struct FileIOError: Error, Sendable, CustomStringConvertible {
    public let path: String
    /// "opening", "reading", "writing".
    public let attempt: String
    /// `errno`, or 0 when the file is not a regular file (`irregularity` says what it is).
    public let code: Int32
    public let irregularity: String?

    public var reason: String { irregularity.map { "it is \($0)" } ?? String(cString: strerror(code)) }
    public var description: String { "\(path): \(attempt) failed: \(reason)" }
}

/// What a path is when it is not a regular file.
public enum FileKind {
    /// "a FIFO (named pipe)", "a character device", ...; nil for a regular file; a reason when it cannot be examined.
    public static func irregularity(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return "missing or unreadable (\(String(cString: strerror(errno))))" }
        return describe(info.st_mode)
    }

    /// What a file of mode `mode` is, nil for a regular file.
    public static func describe(_ mode: mode_t) -> String? {
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
}

/// The one way the project reads a file: in chunks into the caller's buffer, retried on EINTR, hashed as it is read
/// when asked (a manifest checksum costs no second read), its pages handed back to the kernel once read when asked
/// (gigabytes read once would otherwise push out what the machine was using), closed at its end.
///
/// Owned by one thread at a time (it is not `Sendable`): the stream position and the hash are its state.
public final class FileReader {
    public let path: String
    /// The size when it was opened.
    public let size: Int
    private var fd: Int32
    private var hasher: SHA256?
    private let releasingPages: Bool
    public private(set) var bytesRead = 0
    /// SHA-256 of the whole file (lowercase hex), once its end was read with `hashing`.
    public private(set) var sha256: String?
    public var atEnd: Bool { fd < 0 }

    /// Opens `path`. With `regularOnly` it is opened without blocking and refused unless it is a regular file (after
    /// symbolic links), checked on the open descriptor: a FIFO named `x.json` would block the open or the read
    /// forever, and a link to `/dev/zero` never ends.
    public init(path: String, regularOnly: Bool = true, hashing: Bool = false, releasingPages: Bool = false) throws(FileIOError) {
        self.path = path
        self.releasingPages = releasingPages
        if hashing { hasher = SHA256() }
        let fd = open(path, O_RDONLY | O_CLOEXEC | (regularOnly ? O_NONBLOCK : 0))
        guard fd >= 0 else { throw FileIOError(path: path, attempt: "opening", code: errno, irregularity: nil) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let code = errno
            close(fd)
            throw FileIOError(path: path, attempt: "opening", code: code, irregularity: nil)
        }
        if regularOnly, let what = FileKind.describe(info.st_mode) {
            close(fd)
            throw FileIOError(path: path, attempt: "opening", code: 0, irregularity: what)
        }
        self.fd = fd
        size = Int(info.st_size)
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Reads the next bytes into `buffer`; 0 at the end of the file (which closes it and completes `sha256`).
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(FileIOError) -> Int {
        guard fd >= 0, buffer.count > 0 else { return 0 }
        var n: Int
        repeat { n = Glibc.read(fd, buffer.baseAddress!, buffer.count) } while n < 0 && errno == EINTR
        if n < 0 { throw FileIOError(path: path, attempt: "reading", code: errno, irregularity: nil) }
        if n == 0 {
            if let hasher { sha256 = Self.hex(hasher.finalize()) }
            close(fd)
            fd = -1
            return 0
        }
        hasher?.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        if releasingPages { _ = posix_fadvise(fd, off_t(bytesRead), off_t(n), Int32(POSIX_FADV_DONTNEED)) }
        bytesRead += n
        return n
    }

    /// Reads until `buffer` is full or the file ends; the bytes read.
    public func readFully(into buffer: UnsafeMutableRawBufferPointer) throws(FileIOError) -> Int {
        var filled = 0
        while filled < buffer.count {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]))
            if n == 0 { break }
            filled += n
        }
        return filled
    }

    /// Bytes at `offset`, without moving the stream or hashing (to count lines for an error message); 0 once the
    /// file is closed.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
        fd < 0 ? 0 : max(0, pread(fd, buffer.baseAddress!, buffer.count, off_t(offset)))
    }

    /// Starts reading `path` into the page cache in the background (a hint; errors are ignored).
    public static func prefetch(_ path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return }
        var info = stat()
        if fstat(fd, &info) == 0, FileKind.describe(info.st_mode) == nil { _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_WILLNEED)) }
        close(fd)
    }

    /// SHA-256 and size of a regular file, read once, its pages handed back.
    public static func digest(_ path: String) throws(FileIOError) -> (sha256: String, size: Int) {
        let reader = try FileReader(path: path, hashing: true, releasingPages: true)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while try reader.read(into: buffer) > 0 {}
        return (reader.sha256 ?? "", reader.bytesRead)
    }

    /// The whole of a file (a schema, a small side file).
    public static func contents(of path: String, regularOnly: Bool = false) throws(FileIOError) -> [UInt8] {
        let reader = try FileReader(path: path, regularOnly: regularOnly)
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { chunk.deallocate() }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(reader.size)
        while true {
            let n = try reader.read(into: chunk)
            if n == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<n])
        }
    }

    static func hex(_ digest: SHA256.Digest) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: digest.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0xF)]] }, as: UTF8.self)
    }
}

/// The one way the project writes bytes to a descriptor.
public enum FileWriting {
    /// Writes all of `bytes` to `fd`, retrying on EINTR and after short writes; false (with `errno`) on failure.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return true
    }
}
