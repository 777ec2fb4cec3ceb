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
    const int32_t *pages; /* a paged cache: this sequence's block table row; else NULL */
} seq;

static seq seq_of(const clattn_shape *s, const clattn_host_tensors *t, int b)
{
    seq r;
    if (s->varlen) {
        const int q0 = t->cu_seqlens_q[b], k0 = s->paged ? 0 : t->cu_seqlens_k[b];
        r.nq = t->cu_seqlens_q[b + 1] - q0;
        r.nk = s->paged ? 0 : t->cu_seqlens_k[b + 1] - k0;
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
    r.pages = NULL;
    if (s->paged) { /* keys through the table; seqused_k counts them before the append */
        r.k = r.v = 0;
        r.pages = t->block_table + (size_t)b * s->pages_per_seq;
        r.nk = t->seqused_k[b] + s->seq_new;
    } else if (s->has_seqused_k && t->seqused_k[b] < r.nk) {
        r.nk = t->seqused_k[b];
    }
    return r;
}

/* Where key j's row (of KV head g) starts in k (or v with `value`); false when a paged key's
 * block id is outside the cache: the key is masked. */
static bool key_at(const clattn_shape *s, const seq *sq, int g, long j, bool value, size_t *at)
{
    const clattn_strides *st = value ? &s->v : &s->k;
    size_t row = (size_t)j;
    if (sq->pages) {
        const int32_t page = sq->pages[j / s->page_size];
        if (page < 0 || page >= s->num_pages) return false;
        row = (size_t)page * (size_t)s->page_size + (size_t)(j % s->page_size);
    }
    *at = (value ? sq->v : sq->k) + (size_t)g * st->head + row * st->seq;
    return true;
}

/* Row i's allowed keys [lo, hi) and its scores: raw[j] = scale q.k (before the softcap), score[j]
 * the logit with every term of the formula. Returns the row's maximum logit, the sink included
 * (-inf when the row sees nothing); NaN if a score is NaN. */
static double scores(const clattn_shape *s, const clattn_host_tensors *t, int b, int h, int i, const seq *sq,
                     long *lo_out, long *hi_out, double *raw, double *score)
{
    const int g = h / s->group;
    const long off = s->top_left ? 0 : (long)sq->nk - sq->nq; /* alignment of causal/window/alibi */
    long lo = 0, hi = sq->nk;                                   /* allowed keys [lo, hi) */
    if (s->window_left >= 0 && i + off - s->window_left > lo) lo = i + off - s->window_left;
    if (s->window_right >= 0 && i + off + s->window_right + 1 < hi) hi = i + off + s->window_right + 1;
    *lo_out = lo;
    *hi_out = hi;
    const size_t qi = sq->q + (size_t)h * s->q.head + (size_t)i * s->q.seq;
    double m = -INFINITY;
    for (long j = lo; j < hi; j++) {
        size_t kj;
        if (!key_at(s, sq, g, j, false, &kj)) { /* a block id outside the cache: never read */
            raw[j] = 0.0;
            score[j] = -INFINITY;
            continue;
        }
        double dot = 0.0;
        for (int d = 0; d < s->head_dim; d++)
            dot += load(t->q, s->dtype, qi + d) * load(t->k, s->dtype, kj + d);
        double x = (double)s->scale * dot;
        raw[j] = x;
        if (s->softcap > 0) x = s->softcap * tanh(x / s->softcap);
        if (s->has_alibi) x -= (double)t->alibi_slopes[h] * fabs((double)(i + off - j));
        if (s->has_mask)
            x += t->mask[(size_t)b * s->mask.batch + (size_t)h * s->mask.head + (size_t)i * s->mask.seq + (size_t)j];
        score[j] = x;
        if (isnan(x) || x > m) m = x; /* a NaN score makes the whole row NaN, never vanishes */
    }
    const double sink = s->has_sinks ? (double)t->sinks[h] : -INFINITY;
    return sink > m ? sink : m;
}

/* Turns the row's scores into probabilities in place; returns lse (-inf for an empty row,
 * whose probabilities are all 0). */
static double softmax(const clattn_shape *s, const clattn_host_tensors *t, int h, long lo, long hi, double m,
                      double *p)
{
    if (m == -INFINITY) { /* no allowed key and no sink */
        for (long j = lo; j < hi; j++) p[j] = 0.0;
        return -INFINITY;
    }
    double sum = s->has_sinks ? exp((double)t->sinks[h] - m) : 0.0;
    for (long j = lo; j < hi; j++) {
        p[j] = exp(p[j] - m);
        sum += p[j];
    }
    for (long j = lo; j < hi; j++) p[j] /= sum;
    return m + log(sum);
}

static size_t lse_index(const clattn_shape *s, int b, int h, int i, const seq *sq)
{
    return s->varlen ? (size_t)h * s->total_q + sq->tok0 + i
                     : ((size_t)b * s->heads_q + (size_t)h) * s->seq_q + (size_t)i;
}

/* One query row of the forward: o and lse. */
static void row(const clattn_shape *s, const clattn_host_tensors *t, int b, int h, int i, const seq *sq,
                double *raw, double *p)
{
    long lo, hi;
    const double m = scores(s, t, b, h, i, sq, &lo, &hi, raw, p);
    const double lse = softmax(s, t, h, lo, hi, m, p);
    const int g = h / s->group;
    const size_t oi = sq->o + (size_t)h * s->o.head + (size_t)i * s->o.seq;
    for (int d = 0; d < s->head_dim_v; d++) {
        double acc = 0.0;
        size_t vj;
        for (long j = lo; j < hi; j++)
            if (p[j] != 0.0 && key_at(s, sq, g, j, true, &vj)) acc += p[j] * load(t->v, s->dtype, vj + d);
        store(t->o, s->dtype, oi + d, acc);
    }
    if (t->lse) t->lse[lse_index(s, b, h, i, sq)] = (float)lse;
}

/* Per (batch, KV head): every row of its query heads, with dk and dv accumulated over them in
 * double; dq written per row; each row's sink gradient added to dsink[b * heads_q + h]. */
typedef struct bwd_work {
    double *raw, *p, *ds, *dk, *dv; /* seq_kv each; seq_kv x d, seq_kv x dv */
} bwd_work;

static void bwd_task(const clattn_shape *s, const clattn_host_tensors *t, int b, int g, bwd_work *w, double *dsink)
{
    const seq sq = seq_of(s, t, b);
    const int nk_all = s->varlen ? t->cu_seqlens_k[b + 1] - t->cu_seqlens_k[b] : s->seq_kv; /* before seqused_k */
    const int d = s->head_dim, dvd = s->head_dim_v;
    memset(w->dk, 0, sizeof(double) * (size_t)nk_all * (size_t)d);
    memset(w->dv, 0, sizeof(double) * (size_t)nk_all * (size_t)dvd);
    for (int h = g * s->group; h < (g + 1) * s->group; h++)
        for (int i = 0; i < sq.nq; i++) {
            long lo, hi;
            const double m = scores(s, t, b, h, i, &sq, &lo, &hi, w->raw, w->p);
            const double lse = softmax(s, t, h, lo, hi, m, w->p);
            const size_t qi = sq.q + (size_t)h * s->q.head + (size_t)i * s->q.seq;
            const size_t oi = sq.o + (size_t)h * s->o.head + (size_t)i * s->o.seq; /* d_o and o */
            double D = 0.0;
            for (int c = 0; c < dvd; c++) {
                double acc = 0.0;
                for (long j = lo; j < hi; j++)
                    acc += w->p[j] * load(t->v, s->dtype, sq.v + (size_t)g * s->v.head + (size_t)j * s->v.seq + c);
                D += acc * load(t->d_o, s->dtype, oi + c);
            }
            for (long j = lo; j < hi; j++) {
                const size_t vj = sq.v + (size_t)g * s->v.head + (size_t)j * s->v.seq;
                double dp = 0.0;
                for (int c = 0; c < dvd; c++) dp += load(t->d_o, s->dtype, oi + c) * load(t->v, s->dtype, vj + c);
                double ds = w->p[j] * (dp - D);
                if (s->softcap > 0) {
                    const double th = tanh(w->raw[j] / s->softcap);
                    ds *= 1.0 - th * th;
                }
                w->ds[j] = ds;
                for (int c = 0; c < dvd; c++) w->dv[(size_t)j * dvd + c] += w->p[j] * load(t->d_o, s->dtype, oi + c);
                for (int c = 0; c < d; c++)
                    w->dk[(size_t)j * d + c] += (double)s->scale * ds * load(t->q, s->dtype, qi + c);
            }
            for (int c = 0; c < d; c++) {
                double acc = 0.0;
                for (long j = lo; j < hi; j++)
                    acc += w->ds[j] * load(t->k, s->dtype, sq.k + (size_t)g * s->k.head + (size_t)j * s->k.seq + c);
                store(t->dq, s->dtype, qi + c, (double)s->scale * acc);
            }
            if (s->has_sinks && lse != -INFINITY) dsink[(size_t)b * s->heads_q + h] -= D * exp((double)t->sinks[h] - lse);
        }
    const size_t k0 = s->varlen ? (size_t)t->cu_seqlens_k[b] * (size_t)s->k.seq : (size_t)b * (size_t)s->k.batch;
    const size_t v0 = s->varlen ? (size_t)t->cu_seqlens_k[b] * (size_t)s->v.seq : (size_t)b * (size_t)s->v.batch;
    for (int j = 0; j < nk_all; j++) {
        for (int c = 0; c < d; c++)
            store(t->dk, s->dtype, k0 + (size_t)g * s->k.head + (size_t)j * s->k.seq + c, w->dk[(size_t)j * d + c]);
        for (int c = 0; c < dvd; c++)
            store(t->dv, s->dtype, v0 + (size_t)g * s->v.head + (size_t)j * s->v.seq + c, w->dv[(size_t)j * dvd + c]);
    }
}

typedef struct ref_job {
    const clattn_shape *s;
    const clattn_host_tensors *t;
    bool backward;
    double *dsink; /* backward with sinks: batch x heads_q partial sums */
    long next, tasks;
    pthread_mutex_t lock;
} ref_job;

/* One thread's share of a job: its scratch rows, allocated before any thread starts. */
typedef struct ref_thread {
    ref_job *job;
    bwd_work w;
} ref_thread;

static void work_free(bwd_work *w)
{
    free(w->raw); free(w->p); free(w->ds); free(w->dk); free(w->dv);
    memset(w, 0, sizeof *w);
}

static bool work_alloc(const ref_job *job, bwd_work *w)
{
    const size_t nk = (size_t)job->s->seq_kv;
    w->raw = malloc(sizeof(double) * nk);
    w->p = malloc(sizeof(double) * nk);
    w->ds = malloc(sizeof(double) * nk);
    w->dk = job->backward ? malloc(sizeof(double) * nk * (size_t)job->s->head_dim) : NULL;
    w->dv = job->backward ? malloc(sizeof(double) * nk * (size_t)job->s->head_dim_v) : NULL;
    if (w->raw && w->p && w->ds && (!job->backward || (w->dk && w->dv))) return true;
    work_free(w);
    return false;
}

/* Takes tasks from the job until none are left: (batch, query head) for the forward, (batch,
 * KV head) for the backward. The results do not depend on which thread takes which task. */
static void *ref_worker(void *arg)
{
    ref_thread *th = arg;
    ref_job *job = th->job;
    const clattn_shape *s = job->s;
    for (;;) {
        pthread_mutex_lock(&job->lock);
        const long task = job->next++;
        pthread_mutex_unlock(&job->lock);
        if (task >= job->tasks) break;
        if (job->backward) {
            bwd_task(s, job->t, (int)(task / s->heads_kv), (int)(task % s->heads_kv), &th->w, job->dsink);
        } else {
            const int b = (int)(task / s->heads_q), h = (int)(task % s->heads_q);
            const seq sq = seq_of(s, job->t, b);
            for (int i = 0; i < sq.nq; i++) row(s, job->t, b, h, i, &sq, th->w.raw, th->w.p);
        }
    }
    return NULL;
}

/* Runs the job's tasks on every core (the calling thread too). Every thread's memory is
 * allocated first, so that running out of it writes nothing. */
static clattn_status run_job(ref_job *job, char *msg, size_t msg_size)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nthreads = (int)(ncpu < 1 ? 1 : ncpu > 64 ? 64 : ncpu);
    if (nthreads > job->tasks) nthreads = (int)job->tasks;
    if (nthreads < 1) nthreads = 1;
    ref_thread th[64];
    memset(th, 0, sizeof th);
    clattn_status st = CLATTN_SUCCESS;
    for (int i = 0; i < nthreads && !st; i++) {
        th[i].job = job;
        if (!work_alloc(job, &th[i].w)) st = CLATTN_OUT_OF_HOST_MEMORY;
    }
    if (!st) {
        pthread_t threads[64];
        int started = 0;
        for (int i = 1; i < nthreads; i++, started++)
            if (pthread_create(&threads[i - 1], NULL, ref_worker, &th[i])) break;
        ref_worker(&th[0]);
        for (int i = 0; i < started; i++) pthread_join(threads[i], NULL);
    } else {
        clattn__format(msg, msg_size, "out of host memory for the reference's rows");
    }
    for (int i = 0; i < nthreads; i++) work_free(&th[i].w);
    pthread_mutex_destroy(&job->lock);
    return st;
}

