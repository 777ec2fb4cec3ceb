/*
 * clattn — fused attention for OpenCL devices of every vendor.
 *
 * The whole public API. Computes, for each batch b, query head h (kv head g = h / (Hq/Hkv))
 * and query row i:
 *
 *     s_ij = scale * <q_i, k_j>                      scale defaults to 1/sqrt(head_dim)
 *     s_ij = softcap * tanh(s_ij / softcap)           if softcap > 0
 *     s_ij -= alibi_slope[h] * |i + Nk - Nq - j|      if ALiBi slopes are given
 *     s_ij += mask[b, h, i, j]                        if an additive mask is given
 *     s_ij  = -inf where j is outside row i's window  (causal, sliding window, key length)
 *     o_i   = sum_j exp(s_ij - lse_i) * v_j
 *     lse_i = log(exp(sink[h]) + sum_j exp(s_ij))     (the sink term only if sinks are given)
 *
 * A row with no allowed key writes o_i = 0 and lse_i = -inf (or sink[h]), never NaN. NaN and
 * inf follow IEEE arithmetic: a NaN score (from q, or from a key or value the row attends to)
 * makes the row's o and lse NaN, as in the reference. The fused path never reads a masked key's
 * value into a row; the unfused path multiplies P (0 there) by V in a GEMM, so masked K/V must
 * be finite for it.
 *
 * Versioning and ABI: from 1.0 the ABI is stable within a major version; before it, within a
 * minor version (the SONAME carries it: libclattn.so.0.2). Every struct the caller allocates
 * and passes by pointer starts with `struct_size`, which the caller sets to sizeof the struct
 * in the header it compiled against; the CLATTN_<NAME>_INIT macros do it and zero the rest:
 *
 *     clattn_desc d = CLATTN_DESC_INIT;      (was: clattn_desc d = {0};)
 *
 * Why a size field: structs only grow at their end, and the size tells the library how much of
 * a struct the caller has. A library newer than the caller's header reads the fields it has
 * and treats the rest as zero, which always means the default; a library older than the
 * header accepts the larger struct when the fields it does not know are zero, and refuses it
 * (CLATTN_UNSUPPORTED, naming the struct) when the caller set one. Structs the library fills
 * (clattn_tensor_sizes, clattn_cache_stats, clattn_plan_tuning's) are written up to their
 * struct_size only. A struct_size of 0 (a struct zeroed instead of initialised with its macro)
 * is refused with CLATTN_INVALID_ARGUMENT and a message that says so.
 *
 * Thread safety: a clattn_context may be used from several threads at once (plans are
 * created and programs built under the context's lock). A clattn_plan is immutable after
 * creation and may be executed from several threads at once on different queues, except
 * when it owns scratch memory (clattn_plan_scratch_size() > 0 and no caller scratch is
 * passed): then executions of that plan must be serialised by the caller. Destroying an
 * object while another thread uses it is undefined.
 *
 * Ownership follows OpenCL's rules: the library retains what it keeps (the application's
 * cl_context and cl_device_id) and releases only what it retained. An out-event is a new
 * reference that the caller releases. The library never aborts, exits or prints.
 *
 * Device-side integers (cu_seqlens_q/k, seqused_k, block_table) are input
 * like any other, but they live on the device where the host cannot check them before a
 * launch. So the kernels clamp them, once per sequence, and no value can make any kernel read
 * or write outside its buffers: sequence b holds the packed tokens from
 * s = clamp(cu[b], 0, total) to clamp(cu[b+1], s, total) - 1, at most seq_q (seq_kv) of them;
 * seqused_k[b] is clamped to 0 .. the sequence's key count. Output rows (o, lse) of tokens that
 * no clamped sequence covers are left untouched. Offsets that decrease make sequences overlap:
 * which sequence's result a shared row then holds, or whether it is written, is unspecified.
 *
 * Aliasing: no output (o, lse, the backward's dq, dk, dv and dsinks, a caller's scratch) may
 * share a byte with an input or another output, in one cl_mem or in two sub-buffers of one;
 * execution refuses it with CLATTN_BUFFERS_OVERLAP before anything is enqueued (spans from
 * first to last element are compared, so interleaved strided views count as overlapping); two
 * inputs may share bytes. In place (o = q) is refused too: the kernels read inputs after
 * outputs are written (key splits, chunks). Host arrays of the reference and the host call
 * follow the same rule. The backward writes dq, dk and dv through q's, k's and v's strides, so
 * there those strides may not make elements overlap either (a broadcast view, stride 0, is
 * refused with CLATTN_INVALID_STRIDES).
 *
 * Failures: a call that fails releases everything it created (plans, kernels, buffers; a
 * program it built stays in the context's cache and is released with the context) and writes
 * nothing the caller owns, with one exception: when an enqueue itself fails (an OpenCL or
 * CLBlast error after the first kernel was enqueued), o and lse (the backward's dq, dk, dv and
 * dsinks) may hold partial results of the kernels enqueued before it (for the unfused path,
 * whole earlier chunks, or dk and dv partly summed), and a paged call's
 * caches may already hold its append (the same call again writes the same values). *out
 * pointers are NULL after a failure. The context stays usable after any failure.
 */
