/* Merging partial results over disjoint key ranges: the building block of split-KV decode
 * (the fused path uses the same combine kernel) and of sequence parallelism across devices. */
#include "combine.h"
#include "shape.h"
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

/* Whether a floats at a and b floats at b share memory (an empty range shares nothing). */
static bool floats_overlap(const float *a, size_t an, const float *b, size_t bn)
{
    return an && bn && (uintptr_t)a < (uintptr_t)(b + bn) && (uintptr_t)b < (uintptr_t)(a + an);
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
    const size_t rows = (size_t)d->rows, dim = (size_t)d->dim, parts = (size_t)d->n_parts;
    /* the outputs share no byte with the parts or each other, as on the device */
    const size_t on = rows * dim, ln = lse ? rows : 0, pon = parts * rows * dim, pln = parts * rows;
    if (floats_overlap(o, on, o_parts, pon) || floats_overlap(o, on, lse_parts, pln) || floats_overlap(o, on, lse, ln) ||
        floats_overlap(lse, ln, o_parts, pon) || floats_overlap(lse, ln, lse_parts, pln))
        return CLATTN_BUFFERS_OVERLAP;
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

/* A buffer of the merge calls: in ctx's context, and large enough for `elems` elements after
 * `offset`. */
static clattn_status check_merge_mem(clattn_context *ctx, cl_mem m, const char *name, size_t offset, size_t elems,
                                     size_t elem_size)
{
    if (!m) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "merge: buffer %s is NULL", name);
    size_t size = 0, need;
    cl_context mctx = NULL;
    cl_int e = clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (!e) e = clGetMemObjectInfo(m, CL_MEM_CONTEXT, sizeof mctx, &mctx, NULL);
    if (e) return clattn__fail(ctx, e, "merge: buffer %s: clGetMemObjectInfo failed (%d)", name, e);
    if (mctx != ctx->cl_ctx) return clattn__fail(ctx, CL_INVALID_CONTEXT, "merge: buffer %s belongs to another cl_context", name);
    if (__builtin_add_overflow(offset, elems, &need) || __builtin_mul_overflow(need, elem_size, &need))
        return clattn__fail(ctx, CLATTN_SIZE_OVERFLOW, "merge: buffer %s: offset + size overflows", name);
    if (size < need)
        return clattn__fail(ctx, CLATTN_BUFFER_TOO_SMALL, "merge: buffer %s holds %zu bytes, needs %zu", name, size, need);
    return CLATTN_SUCCESS;
}

/* Creates the kernel of `spec`, sets its arguments through `set`, enqueues it over `rows`
 * (every merge call ends here). */
static clattn_status run_merge_kernel(clattn_context *ctx, cl_command_queue queue, const char *call,
                                    const clattn_kernel_spec *spec, void (*set)(clattn_args *, const void *),
                                    const void *args, size_t rows, cl_uint num_wait, const cl_event *wait,
                                    cl_event *event)
{
    cl_kernel k;
    clattn_status st = clattn__make_kernel(ctx, spec, &k);
    if (st) return st;
    clattn_args a = {k, 0, CL_SUCCESS};
    set(&a, args);
    cl_int e = a.err;
    if (!e) e = clattn__enqueue(ctx, queue, k, 1, &rows, NULL, num_wait, wait, event);
    clattn__release_kernel(ctx, k); /* the enqueued command keeps what it needs */
    if (e) return clattn__fail(ctx, e, "%s: enqueueing its kernel failed (%d)", call, e);
    return CLATTN_SUCCESS;
}

static void set_fold(clattn_args *a, const void *c) { clattn__fold_args(a, c); }
static void set_combine(clattn_args *a, const void *c) { clattn__combine_args(a, c); }

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
    const struct { cl_mem m; const char *name; size_t elems; } bufs[] = {
        {o_parts, "o_parts", parts * rows * dim}, {lse_parts, "lse_parts", parts * rows}, {o, "o", rows * dim},
        {lse, "lse", rows}};
    clattn_span spans[4];
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        if (!bufs[i].m) continue;
        if ((st = check_merge_mem(ctx, bufs[i].m, bufs[i].name, 0, bufs[i].elems, 4))) return st;
        const cl_int e = clattn__span_of(bufs[i].m, bufs[i].name, 0, bufs[i].elems, 4, i >= 2, &spans[n++]);
        if (e) return clattn__fail(ctx, e, "merge: buffer %s: clGetMemObjectInfo failed (%d)", bufs[i].name, e);
    }
    if ((st = clattn__check_overlap(ctx, spans, n))) return st;
    /* The fused path's combine kernel for f32 rows without sinks: the same program. */
    const clattn_switches sw = {0};
    clattn_kernel_spec spec = {0};
    clattn__combine_spec(&spec, d->dim, &sw);
    /* Dense rows: one batch, one head, `rows` positions of `dim` floats. */
    const clattn_combine_call c = {.o_parts = o_parts, .lse_parts = lse_parts, .n_parts = d->n_parts,
                                   .rows_total = rows, .o = o, .o_strides = {0, 0, (int64_t)dim}, .lse = lse,
                                   .heads_q = 1, .seq_q = d->rows, .batch = 1};
    return run_merge_kernel(ctx, queue, "merge", &spec, set_combine, &c, rows, num_wait, wait, event);
}

