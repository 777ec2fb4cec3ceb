#include "dispatch.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The floor of any call on the queue: a kernel that does nothing, launched and waited for. */
static const char *empty_source = "__kernel void clattn_empty(__global float *x) { }\n";

#define ENQUEUE_CALLS 2048 /* enqueue-only timings, in batches of ENQUEUE_BATCH */
#define ENQUEUE_BATCH 64   /* then the queue is drained, untimed, so that it never grows long */
#define ROUND_TRIPS 400    /* tiny calls and empty kernels, alternating */
#define WARM_UP 20

typedef struct dispatch_env {
    cl_command_queue q;
    clattn_plan *plan;
    clattn_buffers bufs;
    cl_mem mem[5];
    cl_program prog;
    cl_kernel empty;
} dispatch_env;

static void env_release(dispatch_env *env)
{
    for (int i = 0; i < 5; i++)
        if (env->mem[i]) clReleaseMemObject(env->mem[i]);
    if (env->empty) clReleaseKernel(env->empty);
    if (env->prog) clReleaseProgram(env->prog);
    if (env->q) clReleaseCommandQueue(env->q);
    clattn_plan_destroy(env->plan);
}

/* The tiny plan, its buffers (zeros: the values do not matter to the time) and the empty
 * kernel, all built before anything is timed. */
static int env_create(clattn_context *ctx, dispatch_env *env, char *variant, size_t vsize)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 1; d.heads_kv = 1; d.seq_q = 16; d.seq_kv = 16; d.head_dim = 64;
    clattn_status st = clattn_plan_create(ctx, &d, &env->plan);
    if (st) return cli_error("dispatch: the tiny plan failed: %s: %s", clattn_status_string(st), clattn_context_last_error(ctx));
    snprintf(variant, vsize, "%s", clattn_plan_variant(env->plan));
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&d, &n);
    const cl_context cl = clattn_context_cl_context(ctx);
    cl_device_id dev = clattn_context_device(ctx);
    cl_int e;
    env->q = clCreateCommandQueue(cl, dev, 0, &e);
    const size_t bytes[5] = {n.q * 4, n.k * 4, n.v * 4, n.o * 4, n.lse * 4};
    const float zero = 0.0f;
    for (int i = 0; i < 5 && !e; i++) {
        env->mem[i] = clCreateBuffer(cl, CL_MEM_READ_WRITE, bytes[i], NULL, &e);
        if (!e) e = clEnqueueFillBuffer(env->q, env->mem[i], &zero, sizeof zero, 0, bytes[i], 0, NULL, NULL);
    }
    if (!e) env->prog = clCreateProgramWithSource(cl, 1, &empty_source, NULL, &e);
    if (!e) e = clBuildProgram(env->prog, 1, &dev, "-cl-std=CL1.2", NULL, NULL);
    if (!e) env->empty = clCreateKernel(env->prog, "clattn_empty", &e);
    if (!e) e = clSetKernelArg(env->empty, 0, sizeof env->mem[3], &env->mem[3]);
    if (!e) e = clFinish(env->q);
    if (e) return cli_error("dispatch: setting up the measurement failed (%d)", e);
    env->bufs = (clattn_buffers)CLATTN_BUFFERS_INIT;
    env->bufs.q = env->mem[0]; env->bufs.k = env->mem[1]; env->bufs.v = env->mem[2];
    env->bufs.o = env->mem[3]; env->bufs.lse = env->mem[4];
    return 0;
}

static cl_int tiny_call(const dispatch_env *env)
{
    cl_int e = clattn_plan_execute(env->plan, env->q, &env->bufs, 0, NULL, NULL);
    return e ? e : clFinish(env->q);
}

static cl_int empty_call(const dispatch_env *env)
{
    const size_t one = 1;
    cl_int e = clEnqueueNDRangeKernel(env->q, env->empty, 1, NULL, &one, &one, 0, NULL, NULL);
    return e ? e : clFinish(env->q);
}

/* Median microseconds of clattn_plan_execute alone: the host's part of a call. */
static int measure_enqueue(const dispatch_env *env, double *us)
{
    double *t = malloc(sizeof(double) * ENQUEUE_CALLS);
    if (!t) return cli_error("dispatch: out of memory");
    cl_int e = 0;
    for (int i = 0; i < ENQUEUE_CALLS && !e; i++) {
        const double t0 = cli_now_ms();
        e = clattn_plan_execute(env->plan, env->q, &env->bufs, 0, NULL, NULL);
        t[i] = (cli_now_ms() - t0) * 1e3;
        if (!e && (i + 1) % ENQUEUE_BATCH == 0) e = clFinish(env->q);
    }
    if (!e) e = clFinish(env->q);
    *us = cli_median(t, ENQUEUE_CALLS);
    free(t);
    return e ? cli_error("dispatch: clattn_plan_execute failed (%d)", e) : 0;
}

/* Median round trips of the tiny call and of the empty kernel, alternating. */
static int measure_round_trips(const dispatch_env *env, double *tiny_us, double *empty_us)
{
    double *a = malloc(sizeof(double) * ROUND_TRIPS), *b = malloc(sizeof(double) * ROUND_TRIPS);
    cl_int e = a && b ? 0 : CL_OUT_OF_HOST_MEMORY;
    for (int i = 0; i < ROUND_TRIPS && !e; i++) {
        double t0 = cli_now_ms();
        e = tiny_call(env);
        a[i] = (cli_now_ms() - t0) * 1e3;
        t0 = cli_now_ms();
        if (!e) e = empty_call(env);
        b[i] = (cli_now_ms() - t0) * 1e3;
    }
    if (!e) {
        *tiny_us = cli_median(a, ROUND_TRIPS);
        *empty_us = cli_median(b, ROUND_TRIPS);
    }
    free(a);
    free(b);
    return e ? cli_error("dispatch: a round trip failed (%d)", e) : 0;
}

int dispatch_measure(clattn_context *ctx, dispatch_figures *out)
{
    memset(out, 0, sizeof *out);
    dispatch_env env;
    memset(&env, 0, sizeof env);
    int rc = env_create(ctx, &env, out->variant, sizeof out->variant);
    for (int i = 0; i < WARM_UP && !rc; i++) /* first launches pay for lazy driver work */
        if (tiny_call(&env) || empty_call(&env)) rc = cli_error("dispatch: the warm-up calls failed");
    if (!rc) rc = measure_enqueue(&env, &out->execute_us);
    if (!rc) rc = measure_round_trips(&env, &out->tiny_call_us, &out->empty_kernel_us);
    out->execute_calls = ENQUEUE_CALLS;
    out->round_trips = ROUND_TRIPS;
    out->measured = !rc;
    env_release(&env);
    return rc;
}
