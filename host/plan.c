/* Plans: a descriptor checked against a device and served by the first path of the table
 * that supports it (path.h); execution checks the buffers and hands them to the path. */
#include "path.h"
#include "abi.h"
#include "diag.h"
#include "fault.h"
#include "shape.h"
#include "tuning.h"

#include <stdlib.h>
#include <string.h>

#define PATH_ENTRY(n) &clattn__path_##n,
static const clattn_path *const paths[] = {CLATTN_PATHS(PATH_ENTRY)};
#undef PATH_ENTRY
#define NPATHS (sizeof paths / sizeof paths[0])

/* The path for the shape: the one the descriptor forces, or the first that supports it. The
 * reason says why, naming each path passed over. NULL with the context's error set when none
 * serves (or the forced one does not). */
static const clattn_path *choose_path(clattn_context *ctx, const clattn_shape *s, char *reason, size_t reason_size)
{
    char why[NPATHS][192], passed[NPATHS * 200] = "";
    for (size_t i = 0; i < NPATHS; i++) {
        const clattn_path *p = paths[i];
        if (p->pass != s->pass || (s->algo != CLATTN_ALGO_AUTO && s->algo != p->algo)) continue;
        const bool ok = p->supports(ctx, s, why[i], sizeof why[i]);
        if (s->algo != CLATTN_ALGO_AUTO) {
            if (!ok) {
                clattn__fail(ctx, CLATTN_UNSUPPORTED, "%s: %s", p->name, why[i]);
                return NULL;
            }
            clattn__format(reason, reason_size, "%s: forced by the descriptor", p->name);
            return p;
        }
        if (ok) {
            if (passed[0]) clattn__format(reason, reason_size, "auto: %s, because %s", p->name, passed);
            else clattn__format(reason, reason_size, "auto: %s, %s", p->name, why[i]);
            return p;
        }
        const size_t n = strlen(passed);
        clattn__format(passed + n, sizeof passed - n, "%s%s: %s", n ? "; " : "", p->name, why[i]);
    }
    if (s->algo != CLATTN_ALGO_AUTO)
        clattn__fail(ctx, CLATTN_INTERNAL_ERROR, "no path implements algo %d", (int)s->algo);
    else
        clattn__fail(ctx, CLATTN_UNSUPPORTED, "no path serves this descriptor: %s", passed);
    return NULL;
}

static void plan_free(clattn_plan *p)
{
    if (p->path) p->path->release(p);
    clattn__release_buffer(p->ctx, p->scratch);
    free(p);
}

clattn_status clattn_plan_create(clattn_context *ctx, const clattn_desc *desc, clattn_plan **out)
{
    return clattn_plan_create_tuned(ctx, desc, NULL, out);
}

clattn_status clattn_plan_create_tuned(clattn_context *ctx, const clattn_desc *desc, const clattn_tuning *tuning,
                                       clattn_plan **out)
{
    if (!out) return ctx ? clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "out is NULL") : CLATTN_INVALID_ARGUMENT;
    *out = NULL;
    if (!ctx) return CLATTN_INVALID_ARGUMENT;
    char msg[512];
    clattn_shape s;
    clattn_status st = clattn__resolve(desc, &s, msg, sizeof msg);
    if (st) return clattn__fail(ctx, st, "%s", msg);
    clattn_tuning given;
    if (tuning && (st = clattn__struct_in(&given, sizeof given, tuning, "clattn_tuning", msg, sizeof msg)))
        return clattn__fail(ctx, st, "%s", msg);
    if (tuning) { /* refused whichever path serves the plan (only the fused ones apply it) */
        const clattn_family *fam = clattn__tuning_pick_family(ctx, &s, msg, sizeof msg);
        if (fam && !fam->valid(&ctx->info, &given, msg, sizeof msg)) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "%s", msg);
    }
    char reason[sizeof ((clattn_plan *)0)->reason];
    const clattn_path *path = choose_path(ctx, &s, reason, sizeof reason);
    if (!path) return CLATTN_UNSUPPORTED;

    clattn_plan *p = clattn__calloc(ctx, 1, sizeof *p);
    if (!p) return clattn__fail(ctx, CLATTN_OUT_OF_HOST_MEMORY, "out of host memory for a plan");
    p->ctx = ctx;
    p->shape = s;
    p->path = path;
    p->tuning_source = "";
    memcpy(p->reason, reason, sizeof reason);
    if ((st = path->prepare(p, tuning ? &given : NULL))) goto fail;
    if (p->scratch_bytes > ctx->info.max_alloc) {
        st = clattn__fail(ctx, CLATTN_SIZE_OVERFLOW, "%s needs %zu bytes of scratch, above the device's max allocation %llu",
                          p->variant, p->scratch_bytes, (unsigned long long)ctx->info.max_alloc);
        goto fail;
    }
    if ((st = path->build(p))) goto fail;
    if (pthread_mutex_init(&p->lock, NULL)) {
        st = clattn__fail(ctx, CLATTN_INTERNAL_ERROR, "pthread_mutex_init failed");
        goto fail;
    }
    clattn__logf(ctx, "clattn: plan %s (%s)", p->variant, p->reason);
    *out = p;
    return CLATTN_SUCCESS;
