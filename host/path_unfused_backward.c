/* The unfused backward: for chunks of query rows of every (batch, head), S = scale Q K^T and
 * dP = d_o V^T with CLBlast's GEMM, one elementwise kernel for P (recomputed from lse, every
 * term of the formula) and dS = P (dP - D), then dV += P^T d_o, dQ = scale dS K and
 * dK += scale dS^T Q as GEMMs. dK and dV sum over the query heads of their KV head and over
 * row chunks in one fixed order (beta = 0 for the first contribution, 1 after), so the result
 * is the same on every run. The fallback, and a second implementation the fused backward is
 * checked against. */
#include "path.h"
#include "blas.h"
#include "bwd_prep.h"
#include "copies.h"
#include "diag.h"
#include "fault.h"
#include "kernel.h"
#include "shape.h"

#include <limits.h>
#include <stdlib.h>

typedef struct unfused_bwd {
    int chunk_rows, chunk_items;  /* query rows and (batch, head) items per chunk */
    bool convert;                 /* inputs and gradients through dense f32 copies in scratch */
    size_t dp_off, dvec_off;      /* scratch (floats): S at 0, dP, D per row, then the copies */
    size_t work_q, work_k, work_v, work_do, work_dq, work_dk, work_dv;
    clattn_kernel_spec softmax_spec, dot_spec, dsinks_spec, widen_spec, narrow_spec;
    cl_kernel softmax, dot, dsinks, widen, narrow;
} unfused_bwd;

static bool supports(const clattn_context *ctx, const clattn_shape *s, char *why, size_t why_size)
{
    if ((size_t)s->seq_kv * 2 * sizeof(float) > ctx->scratch_limit) {
        clattn__format(why, why_size, "two rows of scores (%d keys) exceed the scratch limit of %zu bytes",
                       s->seq_kv, ctx->scratch_limit);
        return false;
    }
    if ((int64_t)s->batch * s->heads_q > INT_MAX) {
        clattn__format(why, why_size, "batch %d x %d query heads exceed the unfused path's 32-bit item indices",
                       s->batch, s->heads_q);
        return false;
    }
    /* CLBlast indexes with 32-bit ints: the tensors read in place (scratch: in prepare) */
    if (!clattn__gemm_tensors_fit(s, why, why_size)) return false;
    clattn__format(why, why_size, "the unfused backward serves this descriptor");
    return true;
}

static void softmax_args(clattn_args *a, const clattn_shape *s, const clattn_buffers *bf, cl_mem scratch,
                         const unfused_bwd *u, int rows, int bh0, int r0)
{
    CLATTN_ARG(a, cl_mem, scratch);
    CLATTN_ARG(a, cl_mem, scratch);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)(u ? u->dp_off : 0));
    CLATTN_ARG(a, cl_int, rows);
    CLATTN_ARG(a, cl_int, s->seq_kv);
    CLATTN_ARG(a, cl_int, bh0);
    CLATTN_ARG(a, cl_int, r0);
    CLATTN_ARG(a, cl_int, s->seq_q);
    CLATTN_ARG(a, cl_int, s->heads_q);
    CLATTN_ARG(a, cl_mem, bf->lse ? bf->lse : scratch);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)bf->lse_offset);
    CLATTN_ARG(a, cl_mem, scratch);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)(u ? u->dvec_off : 0));
    CLATTN_ARG(a, cl_float, s->softcap);
    CLATTN_ARG(a, cl_mem, s->has_alibi ? bf->alibi_slopes : scratch);
    CLATTN_ARG(a, cl_int, s->has_alibi);
    CLATTN_ARG(a, cl_mem, s->has_mask ? bf->mask : scratch);
    CLATTN_ARG(a, cl_long, s->mask.batch);
    CLATTN_ARG(a, cl_long, s->mask.head);
    CLATTN_ARG(a, cl_long, s->mask.seq);
    CLATTN_ARG(a, cl_int, s->has_mask);
    CLATTN_ARG(a, cl_mem, s->has_seqused_k ? bf->seqused_k : scratch);
    CLATTN_ARG(a, cl_mem, s->varlen ? bf->cu_seqlens_q : scratch);
    CLATTN_ARG(a, cl_mem, s->varlen ? bf->cu_seqlens_k : scratch);
    CLATTN_ARG(a, cl_int, s->total_q);
    CLATTN_ARG(a, cl_int, s->total_k);
    CLATTN_ARG(a, cl_int, s->top_left);
    CLATTN_ARG(a, cl_int, s->window_left);
    CLATTN_ARG(a, cl_int, s->window_right);
}

