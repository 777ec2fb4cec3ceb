/* Ring attention over MPI (clattn_mpi.h): the K/V shards circulate around the ring, staged
 * through host memory and double-buffered; each step's attention runs on the shard at hand
 * while the next one travels, and folds into an f32 accumulator. */
#include "ring.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* MPI counts are ints: a shard's bytes travel in pieces of at most this many. */
#define PIECE_BYTES ((size_t)1 << 30)
/* Requests one step posts at most: a shard's pieces in and out (so shards up to 32 GiB). */
#define STEP_REQUESTS 64
#define TAG 0x5a17

typedef struct step {
    ring_call call[2];
    int ncalls;
    clattn_desc desc[2];  /* each call's descriptor (views into the shards) */
    clattn_plan *plan[2]; /* owned by the ring's plan list */
} step;

struct clattn_ring {
    clattn_context *ctx;
    MPI_Comm comm;
    int size, rank;
    clattn_desc desc;         /* the whole attention, heads_kv and head_dim_v resolved */
    size_t es;                /* bytes per element */
    clattn_ring_shard qs;     /* this rank's query rows */
    clattn_ring_shard *ks;    /* every rank's key rows */
    step *steps;              /* one per rank: step s holds the shard of rank - s */
    clattn_plan **plans;      /* the distinct plans, owned (one serves every call of its shape) */
    int nplans;
    size_t kv_max;            /* bytes of the largest K/V shard (k then v) */
    unsigned char *host[2];   /* staging: the shard at hand, and the next */
    cl_mem kbuf[2], vbuf[2];  /* received shards on the device */
    cl_mem o_step, lse_step, acc_o, acc_lse;
    clattn_ring_step *stats;
    char error[512];
};

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static clattn_status fail(char *msg, size_t size, clattn_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static clattn_status fail(char *msg, size_t size, clattn_status st, const char *fmt, ...)
{
    if (msg && size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, size, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* Every rank's verdict becomes every rank's: the lowest status (the first failing rank's), as
 * the failing rank's own status and message, and CLATTN_PEER_FAILED elsewhere. */
static clattn_status agree(MPI_Comm comm, int rank, clattn_status st, char *msg, size_t size)
{
    int in[2] = {st, rank}, out[2] = {0, 0};
    if (MPI_Allreduce(in, out, 1, MPI_2INT, MPI_MINLOC, comm) != MPI_SUCCESS)
        return fail(msg, size, CLATTN_COMM_ERROR, "MPI_Allreduce of the ranks' verdicts failed");
    if (out[0] == CLATTN_SUCCESS || st != CLATTN_SUCCESS) return st;
    return fail(msg, size, CLATTN_PEER_FAILED, "rank %d failed: %s", out[1], clattn_status_string(out[0]));
}

/* ---- creation ---- */

/* What this component serves of a descriptor (clattn_mpi.h), on this rank alone. */
static clattn_status check_desc(const clattn_desc *d, char *msg, size_t size)
{
    clattn_status st = clattn_desc_validate(d, msg, size);
    if (st) return st;
    const char *no = d->use_window ? "windows" : d->has_alibi ? "ALiBi" : d->has_mask ? "masks"
                   : d->has_sinks ? "attention sinks" : d->has_seqused_k ? "per-batch key lengths"
                   : d->varlen ? "packed sequences" : d->page_size ? "paged caches"
                   : d->layout == CLATTN_LAYOUT_STRIDED ? "explicit strides (use BHSD or BSHD shards)"
                   : d->pass != CLATTN_PASS_FORWARD ? "the backward pass" : NULL;
    if (no) return fail(msg, size, CLATTN_UNSUPPORTED, "ring attention: %s not supported", no);
    if (d->causal && d->seq_q != d->seq_kv)
        return fail(msg, size, CLATTN_UNSUPPORTED, "ring attention: causal needs seq_q == seq_kv (got %d and %d)",
                    d->seq_q, d->seq_kv);
    return CLATTN_SUCCESS;
}

/* All ranks pass the same descriptor: its fields' minimum and maximum over the ranks agree. */
static clattn_status check_same(MPI_Comm comm, const clattn_desc *d, char *msg, size_t size)
{
    float sc = d->scale, cap = d->softcap;
    int32_t sbits, cbits;
    memcpy(&sbits, &sc, 4);
    memcpy(&cbits, &cap, 4);
    static const char *names[] = {"batch", "heads_q", "heads_kv", "seq_q", "seq_kv", "head_dim", "head_dim_v",
                                  "dtype", "layout", "causal", "scale", "softcap", "algo"};
    const int64_t mine[] = {d->batch, d->heads_q, d->heads_kv, d->seq_q, d->seq_kv, d->head_dim, d->head_dim_v,
                            d->dtype, d->layout, d->causal != 0, sbits, cbits, d->algo};
    enum { N = sizeof mine / sizeof mine[0] };
    int64_t lo[N], hi[N];
    if (MPI_Allreduce(mine, lo, N, MPI_INT64_T, MPI_MIN, comm) != MPI_SUCCESS ||
        MPI_Allreduce(mine, hi, N, MPI_INT64_T, MPI_MAX, comm) != MPI_SUCCESS)
        return fail(msg, size, CLATTN_COMM_ERROR, "MPI_Allreduce of the descriptors failed");
    for (int i = 0; i < N; i++)
        if (lo[i] != hi[i])
            return fail(msg, size, CLATTN_INVALID_ARGUMENT, "ranks disagree on the descriptor: %s ranges from %lld to "
                        "%lld (this rank: %lld)", names[i], (long long)lo[i], (long long)hi[i], (long long)mine[i]);
    return CLATTN_SUCCESS;
}

/* The descriptor of one call: its rows and keys are views (offsets and strides) into the dense
 * shards; its o is the step buffer, dense BHSD of the call's rows. */
static clattn_desc call_desc(const clattn_ring *r, const ring_call *c, int nq_tot, int nk_tot)
{
    const clattn_desc *g = &r->desc;
    clattn_desc d = *g;
    const int64_t D = g->head_dim, DV = g->head_dim_v, hq = g->heads_q, hkv = g->heads_kv;
    d.seq_q = c->nq;
    d.seq_kv = c->nk;
    d.causal = c->causal;
    d.causal_align = CLATTN_CAUSAL_BOTTOM_RIGHT;
    d.layout = CLATTN_LAYOUT_STRIDED;
    if (g->layout == CLATTN_LAYOUT_BSHD) {
        d.q_strides = (clattn_strides){nq_tot * hq * D, D, hq * D};
        d.k_strides = (clattn_strides){nk_tot * hkv * D, D, hkv * D};
        d.v_strides = (clattn_strides){nk_tot * hkv * DV, DV, hkv * DV};
    } else {
        d.q_strides = (clattn_strides){hq * nq_tot * D, nq_tot * D, D};
        d.k_strides = (clattn_strides){hkv * nk_tot * D, nk_tot * D, D};
        d.v_strides = (clattn_strides){hkv * nk_tot * DV, nk_tot * DV, DV};
    }
    d.o_strides = (clattn_strides){hq * c->nq * DV, c->nq * DV, DV};
    return d;
}

static bool same_call(const clattn_desc *a, const clattn_desc *b)
{
    const clattn_strides *sa[] = {&a->q_strides, &a->k_strides, &a->v_strides, &a->o_strides};
    const clattn_strides *sb[] = {&b->q_strides, &b->k_strides, &b->v_strides, &b->o_strides};
    for (int i = 0; i < 4; i++)
        if (sa[i]->batch != sb[i]->batch || sa[i]->head != sb[i]->head || sa[i]->seq != sb[i]->seq) return false;
    return a->seq_q == b->seq_q && a->seq_kv == b->seq_kv && a->causal == b->causal;
}

/* The plan of a call: one an earlier call of the same shape has (steps not built yet hold no
 * plan), or a new one, which the ring's plan list owns. */
static clattn_status plan_for(clattn_ring *r, const clattn_desc *d, clattn_plan **out, char *msg, size_t size)
{
    for (int s = 0; s < r->size; s++)
        for (int i = 0; i < r->steps[s].ncalls; i++)
            if (r->steps[s].plan[i] && same_call(&r->steps[s].desc[i], d)) {
                *out = r->steps[s].plan[i];
                return CLATTN_SUCCESS;
            }
    clattn_status st = clattn_plan_create(r->ctx, d, out);
    if (st)
        return fail(msg, size, st, "ring attention: a step's plan (%d rows x %d keys): %s", d->seq_q, d->seq_kv,
                    clattn_context_last_error(r->ctx));
    r->plans[r->nplans++] = *out;
    return CLATTN_SUCCESS;
}

static size_t shard_elems(const clattn_desc *d, int heads, int rows, int dim)
{
    return (size_t)d->batch * (size_t)heads * (size_t)rows * (size_t)dim;
}

/* Bytes of rank x's K/V shard, k then v. */
static size_t kv_bytes(const clattn_ring *r, int x, size_t *k_bytes)
{
    const clattn_desc *d = &r->desc;
    *k_bytes = shard_elems(d, d->heads_kv, r->ks[x].total, d->head_dim) * r->es;
    return *k_bytes + shard_elems(d, d->heads_kv, r->ks[x].total, d->head_dim_v) * r->es;
}

static cl_int make_buffer(clattn_ring *r, size_t bytes, cl_mem *out)
{
    cl_int e = CL_SUCCESS;
    *out = clCreateBuffer(clattn_context_cl_context(r->ctx), CL_MEM_READ_WRITE, bytes ? bytes : 4, NULL, &e);
    return e;
}

/* This rank's part of creation: shards, the calls and plans of every step, buffers. */
static clattn_status build(clattn_ring *r, char *msg, size_t size)
{
    const clattn_desc *d = &r->desc;
    const int P = r->size;
    r->es = clattn_dtype_size(d->dtype);
    r->ks = calloc((size_t)P, sizeof *r->ks);
    r->steps = calloc((size_t)P, sizeof *r->steps);
    r->plans = calloc(2 * (size_t)P, sizeof *r->plans);
    r->stats = calloc((size_t)P, sizeof *r->stats);
    if (!r->ks || !r->steps || !r->plans || !r->stats)
        return fail(msg, size, CLATTN_OUT_OF_HOST_MEMORY, "ring attention: out of host memory");
    clattn_ring_shard_of(d->seq_q, P, r->rank, &r->qs);
    for (int x = 0; x < P; x++) clattn_ring_shard_of(d->seq_kv, P, x, &r->ks[x]);
    clattn_status st;
    for (int s = 0; s < P; s++) {
        const int src = (r->rank - s + P) % P;
        step *t = &r->steps[s];
        t->ncalls = clattn__ring_calls(d->causal, r->rank, src, &r->qs, &r->ks[src], t->call);
        for (int i = 0; i < t->ncalls; i++) {
            t->desc[i] = call_desc(r, &t->call[i], r->qs.total, r->ks[src].total);
            if ((st = plan_for(r, &t->desc[i], &t->plan[i], msg, size))) return st;
        }
    }
    size_t k_max = 0; /* shards differ by a row at most; k and v grow together */
    for (int x = 0; x < P; x++) {
        size_t kb;
        const size_t b = kv_bytes(r, x, &kb);
        if (b > r->kv_max) {
            r->kv_max = b;
            k_max = kb;
        }
    }
    const size_t rows = shard_elems(d, d->heads_q, r->qs.total, 1);
    cl_int e = CL_SUCCESS;
    if (P > 1) {
        for (int i = 0; i < 2; i++) {
            r->host[i] = malloc(r->kv_max ? r->kv_max : 1);
            if (!r->host[i]) return fail(msg, size, CLATTN_OUT_OF_HOST_MEMORY, "ring attention: out of host memory");
            if (!e) e = make_buffer(r, k_max, &r->kbuf[i]);
            if (!e) e = make_buffer(r, r->kv_max - k_max, &r->vbuf[i]);
        }
    }
    if (!e) e = make_buffer(r, rows * (size_t)d->head_dim_v * r->es, &r->o_step);
    if (!e) e = make_buffer(r, rows * 4, &r->lse_step);
    if (!e) e = make_buffer(r, rows * (size_t)d->head_dim_v * 4, &r->acc_o);
    if (!e) e = make_buffer(r, rows * 4, &r->acc_lse);
    if (e) return fail(msg, size, e, "ring attention: clCreateBuffer failed (%d)", e);
    return CLATTN_SUCCESS;
}

clattn_status clattn_ring_create(clattn_context *ctx, MPI_Comm comm, const clattn_desc *desc, clattn_ring **out,
                                 char *message, size_t message_size)
{
    char scratch[8];
    if (!message || !message_size) {
        message = scratch;
        message_size = sizeof scratch;
    }
    message[0] = '\0';
    if (out) *out = NULL;
    int rank = 0, size = 0;
    if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &size) != MPI_SUCCESS)
        return fail(message, message_size, CLATTN_COMM_ERROR, "ring attention: the communicator is not usable");
    clattn_status st = CLATTN_SUCCESS;
    if (!ctx || !desc || !out)
        st = fail(message, message_size, CLATTN_INVALID_ARGUMENT, "ring attention: context, descriptor and out are required");
    if (!st) st = check_desc(desc, message, message_size);
    if ((st = agree(comm, rank, st, message, message_size))) return st;
    if ((st = check_same(comm, desc, message, message_size))) return st;

    clattn_ring *r = calloc(1, sizeof *r);
    if (!r) st = fail(message, message_size, CLATTN_OUT_OF_HOST_MEMORY, "ring attention: out of host memory");
    if (r) {
        r->ctx = ctx;
        r->comm = MPI_COMM_NULL;
        r->rank = rank;
        r->size = size;
        r->desc = *desc;
        if (!r->desc.heads_kv) r->desc.heads_kv = r->desc.heads_q;
        if (!r->desc.head_dim_v) r->desc.head_dim_v = r->desc.head_dim;
        st = build(r, message, message_size);
        for (int x = 0; x < size && !st; x++) { /* every rank sees every shard's size: one verdict */
            size_t kb;
            const size_t bytes = kv_bytes(r, x, &kb);
            if ((bytes + PIECE_BYTES - 1) / PIECE_BYTES > STEP_REQUESTS / 2)
                st = fail(message, message_size, CLATTN_UNSUPPORTED, "ring attention: rank %d's K/V shard of %zu "
                          "bytes exceeds what one step transfers (%d GiB)", x, bytes, STEP_REQUESTS / 2);
        }
    }
    /* the duplicate is made on every rank, whatever the verdict, so that MPI_Comm_dup (itself
     * collective) is matched; a failed ring frees it again */
    MPI_Comm dup = MPI_COMM_NULL;
    const int dup_rc = MPI_Comm_dup(comm, &dup);
    if (!st && dup_rc != MPI_SUCCESS) st = fail(message, message_size, CLATTN_COMM_ERROR, "MPI_Comm_dup failed");
    if (dup != MPI_COMM_NULL) MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    st = agree(comm, rank, st, message, message_size);
    if (r) r->comm = dup;
    if (st) {
        clattn_ring_destroy(r);
        if (!r && dup != MPI_COMM_NULL) MPI_Comm_free(&dup);
        return st;
    }
    *out = r;
    return CLATTN_SUCCESS;
}

void clattn_ring_destroy(clattn_ring *r)
{
    if (!r) return;
    for (int i = 0; i < r->nplans; i++) clattn_plan_destroy(r->plans[i]);
    for (int i = 0; i < 2; i++) {
        free(r->host[i]);
        if (r->kbuf[i]) clReleaseMemObject(r->kbuf[i]);
        if (r->vbuf[i]) clReleaseMemObject(r->vbuf[i]);
    }
    const cl_mem mine[] = {r->o_step, r->lse_step, r->acc_o, r->acc_lse};
    for (int i = 0; i < 4; i++)
        if (mine[i]) clReleaseMemObject(mine[i]);
    if (r->comm != MPI_COMM_NULL) MPI_Comm_free(&r->comm);
    free(r->ks);
    free(r->steps);
    free(r->plans);
    free(r->stats);
    free(r);
}

/* ---- execution ---- */

/* The caller's buffers: in the context, large enough for this rank's shards, o and lse
 * sharing none with an input; the queue on the context and device, in order. */
static clattn_status check_call(clattn_ring *r, cl_command_queue queue, cl_mem q, cl_mem k, cl_mem v, cl_mem o,
                                cl_mem lse)
{
    const size_t sz = sizeof r->error;
    if (!queue || !q || !k || !v || !o)
        return fail(r->error, sz, CLATTN_INVALID_ARGUMENT, "ring attention: queue, q, k, v and o are required");
    cl_context qctx = NULL;
    cl_device_id qdev = NULL;
    cl_command_queue_properties props = 0;
    cl_int e = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL);
    if (!e) e = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof qdev, &qdev, NULL);
    if (!e) e = clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (e) return fail(r->error, sz, e, "ring attention: clGetCommandQueueInfo failed (%d)", e);
    if (qctx != clattn_context_cl_context(r->ctx) || qdev != clattn_context_device(r->ctx))
        return fail(r->error, sz, CL_INVALID_COMMAND_QUEUE, "ring attention: the queue belongs to another context or device");
    if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return fail(r->error, sz, CL_INVALID_COMMAND_QUEUE, "ring attention: the queue must be in order");
    const clattn_desc *d = &r->desc;
    const int nq = r->qs.total, nk = r->ks[r->rank].total;
    const struct { cl_mem m; const char *name; size_t bytes; } t[] = {
        {q, "q", shard_elems(d, d->heads_q, nq, d->head_dim) * r->es},
        {k, "k", shard_elems(d, d->heads_kv, nk, d->head_dim) * r->es},
        {v, "v", shard_elems(d, d->heads_kv, nk, d->head_dim_v) * r->es},
        {o, "o", shard_elems(d, d->heads_q, nq, d->head_dim_v) * r->es},
        {lse, "lse", shard_elems(d, d->heads_q, nq, 1) * 4}};
    for (int i = 0; i < 5; i++) {
        if (!t[i].m) continue;
        size_t have = 0;
        cl_context mctx = NULL;
        e = clGetMemObjectInfo(t[i].m, CL_MEM_SIZE, sizeof have, &have, NULL);
        if (!e) e = clGetMemObjectInfo(t[i].m, CL_MEM_CONTEXT, sizeof mctx, &mctx, NULL);
        if (e) return fail(r->error, sz, e, "ring attention: buffer %s: clGetMemObjectInfo failed (%d)", t[i].name, e);
        if (mctx != qctx)
            return fail(r->error, sz, CL_INVALID_CONTEXT, "ring attention: buffer %s belongs to another context", t[i].name);
        if (have < t[i].bytes)
            return fail(r->error, sz, CLATTN_BUFFER_TOO_SMALL, "ring attention: buffer %s holds %zu bytes, this rank's "
                        "shard needs %zu", t[i].name, have, t[i].bytes);
    }
    if (o == q || o == k || o == v || (lse && (lse == q || lse == k || lse == v || lse == o)))
        return fail(r->error, sz, CLATTN_BUFFERS_OVERLAP, "ring attention: o and lse must not share a buffer with "
                    "q, k, v or each other");
    return CLATTN_SUCCESS;
}

