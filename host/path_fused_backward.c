/* The fused backward path: D per row first (bwd_prep), then the family's two kernels -- dK/dV
 * per block of keys over every query row that sees it, dQ per block of rows over their keys
 * (family.h) -- with P recomputed from lse, and the sink gradients last. No atomics: each
 * gradient element is summed by one work-item in a fixed order. */
#include "path.h"
#include "bwd_prep.h"
#include "diag.h"
#include "family.h"
#include "fault.h"
#include "kernel.h"
#include "shape.h"
#include "tuning.h"

#include <stdlib.h>

typedef struct fused_bwd {
    const clattn_family *family;
    clattn_bwd_fit fit;
    size_t rows_total;
    size_t dvec_off; /* scratch (floats): D per row */
    clattn_kernel_spec dot_spec, dsinks_spec, kv_spec, q_spec;
    cl_kernel dot, dsinks, kv, q;
} fused_bwd;

static bool supports(const clattn_context *ctx, const clattn_shape *s, char *why, size_t why_size)
{
    if ((int64_t)s->group * s->seq_q > INT32_MAX / 2 || (int64_t)s->seq_kv > INT32_MAX / 2) {
        clattn__format(why, why_size, "%d query heads per KV head x %d positions, or %d keys, exceed the fused "
                       "kernels' 32-bit row indices", s->group, s->seq_q, s->seq_kv);
        return false;
    }
    if (s->heads_kv > CLATTN_GRID_MAX || s->batch > CLATTN_GRID_MAX) {
        clattn__format(why, why_size, "%d KV heads or a batch of %d exceed the %d work-groups a GPU grid "
                       "dimension holds", s->heads_kv, s->batch, CLATTN_GRID_MAX);
        return false;
    }
    return clattn__tuning_pick_family(ctx, s, why, why_size) != NULL;
}

/* The dK/dV and dQ kernels' arguments (BWD_ARGS in kernels/common.cl); unused buffers get q. */
static void bwd_args(clattn_args *a, const clattn_plan *p, const fused_bwd *f, const clattn_buffers *bf,
                     cl_mem scratch)
{
    const clattn_shape *s = &p->shape;
    CLATTN_ARG(a, cl_mem, bf->q);
    CLATTN_ARG(a, cl_mem, bf->k);
    CLATTN_ARG(a, cl_mem, bf->v);
    CLATTN_ARG(a, cl_mem, bf->d_o);
    CLATTN_ARG(a, cl_mem, bf->dq);
    CLATTN_ARG(a, cl_mem, bf->dk);
    CLATTN_ARG(a, cl_mem, bf->dv);
    CLATTN_ARG(a, cl_mem, bf->lse);
    CLATTN_ARG(a, cl_mem, scratch);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)f->dvec_off);
    const clattn_strides *st[4] = {&s->q, &s->k, &s->v, &s->o};
    const size_t offs[4] = {bf->q_offset, bf->k_offset, bf->v_offset, bf->do_offset};
    for (int i = 0; i < 4; i++) {
        CLATTN_ARG(a, cl_ulong, (cl_ulong)offs[i]);
        CLATTN_ARG(a, cl_long, st[i]->batch);
        CLATTN_ARG(a, cl_long, st[i]->head);
        CLATTN_ARG(a, cl_long, st[i]->seq);
    }
    CLATTN_ARG(a, cl_ulong, (cl_ulong)bf->dq_offset);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)bf->dk_offset);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)bf->dv_offset);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)bf->lse_offset);
    CLATTN_ARG(a, cl_int, s->seq_q);
    CLATTN_ARG(a, cl_int, s->seq_kv);
    CLATTN_ARG(a, cl_int, s->heads_q);
    CLATTN_ARG(a, cl_int, s->group);
    CLATTN_ARG(a, cl_float, (float)(s->scale * CLATTN_LOG2E));
    CLATTN_ARG(a, cl_float, s->scale);
    CLATTN_ARG(a, cl_int, s->top_left);
    CLATTN_ARG(a, cl_int, s->window_left);
    CLATTN_ARG(a, cl_int, s->window_right);
    CLATTN_ARG(a, cl_float, (float)(s->softcap * CLATTN_LOG2E));
    CLATTN_ARG(a, cl_mem, s->has_alibi ? bf->alibi_slopes : bf->q);
    CLATTN_ARG(a, cl_mem, s->has_mask ? bf->mask : bf->q);
    CLATTN_ARG(a, cl_long, s->mask.batch);
    CLATTN_ARG(a, cl_long, s->mask.head);
    CLATTN_ARG(a, cl_long, s->mask.seq);
    CLATTN_ARG(a, cl_mem, s->has_seqused_k ? bf->seqused_k : bf->q);
    CLATTN_ARG(a, cl_mem, s->varlen ? bf->cu_seqlens_q : bf->q);
    CLATTN_ARG(a, cl_mem, s->varlen ? bf->cu_seqlens_k : bf->q);
    CLATTN_ARG(a, cl_int, s->total_q);
    CLATTN_ARG(a, cl_int, s->total_k);
}

