/* The paged KV cache on every device path — fused rows, tiles, mma, decode and rtile, unfused — against the
 * reference: page sizes 1, 3, 16, 64 and 256, random non-contiguous block tables, the append
 * (caches compared after it; cache elements it does not write must come back byte-for-byte,
 * pages in no table included), rotary embedding interleaved and GPT-NeoX, f16/bf16 caches,
 * GQA, windows, ALiBi, softcap, sinks, split-KV decode, packed queries over the cache (chunked
 * prefill), and block ids outside the cache; then the descriptor's refusals. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

TestSuite(paged, .fini = leak_check);

typedef struct paged_case {
    char name[40];
    int b, hq, hkv, nq, nk, d, dv;
    int page, extra_pages;  /* page size; pages beyond those the tables use (in no table) */
    int nnew, rotary, interleaved;
    int causal, window, wl, wr, alibi, sinks, varlen, dtype, splits, holes;
    float softcap;
    int bshd;
} paged_case;

static clattn_desc desc_of(const paged_case *c)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = c->b; d.heads_q = c->hq; d.heads_kv = c->hkv; d.seq_q = c->nq; d.seq_kv = c->nk;
    d.head_dim = c->d; d.head_dim_v = c->dv;
    d.page_size = c->page;
    d.pages_per_seq = (c->nk + c->page - 1) / c->page;
    d.num_pages = c->b * d.pages_per_seq + c->extra_pages; /* distinct pages per table entry */
    d.has_seqused_k = 1;
    d.seq_new = c->nnew;
    d.rotary_dim = c->rotary;
    d.rotary_interleaved = c->interleaved;
    if (c->rotary) d.rotary_positions = c->nk + (c->nq > c->nnew ? c->nq - c->nnew : 0);
    d.causal = c->causal;
    d.use_window = c->window; d.window_left = c->wl; d.window_right = c->wr;
    d.has_alibi = c->alibi; d.has_sinks = c->sinks; d.softcap = c->softcap;
    d.varlen = c->varlen;
    if (c->varlen || c->bshd) d.layout = CLATTN_LAYOUT_BSHD;
    d.dtype = (clattn_dtype)c->dtype;
    d.num_splits = c->splits;
    return d;
}

