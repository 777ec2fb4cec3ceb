/* The backward's D and sink-gradient kernels: specs, argument setters, launches. */
#include "bwd_prep.h"
#include "diag.h"
#include "fault.h"
#include "shape.h"

static void dot_args(clattn_args *a, const clattn_shape *s, const clattn_buffers *bf, cl_mem dvec, size_t dvec_off)
{
    CLATTN_ARG(a, cl_mem, bf->o);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)bf->o_offset);
    CLATTN_ARG(a, cl_mem, bf->d_o);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)bf->do_offset);
    CLATTN_ARG(a, cl_long, s->o.batch);
    CLATTN_ARG(a, cl_long, s->o.head);
    CLATTN_ARG(a, cl_long, s->o.seq);
    CLATTN_ARG(a, cl_int, s->seq_q);
    CLATTN_ARG(a, cl_int, s->heads_q);
    CLATTN_ARG(a, cl_int, s->total_q);
    CLATTN_ARG(a, cl_long, (cl_long)clattn__rows_total(s));
    CLATTN_ARG(a, cl_mem, dvec);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)dvec_off);
}

static void dsinks_args(clattn_args *a, const clattn_shape *s, const clattn_buffers *bf, cl_mem dvec, size_t dvec_off)
{
    CLATTN_ARG(a, cl_mem, bf->lse);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)bf->lse_offset);
    CLATTN_ARG(a, cl_mem, dvec);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)dvec_off);
    CLATTN_ARG(a, cl_mem, bf->sinks);
    CLATTN_ARG(a, cl_mem, bf->dsinks);
    CLATTN_ARG(a, cl_int, s->batch);
    CLATTN_ARG(a, cl_int, s->seq_q);
    CLATTN_ARG(a, cl_int, s->heads_q);
    CLATTN_ARG(a, cl_int, s->total_q);
    CLATTN_ARG(a, cl_mem, s->varlen ? bf->cu_seqlens_q : dvec);
}

static void spec_of(clattn_kernel_spec *spec, const clattn_shape *s, const char *function)
{
    const clattn_switches sw = clattn__switches(s);
    char params[32];
    spec->file = "bwd_prep";
    spec->function = function;
    spec->local_size = 0;
    clattn__format(params, sizeof params, "-D DV=%d", s->head_dim_v);
    clattn__kernel_options(spec, params, &sw);
    clattn__format(spec->name, sizeof spec->name, "%s DV=%d", function, s->head_dim_v);
}

void clattn__bwd_dot_spec(clattn_kernel_spec *spec, const clattn_shape *s)
{
    spec_of(spec, s, "clattn_bwd_dot");
    clattn_args count = {0};
    const clattn_buffers none = {0};
    dot_args(&count, s, &none, NULL, 0);
    spec->num_args = count.n;
}

void clattn__bwd_dsinks_spec(clattn_kernel_spec *spec, const clattn_shape *s)
{
    spec_of(spec, s, "clattn_bwd_dsinks");
    clattn_args count = {0};
    const clattn_buffers none = {0};
    dsinks_args(&count, s, &none, NULL, 0);
    spec->num_args = count.n;
}

cl_int clattn__bwd_dot_enqueue(clattn_context *ctx, cl_command_queue q, cl_kernel k, const clattn_shape *s,
                               const clattn_buffers *bf, cl_mem dvec, size_t dvec_off, cl_uint num_wait,
                               const cl_event *wait, cl_event *event)
{
    clattn_args a = {k, 0, CL_SUCCESS};
    dot_args(&a, s, bf, dvec, dvec_off);
    const size_t global = clattn__rows_total(s);
    return a.err ? a.err : clattn__enqueue(ctx, q, k, 1, &global, NULL, num_wait, wait, event);
}

cl_int clattn__bwd_dsinks_enqueue(clattn_context *ctx, cl_command_queue q, cl_kernel k, const clattn_shape *s,
                                  const clattn_buffers *bf, cl_mem dvec, size_t dvec_off, cl_uint num_wait,
                                  const cl_event *wait, cl_event *event)
{
    clattn_args a = {k, 0, CL_SUCCESS};
    dsinks_args(&a, s, bf, dvec, dvec_off);
    const size_t global = (size_t)s->heads_q;
    return a.err ? a.err : clattn__enqueue(ctx, q, k, 1, &global, NULL, num_wait, wait, event);
}
