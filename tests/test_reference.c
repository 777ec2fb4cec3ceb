/* The CPU reference: hand-computed tiny cases for every feature, and a second, naive
 * formulation (full score matrix, explicit boolean masks) on random inputs. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

TestSuite(reference, .fini = leak_check);

static clattn_desc tiny(int nq, int nk, int d)
{
    clattn_desc x = CLATTN_DESC_INIT;
    x.batch = 1; x.heads_q = 1; x.seq_q = nq; x.seq_kv = nk; x.head_dim = d; x.scale = 1.0f;
    return x;
}

static void run_ref(const clattn_desc *d, clattn_host_tensors *t)
{
    char msg[256] = "";
    clattn_status st = clattn_reference_forward(d, t, msg, sizeof msg);
    cr_assert_eq(st, CLATTN_SUCCESS, "reference: %s", msg);
}

#define HOST(qp, kp, vp, op, lp, nq_, nk_, nv_, no_)                                      \
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;                                                         \
    t.q = qp; t.k = kp; t.v = vp; t.o = op; t.lse = lp;                                  \
    t.q_len = nq_; t.k_len = nk_; t.v_len = nv_; t.o_len = no_; t.lse_len = 16

Test(reference, softmax_of_two_keys)
{
    clattn_desc d = tiny(1, 2, 1);
    float q[] = {1}, k[] = {0, logf(3)}, v[] = {2, 6}, o[1] = {NAN}, lse[16];
    HOST(q, k, v, o, lse, 1, 2, 2, 1);
    run_ref(&d, &t);
    cr_expect_float_eq(o[0], 5.0f, 1e-6f, "o = %g, want 0.25*2 + 0.75*6 = 5", o[0]);
    cr_expect_float_eq(lse[0], logf(4), 1e-6f, "lse = %g, want ln 4", lse[0]);
}

Test(reference, causal_bottom_right_and_top_left)
{
    clattn_desc d = tiny(2, 3, 1);
    d.causal = 1;
    float q[] = {0, 0}, k[] = {5, -3, 7}, v[] = {1, 2, 3}, o[2], lse[16];
    HOST(q, k, v, o, lse, 2, 3, 3, 2);
    run_ref(&d, &t); /* bottom-right: row 0 sees keys 0..1, row 1 sees 0..2 (q = 0: uniform) */
    cr_expect_float_eq(o[0], 1.5f, 1e-6f);
    cr_expect_float_eq(o[1], 2.0f, 1e-6f);
    cr_expect_float_eq(lse[0], logf(2), 1e-6f);
    cr_expect_float_eq(lse[1], logf(3), 1e-6f);
    d.causal_align = CLATTN_CAUSAL_TOP_LEFT; /* row 0 sees key 0, row 1 sees keys 0..1 */
    run_ref(&d, &t);
    cr_expect_float_eq(o[0], 1.0f, 1e-6f);
    cr_expect_float_eq(o[1], 1.5f, 1e-6f);
    cr_expect_float_eq(lse[0], 0.0f, 1e-6f);
}

Test(reference, empty_row_is_zero_and_minus_inf)
{
    clattn_desc d = tiny(3, 1, 1);
    d.causal = 1; /* bottom-right with Nq > Nk: rows 0 and 1 see nothing */
    float q[] = {1, 2, 3}, k[] = {1}, v[] = {9}, o[3] = {NAN, NAN, NAN}, lse[16];
    HOST(q, k, v, o, lse, 3, 1, 1, 3);
    run_ref(&d, &t);
    cr_expect_eq(o[0], 0.0f);
    cr_expect_eq(o[1], 0.0f);
    cr_expect(isinf(lse[0]) && lse[0] < 0);
    cr_expect_float_eq(o[2], 9.0f, 1e-6f);
    cr_expect_float_eq(lse[2], 3.0f, 1e-6f);
}

Test(reference, sink_joins_the_denominator)
{
    clattn_desc d = tiny(1, 1, 1);
    d.has_sinks = 1;
    float q[] = {0}, k[] = {1}, v[] = {4}, o[1], lse[16], sink[] = {0};
    HOST(q, k, v, o, lse, 1, 1, 1, 1);
    t.sinks = sink;
    run_ref(&d, &t);
    cr_expect_float_eq(o[0], 2.0f, 1e-6f, "o = %g, want 4 * 1/(1+1)", o[0]);
    cr_expect_float_eq(lse[0], logf(2), 1e-6f);
    /* no allowed key at all: o = 0 and lse = the sink logit */
    d.has_seqused_k = 1;
    int32_t len[] = {0};
    t.seqused_k = len;
    sink[0] = 1.5f;
    run_ref(&d, &t);
    cr_expect_eq(o[0], 0.0f);
    cr_expect_float_eq(lse[0], 1.5f, 1e-6f);
}

