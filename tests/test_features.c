/* Every variant of the formula on every device path — fused rows, fused tiles, unfused —
 * against the reference: additive masks with every broadcast pattern, ALiBi, softcap, sinks,
 * per-batch key lengths, packed varlen batches, f16/bf16 storage, split-KV decode, head dims
 * to 576/512; then the unfused path's chunked scratch, caller scratch, events and fallback. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

TestSuite(features, .fini = leak_check);

typedef struct feature_case {
    char name[40];
    int b, hq, hkv, nq, nk, d, dv;
    int causal, top_left, window, wl, wr;
    float softcap, amplitude, v_amplitude;
    int mask, mask_b0, mask_h0, mask_r0; /* mask, and which of its dims broadcast (stride 0) */
    int alibi, sinks, seqused, varlen, dtype, splits;
    int bshd; /* k and v with a token's heads side by side (varlen implies it) */
} feature_case;

static clattn_desc desc_of(const feature_case *c)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = c->b; d.heads_q = c->hq; d.heads_kv = c->hkv; d.seq_q = c->nq; d.seq_kv = c->nk;
    d.head_dim = c->d; d.head_dim_v = c->dv;
    d.causal = c->causal; d.causal_align = c->top_left ? CLATTN_CAUSAL_TOP_LEFT : CLATTN_CAUSAL_BOTTOM_RIGHT;
    d.use_window = c->window; d.window_left = c->wl; d.window_right = c->wr;
    d.softcap = c->softcap;
    d.has_alibi = c->alibi; d.has_sinks = c->sinks; d.has_seqused_k = c->seqused;
    d.varlen = c->varlen;
    if (c->varlen || c->bshd) d.layout = CLATTN_LAYOUT_BSHD;
    d.dtype = (clattn_dtype)c->dtype;
    d.num_splits = c->splits;
    if (c->mask) {
        d.has_mask = 1;
        const int64_t row = c->mask_r0 ? 0 : c->nk;
        const int64_t rows_per_head = c->mask_r0 ? 1 : c->nq;
        const int64_t head = c->mask_h0 ? 0 : rows_per_head * c->nk;
        const int64_t batch = c->mask_b0 ? 0 : (c->mask_h0 ? 1 : c->hq) * rows_per_head * c->nk;
        d.mask_strides = (clattn_strides){batch, head, row};
    }
    return d;
}

