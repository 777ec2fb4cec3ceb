/* Contexts: wrapping the application's cl_context or picking a device. */
#include "abi.h"
#include "diag.h"
#include "family.h"
#include "program.h"
#include "tuning.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *clattn_context_last_error(const clattn_context *ctx)
{
    return ctx ? ctx->last_error : "";
}

size_t clattn_context_copy_last_error(const clattn_context *ctx, char *buf, size_t size)
{
    if (!ctx || !buf || !size) return 0;
    pthread_mutex_lock((pthread_mutex_t *)&ctx->lock);
    clattn__format(buf, size, "%s", ctx->last_error);
    pthread_mutex_unlock((pthread_mutex_t *)&ctx->lock);
    return strlen(buf);
}

clattn_status clattn_context_cache_stats(const clattn_context *ctx, clattn_cache_stats *out)
{
    if (!ctx || !out) return CLATTN_INVALID_ARGUMENT;
    pthread_mutex_lock((pthread_mutex_t *)&ctx->lock);
    const clattn_cache_stats now = ctx->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&ctx->lock);
    return clattn__struct_out(out, &now, sizeof now, "clattn_cache_stats", NULL, 0);
}

cl_context clattn_context_cl_context(const clattn_context *ctx) { return ctx ? ctx->cl_ctx : NULL; }
cl_device_id clattn_context_device(const clattn_context *ctx) { return ctx ? ctx->device : NULL; }
clattn_kernel_family clattn_context_kernel_family(const clattn_context *ctx)
{
    if (!ctx) return CLATTN_KERNELS_AUTO;
    return ctx->family != CLATTN_KERNELS_AUTO ? ctx->family : clattn__family_default(&ctx->info)->id;
}

/* NVIDIA's compute capability, where the driver offers cl_nv_device_attribute_query (tensor-core
 * instructions depend on it); 0 on other devices or when the query fails. */
static int nv_compute_capability(cl_device_id dev)
{
    enum { CC_MAJOR = 0x4000, CC_MINOR = 0x4001 }; /* CL_DEVICE_COMPUTE_CAPABILITY_{MAJOR,MINOR}_NV */
    size_t n = 0;
    if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &n) || !n) return 0;
    char *ext = malloc(n + 1);
    if (!ext) return 0;
    const bool has = !clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, n, ext, NULL) &&
                     (ext[n] = '\0', strstr(ext, "cl_nv_device_attribute_query") != NULL);
    free(ext);
    cl_uint major = 0, minor = 0;
    if (!has || clGetDeviceInfo(dev, CC_MAJOR, sizeof major, &major, NULL) ||
        clGetDeviceInfo(dev, CC_MINOR, sizeof minor, &minor, NULL))
        return 0;
    return (int)(major * 10 + minor);
}

/* The host's L1 data cache per core in bytes, 0 where the C library does not say. */
static long host_l1d_bytes(void)
{
#ifdef _SC_LEVEL1_DCACHE_SIZE
    const long n = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    return n > 0 ? n : 0;
#else
    return 0;
#endif
}

static clattn_status query_device(cl_device_id dev, clattn_device_info *info)
{
    memset(info, 0, sizeof *info);
    cl_platform_id plat = NULL;
    cl_int e = clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof info->name - 1, info->name, NULL);
    if (!e) e = clGetDeviceInfo(dev, CL_DEVICE_VENDOR, sizeof info->vendor - 1, info->vendor, NULL);
    if (!e) e = clGetDeviceInfo(dev, CL_DRIVER_VERSION, sizeof info->driver - 1, info->driver, NULL);
    if (!e) e = clGetDeviceInfo(dev, CL_DEVICE_VERSION, sizeof info->version - 1, info->version, NULL);
    if (!e) e = clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof info->type, &info->type, NULL);
    if (!e) e = clGetDeviceInfo(dev, CL_DEVICE_LOCAL_MEM_SIZE, sizeof info->local_mem, &info->local_mem, NULL);
    if (!e) e = clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof info->max_alloc, &info->max_alloc, NULL);
    if (!e) e = clGetDeviceInfo(dev, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof info->max_wg_size, &info->max_wg_size, NULL);
    if (!e) e = clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof info->compute_units, &info->compute_units, NULL);
    if (!e) e = clGetDeviceInfo(dev, CL_DEVICE_PLATFORM, sizeof plat, &plat, NULL);
    if (!e) e = clGetPlatformInfo(plat, CL_PLATFORM_VERSION, sizeof info->platform_version - 1, info->platform_version, NULL);
    if (!e) info->nv_sm = nv_compute_capability(dev);
    if (!e && (info->type & CL_DEVICE_TYPE_CPU)) info->l1d_bytes = host_l1d_bytes();
    return e;
}

