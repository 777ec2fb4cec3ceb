/* Descriptor checks: every field is checked here, with a message that names it, before a
 * plan, the reference or the host call does anything. */
#include "shape.h"
#include "abi.h"
#include "diag.h"

#include <limits.h>
#include <math.h>
#include <string.h>

#define FAIL(st, ...)                                   \
    do {                                                \
        clattn__format(msg, msg_size, __VA_ARGS__);     \
        return (st);                                    \
    } while (0)

/* Dense strides of a layout; false if they overflow int64 (then sizes are refused anyway). */
static bool dense(clattn_layout layout, int64_t heads, int64_t seq, int64_t dim, clattn_strides *s)
{
    int64_t hd, sd, all;
    if (__builtin_mul_overflow(heads, dim, &hd) || __builtin_mul_overflow(seq, dim, &sd) ||
        __builtin_mul_overflow(hd, seq, &all))
        return false;
    if (layout == CLATTN_LAYOUT_BSHD) {
        s->head = dim;
        s->seq = hd;
    } else {
        s->seq = dim;
        s->head = sd;
    }
    s->batch = all;
    return true;
}

/* A sufficient condition for an output view not to overlap itself: sorted by stride, each
 * dimension of extent > 1 steps past the whole span of the dimensions inside it. */
static bool non_overlapping(const clattn_strides *s, int64_t b, int64_t h, int64_t n, int64_t d)
{
    int64_t stride[3] = {s->seq, s->head, s->batch}, extent[3] = {n, h, b};
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            if (stride[j] < stride[i]) {
                int64_t t = stride[i]; stride[i] = stride[j]; stride[j] = t;
                t = extent[i]; extent[i] = extent[j]; extent[j] = t;
            }
    int64_t span = d; /* elements covered by the inner dimensions */
    for (int i = 0; i < 3; i++) {
        if (extent[i] == 1) continue;
        if (stride[i] < span) return false;
        int64_t t;
        if (__builtin_mul_overflow(stride[i], extent[i] - 1, &t) || __builtin_add_overflow(t, span, &span))
            return true; /* too large to overlap-check: the size check refuses it */
    }
    return true;
}

static clattn_status check_strides(const char *name, const clattn_strides *s, char *msg,
                                   size_t msg_size)
{
    if (s->batch < 0 || s->head < 0 || s->seq < 0)
        FAIL(CLATTN_INVALID_STRIDES, "%s_strides must be >= 0 (got batch %lld, head %lld, seq %lld)",
             name, (long long)s->batch, (long long)s->head, (long long)s->seq);
    return CLATTN_SUCCESS;
}

