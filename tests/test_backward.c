/* The backward pass on every device path against the reference backward (which is itself
 * checked against finite differences in test_reference.c): the fused kernels of both families
 * (rows, tiles) and the unfused CLBlast path, over head dims, awkward lengths, GQA/MQA, causal in both alignments,
 * windows, every feature, f16/bf16, packed sequences; the gradients byte-identical across runs. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "harness.h"
#include "sampled.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(backward, .fini = leak_check);

typedef struct bwd_case {
    char name[40];
    int b, hq, hkv, nq, nk, d, dv;
    int causal, top_left, window, wl, wr, mask, alibi, sinks, seqused, varlen, dtype, layout;
    float softcap;
} bwd_case;

static clattn_desc desc_of(const bwd_case *c, clattn_algo algo)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = c->b; d.heads_q = c->hq; d.heads_kv = c->hkv; d.seq_q = c->nq; d.seq_kv = c->nk;
    d.head_dim = c->d; d.head_dim_v = c->dv; d.causal = c->causal; d.softcap = c->softcap;
    d.causal_align = c->top_left ? CLATTN_CAUSAL_TOP_LEFT : CLATTN_CAUSAL_BOTTOM_RIGHT;
    d.use_window = c->window; d.window_left = c->wl; d.window_right = c->wr;
    d.has_mask = c->mask; d.has_alibi = c->alibi; d.has_sinks = c->sinks; d.has_seqused_k = c->seqused;
    d.varlen = c->varlen; d.dtype = (clattn_dtype)c->dtype; d.layout = (clattn_layout)c->layout;
    if (c->varlen) d.layout = CLATTN_LAYOUT_BSHD;
    d.algo = algo;
    d.pass = CLATTN_PASS_BACKWARD;
    return d;
}

#define C(name, b, hq, hkv, nq, nk, d, ...) {name, b, hq, hkv, nq, nk, d, __VA_ARGS__}

static bwd_case cases[] = {
    /* head dims and lengths no tile divides */
    C("d32", 1, 2, 2, 37, 41, 32, 32),
    C("d40_dv_differs", 1, 2, 2, 29, 53, 40, 24),
    C("d64", 2, 3, 3, 64, 64, 64, 64),
    C("d80", 1, 2, 2, 33, 70, 80, 80),
    C("d128", 1, 4, 2, 70, 90, 128, 128),
    C("d256", 1, 2, 1, 13, 31, 256, 256),
    C("d1", 1, 2, 2, 9, 11, 1, 1),
    C("nq1_nk1", 1, 1, 1, 1, 1, 64, 64),
    C("decode", 2, 8, 2, 1, 257, 64, 64, 1),
    /* GQA and MQA: dK and dV sum over the query heads */
    C("gqa4_causal", 2, 8, 2, 20, 45, 64, 64, 1),
    C("mqa", 1, 6, 1, 25, 40, 64, 64),
    /* alignments and windows, with leading empty rows */
    C("causal_nq_gt_nk", 1, 2, 2, 40, 17, 64, 64, 1),
    C("causal_top_left", 1, 2, 2, 30, 50, 64, 64, 1, 1),
    C("window_3_0", 1, 2, 2, 50, 50, 64, 64, 0, 0, 1, 3, 0),
    C("window_causal", 1, 2, 2, 40, 60, 32, 32, 1, 0, 1, 9, 4),
    /* the formula's terms */
    C("softcap", 1, 2, 2, 33, 47, 64, 64, .softcap = 5.0f),
    C("mask_alibi", 2, 4, 2, 21, 35, 32, 32, 1, .mask = 1, .alibi = 1),
    C("sinks_seqused", 3, 4, 2, 19, 40, 64, 64, 1, .sinks = 1, .seqused = 1),
    C("varlen", 4, 4, 2, 23, 31, 64, 64, 1, .varlen = 1),
    C("varlen_everything", 4, 2, 1, 17, 29, 32, 32, 1, .mask = 1, .alibi = 1, .sinks = 1, .seqused = 1,
      .varlen = 1, .softcap = 3.0f),
    /* storage types and layouts */
    C("f16", 1, 4, 2, 33, 40, 64, 64, 1, .dtype = CLATTN_DTYPE_F16),
    C("bf16", 1, 4, 2, 33, 40, 64, 64, 1, .dtype = CLATTN_DTYPE_BF16),
    C("bshd", 2, 4, 2, 27, 35, 64, 64, 1, .layout = CLATTN_LAYOUT_BSHD),
};