#ifndef CLATTN_H
#define CLATTN_H

#include <stddef.h>
#include <stdint.h>

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#ifdef __APPLE__
#include <OpenCL/cl.h>
#else
#include <CL/cl.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version: the single source of truth (CMake reads these three lines) ---- */
#define CLATTN_VERSION_MAJOR 0
#define CLATTN_VERSION_MINOR 2
#define CLATTN_VERSION_PATCH 0
#define CLATTN_VERSION_NUMBER \
    (CLATTN_VERSION_MAJOR * 10000 + CLATTN_VERSION_MINOR * 100 + CLATTN_VERSION_PATCH)

#if defined(CLATTN_STATIC_DEFINE)
#define CLATTN_API
#elif defined(_WIN32)
#ifdef CLATTN_BUILDING
#define CLATTN_API __declspec(dllexport)
#else
#define CLATTN_API __declspec(dllimport)
#endif
#else
#define CLATTN_API __attribute__((visibility("default")))
#endif

/* "MAJOR.MINOR.PATCH" of the library actually loaded. */
CLATTN_API const char *clattn_version_string(void);
CLATTN_API unsigned clattn_version_number(void);

/* ---- status codes ----
 * 0 is success. OpenCL failures are returned with OpenCL's own (negative) numbers, so a
 * status reads like any cl_int. clattn's own codes sit in the band -2000..-2029 (clear of
 * CLBlast's -1007..-1024 and -2039..-2050, which clattn maps to CLATTN_BLAS_ERROR). All values
 * below are stable: they never change meaning within a major version. */
typedef int clattn_status;
enum {
    CLATTN_SUCCESS = 0,
    CLATTN_INVALID_ARGUMENT = -2000,   /* NULL where a value is required, bad enum value */
    CLATTN_INVALID_SHAPE = -2001,      /* batch/heads/sequence/head-dim out of range */
    CLATTN_INVALID_STRIDES = -2002,    /* layout or strides inconsistent */
    CLATTN_BUFFER_TOO_SMALL = -2003,   /* a cl_mem or host array cannot hold its tensor */
    CLATTN_UNSUPPORTED = -2004,        /* valid, but the chosen algorithm cannot serve it */
    CLATTN_OUT_OF_HOST_MEMORY = -2005, /* malloc failed */
    CLATTN_NO_DEVICE = -2006,          /* no OpenCL device found / CLATTN_DEVICE matched none */
    CLATTN_BUILD_FAILED = -2007,       /* kernel build failed; the log is in last_error */
    CLATTN_SIZE_OVERFLOW = -2008,      /* a size overflows size_t or a device limit */
    CLATTN_INTERNAL_ERROR = -2009,     /* a bug in clattn: please report */
    CLATTN_BLAS_ERROR = -2010,         /* CLBlast failed; last_error names its status */
    CLATTN_IO_ERROR = -2011,           /* a file (the tuning file) could not be written */
    CLATTN_BUFFERS_OVERLAP = -2012,    /* an output shares memory with an input or another output */
    CLATTN_PEER_FAILED = -2013,        /* collective calls (clattn_mpi): another process failed */
    CLATTN_COMM_ERROR = -2014          /* collective calls (clattn_mpi): the communication failed */
};

/* A short English description of any status (clattn's own or OpenCL's). Never NULL. */
CLATTN_API const char *clattn_status_string(clattn_status status);

/* ---- enumerations (0 is always the default) ---- */
typedef enum clattn_dtype {
    CLATTN_DTYPE_F32 = 0, /* storage type of q, k, v, o; accumulation is always f32 */
    CLATTN_DTYPE_F16 = 1,
    CLATTN_DTYPE_BF16 = 2
} clattn_dtype;

typedef enum clattn_layout {
    CLATTN_LAYOUT_BHSD = 0,   /* q (B, Hq, Nq, d), k/v (B, Hkv, Nk, d), o (B, Hq, Nq, dv) */
    CLATTN_LAYOUT_BSHD = 1,   /* q (B, Nq, Hq, d), k/v (B, Nk, Hkv, d), o (B, Nq, Hq, dv) */
    CLATTN_LAYOUT_STRIDED = 2 /* explicit element strides per tensor (clattn_strides) */
} clattn_layout;

typedef enum clattn_causal_align {
    CLATTN_CAUSAL_BOTTOM_RIGHT = 0, /* query i sees key j iff j <= i + Nk - Nq (FlashAttention 2) */
    CLATTN_CAUSAL_TOP_LEFT = 1      /* query i sees key j iff j <= i (PyTorch is_causal) */
} clattn_causal_align;

