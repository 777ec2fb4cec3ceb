/* `clattn run`: one attention call on .npy tensors, on a device or the CPU reference.
 * Every flag is honoured or refused; the outputs are written only on success. With --expect,
 * the result is compared with another framework's (expect.c): exit 0 within the bound, 1
 * outside it, 2 when the comparison cannot be made. */
#include "cli.h"
#include "expect.h"
#include "metrics.h"
#include "npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct run_args {
    const char *q, *k, *v, *out, *lse, *mask, *alibi, *sinks, *seqused_k, *seqlens_q, *seqlens_k, *device;
    const char *layout, *algo, *dtype, *align;
    const char *expect, *expect_lse; /* the user's o and lse to compare with */
    const char *d_o, *dq, *dk, *dv, *dsinks; /* the backward pass: d_o in, the gradients out */
    /* a paged KV cache: the caches and table in, the new tokens and rotary tables, the caches out */
    const char *k_cache, *v_cache, *block_table, *k_new, *v_new, *cache_out_k, *cache_out_v, *rot_cos, *rot_sin;
    int rot_interleaved;
    double scale, softcap, tol;      /* tol: --tol, 0 for the dtype's bound */
    int causal, window, wl, wr, verbose, splits;
    bool compared;                   /* --expect: the comparison was made (its 1 is a mismatch) */
} run_args;

/* --window L,R: each side -1 (unbounded) up to 2^30. */
static int parse_window(const char *val, run_args *a)
{
    char left[32];
    const char *comma = strchr(val, ',');
    const size_t n = comma ? (size_t)(comma - val) : 0;
    long l, r;
    if (!comma || n >= sizeof left) return cli_error("run: --window wants L,R (got '%s')", val);
    memcpy(left, val, n);
    left[n] = '\0';
    if (!cli_parse_long(left, -1, 1 << 30, &l) || !cli_parse_long(comma + 1, -1, 1 << 30, &r))
        return cli_error("run: --window wants L,R with each side in -1..2^30 (got '%s')", val);
    a->window = 1;
    a->wl = (int)l;
    a->wr = (int)r;
    return 0;
}

enum {
    OPT_Q = 256, OPT_K, OPT_V, OPT_OUT, OPT_LSE, OPT_MASK, OPT_ALIBI, OPT_SINKS, OPT_SEQUSED_K, OPT_SEQLENS_Q,
    OPT_SEQLENS_K, OPT_DEVICE, OPT_LAYOUT, OPT_ALGO, OPT_DTYPE, OPT_ALIGN, OPT_CAUSAL, OPT_SCALE, OPT_SOFTCAP,
    OPT_WINDOW, OPT_SPLITS, OPT_EXPECT, OPT_EXPECT_LSE, OPT_TOL, OPT_DO, OPT_DQ, OPT_DK, OPT_DV, OPT_DSINKS,
    OPT_K_CACHE, OPT_V_CACHE, OPT_BLOCK_TABLE, OPT_K_NEW, OPT_V_NEW, OPT_CACHE_OUT_K, OPT_CACHE_OUT_V, OPT_ROT_COS,
    OPT_ROT_SIN, OPT_ROT_INTERLEAVED
};

static const struct option run_options[] = {
    {"q", required_argument, NULL, OPT_Q},
    {"k", required_argument, NULL, OPT_K},
    {"v", required_argument, NULL, OPT_V},
    {"out", required_argument, NULL, OPT_OUT},
    {"lse", required_argument, NULL, OPT_LSE},
    {"mask", required_argument, NULL, OPT_MASK},
    {"alibi", required_argument, NULL, OPT_ALIBI},
    {"sinks", required_argument, NULL, OPT_SINKS},
    {"seqused-k", required_argument, NULL, OPT_SEQUSED_K},
    {"seqlens-q", required_argument, NULL, OPT_SEQLENS_Q},
    {"seqlens-k", required_argument, NULL, OPT_SEQLENS_K},
    {"device", required_argument, NULL, OPT_DEVICE},
    {"layout", required_argument, NULL, OPT_LAYOUT},
    {"algo", required_argument, NULL, OPT_ALGO},
    {"dtype", required_argument, NULL, OPT_DTYPE},
    {"causal-align", required_argument, NULL, OPT_ALIGN},
    {"causal", no_argument, NULL, OPT_CAUSAL},
    {"scale", required_argument, NULL, OPT_SCALE},
    {"softcap", required_argument, NULL, OPT_SOFTCAP},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"splits", required_argument, NULL, OPT_SPLITS},
    {"expect", required_argument, NULL, OPT_EXPECT},
    {"expect-lse", required_argument, NULL, OPT_EXPECT_LSE},
    {"tol", required_argument, NULL, OPT_TOL},
    {"do", required_argument, NULL, OPT_DO},
    {"dq", required_argument, NULL, OPT_DQ},
    {"dk", required_argument, NULL, OPT_DK},
    {"dv", required_argument, NULL, OPT_DV},
    {"dsinks", required_argument, NULL, OPT_DSINKS},
    {"k-cache", required_argument, NULL, OPT_K_CACHE},
    {"v-cache", required_argument, NULL, OPT_V_CACHE},
    {"block-table", required_argument, NULL, OPT_BLOCK_TABLE},
    {"k-new", required_argument, NULL, OPT_K_NEW},
    {"v-new", required_argument, NULL, OPT_V_NEW},
    {"cache-out-k", required_argument, NULL, OPT_CACHE_OUT_K},
    {"cache-out-v", required_argument, NULL, OPT_CACHE_OUT_V},
    {"rotary-cos", required_argument, NULL, OPT_ROT_COS},
    {"rotary-sin", required_argument, NULL, OPT_ROT_SIN},
    {"rotary-interleaved", no_argument, NULL, OPT_ROT_INTERLEAVED},
    {"verbose", no_argument, NULL, 'v'},
    {NULL, 0, NULL, 0},
};

