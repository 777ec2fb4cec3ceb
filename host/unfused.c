/* The unfused path: for chunks of query rows of every (batch, head), S = scale * Q K^T with
 * CLBlast's batched GEMM (GQA through buffer offsets: K and V are never copied), one softmax
 * kernel that applies every feature of the formula and writes lse, then O = P V with the same
 * GEMM. It serves every f32 descriptor on every device, and is the second implementation the
 * fused kernels are checked against on the device itself. Never CLBlast's half GEMM: it
 * accumulates in half. */
#include "fault.h"

#include <clblast_c.h>

static const char *clblast_name(CLBlastStatusCode c)
{
    switch (c) {
    case CLBlastNotImplemented: return "NotImplemented";
    case CLBlastInvalidMatrixA: return "InvalidMatrixA";
    case CLBlastInvalidMatrixB: return "InvalidMatrixB";
    case CLBlastInvalidMatrixC: return "InvalidMatrixC";
    case CLBlastInvalidDimension: return "InvalidDimension";
    case CLBlastInvalidLeadDimA: return "InvalidLeadDimA";
    case CLBlastInvalidLeadDimB: return "InvalidLeadDimB";
    case CLBlastInvalidLeadDimC: return "InvalidLeadDimC";
    case CLBlastInsufficientMemoryA: return "InsufficientMemoryA";
    case CLBlastInsufficientMemoryB: return "InsufficientMemoryB";
    case CLBlastInsufficientMemoryC: return "InsufficientMemoryC";
    case CLBlastInsufficientMemoryTemp: return "InsufficientMemoryTemp";
    case CLBlastInvalidBatchCount: return "InvalidBatchCount";
    case CLBlastInvalidLocalMemUsage: return "InvalidLocalMemUsage";
    case CLBlastDatabaseError: return "DatabaseError";
    case CLBlastUnknownError: return "UnknownError";
    case CLBlastUnexpectedError: return "UnexpectedError";
    default: return "OpenCL error";
    }
}

/* CLBlast codes in OpenCL's range keep their numbers; CLBlast's own become CLATTN_BLAS_ERROR. */
static clattn_status blas_fail(clattn_plan *plan, CLBlastStatusCode c, const char *what)
{
    const clattn_status st = c > -1000 ? (clattn_status)c : CLATTN_BLAS_ERROR;
    return clattn__fail(plan->ctx, st, "CLBlast %s failed: %s (%d)", what, clblast_name(c), (int)c);
}

/* Leading dimension for CLBlast: a stride, or the row length when only one row is read. */
static size_t ld(int64_t stride, int rows, int cols)
{
    return rows <= 1 && stride < cols ? (size_t)cols : (size_t)stride;
}

/* q, k, v, o go through dense f32 copies when CLBlast cannot read them in place: f16/bf16
 * storage (never CLBlast's half GEMM: it accumulates in half), packed sequences (their offsets
 * live on the device), or sequence strides shorter than a row. */
static bool needs_copies(const clattn_shape *s)
{
    return s->dtype != CLATTN_DTYPE_F32 || s->varlen || (s->seq_q > 1 && s->q.seq < s->head_dim) ||
           (s->seq_kv > 1 && (s->k.seq < s->head_dim || s->v.seq < s->head_dim_v));
}

bool clattn__unfused_supports(const clattn_context *ctx, const clattn_shape *s, char *why, size_t why_size)
{
    if ((size_t)s->seq_kv * sizeof(float) > ctx->scratch_limit) {
        clattn__format(why, why_size, "one row of scores (%d keys) exceeds the scratch limit of %zu bytes",
                       s->seq_kv, ctx->scratch_limit);
        return false;
    }
    clattn__format(why, why_size, "the unfused path serves this descriptor");
    return true;
}

/* Chunking: all (batch, head) items and all rows at once when the scores fit the limit;
 * else all rows of as many items as fit; else as many rows of one item as fit. */