fail:
    plan_free(p);
    return st;
}

void clattn_plan_destroy(clattn_plan *p)
{
    if (!p) return;
    pthread_mutex_destroy(&p->lock);
    plan_free(p);
}

clattn_algo clattn_plan_algo(const clattn_plan *p) { return p ? p->path->algo : CLATTN_ALGO_AUTO; }
const char *clattn_plan_variant(const clattn_plan *p) { return p ? p->variant : ""; }
size_t clattn_plan_scratch_size(const clattn_plan *p) { return p ? p->scratch_bytes : 0; }
const char *clattn_plan_reason(const clattn_plan *p) { return p ? p->reason : ""; }
clattn_kernel_family clattn_plan_kernel_family(const clattn_plan *p) { return p ? p->family : CLATTN_KERNELS_AUTO; }

const char *clattn_plan_tuning(const clattn_plan *p, clattn_tuning *out)
{
    const clattn_tuning none = CLATTN_TUNING_INIT;
    const bool has = p && p->tuning_source[0];
    if (out && clattn__struct_out(out, has ? &p->tuning : &none, sizeof none, "clattn_tuning", NULL, 0)) return "";
    return has ? p->tuning_source : "";
}

/* The caller's scratch, or the plan's own, allocated at the first execution that needs it
 * (called under the plan lock). */
static clattn_status plan_scratch(clattn_plan *plan, const clattn_buffers *b, cl_mem *out)
{
    *out = NULL;
    if (!plan->scratch_bytes) return CLATTN_SUCCESS;
    if (b->scratch) {
        *out = b->scratch;
        return CLATTN_SUCCESS;
    }
    if (!plan->scratch) {
        cl_int e;
        cl_mem m = clattn__create_buffer(plan->ctx, CL_MEM_READ_WRITE, plan->scratch_bytes, NULL, &e);
        if (e) return clattn__fail(plan->ctx, e, "allocating %zu bytes of scratch failed (%d)", plan->scratch_bytes, e);
        plan->scratch = m;
    }
    *out = plan->scratch;
    return CLATTN_SUCCESS;
}

/* A buffer must exist in the plan's context, hold its tensor past the offset, and be
 * writable if it is an output. */
static clattn_status check_mem(clattn_context *ctx, cl_mem m, const char *name, size_t offset,
                               size_t elems, size_t elem_size, bool output)
{
    if (!m) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "buffer %s is NULL", name);
    size_t size = 0;
    cl_context mctx = NULL;
    cl_mem_flags flags = 0;
    cl_int e = clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (!e) e = clGetMemObjectInfo(m, CL_MEM_CONTEXT, sizeof mctx, &mctx, NULL);
    if (!e) e = clGetMemObjectInfo(m, CL_MEM_FLAGS, sizeof flags, &flags, NULL);
    if (e) return clattn__fail(ctx, e, "buffer %s: clGetMemObjectInfo failed (%d)", name, e);
    if (mctx != ctx->cl_ctx)
        return clattn__fail(ctx, CL_INVALID_CONTEXT, "buffer %s belongs to another cl_context", name);
    if (output && (flags & CL_MEM_READ_ONLY))
        return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "output buffer %s is read-only", name);
    size_t need;
    if (__builtin_add_overflow(offset, elems, &need) || __builtin_mul_overflow(need, elem_size, &need))
        return clattn__fail(ctx, CLATTN_SIZE_OVERFLOW, "buffer %s: offset + size overflows", name);
    if (size < need)
        return clattn__fail(ctx, CLATTN_BUFFER_TOO_SMALL,
                            "buffer %s holds %zu bytes but offset %zu + tensor need %zu bytes", name,
                            size, offset, need);
    return CLATTN_SUCCESS;
}

