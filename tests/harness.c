#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

clattn_context *test_context(void) { return test_context_family(CLATTN_KERNELS_AUTO); }

clattn_context *test_context_family(clattn_kernel_family family)
{
    cl_device_id dev;
    cl_uint n = 0;
    if (clattn_list_devices(&dev, 1, &n) != CLATTN_SUCCESS || n == 0)
        cr_skip_test("no OpenCL device on this machine");
    clattn_context *ctx = NULL;
    clattn_context_options opt = {0};
    opt.kernel_family = family;
    clattn_status st = clattn_context_create(&opt, &ctx);
    cr_assert_eq(st, CLATTN_SUCCESS, "clattn_context_create: %s", clattn_status_string(st));
    return ctx;
}

uint64_t seed_for(const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *name; name++) h = (h ^ (unsigned char)*name) * 0x100000001b3ull;
    return h;
}

/* ---- storage types: the harness keeps every tensor as bytes of the descriptor's dtype ---- */

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
    cr_assert(p);
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

static cl_mem make_input(cl_context cl, const void *data, size_t bytes, bool sub, size_t align_bytes, cl_mem *parent)
{
    cl_int e;
    *parent = NULL;
    if (!sub) {
        cl_mem m = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, bytes, (void *)data, &e);
        cr_assert_eq(e, CL_SUCCESS, "clCreateBuffer: %d", e);
        return m;
    }
    /* The tensor sits at an aligned offset inside a larger buffer filled with garbage. */
    const size_t off = align_bytes, total = off + bytes + align_bytes;
    unsigned char *big = malloc(total);
    cr_assert(big);
    memset(big, 0x4e, total);
    memcpy(big + off, data, bytes);
    *parent = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, total, big, &e);
    free(big);
    cr_assert_eq(e, CL_SUCCESS, "clCreateBuffer: %d", e);
    cl_buffer_region region = {off, bytes};
    cl_mem m = clCreateSubBuffer(*parent, CL_MEM_READ_ONLY, CL_BUFFER_CREATE_TYPE_REGION, &region, &e);
    cr_assert_eq(e, CL_SUCCESS, "clCreateSubBuffer: %d", e);
    return m;
}

/* Packed sequence lengths: the first sequence empty and the second of length 1 when there
 * are three or more, the others random in 1..longest; cumulative offsets from 0. */
static int32_t *make_cu(int batch, int longest, uint64_t *rng, int *total)
{
    int32_t *cu = malloc(sizeof(int32_t) * (size_t)(batch + 1));
    cu[0] = 0;
    for (int b = 0; b < batch; b++) {
        int len = batch >= 3 && b == 0 ? 0 : batch >= 3 && b == 1 ? 1 : 1 + (int)(clattn_rng_next(rng) % (uint64_t)longest);
        if (b == batch - 1 && batch >= 2) len = longest; /* the longest length occurs */
        cu[b + 1] = cu[b] + len;
    }
    *total = cu[batch];
    return cu;
}