/* a + b, false on overflow */
static bool add(size_t *out, size_t a, size_t b) { return !__builtin_add_overflow(a, b, out); }

static clattn_status prepare(clattn_plan *p, const clattn_tuning *given)
{
    clattn_context *ctx = p->ctx;
    const clattn_shape *s = &p->shape;
    unfused_bwd *u = clattn__calloc(ctx, 1, sizeof *u);
    if (!u) return clattn__fail(ctx, CLATTN_OUT_OF_HOST_MEMORY, "out of host memory for a plan");
    p->state = u;
    /* chunks of S and dP together within the scratch limit: whole items, else rows of one */
    clattn__score_chunks(s, (size_t)s->seq_kv * 2 * sizeof(float), ctx->scratch_limit, &u->chunk_rows,
                         &u->chunk_items);
    const size_t chunk = (size_t)u->chunk_rows * (size_t)u->chunk_items * (size_t)s->seq_kv;
    u->dp_off = chunk;
    u->dvec_off = 2 * chunk;
    size_t floats = u->dvec_off + clattn__rows_total(s);
    u->convert = clattn__needs_copies(s);
    if (u->convert) { /* dense padded f32 (B, H, N, D): q, k, v, d_o, then dq, dk, dv */
        size_t t[7];
        const size_t b = (size_t)s->batch, hq = (size_t)s->heads_q, hk = (size_t)s->heads_kv, nq = (size_t)s->seq_q,
                     nk = (size_t)s->seq_kv, d = (size_t)s->head_dim, dv = (size_t)s->head_dim_v;
        size_t *at[7] = {&u->work_q, &u->work_k, &u->work_v, &u->work_do, &u->work_dq, &u->work_dk, &u->work_dv};
        bool ok = clattn__product(&t[0], b, hq, nq, d) && clattn__product(&t[1], b, hk, nk, d) &&
                  clattn__product(&t[2], b, hk, nk, dv) && clattn__product(&t[3], b, hq, nq, dv);
        t[4] = t[0], t[5] = t[1], t[6] = t[2];
        for (int i = 0; i < 7 && ok; i++) {
            *at[i] = floats;
            ok = add(&floats, floats, t[i]);
        }
        if (!ok || floats > SIZE_MAX / sizeof(float))
            return clattn__fail(ctx, CLATTN_SIZE_OVERFLOW, "the unfused backward's f32 copies overflow size_t");
    }
    p->scratch_bytes = floats * sizeof(float);
    char why[192]; /* the scores and copies the GEMMs index lie in scratch: 32-bit indices there */
    if (!clattn__gemm_index_fits(floats, why, sizeof why)) return clattn__fail(ctx, CLATTN_UNSUPPORTED, "%s", why);

    const clattn_switches sw = clattn__switches(s);
    const clattn_buffers none = {0};
    clattn_kernel_spec *k = &u->softmax_spec;
    k->file = "bwd_softmax";
    k->function = "clattn_bwd_softmax";
    k->local_size = 0;
    clattn__kernel_options(k, "", &sw);
    clattn__format(k->name, sizeof k->name, "backward softmax");
    clattn_args count = {0};
    softmax_args(&count, s, &none, NULL, NULL, 0, 0, 0);
    k->num_args = count.n;
    clattn__bwd_dot_spec(&u->dot_spec, s);
    if (s->has_sinks) clattn__bwd_dsinks_spec(&u->dsinks_spec, s);
    if (u->convert) {
        clattn__widen_spec(&u->widen_spec, &sw);
        clattn__narrow_spec(&u->narrow_spec, &sw);
    }
    clattn__format(p->variant, sizeof p->variant, "unfused backward CLBlast Sgemm, chunks of %d rows x %d heads%s",
                   u->chunk_rows, u->chunk_items, u->convert ? ", f32 copies" : "");
    return CLATTN_SUCCESS;
}

