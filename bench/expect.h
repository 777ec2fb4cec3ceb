/* `clattn run --expect`: another framework's output compared with clattn's, element by
 * element in the file's own dtype, with the rows that differ named as the user indexes them. */
#ifndef CLATTN_EXPECT_H
#define CLATTN_EXPECT_H

#include "clattn.h"
#include "npy.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* How a tensor's rows are numbered, to name them: o in BHSD or BSHD, o packed (tokens, heads),
 * lse (B, Hq, Nq), lse packed (Hq, tokens). */
typedef enum expect_rows { ROWS_BHSD, ROWS_BSHD, ROWS_TOKEN_HEAD, ROWS_HEAD_TOKEN } expect_rows;

typedef struct expect_tensor {
    const char *name;     /* "o", "lse" */
    const char *path;     /* the user's file */
    npy_type type;        /* the storage both are compared in */
    bool bf16;            /* NPY_U16 holding bf16 bits */
    const void *ours;     /* clattn's result, in that storage */
    const void *theirs;
    size_t n, row_len;    /* elements; elements per row (head dim of v; 1 for lse) */
    expect_rows rows;
    int batch, heads, seq; /* ROWS_BHSD/BSHD; heads and tokens for the packed kinds */
    int64_t tokens;
    const int32_t *cu_q;  /* packed: cumulative sequence offsets (batch + 1), to name a token's sequence */
} expect_tensor;

typedef struct expect_verdict {
    bool ok;
    char summary[512]; /* one clause for the verdict line: the figures, or what failed first */
} expect_verdict;

/* Checks that the user's array has the shape and dtype clattn's output has: 0, or 1 after one
 * line on stderr naming both. */
int expect_check_file(const char *flag, const npy_array *theirs, npy_type type, bool bf16, int ndim,
                      const int64_t *shape);

/* Compares, prints the report (figures, the worst rows, NaN/inf positions that differ) on `f`
 * and fills the verdict. `bound`: the relative L2 bound (clattn_tolerance's, or --tol); a row
 * and an element have ten times it, as in every clattn check (tests/support/metrics.h). */
int expect_compare(FILE *f, const expect_tensor *t, double bound, expect_verdict *v);

#endif