/* The disk cache's folder, or "" (off). A path too long for `dir` turns the cache off (the
 * log says so) rather than writing under a truncated path the user did not name. */
static void pick_cache_dir(const clattn_context_options *o, char *dir, size_t size)
{
    dir[0] = '\0';
    if (o && o->disable_disk_cache) return;
    const char *env, *base = NULL, *tail = "";
    if (o && o->cache_dir && o->cache_dir[0]) base = o->cache_dir;
    else if ((env = getenv("CLATTN_CACHE_DIR")) && env[0]) base = env;
    else if ((env = getenv("XDG_CACHE_HOME")) && env[0]) base = env, tail = "/clattn";
    else if ((env = getenv("HOME")) && env[0]) base = env, tail = "/.cache/clattn";
    if (base && strlen(base) + strlen(tail) < size) clattn__format(dir, size, "%s%s", base, tail);
}

/* $CLATTN_KERNELS (a family's name) forces a family where the options leave it on auto: for
 * running the same program and tests over another family on one device. */
static clattn_kernel_family env_family(void)
{
    const char *env = getenv("CLATTN_KERNELS");
    const clattn_family *f = env ? clattn__family_by_name(env) : NULL;
    return f ? f->id : CLATTN_KERNELS_AUTO;
}

clattn_status clattn_context_create_from_cl(cl_context cl_ctx, cl_device_id device,
                                            const clattn_context_options *caller,
                                            clattn_context **out)
{
    if (!out) return CLATTN_INVALID_ARGUMENT;
    *out = NULL;
    if (!cl_ctx || !device) return CLATTN_INVALID_ARGUMENT;
    /* the options as this library knows them (NULL: all defaults) */
    clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
    clattn_status st;
    if (caller && (st = clattn__struct_in(&opts, sizeof opts, caller, "clattn_context_options", NULL, 0))) return st;
    const clattn_context_options *options = &opts;
    if (options->kernel_family && !clattn__family_by_id(options->kernel_family)) return CLATTN_INVALID_ARGUMENT;
    /* $CLATTN_KERNELS names a family or is refused, as a wrong option is: a typo must not
     * quietly run (and test) the default family */
    const char *fam_env = getenv("CLATTN_KERNELS");
    if (!options->kernel_family && fam_env && fam_env[0] && strcmp(fam_env, "auto") && !clattn__family_by_name(fam_env))
        return CLATTN_INVALID_ARGUMENT;

    /* The device must belong to the context. */
    cl_uint ndev = 0;
    cl_int e = clGetContextInfo(cl_ctx, CL_CONTEXT_NUM_DEVICES, sizeof ndev, &ndev, NULL);
    if (e) return e;
    cl_device_id devs[64];
    if (ndev > 64) ndev = 64;
    e = clGetContextInfo(cl_ctx, CL_CONTEXT_DEVICES, sizeof(cl_device_id) * ndev, devs, NULL);
    if (e) return e;
    bool found = false;
    for (cl_uint i = 0; i < ndev; i++) found = found || devs[i] == device;
    if (!found) return CL_INVALID_DEVICE;

    clattn_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return CLATTN_OUT_OF_HOST_MEMORY;
    if ((e = query_device(device, &ctx->info))) {
        free(ctx);
        return e;
    }
    if (pthread_mutex_init(&ctx->lock, NULL)) {
        free(ctx);
        return CLATTN_INTERNAL_ERROR;
    }
    if ((e = clRetainContext(cl_ctx))) {
        pthread_mutex_destroy(&ctx->lock);
        free(ctx);
        return e;
    }
    if ((e = clRetainDevice(device))) {
        clReleaseContext(cl_ctx);
        pthread_mutex_destroy(&ctx->lock);
        free(ctx);
        return e;
    }
    ctx->cl_ctx = cl_ctx;
    ctx->device = device;
    pick_cache_dir(options, ctx->cache_dir, sizeof ctx->cache_dir);
    ctx->log = options->log;
    ctx->log_user = options->log_user;
    const size_t limit = options->scratch_limit ? options->scratch_limit : CLATTN_SCRATCH_LIMIT_DEFAULT;
    ctx->scratch_limit = limit < ctx->info.max_alloc ? limit : (size_t)ctx->info.max_alloc;
    ctx->family = options->kernel_family ? options->kernel_family : env_family();
    clattn__logf(ctx, "clattn: device '%s' (%s), disk cache %s", ctx->info.name, ctx->info.driver,
                 ctx->cache_dir[0] ? ctx->cache_dir : "off (disabled, no folder, or its path too long)");
    clattn__tuning_load(ctx);
    *out = ctx;
    return CLATTN_SUCCESS;
}

