/* `clattn demo`: the main job until `clattn bench`/`check` land. Random tensors of realistic
 * shapes through the fused and the unfused path and the CPU reference on every device: median
 * time per call (enqueue to completion, after warm-up; kernel builds excluded) and the error
 * against the reference. */
#include "cli.h"
#include "metrics.h"
#include "rng.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct demo_case {
    int b, hq, hkv, nq, nk, d, causal;
} demo_case;

static const demo_case full_cases[] = {
    {1, 8, 8, 2048, 2048, 64, 0}, {1, 8, 8, 2048, 2048, 64, 1}, {2, 8, 2, 512, 512, 128, 1},
    {1, 32, 8, 1, 4096, 128, 0},  {1, 8, 8, 333, 777, 80, 1},
};
static const demo_case quick_cases[] = {{1, 4, 4, 256, 256, 64, 1}, {1, 8, 2, 1, 1024, 128, 0}};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Runs one case on one context; prints a table row. Returns 0 if the result is correct. */
static int demo_one(clattn_context *ctx, const char *dev_name, const demo_case *c, clattn_algo algo,
                    uint64_t seed)
{
    clattn_desc d = {0};
    d.batch = c->b; d.heads_q = c->hq; d.heads_kv = c->hkv; d.seq_q = c->nq; d.seq_kv = c->nk;
    d.head_dim = c->d; d.causal = c->causal; d.algo = algo;
    clattn_tensor_sizes n;
    clattn_desc_tensor_sizes(&d, &n);
    float *q = malloc(n.q * 4), *k = malloc(n.k * 4), *v = malloc(n.v * 4), *o = malloc(n.o * 4),
          *ref = malloc(n.o * 4), *lse = malloc(n.lse * 4), *lse_ref = malloc(n.lse * 4);
    int rc = 1;
    clattn_plan *plan = NULL;
    cl_command_queue queue = NULL;
    cl_mem mem[5] = {0};
    if (!q || !k || !v || !o || !ref || !lse || !lse_ref) {
        cli_error("demo: out of memory");
        goto done;
    }
    uint64_t st_rng = seed;
    clattn_rng_fill(q, n.q, &st_rng, 1.0f);
    clattn_rng_fill(k, n.k, &st_rng, 1.0f);
    clattn_rng_fill(v, n.v, &st_rng, 1.0f);
    clattn_host_tensors t = {0};
    t.q = q; t.k = k; t.v = v; t.o = ref; t.lse = lse_ref;
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o; t.lse_len = n.lse;
    char msg[512];
    if (clattn_reference_forward(&d, &t, msg, sizeof msg)) {
        cli_error("demo: reference: %s", msg);
        goto done;
    }
    double t0 = cli_now_ms();
    clattn_status st = clattn_plan_create(ctx, &d, &plan);
    double build_ms = cli_now_ms() - t0;
    if (st) {
        cli_error("demo: %s: %s", clattn_status_string(st), clattn_context_last_error(ctx));
        goto done;
    }
    cl_int e;
    cl_context cl = clattn_context_cl_context(ctx);
    queue = clCreateCommandQueue(cl, clattn_context_device(ctx), CL_QUEUE_PROFILING_ENABLE, &e);
    const float *src[3] = {q, k, v};
    const size_t cnt[5] = {n.q, n.k, n.v, n.o, n.lse};
    for (int i = 0; i < 5 && !e; i++)
        mem[i] = clCreateBuffer(cl, i < 3 ? CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR : CL_MEM_READ_WRITE,
                                cnt[i] * 4, i < 3 ? (void *)src[i] : NULL, &e);
    if (e) {
        cli_error("demo: buffer creation failed (%d)", e);
        goto done;
    }
    clattn_buffers bf = {0};
    bf.q = mem[0]; bf.k = mem[1]; bf.v = mem[2]; bf.o = mem[3]; bf.lse = mem[4];
    enum { WARMUP = 2, RUNS = 7 };
    double ms[RUNS];
    for (int r = 0; r < WARMUP + RUNS; r++) {
        /* Wall clock from enqueue to completion: the unfused path is many kernels, and one
         * event's profiling times cannot span them. */
        cl_event ev = NULL;
        const double t_start = cli_now_ms();
        st = clattn_plan_execute(plan, queue, &bf, 0, NULL, &ev);
        if (!st) st = clWaitForEvents(1, &ev);
        if (!st && r >= WARMUP) ms[r - WARMUP] = cli_now_ms() - t_start;
        if (ev) clReleaseEvent(ev);
        if (st) {
            cli_error("demo: execution failed (%d): %s", st, clattn_context_last_error(ctx));
            goto done;
        }
    }
    qsort(ms, RUNS, sizeof ms[0], cmp_double);
    e = clEnqueueReadBuffer(queue, mem[3], CL_TRUE, 0, n.o * 4, o, 0, NULL, NULL);
    if (!e) e = clEnqueueReadBuffer(queue, mem[4], CL_TRUE, 0, n.lse * 4, lse, 0, NULL, NULL);
    if (e) {
        cli_error("demo: read back failed (%d)", e);
        goto done;
    }
    clattn_error eo = clattn_compare(o, ref, n.o), el = clattn_compare(lse, lse_ref, n.lse);
    const bool ok = clattn_error_ok(&eo, 1e-5) && clattn_error_ok(&el, 1e-5);
    double flops = 4.0 * c->b * c->hq * (double)c->nq * c->nk * c->d;
    if (c->causal && c->nq == c->nk) flops /= 2;
    char shape[64];
    snprintf(shape, sizeof shape, "%dx%dx%dx%dx%dx%d%s", c->b, c->hq, c->hkv, c->nq, c->nk, c->d,
             c->causal ? " causal" : "");
    printf("%-28.28s %-28s %-8s %9.3f %9.1f %9.0f %10.2e %10.2e %s\n", dev_name, shape,
           algo == CLATTN_ALGO_FUSED ? "fused" : "unfused", ms[RUNS / 2], flops / (ms[RUNS / 2] * 1e6), build_ms,
           eo.rel_l2, el.rel_l2, ok ? "ok" : "FAIL");
    fflush(stdout);
    rc = ok ? 0 : 1;
done:
    for (int i = 0; i < 5; i++)
        if (mem[i]) clReleaseMemObject(mem[i]);
    if (queue) clReleaseCommandQueue(queue);
    clattn_plan_destroy(plan);
    free(q); free(k); free(v); free(o); free(ref); free(lse); free(lse_ref);
    return rc;
}

