/* Gradients of a few query rows and keys of a large backward, recomputed in double: how the
 * clattn program checks a backward too large for the whole reference. The o and lse the
 * backward was given are inputs here as well, so the check judges the backward alone. Dense
 * BHSD tensors, causal (bottom-right) or not, GQA; no other feature (the benchmark's cases). */
#ifndef CLATTN_SAMPLED_H
#define CLATTN_SAMPLED_H

#include "clattn.h"

#include <stdbool.h>

typedef struct sampled_case {
    int b, hq, hkv, nq, nk, d, causal;
    clattn_dtype dtype;
} sampled_case;

typedef struct sampled_error {
    double dq, dk, dv; /* relative L2 over the sampled rows (dq) and keys (dk, dv) */
    int rows, keys;    /* how many were sampled */
    bool nonfinite;    /* a gradient the device wrote is NaN or inf where the check's is finite */
} sampled_error;

/* `want` rows and `want` keys spread over the tensors, the last of each included. Returns 0,
 * or -1 when out of memory. */
int sampled_backward_check(const sampled_case *c, const void *q, const void *k, const void *v, const void *o,
                           const float *lse, const void *d_o, const void *dq, const void *dk, const void *dv,
                           int want, sampled_error *out);

#endif
