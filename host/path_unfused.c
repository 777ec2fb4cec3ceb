/* The unfused path: for chunks of query rows of every (batch, head), S = scale * Q K^T with
 * CLBlast's GEMM (GQA through buffer offsets: K and V are never copied), one softmax kernel
 * that applies every feature of the formula and writes lse, then O = P V with the same GEMM.
 * It serves every descriptor on every device, and is the second implementation the fused
 * kernels are checked against on the device itself. Never CLBlast's half GEMM: it
 * accumulates in half. */
#include "path.h"
#include "blas.h"
#include "copies.h"
#include "diag.h"
#include "fault.h"
#include "kernel.h"
#include "paged.h"
#include "shape.h"

#include <limits.h>
#include <stdlib.h>

typedef struct unfused {
    int chunk_rows, chunk_items;  /* query rows and (batch, head) items per chunk */
    bool convert;                 /* q, k, v, o go through dense f32 copies in scratch */
    size_t work_q, work_k, work_v, work_o; /* their element offsets in scratch */
    size_t q_rot;                 /* rotary: q's rotated copy (storage type, q's strides), element offset */
    clattn_kernel_spec softmax_spec, widen_spec, narrow_spec, paged_spec[CLATTN_PAGED_KERNELS];
    cl_kernel softmax, widen, narrow, paged[CLATTN_PAGED_KERNELS];
} unfused;

static bool supports(const clattn_context *ctx, const clattn_shape *s, char *why, size_t why_size)
{
    if ((size_t)s->seq_kv * sizeof(float) > ctx->scratch_limit) {
        clattn__format(why, why_size, "one row of scores (%d keys) exceeds the scratch limit of %zu bytes",
                       s->seq_kv, ctx->scratch_limit);
        return false;
    }
    /* (batch, head) items are counted in 32-bit ints, on the host and in the softmax kernel */
    if ((int64_t)s->batch * s->heads_q > INT_MAX) {
        clattn__format(why, why_size, "batch %d x %d query heads exceed the unfused path's 32-bit item indices",
                       s->batch, s->heads_q);
        return false;
    }
    if (!clattn__paged_grid_fits(s, why, why_size)) return false;
    /* CLBlast indexes with 32-bit ints: the tensors read in place (scratch: in prepare) */
    if (!clattn__gemm_tensors_fit(s, why, why_size)) return false;
    clattn__format(why, why_size, "the unfused path serves this descriptor");
    return true;
}

/* The softmax kernel's arguments (kernels/softmax.cl); unused buffers get `scores`. */
static void softmax_args(clattn_args *a, const clattn_shape *s, const clattn_buffers *bf, cl_mem scores, int rows,
                         int bh0, int r0)
{
    CLATTN_ARG(a, cl_mem, scores);
    CLATTN_ARG(a, cl_int, rows);
    CLATTN_ARG(a, cl_int, s->seq_kv);
    CLATTN_ARG(a, cl_int, bh0);
    CLATTN_ARG(a, cl_int, r0);
    CLATTN_ARG(a, cl_int, s->seq_q);
    CLATTN_ARG(a, cl_int, s->heads_q);
    CLATTN_ARG(a, cl_mem, bf->lse ? bf->lse : scores);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)bf->lse_offset);
    CLATTN_ARG(a, cl_int, bf->lse != NULL);
    CLATTN_ARG(a, cl_float, s->softcap);
    CLATTN_ARG(a, cl_mem, s->has_alibi ? bf->alibi_slopes : scores);
    CLATTN_ARG(a, cl_int, s->has_alibi);
    CLATTN_ARG(a, cl_mem, s->has_mask ? bf->mask : scores);
    CLATTN_ARG(a, cl_long, s->mask.batch);
    CLATTN_ARG(a, cl_long, s->mask.head);
    CLATTN_ARG(a, cl_long, s->mask.seq);
    CLATTN_ARG(a, cl_int, s->has_mask);
    CLATTN_ARG(a, cl_mem, s->has_sinks ? bf->sinks : scores);
    CLATTN_ARG(a, cl_int, s->has_sinks);
    CLATTN_ARG(a, cl_mem, s->has_seqused_k ? bf->seqused_k : scores);
    CLATTN_ARG(a, cl_mem, s->varlen ? bf->cu_seqlens_q : scores);
    CLATTN_ARG(a, cl_mem, s->varlen && !s->paged ? bf->cu_seqlens_k : scores);
    CLATTN_ARG(a, cl_int, s->total_q);
    CLATTN_ARG(a, cl_int, s->total_k);
    CLATTN_ARG(a, cl_int, s->top_left);
    CLATTN_ARG(a, cl_int, s->window_left);
    CLATTN_ARG(a, cl_int, s->window_right);
    CLATTN_ARG(a, cl_mem, s->paged ? bf->block_table : scores);
    CLATTN_ARG(a, cl_int, s->page_size);
    CLATTN_ARG(a, cl_int, s->pages_per_seq);
    CLATTN_ARG(a, cl_int, s->num_pages);
    CLATTN_ARG(a, cl_int, s->seq_new);
}