typedef enum path { PATH_ROWS, PATH_TILES, PATH_UNFUSED, NPATHS } path;

typedef struct path_case {
    bwd_case c;
    int path;
} path_case;

ParameterizedTestParameters(backward, paths)
{
    static path_case all[NPATHS * sizeof cases / sizeof cases[0]];
    size_t n = 0;
    for (int p = 0; p < NPATHS; p++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) all[n++] = (path_case){cases[i], p};
    return cr_make_param_array(path_case, all, n);
}

ParameterizedTest(path_case *p, backward, paths, .timeout = 300)
{
    clattn_context *ctx = test_context_family(p->path == PATH_TILES ? CLATTN_KERNELS_TILES : CLATTN_KERNELS_ROWS);
    const clattn_desc d = desc_of(&p->c, p->path == PATH_UNFUSED ? CLATTN_ALGO_UNFUSED : CLATTN_ALGO_FUSED);
    run_opts opts = {0};
    opts.seed = seed_for(p->c.name) + (uint64_t)p->path;
    run_result r = run_and_compare(ctx, &d, &opts);
    expect_ok(&r, p->c.name, opts.seed);
    clattn_context_destroy(ctx);
}

/* A wrong gradient is caught (the comparison of the backward can fail). */
Test(backward, wrong_gradient_caught, .timeout = 120)
{
    clattn_context *ctx = test_context();
    const clattn_desc d = desc_of(&cases[2], CLATTN_ALGO_AUTO);
    run_opts opts = {0};
    opts.seed = 5;
    opts.inject_error = true;
    run_result r = run_and_compare(ctx, &d, &opts);
    cr_expect(!verify_ok(&r), "an injected error in dk passed: rel %.3e", r.dk.rel_l2);
    clattn_context_destroy(ctx);
}

/* The backward's own buffer rules: dq, dk, dv go through q's, k's and v's strides, so a
 * broadcast view (stride 0) is refused; the host call's gradients may not overlap o or lse
 * (which it reads; the reference recomputes them); two inputs may share bytes (o and d_o in
 * one buffer run). */
Test(backward, buffer_rules, .timeout = 120)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 4; d.heads_kv = 2; d.seq_q = 9; d.seq_kv = 11; d.head_dim = 16; d.causal = 1;
    d.pass = CLATTN_PASS_BACKWARD;
    char msg[256];
    clattn_desc bc = d; /* k broadcast over its heads, as a torch expand() view */
    bc.layout = CLATTN_LAYOUT_STRIDED;
    bc.q_strides = (clattn_strides){4L * 9 * 16, 9L * 16, 16};
    bc.o_strides = bc.q_strides;
    bc.k_strides = (clattn_strides){11L * 16, 0, 16};
    bc.v_strides = (clattn_strides){2L * 11 * 16, 11L * 16, 16};
    cr_expect_eq(clattn_desc_validate(&bc, msg, sizeof msg), CLATTN_INVALID_STRIDES);
    cr_expect(strstr(msg, "k_strides") && strstr(msg, "dk"), "%s", msg);
    bc.pass = CLATTN_PASS_FORWARD; /* the forward only reads k: a broadcast view is fine there */
    cr_expect_eq(clattn_desc_validate(&bc, msg, sizeof msg), CLATTN_SUCCESS, "%s", msg);

    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    cr_assert_eq(clattn_desc_tensor_sizes(&d, &n), CLATTN_SUCCESS);
    const size_t total = n.q + n.k + n.v + 2 * n.o + n.lse + n.q + n.k + n.v;
    float *m = malloc(total * 4);
    uint64_t rng = 3;
    clattn_rng_fill(m, total, &rng, 1.0f);
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    float *p = m;
    t.q = p; p += n.q; t.k = p; p += n.k; t.v = p; p += n.v; t.d_o = p; p += n.o; t.o = p; p += n.o;
    t.lse = p; p += n.lse; t.dq = p; p += n.q; t.dk = p; p += n.k; t.dv = p;
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.do_len = t.o_len = n.o; t.lse_len = n.lse;
    t.dq_len = n.q; t.dk_len = n.k; t.dv_len = n.v;
    clattn_desc fwd = d;
    fwd.pass = CLATTN_PASS_FORWARD;
    cr_assert_eq(clattn_reference_forward(&fwd, &t, msg, sizeof msg), CLATTN_SUCCESS, "%s", msg);
    clattn_context *ctx = test_context();
    clattn_host_tensors bad = t;
    bad.dq = (float *)t.o; /* a gradient over the forward's o */
    cr_expect_eq(clattn_backward_host(ctx, &d, &bad), CLATTN_BUFFERS_OVERLAP, "%s", clattn_context_last_error(ctx));

    /* device buffers: o and d_o the same bytes (both inputs) is accepted */
    cl_context cl = clattn_context_cl_context(ctx);
    cl_int e;
    cl_command_queue qu = clCreateCommandQueue(cl, clattn_context_device(ctx), 0, &e);
    cl_mem in[4], grad[3];
    const float *src[4] = {t.q, t.k, t.v, t.o};
    const size_t len[4] = {n.q, n.k, n.v, n.o};
    for (int i = 0; i < 4; i++) in[i] = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, len[i] * 4,
                                                       (void *)src[i], &e);
    cl_mem lm = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n.lse * 4, (void *)t.lse, &e);
    for (int i = 0; i < 3; i++) grad[i] = clCreateBuffer(cl, CL_MEM_READ_WRITE, len[i] * 4, NULL, &e);
    clattn_plan *plan = NULL;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    clattn_buffers bf = CLATTN_BUFFERS_INIT;
    bf.q = in[0]; bf.k = in[1]; bf.v = in[2]; bf.o = in[3]; bf.d_o = in[3]; bf.lse = lm;
    bf.dq = grad[0]; bf.dk = grad[1]; bf.dv = grad[2];
    cr_expect_eq(clattn_plan_execute(plan, qu, &bf, 0, NULL, NULL), CLATTN_SUCCESS, "%s",
                 clattn_context_last_error(ctx));
    bf.dq = in[3]; /* but not an output over an input */
    cr_expect_eq(clattn_plan_execute(plan, qu, &bf, 0, NULL, NULL), CLATTN_BUFFERS_OVERLAP);
    cr_assert_eq(clFinish(qu), CL_SUCCESS);
    clattn_plan_destroy(plan);
    for (int i = 0; i < 4; i++) clReleaseMemObject(in[i]);
    for (int i = 0; i < 3; i++) clReleaseMemObject(grad[i]);
    clReleaseMemObject(lm);
    clReleaseCommandQueue(qu);
    clattn_context_destroy(ctx);
    free(m);
}