/* The caller's descriptor and arrays, resolved, copied and checked for `use`. */
static clattn_status prologue(const clattn_desc *desc, const clattn_host_tensors *caller, clattn_host_use use,
                              clattn_shape *s, clattn_host_tensors *t, char *msg, size_t msg_size)
{
    const clattn_pass pass = use == CLATTN_HOST_FORWARD ? CLATTN_PASS_FORWARD : CLATTN_PASS_BACKWARD;
    clattn_status st = clattn__resolve_pass(desc, pass, s, msg, msg_size);
    if (st) return st;
    if (!caller) {
        clattn__format(msg, msg_size, "tensors is NULL");
        return CLATTN_INVALID_ARGUMENT;
    }
    if ((st = clattn__struct_in(t, sizeof *t, caller, "clattn_host_tensors", msg, msg_size))) return st;
    return clattn__check_host(s, t, use, msg, msg_size);
}

/* Rotates dims [0, rotary_dim) of the row at x by position pos, in place: pairs (2p, 2p+1)
 * interleaved, else (p, p + rotary_dim/2) (GPT-NeoX); each pair (a, b) becomes
 * (a cos - b sin, b cos + a sin) with cos, sin = rotary_cos/sin[pos][p]. */
static void rotate(const clattn_shape *s, const clattn_host_tensors *t, void *x, size_t at, int pos)
{
    const int half = s->rotary_dim / 2;
    for (int p = 0; p < half; p++) {
        const size_t ia = at + (size_t)(s->rotary_interleaved ? 2 * p : p);
        const size_t ib = at + (size_t)(s->rotary_interleaved ? 2 * p + 1 : p + half);
        const double c = t->rotary_cos[(size_t)pos * half + p], sn = t->rotary_sin[(size_t)pos * half + p];
        const double a = load(x, s->dtype, ia), b = load(x, s->dtype, ib);
        store(x, s->dtype, ia, a * c - b * sn);
        store(x, s->dtype, ib, b * c + a * sn);
    }
}

