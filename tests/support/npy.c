/* .npy reader and writer (format versions 1, 2 and 3), strict: anything that is not a
 * plain little-endian C-order array of a supported type is refused with a reason. */
#include "npy.h"
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
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

/* The header of an array: magic, version 1, the dictionary padded so that the data starts on a
 * 64-byte boundary. Returns its length (at most NPY_HEADER_MAX). */
#define NPY_HEADER_MAX 600
static size_t make_header(npy_type type, int ndim, const int64_t *shape, unsigned char *out, size_t *count)
{
    static const char *descr[] = {"<f4", "<f2", "<u2", "<i4"};
    char h[512];
    int n = snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr[type]);
    *count = 1;
    for (int i = 0; i < ndim; i++) {
        n += snprintf(h + n, sizeof h - n, "%lld%s", (long long)shape[i], ndim == 1 ? "," : i + 1 < ndim ? ", " : "");
        *count *= (size_t)shape[i];
    }
    n += snprintf(h + n, sizeof h - n, "), }");
    /* Pad with spaces so that magic + header ends on a 64-byte boundary, then '\n'. */
    while ((10 + n + 1) % 64) h[n++] = ' ';
    h[n++] = '\n';
    const unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff),
                                   (unsigned char)(n >> 8)};
    memcpy(out, pre, 10);
    memcpy(out + 10, h, (size_t)n);
    return 10 + (size_t)n;
}

int npy_stage(files_batch *b, const char *path, npy_type type, int ndim, const int64_t *shape, const void *data,
              char *err, size_t err_size)
{
    unsigned char h[NPY_HEADER_MAX];
    size_t count;
    const size_t hlen = make_header(type, ndim, shape, h, &count);
    const files_chunk parts[2] = {{h, hlen}, {data, count * npy_type_size(type)}};
    const int e = files_stage(b, path, parts, 2);
    if (e) ERR("%s: cannot write (%s)", path, strerror(e));
    return 0;
}

int npy_write(const char *path, npy_type type, int ndim, const int64_t *shape, const void *data,
              char *err, size_t err_size)
{
    files_batch b;
    memset(&b, 0, sizeof b);
    if (npy_stage(&b, path, type, ndim, shape, data, err, err_size)) return -1;
    const int e = files_commit(&b);
    if (e) ERR("%s: cannot write (%s)", path, strerror(e));
    return 0;
}

int npy_read_header(const char *path, npy_array *a, size_t *data_offset, char *err, size_t err_size)
{
    memset(a, 0, sizeof *a);
    FILE *f = fopen(path, "rb");
    if (!f) ERR("%s: %s", path, strerror(errno));
    unsigned char buf[1 << 16];
    const size_t len = fread(buf, 1, sizeof buf, f);
    long end = -1;
    if (!fseek(f, 0, SEEK_END)) end = ftell(f);
    fclose(f);
    if (end < 0) ERR("%s: cannot tell its size", path);
    /* parse the header alone: an image of the header followed by no data, then check sizes */
    if (len < 12 || memcmp(buf, "\x93NUMPY", 6)) ERR("%s: not a .npy file (bad magic)", path);
    if (buf[6] < 1 || buf[6] > 3) ERR("%s: unsupported .npy format version %d", path, buf[6]);
    const size_t start = buf[6] == 1 ? 10 : 12;
    const size_t hlen = start + (buf[6] == 1 ? (buf[8] | (size_t)buf[9] << 8)
                                             : (buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16));
    if (hlen > len) ERR("%s: header longer than %zu bytes", path, sizeof buf);
    if (memchr(buf + start, '\0', hlen - start)) ERR("%s: header contains a NUL byte", path);
    char h[sizeof buf + 1], inner[256];
    memcpy(h, buf + start, hlen - start);
    h[hlen - start] = '\0';
    if (parse_header(h, a, inner, sizeof inner)) ERR("%s: %s", path, inner);
    const size_t es = npy_type_size(a->type);
    if (a->count > SIZE_MAX / es || (size_t)end - hlen != a->count * es)
        ERR("%s: the data is %zu bytes, the shape needs %zu", path, (size_t)end - hlen, a->count * es);
    *data_offset = hlen;
    return 0;
}

/* Elements before and after `axis` of a's shape. */
static void axis_split(const npy_array *a, int axis, size_t *outer, size_t *inner)
{
    *outer = *inner = 1;
    for (int i = 0; i < a->ndim; i++) {
        if (i < axis) *outer *= (size_t)a->shape[i];
        if (i > axis) *inner *= (size_t)a->shape[i];
    }
}

