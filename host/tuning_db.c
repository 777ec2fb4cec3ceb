/* Shipped tuning defaults, one line per device (or vendor), family and shape class, as
 * `clattn tune --emit-c` prints them. Lookup order: the user's file, a device line, a
 * vendor line, then the generic values in tuning.c. Fields: rows, keys, vector width, group
 * size, split target (work units per compute unit), threads per row. */
#include "tuning_db.h"

#define ROWS CLATTN_KERNELS_ROWS
#define TILES CLATTN_KERNELS_TILES
/* rows, keys, vector width, group size, split target, threads per row */
#define P(r, k, vw, g, sp, t) {.rows = r, .keys = k, .vector_width = vw, .group_size = g, .split_units = sp, .threads_per_row = t}

const clattn_shipped clattn__shipped[] = {
    /* NVIDIA H100 80GB HBM3, driver 580.159.04, clattn tune 2026-11-27 (bench/results-h100/) */
    {"NVIDIA H100 80GB HBM3", NULL, 0, TILES, "prefill-d64", P(64, 32, 4, 64, 8, 1)},   /* 1x8x8x4096x4096x64 2.661 ms */
    {"NVIDIA H100 80GB HBM3", NULL, 0, TILES, "prefill-d128", P(64, 16, 4, 128, 8, 2)}, /* 1x8x8x4096x4096x128 5.647 ms */
    {"NVIDIA H100 80GB HBM3", NULL, 0, TILES, "decode-d64", P(16, 16, 4, 64, 2, 4)},    /* 1x32x8x1x32768x64c 0.727 ms */
    {"NVIDIA H100 80GB HBM3", NULL, 0, TILES, "decode-d128", P(16, 16, 4, 64, 2, 4)},   /* 1x32x8x1x32768x128c 1.350 ms */
    /* Other NVIDIA GPUs: the H100's choices, measured on that one card only. The d=128 rows
     * are shared by two work-items: one work-item per row spilled registers there (8.3 ms ->
     * 1.8 ms on case 5). Larger head dims share rows too, for the same reason. */
    {NULL, "NVIDIA", CL_DEVICE_TYPE_GPU, TILES, "prefill-d64", P(64, 32, 4, 64, 8, 1)},
    {NULL, "NVIDIA", CL_DEVICE_TYPE_GPU, TILES, "prefill-d128", P(64, 16, 4, 128, 8, 2)},
    {NULL, "NVIDIA", CL_DEVICE_TYPE_GPU, TILES, "prefill-d256", P(32, 16, 4, 128, 8, 4)},
    {NULL, "NVIDIA", CL_DEVICE_TYPE_GPU, TILES, "prefill-d576", P(16, 8, 4, 128, 8, 8)},
    {NULL, "NVIDIA", CL_DEVICE_TYPE_GPU, TILES, "decode-d64", P(16, 16, 4, 64, 2, 4)},
    {NULL, "NVIDIA", CL_DEVICE_TYPE_GPU, TILES, "decode-d128", P(16, 16, 4, 64, 2, 4)},
    {NULL, "NVIDIA", CL_DEVICE_TYPE_GPU, TILES, "decode-d256", P(16, 16, 4, 128, 2, 8)},
    {NULL, "NVIDIA", CL_DEVICE_TYPE_GPU, TILES, "decode-d576", P(16, 8, 4, 128, 2, 8)},
    /* PoCL 3.1 on a 2-core AMD EPYC (Zen 4) VM, 2 threads, clattn tune 2026-11-27 with the final
     * kernels (bench/results-pocl-tune.txt). Decode timings here are bimodal (one variant ran
     * the 32768-key shape in 14.4 and in 26.5 ms a minute apart in an earlier run), so the
     * tuner re-times its finalists in rounds; case 21 with 4 splits (split target 16) then ran
     * 9.6-10.2 ms against 9.0-14.6 ms with 2, interleaved (bench/NOTES.md). */
    {"pthread-skylake-avx512-AMD EPYC", NULL, 0, ROWS, "prefill-d64", P(4, 16, 16, 8, 8, 1)},  /* 1x8x8x1024x1024x64 19.379 ms */
    {"pthread-skylake-avx512-AMD EPYC", NULL, 0, ROWS, "prefill-d128", P(4, 16, 16, 8, 8, 1)}, /* 1x8x8x1024x1024x128 34.768 ms */
    {"pthread-skylake-avx512-AMD EPYC", NULL, 0, ROWS, "decode-d64", P(4, 16, 16, 8, 8, 1)},   /* 1x32x8x1x32768x64c 5.866 ms */
    {"pthread-skylake-avx512-AMD EPYC", NULL, 0, ROWS, "decode-d128", P(4, 16, 16, 8, 16, 1)}, /* 1x32x8x1x32768x128c 7.672 ms */
};
const int clattn__shipped_count = (int)(sizeof clattn__shipped / sizeof clattn__shipped[0]);
