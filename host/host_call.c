/* The host-array convenience call: upload, plan, execute, download, release. */
#include "abi.h"
#include "diag.h"
#include "fault.h"
#include "shape.h"

#include <string.h>

clattn_status clattn_forward_host(clattn_context *ctx, const clattn_desc *desc, const clattn_host_tensors *caller)
{
    if (!ctx) return CLATTN_INVALID_ARGUMENT;
    char msg[512];
    clattn_shape s;
    clattn_status st = clattn__resolve(desc, &s, msg, sizeof msg);
    if (st) return clattn__fail(ctx, st, "%s", msg);
    if (!caller) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "tensors is NULL");
    clattn_host_tensors copy;
    if ((st = clattn__struct_in(&copy, sizeof copy, caller, "clattn_host_tensors", msg, sizeof msg)))
        return clattn__fail(ctx, st, "%s", msg);
    const clattn_host_tensors *t = &copy;

    clattn_tensor_sizes need;
    clattn__sizes(&s, &need);
    const size_t es = clattn_dtype_size(s.dtype);
    /* every tensor must fit one device allocation, checked before anything is created */
    const struct { const char *name; size_t bytes; } sizes[] = {
        {"q", need.q * es}, {"k", need.k * es}, {"v", need.v * es}, {"o", need.o * es}, {"mask", need.mask * 4}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].bytes > ctx->info.max_alloc)
            return clattn__fail(ctx, CLATTN_SIZE_OVERFLOW, "%s needs %zu bytes, above the device's max allocation %llu",
                                sizes[i].name, sizes[i].bytes, (unsigned long long)ctx->info.max_alloc);
    if ((st = clattn__check_host(&s, t, msg, sizeof msg))) return clattn__fail(ctx, st, "%s", msg);

    clattn_plan *plan = NULL;
    if ((st = clattn_plan_create(ctx, desc, &plan))) return st;

    cl_int e = CL_SUCCESS;
    cl_command_queue queue = clCreateCommandQueue(ctx->cl_ctx, ctx->device, 0, &e);
    clattn_buffers bf = CLATTN_BUFFERS_INIT;
    const cl_mem_flags in = CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR;
    if (!e) bf.q = clattn__create_buffer(ctx, in, need.q * es, (void *)t->q, &e);
    if (!e) bf.k = clattn__create_buffer(ctx, in, need.k * es, (void *)t->k, &e);
    if (!e) bf.v = clattn__create_buffer(ctx, in, need.v * es, (void *)t->v, &e);
    /* o starts as the caller's contents, so elements a strided view skips are kept. */
    if (!e) bf.o = clattn__create_buffer(ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, need.o * es, t->o, &e);
    if (!e && t->lse) bf.lse = clattn__create_buffer(ctx, CL_MEM_WRITE_ONLY, need.lse * sizeof(float), NULL, &e);
    /* the feature tensors the descriptor asks for */
    const size_t hq = (size_t)s.heads_q, nb = (size_t)s.batch;
    if (!e && s.has_mask) bf.mask = clattn__create_buffer(ctx, in, need.mask * 4, (void *)t->mask, &e);
    if (!e && s.has_alibi) bf.alibi_slopes = clattn__create_buffer(ctx, in, hq * 4, (void *)t->alibi_slopes, &e);
    if (!e && s.has_sinks) bf.sinks = clattn__create_buffer(ctx, in, hq * 4, (void *)t->sinks, &e);
    if (!e && s.has_seqused_k) bf.seqused_k = clattn__create_buffer(ctx, in, nb * 4, (void *)t->seqused_k, &e);
    if (!e && s.varlen) bf.cu_seqlens_q = clattn__create_buffer(ctx, in, (nb + 1) * 4, (void *)t->cu_seqlens_q, &e);
    if (!e && s.varlen) bf.cu_seqlens_k = clattn__create_buffer(ctx, in, (nb + 1) * 4, (void *)t->cu_seqlens_k, &e);
    if (e) {
        st = clattn__fail(ctx, e, "creating the queue or buffers failed (%d)", e);
        goto done;
    }
    cl_event done_ev = NULL;
    if ((st = clattn_plan_execute(plan, queue, &bf, 0, NULL, &done_ev))) goto done;
    e = clEnqueueReadBuffer(queue, bf.o, CL_TRUE, 0, need.o * es, t->o, 1, &done_ev, NULL);
    if (!e && t->lse)
        e = clEnqueueReadBuffer(queue, bf.lse, CL_TRUE, 0, need.lse * sizeof(float), t->lse, 1, &done_ev, NULL);
    clReleaseEvent(done_ev);
    if (e) st = clattn__fail(ctx, e, "reading results back failed (%d)", e);
done:
    clattn__release_buffer(ctx, bf.q);
    clattn__release_buffer(ctx, bf.k);
    clattn__release_buffer(ctx, bf.v);
    clattn__release_buffer(ctx, bf.o);
    clattn__release_buffer(ctx, bf.lse);
    clattn__release_buffer(ctx, bf.mask);
    clattn__release_buffer(ctx, bf.alibi_slopes);
    clattn__release_buffer(ctx, bf.sinks);
    clattn__release_buffer(ctx, bf.seqused_k);
    clattn__release_buffer(ctx, bf.cu_seqlens_q);
    clattn__release_buffer(ctx, bf.cu_seqlens_k);
    if (queue) clReleaseCommandQueue(queue);
    clattn_plan_destroy(plan);
    return st;
}
