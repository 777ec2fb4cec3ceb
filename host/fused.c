/* The fused path: picks the kernel variant for a shape on a device (family, tile sizes,
 * storage type and the formula's optional terms as -D switches, key splits for decode) and
 * enqueues it, with the combine kernel after a split. */
#include "fault.h"

#include <math.h>

/* Largest vector width that divides both head dims, so no lane ever reads past a row. */
static int vector_width(int d, int dv, int max_vw)
{
    for (int vw = max_vw; vw > 1; vw /= 2)
        if (d % vw == 0 && dv % vw == 0) return vw;
    return 1;
}

/* Local memory a tiles variant may use: NVIDIA's OpenCL gives 48 KB per work-group; leave
 * room for what the compiler adds. */
static size_t local_budget(const clattn_context *ctx)
{
    size_t dev = (size_t)ctx->info.local_mem;
    size_t cap = 48 * 1024;
    return (dev < cap ? dev : cap) - 1024;
}

/* Local memory of a tiles variant: the K and V tiles, and the partial scores when rows are
 * shared by several work-items. */
static size_t tiles_local(int d, int dv, int bm, int bn, int tpr)
{
    return (size_t)(d + dv) * (size_t)bn * 4 + (tpr > 1 ? (size_t)tpr * (size_t)bn * (size_t)bm * 4 : 0);
}

const char *clattn__feature_defines(const clattn_shape *s, char *buf, size_t size)
{
    clattn__format(buf, size, "-D DTYPE=%d -D SOFTCAP=%d -D ALIBI=%d -D MASK=%d -D SINKS=%d -D SEQUSED=%d -D VARLEN=%d",
                   (int)s->dtype, s->softcap > 0, s->has_alibi, s->has_mask, s->has_sinks, s->has_seqused_k,
                   s->varlen);
    return buf;
}

/* Key splits (flash-decoding): when the query rows give too few work units to fill the
 * device (decode; or prefill on a GPU with few heads), the keys are split across work-groups
 * and a combine kernel merges the partials. The target is `units_per_cu` work units per
 * compute unit (tuned per device); each split keeps at least 256 keys, so the combine stays
 * cheap next to the streaming, and the partials stay under 256 MiB. */
static int choose_splits(const clattn_context *ctx, const clattn_shape *s, int rows_per_unit, int units_per_cu)
{
    const int max_by_keys = s->seq_kv / 256 > 1 ? s->seq_kv / 256 : 1;
    if (s->num_splits) return s->num_splits < s->seq_kv ? s->num_splits : s->seq_kv; /* manual */
    const long rows = (long)s->group * s->seq_q;
    const long units = (rows + rows_per_unit - 1) / rows_per_unit * s->heads_kv * s->batch;
    /* On PoCL (2 threads) case 21 of the bench took 22.1 ms unsplit and 15.4-16.5 ms with 2-8
     * splits; on the H100 the tiles kernel at B=1, H=8, N=2048 ran 256 work-groups on 132
     * units, its time set by the longest group's 2048 keys. */
    const long target = (long)units_per_cu * (long)ctx->info.compute_units;
    long n = units >= target ? 1 : (target + units - 1) / units;
    if (n > max_by_keys) n = max_by_keys;
    if (n > 64) n = 64;
    const double part_row = ((double)s->head_dim_v + 1) * sizeof(float);
    const double total_rows = (double)(s->varlen ? s->total_q : s->batch * s->seq_q) * s->heads_q;
    while (n > 1 && n * total_rows * part_row > (double)(256 << 20)) n--;
    return (int)n;
}

/* The rows family keeps each work-item's register tile on the PoCL worker's stack: bound a
 * work-group's private arrays (256x8 groups once overflowed it at d=128: a segfault). */
static void bound_private(int d, int dv, int *bm, size_t *wg)
{
    const size_t budget = 256 * 1024;
    while ((size_t)*bm * (size_t)(2 * d + dv) * 4 * *wg > budget && *wg > 1) *wg /= 2;
    while ((size_t)*bm * (size_t)(2 * d + dv) * 4 * *wg > budget && *bm > 1) *bm /= 2;
}

