/* Every device path against the CPU reference, one parametrised sweep run for each: the fused
 * kernels of both families (rows, tiles) and the unfused CLBlast path. Shapes: head dims
 * 1..256, awkward lengths, GQA/MQA, causal in both alignments with Nq < Nk and Nq > Nk,
 * windows, BSHD and strided views, sub-buffers, with and without lse; the unfused path also
 * over masks, ALiBi, softcap, sinks and key lengths. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

TestSuite(forward, .fini = leak_check);

typedef struct fused_case {
    char name[48];
    int b, hq, hkv, nq, nk, d, dv;
    int layout, causal, top_left, window, wl, wr;
    float scale;
} fused_case;

#define C(name, b, hq, hkv, nq, nk, d, ...) {name, b, hq, hkv, nq, nk, d, __VA_ARGS__}

static clattn_desc desc_of(const fused_case *c)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = c->b; d.heads_q = c->hq; d.heads_kv = c->hkv; d.seq_q = c->nq; d.seq_kv = c->nk;
    d.head_dim = c->d; d.head_dim_v = c->dv; d.layout = (clattn_layout)c->layout;
    d.causal = c->causal; d.causal_align = c->top_left ? CLATTN_CAUSAL_TOP_LEFT : CLATTN_CAUSAL_BOTTOM_RIGHT;
    d.use_window = c->window; d.window_left = c->wl; d.window_right = c->wr; d.scale = c->scale;
    d.algo = CLATTN_ALGO_FUSED;
    return d;
}

static fused_case cases[] = {
        /* head dims (DESIGN.md list) with lengths that are no multiple of any tile */
    C("d32", 1, 2, 2, 37, 41, 32),
    C("d40", 1, 2, 2, 29, 53, 40),
    C("d64", 2, 3, 3, 64, 64, 64),
    C("d80", 1, 2, 2, 33, 70, 80),
    C("d96", 1, 2, 1, 17, 100, 96),
    C("d112", 1, 2, 2, 19, 23, 112),
    C("d128", 1, 4, 2, 70, 90, 128),
    C("d256", 1, 2, 2, 13, 31, 256),
    C("d1", 1, 2, 2, 9, 11, 1),
    C("d33_odd", 1, 1, 1, 21, 18, 33),
    C("dv_differs", 1, 2, 2, 15, 25, 64, 32),
        /* lengths of 1 */
    C("nq1_nk1", 1, 1, 1, 1, 1, 64),
    C("decode_nq1", 2, 8, 8, 1, 257, 64, 0, 0, 1),
    C("nk1", 1, 2, 2, 17, 1, 64),
        /* GQA ratios and MQA */
    C("gqa2", 1, 4, 2, 33, 33, 64, 0, 0, 1),
    C("gqa4", 2, 8, 2, 20, 45, 64),
    C("gqa8", 1, 8, 1, 31, 31, 128, 0, 0, 1),
    C("mqa", 1, 6, 1, 25, 40, 64),
        /* causal alignment: bottom-right with Nq < Nk and Nq > Nk (leading empty rows) */
    C("causal_square", 1, 2, 2, 129, 129, 64, 0, 0, 1),
    C("causal_nq_lt_nk", 1, 2, 2, 30, 100, 64, 0, 0, 1),
    C("causal_nq_gt_nk", 1, 2, 2, 100, 30, 64, 0, 0, 1),
    C("causal_top_left_lt", 1, 2, 2, 30, 100, 64, 0, 0, 1, 1),
    C("causal_top_left_gt", 1, 2, 2, 100, 30, 64, 0, 0, 1, 1),
    C("causal_decode", 1, 4, 4, 3, 200, 64, 0, 0, 1),
        /* sliding windows: narrower than a tile, wider than the sequence, one-sided */
    C("window_3_0", 1, 2, 2, 70, 70, 64, 0, 0, 0, 0, 1, 3, 0),
    C("window_wide", 1, 2, 2, 40, 60, 64, 0, 0, 0, 0, 1, 500, 500),
    /* sides near INT_MAX: the kernels' i + offset + side must not overflow (more queries than
       keys, so the offset is negative) */
    C("window_int_max", 1, 2, 2, 90, 30, 64, 0, 0, 0, 0, 1, 2147483647, 2147483646),
    C("window_left_only", 1, 2, 2, 50, 50, 64, 0, 0, 0, 0, 1, 5, -1),
    C("window_causal", 1, 2, 2, 50, 80, 64, 0, 1, 0, 0, 1, 9, 4),
        /* layouts and scale */
    C("bshd", 2, 4, 2, 27, 35, 64, 0, CLATTN_LAYOUT_BSHD, 1),
    C("bshd_d80", 1, 3, 3, 19, 19, 80, 0, CLATTN_LAYOUT_BSHD),
    C("scale", 1, 2, 2, 24, 24, 64, 0, 0, 0, 0, 0, 0, 0, 0.71f),
    C("batch3", 3, 2, 1, 16, 48, 32, 0, 0, 1),
    C("rows_past_one_group", 1, 2, 2, 131, 140, 64, 0, 0, 1), /* 3 work-groups of 64, partial */
    /* regression: this grid made PoCL pick 256x8 work-groups for the rows kernel, whose
     * private arrays then overflowed the worker's stack (a segfault at d=128 and above) */
    C("many_row_blocks_d256", 1, 8, 8, 2048, 16, 256),
};