/* A paged call's inputs as the attention reads them: the caches with k_new (rotated) and
 * v_new written through the table (writes to block ids outside the cache dropped), and q
 * rotated. New arrays in *kc, *vc, *qr (NULL when unchanged); t points at them. */
static clattn_status paged_inputs(const clattn_shape *s, clattn_host_tensors *t, void **kc, void **vc, void **qr,
                                  char *msg, size_t msg_size)
{
    *kc = *vc = *qr = NULL;
    if (!s->seq_new) return CLATTN_SUCCESS;
    clattn_tensor_sizes need;
    clattn__sizes(s, &need);
    const size_t es = clattn_dtype_size(s->dtype);
    *kc = malloc(need.k * es);
    *vc = malloc(need.v * es);
    *qr = s->rotary_dim ? malloc(need.q * es) : NULL;
    if (!*kc || !*vc || (s->rotary_dim && !*qr)) {
        clattn__format(msg, msg_size, "out of host memory for the reference's updated caches");
        return CLATTN_OUT_OF_HOST_MEMORY;
    }
    memcpy(*kc, t->k, need.k * es);
    memcpy(*vc, t->v, need.v * es);
    for (int b = 0; b < s->batch; b++) {
        const int32_t *pages = t->block_table + (size_t)b * s->pages_per_seq;
        const int cached = t->seqused_k[b];
        for (int tok = 0; tok < s->seq_new; tok++) {
            const int j = cached + tok, page = pages[j / s->page_size];
            if (page < 0 || page >= s->num_pages) continue;
            const size_t row = (size_t)page * s->page_size + (size_t)(j % s->page_size);
            for (int g = 0; g < s->heads_kv; g++) {
                const size_t kd = (size_t)g * s->k.head + row * s->k.seq, vd = (size_t)g * s->v.head + row * s->v.seq;
                const size_t ks = (size_t)b * s->kn.batch + (size_t)g * s->kn.head + (size_t)tok * s->kn.seq;
                const size_t vs = (size_t)b * s->vn.batch + (size_t)g * s->vn.head + (size_t)tok * s->vn.seq;
                for (int c = 0; c < s->head_dim; c++) store(*kc, s->dtype, kd + c, load(t->k_new, s->dtype, ks + c));
                for (int c = 0; c < s->head_dim_v; c++) store(*vc, s->dtype, vd + c, load(t->v_new, s->dtype, vs + c));
                if (s->rotary_dim) rotate(s, t, *kc, kd, j);
            }
        }
    }
    if (s->rotary_dim) { /* q at seqused_k + i when causal or local, else at seqused_k */
        memcpy(*qr, t->q, need.q * es);
        const bool per_row = s->rotary_per_row;
        for (int b = 0; b < s->batch; b++)
            for (int h = 0; h < s->heads_q; h++)
                for (int i = 0; i < s->seq_q; i++)
                    rotate(s, t, *qr, (size_t)b * s->q.batch + (size_t)h * s->q.head + (size_t)i * s->q.seq,
                           t->seqused_k[b] + (per_row ? i : 0));
        t->q = *qr;
    }
    t->k = *kc;
    t->v = *vc;
    return CLATTN_SUCCESS;
}