int cmd_demo(int argc, char **argv)
{
    const char *device = "all";
    int quick = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
        else return cli_error("demo: unknown option '%s'", argv[i]);
    }
    cl_device_id devs[64];
    cl_uint ndev = 0;
    clattn_status st = clattn_list_devices(devs, 64, &ndev);
    if (st) return cli_error("demo: cannot list OpenCL devices (%d)", st);
    if (ndev == 0) return cli_error("demo: no OpenCL device found");
    const demo_case *cases = quick ? quick_cases : full_cases;
    const int ncases = quick ? (int)(sizeof quick_cases / sizeof quick_cases[0])
                             : (int)(sizeof full_cases / sizeof full_cases[0]);
    printf("%-28s %-28s %-8s %9s %9s %9s %10s %10s %s\n", "device", "BxHqxHkvxNqxNkxD", "algo", "ms(med)",
           "GFLOP/s", "build_ms", "relL2(o)", "relL2(lse)", "check");
    int failures = 0, ran = 0;
    for (cl_uint i = 0; i < ndev && i < 64; i++) {
        char sel[16];
        snprintf(sel, sizeof sel, "%u", i);
        if (strcmp(device, "all") && strcmp(device, sel)) continue;
        clattn_context *ctx = NULL;
        if (cli_open_context(sel, &ctx)) return 1;
        char name[256] = "";
        clGetDeviceInfo(devs[i], CL_DEVICE_NAME, sizeof name - 1, name, NULL);
        for (int c = 0; c < ncases; c++) {
            failures += demo_one(ctx, name, &cases[c], CLATTN_ALGO_FUSED, 1000 + (uint64_t)c);
            failures += demo_one(ctx, name, &cases[c], CLATTN_ALGO_UNFUSED, 1000 + (uint64_t)c);
        }
        clattn_context_destroy(ctx);
        ran++;
    }
    if (!ran) return cli_error("demo: no OpenCL device matches '%s' (see `clattn devices`)", device);
    if (failures) return cli_error("demo: %d case(s) failed", failures);
    return 0;
}
