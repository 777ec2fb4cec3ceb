/* Ring attention under mpirun (-np 1..4, oversubscribed): every case's rows on every rank equal
 * the same attention computed on one device (relative L2 <= 1e-5 for f32, o and lse) and the
 * CPU reference; failures on one rank end in errors on every rank. Not Criterion: its forked
 * workers and MPI do not mix. Each rank prints its failures; rank 0 the tally. Exit 0 when
 * every rank passed every check. */
#include "clattn_mpi.h"
#include "metrics.h"
#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rank, size, failures, checks;

#define CHECK(cond, ...)                                    \
    do {                                                    \
        checks++;                                           \
        if (!(cond)) {                                      \
            failures++;                                     \
            fprintf(stderr, "rank %d: FAIL: ", rank);       \
            fprintf(stderr, __VA_ARGS__);                   \
            fputc('\n', stderr);                            \
        }                                                   \
    } while (0)

typedef struct ring_case {
    const char *name;
    int b, hq, hkv, nq, nk, d, dv;
    int causal;
    clattn_layout layout;
    clattn_dtype dtype;
    float softcap;
} ring_case;

static float to_float(const void *x, size_t i, clattn_dtype dt)
{
    if (dt == CLATTN_DTYPE_F32) return ((const float *)x)[i];
    const uint16_t h = ((const uint16_t *)x)[i];
    return dt == CLATTN_DTYPE_F16 ? clattn_f16_to_f32(h) : clattn_bf16_to_f32(h);
}

/* A tensor of random values in the storage type. */
static void *make(size_t n, clattn_dtype dt, uint64_t *rng)
{
    float *f = malloc(n * 4);
    clattn_rng_fill(f, n, rng, 1);
    if (dt == CLATTN_DTYPE_F32) return f;
    uint16_t *h = malloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = dt == CLATTN_DTYPE_F16 ? clattn_f32_to_f16(f[i]) : clattn_f32_to_bf16(f[i]);
    free(f);
    return h;
}

/* This rank's shard of a (B, H, N, D) or (B, N, H, D) tensor: rows of its two chunks. */
static void *shard(const void *x, const clattn_ring_shard *s, int b, int h, int n, int d, bool bshd, size_t es)
{
    unsigned char *out = malloc((size_t)b * h * (s->total ? s->total : 1) * d * es), *p = out;
    const size_t row = (size_t)d * es;
    for (int i = 0; i < b; i++)
        for (int j = 0; j < (bshd ? 1 : h); j++)
            for (int c = 0; c < 2; c++) {
                const size_t rows = (size_t)s->len[c] * (bshd ? (size_t)h : 1);
                const size_t at = bshd ? ((size_t)i * n + s->start[c]) * h : ((size_t)i * h + j) * n + s->start[c];
                memcpy(p, (const unsigned char *)x + at * row, rows * row);
                p += rows * row;
            }
    return out;
}