typedef enum clattn_algo {
    CLATTN_ALGO_AUTO = 0,   /* fused where it serves the descriptor on the device, else unfused */
    CLATTN_ALGO_FUSED = 1,  /* hand-written fused kernels */
    CLATTN_ALGO_UNFUSED = 2 /* CLBlast GEMM -> softmax kernel -> CLBlast GEMM, chunked */
} clattn_algo;

/* Which pass a plan computes. The backward pass takes the forward's inputs and its outputs o
 * and lse, and the gradient of o (d_o); it writes the gradients of q, k, v (dq, dk, dv), laid
 * out as q, k, v, and of the sinks (dsinks, heads_q floats) when the descriptor has sinks:
 *     D_i = d_o_i . o_i,   P_ij = exp(s_ij - lse_i),   dP_ij = d_o_i . v_j
 *     dS_ij = P_ij (dP_ij - D_i) (1 - tanh^2(x_ij / softcap) with a softcap; x the raw score)
 *     dq_i = scale sum_j dS_ij k_j,   dk_j = scale sum_i dS_ij q_i,   dv_j = sum_i P_ij d_o_i
 *     dsink_h = - sum_i D_i exp(sink_h - lse_i)
 * dk and dv sum over the query heads of their KV head (GQA); the mask and ALiBi slopes get no
 * gradient. A key no row attends gets zero gradients, as does a row that attends no key.
 * Deterministic: no atomics anywhere, so the same inputs give byte-identical gradients on
 * every run, whatever the number of threads or compute units. */
typedef enum clattn_pass {
    CLATTN_PASS_FORWARD = 0,
    CLATTN_PASS_BACKWARD = 1
} clattn_pass;

/* Element strides of one 4-D tensor (batch, head, sequence); the head-dim stride is 1. */
typedef struct clattn_strides {
    int64_t batch, head, seq;
} clattn_strides;

/* ---- the attention descriptor: CLATTN_DESC_INIT, then set what you need ----
 * Tensor shapes (element strides from `layout`, or `*_strides` with CLATTN_LAYOUT_STRIDED):
 *   q    (batch, heads_q,  seq_q,  head_dim)      dtype
 *   k    (batch, heads_kv, seq_kv, head_dim)      dtype
 *   v    (batch, heads_kv, seq_kv, head_dim_v)    dtype
 *   o    (batch, heads_q,  seq_q,  head_dim_v)    dtype
 *   lse  (batch, heads_q,  seq_q)                 float32, dense, natural log
 *   mask (batch|1, heads_q|1, seq_q, seq_kv)      float32, strides mask_strides (0 = broadcast)
 *   alibi_slopes (heads_q), sinks (heads_q)       float32
 *   seqused_k (batch)                             int32: keys j >= seqused_k[b] are masked, and
 *                                                 bottom-right alignment uses seqused_k[b]
 * heads_q must be a multiple of heads_kv (GQA; heads_kv == 1 is MQA).
 *
 * Packed variable-length batches (varlen = 1, as FlashAttention's varlen API): `batch`
 * sequences are packed along the token axis, q (total_q, heads_q, head_dim), k/v (total_k,
 * heads_kv, ...), o (total_q, heads_q, head_dim_v) with BSHD strides (or STRIDED: the batch
 * strides are then ignored); sequence b holds tokens cu_seqlens_q[b] .. cu_seqlens_q[b+1]-1
 * (int32, batch+1 entries, non-decreasing, from 0; on the device they are clamped, see the
 * rule for device-side integers above). seq_q/seq_kv are the longest lengths;
 * lse is (heads_q, total_q). Alignment, windows and ALiBi use each sequence's own lengths;
 * a mask is indexed by (b, h, position in the sequence, key position).
 *
 * Paged KV cache (page_size >= 1, the semantics of FlashAttention's flash_attn_with_kvcache,
 * any page size): k and v are caches of pages, always
 *   k (num_pages, page_size, heads_kv, head_dim), v (num_pages, page_size, heads_kv, head_dim_v)
 * dense (their offsets apply; k_strides/v_strides then describe k_new/v_new). Key j of sequence
 * b is token j % page_size of page block_table[b * pages_per_seq + j / page_size]
 * (block_table: batch x pages_per_seq int32). seqused_k is required: seqused_k[b] keys are
 * cached before the call. seq_kv is the most keys a sequence attends after the append
 * (<= pages_per_seq * page_size). A cache holds at most 2^30 keys (num_pages * page_size).
 *   - Append (seq_new >= 1): k_new (batch, heads_kv, seq_new, head_dim) and v_new, laid out as
 *     the descriptor's layout says for k/v (BHSD, BSHD, or k_strides/v_strides), are written
 *     into the caches in place, through the table, at positions seqused_k[b] ..
 *     seqused_k[b] + seq_new - 1; the attention then sees seqused_k[b] + seq_new keys. Not with
 *     varlen. The caches are then outputs too: nothing else may overlap them.
 *   - Rotary (rotary_dim >= 2, with an append): rotary_cos and rotary_sin (rotary_positions,
 *     rotary_dim / 2) f32 rotate the first rotary_dim dims of k_new at positions seqused_k[b] + t
 *     and of q at seqused_k[b] + i when causal or local, else all of q at seqused_k[b] (q
 *     itself is not modified). Local, as in flash_attn_with_kvcache: use_window with a side
 *     >= 0 and below pages_per_seq * page_size (a window (-1, -1), or one whose sides are all
 *     that long, masks nothing and rotates q as no window does). rotary_positions must cover
 *     max(seq_kv, seq_kv - seq_new + seq_q) positions.
 *   - Windows: a side at least pages_per_seq * page_size long is unbounded (-1), as
 *     flash_attn_with_kvcache makes it (taken literally it would still mask the first rows of
 *     more queries than the cache holds).
 *   - Packed queries (varlen): q and o packed by cu_seqlens_q over the paged cache (chunked
 *     prefill); cu_seqlens_k and total_k are not used.
 * Device-side integers again: seqused_k[b] is clamped to 0 .. seq_kv - seq_new. A block id
 * outside 0 .. num_pages - 1 is never read or written: its keys are masked (they weigh nothing,
 * as keys past seqused_k) and appends to it are dropped; the reference and the host call do the
 * same, so a table with holes gives the same result on every path. Pages may be shared (one id
 * in several tables, as prefix caching does) where they hold cached keys only: two appended
 * tokens that land on one cache row leave one of the two writes, which one unspecified (the
 * reference keeps the last in batch and token order). */
