#include "expect.h"
#include "cli.h"
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WORST_ROWS 5   /* rows listed, worst first */
#define SPECIALS_LISTED 5

static const char *type_name(npy_type type, bool bf16) { return bf16 ? "bf16 (uint16 bits)" : npy_type_name(type); }

static void shape_text(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < size) snprintf(buf + used, size - used, ndim == 1 ? ",)" : ")");
}

int expect_check_file(const char *flag, const npy_array *theirs, npy_type type, bool bf16, int ndim,
                      const int64_t *shape)
{
    if (theirs->type != type)
        return cli_error("run: %s is %s but clattn's output is %s (the inputs' dtype): save both in one dtype", flag,
                         npy_type_name(theirs->type), type_name(type, bf16));
    bool same = theirs->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = theirs->shape[i] == shape[i];
    if (!same) {
        char got[160], want[160];
        shape_text(got, sizeof got, theirs->ndim, theirs->shape);
        shape_text(want, sizeof want, ndim, shape);
        return cli_error("run: %s has shape %s but clattn's output has shape %s", flag, got, want);
    }
    return 0;
}

static float load(const void *p, npy_type type, bool bf16, size_t i)
{
    if (type == NPY_F32) return ((const float *)p)[i];
    const uint16_t h = ((const uint16_t *)p)[i];
    return bf16 ? clattn_bf16_to_f32(h) : clattn_f16_to_f32(h);
}

/* The value's position on the number line of its storage type, in steps of one ULP: the
 * distance between two of them is how many representable values lie between. */
static int64_t ordinal(const void *p, npy_type type, size_t i)
{
    if (type == NPY_F32) {
        uint32_t u;
        memcpy(&u, (const float *)p + i, sizeof u);
        return u & 0x80000000u ? -(int64_t)(u & 0x7fffffffu) : (int64_t)u;
    }
    const uint16_t h = ((const uint16_t *)p)[i];
    return h & 0x8000u ? -(int64_t)(h & 0x7fffu) : (int64_t)h;
}

/* "batch 1, head 2, position 5" or "token 37 (sequence 2, position 5), head 3" */
static void row_name(const expect_tensor *t, size_t row, char *buf, size_t size)
{
    long long b = 0, h = 0, i = 0, tok = 0;
    switch (t->rows) {
    case ROWS_BHSD: b = (long long)(row / ((size_t)t->heads * t->seq)); h = (long long)(row / t->seq % t->heads);
                    i = (long long)(row % t->seq); break;
    case ROWS_BSHD: b = (long long)(row / ((size_t)t->heads * t->seq)); i = (long long)(row / t->heads % t->seq);
                    h = (long long)(row % t->heads); break;
    case ROWS_TOKEN_HEAD: tok = (long long)(row / t->heads); h = (long long)(row % t->heads); break;
    case ROWS_HEAD_TOKEN: h = (long long)(row / (size_t)t->tokens); tok = (long long)(row % (size_t)t->tokens); break;
    }
    if (t->rows == ROWS_BHSD || t->rows == ROWS_BSHD) {
        snprintf(buf, size, "batch %lld, head %lld, position %lld", b, h, i);
        return;
    }
    int s = 0;
    while (s < t->batch - 1 && t->cu_q[s + 1] <= tok) s++;
    snprintf(buf, size, "token %lld (sequence %d, position %lld), head %lld", tok, s, tok - t->cu_q[s], h);
}

/* An element's place: its row's name, and the element within the row when rows are longer
 * than one. */
static void element_name(const expect_tensor *t, size_t i, char *buf, size_t size)
{
    char row[160];
    row_name(t, i / t->row_len, row, sizeof row);
    if (t->row_len > 1) snprintf(buf, size, "%s, dim %zu", row, i % t->row_len);
    else snprintf(buf, size, "%s", row);
}

typedef struct worst_row {
    size_t row;
    double err, max_abs;
} worst_row;

