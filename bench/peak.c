#include "peak.h"
#include "cli.h"
#include "files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* FMA: 8 independent float16 chains (enough to cover FMA latency on wide SIMD and keep GPU
 * lanes busy), 2 FMAs each per iteration: 512 flops. Read: two access patterns, because the
 * fast one differs by device: consecutive work-items on consecutive addresses (coalesced, for
 * GPUs) and one contiguous chunk per work-item (for CPUs); the faster counts. */
static const char *peak_source =
    "__kernel void peak_fma(__global float *out, float a, float b, int iters) {\n"
    "  const int gid = get_global_id(0);\n"
    "  float16 x0 = (float16)(gid) * 1e-9f, x1 = x0 + 1.0f, x2 = x0 + 2.0f, x3 = x0 + 3.0f;\n"
    "  float16 x4 = x0 + 4.0f, x5 = x0 + 5.0f, x6 = x0 + 6.0f, x7 = x0 + 7.0f;\n"
    "  for (int i = 0; i < iters; i++) {\n"
    "    x0 = fma(x0, a, b); x1 = fma(x1, a, b); x2 = fma(x2, a, b); x3 = fma(x3, a, b);\n"
    "    x4 = fma(x4, a, b); x5 = fma(x5, a, b); x6 = fma(x6, a, b); x7 = fma(x7, a, b);\n"
    "    x0 = fma(x0, a, b); x1 = fma(x1, a, b); x2 = fma(x2, a, b); x3 = fma(x3, a, b);\n"
    "    x4 = fma(x4, a, b); x5 = fma(x5, a, b); x6 = fma(x6, a, b); x7 = fma(x7, a, b);\n"
    "  }\n"
    "  float16 s = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;\n"
    "  float8 h = s.lo + s.hi; float4 q = h.lo + h.hi;\n"
    "  out[gid] = q.x + q.y + q.z + q.w;\n"
    "}\n"
    "__kernel void peak_read(__global const float4 *in, __global float *out, ulong n4) {\n"
    "  const size_t gid = get_global_id(0), gs = get_global_size(0);\n"
    "  float4 s = (float4)(0.0f);\n"
    "  for (size_t i = gid; i < n4; i += gs) s += in[i];\n"
    "  out[gid] = s.x + s.y + s.z + s.w;\n"
    "}\n"
    "__kernel void peak_read_chunks(__global const float4 *in, __global float *out, ulong n4) {\n"
    "  const size_t gid = get_global_id(0), gs = get_global_size(0);\n"
    "  const size_t per = (n4 + gs - 1) / gs, b = gid * per, e = min(b + per, (size_t)n4);\n"
    "  float4 s0 = (float4)(0.0f), s1 = s0, s2 = s0, s3 = s0;\n"
    "  size_t i = b;\n"
    "  for (; i + 4 <= e; i += 4) { s0 += in[i]; s1 += in[i + 1]; s2 += in[i + 2]; s3 += in[i + 3]; }\n"
    "  for (; i < e; i++) s0 += in[i];\n"
    "  float4 s = s0 + s1 + s2 + s3;\n"
    "  out[gid] = s.x + s.y + s.z + s.w;\n"
    "}\n";

/* Keyed by device name, driver and compute units: PoCL reports one unit per thread, and its
 * POCL_MAX_PTHREAD_COUNT changes the peaks. */
static void cache_file(const char *name, const char *driver, unsigned cus, char *path, size_t size)
{
    const char *dir = getenv("CLATTN_CACHE_DIR");
    char base[768];
    if (dir && dir[0]) snprintf(base, sizeof base, "%s", dir);
    else if ((dir = getenv("XDG_CACHE_HOME")) && dir[0]) snprintf(base, sizeof base, "%s/clattn", dir);
    else if ((dir = getenv("HOME")) && dir[0]) snprintf(base, sizeof base, "%s/.cache/clattn", dir);
    else {
        path[0] = '\0';
        return;
    }
    const char *parts[] = {name, driver};
    snprintf(path, size, "%s/peak-%016llx-%ucu.txt", base, (unsigned long long)files_hash(parts, 2), cus);
}

/* Best wall time of `runs` launches, after one warm-up. */
static double best_ms(cl_command_queue q, cl_kernel k, size_t global, int runs)
{
    double best = 1e30;
    for (int r = 0; r <= runs; r++) {
        const double t0 = cli_now_ms();
        if (clEnqueueNDRangeKernel(q, k, 1, NULL, &global, NULL, 0, NULL, NULL) || clFinish(q)) return -1;
        const double t = cli_now_ms() - t0;
        if (r > 0 && t < best) best = t;
    }
    return best;
}

