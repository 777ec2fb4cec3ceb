#include "files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int files_write_atomic(const char *path, const files_chunk *chunks, int n)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= (int)sizeof tmp) return ENAMETOOLONG;
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
    if (!err && rename(tmp, path)) err = errno;
    if (err) remove(tmp);
    return err;
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
