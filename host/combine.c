/* The combine kernel's spec and its one argument setter. */
#include "combine.h"
#include "diag.h"


void clattn__combine_spec(clattn_kernel_spec *spec, int dv, const clattn_switches *sw)
{
    spec->file = "combine";
    spec->function = "clattn_combine";
    spec->local_size = 0;
    char params[32];
    clattn__format(params, sizeof params, "-D DV=%d", dv);
    clattn__kernel_options(spec, params, sw);
    clattn__format(spec->name, sizeof spec->name, "combine DV=%d", dv);
    clattn_args count = {0};
    const clattn_combine_call none = {0};
    clattn__combine_args(&count, &none);
    spec->num_args = count.n;
}

/* In kernels/combine.cl's order. Unused buffers get a valid one, never dereferenced. */
void clattn__combine_args(clattn_args *a, const clattn_combine_call *c)
{
    CLATTN_ARG(a, cl_mem, c->o_parts);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)c->o_parts_off);
    CLATTN_ARG(a, cl_mem, c->lse_parts);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)c->lse_parts_off);
    CLATTN_ARG(a, cl_int, c->n_parts);
    CLATTN_ARG(a, cl_long, (cl_long)c->rows_total);
    CLATTN_ARG(a, cl_mem, c->o);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)c->o_off);
    CLATTN_ARG(a, cl_long, c->o_strides.batch);
    CLATTN_ARG(a, cl_long, c->o_strides.head);
    CLATTN_ARG(a, cl_long, c->o_strides.seq);
    CLATTN_ARG(a, cl_mem, c->lse ? c->lse : c->o_parts);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)c->lse_off);
    CLATTN_ARG(a, cl_int, c->lse != NULL);
    CLATTN_ARG(a, cl_int, c->heads_q);
    CLATTN_ARG(a, cl_int, c->seq_q);
    CLATTN_ARG(a, cl_int, c->total_q);
    CLATTN_ARG(a, cl_mem, c->sinks ? c->sinks : c->o_parts);
    CLATTN_ARG(a, cl_mem, c->cu_seqlens_q ? c->cu_seqlens_q : c->o_parts);
    CLATTN_ARG(a, cl_int, c->batch);
}

void clattn__fold_spec(clattn_kernel_spec *spec, int dv, const clattn_switches *sw)
{
    clattn__combine_spec(spec, dv, sw); /* same file and options: one program */
    spec->function = "clattn_fold";
    clattn__format(spec->name, sizeof spec->name, "fold DV=%d", dv);
    clattn_args count = {0};
    const clattn_fold_call none = {0};
    clattn__fold_args(&count, &none);
    spec->num_args = count.n;
}

/* In kernels/combine.cl's order. */
void clattn__fold_args(clattn_args *a, const clattn_fold_call *c)
{
    CLATTN_ARG(a, cl_mem, c->o);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)c->o_off);
    CLATTN_ARG(a, cl_long, c->o_strides.batch);
    CLATTN_ARG(a, cl_long, c->o_strides.head);
    CLATTN_ARG(a, cl_long, c->o_strides.seq);
    CLATTN_ARG(a, cl_mem, c->lse);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)c->lse_off);
    CLATTN_ARG(a, cl_int, c->heads_q);
    CLATTN_ARG(a, cl_int, c->seq_q);
    CLATTN_ARG(a, cl_int, c->batch);
    CLATTN_ARG(a, cl_mem, c->acc_o);
    CLATTN_ARG(a, cl_mem, c->acc_lse);
    CLATTN_ARG(a, cl_int, c->acc_seq);
    CLATTN_ARG(a, cl_int, c->acc_start);
}