/* Posts the step's transfer: the shard at hand (`have` bytes) to the right, the next one
 * (`want` bytes) from the left, in pieces. Returns the number of requests, or -1. */
static int post(clattn_ring *r, const unsigned char *send, size_t have, unsigned char *recv, size_t want,
                MPI_Request *reqs, int cap)
{
    const int right = (r->rank + 1) % r->size, left = (r->rank - 1 + r->size) % r->size;
    int n = 0;
    for (size_t at = 0; at < want; at += PIECE_BYTES) {
        const size_t len = want - at < PIECE_BYTES ? want - at : PIECE_BYTES;
        if (n == cap || MPI_Irecv(recv + at, (int)len, MPI_BYTE, left, TAG, r->comm, &reqs[n]) != MPI_SUCCESS) return -1;
        n++;
    }
    for (size_t at = 0; at < have; at += PIECE_BYTES) {
        const size_t len = have - at < PIECE_BYTES ? have - at : PIECE_BYTES;
        if (n == cap ||
            MPI_Isend((void *)(send + at), (int)len, MPI_BYTE, right, TAG, r->comm, &reqs[n]) != MPI_SUCCESS)
            return -1;
        n++;
    }
    return n;
}

/* Enqueues one step's calls on the shard (k, v) and folds them into the accumulator; *last is
 * the event of the last fold (NULL with no call). */