static paged_case cases[] = {
    /* decode: one new token appended and attended, every page size */
    {"decode_page1", 3, 4, 2, 1, 37, 64, .page = 1, .extra_pages = 5, .nnew = 1, .causal = 1},
    {"decode_page3_rotary_neox", 3, 8, 2, 1, 50, 64, .page = 3, .extra_pages = 4, .nnew = 1, .rotary = 64, .causal = 1},
    {"decode_page16_rotary_inter", 4, 4, 1, 1, 100, 128, .page = 16, .extra_pages = 2, .nnew = 1, .rotary = 32,
     .interleaved = 1, .causal = 1},
    {"decode_page64", 3, 4, 4, 1, 200, 64, .page = 64, .extra_pages = 1, .nnew = 1},
    {"decode_page256_split", 3, 8, 2, 1, 700, 64, .page = 256, .extra_pages = 1, .nnew = 1, .splits = 4, .causal = 1},
    {"decode_page16_split_heuristic", 2, 4, 1, 1, 2100, 64, .page = 16, .extra_pages = 3, .nnew = 1},
    /* a chunk of new tokens (speculative decoding, chunked prefill with the append) */
    {"chunk_page3_causal_rotary", 3, 4, 2, 5, 40, 32, .page = 3, .extra_pages = 2, .nnew = 5, .rotary = 16,
     .causal = 1},
    {"chunk_page16_bshd_inter", 3, 6, 3, 7, 90, 64, .page = 16, .extra_pages = 2, .nnew = 7, .rotary = 64,
     .interleaved = 1, .causal = 1, .bshd = 1},
    {"chunk_window_not_causal", 3, 4, 2, 6, 70, 64, .page = 16, .nnew = 6, .window = 1, .wl = 9, .wr = 2},
    {"rotary_not_causal", 3, 4, 2, 3, 33, 32, .page = 4, .nnew = 2, .rotary = 32},
    /* windows that mask nothing rotate q as no window does (all of q at seqused_k): (-1, -1), and
     * a left side as wide as the cache (pages_per_seq 9 x page 4) */
    {"rotary_window_unbounded", 3, 4, 2, 3, 33, 32, .page = 4, .nnew = 2, .rotary = 32, .window = 1, .wl = -1,
     .wr = -1},
    {"rotary_window_cache_wide", 3, 4, 2, 3, 33, 32, .page = 4, .nnew = 2, .rotary = 16, .interleaved = 1,
     .window = 1, .wl = 36, .wr = -1},
    /* more queries than the cache holds (8 keys), a right side as long as the cache: unbounded */
    {"window_cache_wide_many_queries", 3, 4, 2, 14, 8, 32, .page = 4, .nnew = 1, .rotary = 32, .window = 1, .wl = 3,
     .wr = 8},
    /* reading only: no append */
    {"read_page1_features", 3, 4, 2, 4, 30, 64, .page = 1, .extra_pages = 3, .alibi = 1, .sinks = 1, .softcap = 20.0f,
     .causal = 1},
    {"read_page64_d80", 3, 4, 4, 9, 150, 80, .page = 64, .extra_pages = 1},
    /* several KV heads per work-item in a CPU decode: 12 KV heads, 6 a work-item, tail rows,
     * the optional terms per row of each head; and d = 256 (32 KB of q and o per work-item) */
    {"read_page16_hkv12_features", 2, 24, 12, 3, 70, 32, .page = 16, .extra_pages = 1, .alibi = 1, .sinks = 1,
     .softcap = 20.0f, .causal = 1},
    {"decode_page16_d256_hkv4", 2, 8, 4, 1, 90, 256, .page = 16, .extra_pages = 1, .nnew = 1, .causal = 1},
    {"read_dv_differs", 3, 4, 2, 3, 45, 64, 32, .page = 8, .nnew = 3, .causal = 1},
    /* f16 and bf16 caches */
    {"f16_append_rotary", 3, 4, 2, 2, 80, 64, .page = 16, .extra_pages = 2, .nnew = 2, .rotary = 64, .causal = 1,
     .dtype = CLATTN_DTYPE_F16},
    {"f16_page256_split", 3, 8, 1, 1, 600, 128, .page = 256, .nnew = 1, .splits = 3, .dtype = CLATTN_DTYPE_F16},
    {"bf16_page3", 3, 4, 2, 3, 29, 64, .page = 3, .nnew = 3, .rotary = 32, .interleaved = 1, .causal = 1,
     .dtype = CLATTN_DTYPE_BF16},
    /* packed queries over the cache (vLLM's chunked prefill): empty and length-1 sequences */
    {"varlen_chunked_prefill", 4, 4, 2, 12, 60, 64, .page = 16, .extra_pages = 2, .causal = 1, .varlen = 1},
    {"varlen_page1_window", 4, 4, 1, 9, 33, 32, .page = 1, .causal = 1, .window = 1, .wl = 7, .wr = 0, .varlen = 1},
    /* block ids outside the cache: their keys are masked, appends to them dropped */
    {"holes_page3_append", 3, 4, 2, 2, 40, 64, .page = 3, .extra_pages = 2, .nnew = 2, .causal = 1, .holes = 1},
    {"holes_page16_split", 3, 4, 2, 1, 600, 64, .page = 16, .nnew = 1, .splits = 4, .holes = 1},
};
#define NCASES (sizeof cases / sizeof cases[0])

/* PATH_MMA: the tensor-core family, which stores f16/bf16 only: an f32 case runs in one of them. */
typedef enum path { PATH_ROWS, PATH_TILES, PATH_UNFUSED, PATH_MMA, PATH_DECODE, PATH_RTILE } path;

