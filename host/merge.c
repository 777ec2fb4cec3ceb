/* Merging partial results over disjoint key ranges: the building block of split-KV decode
 * (the fused path uses the same combine kernel) and of sequence parallelism across devices. */
#include "fault.h"

#include <math.h>

static clattn_status check_desc(const clattn_merge_desc *d, char *msg, size_t size)
{
    if (!d) {
        clattn__format(msg, size, "merge descriptor is NULL");
        return CLATTN_INVALID_ARGUMENT;
    }
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

clattn_status clattn_merge_host(const clattn_merge_desc *d, const float *o_parts, const float *lse_parts, float *o,
                                float *lse)
{
    char msg[128];
    clattn_status st = check_desc(d, msg, sizeof msg);
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

#define ARG(T, x) CLATTN_ARG(k, n, e, T, x)

clattn_status clattn_merge(clattn_context *ctx, cl_command_queue queue, const clattn_merge_desc *d, cl_mem o_parts,
                           cl_mem lse_parts, cl_mem o, cl_mem lse, cl_uint num_wait, const cl_event *wait,
                           cl_event *event)
{
    if (!ctx) return CLATTN_INVALID_ARGUMENT;
    if (event) *event = NULL;
    char msg[128];
    clattn_status st = check_desc(d, msg, sizeof msg);
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
    clattn_variant v = {0};
    v.source_name = "combine";
    v.kernel_name = "clattn_combine";
    v.rows = 1;
    clattn__format(v.options, sizeof v.options, "-cl-std=CL1.2 -D VW=1 -D DV=%d -D DTYPE=0", d->dim);
    clattn__format(v.name, sizeof v.name, "merge DV=%d", d->dim);
    cl_kernel k;
    if ((st = clattn__make_kernel(ctx, &v, v.kernel_name, &k))) return st;
    /* Dense rows: one batch, one head, `rows` positions of `dim` floats. */
    cl_int e = CL_SUCCESS;
    cl_uint n = 0;
    ARG(cl_mem, o_parts);
    ARG(cl_ulong, 0);
    ARG(cl_mem, lse_parts);
    ARG(cl_ulong, 0);
    ARG(cl_int, d->n_parts);
    ARG(cl_long, (cl_long)rows);
    ARG(cl_mem, o);
    ARG(cl_ulong, 0);
    ARG(cl_long, 0);
    ARG(cl_long, 0);
    ARG(cl_long, (cl_long)dim);
    ARG(cl_mem, lse ? lse : o);
    ARG(cl_ulong, 0);
    ARG(cl_int, lse != NULL);
    ARG(cl_int, 1);
    ARG(cl_int, d->rows);
    ARG(cl_int, 0);
    ARG(cl_mem, o_parts);
    ARG(cl_mem, o_parts);
    ARG(cl_int, 1);
    if (!e) e = clattn__enqueue(ctx, queue, k, 1, &rows, NULL, num_wait, wait, event);
    clattn__release_kernel(ctx, k); /* the enqueued command keeps what it needs */
    if (e) return clattn__fail(ctx, e, "merge: enqueueing the combine kernel failed (%d)", e);
    return CLATTN_SUCCESS;
}
