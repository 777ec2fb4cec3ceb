/* Numerical hostility: inputs with NaN, +-inf, logits of 1e4, all-equal scores, denormals.
 * The device must match the reference exactly where the reference has NaN or inf, within the
 * f32 bound elsewhere; fully masked rows stay 0 / -inf; NaN in keys or values a row never
 * attends to (causal future, past seqused_k) does not reach that row. Fused paths of every
 * family (decode where its 16 rows per KV head allow, mma in f16); the unfused path where its
 * GEMMs allow (see the note at the end). */
#include "harness.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

TestSuite(hostile, .fini = leak_check);

typedef struct host_case {
    clattn_desc d;
    float *q, *k, *v, *o, *ref, *lse, *lse_ref;
    int32_t *used;
    clattn_tensor_sizes n;
} host_case;

static void setup(host_case *c, int nq, int nk, int d, uint64_t seed, float amp)
{
    memset(c, 0, sizeof *c);
    c->d = (clattn_desc)CLATTN_DESC_INIT;
    c->n = (clattn_tensor_sizes)CLATTN_TENSOR_SIZES_INIT;
    c->d.batch = 2; c->d.heads_q = 2; c->d.heads_kv = 1; c->d.seq_q = nq; c->d.seq_kv = nk; c->d.head_dim = d;
    clattn_desc_tensor_sizes(&c->d, &c->n);
    c->q = malloc(c->n.q * 4); c->k = malloc(c->n.k * 4); c->v = malloc(c->n.v * 4);
    c->o = malloc(c->n.o * 4); c->ref = malloc(c->n.o * 4);
    c->lse = malloc(c->n.lse * 4); c->lse_ref = malloc(c->n.lse * 4);
    uint64_t rng = seed;
    clattn_rng_fill(c->q, c->n.q, &rng, amp);
    clattn_rng_fill(c->k, c->n.k, &rng, amp);
    clattn_rng_fill(c->v, c->n.v, &rng, 1.0f);
}

static void release(host_case *c)
{
    free(c->q); free(c->k); free(c->v); free(c->o); free(c->ref); free(c->lse); free(c->lse_ref); free(c->used);
}

