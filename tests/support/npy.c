/* .npy reader and writer (format versions 1, 2 and 3), strict: anything that is not a
 * plain little-endian C-order array of a supported type is refused with a reason. */
#include "npy.h"
#include "files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ERR(...)                                  \
    do {                                          \
        snprintf(err, err_size, __VA_ARGS__);     \
        return -1;                                \
    } while (0)

size_t npy_type_size(npy_type t) { return t == NPY_F32 || t == NPY_I32 ? 4 : 2; }

const char *npy_type_name(npy_type t)
{
    switch (t) {
    case NPY_F32: return "float32";
    case NPY_F16: return "float16";
    case NPY_U16: return "uint16";
    default: return "int32";
    }
}

static const char *find_key(const char *h, const char *key)
{
    const char *p = strstr(h, key);
    if (!p) return NULL;
    p += strlen(key);
    while (*p == ' ') p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

static int parse_header(const char *h, npy_array *a, char *err, size_t err_size)
{
    const char *p = find_key(h, "'descr'");
    if (!p) ERR("header has no 'descr'");
    if (!strncmp(p, "'<f4'", 5)) a->type = NPY_F32;
    else if (!strncmp(p, "'<f2'", 5)) a->type = NPY_F16;
    else if (!strncmp(p, "'<u2'", 5)) a->type = NPY_U16;
    else if (!strncmp(p, "'<i4'", 5)) a->type = NPY_I32;
    else {
        char d[16] = {0};
        sscanf(p, "%15[^,}]", d);
        ERR("unsupported dtype %s (want float32, float16, uint16 or int32, little-endian)", d);
    }
    p = find_key(h, "'fortran_order'");
    if (!p) ERR("header has no 'fortran_order'");
    if (!strncmp(p, "True", 4)) ERR("Fortran-order arrays are not supported (save a C-order copy)");
    if (strncmp(p, "False", 5)) ERR("malformed 'fortran_order'");
    p = find_key(h, "'shape'");
    if (!p || *p != '(') ERR("header has no 'shape' tuple");
    p++;
    a->ndim = 0;
    size_t count = 1;
    for (;;) {
        while (*p == ' ') p++;
        if (*p == ')') break;
        if (a->ndim == NPY_MAX_DIMS) ERR("more than %d dimensions", NPY_MAX_DIMS);
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 0) ERR("malformed shape");
        a->shape[a->ndim++] = v;
        if (v > 0 && count > SIZE_MAX / (size_t)v) ERR("declared shape overflows");
        count *= (size_t)v;
        p = end;
        while (*p == ' ') p++;
        if (*p == ',') p++;
        else if (*p != ')') ERR("malformed shape");
    }
    a->count = count;
    return 0;
}

int npy_parse(const unsigned char *buf, size_t len, npy_array *a, char *err, size_t err_size)
{
    memset(a, 0, sizeof *a);
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6)) ERR("not a .npy file (bad magic)");
    const int major = buf[6];
    size_t hlen, start;
    if (major == 1) {
        hlen = buf[8] | (size_t)buf[9] << 8;
        start = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12) ERR("truncated header");
        hlen = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        start = 12;
    } else {
        ERR("unsupported .npy format version %d", major);
    }
    if (hlen > len - start) ERR("truncated header");
    if (memchr(buf + start, '\0', hlen)) ERR("header contains a NUL byte");
    char *h = malloc(hlen + 1);
    if (!h) ERR("out of memory");
    memcpy(h, buf + start, hlen);
    h[hlen] = '\0';
    int r = parse_header(h, a, err, err_size);
    free(h);
    if (r) return r;
    const size_t es = npy_type_size(a->type), data_len = len - start - hlen;
    if (a->count > SIZE_MAX / es) ERR("declared shape overflows");
    if (data_len < a->count * es)
        ERR("truncated data: shape needs %zu bytes, file has %zu", a->count * es, data_len);
    if (data_len > a->count * es) ERR("trailing bytes after the data");
    a->data = malloc(a->count > 0 ? a->count * es : 1);
    if (!a->data) ERR("out of memory for %zu bytes", a->count * es);
    memcpy(a->data, buf + start + hlen, a->count * es);
    return 0;
}

int npy_read(const char *path, npy_array *a, char *err, size_t err_size)
{
    memset(a, 0, sizeof *a);
    FILE *f = fopen(path, "rb");
    if (!f) ERR("%s: %s", path, strerror(errno));
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            unsigned char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                ERR("%s: out of memory", path);
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        ERR("%s: read error", path);
    }
    char inner[256];
    int r = npy_parse(buf, len, a, inner, sizeof inner);
    free(buf);
    if (r) ERR("%s: %s", path, inner);
    return 0;
}

int npy_write(const char *path, npy_type type, int ndim, const int64_t *shape, const void *data,
              char *err, size_t err_size)
{
    static const char *descr[] = {"<f4", "<f2", "<u2", "<i4"};
    char h[512];
    int n = snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr[type]);
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        n += snprintf(h + n, sizeof h - n, "%lld%s", (long long)shape[i], ndim == 1 ? "," : i + 1 < ndim ? ", " : "");
        count *= (size_t)shape[i];
    }
    n += snprintf(h + n, sizeof h - n, "), }");
    /* Pad with spaces so that magic + header ends on a 64-byte boundary, then '\n'. */
    while ((10 + n + 1) % 64) h[n++] = ' ';
    h[n++] = '\n';
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff),
                             (unsigned char)(n >> 8)};
    const files_chunk parts[3] = {{pre, 10}, {h, (size_t)n}, {data, count * npy_type_size(type)}};
    const int e = files_write_atomic(path, parts, 3);
    if (e) ERR("%s: cannot write (%s)", path, strerror(e));
    return 0;
}

void npy_free(npy_array *a)
{
    if (a) free(a->data);
    if (a) a->data = NULL;
}
