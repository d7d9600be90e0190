import CFileOps
import Crypto
import FHIRModel
import FileIO

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors while writing the artifact folder, naming the path and what the system said.
public struct ArtifactError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var message: String

    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(message)" }

    static func posix(_ path: String, _ what: String) -> ArtifactError {
        ArtifactError(path: path, message: "\(what) failed: \(String(cString: strerror(errno)))")
    }
}

/// Writes one file through a large buffer while hashing it, so the manifest's checksum costs no second read.
public final class HashingFileWriter {
    public let path: String
    private let fd: Int32
    // Used by one thread at a time; the per-entry state skips the runtime exclusivity checks.
    @exclusivity(unchecked) private var buffer: [UInt8] = []
    @exclusivity(unchecked) private var hasher = SHA256()
    @exclusivity(unchecked) public private(set) var size = 0
    private static let flushThreshold = 1 << 20

    /// Where written ranges go to be released from the page cache; nil to leave them to the kernel.
    private let writeBehind: WriteBehind?
    private let file: WriteBehind.File?

    public init(path: String, writeBehind: WriteBehind? = nil) throws(ArtifactError) {
        self.path = path
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw .posix(path, "creating the file") }
        self.fd = fd
        self.writeBehind = writeBehind
        file = writeBehind == nil ? nil : WriteBehind.File(fd: fd, path: path)
        buffer.reserveCapacity(HashingFileWriter.flushThreshold + 4096)
    }

    private var closed = false

    deinit {
        if !closed { closeFile() }
    }

    private func closeFile() {
        if let writeBehind, let file { writeBehind.close(file) } else { close(fd) }
    }

    public func write(_ bytes: [UInt8]) throws(ArtifactError) {
        if buffer.isEmpty && bytes.count >= HashingFileWriter.flushThreshold / 2 {
            try writeOut(bytes)  // a whole bundle: straight from the caller's buffer, no copy
            return
        }
        buffer.append(contentsOf: bytes)
        if buffer.count >= HashingFileWriter.flushThreshold { try flush() }
    }

    /// Buffers `bytes` (a line of NDJSON, say) followed by `terminator`.
    public func write(_ bytes: UnsafeBufferPointer<UInt8>, then terminator: UInt8) throws(ArtifactError) {
        buffer.append(contentsOf: bytes)
        buffer.append(terminator)
        if buffer.count >= HashingFileWriter.flushThreshold { try flush() }
    }

    public func write(_ byte: UInt8) throws(ArtifactError) {
        buffer.append(byte)
        if buffer.count >= HashingFileWriter.flushThreshold { try flush() }
    }

    private func flush() throws(ArtifactError) {
        guard !buffer.isEmpty else { return }
        try writeOut(buffer)
        buffer.removeAll(keepingCapacity: true)
    }

    /// Hashes and writes `bytes`.
    private func writeOut(_ bytes: [UInt8]) throws(ArtifactError) {
        hasher.update(data: bytes)
        size += bytes.count
        if !bytes.withUnsafeBytes({ FileWriting.writeAll(fd, $0) }) { throw .posix(path, "writing") }
        // Start writing these bytes to disk now, without waiting: a conversion writes gigabytes, and letting them
        // pile up as dirty pages makes the kernel stall the writer (and the final sync) later. Behind a window, the
        // pages are also released once on disk (see `WriteBehind`).
        if let writeBehind, let file {
            writeBehind.wrote(file, offset: size - bytes.count, count: bytes.count)
        } else {
            _ = file_ops_start_writeback(fd, Int64(size - bytes.count), Int64(bytes.count))
        }
    }

    /// Flushes and closes; returns the file's SHA-256 and size. Durability comes from one sync of the whole staging
    /// folder before it is swapped in (`ArtifactFolder.commit`), not from a sync per file.
    public func finish() throws(ArtifactError) -> (sha256: String, size: Int) {
        try flush()
        closed = true
        if writeBehind != nil {
            closeFile()  // write-back failures surface from `WriteBehind.drain()`
        } else if close(fd) != 0 {
            throw .posix(path, "closing")
        }
        return (Hex.encode(hasher.finalize()), size)
    }
}