/* The option's string field, or NULL for the others. */
static const char **string_field(run_args *a, int opt)
{
    switch (opt) {
    case OPT_Q: return &a->q;
    case OPT_K: return &a->k;
    case OPT_V: return &a->v;
    case OPT_OUT: return &a->out;
    case OPT_LSE: return &a->lse;
    case OPT_MASK: return &a->mask;
    case OPT_ALIBI: return &a->alibi;
    case OPT_SINKS: return &a->sinks;
    case OPT_SEQUSED_K: return &a->seqused_k;
    case OPT_SEQLENS_Q: return &a->seqlens_q;
    case OPT_SEQLENS_K: return &a->seqlens_k;
    case OPT_DEVICE: return &a->device;
    case OPT_LAYOUT: return &a->layout;
    case OPT_ALGO: return &a->algo;
    case OPT_DTYPE: return &a->dtype;
    case OPT_ALIGN: return &a->align;
    case OPT_EXPECT: return &a->expect;
    case OPT_EXPECT_LSE: return &a->expect_lse;
    case OPT_DO: return &a->d_o;
    case OPT_DQ: return &a->dq;
    case OPT_DK: return &a->dk;
    case OPT_DV: return &a->dv;
    case OPT_DSINKS: return &a->dsinks;
    case OPT_K_CACHE: return &a->k_cache;
    case OPT_V_CACHE: return &a->v_cache;
    case OPT_BLOCK_TABLE: return &a->block_table;
    case OPT_K_NEW: return &a->k_new;
    case OPT_V_NEW: return &a->v_new;
    case OPT_CACHE_OUT_K: return &a->cache_out_k;
    case OPT_CACHE_OUT_V: return &a->cache_out_v;
    case OPT_ROT_COS: return &a->rot_cos;
    case OPT_ROT_SIN: return &a->rot_sin;
    default: return NULL;
    }
}

static int parse_args(int argc, char **argv, run_args *a)
{
    memset(a, 0, sizeof *a);
    optind = 0;
    for (int c; (c = cli_next_option("run", argc, argv, "v", run_options)) != -1;) {
        const char **str = string_field(a, c);
        long n;
        double x;
        if (str) {
            *str = optarg;
            continue;
        }
        switch (c) {
        case OPT_CAUSAL: a->causal = 1; break;
        case OPT_ROT_INTERLEAVED: a->rot_interleaved = 1; break;
        case 'v': a->verbose = 1; break;
        case OPT_SPLITS:
            if (!cli_parse_long(optarg, 1, 1024, &n)) return cli_error("run: --splits wants 1..1024 (got '%s')", optarg);
            a->splits = (int)n;
            break;
        case OPT_WINDOW:
            if (parse_window(optarg, a)) return 1;
            break;
        case OPT_SCALE:
            if (!cli_parse_double(optarg, &x)) return cli_error("run: --scale wants a number (got '%s')", optarg);
            if (x == 0) return cli_error("run: --scale must be nonzero");
            a->scale = x;
            break;
        case OPT_SOFTCAP:
            if (!cli_parse_double(optarg, &x)) return cli_error("run: --softcap wants a number (got '%s')", optarg);
            if (x <= 0) return cli_error("run: --softcap must be > 0");
            a->softcap = x;
            break;
        case OPT_TOL:
            if (!cli_parse_double(optarg, &x) || x <= 0)
                return cli_error("run: --tol wants a positive relative L2 bound (got '%s')", optarg);
            a->tol = x;
            break;
        default: return 1; /* reported */
        }
    }
    if (a->expect_lse && !a->expect) return cli_error("run: --expect-lse goes with --expect");
    if (a->tol && !a->expect) return cli_error("run: --tol goes with --expect");
    const bool paged = a->k_cache || a->v_cache || a->block_table;
    if (paged) {
        if (!a->k_cache || !a->v_cache || !a->block_table || !a->seqused_k)
            return cli_error("run: a paged cache needs --k-cache, --v-cache, --block-table and --seqused-k");
        if (a->k || a->v) return cli_error("run: --k/--v are dense tensors: a paged cache takes --k-cache/--v-cache");
        if (a->seqlens_k) return cli_error("run: --seqlens-k packs dense keys: a paged cache's come from its table");
        if (!a->k_new != !a->v_new) return cli_error("run: --k-new and --v-new go together");
        if ((a->cache_out_k || a->cache_out_v) && !a->k_new)
            return cli_error("run: --cache-out-k/-v hold the caches after an append (--k-new, --v-new)");
        if (!a->rot_cos != !a->rot_sin) return cli_error("run: --rotary-cos and --rotary-sin go together");
        if (a->rot_cos && !a->k_new) return cli_error("run: rotary embedding goes with an append (--k-new, --v-new)");
        if (a->d_o) return cli_error("run: the backward pass does not read paged caches");
    } else if (a->k_new || a->v_new || a->cache_out_k || a->cache_out_v || a->rot_cos || a->rot_sin ||
               a->rot_interleaved) {
        return cli_error("run: --k-new, --v-new, --cache-out-*, --rotary-* need a paged cache (--k-cache ...)");
    }
    if (a->rot_interleaved && !a->rot_cos) return cli_error("run: --rotary-interleaved goes with --rotary-cos/--rotary-sin");
    if (!a->q || (!paged && (!a->k || !a->v)) || (!a->out && !a->expect))
        return cli_error("run: --q, --k, --v (or --k-cache, --v-cache) and --out (or --expect) are required");
    if (!paged && !a->seqlens_q != !a->seqlens_k)
        return cli_error("run: --seqlens-q and --seqlens-k go together (packed varlen)");
    if ((a->d_o || a->dq || a->dk || a->dv || a->dsinks) && !(a->d_o && a->dq && a->dk && a->dv))
        return cli_error("run: the backward pass needs --do, --dq, --dk and --dv together");
    if (a->dsinks && !a->sinks) return cli_error("run: --dsinks goes with --sinks");
    if (a->d_o && a->expect) return cli_error("run: --expect compares the forward's output: run the backward without it");
    if (a->seqlens_q && a->layout) return cli_error("run: packed varlen tensors are (tokens, heads, dim): no --layout");
    return 0;
}

