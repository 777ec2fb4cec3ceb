/* The tiles family (kernels/fwd_tiles.cl), made for GPUs: a work-group owns a block of query
 * rows, K/V tiles in local memory, TPR work-items sharing each row's head dims. */
#include "family.h"
#include "diag.h"
#include "params.h"

/* The K and V tiles, and the partial scores when rows are shared by several work-items. */
static size_t tiles_local(int d, int dv, int bm, int bn, int tpr)
{
    return (size_t)(d + dv) * (size_t)bn * 4 + (tpr > 1 ? (size_t)tpr * (size_t)bn * (size_t)bm * 4 : 0);
}

static bool valid(const clattn_device_info *dev, const clattn_tuning *t, char *why, size_t why_size)
{
    const int max_rows = (int)dev->max_wg_size;
    if (t->rows < 0 || t->rows > max_rows || (t->rows && !clattn__pow2(t->rows))) {
        clattn__format(why, why_size, "tuning rows %d outside 1..%d (a power of 2)", t->rows, max_rows);
        return false;
    }
    return clattn__tuning_common_valid(dev, t, why, why_size);
}

static bool serves(const clattn_device_info *dev, const clattn_shape *s, char *why, size_t why_size)
{
    if (s->pass == CLATTN_PASS_BACKWARD && (s->head_dim > 256 || s->head_dim_v > 256)) {
        clattn__format(why, why_size, "head dims above 256 (got %d/%d) are not supported by the fused backward",
                       s->head_dim, s->head_dim_v);
        return false;
    }
    if ((size_t)(s->head_dim + s->head_dim_v) * 4 > clattn__local_budget(dev)) {
        clattn__format(why, why_size, "head dims %d/%d need more local memory than the device has", s->head_dim,
                       s->head_dim_v);
        return false;
    }
    clattn__format(why, why_size, "the fused kernel serves this descriptor");
    return true;
}

/* `rows` rows per work-group, tpr work-items per row (each a slice of the head dims), key
 * tiles reduced until they fit the local memory budget (the score row lives in registers). */
static void choose(const clattn_device_info *dev, const clattn_shape *s, const clattn_tuning *t, clattn_fwd_fit *f)
{
    const int d = s->head_dim, dv = s->head_dim_v;
    int tpr = t->threads_per_row > 1 ? t->threads_per_row : 1, bm = t->rows, bn = t->keys;
    while (tpr > 1 && (d % tpr || dv % tpr)) tpr /= 2;
    while ((size_t)(bm * tpr) > dev->max_wg_size && bm > 1) bm /= 2;
    while (bn > 1 && tiles_local(d, dv, bm, bn, tpr) > clattn__local_budget(dev)) bn /= 2;
    f->rows = bm;
    f->keys = bn;
    f->vector_width = clattn__vector_width(d / tpr, dv / tpr, t->vector_width);
    f->threads_per_row = tpr;
    f->local_size = (size_t)(bm * tpr);
    f->group_per_block = true;
    f->kt_capable = false;
    f->heads_per_item = 1;
}

/* dK/dV: BN keys per work-group (one work-item each), query tiles of BM rows in local memory;
 * dQ: BM rows per work-group (one work-item each), key tiles of BN keys in local memory. Both
 * tiles reduced until they fit the local memory budget. */
static void choose_backward(const clattn_device_info *dev, const clattn_shape *s, const clattn_tuning *t,
                            clattn_bwd_fit *f)
{
    const int d = s->head_dim, dv = s->head_dim_v;
    int bm = t->rows, bn = 64;
    while ((size_t)bm > dev->max_wg_size && bm > 1) bm /= 2;
    while ((size_t)bn > dev->max_wg_size && bn > 1) bn /= 2;
    while (bm > 1 && ((size_t)bm * (size_t)(d + dv + 2) * 4 > clattn__local_budget(dev))) bm /= 2;
    while (bn > 1 && ((size_t)bn * (size_t)(d + dv) * 4 > clattn__local_budget(dev))) bn /= 2;
    f->rows = bm;
    f->keys = bn;
    f->vector_width = clattn__vector_width(d, dv, t->vector_width);
    f->q_local = (size_t)bm;
    f->kv_local = (size_t)bn;
    f->q_group_per_block = f->kv_group_per_block = true;
}

/* $CLATTN_TILES_UNROLL=1: the loops over keys and dims unrolled (fwd_tiles.cl, UNROLL), for
 * timing both on a GPU before one becomes the default. */
static void fwd_options(const clattn_device_info *dev, const clattn_shape *s, char *out, size_t out_size)
{
    (void)dev;
    (void)s;
    clattn__format(out, out_size, "-D UNROLL=%d", clattn__env_on("CLATTN_TILES_UNROLL"));
}

const clattn_family clattn__family_tiles = {
    .id = CLATTN_KERNELS_TILES,
    .name = "tiles",
    .default_for = CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_ACCELERATOR | CL_DEVICE_TYPE_CUSTOM,
    /* a portable GPU shape */
    .generic = {.rows = 64, .keys = 32, .vector_width = 4, .group_size = 64, .split_units = 8, .threads_per_row = 1},
    .fwd_file = "fwd_tiles",
    .fwd_function = "clattn_fwd_tiles",
    .valid = valid,
    .serves = serves,
    .choose = choose,
    .fwd_options = fwd_options,
    .bwd_file = "bwd_tiles",
    .bwd_kv_function = "clattn_bwd_kv_tiles",
    .bwd_q_function = "clattn_bwd_q_tiles",
    .choose_backward = choose_backward,
};
