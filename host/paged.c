/* The paged KV cache's pre-kernels: specs, argument setters, launches (host/paged.h). */
#include "paged.h"
#include "diag.h"
#include "fault.h"

static const char *const functions[CLATTN_PAGED_KERNELS] = {"clattn_paged_append", "clattn_paged_rotate_q",
                                                            "clattn_paged_gather"};

void clattn__paged_spec(clattn_kernel_spec *spec, clattn_paged_kernel which, const clattn_shape *s)
{
    const clattn_switches sw = clattn__switches(s);
    spec->file = "paged";
    spec->function = functions[which];
    spec->local_size = 0;
    clattn__kernel_options(spec, "", &sw);
    clattn__format(spec->name, sizeof spec->name, "%s", functions[which] + 7);
    clattn_args count = {0};
    const clattn_buffers none = {0};
    const clattn_paged_call c = {s, &none, NULL, 0, 0, 0};
    clattn__paged_args(&count, which, &c);
    spec->num_args = count.n;
}

/* A cache's (or scratch's) first element, head and token strides. */
static void cache_args(clattn_args *a, cl_mem m, size_t off, const clattn_strides *st)
{
    CLATTN_ARG(a, cl_mem, m);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)off);
    CLATTN_ARG(a, cl_long, st->head);
    CLATTN_ARG(a, cl_long, st->seq);
}

/* A tensor of new tokens (or q): its buffer, first element, batch, head and token strides. */
static void strided_args(clattn_args *a, cl_mem m, size_t off, const clattn_strides *st)
{
    CLATTN_ARG(a, cl_mem, m);
    CLATTN_ARG(a, cl_ulong, (cl_ulong)off);
    CLATTN_ARG(a, cl_long, st->batch);
    CLATTN_ARG(a, cl_long, st->head);
    CLATTN_ARG(a, cl_long, st->seq);
}

/* The cached lengths and the block table, with what bounds them. */
static void table_args(clattn_args *a, const clattn_shape *s, const clattn_buffers *bf)
{
    CLATTN_ARG(a, cl_mem, bf->seqused_k);
    CLATTN_ARG(a, cl_mem, bf->block_table);
    CLATTN_ARG(a, cl_int, s->page_size);
    CLATTN_ARG(a, cl_int, s->pages_per_seq);
    CLATTN_ARG(a, cl_int, s->num_pages);
    CLATTN_ARG(a, cl_int, s->seq_kv);
    CLATTN_ARG(a, cl_int, s->seq_new);
}

static void rotary_args(clattn_args *a, const clattn_shape *s, const clattn_buffers *bf)
{
    CLATTN_ARG(a, cl_mem, s->rotary_dim ? bf->rotary_cos : bf->k);
    CLATTN_ARG(a, cl_mem, s->rotary_dim ? bf->rotary_sin : bf->k);
    CLATTN_ARG(a, cl_int, s->rotary_dim);
    CLATTN_ARG(a, cl_int, s->rotary_interleaved);
    CLATTN_ARG(a, cl_int, s->rotary_positions);
}

void clattn__paged_args(clattn_args *a, clattn_paged_kernel which, const clattn_paged_call *c)
{
    const clattn_shape *s = c->shape;
    const clattn_buffers *bf = c->buffers;
    switch (which) {
    case CLATTN_PAGED_APPEND:
        cache_args(a, bf->k, bf->k_offset, &s->k);
        cache_args(a, bf->v, bf->v_offset, &s->v);
        strided_args(a, bf->k_new, bf->k_new_offset, &s->kn);
        strided_args(a, bf->v_new, bf->v_new_offset, &s->vn);
        CLATTN_ARG(a, cl_int, s->head_dim);
        CLATTN_ARG(a, cl_int, s->head_dim_v);
        table_args(a, s, bf);
        rotary_args(a, s, bf);
        break;
    case CLATTN_PAGED_ROTATE_Q:
        strided_args(a, bf->q, bf->q_offset, &s->q);
        CLATTN_ARG(a, cl_mem, c->scratch);
        CLATTN_ARG(a, cl_ulong, (cl_ulong)c->q_out);
        CLATTN_ARG(a, cl_int, s->head_dim);
        CLATTN_ARG(a, cl_mem, bf->seqused_k);
        CLATTN_ARG(a, cl_int, s->seq_kv);
        CLATTN_ARG(a, cl_int, s->seq_new);
        rotary_args(a, s, bf);
        CLATTN_ARG(a, cl_int, s->rotary_per_row);
        break;
    default:
        cache_args(a, bf->k, bf->k_offset, &s->k);
        cache_args(a, bf->v, bf->v_offset, &s->v);
        CLATTN_ARG(a, cl_mem, c->scratch);
        CLATTN_ARG(a, cl_ulong, (cl_ulong)c->k_out);
        CLATTN_ARG(a, cl_ulong, (cl_ulong)c->v_out);
        CLATTN_ARG(a, cl_int, s->head_dim);
        CLATTN_ARG(a, cl_int, s->head_dim_v);
        CLATTN_ARG(a, cl_int, s->heads_kv);
        table_args(a, s, bf);
        break;
    }
}

bool clattn__paged_grid_fits(const clattn_shape *s, char *why, size_t why_size)
{
    if (!s->paged) return true;
    const int heads = s->rotary_dim && s->heads_q > s->heads_kv ? s->heads_q : s->heads_kv;
    if (heads > CLATTN_GRID_MAX || s->batch > CLATTN_GRID_MAX) {
        clattn__format(why, why_size, "%d %s heads or a batch of %d exceed the %d work-groups a GPU grid dimension "
                       "holds (the paged cache's kernels)", heads, heads == s->heads_kv ? "KV" : "query", s->batch,
                       CLATTN_GRID_MAX);
        return false;
    }
    return true;
}

cl_int clattn__paged_enqueue(clattn_context *ctx, cl_command_queue q, cl_kernel k, clattn_paged_kernel which,
                             const clattn_paged_call *c, cl_uint num_wait, const cl_event *wait, cl_event *event)
{
    const clattn_shape *s = c->shape;
    clattn_args a = {k, 0, CL_SUCCESS};
    clattn__paged_args(&a, which, c);
    if (a.err) return a.err;
    const size_t rows = which == CLATTN_PAGED_APPEND ? (size_t)s->seq_new
                        : which == CLATTN_PAGED_ROTATE_Q ? (size_t)s->seq_q : (size_t)s->seq_kv;
    const size_t heads = which == CLATTN_PAGED_ROTATE_Q ? (size_t)s->heads_q : (size_t)s->heads_kv;
    const size_t global[3] = {rows, heads, (size_t)s->batch};
    return clattn__enqueue(ctx, q, k, 3, global, NULL, num_wait, wait, event);
}
