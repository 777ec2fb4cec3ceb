/* Kernel parameters: shared bounds and fitting helpers. */
#include "params.h"
#include "diag.h"

#include <stdlib.h>

bool clattn__pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

bool clattn__tuning_common_valid(const clattn_device_info *dev, const clattn_tuning *t, char *why, size_t why_size)
{
    if (t->keys < 0 || t->keys > 64 || (t->keys && !clattn__pow2(t->keys)))
        clattn__format(why, why_size, "tuning keys %d is not a power of 2 up to 64", t->keys);
    else if (t->vector_width < 0 || t->vector_width > 16 || (t->vector_width && !clattn__pow2(t->vector_width)))
        clattn__format(why, why_size, "tuning vector_width %d is not 1, 2, 4, 8 or 16", t->vector_width);
    else if (t->group_size < 0 || (size_t)t->group_size > dev->max_wg_size)
        clattn__format(why, why_size, "tuning group_size %d above the device's %zu work-items", t->group_size,
                       dev->max_wg_size);
    else if (t->split_units < 0 || t->split_units > 256)
        clattn__format(why, why_size, "tuning split_units %d outside 0..256", t->split_units);
    else if (t->threads_per_row < 0 || t->threads_per_row > 8 ||
             (t->threads_per_row && !clattn__pow2(t->threads_per_row)))
        clattn__format(why, why_size, "tuning threads_per_row %d is not 1, 2, 4 or 8", t->threads_per_row);
    else
        return true;
    return false;
}

int clattn__vector_width(int d, int dv, int max_vw)
{
    for (int vw = max_vw; vw > 1; vw /= 2)
        if (d % vw == 0 && dv % vw == 0) return vw;
    return 1;
}

size_t clattn__local_budget(const clattn_device_info *dev)
{
    const size_t have = (size_t)dev->local_mem, cap = 48 * 1024;
    return (have < cap ? have : cap) - 1024;
}

bool clattn__env_on(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] && v[0] != '0';
}