static void run_path(const paged_case *c, path p)
{
    clattn_context *ctx = test_context_family(p == PATH_ROWS ? CLATTN_KERNELS_ROWS : p == PATH_UNFUSED
                                                  ? CLATTN_KERNELS_AUTO : p == PATH_MMA ? CLATTN_KERNELS_MMA
                                                  : p == PATH_DECODE ? CLATTN_KERNELS_DECODE : p == PATH_RTILE ? CLATTN_KERNELS_RTILE
                                                  : CLATTN_KERNELS_TILES);
    clattn_desc d = desc_of(c);
    d.algo = p == PATH_UNFUSED ? CLATTN_ALGO_UNFUSED : CLATTN_ALGO_FUSED;
    run_opts opts = {.seed = seed_for(c->name), .paged_holes = c->holes};
    if (p == PATH_MMA && d.dtype == CLATTN_DTYPE_F32) d.dtype = opts.seed & 1 ? CLATTN_DTYPE_BF16 : CLATTN_DTYPE_F16;
    if (p == PATH_DECODE && c->hq / c->hkv * c->nq > 16) { /* past the decode family's rows */
        clattn_context_destroy(ctx);
        return;
    }
    run_result r = run_and_compare(ctx, &d, &opts);
    expect_ok(&r, c->name, opts.seed);
    if (c->nnew) cr_expect(r.appended, "%s: the caches were not compared", c->name);
    clattn_context_destroy(ctx);
}

ParameterizedTestParameters(paged, rows) { return cr_make_param_array(paged_case, cases, NCASES); }
ParameterizedTest(paged_case *c, paged, rows, .timeout = 300) { run_path(c, PATH_ROWS); }
ParameterizedTestParameters(paged, tiles) { return cr_make_param_array(paged_case, cases, NCASES); }
ParameterizedTest(paged_case *c, paged, tiles, .timeout = 300) { run_path(c, PATH_TILES); }
ParameterizedTestParameters(paged, unfused) { return cr_make_param_array(paged_case, cases, NCASES); }
ParameterizedTest(paged_case *c, paged, unfused, .timeout = 300) { run_path(c, PATH_UNFUSED); }
ParameterizedTestParameters(paged, mma) { return cr_make_param_array(paged_case, cases, NCASES); }
ParameterizedTest(paged_case *c, paged, mma, .timeout = 300) { run_path(c, PATH_MMA); }
ParameterizedTestParameters(paged, decode) { return cr_make_param_array(paged_case, cases, NCASES); }
ParameterizedTest(paged_case *c, paged, decode, .timeout = 300) { run_path(c, PATH_DECODE); }
ParameterizedTestParameters(paged, rtile) { return cr_make_param_array(paged_case, cases, NCASES); }
ParameterizedTest(paged_case *c, paged, rtile, .timeout = 300) { run_path(c, PATH_RTILE); }

/* The comparison can fail: a wrong result in a paged run is caught. */
Test(paged, wrong_result_is_caught, .timeout = 120)
{
    clattn_context *ctx = test_context();
    clattn_desc d = desc_of(&cases[2]);
    run_opts opts = {.seed = 7, .inject_error = true};
    run_result r = run_and_compare(ctx, &d, &opts);
    cr_expect(!verify_ok(&r), "a planted error passed");
    for (int how = 1; how <= 2; how++) { /* a cache element the append wrote wrong, or one it should not have */
        run_opts co = {.seed = 7, .inject_cache_error = how};
        r = run_and_compare(ctx, &d, &co);
        cr_expect(r.appended && !verify_ok(&r), "a planted cache error (%s) passed",
                  how == 1 ? "in an appended element" : "outside the append");
    }
    clattn_context_destroy(ctx);
}

/* The reference's q rotation, as flash_attn_with_kvcache's: row by row when causal or local,
 * all of q at seqused_k otherwise; a window that masks nothing counts as none. Checked as
 * properties of the reference (the device paths are compared with it above). */
