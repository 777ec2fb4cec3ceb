/* The fused path: picks the kernel variant for a shape on a device and enqueues it. */
#include "internal.h"

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

void clattn__fused_choose(const clattn_context *ctx, const clattn_shape *s, clattn_variant *v)
{
    const int d = s->head_dim, dv = s->head_dim_v;
    if (ctx->family == CLATTN_KERNELS_ROWS) {
        /* 4 rows x 16 keys per work-item with 16-wide vectors filled AVX-512 lanes best in the
         * first measurements on PoCL (Zen 4). */
        const int bm = 4, bn = 16, vw = vector_width(d, dv, 16);
        v->source_name = "fwd_rows";
        v->kernel_name = "clattn_fwd_rows";
        v->rows = bm;
        v->local_size = 0;
        v->local_mem = 0;
        clattn__format(v->options, sizeof v->options,
                       "-cl-std=CL1.2 -cl-mad-enable -D D=%d -D DV=%d -D VW=%d -D BM=%d -D BN=%d", d, dv, vw, bm, bn);
        clattn__format(v->name, sizeof v->name, "rows D=%d DV=%d VW=%d BM=%d BN=%d", d, dv, vw, bm, bn);
        return;
    }
    /* Tiles: 64 rows per work-group (two NVIDIA warps, one AMD wave64), the largest key tile
     * that fits the local-memory budget, at most 32 keys (the score row lives in registers). */
    int bm = 64;
    while ((size_t)bm > ctx->info.max_wg_size && bm > 1) bm /= 2;
    int bn = 32;
    while (bn > 1 && (size_t)(d + dv) * bn * 4 > local_budget(ctx)) bn /= 2;
    const int vw = vector_width(d, dv, 4);
    v->source_name = "fwd_tiles";
    v->kernel_name = "clattn_fwd_tiles";
    v->rows = bm;
    v->local_size = (size_t)bm;
    v->local_mem = (size_t)(d + dv) * bn * 4;
    clattn__format(v->options, sizeof v->options,
                   "-cl-std=CL1.2 -cl-mad-enable -D D=%d -D DV=%d -D VW=%d -D BM=%d -D BN=%d", d, dv, vw, bm, bn);
    clattn__format(v->name, sizeof v->name, "tiles D=%d DV=%d VW=%d BM=%d BN=%d", d, dv, vw, bm, bn);
}

bool clattn__fused_supports(const clattn_context *ctx, const clattn_shape *s, char *why,
                            size_t why_size)
{
    const char *missing = NULL;
    if (s->dtype != CLATTN_DTYPE_F32) missing = "f16/bf16 storage";
    else if (s->has_mask) missing = "an additive mask";
    else if (s->has_alibi) missing = "ALiBi";
    else if (s->has_sinks) missing = "attention sinks";
    else if (s->softcap > 0) missing = "softcap";
    else if (s->has_seqlens_k) missing = "per-sequence key lengths";
    if (missing) {
        clattn__format(why, why_size, "%s is not supported by the fused path yet", missing);
        return false;
    }
    if (s->head_dim > 256 || s->head_dim_v > 256) {
        clattn__format(why, why_size, "head dims above 256 (got %d/%d) are not supported by the fused path",
                       s->head_dim, s->head_dim_v);
        return false;
    }
    if (ctx->family == CLATTN_KERNELS_TILES && (size_t)(s->head_dim + s->head_dim_v) * 4 > local_budget(ctx)) {
        clattn__format(why, why_size, "head dims %d/%d need more local memory than the device has",
                       s->head_dim, s->head_dim_v);
        return false;
    }
    clattn__format(why, why_size, "fused kernel serves this descriptor");
    return true;
}

#define ARG(T, x)                                                            \
    do {                                                                     \
        T val_ = (x);                                                        \
        if (!e) e = clSetKernelArg(kernel, n, sizeof val_, &val_);           \
        n++;                                                                 \
    } while (0)

clattn_status clattn__fused_enqueue(const clattn_plan *plan, cl_kernel kernel, cl_command_queue queue,
                                    const clattn_buffers *bf, cl_uint num_wait,
                                    const cl_event *wait, cl_event *event)
{
    const clattn_shape *s = &plan->shape;
    cl_int e = CL_SUCCESS;
    cl_uint n = 0;
    cl_mem lse = bf->lse ? bf->lse : bf->o; /* any valid buffer; never written without lse */
    ARG(cl_mem, bf->q);
    ARG(cl_mem, bf->k);
    ARG(cl_mem, bf->v);
    ARG(cl_mem, bf->o);
    ARG(cl_mem, lse);
    const clattn_strides *st[4] = {&s->q, &s->k, &s->v, &s->o};
    const size_t offs[4] = {bf->q_offset, bf->k_offset, bf->v_offset, bf->o_offset};
    for (int i = 0; i < 4; i++) {
        ARG(cl_ulong, (cl_ulong)offs[i]);
        ARG(cl_long, st[i]->batch);
        ARG(cl_long, st[i]->head);
        ARG(cl_long, st[i]->seq);
    }
    ARG(cl_ulong, (cl_ulong)bf->lse_offset);
    ARG(cl_int, bf->lse != NULL);
    ARG(cl_int, s->seq_q);
    ARG(cl_int, s->seq_kv);
    ARG(cl_int, s->heads_q);
    ARG(cl_int, s->group);
    ARG(cl_float, (float)(s->scale * 1.4426950408889634));
    ARG(cl_int, s->top_left);
    ARG(cl_int, s->window_left);
    ARG(cl_int, s->window_right);
    if (e) return clattn__fail(plan->ctx, e, "clSetKernelArg failed (%d) for %s", e, plan->variant.name);

    const size_t blocks = ((size_t)s->seq_q + plan->variant.rows - 1) / plan->variant.rows;
    const size_t wg = plan->variant.local_size;
    size_t global[3] = {wg ? blocks * wg : blocks, (size_t)s->heads_q, (size_t)s->batch};
    size_t local[3] = {wg, 1, 1};
    e = clEnqueueNDRangeKernel(queue, kernel, 3, NULL, global, wg ? local : NULL, num_wait,
                               num_wait ? wait : NULL, event);
    if (e) return clattn__fail(plan->ctx, e, "clEnqueueNDRangeKernel failed (%d) for %s", e, plan->variant.name);
    return CLATTN_SUCCESS;
}
