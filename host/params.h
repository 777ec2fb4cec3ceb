/* Kernel parameters: the bounds every family's parameters share and the helpers the family
 * files use to fit them to a shape. Below family.c, so the family files need nothing of the
 * table that lists them. */
#ifndef CLATTN_PARAMS_H
#define CLATTN_PARAMS_H

#include "internal.h"

CLATTN_HIDDEN bool clattn__pow2(int x);
/* Bounds every family shares (keys, vector width, group size, split target, threads per row);
 * false with why. */
CLATTN_HIDDEN bool clattn__tuning_common_valid(const clattn_device_info *dev, const clattn_tuning *t, char *why,
                                               size_t why_size);
/* Local memory a work-group's tiles may use on the device: NVIDIA's OpenCL gives 48 KB per
 * work-group whatever the hardware has; leave room for what the compiler adds. */
CLATTN_HIDDEN size_t clattn__local_budget(const clattn_device_info *dev);
/* Whether the environment variable is set and does not start with "0" (the families'
 * switches for experiments: $CLATTN_MMA_PORTABLE, $CLATTN_TILES_UNROLL). */
CLATTN_HIDDEN bool clattn__env_on(const char *name);
/* Largest vector width up to max_vw that divides both dims, so no lane reads past a row. */
CLATTN_HIDDEN int clattn__vector_width(int d, int dv, int max_vw);

#endif