run_result run_and_compare(clattn_context *ctx, const clattn_desc *desc_in, const run_opts *opts)
{
    run_result res;
    memset(&res, 0, sizeof res);
    clattn_desc desc = *desc_in;
    uint64_t rng = opts->seed;
    int32_t *cu_q = NULL, *cu_k = NULL;
    if (desc.varlen) {
        cu_q = make_cu(desc.batch, desc.seq_q, &rng, &desc.total_q);
        cu_k = make_cu(desc.batch, desc.seq_kv, &rng, &desc.total_k);
        if (desc.total_q == 0 || desc.total_k == 0) { /* keep the tensors non-empty */
            cu_q[desc.batch] += desc.total_q == 0;
            cu_k[desc.batch] += desc.total_k == 0;
            desc.total_q = cu_q[desc.batch];
            desc.total_k = cu_k[desc.batch];
        }
    }
    clattn_tensor_sizes n;
    char msg[256];
    cr_assert_eq(clattn_desc_validate(&desc, msg, sizeof msg), CLATTN_SUCCESS, "descriptor invalid: %s", msg);
    clattn_desc_tensor_sizes(&desc, &n);
    const clattn_dtype dt = desc.dtype;
    const size_t es = clattn_dtype_size(dt), gb = GUARD * es;
    const float amp = opts->amplitude > 0 ? opts->amplitude : 1.0f;
    void *q = random_tensor(n.q, dt, &rng, amp), *k = random_tensor(n.k, dt, &rng, amp);
    void *v = random_tensor(n.v, dt, &rng, opts->v_amplitude > 0 ? opts->v_amplitude : amp);
    /* feature tensors */
    float *mask = NULL, *alibi = NULL, *sinks = NULL;
    int32_t *lens = NULL;
    if (desc.has_mask) {
        mask = malloc(n.mask * 4 + 4);
        for (size_t i = 0; i < n.mask; i++)
            mask[i] = clattn_rng_uniform(&rng) < -0.6f ? -INFINITY : 2.0f * clattn_rng_uniform(&rng);
    }
    if (desc.has_alibi) {
        alibi = malloc(sizeof(float) * desc.heads_q);
        for (int h = 0; h < desc.heads_q; h++) alibi[h] = exp2f(-8.0f * (h + 1) / desc.heads_q);
    }
    if (desc.has_sinks) {
        sinks = malloc(sizeof(float) * desc.heads_q);
        for (int h = 0; h < desc.heads_q; h++) sinks[h] = 2.0f * clattn_rng_uniform(&rng);
    }
    if (desc.has_seqused_k) {
        lens = malloc(sizeof(int32_t) * desc.batch);
        for (int b = 0; b < desc.batch; b++) /* 0, 1, then random lengths */
            lens[b] = b == 0 ? 0 : b == 1 ? 1 : (int32_t)(clattn_rng_next(&rng) % (uint64_t)(desc.seq_kv + 1));
    }

    /* The reference, into an output prefilled with a sentinel: elements a strided view skips
     * keep it, and the device's output must keep them too. */
    const float sentinel = -7.0f;
    void *ref = malloc(n.o * es + 1);
    float *lse_ref = malloc(n.lse * 4 + 4);
    for (size_t i = 0; i < n.o; i++) put(ref, dt, i, sentinel);
    for (size_t i = 0; i < n.lse; i++) lse_ref[i] = sentinel;
    clattn_host_tensors t = {0};
    t.q = q; t.k = k; t.v = v; t.o = ref; t.lse = lse_ref;
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o; t.lse_len = n.lse;
    t.mask = mask; t.mask_len = n.mask; t.alibi_slopes = alibi; t.sinks = sinks; t.seqused_k = lens;
    t.cu_seqlens_q = cu_q; t.cu_seqlens_k = cu_k;
    cr_assert_eq(clattn_reference_forward(&desc, &t, msg, sizeof msg), CLATTN_SUCCESS, "reference: %s", msg);

    clattn_plan *plan = NULL;
    clattn_status st = clattn_plan_create(ctx, &desc, &plan);
    cr_assert_eq(st, CLATTN_SUCCESS, "plan: %s: %s", clattn_status_string(st), clattn_context_last_error(ctx));
    snprintf(res.variant, sizeof res.variant, "%s", clattn_plan_variant(plan));

    cl_context cl = clattn_context_cl_context(ctx);
    cl_device_id dev = clattn_context_device(ctx);
    cl_int e = CL_SUCCESS;
    cl_command_queue queue = opts->queue;
    if (!queue) {
        queue = clCreateCommandQueue(cl, dev, 0, &e);
        cr_assert_eq(e, CL_SUCCESS);
    }
    cl_uint align_bits = 1024;
    clGetDeviceInfo(dev, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
    cl_mem parents[3], qm, km, vm;
    qm = make_input(cl, q, n.q * es, opts->sub_buffers, align_bits / 8, &parents[0]);
    km = make_input(cl, k, n.k * es, opts->sub_buffers, align_bits / 8, &parents[1]);
    vm = make_input(cl, v, n.v * es, opts->sub_buffers, align_bits / 8, &parents[2]);

    /* Outputs inside guard regions; covered elements poisoned with NaN, others the sentinel. */
    unsigned char *o = malloc(n.o * es + 2 * gb), *lse = malloc((n.lse + 2 * GUARD) * 4);
    fill_guard(o, n.o * es + 2 * gb);
    fill_guard(lse, (n.lse + 2 * GUARD) * 4);
    for (size_t i = 0; i < n.o; i++) put(o + gb, dt, i, get(ref, dt, i) == sentinel ? sentinel : NAN);
    for (size_t i = 0; i < n.lse; i++) ((float *)(lse + GUARD * 4))[i] = lse_ref[i] == sentinel ? sentinel : NAN;
    cl_mem om = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, n.o * es + 2 * gb, o, &e);
    cr_assert_eq(e, CL_SUCCESS);
    cl_mem lm = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, (n.lse + 2 * GUARD) * 4, lse, &e);
    cr_assert_eq(e, CL_SUCCESS);

    clattn_buffers bf = {0};
    bf.q = qm; bf.k = km; bf.v = vm; bf.o = om; bf.o_offset = GUARD;
    bf.scratch = opts->scratch;
    cl_mem feat[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    const void *fhost[6] = {mask, alibi, sinks, lens, cu_q, cu_k};
    const size_t fbytes[6] = {n.mask * 4, (size_t)desc.heads_q * 4, (size_t)desc.heads_q * 4, (size_t)desc.batch * 4,
                              (size_t)(desc.batch + 1) * 4, (size_t)(desc.batch + 1) * 4};
    for (int i = 0; i < 6; i++)
        if (fhost[i]) {
            feat[i] = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, fbytes[i], (void *)fhost[i], &e);
            cr_assert_eq(e, CL_SUCCESS);
        }
    bf.mask = feat[0]; bf.alibi_slopes = feat[1]; bf.sinks = feat[2]; bf.seqused_k = feat[3];
    bf.cu_seqlens_q = feat[4]; bf.cu_seqlens_k = feat[5];
    if (!opts->no_lse) {
        bf.lse = lm;
        bf.lse_offset = GUARD;
    }
    cl_event ev = NULL;
    st = clattn_plan_execute(plan, queue, &bf, 0, NULL, &ev);
    cr_assert_eq(st, CLATTN_SUCCESS, "execute: %s: %s", clattn_status_string(st), clattn_context_last_error(ctx));
    cr_assert_not_null(ev);
    /* Wait on the returned event alone: it must cover everything the plan enqueued. */
    cr_assert_eq(clWaitForEvents(1, &ev), CL_SUCCESS);
    cl_int evst = 0;
    clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof evst, &evst, NULL);
    cr_assert_eq(evst, CL_COMPLETE);
    clReleaseEvent(ev);
    cr_assert_eq(clEnqueueReadBuffer(queue, om, CL_TRUE, 0, n.o * es + 2 * gb, o, 0, NULL, NULL), CL_SUCCESS);
    cr_assert_eq(clEnqueueReadBuffer(queue, lm, CL_TRUE, 0, (n.lse + 2 * GUARD) * 4, lse, 0, NULL, NULL), CL_SUCCESS);

    res.guards_ok = guard_intact(o, gb) && guard_intact(o + gb + n.o * es, gb) && guard_intact(lse, GUARD * 4) &&
                    guard_intact(lse + (GUARD + n.lse) * 4, GUARD * 4);
    float *got = malloc(n.o * 4 + 4), *want = malloc(n.o * 4 + 4);
    for (size_t i = 0; i < n.o; i++) {
        got[i] = get(o + gb, dt, i);
        want[i] = get(ref, dt, i);
    }
    res.o = clattn_compare(got, want, n.o);
    const float *lse_got = (const float *)(lse + GUARD * 4);
    if (opts->no_lse) {
        /* lse not requested: the whole lse buffer must be untouched (still poison). */
        bool untouched = true;
        for (size_t i = 0; i < n.lse; i++) untouched = untouched && (isnan(lse_got[i]) || lse_got[i] == sentinel);
        res.guards_ok = res.guards_ok && untouched;
    } else {
        res.lse = clattn_compare(lse_got, lse_ref, n.lse);
    }
    res.tolerance = clattn_tolerance(dt);
    clReleaseMemObject(qm); clReleaseMemObject(km); clReleaseMemObject(vm);
    for (int i = 0; i < 3; i++)
        if (parents[i]) clReleaseMemObject(parents[i]);
    clReleaseMemObject(om); clReleaseMemObject(lm);
    for (int i = 0; i < 6; i++)
        if (feat[i]) clReleaseMemObject(feat[i]);
    if (!opts->queue) clReleaseCommandQueue(queue);
    clattn_plan_destroy(plan);
    free(mask); free(alibi); free(sinks); free(lens); free(cu_q); free(cu_k);
    free(q); free(k); free(v); free(ref); free(lse_ref); free(o); free(lse); free(got); free(want);
    return res;
}

void expect_ok(const run_result *r, const char *name, uint64_t seed)
{
    const double tol = r->tolerance > 0 ? r->tolerance : 1e-5;
    cr_expect(r->guards_ok, "%s (seed %llu): a guard region or an unrequested output was written",
              name, (unsigned long long)seed);
    cr_expect(clattn_error_ok(&r->o, tol), "%s (seed %llu, %s): o rel L2 %.3e (bound %.0e) max abs %.3e, %zu NaN/inf mismatches",
              name, (unsigned long long)seed, r->variant, r->o.rel_l2, tol, r->o.max_abs, r->o.mismatched_special);
    cr_expect(clattn_error_ok(&r->lse, tol), "%s (seed %llu, %s): lse rel L2 %.3e, %zu NaN/inf mismatches",
              name, (unsigned long long)seed, r->variant, r->lse.rel_l2, r->lse.mismatched_special);
}