static feature_case cases[] = {
    {"mask_dense", 2, 4, 2, 17, 23, 32, .mask = 1},
    {"mask_bcast_batch", 2, 4, 2, 17, 23, 32, .mask = 1, .mask_b0 = 1},
    {"mask_bcast_heads", 3, 2, 2, 9, 30, 64, .mask = 1, .mask_h0 = 1, .causal = 1},
    {"mask_key_padding", 3, 4, 1, 12, 40, 32, .mask = 1, .mask_h0 = 1, .mask_r0 = 1},
    {"mask_bcast_b_and_h", 2, 3, 3, 11, 13, 48, .mask = 1, .mask_b0 = 1, .mask_h0 = 1},
    {"alibi_causal", 1, 8, 2, 40, 40, 64, .alibi = 1, .causal = 1},
    {"alibi_top_left", 1, 4, 4, 20, 45, 32, .alibi = 1, .causal = 1, .top_left = 1},
    {"softcap_large_logits", 1, 4, 4, 33, 33, 64, .softcap = 30.0f, .amplitude = 4.0f},
    {"softcap_causal", 2, 2, 1, 16, 50, 128, .softcap = 5.0f, .causal = 1},
    {"sinks", 1, 4, 2, 25, 31, 64, .sinks = 1},
    {"sinks_empty_rows", 4, 2, 2, 8, 30, 32, .sinks = 1, .seqused = 1, .causal = 1},
    {"seqused_0_1_random", 5, 2, 1, 7, 60, 64, .seqused = 1},
    {"seqused_window", 4, 2, 2, 10, 50, 32, .seqused = 1, .window = 1, .wl = 5, .wr = 0},
    {"window_narrow", 1, 2, 2, 70, 70, 64, .window = 1, .wl = 1, .wr = 1},
    {"everything", 3, 4, 2, 13, 29, 64, .causal = 1, .softcap = 20.0f, .mask = 1, .mask_b0 = 1,
     .alibi = 1, .sinks = 1, .seqused = 1},
    /* packed variable-length batches: empty and length-1 sequences included */
    {"varlen", 4, 4, 2, 20, 30, 64, .varlen = 1},
    {"varlen_causal", 5, 2, 2, 33, 33, 32, .causal = 1, .varlen = 1},
    {"varlen_gqa_sinks_window", 3, 8, 2, 17, 40, 64, .sinks = 1, .window = 1, .wl = 6, .wr = 2, .varlen = 1},
    {"varlen_mask_alibi", 4, 2, 1, 9, 14, 32, .mask = 1, .mask_b0 = 1, .alibi = 1, .causal = 1, .varlen = 1},
    /* f16/bf16 storage, values near the limits of each type */
    {"f16", 2, 4, 2, 31, 47, 64, .causal = 1, .dtype = CLATTN_DTYPE_F16},
    {"f16_near_limit", 1, 2, 2, 16, 24, 64, .dtype = CLATTN_DTYPE_F16, .v_amplitude = 60000.0f},
    {"bf16", 2, 4, 1, 20, 33, 128, .causal = 1, .sinks = 1, .dtype = CLATTN_DTYPE_BF16},
    {"bf16_large", 1, 2, 2, 12, 20, 64, .dtype = CLATTN_DTYPE_BF16, .amplitude = 8.0f, .v_amplitude = 1e30f},
    {"f16_varlen_d80", 3, 4, 4, 15, 21, 80, .causal = 1, .varlen = 1, .dtype = CLATTN_DTYPE_F16},
    /* split-KV decode: forced and heuristic splits, splits that see no key */
    {"split2_decode", 1, 8, 2, 1, 300, 64, .splits = 2},
    {"split7_gqa_causal", 2, 8, 1, 3, 500, 64, .causal = 1, .splits = 7},
    {"split_window_empty_splits", 1, 4, 4, 1, 400, 32, .window = 1, .wl = 20, .wr = 0, .splits = 5, .sinks = 1},
    {"split_seqused_bf16", 3, 4, 2, 2, 700, 64, .seqused = 1, .splits = 4, .dtype = CLATTN_DTYPE_BF16},
    {"split_varlen", 3, 4, 2, 4, 600, 32, .varlen = 1, .splits = 3, .causal = 1},
    {"split_heuristic_long", 1, 4, 1, 1, 4100, 64},
    /* decode on a dense BSHD cache: a CPU reads several KV heads per work-item (6 and 5 here) */
    {"decode_bshd_gqa6_d80", 2, 12, 6, 3, 77, 80, .causal = 1, .seqused = 1, .bshd = 1},
    {"decode_bshd_f16_split", 1, 10, 5, 1, 333, 64, .window = 1, .wl = 100, .wr = 0, .splits = 3,
     .dtype = CLATTN_DTYPE_F16, .bshd = 1},
    /* prefill with the K transpose of the rows family: key lengths, windows, f16, varlen */
    {"prefill_seqused", 3, 4, 2, 40, 70, 96, .seqused = 1, .causal = 1},
    {"prefill_window_f16", 2, 4, 4, 50, 60, 128, .window = 1, .wl = 9, .wr = 3, .dtype = CLATTN_DTYPE_F16},
    {"prefill_varlen_bf16", 3, 4, 1, 37, 45, 64, .varlen = 1, .causal = 1, .dtype = CLATTN_DTYPE_BF16},
    /* the transpose up to d = 256: a packed batch, and a head dim no 16-wide vector divides */
    {"prefill_varlen_d256", 3, 4, 2, 35, 41, 256, .varlen = 1, .causal = 1},
    {"prefill_window_d200_dv136", 2, 2, 1, 45, 53, 200, 136, .window = 1, .wl = 11, .wr = 4},
    /* windows with per-score terms at d = 96 and 128 (no transpose: each row's scores from its
     * own dot products, a block wholly inside every row's window skips the per-row tests) */
    {"window_softcap_d128", 2, 4, 2, 37, 150, 128, .window = 1, .wl = 50, .wr = 9, .softcap = 10.0f},
    {"window_alibi_causal_d96", 1, 6, 2, 29, 90, 96, .window = 1, .wl = 40, .wr = 0, .alibi = 1, .causal = 1},
    /* MLA-style head dims: 576 for q/k, 512 for v */
    {"mla_576_512", 1, 4, 1, 3, 40, 576, 512, .causal = 1},
};
#define NCASES (sizeof cases / sizeof cases[0])

/* PATH_MMA: the tensor-core family, which stores f16/bf16 only: an f32 case runs in one of them. */
typedef enum path { PATH_ROWS, PATH_TILES, PATH_TILES_SHARED, PATH_UNFUSED, PATH_MMA, PATH_DECODE, PATH_RTILE } path;

static void run_path(const feature_case *c, path p)
{
    clattn_context *ctx = test_context_family(p == PATH_ROWS ? CLATTN_KERNELS_ROWS : p == PATH_UNFUSED
                                                  ? CLATTN_KERNELS_AUTO : p == PATH_MMA ? CLATTN_KERNELS_MMA
                                                  : p == PATH_DECODE ? CLATTN_KERNELS_DECODE : p == PATH_RTILE ? CLATTN_KERNELS_RTILE
                                                  : CLATTN_KERNELS_TILES);
    clattn_desc d = desc_of(c);
    d.algo = p == PATH_UNFUSED ? CLATTN_ALGO_UNFUSED : CLATTN_ALGO_FUSED;
    run_opts opts = {seed_for(c->name), false, false, NULL, c->amplitude, NULL, c->v_amplitude};
    if (p == PATH_MMA && d.dtype == CLATTN_DTYPE_F32) d.dtype = opts.seed & 1 ? CLATTN_DTYPE_BF16 : CLATTN_DTYPE_F16;
    if (p == PATH_MMA || p == PATH_DECODE || p == PATH_RTILE) { /* a family with limits: refused past them, as the fused path says */
        clattn_plan *plan = NULL;
        clattn_desc probe = d;
        if (probe.varlen) probe.total_q = c->b * c->nq, probe.total_k = c->b * c->nk; /* as the run sets them */
        const clattn_status st = clattn_plan_create(ctx, &probe, &plan);
        clattn_plan_destroy(plan);
        const int rows = c->hq / c->hkv * c->nq;
        const bool beyond = c->d > 256 || (p == PATH_DECODE && rows > 16);
        if (beyond || st) {
            cr_expect(beyond && st == CLATTN_UNSUPPORTED, "%s: d=%d, %d rows per KV head: status %d (%s)", c->name,
                      c->d, rows, st, clattn_context_last_error(ctx));
            clattn_context_destroy(ctx);
            return;
        }
    }
    run_result r = run_and_compare(ctx, &d, &opts);
    expect_ok(&r, c->name, opts.seed);
    clattn_context_destroy(ctx);
}

