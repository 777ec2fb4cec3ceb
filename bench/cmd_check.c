/* `clattn check`: a correctness sweep per device and algorithm against the CPU reference,
 * shapes and features as in the tests, the forward and the backward pass; a pass/fail table
 * with the error and the seed; exit status non-zero on any failure. Unsupported combinations
 * are reported, not failed. */
#include "cli.h"
#include "verify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct check_case {
    const char *name;
    int b, hq, hkv, nq, nk, d, dv;
    int causal, top_left, window, wl, wr, bshd;
    float softcap;
    int mask, alibi, sinks, seqused, varlen, dtype, splits;
    int quick;
    int backward; /* the backward pass: dq, dk, dv (dsinks) against the reference backward */
    int page, nnew, rotary, holes; /* a paged KV cache: page size, tokens appended, rotary dim,
                                      block ids outside the cache in the table */
} check_case;

static const check_case cases[] = {
    {"d64_causal", 1, 4, 4, 77, 77, 64, .causal = 1, .quick = 1},
    {"d40_odd_lengths", 2, 3, 3, 29, 53, 40},
    {"d80_bshd", 1, 4, 2, 33, 70, 80, .bshd = 1, .causal = 1},
    {"d96_gqa4", 1, 8, 2, 17, 100, 96, .quick = 1},
    {"d112_top_left", 1, 2, 2, 40, 19, 112, .causal = 1, .top_left = 1},
    {"d128_mqa", 2, 8, 1, 31, 64, 128, .causal = 1},
    {"d256_dv64", 1, 2, 2, 13, 31, 256, 64},
    {"nq_gt_nk_causal", 1, 2, 2, 100, 30, 64, .causal = 1, .quick = 1},
    {"window", 1, 2, 2, 70, 90, 64, .window = 1, .wl = 7, .wr = 2},
    {"mask_bcast", 2, 4, 2, 17, 23, 32, .mask = 1, .quick = 1},
    {"alibi_softcap", 1, 8, 2, 40, 40, 64, .alibi = 1, .softcap = 20.0f, .causal = 1},
    {"sinks_seqused", 4, 2, 2, 8, 30, 32, .sinks = 1, .seqused = 1, .causal = 1, .quick = 1},
    {"varlen", 4, 4, 2, 20, 30, 64, .varlen = 1, .causal = 1, .quick = 1},
    {"f16", 2, 4, 2, 31, 47, 64, .causal = 1, .dtype = CLATTN_DTYPE_F16, .quick = 1},
    {"bf16", 1, 4, 1, 20, 33, 128, .dtype = CLATTN_DTYPE_BF16},
    {"decode_split", 2, 8, 2, 1, 700, 64, .causal = 1, .splits = 4, .quick = 1},
    {"decode_long", 1, 32, 8, 1, 4096, 128, .causal = 1},
    {"prefill_512", 1, 8, 8, 512, 512, 64, .causal = 1},
    {"bwd_d64_gqa_causal", 2, 8, 2, 37, 53, 64, .causal = 1, .backward = 1, .quick = 1},
    {"bwd_d40_window", 1, 2, 2, 29, 45, 40, .window = 1, .wl = 7, .wr = 2, .backward = 1},
    {"bwd_d128_top_left", 1, 4, 4, 40, 19, 128, .causal = 1, .top_left = 1, .backward = 1},
    {"bwd_mask_alibi_softcap", 2, 4, 2, 17, 23, 32, .mask = 1, .alibi = 1, .softcap = 10.0f, .backward = 1},
    {"bwd_sinks_seqused", 4, 2, 2, 8, 30, 32, .sinks = 1, .seqused = 1, .causal = 1, .backward = 1, .quick = 1},
    {"bwd_varlen", 4, 4, 2, 20, 30, 64, .varlen = 1, .causal = 1, .backward = 1},
    {"bwd_f16", 2, 4, 2, 31, 47, 64, .causal = 1, .dtype = CLATTN_DTYPE_F16, .backward = 1},
    {"bwd_bf16", 1, 4, 1, 20, 33, 128, .dtype = CLATTN_DTYPE_BF16, .backward = 1},
    /* paged KV cache: random block tables; the caches after the append compared too */
    {"paged_decode_p16_rope", 3, 8, 2, 1, 300, 128, .causal = 1, .page = 16, .nnew = 1, .rotary = 128, .quick = 1},
    {"paged_chunk_p3_f16", 3, 4, 2, 5, 70, 64, .causal = 1, .page = 3, .nnew = 5, .rotary = 32,
     .dtype = CLATTN_DTYPE_F16},
    {"paged_p1_split_holes", 3, 8, 2, 1, 500, 64, .page = 1, .nnew = 1, .splits = 4, .holes = 1},
    {"paged_p256_varlen", 4, 4, 2, 12, 600, 64, .causal = 1, .page = 256, .varlen = 1},
};

