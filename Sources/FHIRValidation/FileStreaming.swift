import Crypto
import FHIRModel

#if canImport(Glibc)
import Glibc
#endif

/// Reads large files in chunks, so memory does not grow with an NDJSON file's size.
enum FileStreaming {
    private static let chunk = 4 << 20

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
            size += n
        }
        return (Hex.encode(hasher.finalize()), size)
    }

    /// Calls `body` with each line (1-based number, bytes without the line break); false if the file cannot be read.
    @discardableResult
    static func forEachLine(_ path: String, _ body: (Int, ArraySlice<UInt8>) -> Void) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var buffer: [UInt8] = []
        var chunkBuffer = [UInt8](repeating: 0, count: chunk)
        var line = 0
        while true {
            let n = chunkBuffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n < 0 { if errno == EINTR { continue } else { return false } }
            if n == 0 { break }
            buffer.append(contentsOf: chunkBuffer[0..<n])
            var start = 0
            while let newline = buffer[start...].firstIndex(of: 0x0A) {
                line += 1
                body(line, buffer[start..<newline])
                start = newline + 1
            }
            buffer.removeFirst(start)
        }
        if !buffer.isEmpty {
            line += 1
            body(line, buffer[...])
        }
        return true
    }
}