ParameterizedTestParameters(features, rows) { return cr_make_param_array(feature_case, cases, NCASES); }
ParameterizedTest(feature_case *c, features, rows, .timeout = 300) { run_path(c, PATH_ROWS); }
ParameterizedTestParameters(features, tiles) { return cr_make_param_array(feature_case, cases, NCASES); }
ParameterizedTest(feature_case *c, features, tiles, .timeout = 300) { run_path(c, PATH_TILES); }
ParameterizedTestParameters(features, tiles_shared_rows) { return cr_make_param_array(feature_case, cases, NCASES); }
ParameterizedTest(feature_case *c, features, tiles_shared_rows, .timeout = 300) { run_path(c, PATH_TILES_SHARED); }
ParameterizedTestParameters(features, unfused) { return cr_make_param_array(feature_case, cases, NCASES); }
ParameterizedTest(feature_case *c, features, unfused, .timeout = 300) { run_path(c, PATH_UNFUSED); }
ParameterizedTestParameters(features, mma) { return cr_make_param_array(feature_case, cases, NCASES); }
ParameterizedTest(feature_case *c, features, mma, .timeout = 300) { run_path(c, PATH_MMA); }
ParameterizedTestParameters(features, decode) { return cr_make_param_array(feature_case, cases, NCASES); }
ParameterizedTest(feature_case *c, features, decode, .timeout = 300) { run_path(c, PATH_DECODE); }
ParameterizedTestParameters(features, rtile) { return cr_make_param_array(feature_case, cases, NCASES); }
ParameterizedTest(feature_case *c, features, rtile, .timeout = 300) { run_path(c, PATH_RTILE); }

/* The split count and the unfused chunking, as the plan's variant names them (the paths keep
 * them private). */
static int splits_of(const clattn_plan *p)
{
    const char *v = strstr(clattn_plan_variant(p), "splits=");
    return v ? atoi(v + 7) : -1;
}

static void chunks_of(const clattn_plan *p, int *rows, int *items)
{
    const char *v = strstr(clattn_plan_variant(p), "chunks of ");
    *rows = *items = -1;
    if (v) sscanf(v, "chunks of %d rows x %d heads", rows, items);
}

/* The split count: forced values are honoured, the heuristic splits a long decode and never
 * a prefill, and the plan's scratch holds the partials. */
Test(features, split_choice)
{
    clattn_context *ctx = test_context();
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 4; d.heads_kv = 1; d.seq_q = 1; d.seq_kv = 8192; d.head_dim = 64;
    clattn_plan *plan;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS);
    const int n = splits_of(plan);
    cr_expect_gt(n, 1, "a one-row decode over 8192 keys should split (got %d)", n);
    cr_expect_eq(clattn_plan_scratch_size(plan), (size_t)n * 4 * (64 + 1) * 4);
    clattn_plan_destroy(plan);
    d.num_splits = 1;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS);
    cr_expect_eq(splits_of(plan), 1);
    cr_expect_eq(clattn_plan_scratch_size(plan), 0);
    clattn_plan_destroy(plan);
    d.num_splits = 0;
    d.seq_q = 512;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS);
    cr_expect_eq(splits_of(plan), 1, "a prefill with enough rows does not split");
    clattn_plan_destroy(plan);
    clattn_context_destroy(ctx);
}

/* Merging: attention over keys [0, a) and [a, Nk) separately (key lengths and a view), merged on
 * the device and on the host, equals attention over all keys. */
