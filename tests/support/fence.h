/* Inputs fenced by inaccessible pages: a tensor in host memory that ends at (or starts right
 * after) a page the process may not touch, given to the device as its storage
 * (CL_MEM_USE_HOST_PTR). A device that works in host memory in place, as PoCL does, then faults
 * on a kernel's read one element past the end (or before the start); where the device copies
 * the memory instead the fence is harmless and proves nothing. Shared by the tests. */
#ifndef CLATTN_FENCE_H
#define CLATTN_FENCE_H

#include "clattn.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct fence {
    unsigned char *map; /* the mapping: an inaccessible page, the tensor's pages, another */
    size_t map_bytes;
    void *host;         /* the tensor inside it */
} fence;

/* A buffer holding `bytes` of `data` (NULL: all bits set, a NaN in f32, f16 and bf16),
 * touching the inaccessible page after it (at_end) or the one before it. NULL with *err set on failure (f left empty). Release the buffer, after every
 * command that uses it has finished, before fence_free. */
cl_mem fence_buffer(cl_context cl, cl_mem_flags flags, const void *data, size_t bytes, bool at_end, fence *f,
                    cl_int *err);

/* Unmaps the memory (a no-op on an empty fence). */
void fence_free(fence *f);

/* Whether fences can fault on this device: a CPU's buffers live in host memory. */
bool fence_applies(cl_device_id dev);

#endif
