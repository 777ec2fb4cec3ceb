/* The mma family (kernels/fwd_mma.cl on kernels/warp.cl): FlashAttention-2's structure on
 * tensor-core MMAs for f16/bf16 storage. Inline PTX on NVIDIA sm_80 and later; everywhere else
 * the warp layer's portable emulation, exact but slow, which is what lets PoCL test the kernel.
 * Auto does not pick it: it runs when forced ($CLATTN_KERNELS=mma, the context's option),
 * until a GPU measurement says where it wins. */
#include "family.h"
#include "diag.h"
#include "params.h"


#define MMA_MAX_HEAD_DIM 256 /* Q's fragments and O's accumulators live in registers */

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

/* K and V tiles in storage type with 8 elements of padding a row, the warps' scratch, the
 * paged rows (fwd_mma.cl). */
static size_t mma_local(const clattn_shape *s, int bm, int bn)
{
    const size_t kv = (size_t)bn * (size_t)(round_up(s->head_dim, 16) + 8 + round_up(s->head_dim_v, 8) + 8) * 2;
    return kv + (size_t)(bm / 16) * 192 * 4 + 16 + (s->paged ? (size_t)bn * 8 : 0);
}

static bool valid(const clattn_device_info *dev, const clattn_tuning *t, char *why, size_t why_size)
{
    if (t->rows && (t->rows < 16 || t->rows > 128 || !clattn__pow2(t->rows) || (size_t)t->rows * 2 > dev->max_wg_size)) {
        clattn__format(why, why_size, "tuning rows %d is not 16, 32, 64 or 128 (16 per warp of 32 work-items)",
                       t->rows);
        return false;
    }
    if (t->keys && t->keys < 16) {
        clattn__format(why, why_size, "tuning keys %d below the 16 of one MMA step", t->keys);
        return false;
    }
    return clattn__tuning_common_valid(dev, t, why, why_size);
}

static bool serves(const clattn_device_info *dev, const clattn_shape *s, char *why, size_t why_size)
{
    if (s->pass != CLATTN_PASS_FORWARD) {
        clattn__format(why, why_size, "the mma family has no backward kernels");
        return false;
    }
    if (s->dtype != CLATTN_DTYPE_F16 && s->dtype != CLATTN_DTYPE_BF16) {
        clattn__format(why, why_size, "the mma family serves f16 and bf16 storage (tensor-core inputs), not f32");
        return false;
    }
    if (s->head_dim > MMA_MAX_HEAD_DIM || s->head_dim_v > MMA_MAX_HEAD_DIM) {
        clattn__format(why, why_size, "head dims above %d (got %d/%d) are not supported by the mma family",
                       MMA_MAX_HEAD_DIM, s->head_dim, s->head_dim_v);
        return false;
    }
    if (dev->max_wg_size < 32 || mma_local(s, 16, 16) > clattn__local_budget(dev)) {
        clattn__format(why, why_size, "the device cannot hold one warp's tiles (work-group %zu, local memory %llu)",
                       dev->max_wg_size, (unsigned long long)dev->local_mem);
        return false;
    }
    clattn__format(why, why_size, "the mma kernel serves this descriptor");
    return true;
}

/* BM rows (16 per warp), BN keys a tile, halved until the tiles fit the local memory. */
static void choose(const clattn_device_info *dev, const clattn_shape *s, const clattn_tuning *t, clattn_fwd_fit *f)
{
    int bm = t->rows, bn = t->keys < 16 ? 16 : t->keys;
    /* Q's fragments, O's accumulators and S's tile share a GPU thread's 255 registers: past 128
       + 128 head dims a tile of 32 keys spilled in the ptxas screen (tests/ptx/screen.sh), 16 did not */
    if (round_up(s->head_dim, 16) + round_up(s->head_dim_v, 8) > 256 && bn > 16) bn = 16;
    while ((size_t)bm * 2 > dev->max_wg_size && bm > 16) bm /= 2;
    while (bn > 16 && mma_local(s, bm, bn) > clattn__local_budget(dev)) bn /= 2;
    while (bm > 16 && mma_local(s, bm, bn) > clattn__local_budget(dev)) bm /= 2;
    f->rows = bm;
    f->keys = bn;
    f->vector_width = 1; /* fragments, not vectors */
    f->threads_per_row = 1;
    f->local_size = (size_t)bm * 2; /* 32 work-items per 16 rows */
    f->group_per_block = true;
    f->kt_capable = false;
    f->heads_per_item = 1;
}

/* Inline PTX where NVIDIA's tensor cores take f16 and bf16 m16n8k16 (sm_80 and later), unless
 * $CLATTN_MMA_PORTABLE asks for the emulation (to compare the two on one GPU). */
static void fwd_options(const clattn_device_info *dev, const clattn_shape *s, char *out, size_t out_size)
{
    (void)s;
    clattn__format(out, out_size, "-D WARP_PTX=%d", dev->nv_sm >= 80 && !clattn__env_on("CLATTN_MMA_PORTABLE"));
}

const clattn_family clattn__family_mma = {
    .id = CLATTN_KERNELS_MMA,
    .name = "mma",
    .default_for = CL_DEVICE_TYPE_GPU,
    .manual = true,
    /* FlashAttention-2's forward at d <= 128 on sm_80: 4 warps, 64 rows, 64 keys a tile */
    .generic = {.rows = 64, .keys = 64, .vector_width = 1, .group_size = 128, .split_units = 8, .threads_per_row = 1},
    .fwd_file = "fwd_mma",
    .fwd_function = "clattn_fwd_mma",
    .valid = valid,
    .serves = serves,
    .choose = choose,
    .fwd_options = fwd_options,
};
