/* The rows family (kernels/fwd_rows.cl), made for CPU devices: one work-item owns a register
 * tile of query rows and streams the keys with explicit vectors, no barriers. */
#include "family.h"
#include "diag.h"
#include "params.h"

/* Each work-item keeps rows x head dim of q and o in private memory: at most 16 rows. */
#define MAX_ROWS 16

static bool valid(const clattn_device_info *dev, const clattn_tuning *t, char *why, size_t why_size)
{
    if (t->rows < 0 || t->rows > MAX_ROWS) {
        clattn__format(why, why_size, "tuning rows %d outside 1..%d", t->rows, MAX_ROWS);
        return false;
    }
    return clattn__tuning_common_valid(dev, t, why, why_size);
}

/* The backward's dK/dV work-item keeps 16 keys' K, V, dK and dV columns: 64 (d + dv) floats. */
#define BWD_MAX_HEAD_DIM 256

static bool serves(const clattn_device_info *dev, const clattn_shape *s, char *why, size_t why_size)
{
    if (s->pass == CLATTN_PASS_BACKWARD && (s->head_dim > BWD_MAX_HEAD_DIM || s->head_dim_v > BWD_MAX_HEAD_DIM)) {
        clattn__format(why, why_size, "head dims above %d (got %d/%d) are not supported by the fused backward",
                       BWD_MAX_HEAD_DIM, s->head_dim, s->head_dim_v);
        return false;
    }
    clattn__format(why, why_size, "the fused kernel serves this descriptor");
    return true;
}

/* PoCL keeps each work-item's register tile on its worker's stack: bound a work-group's
 * private arrays (256x8 groups once overflowed it at d=128: a segfault). */
#define PRIVATE_BUDGET ((size_t)256 * 1024)
static void bound_private(int d, int dv, int *bm, size_t *wg, int hg)
{
    const size_t budget = PRIVATE_BUDGET, row = (size_t)hg * (size_t)(2 * d + dv) * 4;
    while ((size_t)*bm * row * *wg > budget && *wg > 1) *wg /= 2;
    while ((size_t)*bm * row * *wg > budget && *bm > 1) *bm /= 2;
}

/* A decode on a CPU whose keys lie with a token's heads side by side (a paged cache, or a dense
 * one in BSHD-like strides): up to 8 KV heads per work-item (a divisor of Hkv), so that those
 * heads are read one after the other. One head's rows a token apart lost the CPU's prefetchers
 * at every page in random order (bench/NOTES.md change 16); on a dense BSHD cache they ran
 * 1.4x (d = 128) and 1.5x (d = 64) slower than 8 heads together, and d = 256 gained nothing
 * (change 21), so a dense cache takes it up to d = 128. A prefill keeps one head: its work is
 * the arithmetic, and HG > 1 keeps the rows' state in memory rather than registers. */
static int heads_per_item(const clattn_device_info *dev, const clattn_shape *s)
{
    const bool side_by_side = s->paged || (s->k.head < s->k.seq && s->v.head < s->v.seq && s->head_dim <= 128 &&
                                           s->head_dim_v <= 128);
    if (!side_by_side || !(dev->type & CL_DEVICE_TYPE_CPU) || s->seq_q > CLATTN_DECODE_MAX_ROWS) return 1;
    int hg = s->heads_kv < 8 ? s->heads_kv : 8;
    while (s->heads_kv % hg) hg--;
    return hg;
}

/* One work-item owns `rows` rows (of each of its KV heads) and streams keys `keys` at a time
 * with vw-wide vectors. The kernel has no barriers, so the group size only matters to the
 * runtime (explicit: PoCL once picked 256x8 groups whose private arrays overflowed its stack). */
