/* Does the device's OpenCL compiler accept inline PTX `mma.sync` (NVIDIA tensor cores)? Builds
 * a kernel with one m16n8k8 f16 MMA per warp behind `asm`, runs it, checks one output element,
 * and prints the verdict and the build log. On other vendors it says so and exits 0: the
 * portable path needs none of this. */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <stdio.h>
#include <string.h>

static const char *src =
    "__kernel void probe(__global float *out) {\n"
    "  uint a0 = 0x3c003c00u, a1 = 0x3c003c00u, b0 = 0x3c003c00u;\n" /* halves of 1.0 */
    "  float d0 = 0, d1 = 0, d2 = 0, d3 = 0;\n"
    "  asm volatile(\"mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\"\n"
    "               : \"+f\"(d0), \"+f\"(d1), \"+f\"(d2), \"+f\"(d3) : \"r\"(a0), \"r\"(a1), \"r\"(b0));\n"
    "  out[get_global_id(0)] = d0;\n" /* each = sum over k of 1*1 = 8 */
    "}\n";

int main(void)
{
    cl_platform_id plats[8];
    cl_uint np = 0;
    if (clGetPlatformIDs(8, plats, &np) || !np) {
        printf("ptx probe: no OpenCL platform\n");
        return 0;
    }
    for (cl_uint p = 0; p < np; p++) {
        cl_device_id dev;
        char vendor[256] = "";
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 1, &dev, NULL)) continue;
        clGetDeviceInfo(dev, CL_DEVICE_VENDOR, sizeof vendor - 1, vendor, NULL);
        if (!strstr(vendor, "NVIDIA")) {
            printf("ptx probe: %s is not NVIDIA: inline PTX does not apply\n", vendor);
            continue;
        }
        cl_int e;
        cl_context ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &e);
        cl_program prog = clCreateProgramWithSource(ctx, 1, &src, NULL, &e);
        e = clBuildProgram(prog, 1, &dev, "", NULL, NULL);
        char log[8192] = "";
        clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
        if (e) {
            printf("ptx probe: mma.sync does NOT build (%d):\n%s\n", e, log);
            continue;
        }
        cl_kernel k = clCreateKernel(prog, "probe", &e);
        cl_mem out = clCreateBuffer(ctx, CL_MEM_WRITE_ONLY, 32 * sizeof(float), NULL, &e);
        cl_command_queue q = clCreateCommandQueue(ctx, dev, 0, &e);
        clSetKernelArg(k, 0, sizeof out, &out);
        size_t g = 32, l = 32;
        float r[32] = {0};
        e = clEnqueueNDRangeKernel(q, k, 1, NULL, &g, &l, 0, NULL, NULL);
        if (!e) e = clEnqueueReadBuffer(q, out, CL_TRUE, 0, sizeof r, r, 0, NULL, NULL);
        printf("ptx probe: mma.sync builds; run %s, out[0] = %g (want 8)\n", e ? "failed" : "ok", r[0]);
    }
    return 0;
}
