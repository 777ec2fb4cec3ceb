#include "verify.h"
#include "fence.h"
#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...)                                                   \
    do {                                                            \
        snprintf(res.error, sizeof res.error, __VA_ARGS__);         \
        goto done;                                                  \
    } while (0)

static float get(const void *p, clattn_dtype t, size_t i)
{
    if (t == CLATTN_DTYPE_F16) return clattn_f16_to_f32(((const uint16_t *)p)[i]);
    if (t == CLATTN_DTYPE_BF16) return clattn_bf16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

static void put(void *p, clattn_dtype t, size_t i, float x)
{
    if (t == CLATTN_DTYPE_F16) ((uint16_t *)p)[i] = clattn_f32_to_f16(x);
    else if (t == CLATTN_DTYPE_BF16) ((uint16_t *)p)[i] = clattn_f32_to_bf16(x);
    else ((float *)p)[i] = x;
}

/* Random storage-typed tensor: f32 uniform in [-amp, amp), rounded once to the dtype, so the
 * reference and the device read the same values. */
static void *random_tensor(size_t n, clattn_dtype t, uint64_t *rng, float amp)
{
    void *p = malloc(n * clattn_dtype_size(t) + 1);
    if (p)
        for (size_t i = 0; i < n; i++) put(p, t, i, amp * clattn_rng_uniform(rng));
    return p;
}

/* Guard pattern: a NaN in f32, f16 and bf16 alike, so an overwrite shows whatever the type. */
static void fill_guard(unsigned char *p, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++) p[i] = (i & 1) ? 0x7f : 0xa5;
}

static bool guard_intact(const unsigned char *p, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++)
        if (p[i] != ((i & 1) ? 0x7f : 0xa5)) return false;
    return true;
}

/* The inputs' fences (opts->fence_inputs on a CPU): one per input tensor, each touching the
 * inaccessible page after it in two of three (seed, tensor) pairs, the one before it otherwise
 * (a sub-buffer view: its parent, the view ending at the page after it); and for odd seeds the
 * plan's scratch, given as the caller's, poisoned and ending at one. */
enum { IN_Q, IN_K, IN_V, IN_TABLE, IN_KNEW, IN_VNEW, IN_COS, IN_SIN, IN_MASK, IN_ALIBI, IN_SINKS, IN_USED, IN_CUQ,
       IN_CUK, IN_DO, IN_O, IN_LSE, IN_SCRATCH, N_INPUTS };
typedef struct fences {
    bool on;
    uint64_t seed;
    fence f[N_INPUTS];
} fences;

/* Input tensor `which` from host data: fenced, or a copy in the device's own memory. */
static cl_mem host_input(cl_context cl, cl_mem_flags flags, const void *data, size_t bytes, fences *fz, int which,
                         cl_int *err)
{
    if (fz->on) return fence_buffer(cl, flags, data, bytes, (fz->seed + (uint64_t)which) % 3 != 0, &fz->f[which], err);
    return clCreateBuffer(cl, flags | CL_MEM_COPY_HOST_PTR, bytes, (void *)data, err);
}

/* A read-only input buffer, or a sub-buffer at an aligned offset of a larger buffer filled
 * with garbage (fenced: the sub-buffer ends where the parent ends, at the inaccessible page).
 * NULL with *err set on failure. */
static cl_mem make_input(cl_context cl, const void *data, size_t bytes, bool sub, size_t align, cl_mem *parent,
                         fences *fz, int which, cl_int *err)
{
    *parent = NULL;
    if (!sub) return host_input(cl, CL_MEM_READ_ONLY, data, bytes, fz, which, err);
    const size_t total = align + bytes + (fz->on ? 0 : align);
    unsigned char *big = malloc(total);
    if (!big) {
        *err = CL_OUT_OF_HOST_MEMORY;
        return NULL;
    }
    memset(big, 0x4e, total);
    memcpy(big + align, data, bytes);
    *parent = fz->on ? fence_buffer(cl, CL_MEM_READ_ONLY, big, total, true, &fz->f[which], err)
                     : clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, total, big, err);
    free(big);
    if (*err) return NULL;
    cl_buffer_region region = {align, bytes};
    return clCreateSubBuffer(*parent, CL_MEM_READ_ONLY, CL_BUFFER_CREATE_TYPE_REGION, &region, err);
}

