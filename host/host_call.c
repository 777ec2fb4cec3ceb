/* The host-array calls: upload, plan, execute, download, release; for the forward and the
 * backward pass. */
#include "abi.h"
#include "diag.h"
#include "fault.h"
#include "shape.h"

#include <string.h>

/* One tensor between host and device: where its buffer goes in clattn_buffers, its host
 * array, its bytes, and whether it is uploaded, read back, or both (a strided output keeps
 * the caller's elements its view skips, so it is uploaded too). */
typedef struct transfer {
    cl_mem *slot;
    void *host;
    size_t bytes;
    bool upload, download;
    void *out;    /* where a download goes when not back into `host` (updated paged caches) */
    bool written; /* the device writes it even when it is not read back (a paged append) */
} transfer;

static clattn_status run(clattn_context *ctx, const clattn_desc *desc, const clattn_host_tensors *caller,
                         clattn_pass pass)
{
    if (!ctx) return CLATTN_INVALID_ARGUMENT;
    char msg[512];
    clattn_shape s;
    clattn_status st = clattn__resolve_pass(desc, pass, &s, msg, sizeof msg);
    if (st) return clattn__fail(ctx, st, "%s", msg);
    if (!caller) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "tensors is NULL");
    clattn_host_tensors copy;
    if ((st = clattn__struct_in(&copy, sizeof copy, caller, "clattn_host_tensors", msg, sizeof msg)))
        return clattn__fail(ctx, st, "%s", msg);
    const clattn_host_tensors *t = &copy;
    clattn_desc plan_desc; /* the caller's descriptor at this library's size, for this pass */
    if ((st = clattn__struct_in(&plan_desc, sizeof plan_desc, desc, "clattn_desc", msg, sizeof msg)))
        return clattn__fail(ctx, st, "%s", msg);
    plan_desc.pass = pass;
    const bool fwd = pass == CLATTN_PASS_FORWARD;

    clattn_tensor_sizes need;
    clattn__sizes(&s, &need);
    const size_t es = clattn_dtype_size(s.dtype), hq = (size_t)s.heads_q, nb = (size_t)s.batch;
    clattn_buffers bf = CLATTN_BUFFERS_INIT;
    const transfer x[] = {
        {&bf.q, (void *)t->q, need.q * es, true, false},
        {&bf.k, (void *)t->k, need.k * es, true, s.seq_new && t->k_cache_out, t->k_cache_out, s.seq_new},
        {&bf.v, (void *)t->v, need.v * es, true, s.seq_new && t->v_cache_out, t->v_cache_out, s.seq_new},
        {&bf.o, t->o, need.o * es, true, fwd},
        {&bf.lse, t->lse, t->lse ? need.lse * 4 : 0, !fwd, fwd},
        {&bf.mask, (void *)t->mask, s.has_mask ? need.mask * 4 : 0, true, false},
        {&bf.alibi_slopes, (void *)t->alibi_slopes, s.has_alibi ? hq * 4 : 0, true, false},
        {&bf.sinks, (void *)t->sinks, s.has_sinks ? hq * 4 : 0, true, false},
        {&bf.seqused_k, (void *)t->seqused_k, s.has_seqused_k ? nb * 4 : 0, true, false},
        {&bf.cu_seqlens_q, (void *)t->cu_seqlens_q, s.varlen ? (nb + 1) * 4 : 0, true, false},
        {&bf.cu_seqlens_k, (void *)t->cu_seqlens_k, s.varlen && !s.paged ? (nb + 1) * 4 : 0, true, false},
        {&bf.d_o, (void *)t->d_o, fwd ? 0 : need.o * es, true, false},
        {&bf.dq, t->dq, fwd ? 0 : need.q * es, true, true},
        {&bf.dk, t->dk, fwd ? 0 : need.k * es, true, true},
        {&bf.dv, t->dv, fwd ? 0 : need.v * es, true, true},
        {&bf.dsinks, t->dsinks, !fwd && s.has_sinks ? hq * 4 : 0, false, true},
        {&bf.block_table, (void *)t->block_table, s.paged ? need.block_table * 4 : 0, true, false},
        {&bf.k_new, (void *)t->k_new, need.k_new * es, true, false},
        {&bf.v_new, (void *)t->v_new, need.v_new * es, true, false},
        {&bf.rotary_cos, (void *)t->rotary_cos, need.rotary * 4, true, false},
        {&bf.rotary_sin, (void *)t->rotary_sin, need.rotary * 4, true, false},
    };
    const size_t n = sizeof x / sizeof x[0];
    /* every tensor must fit one device allocation, checked before anything is created */
    static const char *names[] = {"q", "k", "v", "o", "lse", "mask", "alibi_slopes", "sinks", "seqused_k",
                                  "cu_seqlens_q", "cu_seqlens_k", "d_o", "dq", "dk", "dv", "dsinks",
                                  "block_table", "k_new", "v_new", "rotary_cos", "rotary_sin"};
    for (size_t i = 0; i < n; i++)
        if (x[i].bytes > ctx->info.max_alloc)
            return clattn__fail(ctx, CLATTN_SIZE_OVERFLOW, "%s needs %zu bytes, above the device's max allocation %llu",
                                names[i], x[i].bytes, (unsigned long long)ctx->info.max_alloc);
    const clattn_host_use use = fwd ? CLATTN_HOST_FORWARD : CLATTN_HOST_BACKWARD;
    if ((st = clattn__check_host(&s, t, use, msg, sizeof msg))) return clattn__fail(ctx, st, "%s", msg);

    clattn_plan *plan = NULL;
    if ((st = clattn_plan_create(ctx, &plan_desc, &plan))) return st;
    cl_int e = CL_SUCCESS;
    cl_command_queue queue = clCreateCommandQueue(ctx->cl_ctx, ctx->device, 0, &e);
    for (size_t i = 0; i < n && !e; i++) {
        if (!x[i].bytes || !x[i].host) continue;
        const cl_mem_flags flags = (x[i].download || x[i].written ? CL_MEM_READ_WRITE : CL_MEM_READ_ONLY) |
                                   (x[i].upload ? CL_MEM_COPY_HOST_PTR : 0);
        *x[i].slot = clattn__create_buffer(ctx, flags, x[i].bytes, x[i].upload ? x[i].host : NULL, &e);
    }
    if (e) {
        st = clattn__fail(ctx, e, "creating the queue or buffers failed (%d)", e);
        goto done;
    }
    cl_event done_ev = NULL;
    if ((st = clattn_plan_execute(plan, queue, &bf, 0, NULL, &done_ev))) goto done;
    for (size_t i = 0; i < n && !e; i++)
        if (x[i].download && x[i].bytes && x[i].host)
            e = clEnqueueReadBuffer(queue, *x[i].slot, CL_TRUE, 0, x[i].bytes, x[i].out ? x[i].out : x[i].host, 1,
                                    &done_ev, NULL);
    clReleaseEvent(done_ev);
    if (e) st = clattn__fail(ctx, e, "reading results back failed (%d)", e);
done:
    for (size_t i = 0; i < n; i++) clattn__release_buffer(ctx, *x[i].slot);
    if (queue) clReleaseCommandQueue(queue);
    clattn_plan_destroy(plan);
    return st;
}

clattn_status clattn_forward_host(clattn_context *ctx, const clattn_desc *desc, const clattn_host_tensors *t)
{
    return run(ctx, desc, t, CLATTN_PASS_FORWARD);
}

clattn_status clattn_backward_host(clattn_context *ctx, const clattn_desc *desc, const clattn_host_tensors *t)
{
    return run(ctx, desc, t, CLATTN_PASS_BACKWARD);
}