cl_int clattn__span_of(cl_mem m, const char *name, size_t offset, size_t elems, size_t elem_size, bool output,
                       clattn_span *out)
{
    cl_mem parent = NULL;
    size_t origin = 0;
    cl_int e = clGetMemObjectInfo(m, CL_MEM_ASSOCIATED_MEMOBJECT, sizeof parent, &parent, NULL);
    if (!e && parent) e = clGetMemObjectInfo(m, CL_MEM_OFFSET, sizeof origin, &origin, NULL);
    out->name = name;
    out->output = output;
    out->root = parent ? parent : m;
    out->lo = origin + offset * elem_size; /* check_mem showed these fit the buffer */
    out->hi = out->lo + elems * elem_size;
    return e;
}

clattn_status clattn__check_overlap(clattn_context *ctx, const clattn_span *all, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) /* an output against every other tensor; two inputs may share */
            if (j != i && all[i].output && all[i].root == all[j].root && all[i].lo < all[j].hi && all[j].lo < all[i].hi)
                return clattn__fail(ctx, CLATTN_BUFFERS_OVERLAP, "output %s overlaps %s (bytes %zu..%zu and %zu..%zu "
                                    "of one buffer)", all[i].name, all[j].name, all[i].lo, all[i].hi, all[j].lo,
                                    all[j].hi);
    return CLATTN_SUCCESS;
}

/* One tensor of an execution: its buffer, where it starts, how large it is, and its role. */
typedef struct tensor {
    cl_mem m;
    const char *name;
    size_t off, elems, es;
    enum { UNUSED, OPTIONAL_OUT, OUT, IN } role;
} tensor;

/* Every buffer the shape asks for: present, in the context, large enough, and no output
 * overlapping another tensor. The pass decides which tensors are read and written. */
