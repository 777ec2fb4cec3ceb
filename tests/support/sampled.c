#include "sampled.h"

#include <math.h>
#include <stdlib.h>

static double ld(const void *p, clattn_dtype t, size_t i)
{
    if (t == CLATTN_DTYPE_F16) return clattn_f16_to_f32(((const uint16_t *)p)[i]);
    if (t == CLATTN_DTYPE_BF16) return clattn_bf16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

/* The pieces of one (row, key) pair: p = exp(s - lse) and dS = p (dP - D). */
typedef struct pair {
    double p, ds;
} pair;

typedef struct ctx {
    const sampled_case *c;
    const void *q, *k, *v, *d_o;
    const float *lse;
    const double *dvec; /* D per row */
    double scale;
} ctx;

static size_t qrow(const sampled_case *c, int b, int h, int i) { return (((size_t)b * c->hq + h) * c->nq + i) * c->d; }
static size_t krow(const sampled_case *c, int b, int g, int j) { return (((size_t)b * c->hkv + g) * c->nk + j) * c->d; }

static bool sees(const sampled_case *c, int i, int j) { return !c->causal || j <= i + c->nk - c->nq; }

static pair pair_of(const ctx *x, int b, int h, int i, int j)
{
    const sampled_case *c = x->c;
    const int g = h / (c->hq / c->hkv);
    const size_t qi = qrow(c, b, h, i), kj = krow(c, b, g, j);
    double s = 0, dp = 0;
    for (int e = 0; e < c->d; e++) {
        s += ld(x->q, c->dtype, qi + e) * ld(x->k, c->dtype, kj + e);
        dp += ld(x->d_o, c->dtype, qi + e) * ld(x->v, c->dtype, kj + e);
    }
    const size_t row = ((size_t)b * c->hq + h) * c->nq + i;
    pair r;
    r.p = exp(x->scale * s - x->lse[row]);
    r.ds = r.p * (dp - x->dvec[row]);
    return r;
}

static void accumulate(double *num, double *den, bool *bad, double want, double got)
{
    if (!isfinite(got) && isfinite(want)) *bad = true;
    *num += (got - want) * (got - want);
    *den += want * want;
}

int sampled_backward_check(const sampled_case *c, const void *q, const void *k, const void *v, const void *o,
                           const float *lse, const void *d_o, const void *dq, const void *dk, const void *dv,
                           int want, sampled_error *out)
{
    const int rows = c->b * c->hq * c->nq, keys = c->b * c->hkv * c->nk, group = c->hq / c->hkv;
    double *dvec = malloc(sizeof(double) * (size_t)rows), *acc = malloc(sizeof(double) * 2 * (size_t)c->d);
    if (!dvec || !acc) {
        free(dvec);
        free(acc);
        return -1;
    }
    for (int r = 0; r < rows; r++) { /* D per row, from the o the backward was given */
        double s = 0;
        for (int e = 0; e < c->d; e++) s += ld(d_o, c->dtype, (size_t)r * c->d + e) * ld(o, c->dtype, (size_t)r * c->d + e);
        dvec[r] = s;
    }
    const ctx x = {c, q, k, v, d_o, lse, dvec, 1.0 / sqrt((double)c->d)};
    double n[3] = {0, 0, 0}, dd[3] = {0, 0, 0};
    bool bad = false;
    const int nr = want < rows ? want : rows, nkeys = want < keys ? want : keys;
    for (int s = 0; s < nr; s++) { /* dq of a row: over its keys */
        const long r = nr == 1 ? rows - 1 : (long)((double)s * (rows - 1) / (nr - 1));
        const int i = (int)(r % c->nq), h = (int)(r / c->nq % c->hq), b = (int)(r / ((long)c->nq * c->hq));
        const int g = h / group;
        for (int e = 0; e < c->d; e++) acc[e] = 0;
        for (int j = 0; j < c->nk; j++) {
            if (!sees(c, i, j)) continue;
            const pair pr = pair_of(&x, b, h, i, j);
            for (int e = 0; e < c->d; e++) acc[e] += pr.ds * ld(k, c->dtype, krow(c, b, g, j) + e);
        }
        for (int e = 0; e < c->d; e++)
            accumulate(&n[0], &dd[0], &bad, x.scale * acc[e], ld(dq, c->dtype, qrow(c, b, h, i) + e));
    }
    for (int s = 0; s < nkeys; s++) { /* dk and dv of a key: over the rows of its query heads */
        const long r = nkeys == 1 ? keys - 1 : (long)((double)s * (keys - 1) / (nkeys - 1));
        const int j = (int)(r % c->nk), g = (int)(r / c->nk % c->hkv), b = (int)(r / ((long)c->nk * c->hkv));
        for (int e = 0; e < 2 * c->d; e++) acc[e] = 0;
        for (int h = g * group; h < (g + 1) * group; h++)
            for (int i = 0; i < c->nq; i++) {
                if (!sees(c, i, j)) continue;
                const pair pr = pair_of(&x, b, h, i, j);
                for (int e = 0; e < c->d; e++) {
                    acc[e] += pr.ds * ld(q, c->dtype, qrow(c, b, h, i) + e);
                    acc[c->d + e] += pr.p * ld(d_o, c->dtype, qrow(c, b, h, i) + e);
                }
            }
        for (int e = 0; e < c->d; e++) {
            accumulate(&n[1], &dd[1], &bad, x.scale * acc[e], ld(dk, c->dtype, krow(c, b, g, j) + e));
            accumulate(&n[2], &dd[2], &bad, acc[c->d + e], ld(dv, c->dtype, krow(c, b, g, j) + e));
        }
    }
    free(dvec);
    free(acc);
    out->dq = sqrt(n[0] / (dd[0] > 0 ? dd[0] : 1));
    out->dk = sqrt(n[1] / (dd[1] > 0 ? dd[1] : 1));
    out->dv = sqrt(n[2] / (dd[2] > 0 ? dd[2] : 1));
    out->rows = nr;
    out->keys = nkeys;
    out->nonfinite = bad;
    return 0;
}
