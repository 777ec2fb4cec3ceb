/* The backward pass on every device path against the reference backward (which is itself
 * checked against finite differences in test_reference.c): the fused kernels of both families
 * (rows, tiles) and the unfused CLBlast path, over head dims, awkward lengths, GQA/MQA, causal in both alignments,
 * windows, every feature, f16/bf16, packed sequences; the gradients byte-identical across runs. */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

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
