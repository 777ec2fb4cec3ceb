/* Files: the key hash, directories, whole-file reads and atomic writes. */
#include "disk.h"
#include "diag.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++) h = (h ^ (unsigned char)*s) * FNV_PRIME;
    return (h ^ 0xff) * FNV_PRIME; /* the separator */
}

clattn_digest clattn__digest(const char *const *parts, size_t n)
{
    clattn_digest d = {0xcbf29ce484222325ull, 0x84222325cbf29ce4ull};
    for (size_t i = 0; i < n; i++) {
        d.hi = fnv1a(d.hi, parts[i]);
        d.lo = fnv1a(d.lo ^ (uint64_t)(i + 1), parts[i]);
    }
    return d;
}

void clattn__make_dirs(const char *dir)
{
    char tmp[1024];
    clattn__format(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0755);
            *p = '/';
        }
    mkdir(tmp, 0755);
}

unsigned char *clattn__read_file(const char *path, size_t *size)
{
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *data = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (data = malloc((size_t)n)) &&
        fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    if (data) *size = (size_t)n;
    return data;
}

int clattn__write_atomic(const char *path, const void *data, size_t size)
{
    char dir[1200], tmp[1300];
    clattn__format(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        clattn__make_dirs(dir);
    }
    /* mkstemp: a fresh name per call, so concurrent writers never share a temporary file */
    clattn__format(tmp, sizeof tmp, "%s.XXXXXX", path);
    const int fd = mkstemp(tmp);
    if (fd < 0) return errno ? errno : EIO;
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        const int err = errno ? errno : EIO;
        close(fd);
        remove(tmp);
        return err;
    }
    int err = fwrite(data, 1, size, f) == size ? 0 : (errno ? errno : EIO);
    if (fclose(f) && !err) err = errno ? errno : EIO;
    if (!err && chmod(tmp, 0644)) err = errno ? errno : EIO; /* mkstemp made it 0600 */
    if (!err && rename(tmp, path)) err = errno ? errno : EIO;
    if (err) remove(tmp);
    return err;
}