static clattn_status build(clattn_plan *p)
{
    unfused_bwd *u = p->state;
    clattn_status st = clattn__make_kernel(p->ctx, &u->softmax_spec, &u->softmax);
    if (!st) st = clattn__make_kernel(p->ctx, &u->dot_spec, &u->dot);
    if (!st && p->shape.has_sinks) st = clattn__make_kernel(p->ctx, &u->dsinks_spec, &u->dsinks);
    if (!st && u->convert) st = clattn__make_kernel(p->ctx, &u->widen_spec, &u->widen);
    if (!st && u->convert) st = clattn__make_kernel(p->ctx, &u->narrow_spec, &u->narrow);
    return st;
}

/* The elementwise kernel over a chunk: S (at 0 in scratch) becomes P and dP (at dp_off)
 * becomes dS. */
static clattn_status elementwise(const clattn_plan *p, cl_command_queue queue, const clattn_buffers *user,
                                 cl_mem scratch, int rows, int items, int bh0, int r0)
{
    const unfused_bwd *u = p->state;
    clattn_args a = {u->softmax, 0, CL_SUCCESS};
    softmax_args(&a, &p->shape, user, scratch, u, rows, bh0, r0);
    if (a.err) return clattn__fail(p->ctx, a.err, "clSetKernelArg failed (%d) for the backward softmax", a.err);
    const size_t global[2] = {(size_t)rows, (size_t)items};
    const cl_int e = clattn__enqueue(p->ctx, queue, u->softmax, 2, global, NULL, 0, NULL, NULL);
    if (e) return clattn__fail(p->ctx, e, "clEnqueueNDRangeKernel failed (%d) for the backward softmax", e);
    return CLATTN_SUCCESS;
}

/* One chunk: items bh0 .. bh0+np-1, rows r0 .. r0+nr-1. `w` holds the tensors as the GEMMs
 * read and write them (the caller's, or the dense copies). */