static void reference_o(const clattn_desc *d, float *o)
{
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    cr_assert_eq(clattn_desc_tensor_sizes(d, &n), CLATTN_SUCCESS);
    uint64_t rng = 5;
    float *in[5];
    const size_t len[5] = {n.q, n.k, n.v, n.k_new, n.v_new};
    for (int i = 0; i < 5; i++) {
        in[i] = malloc(len[i] * 4 + 4);
        for (size_t j = 0; j < len[i]; j++) in[i][j] = clattn_rng_uniform(&rng);
    }
    int32_t *table = malloc(n.block_table * 4 + 4), *lens = malloc((size_t)d->batch * 4);
    for (size_t i = 0; i < n.block_table; i++) table[i] = (int32_t)((i * 5) % (size_t)d->num_pages);
    for (int b = 0; b < d->batch; b++) lens[b] = (d->seq_kv - d->seq_new) * b / (d->batch - 1);
    float *cs = malloc(n.rotary * 4 + 4), *sn = malloc(n.rotary * 4 + 4);
    for (size_t i = 0; i < n.rotary; i++) {
        cs[i] = cosf((float)i * 0.61f);
        sn[i] = sinf((float)i * 0.61f);
    }
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = in[0]; t.k = in[1]; t.v = in[2]; t.k_new = in[3]; t.v_new = in[4]; t.o = o;
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.k_new_len = n.k_new; t.v_new_len = n.v_new; t.o_len = n.o;
    t.block_table = table; t.seqused_k = lens; t.rotary_cos = cs; t.rotary_sin = sn;
    char msg[256];
    cr_assert_eq(clattn_reference_forward(d, &t, msg, sizeof msg), CLATTN_SUCCESS, "%s", msg);
    for (int i = 0; i < 5; i++) free(in[i]);
    free(table); free(lens); free(cs); free(sn);
}

/* Windows that mask nothing leave o bit for bit as without a window; local ones rotate q per
 * row (and may mask), so o moves. Also with more queries than the cache holds, where a side as
 * long as the cache, taken literally, would still mask the first rows (flash_attn_with_kvcache
 * makes such a side unbounded, and so does clattn). */
static void windows_against_none(const paged_case *c)
{
    clattn_desc none = desc_of(c);
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    cr_assert_eq(clattn_desc_tensor_sizes(&none, &n), CLATTN_SUCCESS);
    float *want = malloc(n.o * 4), *got = malloc(n.o * 4);
    reference_o(&none, want);
    const int cap = none.pages_per_seq * none.page_size;
    const struct { int wl, wr, local; } w[] = {{-1, -1, 0}, {cap, -1, 0}, {-1, cap, 0}, {cap + 5, cap, 0},
                                                {cap - 1, -1, 1}, {-1, 2, 1}, {4, 1, 1}};
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
        clattn_desc d = none;
        d.use_window = 1; d.window_left = w[i].wl; d.window_right = w[i].wr;
        reference_o(&d, got);
        /* a window masking nothing gives the same o, bit for bit; a local one rotates q per row
         * (and may mask), so o moves */
        const bool same = !memcmp(got, want, n.o * 4);
        cr_expect(same == !w[i].local, "seq_q %d, window (%d, %d): o %s the unwindowed one's", c->nq, w[i].wl,
                  w[i].wr, same ? "equals" : "differs from");
    }
    free(want);
    free(got);
}

Test(paged, rotary_q_rows_when_local)
{
    const paged_case few = {"", 3, 4, 2, 3, 33, 32, .page = 4, .nnew = 2, .rotary = 32};
    const paged_case many = {"", 3, 4, 2, 14, 8, 32, .page = 4, .nnew = 1, .rotary = 32}; /* cache of 8 keys */
    windows_against_none(&few);
    windows_against_none(&many);
}

