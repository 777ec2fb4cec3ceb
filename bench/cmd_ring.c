/* `clattn ring`: one attention over MPI ranks (clattn_mpi), each reading only its own shard of
 * the .npy files and writing only its rows of the output; the files equal a single-device
 * `clattn run`. With --bench: per-step compute and transfer times, the overlap, the balance of
 * the ranks' compute, and the efficiency against one process (for which rank 0 alone reads the
 * whole tensors and runs the same attention, while the others wait). */
#include "cli.h"
#include "clattn_mpi.h"
#include "npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct ring_args {
    const char *q, *k, *v, *out, *lse, *layout, *dtype, *device;
    double scale, softcap;
    int causal, bench, repeat;
} ring_args;

enum { OPT_Q = 256, OPT_K, OPT_V, OPT_OUT, OPT_LSE, OPT_LAYOUT, OPT_DTYPE, OPT_DEVICE, OPT_SCALE, OPT_SOFTCAP,
       OPT_CAUSAL, OPT_BENCH, OPT_REPEAT };

static const struct option ring_options[] = {
    {"q", required_argument, NULL, OPT_Q},           {"k", required_argument, NULL, OPT_K},
    {"v", required_argument, NULL, OPT_V},           {"out", required_argument, NULL, OPT_OUT},
    {"lse", required_argument, NULL, OPT_LSE},       {"layout", required_argument, NULL, OPT_LAYOUT},
    {"dtype", required_argument, NULL, OPT_DTYPE},   {"device", required_argument, NULL, OPT_DEVICE},
    {"scale", required_argument, NULL, OPT_SCALE},   {"softcap", required_argument, NULL, OPT_SOFTCAP},
    {"causal", no_argument, NULL, OPT_CAUSAL},       {"bench", no_argument, NULL, OPT_BENCH},
    {"repeat", required_argument, NULL, OPT_REPEAT}, {NULL, 0, NULL, 0}};

static int parse(int argc, char **argv, ring_args *a)
{
    memset(a, 0, sizeof *a);
    a->repeat = 5;
    optind = 0;
    int c;
    long n;
    while ((c = cli_next_option("ring", argc, argv, "", ring_options)) != -1) {
        switch (c) {
        case OPT_Q: a->q = optarg; break;
        case OPT_K: a->k = optarg; break;
        case OPT_V: a->v = optarg; break;
        case OPT_OUT: a->out = optarg; break;
        case OPT_LSE: a->lse = optarg; break;
        case OPT_LAYOUT: a->layout = optarg; break;
        case OPT_DTYPE: a->dtype = optarg; break;
        case OPT_DEVICE: a->device = optarg; break;
        case OPT_CAUSAL: a->causal = 1; break;
        case OPT_BENCH: a->bench = 1; break;
        case OPT_SCALE:
            if (!cli_parse_double(optarg, &a->scale) || a->scale <= 0)
                return cli_error("ring: --scale wants a positive number (got '%s')", optarg);
            break;
        case OPT_SOFTCAP:
            if (!cli_parse_double(optarg, &a->softcap) || a->softcap < 0)
                return cli_error("ring: --softcap wants a number >= 0 (got '%s')", optarg);
            break;
        case OPT_REPEAT:
            if (!cli_parse_long(optarg, 1, 1000, &n)) return cli_error("ring: --repeat wants 1..1000 (got '%s')", optarg);
            a->repeat = (int)n;
            break;
        default: return 1;
        }
    }
    if (optind < argc) return cli_error("ring: unexpected argument '%s'", argv[optind]);
    if (!a->q || !a->k || !a->v) return cli_error("ring: --q, --k and --v are required");
    if (!a->out && !a->bench) return cli_error("ring: --out is required (or --bench)");
    if (a->layout && strcmp(a->layout, "bhsd") && strcmp(a->layout, "bshd"))
        return cli_error("ring: --layout must be bhsd or bshd (got '%s')", a->layout);
    return 0;
}