/* PATH_MMA: the tensor-core family, which stores f16/bf16 only: each case in one of them. */
typedef enum path { PATH_ROWS, PATH_TILES, PATH_UNFUSED, PATH_MMA, PATH_DECODE, PATH_RTILE } path;

static clattn_context *context_for(path p)
{
    return test_context_family(p == PATH_ROWS ? CLATTN_KERNELS_ROWS : p == PATH_TILES ? CLATTN_KERNELS_TILES
                               : p == PATH_MMA ? CLATTN_KERNELS_MMA : p == PATH_DECODE ? CLATTN_KERNELS_DECODE
                               : p == PATH_RTILE ? CLATTN_KERNELS_RTILE
                               : CLATTN_KERNELS_AUTO);
}

static void sweep(const fused_case *c, path p)
{
    clattn_context *ctx = context_for(p);
    clattn_desc d = desc_of(c);
    d.algo = p == PATH_UNFUSED ? CLATTN_ALGO_UNFUSED : CLATTN_ALGO_FUSED;
    run_opts opts = {seed_for(c->name), false, false, NULL};
    if (p == PATH_MMA) d.dtype = opts.seed & 1 ? CLATTN_DTYPE_BF16 : CLATTN_DTYPE_F16;
    if (p == PATH_DECODE && c->hq / c->hkv * c->nq > 16) { /* its bound: refused, with the reason */
        clattn_plan *plan = NULL;
        cr_expect_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_UNSUPPORTED, "%s on the decode family", c->name);
        cr_expect(strstr(clattn_context_last_error(ctx), "rows per KV head"), "%s", clattn_context_last_error(ctx));
        clattn_context_destroy(ctx);
        return;
    }
    run_result r = run_and_compare(ctx, &d, &opts);
    expect_ok(&r, c->name, opts.seed);
    clattn_context_destroy(ctx);
}

/* The same sweep for every path, whatever the device. */
#define NCASES (sizeof cases / sizeof cases[0])
ParameterizedTestParameters(forward, rows) { return cr_make_param_array(fused_case, cases, NCASES); }
ParameterizedTest(fused_case *c, forward, rows, .timeout = 120) { sweep(c, PATH_ROWS); }
ParameterizedTestParameters(forward, tiles) { return cr_make_param_array(fused_case, cases, NCASES); }
ParameterizedTest(fused_case *c, forward, tiles, .timeout = 120) { sweep(c, PATH_TILES); }
ParameterizedTestParameters(forward, unfused) { return cr_make_param_array(fused_case, cases, NCASES); }
ParameterizedTest(fused_case *c, forward, unfused, .timeout = 300) { sweep(c, PATH_UNFUSED); }
ParameterizedTestParameters(forward, mma) { return cr_make_param_array(fused_case, cases, NCASES); }
ParameterizedTest(fused_case *c, forward, mma, .timeout = 300) { sweep(c, PATH_MMA); }
ParameterizedTestParameters(forward, decode) { return cr_make_param_array(fused_case, cases, NCASES); }
ParameterizedTest(fused_case *c, forward, decode, .timeout = 300) { sweep(c, PATH_DECODE); }
ParameterizedTestParameters(forward, rtile) { return cr_make_param_array(fused_case, cases, NCASES); }
ParameterizedTest(fused_case *c, forward, rtile, .timeout = 300) { sweep(c, PATH_RTILE); }

/* The tensor-core family on strided f16 views (odd element offsets between rows) and on
 * sub-buffers; and its refusals: f32 storage, head dims above 256, the backward pass. */
