#include "suite.h"
#include "cli.h"
#include "metrics.h"
#include "rng.h"
#include "sampled.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ids are stable: new cases get new numbers, old numbers never change meaning. */
const bench_case bench_suite[] = {
    /* prefill */
    {1, 1, 8, 8, 512, 512, 64, 0, true},
    {2, 1, 8, 8, 512, 512, 64, 1, true},
    {3, 1, 8, 8, 2048, 2048, 64, 0, false},
    {4, 1, 8, 8, 2048, 2048, 64, 1, false},
    {5, 1, 8, 8, 2048, 2048, 128, 0, false},
    {6, 1, 8, 8, 2048, 2048, 128, 1, false},
    {7, 2, 16, 16, 1024, 1024, 64, 1, false},
    {8, 4, 32, 8, 512, 512, 128, 1, false},
    {9, 1, 32, 8, 2048, 2048, 128, 1, false},
    {10, 1, 8, 8, 4096, 4096, 64, 1, false},
    {11, 1, 8, 8, 8192, 8192, 64, 1, false},
    {12, 1, 8, 8, 128, 128, 64, 0, true}, /* a small call: launch overhead */
    /* decode (seq_q = 1) and short speculative decode */
    {20, 1, 32, 8, 1, 4096, 128, 1, true},
    {21, 1, 32, 8, 1, 32768, 128, 1, false},
    {22, 4, 32, 8, 1, 8192, 128, 1, false},
    {23, 1, 32, 32, 1, 16384, 128, 1, false},
    {24, 1, 32, 8, 4, 8192, 128, 1, false},
    /* case 21's decode on a paged cache (pages in random order), and with the append */
    {25, 1, 32, 8, 1, 32768, 128, 1, false, 1},
    {26, 1, 32, 8, 1, 32768, 128, 1, false, 16},
    {27, 1, 32, 8, 1, 32768, 128, 1, false, 256},
    {28, 1, 32, 8, 1, 32768, 128, 1, false, 16, true},
    {29, 1, 32, 8, 1, 32768, 128, 1, false, 16, false, true}, /* the table in page order */
    {30, 1, 32, 8, 1, 32768, 128, 1, false, 256, false, true},
};
const int bench_suite_size = (int)(sizeof bench_suite / sizeof bench_suite[0]);

void bench_case_name(const bench_case *c, char *buf, size_t size)
{
    snprintf(buf, size, "%dx%dx%dx%dx%dx%d%s", c->b, c->hq, c->hkv, c->nq, c->nk, c->d, c->causal ? "c" : "");
    if (c->page) {
        const size_t n = strlen(buf);
        snprintf(buf + n, size > n ? size - n : 0, " p%d%s%s", c->page, c->append_rotary ? "+rope" : "",
                 c->pages_in_order ? " seq" : "");
    }
}

double bench_flops(const bench_case *c)
{
    double f = 4.0 * c->b * c->hq * (double)c->nq * c->nk * c->d;
    return c->causal && c->nq == c->nk ? f / 2 : f;
}

double bench_bytes(const bench_case *c, clattn_dtype dtype)
{
    const double es = (double)clattn_dtype_size(dtype);
    return es * ((double)c->b * c->hq * c->nq * c->d * 2 + (double)c->b * c->hkv * c->nk * c->d * 2);
}

const char *bench_pass_name(bench_pass p) { return p == PASS_BACKWARD ? "backward" : "forward"; }

double bench_row_flops(const bench_row *r) { return bench_flops(&r->c) * (r->pass == PASS_BACKWARD ? 2.5 : 1.0); }

double bench_row_bytes(const bench_row *r)
{
    if (r->pass == PASS_FORWARD) return bench_bytes(&r->c, r->dtype);
    const bench_case *c = &r->c; /* q, o, d_o read and dq written; k, v read and dk, dv written */
    const double es = (double)clattn_dtype_size(r->dtype);
    return es * (4.0 * c->b * c->hq * c->nq * c->d + 4.0 * c->b * c->hkv * c->nk * c->d) + 4.0 * c->b * c->hq * c->nq;
}

const char *bench_algo_name(bench_algo a)
{
    return a == ALGO_FUSED ? "fused" : a == ALGO_UNFUSED ? "unfused" : "reference";
}

clattn_desc bench_desc(const bench_case *c, clattn_dtype dtype, bench_algo algo)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = c->b; d.heads_q = c->hq; d.heads_kv = c->hkv; d.seq_q = c->nq; d.seq_kv = c->nk;
    d.head_dim = c->d; d.causal = c->causal; d.dtype = dtype;
    d.algo = algo == ALGO_UNFUSED ? CLATTN_ALGO_UNFUSED : CLATTN_ALGO_FUSED;
    return d;
}

bool bench_is_decode(const bench_case *c)
{
    const clattn_desc d = bench_desc(c, CLATTN_DTYPE_F32, ALGO_FUSED);
    const char *cls = clattn_tuning_class(&d);
    return cls && !strncmp(cls, "decode", 6);
}

