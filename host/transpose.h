/* K transposed to f32 in blocks of 16 keys x dims (kernels/convert.cl's clattn_transpose_k):
 * the rows family's forward reads K so. One spec and one argument setter serve
 * every caller. */
#ifndef CLATTN_TRANSPOSE_H
#define CLATTN_TRANSPOSE_H

#include "kernel.h"

/* One transpose: a tensor of the shape's K or V layout into dst at dst_off (elements), each
 * (batch, KV head) -- or each KV head over all packed tokens -- as `ld` keys (a multiple of 16:
 * the keys, then zeros) in blocks of 16, each `dim` rows of 16 keys. */
typedef struct clattn_transpose_call {
    cl_mem src;
    size_t src_off;
    clattn_strides strides;
    int heads_kv, keys; /* keys: seq_kv, or total_k when packed */
    cl_mem dst;
    size_t dst_off;
    long ld;
} clattn_transpose_call;

CLATTN_HIDDEN void clattn__transpose_spec(clattn_kernel_spec *spec, const clattn_switches *sw);
CLATTN_HIDDEN void clattn__transpose_args(clattn_args *a, const clattn_transpose_call *c);
/* Its NDRange: (ld, dim, batch x heads_kv), or (ld, dim, heads_kv) when packed. */
CLATTN_HIDDEN cl_int clattn__transpose_enqueue(clattn_context *ctx, cl_command_queue q, cl_kernel k,
                                               const clattn_transpose_call *c, int dim, int batch,
                                               cl_uint num_wait, const cl_event *wait, cl_event *event);

#endif