static clattn_status prepare(clattn_plan *p, const clattn_tuning *given)
{
    clattn_context *ctx = p->ctx;
    const clattn_shape *s = &p->shape;
    fused_bwd *f = clattn__calloc(ctx, 1, sizeof *f);
    if (!f) return clattn__fail(ctx, CLATTN_OUT_OF_HOST_MEMORY, "out of host memory for a plan");
    p->state = f;
    char why[192];
    if (!(f->family = clattn__tuning_pick_family(ctx, s, why, sizeof why)))
        return clattn__fail(ctx, CLATTN_UNSUPPORTED, "fused backward: %s", why);
    /* `given` was checked against this family when the plan was made (plan.c) */
    clattn_tuning t;
    p->tuning_source = clattn__tuning_lookup(ctx, f->family, s, given, &t);
    clattn_bwd_fit *fit = &f->fit;
    f->family->choose_backward(&ctx->info, s, &t, fit);
    p->tuning = t;
    p->tuning.rows = fit->rows;
    p->tuning.keys = fit->keys;
    p->tuning.vector_width = fit->vector_width;
    p->tuning.group_size = (int)fit->q_local;
    p->tuning.split_units = 0;
    p->tuning.threads_per_row = 1;

    /* scratch: D per row */
    f->rows_total = clattn__rows_total(s);
    const int d = s->head_dim, dv = s->head_dim_v;
    f->dvec_off = 0;
    const size_t floats = f->rows_total;
    if (floats > SIZE_MAX / sizeof(float))
        return clattn__fail(ctx, CLATTN_SIZE_OVERFLOW, "fused backward: its scratch overflows size_t");
    p->scratch_bytes = floats * sizeof(float);

    const clattn_switches sw = clattn__switches(s);
    char params[160];
    clattn__format(params, sizeof params, "-cl-mad-enable -D D=%d -D DV=%d -D VW=%d -D BM=%d -D BN=%d", d, dv,
                   fit->vector_width, fit->rows, fit->keys);
    const clattn_buffers none = {0};
    clattn_kernel_spec *specs[2] = {&f->kv_spec, &f->q_spec};
    const char *functions[2] = {f->family->bwd_kv_function, f->family->bwd_q_function};
    const size_t locals[2] = {fit->kv_local, fit->q_local};
    for (int i = 0; i < 2; i++) {
        specs[i]->file = f->family->bwd_file;
        specs[i]->function = functions[i];
        specs[i]->local_size = locals[i];
        clattn__kernel_options(specs[i], params, &sw);
        clattn__format(specs[i]->name, sizeof specs[i]->name, "%s", functions[i]);
        clattn_args count = {0};
        bwd_args(&count, p, f, &none, NULL);
        specs[i]->num_args = count.n;
    }
    clattn__bwd_dot_spec(&f->dot_spec, s);
    if (s->has_sinks) clattn__bwd_dsinks_spec(&f->dsinks_spec, s);
    clattn__format(p->variant, sizeof p->variant, "%s backward D=%d DV=%d VW=%d BM=%d BN=%d WG=%zu/%zu %s",
                   f->family->name, d, dv, fit->vector_width, fit->rows, fit->keys, fit->q_local, fit->kv_local,
                   s->dtype == CLATTN_DTYPE_F32 ? "f32" : s->dtype == CLATTN_DTYPE_F16 ? "f16" : "bf16");
    return CLATTN_SUCCESS;
}

