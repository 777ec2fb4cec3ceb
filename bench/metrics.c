#include "metrics.h"

#include <math.h>

clattn_error clattn_compare(const float *out, const float *ref, size_t n)
{
    clattn_error e = {0, 0, 0};
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
    }
    e.rel_l2 = den > 0 ? sqrt(num / den) : sqrt(num);
    return e;
}

bool clattn_error_ok(const clattn_error *e, double bound)
{
    return e->mismatched_special == 0 && e->rel_l2 <= bound;
}

double clattn_tolerance(int dtype) { return dtype == 0 ? 1e-5 : dtype == 1 ? 2e-3 : 1e-2; }