static clattn_status chunk(const clattn_plan *p, const clattn_shape *w, cl_command_queue queue,
                           const clattn_buffers *in, const clattn_buffers *user, cl_mem scratch, int bh0, int np,
                           int r0, int nr)
{
    const unfused_bwd *u = p->state;
    const size_t nk = (size_t)w->seq_kv, rows = (size_t)nr, d = (size_t)w->head_dim, dv = (size_t)w->head_dim_v;
    clattn_status st;
    for (int bh = bh0; bh < bh0 + np; bh++) {
        const int b = bh / w->heads_q, h = bh % w->heads_q, g = h / w->group;
        const size_t cs = (size_t)(bh - bh0) * rows * nk;
        const size_t qo = in->q_offset + b * w->q.batch + h * w->q.head + (size_t)r0 * w->q.seq;
        const size_t doo = in->do_offset + b * w->o.batch + h * w->o.head + (size_t)r0 * w->o.seq;
        const clattn_gemm qk = {false, true, rows, nk, d, w->scale, 0.0f, in->q, in->k, scratch, qo,
                                in->k_offset + b * w->k.batch + g * w->k.head, cs,
                                clattn__ld(w->q.seq, rows, d), clattn__ld(w->k.seq, nk, d), nk};
        const clattn_gemm dpv = {false, true, rows, nk, dv, 1.0f, 0.0f, in->d_o, in->v, scratch, doo,
                                 in->v_offset + b * w->v.batch + g * w->v.head, u->dp_off + cs,
                                 clattn__ld(w->o.seq, rows, dv), clattn__ld(w->v.seq, nk, dv), nk};
        if ((st = clattn__sgemm(p->ctx, queue, &qk, "Sgemm (S = Q K^T)"))) return st;
        if ((st = clattn__sgemm(p->ctx, queue, &dpv, "Sgemm (dP = dO V^T)"))) return st;
    }
    if ((st = elementwise(p, queue, user, scratch, nr, np, bh0, r0))) return st;
    for (int bh = bh0; bh < bh0 + np; bh++) {
        const int b = bh / w->heads_q, h = bh % w->heads_q, g = h / w->group;
        const size_t cs = (size_t)(bh - bh0) * rows * nk;
        /* the first contribution to this KV head's dK and dV overwrites, the others add */
        const float beta = h % w->group == 0 && r0 == 0 ? 0.0f : 1.0f;
        const size_t ko = b * w->k.batch + g * w->k.head, vo = b * w->v.batch + g * w->v.head;
        const size_t qo = b * w->q.batch + h * w->q.head + (size_t)r0 * w->q.seq;
        const size_t doo = in->do_offset + b * w->o.batch + h * w->o.head + (size_t)r0 * w->o.seq;
        const clattn_gemm gdv = {true, false, nk, dv, rows, 1.0f, beta, scratch, in->d_o, in->dv, cs, doo,
                                 in->dv_offset + vo, nk, clattn__ld(w->o.seq, rows, dv), clattn__ld(w->v.seq, nk, dv)};
        const clattn_gemm gdq = {false, false, rows, d, nk, w->scale, 0.0f, scratch, in->k, in->dq, u->dp_off + cs,
                                 in->k_offset + ko, in->dq_offset + qo, nk, clattn__ld(w->k.seq, nk, d),
                                 clattn__ld(w->q.seq, rows, d)};
        const clattn_gemm gdk = {true, false, nk, d, rows, w->scale, beta, scratch, in->q, in->dk, u->dp_off + cs,
                                 in->q_offset + qo, in->dk_offset + ko, nk, clattn__ld(w->q.seq, rows, d),
                                 clattn__ld(w->k.seq, nk, d)};
        if ((st = clattn__sgemm(p->ctx, queue, &gdv, "Sgemm (dV += P^T dO)"))) return st;
        if ((st = clattn__sgemm(p->ctx, queue, &gdq, "Sgemm (dQ = dS K)"))) return st;
        if ((st = clattn__sgemm(p->ctx, queue, &gdk, "Sgemm (dK += dS^T Q)"))) return st;
    }
    return CLATTN_SUCCESS;
}

