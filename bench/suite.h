/* The benchmark: a fixed, numbered suite of cases (the same numbers on every device, as
 * VkFFT's sample IDs), and the measurement of one case with one algorithm on one device. */
#ifndef CLATTN_SUITE_H
#define CLATTN_SUITE_H

#include "clattn.h"
#include "peak.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct bench_case {
    int id;
    int b, hq, hkv, nq, nk, d;
    int causal;
    bool quick; /* part of --quick */
    int page;   /* a paged KV cache of pages this large (0: dense); its block table a random
                   permutation of the pages */
    bool append_rotary; /* paged: the call appends its token (rotated, NeoX, rotary dim = d) */
    bool pages_in_order; /* paged: the block table lists the pages in order (a fresh cache) */
} bench_case;

extern const bench_case bench_suite[];
extern const int bench_suite_size;

/* "1x8x8x2048x2048x64c", "1x32x8x1x32768x128c p16" (paged), "... p16+rope" (with the append),
 * "... p16 seq" (pages in order) */
void bench_case_name(const bench_case *c, char *buf, size_t size);
/* FlashAttention's count: 4 B Hq Nq Nk d, halved for causal when Nq = Nk (the forward). */
double bench_flops(const bench_case *c);

/* The fewest bytes a call must move: q, k, v read and o written once, in the storage type. */
double bench_bytes(const bench_case *c, clattn_dtype dtype);

typedef enum bench_algo { ALGO_FUSED, ALGO_UNFUSED, ALGO_REFERENCE } bench_algo;
const char *bench_algo_name(bench_algo a);
/* The pass a row measures. The backward's FLOPs are 2.5x the forward's (FlashAttention's count:
 * QK^T and dP recomputed, dQ, dK, dV); its bytes: q, k, v, o, d_o read, dq, dk, dv written. */
typedef enum bench_pass { PASS_FORWARD, PASS_BACKWARD } bench_pass;
const char *bench_pass_name(bench_pass p);
/* The descriptor of a case: BHSD, default scale, the algorithm forced (fused unless unfused). */
clattn_desc bench_desc(const bench_case *c, clattn_dtype dtype, bench_algo algo);
/* Whether the library counts the case as decode (its tuning class): the keys dominate. */
bool bench_is_decode(const bench_case *c);

typedef struct bench_row {
    bench_case c;
    bench_pass pass;
    clattn_dtype dtype;
    int device_index;
    char device[256], driver[128];
    bench_algo algo;
    char variant[256];
    clattn_tuning tuning;      /* fused: the parameters used */
    char tuning_source[32];    /* and where they came from (clattn_plan_tuning) */
    char status[16];   /* ok, unsupported, error, wrong */
    char reason[512];
    double ms_median, ms_min, ms_max; /* per call */
    double dense_ms;   /* paged rows: the same call on a dense cache, timed in alternation with
                          the paged one (median per call; NaN for other rows) */
    double dense_share; /* paged rows: the median over the alternated pairs of dense / paged
                           time (a burst of load on a shared machine moves one pair, not the median) */
    double bshd_ms, bshd_share; /* paged rows: the same for a dense cache in BSHD layout (a token's
                                   heads side by side, as in the pages); dense_*: BHSD */
    int samples, calls_per_sample;
    double gflops, pct_flops, gbs, pct_bw;
    double mem_bytes;  /* device memory the call uses: tensors + scratch */
    double rel_l2, max_abs;
    int checked_rows;  /* query rows compared with the reference (all or a sample) */
    uint64_t seed;
} bench_row;

/* A row's FLOPs and bytes, its pass counted. */
double bench_row_flops(const bench_row *r);
double bench_row_bytes(const bench_row *r);

typedef struct bench_opts {
    double budget_ms;  /* measuring time per case and algorithm */
    clattn_dtype dtype;
    bool inject_error; /* test-only: perturb the device output before it is checked */
    int num_splits;    /* fused decode key splits: 0 the heuristic, 1 none, n forced */
    const clattn_tuning *tuning; /* fused: these parameters instead of the looked-up ones */
    bench_pass pass;
} bench_opts;

/* A row's shares of the device's peaks (its GFLOP/s and GB/s over the peak's). */
void bench_row_shares(bench_row *row, const device_peak *peak);

/* Fills `row` (status and reason included) for one case and algorithm on `ctx`. */
void bench_run(clattn_context *ctx, const device_peak *peak, const bench_case *c, bench_algo algo,
               const bench_opts *opts, bench_row *row);

#endif