/* Chunks of score rows within the scratch limit (clattn__score_chunks), then the copies. */
static clattn_status prepare(clattn_plan *p, const clattn_tuning *given)
{
    clattn_context *ctx = p->ctx;
    const clattn_shape *s = &p->shape;
    unfused *u = clattn__calloc(ctx, 1, sizeof *u);
    if (!u) return clattn__fail(ctx, CLATTN_OUT_OF_HOST_MEMORY, "out of host memory for a plan");
    p->state = u;
    clattn__score_chunks(s, (size_t)s->seq_kv * sizeof(float), ctx->scratch_limit, &u->chunk_rows, &u->chunk_items);
    const size_t scores = (size_t)u->chunk_rows * (size_t)u->chunk_items * (size_t)s->seq_kv;
    size_t floats = scores, t[4];
    u->convert = clattn__needs_copies(s);
    if (u->convert) { /* dense padded f32 (B, H, N, D) copies after the scores */
        if (!clattn__product(&t[0], (size_t)s->batch, (size_t)s->heads_q, (size_t)s->seq_q, (size_t)s->head_dim) ||
            !clattn__product(&t[1], (size_t)s->batch, (size_t)s->heads_kv, (size_t)s->seq_kv, (size_t)s->head_dim) ||
            !clattn__product(&t[2], (size_t)s->batch, (size_t)s->heads_kv, (size_t)s->seq_kv, (size_t)s->head_dim_v) ||
            !clattn__product(&t[3], (size_t)s->batch, (size_t)s->heads_q, (size_t)s->seq_q, (size_t)s->head_dim_v) ||
            __builtin_add_overflow(floats, t[0], &u->work_k) || __builtin_add_overflow(u->work_k, t[1], &u->work_v) ||
            __builtin_add_overflow(u->work_v, t[2], &u->work_o) || __builtin_add_overflow(u->work_o, t[3], &floats) ||
            floats > SIZE_MAX / sizeof(float))
            return clattn__fail(ctx, CLATTN_SIZE_OVERFLOW, "the unfused path's f32 copies of batch %d x %d/%d heads "
                                "x %d/%d positions overflow size_t", s->batch, s->heads_q, s->heads_kv, s->seq_q,
                                s->seq_kv);
        u->work_q = scores;
    }
    p->scratch_bytes = floats * sizeof(float);
    char why[192]; /* the scores and copies one GEMM indexes lie in scratch: 32-bit indices there */
    if (!clattn__gemm_index_fits(floats, why, sizeof why)) return clattn__fail(ctx, CLATTN_UNSUPPORTED, "%s", why);
    if (s->rotary_dim) { /* q rotated (host/paged.h) after the f32 copies */
        clattn_tensor_sizes need;
        const size_t es = clattn_dtype_size(s->dtype);
        clattn__sizes(s, &need);
        u->q_rot = p->scratch_bytes / es;
        if (__builtin_mul_overflow(need.q, es, &need.q) ||
            __builtin_add_overflow(p->scratch_bytes, need.q, &p->scratch_bytes))
            return clattn__fail(ctx, CLATTN_SIZE_OVERFLOW, "the unfused path's rotated q overflows size_t");
    }
    for (int w = 0; w < CLATTN_PAGED_KERNELS; w++)
        if (clattn__paged_needs(s, (clattn_paged_kernel)w)) clattn__paged_spec(&u->paged_spec[w], w, s);

    /* The softmax kernel: one work-item per row on CPUs (no barriers), a work-group per row
     * elsewhere. */
    int smw = (ctx->info.type & CL_DEVICE_TYPE_CPU) ? 1 : 128;
    while ((size_t)smw > ctx->info.max_wg_size && smw > 1) smw /= 2;
    const clattn_switches sw = clattn__switches(s);
    const clattn_buffers none = {0};
    clattn_kernel_spec *k = &u->softmax_spec;
    k->file = "softmax";
    k->function = "clattn_softmax";
    k->local_size = (size_t)smw;
    char params[32];
    clattn__format(params, sizeof params, "-D SMW=%d", smw);
    clattn__kernel_options(k, params, &sw);
    clattn__format(k->name, sizeof k->name, "softmax SMW=%d", smw);
    clattn_args count = {0};
    softmax_args(&count, s, &none, NULL, 0, 0, 0);
    k->num_args = count.n;
    clattn__format(p->variant, sizeof p->variant,
                   "unfused CLBlast Sgemm + softmax SMW=%d, chunks of %d rows x %d heads%s", smw, u->chunk_rows,
                   u->chunk_items, u->convert ? ", f32 copies" : "");
    if (u->convert) {
        clattn__widen_spec(&u->widen_spec, &sw);
        clattn__narrow_spec(&u->narrow_spec, &sw);
    }
    return CLATTN_SUCCESS;
}

