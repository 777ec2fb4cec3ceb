/* Fault injection: along plan creation and execution, make the Nth host allocation, buffer
 * allocation, program build, kernel creation or enqueue fail, for every N the path reaches.
 * Each time: the right status class comes back, every buffer and kernel clattn created is
 * released (programs survive only as cache entries), the caller's output is untouched when the
 * failure came before the first enqueue, and the context still computes correctly afterwards. */
#include "fault.h"
#include "harness.h"

#include <stdlib.h>
#include <string.h>

TestSuite(faults, .fini = leak_check);

typedef enum path {
    FUSED, FUSED_SPLIT, UNFUSED_COPIES, HOST_CALL, BACKWARD_FUSED, BACKWARD_UNFUSED, PAGED_FUSED, PAGED_UNFUSED, NPATHS
} path;
static const char *path_name[] = {"fused", "fused split-KV", "unfused f16 varlen", "host call",
                                  "backward fused (host call)", "backward unfused f16 varlen (host call)",
                                  "paged append rotary fused split-KV (host call)",
                                  "paged append rotary unfused f16 (host call)"};
static const char *kind_name[] = {"", "host alloc", "buffer", "build", "kernel", "enqueue"};

static clattn_desc desc_for(path p)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 2; d.heads_q = 4; d.heads_kv = 2; d.seq_q = 9; d.seq_kv = 33; d.head_dim = 32; d.causal = 1;
    if (p == FUSED_SPLIT) {
        d.seq_q = 1;
        d.seq_kv = 700;
        d.num_splits = 3;
        d.has_sinks = 1;
        d.algo = CLATTN_ALGO_FUSED;
    } else if (p == UNFUSED_COPIES || p == BACKWARD_UNFUSED) {
        d.dtype = CLATTN_DTYPE_F16;
        d.varlen = 1;
        d.layout = CLATTN_LAYOUT_BSHD;
        d.total_q = 12;
        d.total_k = 40;
        d.algo = CLATTN_ALGO_UNFUSED;
    } else {
        d.algo = CLATTN_ALGO_FUSED;
    }
    if (p == BACKWARD_FUSED || p == BACKWARD_UNFUSED) {
        d.pass = CLATTN_PASS_BACKWARD;
        d.has_sinks = 1;
    }
    if (p == PAGED_FUSED || p == PAGED_UNFUSED) { /* pages of 3 keys, two new tokens, rotary */
        d.seq_q = 2;
        d.seq_kv = 33;
        d.page_size = 3;
        d.pages_per_seq = 11;
        d.num_pages = 24;
        d.has_seqused_k = 1;
        d.seq_new = 2;
        d.rotary_dim = 16;
        d.rotary_positions = 33;
        d.num_splits = p == PAGED_FUSED ? 2 : 0;
        d.dtype = p == PAGED_UNFUSED ? CLATTN_DTYPE_F16 : CLATTN_DTYPE_F32;
        d.algo = p == PAGED_FUSED ? CLATTN_ALGO_FUSED : CLATTN_ALGO_UNFUSED;
    }
    return d;
}

static bool status_fits(clattn_fault_kind k, clattn_status st)
{
    switch (k) {
    case CLATTN_FAULT_HOST_ALLOC: return st == CLATTN_OUT_OF_HOST_MEMORY;
    case CLATTN_FAULT_BUFFER: return st == CL_MEM_OBJECT_ALLOCATION_FAILURE;
    case CLATTN_FAULT_BUILD: return st == CLATTN_BUILD_FAILED || st == CL_OUT_OF_HOST_MEMORY;
    case CLATTN_FAULT_KERNEL:
    case CLATTN_FAULT_ENQUEUE: return st == CL_OUT_OF_RESOURCES;
    default: return false;
    }
}

static long cached_programs(clattn_context *ctx)
{
    long n = 0;
    for (clattn_program_entry *e = ctx->programs; e; e = e->next) n++;
    return n;
}

