#ifndef ATOMIC_RENAME_H
#define ATOMIC_RENAME_H
/// Atomically exchanges two paths (Linux renameat2 with RENAME_EXCHANGE).
/// Returns 0 on success, -1 with errno set otherwise (ENOSYS/EINVAL where unsupported).
int atomic_rename_exchange(const char *from, const char *to);
#endif