/* Packed sequence lengths: the first sequence empty and the second of length 1 when there
 * are three or more, the last the longest, others random; cumulative offsets from 0. */
static int32_t *make_cu(int batch, int longest, uint64_t *rng, int *total)
{
    int32_t *cu = malloc(sizeof(int32_t) * (size_t)(batch + 1));
    if (!cu) return NULL;
    cu[0] = 0;
    for (int b = 0; b < batch; b++) {
        int len = batch >= 3 && b == 0 ? 0 : batch >= 3 && b == 1 ? 1 : 1 + (int)(clattn_rng_next(rng) % (uint64_t)longest);
        if (b == batch - 1 && batch >= 2) len = longest;
        cu[b + 1] = cu[b] + len;
    }
    *total = cu[batch];
    return cu;
}

/* An output in a guard region: elements the reference wrote are poisoned (NaN), those it left
 * at the sentinel keep it; the guards and the sentinel elements must come back unchanged. */
typedef struct guarded {
    unsigned char *host; /* guard, n elements, guard */
    cl_mem m;
    size_t n, es;
    int dtype;           /* as clattn_dtype, or -1 for f32 regardless of the storage type */
} guarded;

static clattn_dtype elem_type(const guarded *g, clattn_dtype dt) { return g->dtype < 0 ? CLATTN_DTYPE_F32 : dt; }

static cl_int guarded_make(cl_context cl, guarded *g, const void *ref, size_t n, clattn_dtype dt, bool f32,
                           float sentinel)
{
    g->n = n;
    g->dtype = f32 ? -1 : (int)dt;
    const clattn_dtype t = elem_type(g, dt);
    g->es = clattn_dtype_size(t);
    const size_t gb = VERIFY_GUARD * g->es, bytes = n * g->es + 2 * gb;
    if (!(g->host = malloc(bytes))) return CL_OUT_OF_HOST_MEMORY;
    fill_guard(g->host, bytes);
    for (size_t i = 0; i < n; i++) put(g->host + gb, t, i, get(ref, t, i) == sentinel ? sentinel : NAN);
    cl_int e;
    g->m = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes, g->host, &e);
    return e;
}

static cl_int guarded_read(cl_command_queue q, guarded *g)
{
    return clEnqueueReadBuffer(q, g->m, CL_TRUE, 0, g->n * g->es + 2 * VERIFY_GUARD * g->es, g->host, 0, NULL, NULL);
}

static bool guarded_intact(const guarded *g)
{
    const size_t gb = VERIFY_GUARD * g->es;
    return guard_intact(g->host, gb) && guard_intact(g->host + gb + g->n * g->es, gb);
}

/* The device's values against the reference's, both read as f32. */
static clattn_error guarded_compare(const guarded *g, const void *ref, clattn_dtype dt, size_t row)
{
    const clattn_dtype t = elem_type(g, dt);
    float *got = malloc(g->n * 4 + 4), *want = malloc(g->n * 4 + 4);
    clattn_error e = {0};
    e.mismatched_special = g->n + 1; /* out of memory: never passes */
    if (got && want) {
        for (size_t i = 0; i < g->n; i++) {
            got[i] = get(g->host + VERIFY_GUARD * g->es, t, i);
            want[i] = get(ref, t, i);
        }
        e = clattn_compare(got, want, g->n, row);
    }
    free(got);
    free(want);
    return e;
}

static void guarded_free(guarded *g)
{
    if (g->m) clReleaseMemObject(g->m);
    free(g->host);
    memset(g, 0, sizeof *g);
}

/* The backward on the device, fed the reference forward's o (in the storage type) and lse, and
 * compared with the reference backward. `bf` holds the inputs and feature buffers already. */