Test(features, merge_equals_whole, .timeout = 120)
{
    clattn_context *ctx = test_context();
    const int H = 3, NQ = 5, NK = 90, D = 32, A = 37, rows = H * NQ;
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = H; d.seq_q = NQ; d.seq_kv = NK; d.head_dim = D;
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&d, &n);
    float *q = malloc(n.q * 4), *k = malloc(n.k * 4), *v = malloc(n.v * 4);
    float *whole = malloc(n.o * 4), *lwhole = malloc(n.lse * 4);
    float *parts = malloc(2 * n.o * 4), *lparts = malloc(2 * n.lse * 4);
    uint64_t rng = 31337;
    clattn_rng_fill(q, n.q, &rng, 1); clattn_rng_fill(k, n.k, &rng, 1); clattn_rng_fill(v, n.v, &rng, 1);
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = q; t.k = k; t.v = v; t.o = whole; t.lse = lwhole;
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o; t.lse_len = n.lse;
    cr_assert_eq(clattn_reference_forward(&d, &t, NULL, 0), CLATTN_SUCCESS);
    /* part 0: keys [0, A) through per-batch key lengths; part 1: keys [A, NK) as a view */
    clattn_desc d0 = d;
    d0.has_seqused_k = 1;
    int32_t len = A;
    t.seqused_k = &len; t.o = parts; t.lse = lparts;
    cr_assert_eq(clattn_reference_forward(&d0, &t, NULL, 0), CLATTN_SUCCESS);
    clattn_desc d1 = d;
    d1.seq_kv = NK - A;
    d1.layout = CLATTN_LAYOUT_STRIDED;
    d1.q_strides = d1.o_strides = (clattn_strides){(int64_t)H * NQ * D, (int64_t)NQ * D, D};
    d1.k_strides = d1.v_strides = (clattn_strides){(int64_t)H * NK * D, (int64_t)NK * D, D};
    t.seqused_k = NULL; t.k = k + (size_t)A * D; t.v = v + (size_t)A * D;
    t.k_len = t.v_len = n.k - (size_t)A * D; t.o = parts + n.o; t.lse = lparts + n.lse;
    cr_assert_eq(clattn_reference_forward(&d1, &t, NULL, 0), CLATTN_SUCCESS);

    clattn_merge_desc md = {sizeof(clattn_merge_desc), 2, rows, D};
    float *o = malloc(n.o * 4), *lse = malloc(n.lse * 4);
    cr_assert_eq(clattn_merge_host(&md, parts, lparts, o, lse), CLATTN_SUCCESS);
    cr_expect_eq(clattn_merge_host(&md, parts, lparts, parts, lse), CLATTN_BUFFERS_OVERLAP);
    cr_expect_eq(clattn_merge_host(&md, parts, lparts, o, o), CLATTN_BUFFERS_OVERLAP);
    clattn_error eo = clattn_compare(o, whole, n.o, D), el = clattn_compare(lse, lwhole, n.lse, 1);
    cr_expect(clattn_error_ok(&eo, 1e-6) && clattn_error_ok(&el, 1e-6), "host merge: %.3e %.3e", eo.rel_l2, el.rel_l2);

    cl_context cl = clattn_context_cl_context(ctx);
    cl_int e;
    cl_command_queue qu = clCreateCommandQueue(cl, clattn_context_device(ctx), 0, &e);
    cl_mem pm = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, 2 * n.o * 4, parts, &e);
    cl_mem lpm = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, 2 * n.lse * 4, lparts, &e);
    cl_mem om = clCreateBuffer(cl, CL_MEM_READ_WRITE, n.o * 4, NULL, &e);
    cl_mem lm = clCreateBuffer(cl, CL_MEM_READ_WRITE, n.lse * 4, NULL, &e);
    cl_event ev;
    cr_assert_eq(clattn_merge(ctx, qu, &md, pm, lpm, om, lm, 0, NULL, &ev), CLATTN_SUCCESS, "%s",
                 clattn_context_last_error(ctx));
    for (size_t i = 0; i < n.o; i++) o[i] = NAN;
    cr_assert_eq(clEnqueueReadBuffer(qu, om, CL_TRUE, 0, n.o * 4, o, 1, &ev, NULL), CL_SUCCESS);
    cr_assert_eq(clEnqueueReadBuffer(qu, lm, CL_TRUE, 0, n.lse * 4, lse, 1, &ev, NULL), CL_SUCCESS);
    eo = clattn_compare(o, whole, n.o, D);
    el = clattn_compare(lse, lwhole, n.lse, 1);
    cr_expect(clattn_error_ok(&eo, 1e-5) && clattn_error_ok(&el, 1e-5), "device merge: %.3e %.3e", eo.rel_l2, el.rel_l2);
    clattn_merge_desc bad = {sizeof(clattn_merge_desc), 0, rows, D};
    cr_expect_eq(clattn_merge(ctx, qu, &bad, pm, lpm, om, lm, 0, NULL, NULL), CLATTN_INVALID_SHAPE);
    clattn_merge_desc big = {sizeof(clattn_merge_desc), 3, rows, D};
    cr_expect_eq(clattn_merge(ctx, qu, &big, pm, lpm, om, lm, 0, NULL, NULL), CLATTN_BUFFER_TOO_SMALL);
    /* outputs sharing bytes with the parts or each other: refused before anything runs */
    cr_expect_eq(clattn_merge(ctx, qu, &md, pm, lpm, om, om, 0, NULL, NULL), CLATTN_BUFFERS_OVERLAP);
    cl_mem both = clCreateBuffer(cl, CL_MEM_READ_WRITE, 4 * n.o * 4, NULL, &e);
    cl_uint align_bits = 1024;
    clGetDeviceInfo(clattn_context_device(ctx), CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
    const size_t a = align_bits / 8, o_at = (2 * n.o * 4 - 4) / a * a; /* inside the parts' last bytes */
    cl_buffer_region r_parts = {0, 2 * n.o * 4}, r_o = {o_at, n.o * 4};
    cl_mem sub_parts = clCreateSubBuffer(both, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r_parts, &e);
    cr_assert_eq(e, CL_SUCCESS);
    cl_mem sub_o = clCreateSubBuffer(both, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r_o, &e);
    cr_assert_eq(e, CL_SUCCESS);
    cr_expect_eq(clattn_merge(ctx, qu, &md, sub_parts, lpm, sub_o, lm, 0, NULL, NULL), CLATTN_BUFFERS_OVERLAP, "%s",
                 clattn_context_last_error(ctx));
    clReleaseMemObject(sub_o); clReleaseMemObject(sub_parts); clReleaseMemObject(both);
    clReleaseEvent(ev);
    clReleaseMemObject(pm); clReleaseMemObject(lpm); clReleaseMemObject(om); clReleaseMemObject(lm);
    clReleaseCommandQueue(qu);
    free(q); free(k); free(v); free(whole); free(lwhole); free(parts); free(lparts); free(o); free(lse);
    clattn_context_destroy(ctx);
}

