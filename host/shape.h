/* Descriptors resolved into shapes: every field checked (with a message that names it),
 * defaults applied, strides and tensor sizes computed, before anything else runs. */
#ifndef CLATTN_SHAPE_H
#define CLATTN_SHAPE_H

#include "internal.h"

CLATTN_HIDDEN clattn_status clattn__resolve(const clattn_desc *desc, clattn_shape *shape,
                                            char *msg, size_t msg_size);
/* The same for a call whose pass is its own (the host calls, the references): the caller's
 * desc->pass is not read, `pass` stands for it. */
CLATTN_HIDDEN clattn_status clattn__resolve_pass(const clattn_desc *desc, clattn_pass pass, clattn_shape *shape,
                                                 char *msg, size_t msg_size);
CLATTN_HIDDEN clattn_status clattn__sizes(const clattn_shape *s, clattn_tensor_sizes *out);
/* Host arrays present, large enough and not overlapping, for one of three uses. */
typedef enum clattn_host_use {
    CLATTN_HOST_FORWARD,            /* q, k, v in; o (and lse) out */
    CLATTN_HOST_BACKWARD_REFERENCE, /* q, k, v, d_o in; dq, dk, dv (dsinks) out */
    CLATTN_HOST_BACKWARD            /* the same, with o and lse in */
} clattn_host_use;
CLATTN_HIDDEN clattn_status clattn__check_host(const clattn_shape *s, const clattn_host_tensors *t,
                                               clattn_host_use use, char *msg, size_t msg_size);

/* Output rows over all sequences and query heads: batch x seq_q x heads_q, or total_q x
 * heads_q when packed. It fits size_t whenever the shape resolved (lse has this many floats). */
CLATTN_HIDDEN size_t clattn__rows_total(const clattn_shape *s);

/* a * b * c * d into *out; false when the product overflows size_t. Every size the paths
 * compute goes through it (or is bounded by a size that did). */
static inline bool clattn__product(size_t *out, size_t a, size_t b, size_t c, size_t d)
{
    return !__builtin_mul_overflow(a, b, out) && !__builtin_mul_overflow(*out, c, out) &&
           !__builtin_mul_overflow(*out, d, out);
}

#endif