typedef struct clattn_desc {
    size_t struct_size; /* sizeof(clattn_desc): set by CLATTN_DESC_INIT */
    int batch, heads_q, heads_kv, seq_q, seq_kv; /* all >= 1; heads_kv 0 means heads_q */
    int head_dim;                                /* 1..1024 (fused: up to 576) */
    int head_dim_v;                              /* 0 means head_dim */
    clattn_dtype dtype;                          /* default f32 */
    clattn_layout layout;                        /* default BHSD */
    clattn_strides q_strides, k_strides, v_strides, o_strides; /* CLATTN_LAYOUT_STRIDED only */
    float scale;                                 /* 0 means 1/sqrt(head_dim) */
    int causal;                                  /* nonzero: causal mask */
    clattn_causal_align causal_align;            /* default bottom-right */
    int use_window;                              /* nonzero: sliding window below */
    int window_left, window_right;               /* keys allowed: i+off-left .. i+off+right; -1 unbounded */
    float softcap;                               /* 0 means none */
    int has_alibi;                               /* nonzero: alibi_slopes tensor given */
    int has_sinks;                               /* nonzero: sinks tensor given */
    int has_mask;                                /* nonzero: additive mask tensor given */
    clattn_strides mask_strides;                 /* element strides (batch, head, row); 0 broadcasts */
    int has_seqused_k;                           /* nonzero: per-batch used key lengths given */
    int varlen;                                  /* nonzero: packed sequences, cu_seqlens given */
    int total_q, total_k;                        /* varlen only: packed token counts */
    int num_splits;                              /* fused decode: key splits; 0 heuristic, 1 none */
    clattn_algo algo;                            /* default auto */
    clattn_pass pass;                            /* default forward (plans only) */
    /* Paged KV cache (page_size >= 1; forward only), see "Paged KV cache" above. */
    int page_size;                               /* keys per page; 0: k and v are dense tensors */
    int num_pages;                               /* pages in each cache */
    int pages_per_seq;                           /* block_table row length */
    int seq_new;                                 /* tokens k_new/v_new append per sequence (0: none) */
    int rotary_dim;                              /* 0: no rotary; else even, <= head_dim (needs seq_new) */
    int rotary_interleaved;                      /* nonzero: pairs (0,1),(2,3)..; else (x, x + rotary_dim/2) */
    int rotary_positions;                        /* rows of rotary_cos/rotary_sin */
} clattn_desc;
#define CLATTN_DESC_INIT {sizeof(clattn_desc)}

/* Which family of fused kernels a context uses. Auto picks per shape class: the family the
 * user's tuning file prefers for the class (clattn_tuning_store_preferred, `clattn tune
 * --families`) where it serves, else by device type; forcing one is for testing and
 * benchmarking (every family is correct on every device). */
typedef enum clattn_kernel_family {
    CLATTN_KERNELS_AUTO = 0,  /* preferred by the tuning file, else rows on CPU devices, tiles elsewhere */
    CLATTN_KERNELS_ROWS = 1,  /* one work-item owns a register tile of query rows, no barriers */
    CLATTN_KERNELS_TILES = 2, /* a work-group owns a block of rows; K/V tiles in local memory */
    CLATTN_KERNELS_MMA = 3,   /* tensor-core MMA tiles (f16/bf16 storage): inline PTX on NVIDIA sm_80+,
                                 an exact portable emulation elsewhere; only when asked for */
    CLATTN_KERNELS_DECODE = 4, /* decode (<= 16 rows per KV head): a work-group reads each K/V row once,
                                  coalesced, for all its query heads; only when asked for */
    CLATTN_KERNELS_RTILE = 5   /* register-tiled: each work-item a micro-tile of scores and outputs, Q/K/V
                                  chunks double-buffered in local memory (xgemm's structure); when asked */
} clattn_kernel_family;