typedef struct run_inputs {
    npy_array q, k, v, mask, alibi, sinks, seqused, lens_q, lens_k;
    npy_array table, k_new, v_new, rot_cos, rot_sin; /* a paged cache (k, v: the caches) */
    int32_t *cu_q, *cu_k; /* cumulative offsets built from the per-sequence lengths */
} run_inputs;

static void free_inputs(run_inputs *in)
{
    npy_free(&in->q); npy_free(&in->k); npy_free(&in->v); npy_free(&in->mask);
    npy_free(&in->alibi); npy_free(&in->sinks); npy_free(&in->seqused);
    npy_free(&in->lens_q); npy_free(&in->lens_k);
    npy_free(&in->table); npy_free(&in->k_new); npy_free(&in->v_new); npy_free(&in->rot_cos); npy_free(&in->rot_sin);
    free(in->cu_q); free(in->cu_k);
}

/* Packed varlen: per-sequence lengths (int32, one per sequence) -> cumulative offsets, which
 * must account for every packed token. Returns the longest length, or -1 after an error. */
static int make_cu(const npy_array *lens, const char *flag, int64_t total, int32_t **cu)
{
    if (lens->type != NPY_I32 || lens->ndim != 1 || lens->shape[0] < 1)
        return cli_error("run: %s must be a 1-D int32 array of sequence lengths", flag), -1;
    const int64_t n = lens->shape[0];
    *cu = malloc(sizeof(int32_t) * (size_t)(n + 1));
    if (!*cu) return cli_error("run: out of memory"), -1;
    int64_t sum = 0;
    int longest = 0;
    (*cu)[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        const int32_t len = ((const int32_t *)lens->data)[i];
        if (len < 0) return cli_error("run: %s[%lld] = %d is negative", flag, (long long)i, len), -1;
        sum += len;
        if (sum > total) break;
        (*cu)[i + 1] = (int32_t)sum;
        if (len > longest) longest = len;
    }
    if (sum != total)
        return cli_error("run: %s sums to %lld but the tensors hold %lld tokens", flag, (long long)sum, (long long)total), -1;
    return longest > 0 ? longest : 1;
}

static int read_input(const char *path, npy_array *a)
{
    char err[512];
    if (npy_read(path, a, err, sizeof err)) return cli_error("%s", err);
    return 0;
}

/* A paged cache's descriptor fields from the tensors: caches (num_pages, page_size, Hkv, d),
 * block table (B, pages_per_seq) and seqused_k (B) int32, q as --layout says (or packed by
 * --seqlens-q), k_new/v_new as q's layout with Hkv heads, cos/sin (positions, rotary_dim/2) f32.
 * seq_kv is the longest sequence after the append. */
static int paged_desc(const run_args *a, run_inputs *in, bool bshd, clattn_desc *d)
{
    const npy_array *q = &in->q, *k = &in->k, *v = &in->v, *bt = &in->table, *used = &in->seqused;
    if (k->ndim != 4 || v->ndim != 4 || k->shape[0] != v->shape[0] || k->shape[1] != v->shape[1] ||
        k->shape[2] != v->shape[2])
        return cli_error("run: --k-cache and --v-cache must be (num_pages, page_size, heads_kv, dim), alike but dim");
    if (q->type != k->type || q->type != v->type) return cli_error("run: q and the caches must have one dtype");
    if (bt->type != NPY_I32 || bt->ndim != 2) return cli_error("run: --block-table must be int32 (batch, pages_per_seq)");
    for (int i = 0; i < 4; i++)
        if (k->shape[i] > 1 << 30 || v->shape[3] > 1 << 30 || bt->shape[i % 2] > 1 << 30)
            return cli_error("run: a dimension exceeds 2^30");
    d->page_size = (int)k->shape[1];
    d->num_pages = (int)k->shape[0];
    d->heads_kv = (int)k->shape[2];
    d->head_dim = (int)k->shape[3];
    d->head_dim_v = (int)v->shape[3];
    d->batch = (int)bt->shape[0];
    d->pages_per_seq = (int)bt->shape[1];
    d->has_seqused_k = 1;
    if (used->type != NPY_I32 || used->ndim != 1 || used->shape[0] != d->batch)
        return cli_error("run: --seqused-k must be int32 of shape (%d,)", d->batch);
    const int hi = bshd ? 2 : 1, si = bshd ? 1 : 2;
    if (a->k_new) {
        const npy_array *kn = &in->k_new, *vn = &in->v_new;
        if (kn->ndim != 4 || vn->ndim != 4 || kn->type != q->type || vn->type != q->type || kn->shape[0] != d->batch ||
            kn->shape[hi] != d->heads_kv || kn->shape[3] != d->head_dim || vn->shape[0] != d->batch ||
            vn->shape[hi] != d->heads_kv || vn->shape[si] != kn->shape[si] || vn->shape[3] != d->head_dim_v ||
            kn->shape[si] > 1 << 30)
            return cli_error("run: --k-new/--v-new must be %s = (%d, %s) in q's dtype", bshd ? "(B, Nnew, Hkv, D)"
                             : "(B, Hkv, Nnew, D)", d->batch, bshd ? "Nnew, Hkv, D" : "Hkv, Nnew, D");
        d->seq_new = (int)kn->shape[si];
    }
    int64_t longest = 1;
    for (int b = 0; b < d->batch; b++) {
        const int64_t n = (int64_t)((const int32_t *)used->data)[b] + d->seq_new;
        if (n > longest) longest = n;
    }
    if (longest > (int64_t)d->pages_per_seq * d->page_size || longest > INT32_MAX)
        return cli_error("run: seqused_k + the new tokens (%lld) exceed what a table row holds (%d pages of %d)%s",
                         (long long)longest, d->pages_per_seq, d->page_size,
                         longest > INT32_MAX ? " or a 32-bit key count" : "");
    d->seq_kv = (int)longest;
    if (a->seqlens_q) { /* packed queries over the cache: q (total_q, Hq, d) */
        if (q->ndim != 3 || q->shape[2] != d->head_dim || q->shape[0] > 1 << 30)
            return cli_error("run: with --seqlens-q, q is (tokens, heads, %d)", d->head_dim);
        const int lq = make_cu(&in->lens_q, "--seqlens-q", q->shape[0], &in->cu_q);
        if (lq < 0) return 1;
        if (in->lens_q.shape[0] != d->batch) return cli_error("run: --seqlens-q gives %lld sequences, the table %d",
                                                              (long long)in->lens_q.shape[0], d->batch);
        d->varlen = 1;
        d->layout = CLATTN_LAYOUT_BSHD;
        d->total_q = (int)q->shape[0];
        d->seq_q = lq;
        d->heads_q = (int)q->shape[1];
    } else {
        if (q->ndim != 4 || q->shape[0] != d->batch || q->shape[3] != d->head_dim || q->shape[si] > 1 << 30 ||
            q->shape[hi] > 1 << 30)
            return cli_error("run: q must be %s with B = %d and D = %d", bshd ? "(B, S, H, D)" : "(B, H, S, D)",
                             d->batch, d->head_dim);
        d->layout = bshd ? CLATTN_LAYOUT_BSHD : CLATTN_LAYOUT_BHSD;
        d->seq_q = (int)q->shape[si];
        d->heads_q = (int)q->shape[hi];
    }
    if (a->rot_cos) {
        const npy_array *c = &in->rot_cos, *s = &in->rot_sin;
        if (c->type != NPY_F32 || s->type != NPY_F32 || c->ndim != 2 || s->ndim != 2 || c->shape[0] != s->shape[0] ||
            c->shape[1] != s->shape[1] || c->shape[0] > 1 << 30 || c->shape[1] > 1 << 20)
            return cli_error("run: --rotary-cos and --rotary-sin must be float32 (positions, rotary_dim / 2), alike");
        d->rotary_dim = 2 * (int)c->shape[1];
        d->rotary_positions = (int)c->shape[0];
        d->rotary_interleaved = a->rot_interleaved;
    }
    return 0;
}

