/* Plans: a descriptor checked against a device, its algorithm and kernel variants chosen and
 * built once; execution validates the buffers and enqueues. */
#include "fault.h"

#include <stdlib.h>
#include <string.h>

/* Builds (or finds) the variant's program and creates its kernel; refuses a variant whose
 * work-group or local memory does not fit the compiled kernel on this device. */
clattn_status clattn__make_kernel(clattn_context *ctx, const clattn_variant *v, const char *name, cl_kernel *out)
{
    cl_program prog;
    clattn_status st = clattn__get_program(ctx, v, &prog);
    if (st) return st;
    cl_int e;
    cl_kernel k = clattn__create_kernel(ctx, prog, name, &e);
    if (e) return clattn__fail(ctx, e, "clCreateKernel(%s) failed (%d)", name, e);
    size_t wg = 0;
    cl_ulong priv = 0, local_mem = 0;
    e = clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
    if (!e) e = clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_PRIVATE_MEM_SIZE, sizeof priv, &priv, NULL);
    if (!e) e = clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_LOCAL_MEM_SIZE, sizeof local_mem, &local_mem, NULL);
    if (e) st = clattn__fail(ctx, e, "clGetKernelWorkGroupInfo failed (%d)", e);
    else if (v->local_size > wg)
        st = clattn__fail(ctx, CLATTN_UNSUPPORTED, "variant %s needs %zu work-items, the kernel allows %zu", v->name,
                          v->local_size, wg);
    else if (local_mem > ctx->info.local_mem)
        st = clattn__fail(ctx, CLATTN_UNSUPPORTED, "variant %s needs %llu bytes of local memory, device has %llu",
                          v->name, (unsigned long long)local_mem, (unsigned long long)ctx->info.local_mem);
    if (st) {
        clattn__release_kernel(ctx, k);
        return st;
    }
    clattn__logf(ctx, "clattn: kernel %s (%s), private memory %llu bytes", name, v->name, (unsigned long long)priv);
    *out = k;
    return CLATTN_SUCCESS;
}

clattn_status clattn_plan_create(clattn_context *ctx, const clattn_desc *desc, clattn_plan **out)
{
    return clattn_plan_create_tuned(ctx, desc, NULL, out);
}

clattn_status clattn_plan_create_tuned(clattn_context *ctx, const clattn_desc *desc, const clattn_tuning *tuning,
                                       clattn_plan **out)
{
    if (!out) return ctx ? clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "out is NULL") : CLATTN_INVALID_ARGUMENT;
    *out = NULL;
    if (!ctx) return CLATTN_INVALID_ARGUMENT;
    char msg[512];
    clattn_shape s;
    clattn_status st = clattn__resolve(desc, &s, msg, sizeof msg);
    if (st) return clattn__fail(ctx, st, "%s", msg);
    if (tuning && !clattn__tuning_valid(ctx, ctx->family, tuning, msg, sizeof msg))
        return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "%s", msg);

    /* One capability check per path serves dispatch, `clattn run -v` and the tests. */
    char fwhy[192], uwhy[192];
    const bool fused_ok = clattn__fused_supports(ctx, &s, fwhy, sizeof fwhy);
    const bool unfused_ok = clattn__unfused_supports(ctx, &s, uwhy, sizeof uwhy);
    clattn_algo algo;
    char reason[384];
    if (s.algo == CLATTN_ALGO_FUSED) {
        if (!fused_ok) return clattn__fail(ctx, CLATTN_UNSUPPORTED, "fused: %s", fwhy);
        algo = CLATTN_ALGO_FUSED;
        clattn__format(reason, sizeof reason, "fused: forced by the descriptor");
    } else if (s.algo == CLATTN_ALGO_UNFUSED) {
        if (!unfused_ok) return clattn__fail(ctx, CLATTN_UNSUPPORTED, "unfused: %s", uwhy);
        algo = CLATTN_ALGO_UNFUSED;
        clattn__format(reason, sizeof reason, "unfused: forced by the descriptor");
    } else if (fused_ok) {
        algo = CLATTN_ALGO_FUSED;
        clattn__format(reason, sizeof reason, "auto: fused, %s", fwhy);
    } else if (unfused_ok) {
        algo = CLATTN_ALGO_UNFUSED;
        clattn__format(reason, sizeof reason, "auto: unfused, because %s", fwhy);
    } else {
        return clattn__fail(ctx, CLATTN_UNSUPPORTED, "no path serves this descriptor: fused: %s; unfused: %s", fwhy,
                            uwhy);
    }

    clattn_plan *p = clattn__calloc(ctx, 1, sizeof *p);
    if (!p) return clattn__fail(ctx, CLATTN_OUT_OF_HOST_MEMORY, "out of host memory for a plan");
    p->ctx = ctx;
    p->shape = s;
    p->algo = algo;
    clattn__format(p->reason, sizeof p->reason, "%s", reason);
    if (algo == CLATTN_ALGO_FUSED) {
        clattn_tuning t;
        p->tuning_source = clattn__tuning_lookup(ctx, &s, tuning, &t);
        clattn__fused_choose(ctx, &s, &t, p);
    } else {
        p->tuning_source = "";
        clattn__unfused_choose(ctx, &s, p);
    }
    if (p->scratch_bytes > ctx->info.max_alloc) {
        st = clattn__fail(ctx, CLATTN_SIZE_OVERFLOW, "%s needs %zu bytes of scratch, above the device's max allocation %llu",
                          p->variant.name, p->scratch_bytes, (unsigned long long)ctx->info.max_alloc);
        goto fail;
    }
    if ((st = clattn__make_kernel(ctx, &p->variant, p->variant.kernel_name, &p->kernel))) goto fail;
    if ((st = algo == CLATTN_ALGO_FUSED ? clattn__fused_prepare(p) : clattn__unfused_prepare(p))) goto fail;
    if (pthread_mutex_init(&p->lock, NULL)) {
        st = clattn__fail(ctx, CLATTN_INTERNAL_ERROR, "pthread_mutex_init failed");
        goto fail;
    }
    clattn__logf(ctx, "clattn: plan %s (%s)", p->variant.name, p->reason);
    *out = p;
    return CLATTN_SUCCESS;