static bool contains_icase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i])) i++;
        if (i == n) return true;
    }
    return n == 0;
}

/* All devices of all platforms, in platform order: the global index CLATTN_DEVICE uses. */
clattn_status clattn_list_devices(cl_device_id *devs, cl_uint cap, cl_uint *count)
{
    if (count) *count = 0;
    if (!devs) cap = 0; /* only counting */
    cl_platform_id plats[16];
    cl_uint np = 0, n = 0;
    cl_int e = clGetPlatformIDs(16, plats, &np);
    if (e == -1001 /* CL_PLATFORM_NOT_FOUND_KHR: the ICD loader found no platform */ || np == 0) np = 0;
    else if (e) return e;
    if (np > 16) np = 16;
    for (cl_uint p = 0; p < np; p++) {
        cl_uint nd = 0;
        e = clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd);
        if (e == CL_DEVICE_NOT_FOUND) continue;
        if (e) return e;
        if (n < cap) {
            cl_uint take = nd < cap - n ? nd : cap - n;
            cl_device_id all[256];
            if (nd > 256) nd = 256;
            if ((e = clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, all, NULL))) return e;
            for (cl_uint i = 0; i < take && i < nd; i++) devs[n + i] = all[i];
        }
        n += nd;
    }
    if (count) *count = n;
    return CL_SUCCESS;
}

clattn_status clattn_context_create(const clattn_context_options *options, clattn_context **out)
{
    if (!out) return CLATTN_INVALID_ARGUMENT;
    *out = NULL;
    clattn_context_options opts = CLATTN_CONTEXT_OPTIONS_INIT;
    clattn_status abi;
    if (options && (abi = clattn__struct_in(&opts, sizeof opts, options, "clattn_context_options", NULL, 0)))
        return abi;
    cl_device_id devs[64];
    cl_uint n = 0;
    cl_int e = clattn_list_devices(devs, 64, &n);
    if (e) return e;
    if (n == 0) return CLATTN_NO_DEVICE;
    if (n > 64) n = 64;

    long pick = -1;
    const char *want = opts.device ? opts.device : getenv("CLATTN_DEVICE");
    if (want && want[0]) {
        char *end;
        long idx = strtol(want, &end, 10);
        if (*end == '\0') {
            if (idx < 0 || idx >= (long)n) return CLATTN_NO_DEVICE;
            pick = idx;
        } else {
            for (cl_uint i = 0; i < n && pick < 0; i++) {
                char name[256] = {0};
                if (clGetDeviceInfo(devs[i], CL_DEVICE_NAME, sizeof name - 1, name, NULL)) continue;
                if (contains_icase(name, want)) pick = i;
            }
            if (pick < 0) return CLATTN_NO_DEVICE;
        }
    } else {
        for (cl_uint i = 0; i < n && pick < 0; i++) {
            cl_device_type t = 0;
            if (!clGetDeviceInfo(devs[i], CL_DEVICE_TYPE, sizeof t, &t, NULL) && (t & CL_DEVICE_TYPE_GPU))
                pick = i;
        }
        if (pick < 0) pick = 0;
    }
    cl_context cl_ctx = clCreateContext(NULL, 1, &devs[pick], NULL, NULL, &e);
    if (e) return e;
    clattn_status st = clattn_context_create_from_cl(cl_ctx, devs[pick], options, out);
    clReleaseContext(cl_ctx); /* the clattn context holds its own reference now */
    return st;
}

void clattn_context_destroy(clattn_context *ctx)
{
    if (!ctx) return;
    clattn__release_programs(ctx);
    clattn__tuning_free(ctx);
    clReleaseDevice(ctx->device);
    clReleaseContext(ctx->cl_ctx);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}
