/* CLBlast for the unfused paths: one SGEMM call with the fault hook, and CLBlast's failures as
 * clattn statuses. Never CLBlast's half GEMM: it accumulates in half. */
#ifndef CLATTN_BLAS_H
#define CLATTN_BLAS_H

#include "internal.h"

/* C = alpha op(A) op(B) + beta C, row-major, on `queue`; every offset in elements. On failure
 * the context's error names `what` and CLBlast's status. */
typedef struct clattn_gemm {
    bool trans_a, trans_b;
    size_t m, n, k;
    float alpha, beta;
    cl_mem a, b, c;
    size_t a_off, b_off, c_off, lda, ldb, ldc;
} clattn_gemm;
CLATTN_HIDDEN clattn_status clattn__sgemm(clattn_context *ctx, cl_command_queue queue, const clattn_gemm *g,
                                          const char *what);

/* A leading dimension for CLBlast: the stride, or the row length when only one row is read
 * (a stride shorter than a row is legal then, and CLBlast refuses it). */
CLATTN_HIDDEN size_t clattn__ld(int64_t stride, size_t rows, size_t cols);

/* The unfused paths' chunks of query rows, `row_bytes` of scores each, within `limit` bytes:
 * all (batch, head) items and all rows when they fit; else all rows of as many items as fit;
 * else as many rows of one item as fit. Items are capped at CLATTN_GRID_MAX (the elementwise
 * kernels put a chunk's items in their NDRange's 2nd dimension). row_bytes <= limit. */
CLATTN_HIDDEN void clattn__score_chunks(const clattn_shape *s, size_t row_bytes, size_t limit, int *rows,
                                        int *items);

/* The start of an unfused path's enqueue: the queue must be in order (CLBlast chains its
 * kernels so), and the caller's wait list gates everything after it through a barrier. */
CLATTN_HIDDEN clattn_status clattn__gemm_queue_start(clattn_context *ctx, cl_command_queue queue, cl_uint num_wait,
                                                     const cl_event *wait);

/* CLBlast takes offsets and leading dimensions as 32-bit ints: a path may use its GEMMs only
 * where every element they can reach lies below 2^31 in its buffer (`elems`, each buffer). */
CLATTN_HIDDEN bool clattn__gemm_index_fits(uint64_t elems, char *why, size_t why_size);
/* The same for q, k, v and o where a path's GEMMs read them in place (no f32 copies). */
CLATTN_HIDDEN bool clattn__gemm_tensors_fit(const clattn_shape *s, char *why, size_t why_size);
/* The same for tensors read or written in place at the caller's offsets, at execution. */
CLATTN_HIDDEN clattn_status clattn__gemm_offsets_fit(clattn_context *ctx, const size_t *offsets, const size_t *elems,
                                                     const char *const *names, int n);

#endif