static clattn_status build(clattn_plan *p)
{
    unfused *u = p->state;
    clattn_status st = clattn__make_kernel(p->ctx, &u->softmax_spec, &u->softmax);
    if (!st && u->convert) st = clattn__make_kernel(p->ctx, &u->widen_spec, &u->widen);
    if (!st && u->convert) st = clattn__make_kernel(p->ctx, &u->narrow_spec, &u->narrow);
    for (int w = 0; w < CLATTN_PAGED_KERNELS && !st; w++)
        if (clattn__paged_needs(&p->shape, (clattn_paged_kernel)w))
            st = clattn__make_kernel(p->ctx, &u->paged_spec[w], &u->paged[w]);
    return st;
}

static clattn_status softmax(const clattn_plan *p, cl_command_queue queue, const clattn_buffers *bf, cl_mem scores,
                             int rows, int items, int bh0, int r0)
{
    const unfused *u = p->state;
    clattn_args a = {u->softmax, 0, CL_SUCCESS};
    softmax_args(&a, &p->shape, bf, scores, rows, bh0, r0);
    if (a.err) return clattn__fail(p->ctx, a.err, "clSetKernelArg failed (%d) for the softmax kernel", a.err);
    const size_t global[2] = {(size_t)rows * u->softmax_spec.local_size, (size_t)items};
    const size_t local[2] = {u->softmax_spec.local_size, 1};
    const cl_int e = clattn__enqueue(p->ctx, queue, u->softmax, 2, global, local, 0, NULL, NULL);
    if (e) return clattn__fail(p->ctx, e, "clEnqueueNDRangeKernel failed (%d) for the softmax kernel", e);
    return CLATTN_SUCCESS;
}