static void choose(const clattn_device_info *dev, const clattn_shape *s, const clattn_tuning *t, clattn_fwd_fit *f)
{
    const int d = s->head_dim, dv = s->head_dim_v;
    const int hg = heads_per_item(dev, s);
    int bm = t->rows;
    /* fewer packed rows per KV head than a tile (an MHA decode: 1) would only repeat the last
     * row: case 23 took 13.0-13.8 ms with a 1-row tile against 14.3-15.3 with 4 */
    if ((long)s->group * s->seq_q < bm) bm = s->group * s->seq_q;
    size_t wg = (size_t)t->group_size;
    bound_private(d, dv, &bm, &wg, hg);
    f->rows = bm;
    f->keys = t->keys;
    f->vector_width = clattn__vector_width(d, dv, t->vector_width);
    f->threads_per_row = 1;
    /* HG > 1: a work-item per split and group of heads, few of them; PoCL runs a group's items
     * one after another on one core, so groups of 4 left a core idle with 8 splits; alone, a
     * page-16 decode took 7.0-8.5 ms against 8.8-9.5 (bench/NOTES.md change 16) */
    f->local_size = hg > 1 ? 1 : wg;
    f->group_per_block = false;
    /* 16-key score vectors of the plain formula (the optional terms are per score), through K
     * transposed in blocks of 16 keys: up to d = 256 since those blocks (a d = 256 prefill
     * 1.15x, d = 200 1.4x faster with them; bench/NOTES.md change 19) */
    f->kt_capable = t->keys == 16 && d <= 256 && !(s->softcap > 0) && !s->has_alibi && !s->has_mask;
    f->heads_per_item = hg;
}

/* A decode on a CPU streams the keys: software pipelining of the stream (PIPELINE: each key's
 * V row requested with its scores, the next block's K rows with the values; a prefill, which
 * reads K and V from cache, ran 15% slower with it). A paged cache with pages smaller than a
 * block: each block's rows requested at once (PREFETCH). bench/NOTES.md changes 11 and 16.
 * Where the L1 data cache is below 48 KiB the requests fill L2 only (PF_LOCALITY 2): a Zen 4
 * (32 KiB) ran the paged decode 1.35-1.45x faster so, a Zen 5 (48 KiB) 4-9% slower (changes 26, 29). */
#define L1_FOR_REQUESTS (48L * 1024)
static void fwd_options(const clattn_device_info *dev, const clattn_shape *s, char *out, size_t out_size)
{
    const bool cpu = dev->type & CL_DEVICE_TYPE_CPU;
    const bool stream = cpu && s->seq_q <= CLATTN_DECODE_MAX_ROWS;
    const bool to_l2 = stream && dev->l1d_bytes > 0 && dev->l1d_bytes < L1_FOR_REQUESTS;
    clattn__format(out, out_size, "%s%s%s", stream ? "-D PIPELINE=1" : "", to_l2 ? " -D PF_LOCALITY=2" : "",
                   cpu && s->paged ? " -D PREFETCH=1" : "");
}

/* Both backward kernels put 16 of their own items in the lanes of float16 vectors (dK/dV: 16
 * keys; dQ: 16 packed rows) and stream the other side's rows as broadcast scalars, 4 per step.
 * Work-groups bounded so that the work-items' private arrays (the 16 lanes' columns of K, V, dK,
 * dV or of q, d_o, dQ), which live on PoCL's worker stack, stay within 256 KiB a group. */
static size_t bound_group(size_t wg, int columns)
{
    while (wg > 1 && wg * (size_t)columns * 16 * sizeof(float) > 256 * 1024) wg /= 2;
    return wg;
}

static void choose_backward(const clattn_device_info *dev, const clattn_shape *s, const clattn_tuning *t,
                            clattn_bwd_fit *f)
{
    (void)dev;
    const int d = s->head_dim, dv = s->head_dim_v;
    f->rows = 16;
    f->keys = 16;
    f->vector_width = clattn__vector_width(d, dv, t->vector_width);
    f->q_local = bound_group((size_t)t->group_size, 2 * d + dv);
    f->kv_local = bound_group((size_t)t->group_size, 2 * d + 2 * dv);
    f->q_group_per_block = f->kv_group_per_block = false;
}

const clattn_family clattn__family_rows = {
    .id = CLATTN_KERNELS_ROWS,
    .name = "rows",
    .default_for = CL_DEVICE_TYPE_CPU,
    /* the first measurements on PoCL */
    .generic = {.rows = 4, .keys = 16, .vector_width = 16, .group_size = 8, .split_units = 8, .threads_per_row = 1},
    .fwd_file = "fwd_rows",
    .fwd_function = "clattn_fwd_rows",
    .valid = valid,
    .serves = serves,
    .choose = choose,
    .fwd_options = fwd_options,
    .bwd_file = "bwd_rows",
    .bwd_kv_function = "clattn_bwd_kv_rows",
    .bwd_q_function = "clattn_bwd_q_rows",
    .choose_backward = choose_backward,
};