/* Folding partials one at a time (clattn_merge_fold, clattn_merge_store): keys [0, 20) for all
 * rows, then keys [20, NK) in two calls over rows [0, 3) and [3, NQ) (acc_start), each partial as
 * the reference writes it in the storage type; the stored result, in BSHD, equals attention over
 * all keys. f32 and f16 (whose partials are rounded once each). */
static void *to_dtype(const float *x, size_t n, clattn_dtype dt)
{
    if (dt == CLATTN_DTYPE_F32) {
        float *y = malloc(n * 4);
        memcpy(y, x, n * 4);
        return y;
    }
    uint16_t *y = malloc(n * 2);
    for (size_t i = 0; i < n; i++) y[i] = clattn_f32_to_f16(x[i]);
    return y;
}

static float elem(const void *x, size_t i, clattn_dtype dt)
{
    return dt == CLATTN_DTYPE_F32 ? ((const float *)x)[i] : clattn_f16_to_f32(((const uint16_t *)x)[i]);
}

static void fold_case(clattn_dtype dt, double bound)
{
    clattn_context *ctx = test_context();
    const int B = 2, H = 3, NQ = 7, NK = 50, D = 24;
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = B; d.heads_q = H; d.seq_q = NQ; d.seq_kv = NK; d.head_dim = D; d.dtype = dt;
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&d, &n);
    const size_t es = clattn_dtype_size(dt);
    float *qf = malloc(n.q * 4), *kf = malloc(n.k * 4), *vf = malloc(n.v * 4);
    uint64_t rng = 4242 + dt;
    clattn_rng_fill(qf, n.q, &rng, 1); clattn_rng_fill(kf, n.k, &rng, 1); clattn_rng_fill(vf, n.v, &rng, 1);
    void *q = to_dtype(qf, n.q, dt), *k = to_dtype(kf, n.k, dt), *v = to_dtype(vf, n.v, dt);
    void *whole = malloc(n.o * es);
    float *lwhole = malloc(n.lse * 4);
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = q; t.k = k; t.v = v; t.o = whole; t.lse = lwhole;
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o; t.lse_len = n.lse;
    cr_assert_eq(clattn_reference_forward(&d, &t, NULL, 0), CLATTN_SUCCESS);

    cl_context cl = clattn_context_cl_context(ctx);
    cl_int e;
    cl_command_queue qu = clCreateCommandQueue(cl, clattn_context_device(ctx), 0, &e);
    cl_mem acc_o = clCreateBuffer(cl, CL_MEM_READ_WRITE, n.o * 4, NULL, &e);
    cl_mem acc_l = clCreateBuffer(cl, CL_MEM_READ_WRITE, n.lse * 4, NULL, &e);
    const float poison = NAN, empty = -INFINITY;
    cr_assert_eq(clEnqueueFillBuffer(qu, acc_o, &poison, 4, 0, n.o * 4, 0, NULL, NULL), CL_SUCCESS);
    cr_assert_eq(clEnqueueFillBuffer(qu, acc_l, &empty, 4, 0, n.lse * 4, 0, NULL, NULL), CL_SUCCESS);
    const struct { int k0, k1, i0, i1; } parts[] = {{0, 20, 0, NQ}, {20, NK, 0, 3}, {20, NK, 3, NQ}};
    for (int p = 0; p < 3; p++) {
        const int nq = parts[p].i1 - parts[p].i0, nk = parts[p].k1 - parts[p].k0;
        clattn_desc dp = d;
        dp.seq_q = nq; dp.seq_kv = nk;
        dp.layout = CLATTN_LAYOUT_STRIDED;
        dp.q_strides = (clattn_strides){(int64_t)H * NQ * D, (int64_t)NQ * D, D};
        dp.k_strides = dp.v_strides = (clattn_strides){(int64_t)H * NK * D, (int64_t)NK * D, D};
        dp.o_strides = (clattn_strides){(int64_t)H * nq * D, (int64_t)nq * D, D};
        const size_t po_n = (size_t)B * H * nq * D, pl_n = (size_t)B * H * nq;
        void *po = malloc(po_n * es);
        float *pl = malloc(pl_n * 4);
        clattn_host_tensors tp = t;
        tp.q = (const char *)q + (size_t)parts[p].i0 * D * es;
        tp.k = (const char *)k + (size_t)parts[p].k0 * D * es;
        tp.v = (const char *)v + (size_t)parts[p].k0 * D * es;
        tp.q_len = n.q - (size_t)parts[p].i0 * D;
        tp.k_len = tp.v_len = n.k - (size_t)parts[p].k0 * D;
        tp.o = po; tp.lse = pl; tp.o_len = po_n; tp.lse_len = pl_n;
        cr_assert_eq(clattn_reference_forward(&dp, &tp, NULL, 0), CLATTN_SUCCESS);
        /* the partial sits at an offset inside a larger buffer, as a view would */
        cl_mem om = clCreateBuffer(cl, CL_MEM_READ_ONLY, (po_n + 5) * es, NULL, &e);
        cl_mem lm = clCreateBuffer(cl, CL_MEM_READ_ONLY, (pl_n + 3) * 4, NULL, &e);
        cr_assert_eq(clEnqueueWriteBuffer(qu, om, CL_TRUE, 5 * es, po_n * es, po, 0, NULL, NULL), CL_SUCCESS);
        cr_assert_eq(clEnqueueWriteBuffer(qu, lm, CL_TRUE, 3 * 4, pl_n * 4, pl, 0, NULL, NULL), CL_SUCCESS);
        cr_assert_eq(clattn_merge_fold(ctx, qu, &dp, om, 5, lm, 3, acc_o, acc_l, NQ, parts[p].i0, 0, NULL, NULL),
                     CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
        if (p == 1) { /* refusals: rows past the accumulator, the accumulator as the partial */
            cr_expect_eq(clattn_merge_fold(ctx, qu, &dp, om, 5, lm, 3, acc_o, acc_l, NQ, NQ - 2, 0, NULL, NULL),
                         CLATTN_INVALID_SHAPE);
            cr_expect_eq(clattn_merge_fold(ctx, qu, &dp, acc_o, 0, lm, 3, acc_o, acc_l, NQ, 0, 0, NULL, NULL),
                         CLATTN_BUFFERS_OVERLAP);
            cr_expect_eq(clattn_merge_fold(ctx, qu, &dp, om, 6, lm, 3, acc_o, acc_l, NQ, 0, 0, NULL, NULL),
                         CLATTN_BUFFER_TOO_SMALL);
        }
        cr_assert_eq(clFinish(qu), CL_SUCCESS);
        clReleaseMemObject(om); clReleaseMemObject(lm);
        free(po); free(pl);
    }
    /* stored as BSHD, with lse */
    clattn_desc ds = d;
    ds.layout = CLATTN_LAYOUT_BSHD;
    cl_mem out = clCreateBuffer(cl, CL_MEM_WRITE_ONLY, n.o * es, NULL, &e);
    cl_mem lout = clCreateBuffer(cl, CL_MEM_WRITE_ONLY, n.lse * 4, NULL, &e);
    /* refusals: store's o and lse in one buffer's overlapping bytes; sinks (every partial's lse
     * would count the sink once more) */
    cl_mem shared = clCreateBuffer(cl, CL_MEM_READ_WRITE, n.o * es + n.lse * 4, NULL, &e);
    cr_expect_eq(clattn_merge_store(ctx, qu, &ds, acc_o, acc_l, shared, 0, shared, 0, 0, NULL, NULL),
                 CLATTN_BUFFERS_OVERLAP);
    clattn_desc dsink = ds;
    dsink.has_sinks = 1;
    cr_expect_eq(clattn_merge_store(ctx, qu, &dsink, acc_o, acc_l, out, 0, lout, 0, 0, NULL, NULL),
                 CLATTN_UNSUPPORTED);
    cr_expect(strstr(clattn_context_last_error(ctx), "sinks"), "%s", clattn_context_last_error(ctx));
    clReleaseMemObject(shared);
    cr_assert_eq(clattn_merge_store(ctx, qu, &ds, acc_o, acc_l, out, 0, lout, 0, 0, NULL, NULL), CLATTN_SUCCESS,
                 "%s", clattn_context_last_error(ctx));
    void *o = malloc(n.o * es);
    float *lse = malloc(n.lse * 4), *of = malloc(n.o * 4), *wf = malloc(n.o * 4);
    cr_assert_eq(clEnqueueReadBuffer(qu, out, CL_TRUE, 0, n.o * es, o, 0, NULL, NULL), CL_SUCCESS);
    cr_assert_eq(clEnqueueReadBuffer(qu, lout, CL_TRUE, 0, n.lse * 4, lse, 0, NULL, NULL), CL_SUCCESS);
    for (int b = 0; b < B; b++) /* BSHD result against the BHSD reference */
        for (int h = 0; h < H; h++)
            for (int i = 0; i < NQ; i++)
                for (int c = 0; c < D; c++) {
                    const size_t r = (((size_t)b * H + h) * NQ + i) * D + c;
                    of[r] = elem(o, (((size_t)b * NQ + i) * H + h) * D + c, dt);
                    wf[r] = elem(whole, r, dt);
                }
    clattn_error eo = clattn_compare(of, wf, n.o, D), el = clattn_compare(lse, lwhole, n.lse, 1);
    cr_expect(clattn_error_ok(&eo, bound) && clattn_error_ok(&el, 1e-5), "%s: o %.3e lse %.3e", dt ? "f16" : "f32",
              eo.rel_l2, el.rel_l2);
    clReleaseMemObject(out); clReleaseMemObject(lout); clReleaseMemObject(acc_o); clReleaseMemObject(acc_l);
    clReleaseCommandQueue(qu);
    free(qf); free(kf); free(vf); free(q); free(k); free(v); free(whole); free(lwhole);
    free(o); free(lse); free(of); free(wf);
    clattn_context_destroy(ctx);
}