static float load(const void *p, clattn_dtype t, size_t i)
{
    if (t == CLATTN_DTYPE_F16) return clattn_f16_to_f32(((const uint16_t *)p)[i]);
    if (t == CLATTN_DTYPE_BF16) return clattn_bf16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}


/* Error of o/lse against the reference: every row when that is cheap, else a spread of rows,
 * each computed on its own (one query row of one head against its allowed keys). */
static void check(const bench_case *c, clattn_dtype dt, const void *q, const void *k, const void *v,
                  const void *o, const float *lse, bench_row *row)
{
    const size_t es = clattn_dtype_size(dt);
    const double macs = (double)c->b * c->hq * c->nq * c->nk * c->d;
    double num = 0, den = 0, max_abs = 0;
    size_t bad = 0;
    const int total_rows = c->b * c->hq * c->nq;
    const int want = macs <= 3e8 ? total_rows : (total_rows < 24 ? total_rows : 24);
    float *ro = malloc(sizeof(float) * (size_t)c->d), *rv = malloc(es * (size_t)c->d);
    for (int s = 0; s < want; s++) {
        /* rows spread evenly, the last row always included */
        const long r = want == total_rows ? s : (long)((double)s * (total_rows - 1) / (want - 1));
        const int i = (int)(r % c->nq), h = (int)(r / c->nq % c->hq), b = (int)(r / ((long)c->nq * c->hq));
        const int g = h / (c->hq / c->hkv);
        const int hi = c->causal ? (i + c->nk - c->nq + 1 < c->nk ? i + c->nk - c->nq + 1 : c->nk) : c->nk;
        const size_t orow = (((size_t)b * c->hq + h) * c->nq + i) * c->d;
        float ref_lse = -INFINITY;
        if (hi <= 0) {
            for (int x = 0; x < c->d; x++) ro[x] = 0.0f;
        } else {
            clattn_desc d = CLATTN_DESC_INIT;
            d.batch = 1; d.heads_q = 1; d.seq_q = 1; d.seq_kv = hi; d.head_dim = c->d; d.dtype = dt;
            d.scale = (float)(1.0 / sqrt((double)c->d));
            clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
            t.q = (const char *)q + orow * es;
            t.k = (const char *)k + (((size_t)b * c->hkv + g) * c->nk) * c->d * es;
            t.v = (const char *)v + (((size_t)b * c->hkv + g) * c->nk) * c->d * es;
            t.o = rv;
            t.lse = &ref_lse;
            t.q_len = (size_t)c->d; t.k_len = t.v_len = (size_t)hi * c->d; t.o_len = (size_t)c->d; t.lse_len = 1;
            clattn_reference_forward(&d, &t, NULL, 0);
            for (int x = 0; x < c->d; x++) ro[x] = load(rv, dt, (size_t)x);
        }
        for (int x = 0; x < c->d; x++) {
            const double got = load(o, dt, orow + x), diff = fabs(got - ro[x]);
            if (!isfinite(got)) bad++;
            num += diff * diff;
            den += (double)ro[x] * ro[x];
            if (diff > max_abs) max_abs = diff;
        }
        const float gl = lse[orow / c->d];
        if (!(gl == ref_lse || fabs(gl - ref_lse) <= 1e-4 * (1 + fabs(ref_lse)))) bad++;
    }
    free(ro);
    free(rv);
    row->checked_rows = want;
    row->rel_l2 = bad ? INFINITY : sqrt(num / (den > 0 ? den : 1));
    row->max_abs = bad ? INFINITY : max_abs;
}

/* Random storage-typed data. */
static void fill(void *p, size_t n, clattn_dtype dt, uint64_t *rng)
{
    for (size_t i = 0; i < n; i++) {
        const float x = clattn_rng_uniform(rng);
        if (dt == CLATTN_DTYPE_F32) ((float *)p)[i] = x;
        else ((uint16_t *)p)[i] = dt == CLATTN_DTYPE_F16 ? clattn_f32_to_f16(x) : clattn_f32_to_bf16(x);
    }
}

/* Median time per call of `plan` on `bf`: calls enqueued back to back (pipelined) in samples
 * of k_calls calls, k_calls chosen so that a sample lasts about 20 ms; the time per call is
 * the sample / k. */
static int time_calls(const clattn_plan *plan, cl_command_queue queue, const clattn_buffers *bf, double budget_ms,
                      double *samples, int *ns, int *k_calls)
{
    double t0 = cli_now_ms();
    int st = clattn_plan_execute(plan, queue, bf, 0, NULL, NULL);
    if (!st) st = clFinish(queue);
    const double one = cli_now_ms() - t0;
    *k_calls = one >= 20 ? 1 : (int)(20 / (one > 0.001 ? one : 0.001));
    if (*k_calls > 10000) *k_calls = 10000;
    for (double spent = 0; !st && (*ns < 3 || (spent < budget_ms && *ns < 64));) {
        t0 = cli_now_ms();
        for (int r = 0; r < *k_calls && !st; r++) st = clattn_plan_execute(plan, queue, bf, 0, NULL, NULL);
        if (!st) st = clFinish(queue);
        const double t = cli_now_ms() - t0;
        samples[(*ns)++] = t / *k_calls;
        spent += t;
    }
    return st;
}

