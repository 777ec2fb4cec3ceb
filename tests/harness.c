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

static void fill_guarded(float *buf, size_t n)
{
    const uint32_t g = GUARD_BITS;
    for (size_t i = 0; i < n + 2 * GUARD; i++) memcpy(&buf[i], &g, 4);
    for (size_t i = 0; i < n; i++) buf[GUARD + i] = NAN; /* poison: an unwritten element fails */
}

static bool guards_intact(const float *buf, size_t n)
{
    const uint32_t g = GUARD_BITS;
    for (size_t i = 0; i < GUARD; i++)
        if (memcmp(&buf[i], &g, 4) || memcmp(&buf[GUARD + n + i], &g, 4)) return false;
    return true;
}

static cl_mem make_input(cl_context cl, const float *data, size_t n, bool sub, size_t align_bytes,
                         cl_mem *parent)
{
    cl_int e;
    *parent = NULL;
    if (!sub) {
        cl_mem m = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n * 4, (void *)data, &e);
        cr_assert_eq(e, CL_SUCCESS, "clCreateBuffer: %d", e);
        return m;
    }
    /* The tensor sits at an aligned offset inside a larger buffer filled with garbage. */
    const size_t off = align_bytes, total = off + n * 4 + align_bytes;
    float *big = malloc(total);
    cr_assert(big);
    for (size_t i = 0; i < total / 4; i++) big[i] = 1e30f;
    memcpy((char *)big + off, data, n * 4);
    *parent = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, total, big, &e);
    free(big);
    cr_assert_eq(e, CL_SUCCESS, "clCreateBuffer: %d", e);
    cl_buffer_region region = {off, n * 4};
    cl_mem m = clCreateSubBuffer(*parent, CL_MEM_READ_ONLY, CL_BUFFER_CREATE_TYPE_REGION, &region, &e);
    cr_assert_eq(e, CL_SUCCESS, "clCreateSubBuffer: %d", e);
    return m;
}

