#include "harness.h"
#include "files.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__) /* gcc */
#define HAVE_LSAN 1
#elif defined(__has_feature) /* clang */
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

void leak_check(void)
{
#ifdef HAVE_LSAN
    /* Criterion has already recorded the result and ignores a failure here, so the report is
     * what fails the test: ctest's FAIL_REGULAR_EXPRESSION matches it (tests/CMakeLists.txt). */
    __lsan_do_recoverable_leak_check();
#endif
}

clattn_context *test_context(void) { return test_context_family(CLATTN_KERNELS_AUTO); }

clattn_context *test_context_family(clattn_kernel_family family)
{
    cl_device_id dev;
    cl_uint n = 0;
    if (clattn_list_devices(&dev, 1, &n) != CLATTN_SUCCESS || n == 0)
        cr_skip_test("no OpenCL device on this machine");
    clattn_context *ctx = NULL;
    clattn_context_options opt = CLATTN_CONTEXT_OPTIONS_INIT;
    opt.kernel_family = family;
    clattn_status st = clattn_context_create(&opt, &ctx);
    cr_assert_eq(st, CLATTN_SUCCESS, "clattn_context_create: %s", clattn_status_string(st));
    return ctx;
}

uint64_t seed_for(const char *name)
{
    return files_hash(&name, 1);
}

run_result run_and_compare(clattn_context *ctx, const clattn_desc *desc, const run_opts *opts)
{
    run_opts o = *opts;
    o.fence_inputs = true; /* on a CPU a kernel's read outside an input faults (fence.h) */
    run_result r;
    cr_assert_eq(verify_run(ctx, desc, &o, &r), 0, "%s", r.error);
    return r;
}

void expect_ok(const run_result *r, const char *name, uint64_t seed)
{
    const double tol = r->tolerance > 0 ? r->tolerance : 1e-5;
    cr_expect(r->guards_ok, "%s (seed %llu): a guard region or an unrequested output was written",
              name, (unsigned long long)seed);
    if (r->backward) {
        const clattn_error *e[4] = {&r->dq, &r->dk, &r->dv, &r->dsinks};
        const char *what[4] = {"dq", "dk", "dv", "dsinks"};
        for (int i = 0; i < 4; i++)
            cr_expect(clattn_error_ok(e[i], tol), "%s (seed %llu, %s): %s rel L2 %.3e (bound %.0e) worst row %.3e "
                      "(row %zu) max abs %.3e, %zu NaN/inf mismatches", name, (unsigned long long)seed, r->variant,
                      what[i], e[i]->rel_l2, tol, e[i]->worst_row, e[i]->worst_row_index, e[i]->max_abs,
                      e[i]->mismatched_special);
        return;
    }
    cr_expect(clattn_error_ok(&r->o, tol), "%s (seed %llu, %s): o rel L2 %.3e (bound %.0e) worst row %.3e max abs %.3e, "
              "%zu NaN/inf mismatches", name, (unsigned long long)seed, r->variant, r->o.rel_l2, tol, r->o.worst_row,
              r->o.max_abs, r->o.mismatched_special);
    cr_expect(clattn_error_ok(&r->lse, tol), "%s (seed %llu, %s): lse rel L2 %.3e, %zu NaN/inf mismatches",
              name, (unsigned long long)seed, r->variant, r->lse.rel_l2, r->lse.mismatched_special);
    if (r->appended)
        cr_expect(clattn_error_ok(&r->k_cache, tol) && clattn_error_ok(&r->v_cache, tol),
                  "%s (seed %llu, %s): appended cache rel L2 k %.3e v %.3e, max abs %.3e / %.3e", name,
                  (unsigned long long)seed, r->variant, r->k_cache.rel_l2, r->v_cache.rel_l2, r->k_cache.max_abs,
                  r->v_cache.max_abs);
}
