/* The shipped tuning defaults (tuning_db.c): what `clattn tune` found on known devices. */
#ifndef CLATTN_TUNING_DB_H
#define CLATTN_TUNING_DB_H

#include "internal.h"

typedef struct clattn_shipped {
    const char *device;   /* CL_DEVICE_NAME exactly, or NULL for a vendor-wide entry */
    const char *vendor;   /* a substring of CL_DEVICE_VENDOR (vendor-wide entries) */
    cl_device_type type;  /* vendor-wide entries: the device type they serve */
    clattn_kernel_family family;
    const char *cls;      /* shape class, as clattn_tuning_class */
    clattn_tuning t;      /* rows, keys, vector_width, group_size, split_units */
} clattn_shipped;

CLATTN_HIDDEN extern const clattn_shipped clattn__shipped[];
CLATTN_HIDDEN extern const int clattn__shipped_count;

#endif
