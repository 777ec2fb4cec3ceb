/* The backward's first and last steps (kernels/bwd_prep.cl), shared by its paths: D_i = d_o_i .
 * o_i per row, and the sink gradients. One spec and one argument setter per kernel. */
#ifndef CLATTN_BWD_PREP_H
#define CLATTN_BWD_PREP_H

#include "kernel.h"

/* The program of both kernels for the shape (its DV, DTYPE, VARLEN). */
CLATTN_HIDDEN void clattn__bwd_dot_spec(clattn_kernel_spec *spec, const clattn_shape *s);
CLATTN_HIDDEN void clattn__bwd_dsinks_spec(clattn_kernel_spec *spec, const clattn_shape *s);

/* D into dvec at dvec_off (floats, lse's layout) from the caller's o and d_o. */
CLATTN_HIDDEN cl_int clattn__bwd_dot_enqueue(clattn_context *ctx, cl_command_queue q, cl_kernel k,
                                             const clattn_shape *s, const clattn_buffers *bf, cl_mem dvec,
                                             size_t dvec_off, cl_uint num_wait, const cl_event *wait,
                                             cl_event *event);
/* dsinks from lse and D. */
CLATTN_HIDDEN cl_int clattn__bwd_dsinks_enqueue(clattn_context *ctx, cl_command_queue q, cl_kernel k,
                                                const clattn_shape *s, const clattn_buffers *bf, cl_mem dvec,
                                                size_t dvec_off, cl_uint num_wait, const cl_event *wait,
                                                cl_event *event);

#endif
