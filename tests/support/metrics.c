#include "metrics.h"

#include <math.h>

clattn_error clattn_compare(const float *out, const float *ref, size_t n, size_t row_len)
{
    clattn_error e = {0};
    if (row_len == 0) row_len = 1;
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double a = out[i], r = ref[i];
        if (!isfinite(r) || !isfinite(a)) {
            const bool same = (isnan(a) && isnan(r)) || (isinf(a) && isinf(r) && (a > 0) == (r > 0));
            if (!same) e.mismatched_special++;
            continue;
        }
        const double d = fabs(a - r);
        num += d * d;
        den += r * r;
        if (d > e.max_abs) e.max_abs = d;
        if (fabs(r) > e.max_ref) e.max_ref = fabs(r);
    }
    e.rel_l2 = den > 0 ? sqrt(num / den) : sqrt(num);
    /* second pass: each row against max(its norm, the typical row norm) */
    const size_t rows = (n + row_len - 1) / row_len;
    e.typical_row_norm = rows ? sqrt(den / (double)rows) : 0;
    for (size_t r0 = 0, row = 0; r0 < n; r0 += row_len, row++) {
        const double err = clattn_row_error(out + r0, ref + r0, n - r0 < row_len ? n - r0 : row_len, e.typical_row_norm);
        if (err > e.worst_row) {
            e.worst_row = err;
            e.worst_row_index = row;
        }
    }
    return e;
}

double clattn_row_error(const float *out, const float *ref, size_t len, double typical)
{
    double rn = 0, rd = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isfinite(ref[i]) || !isfinite(out[i])) continue;
        const double d = (double)out[i] - ref[i];
        rn += d * d;
        rd += (double)ref[i] * ref[i];
    }
    const double norm = fmax(sqrt(rd), typical);
    return norm > 0 ? sqrt(rn) / norm : sqrt(rn);
}

bool clattn_error_ok(const clattn_error *e, double bound)
{
    return e->mismatched_special == 0 && e->rel_l2 <= bound && e->worst_row <= CLATTN_ROW_SLACK * bound &&
           e->max_abs <= CLATTN_ROW_SLACK * bound * (e->max_ref > 0 ? e->max_ref : 1.0);
}

double clattn_tolerance(int dtype) { return dtype == 0 ? 1e-5 : dtype == 1 ? 2e-3 : 1e-2; }

double clattn_grad_tolerance(int dtype) { return dtype == 0 ? 2e-5 : dtype == 1 ? 5e-3 : 2e-2; }
