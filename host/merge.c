/* Merging partial results over disjoint key ranges: the building block of split-KV decode
 * (the fused path uses the same combine kernel) and of sequence parallelism across devices. */
#include "combine.h"
#include "abi.h"
#include "diag.h"
#include "fault.h"

#include <math.h>

/* The caller's descriptor copied into *d, and checked. */
static clattn_status check_desc(const clattn_merge_desc *caller, clattn_merge_desc *d, char *msg, size_t size)
{
    if (!caller) {
        clattn__format(msg, size, "merge descriptor is NULL");
        return CLATTN_INVALID_ARGUMENT;
    }
    clattn_status st = clattn__struct_in(d, sizeof *d, caller, "clattn_merge_desc", msg, size);
    if (st) return st;
    if (d->n_parts < 1 || d->rows < 1 || d->dim < 1 || d->dim > CLATTN_MAX_HEAD_DIM) {
        clattn__format(msg, size, "merge needs n_parts >= 1, rows >= 1 and dim in 1..%d (got %d, %d, %d)",
                       CLATTN_MAX_HEAD_DIM, d->n_parts, d->rows, d->dim);
        return CLATTN_INVALID_SHAPE;
    }
    size_t t;
    if (__builtin_mul_overflow((size_t)d->n_parts, (size_t)d->rows, &t) ||
        __builtin_mul_overflow(t, (size_t)d->dim * sizeof(float), &t)) {
        clattn__format(msg, size, "merge sizes overflow");
        return CLATTN_SIZE_OVERFLOW;
    }
    return CLATTN_SUCCESS;
}

clattn_status clattn_merge_host(const clattn_merge_desc *caller, const float *o_parts, const float *lse_parts, float *o,
                                float *lse)
{
    char msg[128];
    clattn_merge_desc desc;
    const clattn_merge_desc *d = &desc;
    clattn_status st = check_desc(caller, &desc, msg, sizeof msg);
    if (st) return st;
    if (!o_parts || !lse_parts || !o) return CLATTN_INVALID_ARGUMENT;
    const size_t rows = (size_t)d->rows, dim = (size_t)d->dim;
    for (size_t r = 0; r < rows; r++) {
        double m = -INFINITY;
        for (int p = 0; p < d->n_parts; p++) {
            const double x = lse_parts[p * rows + r];
            if (isnan(x) || x > m) m = x; /* a NaN part makes the row NaN */
        }
        if (m == -INFINITY) {
            for (size_t c = 0; c < dim; c++) o[r * dim + c] = 0.0f;
            if (lse) lse[r] = -INFINITY;
            continue;
        }
        double den = 0.0;
        for (int p = 0; p < d->n_parts; p++) den += exp(lse_parts[p * rows + r] - m);
        for (size_t c = 0; c < dim; c++) {
            double acc = 0.0;
            for (int p = 0; p < d->n_parts; p++) {
                const double w = exp(lse_parts[p * rows + r] - m);
                if (w != 0) acc += w * o_parts[(p * rows + r) * dim + c];
            }
            o[r * dim + c] = (float)(acc / den);
        }
        if (lse) lse[r] = (float)(m + log(den));
    }
    return CLATTN_SUCCESS;
}

clattn_status clattn_merge(clattn_context *ctx, cl_command_queue queue, const clattn_merge_desc *caller, cl_mem o_parts,
                           cl_mem lse_parts, cl_mem o, cl_mem lse, cl_uint num_wait, const cl_event *wait,
                           cl_event *event)
{
    if (event) *event = NULL;
    if (!ctx) return CLATTN_INVALID_ARGUMENT;
    char msg[128];
    clattn_merge_desc desc;
    const clattn_merge_desc *d = &desc;
    clattn_status st = check_desc(caller, &desc, msg, sizeof msg);
    if (st) return clattn__fail(ctx, st, "%s", msg);
    if (!queue || !o_parts || !lse_parts || !o)
        return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "merge: queue, o_parts, lse_parts and o are required");
    if ((num_wait > 0) != (wait != NULL))
        return clattn__fail(ctx, CL_INVALID_EVENT_WAIT_LIST, "num_wait and wait_list disagree");
    const size_t rows = (size_t)d->rows, parts = (size_t)d->n_parts, dim = (size_t)d->dim;
    const struct { cl_mem m; const char *name; size_t bytes; } bufs[] = {
        {o_parts, "o_parts", parts * rows * dim * 4}, {lse_parts, "lse_parts", parts * rows * 4},
        {o, "o", rows * dim * 4}, {lse, "lse", rows * 4}};
    for (int i = 0; i < 4; i++) {
        if (!bufs[i].m) continue;
        size_t size = 0;
        cl_int e = clGetMemObjectInfo(bufs[i].m, CL_MEM_SIZE, sizeof size, &size, NULL);
        if (e) return clattn__fail(ctx, e, "merge: buffer %s: clGetMemObjectInfo failed (%d)", bufs[i].name, e);
        if (size < bufs[i].bytes)
            return clattn__fail(ctx, CLATTN_BUFFER_TOO_SMALL, "merge: buffer %s holds %zu bytes, needs %zu",
                                bufs[i].name, size, bufs[i].bytes);
    }
    /* The fused path's combine kernel for f32 rows without sinks: the same program. */
    const clattn_switches sw = {0};
    clattn_kernel_spec spec = {0};
    clattn__combine_spec(&spec, d->dim, &sw);
    cl_kernel k;
    if ((st = clattn__make_kernel(ctx, &spec, &k))) return st;
    /* Dense rows: one batch, one head, `rows` positions of `dim` floats. */
    const clattn_combine_call c = {.o_parts = o_parts, .lse_parts = lse_parts, .n_parts = d->n_parts,
                                   .rows_total = rows, .o = o, .o_strides = {0, 0, (int64_t)dim}, .lse = lse,
                                   .heads_q = 1, .seq_q = d->rows, .batch = 1};
    clattn_args a = {k, 0, CL_SUCCESS};
    clattn__combine_args(&a, &c);
    cl_int e = a.err;
    if (!e) e = clattn__enqueue(ctx, queue, k, 1, &rows, NULL, num_wait, wait, event);
    clattn__release_kernel(ctx, k); /* the enqueued command keeps what it needs */
    if (e) return clattn__fail(ctx, e, "merge: enqueueing the combine kernel failed (%d)", e);
    return CLATTN_SUCCESS;
}
