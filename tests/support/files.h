/* Files for the clattn program and the tests: one atomic writer and one hash (the library has
 * its own, hidden: these tools see only its public API). */
#ifndef CLATTN_SUPPORT_FILES_H
#define CLATTN_SUPPORT_FILES_H

#include <stddef.h>
#include <stdint.h>

/* One piece of a file's contents. */
typedef struct files_chunk {
    const void *data;
    size_t size;
} files_chunk;

/* Writes the chunks, in order, to `path` through a temporary file beside it and a rename:
 * readers see the old file or the new one, and a failed write leaves no temporary file and
 * the old file as it was. Returns 0, or an errno value. */
int files_write_atomic(const char *path, const files_chunk *chunks, int n);

/* 64-bit FNV-1a of the strings, in order, each followed by a separator byte. */
uint64_t files_hash(const char *const *parts, int n);

#endif
