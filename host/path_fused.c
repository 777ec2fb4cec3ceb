/* The fused forward path: one kernel of the chosen family (family.h) computes the whole
 * attention per block of query rows with an online softmax; key splits for decode (flash-
 * decoding) with the combine kernel after them; for the rows family's prefill, K transposed
 * to f32 first; for a paged cache, the append and q's rotation first (host/paged.h). */
#include "path.h"
#include "combine.h"
#include "paged.h"
#include "transpose.h"
#include "diag.h"
#include "family.h"
#include "fault.h"
#include "kernel.h"
#include "shape.h"
#include "tuning.h"

#include <stdlib.h>
#include <string.h>

typedef struct fused {
    const clattn_family *family;
    clattn_fwd_fit fit;
    int nsplit, split_len; /* key splits and keys per split (a multiple of the key block) */
    bool kt;               /* K transposed to f32 in scratch first */
    long kt_ld;            /* its keys per KV head: the keys rounded up to a block of 16 */
    size_t rows_total;     /* output rows (shape.h) */
    size_t q_rot;          /* rotary: q's rotated copy, at this element of scratch (after the partials) */
    clattn_kernel_spec fwd_spec, combine_spec, transpose_spec, paged_spec[CLATTN_PAGED_KERNELS];
    cl_kernel fwd, combine, transpose, paged[CLATTN_PAGED_KERNELS];
} fused;

static bool supports(const clattn_context *ctx, const clattn_shape *s, char *why, size_t why_size)
{
    /* the kernels index packed rows (query heads of a KV head x positions) with 32-bit ints */
    if ((int64_t)s->group * s->seq_q > INT32_MAX / 2 || (int64_t)s->seq_kv > INT32_MAX / 2) {
        clattn__format(why, why_size, "%d query heads per KV head x %d positions, or %d keys, exceed the fused "
                       "kernels' 32-bit row indices", s->group, s->seq_q, s->seq_kv);
        return false;
    }
    /* KV heads and batch are the NDRange's 2nd and 3rd dimensions */
    if (s->heads_kv > CLATTN_GRID_MAX || s->batch > CLATTN_GRID_MAX) {
        clattn__format(why, why_size, "%d KV heads or a batch of %d exceed the %d work-groups a GPU grid "
                       "dimension holds", s->heads_kv, s->batch, CLATTN_GRID_MAX);
        return false;
    }
    if (!clattn__paged_grid_fits(s, why, why_size)) return false;
    if (s->head_dim > CLATTN_FUSED_MAX_HEAD_DIM || s->head_dim_v > CLATTN_FUSED_MAX_HEAD_DIM) {
        clattn__format(why, why_size, "head dims above %d (got %d/%d) are not supported by the fused path",
                       CLATTN_FUSED_MAX_HEAD_DIM, s->head_dim, s->head_dim_v);
        return false;
    }
    return clattn__tuning_pick_family(ctx, s, why, why_size) != NULL;
}

/* Key splits (flash-decoding): when the query rows give too few work units to fill the
 * device (decode; or prefill on a GPU with few heads), the keys are split across work-groups
 * and a combine kernel merges the partials. The target is `units_per_cu` work units per
 * compute unit (tuned per device); each split keeps at least 256 keys, so the combine stays
 * cheap next to the streaming, and the partials stay under CLATTN_SPLIT_PARTIALS_MAX.
 *
 * A unit is a block of rows of one KV head, however many heads a work-item holds: counted per
 * work-item, the CPU decode with 8 heads per item (paged or BSHD cache) took 8 times the splits
 * of the same decode on a BHSD cache, and 8 times its partials to combine; a paged decode of
 * 1x32x8x1x32768x128 ran 2-4% faster with 4 splits than with 32 (bench/NOTES.md change 24). */
static int choose_splits(const clattn_context *ctx, const clattn_shape *s, size_t rows_total, int rows_per_unit,
                         int units_per_cu)
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
    while (n > 1 && n * (double)rows_total * part_row > (double)CLATTN_SPLIT_PARTIALS_MAX) n--;
    return (int)n;
}

/* The forward kernel's arguments, in FWD_ARGS order (kernels/common.cl). `out` and `lse`
 * are the caller's o and lse, or the split partials. Unused buffers get a valid one (q),
 * never dereferenced. */