static cl_mem buffer(clattn_context *ctx, cl_command_queue qu, const void *host, size_t bytes)
{
    cl_int e;
    cl_mem m = clCreateBuffer(clattn_context_cl_context(ctx), CL_MEM_READ_WRITE, bytes ? bytes : 4, NULL, &e);
    if (!e && host && bytes) e = clEnqueueWriteBuffer(qu, m, CL_TRUE, 0, bytes, host, 0, NULL, NULL);
    if (e) {
        fprintf(stderr, "rank %d: buffer (%d)\n", rank, e);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    return m;
}

static void run_case(clattn_context *ctx, cl_command_queue qu, const ring_case *c)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = c->b; d.heads_q = c->hq; d.heads_kv = c->hkv; d.seq_q = c->nq; d.seq_kv = c->nk;
    d.head_dim = c->d; d.head_dim_v = c->dv; d.causal = c->causal; d.layout = c->layout; d.dtype = c->dtype;
    d.softcap = c->softcap;
    const bool bshd = c->layout == CLATTN_LAYOUT_BSHD;
    const size_t es = clattn_dtype_size(c->dtype);
    clattn_tensor_sizes n = CLATTN_TENSOR_SIZES_INIT;
    clattn_desc_tensor_sizes(&d, &n);
    /* every rank makes the same whole tensors (one seed), then keeps its shard */
    uint64_t rng = 0x5eed + (uint64_t)c->nq * 131 + (uint64_t)c->dtype;
    void *q = make(n.q, c->dtype, &rng), *k = make(n.k, c->dtype, &rng), *v = make(n.v, c->dtype, &rng);
    void *whole = malloc(n.o * es), *ref = malloc(n.o * es);
    float *lwhole = malloc(n.lse * 4), *lref = malloc(n.lse * 4);
    clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
    t.q = q; t.k = k; t.v = v; t.o = whole; t.lse = lwhole;
    t.q_len = n.q; t.k_len = n.k; t.v_len = n.v; t.o_len = n.o; t.lse_len = n.lse;
    clattn_status st = clattn_forward_host(ctx, &d, &t);
    CHECK(!st, "%s: one device: %s", c->name, clattn_context_last_error(ctx));
    t.o = ref; t.lse = lref;
    CHECK(!clattn_reference_forward(&d, &t, NULL, 0), "%s: reference", c->name);

    clattn_ring_shard qs, ks;
    clattn_ring_shard_of(c->nq, size, rank, &qs);
    clattn_ring_shard_of(c->nk, size, rank, &ks);
    void *qh = shard(q, &qs, c->b, c->hq, c->nq, c->d, bshd, es), *kh = shard(k, &ks, c->b, c->hkv, c->nk, c->d, bshd, es);
    void *vh = shard(v, &ks, c->b, c->hkv, c->nk, c->dv, bshd, es);
    const size_t on = (size_t)c->b * c->hq * qs.total * c->dv, ln = (size_t)c->b * c->hq * qs.total;
    cl_mem mq = buffer(ctx, qu, qh, (size_t)c->b * c->hq * qs.total * c->d * es);
    cl_mem mk = buffer(ctx, qu, kh, (size_t)c->b * c->hkv * ks.total * c->d * es);
    cl_mem mv = buffer(ctx, qu, vh, (size_t)c->b * c->hkv * ks.total * c->dv * es);
    cl_mem mo = buffer(ctx, qu, NULL, on * es), ml = buffer(ctx, qu, NULL, ln * 4);
    /* poisoned with NaN in the storage type: an unwritten element fails */
    const float nan = NAN;
    const uint16_t nan16 = c->dtype == CLATTN_DTYPE_F16 ? 0x7e00 : 0x7fc0;
    if (on) clEnqueueFillBuffer(qu, mo, es == 4 ? (const void *)&nan : (const void *)&nan16, es, 0, on * es, 0, NULL, NULL);
    if (ln) clEnqueueFillBuffer(qu, ml, &nan, 4, 0, ln * 4, 0, NULL, NULL);
    clFinish(qu);

    clattn_ring *ring = NULL;
    char msg[512];
    st = clattn_ring_create(ctx, MPI_COMM_WORLD, &d, &ring, msg, sizeof msg);
    CHECK(!st, "%s: create: %s", c->name, msg);
    if (!st) {
        st = clattn_ring_forward(ring, qu, mq, mk, mv, mo, ml);
        CHECK(!st, "%s: forward: %s", c->name, clattn_ring_last_error(ring));
    }
    if (!st && on) {
        void *o = malloc(on * es);
        float *lse = malloc(ln * 4);
        clEnqueueReadBuffer(qu, mo, CL_TRUE, 0, on * es, o, 0, NULL, NULL);
        clEnqueueReadBuffer(qu, ml, CL_TRUE, 0, ln * 4, lse, 0, NULL, NULL);
        /* the same rows of the one-device result, of the reference */
        void *wo = shard(whole, &qs, c->b, c->hq, c->nq, c->dv, bshd, es), *ro = shard(ref, &qs, c->b, c->hq, c->nq, c->dv, bshd, es);
        float *wl = shard(lwhole, &qs, c->b, c->hq, c->nq, 1, false, 4), *rl = shard(lref, &qs, c->b, c->hq, c->nq, 1, false, 4);
        float *of = malloc(on * 4), *wf = malloc(on * 4), *rf = malloc(on * 4);
        for (size_t i = 0; i < on; i++) {
            of[i] = to_float(o, i, c->dtype);
            wf[i] = to_float(wo, i, c->dtype);
            rf[i] = to_float(ro, i, c->dtype);
        }
        const double bound = c->dtype == CLATTN_DTYPE_F32 ? 1e-5 : c->dtype == CLATTN_DTYPE_F16 ? 2e-3 : 1e-2;
        clattn_error e1 = clattn_compare(of, wf, on, (size_t)c->dv), e2 = clattn_compare(lse, wl, ln, 1);
        clattn_error e3 = clattn_compare(of, rf, on, (size_t)c->dv), e4 = clattn_compare(lse, rl, ln, 1);
        CHECK(clattn_error_ok(&e1, bound) && clattn_error_ok(&e2, 1e-5), "%s: against one device: o %.3e lse %.3e",
              c->name, e1.rel_l2, e2.rel_l2);
        CHECK(clattn_error_ok(&e3, bound) && clattn_error_ok(&e4, 1e-5), "%s: against the reference: o %.3e lse %.3e",
              c->name, e3.rel_l2, e4.rel_l2);
        free(o); free(lse); free(wo); free(ro); free(wl); free(rl); free(of); free(wf); free(rf);
    }
    clattn_ring_destroy(ring);
    const cl_mem ms[] = {mq, mk, mv, mo, ml};
    for (int i = 0; i < 5; i++) clReleaseMemObject(ms[i]);
    free(q); free(k); free(v); free(whole); free(ref); free(lwhole); free(lref); free(qh); free(kh); free(vh);
}