static clattn_status build(clattn_plan *p)
{
    fused_bwd *f = p->state;
    clattn_status st = clattn__make_kernel(p->ctx, &f->dot_spec, &f->dot);
    if (!st && p->shape.has_sinks) st = clattn__make_kernel(p->ctx, &f->dsinks_spec, &f->dsinks);
    if (!st) st = clattn__make_kernel(p->ctx, &f->kv_spec, &f->kv);
    if (!st) st = clattn__make_kernel(p->ctx, &f->q_spec, &f->q);
    return st;
}

/* A block kernel's NDRange: blocks in dimension 0 (a work-group or a work-item each, padded to
 * whole groups), then KV heads and batch. */
static cl_int launch(const clattn_plan *p, cl_command_queue queue, cl_kernel k, size_t blocks, size_t wg,
                     bool group_per_block, cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    const clattn_shape *s = &p->shape;
    const size_t g0 = group_per_block ? blocks * wg : wg ? (blocks + wg - 1) / wg * wg : blocks;
    size_t global[3] = {g0, (size_t)s->heads_kv, (size_t)s->batch};
    size_t local[3] = {wg, 1, 1};
    return clattn__enqueue(p->ctx, queue, k, 3, global, wg ? local : NULL, num_wait, wait, event);
}

static clattn_status enqueue(const clattn_plan *p, const clattn_launch *l)
{
    const clattn_shape *s = &p->shape;
    const fused_bwd *f = p->state;
    const clattn_buffers *bf = l->buffers;
    clattn_context *ctx = p->ctx;
    cl_event dot = NULL;
    cl_int e = clattn__bwd_dot_enqueue(ctx, l->queue, f->dot, s, bf, l->scratch, f->dvec_off, l->num_wait, l->wait,
                                       &dot);
    clattn_args a = {f->kv, 0, CL_SUCCESS};
    if (!e) bwd_args(&a, p, f, bf, l->scratch);
    if (!e) e = a.err;
    cl_event kv = NULL, q = NULL, sinks = NULL;
    if (!e) {
        const size_t key_blocks = ((size_t)s->seq_kv + f->fit.keys - 1) / f->fit.keys;
        e = launch(p, l->queue, f->kv, key_blocks, f->fit.kv_local, f->fit.kv_group_per_block, 1, &dot, &kv);
    }
    if (!e) {
        a = (clattn_args){f->q, 0, CL_SUCCESS};
        bwd_args(&a, p, f, bf, l->scratch);
        e = a.err;
    }
    if (!e) {
        const size_t rows = (size_t)s->group * (size_t)s->seq_q;
        const size_t row_blocks = (rows + f->fit.rows - 1) / f->fit.rows;
        e = launch(p, l->queue, f->q, row_blocks, f->fit.q_local, f->fit.q_group_per_block, 1, &dot, &q);
    }
    if (!e && s->has_sinks)
        e = clattn__bwd_dsinks_enqueue(ctx, l->queue, f->dsinks, s, bf, l->scratch, f->dvec_off, 1, &dot, &sinks);
    /* one event after everything: a marker waiting on the last steps (any queue order) */
    if (!e && l->event) {
        const cl_event last[3] = {kv, q, sinks};
        e = clattn__enqueue_marker(ctx, l->queue, sinks ? 3 : 2, last, l->event);
    }
    if (dot) clReleaseEvent(dot);
    if (kv) clReleaseEvent(kv);
    if (q) clReleaseEvent(q);
    if (sinks) clReleaseEvent(sinks);
    if (e) return clattn__fail(ctx, e, "enqueueing the fused backward failed (%d)", e);
    return CLATTN_SUCCESS;
}

static void release(clattn_plan *p)
{
    fused_bwd *f = p->state;
    if (!f) return;
    clattn__release_kernel(p->ctx, f->dot);
    clattn__release_kernel(p->ctx, f->dsinks);
    clattn__release_kernel(p->ctx, f->kv);
    clattn__release_kernel(p->ctx, f->q);
    free(f);
    p->state = NULL;
}

const clattn_path clattn__path_fused_backward = {
    .name = "fused backward",
    .algo = CLATTN_ALGO_FUSED,
    .pass = CLATTN_PASS_BACKWARD,
    .supports = supports,
    .prepare = prepare,
    .build = build,
    .enqueue = enqueue,
    .release = release,
};