static void fwd_args(clattn_args *a, const clattn_plan *p, const fused *f, const clattn_buffers *bf, cl_mem out,
                     cl_mem lse, size_t lse_off, cl_mem kt)
{
    const clattn_shape *s = &p->shape;
    CLATTN_ARG(a, cl_mem, bf->q);
    CLATTN_ARG(a, cl_mem, bf->k);
    CLATTN_ARG(a, cl_mem, bf->v);
    CLATTN_ARG(a, cl_mem, out);
    CLATTN_ARG(a, cl_mem, lse ? lse : bf->q);
    const clattn_strides *st[4] = {&s->q, &s->k, &s->v, &s->o};
    const size_t offs[4] = {bf->q_offset, bf->k_offset, bf->v_offset, bf->o_offset};
    for (int i = 0; i < 4; i++) {
        CLATTN_ARG(a, cl_ulong, (cl_ulong)offs[i]);
        CLATTN_ARG(a, cl_long, st[i]->batch);
        CLATTN_ARG(a, cl_long, st[i]->head);
        CLATTN_ARG(a, cl_long, st[i]->seq);
    }
    CLATTN_ARG(a, cl_ulong, (cl_ulong)lse_off);
    CLATTN_ARG(a, cl_int, lse != NULL);
    CLATTN_ARG(a, cl_int, s->seq_q);
    CLATTN_ARG(a, cl_int, s->seq_kv);
    CLATTN_ARG(a, cl_int, s->heads_q);
    CLATTN_ARG(a, cl_int, s->group);
    CLATTN_ARG(a, cl_float, (float)(s->scale * CLATTN_LOG2E));
    CLATTN_ARG(a, cl_int, s->top_left);
    CLATTN_ARG(a, cl_int, s->window_left);
    CLATTN_ARG(a, cl_int, s->window_right);
    CLATTN_ARG(a, cl_float, (float)(s->softcap * CLATTN_LOG2E));
    CLATTN_ARG(a, cl_mem, s->has_alibi ? bf->alibi_slopes : bf->q);
    CLATTN_ARG(a, cl_mem, s->has_mask ? bf->mask : bf->q);
    CLATTN_ARG(a, cl_long, s->mask.batch);
    CLATTN_ARG(a, cl_long, s->mask.head);
    CLATTN_ARG(a, cl_long, s->mask.seq);
    CLATTN_ARG(a, cl_mem, s->has_sinks ? bf->sinks : bf->q);
    CLATTN_ARG(a, cl_mem, s->has_seqused_k ? bf->seqused_k : bf->q);
    CLATTN_ARG(a, cl_mem, s->varlen ? bf->cu_seqlens_q : bf->q);
    CLATTN_ARG(a, cl_mem, s->varlen && !s->paged ? bf->cu_seqlens_k : bf->q);
    CLATTN_ARG(a, cl_int, s->total_q);
    CLATTN_ARG(a, cl_int, s->total_k);
    CLATTN_ARG(a, cl_int, f->nsplit);
    CLATTN_ARG(a, cl_int, f->split_len);
    CLATTN_ARG(a, cl_long, (cl_long)f->rows_total);
    CLATTN_ARG(a, cl_mem, kt ? kt : bf->q);
    CLATTN_ARG(a, cl_long, (cl_long)f->kt_ld);
    CLATTN_ARG(a, cl_mem, s->paged ? bf->block_table : bf->q);
    CLATTN_ARG(a, cl_int, s->page_size);
    CLATTN_ARG(a, cl_int, s->pages_per_seq);
    CLATTN_ARG(a, cl_int, s->num_pages);
    CLATTN_ARG(a, cl_int, s->seq_new);
}

static const char *dtype_name(clattn_dtype t)
{
    return t == CLATTN_DTYPE_F32 ? "f32" : t == CLATTN_DTYPE_F16 ? "f16" : "bf16";
}