Test(reference, softcap)
{
    clattn_desc d = tiny(1, 2, 1);
    d.softcap = 5.0f;
    float q[] = {10}, k[] = {10, 0}, v[] = {1, 0}, o[1], lse[16];
    HOST(q, k, v, o, lse, 1, 2, 2, 1);
    run_ref(&d, &t); /* s = [5 tanh(20), 0] */
    const double s0 = 5 * tanh(20.0), p0 = exp(s0) / (exp(s0) + 1);
    cr_expect_float_eq(o[0], (float)p0, 1e-6f);
    cr_expect_float_eq(lse[0], (float)log(exp(s0) + 1), 1e-5f);
}

Test(reference, alibi_bottom_right)
{
    clattn_desc d = tiny(1, 2, 1);
    d.has_alibi = 1;
    float q[] = {0}, k[] = {1, 1}, v[] = {4, 8}, o[1], lse[16], slope[] = {logf(3)};
    HOST(q, k, v, o, lse, 1, 2, 2, 1);
    t.alibi_slopes = slope;
    run_ref(&d, &t); /* s = [-ln3 * |0+1-0|, 0] -> weights [1/3, 1] / (4/3) */
    cr_expect_float_eq(o[0], 7.0f, 1e-5f, "o = %g, want 7", o[0]);
    cr_expect_float_eq(lse[0], logf(4.0f / 3), 1e-6f);
}

Test(reference, mask_minus_inf_removes_a_key)
{
    clattn_desc d = tiny(1, 2, 1);
    d.has_mask = 1;
    float q[] = {1}, k[] = {1, 100}, v[] = {3, 1000}, o[1], lse[16], mask[] = {0.5f, -INFINITY};
    HOST(q, k, v, o, lse, 1, 2, 2, 1);
    t.mask = mask;
    t.mask_len = 2;
    run_ref(&d, &t);
    cr_expect_float_eq(o[0], 3.0f, 1e-6f);
    cr_expect_float_eq(lse[0], 1.5f, 1e-6f);
}

Test(reference, window_and_gqa)
{
    clattn_desc d = tiny(4, 4, 1);
    d.heads_q = 2; d.heads_kv = 1;
    d.use_window = 1; d.window_left = 1; d.window_right = 0;
    float q[8] = {0}, k[] = {1, 2, 3, 4}, v[] = {1, 2, 3, 4}, o[8], lse[16];
    HOST(q, k, v, o, lse, 8, 4, 4, 8);
    run_ref(&d, &t); /* row i sees keys i-1..i, both heads share the one kv head */
    const float want[4] = {1, 1.5f, 2.5f, 3.5f};
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 4; i++) cr_expect_float_eq(o[h * 4 + i], want[i], 1e-6f, "h %d row %d", h, i);
}

Test(reference, half_conversions)
{
    cr_expect_eq(clattn_f32_to_f16(1.0f), 0x3c00);
    cr_expect_eq(clattn_f32_to_f16(-2.0f), 0xc000);
    cr_expect_eq(clattn_f32_to_f16(65504.0f), 0x7bff);
    cr_expect_eq(clattn_f32_to_f16(65520.0f), 0x7c00, "rounds to inf");
    cr_expect_eq(clattn_f32_to_f16(5.9604645e-8f), 0x0001, "smallest subnormal");
    cr_expect_eq(clattn_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00, "tie rounds to even");
    cr_expect_eq(clattn_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02, "tie rounds to even");
    cr_expect(isnan(clattn_f16_to_f32(clattn_f32_to_f16(NAN))));
    cr_expect_eq(clattn_f16_to_f32(0x3555), 0.333251953125f);
    cr_expect_eq(clattn_f16_to_f32(0x0001), 5.9604645e-8f);
    cr_expect_eq(clattn_f32_to_bf16(1.0f), 0x3f80);
    cr_expect_eq(clattn_f32_to_bf16(1.00390625f), 0x3f80, "tie rounds to even");
    cr_expect_eq(clattn_bf16_to_f32(0x4049), 3.140625f);
    cr_expect(isnan(clattn_bf16_to_f32(clattn_f32_to_bf16(NAN))));
}

