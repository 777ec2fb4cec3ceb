#include "peers.h"
#include "cli.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void fill(float *x, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
    }
}

/* Unfused attention on the CPU, as a user would write it with BLAS: per head S = scale Q K^T
 * (sgemm), a row softmax in C (causal rows stop at the diagonal), O = P V (sgemm). */
static void blas_attention(const float *q, const float *k, const float *v, float *o, float *s, int h, int n,
                           int d, int causal)
{
    const float scale = 1.0f / sqrtf((float)d);
    for (int head = 0; head < h; head++) {
        const float *qh = q + (size_t)head * n * d, *kh = k + (size_t)head * n * d, *vh = v + (size_t)head * n * d;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, d, scale, qh, d, kh, d, 0.0f, s, n);
        for (int i = 0; i < n; i++) {
            float *row = s + (size_t)i * n;
            const int len = causal ? i + 1 : n;
            float m = -INFINITY, sum = 0;
            for (int j = 0; j < len; j++) m = row[j] > m ? row[j] : m;
            for (int j = 0; j < len; j++) sum += row[j] = expf(row[j] - m);
            const float inv = 1.0f / sum;
            for (int j = 0; j < len; j++) row[j] *= inv;
            for (int j = len; j < n; j++) row[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, n, 1.0f, s, n, vh, d, 0.0f,
                    o + (size_t)head * n * d, d);
    }
}

typedef struct stream_part {
    const float *p;
    size_t n;
    double sum;
} stream_part;

static void *stream_worker(void *arg)
{
    stream_part *s = arg;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t i = 0;
    for (; i + 4 <= s->n; i += 4) {
        a0 += s->p[i];
        a1 += s->p[i + 1];
        a2 += s->p[i + 2];
        a3 += s->p[i + 3];
    }
    for (; i < s->n; i++) a0 += s->p[i];
    s->sum = a0 + a1 + a2 + a3; /* written out: the loop cannot be deleted */
    return NULL;
}

static double stream_once(const float *buf, size_t n, int threads)
{
    pthread_t th[64];
    stream_part part[64];
    const double t0 = cli_now_ms();
    for (int t = 0; t < threads; t++) {
        part[t].p = buf + n / threads * t;
        part[t].n = t == threads - 1 ? n - n / threads * t : n / threads;
        pthread_create(&th[t], NULL, stream_worker, &part[t]);
    }
    double sum = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(th[t], NULL);
        sum += part[t].sum;
    }
    const double ms = cli_now_ms() - t0;
    return sum == 12345.678 ? 0 : (double)n * 4 / (ms * 1e6);
}

int peers_measure(int reps, peer_figures *out)
{
    memset(out, 0, sizeof *out);
    if (reps > 32) reps = 32;
    const int n = 2048, h = 8, d = 64;
    const size_t nn = (size_t)n * n, nhd = (size_t)h * n * d, nstream = (size_t)64 << 20;
    float *a = malloc(nn * 4), *b = malloc(nn * 4), *c = malloc(nn * 4);
    float *q = malloc(nhd * 4), *k = malloc(nhd * 4), *v = malloc(nhd * 4), *o = malloc(nhd * 4);
    float *stream = malloc(nstream * 4);
    if (!a || !b || !c || !q || !k || !v || !o || !stream) {
        free(a); free(b); free(c); free(q); free(k); free(v); free(o); free(stream);
        return cli_error("peers: out of memory");
    }
    fill(a, nn, 1); fill(b, nn, 2); fill(q, nhd, 3); fill(k, nhd, 4); fill(v, nhd, 5); fill(stream, nstream, 6);
    /* the streaming loop uses as many threads as OpenBLAS (OPENBLAS_NUM_THREADS), so that a
     * single-thread comparison stays single-threaded on both sides */
    const int nt = openblas_get_num_threads();
    const int threads = nt < 1 ? 1 : nt > 64 ? 64 : nt;
    double t_gemm[32], t_attn[32], t_causal[32], t_stream[32];
    const double attn_flops = 4.0 * h * (double)n * n * d;
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        double t0 = cli_now_ms();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        const double g = 2.0 * n * (double)n * n / ((cli_now_ms() - t0) * 1e6);
        t0 = cli_now_ms();
        blas_attention(q, k, v, o, c, h, n, d, 0);
        const double at = attn_flops / ((cli_now_ms() - t0) * 1e6);
        t0 = cli_now_ms();
        blas_attention(q, k, v, o, c, h, n, d, 1);
        const double ac = attn_flops / 2 / ((cli_now_ms() - t0) * 1e6);
        const double s = stream_once(stream, nstream, threads);
        if (r >= 0) {
            t_gemm[r] = g;
            t_attn[r] = at;
            t_causal[r] = ac;
            t_stream[r] = s;
        }
    }
    out->sgemm_gflops = cli_median(t_gemm, reps);
    out->attn_gflops = cli_median(t_attn, reps);
    out->attn_causal_gflops = cli_median(t_causal, reps);
    out->stream_gbs = cli_median(t_stream, reps);
    free(a); free(b); free(c); free(q); free(k); free(v); free(o); free(stream);
    return 0;
}

