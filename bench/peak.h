/* Device peaks measured as clpeak does: an f32 FMA rate and a streaming-read bandwidth, with
 * work the compiler cannot delete (every result is written out and depends on every step).
 * Cached per device, driver, compute units and measuring method in the clattn cache directory. */
#ifndef CLATTN_PEAK_H
#define CLATTN_PEAK_H

#include "clattn.h"

#include <stdbool.h>

typedef struct device_peak {
    double fma_gflops; /* best of several runs */
    double read_gbs;   /* streaming read, GB/s (1e9 bytes): the best kernel, geometry and size */
    char read_method[128]; /* which one: kernel, work-items per unit, group size, MiB read */
    bool cached;       /* read from the cache file rather than measured now */
} device_peak;

/* Measures (or reads from cache unless `remeasure`). Returns 0, or 1 after printing why. */
int peak_measure(clattn_context *ctx, bool remeasure, device_peak *out);

/* Measures again and keeps, per peak, the larger of `peak` and the new figure (each
 * measurement is a lower bound of the true peak), caching the result. For a row that ran
 * above a peak: on a machine whose memory speed drifts from minute to minute (a shared VM), the
 * first measurement may have met a slow minute. Returns whether either peak rose. */
bool peak_raise(clattn_context *ctx, device_peak *peak);

#endif