/* ---- context ---- */
typedef struct clattn_context clattn_context;

typedef void (*clattn_log_fn)(void *user, const char *message);

typedef struct clattn_context_options {
    size_t struct_size; /* sizeof(clattn_context_options): set by CLATTN_CONTEXT_OPTIONS_INIT */
    const char *device;      /* clattn_context_create only: a selector as $CLATTN_DEVICE takes
                                (index, or a name substring: the first device that matches);
                                NULL: $CLATTN_DEVICE, else the first GPU, else device 0 */
    const char *cache_dir;   /* NULL: $CLATTN_CACHE_DIR, else $XDG_CACHE_HOME/clattn,
                                else $HOME/.cache/clattn; a path of 1024 bytes or more: off */
    int disable_disk_cache;  /* nonzero: never read or write program binaries on disk (nor the
                                tuning file, which lives in the same folder) */
    clattn_log_fn log;       /* NULL: no diagnostics; called under no lock, any thread */
    void *log_user;
    clattn_kernel_family kernel_family; /* default auto: $CLATTN_KERNELS (a family's name: rows,
                                           tiles, mma, decode, rtile, or auto; any other value is
                                           refused with CLATTN_INVALID_ARGUMENT) if set, else by
                                           device type and the tuning file */
    size_t scratch_limit;    /* unfused path: most bytes of scores kept at once; 0 means
                                256 MiB; never above CL_DEVICE_MAX_MEM_ALLOC_SIZE */
} clattn_context_options;
#define CLATTN_CONTEXT_OPTIONS_INIT {sizeof(clattn_context_options)}

/* Wraps the application's own context and device. Both are retained and released on
 * destroy, and never otherwise touched. `options` may be NULL. */
CLATTN_API clattn_status clattn_context_create_from_cl(cl_context cl_ctx, cl_device_id device,
                                                       const clattn_context_options *options,
                                                       clattn_context **out);

/* Picks a device: options->device or else $CLATTN_DEVICE selects by global index (platforms in order, then their
 * devices) or by a case-insensitive name substring; otherwise the first GPU, else the first
 * device. Creates its own cl_context. */
CLATTN_API clattn_status clattn_context_create(const clattn_context_options *options,
                                               clattn_context **out);

/* Every OpenCL device of every platform in the order the selector's index counts them.
 * Writes up to `capacity` ids and the total count (either pointer may be NULL/0). */
CLATTN_API clattn_status clattn_list_devices(cl_device_id *devices, cl_uint capacity,
                                             cl_uint *count);

CLATTN_API void clattn_context_destroy(clattn_context *ctx); /* NULL is fine */

CLATTN_API cl_context clattn_context_cl_context(const clattn_context *ctx);
CLATTN_API cl_device_id clattn_context_device(const clattn_context *ctx);
/* The context's kernel family; for auto, the device's default one (never AUTO). Under auto a
 * shape class with a preferred family in the tuning file (clattn_tuning_store_preferred) runs
 * that family instead: clattn_plan_kernel_family says which family a plan runs. */
CLATTN_API clattn_kernel_family clattn_context_kernel_family(const clattn_context *ctx);

/* The message of the most recent failing call on this context (the OpenCL build log after
 * CLATTN_BUILD_FAILED), or "" if none. Valid until the next failing call on the context. With
 * several threads, use clattn_context_copy_last_error, which copies under the lock. */
CLATTN_API const char *clattn_context_last_error(const clattn_context *ctx);
CLATTN_API size_t clattn_context_copy_last_error(const clattn_context *ctx, char *buf, size_t size);

/* Program-cache counters, for diagnostics and tests. */
typedef struct clattn_cache_stats {
    size_t struct_size; /* sizeof(clattn_cache_stats): set by CLATTN_CACHE_STATS_INIT */
    uint64_t memory_hits;       /* variant already built in this context */
    uint64_t disk_hits;         /* program loaded from an on-disk binary */
    uint64_t source_builds;     /* program compiled from source */
    uint64_t disk_writes;       /* binaries written to disk */
} clattn_cache_stats;
#define CLATTN_CACHE_STATS_INIT {sizeof(clattn_cache_stats)}
CLATTN_API clattn_status clattn_context_cache_stats(const clattn_context *ctx, clattn_cache_stats *out);

/* ---- plans ---- */
typedef struct clattn_plan clattn_plan;

/* Validates the descriptor against the device, picks the algorithm and kernel variant and
 * builds it (or loads it from cache). On failure nothing is kept and *out is NULL. */