static clattn_status enqueue_step(clattn_ring *r, cl_command_queue queue, int s, cl_mem q, cl_mem k, cl_mem v,
                                  cl_event *last)
{
    const step *t = &r->steps[s];
    const clattn_desc *g = &r->desc;
    *last = NULL;
    for (int i = 0; i < t->ncalls; i++) {
        const ring_call *c = &t->call[i];
        const size_t qrow = g->layout == CLATTN_LAYOUT_BSHD ? (size_t)g->heads_q * g->head_dim : (size_t)g->head_dim;
        const size_t krow = g->layout == CLATTN_LAYOUT_BSHD ? (size_t)g->heads_kv : 1;
        clattn_buffers bf = CLATTN_BUFFERS_INIT;
        bf.q = q;
        bf.k = k;
        bf.v = v;
        bf.o = r->o_step;
        bf.lse = r->lse_step;
        bf.q_offset = (size_t)c->q0 * qrow;
        bf.k_offset = (size_t)c->k0 * krow * (size_t)g->head_dim;
        bf.v_offset = (size_t)c->k0 * krow * (size_t)g->head_dim_v;
        cl_event attn = NULL, fold = NULL;
        clattn_status st = clattn_plan_execute(t->plan[i], queue, &bf, *last ? 1 : 0, *last ? last : NULL, &attn);
        if (*last) clReleaseEvent(*last);
        *last = NULL;
        if (!st)
            st = clattn_merge_fold(r->ctx, queue, &t->desc[i], r->o_step, 0, r->lse_step, 0, r->acc_o, r->acc_lse, r->qs.total,
                                   c->q0, 1, &attn, &fold);
        if (attn) clReleaseEvent(attn);
        if (st)
            return fail(r->error, sizeof r->error, st, "ring attention: step %d: %s", s,
                        clattn_context_last_error(r->ctx));
        *last = fold;
    }
    return CLATTN_SUCCESS;
}

