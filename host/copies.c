/* The unfused paths' f32 working copies. */
#include "copies.h"
#include "diag.h"
#include "fault.h"

bool clattn__needs_copies(const clattn_shape *s)
{
    return s->dtype != CLATTN_DTYPE_F32 || s->varlen || s->paged || (s->seq_q > 1 && s->q.seq < s->head_dim) ||
           (s->seq_kv > 1 && (s->k.seq < s->head_dim || s->v.seq < s->head_dim_v));
}

static void widen_args(clattn_args *a, const clattn_copy *c)
{
    CLATTN_ARG(a, cl_mem, c->user);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)c->off);
    CLATTN_ARG(a, cl_long, c->st ? c->st->batch : 0);
    CLATTN_ARG(a, cl_long, c->st ? c->st->head : 0);
    CLATTN_ARG(a, cl_long, c->st ? c->st->seq : 0);
    CLATTN_ARG(a, cl_int, c->heads);
    CLATTN_ARG(a, cl_int, c->seq);
    CLATTN_ARG(a, cl_int, c->dim);
    CLATTN_ARG(a, cl_mem, c->cu ? c->cu : c->scratch);
    CLATTN_ARG(a, cl_int, c->total);
    CLATTN_ARG(a, cl_mem, c->scratch);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)c->work);
}

static void narrow_args(clattn_args *a, const clattn_copy *c)
{
    CLATTN_ARG(a, cl_mem, c->scratch);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)c->work);
    CLATTN_ARG(a, cl_mem, c->user);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)c->off);
    CLATTN_ARG(a, cl_long, c->st ? c->st->batch : 0);
    CLATTN_ARG(a, cl_long, c->st ? c->st->head : 0);
    CLATTN_ARG(a, cl_long, c->st ? c->st->seq : 0);
    CLATTN_ARG(a, cl_int, c->heads);
    CLATTN_ARG(a, cl_int, c->seq);
    CLATTN_ARG(a, cl_int, c->dim);
    CLATTN_ARG(a, cl_mem, c->cu ? c->cu : c->scratch);
    CLATTN_ARG(a, cl_int, c->total);
}

static void spec_of(clattn_kernel_spec *spec, const clattn_switches *sw, bool widen)
{
    spec->file = "convert";
    spec->function = widen ? "clattn_widen" : "clattn_narrow";
    spec->local_size = 0;
    clattn__kernel_options(spec, "", sw);
    clattn__format(spec->name, sizeof spec->name, "%s", widen ? "widen" : "narrow");
    clattn_args count = {0};
    const clattn_copy none = {0};
    if (widen) widen_args(&count, &none);
    else narrow_args(&count, &none);
    spec->num_args = count.n;
}

void clattn__widen_spec(clattn_kernel_spec *spec, const clattn_switches *sw) { spec_of(spec, sw, true); }
void clattn__narrow_spec(clattn_kernel_spec *spec, const clattn_switches *sw) { spec_of(spec, sw, false); }

cl_int clattn__copy_enqueue(clattn_context *ctx, cl_command_queue q, cl_kernel k, bool to_f32, const clattn_copy *c,
                            int batch)
{
    clattn_args a = {k, 0, CL_SUCCESS};
    if (to_f32) widen_args(&a, c);
    else narrow_args(&a, c);
    /* one dimension over every element: sequences and batch x heads can each pass the 65535
     * work-groups of a GPU grid's 2nd and 3rd dimensions (a 128K-token f16 KV cache) */
    const size_t global = (size_t)c->dim * (size_t)c->seq * (size_t)batch * (size_t)c->heads;
    return a.err ? a.err : clattn__enqueue(ctx, q, k, 1, &global, NULL, 0, NULL, NULL);
}

clattn_strides clattn__dense(int heads, int seq, int dim)
{
    const clattn_strides s = {(int64_t)heads * seq * dim, (int64_t)seq * dim, dim};
    return s;
}

clattn_shape clattn__dense_shape(const clattn_shape *s)
{
    clattn_shape w = *s;
    w.dtype = CLATTN_DTYPE_F32;
    w.q = clattn__dense(s->heads_q, s->seq_q, s->head_dim);
    w.k = clattn__dense(s->heads_kv, s->seq_kv, s->head_dim);
    w.v = clattn__dense(s->heads_kv, s->seq_kv, s->head_dim_v);
    w.o = clattn__dense(s->heads_q, s->seq_q, s->head_dim_v);
    return w;
}
