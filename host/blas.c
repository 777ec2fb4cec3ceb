/* CLBlast for the unfused paths. */
#include "blas.h"
#include "copies.h"
#include "shape.h"
#include "diag.h"
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

clattn_status clattn__sgemm(clattn_context *ctx, cl_command_queue queue, const clattn_gemm *g, const char *what)
{
    /* CLBlast codes in OpenCL's range keep their numbers; CLBlast's own become CLATTN_BLAS_ERROR */
    CLBlastStatusCode c = CLBlastOpenCLOutOfResources;
    if (!clattn__enqueue_fault(ctx))
        c = CLBlastSgemm(CLBlastLayoutRowMajor, g->trans_a ? CLBlastTransposeYes : CLBlastTransposeNo,
                         g->trans_b ? CLBlastTransposeYes : CLBlastTransposeNo, g->m, g->n, g->k, g->alpha, g->a,
                         g->a_off, g->lda, g->b, g->b_off, g->ldb, g->beta, g->c, g->c_off, g->ldc, &queue, NULL);
    if (c == CLBlastSuccess) return CLATTN_SUCCESS;
    const clattn_status st = c > -1000 ? (clattn_status)c : CLATTN_BLAS_ERROR;
    return clattn__fail(ctx, st, "CLBlast %s failed: %s (%d)", what, clblast_name(c), (int)c);
}

size_t clattn__ld(int64_t stride, size_t rows, size_t cols)
{
    return rows <= 1 && (size_t)stride < cols ? cols : (size_t)stride;
}

void clattn__score_chunks(const clattn_shape *s, size_t row_bytes, size_t limit, int *rows, int *items)
{
    const size_t all_items = (size_t)s->batch * (size_t)s->heads_q, all_rows = (size_t)s->seq_q;
    size_t r = all_rows, n = all_items;
    if (all_rows * row_bytes > limit) {
        n = 1;
        r = limit / row_bytes;
    } else if (all_items > limit / (all_rows * row_bytes)) { /* all_rows * row_bytes < 2^64: both are ints */
        n = limit / (all_rows * row_bytes);
    }
    if (n > CLATTN_GRID_MAX) n = CLATTN_GRID_MAX;
    *rows = (int)r;
    *items = (int)n;
}

clattn_status clattn__gemm_queue_start(clattn_context *ctx, cl_command_queue queue, cl_uint num_wait,
                                       const cl_event *wait)
{
    cl_command_queue_properties props = 0;
    cl_int e = clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (e) return clattn__fail(ctx, e, "clGetCommandQueueInfo failed (%d)", e);
    if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return clattn__fail(ctx, CLATTN_UNSUPPORTED,
                            "the unfused path needs an in-order queue (CLBlast chains its kernels in order)");
    if (num_wait && (e = clattn__enqueue_fault(ctx) ? CL_OUT_OF_RESOURCES
                                                    : clEnqueueBarrierWithWaitList(queue, num_wait, wait, NULL)))
        return clattn__fail(ctx, e, "clEnqueueBarrierWithWaitList failed (%d)", e);
    return CLATTN_SUCCESS;
}

bool clattn__gemm_index_fits(uint64_t elems, char *why, size_t why_size)
{
    if (elems <= (uint64_t)INT32_MAX) return true;
    clattn__format(why, why_size, "the unfused path's GEMMs (CLBlast) index with 32-bit ints, and one of their "
                   "buffers holds %llu elements", (unsigned long long)elems);
    return false;
}

clattn_status clattn__gemm_offsets_fit(clattn_context *ctx, const size_t *offsets, const size_t *elems,
                                       const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (offsets[i] > (size_t)INT32_MAX - elems[i])
            return clattn__fail(ctx, CLATTN_UNSUPPORTED, "unfused: %s's offset %zu puts its elements past 2^31, which "
                                "CLBlast's 32-bit indices cannot reach", names[i], offsets[i]);
    return CLATTN_SUCCESS;
}

bool clattn__gemm_tensors_fit(const clattn_shape *s, char *why, size_t why_size)
{
    clattn_tensor_sizes need;
    if (clattn__sizes(s, &need)) {
        clattn__format(why, why_size, "tensor sizes overflow");
        return false;
    }
    if (clattn__needs_copies(s)) return true; /* the GEMMs read f32 copies in scratch */
    size_t most = need.q > need.k ? need.q : need.k;
    if (need.v > most) most = need.v;
    if (need.o > most) most = need.o;
    return clattn__gemm_index_fits(most, why, why_size);
}
