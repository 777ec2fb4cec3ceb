/* Several threads share one context: each its own queue and shapes, plans created and
 * executed concurrently, every result checked against the reference, programs built once. */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

TestSuite(threads, .fini = leak_check);

typedef struct worker {
    clattn_context *ctx;
    int id;
    int failures;
    char why[256];
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    cl_int e;
    cl_command_queue q = clCreateCommandQueue(clattn_context_cl_context(w->ctx), clattn_context_device(w->ctx), 0, &e);
    if (e) {
        w->failures++;
        return NULL;
    }
    for (int it = 0; it < 4; it++) {
        clattn_desc d = CLATTN_DESC_INIT;
        d.batch = 1 + it % 2; d.heads_q = 4; d.heads_kv = 2; d.seq_q = 17 + 5 * w->id + it; d.seq_kv = 31 + it;
        d.head_dim = (w->id % 2) ? 64 : 32; /* two variants, each wanted by two threads */
        d.causal = it % 2;
        clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
        clattn_desc_tensor_sizes(&d, &n);
        float *qh = malloc(n.q * 4), *kh = malloc(n.k * 4), *vh = malloc(n.v * 4);
        float *o = malloc(n.o * 4), *ref = malloc(n.o * 4);
        uint64_t rng = 1000 * (uint64_t)w->id + (uint64_t)it;
        clattn_rng_fill(qh, n.q, &rng, 1);
        clattn_rng_fill(kh, n.k, &rng, 1);
        clattn_rng_fill(vh, n.v, &rng, 1);
        clattn_host_tensors t = {sizeof(clattn_host_tensors), qh, kh, vh, ref, NULL, NULL, NULL, NULL, NULL, n.q, n.k, n.v, n.o, 0, 0};
        clattn_reference_forward(&d, &t, NULL, 0);
        clattn_plan *plan = NULL;
        cl_context cl = clattn_context_cl_context(w->ctx);
        cl_mem qm = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n.q * 4, qh, &e);
        cl_mem km = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n.k * 4, kh, &e);
        cl_mem vm = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n.v * 4, vh, &e);
        cl_mem om = clCreateBuffer(cl, CL_MEM_READ_WRITE, n.o * 4, NULL, &e);
        clattn_status st = clattn_plan_create(w->ctx, &d, &plan);
        cl_event ev = NULL;
        clattn_buffers bf = {sizeof(clattn_buffers), qm, km, vm, om};
        if (!st) st = clattn_plan_execute(plan, q, &bf, 0, NULL, &ev);
        if (!st) st = clEnqueueReadBuffer(q, om, CL_TRUE, 0, n.o * 4, o, 1, &ev, NULL);
        if (st) {
            w->failures++;
            snprintf(w->why, sizeof w->why, "thread %d iteration %d: status %d", w->id, it, st);
        } else {
            clattn_error err = clattn_compare(o, ref, n.o, (size_t)d.head_dim);
            if (!clattn_error_ok(&err, 1e-5)) {
                w->failures++;
                snprintf(w->why, sizeof w->why, "thread %d iteration %d: rel L2 %.3e", w->id, it, err.rel_l2);
            }
        }
        if (ev) clReleaseEvent(ev);
        clattn_plan_destroy(plan);
        clReleaseMemObject(qm); clReleaseMemObject(km); clReleaseMemObject(vm); clReleaseMemObject(om);
        free(qh); free(kh); free(vh); free(o); free(ref);
    }
    clReleaseCommandQueue(q);
    return NULL;
}

Test(threads, four_threads_share_one_context, .timeout = 300)
{
    cl_device_id dev;
    cl_uint n = 0;
    if (clattn_list_devices(&dev, 1, &n) || !n) cr_skip_test("no OpenCL device");
    clattn_context_options o = CLATTN_CONTEXT_OPTIONS_INIT;
    o.disable_disk_cache = 1; /* every program is built here: duplicates would show */
    clattn_context *ctx;
    cr_assert_eq(clattn_context_create(&o, &ctx), CLATTN_SUCCESS);
    enum { N = 4 };
    worker w[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].ctx = ctx;
        w[i].id = i;
        cr_assert_eq(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) cr_expect_eq(w[i].failures, 0, "%s", w[i].why);
    clattn_cache_stats s = CLATTN_CACHE_STATS_INIT;
    clattn_context_cache_stats(ctx, &s);
    /* every call is a prefill of the plain formula: the rows family transposes K first, with a
     * program shared by both head dims (the tiles family has no transpose) */
    const bool rows = clattn_context_kernel_family(ctx) == CLATTN_KERNELS_ROWS;
    const unsigned long long programs = rows ? 3 : 2, wanted = (rows ? 2 : 1) * 4 * N;
    cr_expect_eq(s.source_builds, programs, "two forward variants%s, each built exactly once (got %llu)",
                 rows ? " and the K transpose" : "", (unsigned long long)s.source_builds);
    cr_expect_eq(s.memory_hits, wanted - programs);
    clattn_context_destroy(ctx);
}

/* One plan executed from two threads at once, each on its own queue. */
static void *exec_plan(void *arg)
{
    void **a = arg;
    clattn_context *ctx = a[0];
    const clattn_desc *d = a[1];
    atomic_int *fail = a[2];
    verify_opts opts = {seed_for("shared_plan") + (uint64_t)(uintptr_t)a[3], false, false, NULL};
    /* verify_run returns its failures: Criterion assertions belong to the test's own thread */
    verify_result r;
    if (verify_run(ctx, d, &opts, &r) || !verify_ok(&r)) atomic_fetch_add(fail, 1);
    return NULL;
}

Test(threads, concurrent_executions, .timeout = 300)
{
    clattn_context *ctx = test_context();
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 2; d.heads_q = 4; d.seq_q = 40; d.seq_kv = 50; d.head_dim = 64; d.causal = 1;
    atomic_int fail = 0; /* three threads count into it */
    pthread_t th[3];
    void *args[3][4];
    for (int i = 0; i < 3; i++) {
        args[i][0] = ctx; args[i][1] = &d; args[i][2] = &fail; args[i][3] = (void *)(uintptr_t)i;
        pthread_create(&th[i], NULL, exec_plan, args[i]);
    }
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    cr_expect_eq(atomic_load(&fail), 0);
    clattn_context_destroy(ctx);
}
