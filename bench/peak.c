#include "peak.h"
#include "cli.h"
#include "files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Bump when the measurement changes: the cache key includes it, so peaks measured the old way
 * are measured again rather than read back. 2: the read peak became the best of several
 * vectorised kernels, geometries and sizes (issue 16: the old one let PoCL run a single
 * work-group, and fused decode then streamed 147% of it). */
#define PEAK_METHOD "peak-method-2"

/* FMA: independent chains (enough to cover FMA latency on wide SIMD and keep GPU lanes busy),
 * 2 FMAs each per iteration, in two widths: eight float16 chains spill on a 16-register
 * AVX2 machine, where eight float8 chains fit; the faster counts.
 * Read: two access patterns, because the fast one differs by device: consecutive work-items on
 * consecutive addresses (coalesced, for GPUs) and one contiguous chunk per work-item (for
 * CPUs), each in several vector widths; the fastest counts. Every result is written out and
 * depends on every load, so no compiler can delete the work. */
static const char *peak_source =
    "#define FMA_KERNEL(T, NAME)                                                           \\\n"
    "__kernel void NAME(__global float *out, float a, float b, int iters) {               \\\n"
    "  const int gid = get_global_id(0);                                                  \\\n"
    "  T x0 = (T)(gid) * 1e-9f, x1 = x0 + 1.0f, x2 = x0 + 2.0f, x3 = x0 + 3.0f;          \\\n"
    "  T x4 = x0 + 4.0f, x5 = x0 + 5.0f, x6 = x0 + 6.0f, x7 = x0 + 7.0f;                 \\\n"
    "  for (int i = 0; i < iters; i++) {                                                  \\\n"
    "    x0 = fma(x0, a, b); x1 = fma(x1, a, b); x2 = fma(x2, a, b); x3 = fma(x3, a, b);  \\\n"
    "    x4 = fma(x4, a, b); x5 = fma(x5, a, b); x6 = fma(x6, a, b); x7 = fma(x7, a, b);  \\\n"
    "    x0 = fma(x0, a, b); x1 = fma(x1, a, b); x2 = fma(x2, a, b); x3 = fma(x3, a, b);  \\\n"
    "    x4 = fma(x4, a, b); x5 = fma(x5, a, b); x6 = fma(x6, a, b); x7 = fma(x7, a, b);  \\\n"
    "  }                                                                                  \\\n"
    "  out[gid] = hsum_##T(x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7);                        \\\n"
    "}\n"
    "float hsum_float2(float2 s) { return s.x + s.y; }\n"
    "float hsum_float4(float4 s) { return s.x + s.y + s.z + s.w; }\n"
    "float hsum_float8(float8 s) { return hsum_float4(s.lo + s.hi); }\n"
    "float hsum_float16(float16 s) { return hsum_float8(s.lo + s.hi); }\n"
    "FMA_KERNEL(float8, peak_fma8)\n"
    "FMA_KERNEL(float16, peak_fma16)\n"
    "#define READ_COALESCED(T)                                                            \\\n"
    "__kernel void read_coalesced_##T(__global const T *in, __global float *out, ulong n) {\\\n"
    "  const size_t gid = get_global_id(0), gs = get_global_size(0);                      \\\n"
    "  T s = (T)(0.0f);                                                                   \\\n"
    "  for (size_t i = gid; i < n; i += gs) s += in[i];                                   \\\n"
    "  out[gid] = hsum_##T(s);                                                            \\\n"
    "}\n"
    "#define READ_CHUNKS(T)                                                               \\\n"
    "__kernel void read_chunks_##T(__global const T *in, __global float *out, ulong n) {   \\\n"
    "  const size_t gid = get_global_id(0), gs = get_global_size(0);                      \\\n"
    "  const size_t per = (n + gs - 1) / gs, b = gid * per, e = min(b + per, (size_t)n);  \\\n"
    "  T s0 = (T)(0.0f), s1 = s0, s2 = s0, s3 = s0;                                       \\\n"
    "  size_t i = b;                                                                      \\\n"
    "  for (; i + 4 <= e; i += 4) { s0 += in[i]; s1 += in[i + 1]; s2 += in[i + 2]; s3 += in[i + 3]; } \\\n"
    "  for (; i < e; i++) s0 += in[i];                                                    \\\n"
    "  out[gid] = hsum_##T(s0 + s1 + s2 + s3);                                            \\\n"
    "}\n"
    "READ_COALESCED(float2)\n"
    "READ_COALESCED(float4)\n"
    "READ_COALESCED(float8)\n"
    "READ_COALESCED(float16)\n"
    "READ_CHUNKS(float4)\n"
    "READ_CHUNKS(float16)\n";

