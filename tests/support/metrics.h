/* Error metrics against the reference, shared by the clattn program and the tests. */
#ifndef CLATTN_METRICS_H
#define CLATTN_METRICS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct clattn_error {
    double rel_l2;    /* ||out - ref|| / ||ref|| over finite reference values */
    double max_abs;   /* max |out - ref| over finite reference values */
    double max_ref;   /* max |ref| over finite reference values */
    double worst_row; /* max over rows of ||out_r - ref_r|| / max(||ref_r||, typical row norm) */
    size_t worst_row_index;
    double typical_row_norm;   /* root-mean-square row norm of ref: the floor of each row's norm */
    size_t mismatched_special; /* NaN/inf in one but not the same in the other */
} clattn_error;

/* Compares n floats in rows of row_len (the output's head dim; 1 for lse). NaN in `out` where
 * `ref` is finite (or vice versa) and infinities of different sign count as mismatches: such a
 * result never passes. A row's error is relative to its own norm, but never to less than the
 * typical (root-mean-square) row norm, so rows near zero are not held to a tighter bound. */
clattn_error clattn_compare(const float *out, const float *ref, size_t n, size_t row_len);

/* One row's error as clattn_compare measures it: ||out - ref|| over the elements finite in
 * both, relative to max(||ref||, typical) (typical: clattn_error.typical_row_norm). */
double clattn_row_error(const float *out, const float *ref, size_t len, double typical);

/* The whole within `rel_l2_bound`, and no single row or element far outside it: the worst
 * row within CLATTN_ROW_SLACK x the bound, the largest difference within CLATTN_ROW_SLACK x the
 * bound x the largest reference value. One wrong row fails even when the whole passes. */
#define CLATTN_ROW_SLACK 10.0
bool clattn_error_ok(const clattn_error *e, double rel_l2_bound);

/* The correctness bound for a dtype: f32 1e-5, f16 2e-3, bf16 1e-2; for gradients: f32 2e-5,
 * f16 5e-3, bf16 2e-2. */
double clattn_tolerance(int dtype);
double clattn_grad_tolerance(int dtype);

#endif