/* Runs on `family` (or unfused) and on the reference; compares with NaN/inf positions exact. */
static void run(host_case *c, clattn_kernel_family family, bool unfused, const char *what)
{
    clattn_context *ctx = test_context_family(family);
    clattn_desc d = c->d;
    d.algo = unfused ? CLATTN_ALGO_UNFUSED : CLATTN_ALGO_FUSED;
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = c->q; t.k = c->k; t.v = c->v; t.o = c->ref; t.lse = c->lse_ref; t.seqused_k = c->used;
    t.q_len = c->n.q; t.k_len = c->n.k; t.v_len = c->n.v; t.o_len = c->n.o; t.lse_len = c->n.lse;
    cr_assert_eq(clattn_reference_forward(&d, &t, NULL, 0), CLATTN_SUCCESS);
    for (size_t i = 0; i < c->n.o; i++) c->o[i] = -3.0f;
    t.o = c->o;
    t.lse = c->lse;
    cr_assert_eq(clattn_forward_host(ctx, &d, &t), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    const clattn_error eo = clattn_compare(c->o, c->ref, c->n.o, (size_t)c->d.head_dim),
                       el = clattn_compare(c->lse, c->lse_ref, c->n.lse, 1);
    const char *fam = unfused ? "unfused" : family == CLATTN_KERNELS_ROWS ? "rows"
                      : family == CLATTN_KERNELS_DECODE ? "decode" : family == CLATTN_KERNELS_RTILE ? "rtile" : "tiles";
    cr_expect(clattn_error_ok(&eo, 1e-5), "%s (%s): o rel L2 %.3e, %zu NaN/inf mismatches", what, fam, eo.rel_l2,
              eo.mismatched_special);
    cr_expect(clattn_error_ok(&el, 1e-5), "%s (%s): lse rel L2 %.3e, %zu NaN/inf mismatches", what, fam, el.rel_l2,
              el.mismatched_special);
    clattn_context_destroy(ctx);
}

static uint16_t *to_f16(const float *x, size_t n)
{
    uint16_t *h = malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = clattn_f32_to_f16(x[i]);
    return h;
}

/* The tensor-core family (f16 storage only): the case's inputs rounded to f16, the reference
 * on the same f16 inputs, o compared at the f16 bound with NaN/inf positions exact; o is left in
 * c->o (as f32) for the test's own expectations. A tile whose V holds a NaN takes the kernel's
 * per-element path: this is where it is tested. */
static void run_mma(host_case *c, const char *what)
{
    clattn_context *ctx = test_context_family(CLATTN_KERNELS_MMA);
    clattn_desc d = c->d;
    d.algo = CLATTN_ALGO_FUSED;
    d.dtype = CLATTN_DTYPE_F16;
    uint16_t *q = to_f16(c->q, c->n.q), *k = to_f16(c->k, c->n.k), *v = to_f16(c->v, c->n.v);
    uint16_t *o = malloc(c->n.o * 2), *ref = malloc(c->n.o * 2);
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = q; t.k = k; t.v = v; t.o = ref; t.lse = c->lse_ref; t.seqused_k = c->used;
    t.q_len = c->n.q; t.k_len = c->n.k; t.v_len = c->n.v; t.o_len = c->n.o; t.lse_len = c->n.lse;
    cr_assert_eq(clattn_reference_forward(&d, &t, NULL, 0), CLATTN_SUCCESS);
    for (size_t i = 0; i < c->n.o; i++) o[i] = 0xfe00; /* a NaN pattern no result has */
    t.o = o;
    t.lse = c->lse;
    cr_assert_eq(clattn_forward_host(ctx, &d, &t), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    for (size_t i = 0; i < c->n.o; i++) {
        c->o[i] = clattn_f16_to_f32(o[i]);
        c->ref[i] = clattn_f16_to_f32(ref[i]);
    }
    const clattn_error eo = clattn_compare(c->o, c->ref, c->n.o, (size_t)c->d.head_dim),
                       el = clattn_compare(c->lse, c->lse_ref, c->n.lse, 1);
    cr_expect(clattn_error_ok(&eo, 2e-3), "%s (mma, f16): o rel L2 %.3e, %zu NaN/inf mismatches", what, eo.rel_l2,
              eo.mismatched_special);
    cr_expect(clattn_error_ok(&el, 1e-5), "%s (mma, f16): lse rel L2 %.3e, %zu NaN/inf mismatches", what, el.rel_l2,
              el.mismatched_special);
    free(q); free(k); free(v); free(o); free(ref);
    clattn_context_destroy(ctx);
}

/* The mma family last: the test's own expectations then read its o. */
static void all_paths(host_case *c, const char *what, bool unfused_too)
{
    run(c, CLATTN_KERNELS_ROWS, false, what);
    run(c, CLATTN_KERNELS_TILES, false, what);
    run(c, CLATTN_KERNELS_RTILE, false, what);
    if (unfused_too) run(c, CLATTN_KERNELS_AUTO, true, what);
    if (c->d.heads_q / c->d.heads_kv * c->d.seq_q <= 16) run(c, CLATTN_KERNELS_DECODE, false, what); /* its rows */
    run_mma(c, what);
}

Test(hostile, nan_and_inf_in_queries)
{
    host_case c;
    setup(&c, 9, 13, 32, 1, 1.0f);
    c.q[3 * 32 + 5] = NAN;           /* batch 0, head 0, row 3: its o and lse are NaN */
    c.q[(9 + 6) * 32 + 1] = INFINITY; /* batch 0, head 1, row 6: +inf scores, NaN row */
    all_paths(&c, "NaN/inf queries", true);
    cr_expect(isnan(c.o[3 * 32]) && !isnan(c.o[2 * 32]), "NaN stays in its row");
    release(&c);
}

Test(hostile, nan_in_keys_a_row_never_sees)
{
    host_case c;
    setup(&c, 8, 8, 32, 2, 1.0f);
    c.d.causal = 1;
    /* key 6 of batch 0: rows 0..5 never attend to it (causal); rows 6, 7 do */
    c.k[6 * 32 + 2] = NAN;
    c.v[6 * 32 + 3] = NAN;
    all_paths(&c, "NaN in a future key", false);
    for (int i = 0; i < 6; i++) cr_expect(isfinite(c.o[i * 32 + 3]), "row %d saw a NaN it never attends to", i);
    cr_expect(isnan(c.o[6 * 32 + 3]), "row 6 attends to the NaN key");
    release(&c);
}

Test(hostile, garbage_past_seqused_k)
{
    host_case c;
    setup(&c, 1, 64, 32, 3, 1.0f);
    c.d.has_seqused_k = 1;
    c.used = malloc(2 * sizeof *c.used);
    c.used[0] = 20;
    c.used[1] = 64;
    for (int j = 20; j < 64; j++) /* an uninitialised KV cache past the used length */
        for (int x = 0; x < 32; x++) c.k[j * 32 + x] = c.v[j * 32 + x] = (x & 1) ? NAN : INFINITY;
    all_paths(&c, "NaN/inf past seqused_k", false);
    for (int h = 0; h < 2; h++)
        for (int x = 0; x < 32; x++) cr_expect(isfinite(c.o[h * 32 + x]), "batch 0 head %d leaked garbage", h);
    release(&c);
}

Test(hostile, huge_logits)
{
    host_case c;
    setup(&c, 17, 29, 64, 4, 40.0f); /* scores up to ~1e4 */
    c.d.causal = 1;
    all_paths(&c, "logits of 1e4", true);
    release(&c);
}

Test(hostile, all_equal_scores)
{
    host_case c;
    setup(&c, 11, 23, 32, 5, 1.0f);
    memset(c.q, 0, c.n.q * 4); /* every score 0: o is the mean of the allowed values */
    all_paths(&c, "all-equal scores", true);
    release(&c);
}

Test(hostile, denormals)
{
    host_case c;
    setup(&c, 7, 9, 32, 6, 1.0f);
    for (size_t i = 0; i < c.n.v; i++) c.v[i] *= 1e-39f; /* subnormal values */
    cl_device_id dev;
    cl_uint n = 0;
    if (clattn_list_devices(&dev, 1, &n) || !n) cr_skip_test("no OpenCL device");
    cl_device_fp_config fp = 0;
    clGetDeviceInfo(dev, CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL);
    if (!(fp & CL_FP_DENORM)) cr_skip_test("the device flushes f32 denormals (no CL_FP_DENORM)");
    all_paths(&c, "denormal values", true);
    release(&c);
}

/* Note: the unfused path multiplies P by V in a GEMM, where a masked key's 0 times NaN is NaN:
 * garbage in K/V rows a query never attends to can reach it there (documented in README). */

/* The backward on host arrays (fused, `family`), after the forward that feeds it. */
static void backward(host_case *c, clattn_kernel_family family, float *dq, float *dk, float *dv)
{
    clattn_context *ctx = test_context_family(family);
    clattn_desc d = c->d;
    d.algo = CLATTN_ALGO_FUSED;
    float *d_o = malloc(c->n.o * 4);
    uint64_t rng = 77;
    clattn_rng_fill(d_o, c->n.o, &rng, 1.0f);
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = c->q; t.k = c->k; t.v = c->v; t.o = c->o; t.lse = c->lse; t.seqused_k = c->used; t.d_o = d_o;
    t.dq = dq; t.dk = dk; t.dv = dv;
    t.q_len = t.dq_len = c->n.q; t.k_len = t.dk_len = c->n.k; t.v_len = t.dv_len = c->n.v;
    t.o_len = t.do_len = c->n.o; t.lse_len = c->n.lse;
    cr_assert_eq(clattn_forward_host(ctx, &d, &t), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    for (size_t i = 0; i < c->n.q; i++) dq[i] = -3.0f;
    for (size_t i = 0; i < c->n.k; i++) dk[i] = dv[i] = -3.0f;
    cr_assert_eq(clattn_backward_host(ctx, &d, &t), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    free(d_o);
    clattn_context_destroy(ctx);
}

static bool finite_rows(const float *x, int row0, int row1, int dim)
{
    for (int i = row0 * dim; i < row1 * dim; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

/* A NaN key in the causal future of rows 0..5 (rows 6.. see it): their dQ stays finite, on
 * both families (the rows family's dQ kernel puts 16 rows in the lanes of one vector, 6 of which
 * do not see the key), and the other batch is untouched by it. */
Test(hostile, backward_nan_in_keys_a_row_never_sees)
{
    const clattn_kernel_family fams[2] = {CLATTN_KERNELS_ROWS, CLATTN_KERNELS_TILES};
    for (int f = 0; f < 2; f++) {
        host_case c;
        setup(&c, 24, 24, 32, 8, 1.0f);
        c.d.causal = 1;
        c.k[6 * 32 + 2] = NAN;
        float *dq = malloc(c.n.q * 4), *dk = malloc(c.n.k * 4), *dv = malloc(c.n.v * 4);
        backward(&c, fams[f], dq, dk, dv);
        const int rows = 24, per_batch = 2 * rows; /* (B, Hq, N, D): batch 0 is heads 0 and 1 */
        for (int h = 0; h < 2; h++) {
            cr_expect(finite_rows(dq, h * rows, h * rows + 6, 32), "family %d: batch 0 head %d: a row before the "
                      "NaN key got a non-finite dQ", f, h);
            cr_expect(!finite_rows(dq, h * rows + 6, h * rows + 7, 32), "family %d: row 6 attends to the NaN key "
                      "but its dQ is finite", f);
        }
        cr_expect(finite_rows(dq, per_batch, 2 * per_batch, 32), "family %d: batch 1's dQ saw batch 0's NaN", f);
        cr_expect(finite_rows(dk, rows, 2 * rows, 32) && finite_rows(dv, rows, 2 * rows, 32),
                  "family %d: batch 1's dK/dV saw batch 0's NaN", f);
        free(dq); free(dk); free(dv);
        release(&c);
    }
}

/* NaN and inf past seqused_k (an uninitialised KV cache): every gradient finite, and the keys
 * past the used length get zero dK and dV. */
Test(hostile, backward_garbage_past_seqused_k)
{
    const clattn_kernel_family fams[2] = {CLATTN_KERNELS_ROWS, CLATTN_KERNELS_TILES};
    for (int f = 0; f < 2; f++) {
        host_case c;
        setup(&c, 19, 64, 32, 9, 1.0f);
        c.d.has_seqused_k = 1;
        c.used = malloc(2 * sizeof *c.used);
        c.used[0] = 20;
        c.used[1] = 64;
        for (int j = 20; j < 64; j++)
            for (int x = 0; x < 32; x++) c.k[j * 32 + x] = c.v[j * 32 + x] = (x & 1) ? NAN : INFINITY;
        float *dq = malloc(c.n.q * 4), *dk = malloc(c.n.k * 4), *dv = malloc(c.n.v * 4);
        backward(&c, fams[f], dq, dk, dv);
        cr_expect(finite_rows(dq, 0, 2 * 2 * 19, 32), "family %d: a dQ row saw the garbage", f);
        cr_expect(finite_rows(dk, 0, 2 * 64, 32) && finite_rows(dv, 0, 2 * 64, 32), "family %d: dK/dV not finite", f);
        bool zero = true;
        for (int i = 20 * 32; i < 64 * 32; i++) zero = zero && dk[i] == 0.0f && dv[i] == 0.0f;
        cr_expect(zero, "family %d: keys past seqused_k got a nonzero gradient", f);
        free(dq); free(dk); free(dv);
        release(&c);
    }
}
