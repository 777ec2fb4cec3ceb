/* NumPy .npy files: the exchange format of `clattn run`, so results compare with any
 * framework. Little-endian C-order arrays of float32, float16, uint16 (bf16 bits), int32. */
#ifndef CLATTN_NPY_H
#define CLATTN_NPY_H

#include "files.h"

#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_DIMS 8

typedef enum npy_type { NPY_F32, NPY_F16, NPY_U16, NPY_I32 } npy_type;

typedef struct npy_array {
    npy_type type;
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    size_t count;  /* elements */
    void *data;    /* count * npy_type_size(type) bytes, owned */
} npy_array;

size_t npy_type_size(npy_type t);
const char *npy_type_name(npy_type t);

/* Parses a whole .npy image held in memory. Returns 0, or -1 with a one-line reason in err. */
int npy_parse(const unsigned char *buf, size_t len, npy_array *out, char *err, size_t err_size);
/* Reads a file (whole). Returns 0, or -1 with a reason naming the file. */
int npy_read(const char *path, npy_array *out, char *err, size_t err_size);
/* Writes atomically (temporary file, then rename): on failure the path is left untouched. */
int npy_write(const char *path, npy_type type, int ndim, const int64_t *shape, const void *data,
              char *err, size_t err_size);
/* The same, staged into a batch of files written all or none (files.h: files_commit). */
int npy_stage(files_batch *b, const char *path, npy_type type, int ndim, const int64_t *shape, const void *data,
              char *err, size_t err_size);
void npy_free(npy_array *a);

/* Shards of a file, for processes that each hold part of a tensor (`clattn ring`): */
/* The header alone (out->data NULL) and where the data starts; the file's size is checked. */
int npy_read_header(const char *path, npy_array *out, size_t *data_offset, char *err, size_t err_size);
/* Reads only the ranges [starts[r], starts[r] + lens[r]) along `axis`, concatenated in order:
 * out has the file's shape with that axis their total length. */
int npy_read_slabs(const char *path, int axis, int nranges, const int64_t *starts, const int64_t *lens,
                   npy_array *out, char *err, size_t err_size);
/* Creates a file of the shape (header, then data of unspecified content), for npy_write_slabs;
 * not atomic: callers write to a temporary name and rename it when every slab is written. */
int npy_create(const char *path, npy_type type, int ndim, const int64_t *shape, char *err, size_t err_size);
/* Writes `data` (laid out as npy_read_slabs returns it) into those ranges of an existing file. */
int npy_write_slabs(const char *path, int axis, int nranges, const int64_t *starts, const int64_t *lens,
                    const void *data, char *err, size_t err_size);

#endif