Test(forward, mma_strided_and_refusals, .timeout = 300)
{
    const int B = 2, H = 3, N = 37, D = 40;
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = B; d.heads_q = H; d.seq_q = N; d.seq_kv = N; d.head_dim = D; d.causal = 1;
    d.dtype = CLATTN_DTYPE_F16; d.algo = CLATTN_ALGO_FUSED;
    d.layout = CLATTN_LAYOUT_STRIDED;
    const int64_t row = 3 * H * D + 1; /* rows start at odd elements */
    d.q_strides = (clattn_strides){N * row, D, row};
    d.k_strides = d.q_strides;
    d.v_strides = d.q_strides;
    d.o_strides = (clattn_strides){2 * N * H * D, D, 2 * H * D};
    clattn_context *ctx = context_for(PATH_MMA);
    run_opts opts = {seed_for("mma_strided"), false, true, NULL};
    run_result r = run_and_compare(ctx, &d, &opts);
    expect_ok(&r, "mma strided f16 on sub-buffers", opts.seed);
    cr_expect(strstr(r.variant, "mma ") == r.variant, "ran %s, not the mma family", r.variant);

    clattn_desc f = CLATTN_DESC_INIT;
    f.batch = 1; f.heads_q = 2; f.seq_q = 16; f.seq_kv = 16; f.head_dim = 64; f.algo = CLATTN_ALGO_FUSED;
    clattn_plan *plan = NULL;
    cr_expect_eq(clattn_plan_create(ctx, &f, &plan), CLATTN_UNSUPPORTED, "f32 storage is not the mma family's");
    cr_expect(strstr(clattn_context_last_error(ctx), "f16 and bf16"), "%s", clattn_context_last_error(ctx));
    f.dtype = CLATTN_DTYPE_BF16;
    f.head_dim = 288;
    cr_expect_eq(clattn_plan_create(ctx, &f, &plan), CLATTN_UNSUPPORTED, "head dims above 256");
    f.head_dim = 64;
    f.pass = CLATTN_PASS_BACKWARD;
    cr_expect_eq(clattn_plan_create(ctx, &f, &plan), CLATTN_UNSUPPORTED, "no backward kernels");
    cr_expect_null(plan);
    clattn_context_destroy(ctx);
}

/* Strided views: q, k, v as slices of one packed QKV projection output (B, N, 3, H, D), and
 * o written into every other row of a larger buffer. */
Test(forward, strided_packed_qkv, .timeout = 300)
{
    const int B = 2, H = 3, N = 21, D = 64;
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = B; d.heads_q = H; d.seq_q = N; d.seq_kv = N; d.head_dim = D; d.causal = 1;
    d.layout = CLATTN_LAYOUT_STRIDED;
    const int64_t row = 3 * H * D;
    d.q_strides = (clattn_strides){N * row, D, row};
    d.k_strides = d.q_strides;
    d.v_strides = d.q_strides;
    d.o_strides = (clattn_strides){2 * N * H * D, D, 2 * H * D}; /* gaps between rows */
    for (path p = PATH_ROWS; p <= PATH_UNFUSED; p++) {
        clattn_context *ctx = context_for(p);
        d.algo = p == PATH_UNFUSED ? CLATTN_ALGO_UNFUSED : CLATTN_ALGO_FUSED;
        run_opts opts = {seed_for("strided_packed_qkv") + p, false, false, NULL};
        run_result r = run_and_compare(ctx, &d, &opts);
        expect_ok(&r, p == PATH_ROWS ? "strided rows" : p == PATH_TILES ? "strided tiles" : "strided unfused", opts.seed);
        clattn_context_destroy(ctx);
    }
}

Test(forward, sub_buffers, .timeout = 300)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 4; d.heads_kv = 2; d.seq_q = 45; d.seq_kv = 77; d.head_dim = 64; d.causal = 1;
    for (path p = PATH_ROWS; p <= PATH_UNFUSED; p++) {
        clattn_context *ctx = context_for(p);
        d.algo = p == PATH_UNFUSED ? CLATTN_ALGO_UNFUSED : CLATTN_ALGO_FUSED;
        run_opts opts = {seed_for("sub_buffers") + p, false, true, NULL};
        run_result r = run_and_compare(ctx, &d, &opts);
        expect_ok(&r, "sub_buffers", opts.seed);
        clattn_context_destroy(ctx);
    }
}

Test(forward, without_lse_leaves_lse_alone, .timeout = 120)
{
    clattn_context *ctx = test_context();
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 2; d.seq_q = 33; d.seq_kv = 33; d.head_dim = 64;
    run_opts opts = {seed_for("no_lse"), true, false, NULL};
    run_result r = run_and_compare(ctx, &d, &opts);
    cr_expect(r.guards_ok, "lse buffer was written although not requested");
    cr_expect(clattn_error_ok(&r.o, 1e-5), "o rel L2 %.3e", r.o.rel_l2);
    clattn_context_destroy(ctx);
}