Test(features, fold_equals_whole_f32, .timeout = 120) { fold_case(CLATTN_DTYPE_F32, 1e-5); }
Test(features, fold_equals_whole_f16, .timeout = 120) { fold_case(CLATTN_DTYPE_F16, 2e-3); }

static clattn_context *limited(size_t limit)
{
    cl_device_id dev;
    cl_uint n = 0;
    if (clattn_list_devices(&dev, 1, &n) || !n) cr_skip_test("no OpenCL device");
    clattn_context_options o = CLATTN_CONTEXT_OPTIONS_INIT;
    o.scratch_limit = limit;
    clattn_context *ctx;
    cr_assert_eq(clattn_context_create(&o, &ctx), CLATTN_SUCCESS);
    return ctx;
}

/* A small scratch limit: several chunks of rows, a partial last chunk, one item at a time. */
Test(features, chunked_rows, .timeout = 300)
{
    clattn_context *ctx = limited(7 * 100 * 4); /* 7 rows of 100 keys */
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 2; d.heads_q = 4; d.heads_kv = 2; d.seq_q = 30; d.seq_kv = 100; d.head_dim = 32; d.causal = 1;
    d.algo = CLATTN_ALGO_UNFUSED;
    clattn_plan *plan;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS);
    int rows, items;
    chunks_of(plan, &rows, &items);
    cr_expect_eq(rows, 7);
    cr_expect_eq(items, 1);
    cr_expect_eq(clattn_plan_scratch_size(plan), 7 * 100 * 4);
    clattn_plan_destroy(plan);
    run_opts opts = {seed_for("chunked_rows"), false, false, NULL};
    run_result r = run_and_compare(ctx, &d, &opts);
    expect_ok(&r, "chunked_rows", opts.seed);
    clattn_context_destroy(ctx);
}

