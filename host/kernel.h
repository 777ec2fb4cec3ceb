/* Kernels: the compile options of each kernel file (only the -D switches it reads), kernel
 * creation with the checks that catch a mismatch at plan time, and argument setting. */
#ifndef CLATTN_KERNEL_H
#define CLATTN_KERNEL_H

#include "internal.h"

/* The formula's optional terms and the storage type, as compile-time switches. */
typedef struct clattn_switches {
    int dtype; /* DTYPE: 0 f32, 1 f16, 2 bf16 */
    bool softcap, alibi, mask, sinks, seqused, varlen, paged;
} clattn_switches;
CLATTN_HIDDEN clattn_switches clattn__switches(const clattn_shape *s);

/* Bits naming the switches, for the table of which file reads which (kernel.c). */
enum {
    CLATTN_SW_DTYPE = 1 << 0,
    CLATTN_SW_SOFTCAP = 1 << 1,
    CLATTN_SW_ALIBI = 1 << 2,
    CLATTN_SW_MASK = 1 << 3,
    CLATTN_SW_SINKS = 1 << 4,
    CLATTN_SW_SEQUSED = 1 << 5,
    CLATTN_SW_VARLEN = 1 << 6,
    CLATTN_SW_PAGED = 1 << 7,
};
/* The switches kernels/<file>.cl reads (0 for an unknown file), and each switch's name. */
CLATTN_HIDDEN unsigned clattn__file_switches(const char *file);
CLATTN_HIDDEN const char *clattn__switch_name(unsigned bit);

/* One kernel to create: which file and function, its options, a readable name, its
 * work-group size and how many arguments its setter sets. */
typedef struct clattn_kernel_spec {
    const char *file;     /* kernels/<file>.cl */
    const char *function; /* the __kernel's name */
    char options[512];    /* CLATTN_CL_STD, the file's parameters, then its switches */
    char name[160];       /* for messages and plan variants */
    size_t local_size;    /* work-group size along dim 0; 0: the runtime chooses */
    cl_uint num_args;     /* what the kernel's argument setter sets (CL_KERNEL_NUM_ARGS must agree) */
} clattn_kernel_spec;

/* Fills spec->options: the language version, `params` (the file's own -D parameters, may be
 * ""), then the switches of `sw` that the file reads, in one fixed order; so two callers that
 * need the same program name it with the same key and it is built once. */
CLATTN_HIDDEN void clattn__kernel_options(clattn_kernel_spec *spec, const char *params, const clattn_switches *sw);

/* Builds (or finds) the program and creates the kernel. Refuses, with a message, a kernel
 * whose argument count differs from spec->num_args (CLATTN_INTERNAL_ERROR: a setter out of
 * step with its kernel), or whose work-group size or local memory does not fit the device. */
CLATTN_HIDDEN clattn_status clattn__make_kernel(clattn_context *ctx, const clattn_kernel_spec *spec, cl_kernel *out);

/* Kernel arguments, set in order. A setter is one function per kernel that calls CLATTN_ARG
 * for each argument; run with kernel NULL it only counts, which gives spec->num_args. The
 * first error is kept and later arguments are skipped, so a setter checks once at the end. */
typedef struct clattn_args {
    cl_kernel kernel; /* NULL: count only */
    cl_uint n;        /* arguments set (or counted) so far */
    cl_int err;       /* the first clSetKernelArg error */
} clattn_args;
CLATTN_HIDDEN void clattn__arg(clattn_args *a, size_t size, const void *value);
#define CLATTN_ARG(a, T, x)                   \
    do {                                      \
        const T arg_ = (x);                   \
        clattn__arg((a), sizeof arg_, &arg_); \
    } while (0)

#endif