CLATTN_API clattn_status clattn_plan_create(clattn_context *ctx, const clattn_desc *desc,
                                            clattn_plan **out);
CLATTN_API void clattn_plan_destroy(clattn_plan *plan); /* NULL is fine */

/* "fused" or "unfused", and the kernel variant, e.g. "cpu_rows D=64 DV=64 BM=4 BN=16 VW=16". */
CLATTN_API clattn_algo clattn_plan_algo(const clattn_plan *plan);
CLATTN_API const char *clattn_plan_variant(const clattn_plan *plan);
/* Bytes of device scratch one execution needs: the unfused path's score chunks and f32 copies;
 * the fused path's split-KV partials or K transposed (rows family, prefill); on either path q
 * rotated (paged cache with rotary); else 0. Without a caller scratch buffer the plan allocates it at its first
 * execution and keeps it. */
CLATTN_API size_t clattn_plan_scratch_size(const clattn_plan *plan);
/* Why the plan took its path, e.g. "auto: unfused, because fused: attention sinks is not
 * supported by the fused path yet". */
CLATTN_API const char *clattn_plan_reason(const clattn_plan *plan);
/* The kernel family a fused plan runs (under auto: the one picked for its descriptor, a tuning
 * file's preference included); CLATTN_KERNELS_AUTO for an unfused plan or NULL. */
CLATTN_API clattn_kernel_family clattn_plan_kernel_family(const clattn_plan *plan);

/* ---- tuning ----
 * The fused kernels' tile sizes per device and shape class. A plan takes them from, in order:
 * the user's tuning file for its device and driver (written by `clattn tune`, kept beside the
 * kernel cache), the defaults shipped for that device, then for its vendor and device type,
 * then generic values. A shape class is the phase ("prefill", or "decode": at most 16 query
 * rows per sequence) and the head dim rounded up to 64, 128, 256 or 576, e.g. "decode-d128".
 * Zero fields mean "the default". */
typedef struct clattn_tuning {
    size_t struct_size; /* sizeof(clattn_tuning): set by CLATTN_TUNING_INIT */
    int rows;          /* query rows per work-item (rows family) or per work-group (tiles) */
    int keys;          /* keys per block (one softmax rescale per block) */
    int vector_width;  /* widest vector over the head dims (reduced until it divides them) */
    int group_size;    /* rows family: work-items per work-group (tiles: rows x threads_per_row) */
    int split_units;   /* key splits aim for this many work units (a unit: a block of rows of
                          one KV head) per compute unit (decode, and prefill with few rows) */
    int threads_per_row; /* tiles family: work-items sharing a row's head dims (1, 2, 4, 8) */
} clattn_tuning;
#define CLATTN_TUNING_INIT {sizeof(clattn_tuning)}

/* Like clattn_plan_create, with the fused kernel's parameters given (NULL: as looked up).
 * Fields left zero are looked up as usual. For tuners and benchmarks. */
CLATTN_API clattn_status clattn_plan_create_tuned(clattn_context *ctx, const clattn_desc *desc,
                                                  const clattn_tuning *tuning, clattn_plan **out);
/* The parameters a fused plan uses and where they came from: "given", "user file",
 * "shipped (device)", "shipped (vendor)" or "generic". Unfused plans: zeros and "". */
CLATTN_API const char *clattn_plan_tuning(const clattn_plan *plan, clattn_tuning *out);
/* The shape class of a descriptor ("prefill-d64"); NULL if the descriptor is invalid. The
 * string is static. */
CLATTN_API const char *clattn_tuning_class(const clattn_desc *desc);
/* Records `tuning` as the best for the class of `desc` on this context's device and kernel
 * family: in the context at once, and in the user's tuning file (rewritten atomically) when
 * the disk cache is on. */
CLATTN_API clattn_status clattn_tuning_store(clattn_context *ctx, const clattn_desc *desc,
                                             const clattn_tuning *tuning);
/* Records `tuning` for `family` on the class of `desc` and makes `family` the one auto takes
 * for that class on this device, wherever it serves a descriptor (`clattn tune --families`
 * measures the families and stores the fastest this way). The family must serve `desc`. */
CLATTN_API clattn_status clattn_tuning_store_preferred(clattn_context *ctx, const clattn_desc *desc,
                                                       clattn_kernel_family family, const clattn_tuning *tuning);
/* The user tuning file's path for this context ("" when the disk cache is off). */
CLATTN_API const char *clattn_tuning_file(const clattn_context *ctx);

/* Device buffers of one execution. Offsets are in elements of each tensor's type and let
 * a tensor be a view into a larger buffer. Unused optional members stay NULL. */