clattn_status clattn_reference_forward(const clattn_desc *desc, const clattn_host_tensors *caller,
                                       char *msg, size_t msg_size)
{
    clattn_shape s;
    clattn_host_tensors t;
    clattn_status st = prologue(desc, caller, CLATTN_HOST_FORWARD, &s, &t, msg, msg_size);
    if (st) return st;
    void *kc, *vc, *qr;
    st = paged_inputs(&s, &t, &kc, &vc, &qr, msg, msg_size);
    /* Rows of different (batch, head) pairs are independent: spread them over the cores. */
    ref_job job = {&s, &t, false, NULL, 0, (long)s.batch * s.heads_q, PTHREAD_MUTEX_INITIALIZER};
    if (!st) st = run_job(&job, msg, msg_size);
    if (!st && s.seq_new) {
        const size_t es = clattn_dtype_size(s.dtype);
        clattn_tensor_sizes need;
        clattn__sizes(&s, &need);
        if (t.k_cache_out) memcpy(t.k_cache_out, kc, need.k * es);
        if (t.v_cache_out) memcpy(t.v_cache_out, vc, need.v * es);
    }
    free(kc);
    free(vc);
    free(qr);
    return st;
}

clattn_status clattn_reference_backward(const clattn_desc *desc, const clattn_host_tensors *caller, char *msg,
                                        size_t msg_size)
{
    clattn_shape s;
    clattn_host_tensors t;
    clattn_status st = prologue(desc, caller, CLATTN_HOST_BACKWARD_REFERENCE, &s, &t, msg, msg_size);
    if (st) return st;
    /* a paged descriptor was refused by the resolve above: the backward reads dense K and V */
    double *dsink = s.has_sinks ? calloc((size_t)s.batch * (size_t)s.heads_q, sizeof(double)) : NULL;
    if (s.has_sinks && !dsink) {
        clattn__format(msg, msg_size, "out of host memory for the sink gradients");
        return CLATTN_OUT_OF_HOST_MEMORY;
    }
    /* (batch, KV head) tasks: each owns its keys' dk and dv and its rows' dq */
    ref_job job = {&s, &t, true, dsink, 0, (long)s.batch * s.heads_kv, PTHREAD_MUTEX_INITIALIZER};
    st = run_job(&job, msg, msg_size);
    if (!st && s.has_sinks) /* summed over the batch in order: the same on every run */
        for (int h = 0; h < s.heads_q; h++) {
            double acc = 0.0;
            for (int b = 0; b < s.batch; b++) acc += dsink[(size_t)b * s.heads_q + h];
            t.dsinks[h] = (float)acc;
        }
    free(dsink);
    return st;
}