static clattn_status check_buffers(const clattn_plan *plan, const clattn_buffers *bf)
{
    clattn_context *ctx = plan->ctx;
    const clattn_shape *s = &plan->shape;
    clattn_tensor_sizes need;
    clattn_status st = clattn__sizes(s, &need);
    if (st) return clattn__fail(ctx, st, "tensor sizes overflow");
    const size_t es = clattn_dtype_size(s->dtype), nb = (size_t)s->batch, hq = (size_t)s->heads_q;
    const bool fwd = s->pass == CLATTN_PASS_FORWARD, bwd = !fwd;
    /* each output is compared with every other tensor for overlaps. The integers among the
     * inputs (key lengths, cumulative offsets) live on the device: the kernels clamp
     * them. */
    const tensor t[] = {
        {bf->o, "o", bf->o_offset, need.o, es, fwd ? OUT : IN},
        {bf->lse, "lse", bf->lse_offset, need.lse, 4, fwd ? OPTIONAL_OUT : IN},
        {bf->dq, "dq", bf->dq_offset, need.q, es, bwd ? OUT : UNUSED},
        {bf->dk, "dk", bf->dk_offset, need.k, es, bwd ? OUT : UNUSED},
        {bf->dv, "dv", bf->dv_offset, need.v, es, bwd ? OUT : UNUSED},
        {bf->dsinks, "dsinks", 0, hq, 4, bwd && s->has_sinks ? OUT : UNUSED},
        {bf->scratch, "scratch", 0, plan->scratch_bytes, 1, bf->scratch && plan->scratch_bytes ? OUT : UNUSED},
        /* paged caches are written by an append: outputs then, so before every input */
        {bf->k, "k", bf->k_offset, need.k, es, s->seq_new ? OUT : UNUSED},
        {bf->v, "v", bf->v_offset, need.v, es, s->seq_new ? OUT : UNUSED},
        {bf->q, "q", bf->q_offset, need.q, es, IN},
        {bf->k, "k", bf->k_offset, need.k, es, s->seq_new ? UNUSED : IN},
        {bf->v, "v", bf->v_offset, need.v, es, s->seq_new ? UNUSED : IN},
        {bf->d_o, "d_o", bf->do_offset, need.o, es, bwd ? IN : UNUSED},
        {bf->mask, "mask", 0, need.mask, 4, s->has_mask ? IN : UNUSED},
        {bf->alibi_slopes, "alibi_slopes", 0, hq, 4, s->has_alibi ? IN : UNUSED},
        {bf->sinks, "sinks", 0, hq, 4, s->has_sinks ? IN : UNUSED},
        {bf->seqused_k, "seqused_k", 0, nb, 4, s->has_seqused_k ? IN : UNUSED},
        {bf->cu_seqlens_q, "cu_seqlens_q", 0, nb + 1, 4, s->varlen ? IN : UNUSED},
        {bf->cu_seqlens_k, "cu_seqlens_k", 0, nb + 1, 4, s->varlen && !s->paged ? IN : UNUSED},
        {bf->block_table, "block_table", 0, need.block_table, 4, s->paged ? IN : UNUSED},
        {bf->k_new, "k_new", bf->k_new_offset, need.k_new, es, s->seq_new ? IN : UNUSED},
        {bf->v_new, "v_new", bf->v_new_offset, need.v_new, es, s->seq_new ? IN : UNUSED},
        {bf->rotary_cos, "rotary_cos", 0, need.rotary, 4, s->rotary_dim ? IN : UNUSED},
        {bf->rotary_sin, "rotary_sin", 0, need.rotary, 4, s->rotary_dim ? IN : UNUSED},
    };
    const size_t n_all = sizeof t / sizeof t[0];
    clattn_span spans[sizeof t / sizeof t[0]];
    size_t n = 0;
    for (size_t i = 0; i < n_all; i++) {
        if (t[i].role == UNUSED || (t[i].role == OPTIONAL_OUT && !t[i].m)) continue;
        if (!t[i].m)
            return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "buffer %s is NULL (the %s pass reads or writes it)",
                                t[i].name, fwd ? "forward" : "backward");
        if ((st = check_mem(ctx, t[i].m, t[i].name, t[i].off, t[i].elems, t[i].es, t[i].role != IN))) return st;
        const cl_int e = clattn__span_of(t[i].m, t[i].name, t[i].off, t[i].elems, t[i].es, t[i].role != IN, &spans[n++]);
        if (e) return clattn__fail(ctx, e, "buffer %s: clGetMemObjectInfo failed (%d)", t[i].name, e);
    }
    return clattn__check_overlap(ctx, spans, n);
}

clattn_status clattn_plan_execute(const clattn_plan *plan, cl_command_queue queue,
                                  const clattn_buffers *caller, cl_uint num_wait,
                                  const cl_event *wait, cl_event *event)
{
    if (event) *event = NULL;
    if (!plan) return CLATTN_INVALID_ARGUMENT;
    clattn_context *ctx = plan->ctx;
    if (!queue) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "queue is NULL");
    if (!caller) return clattn__fail(ctx, CLATTN_INVALID_ARGUMENT, "buffers is NULL");
    clattn_buffers copy;
    char msg[256];
    clattn_status st = clattn__struct_in(&copy, sizeof copy, caller, "clattn_buffers", msg, sizeof msg);
    if (st) return clattn__fail(ctx, st, "%s", msg);
    const clattn_buffers *bf = &copy;
    if ((num_wait > 0) != (wait != NULL))
        return clattn__fail(ctx, CL_INVALID_EVENT_WAIT_LIST, "num_wait and wait_list disagree");

    cl_context qctx = NULL;
    cl_device_id qdev = NULL;
    cl_int e = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL);
    if (!e) e = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof qdev, &qdev, NULL);
    if (e) return clattn__fail(ctx, e, "clGetCommandQueueInfo failed (%d)", e);
    if (qctx != ctx->cl_ctx || qdev != ctx->device)
        return clattn__fail(ctx, CL_INVALID_COMMAND_QUEUE, "queue belongs to another context or device");
    if ((st = check_buffers(plan, bf))) return st;

    /* The plan's own scratch and its kernels' arguments are shared by every caller: one
     * execution at a time sets and enqueues them. */
    clattn_plan *mut = (clattn_plan *)plan;
    pthread_mutex_lock(&mut->lock);
    clattn_launch l = {queue, bf, NULL, num_wait, wait, event};
    st = plan_scratch(mut, bf, &l.scratch);
    if (!st) st = plan->path->enqueue(plan, &l);
    pthread_mutex_unlock(&mut->lock);
    return st;
}
