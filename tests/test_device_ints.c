/* Device-side integers are input like any other: cu_seqlens_q/k and seqused_k filled with
 * garbage (negative, decreasing, past the totals, INT_MIN, INT_MAX) must never make a kernel
 * read or write outside its buffers. Every tensor lives in a sub-buffer with guard bytes on
 * both sides inside its parent; after each run every input's parent must be byte-identical and
 * every output's guards intact, and the output rows of tokens no clamped sequence covers must
 * be untouched (include/clattn.h states the rule). Every path and family, with and without key
 * splits, the rows family's K transpose included, the backward pass's paths too; and a paged KV
 * cache's block table (ids outside the cache, negative, INT_MIN/MAX) with seqused_k garbage,
 * with the append writing through the table (the caches are outputs then: their guards must
 * hold). Guard bytes catch stray writes only, so in two of every three trials the inputs sit
 * instead in host memory that ends (or starts) at an inaccessible page, given to the device as
 * its storage (CL_MEM_USE_HOST_PTR): where the device works in host memory, as PoCL does, a
 * read past the end (or before the start) faults and fails the test. */
#include "fence.h"
#include "harness.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(device_ints, .fini = leak_check);

#define GUARD_BYTE 0xa7
#define NTENSORS 22

enum { T_Q, T_K, T_V, T_MASK, T_ALIBI, T_SINKS, T_USED, T_CUQ, T_CUK, T_DO, T_O, T_LSE, T_SCRATCH, T_DQ, T_DK, T_DV,
       T_DSINKS, T_TABLE, T_KNEW, T_VNEW, T_COS, T_SIN };
static const char *tensor_name[NTENSORS] = {"q", "k", "v", "mask", "alibi", "sinks", "seqused_k", "cu_seqlens_q",
                                            "cu_seqlens_k", "d_o", "o", "lse", "scratch", "dq", "dk", "dv",
                                            "dsinks", "block_table", "k_new", "v_new", "rotary_cos", "rotary_sin"};

typedef struct guarded {
    cl_mem parent, sub;
    size_t bytes, pad, total;
    unsigned char *image; /* the parent's contents as written (fenced: the tensor's) */
    fence fz;             /* fenced: the mapping with its inaccessible pages, the tensor in it */
} guarded;

/* A sub-buffer of `bytes` (host data, or guard bytes when NULL) at `pad` bytes into a parent
 * filled with guard bytes around it. */
static void make(cl_context cl, guarded *g, const void *data, size_t bytes, size_t pad)
{
    cl_int e;
    g->bytes = bytes;
    g->pad = pad;
    g->total = pad + (bytes + pad - 1) / pad * pad + pad;
    g->image = malloc(g->total);
    memset(g->image, GUARD_BYTE, g->total);
    if (data) memcpy(g->image + pad, data, bytes);
    g->parent = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, g->total, g->image, &e);
    cr_assert_eq(e, CL_SUCCESS);
    cl_buffer_region r = {pad, bytes};
    g->sub = clCreateSubBuffer(g->parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r, &e);
    cr_assert_eq(e, CL_SUCCESS);
}

/* An input tensor in host memory between two inaccessible pages, touching the one after it
 * (at_end) or the one before, used by the device in place: a kernel's read outside it faults
 * where the device works in host memory (PoCL), and is harmless where the buffer is copied. */
static void make_fenced(cl_context cl, guarded *g, const void *data, size_t bytes, bool at_end)
{
    cl_int e;
    memset(g, 0, sizeof *g);
    g->bytes = bytes;
    g->image = malloc(bytes);
    memcpy(g->image, data, bytes);
    g->sub = fence_buffer(cl, CL_MEM_READ_WRITE, data, bytes, at_end, &g->fz, &e);
    cr_assert_eq(e, CL_SUCCESS);
}

