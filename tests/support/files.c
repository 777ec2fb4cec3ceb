#include "files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The chunks into a fresh temporary file beside `path`, named in tmp (made readable as a
 * normal file would be). Returns 0, or an errno value with no temporary file left. */
static int write_temp(const char *path, const files_chunk *chunks, int n, char *tmp, size_t tmp_size)
{
    if (snprintf(tmp, tmp_size, "%s.XXXXXX", path) >= (int)tmp_size) return ENAMETOOLONG;
    const int fd = mkstemp(tmp); /* a fresh name: concurrent writers never share it */
    if (fd < 0) return errno;
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        const int err = errno;
        close(fd);
        remove(tmp);
        return err;
    }
    int err = 0;
    for (int i = 0; i < n && !err; i++)
        if (chunks[i].size && fwrite(chunks[i].data, 1, chunks[i].size, f) != chunks[i].size) err = errno ? errno : EIO;
    if (fclose(f) && !err) err = errno ? errno : EIO;
    if (!err && chmod(tmp, 0644)) err = errno; /* mkstemp made it 0600 */
    if (err) remove(tmp);
    return err;
}

int files_write_atomic(const char *path, const files_chunk *chunks, int n)
{
    files_batch b;
    memset(&b, 0, sizeof b);
    const int err = files_stage(&b, path, chunks, n);
    return err ? err : files_commit(&b);
}

int files_stage(files_batch *b, const char *path, const files_chunk *chunks, int n)
{
    if (b->n >= FILES_BATCH_MAX) return EMFILE;
    char tmp[4096];
    int err = write_temp(path, chunks, n, tmp, sizeof tmp);
    if (err) return err;
    char *t = strdup(tmp), *p = strdup(path);
    if (!t || !p) {
        remove(tmp);
        free(t);
        free(p);
        return ENOMEM;
    }
    b->tmp[b->n] = t;
    b->path[b->n++] = p;
    return 0;
}

int files_commit(files_batch *b)
{
    int err = 0, i = 0;
    for (; i < b->n && !err; i++)
        if (rename(b->tmp[i], b->path[i])) {
            err = errno;
            remove(b->tmp[i]);
        }
    for (int j = 0; j < b->n; j++) {
        if (j >= i) remove(b->tmp[j]); /* after a failed rename: not renamed */
        free(b->tmp[j]);
        free(b->path[j]);
    }
    b->n = 0;
    return err;
}

void files_discard(files_batch *b)
{
    for (int i = 0; i < b->n; i++) {
        remove(b->tmp[i]);
        free(b->tmp[i]);
        free(b->path[i]);
    }
    b->n = 0;
}

uint64_t files_hash(const char *const *parts, int n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < n; i++) {
        for (const char *p = parts[i]; *p; p++) h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
        h = (h ^ 0xff) * 0x100000001b3ull;
    }
    return h;
}