/* The whole attention's descriptor from the files' headers (4-D q, k, v of one dtype). */
static int describe(const ring_args *a, clattn_desc *d, npy_type *type)
{
    npy_array h[3];
    size_t off;
    char err[512];
    const char *paths[3] = {a->q, a->k, a->v};
    for (int i = 0; i < 3; i++) {
        if (npy_read_header(paths[i], &h[i], &off, err, sizeof err)) return cli_error("ring: %s", err);
        if (h[i].ndim != 4) return cli_error("ring: %s must be 4-D (B, H, N, D) or (B, N, H, D)", paths[i]);
    }
    if (h[0].type != h[1].type || h[0].type != h[2].type) return cli_error("ring: q, k and v must have one dtype");
    const bool bshd = a->layout && !strcmp(a->layout, "bshd");
    const int hx = bshd ? 2 : 1, nx = bshd ? 1 : 2;
    if (h[1].shape[0] != h[0].shape[0] || h[2].shape[0] != h[0].shape[0] || h[1].shape[hx] != h[2].shape[hx] ||
        h[1].shape[nx] != h[2].shape[nx] || h[1].shape[3] != h[0].shape[3])
        return cli_error("ring: q, k and v disagree on batch, heads, key length or head dim");
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            if (h[i].shape[j] < 1 || h[i].shape[j] > (1 << 30)) return cli_error("ring: %s has an empty or huge axis", paths[i]);
    *d = (clattn_desc)CLATTN_DESC_INIT;
    d->batch = (int)h[0].shape[0];
    d->heads_q = (int)h[0].shape[hx];
    d->heads_kv = (int)h[1].shape[hx];
    d->seq_q = (int)h[0].shape[nx];
    d->seq_kv = (int)h[1].shape[nx];
    d->head_dim = (int)h[0].shape[3];
    d->head_dim_v = (int)h[2].shape[3];
    d->layout = bshd ? CLATTN_LAYOUT_BSHD : CLATTN_LAYOUT_BHSD;
    d->causal = a->causal;
    d->scale = (float)a->scale;
    d->softcap = (float)a->softcap;
    const char *want = a->dtype ? a->dtype : "";
    *type = h[0].type;
    if (a->dtype && strcmp(want, "f32") && strcmp(want, "f16") && strcmp(want, "bf16"))
        return cli_error("ring: --dtype must be f32, f16 or bf16 (got '%s')", want);
    if (*type == NPY_F32 && (!a->dtype || !strcmp(want, "f32"))) d->dtype = CLATTN_DTYPE_F32;
    else if (*type == NPY_F16 && (!a->dtype || !strcmp(want, "f16"))) d->dtype = CLATTN_DTYPE_F16;
    else if (*type == NPY_U16 && !strcmp(want, "bf16")) d->dtype = CLATTN_DTYPE_BF16;
    else return cli_error("ring: inputs are %s, which does not fit --dtype %s", npy_type_name(*type), want[0] ? want : "(none)");
    return 0;
}

/* Everything one rank holds: its shards on the host and the device. */
typedef struct rank_state {
    clattn_desc d;
    npy_type type;
    clattn_ring_shard qs, ks;
    npy_array q, k, v;
    clattn_context *ctx;
    cl_command_queue queue;
    cl_mem mq, mk, mv, mo, mlse;
    clattn_ring *ring;
    void *o;
    float *lse;
    size_t o_elems, lse_elems;
} rank_state;

/* This rank's shard along the sequence axis of a (B, H, N, D) or (B, N, H, D) file. */
static int read_shard(const char *path, int axis, const clattn_ring_shard *s, npy_array *out)
{
    const int64_t starts[2] = {s->start[0], s->start[1]}, lens[2] = {s->len[0], s->len[1]};
    char err[512];
    if (npy_read_slabs(path, axis, 2, starts, lens, out, err, sizeof err)) return cli_error("ring: %s", err);
    return 0;
}

static int upload(rank_state *st, const npy_array *a, cl_mem *m)
{
    cl_int e;
    const size_t bytes = a->count * npy_type_size(a->type);
    *m = clCreateBuffer(clattn_context_cl_context(st->ctx), CL_MEM_READ_ONLY, bytes ? bytes : 4, NULL, &e);
    if (!e && bytes) e = clEnqueueWriteBuffer(st->queue, *m, CL_TRUE, 0, bytes, a->data, 0, NULL, NULL);
    if (e) return cli_error("ring: uploading a shard failed (%d)", e);
    return 0;
}

