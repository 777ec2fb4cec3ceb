/* Kernel families: one table of the fused kernels' implementations (rows for CPU devices,
 * tiles for GPUs; the GPU families to come slot in the same way). Each entry says what it is
 * called, which kernel file holds it, its generic parameters, which parameters are valid on a
 * device, whether it serves a shape, and how it fits its parameters to a shape. Nothing
 * outside the family files branches on a family. */
#ifndef CLATTN_FAMILY_H
#define CLATTN_FAMILY_H

#include "internal.h"

/* A family's forward variant for one shape: its parameters fitted to the shape and device,
 * and how it is launched. */
typedef struct clattn_fwd_fit {
    int rows, keys, vector_width, threads_per_row; /* BM, BN, VW, TPR */
    size_t local_size;    /* work-group size along dim 0; 0: the runtime chooses */
    bool group_per_block; /* a work-group per block of rows (else a work-item) */
    bool kt_capable;      /* the kernel can read K transposed to f32 (KT=1) for this variant */
    int heads_per_item;   /* KV heads per work-item (rows family, HG; others 1): a paged cache
                             on a CPU reads a token's heads side by side */
} clattn_fwd_fit;

/* A family's backward variant for one shape: its two kernels' geometry. */
typedef struct clattn_bwd_fit {
    int rows;             /* dQ kernel: packed rows per work-item (rows) or work-group (tiles) */
    int keys;             /* dK/dV kernel: keys per work-item (rows) or work-group (tiles) */
    int vector_width;     /* over the head dims */
    size_t q_local, kv_local;             /* work-group sizes; 0: the runtime chooses */
    bool q_group_per_block, kv_group_per_block; /* a work-group per block (else a work-item) */
} clattn_bwd_fit;

typedef struct clattn_family {
    clattn_kernel_family id;
    const char *name;            /* "rows": $CLATTN_KERNELS, the tuning file, variant names */
    cl_device_type default_for;  /* auto picks the first family of the table made for the device */
    bool manual;                 /* auto never picks it: only a forced family runs it */
    clattn_tuning generic;       /* parameters when no tuning source has them */
    const char *fwd_file, *fwd_function; /* kernels/<fwd_file>.cl, its forward __kernel */
    /* Each nonzero field of t within this family's bounds on the device; else why not. */
    bool (*valid)(const clattn_device_info *dev, const clattn_tuning *t, char *why, size_t why_size);
    /* Whether the family can serve the shape on the device (why, either way). */
    bool (*serves)(const clattn_device_info *dev, const clattn_shape *s, char *why, size_t why_size);
    /* The forward variant for the shape from complete parameters t. */
    void (*choose)(const clattn_device_info *dev, const clattn_shape *s, const clattn_tuning *t, clattn_fwd_fit *out);
    /* Compile options of its own for the forward kernel on the device (NULL: none). */
    void (*fwd_options)(const clattn_device_info *dev, const clattn_shape *s, char *out, size_t out_size);
    /* The backward pass: kernels/<bwd_file>.cl with its dK/dV and dQ kernels (NULL: none), and
     * its variant for a shape. `serves` answers for the shape's pass. */
    const char *bwd_file, *bwd_kv_function, *bwd_q_function;
    void (*choose_backward)(const clattn_device_info *dev, const clattn_shape *s, const clattn_tuning *t,
                            clattn_bwd_fit *out);
} clattn_family;

/* Families in table order; NULL past the end. */
CLATTN_HIDDEN const clattn_family *clattn__family_at(int i);
CLATTN_HIDDEN const clattn_family *clattn__family_by_id(clattn_kernel_family id);
CLATTN_HIDDEN const clattn_family *clattn__family_by_name(const char *name);

/* The family a plan on ctx uses for the shape: the context's forced one, else the first made
 * for the device type that serves the shape, else the first that serves it. NULL (with why)
 * when none does. */
CLATTN_HIDDEN const clattn_family *clattn__family_pick(const clattn_context *ctx, const clattn_shape *s, char *why,
                                                       size_t why_size);
/* The family auto picks for the device when the shape does not decide (the first made for it). */
CLATTN_HIDDEN const clattn_family *clattn__family_default(const clattn_device_info *dev);

/* The table, in the order auto tries it: one line per family, one file each (family_<name>.c
 * defining clattn__family_<name>). */
#define CLATTN_FAMILIES(X) \
    X(rows)                \
    X(tiles)               \
    X(mma)                 \
    X(decode)              \
    X(rtile)
#define CLATTN_DECLARE_FAMILY(n) CLATTN_HIDDEN extern const clattn_family clattn__family_##n;
CLATTN_FAMILIES(CLATTN_DECLARE_FAMILY)
#undef CLATTN_DECLARE_FAMILY

#endif