static clattn_status prepare(clattn_plan *p, const clattn_tuning *given)
{
    clattn_context *ctx = p->ctx;
    const clattn_shape *s = &p->shape;
    fused *f = clattn__calloc(ctx, 1, sizeof *f);
    if (!f) return clattn__fail(ctx, CLATTN_OUT_OF_HOST_MEMORY, "out of host memory for a plan");
    p->state = f;
    char why[192];
    if (!(f->family = clattn__tuning_pick_family(ctx, s, why, sizeof why)))
        return clattn__fail(ctx, CLATTN_UNSUPPORTED, "fused: %s", why);
    /* `given` was checked against this family when the plan was made (plan.c) */
    clattn_tuning t;
    p->tuning_source = clattn__tuning_lookup(ctx, f->family, s, given, &t);
    p->family = f->family->id;
    clattn_fwd_fit *fit = &f->fit;
    f->family->choose(&ctx->info, s, &t, fit);
    p->tuning = t;
    p->tuning.rows = fit->rows;
    p->tuning.keys = fit->keys;
    p->tuning.vector_width = fit->vector_width;
    p->tuning.group_size = (int)fit->local_size;
    p->tuning.threads_per_row = fit->threads_per_row;

    f->rows_total = clattn__rows_total(s);
    f->nsplit = choose_splits(ctx, s, f->rows_total, fit->rows, t.split_units);
    if (f->nsplit > 1) {
        const int per = (s->seq_kv + f->nsplit - 1) / f->nsplit;
        f->split_len = (per + fit->keys - 1) / fit->keys * fit->keys;
        f->nsplit = (s->seq_kv + f->split_len - 1) / f->split_len; /* no empty tail split */
    }
    const bool split = f->nsplit > 1;
    /* K transposed once per call (a pass over K, next to Nq/BM passes of the kernel over it)
     * makes each column of 16 keys one vector load. Prefill only, and not with splits (the
     * scratch holds their partials); the transpose's 3rd dimension holds batch x KV heads. */
    f->kt = fit->kt_capable && s->seq_q > CLATTN_DECODE_MAX_ROWS && !split && !s->paged &&
            (long)(s->varlen ? 1 : s->batch) * s->heads_kv <= CLATTN_GRID_MAX;
    f->kt_ld = f->kt ? ((long)(s->varlen ? s->total_k : s->seq_kv) + 15) / 16 * 16 : 0; /* whole blocks of 16 */

    const clattn_switches sw = clattn__switches(s);
    const int d = s->head_dim, dv = s->head_dim_v;
    clattn_kernel_spec *k = &f->fwd_spec;
    k->file = f->family->fwd_file;
    k->function = f->family->fwd_function;
    k->local_size = fit->local_size;
    char params[256], own[64] = "", own_name[64] = ""; /* the family's own options; in the name without "-D " */
    if (f->family->fwd_options) f->family->fwd_options(&ctx->info, s, own, sizeof own);
    for (size_t i = 0, n = 0; own[i] && n + 1 < sizeof own_name; i++)
        if (strncmp(own + i, "-D ", 3)) own_name[n++] = own[i];
        else i += 2;
    /* the family's KV heads per work-item (family.h) */
    char hg[16] = "";
    if (fit->heads_per_item > 1) clattn__format(hg, sizeof hg, " -D HG=%d", fit->heads_per_item);
    clattn__format(params, sizeof params, "-cl-mad-enable -D D=%d -D DV=%d -D VW=%d -D BM=%d -D BN=%d -D TPR=%d "
                   "-D SPLIT=%d -D KT=%d%s%s%s", d, dv, fit->vector_width, fit->rows, fit->keys, fit->threads_per_row,
                   split, f->kt, own[0] ? " " : "", own, hg);
    clattn__kernel_options(k, params, &sw);
    clattn__format(k->name, sizeof k->name, "%s D=%d DV=%d VW=%d BM=%d BN=%d TPR=%d WG=%zu%s%s%s%s %s splits=%d",
                   f->family->name, d, dv, fit->vector_width, fit->rows, fit->keys, fit->threads_per_row,
                   fit->local_size, f->kt ? " KT" : "", hg[0] ? hg + 3 : "", own_name[0] ? " " : "", own_name,
                   dtype_name(s->dtype), f->nsplit);
    clattn__format(p->variant, sizeof p->variant, "%s", k->name);
    clattn_args count = {0};
    const clattn_buffers none = {0};
    fwd_args(&count, p, f, &none, NULL, NULL, 0, NULL);
    k->num_args = count.n;

    p->scratch_bytes = 0;
    bool fits = true;
    if (split) { /* partials: o (nsplit, rows_total, dv) and lse (nsplit, rows_total), f32 */
        fits = clattn__product(&p->scratch_bytes, (size_t)f->nsplit, f->rows_total, (size_t)dv + 1, sizeof(float));
        clattn__combine_spec(&f->combine_spec, dv, &sw);
    } else if (f->kt) {
        size_t tensors;
        fits = clattn__product(&tensors, (size_t)(s->varlen ? 1 : s->batch), (size_t)s->heads_kv, (size_t)d, 1) &&
               clattn__product(&p->scratch_bytes, tensors, (size_t)f->kt_ld, sizeof(float), 1);
        clattn__transpose_spec(&f->transpose_spec, &sw);
    }
    if (fits && s->rotary_dim) { /* q rotated, with q's strides, after the partials (4-byte aligned) */
        clattn_tensor_sizes need;
        const size_t es = clattn_dtype_size(s->dtype);
        clattn__sizes(s, &need);
        f->q_rot = p->scratch_bytes / es;
        fits = !__builtin_mul_overflow(need.q, es, &need.q) &&
               !__builtin_add_overflow(p->scratch_bytes, need.q, &p->scratch_bytes);
    }
    if (!fits)
        return clattn__fail(ctx, CLATTN_SIZE_OVERFLOW, "%s: its scratch (%d splits of %zu rows, K transposed or q "
                            "rotated) overflows size_t", p->variant, f->nsplit, f->rows_total);
    for (int w = 0; w < CLATTN_PAGED_GATHER; w++)
        if (clattn__paged_needs(s, (clattn_paged_kernel)w)) clattn__paged_spec(&f->paged_spec[w], w, s);
    return CLATTN_SUCCESS;
}

