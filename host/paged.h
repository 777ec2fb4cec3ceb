/* The paged KV cache's pre-kernels (kernels/paged.cl): the append into the caches, q rotated
 * into scratch, and the unfused path's dense f32 gather. Both forward paths use them. */
#ifndef CLATTN_PAGED_H
#define CLATTN_PAGED_H

#include "kernel.h"

typedef enum clattn_paged_kernel {
    CLATTN_PAGED_APPEND,   /* k_new (rotated) and v_new into the caches */
    CLATTN_PAGED_ROTATE_Q, /* q rotated into scratch, with q's strides */
    CLATTN_PAGED_GATHER,   /* the caches into dense f32 (batch, heads_kv, seq_kv, dim) */
    CLATTN_PAGED_KERNELS
} clattn_paged_kernel;

/* What one launch needs beyond the shape and the caller's buffers: scratch, and where in it
 * (elements) the rotated q (of the storage type) or the gathered f32 K and V go. */
typedef struct clattn_paged_call {
    const clattn_shape *shape;
    const clattn_buffers *buffers;
    cl_mem scratch;
    size_t q_out, k_out, v_out;
} clattn_paged_call;

CLATTN_HIDDEN void clattn__paged_spec(clattn_kernel_spec *spec, clattn_paged_kernel which, const clattn_shape *s);
CLATTN_HIDDEN void clattn__paged_args(clattn_args *a, clattn_paged_kernel which, const clattn_paged_call *c);
/* Whether the kernels' grids, (rows, heads, batch), fit a GPU's 65535 work-groups in dimensions 2
 * and 3 (heads: the query heads for q's rotation); says why not. Checked when a plan is made, so
 * that no call fails after its append has written the caches. */
CLATTN_HIDDEN bool clattn__paged_grid_fits(const clattn_shape *s, char *why, size_t why_size);
/* Sets the arguments and enqueues one of them over its NDRange. */
CLATTN_HIDDEN cl_int clattn__paged_enqueue(clattn_context *ctx, cl_command_queue q, cl_kernel k,
                                           clattn_paged_kernel which, const clattn_paged_call *c, cl_uint num_wait,
                                           const cl_event *wait, cl_event *event);

/* The kernels a forward path needs before its attention: append when seq_new > 0, rotate q
 * when rotary_dim > 0. */
static inline bool clattn__paged_needs(const clattn_shape *s, clattn_paged_kernel which)
{
    return which == CLATTN_PAGED_APPEND ? s->seq_new > 0 : which == CLATTN_PAGED_ROTATE_Q ? s->rotary_dim > 0 : s->paged;
}

#endif