/* Whole heads per chunk: 3 of 8 (batch, head) items fit, the last chunk holds 2. */
Test(features, chunked_items, .timeout = 300)
{
    clattn_context *ctx = limited(3 * 20 * 50 * 4 + 100);
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 2; d.heads_q = 4; d.heads_kv = 1; d.seq_q = 20; d.seq_kv = 50; d.head_dim = 64;
    d.has_sinks = 1;
    d.algo = CLATTN_ALGO_UNFUSED;
    clattn_plan *plan;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS);
    int rows, items;
    chunks_of(plan, &rows, &items);
    cr_expect_eq(rows, 20);
    cr_expect_eq(items, 3);
    clattn_plan_destroy(plan);
    run_opts opts = {seed_for("chunked_items"), false, false, NULL};
    run_result r = run_and_compare(ctx, &d, &opts);
    expect_ok(&r, "chunked_items", opts.seed);
    clattn_context_destroy(ctx);
}

/* The same without GQA (the bench caught MHA chunked by whole heads going wrong). */
Test(features, chunked_items_mha, .timeout = 300)
{
    clattn_context *ctx = limited(2 * 24 * 40 * 4);
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 8; d.seq_q = 24; d.seq_kv = 40; d.head_dim = 32; d.causal = 1;
    d.algo = CLATTN_ALGO_UNFUSED;
    clattn_plan *plan;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS);
    int rows, items;
    chunks_of(plan, &rows, &items);
    cr_expect_eq(rows, d.seq_q);
    cr_expect_eq(items, 2);
    clattn_plan_destroy(plan);
    run_opts opts = {seed_for("chunked_items_mha"), false, false, NULL};
    run_result r = run_and_compare(ctx, &d, &opts);
    expect_ok(&r, "chunked_items_mha", opts.seed);
    clattn_context_destroy(ctx);
}

/* Regression: CLBlast 1.5.3's strided-batched SGEMM was wrong with a non-zero B offset at
 * M = K = 4096, N = 64 (the second head's O = P V here); clattn now calls CLBlastSgemm. */
Test(features, unfused_large_gemm_offsets, .timeout = 600)
{
    clattn_context *ctx = limited((size_t)4096 * 4096 * 4); /* one head's scores per chunk */
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 2; d.seq_q = 4096; d.seq_kv = 4096; d.head_dim = 64; d.causal = 1;
    d.algo = CLATTN_ALGO_UNFUSED;
    run_opts opts = {seed_for("unfused_large_gemm_offsets"), false, false, NULL};
    run_result r = run_and_compare(ctx, &d, &opts);
    expect_ok(&r, "unfused_large_gemm_offsets", opts.seed);
    clattn_context_destroy(ctx);
}

Test(features, caller_scratch, .timeout = 300)
{
    clattn_context *ctx = limited(5 * 64 * 4);
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 2; d.seq_q = 12; d.seq_kv = 64; d.head_dim = 32; d.algo = CLATTN_ALGO_UNFUSED;
    clattn_plan *plan;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS);
    const size_t need = clattn_plan_scratch_size(plan);
    cl_int e;
    cl_mem scratch = clCreateBuffer(clattn_context_cl_context(ctx), CL_MEM_READ_WRITE, need, NULL, &e);
    cl_mem small = clCreateBuffer(clattn_context_cl_context(ctx), CL_MEM_READ_WRITE, need - 4, NULL, &e);
    cr_assert_eq(e, CL_SUCCESS);
    run_opts opts = {seed_for("caller_scratch"), false, false, NULL, 0, scratch, 0};
    run_result r = run_and_compare(ctx, &d, &opts);
    expect_ok(&r, "caller_scratch", opts.seed);
    cl_command_queue q = clCreateCommandQueue(clattn_context_cl_context(ctx), clattn_context_device(ctx), 0, &e);
    cl_mem big = clCreateBuffer(clattn_context_cl_context(ctx), CL_MEM_READ_WRITE, 1 << 16, NULL, &e);
    clattn_buffers bf = {sizeof(clattn_buffers), big, big, big, big, .scratch = small};
    cr_expect_eq(clattn_plan_execute(plan, q, &bf, 0, NULL, NULL), CLATTN_BUFFER_TOO_SMALL);
    cr_expect(strstr(clattn_context_last_error(ctx), "scratch"), "%s", clattn_context_last_error(ctx));
    clReleaseCommandQueue(q);
    clReleaseMemObject(scratch);
    clReleaseMemObject(small);
    clReleaseMemObject(big);
    clattn_plan_destroy(plan);
    clattn_context_destroy(ctx);
}

