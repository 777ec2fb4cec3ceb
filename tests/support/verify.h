/* One verified run: a descriptor on a device with fresh seeded inputs, outputs poisoned inside
 * guard regions, compared with the CPU reference. Shared by `clattn check` and the tests. */
#ifndef CLATTN_VERIFY_H
#define CLATTN_VERIFY_H

#include "clattn.h"
#include "metrics.h"

#include <stdbool.h>
#include <stddef.h>

/* Elements of guard before and after every output; their bytes must come back unchanged. */
#define VERIFY_GUARD 64

typedef struct verify_opts {
    uint64_t seed;
    bool no_lse;            /* run without the optional lse output */
    bool sub_buffers;       /* q, k, v as sub-buffers at an aligned offset of a larger buffer */
    cl_command_queue queue; /* NULL: a new in-order queue */
    float amplitude;        /* inputs uniform in [-amplitude, amplitude); 0 means 1 */
    cl_mem scratch;         /* passed as the caller's scratch buffer when set */
    float v_amplitude;      /* v alone (e.g. near the storage type's limit); 0: amplitude */
    bool inject_error;      /* test-only: perturb one output element before the comparison */
    const clattn_tuning *tuning; /* fused: these parameters instead of the looked-up ones */
    int inject_cache_error; /* test-only, paged append: 1 perturbs a cache element the append wrote, 2 one
                               it left alone, before the caches are compared */
    bool paged_holes;       /* paged: one used block table entry of each sequence outside the cache */
    bool fence_inputs;      /* every input in host memory fenced by inaccessible pages where the device
                               is a CPU (fence.h): a kernel's stray read faults */
} verify_opts;

typedef struct verify_result {
    clattn_error o, lse;
    bool backward;          /* the descriptor's pass was backward: dq, dk, dv, dsinks compared */
    clattn_error dq, dk, dv, dsinks;
    bool guards_ok;         /* guards intact, an unrequested lse untouched, and cache elements
                               the append does not write byte-for-byte unchanged */
    bool appended;          /* a paged append: the updated caches compared */
    clattn_error k_cache, v_cache; /* the elements the append wrote */
    double tolerance;       /* the dtype's bound (DESIGN.md) */
    char variant[256];
    char error[1024];       /* set when the run itself failed (a status, an OpenCL error) */
} verify_result;

/* A paged cache (page_size > 0): random caches, a random non-contiguous block table (each
 * sequence's pages drawn from a shuffled list of every page, the rest of the cache in no table),
 * random cached lengths, k_new/v_new and rotary tables of real angles; the updated caches are
 * compared too.
 * Feature tensors the descriptor asks for (mask with its strides, ALiBi slopes, sinks, key
 * lengths including 0 and 1, packed sequence lengths including empty and length-1 sequences)
 * are random too; masks hold -inf in about a fifth of their entries. f16/bf16 inputs are
 * rounded once and fed to both sides. With desc->pass backward, d_o is random too, the device is
 * fed the reference forward's o and lse, and its gradients are compared with the reference
 * backward's (the gradient bounds). Returns 0 when the run completed (then compare `out`
 * against out->tolerance), 1 with out->error set otherwise. */
int verify_run(clattn_context *ctx, const clattn_desc *desc, const verify_opts *opts, verify_result *out);

/* True when the run completed within its dtype's bound with guards intact. */
bool verify_ok(const verify_result *r);

#endif