void clattn__fused_choose(const clattn_context *ctx, const clattn_shape *s, const clattn_tuning *t, clattn_plan *plan)
{
    const int d = s->head_dim, dv = s->head_dim_v;
    clattn_variant *v = &plan->variant;
    char feat[160];
    clattn__feature_defines(s, feat, sizeof feat);
    int bm = t->rows, bn = t->keys, vw = vector_width(d, dv, t->vector_width), tpr = 1;
    if (ctx->family == CLATTN_KERNELS_TILES && t->threads_per_row > 1) tpr = t->threads_per_row;
    const char *family;
    if (ctx->family == CLATTN_KERNELS_ROWS) {
        /* One work-item owns bm rows and streams keys bn at a time with vw-wide vectors. The
         * kernel has no barriers, so the group size only matters to the runtime (explicit:
         * PoCL once picked 256x8 groups whose private arrays overflowed its stack). */
        size_t wg = (size_t)t->group_size;
        bound_private(d, dv, &bm, &wg);
        family = "rows";
        v->source_name = "fwd_rows";
        v->kernel_name = "clattn_fwd_rows";
        v->local_size = wg;
        v->group_per_block = false;
    } else {
        /* Tiles: bm rows per work-group, tpr work-items per row (each a slice of the head
         * dims), key tiles of bn rows in local memory, reduced until they fit the budget (the
         * score row lives in registers). */
        while (tpr > 1 && (d % tpr || dv % tpr)) tpr /= 2;
        vw = vector_width(d / tpr, dv / tpr, t->vector_width);
        while ((size_t)(bm * tpr) > ctx->info.max_wg_size && bm > 1) bm /= 2;
        while (bn > 1 && tiles_local(d, dv, bm, bn, tpr) > local_budget(ctx)) bn /= 2;
        family = "tiles";
        v->source_name = "fwd_tiles";
        v->kernel_name = "clattn_fwd_tiles";
        v->local_size = (size_t)(bm * tpr);
        v->group_per_block = true;
    }
    v->rows = bm;
    plan->tuning = *t;
    plan->tuning.rows = bm;
    plan->tuning.keys = bn;
    plan->tuning.vector_width = vw;
    plan->tuning.group_size = (int)v->local_size;
    plan->tuning.threads_per_row = tpr;
    plan->nsplit = choose_splits(ctx, s, bm, t->split_units);
    plan->split_len = 0;
    plan->scratch_bytes = 0;
    if (plan->nsplit > 1) {
        const int per = (s->seq_kv + plan->nsplit - 1) / plan->nsplit;
        plan->split_len = (per + bn - 1) / bn * bn;
        plan->nsplit = (s->seq_kv + plan->split_len - 1) / plan->split_len; /* no empty tail split */
    }
    const bool split = plan->nsplit > 1;
    /* Rows family, 16-key score vectors (plain formula), prefill: K transposed once per call
     * (a pass over K, next to Nq/BM passes of the kernel over it) makes each column of 16 keys
     * one vector load. Not with splits (the scratch holds their partials). */
    plan->kt = ctx->family == CLATTN_KERNELS_ROWS && bn == 16 && d <= 128 && s->seq_q > 16 && !split &&
               !(s->softcap > 0) && !s->has_alibi && !s->has_mask &&
               (long)(s->varlen ? 1 : s->batch) * s->heads_kv <= 65535; /* the transpose's 3rd dimension */
    plan->kt_ld = plan->kt ? (long)(s->varlen ? s->total_k : s->seq_kv) + 16 : 0;
    clattn__format(v->options, sizeof v->options,
                   "-cl-std=CL1.2 -cl-mad-enable -D D=%d -D DV=%d -D VW=%d -D BM=%d -D BN=%d -D TPR=%d -D SPLIT=%d "
                   "-D KT=%d %s",
                   d, dv, vw, bm, bn, tpr, split, plan->kt, feat);
    clattn__format(v->name, sizeof v->name, "%s D=%d DV=%d VW=%d BM=%d BN=%d TPR=%d WG=%zu%s %s splits=%d", family,
                   d, dv, vw, bm, bn, tpr, v->local_size, plan->kt ? " KT" : "",
                   s->dtype == CLATTN_DTYPE_F32 ? "f32" : s->dtype == CLATTN_DTYPE_F16 ? "f16" : "bf16", plan->nsplit);
    if (split) {
        const size_t rows_total = (size_t)(s->varlen ? s->total_q : s->batch * s->seq_q) * (size_t)s->heads_q;
        plan->scratch_bytes = (size_t)plan->nsplit * rows_total * ((size_t)dv + 1) * sizeof(float);
        clattn_variant *c = &plan->variant2;
        c->source_name = "combine";
        c->kernel_name = "clattn_combine";
        c->rows = 1;
        c->local_size = 0;
        clattn__format(c->options, sizeof c->options, "-cl-std=CL1.2 -D VW=1 -D DV=%d %s", dv, feat);
        clattn__format(c->name, sizeof c->name, "combine DV=%d", dv);
    } else if (plan->kt) {
        plan->scratch_bytes = (size_t)(s->varlen ? 1 : s->batch) * (size_t)s->heads_kv * (size_t)d *
                              (size_t)plan->kt_ld * sizeof(float);
        clattn_variant *c = &plan->variant2;
        c->source_name = "convert";
        c->kernel_name = "clattn_transpose_k";
        c->rows = 1;
        c->local_size = 0;
        clattn__format(c->options, sizeof c->options, "-cl-std=CL1.2 -D VW=1 %s", feat);
        clattn__format(c->name, sizeof c->name, "transpose K D=%d", d);
    }
}

