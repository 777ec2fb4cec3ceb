/* The rtile family (kernels/fwd_rtile.cl), made for GPUs: register-tiled like a tuned GEMM, each
 * work-item a 4 x 4 micro-tile of scores and 4 rows of outputs, Q/K and V chunks double-buffered
 * in local memory. f32 arithmetic on every storage type. Auto does not pick it: it runs when
 * forced ($CLATTN_KERNELS=rtile, the context's option), until a GPU measurement says where it
 * wins. */
#include "family.h"
#include "diag.h"
#include "params.h"

#define RTILE_MAX_HEAD_DIM 256 /* 4 rows x DV / (BN / 4) outputs in registers */

/* As fwd_rtile.cl lays it out: the chunks' union, P^T, the partial maxima, row offsets. */
static size_t rtile_local(const clattn_shape *s, int bm, int bn)
{
    const int ntx = bn / 4, dvp = (s->head_dim_v + 4 * ntx - 1) / (4 * ntx) * (4 * ntx);
    const size_t qk = 2 * 16 * (size_t)(bm + bn);
    size_t kvc = qk / (2 * (size_t)dvp), v;
    if (kvc > (size_t)bn) kvc = (size_t)bn;
    for (v = 64; v > 4 && v > kvc; v /= 2) {}
    const size_t vfl = 2 * v * (size_t)dvp, un = qk > vfl ? qk : vfl;
    return (un + (size_t)bn * bm + (size_t)ntx * bm) * 4 + (size_t)bm * 8 + (s->paged ? (size_t)bn * 8 : 0);
}

static bool valid(const clattn_device_info *dev, const clattn_tuning *t, char *why, size_t why_size)
{
    if (t->rows && (t->rows < 4 || t->rows > 128 || !clattn__pow2(t->rows))) {
        clattn__format(why, why_size, "tuning rows %d is not a power of 2 from 4 to 128", t->rows);
        return false;
    }
    if (t->keys && t->keys < 4) {
        clattn__format(why, why_size, "tuning keys %d below the 4 of one micro-tile", t->keys);
        return false;
    }
    return clattn__tuning_common_valid(dev, t, why, why_size);
}

static bool serves(const clattn_device_info *dev, const clattn_shape *s, char *why, size_t why_size)
{
    if (s->pass != CLATTN_PASS_FORWARD) {
        clattn__format(why, why_size, "the rtile family has no backward kernels");
        return false;
    }
    if (s->head_dim > RTILE_MAX_HEAD_DIM || s->head_dim_v > RTILE_MAX_HEAD_DIM) {
        clattn__format(why, why_size, "head dims above %d (got %d/%d) are not supported by the rtile family",
                       RTILE_MAX_HEAD_DIM, s->head_dim, s->head_dim_v);
        return false;
    }
    if (dev->max_wg_size < 4 || rtile_local(s, 4, 4) > clattn__local_budget(dev)) {
        clattn__format(why, why_size, "the device cannot hold the smallest tiles");
        return false;
    }
    clattn__format(why, why_size, "the rtile kernel serves this descriptor");
    return true;
}

/* BM rows and BN keys (work-group BM/4 x BN/4), halved (keys first) until the work-group and the
 * local memory fit. */
static void choose(const clattn_device_info *dev, const clattn_shape *s, const clattn_tuning *t, clattn_fwd_fit *f)
{
    int bm = t->rows < 4 ? 4 : t->rows, bn = t->keys < 4 ? 4 : t->keys;
    while ((size_t)(bm / 4) * (size_t)(bn / 4) > dev->max_wg_size || rtile_local(s, bm, bn) > clattn__local_budget(dev)) {
        if (bn >= bm && bn > 4) bn /= 2;
        else if (bm > 4) bm /= 2;
        else break;
    }
    f->rows = bm;
    f->keys = bn;
    f->vector_width = 4;
    f->threads_per_row = 1;
    f->local_size = (size_t)(bm / 4) * (size_t)(bn / 4);
    f->group_per_block = true;
    f->kt_capable = false;
    f->heads_per_item = 1;
}

const clattn_family clattn__family_rtile = {
    .id = CLATTN_KERNELS_RTILE,
    .name = "rtile",
    .default_for = CL_DEVICE_TYPE_GPU,
    .manual = true,
    /* 64 x 64 tiles: 256 work-items, 16 scores and 4 rows of outputs each */
    .generic = {.rows = 64, .keys = 64, .vector_width = 4, .group_size = 256, .split_units = 8, .threads_per_row = 1},
    .fwd_file = "fwd_rtile",
    .fwd_function = "clattn_fwd_rtile",
    .valid = valid,
    .serves = serves,
    .choose = choose,
};
