import CFileOps
import FHIRModel
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The output folder, built in a hidden temporary folder beside the target and swapped in only when complete.
///
/// An interrupted or failed run therefore leaves the previous artifacts untouched: the swap is one
/// `renameat2(RENAME_EXCHANGE)` on Linux, so there is no moment without a complete folder at the target path.
/// One run at a time writes a target: a second one is refused while the first holds `.<name>.lock` beside it, so
/// neither removes the other's staging folder.
public final class ArtifactFolder {
    /// Where the artifacts end up.
    public let target: String
    /// Where they are written until `commit()`.
    public let staging: String
    private var committed = false
    /// The open lock file (`flock`ed) for as long as this run owns the target; -1 once released.
    private var lockDescriptor: Int32 = -1
    /// Keeps the page cache held by the artifacts bounded while they are written.
    private let writeBehind = WriteBehind()

    /// Prepares a staging folder beside `target`. Refuses a target that exists but is not an artifact folder, so a
    /// mistyped `--out` never replaces someone's files.
    public init(target: String) throws(ArtifactError) {
        let fm = FileManager.default
        let target = target.hasSuffix("/") && target.count > 1 ? String(target.dropLast()) : target
        self.target = target
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: target, isDirectory: &isDir) {
            guard isDir.boolValue else {
                throw ArtifactError(path: target, message: "exists and is not a folder; choose another --out")
            }
            let contents = (try? fm.contentsOfDirectory(atPath: target)) ?? []
            let foreign = contents.filter { $0 != ".gitkeep" }
            if !foreign.isEmpty && !contents.contains(ManifestFile.name) {
                throw ArtifactError(path: target, message: "exists, is not empty and holds no manifest.json, so it is not an artifact folder; choose another --out or empty it")
            }
            if contents.contains(ManifestFile.name) && ManifestFile.isForeign(inFolder: target) {
                throw ArtifactError(path: target, message: "holds a manifest.json that fhirbundle did not write (a Bulk Data export's?), so it is not an artifact folder; choose another --out")
            }
        }
        let parent = (target as NSString).deletingLastPathComponent
        let base = (target as NSString).lastPathComponent
        let parentDir = parent.isEmpty ? "." : parent
        do {
            try fm.createDirectory(atPath: parentDir, withIntermediateDirectories: true)
        } catch {
            throw ArtifactError(path: parentDir, message: "cannot create the folder: \(error.localizedDescription)")
        }
        lockDescriptor = try Self.lock(parentDir + "/.\(base).lock", target: target)
        // Leftovers of a killed run are ours to clean (a live run would hold the lock).
        for entry in (try? fm.contentsOfDirectory(atPath: parentDir)) ?? [] where entry.hasPrefix(".\(base).staging-") {
            try? fm.removeItem(atPath: parentDir + "/" + entry)
        }
        staging = parentDir + "/.\(base).staging-\(getpid())"
        do {
            try fm.createDirectory(atPath: staging, withIntermediateDirectories: false)
        } catch {
            close(lockDescriptor)
            throw ArtifactError(path: staging, message: "cannot create the staging folder: \(error.localizedDescription)")
        }
    }

    deinit {
        if !committed { discard() }
        unlock()
    }

    /// Takes the target's lock, or says which process holds it. The lock file stays (empty of meaning but the pid):
    /// removing it while another run opens it would let two runs lock two different files.
    private static func lock(_ path: String, target: String) throws(ArtifactError) -> Int32 {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .posix(path, "opening the lock file") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            var holder = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &holder, holder.count, 0)
            close(fd)
            guard busy else { throw .posix(path, "locking the output folder") }
            let pid = n > 0 ? String(decoding: holder[..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
            throw ArtifactError(path: target, message: "another run (process \(pid)) is writing this folder; wait for it to finish or choose another --out")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, pid, pid.count, 0)
        return fd
    }

    private func unlock() {
        guard lockDescriptor >= 0 else { return }
        close(lockDescriptor)  // releases the flock
        lockDescriptor = -1
    }

    /// Creates `relative` (a folder path inside the artifact folder).
    public func makeFolder(_ relative: String) throws(ArtifactError) {
        do {
            try FileManager.default.createDirectory(atPath: staging + "/" + relative, withIntermediateDirectories: true)
        } catch {
            throw ArtifactError(path: relative, message: "cannot create the folder: \(error.localizedDescription)")
        }
    }

    /// Opens a hashed writer for `relative`.
    public func writer(_ relative: String) throws(ArtifactError) -> HashingFileWriter {
        try HashingFileWriter(path: staging + "/" + relative, writeBehind: writeBehind)
    }

    /// Writes a small file whole and returns its manifest entry.
    public func write(_ bytes: [UInt8], to relative: String) throws(ArtifactError) -> Manifest.Artifact {
        let writer = try writer(relative)
        try writer.write(bytes)
        let f = try writer.finish()
        return Manifest.Artifact(path: relative, sha256: f.sha256, bytes: f.size)
    }

    private var flushed = false

    /// Writes everything to disk, so that the swap that follows makes only durable files visible. `commit()` does
    /// it too; calling it first lets a caller check for cancellation between the (slow) sync and the (instant) swap.
    public func flushToDisk() throws(ArtifactError) {
        guard !flushed else { return }
        try writeBehind.drain()
        let dir = open(staging, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 {
            defer { close(dir) }
            if file_ops_sync_filesystem(dir) != 0 { throw .posix(staging, "syncing the artifacts to disk") }
        }
        flushed = true
    }

    /// Replaces the target with the staging folder.
    public func commit() throws(ArtifactError) {
        let fm = FileManager.default
        try flushToDisk()
        if fm.fileExists(atPath: target + "/.gitkeep") { _ = fm.createFile(atPath: staging + "/.gitkeep", contents: Data()) }
        if fm.fileExists(atPath: target) {
            if file_ops_exchange(staging, target) != 0 {
                // Filesystems without RENAME_EXCHANGE: move the old folder aside, then move the new one in.
                let aside = staging + ".old"
                guard rename(target, aside) == 0 else { throw .posix(target, "moving the previous artifacts aside") }
                guard rename(staging, target) == 0 else {
                    _ = rename(aside, target)
                    throw .posix(target, "moving the new artifacts in")
                }
                try? fm.removeItem(atPath: aside)
            } else {
                try? fm.removeItem(atPath: staging)  // now holds the previous artifacts
            }
        } else if rename(staging, target) != 0 {
            throw .posix(target, "moving the new artifacts in")
        }
        committed = true
        unlock()
    }

    /// Moves the staging folder to `path` (replacing what is there) instead of the target, for review.
    public func keep(at path: String) throws(ArtifactError) {
        try writeBehind.drain()
        try? FileManager.default.removeItem(atPath: path)
        guard rename(staging, path) == 0 else { throw .posix(path, "keeping the artifacts for review") }
        committed = true
        unlock()
    }

    /// Removes the staging folder, leaving the target as it was.
    public func discard() {
        try? writeBehind.drain()  // closes the files still open
        try? FileManager.default.removeItem(atPath: staging)
        committed = true
        unlock()
    }
}

/// Where an artifact folder's bundles go: `bundles/01-patients/0001.json`. One place, so that convert, rebundle and
/// diff --out name them alike and a reviewer's diff of two folders lines up.
public enum BundlePaths {
    /// The folder of step `index` (0-based) named `name`.
    public static func stepFolder(_ index: Int, _ name: String) -> String {
        "bundles/" + pad(index + 1, 2) + "-" + name
    }

    /// The `number`-th (1-based) bundle file of a step folder.
    public static func bundleFile(in folder: String, number: Int) -> String {
        folder + "/" + pad(number, 4) + ".json"
    }

    static func pad(_ n: Int, _ width: Int) -> String {
        let s = String(n)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }
}
