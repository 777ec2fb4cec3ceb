/* The one place where clattn creates and releases OpenCL objects, enqueues, and allocates
 * host memory for a context. Two reasons: each wrapper keeps a per-context count of the
 * objects alive (so tests prove every failure path releases what it created), and a test-only
 * hook can make the Nth call of a kind fail (fault injection, tests/test_faults.c). */
#ifndef CLATTN_FAULT_H
#define CLATTN_FAULT_H

#include "internal.h"

typedef enum clattn_fault_kind {
    CLATTN_FAULT_NONE = 0,
    CLATTN_FAULT_HOST_ALLOC, /* malloc/calloc/strdup for a context's objects */
    CLATTN_FAULT_BUFFER,     /* clCreateBuffer */
    CLATTN_FAULT_BUILD,      /* clCreateProgramWith* / clBuildProgram */
    CLATTN_FAULT_KERNEL,     /* clCreateKernel */
    CLATTN_FAULT_ENQUEUE,    /* kernels, markers, barriers, CLBlast GEMMs */
    CLATTN_FAULT_KINDS
} clattn_fault_kind;

/* Test hook: the `nth` call of `kind` on this context fails (0 turns injection off). */
CLATTN_HIDDEN void clattn__inject_fault(clattn_context *ctx, clattn_fault_kind kind, long nth);
/* True once the injected fault has fired. */
CLATTN_HIDDEN bool clattn__fault_fired(const clattn_context *ctx);
/* True if this call must fail (called by the wrappers). */
CLATTN_HIDDEN bool clattn__fault(clattn_context *ctx, clattn_fault_kind kind);

typedef struct clattn_live {
    long buffers, kernels, programs;
} clattn_live;
CLATTN_HIDDEN clattn_live clattn__live_objects(const clattn_context *ctx);

CLATTN_HIDDEN void *clattn__calloc(clattn_context *ctx, size_t n, size_t size);
CLATTN_HIDDEN cl_mem clattn__create_buffer(clattn_context *ctx, cl_mem_flags flags, size_t size, void *host, cl_int *e);
CLATTN_HIDDEN void clattn__release_buffer(clattn_context *ctx, cl_mem m);
CLATTN_HIDDEN cl_kernel clattn__create_kernel(clattn_context *ctx, cl_program p, const char *name, cl_int *e);
CLATTN_HIDDEN void clattn__release_kernel(clattn_context *ctx, cl_kernel k);
CLATTN_HIDDEN cl_program clattn__program_from_source(clattn_context *ctx, const char *src, cl_int *e);
CLATTN_HIDDEN cl_program clattn__program_from_binary(clattn_context *ctx, const unsigned char *bin, size_t size, cl_int *e);
CLATTN_HIDDEN cl_int clattn__build(clattn_context *ctx, cl_program p, const char *options);
CLATTN_HIDDEN void clattn__release_program(clattn_context *ctx, cl_program p);
CLATTN_HIDDEN cl_int clattn__enqueue(clattn_context *ctx, cl_command_queue q, cl_kernel k, cl_uint dims,
                                     const size_t *global, const size_t *local, cl_uint num_wait,
                                     const cl_event *wait, cl_event *event);
/* A marker after the wait list (everything before it on an in-order queue when num_wait is 0). */
CLATTN_HIDDEN cl_int clattn__enqueue_marker(clattn_context *ctx, cl_command_queue q, cl_uint num_wait,
                                            const cl_event *wait, cl_event *event);
/* Barriers and CLBlast GEMMs only ask whether to fail. */
CLATTN_HIDDEN bool clattn__enqueue_fault(clattn_context *ctx);

#endif