/* Determinism: the same inputs give byte-identical gradients on every run and whatever the
 * number of threads. Each run is a child process (PoCL reads its thread count once, when a
 * process first touches OpenCL): one with POCL_MAX_PTHREAD_COUNT=1, two with the default. */
enum { DET_RUNS = 3 };

static size_t det_bytes(const clattn_desc *d)
{
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(d, &n);
    return (n.q + n.k + n.v) * 4 + (size_t)d->heads_q * 4;
}

/* In a child: the backward of fixed inputs on `family` (or unfused) into out. */
static int det_child(clattn_desc d, clattn_kernel_family family, unsigned char *out)
{
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&d, &n);
    float *in = malloc((n.q + n.k + n.v + 2 * n.o + n.lse) * 4 + 64), sinks[8];
    if (!in) return 2;
    uint64_t rng = 1234;
    clattn_rng_fill(in, n.q + n.k + n.v + n.o, &rng, 1.0f);
    clattn_rng_fill(sinks, 8, &rng, 1.0f);
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = in; t.k = in + n.q; t.v = in + n.q + n.k; t.d_o = in + n.q + n.k + n.v;
    t.o = in + n.q + n.k + n.v + n.o; t.lse = in + n.q + n.k + n.v + 2 * n.o; t.sinks = sinks;
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.do_len = t.o_len = n.o; t.lse_len = n.lse;
    clattn_desc fwd = d;
    fwd.pass = CLATTN_PASS_FORWARD;
    if (clattn_reference_forward(&fwd, &t, NULL, 0)) return 3; /* o and lse as a forward wrote them */
    float *g = (float *)out;
    t.dq = g; t.dk = g + n.q; t.dv = g + n.q + n.k; t.dsinks = g + n.q + n.k + n.v;
    t.dq_len = n.q; t.dk_len = n.k; t.dv_len = n.v;
    clattn_context *ctx = NULL;
    clattn_context_options o = CLATTN_CONTEXT_OPTIONS_INIT;
    o.kernel_family = family;
    int rc = clattn_context_create(&o, &ctx) ? 4 : clattn_backward_host(ctx, &d, &t) ? 5 : 0;
    clattn_context_destroy(ctx);
    free(in);
    return rc;
}

typedef struct det_case {
    int path;
} det_case;