/* One CLBlast SGEMM per (batch, head) item of the chunk; GQA through offsets (K and V are
 * never copied). Not CLBlast's strided-batched GEMM: in CLBlast 1.5.3 it returns wrong results
 * when B carries a non-zero offset at large sizes (M = K = 4096 or 8192 with N = 64 on PoCL:
 * max error 35-49 against a float64 GEMM; plain CLBlastSgemm with the same offsets is right).
 * `clattn bench` caught it as "wrong" rows 10 and 11. Nor the pointer-offset batched GEMM: it
 * uploads its offset arrays with blocking writes, which would block behind a wait list. */
static clattn_status gemms(const clattn_plan *p, const clattn_shape *s, cl_command_queue queue,
                           const clattn_buffers *bf, const clattn_buffers *user, cl_mem scores, int bh0, int np,
                           int r0, int nr)
{
    const size_t nk = (size_t)s->seq_kv, rows = (size_t)nr;
    for (int bh = bh0; bh < bh0 + np; bh++) {
        const int b = bh / s->heads_q, h = bh % s->heads_q, g = h / s->group;
        const clattn_gemm qk = {false, true, rows, nk, (size_t)s->head_dim, s->scale, 0.0f, bf->q, bf->k, scores,
                                bf->q_offset + b * s->q.batch + h * s->q.head + (size_t)r0 * s->q.seq,
                                bf->k_offset + b * s->k.batch + g * s->k.head, (size_t)(bh - bh0) * rows * nk,
                                clattn__ld(s->q.seq, rows, (size_t)s->head_dim),
                                clattn__ld(s->k.seq, nk, (size_t)s->head_dim), nk};
        clattn_status st = clattn__sgemm(p->ctx, queue, &qk, "Sgemm (S = Q K^T)");
        if (st) return st;
    }
    clattn_status st = softmax(p, queue, user, scores, nr, np, bh0, r0);
    if (st) return st;
    for (int bh = bh0; bh < bh0 + np; bh++) {
        const int b = bh / s->heads_q, h = bh % s->heads_q, g = h / s->group;
        const clattn_gemm pv = {false, false, rows, (size_t)s->head_dim_v, nk, 1.0f, 0.0f, scores, bf->v, bf->o,
                                (size_t)(bh - bh0) * rows * nk, bf->v_offset + b * s->v.batch + g * s->v.head,
                                bf->o_offset + b * s->o.batch + h * s->o.head + (size_t)r0 * s->o.seq, nk,
                                clattn__ld(s->v.seq, nk, (size_t)s->head_dim_v),
                                clattn__ld(s->o.seq, rows, (size_t)s->head_dim_v)};
        if ((st = clattn__sgemm(p->ctx, queue, &pv, "Sgemm (O = P V)"))) return st;
    }
    return CLATTN_SUCCESS;
}

