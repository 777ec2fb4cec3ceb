/* Test harness shared by the Criterion suites: a context per test (never at file scope:
 * Criterion forks per test), seeded inputs, poisoned outputs inside guard regions, and the
 * comparison with the CPU reference. */
#ifndef CLATTN_TEST_HARNESS_H
#define CLATTN_TEST_HARNESS_H

#include "clattn.h"
#include "metrics.h"
#include "rng.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdbool.h>
#include <stdio.h>

/* Opens the default context, or skips the test when the machine has no OpenCL device. */
clattn_context *test_context(void);
/* The same with a forced kernel family (both families are checked on every device). */
clattn_context *test_context_family(clattn_kernel_family family);

/* Elements of guard before and after every output; their bytes must come back unchanged. */
#define GUARD 64

typedef struct run_opts {
    uint64_t seed;
    bool no_lse;           /* run without the optional lse output */
    bool sub_buffers;      /* q, k, v as sub-buffers at an aligned offset of a larger buffer */
    cl_command_queue queue; /* NULL: a new in-order queue */
    float amplitude;       /* inputs uniform in [-amplitude, amplitude); 0 means 1 */
    cl_mem scratch;        /* passed as the caller's scratch buffer when set */
    float v_amplitude;     /* v alone (e.g. near the storage type's limit); 0: amplitude */
} run_opts;

typedef struct run_result {
    clattn_error o, lse;
    bool guards_ok;
    double tolerance;      /* the dtype's bound (DESIGN.md) */
    char variant[160];
} run_result;

/* Runs `desc` on the device with fresh random inputs from opts->seed and compares o and lse
 * with the reference; asserts on every OpenCL failure. Feature tensors the descriptor asks for
 * (mask with its strides, ALiBi slopes, sinks, key lengths including 0 and 1, packed
 * sequence lengths including empty and length-1 sequences) are random too; masks hold -inf
 * in about a fifth of their entries. f16/bf16 inputs are rounded once and fed to both sides;
 * the bound is the dtype's (f32 1e-5, f16 2e-3, bf16 1e-2). */
run_result run_and_compare(clattn_context *ctx, const clattn_desc *desc, const run_opts *opts);

/* Asserts the result is within its dtype's bound, naming the case and seed on failure. */
void expect_ok(const run_result *r, const char *name, uint64_t seed);

/* A seed for a test that differs per case but replays exactly: hash of the case name. */
uint64_t seed_for(const char *name);

#endif
