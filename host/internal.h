/* Library-internal declarations shared by the files of host/. Nothing here is exported. */
#ifndef CLATTN_INTERNAL_H
#define CLATTN_INTERNAL_H

#include "clattn.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>

#define CLATTN_HIDDEN __attribute__((visibility("hidden")))
#define CLATTN_MAX_HEAD_DIM 1024
#define CLATTN_FUSED_MAX_HEAD_DIM 576
#define CLATTN_MSG_SIZE 8192

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
} clattn_shape;

/* validate.c */
CLATTN_HIDDEN clattn_status clattn__resolve(const clattn_desc *desc, clattn_shape *shape,
                                            char *msg, size_t msg_size);
CLATTN_HIDDEN clattn_status clattn__sizes(const clattn_shape *s, clattn_tensor_sizes *out);
CLATTN_HIDDEN clattn_status clattn__check_host(const clattn_shape *s, const clattn_host_tensors *t,
                                               char *msg, size_t msg_size);

/* One kernel variant: the -D defines that select it and a readable name. */
typedef struct clattn_variant {
    const char *source_name; /* which kernels/<name>.cl file */
    const char *kernel_name;
    char options[512];
    char name[160];
    size_t local_size;        /* work-group size along dim 0; 0: let the runtime choose */
    int rows;                 /* query rows one work-item (rows) or work-group (tiles) owns */
    bool group_per_block;     /* tiles: a work-group per block of rows; rows: a work-item */
} clattn_variant;

/* Program cache entry: one built cl_program per option string. */
typedef struct clattn_program_entry {
    char *key; /* source name + options */
    cl_program program;
    struct clattn_program_entry *next;
} clattn_program_entry;

typedef struct clattn_device_info {
    char name[256], vendor[256], driver[128], version[128], platform_version[256];
    cl_device_type type;
    cl_ulong local_mem, max_alloc, global_mem;
    size_t max_wg_size;
    cl_uint compute_units, mem_base_align_bits;
} clattn_device_info;

/* A tuning entry of the user's file (tuning.c). */
typedef struct clattn_tuned {
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
    clattn_kernel_family family; /* never AUTO: resolved at creation */
    char tuning_path[1100];      /* the user tuning file; "" when the disk cache is off */
    clattn_tuned *tuned;         /* its entries (and those stored since), under lock */
    int n_tuned;
    size_t scratch_limit;        /* resolved: > 0 and <= max_alloc */
    pthread_mutex_t lock; /* guards programs, stats and last_error */
    /* fault.c: live objects clattn created, and the test-only fault hook */
    atomic_long live_buffers, live_kernels, live_programs;
    atomic_int fault_kind, fault_fired;
    atomic_long fault_countdown;
    clattn_program_entry *programs;
    clattn_cache_stats stats;
    char last_error[CLATTN_MSG_SIZE];
};

struct clattn_plan {
    clattn_context *ctx;
    clattn_shape shape;
    clattn_algo algo;
    char reason[384];
    clattn_variant variant; /* the fused forward, or the unfused path's softmax */
    cl_kernel kernel;       /* clSetKernelArg is not thread-safe: set and enqueued under lock */
    clattn_variant variant2; /* fused split-KV: combine; unfused with f32 copies: widen/narrow */
    cl_kernel kernel2, kernel3;
    /* fused split-KV decode */
    int nsplit, split_len;
    bool kt;                      /* fused rows: K transposed to f32 in scratch first */
    long kt_ld;                   /* its row length (keys + 16 zero columns) */
    clattn_tuning tuning;         /* fused: the parameters used, and their source */
    const char *tuning_source;
    /* unfused: query rows and (batch, head) items per chunk; f32 working copies */
    int chunk_rows, chunk_items;
    bool convert;                 /* q, k, v, o go through dense f32 copies in scratch */
    size_t work_q, work_k, work_v, work_o; /* their element offsets in scratch */
    size_t scratch_bytes;         /* all scratch one execution needs */
    cl_mem scratch;               /* owned; allocated at the first execution without caller scratch */
    pthread_mutex_t lock;
};