/* In a child process: read element `index` of a 64-float fenced buffer (fenced after it when
 * index >= 0, before it otherwise) in a kernel. Exit codes: 0 the read returned the element,
 * 77 not a CPU device (its buffers may be copies), 99 the read faulted. */
#define FENCE_SKIP 77
#define FENCE_FAULT 99
static void on_fault(int sig)
{
    (void)sig;
    _exit(FENCE_FAULT);
}

static int fence_child(int index)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fault;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    clattn_context *ctx = test_context();
    cl_context cl = clattn_context_cl_context(ctx);
    cl_device_id dev = clattn_context_device(ctx);
    if (!fence_applies(dev)) return FENCE_SKIP;
    float data[64];
    for (int i = 0; i < 64; i++) data[i] = (float)i + 0.5f;
    guarded g;
    make_fenced(cl, &g, data, sizeof data, index >= 0);
    static const char *src = "__kernel void rd(__global const float *a, __global float *o, int i) { o[0] = a[i]; }";
    cl_int e;
    cl_program prog = clCreateProgramWithSource(cl, 1, &src, NULL, &e);
    if (e || clBuildProgram(prog, 1, &dev, "", NULL, NULL)) return 2;
    cl_kernel k = clCreateKernel(prog, "rd", &e);
    cl_mem out = clCreateBuffer(cl, CL_MEM_READ_WRITE, sizeof(float), NULL, &e);
    cl_command_queue q = clCreateCommandQueue(cl, dev, 0, &e);
    float got = -1.0f;
    const size_t one = 1;
    if (clSetKernelArg(k, 0, sizeof g.sub, &g.sub) || clSetKernelArg(k, 1, sizeof out, &out) ||
        clSetKernelArg(k, 2, sizeof index, &index) || clEnqueueNDRangeKernel(q, k, 1, NULL, &one, NULL, 0, NULL, NULL) ||
        clEnqueueReadBuffer(q, out, CL_TRUE, 0, sizeof got, &got, 0, NULL, NULL))
        return 3;
    return index >= 0 && index < 64 && got == data[index] ? 0 : 4;
}

static unsigned char *read_back(cl_command_queue q, const guarded *g)
{
    unsigned char *b = malloc(g->total);
    cr_assert_eq(clEnqueueReadBuffer(q, g->parent, CL_TRUE, 0, g->total, b, 0, NULL, NULL), CL_SUCCESS);
    return b;
}

static void drop(guarded *g)
{
    if (g->sub) clReleaseMemObject(g->sub);
    if (g->parent) clReleaseMemObject(g->parent);
    fence_free(&g->fz);
    free(g->image);
    memset(g, 0, sizeof *g);
}

/* A garbage offset or length: extremes, just past the ends, negatives, or a plausible value. */
static int32_t garbage(uint64_t *rng, int total)
{
    switch (clattn_rng_next(rng) % 9) {
    case 0: return INT32_MIN;
    case 1: return INT32_MAX;
    case 2: return -1 - (int32_t)(clattn_rng_next(rng) % 1000);
    case 3: return total;
    case 4: return total + 1 + (int32_t)(clattn_rng_next(rng) % 1000);
    case 5: return 0;
    default: return (int32_t)(clattn_rng_next(rng) % (uint64_t)(total + 1));
    }
}

/* The host's copy of the kernels' clamp (kernels/common.cl, seq_range): is token `tok` in a
 * clamped sequence? */
static bool covered(const int32_t *cu, int batch, int total, int longest, int tok)
{
    for (int b = 0; b < batch; b++) {
        const int s = cu[b] < 0 ? 0 : cu[b] > total ? total : cu[b];
        const int e = cu[b + 1] < s ? s : cu[b + 1] > total ? total : cu[b + 1];
        const int len = e - s < longest ? e - s : longest;
        if (tok >= s && tok < s + len) return true;
    }
    return false;
}