/* Every refusal names what is wrong, before anything runs. */
Test(paged, refusals)
{
    char msg[512];
    clattn_desc d = desc_of(&cases[1]);
    cr_assert_eq(clattn_desc_validate(&d, msg, sizeof msg), CLATTN_SUCCESS, "%s", msg);
    clattn_desc x = d;
    x.has_seqused_k = 0;
    cr_expect_eq(clattn_desc_validate(&x, msg, sizeof msg), CLATTN_INVALID_ARGUMENT);
    cr_expect(strstr(msg, "seqused_k"), "%s", msg);
    x = d;
    x.seq_kv = x.pages_per_seq * x.page_size + 1;
    cr_expect_eq(clattn_desc_validate(&x, msg, sizeof msg), CLATTN_INVALID_SHAPE);
    cr_expect(strstr(msg, "pages_per_seq"), "%s", msg);
    x = d;
    x.rotary_dim = 63;
    cr_expect_eq(clattn_desc_validate(&x, msg, sizeof msg), CLATTN_INVALID_ARGUMENT);
    cr_expect(strstr(msg, "rotary_dim"), "%s", msg);
    x = d;
    x.rotary_positions = x.seq_kv - 1;
    cr_expect_eq(clattn_desc_validate(&x, msg, sizeof msg), CLATTN_INVALID_SHAPE);
    cr_expect(strstr(msg, "rotary_positions"), "%s", msg);
    x = d;
    x.seq_new = 0;
    cr_expect_eq(clattn_desc_validate(&x, msg, sizeof msg), CLATTN_INVALID_ARGUMENT, "rotary without an append");
    x = d;
    x.varlen = 1;
    x.layout = CLATTN_LAYOUT_BSHD;
    x.total_q = 4;
    cr_expect_eq(clattn_desc_validate(&x, msg, sizeof msg), CLATTN_UNSUPPORTED, "append with packed queries");
    x = d;
    x.pass = CLATTN_PASS_BACKWARD;
    cr_expect_eq(clattn_desc_validate(&x, msg, sizeof msg), CLATTN_UNSUPPORTED);
    x = d;
    x.num_pages = 0;
    cr_expect_eq(clattn_desc_validate(&x, msg, sizeof msg), CLATTN_INVALID_SHAPE);
    clattn_desc dense = CLATTN_DESC_INIT;
    dense.batch = 1; dense.heads_q = 1; dense.seq_q = 1; dense.seq_kv = 4; dense.head_dim = 8;
    dense.seq_new = 1;
    cr_expect_eq(clattn_desc_validate(&dense, msg, sizeof msg), CLATTN_INVALID_ARGUMENT, "append without pages");
    cr_expect(strstr(msg, "page_size"), "%s", msg);
    dense.seq_new = 0;
    dense.rotary_interleaved = 1;
    cr_expect_eq(clattn_desc_validate(&dense, msg, sizeof msg), CLATTN_INVALID_ARGUMENT, "rotary without pages");
    cr_expect(strstr(msg, "rotary"), "%s", msg);
}

/* A grid the paged kernels could not launch on a GPU (65536 query heads to rotate) is refused
 * when the plan is made, on both paths, so that no call fails after its append. */
Test(paged, grid_refusals)
{
    clattn_context *ctx = test_context();
    clattn_desc d = desc_of(&cases[1]);
    d.heads_q = 65536;
    for (int unfused = 0; unfused <= 1; unfused++) {
        d.algo = unfused ? CLATTN_ALGO_UNFUSED : CLATTN_ALGO_FUSED;
        clattn_plan *plan = NULL;
        cr_expect_neq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS, "%s path", unfused ? "unfused" : "fused");
        cr_expect_null(plan);
        cr_expect(strstr(clattn_context_last_error(ctx), "65536 query heads"), "%s",
                  clattn_context_last_error(ctx));
    }
    clattn_context_destroy(ctx);
}