/* Builds the descriptor from the tensors' shapes and the flags. */
static int make_desc(const run_args *a, run_inputs *in, clattn_desc *d)
{
    *d = (clattn_desc)CLATTN_DESC_INIT;
    bool bshd = false;
    if (a->layout) {
        if (!strcmp(a->layout, "bshd")) bshd = true;
        else if (strcmp(a->layout, "bhsd")) return cli_error("run: --layout must be bhsd or bshd (got '%s')", a->layout);
    }
    const npy_array *q = &in->q, *k = &in->k, *v = &in->v;
    if (a->k_cache) {
        if (paged_desc(a, in, bshd, d)) return 1;
    } else if (a->seqlens_q) { /* packed: q (total_q, Hq, d), k/v (total_k, Hkv, d) */
        if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3)
            return cli_error("run: with --seqlens-q/-k, q, k and v are (tokens, heads, dim); got %d-D, %d-D, %d-D",
                             q->ndim, k->ndim, v->ndim);
        if (q->type != k->type || q->type != v->type) return cli_error("run: q, k and v must have one dtype");
        if (k->shape[0] != v->shape[0] || k->shape[1] != v->shape[1] || k->shape[2] != q->shape[2])
            return cli_error("run: k and v must match in tokens and heads, and k's head dim must match q's");
        for (int i = 0; i < 3; i++)
            if (q->shape[i] > 1 << 30 || k->shape[i] > 1 << 30 || v->shape[i] > 1 << 30)
                return cli_error("run: a dimension exceeds 2^30");
        const int lq = make_cu(&in->lens_q, "--seqlens-q", q->shape[0], &in->cu_q);
        if (lq < 0) return 1;
        const int lk = make_cu(&in->lens_k, "--seqlens-k", k->shape[0], &in->cu_k);
        if (lk < 0) return 1;
        if (in->lens_q.shape[0] != in->lens_k.shape[0])
            return cli_error("run: --seqlens-q and --seqlens-k give different sequence counts");
        d->varlen = 1;
        d->layout = CLATTN_LAYOUT_BSHD;
        d->batch = (int)in->lens_q.shape[0];
        d->total_q = (int)q->shape[0];
        d->total_k = (int)k->shape[0];
        d->seq_q = lq;
        d->seq_kv = lk;
        d->heads_q = (int)q->shape[1];
        d->heads_kv = (int)k->shape[1];
        d->head_dim = (int)q->shape[2];
        d->head_dim_v = (int)v->shape[2];
    } else {
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4)
        return cli_error("run: q, k and v must be 4-D (%s); got %d-D, %d-D, %d-D", bshd ? "B,S,H,D" : "B,H,S,D",
                         q->ndim, k->ndim, v->ndim);
    if (q->type != k->type || q->type != v->type)
        return cli_error("run: q, k and v must have one dtype (got %s, %s, %s)", npy_type_name(q->type),
                         npy_type_name(k->type), npy_type_name(v->type));
    const int hi = bshd ? 2 : 1, si = bshd ? 1 : 2;
    d->batch = (int)q->shape[0];
    d->heads_q = (int)q->shape[hi];
    d->seq_q = (int)q->shape[si];
    d->head_dim = (int)q->shape[3];
    d->heads_kv = (int)k->shape[hi];
    d->seq_kv = (int)k->shape[si];
    d->head_dim_v = (int)v->shape[3];
    for (int i = 0; i < 4; i++)
        if (q->shape[i] > 1 << 30 || k->shape[i] > 1 << 30 || v->shape[i] > 1 << 30)
            return cli_error("run: a dimension exceeds 2^30");
    if (k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0])
        return cli_error("run: batch differs between q (%lld), k (%lld) and v (%lld)", (long long)q->shape[0],
                         (long long)k->shape[0], (long long)v->shape[0]);
    if (k->shape[3] != q->shape[3])
        return cli_error("run: head dim of k (%lld) differs from q (%lld)", (long long)k->shape[3], (long long)q->shape[3]);
    if (v->shape[hi] != k->shape[hi] || v->shape[si] != k->shape[si])
        return cli_error("run: v's heads and sequence length must match k's");
    d->layout = bshd ? CLATTN_LAYOUT_BSHD : CLATTN_LAYOUT_BHSD;
    }

    const char *want = a->dtype ? a->dtype : "";
    if (a->dtype && strcmp(want, "f32") && strcmp(want, "f16") && strcmp(want, "bf16"))
        return cli_error("run: --dtype must be f32, f16 or bf16 (got '%s')", want);
    if (q->type == NPY_F32 && (!a->dtype || !strcmp(want, "f32"))) d->dtype = CLATTN_DTYPE_F32;
    else if (q->type == NPY_F16 && (!a->dtype || !strcmp(want, "f16"))) d->dtype = CLATTN_DTYPE_F16;
    else if (q->type == NPY_U16 && !strcmp(want, "bf16")) d->dtype = CLATTN_DTYPE_BF16;
    else if (q->type == NPY_U16) return cli_error("run: uint16 inputs hold bf16 bits only with --dtype bf16");
    else return cli_error("run: inputs are %s, which does not fit --dtype %s", npy_type_name(q->type), want);

    d->scale = (float)a->scale;
    d->causal = a->causal;
    if (a->align) {
        if (!strcmp(a->align, "top-left")) d->causal_align = CLATTN_CAUSAL_TOP_LEFT;
        else if (strcmp(a->align, "bottom-right"))
            return cli_error("run: --causal-align must be bottom-right or top-left (got '%s')", a->align);
    }
    d->use_window = a->window;
    d->window_left = a->wl;
    d->window_right = a->wr;
    d->softcap = (float)a->softcap;
    if (a->mask) {
        const npy_array *m = &in->mask;
        if (m->type != NPY_F32 || m->ndim != 4 || (m->shape[0] != 1 && m->shape[0] != d->batch) ||
            (m->shape[1] != 1 && m->shape[1] != d->heads_q) || m->shape[2] != d->seq_q || m->shape[3] != d->seq_kv)
            return cli_error("run: --mask must be float32 (B|1, Hq|1, Nq, Nk) = (%d|1, %d|1, %d, %d)", d->batch,
                             d->heads_q, d->seq_q, d->seq_kv);
        d->has_mask = 1;
        d->mask_strides.seq = d->seq_kv;
        d->mask_strides.head = m->shape[1] == 1 ? 0 : (int64_t)d->seq_q * d->seq_kv;
        d->mask_strides.batch = m->shape[0] == 1 ? 0 : m->shape[1] * (int64_t)d->seq_q * d->seq_kv;
    }
    const struct { const char *flag; const npy_array *arr; int *has; } per_head[] = {
        {a->alibi, &in->alibi, &d->has_alibi}, {a->sinks, &in->sinks, &d->has_sinks}};
    for (int i = 0; i < 2; i++) {
        if (!per_head[i].flag) continue;
        const npy_array *x = per_head[i].arr;
        if (x->type != NPY_F32 || x->ndim != 1 || x->shape[0] != d->heads_q)
            return cli_error("run: %s must be float32 of shape (%d,)", i ? "--sinks" : "--alibi", d->heads_q);
        *per_head[i].has = 1;
    }
    if (a->seqused_k && !a->k_cache) {
        const npy_array *x = &in->seqused;
        if (x->type != NPY_I32 || x->ndim != 1 || x->shape[0] != d->batch)
            return cli_error("run: --seqused-k must be int32 of shape (%d,)", d->batch);
        d->has_seqused_k = 1;
    }
    d->num_splits = a->splits;
    if (a->algo && strcmp(a->algo, "reference")) {
        if (!strcmp(a->algo, "fused")) d->algo = CLATTN_ALGO_FUSED;
        else if (!strcmp(a->algo, "unfused")) d->algo = CLATTN_ALGO_UNFUSED;
        else if (strcmp(a->algo, "auto"))
            return cli_error("run: --algo must be auto, fused, unfused or reference (got '%s')", a->algo);
    }
    char msg[512];
    clattn_status st = clattn_desc_validate(d, msg, sizeof msg);
    if (st) return cli_error("run: %s", msg);
    return 0;
}

