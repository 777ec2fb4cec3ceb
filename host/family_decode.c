/* The decode family (kernels/fwd_decode.cl), made for GPUs: a work-group holds every row of one
 * KV head (group x Nq <= 16: decode, speculative decoding) and reads each K and V row once,
 * coalesced, for all of them; scores one per work-item, P.V one output vector per work-item.
 * Auto does not pick it: it runs when forced ($CLATTN_KERNELS=decode, the context's option),
 * until a GPU measurement says where it wins. */
#include "family.h"
#include "diag.h"
#include "params.h"

#define DECODE_MAX_ROWS 16
#define DECODE_MAX_HEAD_DIM 256

/* K and V tiles (f32, rows padded by a vector), q, scores and their tree, running maxima
 * (fwd_decode.cl). */
static size_t decode_local(const clattn_shape *s, int rp, int bn, int vw)
{
    return ((size_t)bn * (size_t)(s->head_dim + s->head_dim_v + 2 * vw) + (size_t)rp * (size_t)s->head_dim +
            2 * (size_t)rp * (size_t)bn + 3 * (size_t)rp) * 4 + (s->paged ? (size_t)bn * 8 : 0);
}

static int rows_per_group(const clattn_shape *s)
{
    int rp = 1;
    while (rp < s->group * s->seq_q) rp *= 2;
    return rp;
}

static bool valid(const clattn_device_info *dev, const clattn_tuning *t, char *why, size_t why_size)
{
    if (t->keys && t->keys < 4) {
        clattn__format(why, why_size, "tuning keys %d below 4", t->keys);
        return false;
    }
    return clattn__tuning_common_valid(dev, t, why, why_size);
}

static bool serves(const clattn_device_info *dev, const clattn_shape *s, char *why, size_t why_size)
{
    if (s->pass != CLATTN_PASS_FORWARD) {
        clattn__format(why, why_size, "the decode family has no backward kernels");
        return false;
    }
    if ((long)s->group * s->seq_q > DECODE_MAX_ROWS) {
        clattn__format(why, why_size, "the decode family holds up to %d rows per KV head (got %d query heads x %d "
                       "positions)", DECODE_MAX_ROWS, s->group, s->seq_q);
        return false;
    }
    if (s->head_dim > DECODE_MAX_HEAD_DIM || s->head_dim_v > DECODE_MAX_HEAD_DIM) {
        clattn__format(why, why_size, "head dims above %d (got %d/%d) are not supported by the decode family",
                       DECODE_MAX_HEAD_DIM, s->head_dim, s->head_dim_v);
        return false;
    }
    const int rp = rows_per_group(s);
    if ((size_t)rp * 4 > dev->max_wg_size || decode_local(s, rp, 4, 1) > clattn__local_budget(dev)) {
        clattn__format(why, why_size, "the device cannot hold a tile of 4 keys for %d rows", rp);
        return false;
    }
    clattn__format(why, why_size, "the decode kernel serves this descriptor");
    return true;
}

/* RP rows (the KV head's, rounded up to a power of 2), keys = group_size / RP per tile within
 * the tuned bound, halved until the work-group and the local memory fit. */
static void choose(const clattn_device_info *dev, const clattn_shape *s, const clattn_tuning *t, clattn_fwd_fit *f)
{
    const int rp = rows_per_group(s), vw = clattn__vector_width(s->head_dim, s->head_dim_v, t->vector_width);
    int bn = t->group_size / rp;
    if (bn > t->keys) bn = t->keys;
    if (bn < 4) bn = 4;
    while (bn > 4 && ((size_t)(rp * bn) > dev->max_wg_size || decode_local(s, rp, bn, vw) > clattn__local_budget(dev)))
        bn /= 2;
    f->rows = rp;
    f->keys = bn;
    f->vector_width = vw;
    f->threads_per_row = 1;
    f->local_size = (size_t)(rp * bn);
    f->group_per_block = true;
    f->kt_capable = false;
    f->heads_per_item = 1;
}

const clattn_family clattn__family_decode = {
    .id = CLATTN_KERNELS_DECODE,
    .name = "decode",
    .default_for = CL_DEVICE_TYPE_GPU,
    .manual = true,
    /* 128 work-items; a 4-row GQA head takes tiles of 32 keys */
    .generic = {.rows = 16, .keys = 64, .vector_width = 4, .group_size = 128, .split_units = 4, .threads_per_row = 1},
    .fwd_file = "fwd_decode",
    .fwd_function = "clattn_fwd_decode",
    .valid = valid,
    .serves = serves,
    .choose = choose,
};