/* What the fused path cannot serve (head dim 640) goes to unfused under auto; forced fused
 * says why; the unfused path refuses an out-of-order queue. */
Test(features, auto_falls_back, .timeout = 300)
{
    clattn_context *ctx = test_context();
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 2; d.seq_q = 5; d.seq_kv = 9; d.head_dim = 640;
    clattn_plan *plan;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS);
    cr_expect_eq(clattn_plan_algo(plan), CLATTN_ALGO_UNFUSED);
    cr_expect(strstr(clattn_plan_reason(plan), "head dims above 576"), "%s", clattn_plan_reason(plan));
    clattn_plan_destroy(plan);
    run_opts opts = {seed_for("d640"), false, false, NULL};
    run_result r = run_and_compare(ctx, &d, &opts);
    expect_ok(&r, "d640 auto", opts.seed);
    d.algo = CLATTN_ALGO_FUSED;
    cr_expect_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_UNSUPPORTED);
    cr_expect(strstr(clattn_context_last_error(ctx), "fused: head dims above 576"), "%s", clattn_context_last_error(ctx));

    d.algo = CLATTN_ALGO_UNFUSED;
    d.head_dim = 32;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS);
    cl_int e;
    cl_command_queue ooo = clCreateCommandQueue(clattn_context_cl_context(ctx), clattn_context_device(ctx),
                                                CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, &e);
    if (e == CL_SUCCESS) {
        cl_mem m = clCreateBuffer(clattn_context_cl_context(ctx), CL_MEM_READ_WRITE, 1 << 16, NULL, &e);
        cl_mem mo = clCreateBuffer(clattn_context_cl_context(ctx), CL_MEM_READ_WRITE, 1 << 16, NULL, &e);
        clattn_buffers bf = {sizeof(clattn_buffers), m, m, m, mo};
        cr_expect_eq(clattn_plan_execute(plan, ooo, &bf, 0, NULL, NULL), CLATTN_UNSUPPORTED);
        cr_expect(strstr(clattn_context_last_error(ctx), "in-order"), "%s", clattn_context_last_error(ctx));
        clReleaseMemObject(m);
        clReleaseMemObject(mo);
        clReleaseCommandQueue(ooo);
    }
    clattn_plan_destroy(plan);
    clattn_context_destroy(ctx);
}

/* The unfused path's event covers GEMM -> softmax -> GEMM of every chunk: wait on it alone,
 * with a caller's wait list gating the start. */
Test(features, event_covers_every_chunk, .timeout = 300)
{
    clattn_context *ctx = limited(4 * 80 * 4);
    cl_context cl = clattn_context_cl_context(ctx);
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 2; d.heads_q = 2; d.seq_q = 30; d.seq_kv = 80; d.head_dim = 32; d.algo = CLATTN_ALGO_UNFUSED;
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&d, &n);
    float *q = malloc(n.q * 4), *k = malloc(n.k * 4), *v = malloc(n.v * 4), *o = malloc(n.o * 4), *ref = malloc(n.o * 4);
    uint64_t rng = 4242;
    clattn_rng_fill(q, n.q, &rng, 1); clattn_rng_fill(k, n.k, &rng, 1); clattn_rng_fill(v, n.v, &rng, 1);
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = q; t.k = k; t.v = v; t.o = ref; t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o;
    cr_assert_eq(clattn_reference_forward(&d, &t, NULL, 0), CLATTN_SUCCESS);
    cl_int e;
    cl_command_queue qu = clCreateCommandQueue(cl, clattn_context_device(ctx), 0, &e);
    cl_mem qm = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n.q * 4, q, &e);
    cl_mem km = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n.k * 4, k, &e);
    cl_mem vm = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n.v * 4, v, &e);
    cl_mem om = clCreateBuffer(cl, CL_MEM_READ_WRITE, n.o * 4, NULL, &e);
    cl_event gate = clCreateUserEvent(cl, &e);
    cr_assert_eq(e, CL_SUCCESS);
    clattn_plan *plan;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS);
    int rows, items;
    chunks_of(plan, &rows, &items);
    cr_expect_eq(rows, 4, "several chunks of rows: the event must cover them all");
    clattn_buffers bf = {sizeof(clattn_buffers), qm, km, vm, om};
    cl_event done = NULL;
    cr_assert_eq(clattn_plan_execute(plan, qu, &bf, 1, &gate, &done), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    cl_int status = 0;
    clGetEventInfo(done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, NULL);
    cr_expect_neq(status, CL_COMPLETE, "completed before its wait list was satisfied");
    clSetUserEventStatus(gate, CL_COMPLETE);
    cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
    /* read without any further synchronisation on the queue: a non-blocking read into host
     * memory waits only for `done` */
    cr_assert_eq(clEnqueueReadBuffer(qu, om, CL_TRUE, 0, n.o * 4, o, 1, &done, NULL), CL_SUCCESS);
    clattn_error err = clattn_compare(o, ref, n.o, (size_t)d.head_dim);
    cr_expect(clattn_error_ok(&err, 1e-5), "rel L2 %.3e", err.rel_l2);
    clReleaseEvent(done); clReleaseEvent(gate);
    clattn_plan_destroy(plan);
    clReleaseMemObject(qm); clReleaseMemObject(km); clReleaseMemObject(vm); clReleaseMemObject(om);
    clReleaseCommandQueue(qu);
    free(q); free(k); free(v); free(o); free(ref);
    clattn_context_destroy(ctx);
}
