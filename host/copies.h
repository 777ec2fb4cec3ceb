/* The unfused paths' dense f32 working copies (kernels/convert.cl): a tensor of the storage
 * type, strided or packed, widened into a padded (B, H, S, D) f32 copy for CLBlast, and an f32
 * result narrowed back. One spec and one argument setter per kernel serve both passes. */
#ifndef CLATTN_COPIES_H
#define CLATTN_COPIES_H

#include "kernel.h"

/* Whether CLBlast cannot read the shape's tensors in place: f16/bf16 storage, packed
 * sequences (their offsets live on the device), a paged cache (gathered through its table),
 * or sequence strides shorter than a row. */
CLATTN_HIDDEN bool clattn__needs_copies(const clattn_shape *s);

/* One tensor of the caller and its dense copy. */
typedef struct clattn_copy {
    cl_mem user;
    size_t off;
    const clattn_strides *st;
    int heads, seq, dim;
    cl_mem cu;    /* varlen offsets, or NULL */
    int total;    /* varlen: the tensor's packed token count */
    cl_mem scratch;
    size_t work;  /* the copy's element offset in scratch */
} clattn_copy;

CLATTN_HIDDEN void clattn__widen_spec(clattn_kernel_spec *spec, const clattn_switches *sw);
CLATTN_HIDDEN void clattn__narrow_spec(clattn_kernel_spec *spec, const clattn_switches *sw);
/* Widens (to_f32) or narrows one tensor: one work-item per element of the padded copy. */
CLATTN_HIDDEN cl_int clattn__copy_enqueue(clattn_context *ctx, cl_command_queue q, cl_kernel k, bool to_f32,
                                          const clattn_copy *c, int batch);
/* The dense strides of a padded (B, H, S, D) copy. */
CLATTN_HIDDEN clattn_strides clattn__dense(int heads, int seq, int dim);
/* The shape as the GEMMs see the copies: f32, q, k, v and o (and their gradients) dense. */
CLATTN_HIDDEN clattn_shape clattn__dense_shape(const clattn_shape *s);

#endif
