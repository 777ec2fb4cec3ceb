/* Error metrics against the reference, shared by the clattn program and the tests. */
#ifndef CLATTN_METRICS_H
#define CLATTN_METRICS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct clattn_error {
    double rel_l2;    /* ||out - ref|| / ||ref|| over finite reference values */
    double max_abs;   /* max |out - ref| over finite reference values */
    size_t mismatched_special; /* NaN/inf in one but not the same in the other */
} clattn_error;

/* Compares n floats. NaN in `out` where `ref` is finite (or vice versa) and infinities of
 * different sign count as mismatches: such a result never passes. */
clattn_error clattn_compare(const float *out, const float *ref, size_t n);

/* True when the error is within the bound (and nothing special mismatched). */
bool clattn_error_ok(const clattn_error *e, double rel_l2_bound);

/* The correctness bound of DESIGN.md for a dtype: f32 1e-5, f16 2e-3, bf16 1e-2. */
double clattn_tolerance(int dtype);

#endif