/* pread/pwrite of the ranges' slabs, in C order of the array with `axis` cut to the ranges. */
static int slabs_io(int fd, bool write, const npy_array *hdr, size_t offset, int axis, int nranges,
                    const int64_t *starts, const int64_t *lens, unsigned char *data)
{
    size_t outer, inner;
    axis_split(hdr, axis, &outer, &inner);
    const size_t es = npy_type_size(hdr->type), row = inner * es;
    for (size_t o = 0; o < outer; o++)
        for (int r = 0; r < nranges; r++) {
            const size_t bytes = (size_t)lens[r] * row;
            const off_t at = (off_t)(offset + (o * (size_t)hdr->shape[axis] + (size_t)starts[r]) * row);
            for (size_t done = 0; done < bytes;) {
                const ssize_t n = write ? pwrite(fd, data + done, bytes - done, at + (off_t)done)
                                        : pread(fd, data + done, bytes - done, at + (off_t)done);
                if (n <= 0) return n == 0 ? EIO : errno;
                done += (size_t)n;
            }
            data += bytes;
        }
    return 0;
}

static int check_ranges(const npy_array *hdr, int axis, int nranges, const int64_t *starts, const int64_t *lens,
                        int64_t *total)
{
    if (axis < 0 || axis >= hdr->ndim) return -1;
    *total = 0;
    for (int r = 0; r < nranges; r++) {
        if (starts[r] < 0 || lens[r] < 0 || starts[r] > hdr->shape[axis] - lens[r]) return -1;
        *total += lens[r];
    }
    return 0;
}

int npy_read_slabs(const char *path, int axis, int nranges, const int64_t *starts, const int64_t *lens,
                   npy_array *out, char *err, size_t err_size)
{
    size_t offset;
    if (npy_read_header(path, out, &offset, err, err_size)) return -1;
    int64_t total;
    if (check_ranges(out, axis, nranges, starts, lens, &total))
        ERR("%s: rows outside its axis %d of %lld", path, axis, (long long)out->shape[axis]);
    npy_array hdr = *out;
    out->shape[axis] = total;
    out->count = 1;
    for (int i = 0; i < out->ndim; i++) out->count *= (size_t)out->shape[i];
    out->data = malloc(out->count ? out->count * npy_type_size(out->type) : 1);
    if (!out->data) ERR("%s: out of memory", path);
    const int fd = open(path, O_RDONLY);
    const int e = fd < 0 ? errno : slabs_io(fd, false, &hdr, offset, axis, nranges, starts, lens, out->data);
    if (fd >= 0) close(fd);
    if (e) {
        npy_free(out);
        ERR("%s: %s", path, strerror(e));
    }
    return 0;
}

int npy_create(const char *path, npy_type type, int ndim, const int64_t *shape, char *err, size_t err_size)
{
    unsigned char h[NPY_HEADER_MAX];
    size_t count;
    const size_t hlen = make_header(type, ndim, shape, h, &count);
    const int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) ERR("%s: cannot create (%s)", path, strerror(errno));
    int e = 0;
    if (pwrite(fd, h, hlen, 0) != (ssize_t)hlen) e = errno ? errno : EIO;
    if (!e && ftruncate(fd, (off_t)(hlen + count * npy_type_size(type)))) e = errno;
    if (close(fd) && !e) e = errno;
    if (e) ERR("%s: cannot write (%s)", path, strerror(e));
    return 0;
}

int npy_write_slabs(const char *path, int axis, int nranges, const int64_t *starts, const int64_t *lens,
                    const void *data, char *err, size_t err_size)
{
    npy_array hdr;
    size_t offset;
    if (npy_read_header(path, &hdr, &offset, err, err_size)) return -1;
    int64_t total;
    if (check_ranges(&hdr, axis, nranges, starts, lens, &total))
        ERR("%s: rows outside its axis %d of %lld", path, axis, (long long)hdr.shape[axis]);
    const int fd = open(path, O_WRONLY);
    int e = fd < 0 ? errno : slabs_io(fd, true, &hdr, offset, axis, nranges, starts, lens, (unsigned char *)data);
    if (fd >= 0 && close(fd) && !e) e = errno;
    if (e) ERR("%s: cannot write (%s)", path, strerror(e));
    return 0;
}

void npy_free(npy_array *a)
{
    if (a) free(a->data);
    if (a) a->data = NULL;
}