/* The paged-cache fields: all zero without a cache; with one, each in range. */
static clattn_status check_paged(const clattn_desc *d, int heads_kv, int head_dim_v, char *msg, size_t msg_size)
{
    if (!d->page_size) {
        if (d->num_pages || d->pages_per_seq || d->seq_new || d->rotary_dim || d->rotary_positions ||
            d->rotary_interleaved)
            FAIL(CLATTN_INVALID_ARGUMENT, "num_pages, pages_per_seq, seq_new and rotary_* need a paged KV cache "
                 "(page_size >= 1)");
        return CLATTN_SUCCESS;
    }
    if (d->page_size < 0 || d->num_pages < 1 || d->pages_per_seq < 1)
        FAIL(CLATTN_INVALID_SHAPE, "a paged cache needs page_size, num_pages and pages_per_seq >= 1 (got %d, %d, %d)",
             d->page_size, d->num_pages, d->pages_per_seq);
    if ((int64_t)d->seq_kv > (int64_t)d->page_size * d->pages_per_seq)
        FAIL(CLATTN_INVALID_SHAPE, "seq_kv (%d) exceeds what a block table row addresses (pages_per_seq %d x "
             "page_size %d)", d->seq_kv, d->pages_per_seq, d->page_size);
    /* keys x heads x dims as elements of 8 bytes at most, each product checked (a fuzzer found
       the unchecked chain overflowing: tests/fuzz/regressions/desc-paged-cache-size-overflow) */
    const int64_t keys = (int64_t)d->num_pages * d->page_size;
    int64_t elems;
    if (keys > INT32_MAX / 2 || __builtin_mul_overflow(keys, (int64_t)heads_kv, &elems) ||
        __builtin_mul_overflow(elems, (int64_t)(d->head_dim > head_dim_v ? d->head_dim : head_dim_v), &elems) ||
        elems > INT64_MAX / 8)
        FAIL(CLATTN_SIZE_OVERFLOW, "a cache of %d pages of %d keys is too large (at most 2^30 keys)", d->num_pages,
             d->page_size);
    if (!d->has_seqused_k)
        FAIL(CLATTN_INVALID_ARGUMENT, "a paged cache needs seqused_k (each sequence's cached length)");
    if (d->pass != CLATTN_PASS_FORWARD)
        FAIL(CLATTN_UNSUPPORTED, "the backward pass does not read paged caches (the forward does)");
    if (d->seq_new < 0 || d->seq_new > d->seq_kv)
        FAIL(CLATTN_INVALID_SHAPE, "seq_new must be in 0..seq_kv (%d) (got %d)", d->seq_kv, d->seq_new);
    if (d->seq_new && d->varlen)
        FAIL(CLATTN_UNSUPPORTED, "an append (seq_new > 0) does not take packed sequences (varlen)");
    if (d->rotary_dim) {
        if (d->rotary_dim < 2 || d->rotary_dim % 2 || d->rotary_dim > d->head_dim)
            FAIL(CLATTN_INVALID_ARGUMENT, "rotary_dim must be even and in 2..head_dim (%d) (got %d)", d->head_dim,
                 d->rotary_dim);
        if (!d->seq_new) FAIL(CLATTN_INVALID_ARGUMENT, "rotary embedding needs an append (seq_new > 0)");
        const int64_t need = d->seq_q > d->seq_new ? (int64_t)d->seq_kv - d->seq_new + d->seq_q : d->seq_kv;
        if (d->rotary_positions < need)
            FAIL(CLATTN_INVALID_SHAPE, "rotary_positions (%d) must cover max(seq_kv, seq_kv - seq_new + seq_q) = "
                 "%lld positions", d->rotary_positions, (long long)need);
    } else if (d->rotary_positions || d->rotary_interleaved)
        FAIL(CLATTN_INVALID_ARGUMENT, "rotary_positions and rotary_interleaved need rotary_dim > 0");
    return CLATTN_SUCCESS;
}