static clattn_desc desc_of(const check_case *c, clattn_algo algo)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = c->b; d.heads_q = c->hq; d.heads_kv = c->hkv; d.seq_q = c->nq; d.seq_kv = c->nk;
    d.head_dim = c->d; d.head_dim_v = c->dv; d.causal = c->causal;
    d.causal_align = c->top_left ? CLATTN_CAUSAL_TOP_LEFT : CLATTN_CAUSAL_BOTTOM_RIGHT;
    d.use_window = c->window; d.window_left = c->wl; d.window_right = c->wr;
    d.layout = c->bshd || c->varlen ? CLATTN_LAYOUT_BSHD : CLATTN_LAYOUT_BHSD;
    d.softcap = c->softcap; d.has_mask = c->mask; d.has_alibi = c->alibi; d.has_sinks = c->sinks;
    d.has_seqused_k = c->seqused; d.varlen = c->varlen; d.dtype = (clattn_dtype)c->dtype; d.num_splits = c->splits;
    if (c->mask) d.mask_strides = (clattn_strides){0, (int64_t)c->nq * c->nk, c->nk}; /* broadcast over batch */
    d.algo = algo;
    d.pass = c->backward ? CLATTN_PASS_BACKWARD : CLATTN_PASS_FORWARD;
    if (c->page) { /* every table entry its own page, and 3 pages in no table */
        d.page_size = c->page;
        d.pages_per_seq = (c->nk + c->page - 1) / c->page;
        d.num_pages = c->b * d.pages_per_seq + 3;
        d.has_seqused_k = 1;
        d.seq_new = c->nnew;
        d.rotary_dim = c->rotary;
        if (c->rotary) d.rotary_positions = c->nk + (c->nq > c->nnew ? c->nq - c->nnew : 0);
    }
    return d;
}