typedef struct clattn_buffers {
    size_t struct_size; /* sizeof(clattn_buffers): set by CLATTN_BUFFERS_INIT */
    cl_mem q, k, v, o;                       /* required */
    cl_mem lse;                              /* optional output */
    cl_mem mask, alibi_slopes, sinks, seqused_k; /* when the descriptor asks for them */
    cl_mem scratch;                          /* optional: caller's scratch (>= scratch size) */
    size_t q_offset, k_offset, v_offset, o_offset, lse_offset;
    cl_mem cu_seqlens_q, cu_seqlens_k;       /* varlen */
    /* backward pass: o and lse (required) are inputs, as the forward wrote them; d_o is laid
     * out as o, dq/dk/dv as q/k/v (their strides and dtype); dsinks (heads_q floats, f32)
     * with sinks */
    cl_mem d_o, dq, dk, dv, dsinks;
    size_t do_offset, dq_offset, dk_offset, dv_offset;
    /* paged KV cache: k and v above are the caches (written when seq_new > 0) */
    cl_mem block_table;                      /* int32 (batch, pages_per_seq) */
    cl_mem k_new, v_new;                     /* seq_new > 0 */
    cl_mem rotary_cos, rotary_sin;           /* rotary_dim > 0: f32 (rotary_positions, rotary_dim / 2) */
    size_t k_new_offset, v_new_offset;
} clattn_buffers;
#define CLATTN_BUFFERS_INIT {sizeof(clattn_buffers)}

/* Enqueues the attention on `queue` (which must belong to the plan's context and device;
 * the unfused path also needs it in-order, as CLBlast does)
 * after `wait_list`, and returns in *event (if not NULL) one event that completes when
 * every kernel enqueued has completed; the caller releases it. Never blocks.
 * Every argument and each buffer's size is checked before anything is enqueued: on any
 * failure before the first enqueue, nothing is launched or written. An OpenCL error from
 * an enqueue itself may leave o and lse (the backward's dq, dk, dv, dsinks) partly written. */
CLATTN_API clattn_status clattn_plan_execute(const clattn_plan *plan, cl_command_queue queue,
                                             const clattn_buffers *buffers,
                                             cl_uint num_wait, const cl_event *wait_list,
                                             cl_event *event);

/* ---- host arrays ----
 * Each tensor as a host pointer, laid out as the descriptor says; lengths are in elements.
 * For f16/bf16 the pointers hold uint16_t bit patterns. */
typedef struct clattn_host_tensors {
    size_t struct_size; /* sizeof(clattn_host_tensors): set by CLATTN_HOST_TENSORS_INIT */
    const void *q, *k, *v;
    void *o;
    float *lse;                                  /* optional */
    const float *mask, *alibi_slopes, *sinks;    /* as the descriptor asks */
    const int32_t *seqused_k;
    size_t q_len, k_len, v_len, o_len, lse_len, mask_len; /* elements available */
    const int32_t *cu_seqlens_q, *cu_seqlens_k;  /* varlen */
    /* backward: d_o laid out as o; dq, dk, dv as q, k, v; dsinks (heads_q) with sinks */
    const void *d_o;
    void *dq, *dk, *dv;
    float *dsinks;
    size_t do_len, dq_len, dk_len, dv_len;
    /* paged KV cache: k and v are the caches (read only here); with an append the updated
     * caches are written to k_cache_out and v_cache_out (each as large as k, v; NULL: dropped) */
    const int32_t *block_table;
    const void *k_new, *v_new;
    const float *rotary_cos, *rotary_sin;
    size_t k_new_len, v_new_len;
    void *k_cache_out, *v_cache_out;
} clattn_host_tensors;
#define CLATTN_HOST_TENSORS_INIT {sizeof(clattn_host_tensors)}

/* Copies the host arrays to the device, runs the plan made for `desc`, waits and copies o
 * (and lse) back. Convenience for programs that hold plain arrays. */
CLATTN_API clattn_status clattn_forward_host(clattn_context *ctx, const clattn_desc *desc,
                                             const clattn_host_tensors *tensors);

/* The backward pass on host arrays: q, k, v, o, lse (required: as the forward wrote them) and
 * d_o in; dq, dk, dv (and dsinks) out. desc->pass is not read. */
CLATTN_API clattn_status clattn_backward_host(clattn_context *ctx, const clattn_desc *desc,
                                              const clattn_host_tensors *tensors);

/* The CPU reference: every feature, double accumulation. `message` (may be NULL) receives
 * a description of what is wrong on failure. desc->pass is not read. */
CLATTN_API clattn_status clattn_reference_forward(const clattn_desc *desc,
                                                  const clattn_host_tensors *tensors,
                                                  char *message, size_t message_size);
/* The backward pass's reference: q, k, v and d_o in (o and lse are not read: the reference
 * recomputes them exactly), dq, dk, dv (and dsinks) out. */
CLATTN_API clattn_status clattn_reference_backward(const clattn_desc *desc,
                                                   const clattn_host_tensors *tensors,
                                                   char *message, size_t message_size);