void clattn__unfused_choose(const clattn_context *ctx, const clattn_shape *s, clattn_plan *plan)
{
    const size_t row_bytes = (size_t)s->seq_kv * sizeof(float), limit = ctx->scratch_limit;
    const size_t items = (size_t)s->batch * s->heads_q, rows = (size_t)s->seq_q;
    size_t r = rows, p = items;
    if (rows * row_bytes > limit) {
        p = 1;
        r = limit / row_bytes;
    } else if (items * rows * row_bytes > limit) {
        p = limit / (rows * row_bytes);
    }
    /* the softmax kernel puts a chunk's items in its NDRange's 2nd dimension, which NVIDIA's
     * OpenCL maps onto a CUDA grid dimension of at most 65535 work-groups */
    if (p > 65535) p = 65535;
    plan->chunk_rows = (int)r;
    plan->chunk_items = (int)p;
    size_t floats = r * p * (size_t)s->seq_kv;
    plan->convert = needs_copies(s);
    if (plan->convert) { /* dense padded f32 (B, H, N, D) copies after the scores */
        plan->work_q = floats;
        plan->work_k = plan->work_q + (size_t)s->batch * s->heads_q * s->seq_q * s->head_dim;
        plan->work_v = plan->work_k + (size_t)s->batch * s->heads_kv * s->seq_kv * s->head_dim;
        plan->work_o = plan->work_v + (size_t)s->batch * s->heads_kv * s->seq_kv * s->head_dim_v;
        floats = plan->work_o + (size_t)s->batch * s->heads_q * s->seq_q * s->head_dim_v;
    }
    plan->scratch_bytes = floats * sizeof(float);

    /* The softmax kernel: one work-item per row on CPUs (no barriers), a work-group per row
     * elsewhere. */
    int smw = (ctx->info.type & CL_DEVICE_TYPE_CPU) ? 1 : 128;
    while ((size_t)smw > ctx->info.max_wg_size && smw > 1) smw /= 2;
    char feat[160];
    clattn__feature_defines(s, feat, sizeof feat);
    clattn_variant *v = &plan->variant;
    v->source_name = "softmax";
    v->kernel_name = "clattn_softmax";
    v->rows = 1;
    v->local_size = (size_t)smw;
    clattn__format(v->options, sizeof v->options, "-cl-std=CL1.2 -D SMW=%d %s", smw, feat);
    clattn__format(v->name, sizeof v->name, "unfused CLBlast Sgemm + softmax SMW=%d, chunks of %d rows x %d heads%s",
                   smw, plan->chunk_rows, plan->chunk_items, plan->convert ? ", f32 copies" : "");
    if (plan->convert) {
        clattn_variant *c = &plan->variant2;
        c->source_name = "convert";
        c->kernel_name = "clattn_widen";
        c->rows = 1;
        clattn__format(c->options, sizeof c->options, "-cl-std=CL1.2 -D VW=1 %s", feat);
        clattn__format(c->name, sizeof c->name, "widen/narrow");
    }
}

clattn_status clattn__unfused_prepare(clattn_plan *plan)
{
    if (!plan->convert) return CLATTN_SUCCESS;
    clattn_status st = clattn__make_kernel(plan->ctx, &plan->variant2, "clattn_widen", &plan->kernel2);
    if (!st) st = clattn__make_kernel(plan->ctx, &plan->variant2, "clattn_narrow", &plan->kernel3);
    return st;
}

#define ARG(T, x) CLATTN_ARG(plan->kernel, n, e, T, x)

static clattn_status softmax(clattn_plan *plan, cl_command_queue queue, const clattn_buffers *bf,
                             cl_mem scores, int rows, int items, int bh0, int r0)
{
    const clattn_shape *s = &plan->shape;
    cl_int e = CL_SUCCESS;
    cl_uint n = 0;
    ARG(cl_mem, scores);
    ARG(cl_int, rows);
    ARG(cl_int, s->seq_kv);
    ARG(cl_int, bh0);
    ARG(cl_int, r0);
    ARG(cl_int, s->seq_q);
    ARG(cl_int, s->heads_q);
    ARG(cl_mem, bf->lse ? bf->lse : scores);
    ARG(cl_ulong, (cl_ulong)bf->lse_offset);
    ARG(cl_int, bf->lse != NULL);
    ARG(cl_float, s->softcap);
    ARG(cl_mem, s->has_alibi ? bf->alibi_slopes : scores);
    ARG(cl_int, s->has_alibi);
    ARG(cl_mem, s->has_mask ? bf->mask : scores);
    ARG(cl_ulong, 0);
    ARG(cl_long, s->mask.batch);
    ARG(cl_long, s->mask.head);
    ARG(cl_long, s->mask.seq);
    ARG(cl_int, s->has_mask);
    ARG(cl_mem, s->has_sinks ? bf->sinks : scores);
    ARG(cl_int, s->has_sinks);
    ARG(cl_mem, s->has_seqused_k ? bf->seqused_k : scores);
    ARG(cl_mem, s->varlen ? bf->cu_seqlens_q : scores);
    ARG(cl_mem, s->varlen ? bf->cu_seqlens_k : scores);
    ARG(cl_int, s->total_q);
    ARG(cl_int, s->top_left);
    ARG(cl_int, s->window_left);
    ARG(cl_int, s->window_right);
    if (e) return clattn__fail(plan->ctx, e, "clSetKernelArg failed (%d) for the softmax kernel", e);
    const size_t global[2] = {(size_t)rows * plan->variant.local_size, (size_t)items};
    const size_t local[2] = {plan->variant.local_size, 1};
    e = clattn__enqueue(plan->ctx, queue, plan->kernel, 2, global, local, 0, NULL, NULL);
    if (e) return clattn__fail(plan->ctx, e, "clEnqueueNDRangeKernel failed (%d) for the softmax kernel", e);
    return CLATTN_SUCCESS;
}