int peak_measure(clattn_context *ctx, bool remeasure, device_peak *out)
{
    memset(out, 0, sizeof *out);
    cl_device_id dev = clattn_context_device(ctx);
    cl_context cl = clattn_context_cl_context(ctx);
    char name[256] = "", driver[256] = "", path[1024];
    cl_uint units = 1;
    clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name - 1, name, NULL);
    clGetDeviceInfo(dev, CL_DRIVER_VERSION, sizeof driver - 1, driver, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof units, &units, NULL);
    cache_file(name, driver, units, path, sizeof path);
    if (!remeasure && path[0]) {
        FILE *f = fopen(path, "r");
        if (f) {
            int ok = fscanf(f, "%lf %lf", &out->fma_gflops, &out->read_gbs) == 2;
            fclose(f);
            if (ok && out->fma_gflops > 0 && out->read_gbs > 0) {
                out->cached = true;
                return 0;
            }
        }
    }
    cl_int e;
    cl_uint cus = 1;
    cl_ulong max_alloc = 0;
    clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cus, &cus, NULL);
    clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
    cl_program p = clCreateProgramWithSource(cl, 1, &peak_source, NULL, &e);
    if (!e) e = clBuildProgram(p, 1, &dev, "-cl-std=CL1.2", NULL, NULL);
    if (e) return cli_error("peak: building the microbenchmarks failed (%d)", e);
    cl_kernel kf = clCreateKernel(p, "peak_fma", &e);
    cl_kernel kr = clCreateKernel(p, "peak_read", &e);
    cl_kernel kc = clCreateKernel(p, "peak_read_chunks", &e);
    cl_command_queue q = clCreateCommandQueue(cl, dev, 0, &e);
    /* Enough work-items to fill every unit many times over. */
    const size_t items = (size_t)cus * 2048;
    size_t bytes = (size_t)256 << 20;
    if (bytes > max_alloc / 2) bytes = (size_t)(max_alloc / 2) & ~(size_t)15;
    cl_mem outm = clCreateBuffer(cl, CL_MEM_WRITE_ONLY, items * sizeof(float), NULL, &e);
    cl_mem in = clCreateBuffer(cl, CL_MEM_READ_ONLY, bytes, NULL, &e);
    int rc = 0;
    if (e || !kf || !kr || !kc || !q) {
        rc = cli_error("peak: allocating the microbenchmarks failed (%d)", e);
        goto done;
    }
    const float zero = 0.0f;
    e = clEnqueueFillBuffer(q, in, &zero, sizeof zero, 0, bytes, 0, NULL, NULL);
    /* FMA: calibrate iterations to about 100 ms per run */
    float a = 0.999f, b = 1e-6f;
    int iters = 256;
    clSetKernelArg(kf, 0, sizeof outm, &outm);
    clSetKernelArg(kf, 1, sizeof a, &a);
    clSetKernelArg(kf, 2, sizeof b, &b);
    double ms = 0;
    for (;;) {
        clSetKernelArg(kf, 3, sizeof iters, &iters);
        ms = best_ms(q, kf, items, 1);
        if (ms < 0 || ms > 100 || iters > (1 << 24)) break;
        iters *= ms < 5 ? 8 : 2;
    }
    clSetKernelArg(kf, 3, sizeof iters, &iters);
    ms = best_ms(q, kf, items, 5);
    if (ms <= 0) {
        rc = cli_error("peak: the FMA microbenchmark failed");
        goto done;
    }
    out->fma_gflops = (double)items * iters * 512.0 / (ms * 1e6);
    /* streaming read */
    const cl_ulong n4 = bytes / 16;
    double best = 1e30;
    cl_kernel reads[2] = {kr, kc};
    for (int i = 0; i < 2; i++) {
        clSetKernelArg(reads[i], 0, sizeof in, &in);
        clSetKernelArg(reads[i], 1, sizeof outm, &outm);
        clSetKernelArg(reads[i], 2, sizeof n4, &n4);
        /* chunks: a few work-items per unit, each streaming a long contiguous range */
        ms = best_ms(q, reads[i], i ? (size_t)cus * 4 : items, 7);
        if (ms > 0 && ms < best) best = ms;
    }
    ms = best < 1e30 ? best : -1;
    if (ms <= 0) {
        rc = cli_error("peak: the bandwidth microbenchmark failed");
        goto done;
    }
    out->read_gbs = (double)bytes / (ms * 1e6);
    if (path[0]) { /* best effort: a cache failure only costs a remeasure */
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
        FILE *f = fopen(path, "w");
        if (f) {
            fprintf(f, "%.3f %.3f\n", out->fma_gflops, out->read_gbs);
            fclose(f);
        }
    }
done:
    if (in) clReleaseMemObject(in);
    if (outm) clReleaseMemObject(outm);
    if (q) clReleaseCommandQueue(q);
    if (kf) clReleaseKernel(kf);
    if (kr) clReleaseKernel(kr);
    if (kc) clReleaseKernel(kc);
    clReleaseProgram(p);
    return rc;
}