/* ---- folding partials one at a time (sequence parallelism) ---- */

/* The buffer that owns m's memory (a sub-buffer's parent). */
static cl_mem root_of(cl_mem m)
{
    cl_mem parent = NULL;
    if (m && clGetMemObjectInfo(m, CL_MEM_ASSOCIATED_MEMOBJECT, sizeof parent, &parent, NULL) == CL_SUCCESS && parent)
        return parent;
    return m;
}

/* What both fold and store check: the descriptor (a dense forward's output: no packed
 * sequences, no paged cache), the queue's wait list, the accumulator's rows, and the buffers:
 * the accumulator shares no buffer with o or lse. */
typedef struct acc_view {
    clattn_shape s;
    clattn_switches sw;
    size_t rows;      /* the partial's (or output's) rows: batch x heads_q x seq_q */
    size_t acc_elems; /* rows of the accumulator: batch x heads_q x acc_seq */
} acc_view;

static clattn_status check_acc(clattn_context *ctx, const char *call, const clattn_desc *desc, cl_mem o,
                               size_t o_offset, cl_mem lse, size_t lse_offset, bool lse_required, cl_mem acc_o,
                               cl_mem acc_lse, int acc_seq, int acc_start, cl_uint num_wait, const cl_event *wait,
                               acc_view *v)
{
    char msg[256];
    if (!desc) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "%s: descriptor is NULL", call);
    clattn_status st = clattn__resolve(desc, &v->s, msg, sizeof msg);
    if (st) return clattn__fail(ctx, st, "%s: %s", call, msg);
    const clattn_shape *s = &v->s;
    if (s->varlen || s->paged)
        return clattn__fail(ctx, CLATTN_UNSUPPORTED, "%s: packed sequences and paged caches are not supported", call);
    /* each partial's lse would hold the sink's exp(sink) once more */
    if (s->has_sinks)
        return clattn__fail(ctx, CLATTN_UNSUPPORTED, "%s: attention sinks are not supported (every partial's lse "
                            "would count the sink once more): fold partials computed without them", call);
    if (acc_seq < s->seq_q || acc_start < 0 || acc_start > acc_seq - s->seq_q)
        return clattn__fail(ctx, CLATTN_INVALID_SHAPE, "%s: rows %d..%lld of the partial do not fit an accumulator of "
                            "%d rows per head", call, acc_start, (long long)acc_start + s->seq_q - 1, acc_seq);
    if ((num_wait > 0) != (wait != NULL))
        return clattn__fail(ctx, CL_INVALID_EVENT_WAIT_LIST, "num_wait and wait_list disagree");
    clattn_tensor_sizes need;
    if ((st = clattn__sizes(s, &need))) return clattn__fail(ctx, st, "%s: tensor sizes overflow", call);
    v->rows = need.lse;
    if (!clattn__product(&v->acc_elems, (size_t)s->batch, (size_t)s->heads_q, (size_t)acc_seq, 1))
        return clattn__fail(ctx, CLATTN_SIZE_OVERFLOW, "%s: the accumulator's size overflows", call);
    size_t acc_o_elems;
    if (!clattn__product(&acc_o_elems, v->acc_elems, (size_t)s->head_dim_v, 1, 1))
        return clattn__fail(ctx, CLATTN_SIZE_OVERFLOW, "%s: the accumulator's size overflows", call);
    if ((st = check_merge_mem(ctx, o, "o", o_offset, need.o, clattn_dtype_size(s->dtype)))) return st;
    if ((lse || lse_required) && (st = check_merge_mem(ctx, lse, "lse", lse_offset, need.lse, 4))) return st;
    if ((st = check_merge_mem(ctx, acc_o, "acc_o", 0, acc_o_elems, 4))) return st;
    if ((st = check_merge_mem(ctx, acc_lse, "acc_lse", 0, v->acc_elems, 4))) return st;
    const cl_mem mine[] = {root_of(acc_o), root_of(acc_lse)}, theirs[] = {root_of(o), root_of(lse)};
    if (mine[0] == mine[1])
        return clattn__fail(ctx, CLATTN_BUFFERS_OVERLAP, "%s: acc_o and acc_lse share a buffer", call);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            if (theirs[j] && mine[i] == theirs[j])
                return clattn__fail(ctx, CLATTN_BUFFERS_OVERLAP, "%s: %s shares a buffer with %s", call,
                                    i ? "acc_lse" : "acc_o", j ? "lse" : "o");
    if (!lse_required && lse) { /* store writes o and lse: no byte of one in the other */
        clattn_span sp[2];
        cl_int e = clattn__span_of(o, "o", o_offset, need.o, clattn_dtype_size(s->dtype), true, &sp[0]);
        if (!e) e = clattn__span_of(lse, "lse", lse_offset, need.lse, 4, true, &sp[1]);
        if (e) return clattn__fail(ctx, e, "%s: clGetMemObjectInfo failed (%d)", call, e);
        if ((st = clattn__check_overlap(ctx, sp, 2))) return st;
    }
    v->sw = (clattn_switches){.dtype = clattn__switches(s).dtype}; /* the combine program: DTYPE only here */
    return CLATTN_SUCCESS;
}