/* Waits for the step's transfer and computation, polling both while the transfer runs, so that
 * each one's end is timed (and MPI progresses), then blocking on the computation. Returns the
 * first failure. */
static clattn_status wait_step(clattn_ring *r, int s, MPI_Request *reqs, int nreq, cl_event last, double t0)
{
    clattn_ring_step *st = &r->stats[s];
    bool comm_done = nreq == 0, compute_done = last == NULL;
    clattn_status bad = CLATTN_SUCCESS;
    st->comm_ms = comm_done ? 0 : -1;
    st->compute_ms = compute_done ? 0 : -1;
    while (!comm_done || !compute_done) {
        bool moved = false;
        if (!comm_done) {
            int flag = 0;
            if (MPI_Testall(nreq, reqs, &flag, MPI_STATUSES_IGNORE) != MPI_SUCCESS) {
                bad = fail(r->error, sizeof r->error, CLATTN_COMM_ERROR, "ring attention: step %d: a transfer failed", s);
                comm_done = true;
            } else if (flag) {
                comm_done = moved = true;
                st->comm_ms = now_ms() - t0;
            }
        }
        if (!compute_done && comm_done) { /* nothing left to progress: block, do not poll (the
                                              * poll shares a core with the device's threads) */
            const cl_int e = clWaitForEvents(1, &last);
            if (e && !bad)
                bad = fail(r->error, sizeof r->error, e, "ring attention: step %d: the device reported %d", s, e);
            compute_done = true;
            st->compute_ms = now_ms() - t0;
            continue;
        }
        if (!compute_done) {
            cl_int status = CL_QUEUED;
            const cl_int e = clGetEventInfo(last, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, NULL);
            if (e || status < 0) {
                if (!bad)
                    bad = fail(r->error, sizeof r->error, e ? e : status, "ring attention: step %d: the device "
                               "reported %d", s, e ? e : status);
                compute_done = true;
            } else if (status == CL_COMPLETE) {
                compute_done = moved = true;
                st->compute_ms = now_ms() - t0;
            }
        }
        if (!moved && (!comm_done || !compute_done)) nanosleep(&(struct timespec){0, 20000}, NULL);
    }
    st->step_ms = now_ms() - t0;
    return bad;
}