/* One CLBlast SGEMM per (batch, head) item of the chunk; GQA through offsets (K and V are
 * never copied). Not CLBlast's strided-batched GEMM: in CLBlast 1.5.3 it returns wrong results
 * when B carries a non-zero offset at large sizes (M = K = 4096 or 8192 with N = 64 on PoCL:
 * max error 35-49 against a float64 GEMM; plain CLBlastSgemm with the same offsets is right).
 * `clattn bench` caught it as "wrong" rows 10 and 11. Nor the pointer-offset batched GEMM: it
 * uploads its offset arrays with blocking writes, which would block behind a wait list. */
static clattn_status gemms(clattn_plan *plan, const clattn_shape *s, cl_command_queue queue,
                           const clattn_buffers *bf, const clattn_buffers *user, cl_mem scores, int bh0, int np,
                           int r0, int nr)
{
    const int nk = s->seq_kv;
    for (int bh = bh0; bh < bh0 + np; bh++) {
        const int b = bh / s->heads_q, h = bh % s->heads_q, g = h / s->group;
        if (clattn__enqueue_fault(plan->ctx)) return blas_fail(plan, CLBlastOpenCLOutOfResources, "Sgemm (S = Q K^T)");
        CLBlastStatusCode c = CLBlastSgemm(
            CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeYes, (size_t)nr, (size_t)nk,
            (size_t)s->head_dim, s->scale,
            bf->q, bf->q_offset + b * s->q.batch + h * s->q.head + (size_t)r0 * s->q.seq, ld(s->q.seq, nr, s->head_dim),
            bf->k, bf->k_offset + b * s->k.batch + g * s->k.head, ld(s->k.seq, nk, s->head_dim),
            0.0f, scores, (size_t)(bh - bh0) * nr * nk, (size_t)nk, &queue, NULL);
        if (c) return blas_fail(plan, c, "Sgemm (S = Q K^T)");
    }
    clattn_status st = softmax(plan, queue, user, scores, nr, np, bh0, r0);
    if (st) return st;
    for (int bh = bh0; bh < bh0 + np; bh++) {
        const int b = bh / s->heads_q, h = bh % s->heads_q, g = h / s->group;
        if (clattn__enqueue_fault(plan->ctx)) return blas_fail(plan, CLBlastOpenCLOutOfResources, "Sgemm (O = P V)");
        CLBlastStatusCode c = CLBlastSgemm(
            CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo, (size_t)nr, (size_t)s->head_dim_v,
            (size_t)nk, 1.0f, scores, (size_t)(bh - bh0) * nr * nk, (size_t)nk,
            bf->v, bf->v_offset + b * s->v.batch + g * s->v.head, ld(s->v.seq, nk, s->head_dim_v),
            0.0f, bf->o, bf->o_offset + b * s->o.batch + h * s->o.head + (size_t)r0 * s->o.seq,
            ld(s->o.seq, nr, s->head_dim_v), &queue, NULL);
        if (c) return blas_fail(plan, c, "Sgemm (O = P V)");
    }
    return CLATTN_SUCCESS;
}

#undef ARG
#define ARG(T, x) CLATTN_ARG(kern, n, e, T, x)

/* widen (to_f32) a tensor of the caller into its dense f32 copy, or narrow o back. */
static cl_int convert(clattn_plan *plan, cl_command_queue queue, bool to_f32, cl_mem user, size_t off,
                      const clattn_strides *st, int heads, int seq, int dim, cl_mem cu, cl_mem scratch, size_t work)
{
    const clattn_shape *s = &plan->shape;
    cl_kernel kern = to_f32 ? plan->kernel2 : plan->kernel3;
    cl_int e = CL_SUCCESS;
    cl_uint n = 0;
    if (to_f32) {
        ARG(cl_mem, user);
    } else {
        ARG(cl_mem, scratch);
        ARG(cl_ulong, (cl_ulong)work);
        ARG(cl_mem, user);
    }
    ARG(cl_ulong, (cl_ulong)off);
    ARG(cl_long, st->batch);
    ARG(cl_long, st->head);
    ARG(cl_long, st->seq);
    ARG(cl_int, heads);
    ARG(cl_int, seq);
    ARG(cl_int, dim);
    ARG(cl_mem, cu ? cu : scratch);
    if (to_f32) {
        ARG(cl_mem, scratch);
        ARG(cl_ulong, (cl_ulong)work);
    }
    /* one dimension over every element: sequences and batch x heads can each pass the 65535
     * work-groups of a GPU grid's 2nd and 3rd dimensions (a 128K-token f16 KV cache) */
    const size_t global = (size_t)dim * (size_t)seq * (size_t)s->batch * (size_t)heads;
    if (!e) e = clattn__enqueue(plan->ctx, queue, kern, 1, &global, NULL, 0, NULL, NULL);
    return e;
}