clattn_status clattn_merge_fold(clattn_context *ctx, cl_command_queue queue, const clattn_desc *desc, cl_mem o,
                                size_t o_offset, cl_mem lse, size_t lse_offset, cl_mem acc_o, cl_mem acc_lse,
                                int acc_seq, int acc_start, cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    if (event) *event = NULL;
    if (!ctx) return CLATTN_INVALID_ARGUMENT;
    if (!queue) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "merge_fold: queue is NULL");
    acc_view v;
    clattn_status st = check_acc(ctx, "merge_fold", desc, o, o_offset, lse, lse_offset, true, acc_o, acc_lse, acc_seq,
                                 acc_start, num_wait, wait, &v);
    if (st) return st;
    clattn_kernel_spec spec = {0};
    clattn__fold_spec(&spec, v.s.head_dim_v, &v.sw);
    const clattn_fold_call c = {.o = o, .lse = lse, .o_off = o_offset, .lse_off = lse_offset, .o_strides = v.s.o,
                                .heads_q = v.s.heads_q, .seq_q = v.s.seq_q, .batch = v.s.batch, .acc_o = acc_o,
                                .acc_lse = acc_lse, .acc_seq = acc_seq, .acc_start = acc_start};
    return run_merge_kernel(ctx, queue, "merge_fold", &spec, set_fold, &c, v.rows, num_wait, wait, event);
}

clattn_status clattn_merge_store(clattn_context *ctx, cl_command_queue queue, const clattn_desc *desc, cl_mem acc_o,
                                 cl_mem acc_lse, cl_mem o, size_t o_offset, cl_mem lse, size_t lse_offset,
                                 cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    if (event) *event = NULL;
    if (!ctx) return CLATTN_INVALID_ARGUMENT;
    if (!queue) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "merge_store: queue is NULL");
    acc_view v;
    const int seq = desc ? desc->seq_q : 0;
    clattn_status st = check_acc(ctx, "merge_store", desc, o, o_offset, lse, lse_offset, false, acc_o, acc_lse, seq,
                                 0, num_wait, wait, &v);
    if (st) return st;
    /* The combine of one part: the accumulator's rows are o's rows in the combine's order. */
    clattn_kernel_spec spec = {0};
    clattn__combine_spec(&spec, v.s.head_dim_v, &v.sw);
    const clattn_combine_call c = {.o_parts = acc_o, .lse_parts = acc_lse, .n_parts = 1, .rows_total = v.rows,
                                   .o = o, .o_off = o_offset, .o_strides = v.s.o, .lse = lse, .lse_off = lse_offset,
                                   .heads_q = v.s.heads_q, .seq_q = v.s.seq_q, .total_q = v.s.seq_q,
                                   .batch = v.s.batch};
    return run_merge_kernel(ctx, queue, "merge_store", &spec, set_combine, &c, v.rows, num_wait, wait, event);
}
