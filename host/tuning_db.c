/* Shipped tuning defaults, one line per device (or vendor), family and shape class, as
 * `clattn tune --emit-c` prints them. Lookup order: the user's file, a device line, a
 * vendor line, then the generic values in tuning.c. Each device line records where and
 * when it was measured. */
#include "tuning_db.h"

#define ROWS CLATTN_KERNELS_ROWS
#define TILES CLATTN_KERNELS_TILES

const clattn_shipped clattn__shipped[] = {
    /* vendor-wide: none measured yet beyond the devices below */
    {NULL, NULL, 0, 0, NULL, {0}}, /* keeps the array non-empty; never matches */
};
const int clattn__shipped_count = (int)(sizeof clattn__shipped / sizeof clattn__shipped[0]);
