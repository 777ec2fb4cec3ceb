#define _DEFAULT_SOURCE /* MAP_ANONYMOUS (glibc) */
#define _DARWIN_C_SOURCE /* MAP_ANON beside _POSIX_C_SOURCE (macOS) */
#include "fence.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if !defined(MAP_ANONYMOUS) && defined(MAP_ANON)
#define MAP_ANONYMOUS MAP_ANON
#endif

cl_mem fence_buffer(cl_context cl, cl_mem_flags flags, const void *data, size_t bytes, bool at_end, fence *f,
                    cl_int *err)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE), span = (bytes + page - 1) / page * page;
    memset(f, 0, sizeof *f);
    unsigned char *map = mmap(NULL, span + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        *err = CL_OUT_OF_HOST_MEMORY;
        return NULL;
    }
    f->map = map;
    f->map_bytes = span + 2 * page;
    if (mprotect(map, page, PROT_NONE) || mprotect(map + page + span, page, PROT_NONE)) {
        fence_free(f);
        *err = CL_OUT_OF_HOST_MEMORY;
        return NULL;
    }
    f->host = at_end ? map + page + span - bytes : map + page;
    if (data) memcpy(f->host, data, bytes);
    else memset(f->host, 0xff, bytes); /* NaN in every float type: a read before a write shows */
    cl_mem m = clCreateBuffer(cl, flags | CL_MEM_USE_HOST_PTR, bytes, f->host, err);
    if (!m) fence_free(f);
    return m;
}

void fence_free(fence *f)
{
    if (f->map) munmap(f->map, f->map_bytes);
    memset(f, 0, sizeof *f);
}

bool fence_applies(cl_device_id dev)
{
    cl_device_type type = 0;
    return clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof type, &type, NULL) == CL_SUCCESS && (type & CL_DEVICE_TYPE_CPU);
}