/* Runs on the device; `what` gets the algorithm, device and variant, for --expect's report. */
static int run_device(const run_args *a, const clattn_desc *d, const clattn_host_tensors *t, char *what,
                      size_t what_size)
{
    clattn_context *ctx = NULL;
    if (cli_open_context(a->device, &ctx)) return 1;
    int rc = 0;
    clattn_plan *plan = NULL;
    cl_command_queue queue = NULL;
    cl_mem mem[11] = {0};
    cl_event ev = NULL;
    clattn_tensor_sizes need = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(d, &need);
    const size_t es = clattn_dtype_size(d->dtype);
    double t0 = cli_now_ms();
    clattn_status st = clattn_plan_create(ctx, d, &plan);
    double t_plan = cli_now_ms() - t0, t_exec = 0;
    if (st) {
        char msg[2048];
        clattn_context_copy_last_error(ctx, msg, sizeof msg);
        rc = cli_error("run: %s: %s", clattn_status_string(st), msg);
        goto done;
    }
    cl_int e = CL_SUCCESS;
    if (d->page_size) { /* the caches are updated in place: the host call carries them back */
        t0 = cli_now_ms();
        st = clattn_forward_host(ctx, d, t);
        t_exec = cli_now_ms() - t0;
        if (st) {
            rc = cli_error("run: execution failed: %s (%d): %s", clattn_status_string(st), st,
                           clattn_context_last_error(ctx));
            goto done;
        }
        goto report;
    }
    queue = clCreateCommandQueue(clattn_context_cl_context(ctx), clattn_context_device(ctx), 0, &e);
    const void *host[4] = {t->q, t->k, t->v, t->o};
    const size_t bytes[5] = {need.q * es, need.k * es, need.v * es, need.o * es, need.lse * 4};
    for (int i = 0; i < 5 && !e; i++) {
        if (i == 4 && !t->lse) break;
        cl_mem_flags fl = i < 3 ? CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR : CL_MEM_READ_WRITE;
        mem[i] = clCreateBuffer(clattn_context_cl_context(ctx), fl, bytes[i], i < 3 ? (void *)host[i] : NULL, &e);
    }
    /* feature tensors: mask, alibi slopes, sinks, key lengths */
    const void *feat[6] = {t->mask, t->alibi_slopes, t->sinks, t->seqused_k, t->cu_seqlens_q, t->cu_seqlens_k};
    const size_t fbytes[6] = {need.mask * 4, (size_t)d->heads_q * 4, (size_t)d->heads_q * 4, (size_t)d->batch * 4,
                              (size_t)(d->batch + 1) * 4, (size_t)(d->batch + 1) * 4};
    for (int i = 0; i < 6 && !e; i++)
        if (feat[i])
            mem[5 + i] = clCreateBuffer(clattn_context_cl_context(ctx), CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                        fbytes[i], (void *)feat[i], &e);
    if (e) {
        rc = cli_error("run: OpenCL buffer or queue creation failed: %s (%d)", clattn_status_string(e), e);
        goto done;
    }
    clattn_buffers bf = CLATTN_BUFFERS_INIT;
    bf.q = mem[0]; bf.k = mem[1]; bf.v = mem[2]; bf.o = mem[3]; bf.lse = mem[4];
    bf.mask = mem[5]; bf.alibi_slopes = mem[6]; bf.sinks = mem[7]; bf.seqused_k = mem[8];
    bf.cu_seqlens_q = mem[9]; bf.cu_seqlens_k = mem[10];
    t0 = cli_now_ms();
    st = clattn_plan_execute(plan, queue, &bf, 0, NULL, &ev);
    if (!st) st = clWaitForEvents(1, &ev);
    t_exec = cli_now_ms() - t0;
    if (!st) st = clEnqueueReadBuffer(queue, mem[3], CL_TRUE, 0, bytes[3], t->o, 0, NULL, NULL);
    if (!st && t->lse) st = clEnqueueReadBuffer(queue, mem[4], CL_TRUE, 0, bytes[4], t->lse, 0, NULL, NULL);
    if (st) {
        rc = cli_error("run: execution failed: %s (%d): %s", clattn_status_string(st), st, clattn_context_last_error(ctx));
        goto done;
    }
report:;
    char name[256] = "";
    clGetDeviceInfo(clattn_context_device(ctx), CL_DEVICE_NAME, sizeof name - 1, name, NULL);
    snprintf(what, what_size, "%s on %s (%s)", clattn_plan_algo(plan) == CLATTN_ALGO_FUSED ? "fused" : "unfused", name,
             clattn_plan_variant(plan));
    if (a->verbose) {
        printf("device     %s\nalgorithm  %s\nwhy        %s\nvariant    %s\nscratch    %zu bytes\nplan_ms    %.3f\n"
               "wall_ms    %.3f\n",
               name, clattn_plan_algo(plan) == CLATTN_ALGO_FUSED ? "fused" : "unfused", clattn_plan_reason(plan),
               clattn_plan_variant(plan), clattn_plan_scratch_size(plan), t_plan, t_exec);
    }
done:
    if (ev) clReleaseEvent(ev);
    for (int i = 0; i < 11; i++)
        if (mem[i]) clReleaseMemObject(mem[i]);
    if (queue) clReleaseCommandQueue(queue);
    clattn_plan_destroy(plan);
    clattn_context_destroy(ctx);
    return rc;
}