/* One attempt with the fault armed. Returns the status; *wrote tells whether o changed. */
static clattn_status attempt(clattn_context *ctx, path p, bool *wrote)
{
    clattn_desc d = desc_for(p);
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&d, &n);
    const size_t es = clattn_dtype_size(d.dtype);
    unsigned char *host = malloc((n.q + n.k + n.v + n.o) * es), *back = malloc(n.o * es);
    for (size_t i = 0; i < (n.q + n.k + n.v + n.o) * es; i++) host[i] = (unsigned char)(i * 7 + 3) & 0x3b;
    float *lse = malloc(n.lse * 4);
    int32_t cu_q[3] = {0, 5, 12}, cu_k[3] = {0, 33, 40};
    float sinks[4] = {0.5f, -1, 2, 0};
    *wrote = false;
    clattn_status st;
    if (p == BACKWARD_FUSED || p == BACKWARD_UNFUSED) {
        /* o, lse and d_o as any values; dq, dk, dv and dsinks start as a pattern that must stay */
        unsigned char *grads = malloc((n.q + n.k + n.v) * es + 16), *keep = malloc((n.q + n.k + n.v) * es + 16);
        for (size_t i = 0; i < (n.q + n.k + n.v) * es + 16; i++) grads[i] = keep[i] = (unsigned char)(i * 5 + 1) & 0x3b;
        for (size_t i = 0; i < n.lse; i++) lse[i] = 2.0f;
        clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
        t.q = host; t.k = host + n.q * es; t.v = host + (n.q + n.k) * es; t.o = host + (n.q + n.k + n.v) * es;
        t.lse = lse; t.d_o = back; t.sinks = sinks; t.cu_seqlens_q = cu_q; t.cu_seqlens_k = cu_k;
        memcpy(back, host, n.o * es);
        t.dq = grads; t.dk = grads + n.q * es; t.dv = grads + (n.q + n.k) * es;
        t.dsinks = (float *)(void *)(grads + (n.q + n.k + n.v) * es);
        t.q_len = t.dq_len = n.q; t.k_len = t.dk_len = n.k; t.v_len = t.dv_len = n.v; t.o_len = t.do_len = n.o;
        t.lse_len = n.lse;
        st = clattn_backward_host(ctx, &d, &t);
        *wrote = memcmp(grads, keep, (n.q + n.k + n.v) * es + 16) != 0;
        free(grads);
        free(keep);
    } else if (p == PAGED_FUSED || p == PAGED_UNFUSED) {
        /* k and v are the caches; o and the caches out start as a pattern that must stay */
        int32_t table[22], used[2] = {30, 7};
        for (int i = 0; i < 22; i++) table[i] = (i * 5 + 1) % 24;
        float rot[33 * 8];
        for (int i = 0; i < 33 * 8; i++) rot[i] = (float)(i % 7) * 0.1f;
        unsigned char *out = malloc((n.o + n.k + n.v) * es), *keep = malloc((n.o + n.k + n.v) * es);
        for (size_t i = 0; i < (n.o + n.k + n.v) * es; i++) out[i] = keep[i] = (unsigned char)(i * 3 + 2) & 0x3b;
        clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
        t.q = host; t.k = host + n.q * es; t.v = host + (n.q + n.k) * es;
        t.k_new = t.q; t.v_new = t.k; /* any values */
        t.o = out; t.k_cache_out = out + n.o * es; t.v_cache_out = out + (n.o + n.k) * es;
        t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o; t.k_new_len = n.k_new; t.v_new_len = n.v_new;
        t.block_table = table; t.seqused_k = used; t.rotary_cos = rot; t.rotary_sin = rot;
        st = clattn_forward_host(ctx, &d, &t);
        *wrote = memcmp(out, keep, (n.o + n.k + n.v) * es) != 0;
        free(out);
        free(keep);
    } else if (p == HOST_CALL) {
        clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
        t.q = host; t.k = host + n.q * es; t.v = host + (n.q + n.k) * es; t.o = back; t.lse = lse;
        t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o; t.lse_len = n.lse;
        memcpy(back, host + (n.q + n.k + n.v) * es, n.o * es);
        st = clattn_forward_host(ctx, &d, &t);
        *wrote = memcmp(back, host + (n.q + n.k + n.v) * es, n.o * es) != 0;
    } else {
        cl_context cl = clattn_context_cl_context(ctx);
        cl_int e;
        cl_command_queue q = clCreateCommandQueue(cl, clattn_context_device(ctx), 0, &e);
        cl_mem in = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, (n.q + n.k + n.v + n.o) * es, host, &e);
        cl_mem cuq = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof cu_q, cu_q, &e);
        cl_mem cuk = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof cu_k, cu_k, &e);
        cl_mem sk = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof sinks, sinks, &e);
        clattn_plan *plan = NULL;
        st = clattn_plan_create(ctx, &d, &plan);
        if (!st) {
            clattn_buffers bf = CLATTN_BUFFERS_INIT;
            bf.q = bf.k = bf.v = bf.o = in;
            bf.k_offset = n.q; bf.v_offset = n.q + n.k; bf.o_offset = n.q + n.k + n.v;
            bf.cu_seqlens_q = cuq; bf.cu_seqlens_k = cuk; bf.sinks = sk;
            cl_event ev = NULL;
            st = clattn_plan_execute(plan, q, &bf, 0, NULL, &ev);
            if (ev) {
                clWaitForEvents(1, &ev);
                clReleaseEvent(ev);
            }
            clFinish(q);
        }
        clattn_plan_destroy(plan);
        clEnqueueReadBuffer(q, in, CL_TRUE, (n.q + n.k + n.v) * es, n.o * es, back, 0, NULL, NULL);
        *wrote = memcmp(back, host + (n.q + n.k + n.v) * es, n.o * es) != 0;
        clReleaseMemObject(cuq); clReleaseMemObject(cuk); clReleaseMemObject(sk);
        clReleaseMemObject(in);
        clReleaseCommandQueue(q);
    }
    free(host); free(back); free(lse);
    return st;
}