clattn_status clattn__fused_prepare(clattn_plan *plan)
{
    if (plan->nsplit <= 1 && !plan->kt) return CLATTN_SUCCESS;
    return clattn__make_kernel(plan->ctx, &plan->variant2, plan->variant2.kernel_name, &plan->kernel2);
}

bool clattn__fused_supports(const clattn_context *ctx, const clattn_shape *s, char *why, size_t why_size)
{
    /* the kernels index packed rows (query heads of a KV head x positions) with 32-bit ints */
    if ((int64_t)s->group * s->seq_q > INT32_MAX / 2 || (int64_t)s->seq_kv > INT32_MAX / 2) {
        clattn__format(why, why_size, "%d query heads per KV head x %d positions, or %d keys, exceed the fused "
                       "kernels' 32-bit row indices", s->group, s->seq_q, s->seq_kv);
        return false;
    }
    /* KV heads and batch are the NDRange's 2nd and 3rd dimensions; NVIDIA's OpenCL maps them
     * onto CUDA grid dimensions, which hold at most 65535 work-groups. */
    if (s->heads_kv > 65535 || s->batch > 65535) {
        clattn__format(why, why_size, "%d KV heads or a batch of %d exceed the 65535 work-groups a GPU grid "
                       "dimension holds", s->heads_kv, s->batch);
        return false;
    }
    if (s->head_dim > CLATTN_FUSED_MAX_HEAD_DIM || s->head_dim_v > CLATTN_FUSED_MAX_HEAD_DIM) {
        clattn__format(why, why_size, "head dims above %d (got %d/%d) are not supported by the fused path",
                       CLATTN_FUSED_MAX_HEAD_DIM, s->head_dim, s->head_dim_v);
        return false;
    }
    if (ctx->family == CLATTN_KERNELS_TILES && (size_t)(s->head_dim + s->head_dim_v) * 4 > local_budget(ctx)) {
        clattn__format(why, why_size, "head dims %d/%d need more local memory than the device has",
                       s->head_dim, s->head_dim_v);
        return false;
    }
    clattn__format(why, why_size, "the fused kernel serves this descriptor");
    return true;
}

#define ARG(T, x) CLATTN_ARG(kernel, n, e, T, x)

/* The fused forward's arguments, in FWD_ARGS order (kernels/common.cl). Unused buffers get a
 * valid one (q), never dereferenced. */