static int run_backward(clattn_context *ctx, clattn_plan *plan, cl_command_queue queue, clattn_buffers *bf,
                        const clattn_desc *desc, const clattn_tensor_sizes *n, const void *o_ref,
                        const float *lse_ref, const void *dout, void *const gref[3], const float *dsinks_ref,
                        guarded g[4], cl_mem *din, cl_mem *oin, cl_mem *lin, fences *fz, const verify_opts *opts,
                        verify_result *res)
{
    const clattn_dtype dt = desc->dtype;
    const size_t es = clattn_dtype_size(dt), gn[3] = {n->q, n->k, n->v};
    const float sentinel = -7.0f;
    cl_context cl = clattn_context_cl_context(ctx);
    cl_int e;
    *din = host_input(cl, CL_MEM_READ_ONLY, dout, n->o * es, fz, IN_DO, &e);
    if (!e) *oin = host_input(cl, CL_MEM_READ_ONLY, o_ref, n->o * es, fz, IN_O, &e);
    if (!e) *lin = host_input(cl, CL_MEM_READ_ONLY, lse_ref, n->lse * 4, fz, IN_LSE, &e);
    for (int i = 0; i < 3 && !e; i++) e = guarded_make(cl, &g[i], gref[i], gn[i], dt, false, sentinel);
    if (!e && desc->has_sinks) e = guarded_make(cl, &g[3], dsinks_ref, (size_t)desc->heads_q, dt, true, sentinel);
    if (e) {
        snprintf(res->error, sizeof res->error, "creating backward buffers: %d", e);
        return 1;
    }
    bf->o = *oin; bf->lse = *lin; bf->d_o = *din;
    bf->dq = g[0].m; bf->dk = g[1].m; bf->dv = g[2].m; bf->dsinks = g[3].m;
    bf->dq_offset = bf->dk_offset = bf->dv_offset = VERIFY_GUARD;
    /* dsinks has no offset: a sub-buffer past its guard (256 bytes: a multiple of every
     * device's base alignment seen so far, checked) */
    cl_mem dsub = NULL;
    bf->dsinks = NULL;
    if (g[3].m) {
        cl_uint align_bits = 1024;
        clGetDeviceInfo(clattn_context_device(ctx), CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
        cl_buffer_region r = {VERIFY_GUARD * 4, (size_t)desc->heads_q * 4};
        e = (VERIFY_GUARD * 4) % (align_bits / 8) ? CL_MISALIGNED_SUB_BUFFER_OFFSET : CL_SUCCESS;
        if (!e) dsub = clCreateSubBuffer(g[3].m, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r, &e);
        if (e) {
            snprintf(res->error, sizeof res->error, "creating the dsinks sub-buffer: %d", e);
            return 1;
        }
        bf->dsinks = dsub;
    }
    cl_event ev = NULL;
    clattn_status st = clattn_plan_execute(plan, queue, bf, 0, NULL, &ev);
    if (!st && !ev) st = CLATTN_INTERNAL_ERROR;
    if (!st) e = clWaitForEvents(1, &ev);
    if (ev) clReleaseEvent(ev);
    if (dsub) clReleaseMemObject(dsub);
    if (st || e) {
        snprintf(res->error, sizeof res->error, "backward execute: %s: %s (%d)", clattn_status_string(st),
                 clattn_context_last_error(ctx), e);
        return 1;
    }
    for (int i = 0; i < 4 && !e; i++)
        if (g[i].m) e = guarded_read(queue, &g[i]);
    if (e) {
        snprintf(res->error, sizeof res->error, "reading gradients: %d", e);
        return 1;
    }
    res->backward = true;
    res->guards_ok = guarded_intact(&g[0]) && guarded_intact(&g[1]) && guarded_intact(&g[2]) &&
                     (!g[3].m || guarded_intact(&g[3]));
    if (opts->inject_error) put(g[1].host + VERIFY_GUARD * es, dt, n->k / 2, get(g[1].host + VERIFY_GUARD * es, dt, n->k / 2) + 1.0f);
    const int d = desc->head_dim, dv = desc->head_dim_v ? desc->head_dim_v : desc->head_dim;
    res->dq = guarded_compare(&g[0], gref[0], dt, (size_t)d);
    res->dk = guarded_compare(&g[1], gref[1], dt, (size_t)d);
    res->dv = guarded_compare(&g[2], gref[2], dt, (size_t)dv);
    if (g[3].m) res->dsinks = guarded_compare(&g[3], dsinks_ref, dt, 1);
    res->tolerance = clattn_grad_tolerance(dt);
    return 0;
}

/* A paged call's own inputs (verify.h): block table, k_new, v_new, rotary tables. */
typedef struct paged_inputs {
    int32_t *table;
    void *k_new, *v_new;
    float *cos, *sin;
} paged_inputs;

static bool make_paged(const clattn_desc *d, const clattn_tensor_sizes *n, bool holes, const int32_t *lens,
                       uint64_t *rng, paged_inputs *p)
{
    memset(p, 0, sizeof *p);
    int32_t *order = malloc(sizeof(int32_t) * (size_t)d->num_pages);
    p->table = malloc(sizeof(int32_t) * n->block_table + 4);
    if (!order || !p->table) {
        free(order);
        return false;
    }
    for (int i = 0; i < d->num_pages; i++) order[i] = i;
    for (int i = d->num_pages - 1; i > 0; i--) { /* Fisher-Yates */
        const int j = (int)(clattn_rng_next(rng) % (uint64_t)(i + 1));
        const int32_t t = order[i]; order[i] = order[j]; order[j] = t;
    }
    /* distinct pages per entry while they last (an append must not write one page twice) */
    for (size_t i = 0; i < n->block_table; i++) p->table[i] = order[i % (size_t)d->num_pages];
    free(order);
    if (holes) /* a page id outside the cache inside each sequence's used range: its first page, or
                  (odd sequences) the one its last key, the appended token's, falls on */
        for (int b = 0; b < d->batch; b++) {
            const int used = lens[b] + d->seq_new;
            const int at = used && b % 2 ? (used - 1) / d->page_size : 0;
            p->table[(size_t)b * d->pages_per_seq + (size_t)at] = b % 2 ? -1 - b : d->num_pages + b;
        }
    const clattn_dtype dt = d->dtype;
    if (d->seq_new && (!(p->k_new = random_tensor(n->k_new, dt, rng, 1.0f)) ||
                       !(p->v_new = random_tensor(n->v_new, dt, rng, 1.0f))))
        return false;
    if (d->rotary_dim) {
        const int half = d->rotary_dim / 2;
        p->cos = malloc(sizeof(float) * n->rotary + 4);
        p->sin = malloc(sizeof(float) * n->rotary + 4);
        if (!p->cos || !p->sin) return false;
        for (int pos = 0; pos < d->rotary_positions; pos++)
            for (int i = 0; i < half; i++) { /* theta = pos * 10000^(-i/half), as RoPE */
                const double th = pos * pow(10000.0, -(double)i / half);
                p->cos[(size_t)pos * half + i] = (float)cos(th);
                p->sin[(size_t)pos * half + i] = (float)sin(th);
            }
    }
    return true;
}

static void free_paged(paged_inputs *p)
{
    free(p->table); free(p->k_new); free(p->v_new); free(p->cos); free(p->sin);
}

/* A cache after the append against the reference's: elements the reference left as they were
 * must be byte-for-byte unchanged; those it wrote are compared as values. */
static bool compare_cache(const unsigned char *got, const unsigned char *want, const unsigned char *before, size_t n,
                          clattn_dtype dt, clattn_error *err)
{
    const size_t es = clattn_dtype_size(dt);
    float *g = malloc(n * 4 + 4), *w = malloc(n * 4 + 4);
    size_t m = 0;
    bool untouched = g && w;
    for (size_t i = 0; i < n && untouched; i++) {
        if (!memcmp(want + i * es, before + i * es, es)) {
            untouched = !memcmp(got + i * es, before + i * es, es);
        } else {
            g[m] = get(got, dt, i);
            w[m++] = get(want, dt, i);
        }
    }
    if (untouched) *err = clattn_compare(g, w, m, 1);
    free(g);
    free(w);
    return untouched;
}

int verify_run(clattn_context *ctx, const clattn_desc *desc_in, const verify_opts *opts, verify_result *out)
{
    verify_result res;
    memset(&res, 0, sizeof res);
    int rc = 1;
    clattn_desc desc = *desc_in;
    uint64_t rng = opts->seed;
    int32_t *cu_q = NULL, *cu_k = NULL, *lens = NULL;
    void *q = NULL, *k = NULL, *v = NULL, *ref = NULL;
    float *mask = NULL, *alibi = NULL, *sinks = NULL, *lse_ref = NULL, *got = NULL, *want = NULL;
    unsigned char *o = NULL, *lse = NULL;
    clattn_plan *plan = NULL;
    cl_command_queue queue = NULL;
    cl_mem parents[3] = {NULL, NULL, NULL}, ins[3] = {NULL, NULL, NULL}, om = NULL, lm = NULL;
    cl_mem feat[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    cl_event ev = NULL;
    char msg[512];
    /* backward: d_o, the reference's gradients, and the device's in guard regions */
    void *dout = NULL, *gref[3] = {NULL, NULL, NULL};
    float *dsinks_ref = NULL;
    guarded g[4];
    memset(g, 0, sizeof g);
    cl_mem din = NULL, oin = NULL, lin = NULL;
    const bool bwd = desc_in->pass == CLATTN_PASS_BACKWARD;
    paged_inputs pg;
    memset(&pg, 0, sizeof pg);
    void *kc_ref = NULL, *vc_ref = NULL, *kc_got = NULL, *vc_got = NULL;
    cl_mem pmem[5] = {NULL, NULL, NULL, NULL, NULL};
    fences fz;
    memset(&fz, 0, sizeof fz);
    cl_mem fscratch = NULL;
    if (desc.varlen) {
        cu_q = make_cu(desc.batch, desc.seq_q, &rng, &desc.total_q);
        if (!cu_q) FAIL("out of host memory");
        if (!desc.page_size && !(cu_k = make_cu(desc.batch, desc.seq_kv, &rng, &desc.total_k)))
            FAIL("out of host memory");
    }
    clattn_status st = clattn_desc_validate(&desc, msg, sizeof msg);
    if (st) FAIL("descriptor invalid: %s", msg);
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&desc, &n);
    const clattn_dtype dt = desc.dtype;
    const size_t es = clattn_dtype_size(dt), gb = VERIFY_GUARD * es;
    const float amp = opts->amplitude > 0 ? opts->amplitude : 1.0f;
    q = random_tensor(n.q, dt, &rng, amp);
    k = random_tensor(n.k, dt, &rng, amp);
    v = random_tensor(n.v, dt, &rng, opts->v_amplitude > 0 ? opts->v_amplitude : amp);
    if (!q || !k || !v) FAIL("out of host memory");
    if (desc.has_mask) {
        if (!(mask = malloc(n.mask * 4 + 4))) FAIL("out of host memory");
        for (size_t i = 0; i < n.mask; i++)
            mask[i] = clattn_rng_uniform(&rng) < -0.6f ? -INFINITY : 2.0f * clattn_rng_uniform(&rng);
    }
    if (desc.has_alibi) {
        if (!(alibi = malloc(sizeof(float) * desc.heads_q))) FAIL("out of host memory");
        for (int h = 0; h < desc.heads_q; h++) alibi[h] = exp2f(-8.0f * (h + 1) / desc.heads_q);
    }
    if (desc.has_sinks) {
        if (!(sinks = malloc(sizeof(float) * desc.heads_q))) FAIL("out of host memory");
        for (int h = 0; h < desc.heads_q; h++) sinks[h] = 2.0f * clattn_rng_uniform(&rng);
    }
    if (desc.has_seqused_k) {
        const int most = desc.seq_kv - desc.seq_new; /* cached keys before a paged append */
        if (!(lens = malloc(sizeof(int32_t) * desc.batch))) FAIL("out of host memory");
        for (int b = 0; b < desc.batch; b++) /* 0, 1, the most, then random lengths */
            lens[b] = b == 0 ? 0 : b == 1 ? (most > 0) : b == 2 ? most
                                                              : (int32_t)(clattn_rng_next(&rng) % (uint64_t)(most + 1));
    }
    if (desc.page_size) {
        if (!make_paged(&desc, &n, opts->paged_holes, lens, &rng, &pg)) FAIL("out of host memory");
        if (desc.seq_new && (!(kc_ref = malloc(n.k * es + 1)) || !(vc_ref = malloc(n.v * es + 1)) ||
                             !(kc_got = malloc(n.k * es + 1)) || !(vc_got = malloc(n.v * es + 1))))
            FAIL("out of host memory");
    }

    /* The reference, into outputs prefilled with a sentinel: elements a strided view skips
     * keep it, and the device's output must keep them too. */
    const float sentinel = -7.0f;
    ref = malloc(n.o * es + 1);
    lse_ref = malloc(n.lse * 4 + 4);
    if (!ref || !lse_ref) FAIL("out of host memory");
    for (size_t i = 0; i < n.o; i++) put(ref, dt, i, sentinel);
    for (size_t i = 0; i < n.lse; i++) lse_ref[i] = sentinel;
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = q; t.k = k; t.v = v; t.o = ref; t.lse = lse_ref;
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o; t.lse_len = n.lse;
    t.mask = mask; t.mask_len = n.mask; t.alibi_slopes = alibi; t.sinks = sinks; t.seqused_k = lens;
    t.cu_seqlens_q = cu_q; t.cu_seqlens_k = cu_k;
    t.block_table = pg.table; t.k_new = pg.k_new; t.v_new = pg.v_new; t.rotary_cos = pg.cos; t.rotary_sin = pg.sin;
    t.k_new_len = n.k_new; t.v_new_len = n.v_new; t.k_cache_out = kc_ref; t.v_cache_out = vc_ref;
    if ((st = clattn_reference_forward(&desc, &t, msg, sizeof msg))) FAIL("reference: %s", msg);
    if (bwd) { /* the gradients of d_o . o, into arrays prefilled with the sentinel */
        const size_t gn[3] = {n.q, n.k, n.v};
        dout = random_tensor(n.o, dt, &rng, 1.0f);
        dsinks_ref = malloc(sizeof(float) * (size_t)desc.heads_q + 4);
        if (!dout || !dsinks_ref) FAIL("out of host memory");
        for (int i = 0; i < 3; i++) {
            if (!(gref[i] = malloc(gn[i] * es + 1))) FAIL("out of host memory");
            for (size_t j = 0; j < gn[i]; j++) put(gref[i], dt, j, sentinel);
        }
        t.d_o = dout; t.do_len = n.o;
        t.dq = gref[0]; t.dk = gref[1]; t.dv = gref[2]; t.dsinks = desc.has_sinks ? dsinks_ref : NULL;
        t.dq_len = n.q; t.dk_len = n.k; t.dv_len = n.v;
        if ((st = clattn_reference_backward(&desc, &t, msg, sizeof msg))) FAIL("reference backward: %s", msg);
    }

    if ((st = clattn_plan_create_tuned(ctx, &desc, opts ? opts->tuning : NULL, &plan)))
        FAIL("plan: %s: %s", clattn_status_string(st), clattn_context_last_error(ctx));
    snprintf(res.variant, sizeof res.variant, "%s", clattn_plan_variant(plan));

    cl_context cl = clattn_context_cl_context(ctx);
    cl_device_id dev = clattn_context_device(ctx);
    cl_int e = CL_SUCCESS;
    queue = opts->queue;
    if (!queue && !(queue = clCreateCommandQueue(cl, dev, 0, &e))) FAIL("clCreateCommandQueue: %d", e);
    cl_uint align_bits = 1024;
    clGetDeviceInfo(dev, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
    fz.on = opts->fence_inputs && fence_applies(dev);
    fz.seed = opts->seed;
    const void *host_in[3] = {q, k, v};
    const size_t in_bytes[3] = {n.q * es, n.k * es, n.v * es};
    for (int i = 0; i < 3; i++) {
        if (desc.seq_new && i > 0) { /* caches the append writes: read-write */
            if (!(ins[i] = host_input(cl, CL_MEM_READ_WRITE, host_in[i], in_bytes[i], &fz, IN_Q + i, &e)))
                FAIL("creating the caches: %d", e);
            continue;
        }
        if (!(ins[i] = make_input(cl, host_in[i], in_bytes[i], opts->sub_buffers, align_bits / 8, &parents[i], &fz,
                                  IN_Q + i, &e)))
            FAIL("creating input buffers: %d", e);
    }
    const void *phost[5] = {pg.table, pg.k_new, pg.v_new, pg.cos, pg.sin};
    const size_t pbytes[5] = {n.block_table * 4, n.k_new * es, n.v_new * es, n.rotary * 4, n.rotary * 4};
    for (int i = 0; i < 5; i++)
        if (phost[i] && !(pmem[i] = host_input(cl, CL_MEM_READ_ONLY, phost[i], pbytes[i], &fz, IN_TABLE + i, &e)))
            FAIL("creating paged inputs: %d", e);

    clattn_buffers bf = CLATTN_BUFFERS_INIT;
    bf.q = ins[0]; bf.k = ins[1]; bf.v = ins[2];
    bf.scratch = opts->scratch;
    const size_t scratch_bytes = clattn_plan_scratch_size(plan);
    if (fz.on && !bf.scratch && scratch_bytes && opts->seed % 2) {
        /* its f32 partials start it: against the page after it only where that keeps them aligned */
        const bool at_end = scratch_bytes % 4 == 0;
        if (!(fscratch = fence_buffer(cl, CL_MEM_READ_WRITE, NULL, scratch_bytes, at_end, &fz.f[IN_SCRATCH], &e)))
            FAIL("creating a fenced scratch: %d", e);
        bf.scratch = fscratch;
    }
    bf.block_table = pmem[0]; bf.k_new = pmem[1]; bf.v_new = pmem[2]; bf.rotary_cos = pmem[3]; bf.rotary_sin = pmem[4];
    const void *fhost[6] = {mask, alibi, sinks, lens, cu_q, cu_k};
    const size_t fbytes[6] = {n.mask * 4, (size_t)desc.heads_q * 4, (size_t)desc.heads_q * 4, (size_t)desc.batch * 4,
                              (size_t)(desc.batch + 1) * 4, (size_t)(desc.batch + 1) * 4};
    for (int i = 0; i < 6; i++)
        if (fhost[i] && !(feat[i] = host_input(cl, CL_MEM_READ_ONLY, fhost[i], fbytes[i], &fz, IN_MASK + i, &e)))
            FAIL("creating feature buffers: %d", e);
    bf.mask = feat[0]; bf.alibi_slopes = feat[1]; bf.sinks = feat[2]; bf.seqused_k = feat[3];
    bf.cu_seqlens_q = feat[4]; bf.cu_seqlens_k = feat[5];
    if (bwd) {
        rc = run_backward(ctx, plan, queue, &bf, &desc, &n, ref, lse_ref, dout, gref, dsinks_ref, g, &din, &oin,
                          &lin, &fz, opts, &res);
        goto done;
    }
    /* Outputs inside guard regions; covered elements poisoned with NaN, others the sentinel. */
    o = malloc(n.o * es + 2 * gb);
    lse = malloc((n.lse + 2 * VERIFY_GUARD) * 4);
    if (!o || !lse) FAIL("out of host memory");
    fill_guard(o, n.o * es + 2 * gb);
    fill_guard(lse, (n.lse + 2 * VERIFY_GUARD) * 4);
    for (size_t i = 0; i < n.o; i++) put(o + gb, dt, i, get(ref, dt, i) == sentinel ? sentinel : NAN);
    for (size_t i = 0; i < n.lse; i++)
        ((float *)(lse + VERIFY_GUARD * 4))[i] = lse_ref[i] == sentinel ? sentinel : NAN;
    om = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, n.o * es + 2 * gb, o, &e);
    if (!e) lm = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, (n.lse + 2 * VERIFY_GUARD) * 4, lse, &e);
    if (e) FAIL("creating output buffers: %d", e);

    bf.o = om;
    bf.o_offset = VERIFY_GUARD;
    if (!opts->no_lse) {
        bf.lse = lm;
        bf.lse_offset = VERIFY_GUARD;
    }
    if ((st = clattn_plan_execute(plan, queue, &bf, 0, NULL, &ev)))
        FAIL("execute: %s: %s", clattn_status_string(st), clattn_context_last_error(ctx));
    if (!ev) FAIL("execute returned no event");
    /* Wait on the returned event alone: it must cover everything the plan enqueued. */
    if ((e = clWaitForEvents(1, &ev))) FAIL("clWaitForEvents: %d", e);
    cl_int evst = 0;
    clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof evst, &evst, NULL);
    if (evst != CL_COMPLETE) FAIL("the returned event is not complete after the wait");
    if ((e = clEnqueueReadBuffer(queue, om, CL_TRUE, 0, n.o * es + 2 * gb, o, 0, NULL, NULL)) ||
        (e = clEnqueueReadBuffer(queue, lm, CL_TRUE, 0, (n.lse + 2 * VERIFY_GUARD) * 4, lse, 0, NULL, NULL)))
        FAIL("reading results: %d", e);

    res.guards_ok = guard_intact(o, gb) && guard_intact(o + gb + n.o * es, gb) && guard_intact(lse, VERIFY_GUARD * 4) &&
                    guard_intact(lse + (VERIFY_GUARD + n.lse) * 4, VERIFY_GUARD * 4);
    got = malloc(n.o * 4 + 4);
    want = malloc(n.o * 4 + 4);
    if (!got || !want) FAIL("out of host memory");
    for (size_t i = 0; i < n.o; i++) {
        got[i] = get(o + gb, dt, i);
        want[i] = get(ref, dt, i);
    }
    if (opts->inject_error) got[n.o / 2] += 1.0f; /* test-only: a wrong result must be caught */
    res.o = clattn_compare(got, want, n.o, (size_t)(desc.head_dim_v ? desc.head_dim_v : desc.head_dim));
    const float *lse_got = (const float *)(lse + VERIFY_GUARD * 4);
    if (opts->no_lse) {
        /* lse not requested: the whole lse buffer must be untouched (still poison). */
        bool untouched = true;
        for (size_t i = 0; i < n.lse; i++) untouched = untouched && (isnan(lse_got[i]) || lse_got[i] == sentinel);
        res.guards_ok = res.guards_ok && untouched;
    } else {
        res.lse = clattn_compare(lse_got, lse_ref, n.lse, 1);
    }
    res.tolerance = clattn_tolerance(dt);
    if (desc.seq_new) { /* the caches after the append */
        if ((e = clEnqueueReadBuffer(queue, ins[1], CL_TRUE, 0, n.k * es, kc_got, 0, NULL, NULL)) ||
            (e = clEnqueueReadBuffer(queue, ins[2], CL_TRUE, 0, n.v * es, vc_got, 0, NULL, NULL)))
            FAIL("reading the caches: %d", e);
        if (opts->inject_cache_error) { /* test-only: a wrong or stray append must be caught */
            const unsigned char *after = kc_ref, *before = k;
            const bool wrote = opts->inject_cache_error == 1;
            size_t i = 0;
            while (i + 1 < n.k && (memcmp(after + i * es, before + i * es, es) != 0) != wrote) i++;
            put(kc_got, dt, i, get(kc_got, dt, i) + 1.0f);
        }
        res.appended = true;
        res.guards_ok = res.guards_ok && compare_cache(kc_got, kc_ref, k, n.k, dt, &res.k_cache) &&
                        compare_cache(vc_got, vc_ref, v, n.v, dt, &res.v_cache);
    }
    rc = 0;
