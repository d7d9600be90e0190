import CFileOps

#if canImport(Glibc)
import Glibc
#endif

/// Bounds the page cache that an artifact folder's writes hold: ranges already on disk are handed back to the kernel
/// once more than `window` bytes are waiting behind them.
///
/// A conversion writes gigabytes that it never reads again. Left in the page cache, they push out what the machine
/// was using, and on a virtual machine that hands free memory back to its host (free page reporting) every fresh
/// page is slow to get: measured here, writing 3 GB took 2.1-3.7 s of system time that way and 1.0 s with the
/// window. Writing behind a window of a few dozen megabytes reuses the same pages and keeps dirty data bounded.
public final class WriteBehind {
    /// An open artifact file whose descriptor the window closes once its ranges are released.
    final class File {
        let fd: Int32
        let path: String
        var pendingRanges = 0
        var closeRequested = false

        init(fd: Int32, path: String) {
            self.fd = fd
            self.path = path
        }
    }

    private let window: Int
    /// At most this many ranges wait, whatever their size: each may hold a file open (thousands of small bundles
    /// would otherwise run out of file descriptors).
    private let maxRanges: Int
    private var ranges: [(file: File, offset: Int, count: Int)] = []
    private var head = 0
    private var pendingBytes = 0
    /// The first write-back failure, reported by `drain()`.
    private var failure: ArtifactError?

    public init(window: Int = 64 << 20, maxRanges: Int = 256) {
        self.window = window
        self.maxRanges = maxRanges
    }

    /// Notes that `count` bytes at `offset` of `file` were written: starts their write-back now, without waiting,
    /// and releases the oldest ranges beyond the window.
    func wrote(_ file: File, offset: Int, count: Int) {
        _ = file_ops_start_writeback(file.fd, Int64(offset), Int64(count))
        ranges.append((file, offset, count))
        file.pendingRanges += 1
        pendingBytes += count
        while pendingBytes > window || ranges.count - head > maxRanges { releaseOldest() }
    }

    /// Closes `file` now if nothing of it is waiting, else once its last range is released.
    func close(_ file: File) {
        if file.pendingRanges == 0 { Glibc.close(file.fd) } else { file.closeRequested = true }
    }

    /// Releases every range and closes the files left open; throws the first write-back failure.
    public func drain() throws(ArtifactError) {
        while head < ranges.count { releaseOldest() }
        if let failure { throw failure }
    }

    private func releaseOldest() {
        let (file, offset, count) = ranges[head]
        head += 1
        // A file system without sync_file_range says so (EINVAL, ENOSYS, ...): the window is advisory there. A failed
        // write-back (EIO, ENOSPC) fails the run, as the final sync would.
        if file_ops_release_written(file.fd, Int64(offset), Int64(count)) != 0 && failure == nil {
            let code = errno
            if code != EINVAL && code != ENOSYS && code != ESPIPE && code != EOPNOTSUPP {
                failure = .posix(file.path, "writing to disk")
            }
        }
        pendingBytes -= count
        file.pendingRanges -= 1
        if file.pendingRanges == 0 && file.closeRequested { Glibc.close(file.fd) }
        if head > 4096 && head * 2 > ranges.count {
            ranges.removeFirst(head)
            head = 0
        }
    }
}