static clattn_status enqueue(const clattn_plan *p, const clattn_launch *l)
{
    const clattn_shape *s = &p->shape;
    const unfused_bwd *u = p->state;
    clattn_context *ctx = p->ctx;
    const clattn_buffers *bf = l->buffers;
    cl_command_queue queue = l->queue;
    if (!u->convert) { /* the GEMMs index the caller's tensors in place, offsets included */
        clattn_tensor_sizes need;
        clattn__sizes(s, &need);
        const size_t off[7] = {bf->q_offset, bf->k_offset, bf->v_offset, bf->do_offset, bf->dq_offset, bf->dk_offset,
                               bf->dv_offset};
        const size_t len[7] = {need.q, need.k, need.v, need.o, need.q, need.k, need.v};
        static const char *const name[7] = {"q", "k", "v", "d_o", "dq", "dk", "dv"};
        const clattn_status fit = clattn__gemm_offsets_fit(ctx, off, len, name, 7);
        if (fit) return fit;
    }
    clattn_status st = clattn__gemm_queue_start(ctx, queue, l->num_wait, l->wait);
    if (st) return st;
    cl_mem scratch = l->scratch;
    cl_int e;
    if ((e = clattn__bwd_dot_enqueue(ctx, queue, u->dot, s, bf, scratch, u->dvec_off, 0, NULL, NULL)))
        return clattn__fail(ctx, e, "enqueueing the backward's D failed (%d)", e);

    /* The GEMMs read and write the caller's tensors in place, or dense f32 copies. */
    clattn_shape w = *s;
    clattn_buffers in = *bf;
    const clattn_copy cp[7] = {
        {bf->q, bf->q_offset, &s->q, s->heads_q, s->seq_q, s->head_dim, NULL, s->total_q, scratch, u->work_q},
        {bf->k, bf->k_offset, &s->k, s->heads_kv, s->seq_kv, s->head_dim, NULL, s->total_k, scratch, u->work_k},
        {bf->v, bf->v_offset, &s->v, s->heads_kv, s->seq_kv, s->head_dim_v, NULL, s->total_k, scratch, u->work_v},
        {bf->d_o, bf->do_offset, &s->o, s->heads_q, s->seq_q, s->head_dim_v, NULL, s->total_q, scratch, u->work_do},
        {bf->dq, bf->dq_offset, &s->q, s->heads_q, s->seq_q, s->head_dim, NULL, s->total_q, scratch, u->work_dq},
        {bf->dk, bf->dk_offset, &s->k, s->heads_kv, s->seq_kv, s->head_dim, NULL, s->total_k, scratch, u->work_dk},
        {bf->dv, bf->dv_offset, &s->v, s->heads_kv, s->seq_kv, s->head_dim_v, NULL, s->total_k, scratch, u->work_dv}};
    clattn_copy c[7];
    for (int i = 0; i < 7; i++) {
        c[i] = cp[i];
        if (s->varlen) c[i].cu = i == 0 || i == 3 || i == 4 ? bf->cu_seqlens_q : bf->cu_seqlens_k;
    }
    if (u->convert) {
        for (int i = 0; i < 4 && !e; i++) e = clattn__copy_enqueue(ctx, queue, u->widen, true, &c[i], s->batch);
        if (e) return clattn__fail(ctx, e, "enqueueing the f32 copies failed (%d)", e);
        w = clattn__dense_shape(s);
        in.q = in.k = in.v = in.d_o = in.dq = in.dk = in.dv = scratch;
        in.q_offset = u->work_q;
        in.k_offset = u->work_k;
        in.v_offset = u->work_v;
        in.do_offset = u->work_do;
        in.dq_offset = u->work_dq;
        in.dk_offset = u->work_dk;
        in.dv_offset = u->work_dv;
    }
    const int items = s->batch * s->heads_q, P = u->chunk_items, R = u->chunk_rows; /* < 2^31: supports() */
    for (int bh0 = 0; bh0 < items && !st; bh0 += P)
        for (int r0 = 0; r0 < s->seq_q && !st; r0 += R)
            st = chunk(p, &w, queue, &in, bf, scratch, bh0, items - bh0 < P ? items - bh0 : P, r0,
                       s->seq_q - r0 < R ? s->seq_q - r0 : R);
    for (int i = 4; i < 7 && !st && u->convert; i++)
        if ((e = clattn__copy_enqueue(ctx, queue, u->narrow, false, &c[i], s->batch)))
            st = clattn__fail(ctx, e, "enqueueing the gradient copies failed (%d)", e);
    if (!st && s->has_sinks &&
        (e = clattn__bwd_dsinks_enqueue(ctx, queue, u->dsinks, s, bf, scratch, u->dvec_off, 0, NULL, NULL)))
        st = clattn__fail(ctx, e, "enqueueing the sink gradients failed (%d)", e);
    /* on an in-order queue a marker completes after everything enqueued before it */
    if (!st && l->event && (e = clattn__enqueue_marker(ctx, queue, 0, NULL, l->event)))
        st = clattn__fail(ctx, e, "clEnqueueMarkerWithWaitList failed (%d)", e);
    return st;
}

static void release(clattn_plan *p)
{
    unfused_bwd *u = p->state;
    if (!u) return;
    clattn__release_kernel(p->ctx, u->softmax);
    clattn__release_kernel(p->ctx, u->dot);
    clattn__release_kernel(p->ctx, u->dsinks);
    clattn__release_kernel(p->ctx, u->widen);
    clattn__release_kernel(p->ctx, u->narrow);
    free(u);
    p->state = NULL;
}

const clattn_path clattn__path_unfused_backward = {
    .name = "unfused backward",
    .algo = CLATTN_ALGO_UNFUSED,
    .pass = CLATTN_PASS_BACKWARD,
    .supports = supports,
    .prepare = prepare,
    .build = build,
    .enqueue = enqueue,
    .release = release,
};