/* Keeps the WORST_ROWS rows of largest error, worst first (insertion into a short list). */
static void keep_worst(worst_row *w, int *n, worst_row r)
{
    int at = *n < WORST_ROWS ? (*n)++ : WORST_ROWS;
    if (at == WORST_ROWS) {
        if (r.err <= w[WORST_ROWS - 1].err) return;
        at = WORST_ROWS - 1;
    }
    while (at > 0 && w[at - 1].err < r.err) {
        w[at] = w[at - 1];
        at--;
    }
    w[at] = r;
}

/* Figures beyond clattn_compare's: the largest difference's place, the largest ULP distance
 * and its place (both over elements finite in both). */
typedef struct extra_figures {
    size_t max_abs_at, max_ulp_at;
    int64_t max_ulp;
    bool any_finite;
} extra_figures;

static extra_figures extra(const expect_tensor *t, const float *ours, const float *theirs)
{
    extra_figures x = {0, 0, 0, false};
    double max_abs = -1;
    for (size_t i = 0; i < t->n; i++) {
        if (!isfinite(ours[i]) || !isfinite(theirs[i])) continue;
        x.any_finite = true;
        const double d = fabs((double)theirs[i] - ours[i]);
        if (d > max_abs) {
            max_abs = d;
            x.max_abs_at = i;
        }
        const int64_t a = ordinal(t->ours, t->type, i), b = ordinal(t->theirs, t->type, i);
        const int64_t u = a > b ? a - b : b - a;
        if (u > x.max_ulp) {
            x.max_ulp = u;
            x.max_ulp_at = i;
        }
    }
    return x;
}

static void print_specials(FILE *f, const expect_tensor *t, const float *ours, const float *theirs, size_t count)
{
    fprintf(f, "  NaN/inf differ  %zu position%s%s\n", count, count == 1 ? "" : "s", count ? ", first:" : "");
    size_t listed = 0;
    for (size_t i = 0; i < t->n && listed < SPECIALS_LISTED && count; i++) {
        const float a = ours[i], b = theirs[i];
        if (isfinite(a) && isfinite(b)) continue;
        const bool same = (isnan(a) && isnan(b)) || (isinf(a) && isinf(b) && (a > 0) == (b > 0));
        if (same) continue;
        char where[224];
        element_name(t, i, where, sizeof where);
        fprintf(f, "    %-52s clattn %-12g theirs %g\n", where, a, b);
        listed++;
    }
}

/* What failed first, in the order a reader should look: NaN/inf, the whole, a row, an element. */
static void verdict_text(const expect_tensor *t, const clattn_error *e, double bound, const worst_row *w, int nw,
                         const extra_figures *x, expect_verdict *v)
{
    char where[224] = "";
    if (e->mismatched_special) {
        snprintf(v->summary, sizeof v->summary, "%s: %zu NaN/inf position(s) differ", t->name, e->mismatched_special);
    } else if (!(e->rel_l2 <= bound)) {
        snprintf(v->summary, sizeof v->summary, "%s: relative L2 %.3g above the bound %.3g", t->name, e->rel_l2, bound);
    } else if (!(e->worst_row <= CLATTN_ROW_SLACK * bound)) {
        if (nw) row_name(t, w[0].row, where, sizeof where);
        snprintf(v->summary, sizeof v->summary, "%s: row %s has error %.3g, above the row bound %.3g", t->name, where,
                 e->worst_row, CLATTN_ROW_SLACK * bound);
    } else if (!v->ok) {
        element_name(t, x->max_abs_at, where, sizeof where);
        snprintf(v->summary, sizeof v->summary, "%s: max abs error %.3g at %s, above %.3g", t->name, e->max_abs, where,
                 CLATTN_ROW_SLACK * bound * (e->max_ref > 0 ? e->max_ref : 1.0));
    } else {
        snprintf(v->summary, sizeof v->summary, "%s relative L2 %.3g (bound %.3g), worst row %.3g, max ULP %lld",
                 t->name, e->rel_l2, bound, e->worst_row, (long long)x->max_ulp);
    }
}