static clattn_status build(clattn_plan *p)
{
    fused *f = p->state;
    clattn_status st = clattn__make_kernel(p->ctx, &f->fwd_spec, &f->fwd);
    if (!st && f->nsplit > 1) st = clattn__make_kernel(p->ctx, &f->combine_spec, &f->combine);
    if (!st && f->kt) st = clattn__make_kernel(p->ctx, &f->transpose_spec, &f->transpose);
    for (int w = 0; w < CLATTN_PAGED_GATHER && !st; w++)
        if (clattn__paged_needs(&p->shape, (clattn_paged_kernel)w))
            st = clattn__make_kernel(p->ctx, &f->paged_spec[w], &f->paged[w]);
    return st;
}

/* The append, then q's rotation, each after the one before (and the wait list); *last is the
 * event of the last one enqueued (NULL when none is). */
static clattn_status paged_first(const clattn_plan *p, const clattn_launch *l, cl_event *last)
{
    const fused *f = p->state;
    const clattn_paged_call c = {&p->shape, l->buffers, l->scratch, f->q_rot, 0, 0};
    cl_uint num_wait = l->num_wait;
    const cl_event *wait = l->wait;
    *last = NULL;
    for (int w = 0; w < CLATTN_PAGED_GATHER; w++) {
        if (!f->paged[w]) continue;
        cl_event ev = NULL;
        const cl_int e = clattn__paged_enqueue(p->ctx, l->queue, f->paged[w], (clattn_paged_kernel)w, &c, num_wait,
                                               wait, &ev);
        if (*last) clReleaseEvent(*last);
        *last = ev;
        if (e) return clattn__fail(p->ctx, e, "enqueueing the paged cache's %s failed (%d)", f->paged_spec[w].name, e);
        num_wait = 1;
        wait = last;
    }
    return CLATTN_SUCCESS;
}

