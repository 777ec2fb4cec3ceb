/* `clattn devices`: every platform and device, with what matters to clattn, and which
 * algorithms can run there (decided by the library's own capability checks). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static void info_str(cl_device_id d, cl_device_info what, char *buf, size_t size)
{
    buf[0] = '\0';
    if (clGetDeviceInfo(d, what, size - 1, buf, NULL)) snprintf(buf, size, "?");
}

/* Probe plans of a small descriptor: which paths build and run here. */
static void algorithms(int index, char *buf, size_t size)
{
    char sel[16];
    snprintf(sel, sizeof sel, "%d", index);
    buf[0] = '\0';
    const struct { clattn_kernel_family fam; clattn_algo algo; const char *name; } paths[] = {
        {CLATTN_KERNELS_ROWS, CLATTN_ALGO_FUSED, "fused-rows"},
        {CLATTN_KERNELS_TILES, CLATTN_ALGO_FUSED, "fused-tiles"},
        {CLATTN_KERNELS_AUTO, CLATTN_ALGO_UNFUSED, "unfused"}};
    for (int i = 0; i < 3; i++) {
        clattn_context_options o = CLATTN_CONTEXT_OPTIONS_INIT;
        o.device = sel;
        o.kernel_family = paths[i].fam;
        clattn_context *ctx;
        if (clattn_context_create(&o, &ctx)) continue;
        clattn_desc d = CLATTN_DESC_INIT;
        d.batch = 1; d.heads_q = 1; d.seq_q = 4; d.seq_kv = 4; d.head_dim = 64; d.algo = paths[i].algo;
        clattn_plan *plan;
        if (!clattn_plan_create(ctx, &d, &plan)) {
            size_t l = strlen(buf);
            snprintf(buf + l, size - l, "%s%s", l ? "," : "", paths[i].name);
            clattn_plan_destroy(plan);
        }
        clattn_context_destroy(ctx);
    }
    if (!buf[0]) snprintf(buf, size, "none");
}

int cmd_devices(int argc, char **argv)
{
    static const struct option opts[] = {{NULL, 0, NULL, 0}}; /* none: every argument is refused */
    optind = 0;
    if (cli_next_option("devices", argc, argv, "", opts) != -1) return 1;
    cl_device_id devs[64];
    cl_uint n = 0;
    clattn_status st = clattn_list_devices(devs, 64, &n);
    if (st) return cli_error("devices: cannot list OpenCL devices: %s (%d)", clattn_status_string(st), st);
    if (n == 0) return cli_error("devices: no OpenCL device found (is an ICD such as pocl-opencl-icd installed?)");
    for (cl_uint i = 0; i < n && i < 64; i++) {
        char name[256], vendor[256], driver[128], version[128], clc[128], ext[8192], plat_name[256], algos[128];
        cl_platform_id plat = NULL;
        cl_device_type type = 0;
        cl_uint cus = 0, mhz = 0;
        cl_ulong local = 0, global = 0, alloc = 0;
        size_t wg = 0;
        info_str(devs[i], CL_DEVICE_NAME, name, sizeof name);
        info_str(devs[i], CL_DEVICE_VENDOR, vendor, sizeof vendor);
        info_str(devs[i], CL_DRIVER_VERSION, driver, sizeof driver);
        info_str(devs[i], CL_DEVICE_VERSION, version, sizeof version);
        info_str(devs[i], CL_DEVICE_OPENCL_C_VERSION, clc, sizeof clc);
        info_str(devs[i], CL_DEVICE_EXTENSIONS, ext, sizeof ext);
        clGetDeviceInfo(devs[i], CL_DEVICE_PLATFORM, sizeof plat, &plat, NULL);
        plat_name[0] = '\0';
        if (plat) clGetPlatformInfo(plat, CL_PLATFORM_NAME, sizeof plat_name - 1, plat_name, NULL);
        clGetDeviceInfo(devs[i], CL_DEVICE_TYPE, sizeof type, &type, NULL);
        clGetDeviceInfo(devs[i], CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cus, &cus, NULL);
        clGetDeviceInfo(devs[i], CL_DEVICE_MAX_CLOCK_FREQUENCY, sizeof mhz, &mhz, NULL);
        clGetDeviceInfo(devs[i], CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL);
        clGetDeviceInfo(devs[i], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof global, &global, NULL);
        clGetDeviceInfo(devs[i], CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof alloc, &alloc, NULL);
        clGetDeviceInfo(devs[i], CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
        const bool fp16 = strstr(ext, "cl_khr_fp16") != NULL, fp64 = strstr(ext, "cl_khr_fp64") != NULL;
        const bool sub = strstr(ext, "cl_khr_subgroups") || strstr(ext, "cl_intel_subgroups");
        algorithms((int)i, algos, sizeof algos);
        printf("device %u: %s\n", i, name);
        printf("  platform        %s\n", plat_name);
        printf("  vendor          %s\n", vendor);
        printf("  type            %s\n", type & CL_DEVICE_TYPE_GPU ? "GPU" : type & CL_DEVICE_TYPE_CPU ? "CPU"
                                        : type & CL_DEVICE_TYPE_ACCELERATOR ? "accelerator" : "other");
        printf("  driver          %s\n", driver);
        printf("  version         %s (%s)\n", version, clc);
        printf("  compute units   %u at %u MHz\n", cus, mhz);
        printf("  global memory   %llu MiB (max allocation %llu MiB)\n", (unsigned long long)(global >> 20),
               (unsigned long long)(alloc >> 20));
        printf("  local memory    %llu KiB\n", (unsigned long long)(local >> 10));
        printf("  work-group max  %zu\n", wg);
        printf("  fp16 / fp64     %s / %s\n", fp16 ? "yes" : "no", fp64 ? "yes" : "no");
        printf("  subgroups       %s\n", sub ? "yes" : "no");
        printf("  clattn paths    %s\n", algos);
    }
    return 0;
}