/* The user's files, read and checked against the output's shape and dtype before anything
 * is computed (a long run must not end in "wrong shape"). */
typedef struct expect_files {
    npy_array o, lse;
} expect_files;

static int read_expected(const run_args *a, const run_inputs *in, const clattn_desc *d, const int64_t *oshape,
                         expect_files *ef)
{
    if (read_input(a->expect, &ef->o)) return 1;
    const bool bf16 = d->dtype == CLATTN_DTYPE_BF16;
    char flag[1100];
    snprintf(flag, sizeof flag, "--expect %s", a->expect);
    if (expect_check_file(flag, &ef->o, in->q.type, bf16, in->q.ndim, oshape)) return 1;
    if (!a->expect_lse) return 0;
    if (read_input(a->expect_lse, &ef->lse)) return 1;
    snprintf(flag, sizeof flag, "--expect-lse %s", a->expect_lse);
    const int64_t lshape[3] = {d->batch, d->heads_q, d->seq_q}, packed[2] = {d->heads_q, d->total_q};
    return expect_check_file(flag, &ef->lse, NPY_F32, false, d->varlen ? 2 : 3, d->varlen ? packed : lshape);
}

/* Compares o (and lse), prints each report and the verdict as the last line. 0: within the
 * bound; 1: not; 2: the comparison failed. */