/* Reads the shards, opens the device, uploads; 0 or 1 (after printing why). */
static int setup(const ring_args *a, int rank, int size, rank_state *st)
{
    if (describe(a, &st->d, &st->type)) return 1;
    const clattn_desc *d = &st->d;
    clattn_ring_shard_of(d->seq_q, size, rank, &st->qs);
    clattn_ring_shard_of(d->seq_kv, size, rank, &st->ks);
    const int axis = d->layout == CLATTN_LAYOUT_BSHD ? 1 : 2;
    if (read_shard(a->q, axis, &st->qs, &st->q) || read_shard(a->k, axis, &st->ks, &st->k) ||
        read_shard(a->v, axis, &st->ks, &st->v))
        return 1;
    if (cli_open_context(a->device, &st->ctx)) return 1;
    cl_int e;
    st->queue = clCreateCommandQueue(clattn_context_cl_context(st->ctx), clattn_context_device(st->ctx), 0, &e);
    if (e) return cli_error("ring: clCreateCommandQueue failed (%d)", e);
    if (upload(st, &st->q, &st->mq) || upload(st, &st->k, &st->mk) || upload(st, &st->v, &st->mv)) return 1;
    st->o_elems = (size_t)d->batch * d->heads_q * st->qs.total * d->head_dim_v;
    st->lse_elems = (size_t)d->batch * d->heads_q * st->qs.total;
    const size_t es = clattn_dtype_size(d->dtype);
    st->o = malloc(st->o_elems * es + 1);
    st->lse = malloc(st->lse_elems * 4 + 1);
    if (!st->o || !st->lse) return cli_error("ring: out of memory");
    const cl_context cl = clattn_context_cl_context(st->ctx);
    st->mo = clCreateBuffer(cl, CL_MEM_READ_WRITE, st->o_elems * es + 4, NULL, &e);
    if (!e) st->mlse = clCreateBuffer(cl, CL_MEM_READ_WRITE, st->lse_elems * 4 + 4, NULL, &e);
    if (e) return cli_error("ring: clCreateBuffer failed (%d)", e);
    return 0;
}

static void teardown(rank_state *st)
{
    clattn_ring_destroy(st->ring);
    const cl_mem m[] = {st->mq, st->mk, st->mv, st->mo, st->mlse};
    for (int i = 0; i < 5; i++)
        if (m[i]) clReleaseMemObject(m[i]);
    if (st->queue) clReleaseCommandQueue(st->queue);
    clattn_context_destroy(st->ctx);
    npy_free(&st->q);
    npy_free(&st->k);
    npy_free(&st->v);
    free(st->o);
    free(st->lse);
}

/* 1 when any rank failed (each failing rank printed its reason). */
static int any_failed(int failed)
{
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return any;
}

/* The output files: rank 0 creates them under temporary names, each rank writes its rows, and
 * rank 0 renames them once every rank has: a failure before that leaves the paths untouched
 * (the two renames, o's then lse's, are two steps: if the second fails, o is already new). */
static int write_outputs(const ring_args *a, int rank, rank_state *st)
{
    const clattn_desc *d = &st->d;
    const bool bshd = d->layout == CLATTN_LAYOUT_BSHD;
    const int axis = bshd ? 1 : 2;
    const npy_type ot = d->dtype == CLATTN_DTYPE_F32 ? NPY_F32 : d->dtype == CLATTN_DTYPE_F16 ? NPY_F16 : NPY_U16;
    const int64_t oshape[4] = {d->batch, bshd ? d->seq_q : d->heads_q, bshd ? d->heads_q : d->seq_q, d->head_dim_v};
    const int64_t lshape[3] = {d->batch, d->heads_q, d->seq_q};
    const int64_t starts[2] = {st->qs.start[0], st->qs.start[1]}, lens[2] = {st->qs.len[0], st->qs.len[1]};
    char tmp_o[4200], tmp_l[4200], err[512];
    int jobid = (int)getpid();
    MPI_Bcast(&jobid, 1, MPI_INT, 0, MPI_COMM_WORLD);
    snprintf(tmp_o, sizeof tmp_o, "%s.ring%d.tmp", a->out, jobid);
    snprintf(tmp_l, sizeof tmp_l, "%s.ring%d.tmp", a->lse ? a->lse : "", jobid);
    int failed = 0;
    if (rank == 0) {
        failed = npy_create(tmp_o, ot, 4, oshape, err, sizeof err) ||
                 (a->lse && npy_create(tmp_l, NPY_F32, 3, lshape, err, sizeof err));
        if (failed) cli_error("ring: %s", err);
    }
    if (any_failed(failed)) return 1;
    failed = npy_write_slabs(tmp_o, axis, 2, starts, lens, st->o, err, sizeof err) ||
             (a->lse && npy_write_slabs(tmp_l, 2, 2, starts, lens, st->lse, err, sizeof err));
    if (failed) cli_error("ring: rank %d: %s", rank, err);
    failed = any_failed(failed);
    if (rank == 0) {
        if (!failed && (rename(tmp_o, a->out) || (a->lse && rename(tmp_l, a->lse)))) {
            cli_error("ring: cannot rename the output into place");
            failed = 1;
        }
        if (failed) {
            unlink(tmp_o);
            if (a->lse) unlink(tmp_l);
        }
    }
    return any_failed(failed);
}

