import FHIRArtifacts
import FHIRModel
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Artifacts written behind a window: the bytes and checksum are exactly what was written, the pages of released
/// ranges leave the page cache, and every file is closed once drained.
@Suite struct WriteBehindTests {
    /// Descriptors of this process open on files in `dir` (other tests run alongside and open their own).
    private func openDescriptors(in dir: String) -> Int {
        let fm = FileManager.default
        let fds = (try? fm.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { ((try? fm.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0)) ?? "").hasPrefix(dir + "/") }.count
    }

    /// Pages of `path` in the page cache (mincore over a mapping of the file).
    private func residentPages(_ path: String) -> Int {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var info = stat()
        fstat(fd, &info)
        let size = Int(info.st_size)
        guard size > 0, let map = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else { return -1 }
        defer { munmap(map, size) }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var vector = [UInt8](repeating: 0, count: (size + page - 1) / page)
        guard mincore(map, size, &vector) == 0 else { return -1 }
        return vector.filter { $0 & 1 == 1 }.count
    }

    @Test func writesEveryByteReleasesThePageCacheBehindTheWindowAndClosesEveryFile() throws {
        let dir = NSTemporaryDirectory() + "writebehind-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let window = WriteBehind(window: 2 << 20)
        var expected: [(path: String, bytes: [UInt8], sha256: String)] = []
        for f in 0..<20 {
            let path = dir + "/\(f).bin"
            let writer = try HashingFileWriter(path: path, writeBehind: window)
            var bytes: [UInt8] = []
            for piece in 0..<(f == 0 ? 48 : 3) {  // the first file 12 MiB in pieces, the others 768 KiB
                let chunk = [UInt8](repeating: UInt8(truncatingIfNeeded: f &* 31 &+ piece), count: 256 << 10)
                try writer.write(chunk)
                bytes += chunk
            }
            let result = try writer.finish()
            #expect(result.size == bytes.count)
            expected.append((path, bytes, result.sha256))
        }
        // Files whose ranges still wait behind the window stay open until released.
        #expect(openDescriptors(in: dir) > 0)
        try window.drain()
        #expect(openDescriptors(in: dir) == 0)
        // The 12 MiB file was released as it was written: at most a few pages of it remain cached. (tmpfs keeps its
        // pages whatever it is told: they are the file.)
        if fileSystemType(of: dir) != "tmpfs" {
            #expect(residentPages(expected[0].path) < 64)
        }
        for file in expected {
            let data = try #require(FileManager.default.contents(atPath: file.path))
            #expect(Array(data) == file.bytes)
            #expect(sha256Hex(file.bytes) == file.sha256)  // one pass over the whole, against the writer's chunks
        }
    }

    /// Thousands of small bundles: the files waiting behind the window stay few, so descriptors never run out.
    @Test func manySmallFilesKeepFewDescriptorsOpen() throws {
        let dir = NSTemporaryDirectory() + "writebehind-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let window = WriteBehind(window: 64 << 20, maxRanges: 32)
        var most = 0
        for f in 0..<2_000 {
            let writer = try HashingFileWriter(path: dir + "/\(f).json", writeBehind: window)
            try writer.write(Array("{\"resourceType\":\"Bundle\",\"type\":\"batch\",\"entry\":[]}\n".utf8))
            _ = try writer.finish()
            if f % 100 == 0 { most = max(most, openDescriptors(in: dir)) }
        }
        try window.drain()
        #expect(most > 0 && most <= 32)
        #expect(openDescriptors(in: dir) == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).count == 2_000)
    }
}

/// The type of the file system holding `path` (the longest mount point of /proc/mounts that contains it).
private func fileSystemType(of path: String) -> String? {
    let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
    var best: (point: String, type: String)?
    for line in mounts.split(separator: "\n") {
        let fields = line.split(separator: " ")
        guard fields.count > 2 else { continue }
        let point = String(fields[1])
        let contains = point == "/" || path == point || path.hasPrefix(point + "/")
        if contains && point.count >= (best?.point.count ?? 0) { best = (point, String(fields[2])) }
    }
    return best?.type
}