static int compare_expected(const run_args *a, const run_inputs *in, const clattn_desc *d, const expect_files *ef,
                            const void *o, const float *lse, const char *what)
{
    const double bound = a->tol > 0 ? a->tol : clattn_tolerance((int)d->dtype);
    expect_tensor t = {"o", a->expect, in->q.type, d->dtype == CLATTN_DTYPE_BF16, o, ef->o.data, ef->o.count,
                       (size_t)d->head_dim_v, ROWS_BHSD, d->batch, d->heads_q, d->seq_q, d->total_q, in->cu_q};
    if (d->varlen) t.rows = ROWS_TOKEN_HEAD;
    else if (d->layout == CLATTN_LAYOUT_BSHD) t.rows = ROWS_BSHD;
    printf("clattn computed: %s\n", what);
    expect_verdict vo, vl = {true, ""};
    if (expect_compare(stdout, &t, bound, &vo)) return 2;
    if (a->expect_lse) {
        expect_tensor tl = t;
        tl.name = "lse";
        tl.path = a->expect_lse;
        tl.type = NPY_F32;
        tl.bf16 = false;
        tl.ours = lse;
        tl.theirs = ef->lse.data;
        tl.n = ef->lse.count;
        tl.row_len = 1;
        tl.rows = d->varlen ? ROWS_HEAD_TOKEN : ROWS_BHSD;
        if (expect_compare(stdout, &tl, bound, &vl)) return 2;
    }
    const bool ok = vo.ok && vl.ok;
    /* the failing clause first: the verdict line is what a script or a reader sees */
    const char *first = !vo.ok || vl.ok ? vo.summary : vl.summary, *second = first == vo.summary ? vl.summary : vo.summary;
    printf("clattn: %s: %s%s%s\n", ok ? "MATCH" : "MISMATCH", first, second[0] ? "; " : "", second);
    fflush(stdout);
    return ok ? 0 : 1;
}

/* The backward pass's results, written after the forward's. */
typedef struct grads {
    npy_array dout;
    void *g[3];     /* dq, dk, dv in q's dtype */
    float *dsinks;  /* (Hq) with sinks */
} grads;

static void free_grads(grads *gr)
{
    for (int i = 0; i < 3; i++) free(gr->g[i]);
    free(gr->dsinks);
    npy_free(&gr->dout);
}

/* The gradients of the forward's inputs: d_o read (o's shape, q's dtype), dq, dk, dv computed
 * (shaped and typed like q, k, v) and dsinks (Hq, f32), on the device or the reference. */
static int backward(const run_args *a, const run_inputs *in, const clattn_desc *fwd, clattn_host_tensors *t,
                    bool reference, grads *gr)
{
    if (read_input(a->d_o, &gr->dout)) return 1;
    clattn_desc d = *fwd;
    d.pass = CLATTN_PASS_BACKWARD;
    const npy_array *like[3] = {&in->q, &in->k, &in->v};
    bool same = gr->dout.type == in->q.type && gr->dout.ndim == in->q.ndim;
    for (int i = 0; same && i < gr->dout.ndim; i++)
        same = gr->dout.shape[i] == (i == gr->dout.ndim - 1 ? d.head_dim_v : in->q.shape[i]);
    if (!same) return cli_error("run: --do must have o's shape and q's dtype (%s)", a->d_o);
    const size_t es = clattn_dtype_size(d.dtype);
    for (int i = 0; i < 3; i++)
        if (!(gr->g[i] = calloc(like[i]->count, es))) return cli_error("run: out of memory");
    if (d.has_sinks && !(gr->dsinks = calloc((size_t)d.heads_q, sizeof(float)))) return cli_error("run: out of memory");
    t->d_o = gr->dout.data; t->do_len = gr->dout.count;
    t->dq = gr->g[0]; t->dk = gr->g[1]; t->dv = gr->g[2]; t->dsinks = gr->dsinks;
    t->dq_len = in->q.count; t->dk_len = in->k.count; t->dv_len = in->v.count;
    char msg[2048];
    const double t0 = cli_now_ms();
    clattn_status st;
    if (reference) {
        st = clattn_reference_backward(&d, t, msg, sizeof msg);
    } else {
        clattn_context *ctx = NULL;
        if (cli_open_context(a->device, &ctx)) return 1;
        st = clattn_backward_host(ctx, &d, t);
        clattn_context_copy_last_error(ctx, msg, sizeof msg);
        clattn_context_destroy(ctx);
    }
    if (st) return cli_error("run: backward: %s: %s", clattn_status_string(st), msg);
    if (a->verbose) printf("backward_ms %.3f\n", cli_now_ms() - t0);
    return 0;
}

/* Writes the gradient files; on failure removes what it wrote. */
/* The gradients' files, staged with the run's other outputs (written all or none). */
static int stage_grads(const run_args *a, const run_inputs *in, const clattn_desc *d, const grads *gr,
                       files_batch *outs)
{
    const npy_array *like[3] = {&in->q, &in->k, &in->v};
    const char *paths[4] = {a->dq, a->dk, a->dv, a->dsinks};
    const int64_t hq = d->heads_q;
    char err[512];
    for (int i = 0; i < 4; i++) {
        if (!paths[i]) continue;
        const int fail = i < 3 ? npy_stage(outs, paths[i], like[i]->type, like[i]->ndim, like[i]->shape, gr->g[i], err,
                                           sizeof err)
                               : npy_stage(outs, paths[3], NPY_F32, 1, &hq, gr->dsinks, err, sizeof err);
        if (fail) return cli_error("%s", err);
    }
    return 0;
}

