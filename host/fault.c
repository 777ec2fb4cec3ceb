#include "fault.h"

#include <stdlib.h>

void clattn__inject_fault(clattn_context *ctx, clattn_fault_kind kind, long nth)
{
    atomic_store(&ctx->fault_kind, nth > 0 ? (int)kind : 0);
    atomic_store(&ctx->fault_countdown, nth);
    atomic_store(&ctx->fault_fired, 0);
}

bool clattn__fault_fired(const clattn_context *ctx) { return atomic_load(&ctx->fault_fired) != 0; }

bool clattn__fault(clattn_context *ctx, clattn_fault_kind kind)
{
    if (atomic_load(&ctx->fault_kind) != (int)kind) return false;
    if (atomic_fetch_sub(&ctx->fault_countdown, 1) != 1) return false;
    atomic_store(&ctx->fault_fired, 1);
    return true;
}

clattn_live clattn__live_objects(const clattn_context *ctx)
{
    clattn_live l = {atomic_load(&ctx->live_buffers), atomic_load(&ctx->live_kernels), atomic_load(&ctx->live_programs)};
    return l;
}

void *clattn__calloc(clattn_context *ctx, size_t n, size_t size)
{
    return clattn__fault(ctx, CLATTN_FAULT_HOST_ALLOC) ? NULL : calloc(n, size);
}

cl_mem clattn__create_buffer(clattn_context *ctx, cl_mem_flags flags, size_t size, void *host, cl_int *e)
{
    if (clattn__fault(ctx, CLATTN_FAULT_BUFFER)) {
        *e = CL_MEM_OBJECT_ALLOCATION_FAILURE;
        return NULL;
    }
    cl_mem m = clCreateBuffer(ctx->cl_ctx, flags, size, host, e);
    if (m) atomic_fetch_add(&ctx->live_buffers, 1);
    return m;
}

void clattn__release_buffer(clattn_context *ctx, cl_mem m)
{
    if (!m) return;
    clReleaseMemObject(m);
    atomic_fetch_sub(&ctx->live_buffers, 1);
}

cl_kernel clattn__create_kernel(clattn_context *ctx, cl_program p, const char *name, cl_int *e)
{
    if (clattn__fault(ctx, CLATTN_FAULT_KERNEL)) {
        *e = CL_OUT_OF_RESOURCES;
        return NULL;
    }
    cl_kernel k = clCreateKernel(p, name, e);
    if (k) atomic_fetch_add(&ctx->live_kernels, 1);
    return k;
}

void clattn__release_kernel(clattn_context *ctx, cl_kernel k)
{
    if (!k) return;
    clReleaseKernel(k);
    atomic_fetch_sub(&ctx->live_kernels, 1);
}

cl_program clattn__program_from_source(clattn_context *ctx, const char *src, cl_int *e)
{
    if (clattn__fault(ctx, CLATTN_FAULT_BUILD)) {
        *e = CL_OUT_OF_HOST_MEMORY;
        return NULL;
    }
    cl_program p = clCreateProgramWithSource(ctx->cl_ctx, 1, &src, NULL, e);
    if (p) atomic_fetch_add(&ctx->live_programs, 1);
    return p;
}

cl_program clattn__program_from_binary(clattn_context *ctx, const unsigned char *bin, size_t size, cl_int *e)
{
    cl_int status = CL_SUCCESS;
    cl_program p = clCreateProgramWithBinary(ctx->cl_ctx, 1, &ctx->device, &size, &bin, &status, e);
    if (p) atomic_fetch_add(&ctx->live_programs, 1);
    if (!*e && status) *e = status;
    return p;
}

cl_int clattn__build(clattn_context *ctx, cl_program p, const char *options)
{
    if (clattn__fault(ctx, CLATTN_FAULT_BUILD)) return CL_BUILD_PROGRAM_FAILURE;
    return clBuildProgram(p, 1, &ctx->device, options, NULL, NULL);
}

void clattn__release_program(clattn_context *ctx, cl_program p)
{
    if (!p) return;
    clReleaseProgram(p);
    atomic_fetch_sub(&ctx->live_programs, 1);
}

cl_int clattn__enqueue(clattn_context *ctx, cl_command_queue q, cl_kernel k, cl_uint dims, const size_t *global,
                       const size_t *local, cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    if (clattn__fault(ctx, CLATTN_FAULT_ENQUEUE)) return CL_OUT_OF_RESOURCES;
    return clEnqueueNDRangeKernel(q, k, dims, NULL, global, local, num_wait, num_wait ? wait : NULL, event);
}

cl_int clattn__enqueue_marker(clattn_context *ctx, cl_command_queue q, cl_uint num_wait, const cl_event *wait,
                              cl_event *event)
{
    if (clattn__fault(ctx, CLATTN_FAULT_ENQUEUE)) return CL_OUT_OF_RESOURCES;
    return clEnqueueMarkerWithWaitList(q, num_wait, num_wait ? wait : NULL, event);
}

bool clattn__enqueue_fault(clattn_context *ctx) { return clattn__fault(ctx, CLATTN_FAULT_ENQUEUE); }