/* One process computing the whole attention on rank 0's device: the baseline of --bench. */
static double single_process_ms(const ring_args *a, rank_state *st)
{
    npy_array q, k, v;
    char err[512];
    if (npy_read(a->q, &q, err, sizeof err) || npy_read(a->k, &k, err, sizeof err) || npy_read(a->v, &v, err, sizeof err)) {
        cli_error("ring: %s", err);
        return -1;
    }
    clattn_plan *plan = NULL;
    cl_mem m[5] = {NULL};
    double ms = -1;
    const size_t es = clattn_dtype_size(st->d.dtype);
    const size_t o_bytes = q.count / (size_t)st->d.head_dim * (size_t)st->d.head_dim_v * es;
    if (!clattn_plan_create(st->ctx, &st->d, &plan)) {
        cl_int e = CL_SUCCESS;
        const cl_context cl = clattn_context_cl_context(st->ctx);
        const npy_array *in[3] = {&q, &k, &v};
        for (int i = 0; i < 3 && !e; i++)
            m[i] = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, in[i]->count * es, in[i]->data, &e);
        if (!e) m[3] = clCreateBuffer(cl, CL_MEM_READ_WRITE, o_bytes, NULL, &e);
        if (!e) m[4] = clCreateBuffer(cl, CL_MEM_READ_WRITE, q.count / (size_t)st->d.head_dim * 4, NULL, &e);
        clattn_buffers bf = CLATTN_BUFFERS_INIT;
        bf.q = m[0]; bf.k = m[1]; bf.v = m[2]; bf.o = m[3]; bf.lse = m[4];
        double t[1000];
        for (int r = 0; !e && r <= a->repeat; r++) { /* the first run warms up */
            const double t0 = cli_now_ms();
            cl_event ev = NULL;
            if (clattn_plan_execute(plan, st->queue, &bf, 0, NULL, &ev) || clWaitForEvents(1, &ev)) e = -1;
            if (ev) clReleaseEvent(ev);
            if (r) t[r - 1] = cli_now_ms() - t0;
        }
        if (!e) ms = cli_median(t, a->repeat);
    }
    for (int i = 0; i < 5; i++)
        if (m[i]) clReleaseMemObject(m[i]);
    clattn_plan_destroy(plan);
    npy_free(&q);
    npy_free(&k);
    npy_free(&v);
    return ms;
}