/* One way of reading the buffer: a kernel, its vector width, work-items per compute unit and
 * work-group size (0: the driver's choice). Chunks run in work-groups of one work-item, so
 * that a CPU driver (PoCL runs a work-group on one thread) spreads them over every core: with
 * the driver's choice, PoCL put all of them in one group, on one core. */
typedef struct read_variant {
    const char *kernel;
    int width;        /* floats per load */
    int per_unit;     /* work-items per compute unit */
    size_t local;     /* 0: NULL local size */
    bool for_gpu;     /* also tried on GPUs (chunks of one work-item would crawl there) */
} read_variant;

static const read_variant read_variants[] = {
    {"read_coalesced_float2", 2, 2048, 0, true},
    {"read_coalesced_float4", 4, 2048, 0, true},
    {"read_coalesced_float4", 4, 2048, 256, true},
    {"read_coalesced_float8", 8, 2048, 0, true},
    {"read_coalesced_float16", 16, 2048, 0, false},
    {"read_chunks_float4", 4, 1, 1, false},
    {"read_chunks_float16", 16, 1, 1, false},
    {"read_chunks_float16", 16, 4, 1, false},
    {"read_chunks_float16", 16, 16, 1, false},
};
#define N_READ_VARIANTS (int)(sizeof read_variants / sizeof read_variants[0])

/* Buffer sizes read, each at least twice the device's global cache, so that the peak is a
 * streaming figure and not a cache's; the fastest counts. */
static const size_t read_sizes_mib[] = {64, 256, 1024};

/* Keyed by device name, driver, compute units and the method: PoCL reports one unit per
 * thread, and its POCL_MAX_PTHREAD_COUNT changes the peaks. *cus: the device's compute units. */
static void cache_file(cl_device_id dev, cl_uint *cus, char *path, size_t size)
{
    char name[256] = "", driver[256] = "";
    clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name - 1, name, NULL);
    clGetDeviceInfo(dev, CL_DRIVER_VERSION, sizeof driver - 1, driver, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof *cus, cus, NULL);
    const char *dir = getenv("CLATTN_CACHE_DIR");
    char base[768];
    if (dir && dir[0]) snprintf(base, sizeof base, "%s", dir);
    else if ((dir = getenv("XDG_CACHE_HOME")) && dir[0]) snprintf(base, sizeof base, "%s/clattn", dir);
    else if ((dir = getenv("HOME")) && dir[0]) snprintf(base, sizeof base, "%s/.cache/clattn", dir);
    else {
        path[0] = '\0';
        return;
    }
    const char *parts[] = {name, driver, PEAK_METHOD};
    snprintf(path, size, "%s/peak-%016llx-%ucu.txt", base, (unsigned long long)files_hash(parts, 3), (unsigned)*cus);
}

/* Best wall time of `runs` launches, after one warm-up; -1 when a launch fails. */
static double best_ms(cl_command_queue q, cl_kernel k, size_t global, size_t local, int runs)
{
    double best = 1e30;
    for (int r = 0; r <= runs; r++) {
        const double t0 = cli_now_ms();
        if (clEnqueueNDRangeKernel(q, k, 1, NULL, &global, local ? &local : NULL, 0, NULL, NULL) || clFinish(q))
            return -1;
        const double t = cli_now_ms() - t0;
        if (r > 0 && t < best) best = t;
    }
    return best;
}

typedef struct peak_env {
    cl_context cl;
    cl_device_id dev;
    cl_command_queue q;
    cl_program p;
    cl_mem out;    /* one float per work-item */
    size_t items;  /* work-items the out buffer holds */
    cl_uint cus;
} peak_env;

/* The FMA rate of one kernel: iterations calibrated to about 100 ms per launch. */
static double fma_gflops(const peak_env *env, const char *name)
{
    cl_int e;
    cl_kernel k = clCreateKernel(env->p, name, &e);
    if (e) return -1;
    const float a = 0.999f, b = 1e-6f;
    const int width = !strcmp(name, "peak_fma8") ? 8 : 16;
    int iters = 256;
    clSetKernelArg(k, 0, sizeof env->out, &env->out);
    clSetKernelArg(k, 1, sizeof a, &a);
    clSetKernelArg(k, 2, sizeof b, &b);
    double ms = 0;
    for (;;) {
        clSetKernelArg(k, 3, sizeof iters, &iters);
        ms = best_ms(env->q, k, env->items, 0, 1);
        if (ms < 0 || ms > 100 || iters > (1 << 24)) break;
        iters *= ms < 5 ? 8 : 2;
    }
    clSetKernelArg(k, 3, sizeof iters, &iters);
    ms = best_ms(env->q, k, env->items, 0, 5);
    clReleaseKernel(k);
    /* 8 chains x 2 FMAs x 2 flops x width lanes per iteration */
    return ms > 0 ? (double)env->items * iters * 32.0 * width / (ms * 1e6) : -1;
}