/* Execution refuses a missing block table, a cache overlapping an input when the append writes
 * it, and a read-only cache; nothing is enqueued. The host arrays' lengths are checked too. */
Test(paged, buffer_refusals)
{
    clattn_context *ctx = test_context();
    clattn_desc d = desc_of(&cases[0]);
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    cr_assert_eq(clattn_desc_tensor_sizes(&d, &n), CLATTN_SUCCESS);
    cr_expect_eq(n.block_table, (size_t)d.batch * d.pages_per_seq);
    cr_expect_eq(n.k, (size_t)d.num_pages * d.page_size * d.heads_kv * d.head_dim);
    cr_expect_eq(n.k_new, (size_t)d.batch * d.seq_new * d.heads_kv * d.head_dim);
    clattn_plan *plan;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    cl_context cl = clattn_context_cl_context(ctx);
    cl_int e;
    cl_command_queue q = clCreateCommandQueue(cl, clattn_context_device(ctx), 0, &e);
    const size_t big = (n.k + n.v + n.q + n.o + 1024) * 4;
    cl_mem m = clCreateBuffer(cl, CL_MEM_READ_WRITE, big, NULL, &e);
    cl_mem ro = clCreateBuffer(cl, CL_MEM_READ_ONLY, big, NULL, &e);
    cl_mem small = clCreateBuffer(cl, CL_MEM_READ_WRITE, 4096, NULL, &e);
    clattn_buffers bf = CLATTN_BUFFERS_INIT;
    bf.k = m; bf.v = m; bf.v_offset = n.k; bf.q = m; bf.q_offset = n.k + n.v; bf.o = m; bf.o_offset = n.k + n.v + n.q;
    bf.seqused_k = small; bf.k_new = small; bf.v_new = small; bf.v_new_offset = 256;
    cl_event ev = NULL;
    cr_expect_eq(clattn_plan_execute(plan, q, &bf, 0, NULL, &ev), CLATTN_INVALID_ARGUMENT);
    cr_expect(strstr(clattn_context_last_error(ctx), "block_table"), "%s", clattn_context_last_error(ctx));
    bf.block_table = small;
    bf.k_new = m; /* inside the cache k, which the append writes */
    bf.k_new_offset = 64;
    cr_expect_eq(clattn_plan_execute(plan, q, &bf, 0, NULL, &ev), CLATTN_BUFFERS_OVERLAP, "k_new inside the cache");
    cl_mem kn = clCreateBuffer(cl, CL_MEM_READ_WRITE, 4096, NULL, &e);
    bf.k_new = kn; bf.v_new = kn; bf.k_new_offset = 0; bf.v_new_offset = 512;
    bf.k = ro;
    cr_expect_eq(clattn_plan_execute(plan, q, &bf, 0, NULL, &ev), CLATTN_INVALID_ARGUMENT, "read-only cache");
    cr_expect(strstr(clattn_context_last_error(ctx), "read-only"), "%s", clattn_context_last_error(ctx));
    bf.k = m;
    bf.k_offset = n.k - 8; /* k's last elements overlap v */
    cr_expect_eq(clattn_plan_execute(plan, q, &bf, 0, NULL, &ev), CLATTN_BUFFERS_OVERLAP);
    cr_expect_null(ev);
    clReleaseMemObject(kn);
    clReleaseMemObject(m);
    clReleaseMemObject(ro);
    clReleaseMemObject(small);
    clReleaseCommandQueue(q);
    clattn_plan_destroy(plan);
    clattn_context_destroy(ctx);
}