clattn_status clattn__resolve(const clattn_desc *caller, clattn_shape *s, char *msg, size_t msg_size)
{
    if (msg && msg_size) msg[0] = '\0';
    if (!caller) FAIL(CLATTN_INVALID_ARGUMENT, "descriptor is NULL");
    memset(s, 0, sizeof *s);
    clattn_desc copy;
    const clattn_status abi = clattn__struct_in(&copy, sizeof copy, caller, "clattn_desc", msg, msg_size);
    if (abi) return abi;
    const clattn_desc *d = &copy;
    int heads_kv = d->heads_kv ? d->heads_kv : d->heads_q;
    int head_dim_v = d->head_dim_v ? d->head_dim_v : d->head_dim;
    if (d->batch < 1) FAIL(CLATTN_INVALID_SHAPE, "batch must be >= 1 (got %d)", d->batch);
    if (d->heads_q < 1) FAIL(CLATTN_INVALID_SHAPE, "heads_q must be >= 1 (got %d)", d->heads_q);
    if (heads_kv < 1) FAIL(CLATTN_INVALID_SHAPE, "heads_kv must be >= 1 (got %d)", heads_kv);
    if (d->heads_q % heads_kv)
        FAIL(CLATTN_INVALID_SHAPE, "heads_q (%d) must be a multiple of heads_kv (%d)", d->heads_q,
             heads_kv);
    if (d->seq_q < 1) FAIL(CLATTN_INVALID_SHAPE, "seq_q must be >= 1 (got %d)", d->seq_q);
    if (d->seq_kv < 1) FAIL(CLATTN_INVALID_SHAPE, "seq_kv must be >= 1 (got %d)", d->seq_kv);
    if (d->head_dim < 1 || d->head_dim > CLATTN_MAX_HEAD_DIM)
        FAIL(CLATTN_INVALID_SHAPE, "head_dim must be in 1..%d (got %d)", CLATTN_MAX_HEAD_DIM,
             d->head_dim);
    if (head_dim_v < 1 || head_dim_v > CLATTN_MAX_HEAD_DIM)
        FAIL(CLATTN_INVALID_SHAPE, "head_dim_v must be in 1..%d (got %d)", CLATTN_MAX_HEAD_DIM,
             head_dim_v);
    if ((unsigned)d->dtype > CLATTN_DTYPE_BF16)
        FAIL(CLATTN_INVALID_ARGUMENT, "dtype %d is not a clattn_dtype", (int)d->dtype);
    if ((unsigned)d->layout > CLATTN_LAYOUT_STRIDED)
        FAIL(CLATTN_INVALID_ARGUMENT, "layout %d is not a clattn_layout", (int)d->layout);
    if ((unsigned)d->causal_align > CLATTN_CAUSAL_TOP_LEFT)
        FAIL(CLATTN_INVALID_ARGUMENT, "causal_align %d is not a clattn_causal_align",
             (int)d->causal_align);
    if ((unsigned)d->algo > CLATTN_ALGO_UNFUSED)
        FAIL(CLATTN_INVALID_ARGUMENT, "algo %d is not a clattn_algo", (int)d->algo);
    if ((unsigned)d->pass > CLATTN_PASS_BACKWARD)
        FAIL(CLATTN_INVALID_ARGUMENT, "pass %d is not a clattn_pass", (int)d->pass);
    if (!isfinite(d->scale)) FAIL(CLATTN_INVALID_ARGUMENT, "scale must be finite");
    if (!isfinite(d->softcap) || d->softcap < 0)
        FAIL(CLATTN_INVALID_ARGUMENT, "softcap must be finite and >= 0 (got %g)", (double)d->softcap);
    if (d->num_splits < 0 || d->num_splits > 1024)
        FAIL(CLATTN_INVALID_ARGUMENT, "num_splits must be in 0..1024 (got %d)", d->num_splits);
    if (d->varlen && d->layout == CLATTN_LAYOUT_BHSD)
        FAIL(CLATTN_INVALID_STRIDES, "varlen needs the BSHD layout or explicit strides (packed tokens)");
    if (d->varlen && (d->total_q < 1 || (d->total_k < 1 && !d->page_size)))
        FAIL(CLATTN_INVALID_SHAPE, "varlen needs total_q and total_k >= 1 (got %d, %d)", d->total_q, d->total_k);
    clattn_status pst = check_paged(d, heads_kv, head_dim_v, msg, msg_size);
    if (pst) return pst;
    if (d->use_window && (d->window_left < -1 || d->window_right < -1))
        FAIL(CLATTN_INVALID_ARGUMENT, "window sides must be >= -1 (got %d, %d)", d->window_left,
             d->window_right);

    s->batch = d->batch;
    s->heads_q = d->heads_q;
    s->heads_kv = heads_kv;
    s->group = d->heads_q / heads_kv;
    s->seq_q = d->seq_q;
    s->seq_kv = d->seq_kv;
    s->head_dim = d->head_dim;
    s->head_dim_v = head_dim_v;
    s->dtype = d->dtype;
    s->scale = d->scale != 0.0f ? d->scale : (float)(1.0 / sqrt((double)d->head_dim));
    s->causal = d->causal != 0;
    s->top_left = d->causal_align == CLATTN_CAUSAL_TOP_LEFT;
    s->window = d->use_window != 0;
    s->window_left = s->window ? d->window_left : -1;
    s->window_right = s->window ? d->window_right : -1;
    /* a side at least seq_q + seq_kv long masks no key of any row: unbounded, so that a huge
       side (INT_MAX) cannot overflow the kernels' int sums (i + offset + side) */
    const int64_t reach = (int64_t)d->seq_q + d->seq_kv;
    if (s->window_left >= reach) s->window_left = -1;
    if (s->window_right >= reach) s->window_right = -1;
    if (s->causal) s->window_right = 0; /* causal is a window whose right side is 0 */
    s->softcap = d->softcap;
    s->has_alibi = d->has_alibi != 0;
    s->has_sinks = d->has_sinks != 0;
    s->has_mask = d->has_mask != 0;
    s->has_seqused_k = d->has_seqused_k != 0;
    s->varlen = d->varlen != 0;
    s->total_q = s->varlen ? d->total_q : 0;
    s->total_k = s->varlen ? d->total_k : 0;
    s->num_splits = d->num_splits;
    s->algo = d->algo;
    s->pass = d->pass;
    s->paged = d->page_size > 0;
    if (s->paged) {
        s->total_k = 0; /* keys come from the cache */
        s->page_size = d->page_size;
        s->num_pages = d->num_pages;
        s->pages_per_seq = d->pages_per_seq;
        s->seq_new = d->seq_new;
        s->rotary_dim = d->rotary_dim;
        s->rotary_interleaved = d->rotary_interleaved != 0;
        s->rotary_positions = d->rotary_positions;
        /* q rotated row by row when causal or local, as flash_attn_with_kvcache decides: a window
           side counts only if it is below the cache's length (pages_per_seq x page_size), since
           a wider side masks nothing */
        const int64_t cap = (int64_t)d->page_size * d->pages_per_seq;
        /* a window side at least that long is unbounded, as flash_attn_with_kvcache makes it
           (taken literally it would still mask the first rows of more queries than the cache) */
        if (s->window_left >= cap) s->window_left = -1;
        if (s->window_right >= cap) s->window_right = -1;
        /* local for the rotation by the sides as given (the mask's unbounding above, by
           seq_q + seq_kv, does not change what flash_attn_with_kvcache calls local) */
        const int wl = s->window ? d->window_left : -1, wr = s->window ? d->window_right : -1;
        s->rotary_per_row = s->causal || (s->window && ((wl >= 0 && wl < cap) || (wr >= 0 && wr < cap)));
    }

    if (d->layout == CLATTN_LAYOUT_STRIDED) {
        clattn_status st;
        if ((st = check_strides("q", &d->q_strides, msg, msg_size))) return st;
        if ((st = check_strides("k", &d->k_strides, msg, msg_size))) return st;
        if ((st = check_strides("v", &d->v_strides, msg, msg_size))) return st;
        if ((st = check_strides("o", &d->o_strides, msg, msg_size))) return st;
        s->q = d->q_strides;
        s->k = d->k_strides;
        s->v = d->v_strides;
        s->o = d->o_strides;
        if (s->varlen) s->q.batch = s->k.batch = s->v.batch = s->o.batch = 0; /* unused when packed */
        if (!non_overlapping(&s->o, s->varlen ? 1 : s->batch, s->heads_q, s->varlen ? s->total_q : s->seq_q,
                             s->head_dim_v))
            FAIL(CLATTN_INVALID_STRIDES,
                 "o_strides (batch %lld, head %lld, seq %lld) make output elements overlap",
                 (long long)s->o.batch, (long long)s->o.head, (long long)s->o.seq);
        if (s->pass == CLATTN_PASS_BACKWARD) { /* dq, dk, dv are written through q's, k's and v's strides */
            const int64_t b = s->varlen ? 1 : s->batch;
            const struct { const char *name; const clattn_strides *st; int64_t h, n, d; } g[3] = {
                {"q", &s->q, s->heads_q, s->varlen ? s->total_q : s->seq_q, s->head_dim},
                {"k", &s->k, s->heads_kv, s->varlen ? s->total_k : s->seq_kv, s->head_dim},
                {"v", &s->v, s->heads_kv, s->varlen ? s->total_k : s->seq_kv, s->head_dim_v}};
            for (int i = 0; i < 3; i++)
                if (!non_overlapping(g[i].st, b, g[i].h, g[i].n, g[i].d))
                    FAIL(CLATTN_INVALID_STRIDES, "%s_strides (batch %lld, head %lld, seq %lld) make elements overlap: the "
                         "backward writes d%s through them (a broadcast view takes no gradient)", g[i].name,
                         (long long)g[i].st->batch, (long long)g[i].st->head, (long long)g[i].st->seq, g[i].name);
        }
    } else if (s->varlen) { /* packed tokens: (total, H, D); the batch stride is unused */
        s->q = (clattn_strides){0, s->head_dim, (int64_t)s->heads_q * s->head_dim};
        s->k = (clattn_strides){0, s->head_dim, (int64_t)s->heads_kv * s->head_dim};
        s->v = (clattn_strides){0, s->head_dim_v, (int64_t)s->heads_kv * s->head_dim_v};
        s->o = (clattn_strides){0, s->head_dim_v, (int64_t)s->heads_q * s->head_dim_v};
    } else {
        if (!dense(d->layout, s->heads_q, s->seq_q, s->head_dim, &s->q) ||
            !dense(d->layout, s->heads_kv, s->seq_kv, s->head_dim, &s->k) ||
            !dense(d->layout, s->heads_kv, s->seq_kv, s->head_dim_v, &s->v) ||
            !dense(d->layout, s->heads_q, s->seq_q, s->head_dim_v, &s->o))
            FAIL(CLATTN_SIZE_OVERFLOW, "tensor strides overflow 64 bits");
    }
    if (s->paged) { /* k/v strides resolved above describe k_new/v_new (seq_new tokens) */
        if (d->layout != CLATTN_LAYOUT_STRIDED &&
            (!dense(d->layout, s->heads_kv, s->seq_new, s->head_dim, &s->k) ||
             !dense(d->layout, s->heads_kv, s->seq_new, s->head_dim_v, &s->v)))
            FAIL(CLATTN_SIZE_OVERFLOW, "tensor strides overflow 64 bits");
        s->kn = s->k;
        s->vn = s->v;
        const int64_t kt = (int64_t)s->heads_kv * s->head_dim, vt = (int64_t)s->heads_kv * s->head_dim_v;
        s->k = (clattn_strides){kt * s->page_size, s->head_dim, kt};
        s->v = (clattn_strides){vt * s->page_size, s->head_dim_v, vt};
    }
    if (s->has_mask) {
        const clattn_strides *m = &d->mask_strides;
        if (m->batch == 0 && m->head == 0 && m->seq == 0) {
            s->mask.seq = s->seq_kv;
            s->mask.head = (int64_t)s->seq_q * s->seq_kv; /* < 2^62: both are ints */
            if (__builtin_mul_overflow(s->mask.head, (int64_t)s->heads_q, &s->mask.batch))
                FAIL(CLATTN_SIZE_OVERFLOW, "mask strides overflow 64 bits");
        } else {
            clattn_status st = check_strides("mask", m, msg, msg_size);
            if (st) return st;
            s->mask = *m;
        }
    }
    clattn_tensor_sizes sz;
    if (clattn__sizes(s, &sz) != CLATTN_SUCCESS)
        FAIL(CLATTN_SIZE_OVERFLOW, "a tensor's element count overflows size_t");
    return CLATTN_SUCCESS;
}