/* Rows with no allowed key (causal, Nq > Nk bottom-right) give o = 0 and lse = -inf exactly. */
Test(forward, empty_rows_are_zero_not_nan, .timeout = 120)
{
    clattn_context *ctx = test_context();
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 1; d.seq_q = 8; d.seq_kv = 3; d.head_dim = 32; d.causal = 1;
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&d, &n);
    float q[8 * 32], k[3 * 32], v[3 * 32], o[8 * 32], lse[8];
    uint64_t rng = 77;
    clattn_rng_fill(q, n.q, &rng, 1.0f);
    clattn_rng_fill(k, n.k, &rng, 1.0f);
    clattn_rng_fill(v, n.v, &rng, 1.0f);
    for (int i = 0; i < 8 * 32; i++) o[i] = NAN;
    clattn_host_tensors t = {sizeof(clattn_host_tensors), q, k, v, o, lse, NULL, NULL, NULL, NULL, n.q, n.k, n.v, n.o, n.lse, 0};
    cr_assert_eq(clattn_forward_host(ctx, &d, &t), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    for (int i = 0; i < 5; i++) { /* rows 0..4 see no key: j <= i + 3 - 8 < 0 */
        cr_expect(isinf(lse[i]) && lse[i] < 0, "row %d lse = %g, want -inf", i, lse[i]);
        for (int c = 0; c < 32; c++) cr_expect_eq(o[i * 32 + c], 0.0f, "row %d col %d = %g", i, c, o[i * 32 + c]);
    }
    for (int i = 5; i < 8; i++) cr_expect(isfinite(lse[i]), "row %d lse = %g", i, lse[i]);
    clattn_context_destroy(ctx);
}

/* Buffer offsets: q, k, v, o and lse live at element offsets inside larger buffers. */
Test(forward, element_offsets, .timeout = 120)
{
    clattn_context *ctx = test_context();
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 2; d.seq_q = 10; d.seq_kv = 12; d.head_dim = 32;
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&d, &n);
    const size_t off = 13;
    float *all = malloc((off + n.q + off + n.k + off + n.v) * 4), *ref = malloc(n.o * 4), *lref = malloc(n.lse * 4);
    uint64_t rng = 99;
    clattn_rng_fill(all, off + n.q + off + n.k + off + n.v, &rng, 1.0f);
    const float *q = all + off, *k = q + n.q + off, *v = k + n.k + off;
    clattn_host_tensors t = {sizeof(clattn_host_tensors), q, k, v, ref, lref, NULL, NULL, NULL, NULL, n.q, n.k, n.v, n.o, n.lse, 0};
    cr_assert_eq(clattn_reference_forward(&d, &t, NULL, 0), CLATTN_SUCCESS);
    cl_context cl = clattn_context_cl_context(ctx);
    cl_int e;
    cl_command_queue qu = clCreateCommandQueue(cl, clattn_context_device(ctx), 0, &e);
    cl_mem in = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, (off + n.q + off + n.k + off + n.v) * 4, all, &e);
    cr_assert_eq(e, CL_SUCCESS);
    cl_mem out = clCreateBuffer(cl, CL_MEM_READ_WRITE, (off + n.o + off + n.lse) * 4, NULL, &e);
    cr_assert_eq(e, CL_SUCCESS);
    clattn_buffers bf = CLATTN_BUFFERS_INIT;
    bf.q = in; bf.k = in; bf.v = in; bf.o = out; bf.lse = out;
    bf.q_offset = off; bf.k_offset = off + n.q + off; bf.v_offset = bf.k_offset + n.k + off;
    bf.o_offset = off; bf.lse_offset = off + n.o + off;
    clattn_plan *plan;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS);
    cl_event ev;
    cr_assert_eq(clattn_plan_execute(plan, qu, &bf, 0, NULL, &ev), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    float *got = malloc((off + n.o + off + n.lse) * 4);
    cr_assert_eq(clEnqueueReadBuffer(qu, out, CL_TRUE, 0, (off + n.o + off + n.lse) * 4, got, 1, &ev, NULL), CL_SUCCESS);
    clattn_error eo = clattn_compare(got + off, ref, n.o, (size_t)d.head_dim),
                 el = clattn_compare(got + off + n.o + off, lref, n.lse, 1);
    cr_expect(clattn_error_ok(&eo, 1e-5), "o rel L2 %.3e", eo.rel_l2);
    cr_expect(clattn_error_ok(&el, 1e-5), "lse rel L2 %.3e", el.rel_l2);
    clReleaseEvent(ev);
    clattn_plan_destroy(plan);
    clReleaseMemObject(in); clReleaseMemObject(out); clReleaseCommandQueue(qu);
    free(all); free(ref); free(lref); free(got);
    clattn_context_destroy(ctx);
}

/* A longer sequence: many key blocks, the running max rescaled many times. */
Test(forward, long_sequence, .timeout = 300)
{
    clattn_context *ctx = test_context();
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 2; d.seq_q = 600; d.seq_kv = 1100; d.head_dim = 64; d.causal = 1;
    run_opts opts = {seed_for("long_sequence"), false, false, NULL};
    run_result r = run_and_compare(ctx, &d, &opts);
    expect_ok(&r, "long_sequence", opts.seed);
    clattn_context_destroy(ctx);
}