/* The script next to this program's sources (CLATTN_BENCH_DIR), or $CLATTN_TORCH_PEER. */
void peers_torch(const bench_case *cases, int ncases, int threads, torch_peer *out)
{
    memset(out, 0, sizeof *out);
    out->threads = threads;
    const char *py = getenv("CLATTN_PYTHON"), *script = getenv("CLATTN_TORCH_PEER");
    if (!py || !py[0]) py = "python3";
    if (!script || !script[0]) script = CLATTN_BENCH_DIR "/peer_torch.py";
    char cmd[8192];
    int len = snprintf(cmd, sizeof cmd, "'%s' '%s' %d", py, script, threads);
    for (int i = 0; i < ncases && out->n + i < TORCH_PEER_MAX && len > 0 && (size_t)len < sizeof cmd - 64; i++) {
        const bench_case *c = &cases[i];
        if (c->causal && c->nq != c->nk && c->nq > 1) continue; /* bottom-right is not is_causal */
        const int causal = c->causal && c->nq == c->nk; /* Nq = 1 bottom-right sees every key */
        len += snprintf(cmd + len, sizeof cmd - (size_t)len, " %d:%d:%d:%d:%d:%d:%d:%d", c->id, c->b, c->hq, c->hkv,
                        c->nq, c->nk, c->d, causal);
    }
    snprintf(cmd + len, sizeof cmd - (size_t)len, " 2>/dev/null"); /* torch warns on stderr */
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(out->note, sizeof out->note, "cannot run %s", py);
        return;
    }
    char line[512];
    while (fgets(line, sizeof line, p)) {
        int id, th;
        double ms;
        char ver[48];
        if (!strncmp(line, "absent: ", 8)) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(out->note, sizeof out->note, "%.200s", line + 8);
        } else if (sscanf(line, "torch %47s threads %d", ver, &th) == 2) {
            out->present = true;
            snprintf(out->version, sizeof out->version, "%s", ver);
            out->threads = th;
        } else if (out->present && out->n < TORCH_PEER_MAX && sscanf(line, "%d %lf", &id, &ms) == 2) {
            out->id[out->n] = id;
            out->ms[out->n++] = ms;
        } else if (!out->note[0]) { /* the first line of an error, for the note */
            line[strcspn(line, "\n")] = '\0';
            snprintf(out->note, sizeof out->note, "%.200s", line);
        }
    }
    const int rc = pclose(p);
    if (!out->present && !out->note[0]) snprintf(out->note, sizeof out->note, "%s exited with status %d", py, rc);
}

double peers_torch_ms(const torch_peer *t, int id)
{
    for (int i = 0; t->present && i < t->n; i++)
        if (t->id[i] == id) return t->ms[i];
    return -1;
}