/* One rank fails, or the ranks disagree: every rank gets an error, none waits. */
static void failures_on_one_rank(clattn_context *ctx, cl_command_queue qu)
{
    clattn_desc d = CLATTN_DESC_INIT;
    d.batch = 1; d.heads_q = 2; d.seq_q = d.seq_kv = 33; d.head_dim = 16; d.causal = 1;
    char msg[512];
    clattn_ring *ring = NULL;
    const int last = size - 1;

    /* the last rank's descriptor differs */
    clattn_desc mine = d;
    if (rank == last && size > 1) mine.seq_kv = mine.seq_q = 34;
    clattn_status st;
    if (size > 1) {
        st = clattn_ring_create(ctx, MPI_COMM_WORLD, &mine, &ring, msg, sizeof msg);
        CHECK(st == CLATTN_INVALID_ARGUMENT && !ring && strstr(msg, "seq_q"), "mismatched descriptors: %d (%s)", st, msg);
    }

    /* the last rank has no context */
    st = clattn_ring_create(rank == last ? NULL : ctx, MPI_COMM_WORLD, &d, &ring, msg, sizeof msg);
    CHECK(st == (rank == last ? CLATTN_INVALID_ARGUMENT : CLATTN_PEER_FAILED) && !ring, "no context on rank %d: %d (%s)",
          last, st, msg);

    /* the last rank's o is too small: refused before anything runs, on every rank */
    st = clattn_ring_create(ctx, MPI_COMM_WORLD, &d, &ring, msg, sizeof msg);
    CHECK(!st, "create: %s", msg);
    if (st) return;
    clattn_ring_shard s;
    clattn_ring_shard_of(d.seq_q, size, rank, &s);
    const size_t rows = (size_t)d.heads_q * s.total, bytes = rows * d.head_dim * 4;
    cl_mem q = buffer(ctx, qu, NULL, bytes), k = buffer(ctx, qu, NULL, bytes), v = buffer(ctx, qu, NULL, bytes);
    cl_mem o = buffer(ctx, qu, NULL, rank == last ? 4 : bytes);
    st = clattn_ring_forward(ring, qu, q, k, v, o, NULL);
    const char *why = clattn_ring_last_error(ring);
    CHECK(st == (rank == last ? CLATTN_BUFFER_TOO_SMALL : CLATTN_PEER_FAILED), "o too small on rank %d: %d (%s)", last,
          st, why);
    if (rank != last) CHECK(strstr(why, "rank") != NULL, "the message names the failing rank: %s", why);
    /* the ring still works after a refused call */
    clReleaseMemObject(o);
    o = buffer(ctx, qu, NULL, bytes);
    st = clattn_ring_forward(ring, qu, q, k, v, o, NULL);
    CHECK(!st, "after a refusal: %s", clattn_ring_last_error(ring));
    /* unsupported features are refused on every rank alike */
    clattn_ring_destroy(ring);
    clattn_desc w = d;
    w.use_window = 1; w.window_left = 4; w.window_right = 0;
    st = clattn_ring_create(ctx, MPI_COMM_WORLD, &w, &ring, msg, sizeof msg);
    CHECK(st == CLATTN_UNSUPPORTED && strstr(msg, "windows"), "windows: %d (%s)", st, msg);
    clReleaseMemObject(q); clReleaseMemObject(k); clReleaseMemObject(v); clReleaseMemObject(o);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    clattn_context *ctx = NULL;
    if (clattn_context_create(NULL, &ctx)) {
        fprintf(stderr, "rank %d: no OpenCL device: skipped\n", rank);
        MPI_Finalize();
        return 77;
    }
    cl_int e;
    cl_command_queue qu = clCreateCommandQueue(clattn_context_cl_context(ctx), clattn_context_device(ctx), 0, &e);
    static const ring_case cases[] = {
        {"causal f32 bhsd", 2, 4, 4, 37, 37, 32, 32, 1, CLATTN_LAYOUT_BHSD, CLATTN_DTYPE_F32, 0},
        {"causal gqa f32 bshd", 1, 6, 2, 50, 50, 64, 64, 1, CLATTN_LAYOUT_BSHD, CLATTN_DTYPE_F32, 0},
        {"causal mqa odd f32", 2, 3, 1, 7, 7, 40, 40, 1, CLATTN_LAYOUT_BHSD, CLATTN_DTYPE_F32, 0},
        {"causal len 1", 1, 2, 1, 1, 1, 16, 16, 1, CLATTN_LAYOUT_BHSD, CLATTN_DTYPE_F32, 0},
        {"full nq != nk f32", 1, 4, 2, 29, 45, 32, 48, 0, CLATTN_LAYOUT_BHSD, CLATTN_DTYPE_F32, 0},
        {"full gqa bshd softcap", 2, 4, 2, 41, 41, 24, 24, 0, CLATTN_LAYOUT_BSHD, CLATTN_DTYPE_F32, 30.0f},
        {"causal f16 bshd", 1, 4, 2, 61, 61, 64, 64, 1, CLATTN_LAYOUT_BSHD, CLATTN_DTYPE_F16, 0},
        {"causal bf16", 1, 2, 2, 33, 33, 128, 128, 1, CLATTN_LAYOUT_BHSD, CLATTN_DTYPE_BF16, 0},
        {"full f16 odd", 2, 2, 1, 19, 23, 32, 32, 0, CLATTN_LAYOUT_BHSD, CLATTN_DTYPE_F16, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(ctx, qu, &cases[i]);
    failures_on_one_rank(ctx, qu);
    clReleaseCommandQueue(qu);
    clattn_context_destroy(ctx);
    int total[2] = {0, 0}, mine[2] = {failures, checks};
    MPI_Reduce(mine, total, 2, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) printf("ring, %d ranks: %d checks, %d failed\n", size, total[1], total[0]);
    int any = 0;
    MPI_Allreduce(&failures, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any ? 1 : 0;
}
