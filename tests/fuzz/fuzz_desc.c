/* libFuzzer target: random descriptors and host array lengths. Validation must return a status
 * for anything; a descriptor it accepts, with arrays the fuzzer sized (often too small), must
 * either be refused with CLATTN_BUFFER_TOO_SMALL / a status, or be computed by the reference
 * without any out-of-range access (ASan and UBSan watch). Sizes are capped so that one input
 * stays fast; the cap is applied after validation, so huge shapes still exercise the overflow
 * checks. */
#include "clattn.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static uint32_t take(reader *r, int bytes)
{
    uint32_t v = 0;
    for (int i = 0; i < bytes; i++) {
        v = (v << 8) | (r->n ? *r->p : 0);
        if (r->n) r->p++, r->n--;
    }
    return v;
}

/* Mostly small values, sometimes anything (negative, huge), minus `shift`, saturated to int
 * (a plain `- shift` overflowed on INT_MIN: the first thing this fuzzer found). */
static int small_or_any(reader *r, int mod, int shift)
{
    const uint32_t sel = take(r, 1);
    const int64_t v = sel < 200 ? (int64_t)(take(r, 1) % (uint32_t)mod) : (int64_t)(int32_t)take(r, 4);
    const int64_t s = v - shift;
    return s < INT32_MIN ? INT32_MIN : s > INT32_MAX ? INT32_MAX : (int)s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {data, size};
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = small_or_any(&r, 4, 0);
    d.heads_q = small_or_any(&r, 9, 0);
    d.heads_kv = small_or_any(&r, 5, 0);
    d.seq_q = small_or_any(&r, 12, 0);
    d.seq_kv = small_or_any(&r, 12, 0);
    d.head_dim = small_or_any(&r, 20, 0);
    d.head_dim_v = small_or_any(&r, 20, 0);
    d.dtype = (clattn_dtype)(take(&r, 1) % 4);
    d.layout = (clattn_layout)(take(&r, 1) % 4);
    if (d.layout == CLATTN_LAYOUT_STRIDED) {
        clattn_strides *st[4] = {&d.q_strides, &d.k_strides, &d.v_strides, &d.o_strides};
        for (int i = 0; i < 4; i++) {
            st[i]->batch = small_or_any(&r, 4000, 8);
            st[i]->head = small_or_any(&r, 400, 8);
            st[i]->seq = small_or_any(&r, 100, 8);
        }
    }
    const uint32_t flags = take(&r, 2);
    d.causal = flags & 1;
    d.causal_align = (clattn_causal_align)((flags >> 1) & 1);
    d.use_window = (flags >> 2) & 1;
    d.window_left = small_or_any(&r, 8, 2);
    d.window_right = small_or_any(&r, 8, 2);
    d.softcap = (flags >> 3) & 1 ? (float)small_or_any(&r, 50, 5) : 0.0f;
    d.has_alibi = (flags >> 4) & 1;
    d.has_sinks = (flags >> 5) & 1;
    d.has_mask = (flags >> 6) & 1;
    if (d.has_mask) {
        d.mask_strides.batch = small_or_any(&r, 300, 2);
        d.mask_strides.head = small_or_any(&r, 200, 2);
        d.mask_strides.seq = small_or_any(&r, 20, 2);
    }
    d.has_seqused_k = (flags >> 7) & 1;
    d.varlen = (flags >> 8) & 1;
    d.total_q = small_or_any(&r, 40, 0);
    d.total_k = small_or_any(&r, 40, 0);
    d.num_splits = (int)((flags >> 9) & 3);
    d.scale = (flags >> 11) & 1 ? NAN : 0.0f;
    if ((flags >> 12) & 1) { /* a paged KV cache, its fields as wild as the others */
        d.page_size = small_or_any(&r, 5, 0);
        d.num_pages = small_or_any(&r, 12, 0);
        d.pages_per_seq = small_or_any(&r, 8, 0);
        d.seq_new = small_or_any(&r, 4, 0);
        d.rotary_dim = small_or_any(&r, 8, 0);
        d.rotary_interleaved = (flags >> 13) & 1;
        d.rotary_positions = small_or_any(&r, 24, 0);
    }

    char msg[256];
    if (clattn_desc_validate(&d, msg, sizeof msg) != CLATTN_SUCCESS) return 0;
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    if (clattn_desc_tensor_sizes(&d, &n) != CLATTN_SUCCESS) abort(); /* validate said yes */
    const size_t cap = 1 << 16;
    if (n.q > cap || n.k > cap || n.v > cap || n.o > cap || n.mask > cap || d.batch > 64 || d.heads_q > 64 ||
        (double)d.seq_q * d.seq_kv * d.head_dim > 1e6)
        return 0;
    /* The fuzzer picks how much of each array exists: exact, one short, or none at all. */
    if (n.block_table > cap || n.k_new > cap || n.v_new > cap || n.rotary > cap) return 0;
    size_t len[8] = {n.q, n.k, n.v, n.o, n.lse, n.mask, n.k_new, n.v_new};
    for (int i = 0; i < 8; i++) {
        const uint32_t s = take(&r, 1) % 8;
        if (s == 0 && len[i]) len[i]--;
    }
    const size_t es = clattn_dtype_size(d.dtype);
    void *q = calloc(len[0] + 1, es), *k = calloc(len[1] + 1, es), *v = calloc(len[2] + 1, es);
    void *o = calloc(len[3] + 1, es);
    float *lse = calloc(len[4] + 1, 4), *mask = calloc(len[5] + 1, 4);
    float *alibi = calloc((size_t)d.heads_q, 4), *sinks = calloc((size_t)d.heads_q, 4);
    int32_t *used = calloc((size_t)d.batch, 4), *cuq = calloc((size_t)d.batch + 1, 4), *cuk = calloc((size_t)d.batch + 1, 4);
    /* paged: block ids in -1 .. num_pages + 1 (outside the cache: masked), new tokens, rotary */
    int32_t *table = calloc(n.block_table + 1, 4);
    void *kn = calloc(len[6] + 1, es), *vn = calloc(len[7] + 1, es), *kout = calloc(n.k + 1, es);
    float *rot = calloc(n.rotary + 1, 4);
    for (size_t i = 0; i < n.block_table; i++) table[i] = (int32_t)(take(&r, 1) % (uint32_t)(d.num_pages + 3)) - 1;
    for (int b = 0; b < d.batch; b++) {
        used[b] = (int32_t)(take(&r, 1) % (uint32_t)(d.seq_kv + 2)) - 1; /* sometimes out of range */
        cuq[b + 1] = cuq[b] + (int32_t)(take(&r, 1) % (uint32_t)(d.seq_q + 2));
        cuk[b + 1] = cuk[b] + (int32_t)(take(&r, 1) % (uint32_t)(d.seq_kv + 2));
    }
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = q; t.k = k; t.v = v; t.o = o; t.lse = lse; t.mask = mask; t.alibi_slopes = alibi; t.sinks = sinks;
    t.seqused_k = used; t.cu_seqlens_q = cuq; t.cu_seqlens_k = cuk;
    t.q_len = len[0]; t.k_len = len[1]; t.v_len = len[2]; t.o_len = len[3]; t.lse_len = len[4]; t.mask_len = len[5];
    t.block_table = table; t.k_new = kn; t.v_new = vn; t.k_new_len = len[6]; t.v_new_len = len[7];
    t.rotary_cos = rot; t.rotary_sin = rot; t.k_cache_out = (flags >> 14) & 1 ? kout : NULL;
    const clattn_status st = clattn_reference_forward(&d, &t, msg, sizeof msg);
    const bool short_array = len[0] < n.q || len[1] < n.k || len[2] < n.v || len[3] < n.o || len[4] < n.lse ||
                             (d.has_mask && len[5] < n.mask) || len[6] < n.k_new || len[7] < n.v_new;
    if (short_array && st == CLATTN_SUCCESS) abort(); /* a too-small array must be refused */
    free(q); free(k); free(v); free(o); free(lse); free(mask); free(alibi); free(sinks); free(used); free(cuq); free(cuk);
    free(table); free(kn); free(vn); free(kout); free(rot);
    return 0;
}