int cmd_check(int argc, char **argv)
{
    enum { OPT_QUICK = 256, OPT_DEVICE, OPT_DTYPE };
    static const struct option check_options[] = {{"quick", no_argument, NULL, OPT_QUICK},
                                                  {"device", required_argument, NULL, OPT_DEVICE},
                                                  {"dtype", required_argument, NULL, OPT_DTYPE},
                                                  {NULL, 0, NULL, 0}};
    const char *device = NULL;
    int quick = 0, dtype = -1; /* -1: each case's own storage type */
    optind = 0;
    for (int c; (c = cli_next_option("check", argc, argv, "", check_options)) != -1;) {
        if (c == OPT_QUICK) quick = 1;
        else if (c == OPT_DEVICE) device = optarg;
        else if (c == OPT_DTYPE) {
            /* every case in one storage type: f16/bf16 serve the tensor-core family everywhere */
            if (!strcmp(optarg, "f32")) dtype = CLATTN_DTYPE_F32;
            else if (!strcmp(optarg, "f16")) dtype = CLATTN_DTYPE_F16;
            else if (!strcmp(optarg, "bf16")) dtype = CLATTN_DTYPE_BF16;
            else return cli_error("check: --dtype takes f32, f16 or bf16, not '%s'", optarg);
        } else return 1; /* reported */
    }
    cl_device_id devs[CLI_MAX_DEVICES];
    int first, last;
    if (cli_select_devices("check", device, devs, &first, &last)) return 1;
    const bool inject = getenv("CLATTN_TEST_INJECT_ERROR") != NULL; /* test-only hook */
    /* the error columns: o and lse for a forward case, the worst of dq/dk/dv and dsinks for a
     * backward one */
    printf("%-3s %-22s %-24.24s %-8s %-11s %10s %10s %10s %-20s %s\n", "id", "case", "device", "algo", "status",
           "relL2(o|g)", "relL2(l|s)", "max_abs", "seed", "variant / reason");
    int failures = 0, passes = 0, id = 0;
    const double t0 = cli_now_ms();
    for (int di = first; di <= last; di++) {
        char sel[16], name[256] = "";
        snprintf(sel, sizeof sel, "%d", di);
        clGetDeviceInfo(devs[di], CL_DEVICE_NAME, sizeof name - 1, name, NULL);
        clattn_context *ctx;
        if (cli_open_context(sel, &ctx)) return 1;
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            if (quick && !cases[c].quick) continue;
            for (int a = 0; a < 2; a++) {
                const clattn_algo algo = a ? CLATTN_ALGO_UNFUSED : CLATTN_ALGO_FUSED;
                clattn_desc d = desc_of(&cases[c], algo);
                if (dtype >= 0) d.dtype = (clattn_dtype)dtype;
                verify_opts opts = {0};
                opts.seed = 0xc4ec0000ull + c;
                opts.inject_error = inject;
                opts.paged_holes = cases[c].holes;
                verify_result r;
                const char *status;
                if (verify_run(ctx, &d, &opts, &r)) {
                    status = strstr(r.error, "not supported") || strstr(r.error, "no path serves") ? "unsupported" : "ERROR";
                } else {
                    status = verify_ok(&r) ? "pass" : "FAIL";
                }
                if (!strcmp(status, "pass")) passes++;
                else if (strcmp(status, "unsupported")) failures++;
                char e1[16] = "-", e2[16] = "-", e3[16] = "-", seed[24];
                if (!r.error[0] && r.backward) {
                    const clattn_error *g[3] = {&r.dq, &r.dk, &r.dv};
                    double rel = 0, mx = 0;
                    for (int i = 0; i < 3; i++) {
                        if (g[i]->rel_l2 > rel) rel = g[i]->rel_l2;
                        if (g[i]->max_abs > mx) mx = g[i]->max_abs;
                    }
                    snprintf(e1, sizeof e1, "%.2e", rel);
                    if (d.has_sinks) snprintf(e2, sizeof e2, "%.2e", r.dsinks.rel_l2);
                    snprintf(e3, sizeof e3, "%.2e", mx);
                } else if (!r.error[0]) {
                    snprintf(e1, sizeof e1, "%.2e", r.o.rel_l2);
                    snprintf(e2, sizeof e2, "%.2e", r.lse.rel_l2);
                    snprintf(e3, sizeof e3, "%.2e", r.o.max_abs);
                }
                snprintf(seed, sizeof seed, "%llu", (unsigned long long)opts.seed);
                printf("%-3d %-22s %-24.24s %-8s %-11s %10s %10s %10s %-20s %s%s\n", ++id, cases[c].name, name,
                       a ? "unfused" : "fused", status, e1, e2, e3, seed, r.error[0] ? r.error : r.variant,
                       !r.error[0] && !r.guards_ok ? " (guard region written)" : "");
                fflush(stdout);
            }
        }
        cli_tuning_note(ctx, name);
        clattn_context_destroy(ctx);
    }
    printf("\n%d passed, %d failed (%.1f s)\n", passes, failures, (cli_now_ms() - t0) / 1000);
    if (failures) return cli_error("check: %d case(s) failed", failures);
    return 0;
}