/* A plan for the row, or the row marked unsupported / error with the library's reason. */
static clattn_status row_plan(clattn_context *ctx, const clattn_desc *d, const clattn_tuning *tuning, clattn_plan **plan,
                              bench_row *row)
{
    const clattn_status st = clattn_plan_create_tuned(ctx, d, tuning, plan);
    if (st) {
        snprintf(row->status, sizeof row->status, st == CLATTN_UNSUPPORTED ? "unsupported" : "error");
        clattn_context_copy_last_error(ctx, row->reason, sizeof row->reason);
    }
    return st;
}

/* The row's variant, parameters and their source, and the plan's scratch in its memory. */
static void describe_plan(bench_row *row, const clattn_plan *plan)
{
    snprintf(row->variant, sizeof row->variant, "%s", clattn_plan_variant(plan));
    row->tuning = (clattn_tuning)CLATTN_TUNING_INIT;
    snprintf(row->tuning_source, sizeof row->tuning_source, "%s", clattn_plan_tuning(plan, &row->tuning));
    row->mem_bytes += (double)clattn_plan_scratch_size(plan);
}

/* The row's times and rates from its samples (sorted here). */
static void set_times(bench_row *row, double *samples, int ns, int k_calls)
{
    qsort(samples, (size_t)ns, sizeof samples[0], cli_cmp_double);
    row->samples = ns;
    row->calls_per_sample = k_calls;
    row->ms_min = samples[0];
    row->ms_max = samples[ns - 1];
    row->ms_median = cli_median(samples, ns);
    row->gflops = bench_row_flops(row) / (row->ms_median * 1e6);
    row->gbs = bench_row_bytes(row) / (row->ms_median * 1e6);
}

/* A backward row: the device forward gives o and lse (as a training step has them), d_o is
 * random; the gradients are checked on a sample of rows and keys (sampled.c) before timing.
 * The reference is not timed for the backward. */
