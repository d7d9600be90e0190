#ifndef FILE_OPS_H
#define FILE_OPS_H
// Linux file-system calls Swift's Glibc module does not expose (they need _GNU_SOURCE).

/// Atomically exchanges two paths (renameat2 with RENAME_EXCHANGE).
/// Returns 0 on success, -1 with errno set otherwise (ENOSYS/EINVAL where unsupported).
int file_ops_exchange(const char *from, const char *to);

/// Flushes the file system holding `fd` to disk (syncfs). Returns 0 on success.
int file_ops_sync_filesystem(int fd);

/// Starts writing back the given range of `fd` without waiting for it (sync_file_range with
/// SYNC_FILE_RANGE_WRITE); a no-op where unsupported. Returns 0 on success.
int file_ops_start_writeback(int fd, long long offset, long long count);
/// Waits until the given range of `fd` is on disk (sync_file_range: wait, write, wait), then tells the kernel the
/// pages will not be read again (posix_fadvise DONTNEED) so they are freed at once. Returns 0 on success, -1 with
/// errno set when the write-back failed; a no-op where unsupported.
int file_ops_release_written(int fd, long long offset, long long count);
#endif