static cl_int set_forward_args(const clattn_plan *plan, cl_kernel kernel, const clattn_buffers *bf, cl_mem out,
                               cl_mem lse, size_t lse_off, cl_mem kt)
{
    const clattn_shape *s = &plan->shape;
    cl_int e = CL_SUCCESS;
    cl_uint n = 0;
    ARG(cl_mem, bf->q);
    ARG(cl_mem, bf->k);
    ARG(cl_mem, bf->v);
    ARG(cl_mem, out);
    ARG(cl_mem, lse ? lse : bf->q);
    const clattn_strides *st[4] = {&s->q, &s->k, &s->v, &s->o};
    const size_t offs[4] = {bf->q_offset, bf->k_offset, bf->v_offset, bf->o_offset};
    for (int i = 0; i < 4; i++) {
        ARG(cl_ulong, (cl_ulong)offs[i]);
        ARG(cl_long, st[i]->batch);
        ARG(cl_long, st[i]->head);
        ARG(cl_long, st[i]->seq);
    }
    ARG(cl_ulong, (cl_ulong)lse_off);
    ARG(cl_int, lse != NULL);
    ARG(cl_int, s->seq_q);
    ARG(cl_int, s->seq_kv);
    ARG(cl_int, s->heads_q);
    ARG(cl_int, s->group);
    ARG(cl_float, (float)(s->scale * 1.4426950408889634));
    ARG(cl_int, s->top_left);
    ARG(cl_int, s->window_left);
    ARG(cl_int, s->window_right);
    ARG(cl_float, (float)(s->softcap * 1.4426950408889634));
    ARG(cl_mem, s->has_alibi ? bf->alibi_slopes : bf->q);
    ARG(cl_mem, s->has_mask ? bf->mask : bf->q);
    ARG(cl_long, s->mask.batch);
    ARG(cl_long, s->mask.head);
    ARG(cl_long, s->mask.seq);
    ARG(cl_mem, s->has_sinks ? bf->sinks : bf->q);
    ARG(cl_mem, s->has_seqused_k ? bf->seqused_k : bf->q);
    ARG(cl_mem, s->varlen ? bf->cu_seqlens_q : bf->q);
    ARG(cl_mem, s->varlen ? bf->cu_seqlens_k : bf->q);
    ARG(cl_int, s->total_q);
    ARG(cl_int, plan->nsplit);
    ARG(cl_int, plan->split_len);
    ARG(cl_int, s->batch);
    ARG(cl_mem, kt ? kt : bf->q);
    ARG(cl_long, (cl_long)plan->kt_ld);
    return e;
}

static cl_int set_transpose_args(const clattn_plan *plan, cl_kernel kernel, const clattn_buffers *bf, cl_mem kt)
{
    const clattn_shape *s = &plan->shape;
    cl_int e = CL_SUCCESS;
    cl_uint n = 0;
    ARG(cl_mem, bf->k);
    ARG(cl_ulong, (cl_ulong)bf->k_offset);
    ARG(cl_long, s->k.batch);
    ARG(cl_long, s->k.head);
    ARG(cl_long, s->k.seq);
    ARG(cl_int, s->heads_kv);
    ARG(cl_int, s->varlen ? s->total_k : s->seq_kv);
    ARG(cl_mem, kt);
    ARG(cl_ulong, 0);
    ARG(cl_long, (cl_long)plan->kt_ld);
    return e;
}

static cl_int set_combine_args(const clattn_plan *plan, cl_kernel kernel, const clattn_buffers *bf, cl_mem part,
                               size_t rows_total)
{
    const clattn_shape *s = &plan->shape;
    cl_int e = CL_SUCCESS;
    cl_uint n = 0;
    ARG(cl_mem, part);
    ARG(cl_ulong, 0);
    ARG(cl_mem, part);
    ARG(cl_ulong, (cl_ulong)((size_t)plan->nsplit * rows_total * (size_t)s->head_dim_v));
    ARG(cl_int, plan->nsplit);
    ARG(cl_long, (cl_long)rows_total);
    ARG(cl_mem, bf->o);
    ARG(cl_ulong, (cl_ulong)bf->o_offset);
    ARG(cl_long, s->o.batch);
    ARG(cl_long, s->o.head);
    ARG(cl_long, s->o.seq);
    ARG(cl_mem, bf->lse ? bf->lse : bf->q);
    ARG(cl_ulong, (cl_ulong)bf->lse_offset);
    ARG(cl_int, bf->lse != NULL);
    ARG(cl_int, s->heads_q);
    ARG(cl_int, s->seq_q);
    ARG(cl_int, s->total_q);
    ARG(cl_mem, s->has_sinks ? bf->sinks : bf->q);
    ARG(cl_mem, s->varlen ? bf->cu_seqlens_q : bf->q);
    ARG(cl_int, s->batch);
    return e;
}