static void run_backward(clattn_context *ctx, const device_peak *peak, const bench_case *c, bench_algo algo,
                         const bench_opts *opts, bench_row *row)
{
    const clattn_dtype dt = opts->dtype;
    if (algo == ALGO_REFERENCE) {
        snprintf(row->status, sizeof row->status, "unsupported");
        snprintf(row->reason, sizeof row->reason, "the CPU reference's backward is not timed");
        return;
    }
    clattn_desc fd = bench_desc(c, dt, algo), bd = fd;
    fd.algo = CLATTN_ALGO_AUTO; /* the forward that feeds it: whichever path serves best */
    bd.pass = CLATTN_PASS_BACKWARD;
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&bd, &n);
    const size_t es = clattn_dtype_size(dt), sizes[9] = {n.q, n.k, n.v, n.o, n.lse, n.o, n.q, n.k, n.v};
    const size_t bytes[9] = {n.q * es, n.k * es, n.v * es, n.o * es, n.lse * 4, n.o * es, n.q * es, n.k * es, n.v * es};
    void *host[9] = {NULL}; /* q k v o lse d_o dq dk dv */
    cl_mem mem[9] = {NULL};
    clattn_plan *fwd = NULL, *plan = NULL;
    cl_command_queue queue = NULL;
    double samples[64];
    int ns = 0, k_calls = 1;
    row->mem_bytes = 0;
    for (int i = 0; i < 9; i++) {
        row->mem_bytes += (double)bytes[i];
        if (!(host[i] = malloc(bytes[i] + 4))) {
            snprintf(row->reason, sizeof row->reason, "out of host memory");
            goto done;
        }
    }
    uint64_t rng = row->seed;
    fill(host[0], sizes[0], dt, &rng);
    fill(host[1], sizes[1], dt, &rng);
    fill(host[2], sizes[2], dt, &rng);
    fill(host[5], sizes[5], dt, &rng);
    clattn_status st = row_plan(ctx, &bd, opts->tuning, &plan, row);
    if (!st) st = row_plan(ctx, &fd, NULL, &fwd, row);
    if (st) goto done;
    describe_plan(row, plan);
    cl_int e;
    cl_context cl = clattn_context_cl_context(ctx);
    queue = clCreateCommandQueue(cl, clattn_context_device(ctx), 0, &e);
    for (int i = 0; i < 9 && !e; i++) {
        const bool input = i < 3 || i == 5;
        mem[i] = clCreateBuffer(cl, input ? CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR : CL_MEM_READ_WRITE, bytes[i],
                                input ? host[i] : NULL, &e);
    }
    const cl_uchar poison = 0xff; /* NaN in every storage type: an unwritten gradient fails the check */
    for (int i = 6; i < 9 && !e; i++) e = clEnqueueFillBuffer(queue, mem[i], &poison, 1, 0, bytes[i], 0, NULL, NULL);
    if (e) {
        snprintf(row->reason, sizeof row->reason, "allocating device buffers failed (%d)", e);
        goto done;
    }
    clattn_buffers bf = CLATTN_BUFFERS_INIT;
    bf.q = mem[0]; bf.k = mem[1]; bf.v = mem[2]; bf.o = mem[3]; bf.lse = mem[4];
    bf.d_o = mem[5]; bf.dq = mem[6]; bf.dk = mem[7]; bf.dv = mem[8];
    /* the forward once (untimed), then one backward call, checked before any timing */
    st = clattn_plan_execute(fwd, queue, &bf, 0, NULL, NULL);
    if (!st) st = clattn_plan_execute(plan, queue, &bf, 0, NULL, NULL);
    if (!st) st = clFinish(queue);
    for (int i = 3; i < 9 && !st; i++)
        if (i != 5) st = clEnqueueReadBuffer(queue, mem[i], CL_TRUE, 0, bytes[i], host[i], 0, NULL, NULL);
    if (st) {
        snprintf(row->reason, sizeof row->reason, "execution failed (%d): %s", st, clattn_context_last_error(ctx));
        goto done;
    }
    if (opts->inject_error) { /* test-only hook: a wrong kernel must show as wrong */
        if (dt == CLATTN_DTYPE_F32) ((float *)host[7])[n.k - 1] += 1.0f;
        else ((uint16_t *)host[7])[n.k - 1] ^= 0x4000;
    }
    const sampled_case sc = {c->b, c->hq, c->hkv, c->nq, c->nk, c->d, c->causal, dt};
    sampled_error se;
    if (sampled_backward_check(&sc, host[0], host[1], host[2], host[3], host[4], host[5], host[6], host[7], host[8],
                               24, &se)) {
        snprintf(row->reason, sizeof row->reason, "out of host memory");
        goto done;
    }
    row->checked_rows = se.rows;
    row->rel_l2 = se.nonfinite ? INFINITY : fmax(se.dq, fmax(se.dk, se.dv));
    row->max_abs = NAN;
    if (!(row->rel_l2 <= clattn_grad_tolerance(dt))) {
        snprintf(row->status, sizeof row->status, "wrong");
        snprintf(row->reason, sizeof row->reason, "relative L2 error %.3g (dq %.2g, dk %.2g, dv %.2g over %d rows and "
                 "%d keys) above the bound %.0e", row->rel_l2, se.dq, se.dk, se.dv, se.rows, se.keys,
                 clattn_grad_tolerance(dt));
        goto done;
    }
    if ((st = time_calls(plan, queue, &bf, opts->budget_ms, samples, &ns, &k_calls))) {
        snprintf(row->reason, sizeof row->reason, "execution failed (%d): %s", st, clattn_context_last_error(ctx));
        goto done;
    }
    set_times(row, samples, ns, k_calls);
    bench_row_shares(row, peak);
    snprintf(row->status, sizeof row->status, "ok");
done:
    for (int i = 0; i < 9; i++) {
        if (mem[i]) clReleaseMemObject(mem[i]);
        free(host[i]);
    }
    if (queue) clReleaseCommandQueue(queue);
    clattn_plan_destroy(plan);
    clattn_plan_destroy(fwd);
}

/* The paged call's dense twins: the same shape on dense q, k, v (random) in BHSD layout (each KV
 * head's keys one run: the dense decode's own best case on a CPU) and in BSHD layout (a token's
 * heads side by side, as in the paged cache and in flash_attn_with_kvcache's dense cache: the
 * same reads without the block table). Each is timed in alternation with the paged call, sample
 * for sample, so that drift on a shared machine moves them alike. ms[t]: twin t's median ms per
 * call, NaN when it could not run; share[t]: the median of the pairs' twin / paged time. */
