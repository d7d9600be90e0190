import Crypto
import FileIO
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The one reader of files: what it hashes is what it read, it refuses what is not a regular file before blocking
/// on it, and its errors name the file.
struct FileReaderTests {
    private func temporaryFile(_ bytes: [UInt8]) -> String {
        let path = NSTemporaryDirectory() + "fileio-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    @Test func theDigestIsTheSHA256OfTheBytesReadInChunks() throws {
        let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 * 31) }
        let path = temporaryFile(bytes)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let reader = try FileReader(path: path, hashing: true, releasingPages: true)
        #expect(reader.size == bytes.count)
        var read: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = try chunk.withUnsafeMutableBytes { try reader.read(into: $0) }
            if n == 0 { break }
            read.append(contentsOf: chunk[0..<n])
        }
        #expect(read == bytes)
        #expect(reader.atEnd)
        let expected = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        #expect(reader.sha256 == expected)
        #expect(try FileReader.digest(path).sha256 == expected)
        #expect(try FileReader.contents(of: path) == bytes)
    }

    @Test func aFIFOIsRefusedWithoutBlocking() throws {
        let path = NSTemporaryDirectory() + "fileio-fifo-\(UUID().uuidString)"
        #expect(mkfifo(path, 0o600) == 0)
        defer { unlink(path) }
        let error = #expect(throws: FileIOError.self) { try FileReader(path: path) }
        #expect(error?.irregularity == "a FIFO (named pipe)")
        #expect(error?.description.contains(path) == true)
        #expect(FileKind.irregularity(path) == "a FIFO (named pipe)")
    }

    @Test func aMissingFileNamesItselfAndTheSystemsReason() {
        let error = #expect(throws: FileIOError.self) { try FileReader(path: "/nonexistent/file.ndjson") }
        #expect(error?.description == "/nonexistent/file.ndjson: opening failed: No such file or directory")
    }

    @Test func writeAllWritesEveryByte() throws {
        let path = NSTemporaryDirectory() + "fileio-w-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        #expect(fd >= 0)
        let bytes = [UInt8](repeating: 42, count: 3 << 20)
        #expect(bytes.withUnsafeBytes { FileWriting.writeAll(fd, $0) })
        close(fd)
        #expect(try FileReader.contents(of: path) == bytes)
    }
}