static clattn_status enqueue(const clattn_plan *p, const clattn_launch *l)
{
    const clattn_shape *s = &p->shape;
    const unfused *u = p->state;
    clattn_context *ctx = p->ctx;
    const clattn_buffers *bf = l->buffers;
    cl_command_queue queue = l->queue;
    if (!u->convert) { /* the GEMMs index the caller's tensors in place, offsets included */
        clattn_tensor_sizes need;
        clattn__sizes(s, &need);
        const size_t off[4] = {bf->q_offset, bf->k_offset, bf->v_offset, bf->o_offset};
        const size_t len[4] = {need.q, need.k, need.v, need.o};
        static const char *const name[4] = {"q", "k", "v", "o"};
        const clattn_status fit = clattn__gemm_offsets_fit(ctx, off, len, name, 4);
        if (fit) return fit;
    }
    clattn_status st = clattn__gemm_queue_start(ctx, queue, l->num_wait, l->wait);
    if (st) return st;
    cl_int e = CL_SUCCESS;

    /* The GEMMs read the caller's tensors in place, or the dense f32 copies. */
    clattn_shape w = *s;
    clattn_buffers in = *bf;
    cl_mem scratch = l->scratch;
    if (u->convert) {
        /* a paged cache: the append and q's rotation, then K and V gathered through the table
         * (all in queue order) */
        const clattn_paged_call pc = {s, bf, scratch, u->q_rot, u->work_k, u->work_v};
        for (int pk = 0; pk < CLATTN_PAGED_KERNELS && !e; pk++)
            if (u->paged[pk])
                e = clattn__paged_enqueue(ctx, queue, u->paged[pk], (clattn_paged_kernel)pk, &pc, 0, NULL, NULL);
        if (e) return clattn__fail(ctx, e, "enqueueing the paged cache's kernels failed (%d)", e);
        cl_mem cq = s->varlen ? bf->cu_seqlens_q : NULL, ck = s->varlen ? bf->cu_seqlens_k : NULL;
        const clattn_copy cp[3] = {
            {s->rotary_dim ? scratch : bf->q, s->rotary_dim ? u->q_rot : bf->q_offset, &s->q, s->heads_q, s->seq_q,
             s->head_dim, cq, s->total_q, scratch, u->work_q},
            {bf->k, bf->k_offset, &s->k, s->heads_kv, s->seq_kv, s->head_dim, ck, s->total_k, scratch, u->work_k},
            {bf->v, bf->v_offset, &s->v, s->heads_kv, s->seq_kv, s->head_dim_v, ck, s->total_k, scratch, u->work_v}};
        for (int i = 0; i < (s->paged ? 1 : 3) && !e; i++)
            e = clattn__copy_enqueue(ctx, queue, u->widen, true, &cp[i], s->batch);
        if (e) return clattn__fail(ctx, e, "enqueueing the f32 copies failed (%d)", e);
        w = clattn__dense_shape(s);
        in.q = in.k = in.v = in.o = scratch;
        in.q_offset = u->work_q;
        in.k_offset = u->work_k;
        in.v_offset = u->work_v;
        in.o_offset = u->work_o;
    }
    const int items = s->batch * s->heads_q, P = u->chunk_items, R = u->chunk_rows; /* < 2^31: supports() */
    for (int bh0 = 0; bh0 < items && !st; bh0 += P)
        for (int r0 = 0; r0 < s->seq_q && !st; r0 += R)
            st = gemms(p, &w, queue, &in, bf, scratch, bh0, items - bh0 < P ? items - bh0 : P, r0,
                       s->seq_q - r0 < R ? s->seq_q - r0 : R);
    if (!st && u->convert) {
        const clattn_copy co = {bf->o, bf->o_offset, &s->o, s->heads_q, s->seq_q, s->head_dim_v,
                         s->varlen ? bf->cu_seqlens_q : NULL, s->total_q, scratch, u->work_o};
        if ((e = clattn__copy_enqueue(ctx, queue, u->narrow, false, &co, s->batch)))
            st = clattn__fail(ctx, e, "enqueueing the output copy failed (%d)", e);
    }
    /* On an in-order queue a marker completes after everything enqueued before it: the one
     * event that covers every chunk's GEMM -> softmax -> GEMM. */
    if (!st && l->event && (e = clattn__enqueue_marker(ctx, queue, 0, NULL, l->event)))
        st = clattn__fail(ctx, e, "clEnqueueMarkerWithWaitList failed (%d)", e);
    return st;
}

static void release(clattn_plan *p)
{
    unfused *u = p->state;
    if (!u) return;
    clattn__release_kernel(p->ctx, u->softmax);
    clattn__release_kernel(p->ctx, u->widen);
    clattn__release_kernel(p->ctx, u->narrow);
    for (int w = 0; w < CLATTN_PAGED_KERNELS; w++) clattn__release_kernel(p->ctx, u->paged[w]);
    free(u);
    p->state = NULL;
}

const clattn_path clattn__path_unfused = {
    .name = "unfused",
    .algo = CLATTN_ALGO_UNFUSED,
    .pass = CLATTN_PASS_FORWARD,
    .supports = supports,
    .prepare = prepare,
    .build = build,
    .enqueue = enqueue,
    .release = release,
};