/* ---- merging partial results ----
 * Results of the same queries over disjoint key ranges (split-KV decode inside clattn; ring
 * or sequence parallelism across devices in an application) combine exactly:
 *     lse = log(sum_p exp(lse_p)),  o = sum_p exp(lse_p - lse) * o_p.
 * Partials are dense f32: o_parts (n_parts, rows, dim), lse_parts (n_parts, rows); o (rows,
 * dim) and lse (rows). A part with lse_p = -inf weighs nothing; a row with no part gets 0/-inf.
 * o and lse (the outputs) share no byte with the parts or each other (CLATTN_BUFFERS_OVERLAP). */
typedef struct clattn_merge_desc {
    size_t struct_size; /* sizeof(clattn_merge_desc): set by CLATTN_MERGE_DESC_INIT */
    int n_parts, rows, dim; /* all >= 1 */
} clattn_merge_desc;
#define CLATTN_MERGE_DESC_INIT {sizeof(clattn_merge_desc)}

CLATTN_API clattn_status clattn_merge(clattn_context *ctx, cl_command_queue queue,
                                      const clattn_merge_desc *desc, cl_mem o_parts,
                                      cl_mem lse_parts, cl_mem o, cl_mem lse, cl_uint num_wait,
                                      const cl_event *wait_list, cl_event *event);
CLATTN_API clattn_status clattn_merge_host(const clattn_merge_desc *desc, const float *o_parts,
                                           const float *lse_parts, float *o, float *lse);

/* Folding partials one at a time, as ring attention (sequence parallelism) does: each step's
 * forward call, over a range of keys, writes o and lse as usual (o in the descriptor's dtype and
 * layout, lse dense); clattn_merge_fold folds that partial into a running f32 accumulator in
 * place, and clattn_merge_store writes the accumulator out as a forward's o and lse. Keeping the
 * accumulator in f32 means an f16/bf16 result is rounded once per partial, not once per step.
 *   acc_o (batch, heads_q, acc_seq, head_dim_v) f32 dense, acc_lse (batch, heads_q, acc_seq) f32:
 *   start acc_lse at -inf (acc_o may then hold anything: an empty side is never read).
 * Fold: `desc` describes the partial (its forward call's descriptor: batch, heads_q, seq_q,
 * head_dim_v, dtype, layout or o_strides; no packed sequences or paged cache); its row i of each
 * (batch, head) goes to the accumulator's row acc_start + i (so a call over part of the queries
 * folds into the whole). Store: `desc` describes the output (seq_q = acc_seq); lse may be NULL.
 * The accumulator shares no buffer with o or lse, and store's o and lse share no byte
 * (CLATTN_BUFFERS_OVERLAP). Not with attention sinks (CLATTN_UNSUPPORTED): each partial's lse
 * would count the sink once more. Both enqueue one kernel after the wait list and never block. */
CLATTN_API clattn_status clattn_merge_fold(clattn_context *ctx, cl_command_queue queue, const clattn_desc *desc,
                                           cl_mem o, size_t o_offset, cl_mem lse, size_t lse_offset, cl_mem acc_o,
                                           cl_mem acc_lse, int acc_seq, int acc_start, cl_uint num_wait,
                                           const cl_event *wait_list, cl_event *event);
CLATTN_API clattn_status clattn_merge_store(clattn_context *ctx, cl_command_queue queue, const clattn_desc *desc,
                                            cl_mem acc_o, cl_mem acc_lse, cl_mem o, size_t o_offset, cl_mem lse,
                                            size_t lse_offset, cl_uint num_wait, const cl_event *wait_list,
                                            cl_event *event);

/* Checks a descriptor without a device. `message` as above. */
CLATTN_API clattn_status clattn_desc_validate(const clattn_desc *desc, char *message,
                                              size_t message_size);

/* Element counts each tensor needs for `desc` (what the host call and the buffer checks use).
 * Any pointer may be NULL. Returns CLATTN_SIZE_OVERFLOW if a count overflows. */
typedef struct clattn_tensor_sizes {
    size_t struct_size; /* sizeof(clattn_tensor_sizes): set by CLATTN_TENSOR_SIZES_INIT */
    size_t q, k, v, o, lse, mask; /* elements; mask is 0 without a mask */
    size_t k_new, v_new;          /* paged append: 0 without */
    size_t block_table, rotary;   /* paged: table entries; rotary_cos (and rotary_sin) floats */
} clattn_tensor_sizes;
#define CLATTN_TENSOR_SIZES_INIT {sizeof(clattn_tensor_sizes)}
CLATTN_API clattn_status clattn_desc_tensor_sizes(const clattn_desc *desc, clattn_tensor_sizes *out);

/* Size in bytes of one element of dtype (4, 2, 2). */
CLATTN_API size_t clattn_dtype_size(clattn_dtype dtype);

/* f32 <-> f16 / bf16 bit conversions (round to nearest even), for preparing host data. */
CLATTN_API uint16_t clattn_f32_to_f16(float x);
CLATTN_API float clattn_f16_to_f32(uint16_t h);
CLATTN_API uint16_t clattn_f32_to_bf16(float x);
CLATTN_API float clattn_bf16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif
#endif /* CLATTN_H */