/* ---- a second, naive formulation: whole score matrix, boolean masks, two passes ---- */

typedef struct feat {
    char name[32]; /* inline: Criterion runs each case in a new process, pointers don't survive */
    int b, hq, hkv, nq, nk, d, dv, layout, causal, top_left, window, wl, wr;
    float softcap;
    int mask, alibi, sinks, seqlens, dtype;
} feat;

static double ld(const void *p, int dtype, size_t i)
{
    if (dtype == CLATTN_DTYPE_F16) return clattn_f16_to_f32(((const uint16_t *)p)[i]);
    if (dtype == CLATTN_DTYPE_BF16) return clattn_bf16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

static size_t ix(int layout, int b, int h, int n, int d, int H, int N, int D)
{
    return layout == CLATTN_LAYOUT_BSHD ? (((size_t)b * N + n) * H + h) * D + d : (((size_t)b * H + h) * N + n) * D + d;
}

static void naive(const feat *f, const void *q, const void *k, const void *v, const float *mask,
                  const float *alibi, const float *sinks, const int32_t *lens, double *o, double *lse)
{
    const double scale = 1.0 / sqrt(f->d);
    double *S = malloc(sizeof(double) * f->nq * f->nk);
    bool *A = malloc(sizeof(bool) * f->nq * f->nk);
    for (int b = 0; b < f->b; b++)
        for (int h = 0; h < f->hq; h++) {
            const int g = h / (f->hq / f->hkv), klen = f->seqlens ? lens[b] : f->nk;
            const int off = f->top_left ? 0 : klen - f->nq;
            for (int i = 0; i < f->nq; i++)
                for (int j = 0; j < f->nk; j++) {
                    double s = 0;
                    for (int c = 0; c < f->d; c++)
                        s += ld(q, f->dtype, ix(f->layout, b, h, i, c, f->hq, f->nq, f->d)) *
                             ld(k, f->dtype, ix(f->layout, b, g, j, c, f->hkv, f->nk, f->d));
                    s *= scale;
                    if (f->softcap > 0) s = f->softcap * tanh(s / f->softcap);
                    if (f->alibi) s -= alibi[h] * fabs((double)(i + off - j));
                    if (f->mask) s += mask[((size_t)h * f->nq + i) * f->nk + j]; /* (1, Hq, Nq, Nk) */
                    bool ok = j < klen;
                    if (f->causal) ok = ok && j <= i + off;
                    if (f->window && f->wl >= 0) ok = ok && j >= i + off - f->wl;
                    if (f->window && f->wr >= 0) ok = ok && j <= i + off + f->wr;
                    S[i * f->nk + j] = s;
                    A[i * f->nk + j] = ok && s != -INFINITY;
                }
            for (int i = 0; i < f->nq; i++) {
                double m = f->sinks ? sinks[h] : -INFINITY;
                for (int j = 0; j < f->nk; j++)
                    if (A[i * f->nk + j] && S[i * f->nk + j] > m) m = S[i * f->nk + j];
                double den = f->sinks ? exp(sinks[h] - m) : 0;
                for (int j = 0; j < f->nk; j++)
                    if (A[i * f->nk + j]) den += exp(S[i * f->nk + j] - m);
                const size_t row = ((size_t)b * f->hq + h) * f->nq + i;
                lse[row] = den > 0 ? m + log(den) : -INFINITY;
                for (int c = 0; c < f->dv; c++) {
                    double acc = 0;
                    for (int j = 0; j < f->nk; j++)
                        if (A[i * f->nk + j])
                            acc += exp(S[i * f->nk + j] - m) / den * ld(v, f->dtype, ix(f->layout, b, g, j, c, f->hkv, f->nk, f->dv));
                    o[ix(f->layout, b, h, i, c, f->hq, f->nq, f->dv)] = den > 0 ? acc : 0;
                }
            }
        }
    free(S);
    free(A);
}

ParameterizedTestParameters(reference, versus_naive)
{
    static feat cases[] = {
        {"plain", 2, 4, 2, 9, 13, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
        {"causal_bshd", 2, 4, 1, 13, 9, 8, 12, CLATTN_LAYOUT_BSHD, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
        {"everything", 3, 4, 2, 11, 17, 16, 8, 0, 1, 0, 1, 4, 2, 3.0f, 1, 1, 1, 1, 0},
        {"top_left_window", 1, 2, 2, 17, 11, 8, 8, 0, 0, 1, 1, 2, -1, 0, 0, 0, 0, 0, 0},
        {"f16_storage", 2, 2, 1, 7, 10, 16, 16, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, CLATTN_DTYPE_F16},
        {"bf16_storage", 1, 4, 4, 6, 6, 32, 32, CLATTN_LAYOUT_BSHD, 0, 0, 0, 0, 0, 2.0f, 0, 1, 0, 1, CLATTN_DTYPE_BF16},
    };
    return cr_make_param_array(feat, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(feat *f, reference, versus_naive)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = f->b; d.heads_q = f->hq; d.heads_kv = f->hkv; d.seq_q = f->nq; d.seq_kv = f->nk;
    d.head_dim = f->d; d.head_dim_v = f->dv; d.layout = (clattn_layout)f->layout; d.causal = f->causal;
    d.causal_align = f->top_left ? CLATTN_CAUSAL_TOP_LEFT : CLATTN_CAUSAL_BOTTOM_RIGHT;
    d.use_window = f->window; d.window_left = f->wl; d.window_right = f->wr; d.softcap = f->softcap;
    d.has_mask = f->mask; d.has_alibi = f->alibi; d.has_sinks = f->sinks; d.has_seqused_k = f->seqlens;
    d.dtype = (clattn_dtype)f->dtype;
    if (f->mask) d.mask_strides = (clattn_strides){0, (int64_t)f->nq * f->nk, f->nk}; /* broadcast over batch */
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    cr_assert_eq(clattn_desc_tensor_sizes(&d, &n), CLATTN_SUCCESS);
    const size_t es = clattn_dtype_size(d.dtype);
    uint64_t rng = seed_for(f->name);
    void *q = malloc(n.q * es), *k = malloc(n.k * es), *v = malloc(n.v * es), *o = malloc(n.o * es);
    float *tmp = malloc(sizeof(float) * (n.q + n.k + n.v)), *lse = malloc(n.lse * 4);
    float *mask = malloc(sizeof(float) * f->hq * f->nq * f->nk), alibi[8], sinks[8];
    int32_t lens[8];
    clattn_rng_fill(tmp, n.q + n.k + n.v, &rng, 2.0f);
    for (size_t i = 0; i < n.q + n.k + n.v; i++) {
        void *dst = i < n.q ? q : i < n.q + n.k ? k : v;
        size_t j = i < n.q ? i : i < n.q + n.k ? i - n.q : i - n.q - n.k;
        if (d.dtype == CLATTN_DTYPE_F32) ((float *)dst)[j] = tmp[i];
        else ((uint16_t *)dst)[j] = d.dtype == CLATTN_DTYPE_F16 ? clattn_f32_to_f16(tmp[i]) : clattn_f32_to_bf16(tmp[i]);
    }
    for (int i = 0; i < f->hq * f->nq * f->nk; i++) mask[i] = clattn_rng_uniform(&rng) < -0.7f ? -INFINITY : clattn_rng_uniform(&rng);
    for (int h = 0; h < 8; h++) {
        alibi[h] = exp2f(-1.0f - h);
        sinks[h] = clattn_rng_uniform(&rng) * 3;
        lens[h] = (int32_t)(clattn_rng_next(&rng) % (uint64_t)(f->nk + 1));
    }
    clattn_host_tensors t = {sizeof(clattn_host_tensors), q, k, v, o, lse, mask, alibi, sinks, lens, n.q, n.k, n.v, n.o, n.lse, n.mask};
    char msg[256];
    cr_assert_eq(clattn_reference_forward(&d, &t, msg, sizeof msg), CLATTN_SUCCESS, "%s", msg);
    double *on = malloc(sizeof(double) * n.o), *ln = malloc(sizeof(double) * n.lse);
    naive(f, q, k, v, mask, alibi, sinks, lens, on, ln);
    /* The reference rounds o to the storage type once; allow that rounding and no more. */
    const double tol = d.dtype == CLATTN_DTYPE_F32 ? 1e-6 : d.dtype == CLATTN_DTYPE_F16 ? 1e-3 : 8e-3;
    for (size_t i = 0; i < n.o; i++) {
        const double got = ld(o, f->dtype, i);
        cr_assert(fabs(got - on[i]) <= tol * (1 + fabs(on[i])), "%s: o[%zu] = %.9g, naive %.9g", f->name, i, got, on[i]);
    }
    for (size_t i = 0; i < n.lse; i++) {
        if (isinf(ln[i])) cr_assert(isinf(lse[i]) && lse[i] < 0, "%s: lse[%zu] = %g, naive -inf", f->name, i, lse[i]);
        else cr_assert(fabs(lse[i] - ln[i]) <= 1e-6 * (1 + fabs(ln[i])), "%s: lse[%zu] = %.9g, naive %.9g", f->name, i, lse[i], ln[i]);
    }
    free(q); free(k); free(v); free(o); free(tmp); free(lse); free(mask); free(on); free(ln);
}

/* The comparison itself: one wrong row among many passes the whole-tensor bound but fails the
 * worst-row check; a single wrong element fails it too; NaN never passes; rows near zero are
 * judged against the typical row, not held to a tighter bound. */
Test(reference, compare_catches_one_wrong_row)
{
    enum { ROWS = 4000, DIM = 64 };
    float *ref = malloc(sizeof(float) * ROWS * DIM), *out = malloc(sizeof(float) * ROWS * DIM);
    uint64_t rng = 99;
    clattn_rng_fill(ref, ROWS * DIM, &rng, 1.0f);
    for (int i = 0; i < ROWS * DIM; i++) out[i] = ref[i] * (1.0f + 1e-7f);
    clattn_error e = clattn_compare(out, ref, ROWS * DIM, DIM);
    cr_expect(clattn_error_ok(&e, 1e-5), "a faithful copy: rel %.2e worst row %.2e", e.rel_l2, e.worst_row);
    for (int c = 0; c < DIM; c++) out[1234 * DIM + c] = ref[1234 * DIM + c] * 1.0003f; /* row 1234: 3e-4 off */
    e = clattn_compare(out, ref, ROWS * DIM, DIM);
    cr_expect(e.rel_l2 <= 1e-5, "the whole hides the row: rel %.2e", e.rel_l2);
    cr_expect(!clattn_error_ok(&e, 1e-5), "one wrong row must fail (worst row %.2e)", e.worst_row);
    cr_expect_eq(e.worst_row_index, 1234);
    for (int c = 0; c < DIM; c++) out[1234 * DIM + c] = ref[1234 * DIM + c];
    out[77] += 0.05f; /* one element */
    e = clattn_compare(out, ref, ROWS * DIM, DIM);
    cr_expect(!clattn_error_ok(&e, 1e-5), "one wrong element must fail (max abs %.2e)", e.max_abs);
    out[77] = NAN;
    e = clattn_compare(out, ref, ROWS * DIM, DIM);
    cr_expect(!clattn_error_ok(&e, 1e-5), "NaN must fail");
    /* a row of tiny values with a tiny absolute error is fine */
    out[77] = ref[77];
    for (int c = 0; c < DIM; c++) ref[5 * DIM + c] = out[5 * DIM + c] = 1e-6f * (float)c;
    out[5 * DIM + 3] += 1e-9f;
    e = clattn_compare(out, ref, ROWS * DIM, DIM);
    cr_expect(clattn_error_ok(&e, 1e-5), "a tiny row's tiny error: worst row %.2e", e.worst_row);
    free(ref);
    free(out);
}

/* The backward reference against finite differences of the forward reference: with the loss
 * L = sum(d_o * o), dL/dx = (L(x + h) - L(x - h)) / 2h for every element of q, k, v and the
 * sinks, on tiny shapes with every feature. The oracle is checked, not merely trusted. */
typedef struct fd_case {
    char name[24];
    int b, hq, hkv, nq, nk, d, dv;
    int causal, top_left, window, wl, wr, mask, alibi, sinks, seqused, varlen;
    float softcap;
} fd_case;

ParameterizedTestParameters(reference, backward_finite_differences)
{
    static fd_case cases[] = {
        {"plain", 1, 2, 2, 3, 4, 3, 2},
        {"gqa_causal", 2, 4, 2, 3, 5, 3, 3, 1},
        {"top_left_window", 1, 2, 1, 4, 4, 2, 2, 1, 1, 1, 1, 0},
        {"softcap", 1, 2, 2, 3, 4, 3, 2, .softcap = 1.5f},
        {"mask_alibi", 1, 2, 1, 3, 4, 3, 2, .mask = 1, .alibi = 1},
        {"sinks_seqused", 2, 2, 1, 3, 4, 3, 2, 1, .sinks = 1, .seqused = 1},
        {"varlen_everything", 3, 2, 1, 3, 4, 2, 3, 1, .mask = 1, .alibi = 1, .sinks = 1, .seqused = 1,
         .varlen = 1, .softcap = 2.0f},
    };
    return cr_make_param_array(fd_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(fd_case *c, reference, backward_finite_differences)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = c->b; d.heads_q = c->hq; d.heads_kv = c->hkv; d.seq_q = c->nq; d.seq_kv = c->nk;
    d.head_dim = c->d; d.head_dim_v = c->dv; d.causal = c->causal; d.softcap = c->softcap;
    d.causal_align = c->top_left ? CLATTN_CAUSAL_TOP_LEFT : CLATTN_CAUSAL_BOTTOM_RIGHT;
    d.use_window = c->window; d.window_left = c->wl; d.window_right = c->wr;
    d.has_mask = c->mask; d.has_alibi = c->alibi; d.has_sinks = c->sinks; d.has_seqused_k = c->seqused;
    int32_t cuq[4] = {0, 0, 1, 4}, cuk[4] = {0, 3, 4, 7}, used[3] = {2, 0, 3};
    if (c->varlen) { /* an empty, a length-1 and a full query sequence */
        d.varlen = 1; d.layout = CLATTN_LAYOUT_BSHD; d.total_q = 4; d.total_k = 7;
    }
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    cr_assert_eq(clattn_desc_tensor_sizes(&d, &n), CLATTN_SUCCESS);
    uint64_t rng = seed_for(c->name);
    const size_t nin = n.q + n.k + n.v;
    float *x = malloc(sizeof(float) * nin), *o = malloc(sizeof(float) * n.o), *dout = malloc(sizeof(float) * n.o);
    float *mask = malloc(sizeof(float) * (n.mask + 1)), alibi[4] = {0.5f, 0.25f, 0.125f, 0.0625f}, sinks[4];
    float *dx = malloc(sizeof(float) * nin), dsinks[4] = {0};
    clattn_rng_fill(x, nin, &rng, 1.0f);
    clattn_rng_fill(dout, n.o, &rng, 1.0f);
    clattn_rng_fill(mask, n.mask, &rng, 1.0f);
    clattn_rng_fill(sinks, 4, &rng, 1.0f);
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = x; t.k = x + n.q; t.v = x + n.q + n.k; t.o = o; t.d_o = dout;
    t.dq = dx; t.dk = dx + n.q; t.dv = dx + n.q + n.k; t.dsinks = dsinks;
    t.q_len = t.dq_len = n.q; t.k_len = t.dk_len = n.k; t.v_len = t.dv_len = n.v; t.o_len = t.do_len = n.o;
    t.mask = mask; t.mask_len = n.mask; t.alibi_slopes = alibi; t.sinks = sinks; t.seqused_k = used;
    t.cu_seqlens_q = cuq; t.cu_seqlens_k = cuk;
    char msg[256];
    cr_assert_eq(clattn_reference_backward(&d, &t, msg, sizeof msg), CLATTN_SUCCESS, "%s", msg);

    /* L(x) through the forward reference */
    #define LOSS(out)                                                                           \
        do {                                                                                    \
            cr_assert_eq(clattn_reference_forward(&d, &t, msg, sizeof msg), CLATTN_SUCCESS, "%s", msg); \
            double l_ = 0;                                                                      \
            for (size_t e = 0; e < n.o; e++) l_ += (double)dout[e] * o[e];                      \
            (out) = l_;                                                                         \
        } while (0)
    const float h = 1e-2f;
    double worst = 0, scale = 0;
    for (size_t i = 0; i < nin + (c->sinks ? (size_t)c->hq : 0); i++) {
        float *p = i < nin ? &x[i] : &sinks[i - nin];
        const float keep = *p;
        double lp, lm;
        *p = keep + h;
        LOSS(lp);
        *p = keep - h;
        LOSS(lm);
        *p = keep;
        const double fd = (lp - lm) / (2.0 * (double)h), an = i < nin ? dx[i] : dsinks[i - nin];
        if (fabs(fd - an) > worst) worst = fabs(fd - an);
        if (fabs(an) > scale) scale = fabs(an);
        cr_expect(fabs(fd - an) <= 2e-3 * (1.0 + fabs(an)), "%s: element %zu (%s): analytic %.6f, differences %.6f",
                  c->name, i, i < n.q ? "q" : i < n.q + n.k ? "k" : i < nin ? "v" : "sink", an, fd);
    }
    #undef LOSS
    cr_expect(scale > 1e-3, "%s: gradients all but zero: the test would prove nothing", c->name);
    free(x); free(o); free(dout); free(mask); free(dx);
}