/* The read rate of one variant over the first `bytes` of `in`, GB/s; -1 when it cannot run. */
static double read_gbs(const peak_env *env, const read_variant *v, cl_mem in, size_t bytes, int runs)
{
    const size_t global = (size_t)env->cus * (size_t)v->per_unit;
    if (global > env->items || (v->local && global % v->local)) return -1;
    cl_int e;
    cl_kernel k = clCreateKernel(env->p, v->kernel, &e);
    if (e) return -1;
    const cl_ulong n = bytes / (sizeof(float) * (size_t)v->width);
    clSetKernelArg(k, 0, sizeof in, &in);
    clSetKernelArg(k, 1, sizeof env->out, &env->out);
    clSetKernelArg(k, 2, sizeof n, &n);
    const double ms = best_ms(env->q, k, global, v->local, runs);
    clReleaseKernel(k);
    return ms > 0 ? (double)bytes / (ms * 1e6) : -1;
}

/* The best read rate over every variant the device takes and every size that fits. Every
 * variant reads the smallest size; only those within half of the best there read the larger
 * ones (a strided pattern that crawls on a CPU would otherwise take seconds a launch). */
static int measure_read(const peak_env *env, device_peak *out)
{
    cl_device_type type = 0;
    cl_ulong max_alloc = 0, global_mem = 0, cache = 0;
    clGetDeviceInfo(env->dev, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    clGetDeviceInfo(env->dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
    clGetDeviceInfo(env->dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof global_mem, &global_mem, NULL);
    clGetDeviceInfo(env->dev, CL_DEVICE_GLOBAL_MEM_CACHE_SIZE, sizeof cache, &cache, NULL);
    const int nsizes = (int)(sizeof read_sizes_mib / sizeof read_sizes_mib[0]);
    size_t largest = 0;
    for (int s = 0; s < nsizes; s++) {
        const size_t bytes = read_sizes_mib[s] << 20;
        if (bytes <= max_alloc && bytes <= global_mem / 4) largest = bytes;
    }
    if (!largest) largest = (size_t)(max_alloc / 2) & ~(size_t)63; /* a small device: what it allows */
    cl_int e;
    cl_mem in = clCreateBuffer(env->cl, CL_MEM_READ_ONLY, largest, NULL, &e);
    const float zero = 0.0f;
    if (!e) e = clEnqueueFillBuffer(env->q, in, &zero, sizeof zero, 0, largest, 0, NULL, NULL);
    if (!e) e = clFinish(env->q);
    if (e) {
        if (in) clReleaseMemObject(in);
        return cli_error("peak: allocating %zu MiB for the bandwidth microbenchmark failed (%d)", largest >> 20, e);
    }
    double first[N_READ_VARIANTS] = {0}; /* each variant's rate at the first size it read */
    double first_best = 0;
    bool measured_one_size = false;
    int win = -1;
    size_t win_bytes = 0;
    out->read_gbs = 0;
    for (int s = 0; s < nsizes; s++) {
        size_t bytes = read_sizes_mib[s] << 20;
        if (bytes > largest) bytes = largest;
        if (bytes < 2 * cache && bytes < largest) continue; /* a cache's bandwidth, not memory's */
        for (int i = 0; i < N_READ_VARIANTS; i++) {
            const read_variant *v = &read_variants[i];
            if ((type & CL_DEVICE_TYPE_GPU) && !v->for_gpu) continue;
            if (measured_one_size && first[i] < 0.5 * first_best) continue;
            const double gbs = read_gbs(env, v, in, bytes, 3);
            if (!measured_one_size) {
                first[i] = gbs;
                if (gbs > first_best) first_best = gbs;
            }
            if (gbs > out->read_gbs) {
                out->read_gbs = gbs;
                win = i;
                win_bytes = bytes;
            }
        }
        measured_one_size = true;
        if (bytes == largest) break;
    }
    /* The winner again, longer: a peak is a best case, and a busy machine only lowers it. */
    if (win >= 0) {
        const double again = read_gbs(env, &read_variants[win], in, win_bytes, 9);
        if (again > out->read_gbs) out->read_gbs = again;
        snprintf(out->read_method, sizeof out->read_method, "%s, %d per unit, group %zu, %zu MiB",
                 read_variants[win].kernel, read_variants[win].per_unit, read_variants[win].local, win_bytes >> 20);
    }
    clReleaseMemObject(in);
    return out->read_gbs > 0 ? 0 : cli_error("peak: the bandwidth microbenchmark failed");
}

static bool read_cache(const char *path, device_peak *out)
{
    FILE *f = path[0] ? fopen(path, "r") : NULL;
    if (!f) return false;
    char method[sizeof out->read_method] = "";
    const int got = fscanf(f, "%lf %lf %127[^\n]", &out->fma_gflops, &out->read_gbs, method);
    fclose(f);
    if (got < 2 || !(out->fma_gflops > 0) || !(out->read_gbs > 0)) return false;
    snprintf(out->read_method, sizeof out->read_method, "%s", method);
    out->cached = true;
    return true;
}

/* Best effort: a cache failure only costs a remeasure. */
static void write_cache(const char *path, const device_peak *p)
{
    if (!path[0]) return;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        for (char *c = dir + 1; *c; c++)
            if (*c == '/') {
                *c = '\0';
                mkdir(dir, 0755);
                *c = '/';
            }
        mkdir(dir, 0755);
    }
    char text[256];
    snprintf(text, sizeof text, "%.3f %.3f %s\n", p->fma_gflops, p->read_gbs, p->read_method);
    const files_chunk all = {text, strlen(text)};
    files_write_atomic(path, &all, 1);
}

int peak_measure(clattn_context *ctx, bool remeasure, device_peak *out)
{
    memset(out, 0, sizeof *out);
    peak_env env = {clattn_context_cl_context(ctx), clattn_context_device(ctx), NULL, NULL, NULL, 0, 1};
    char path[1024];
    cache_file(env.dev, &env.cus, path, sizeof path);
    if (!remeasure && read_cache(path, out)) return 0;
    memset(out, 0, sizeof *out);
    cl_int e;
    env.p = clCreateProgramWithSource(env.cl, 1, &peak_source, NULL, &e);
    if (!e) e = clBuildProgram(env.p, 1, &env.dev, "-cl-std=CL1.2", NULL, NULL);
    if (e) {
        if (env.p) clReleaseProgram(env.p);
        return cli_error("peak: building the microbenchmarks failed (%d)", e);
    }
    env.q = clCreateCommandQueue(env.cl, env.dev, 0, &e);
    /* Enough work-items to fill every unit many times over. */
    env.items = (size_t)env.cus * 2048;
    if (!e) env.out = clCreateBuffer(env.cl, CL_MEM_WRITE_ONLY, env.items * sizeof(float), NULL, &e);
    int rc = 0;
    if (e) {
        rc = cli_error("peak: allocating the microbenchmarks failed (%d)", e);
        goto done;
    }
    out->fma_gflops = fma_gflops(&env, "peak_fma16");
    const double narrow = fma_gflops(&env, "peak_fma8");
    if (narrow > out->fma_gflops) out->fma_gflops = narrow;
    if (out->fma_gflops <= 0) {
        rc = cli_error("peak: the FMA microbenchmark failed");
        goto done;
    }
    rc = measure_read(&env, out);
    if (!rc) write_cache(path, out);
done:
    if (env.out) clReleaseMemObject(env.out);
    if (env.q) clReleaseCommandQueue(env.q);
    clReleaseProgram(env.p);
    return rc;
}

bool peak_raise(clattn_context *ctx, device_peak *peak)
{
    device_peak again;
    if (peak_measure(ctx, true, &again)) return false;
    bool rose = false;
    if (again.fma_gflops > peak->fma_gflops) {
        peak->fma_gflops = again.fma_gflops;
        rose = true;
    }
    if (again.read_gbs > peak->read_gbs) {
        peak->read_gbs = again.read_gbs;
        snprintf(peak->read_method, sizeof peak->read_method, "%s", again.read_method);
        rose = true;
    }
    peak->cached = false;
    /* the cache holds the larger of each (peak_measure wrote the new figures alone) */
    char path[1024];
    cl_uint cus = 0;
    cache_file(clattn_context_device(ctx), &cus, path, sizeof path);
    write_cache(path, peak);
    return rose;
}