/* Elements spanned by a strided 4-D tensor: 1 + max index. False on overflow. */
static bool span(const clattn_strides *st, int64_t b, int64_t h, int64_t n, int64_t d, size_t *out)
{
    uint64_t total = (uint64_t)d, t;
    int64_t stride[3] = {st->batch, st->head, st->seq}, extent[3] = {b, h, n};
    for (int i = 0; i < 3; i++) {
        if (__builtin_mul_overflow((uint64_t)(extent[i] - 1), (uint64_t)stride[i], &t)) return false;
        if (__builtin_add_overflow(total, t, &total)) return false;
    }
    if (total > SIZE_MAX / 4) return false; /* bytes must fit too */
    *out = (size_t)total;
    return true;
}

clattn_status clattn__sizes(const clattn_shape *s, clattn_tensor_sizes *o)
{
    memset(o, 0, sizeof *o);
    /* Packed sequences: one "batch" of total tokens. */
    const int b = s->varlen ? 1 : s->batch, nq = s->varlen ? s->total_q : s->seq_q,
              nk = s->varlen ? s->total_k : s->seq_kv;
    /* a paged cache: num_pages "batches" of page_size tokens */
    const int kb = s->paged ? s->num_pages : b, kn = s->paged ? s->page_size : nk;
    bool ok = span(&s->q, b, s->heads_q, nq, s->head_dim, &o->q) &&
              span(&s->k, kb, s->heads_kv, kn, s->head_dim, &o->k) &&
              span(&s->v, kb, s->heads_kv, kn, s->head_dim_v, &o->v) &&
              span(&s->o, b, s->heads_q, nq, s->head_dim_v, &o->o);
    if (ok && s->seq_new)
        ok = span(&s->kn, s->batch, s->heads_kv, s->seq_new, s->head_dim, &o->k_new) &&
             span(&s->vn, s->batch, s->heads_kv, s->seq_new, s->head_dim_v, &o->v_new);
    if (ok && s->paged) {
        o->block_table = (size_t)s->batch * (size_t)s->pages_per_seq; /* < 2^62: both ints */
        o->rotary = (size_t)s->rotary_positions * (size_t)(s->rotary_dim / 2);
    }
    clattn_strides lse = {(int64_t)s->heads_q * nq, nq, 1};
    ok = ok && span(&lse, b, s->heads_q, nq, 1, &o->lse);
    if (ok && s->has_mask) ok = span(&s->mask, s->batch, s->heads_q, s->seq_q, s->seq_kv, &o->mask);
    return ok ? CLATTN_SUCCESS : CLATTN_SIZE_OVERFLOW;
}

