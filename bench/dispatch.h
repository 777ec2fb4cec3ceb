/* Dispatch overhead: what clattn itself adds to a call, measured on one device (issue 16). */
#ifndef CLATTN_DISPATCH_H
#define CLATTN_DISPATCH_H

#include "clattn.h"

#include <stdbool.h>

/* The tiny call: 1x1x1x16x16x64, f32, the plan `auto` makes. */
#define DISPATCH_TINY_SHAPE "1x1x1x16x16x64"

typedef struct dispatch_figures {
    bool measured;
    double execute_us;      /* host time of one clattn_plan_execute (enqueue only, no event out), median */
    double tiny_call_us;    /* the tiny call: clattn_plan_execute + clFinish, median */
    double empty_kernel_us; /* an empty kernel (one work-item): enqueue + clFinish, median */
    int execute_calls;      /* calls behind the execute median */
    int round_trips;        /* tiny calls, and empty kernels, behind their medians */
    char variant[256];      /* the tiny plan's variant */
} dispatch_figures;

/* Measures on a new in-order queue of `ctx`, kernels built before any timing; the tiny call and
 * the empty kernel alternate, so that drift on a busy machine shows in both. Returns 0, or 1
 * after printing why. */
int dispatch_measure(clattn_context *ctx, dispatch_figures *out);

#endif
