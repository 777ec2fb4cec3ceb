/* The combine kernel (kernels/combine.cl): partial (o, lse) results over disjoint key ranges
 * merged exactly, and its fold of one partial into a running result. Both its users, the fused path's split-KV decode and clattn_merge, create it
 * and set its arguments through here, so it has one argument setter and one program key. */
#ifndef CLATTN_COMBINE_H
#define CLATTN_COMBINE_H

#include "kernel.h"

/* One combine: n_parts partials of rows_total rows of dv floats, into o (strided per batch,
 * head, position, or dense rows when batch = heads = 1) and lse. */
typedef struct clattn_combine_call {
    cl_mem o_parts, lse_parts;  /* f32 (n_parts, rows_total, dv) and (n_parts, rows_total) */
    size_t o_parts_off, lse_parts_off;
    int n_parts;
    size_t rows_total;
    cl_mem o;                   /* storage type of the switches' DTYPE */
    size_t o_off;
    clattn_strides o_strides;
    cl_mem lse;                 /* NULL: lse not written */
    size_t lse_off;
    int heads_q, seq_q, total_q, batch; /* seq_q: the longest sequence with VARLEN */
    cl_mem sinks, cu_seqlens_q; /* with the SINKS and VARLEN switches */
} clattn_combine_call;

/* The kernel of rows of dv floats with these switches (only DTYPE, SINKS, VARLEN matter). */
CLATTN_HIDDEN void clattn__combine_spec(clattn_kernel_spec *spec, int dv, const clattn_switches *sw);
CLATTN_HIDDEN void clattn__combine_args(clattn_args *a, const clattn_combine_call *c);

/* The fold of one partial into a running result (clattn_merge_fold): the same program. */
typedef struct clattn_fold_call {
    cl_mem o, lse;              /* the partial: o in the storage type with o_strides, lse dense */
    size_t o_off, lse_off;
    clattn_strides o_strides;
    int heads_q, seq_q, batch;
    cl_mem acc_o, acc_lse;      /* f32 (batch, heads_q, acc_seq, dv) and (batch, heads_q, acc_seq) */
    int acc_seq, acc_start;
} clattn_fold_call;
CLATTN_HIDDEN void clattn__fold_spec(clattn_kernel_spec *spec, int dv, const clattn_switches *sw);
CLATTN_HIDDEN void clattn__fold_args(clattn_args *a, const clattn_fold_call *c);

#endif
