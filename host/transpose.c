/* K or V transposed to f32: spec, argument setter, launch. */
#include "transpose.h"
#include "diag.h"
#include "fault.h"

void clattn__transpose_spec(clattn_kernel_spec *spec, const clattn_switches *sw)
{
    spec->file = "convert";
    spec->function = "clattn_transpose_k";
    spec->local_size = 0;
    clattn__kernel_options(spec, "", sw);
    clattn__format(spec->name, sizeof spec->name, "transpose to f32");
    clattn_args count = {0};
    const clattn_transpose_call none = {0};
    clattn__transpose_args(&count, &none);
    spec->num_args = count.n;
}

void clattn__transpose_args(clattn_args *a, const clattn_transpose_call *c)
{
    CLATTN_ARG(a, cl_mem, c->src);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)c->src_off);
    CLATTN_ARG(a, cl_long, c->strides.batch);
    CLATTN_ARG(a, cl_long, c->strides.head);
    CLATTN_ARG(a, cl_long, c->strides.seq);
    CLATTN_ARG(a, cl_int, c->heads_kv);
    CLATTN_ARG(a, cl_int, c->keys);
    CLATTN_ARG(a, cl_mem, c->dst);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)c->dst_off);
    CLATTN_ARG(a, cl_long, (cl_long)c->ld);
}

cl_int clattn__transpose_enqueue(clattn_context *ctx, cl_command_queue q, cl_kernel k, const clattn_transpose_call *c,
                                 int dim, int batch, cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    clattn_args a = {k, 0, CL_SUCCESS};
    clattn__transpose_args(&a, c);
    if (a.err) return a.err;
    const size_t global[3] = {(size_t)c->ld, (size_t)dim, (size_t)batch * (size_t)c->heads_kv};
    return clattn__enqueue(ctx, q, k, 3, global, NULL, num_wait, wait, event);
}