static int run(run_args *a)
{
    run_inputs in;
    memset(&in, 0, sizeof in);
    expect_files ef;
    memset(&ef, 0, sizeof ef);
    grads gr;
    memset(&gr, 0, sizeof gr);
    files_batch outs; /* every output file, staged, then renamed into place together at the end */
    memset(&outs, 0, sizeof outs);
    int rc = 1;
    void *o = NULL, *cache_out[2] = {NULL, NULL};
    float *lse = NULL;
    const run_inputs *cin = &in;
    if (read_input(a->q, &in.q) || read_input(a->k ? a->k : a->k_cache, &in.k) ||
        read_input(a->v ? a->v : a->v_cache, &in.v) ||
        (a->block_table && read_input(a->block_table, &in.table)) || (a->k_new && read_input(a->k_new, &in.k_new)) ||
        (a->v_new && read_input(a->v_new, &in.v_new)) || (a->rot_cos && read_input(a->rot_cos, &in.rot_cos)) ||
        (a->rot_sin && read_input(a->rot_sin, &in.rot_sin)) ||
        (a->mask && read_input(a->mask, &in.mask)) || (a->alibi && read_input(a->alibi, &in.alibi)) ||
        (a->sinks && read_input(a->sinks, &in.sinks)) || (a->seqused_k && read_input(a->seqused_k, &in.seqused)) ||
        (a->seqlens_q && read_input(a->seqlens_q, &in.lens_q)) || (a->seqlens_k && read_input(a->seqlens_k, &in.lens_k)))
        goto done;
    clattn_desc d = CLATTN_DESC_INIT;
    if (make_desc(a, &in, &d)) goto done;
    int64_t oshape[4];
    memcpy(oshape, in.q.shape, sizeof oshape);
    oshape[in.q.ndim - 1] = d.head_dim_v;
    if (a->expect && read_expected(a, cin, &d, oshape, &ef)) goto done;
    clattn_tensor_sizes need = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&d, &need);
    const bool want_lse = a->lse || a->expect_lse || a->d_o; /* the backward reads lse */
    o = calloc(need.o, clattn_dtype_size(d.dtype));
    lse = want_lse ? calloc(need.lse, sizeof(float)) : NULL;
    if (!o || (want_lse && !lse)) {
        cli_error("run: out of memory");
        goto done;
    }
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = in.q.data; t.k = in.k.data; t.v = in.v.data; t.o = o; t.lse = lse;
    t.q_len = in.q.count; t.k_len = in.k.count; t.v_len = in.v.count; t.o_len = need.o; t.lse_len = need.lse;
    t.mask = in.mask.data; t.mask_len = in.mask.count;
    t.alibi_slopes = in.alibi.data; t.sinks = in.sinks.data; t.seqused_k = in.seqused.data;
    t.cu_seqlens_q = in.cu_q; t.cu_seqlens_k = in.cu_k;
    if (d.seq_new) { /* the caches after the append */
        for (int i = 0; i < 2; i++)
            if (!(cache_out[i] = malloc((i ? need.v : need.k) * clattn_dtype_size(d.dtype)))) {
                cli_error("run: out of memory");
                goto done;
            }
    }
    t.block_table = in.table.data; t.k_new = in.k_new.data; t.v_new = in.v_new.data;
    t.k_new_len = in.k_new.count; t.v_new_len = in.v_new.count;
    t.rotary_cos = in.rot_cos.data; t.rotary_sin = in.rot_sin.data;
    t.k_cache_out = cache_out[0]; t.v_cache_out = cache_out[1];

    /* --expect computes with the reference unless --algo says otherwise: the user asks whether
     * their result is right, and the reference is the definition */
    const bool reference = a->algo ? !strcmp(a->algo, "reference") : a->expect != NULL;
    char what[600] = "reference (CPU, double accumulation)";
    if (reference && (a->splits || a->device)) { /* honoured on a device only: never ignored */
        cli_error("run: %s: the CPU reference runs %s (pass --algo auto, fused or unfused to run on a device)",
                  a->splits ? "--splits" : "--device", a->expect && !a->algo ? "with --expect" : "here");
        goto done;
    }
    if (reference) {
        char msg[512];
        double t0 = cli_now_ms();
        clattn_status st = clattn_reference_forward(&d, &t, msg, sizeof msg);
        if (st) {
            cli_error("run: reference: %s", msg);
            goto done;
        }
        if (a->verbose) printf("device     CPU reference\nalgorithm  reference\nwall_ms    %.3f\n", cli_now_ms() - t0);
    } else if (run_device(a, &d, &t, what, sizeof what)) {
        goto done;
    }

    if (a->d_o && backward(a, cin, &d, &t, reference, &gr)) goto done;

    char err[512];
    const int64_t lshape[3] = {d.batch, d.heads_q, d.seq_q};
    const int64_t lshape_packed[2] = {d.heads_q, d.total_q}; /* FlashAttention's varlen lse */
    if (a->lse && npy_stage(&outs, a->lse, NPY_F32, d.varlen ? 2 : 3, d.varlen ? lshape_packed : lshape, lse, err,
                            sizeof err)) {
        cli_error("%s", err);
        goto done;
    }
    if (a->out && npy_stage(&outs, a->out, in.q.type, in.q.ndim, oshape, o, err, sizeof err)) {
        cli_error("%s", err);
        goto done;
    }
    const char *cache_paths[2] = {a->cache_out_k, a->cache_out_v};
    for (int i = 0; i < 2; i++) {
        const npy_array *like = i ? &in.v : &in.k;
        if (cache_paths[i] && npy_stage(&outs, cache_paths[i], like->type, 4, like->shape, cache_out[i], err, sizeof err)) {
            cli_error("%s", err);
            goto done;
        }
    }
    if (a->d_o && stage_grads(a, cin, &d, &gr, &outs)) goto done;
    if (a->expect) {
        rc = compare_expected(a, cin, &d, &ef, o, lse, what);
        a->compared = rc != 2;
        if (rc == 2) goto done; /* no verdict: no outputs either */
    } else {
        rc = 0;
    }
    const int werr = files_commit(&outs); /* until here every old output file is as it was */
    if (werr) {
        cli_error("run: writing the outputs: %s", strerror(werr));
        a->compared = false;
        rc = 1;
    }
done:
    files_discard(&outs);
    free(o);
    free(lse);
    free(cache_out[0]);
    free(cache_out[1]);
    npy_free(&ef.o);
    npy_free(&ef.lse);
    free_grads(&gr);
    free_inputs(&in);
    return rc;
}

/* Whether the arguments ask for a comparison, even when they fail to parse: its exit status
 * for "could not compare" is then 2, so that 1 always means "computed and different". */
static bool asks_expect(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--expect") || !strncmp(argv[i], "--expect=", 9)) return true;
    return false;
}

int cmd_run(int argc, char **argv)
{
    const int failed = asks_expect(argc, argv) ? 2 : 1;
    run_args a;
    if (parse_args(argc, argv, &a)) return failed;
    const int rc = run(&a);
    return rc == 1 && !a.compared ? failed : rc;
}
