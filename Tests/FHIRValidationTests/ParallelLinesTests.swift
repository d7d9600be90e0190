import FHIRModel
import Foundation
import Testing

@testable import FHIRValidation

/// The NDJSON pass reads lines through `ParallelLines` when it has threads to spare and through
/// `FileStreaming.forEachLine` when it has not: both must give the same lines, numbers, long-line reports and digest,
/// or a finding would depend on the thread count.
struct ParallelLinesTests {
    private struct Seen: Equatable {
        var lines: [String] = []
        var hashes: [UInt64] = []
        var tooLong: [Int] = []
        var digest: String?
    }

    private static let samples: [(name: String, text: String)] = [
        ("lines with a final line break", "{\"a\":1}\n{\"b\":2}\n"),
        ("no final line break", "{\"a\":1}\n{\"b\":2}"),
        ("blank and spaced lines", "\n  \n {\"a\":1} \r\n\n\t{\"b\":2}\t\n"),
        ("a long line in the middle", "{\"a\":1}\n" + String(repeating: "x", count: 100) + "\n{\"c\":3}\n"),
        ("a long line at the end, unterminated", "{\"a\":1}\n" + String(repeating: "y", count: 90)),
        ("a line of exactly the limit", String(repeating: "z", count: 40) + "\n{}\n"),
        ("a line one over the limit", String(repeating: "z", count: 41) + "\n{}\n"),
        ("empty", ""),
        ("only a line break", "\n"),
    ]

    private func sequential(_ path: String) -> Seen {
        var seen = Seen()
        let digest = FileStreaming.forEachLine(path, digest: true, maxLine: 40, tooLong: { seen.tooLong.append($0) }) { n, bytes in
            seen.lines.append("\(n):" + String(decoding: bytes, as: UTF8.self))
            seen.hashes.append(ParallelLines.trimmedHash(bytes))
        }
        seen.digest = digest.map { "\($0.sha256) \($0.size)" }
        return seen
    }

    private func parallel(_ path: String, threads: Int, chunkSize: Int) -> Seen {
        var seen = Seen()
        let digest = ParallelLines.forEachLine(path, digest: true, maxLine: 40, threads: threads, chunkSize: chunkSize,
                                               tooLong: { seen.tooLong.append($0) }) { n, bytes, hash in
            seen.lines.append("\(n):" + String(decoding: bytes, as: UTF8.self))
            seen.hashes.append(hash)
        }
        seen.digest = digest.map { "\($0.sha256) \($0.size)" }
        return seen
    }

    @Test(arguments: samples.map(\.name))
    func linesNumbersLongLinesAndDigestAreThoseOfTheSequentialReader(sample: String) throws {
        let text = try #require(Self.samples.first { $0.name == sample }).text
        let path = NSTemporaryDirectory() + "parallel-lines-\(UUID().uuidString).ndjson"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let expected = sequential(path)
        // Chunks of 1 and 7 bytes put chunk boundaries inside every line, line break and long line.
        for (threads, chunkSize) in [(1, 1), (2, 7), (3, 1 << 20)] {
            #expect(parallel(path, threads: threads, chunkSize: chunkSize) == expected, "threads \(threads), chunks of \(chunkSize) bytes")
        }
    }

    @Test func aFileThatCannotBeReadGivesNoDigest() {
        let seen = parallel("/nonexistent/file.ndjson", threads: 2, chunkSize: 16)
        #expect(seen.digest == nil && seen.lines.isEmpty)
    }
}