fail:
    clattn__release_kernel(ctx, p->kernel);
    clattn__release_kernel(ctx, p->kernel2);
    clattn__release_kernel(ctx, p->kernel3);
    free(p);
    return st;
}

void clattn_plan_destroy(clattn_plan *p)
{
    if (!p) return;
    clattn__release_buffer(p->ctx, p->scratch);
    clattn__release_kernel(p->ctx, p->kernel);
    clattn__release_kernel(p->ctx, p->kernel2);
    clattn__release_kernel(p->ctx, p->kernel3);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

clattn_algo clattn_plan_algo(const clattn_plan *p) { return p ? p->algo : CLATTN_ALGO_AUTO; }
const char *clattn_plan_variant(const clattn_plan *p) { return p ? p->variant.name : ""; }
size_t clattn_plan_scratch_size(const clattn_plan *p) { return p ? p->scratch_bytes : 0; }
const char *clattn_plan_reason(const clattn_plan *p) { return p ? p->reason : ""; }

const char *clattn_plan_tuning(const clattn_plan *p, clattn_tuning *out)
{
    if (out) memset(out, 0, sizeof *out);
    if (!p || p->algo != CLATTN_ALGO_FUSED) return "";
    if (out) *out = p->tuning;
    return p->tuning_source;
}

/* The caller's scratch, or the plan's own, allocated at the first execution that needs it
 * (called under the plan lock). */
clattn_status clattn__plan_scratch(clattn_plan *plan, const clattn_buffers *b, cl_mem *out)
{
    if (b->scratch) {
        *out = b->scratch;
        return CLATTN_SUCCESS;
    }
    if (!plan->scratch) {
        cl_int e;
        cl_mem m = clattn__create_buffer(plan->ctx, CL_MEM_READ_WRITE, plan->scratch_bytes, NULL, &e);
        if (e) return clattn__fail(plan->ctx, e, "allocating %zu bytes of scratch failed (%d)", plan->scratch_bytes, e);
        plan->scratch = m;
    }
    *out = plan->scratch;
    return CLATTN_SUCCESS;
}

/* A buffer must exist in the plan's context, hold its tensor past the offset, and be
 * writable if it is an output. */
static clattn_status check_mem(clattn_context *ctx, cl_mem m, const char *name, size_t offset,
                               size_t elems, size_t elem_size, bool output)
{
    if (!m) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "buffer %s is NULL", name);
    size_t size = 0;
    cl_context mctx = NULL;
    cl_mem_flags flags = 0;
    cl_int e = clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (!e) e = clGetMemObjectInfo(m, CL_MEM_CONTEXT, sizeof mctx, &mctx, NULL);
    if (!e) e = clGetMemObjectInfo(m, CL_MEM_FLAGS, sizeof flags, &flags, NULL);
    if (e) return clattn__fail(ctx, e, "buffer %s: clGetMemObjectInfo failed (%d)", name, e);
    if (mctx != ctx->cl_ctx)
        return clattn__fail(ctx, CL_INVALID_CONTEXT, "buffer %s belongs to another cl_context", name);
    if (output && (flags & CL_MEM_READ_ONLY))
        return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "output buffer %s is read-only", name);
    size_t need;
    if (__builtin_add_overflow(offset, elems, &need) || __builtin_mul_overflow(need, elem_size, &need))
        return clattn__fail(ctx, CLATTN_SIZE_OVERFLOW, "buffer %s: offset + size overflows", name);
    if (size < need)
        return clattn__fail(ctx, CLATTN_BUFFER_TOO_SMALL,
                            "buffer %s holds %zu bytes but offset %zu + tensor need %zu bytes", name,
                            size, offset, need);
    return CLATTN_SUCCESS;
}

