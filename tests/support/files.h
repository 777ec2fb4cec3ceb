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

/* Several files written all or none: each is staged into a temporary file beside its path
 * (files_stage), then all are renamed into place (files_commit); files_discard removes what is
 * still staged. Until the commit every old file stays as it was. Start from a zeroed batch. */
#define FILES_BATCH_MAX 16
typedef struct files_batch {
    int n;
    char *tmp[FILES_BATCH_MAX], *path[FILES_BATCH_MAX];
} files_batch;
/* Returns 0, or an errno value (nothing of this file staged). */
int files_stage(files_batch *b, const char *path, const files_chunk *chunks, int n);
/* Renames every staged file into place, in order. Returns 0, or the errno of the first rename
 * that failed (the files before it are in place; the rest are discarded). */
int files_commit(files_batch *b);
void files_discard(files_batch *b);

/* 64-bit FNV-1a of the strings, in order, each followed by a separator byte. */
uint64_t files_hash(const char *const *parts, int n);

#endif