/* The ring itself: step s computes on the shard of rank - s while the shard of rank - s - 1
 * arrives. A local failure stops the computing, not the forwarding, so no neighbour waits. */
static clattn_status run_ring(clattn_ring *r, cl_command_queue queue, cl_mem q, cl_mem k, cl_mem v)
{
    const int P = r->size;
    clattn_status failed = CLATTN_SUCCESS;
    cl_event written[2] = {NULL, NULL}; /* host[i] -> device: host[i] is reused after it */
    const float empty = -INFINITY;
    cl_int e = clEnqueueFillBuffer(queue, r->acc_lse, &empty, sizeof empty, 0,
                                   shard_elems(&r->desc, r->desc.heads_q, r->qs.total, 1) * 4, 0, NULL, NULL);
    if (e) failed = fail(r->error, sizeof r->error, e, "ring attention: clEnqueueFillBuffer failed (%d)", e);
    size_t kb;
    if (P > 1) { /* the own shard, staged once: it is the first to travel */
        const size_t all = kv_bytes(r, r->rank, &kb);
        e = clEnqueueReadBuffer(queue, k, CL_TRUE, 0, kb, r->host[0], 0, NULL, NULL);
        if (!e) e = clEnqueueReadBuffer(queue, v, CL_TRUE, 0, all - kb, r->host[0] + kb, 0, NULL, NULL);
        if (e && !failed) failed = fail(r->error, sizeof r->error, e, "ring attention: reading the own K/V shard failed (%d)", e);
    }
    enum { CAP = STEP_REQUESTS };
    MPI_Request reqs[CAP];
    for (int s = 0; s < P; s++) {
        const int src = (r->rank - s + P) % P, next = (src - 1 + P) % P, cur = s % 2, nxt = (s + 1) % 2;
        const double t0 = now_ms();
        int nreq = 0;
        r->stats[s] = (clattn_ring_step){sizeof(clattn_ring_step)};
        if (s + 1 < P) {
            if (written[nxt]) { /* the next shard lands where an earlier one was staged */
                clWaitForEvents(1, &written[nxt]);
                clReleaseEvent(written[nxt]);
                written[nxt] = NULL;
            }
            size_t kb_next;
            const size_t have = kv_bytes(r, src, &kb), want = kv_bytes(r, next, &kb_next);
            nreq = post(r, r->host[cur], have, r->host[nxt], want, reqs, CAP);
            if (nreq < 0) { /* the ring is broken: no later message can be matched */
                for (int i = 0; i < 2; i++)
                    if (written[i]) clReleaseEvent(written[i]);
                return fail(r->error, sizeof r->error, CLATTN_COMM_ERROR, "ring attention: step %d: posting a "
                            "transfer failed", s);
            }
            r->stats[s].bytes = (double)want;
        }
        cl_event last = NULL;
        if (!failed) {
            const cl_mem ks = s ? r->kbuf[cur] : k, vs = s ? r->vbuf[cur] : v;
            failed = enqueue_step(r, queue, s, q, ks, vs, &last);
            clFlush(queue);
        }
        const clattn_status w = wait_step(r, s, reqs, nreq, last, t0);
        if (last) clReleaseEvent(last);
        if (w == CLATTN_COMM_ERROR) return w;
        if (w && !failed) failed = w;
        if (s + 1 < P && !failed) { /* the next shard to the device, behind this step's work */
            size_t kb_next;
            const size_t all = kv_bytes(r, next, &kb_next);
            e = clEnqueueWriteBuffer(queue, r->kbuf[nxt], CL_FALSE, 0, kb_next, r->host[nxt], 0, NULL, NULL);
            if (!e)
                e = clEnqueueWriteBuffer(queue, r->vbuf[nxt], CL_FALSE, 0, all - kb_next, r->host[nxt] + kb_next, 0,
                                         NULL, &written[nxt]);
            if (e) failed = fail(r->error, sizeof r->error, e, "ring attention: staging step %d's shard failed (%d)", s + 1, e);
        }
    }
    for (int i = 0; i < 2; i++)
        if (written[i]) clReleaseEvent(written[i]);
    return failed;
}

