/* Ring attention in an application: every MPI rank owns one device and one shard of a long
 * sequence, and together they compute causal attention over all of it.
 *
 *     mpirun -np 4 ./clattn_ring_example [sequence length]
 *
 * What an application copies from here: ask clattn_ring_shard_of which rows this rank holds,
 * fill its q, k, v shards (here: rows of a deterministic random sequence, so that rank 0 can
 * check its rows against the CPU reference), make the ring once, run it as often as needed. */
#include <clattn_mpi.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Row `row` of head `h` of a deterministic sequence: every rank can make any row. */
static float value(int which, int h, int row, int c) { return sinf(0.37f * which + 0.11f * h + 0.013f * row * (c + 1)); }

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const int N = argc > 1 ? atoi(argv[1]) : 1000, H = 4, HKV = 2, D = 64;

    clattn_desc d = CLATTN_DESC_INIT; /* the whole attention, not the shard */
    d.batch = 1; d.heads_q = H; d.heads_kv = HKV; d.seq_q = d.seq_kv = N; d.head_dim = D; d.causal = 1;

    /* this rank's rows: two chunks, laid out one after the other (BHSD: per head) */
    clattn_ring_shard s;
    if (N < 1 || clattn_ring_shard_of(N, size, rank, &s)) {
        fprintf(stderr, "usage: clattn_ring_example [sequence length >= 1]\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    const size_t nq = (size_t)H * s.total * D, nk = (size_t)HKV * s.total * D;
    float *q = malloc(nq * 4 + 4), *k = malloc(nk * 4 + 4), *v = malloc(nk * 4 + 4), *o = malloc(nq * 4 + 4);
    for (int h = 0; h < H; h++)
        for (int i = 0, c = 0; c < 2; c++)
            for (int r = 0; r < s.len[c]; r++, i++)
                for (int x = 0; x < D; x++) {
                    q[((size_t)h * s.total + i) * D + x] = value(0, h, s.start[c] + r, x);
                    if (h < HKV) {
                        k[((size_t)h * s.total + i) * D + x] = value(1, h, s.start[c] + r, x);
                        v[((size_t)h * s.total + i) * D + x] = value(2, h, s.start[c] + r, x);
                    }
                }

    /* the application's own device objects; clattn wraps the context */
    clattn_context *ctx;
    if (clattn_context_create(NULL, &ctx)) {
        fprintf(stderr, "rank %d: no OpenCL device\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    cl_context cl = clattn_context_cl_context(ctx);
    cl_int e;
    cl_command_queue queue = clCreateCommandQueue(cl, clattn_context_device(ctx), 0, &e);
    cl_mem mq = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nq * 4 + 4, q, &e);
    cl_mem mk = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nk * 4 + 4, k, &e);
    cl_mem mv = clCreateBuffer(cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nk * 4 + 4, v, &e);
    cl_mem mo = clCreateBuffer(cl, CL_MEM_WRITE_ONLY, nq * 4 + 4, NULL, &e);

    /* collective: every rank makes the ring with the same descriptor, then runs it */
    clattn_ring *ring;
    char msg[512];
    clattn_status st = clattn_ring_create(ctx, MPI_COMM_WORLD, &d, &ring, msg, sizeof msg);
    if (!st) st = clattn_ring_forward(ring, queue, mq, mk, mv, mo, NULL);
    if (st) {
        fprintf(stderr, "rank %d: %s\n", rank, ring ? clattn_ring_last_error(ring) : msg);
    } else {
        clEnqueueReadBuffer(queue, mo, CL_TRUE, 0, nq * 4, o, 0, NULL, NULL);
        clattn_ring_step t = CLATTN_RING_STEP_INIT;
        double compute = 0;
        for (int i = 0; i < size; i++)
            if (!clattn_ring_step_stats(ring, i, &t)) compute += t.compute_ms;
        printf("rank %d: rows %d..%d and %d..%d, %.2f ms of attention\n", rank, s.start[0], s.start[0] + s.len[0] - 1,
               s.start[1], s.start[1] + s.len[1] - 1, compute);
    }

    /* rank 0 checks its last row of head 0 against the CPU reference of the whole sequence
     * (only a small N: the reference holds all of it) */
    if (!st && rank == 0 && N <= 4096 && s.total > 0) {
        float *Q = malloc((size_t)H * N * D * 4), *K = malloc((size_t)HKV * N * D * 4), *V = malloc((size_t)HKV * N * D * 4);
        float *O = malloc((size_t)H * N * D * 4);
        for (int h = 0; h < H; h++)
            for (int r = 0; r < N; r++)
                for (int x = 0; x < D; x++) {
                    Q[((size_t)h * N + r) * D + x] = value(0, h, r, x);
                    if (h < HKV) {
                        K[((size_t)h * N + r) * D + x] = value(1, h, r, x);
                        V[((size_t)h * N + r) * D + x] = value(2, h, r, x);
                    }
                }
        clattn_host_tensors t = CLATTN_HOST_TENSORS_INIT;
        t.q = Q; t.k = K; t.v = V; t.o = O;
        t.q_len = t.o_len = (size_t)H * N * D; t.k_len = t.v_len = (size_t)HKV * N * D;
        if (!clattn_reference_forward(&d, &t, NULL, 0)) {
            const int row = s.start[1] + s.len[1] - 1, local = s.total - 1;
            double err = 0;
            for (int x = 0; x < D; x++) err = fmax(err, fabs(o[(size_t)local * D + x] - O[(size_t)row * D + x]));
            printf("rank 0: row %d of head 0 differs from the reference by %.2e at most\n", row, err);
            if (err > 1e-4) st = CLATTN_INTERNAL_ERROR;
        }
        free(Q); free(K); free(V); free(O);
    }
    clattn_ring_destroy(ring);
    clReleaseMemObject(mq); clReleaseMemObject(mk); clReleaseMemObject(mv); clReleaseMemObject(mo);
    clReleaseCommandQueue(queue);
    clattn_context_destroy(ctx);
    free(q); free(k); free(v); free(o);
    MPI_Finalize();
    return st ? 1 : 0;
}
