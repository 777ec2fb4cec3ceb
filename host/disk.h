/* Files: the key hash, directories, whole-file reads and atomic writes. One copy serves the
 * program cache (program.c) and the tuning file (tuning.c). Errors are returned, never
 * reported: a cache that cannot be read or written is skipped by its caller. */
#ifndef CLATTN_DISK_H
#define CLATTN_DISK_H

#include "internal.h"

#include <stdint.h>

/* A 128-bit FNV-1a digest of `n` strings, each part ended by a separator byte (so that
 * {"ab", "c"} and {"a", "bc"} differ). Two 64-bit lanes from two seeds. */
typedef struct clattn_digest {
    uint64_t hi, lo;
} clattn_digest;
CLATTN_HIDDEN clattn_digest clattn__digest(const char *const *parts, size_t n);

/* mkdir -p (errors ignored: the write that follows reports them). */
CLATTN_HIDDEN void clattn__make_dirs(const char *dir);

/* The whole file in a malloc'd buffer, or NULL (missing, unreadable, empty). */
CLATTN_HIDDEN unsigned char *clattn__read_file(const char *path, size_t *size);

/* Writes `size` bytes to `path` through a temporary file in the same directory and a rename,
 * creating the directory first: readers in other processes see the old file or the new one,
 * never half of one. Returns 0, or an errno value. */
CLATTN_HIDDEN int clattn__write_atomic(const char *path, const void *data, size_t size);

#endif