clattn_status clattn_ring_forward(clattn_ring *r, cl_command_queue queue, cl_mem q, cl_mem k, cl_mem v, cl_mem o,
                                  cl_mem lse)
{
    if (!r) return CLATTN_INVALID_ARGUMENT;
    r->error[0] = '\0';
    clattn_status st = check_call(r, queue, q, k, v, o, lse);
    if ((st = agree(r->comm, r->rank, st, r->error, sizeof r->error))) return st;
    st = run_ring(r, queue, q, k, v);
    if (st == CLATTN_COMM_ERROR) return st; /* the ring is broken: no collective can follow */
    if ((st = agree(r->comm, r->rank, st, r->error, sizeof r->error))) return st;
    clattn_desc out = r->desc;
    out.seq_q = r->qs.total;
    cl_event done = NULL;
    if (r->qs.total > 0) {
        st = clattn_merge_store(r->ctx, queue, &out, r->acc_o, r->acc_lse, o, 0, lse, 0, 0, NULL, &done);
        if (st) fail(r->error, sizeof r->error, st, "ring attention: storing the result: %s", clattn_context_last_error(r->ctx));
        const cl_int e = done ? clWaitForEvents(1, &done) : CL_SUCCESS;
        if (done) clReleaseEvent(done);
        if (e && !st) st = fail(r->error, sizeof r->error, e, "ring attention: storing the result failed (%d)", e);
    }
    return agree(r->comm, r->rank, st, r->error, sizeof r->error);
}

clattn_status clattn_ring_step_stats(const clattn_ring *r, int index, clattn_ring_step *out)
{
    if (!r || !out || index < 0 || index >= r->size || out->struct_size < sizeof(size_t)) return CLATTN_INVALID_ARGUMENT;
    const size_t n = out->struct_size < sizeof *out ? out->struct_size : sizeof *out;
    memcpy(out, &r->stats[index], n);
    out->struct_size = n;
    return CLATTN_SUCCESS;
}

int clattn_ring_size(const clattn_ring *r) { return r ? r->size : 0; }
int clattn_ring_rank(const clattn_ring *r) { return r ? r->rank : -1; }
const char *clattn_ring_last_error(const clattn_ring *r) { return r ? r->error : ""; }