/* context.c */
CLATTN_HIDDEN clattn_status clattn__fail(clattn_context *ctx, clattn_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
CLATTN_HIDDEN void clattn__logf(clattn_context *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
CLATTN_HIDDEN void clattn__set_error(clattn_context *ctx, const char *msg);
CLATTN_HIDDEN clattn_status clattn__query_device(cl_device_id dev, clattn_device_info *info);

/* program.c */
CLATTN_HIDDEN clattn_status clattn__get_program(clattn_context *ctx, const clattn_variant *variant,
                                                cl_program *out);
CLATTN_HIDDEN void clattn__release_programs(clattn_context *ctx);
CLATTN_HIDDEN uint64_t clattn__fnv1a(uint64_t h, const char *s);
CLATTN_HIDDEN void clattn__make_dirs(const char *dir);

/* tuning.c: parameters per device and shape class (user file, shipped defaults, generic) */
CLATTN_HIDDEN const char *clattn__tuning_class(const clattn_shape *s);
CLATTN_HIDDEN void clattn__tuning_load(clattn_context *ctx);
CLATTN_HIDDEN void clattn__tuning_free(clattn_context *ctx);
/* Fills every field of *out for the shape on ctx: `given` fields (nonzero) first, the rest from
 * the most specific source; returns that source's name. */
CLATTN_HIDDEN const char *clattn__tuning_lookup(clattn_context *ctx, const clattn_shape *s,
                                                const clattn_tuning *given, clattn_tuning *out);
CLATTN_HIDDEN bool clattn__tuning_valid(const clattn_context *ctx, clattn_kernel_family family,
                                        const clattn_tuning *t, char *why, size_t why_size);

/* plan.c: the single capability check used by dispatch, `clattn run -v` and the tests. */
CLATTN_HIDDEN bool clattn__fused_supports(const clattn_context *ctx, const clattn_shape *s,
                                          char *why, size_t why_size);

/* fused.c */
CLATTN_HIDDEN void clattn__fused_choose(const clattn_context *ctx, const clattn_shape *s,
                                        const clattn_tuning *t, clattn_plan *plan);
CLATTN_HIDDEN clattn_status clattn__fused_enqueue(const clattn_plan *plan, cl_command_queue queue, const clattn_buffers *b,
                                                  cl_uint num_wait, const cl_event *wait,
                                                  cl_event *event);

/* shared by fused.c and unfused.c: program + kernel for a variant */
CLATTN_HIDDEN clattn_status clattn__make_kernel(clattn_context *ctx, const clattn_variant *v, const char *name,
                                                cl_kernel *out);
CLATTN_HIDDEN clattn_status clattn__plan_scratch(clattn_plan *plan, const clattn_buffers *b, cl_mem *out);
CLATTN_HIDDEN const char *clattn__feature_defines(const clattn_shape *s, char *buf, size_t size);

/* fused.c: kernels beyond the main one (split-KV combine) */
CLATTN_HIDDEN clattn_status clattn__fused_prepare(clattn_plan *plan);

/* unfused.c */
CLATTN_HIDDEN bool clattn__unfused_supports(const clattn_context *ctx, const clattn_shape *s,
                                            char *why, size_t why_size);
CLATTN_HIDDEN void clattn__unfused_choose(const clattn_context *ctx, const clattn_shape *s,
                                          clattn_plan *plan);
CLATTN_HIDDEN clattn_status clattn__unfused_prepare(clattn_plan *plan);
CLATTN_HIDDEN clattn_status clattn__unfused_enqueue(clattn_plan *plan, cl_command_queue queue,
                                                    const clattn_buffers *b, cl_uint num_wait,
                                                    const cl_event *wait, cl_event *event);

/* Sets kernel argument n (then n++) unless an earlier one failed: the argument lists of the
 * kernels are long, and one error check at the end keeps them readable. */
#define CLATTN_ARG(kernel, n, e, T, x)                                       \
    do {                                                                     \
        T val_ = (x);                                                        \
        if (!(e)) (e) = clSetKernelArg((kernel), (n), sizeof val_, &val_);   \
        (n)++;                                                               \
    } while (0)

/* util */
CLATTN_HIDDEN void clattn__vformat(char *buf, size_t size, const char *fmt, va_list ap);
CLATTN_HIDDEN void clattn__format(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Embedded kernel sources (generated at build time from kernels/<name>.cl). */
typedef struct clattn_embedded_source {
    const char *name;
    const unsigned char *data;
    size_t size;
} clattn_embedded_source;
CLATTN_HIDDEN const clattn_embedded_source *clattn__find_source(const char *name);

#endif