/* The host call returns the updated caches and agrees with the reference. */
Test(paged, host_call_returns_caches, .timeout = 120)
{
    clattn_context *ctx = test_context();
    clattn_desc d = desc_of(&cases[6]);
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    cr_assert_eq(clattn_desc_tensor_sizes(&d, &n), CLATTN_SUCCESS);
    /* a plan's setting, refused for a paged plan: the host call and the reference do not read it */
    d.pass = CLATTN_PASS_BACKWARD;
    uint64_t rng = 11;
    float *buf[10];
    const size_t len[10] = {n.q, n.k, n.v, n.k_new, n.v_new, n.o, n.o, n.k, n.k, n.v};
    for (int i = 0; i < 10; i++) {
        buf[i] = malloc(len[i] * 4 + 4);
        for (size_t j = 0; j < len[i]; j++) buf[i][j] = clattn_rng_uniform(&rng);
    }
    int32_t *table = malloc(n.block_table * 4), lens[3] = {0, 17, 35};
    for (size_t i = 0; i < n.block_table; i++) table[i] = (int32_t)((i * 7) % (size_t)d.num_pages);
    float *cs = malloc(n.rotary * 4), *sn = malloc(n.rotary * 4);
    for (size_t i = 0; i < n.rotary; i++) {
        cs[i] = cosf((float)i * 0.37f);
        sn[i] = sinf((float)i * 0.37f);
    }
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = buf[0]; t.k = buf[1]; t.v = buf[2]; t.k_new = buf[3]; t.v_new = buf[4]; t.o = buf[5];
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.k_new_len = n.k_new; t.v_new_len = n.v_new; t.o_len = n.o;
    t.block_table = table; t.seqused_k = lens; t.rotary_cos = cs; t.rotary_sin = sn;
    t.k_cache_out = buf[7];
    t.v_cache_out = buf[9];
    cr_assert_eq(clattn_forward_host(ctx, &d, &t), CLATTN_SUCCESS, "%s", clattn_context_last_error(ctx));
    float *dev_k = malloc(n.k * 4), *dev_v = malloc(n.v * 4);
    memcpy(dev_k, buf[7], n.k * 4);
    memcpy(dev_v, buf[9], n.v * 4);
    t.o = buf[6];
    t.k_cache_out = buf[8];
    char msg[256];
    cr_assert_eq(clattn_reference_forward(&d, &t, msg, sizeof msg), CLATTN_SUCCESS, "%s", msg);
    const clattn_error eo = clattn_compare(buf[5], buf[6], n.o, (size_t)d.head_dim);
    const clattn_error ek = clattn_compare(dev_k, buf[8], n.k, (size_t)d.head_dim);
    const clattn_error ev = clattn_compare(dev_v, buf[9], n.v, (size_t)d.head_dim);
    cr_expect(clattn_error_ok(&eo, 1e-5), "o rel L2 %.3e", eo.rel_l2);
    cr_expect(clattn_error_ok(&ek, 1e-6), "k cache rel L2 %.3e", ek.rel_l2);
    cr_expect(clattn_error_ok(&ev, 0.0) && ev.max_abs == 0.0, "v cache (copied, not rotated) differs: %.3e", ev.max_abs);
    cr_expect(memcmp(buf[1], buf[8], n.k * 4) != 0, "the append changed nothing");
    /* seqused_k past seq_kv - seq_new is refused on the host, nothing written */
    lens[2] = d.seq_kv - d.seq_new + 1;
    float *o_was = malloc(n.o * 4), *kc_was = malloc(n.k * 4);
    memcpy(o_was, t.o, n.o * 4);
    memcpy(kc_was, t.k_cache_out, n.k * 4);
    cr_expect_eq(clattn_forward_host(ctx, &d, &t), CLATTN_INVALID_ARGUMENT);
    cr_expect(strstr(clattn_context_last_error(ctx), "seqused_k"), "%s", clattn_context_last_error(ctx));
    cr_expect(!memcmp(o_was, t.o, n.o * 4) && !memcmp(kc_was, t.k_cache_out, n.k * 4),
              "a refused call wrote o or k_cache_out");
    free(o_was);
    free(kc_was);
    for (int i = 0; i < 10; i++) free(buf[i]);
    free(table); free(cs); free(sn); free(dev_k); free(dev_v);
    clattn_context_destroy(ctx);
}