ParameterizedTestParameters(backward, deterministic)
{
    static det_case c[] = {{PATH_ROWS}, {PATH_TILES}, {PATH_UNFUSED}};
    return cr_make_param_array(det_case, c, 3);
}

ParameterizedTest(det_case *c, backward, deterministic, .timeout = 300)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 2; d.heads_q = 4; d.heads_kv = 2; d.seq_q = 70; d.seq_kv = 130; d.head_dim = 64; d.causal = 1;
    d.has_sinks = 1; d.pass = CLATTN_PASS_BACKWARD;
    d.algo = c->path == PATH_UNFUSED ? CLATTN_ALGO_UNFUSED : CLATTN_ALGO_FUSED;
    const clattn_kernel_family fam = c->path == PATH_TILES ? CLATTN_KERNELS_TILES : CLATTN_KERNELS_ROWS;
    const size_t bytes = det_bytes(&d);
    unsigned char *shared = mmap(NULL, DET_RUNS * bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(shared != MAP_FAILED);
    memset(shared, 0xab, DET_RUNS * bytes);
    for (int run = 0; run < DET_RUNS; run++) {
        const pid_t pid = fork();
        cr_assert(pid >= 0, "fork");
        if (pid == 0) {
            if (run == 0) setenv("POCL_MAX_PTHREAD_COUNT", "1", 1);
            _exit(det_child(d, fam, shared + (size_t)run * bytes));
        }
        int status = 0;
        waitpid(pid, &status, 0);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "run %d failed (status %d)", run, status);
    }
    for (int run = 1; run < DET_RUNS; run++)
        cr_expect(!memcmp(shared, shared + (size_t)run * bytes, bytes), "run %d%s differs from the 1-thread run", run,
                  run == 1 ? "" : " (default threads, again)");
    bool nonzero = false;
    for (size_t i = 0; i < bytes && !nonzero; i++) nonzero = shared[i] != 0;
    cr_expect(nonzero, "the gradients are all zero: the comparison would prove nothing");
    munmap(shared, DET_RUNS * bytes);
}

/* The program's sampled check of a large backward (tests/support/sampled.c) agrees with a
 * correct device result and catches a wrong key's gradient. */
Test(backward, sampled_check, .timeout = 120)
{
    const sampled_case sc = {2, 4, 2, 37, 53, 32, 1, CLATTN_DTYPE_F32};
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = sc.b; d.heads_q = sc.hq; d.heads_kv = sc.hkv; d.seq_q = sc.nq; d.seq_kv = sc.nk; d.head_dim = sc.d;
    d.causal = 1;
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    cr_assert_eq(clattn_desc_tensor_sizes(&d, &n), CLATTN_SUCCESS);
    float *x = malloc((n.q + n.k + n.v + 2 * n.o + n.lse + n.q + n.k + n.v) * 4);
    float *q = x, *k = q + n.q, *v = k + n.k, *o = v + n.v, *dout = o + n.o, *lse = dout + n.o, *dq = lse + n.lse,
          *dk = dq + n.q, *dv = dk + n.k;
    uint64_t rng = 77;
    clattn_rng_fill(x, n.q + n.k + n.v + 2 * n.o, &rng, 1.0f);
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = q; t.k = k; t.v = v; t.o = o; t.lse = lse; t.d_o = dout; t.dq = dq; t.dk = dk; t.dv = dv;
    t.q_len = t.dq_len = n.q; t.k_len = t.dk_len = n.k; t.v_len = t.dv_len = n.v; t.o_len = t.do_len = n.o;
    t.lse_len = n.lse;
    cr_assert_eq(clattn_reference_forward(&d, &t, NULL, 0), CLATTN_SUCCESS);
    clattn_context *ctx = test_context();
    cr_assert_eq(clattn_backward_host(ctx, &d, &t), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    sampled_error e;
    cr_assert_eq(sampled_backward_check(&sc, q, k, v, o, lse, dout, dq, dk, dv, 24, &e), 0);
    cr_expect(e.dq <= 2e-5 && e.dk <= 2e-5 && e.dv <= 2e-5 && !e.nonfinite, "a correct result: %.2e %.2e %.2e", e.dq,
              e.dk, e.dv);
    dk[n.k - 1] += 0.5f; /* the last key is always sampled */
    cr_assert_eq(sampled_backward_check(&sc, q, k, v, o, lse, dout, dq, dk, dv, 24, &e), 0);
    cr_expect(e.dk > 1e-3, "a wrong key's gradient passed: %.2e", e.dk);
    clattn_context_destroy(ctx);
    free(x);
}