static void sweep(path p, clattn_fault_kind kind)
{
    cl_device_id dev;
    cl_uint ndev = 0;
    if (clattn_list_devices(&dev, 1, &ndev) || !ndev) cr_skip_test("no OpenCL device");
    int covered = 0;
    bool all_covered = false;
    /* injection points until one past the last; the bound only stops a runaway */
    for (long nth = 1; nth <= 1000 && !all_covered; nth++) {
        clattn_context_options o = CLATTN_CONTEXT_OPTIONS_INIT;
        o.disable_disk_cache = 1; /* every program is built from source: build faults reachable */
        clattn_context *ctx;
        cr_assert_eq(clattn_context_create(&o, &ctx), CLATTN_SUCCESS);
        clattn__inject_fault(ctx, kind, nth);
        bool wrote = false;
        const clattn_status st = attempt(ctx, p, &wrote);
        const bool fired = clattn__fault_fired(ctx);
        clattn__inject_fault(ctx, CLATTN_FAULT_NONE, 0);
        if (!fired) { /* the path has fewer than nth calls of this kind: all of them covered */
            cr_expect_eq(st, CLATTN_SUCCESS, "%s, %s #%ld: no fault fired but status %d (%s)", path_name[p],
                         kind_name[kind], nth, st, clattn_context_last_error(ctx));
            clattn_context_destroy(ctx);
            all_covered = true;
            break;
        }
        covered++;
        cr_expect(status_fits(kind, st), "%s, %s #%ld: status %d (%s): %s", path_name[p], kind_name[kind], nth, st,
                  clattn_status_string(st), clattn_context_last_error(ctx));
        cr_expect(clattn_context_last_error(ctx)[0], "%s, %s #%ld: no message", path_name[p], kind_name[kind], nth);
        const clattn_live live = clattn__live_objects(ctx);
        cr_expect_eq(live.buffers, 0, "%s, %s #%ld: %ld buffers leaked", path_name[p], kind_name[kind], nth, live.buffers);
        cr_expect_eq(live.kernels, 0, "%s, %s #%ld: %ld kernels leaked", path_name[p], kind_name[kind], nth, live.kernels);
        cr_expect_eq(live.programs, cached_programs(ctx), "%s, %s #%ld: %ld programs alive, %ld cached", path_name[p],
                     kind_name[kind], nth, live.programs, cached_programs(ctx));
        if (kind != CLATTN_FAULT_ENQUEUE) /* nothing was enqueued: the output is untouched */
            cr_expect(!wrote, "%s, %s #%ld: the caller's output was written", path_name[p], kind_name[kind], nth);
        /* the context still works */
        clattn_desc d = desc_for(p == HOST_CALL ? FUSED : p);
        verify_opts vo = {0};
        vo.seed = 77 + (uint64_t)nth;
        verify_result r;
        cr_expect_eq(verify_run(ctx, &d, &vo, &r), 0, "%s, %s #%ld: afterwards: %s", path_name[p], kind_name[kind], nth,
                     r.error);
        cr_expect(verify_ok(&r), "%s, %s #%ld: afterwards wrong: rel L2 %.3e", path_name[p], kind_name[kind], nth,
                  r.o.rel_l2);
        clattn_context_destroy(ctx);
    }
    cr_expect(all_covered, "%s, %s: more than %d injection points, not all were tried", path_name[p],
              kind_name[kind], covered);
    cr_log_info("%s, %s: %d injection points", path_name[p], kind_name[kind], covered);
    fprintf(stderr, "faults: %s, %s: %d injection points\n", path_name[p], kind_name[kind], covered);
}

typedef struct fault_case { int path, kind; } fault_case;

ParameterizedTestParameters(faults, injected)
{
    static fault_case cases[NPATHS * (CLATTN_FAULT_KINDS - 1)];
    int n = 0;
    for (int p = 0; p < NPATHS; p++)
        for (int k = 1; k < CLATTN_FAULT_KINDS; k++) cases[n++] = (fault_case){p, k};
    return cr_make_param_array(fault_case, cases, (size_t)n);
}

ParameterizedTest(fault_case *c, faults, injected, .timeout = 300)
{
    sweep((path)c->path, (clattn_fault_kind)c->kind);
}