clattn_status clattn__unfused_enqueue(clattn_plan *plan, cl_command_queue queue, const clattn_buffers *bf,
                                      cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    const clattn_shape *s = &plan->shape;
    clattn_context *ctx = plan->ctx;
    cl_command_queue_properties props = 0;
    cl_int e = clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (e) return clattn__fail(ctx, e, "clGetCommandQueueInfo failed (%d)", e);
    if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return clattn__fail(ctx, CLATTN_UNSUPPORTED, "the unfused path needs an in-order queue (CLBlast chains its kernels in order)");

    cl_mem scratch;
    clattn_status st = clattn__plan_scratch(plan, bf, &scratch);
    if (st) return st;
    /* The caller's wait list gates everything after it on this in-order queue. */
    if (num_wait && (e = clattn__enqueue_fault(ctx) ? CL_OUT_OF_RESOURCES
                                                    : clEnqueueBarrierWithWaitList(queue, num_wait, wait, NULL)))
        return clattn__fail(ctx, e, "clEnqueueBarrierWithWaitList failed (%d)", e);

    /* The GEMMs read the caller's tensors in place, or the dense f32 copies. */
    clattn_shape w = *s;
    clattn_buffers in = *bf;
    if (plan->convert) {
        cl_mem cq = s->varlen ? bf->cu_seqlens_q : NULL, ck = s->varlen ? bf->cu_seqlens_k : NULL;
        e = convert(plan, queue, true, bf->q, bf->q_offset, &s->q, s->heads_q, s->seq_q, s->head_dim, cq, scratch, plan->work_q);
        if (!e) e = convert(plan, queue, true, bf->k, bf->k_offset, &s->k, s->heads_kv, s->seq_kv, s->head_dim, ck, scratch, plan->work_k);
        if (!e) e = convert(plan, queue, true, bf->v, bf->v_offset, &s->v, s->heads_kv, s->seq_kv, s->head_dim_v, ck, scratch, plan->work_v);
        if (e) return clattn__fail(ctx, e, "enqueueing the f32 copies failed (%d)", e);
        w.dtype = CLATTN_DTYPE_F32;
        w.q = (clattn_strides){(int64_t)s->heads_q * s->seq_q * s->head_dim, (int64_t)s->seq_q * s->head_dim, s->head_dim};
        w.k = (clattn_strides){(int64_t)s->heads_kv * s->seq_kv * s->head_dim, (int64_t)s->seq_kv * s->head_dim, s->head_dim};
        w.v = (clattn_strides){(int64_t)s->heads_kv * s->seq_kv * s->head_dim_v, (int64_t)s->seq_kv * s->head_dim_v, s->head_dim_v};
        w.o = (clattn_strides){(int64_t)s->heads_q * s->seq_q * s->head_dim_v, (int64_t)s->seq_q * s->head_dim_v, s->head_dim_v};
        in.q = in.k = in.v = in.o = scratch;
        in.q_offset = plan->work_q;
        in.k_offset = plan->work_k;
        in.v_offset = plan->work_v;
        in.o_offset = plan->work_o;
    }
    const int items = s->batch * s->heads_q, P = plan->chunk_items, R = plan->chunk_rows;
    for (int bh0 = 0; bh0 < items && !st; bh0 += P)
        for (int r0 = 0; r0 < s->seq_q && !st; r0 += R)
            st = gemms(plan, &w, queue, &in, bf, scratch, bh0, items - bh0 < P ? items - bh0 : P, r0,
                       s->seq_q - r0 < R ? s->seq_q - r0 : R);
    if (!st && plan->convert &&
        (e = convert(plan, queue, false, bf->o, bf->o_offset, &s->o, s->heads_q, s->seq_q, s->head_dim_v,
                     s->varlen ? bf->cu_seqlens_q : NULL, scratch, plan->work_o)))
        st = clattn__fail(ctx, e, "enqueueing the output copy failed (%d)", e);
    /* On an in-order queue a marker completes after everything enqueued before it: the one
     * event that covers every chunk's GEMM -> softmax -> GEMM. */
    if (!st && event &&
        (e = clattn__enqueue_fault(ctx) ? CL_OUT_OF_RESOURCES : clEnqueueMarkerWithWaitList(queue, 0, NULL, event)))
        st = clattn__fail(ctx, e, "clEnqueueMarkerWithWaitList failed (%d)", e);
    return st;
}