static int report(FILE *f, const expect_tensor *t, const float *ours, const float *theirs, double bound,
                  expect_verdict *v)
{
    const clattn_error e = clattn_compare(theirs, ours, t->n, t->row_len);
    v->ok = clattn_error_ok(&e, bound);
    const extra_figures x = extra(t, ours, theirs);
    worst_row w[WORST_ROWS];
    int nw = 0;
    for (size_t r0 = 0; r0 < t->n; r0 += t->row_len) {
        worst_row r = {r0 / t->row_len, clattn_row_error(theirs + r0, ours + r0, t->row_len, e.typical_row_norm), 0};
        if (!(r.err > 0)) continue;
        for (size_t i = r0; i < r0 + t->row_len; i++)
            if (isfinite(ours[i]) && isfinite(theirs[i]) && fabs((double)theirs[i] - ours[i]) > r.max_abs)
                r.max_abs = fabs((double)theirs[i] - ours[i]);
        keep_worst(w, &nw, r);
    }
    const double elem_bound = CLATTN_ROW_SLACK * bound * (e.max_ref > 0 ? e.max_ref : 1.0);
    fprintf(f, "%s: %zu values (%s) against %s; bounds: relative L2 %.3g, each row %.3g, each element %.3g\n",
            t->name, t->n, type_name(t->type, t->bf16), t->path, bound, CLATTN_ROW_SLACK * bound, elem_bound);
    fprintf(f, "  relative L2     %-10.3g %s\n", e.rel_l2, e.rel_l2 <= bound ? "ok" : "ABOVE");
    char where[224];
    if (x.any_finite) {
        element_name(t, x.max_abs_at, where, sizeof where);
        fprintf(f, "  max abs error   %-10.3g %-5s at %s (clattn %g, theirs %g)\n", e.max_abs,
                e.max_abs <= elem_bound ? "ok" : "ABOVE", where, ours[x.max_abs_at], theirs[x.max_abs_at]);
        element_name(t, x.max_ulp_at, where, sizeof where);
        /* counted in the file's dtype: across zero or near it a small difference spans many
         * tiny values, so the place and values are printed with it */
        fprintf(f, "  max ULP         %-10lld       at %s (clattn %g, theirs %g; in %s)\n", (long long)x.max_ulp,
                where, ours[x.max_ulp_at], theirs[x.max_ulp_at], type_name(t->type, t->bf16));
    }
    print_specials(f, t, ours, theirs, e.mismatched_special);
    fprintf(f, "  worst rows      (|theirs - clattn| / max(|clattn row|, typical row norm %.3g))%s\n",
            e.typical_row_norm, nw ? "" : ": none differs");
    for (int i = 0; i < nw; i++) {
        row_name(t, w[i].row, where, sizeof where);
        fprintf(f, "    %-52s error %-10.3g max abs %-10.3g %s\n", where, w[i].err, w[i].max_abs,
                w[i].err <= CLATTN_ROW_SLACK * bound ? "ok" : "ABOVE");
    }
    verdict_text(t, &e, bound, w, nw, &x, v);
    return 0;
}

int expect_compare(FILE *f, const expect_tensor *t, double bound, expect_verdict *v)
{
    float *ours = malloc(sizeof(float) * (t->n ? t->n : 1)), *theirs = malloc(sizeof(float) * (t->n ? t->n : 1));
    if (!ours || !theirs) {
        free(ours);
        free(theirs);
        return cli_error("run: out of memory comparing %s", t->name);
    }
    for (size_t i = 0; i < t->n; i++) {
        ours[i] = load(t->ours, t->type, t->bf16, i);
        theirs[i] = load(t->theirs, t->type, t->bf16, i);
    }
    const int rc = report(f, t, ours, theirs, bound, v);
    free(ours);
    free(theirs);
    return rc;
}