done:
    if (queue) clFinish(queue); /* nothing may still use the fenced memory unmapped below */
    if (ev) clReleaseEvent(ev);
    if (fscratch) clReleaseMemObject(fscratch);
    for (int i = 0; i < 3; i++) {
        if (ins[i]) clReleaseMemObject(ins[i]);
        if (parents[i]) clReleaseMemObject(parents[i]);
    }
    if (om) clReleaseMemObject(om);
    if (lm) clReleaseMemObject(lm);
    for (int i = 0; i < 6; i++)
        if (feat[i]) clReleaseMemObject(feat[i]);
    if (queue && !opts->queue) clReleaseCommandQueue(queue);
    clattn_plan_destroy(plan);
    for (int i = 0; i < 4; i++) guarded_free(&g[i]);
    if (din) clReleaseMemObject(din);
    if (oin) clReleaseMemObject(oin);
    if (lin) clReleaseMemObject(lin);
    free(dout); free(gref[0]); free(gref[1]); free(gref[2]); free(dsinks_ref);
    free(mask); free(alibi); free(sinks); free(lens); free(cu_q); free(cu_k);
    free(q); free(k); free(v); free(ref); free(lse_ref); free(o); free(lse); free(got); free(want);
    for (int i = 0; i < 5; i++)
        if (pmem[i]) clReleaseMemObject(pmem[i]);
    free_paged(&pg);
    free(kc_ref); free(vc_ref); free(kc_got); free(vc_got);
    for (int i = 0; i < N_INPUTS; i++) fence_free(&fz.f[i]);
    *out = res;
    return rc;
}

bool verify_ok(const verify_result *r)
{
    if (r->error[0] || !r->guards_ok) return false;
    if (r->backward)
        return clattn_error_ok(&r->dq, r->tolerance) && clattn_error_ok(&r->dk, r->tolerance) &&
               clattn_error_ok(&r->dv, r->tolerance) && clattn_error_ok(&r->dsinks, r->tolerance);
    return clattn_error_ok(&r->o, r->tolerance) && clattn_error_ok(&r->lse, r->tolerance) &&
           (!r->appended || (clattn_error_ok(&r->k_cache, r->tolerance) && clattn_error_ok(&r->v_cache, r->tolerance)));
}