run_result run_and_compare(clattn_context *ctx, const clattn_desc *desc, const run_opts *opts)
{
    run_result res;
    memset(&res, 0, sizeof res);
    clattn_tensor_sizes n;
    cr_assert_eq(clattn_desc_tensor_sizes(desc, &n), CLATTN_SUCCESS, "descriptor invalid");
    uint64_t rng = opts->seed;
    float *q = malloc(n.q * 4), *k = malloc(n.k * 4), *v = malloc(n.v * 4);
    float *ref = malloc(n.o * 4), *lse_ref = malloc(n.lse * 4);
    float *o = malloc((n.o + 2 * GUARD) * 4), *lse = malloc((n.lse + 2 * GUARD) * 4);
    cr_assert(q && k && v && ref && lse_ref && o && lse);
    const float amp = opts->amplitude > 0 ? opts->amplitude : 1.0f;
    clattn_rng_fill(q, n.q, &rng, amp);
    clattn_rng_fill(k, n.k, &rng, amp);
    clattn_rng_fill(v, n.v, &rng, amp);
    /* feature tensors */
    float *mask = NULL, *alibi = NULL, *sinks = NULL;
    int32_t *lens = NULL;
    if (desc->has_mask) {
        mask = malloc(n.mask * 4);
        cr_assert(mask);
        for (size_t i = 0; i < n.mask; i++)
            mask[i] = clattn_rng_uniform(&rng) < -0.6f ? -INFINITY : 2.0f * clattn_rng_uniform(&rng);
    }
    if (desc->has_alibi) {
        alibi = malloc(sizeof(float) * desc->heads_q);
        for (int h = 0; h < desc->heads_q; h++) alibi[h] = exp2f(-8.0f * (h + 1) / desc->heads_q);
    }
    if (desc->has_sinks) {
        sinks = malloc(sizeof(float) * desc->heads_q);
        for (int h = 0; h < desc->heads_q; h++) sinks[h] = 2.0f * clattn_rng_uniform(&rng);
    }
    if (desc->has_seqlens_k) {
        lens = malloc(sizeof(int32_t) * desc->batch);
        for (int b = 0; b < desc->batch; b++) /* 0, 1, then random lengths */
            lens[b] = b == 0 ? 0 : b == 1 ? 1 : (int32_t)(clattn_rng_next(&rng) % (uint64_t)(desc->seq_kv + 1));
    }
    /* Elements a strided output view skips keep their contents: start ref and o equal. */
    for (size_t i = 0; i < n.o; i++) ref[i] = -7.0f;

    clattn_host_tensors t = {0};
    t.q = q; t.k = k; t.v = v; t.o = ref; t.lse = lse_ref;
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o; t.lse_len = n.lse;
    t.mask = mask; t.mask_len = n.mask; t.alibi_slopes = alibi; t.sinks = sinks; t.seqlens_k = lens;
    char msg[256];
    cr_assert_eq(clattn_reference_forward(desc, &t, msg, sizeof msg), CLATTN_SUCCESS, "reference: %s", msg);

    clattn_plan *plan = NULL;
    clattn_status st = clattn_plan_create(ctx, desc, &plan);
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
    qm = make_input(cl, q, n.q, opts->sub_buffers, align_bits / 8, &parents[0]);
    km = make_input(cl, k, n.k, opts->sub_buffers, align_bits / 8, &parents[1]);
    vm = make_input(cl, v, n.v, opts->sub_buffers, align_bits / 8, &parents[2]);
    fill_guarded(o, n.o);
    for (size_t i = 0; i < n.o; i++) o[GUARD + i] = -7.0f;
    fill_guarded(lse, n.lse);
    /* o: elements the view does not cover hold -7 like ref; covered ones are NaN-poisoned
     * below through the reference's own pattern (ref wrote every covered element). */
    for (size_t i = 0; i < n.o; i++)
        if (ref[i] != -7.0f) o[GUARD + i] = NAN;
    cl_mem om = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, (n.o + 2 * GUARD) * 4, o, &e);
    cr_assert_eq(e, CL_SUCCESS);
    cl_mem lm = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, (n.lse + 2 * GUARD) * 4, lse, &e);
    cr_assert_eq(e, CL_SUCCESS);

    clattn_buffers bf = {0};
    bf.q = qm; bf.k = km; bf.v = vm; bf.o = om; bf.o_offset = GUARD;
    bf.scratch = opts->scratch;
    cl_mem feat[4] = {NULL, NULL, NULL, NULL};
    const void *fhost[4] = {mask, alibi, sinks, lens};
    const size_t fbytes[4] = {n.mask * 4, (size_t)desc->heads_q * 4, (size_t)desc->heads_q * 4, (size_t)desc->batch * 4};
    for (int i = 0; i < 4; i++)
        if (fhost[i]) {
            feat[i] = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, fbytes[i], (void *)fhost[i], &e);
            cr_assert_eq(e, CL_SUCCESS);
        }
    bf.mask = feat[0]; bf.alibi_slopes = feat[1]; bf.sinks = feat[2]; bf.seqlens_k = feat[3];
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
    cr_assert_eq(clEnqueueReadBuffer(queue, om, CL_TRUE, 0, (n.o + 2 * GUARD) * 4, o, 0, NULL, NULL), CL_SUCCESS);
    cr_assert_eq(clEnqueueReadBuffer(queue, lm, CL_TRUE, 0, (n.lse + 2 * GUARD) * 4, lse, 0, NULL, NULL), CL_SUCCESS);

    res.guards_ok = guards_intact(o, n.o) && guards_intact(lse, n.lse);
    res.o = clattn_compare(o + GUARD, ref, n.o);
    if (opts->no_lse) {
        /* lse not requested: the whole lse buffer must be untouched (still poison). */
        bool untouched = true;
        for (size_t i = 0; i < n.lse; i++) untouched = untouched && isnan(lse[GUARD + i]);
        res.guards_ok = res.guards_ok && untouched;
    } else {
        res.lse = clattn_compare(lse + GUARD, lse_ref, n.lse);
    }
    clReleaseMemObject(qm); clReleaseMemObject(km); clReleaseMemObject(vm);
    for (int i = 0; i < 3; i++)
        if (parents[i]) clReleaseMemObject(parents[i]);
    clReleaseMemObject(om); clReleaseMemObject(lm);
    for (int i = 0; i < 4; i++)
        if (feat[i]) clReleaseMemObject(feat[i]);
    free(mask); free(alibi); free(sinks); free(lens);
    if (!opts->queue) clReleaseCommandQueue(queue);
    clattn_plan_destroy(plan);
    free(q); free(k); free(v); free(ref); free(lse_ref); free(o); free(lse);
    return res;
}

void expect_ok(const run_result *r, const char *name, uint64_t seed)
{
    cr_expect(r->guards_ok, "%s (seed %llu): a guard region or an unrequested output was written",
              name, (unsigned long long)seed);
    cr_expect(clattn_error_ok(&r->o, 1e-5), "%s (seed %llu, %s): o rel L2 %.3e max abs %.3e, %zu NaN/inf mismatches",
              name, (unsigned long long)seed, r->variant, r->o.rel_l2, r->o.max_abs, r->o.mismatched_special);
    cr_expect(clattn_error_ok(&r->lse, 1e-5), "%s (seed %llu, %s): lse rel L2 %.3e, %zu NaN/inf mismatches",
              name, (unsigned long long)seed, r->variant, r->lse.rel_l2, r->lse.mismatched_special);
}