clattn_status clattn__fused_enqueue(const clattn_plan *plan, cl_command_queue queue,
                                    const clattn_buffers *bf, cl_uint num_wait, const cl_event *wait,
                                    cl_event *event)
{
    const clattn_shape *s = &plan->shape;
    cl_kernel kernel = plan->kernel;
    const bool split = plan->nsplit > 1;
    const size_t rows_total = (size_t)(s->varlen ? s->total_q : s->batch * s->seq_q) * (size_t)s->heads_q;
    cl_mem part = NULL;
    if (split || plan->kt) {
        clattn_status st = clattn__plan_scratch((clattn_plan *)plan, bf, &part);
        if (st) return st;
    }
    cl_int e = split ? set_forward_args(plan, kernel, bf, part, part, (size_t)plan->nsplit * rows_total * s->head_dim_v,
                                        NULL)
                     : set_forward_args(plan, kernel, bf, bf->o, bf->lse, bf->lse_offset, plan->kt ? part : NULL);
    if (e) return clattn__fail(plan->ctx, e, "clSetKernelArg failed (%d) for %s", e, plan->variant.name);
    if (plan->kt && (e = set_transpose_args(plan, plan->kernel2, bf, part)))
        return clattn__fail(plan->ctx, e, "clSetKernelArg failed (%d) for the K transpose", e);

    /* K transposed first; the forward waits on it (out-of-order queues too) */
    cl_event tr = NULL;
    if (plan->kt) {
        size_t tg[3] = {(size_t)plan->kt_ld, (size_t)s->head_dim, (size_t)(s->varlen ? 1 : s->batch) * s->heads_kv};
        e = clattn__enqueue(plan->ctx, queue, plan->kernel2, 3, tg, NULL, num_wait, wait, &tr);
        if (e) return clattn__fail(plan->ctx, e, "enqueueing the K transpose failed (%d)", e);
        num_wait = 1;
        wait = &tr;
    }

    /* Packed rows per KV head: group query heads x the longest sequence. */
    const size_t rows = (size_t)s->group * (size_t)s->seq_q;
    const size_t blocks = (rows + plan->variant.rows - 1) / plan->variant.rows * (size_t)plan->nsplit;
    const size_t wg = plan->variant.local_size;
    /* tiles: one work-group per block; rows: one work-item per block, padded to whole groups
     * (the kernel returns for blocks past the end) */
    const size_t g0 = plan->variant.group_per_block ? blocks * wg : wg ? (blocks + wg - 1) / wg * wg : blocks;
    size_t global[3] = {g0, (size_t)s->heads_kv, (size_t)s->batch};
    size_t local[3] = {wg, 1, 1};
    cl_event fwd = NULL;
    e = clattn__enqueue(plan->ctx, queue, kernel, 3, global, wg ? local : NULL, num_wait, wait, split ? &fwd : event);
    if (tr) clReleaseEvent(tr);
    if (e) return clattn__fail(plan->ctx, e, "clEnqueueNDRangeKernel failed (%d) for %s", e, plan->variant.name);
    if (!split) return CLATTN_SUCCESS;

    /* The combine waits on the forward's event, so out-of-order queues are served too; its
     * event is the one returned, and it completes after both. */
    e = set_combine_args(plan, plan->kernel2, bf, part, rows_total);
    if (!e) e = clattn__enqueue(plan->ctx, queue, plan->kernel2, 1, &rows_total, NULL, 1, &fwd, event);
    clReleaseEvent(fwd);
    if (e) return clattn__fail(plan->ctx, e, "enqueueing the combine kernel failed (%d)", e);
    return CLATTN_SUCCESS;
}