clattn_status clattn_desc_validate(const clattn_desc *desc, char *msg, size_t msg_size)
{
    clattn_shape s;
    return clattn__resolve(desc, &s, msg, msg_size);
}

clattn_status clattn_desc_tensor_sizes(const clattn_desc *desc, clattn_tensor_sizes *out)
{
    clattn_shape s;
    clattn_status st = clattn__resolve(desc, &s, NULL, 0);
    if (st) return st;
    clattn_tensor_sizes sizes;
    st = clattn__sizes(&s, &sizes);
    if (!st && out) st = clattn__struct_out(out, &sizes, sizeof sizes, "clattn_tensor_sizes", NULL, 0);
    return st;
}

/* Host arrays of the reference and the host call: present and large enough. */
/* One host array: where it is, how many elements it holds and needs, whether it is read,
 * written, or not used at all by this call. */
typedef struct host_array {
    const void *p;
    size_t have, need, elem;
    const char *name;
    enum { UNUSED, OPTIONAL_OUT, IN, OUT } role;
} host_array;

clattn_status clattn__check_host(const clattn_shape *s, const clattn_host_tensors *t, clattn_host_use use,
                                 char *msg, size_t msg_size)
{
    clattn_tensor_sizes need;
    if (clattn__sizes(s, &need)) {
        clattn__format(msg, msg_size, "tensor sizes overflow");
        return CLATTN_SIZE_OVERFLOW;
    }
    const bool fwd = use == CLATTN_HOST_FORWARD, bwd = !fwd, bwd_dev = use == CLATTN_HOST_BACKWARD;
    const size_t es = clattn_dtype_size(s->dtype), nb = (size_t)s->batch, hq = (size_t)s->heads_q;
    const host_array a[] = {
        {t->o, t->o_len, need.o, es, "o", fwd ? OUT : bwd_dev ? IN : UNUSED},
        {t->lse, t->lse_len, need.lse, 4, "lse", fwd ? OPTIONAL_OUT : bwd_dev ? IN : UNUSED},
        {t->dq, t->dq_len, need.q, es, "dq", bwd ? OUT : UNUSED},
        {t->dk, t->dk_len, need.k, es, "dk", bwd ? OUT : UNUSED},
        {t->dv, t->dv_len, need.v, es, "dv", bwd ? OUT : UNUSED},
        {t->dsinks, hq, hq, 4, "dsinks", bwd && s->has_sinks ? OUT : UNUSED},
        {t->k_cache_out, need.k, need.k, es, "k_cache_out", fwd && s->seq_new ? OPTIONAL_OUT : UNUSED},
        {t->v_cache_out, need.v, need.v, es, "v_cache_out", fwd && s->seq_new ? OPTIONAL_OUT : UNUSED},
        {t->q, t->q_len, need.q, es, "q", IN},
        {t->k, t->k_len, need.k, es, "k", IN},
        {t->v, t->v_len, need.v, es, "v", IN},
        {t->d_o, t->do_len, need.o, es, "d_o", bwd ? IN : UNUSED},
        {t->mask, t->mask_len, need.mask, 4, "mask", s->has_mask ? IN : UNUSED},
        {t->alibi_slopes, hq, hq, 4, "alibi_slopes", s->has_alibi ? IN : UNUSED},
        {t->sinks, hq, hq, 4, "sinks", s->has_sinks ? IN : UNUSED},
        {t->seqused_k, nb, nb, 4, "seqused_k", s->has_seqused_k ? IN : UNUSED},
        {t->cu_seqlens_q, nb + 1, nb + 1, 4, "cu_seqlens_q", s->varlen ? IN : UNUSED},
        {t->cu_seqlens_k, nb + 1, nb + 1, 4, "cu_seqlens_k", s->varlen && !s->paged ? IN : UNUSED},
        {t->block_table, need.block_table, need.block_table, 4, "block_table", s->paged ? IN : UNUSED},
        {t->k_new, t->k_new_len, need.k_new, es, "k_new", s->seq_new ? IN : UNUSED},
        {t->v_new, t->v_new_len, need.v_new, es, "v_new", s->seq_new ? IN : UNUSED},
        {t->rotary_cos, need.rotary, need.rotary, 4, "rotary_cos", s->rotary_dim ? IN : UNUSED},
        {t->rotary_sin, need.rotary, need.rotary, 4, "rotary_sin", s->rotary_dim ? IN : UNUSED},
    };
    const size_t n = sizeof a / sizeof a[0];
    for (size_t k = 0; k < 2 * n; k++) { /* inputs first: the message names the first missing input */
        const size_t i = k % n;
        if ((k < n) != (a[i].role == IN)) continue;
        if (a[i].role == UNUSED || (!a[i].p && a[i].role == OPTIONAL_OUT)) continue;
        if (!a[i].p) {
            clattn__format(msg, msg_size, "%s is NULL", a[i].name);
            return CLATTN_INVALID_ARGUMENT;
        }
        if (a[i].have < a[i].need) {
            clattn__format(msg, msg_size, "%s holds %zu elements but the descriptor needs %zu",
                           a[i].name, a[i].have, a[i].need);
            return CLATTN_BUFFER_TOO_SMALL;
        }
    }
    /* No output may share memory with an input or another output (as for device buffers). */
    for (size_t i = 0; i < n; i++) {
        if (!a[i].p || (a[i].role != OUT && a[i].role != OPTIONAL_OUT)) continue;
        const uintptr_t x = (uintptr_t)a[i].p, xe = x + a[i].need * a[i].elem;
        for (size_t j = 0; j < n; j++) { /* every other array, before it in the list or after */
            if (j == i || !a[j].p || a[j].role == UNUSED) continue;
            const uintptr_t y = (uintptr_t)a[j].p, ye = y + a[j].need * a[j].elem;
            if (x < ye && y < xe) {
                clattn__format(msg, msg_size, "output %s overlaps %s in host memory", a[i].name, a[j].name);
                return CLATTN_BUFFERS_OVERLAP;
            }
        }
    }
    if (s->varlen) {
        const int32_t *cu[2] = {t->cu_seqlens_q, t->cu_seqlens_k};
        const int total[2] = {s->total_q, s->total_k}, longest[2] = {s->seq_q, s->seq_kv};
        for (int w = 0; w < (s->paged ? 1 : 2); w++) {
            if (cu[w][0] != 0 || cu[w][s->batch] > total[w]) {
                clattn__format(msg, msg_size, "cu_seqlens_%s must start at 0 and end at most at total_%s (%d)",
                               w ? "k" : "q", w ? "k" : "q", total[w]);
                return CLATTN_INVALID_ARGUMENT;
            }
            for (int i = 0; i < s->batch; i++)
                if (cu[w][i + 1] < cu[w][i] || cu[w][i + 1] - cu[w][i] > longest[w]) {
                    clattn__format(msg, msg_size, "cu_seqlens_%s[%d..%d] gives a length outside 0..%s (%d)",
                                   w ? "k" : "q", i, i + 1, w ? "seq_kv" : "seq_q", longest[w]);
                    return CLATTN_INVALID_ARGUMENT;
                }
        }
    }
    const int most = s->seq_kv - s->seq_new; /* cached keys before an append */
    if (s->has_seqused_k)
        for (int b = 0; b < s->batch; b++)
            if (t->seqused_k[b] < 0 || t->seqused_k[b] > most) {
                clattn__format(msg, msg_size, "seqused_k[%d] = %d is outside 0..%s (%d)", b,
                               (int)t->seqused_k[b], s->seq_new ? "seq_kv - seq_new" : "seq_kv", most);
                return CLATTN_INVALID_ARGUMENT;
            }
    return CLATTN_SUCCESS;
}

size_t clattn__rows_total(const clattn_shape *s)
{
    return (size_t)(s->varlen ? s->total_q : s->seq_q) * (size_t)(s->varlen ? 1 : s->batch) * (size_t)s->heads_q;
}

clattn_status clattn__resolve_pass(const clattn_desc *caller, clattn_pass pass, clattn_shape *s, char *msg,
                                   size_t msg_size)
{
    if (msg && msg_size) msg[0] = '\0';
    if (!caller) FAIL(CLATTN_INVALID_ARGUMENT, "descriptor is NULL");
    clattn_desc copy;
    const clattn_status abi = clattn__struct_in(&copy, sizeof copy, caller, "clattn_desc", msg, msg_size);
    if (abi) return abi;
    copy.pass = pass;
    return clattn__resolve(&copy, s, msg, msg_size);
}