/* --bench: the ring run `repeat` times after a warm-up; per-step medians gathered on rank 0. */
static int bench(const ring_args *a, int rank, int size, rank_state *st)
{
    const int n = a->repeat, P = size;
    double *wall = calloc((size_t)n, sizeof *wall), *per = calloc((size_t)n * P * 3, sizeof *per);
    double *med = calloc((size_t)P * 3, sizeof *med), *all = calloc((size_t)P * P * 3, sizeof *all);
    /* every rank learns of another's failure here, before the collectives below */
    const int oom = !wall || !per || !med || !all;
    int any = oom;
    MPI_Allreduce(&oom, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any) {
        free(wall); free(per); free(med); free(all);
        return cli_error("ring: rank %d: %s", rank, oom ? "out of memory" : "another rank ran out of memory");
    }
    int failed = 0;
    for (int r = 0; r <= n && !failed; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double t0 = cli_now_ms();
        clattn_status s = clattn_ring_forward(st->ring, st->queue, st->mq, st->mk, st->mv, st->mo, st->mlse);
        if (s) {
            cli_error("ring: rank %d: %s", rank, clattn_ring_last_error(st->ring));
            failed = 1;
            break;
        }
        if (!r) continue; /* warm-up */
        wall[r - 1] = cli_now_ms() - t0;
        for (int s2 = 0; s2 < P; s2++) {
            clattn_ring_step x = CLATTN_RING_STEP_INIT;
            clattn_ring_step_stats(st->ring, s2, &x);
            per[((size_t)s2 * 3 + 0) * n + r - 1] = x.compute_ms;
            per[((size_t)s2 * 3 + 1) * n + r - 1] = x.comm_ms;
            per[((size_t)s2 * 3 + 2) * n + r - 1] = x.step_ms;
        }
    }
    if (!failed) {
        for (int i = 0; i < P * 3; i++) med[i] = cli_median(per + (size_t)i * n, n);
        MPI_Gather(med, P * 3, MPI_DOUBLE, all, P * 3, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    }
    double ring_ms = failed ? 0 : cli_median(wall, n), worst = 0;
    MPI_Reduce(&ring_ms, &worst, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    double one = -1;
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0 && !failed) one = single_process_ms(a, st);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0 && !failed) {
        const clattn_desc *d = &st->d;
        const int dv = d->head_dim_v ? d->head_dim_v : d->head_dim; /* Q.K^T over d, P.V over dv */
        const double flops = 2.0 * d->batch * d->heads_q * (double)d->seq_q * d->seq_kv * (d->head_dim + dv) *
                             (d->causal && d->seq_q == d->seq_kv ? 0.5 : 1.0);
        printf("ring attention %dx%dx%dx%dx%dx%d %s%s, %d ranks\n", d->batch, d->heads_q, d->heads_kv, d->seq_q,
               d->seq_kv, d->head_dim, d->dtype == CLATTN_DTYPE_F32 ? "f32" : d->dtype == CLATTN_DTYPE_F16 ? "f16" : "bf16",
               d->causal ? " causal" : "", P);
        printf("%-5s %-5s %12s %12s %12s %9s\n", "step", "rank", "compute_ms", "transfer_ms", "step_ms", "hidden");
        double *compute = calloc((size_t)P, sizeof *compute);
        for (int s2 = 0; s2 < P; s2++)
            for (int x = 0; x < P; x++) {
                const double *m = all + (size_t)x * P * 3 + (size_t)s2 * 3;
                const double c = m[0], t = m[1], w = m[2];
                /* the share of the transfer that ran under the computation */
                const double hidden = t > 0 ? (c + t - w) / (c < t ? c : t) : 0;
                if (compute) compute[x] += c;
                char h[16] = "-";
                if (t > 0) snprintf(h, sizeof h, "%.0f%%", 100 * (hidden < 0 ? 0 : hidden > 1 ? 1 : hidden));
                printf("%-5d %-5d %12.3f %12.3f %12.3f %9s\n", s2, x, c, t, w, h);
            }
        if (compute) {
            double lo = compute[0], hi = compute[0];
            for (int x = 0; x < P; x++) {
                printf("rank %d: compute %.3f ms over %d steps\n", x, compute[x], P);
                lo = compute[x] < lo ? compute[x] : lo;
                hi = compute[x] > hi ? compute[x] : hi;
            }
            printf("compute balance: slowest rank / fastest = %.3f\n", lo > 0 ? hi / lo : 0);
            free(compute);
        }
        printf("ring: %.3f ms (median of %d, slowest rank), %.2f GFLOP/s\n", worst, n, flops / (worst * 1e6));
        if (one > 0)
            printf("one process: %.3f ms; efficiency = one / (ranks x ring) = %.3f; speed-up %.2f\n", one,
                   one / (P * worst), one / worst);
    }
    free(wall);
    free(per);
    free(med);
    free(all);
    return any_failed(failed);
}

int cmd_ring(int argc, char **argv)
{
    ring_args a;
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        return cli_error("ring: MPI_Init failed");
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    rank_state st = {0};
    int failed = parse(argc, argv, &a) || setup(&a, rank, size, &st);
    if (any_failed(failed)) {
        teardown(&st);
        MPI_Finalize();
        return 1;
    }
    char msg[512];
    clattn_status s = clattn_ring_create(st.ctx, MPI_COMM_WORLD, &st.d, &st.ring, msg, sizeof msg);
    if (s) {
        if (rank == 0 || s != CLATTN_PEER_FAILED) cli_error("ring: rank %d: %s", rank, msg);
        teardown(&st);
        MPI_Finalize();
        return 1;
    }
    if (a.bench) {
        failed = bench(&a, rank, size, &st);
    } else {
        s = clattn_ring_forward(st.ring, st.queue, st.mq, st.mk, st.mv, st.mo, a.lse ? st.mlse : NULL);
        if (s && (rank == 0 || s != CLATTN_PEER_FAILED)) cli_error("ring: rank %d: %s", rank, clattn_ring_last_error(st.ring));
        failed = s != CLATTN_SUCCESS;
    }
    if (!failed && a.out) {
        const size_t es = clattn_dtype_size(st.d.dtype);
        cl_int e = clEnqueueReadBuffer(st.queue, st.mo, CL_TRUE, 0, st.o_elems * es, st.o, 0, NULL, NULL);
        if (!e && a.lse) e = clEnqueueReadBuffer(st.queue, st.mlse, CL_TRUE, 0, st.lse_elems * 4, st.lse, 0, NULL, NULL);
        if (e) cli_error("ring: rank %d: reading the result failed (%d)", rank, e);
        failed = any_failed(e != CL_SUCCESS) || write_outputs(&a, rank, &st);
    }
    teardown(&st);
    MPI_Finalize();
    return failed ? 1 : 0;
}