enum { TWIN_BHSD, TWIN_BSHD, TWINS };
static void dense_twins(clattn_context *ctx, const bench_case *c, bench_algo algo, const bench_opts *opts,
                        const clattn_plan *paged, cl_command_queue queue, const clattn_buffers *paged_bf,
                        int k_calls, double *paged_samples, int *paged_ns, double ms[TWINS], double share[TWINS])
{
    static const clattn_layout layouts[TWINS] = {CLATTN_LAYOUT_BHSD, CLATTN_LAYOUT_BSHD};
    cl_context cl = clattn_context_cl_context(ctx);
    const size_t es = clattn_dtype_size(opts->dtype);
    cl_mem mem[TWINS][4] = {{0}};
    clattn_plan *plan[TWINS] = {0};
    clattn_buffers bf[TWINS];
    bool ok[TWINS];
    double dense[TWINS][64], ratio[64];
    int nd = 0;
    for (int t = 0; t < TWINS; t++) {
        ms[t] = share[t] = NAN;
        clattn_desc d = bench_desc(c, opts->dtype, algo);
        d.num_splits = opts->num_splits;
        d.layout = layouts[t];
        clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
        clattn_desc_tensor_sizes(&d, &n);
        const size_t bytes[4] = {n.q * es, n.k * es, n.v * es, n.o * es};
        cl_int e = clattn_plan_create_tuned(ctx, &d, opts->tuning, &plan[t]);
        const cl_uchar byte = 0x3c; /* 0x3c3c3c3c: about 0.011 in f32, finite in every storage type */
        for (int i = 0; i < 4 && !e; i++) mem[t][i] = clCreateBuffer(cl, CL_MEM_READ_WRITE, bytes[i], NULL, &e);
        for (int i = 0; i < 3 && !e; i++) e = clEnqueueFillBuffer(queue, mem[t][i], &byte, 1, 0, bytes[i], 0, NULL, NULL);
        bf[t] = (clattn_buffers)CLATTN_BUFFERS_INIT;
        bf[t].q = mem[t][0]; bf[t].k = mem[t][1]; bf[t].v = mem[t][2]; bf[t].o = mem[t][3];
        if (!e) e = clattn_plan_execute(plan[t], queue, &bf[t], 0, NULL, NULL); /* warm-up */
        if (!e) e = clFinish(queue);
        ok[t] = !e;
    }
    *paged_ns = 0;
    cl_int e = CL_SUCCESS;
    for (double spent = 0; !e && (nd < 3 || (spent < opts->budget_ms && nd < 64));) {
        for (int which = 0; which <= TWINS && !e; which++) {
            if (which && !ok[which - 1]) continue;
            const clattn_plan *pl = which ? plan[which - 1] : paged;
            const clattn_buffers *b = which ? &bf[which - 1] : paged_bf;
            const double t0 = cli_now_ms();
            for (int r = 0; r < k_calls && !e; r++) e = clattn_plan_execute(pl, queue, b, 0, NULL, NULL);
            if (!e) e = clFinish(queue);
            const double t = cli_now_ms() - t0;
            if (which) dense[which - 1][nd] = t / k_calls;
            else paged_samples[(*paged_ns)++] = t / k_calls;
            spent += t;
        }
        if (!e) nd++;
    }
    for (int t = 0; t < TWINS && nd && !e; t++) {
        if (!ok[t]) continue;
        for (int i = 0; i < nd; i++) ratio[i] = dense[t][i] / paged_samples[i];
        qsort(ratio, (size_t)nd, sizeof ratio[0], cli_cmp_double);
        share[t] = cli_median(ratio, nd);
        qsort(dense[t], (size_t)nd, sizeof dense[t][0], cli_cmp_double);
        ms[t] = cli_median(dense[t], nd);
    }
    if (e) *paged_ns = 0; /* a failed pass: the first samples stand */
    for (int t = 0; t < TWINS; t++) {
        for (int i = 0; i < 4; i++)
            if (mem[t][i]) clReleaseMemObject(mem[t][i]);
        clattn_plan_destroy(plan[t]);
    }
}

/* A paged row: the cache (num_pages, page, Hkv, d) holds each sequence's keys in pages of a
 * random permutation, seqused_k the keys before the call; with append_rotary the call appends
 * its token, rotated (every position gets the same one each call: the calls are alike). The
 * result is checked against the whole reference before timing. */