typedef struct trial_case {
    char name[40]; /* inline: Criterion copies parameters into a new process, where pointers dangle */
    clattn_kernel_family family; /* with algo fused */
    clattn_algo algo;
    int varlen, seqused, splits, seq_q, mask;
    int backward; /* the backward pass: o, lse, d_o in; dq, dk, dv, dsinks out */
    int page;     /* a paged cache of pages this large (seqused_k required); with seq_q new tokens
                     appended and rotated unless varlen */
} trial_case;

static void trials(const trial_case *c, int n_trials)
{
    clattn_context *ctx = test_context_family(c->family);
    cl_context cl = clattn_context_cl_context(ctx);
    cl_device_id dev = clattn_context_device(ctx);
    cl_uint align_bits = 1024;
    clGetDeviceInfo(dev, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
    const size_t pad = align_bits / 8 > 64 ? align_bits / 8 : 64;
    cl_int e;
    cl_command_queue queue = clCreateCommandQueue(cl, dev, 0, &e);
    cr_assert_eq(e, CL_SUCCESS);

    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 3; d.heads_q = 4; d.heads_kv = 2; d.seq_q = c->seq_q; d.seq_kv = 40; d.head_dim = 16;
    d.causal = 1; d.algo = c->algo; d.num_splits = c->splits; d.has_seqused_k = c->seqused;
    d.has_mask = c->mask; d.has_alibi = c->mask;
    d.pass = c->backward ? CLATTN_PASS_BACKWARD : CLATTN_PASS_FORWARD;
    d.has_sinks = c->backward;
    if (c->varlen) {
        d.varlen = 1; d.layout = CLATTN_LAYOUT_BSHD; d.total_q = 2 * c->seq_q + 3; d.total_k = 70;
    }
    if (c->page) {
        d.page_size = c->page;
        d.pages_per_seq = (d.seq_kv + c->page - 1) / c->page;
        d.num_pages = d.batch * d.pages_per_seq + 2;
        if (!c->varlen) {
            d.seq_new = c->seq_q;
            d.rotary_dim = 8;
            d.rotary_positions = d.seq_kv;
        }
    }
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    cr_assert_eq(clattn_desc_tensor_sizes(&d, &n), CLATTN_SUCCESS);
    uint64_t rng = seed_for(c->name);
    float *q = malloc(n.q * 4), *k = malloc(n.k * 4), *v = malloc(n.v * 4), *mask = malloc(n.mask * 4 + 4);
    float alibi[4] = {0.5f, 0.25f, 0.125f, 0.0625f}, sinks[4] = {0.5f, -1.0f, 2.0f, 0.0f};
    float *o = malloc(n.o * 4), *dout = malloc(n.o * 4), *lse = malloc(n.lse * 4);
    float *knew = malloc(n.k_new * 4 + 4), *vnew = malloc(n.v_new * 4 + 4), *rot = malloc(n.rotary * 4 + 4);
    clattn_rng_fill(knew, n.k_new, &rng, 1);
    clattn_rng_fill(vnew, n.v_new, &rng, 1);
    clattn_rng_fill(rot, n.rotary, &rng, 1);
    int32_t *table = malloc(n.block_table * 4 + 4);
    clattn_rng_fill(o, n.o, &rng, 1);
    clattn_rng_fill(dout, n.o, &rng, 1);
    for (size_t i = 0; i < n.lse; i++) lse[i] = 3.0f + clattn_rng_uniform(&rng); /* finite, as a forward writes */
    clattn_rng_fill(q, n.q, &rng, 1);
    clattn_rng_fill(k, n.k, &rng, 1);
    clattn_rng_fill(v, n.v, &rng, 1);
    clattn_rng_fill(mask, n.mask, &rng, 1);
    clattn_plan *plan;
    cr_assert_eq(clattn_plan_create(ctx, &d, &plan), CLATTN_SUCCESS, "%s: %s", c->name, clattn_context_last_error(ctx));
    const size_t scratch = clattn_plan_scratch_size(plan);
    const int nb = d.batch;

    for (int trial = 0; trial < n_trials; trial++) {
        int32_t cuq[4], cuk[4], used[3];
        for (int i = 0; i <= nb; i++) {
            cuq[i] = garbage(&rng, d.total_q);
            cuk[i] = garbage(&rng, d.total_k);
        }
        for (int i = 0; i < nb; i++) used[i] = garbage(&rng, d.seq_kv);
        for (size_t i = 0; i < n.block_table; i++) table[i] = garbage(&rng, d.num_pages);
        guarded g[NTENSORS];
        memset(g, 0, sizeof g);
        /* inputs (never written): guard bytes in a third of the trials, else fenced by pages */
        const int fenced = trial % 3;
#define INPUT(t, data, bytes) \
    (fenced ? make_fenced(cl, &g[t], data, bytes, fenced == 1) : make(cl, &g[t], data, bytes, pad))
        INPUT(T_Q, q, n.q * 4);
        if (d.seq_new) { /* the append writes the caches: outputs */
            make(cl, &g[T_K], k, n.k * 4, pad);
            make(cl, &g[T_V], v, n.v * 4, pad);
        } else {
            INPUT(T_K, k, n.k * 4);
            INPUT(T_V, v, n.v * 4);
        }
        if (c->mask) INPUT(T_MASK, mask, n.mask * 4);
        if (c->mask) INPUT(T_ALIBI, alibi, sizeof alibi);
        if (c->seqused) INPUT(T_USED, used, sizeof(int32_t) * nb);
        if (c->varlen) INPUT(T_CUQ, cuq, sizeof(int32_t) * (nb + 1));
        if (c->varlen) INPUT(T_CUK, cuk, sizeof(int32_t) * (nb + 1));
        if (c->backward) {
            INPUT(T_O, o, n.o * 4);
            INPUT(T_LSE, lse, n.lse * 4);
        } else {
            make(cl, &g[T_O], NULL, n.o * 4, pad);
            make(cl, &g[T_LSE], NULL, n.lse * 4, pad);
        }
        if (scratch) make(cl, &g[T_SCRATCH], NULL, scratch, pad);
        if (c->page) INPUT(T_TABLE, table, n.block_table * 4);
        if (d.seq_new) {
            INPUT(T_KNEW, knew, n.k_new * 4);
            INPUT(T_VNEW, vnew, n.v_new * 4);
            INPUT(T_COS, rot, n.rotary * 4);
            INPUT(T_SIN, rot, n.rotary * 4);
        }
        if (c->backward) {
            INPUT(T_SINKS, sinks, sizeof sinks);
            INPUT(T_DO, dout, n.o * 4);
            make(cl, &g[T_DQ], NULL, n.q * 4, pad);
            make(cl, &g[T_DK], NULL, n.k * 4, pad);
            make(cl, &g[T_DV], NULL, n.v * 4, pad);
            make(cl, &g[T_DSINKS], NULL, sizeof sinks, pad);
        }
        clattn_buffers bf = CLATTN_BUFFERS_INIT;
        bf.q = g[T_Q].sub; bf.k = g[T_K].sub; bf.v = g[T_V].sub; bf.o = g[T_O].sub; bf.lse = g[T_LSE].sub;
        bf.sinks = g[T_SINKS].sub; bf.d_o = g[T_DO].sub; bf.dq = g[T_DQ].sub; bf.dk = g[T_DK].sub;
        bf.dv = g[T_DV].sub; bf.dsinks = g[T_DSINKS].sub;
        bf.mask = g[T_MASK].sub; bf.alibi_slopes = g[T_ALIBI].sub; bf.seqused_k = g[T_USED].sub;
        bf.cu_seqlens_q = g[T_CUQ].sub; bf.cu_seqlens_k = c->page ? NULL : g[T_CUK].sub; bf.scratch = g[T_SCRATCH].sub;
        bf.block_table = g[T_TABLE].sub; bf.k_new = g[T_KNEW].sub; bf.v_new = g[T_VNEW].sub;
        bf.rotary_cos = g[T_COS].sub; bf.rotary_sin = g[T_SIN].sub;
        cl_event ev = NULL;
        const clattn_status st = clattn_plan_execute(plan, queue, &bf, 0, NULL, &ev);
        cr_expect_eq(st, CLATTN_SUCCESS, "%s, trial %d: %s", c->name, trial, clattn_context_last_error(ctx));
        if (ev) {
            clWaitForEvents(1, &ev);
            clReleaseEvent(ev);
        }
        clFinish(queue);
#undef INPUT
        for (int t = 0; t < NTENSORS; t++) {
            if (g[t].fz.map) { /* a fenced input: unchanged */
                cr_expect(!memcmp(g[t].fz.host, g[t].image, g[t].bytes), "%s, trial %d: input %s changed", c->name,
                          trial, tensor_name[t]);
                continue;
            }
            if (!g[t].parent) continue;
            unsigned char *b = read_back(queue, &g[t]);
            /* outputs: o and lse in the forward, the gradients in the backward; scratch always */
            const bool output = t == T_SCRATCH || (c->backward ? t >= T_DQ && t <= T_DSINKS : t == T_O || t == T_LSE) ||
                                (d.seq_new && (t == T_K || t == T_V));
            size_t bad = g[t].total;
            for (size_t i = 0; i < g[t].total && bad == g[t].total; i++) {
                const bool inside = i >= g[t].pad && i < g[t].pad + g[t].bytes;
                if ((output ? !inside : true) && b[i] != g[t].image[i]) bad = i;
            }
            cr_expect_eq(bad, g[t].total, "%s, trial %d: %s byte %lld (relative to the tensor) changed", c->name,
                         trial, tensor_name[t], (long long)bad - (long long)g[t].pad);
            /* rows of tokens no clamped sequence covers: untouched */
            if (c->varlen && (c->backward ? t == T_DQ || t == T_DK || t == T_DV : t == T_O)) {
                const bool keys = t == T_DK || t == T_DV;
                const size_t row = (size_t)(keys ? d.heads_kv : d.heads_q) * d.head_dim * 4;
                const int32_t *cu = keys ? cuk : cuq;
                const int total = keys ? d.total_k : d.total_q, longest = keys ? d.seq_kv : d.seq_q;
                for (int tok = 0; tok < total; tok++)
                    if (!covered(cu, nb, total, longest, tok))
                        cr_expect(!memcmp(b + g[t].pad + tok * row, g[t].image + g[t].pad + tok * row, row),
                                  "%s, trial %d: %s row of token %d (in no sequence) was written", c->name, trial,
                                  tensor_name[t], tok);
            }
            free(b);
        }
        for (int t = 0; t < NTENSORS; t++) drop(&g[t]);
    }
    clattn_plan_destroy(plan);
    clReleaseCommandQueue(queue);
    free(q); free(k); free(v); free(mask); free(o); free(dout); free(lse);
    free(knew); free(vnew); free(rot); free(table);
    clattn_context_destroy(ctx);
}

#define FUSED_CASES(fam, tag)                                                                            \
    {tag " varlen", fam, CLATTN_ALGO_FUSED, 1, 0, 1, 20, 0},                                              \
    {tag " varlen seqused", fam, CLATTN_ALGO_FUSED, 1, 1, 1, 20, 0},                                      \
    {tag " varlen seqused splits", fam, CLATTN_ALGO_FUSED, 1, 1, 3, 20, 0},                               \
    {tag " varlen mask alibi", fam, CLATTN_ALGO_FUSED, 1, 1, 1, 7, 1},                                    \
    {tag " seqused decode splits", fam, CLATTN_ALGO_FUSED, 0, 1, 3, 1, 0},                              \
    {tag " paged append rotary splits", fam, CLATTN_ALGO_FUSED, 0, 1, 3, 2, 0, 0, 3},                     \
    {tag " paged varlen", fam, CLATTN_ALGO_FUSED, 1, 1, 1, 20, 0, 0, 16}

ParameterizedTestParameters(device_ints, garbage)
{
    static trial_case cases[] = {
        FUSED_CASES(CLATTN_KERNELS_ROWS, "rows"),
        FUSED_CASES(CLATTN_KERNELS_TILES, "tiles"),
        {"unfused varlen seqused", CLATTN_KERNELS_AUTO, CLATTN_ALGO_UNFUSED, 1, 1, 0, 20, 0},
        {"unfused varlen mask alibi", CLATTN_KERNELS_AUTO, CLATTN_ALGO_UNFUSED, 1, 1, 0, 7, 1},
        {"unfused seqused", CLATTN_KERNELS_AUTO, CLATTN_ALGO_UNFUSED, 0, 1, 0, 5, 0},
        {"unfused paged append rotary", CLATTN_KERNELS_AUTO, CLATTN_ALGO_UNFUSED, 0, 1, 0, 3, 0, 0, 1},
        {"unfused paged varlen", CLATTN_KERNELS_AUTO, CLATTN_ALGO_UNFUSED, 1, 1, 0, 9, 0, 0, 4},
        {"backward rows varlen seqused", CLATTN_KERNELS_ROWS, CLATTN_ALGO_FUSED, 1, 1, 0, 20, 0, 1},
        {"backward rows varlen mask alibi", CLATTN_KERNELS_ROWS, CLATTN_ALGO_FUSED, 1, 1, 0, 7, 1, 1},
        {"backward tiles varlen seqused", CLATTN_KERNELS_TILES, CLATTN_ALGO_FUSED, 1, 1, 0, 20, 0, 1},
        {"backward tiles varlen mask alibi", CLATTN_KERNELS_TILES, CLATTN_ALGO_FUSED, 1, 1, 0, 7, 1, 1},
        {"backward unfused varlen seqused", CLATTN_KERNELS_AUTO, CLATTN_ALGO_UNFUSED, 1, 1, 0, 20, 0, 1},
        {"backward unfused varlen mask", CLATTN_KERNELS_AUTO, CLATTN_ALGO_UNFUSED, 1, 1, 0, 7, 1, 1},
        {"backward rows seqused", CLATTN_KERNELS_ROWS, CLATTN_ALGO_FUSED, 0, 1, 0, 5, 0, 1},
    };
    return cr_make_param_array(trial_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(trial_case *c, device_ints, garbage, .timeout = 600)
{
    trials(c, 40);
}

/* The fences work on this device: the last element of a fenced buffer reads back, one past the
 * end or one before the start faults. Where they do not (a device that copies its buffers), the
 * fenced trials above check nothing more than the guard bytes, and this test says so (skipped). */
Test(device_ints, fences_fault, .timeout = 120)
{
    const int index[3] = {63, 64, -1};
    const char *what[3] = {"the last element", "one past the end", "one before the start"};
    for (int i = 0; i < 3; i++) {
        const pid_t pid = fork();
        cr_assert(pid >= 0, "fork");
        if (pid == 0) _exit(fence_child(index[i]));
        int status = 0;
        waitpid(pid, &status, 0);
        cr_assert(WIFEXITED(status), "reading %s: the child ended by signal %d", what[i],
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        if (WEXITSTATUS(status) == FENCE_SKIP) cr_skip_test("not a CPU device: its buffers may be copies");
        cr_assert_eq(WEXITSTATUS(status), i == 0 ? 0 : FENCE_FAULT, "reading %s of a fenced buffer: exit %d", what[i],
                     WEXITSTATUS(status));
    }
}