clattn_status clattn_plan_execute(const clattn_plan *plan, cl_command_queue queue,
                                  const clattn_buffers *bf, cl_uint num_wait,
                                  const cl_event *wait, cl_event *event)
{
    if (!plan) return CLATTN_INVALID_ARGUMENT;
    clattn_context *ctx = plan->ctx;
    if (event) *event = NULL;
    if (!queue) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "queue is NULL");
    if (!bf) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "buffers is NULL");
    if ((num_wait > 0) != (wait != NULL))
        return clattn__fail(ctx, CL_INVALID_EVENT_WAIT_LIST, "num_wait and wait_list disagree");

    cl_context qctx = NULL;
    cl_device_id qdev = NULL;
    cl_int e = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL);
    if (!e) e = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof qdev, &qdev, NULL);
    if (e) return clattn__fail(ctx, e, "clGetCommandQueueInfo failed (%d)", e);
    if (qctx != ctx->cl_ctx || qdev != ctx->device)
        return clattn__fail(ctx, CL_INVALID_COMMAND_QUEUE, "queue belongs to another context or device");

    const clattn_shape *s = &plan->shape;
    clattn_tensor_sizes need;
    clattn_status st = clattn__sizes(s, &need);
    if (st) return clattn__fail(ctx, st, "tensor sizes overflow");
    const size_t es = clattn_dtype_size(s->dtype);
    if ((st = check_mem(ctx, bf->q, "q", bf->q_offset, need.q, es, false)) ||
        (st = check_mem(ctx, bf->k, "k", bf->k_offset, need.k, es, false)) ||
        (st = check_mem(ctx, bf->v, "v", bf->v_offset, need.v, es, false)) ||
        (st = check_mem(ctx, bf->o, "o", bf->o_offset, need.o, es, true)))
        return st;
    if (bf->lse && (st = check_mem(ctx, bf->lse, "lse", bf->lse_offset, need.lse, sizeof(float), true)))
        return st;
    /* Feature tensors: present exactly when the descriptor asks for them. Their values (key
     * lengths, cumulative offsets) live on the device and are clamped there, never trusted. */
    const struct { bool want; cl_mem m; const char *name; size_t elems; } extra[] = {
        {s->has_mask, bf->mask, "mask", need.mask},
        {s->has_alibi, bf->alibi_slopes, "alibi_slopes", (size_t)s->heads_q},
        {s->has_sinks, bf->sinks, "sinks", (size_t)s->heads_q},
        {s->has_seqused_k, bf->seqused_k, "seqused_k", (size_t)s->batch},
        {s->varlen, bf->cu_seqlens_q, "cu_seqlens_q", (size_t)s->batch + 1},
        {s->varlen, bf->cu_seqlens_k, "cu_seqlens_k", (size_t)s->batch + 1},
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        if (!extra[i].want) continue;
        if (!extra[i].m)
            return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "the descriptor asks for %s but buffer %s is NULL",
                                extra[i].name, extra[i].name);
        if ((st = check_mem(ctx, extra[i].m, extra[i].name, 0, extra[i].elems, 4, false))) return st;
    }
    if (bf->scratch && (st = check_mem(ctx, bf->scratch, "scratch", 0, plan->scratch_bytes, 1, true))) return st;

    pthread_mutex_lock((pthread_mutex_t *)&plan->lock); /* clSetKernelArg is not thread-safe */
    if (plan->algo == CLATTN_ALGO_FUSED)
        st = clattn__fused_enqueue(plan, queue, bf, num_wait, wait, event);
    else
        st = clattn__unfused_enqueue((clattn_plan *)plan, queue, bf, num_wait, wait, event);
    pthread_mutex_unlock((pthread_mutex_t *)&plan->lock);
    return st;
}