static void run_paged(clattn_context *ctx, const device_peak *peak, const bench_case *c, bench_algo algo,
                      const bench_opts *opts, bench_row *row)
{
    const clattn_dtype dt = opts->dtype;
    const size_t es = clattn_dtype_size(dt);
    clattn_desc d = bench_desc(c, dt, algo);
    d.num_splits = opts->num_splits;
    d.page_size = c->page;
    d.pages_per_seq = (c->nk + c->page - 1) / c->page;
    d.num_pages = c->b * d.pages_per_seq;
    d.has_seqused_k = 1;
    if (c->append_rotary) {
        d.seq_new = c->nq;
        d.rotary_dim = c->d;
        d.rotary_positions = c->nk;
    }
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_plan *plan = NULL;
    cl_command_queue queue = NULL;
    enum { Q, K, V, O, LSE, TABLE, USED, KNEW, VNEW, COS, SIN, NBUF };
    void *host[NBUF] = {0};
    cl_mem mem[NBUF] = {0};
    void *ref_o = NULL;
    float *ref_lse = NULL;
    clattn_status st = clattn_desc_tensor_sizes(&d, &n);
    const size_t bytes[NBUF] = {n.q * es, n.k * es, n.v * es, n.o * es, n.lse * 4, n.block_table * 4,
                                (size_t)c->b * 4, n.k_new * es, n.v_new * es, n.rotary * 4, n.rotary * 4};
    for (int i = 0; i < NBUF && !st; i++)
        if (bytes[i] && !(host[i] = malloc(bytes[i]))) st = CLATTN_OUT_OF_HOST_MEMORY;
    if (st || !(ref_o = malloc(bytes[O])) || !(ref_lse = malloc(bytes[LSE]))) {
        snprintf(row->reason, sizeof row->reason, "out of host memory or sizes: %s", clattn_status_string(st));
        goto done;
    }
    row->mem_bytes = 0;
    for (int i = 0; i < NBUF; i++) row->mem_bytes += (double)bytes[i];
    uint64_t rng = row->seed;
    const int fillers[5] = {Q, K, V, KNEW, VNEW};
    const size_t counts[5] = {n.q, n.k, n.v, n.k_new, n.v_new};
    for (int i = 0; i < 5; i++)
        if (host[fillers[i]]) fill(host[fillers[i]], counts[i], dt, &rng);
    int32_t *table = host[TABLE], *used = host[USED];
    for (int p = 0; p < d.num_pages; p++) table[p] = p;
    for (int p = d.num_pages - 1; p > 0 && !c->pages_in_order; p--) { /* fragmented: pages in random order */
        const int j = (int)(clattn_rng_next(&rng) % (uint64_t)(p + 1));
        const int32_t t = table[p]; table[p] = table[j]; table[j] = t;
    }
    for (int b = 0; b < c->b; b++) used[b] = c->nk - d.seq_new;
    for (size_t i = 0; i < n.rotary; i++) { /* RoPE angles */
        const int pos = (int)(i / (size_t)(c->d / 2)), f = (int)(i % (size_t)(c->d / 2));
        const double th = pos * pow(10000.0, -2.0 * f / c->d);
        ((float *)host[COS])[i] = (float)cos(th);
        ((float *)host[SIN])[i] = (float)sin(th);
    }
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = host[Q]; t.k = host[K]; t.v = host[V]; t.o = ref_o; t.lse = ref_lse;
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o; t.lse_len = n.lse;
    t.block_table = table; t.seqused_k = used; t.k_new = host[KNEW]; t.v_new = host[VNEW];
    t.k_new_len = n.k_new; t.v_new_len = n.v_new; t.rotary_cos = host[COS]; t.rotary_sin = host[SIN];
    char msg[400];
    if ((st = clattn_reference_forward(&d, &t, msg, sizeof msg))) {
        snprintf(row->reason, sizeof row->reason, "reference: %s", msg);
        goto done;
    }
    double samples[64];
    int ns = 0, k_calls = 1;
    if ((st = row_plan(ctx, &d, opts->tuning, &plan, row))) goto done;
    describe_plan(row, plan);
    cl_int e;
    cl_context cl = clattn_context_cl_context(ctx);
    queue = clCreateCommandQueue(cl, clattn_context_device(ctx), 0, &e);
    for (int i = 0; i < NBUF && !e; i++) {
        if (!bytes[i]) continue;
        const bool out = i == O || i == LSE || ((i == K || i == V) && d.seq_new);
        mem[i] = clCreateBuffer(cl, out ? CL_MEM_READ_WRITE | (i < O ? CL_MEM_COPY_HOST_PTR : 0)
                                        : CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, bytes[i],
                                i == O || i == LSE ? NULL : host[i], &e);
    }
    const cl_uchar poison = 0xff;
    for (int i = O; i <= LSE && !e; i++) e = clEnqueueFillBuffer(queue, mem[i], &poison, 1, 0, bytes[i], 0, NULL, NULL);
    if (e) {
        snprintf(row->reason, sizeof row->reason, "allocating device buffers failed (%d)", e);
        goto done;
    }
    clattn_buffers bf = CLATTN_BUFFERS_INIT;
    bf.q = mem[Q]; bf.k = mem[K]; bf.v = mem[V]; bf.o = mem[O]; bf.lse = mem[LSE]; bf.block_table = mem[TABLE];
    bf.seqused_k = mem[USED]; bf.k_new = mem[KNEW]; bf.v_new = mem[VNEW]; bf.rotary_cos = mem[COS];
    bf.rotary_sin = mem[SIN];
    if ((st = clattn_plan_execute(plan, queue, &bf, 0, NULL, NULL)) || (st = clFinish(queue)) ||
        (st = clEnqueueReadBuffer(queue, mem[O], CL_TRUE, 0, bytes[O], host[O], 0, NULL, NULL))) {
        snprintf(row->reason, sizeof row->reason, "execution failed (%d): %s", st, clattn_context_last_error(ctx));
        goto done;
    }
    if (opts->inject_error) {
        if (dt == CLATTN_DTYPE_F32) ((float *)host[O])[n.o - 1] += 1.0f;
        else ((uint16_t *)host[O])[n.o - 1] ^= 0x4000;
    }
    float *got = malloc(n.o * 4), *want = malloc(n.o * 4);
    if (got && want) {
        for (size_t i = 0; i < n.o; i++) {
            got[i] = load(host[O], dt, i);
            want[i] = load(ref_o, dt, i);
        }
        const clattn_error err = clattn_compare(got, want, n.o, (size_t)c->d);
        row->rel_l2 = err.mismatched_special ? INFINITY : err.rel_l2;
        row->max_abs = err.mismatched_special ? INFINITY : err.max_abs;
        row->checked_rows = c->b * c->hq * c->nq;
    }
    free(got);
    free(want);
    if (!(row->rel_l2 <= clattn_tolerance(dt))) {
        snprintf(row->status, sizeof row->status, "wrong");
        snprintf(row->reason, sizeof row->reason, "relative L2 error %.3g above the bound %.0e", row->rel_l2,
                 clattn_tolerance(dt));
        goto done;
    }
    /* a warm-up that sets the calls per sample (its samples stand only if the twins fail), then
     * the whole budget for the alternation: on a shared 2-core VM one pair's dense / paged ratio
     * ranged 0.6-1.3 within a row, so the row's median wants every pair it can get (twice the
     * pairs of half the budget; bench/NOTES.md change 32) */
    if ((st = time_calls(plan, queue, &bf, opts->budget_ms / 4, samples, &ns, &k_calls))) {
        snprintf(row->reason, sizeof row->reason, "execution failed (%d): %s", st, clattn_context_last_error(ctx));
        goto done;
    }
    /* the paged and the dense calls in alternation: these samples replace the first ones */
    double paired[64];
    int np = 0;
    double twin_ms[TWINS], twin_share[TWINS];
    dense_twins(ctx, c, algo, opts, plan, queue, &bf, k_calls, paired, &np, twin_ms, twin_share);
    row->dense_ms = twin_ms[TWIN_BHSD];
    row->dense_share = twin_share[TWIN_BHSD];
    row->bshd_ms = twin_ms[TWIN_BSHD];
    row->bshd_share = twin_share[TWIN_BSHD];
    if (np >= 3) {
        memcpy(samples, paired, sizeof(double) * (size_t)np);
        ns = np;
    }
    set_times(row, samples, ns, k_calls);
    bench_row_shares(row, peak);
    snprintf(row->status, sizeof row->status, "ok");
done:
    for (int i = 0; i < NBUF; i++) {
        if (mem[i]) clReleaseMemObject(mem[i]);
        free(host[i]);
    }
    free(ref_o);
    free(ref_lse);
    if (queue) clReleaseCommandQueue(queue);
    clattn_plan_destroy(plan);
}

