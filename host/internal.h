/* The types every file of host/ shares: a resolved descriptor (shape), the device facts the
 * library reads, the context and the plan, and the library's limits. Types and constants only:
 * each module declares its functions in its own header (DESIGN.md, "Layers"). Nothing here is
 * exported. */
#ifndef CLATTN_INTERNAL_H
#define CLATTN_INTERNAL_H

#include "clattn.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define CLATTN_HIDDEN __attribute__((visibility("hidden")))

#define CLATTN_MAX_HEAD_DIM 1024
#define CLATTN_FUSED_MAX_HEAD_DIM 576
#define CLATTN_MSG_SIZE 8192
/* Every kernel is OpenCL C 1.2: the newest version every vendor's driver compiles. */
#define CLATTN_CL_STD "-cl-std=CL1.2"
/* NVIDIA's OpenCL maps an NDRange's 2nd and 3rd dimensions onto CUDA grid dimensions, which
 * hold at most 65535 work-groups: no kernel may put more there. */
#define CLATTN_GRID_MAX 65535
/* log2(e): the kernels work in base 2 (exp2), so scale and softcap are pre-multiplied. */
#define CLATTN_LOG2E 1.4426950408889634
/* A descriptor with at most this many query rows per sequence is "decode": the keys dominate
 * (tuning class, key splits), and transposing K for the rows family does not pay. */
#define CLATTN_DECODE_MAX_ROWS 16
/* Default bound on the unfused path's score chunks (clattn_context_options.scratch_limit). */
#define CLATTN_SCRATCH_LIMIT_DEFAULT ((size_t)256 << 20)
/* Bound on the split-KV partials the fused path keeps: splits are reduced until they fit. */
#define CLATTN_SPLIT_PARTIALS_MAX ((size_t)256 << 20)

/* A descriptor with every default applied and every stride resolved (elements). */
typedef struct clattn_shape {
    int batch, heads_q, heads_kv, group, seq_q, seq_kv, head_dim, head_dim_v;
    clattn_dtype dtype;
    clattn_strides q, k, v, o, mask;
    float scale;
    bool causal, top_left, window, has_mask, has_alibi, has_sinks, has_seqused_k, varlen;
    int total_q, total_k; /* varlen: packed token counts */
    int num_splits;       /* as the descriptor says: 0 heuristic */
    int window_left, window_right; /* -1 unbounded; causal folds into window_right */
    float softcap;
    clattn_algo algo;
    clattn_pass pass;
    /* paged KV cache: k and v (strides above) are the caches (num_pages, page_size, heads_kv,
     * dim), their batch stride a page's; kn and vn are k_new and v_new's strides */
    bool paged, rotary_interleaved;
    bool rotary_per_row; /* q rotated at seqused_k + i (causal or local), else all at seqused_k */
    int page_size, num_pages, pages_per_seq, seq_new, rotary_dim, rotary_positions;
    clattn_strides kn, vn;
} clattn_shape;

/* What the library reads of a device, queried once per context. */
typedef struct clattn_device_info {
    char name[256], vendor[256], driver[128], version[128], platform_version[256];
    cl_device_type type;
    cl_ulong local_mem, max_alloc;
    size_t max_wg_size;
    cl_uint compute_units;
    int nv_sm; /* NVIDIA compute capability as 10 * major + minor (cl_nv_device_attribute_query); 0 elsewhere */
    long l1d_bytes; /* CPU devices: this host's L1 data cache per core (a CPU device runs on the
                       host's cores; OpenCL does not report it); 0 unknown, and on other devices */
} clattn_device_info;

/* Program cache entry: one built cl_program per kernel file and option string. */
typedef struct clattn_program_entry {
    char *key; /* file name + options */
    cl_program program;
    struct clattn_program_entry *next;
} clattn_program_entry;

/* A tuning entry of the user's file (tuning.c). */
typedef struct clattn_tuned {
    bool preferred; /* auto takes this family for this class (at most one per class) */
    clattn_kernel_family family;
    char cls[24];
    clattn_tuning t;
} clattn_tuned;

struct clattn_context {
    cl_context cl_ctx;
    cl_device_id device;
    clattn_device_info info;
    char cache_dir[1024]; /* "" when the disk cache is off */
    clattn_log_fn log;
    void *log_user;
    clattn_kernel_family family; /* forced by the options or $CLATTN_KERNELS; AUTO: per plan */
    char tuning_path[1100];      /* the user tuning file; "" when the disk cache is off */
    clattn_tuned *tuned;         /* its entries (and those stored since), under lock */
    int n_tuned;
    size_t scratch_limit;        /* resolved: > 0 and <= max_alloc */
    pthread_mutex_t lock; /* guards programs, stats, tuned and last_error */
    /* fault.c: live objects clattn created, and the test-only fault hook */
    atomic_long live_buffers, live_kernels, live_programs;
    atomic_int fault_kind, fault_fired;
    atomic_long fault_countdown;
    clattn_program_entry *programs;
    clattn_cache_stats stats;
    char last_error[CLATTN_MSG_SIZE];
};

struct clattn_path;

/* A plan is generic: what a path keeps for itself lives behind `state` (path.h). */
struct clattn_plan {
    clattn_context *ctx;
    clattn_shape shape;
    const struct clattn_path *path; /* the path that serves it */
    char reason[384];               /* why that path */
    char variant[256];              /* what runs, readable */
    clattn_tuning tuning;           /* paths with a kernel family: the parameters used */
    const char *tuning_source;      /* and where they came from; "" for other paths */
    clattn_kernel_family family;    /* fused plans: the kernel family that runs; AUTO otherwise */
    size_t scratch_bytes;           /* device scratch one execution needs */
    void *state;                    /* the path's own; released by path->release */
    cl_mem scratch;                 /* owned; allocated at the first execution without caller scratch */
    pthread_mutex_t lock;           /* clSetKernelArg is not thread-safe: set and enqueue under it */
};

/* Where a tensor lies: the buffer that owns the memory (a sub-buffer's parent) and the bytes
 * from its first to its last element there (plan.c). */
typedef struct clattn_span {
    const char *name;
    bool output;
    cl_mem root;
    size_t lo, hi;
} clattn_span;

/* The span of `elems` elements at `offset` of m (the caller checked that they fit). */
CLATTN_HIDDEN cl_int clattn__span_of(cl_mem m, const char *name, size_t offset, size_t elems, size_t elem_size,
                                     bool output, clattn_span *out);
/* No output may share a byte with an input or another output, in one buffer or in two
 * sub-buffers of one: the kernels read inputs after outputs were written (split partials,
 * chunks, blocks of rows), so an overlap gives wrong results, not a fast in-place run. Two
 * inputs may share bytes. */
CLATTN_HIDDEN clattn_status clattn__check_overlap(clattn_context *ctx, const clattn_span *all, size_t n);

#endif
