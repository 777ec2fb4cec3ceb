/* The CPU reference: DESIGN.md's formula written out plainly, double accumulation, every
 * feature. It is the oracle for every device path, so it stays simple rather than fast;
 * rows are spread over the cores with
 * plain threads. */
#include "shape.h"
#include "abi.h"
#include "diag.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline double load(const void *p, clattn_dtype t, size_t i)
{
    switch (t) {
    case CLATTN_DTYPE_F16: return clattn_f16_to_f32(((const uint16_t *)p)[i]);
    case CLATTN_DTYPE_BF16: return clattn_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

static inline void store(void *p, clattn_dtype t, size_t i, double x)
{
    switch (t) {
    case CLATTN_DTYPE_F16: ((uint16_t *)p)[i] = clattn_f32_to_f16((float)x); break;
    case CLATTN_DTYPE_BF16: ((uint16_t *)p)[i] = clattn_f32_to_bf16((float)x); break;
    default: ((float *)p)[i] = (float)x; break;
    }
}

/* Where sequence b's token 0 of head 0 sits in each tensor, and its lengths. Packed
 * sequences (varlen) start at their cumulative token offsets; the batch stride is unused. */
typedef struct seq {
    size_t q, k, v, o;
    int nq, nk, tok0;
} seq;

static seq seq_of(const clattn_shape *s, const clattn_host_tensors *t, int b)
{
    seq r;
    if (s->varlen) {
        const int q0 = t->cu_seqlens_q[b], k0 = t->cu_seqlens_k[b];
        r.nq = t->cu_seqlens_q[b + 1] - q0;
        r.nk = t->cu_seqlens_k[b + 1] - k0;
        r.tok0 = q0;
        r.q = (size_t)q0 * (size_t)s->q.seq;
        r.o = (size_t)q0 * (size_t)s->o.seq;
        r.k = (size_t)k0 * (size_t)s->k.seq;
        r.v = (size_t)k0 * (size_t)s->v.seq;
    } else {
        r.nq = s->seq_q;
        r.nk = s->seq_kv;
        r.tok0 = 0;
        r.q = (size_t)b * (size_t)s->q.batch;
        r.o = (size_t)b * (size_t)s->o.batch;
        r.k = (size_t)b * (size_t)s->k.batch;
        r.v = (size_t)b * (size_t)s->v.batch;
    }
    if (s->has_seqused_k && t->seqused_k[b] < r.nk) r.nk = t->seqused_k[b];
    return r;
}

/* One query row: scores over its allowed keys, softmax (with the sink), o and lse. */
static void row(const clattn_shape *s, const clattn_host_tensors *t, int b, int h, int i, const seq *sq,
                double *score)
{
    const int g = h / s->group;
    const long off = s->top_left ? 0 : (long)sq->nk - sq->nq; /* alignment of causal/window/alibi */
    long lo = 0, hi = sq->nk;                                   /* allowed keys [lo, hi) */
    if (s->window_left >= 0 && i + off - s->window_left > lo) lo = i + off - s->window_left;
    if (s->window_right >= 0 && i + off + s->window_right + 1 < hi) hi = i + off + s->window_right + 1;

    const size_t qi = sq->q + (size_t)h * s->q.head + (size_t)i * s->q.seq;
    double m = -INFINITY;
    for (long j = lo; j < hi; j++) {
        const size_t kj = sq->k + (size_t)g * s->k.head + (size_t)j * s->k.seq;
        double dot = 0.0;
        for (int d = 0; d < s->head_dim; d++)
            dot += load(t->q, s->dtype, qi + d) * load(t->k, s->dtype, kj + d);
        double x = (double)s->scale * dot;
        if (s->softcap > 0) x = s->softcap * tanh(x / s->softcap);
        if (s->has_alibi) x -= (double)t->alibi_slopes[h] * fabs((double)(i + off - j));
        if (s->has_mask)
            x += t->mask[(size_t)b * s->mask.batch + (size_t)h * s->mask.head + (size_t)i * s->mask.seq + (size_t)j];
        score[j] = x;
        if (isnan(x) || x > m) m = x; /* a NaN score makes the whole row NaN, never vanishes */
    }
    const double sink = s->has_sinks ? (double)t->sinks[h] : -INFINITY;
    if (sink > m) m = sink;

    const size_t oi = sq->o + (size_t)h * s->o.head + (size_t)i * s->o.seq;
    const size_t li = s->varlen ? (size_t)h * s->total_q + sq->tok0 + i
                                : ((size_t)b * s->heads_q + (size_t)h) * s->seq_q + (size_t)i;
    if (m == -INFINITY) { /* no allowed key and no sink: o = 0, lse = -inf */
        for (int d = 0; d < s->head_dim_v; d++) store(t->o, s->dtype, oi + d, 0.0);
        if (t->lse) t->lse[li] = -INFINITY;
        return;
    }
    double sum = s->has_sinks ? exp(sink - m) : 0.0;
    for (long j = lo; j < hi; j++) {
        score[j] = exp(score[j] - m);
        sum += score[j];
    }
    for (int d = 0; d < s->head_dim_v; d++) {
        double acc = 0.0;
        for (long j = lo; j < hi; j++)
            acc += score[j] * load(t->v, s->dtype, sq->v + (size_t)g * s->v.head + (size_t)j * s->v.seq + d);
        store(t->o, s->dtype, oi + d, sum > 0 || isnan(sum) ? acc / sum : 0.0);
    }
    if (t->lse) t->lse[li] = (float)(m + log(sum));
}

typedef struct ref_job {
    const clattn_shape *s;
    const clattn_host_tensors *t;
    long next, tasks;
    int failed;
    pthread_mutex_t lock;
} ref_job;

/* Takes (batch, head) tasks from the job until none are left. */
static void *ref_worker(void *arg)
{
    ref_job *job = arg;
    const clattn_shape *s = job->s;
    double *score = malloc(sizeof(double) * (size_t)s->seq_kv);
    for (;;) {
        pthread_mutex_lock(&job->lock);
        long task = job->next++;
        if (!score) job->failed = 1;
        pthread_mutex_unlock(&job->lock);
        if (task >= job->tasks || !score) break;
        const int b = (int)(task / s->heads_q), h = (int)(task % s->heads_q);
        const seq sq = seq_of(s, job->t, b);
        for (int i = 0; i < sq.nq; i++) row(s, job->t, b, h, i, &sq, score);
    }
    free(score);
    return NULL;
}

clattn_status clattn_reference_forward(const clattn_desc *desc, const clattn_host_tensors *caller,
                                       char *msg, size_t msg_size)
{
    clattn_shape s;
    clattn_status st = clattn__resolve(desc, &s, msg, msg_size);
    if (st) return st;
    if (!caller) {
        clattn__format(msg, msg_size, "tensors is NULL");
        return CLATTN_INVALID_ARGUMENT;
    }
    clattn_host_tensors copy;
    if ((st = clattn__struct_in(&copy, sizeof copy, caller, "clattn_host_tensors", msg, msg_size))) return st;
    const clattn_host_tensors *t = &copy;
    if ((st = clattn__check_host(&s, t, msg, msg_size))) return st;

    /* Rows of different (batch, head) pairs are independent: spread them over the cores. */
    ref_job job = {&s, t, 0, (long)s.batch * s.heads_q, 0, PTHREAD_MUTEX_INITIALIZER};
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nthreads = (int)(ncpu < 1 ? 1 : ncpu > 64 ? 64 : ncpu);
    if (nthreads > job.tasks) nthreads = (int)job.tasks;
    pthread_t threads[64];
    int started = 0;
    for (int i = 1; i < nthreads; i++, started++)
        if (pthread_create(&threads[i - 1], NULL, ref_worker, &job)) break;
    ref_worker(&job); /* the calling thread works too */
    for (int i = 0; i < started; i++) pthread_join(threads[i], NULL);
    pthread_mutex_destroy(&job.lock);
    if (job.failed) {
        clattn__format(msg, msg_size, "out of host memory for the score row");
        return CLATTN_OUT_OF_HOST_MEMORY;
    }
    return CLATTN_SUCCESS;
}
