/* Test harness shared by the Criterion suites: a context per test (never at file scope:
 * Criterion forks per test), seeded inputs, poisoned outputs inside guard regions, and the
 * comparison with the CPU reference. */
#ifndef CLATTN_TEST_HARNESS_H
#define CLATTN_TEST_HARNESS_H

#include "clattn.h"
#include "metrics.h"
#include "verify.h"
#include "rng.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdbool.h>
#include <stdio.h>

/* Criterion ends its workers with an early exit that skips LeakSanitizer's exit-time check, so
 * every suite's fini runs it after each test (a no-op without ASan) and prints any leak; the
 * sanitizer build's ctest fails a test whose output holds a sanitizer report. Each test file
 * declares its suites with `.fini = leak_check`. */
void leak_check(void);

/* Opens the default context, or skips the test when the machine has no OpenCL device. */
clattn_context *test_context(void);
/* The same with a forced kernel family (both families are checked on every device). */
clattn_context *test_context_family(clattn_kernel_family family);

/* The run itself lives in tests/support/verify.c, shared with `clattn check`; these wrap it for
 * Criterion: a failed run (a status, an OpenCL error) fails the test with its message. Every
 * input is fenced by inaccessible pages (fence.h): on a CPU device a stray read crashes the test. */
typedef verify_opts run_opts;
typedef verify_result run_result;
run_result run_and_compare(clattn_context *ctx, const clattn_desc *desc, const run_opts *opts);

/* Asserts the result is within its dtype's bound, naming the case and seed on failure. */
void expect_ok(const run_result *r, const char *name, uint64_t seed);

/* A seed for a test that differs per case but replays exactly: hash of the case name. */
uint64_t seed_for(const char *name);

#endif