static clattn_status enqueue(const clattn_plan *p, const clattn_launch *l)
{
    const clattn_shape *s = &p->shape;
    const fused *f = p->state;
    clattn_buffers in = *l->buffers; /* q read from its rotated copy when there is one */
    const clattn_buffers *bf = &in;
    if (s->rotary_dim) {
        in.q = l->scratch;
        in.q_offset = f->q_rot;
    }
    const bool split = f->nsplit > 1;
    const size_t part_lse = (size_t)f->nsplit * f->rows_total * (size_t)s->head_dim_v; /* lse after o */
    clattn_args a = {f->fwd, 0, CL_SUCCESS};
    if (split) fwd_args(&a, p, f, bf, l->scratch, l->scratch, part_lse, NULL);
    else fwd_args(&a, p, f, bf, bf->o, bf->lse, bf->lse_offset, f->kt ? l->scratch : NULL);
    if (a.err) return clattn__fail(p->ctx, a.err, "clSetKernelArg failed (%d) for %s", a.err, p->variant);

    /* The paged cache's append and q's rotation first, or K transposed first; the forward
     * waits on them (out-of-order queues too) */
    cl_uint num_wait = l->num_wait;
    const cl_event *wait = l->wait;
    cl_event tr = NULL;
    clattn_status st = paged_first(p, l, &tr);
    if (st) {
        if (tr) clReleaseEvent(tr);
        return st;
    }
    if (tr) {
        num_wait = 1;
        wait = &tr;
    }
    if (f->kt) {
        const clattn_transpose_call t = {bf->k, bf->k_offset, s->k, s->heads_kv, s->varlen ? s->total_k : s->seq_kv,
                                         l->scratch, 0, f->kt_ld};
        cl_int e = clattn__transpose_enqueue(p->ctx, l->queue, f->transpose, &t, s->head_dim, s->varlen ? 1 : s->batch,
                                             num_wait, wait, &tr);
        if (e) return clattn__fail(p->ctx, e, "enqueueing the K transpose failed (%d)", e);
        num_wait = 1;
        wait = &tr;
    }

    /* Packed rows per KV head: group query heads x the longest sequence. */
    const size_t rows = (size_t)s->group * (size_t)s->seq_q;
    const size_t blocks = (rows + f->fit.rows - 1) / f->fit.rows * (size_t)f->nsplit;
    const size_t wg = f->fit.local_size;
    /* a work-group per block; or a work-item per block, padded to whole groups (the kernel
     * returns for blocks past the end) */
    const size_t g0 = f->fit.group_per_block ? blocks * wg : wg ? (blocks + wg - 1) / wg * wg : blocks;
    size_t global[3] = {g0, (size_t)s->heads_kv / f->fit.heads_per_item, (size_t)s->batch};
    size_t local[3] = {wg, 1, 1};
    cl_event fwd = NULL;
    cl_int e = clattn__enqueue(p->ctx, l->queue, f->fwd, 3, global, wg ? local : NULL,
                               num_wait, wait, split ? &fwd : l->event);
    if (tr) clReleaseEvent(tr);
    if (e) return clattn__fail(p->ctx, e, "clEnqueueNDRangeKernel failed (%d) for %s", e, p->variant);
    if (!split) return CLATTN_SUCCESS;

    /* The combine waits on the forward's event, so out-of-order queues are served too; its
     * event is the one returned, and it completes after both. */
    const clattn_combine_call c = {.o_parts = l->scratch, .lse_parts = l->scratch, .lse_parts_off = part_lse,
                                   .n_parts = f->nsplit, .rows_total = f->rows_total, .o = bf->o,
                                   .o_off = bf->o_offset, .o_strides = s->o, .lse = bf->lse,
                                   .lse_off = bf->lse_offset, .heads_q = s->heads_q, .seq_q = s->seq_q,
                                   .total_q = s->total_q, .batch = s->batch, .sinks = s->has_sinks ? bf->sinks : NULL,
                                   .cu_seqlens_q = s->varlen ? bf->cu_seqlens_q : NULL};
    a = (clattn_args){f->combine, 0, CL_SUCCESS};
    clattn__combine_args(&a, &c);
    e = a.err;
    if (!e) e = clattn__enqueue(p->ctx, l->queue, f->combine, 1, &f->rows_total, NULL, 1, &fwd, l->event);
    clReleaseEvent(fwd);
    if (e) return clattn__fail(p->ctx, e, "enqueueing the combine kernel failed (%d)", e);
    return CLATTN_SUCCESS;
}

static void release(clattn_plan *p)
{
    fused *f = p->state;
    if (!f) return;
    clattn__release_kernel(p->ctx, f->fwd);
    clattn__release_kernel(p->ctx, f->combine);
    clattn__release_kernel(p->ctx, f->transpose);
    for (int w = 0; w < CLATTN_PAGED_KERNELS; w++) clattn__release_kernel(p->ctx, f->paged[w]);
    free(f);
    p->state = NULL;
}

const clattn_path clattn__path_fused = {
    .name = "fused",
    .algo = CLATTN_ALGO_FUSED,
    .pass = CLATTN_PASS_FORWARD,
    .supports = supports,
    .prepare = prepare,
    .build = build,
    .enqueue = enqueue,
    .release = release,
};