void bench_row_shares(bench_row *row, const device_peak *peak)
{
    row->pct_flops = peak && peak->fma_gflops > 0 ? 100 * row->gflops / peak->fma_gflops : NAN;
    row->pct_bw = peak && peak->read_gbs > 0 ? 100 * row->gbs / peak->read_gbs : NAN;
}

void bench_run(clattn_context *ctx, const device_peak *peak, const bench_case *c, bench_algo algo,
               const bench_opts *opts, bench_row *row)
{
    const clattn_dtype dt = opts->dtype;
    memset(row, 0, sizeof *row);
    row->c = *c;
    row->pass = opts->pass;
    row->dtype = dt;
    row->algo = algo;
    row->seed = 0x5eed0000ull + (uint64_t)c->id;
    row->rel_l2 = row->max_abs = row->dense_ms = row->dense_share = row->bshd_ms = row->bshd_share = NAN;
    snprintf(row->status, sizeof row->status, "error");
    clattn_desc d = bench_desc(c, dt, algo);
    d.num_splits = opts->num_splits;
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&d, &n);
    const size_t es = clattn_dtype_size(dt);
    row->mem_bytes = (double)((n.q + n.k + n.v + n.o) * es + n.lse * 4);
    if (opts->pass == PASS_BACKWARD && c->page) {
        snprintf(row->status, sizeof row->status, "unsupported");
        snprintf(row->reason, sizeof row->reason, "the backward pass does not read paged caches");
        return;
    }
    if (opts->pass == PASS_BACKWARD) {
        run_backward(ctx, peak, c, algo, opts, row);
        return;
    }
    if (c->page && algo == ALGO_REFERENCE) {
        snprintf(row->status, sizeof row->status, "unsupported");
        snprintf(row->reason, sizeof row->reason, "the reference checks paged rows; it is not timed on them");
        return;
    }
    if (c->page) {
        run_paged(ctx, peak, c, algo, opts, row);
        return;
    }
    if (algo == ALGO_REFERENCE && bench_flops(c) > 2e9) {
        snprintf(row->status, sizeof row->status, "unsupported");
        snprintf(row->reason, sizeof row->reason, "the CPU reference runs only cases up to 2 GFLOP");
        return;
    }
    void *q = malloc(n.q * es), *k = malloc(n.k * es), *v = malloc(n.v * es), *o = malloc(n.o * es);
    float *lse = malloc(n.lse * 4);
    clattn_plan *plan = NULL;
    cl_command_queue queue = NULL;
    cl_mem mem[5] = {0};
    if (!q || !k || !v || !o || !lse) {
        snprintf(row->reason, sizeof row->reason, "out of host memory");
        goto done;
    }
    uint64_t rng = row->seed;
    void *ins[3] = {q, k, v};
    const size_t cnt[3] = {n.q, n.k, n.v};
    for (int t = 0; t < 3; t++) fill(ins[t], cnt[t], dt, &rng);
    double samples[64];
    int ns = 0, k_calls = 1;
    if (algo == ALGO_REFERENCE) {
        snprintf(row->variant, sizeof row->variant, "CPU reference, double accumulation");
        clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
        t.q = q; t.k = k; t.v = v; t.o = o; t.lse = lse;
        t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o; t.lse_len = n.lse;
        char msg[256];
        for (double spent = 0; ns < 3 || (spent < opts->budget_ms && ns < 10);) {
            const double t0 = cli_now_ms();
            const clattn_status rst = clattn_reference_forward(&d, &t, msg, sizeof msg);
            if (rst) { /* a failed run is no sample: the row is an error (its status, set above) */
                snprintf(row->reason, sizeof row->reason, "reference: %s", msg);
                goto done;
            }
            samples[ns] = cli_now_ms() - t0;
            spent += samples[ns++];
        }
        row->mem_bytes = 0;
    } else {
        clattn_status st = row_plan(ctx, &d, opts->tuning, &plan, row);
        if (st) goto done;
        describe_plan(row, plan);
        cl_int e;
        cl_context cl = clattn_context_cl_context(ctx);
        queue = clCreateCommandQueue(cl, clattn_context_device(ctx), 0, &e);
        const size_t bytes[5] = {n.q * es, n.k * es, n.v * es, n.o * es, n.lse * 4};
        for (int i = 0; i < 5 && !e; i++)
            mem[i] = clCreateBuffer(cl, i < 3 ? CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR : CL_MEM_READ_WRITE, bytes[i],
                                    i < 3 ? ins[i] : NULL, &e);
        /* outputs poisoned (all-ones bytes: NaN in every storage type), so an element the
         * kernel never writes fails the check */
        const cl_uchar poison = 0xff;
        for (int i = 3; i < 5 && !e; i++) e = clEnqueueFillBuffer(queue, mem[i], &poison, 1, 0, bytes[i], 0, NULL, NULL);
        if (e) {
            snprintf(row->reason, sizeof row->reason, "allocating device buffers failed (%d)", e);
            goto done;
        }
        clattn_buffers bf = CLATTN_BUFFERS_INIT;
        bf.q = mem[0]; bf.k = mem[1]; bf.v = mem[2]; bf.o = mem[3]; bf.lse = mem[4];
        /* one call, checked against the reference before any timing (kernel builds happened
         * in plan creation, never timed); a wrong result is not timed */
        if ((st = clattn_plan_execute(plan, queue, &bf, 0, NULL, NULL)) || (st = clFinish(queue)) ||
            (st = clEnqueueReadBuffer(queue, mem[3], CL_TRUE, 0, bytes[3], o, 0, NULL, NULL)) ||
            (st = clEnqueueReadBuffer(queue, mem[4], CL_TRUE, 0, bytes[4], lse, 0, NULL, NULL))) {
            snprintf(row->reason, sizeof row->reason, "execution failed (%d): %s", st, clattn_context_last_error(ctx));
            goto done;
        }
        if (opts->inject_error) { /* test-only hook: a wrong kernel must show as wrong */
            if (dt == CLATTN_DTYPE_F32) ((float *)o)[n.o - 1] += 1.0f;
            else ((uint16_t *)o)[n.o - 1] ^= 0x4000;
        }
        check(c, dt, q, k, v, o, lse, row);
        if (!(row->rel_l2 <= clattn_tolerance(dt))) {
            snprintf(row->status, sizeof row->status, "wrong");
            snprintf(row->reason, sizeof row->reason, "relative L2 error %.3g above the %s bound %.0e", row->rel_l2,
                     dt == CLATTN_DTYPE_F32 ? "f32" : dt == CLATTN_DTYPE_F16 ? "f16" : "bf16", clattn_tolerance(dt));
            goto done;
        }
        if ((st = time_calls(plan, queue, &bf, opts->budget_ms, samples, &ns, &k_calls))) {
            snprintf(row->reason, sizeof row->reason, "execution failed (%d): %s", st, clattn_context_last_error(ctx));
            goto done;
        }
    }
    set_times(row, samples, ns, k_calls);
    if (algo == ALGO_REFERENCE) {
        row->pct_flops = row->pct_bw = NAN;
        row->rel_l2 = row->max_abs = 0;
        snprintf(row->status, sizeof row->status, "ok");
    } else {
        bench_row_shares(row, peak);
        snprintf(row->status, sizeof row->status, "ok"); /* checked before it was timed */
    }
done:
    for (int i = 0; i < 5; i++)
        if (mem[i]) clReleaseMemObject(mem[i]);
    if (queue) clReleaseCommandQueue(queue);
    clattn_plan_destroy(plan);
    free(q); free(k); free(v); free(o); free(lse);
}
