/* The warp layer (kernels/warp.cl) against the PTX ISA: its portable emulation must give what
 * NVIDIA's mma.sync.m16n8k16, shfl.sync and cvt.rn give, lane by lane. The fragments are laid out
 * here on the host from the ISA's tables ("Matrix Fragments for mma.m16n8k16 with floating point
 * type"), written independently of the kernels, so a layout the kernel and the emulation got
 * wrong together still fails. On an NVIDIA sm_80+ device the same test runs the inline PTX too. */
#include "harness.h"
#include "program.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

TestSuite(warp, .fini = leak_check);

/* Each lane of each warp: its A (uint4), B (uint2) and C (float4) registers in, D out; the
 * quad reductions of two values; and pack_f32x2 of two floats. */
static const char *test_kernel =
    "__kernel void warp_test(__global const uint4 *a, __global const uint2 *b, __global const float4 *c,\n"
    "                        __global float4 *d, __global const float2 *x, __global float4 *red,\n"
    "                        __global const float2 *f, __global uint *packed) {\n"
    "  __local uint ws[4 * WARP_SCRATCH];\n"
    "  const int id = (int)get_global_id(0);\n"
    "  __local uint *mine = ws + WARP * WARP_SCRATCH;\n"
    "  d[id] = mma_16816(c[id], a[id], b[id], mine);\n"
    "  const float2 mx = quad_max2(x[id], mine), sm = quad_sum2(x[id], mine);\n"
    "  red[id] = (float4)(mx.x, mx.y, sm.x, sm.y);\n"
    "  packed[id] = pack_f32x2(f[id].x, f[id].y);\n"
    "}\n";

typedef struct warp_run {
    uint16_t A[4][16][16], B[4][16][8]; /* per warp, element bits */
    float C[4][16][8];
    cl_uint a[128][4], b[128][2];
    float c[128][4], d[128][4], x[128][2], red[128][4], f[128][2];
    cl_uint packed[128];
} warp_run;

static float elem(int dtype, uint16_t h) { return dtype == 1 ? clattn_f16_to_f32(h) : clattn_bf16_to_f32(h); }
static uint16_t bits(int dtype, float x) { return dtype == 1 ? clattn_f32_to_f16(x) : clattn_f32_to_bf16(x); }

/* The ISA's fragment of each lane, from the matrices. */
static void lay_out(warp_run *w, int warps)
{
    for (int wp = 0; wp < warps; wp++)
        for (int lane = 0; lane < 32; lane++) {
            const int g = lane / 4, t = lane % 4, id = wp * 32 + lane;
            /* a_i, i = 0..7: row g for a0, a1, a4, a5 and g + 8 for the others; col 2t + (i & 1),
               + 8 for i >= 4; register i / 2, low half first */
            for (int i = 0; i < 8; i++) {
                const int row = g + ((i == 2 || i == 3 || i == 6 || i == 7) ? 8 : 0), col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
                w->a[id][i / 2] |= (cl_uint)w->A[wp][row][col] << (16 * (i & 1));
            }
            /* b_i, i = 0..3: row (k) 2t + (i & 1), + 8 for i >= 2; col (n) g */
            for (int i = 0; i < 4; i++) {
                const int row = 2 * t + (i & 1) + (i >= 2 ? 8 : 0);
                w->b[id][i / 2] |= (cl_uint)w->B[wp][row][g] << (16 * (i & 1));
            }
            /* c_i: row g for c0, c1, g + 8 for c2, c3; col 2t + (i & 1) */
            for (int i = 0; i < 4; i++) w->c[id][i] = w->C[wp][g + 8 * (i >> 1)][2 * t + (i & 1)];
        }
}

static void run_layer(clattn_context *ctx, cl_device_id dev, int dtype, int ptx, int warps, warp_run *w)
{
    (void)ctx;
    const clattn_embedded_source *common = clattn__find_source("common"), *layer = clattn__find_source("warp");
    cr_assert(common && layer, "the embedded sources lack common or warp");
    const char *parts[3] = {(const char *)common->data, (const char *)layer->data, test_kernel};
    const size_t lens[3] = {common->size, layer->size, strlen(test_kernel)};
    cl_int e;
    cl_context cc = clattn_context_cl_context(ctx);
    cl_program prog = clCreateProgramWithSource(cc, 3, parts, lens, &e);
    cr_assert_eq(e, CL_SUCCESS);
    char opts[96];
    snprintf(opts, sizeof opts, "-cl-std=CL1.2 -D DTYPE=%d -D WARP_PTX=%d", dtype, ptx);
    e = clBuildProgram(prog, 1, &dev, opts, NULL, NULL);
    if (e) {
        char log[4096] = "";
        clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
        cr_assert_fail("building the warp layer (%s) failed (%d): %s", opts, e, log);
    }
    cl_kernel k = clCreateKernel(prog, "warp_test", &e);
    cr_assert_eq(e, CL_SUCCESS);
    const size_t n = (size_t)warps * 32;
    struct {
        void *host;
        size_t size;
        bool out;
    } arg[8] = {{w->a, 16, 0}, {w->b, 8, 0}, {w->c, 16, 0}, {w->d, 16, 1},
                {w->x, 8, 0},  {w->red, 16, 1}, {w->f, 8, 0}, {w->packed, 4, 1}};
    cl_mem mem[8];
    for (int i = 0; i < 8; i++) {
        mem[i] = clCreateBuffer(cc, CL_MEM_READ_WRITE | (arg[i].out ? 0 : CL_MEM_COPY_HOST_PTR), arg[i].size * n,
                                arg[i].out ? NULL : arg[i].host, &e);
        cr_assert_eq(e, CL_SUCCESS);
        cr_assert_eq(clSetKernelArg(k, (cl_uint)i, sizeof mem[i], &mem[i]), CL_SUCCESS);
    }
    cl_command_queue q = clCreateCommandQueue(cc, dev, 0, &e);
    cr_assert_eq(e, CL_SUCCESS);
    cr_assert_eq(clEnqueueNDRangeKernel(q, k, 1, NULL, &n, &n, 0, NULL, NULL), CL_SUCCESS);
    for (int i = 0; i < 8; i++)
        if (arg[i].out)
            cr_assert_eq(clEnqueueReadBuffer(q, mem[i], CL_TRUE, 0, arg[i].size * n, arg[i].host, 0, NULL, NULL),
                         CL_SUCCESS);
    for (int i = 0; i < 8; i++) clReleaseMemObject(mem[i]);
    clReleaseCommandQueue(q);
    clReleaseKernel(k);
    clReleaseProgram(prog);
}

static void check_layer(int dtype, int ptx)
{
    clattn_context *ctx = test_context();
    cl_device_id dev = clattn_context_device(ctx);
    const int warps = 4;
    warp_run *w = calloc(1, sizeof *w);
    uint64_t rng = 0x3a9f + (uint64_t)dtype;
    for (int wp = 0; wp < warps; wp++) {
        float tmp[16 * 16 + 16 * 8 + 16 * 8];
        clattn_rng_fill(tmp, sizeof tmp / sizeof tmp[0], &rng, 2.0f);
        for (int i = 0; i < 256; i++) w->A[wp][i / 16][i % 16] = bits(dtype, tmp[i]);
        for (int i = 0; i < 128; i++) w->B[wp][i / 8][i % 8] = bits(dtype, tmp[256 + i]);
        for (int i = 0; i < 128; i++) w->C[wp][i / 8][i % 8] = tmp[384 + i];
    }
    lay_out(w, warps);
    clattn_rng_fill(&w->x[0][0], 2 * 32 * warps, &rng, 10.0f);
    w->x[5][0] = NAN;       /* the quad of lanes 4..7 gets NaN as its max and its sum, row 0 */
    w->x[9][1] = -INFINITY; /* no effect on the max of lanes 8..11 */
    clattn_rng_fill(&w->f[0][0], 2 * 32 * warps, &rng, 3.0f);
    w->f[3][0] = 1.0f + 1.0f / 2048;        /* a tie for f16: rounds to even (1.0) */
    w->f[3][1] = 1.0f + 3.0f / 2048;        /* and up to 1 + 2^-9 */
    w->f[7][0] = 1.0f + 1.0f / 256;         /* a tie for bf16 */
    w->f[7][1] = 70000.0f;                  /* past f16's range: inf */
    run_layer(ctx, dev, dtype, ptx, warps, w);

    const char *name = dtype == 1 ? "f16" : "bf16";
    for (int wp = 0; wp < warps; wp++)
        for (int lane = 0; lane < 32; lane++) {
            const int g = lane / 4, t = lane % 4, id = wp * 32 + lane;
            for (int i = 0; i < 4; i++) {
                const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
                double want = w->C[wp][row][col];
                for (int kk = 0; kk < 16; kk++)
                    want += (double)elem(dtype, w->A[wp][row][kk]) * elem(dtype, w->B[wp][kk][col]);
                cr_expect(fabs(w->d[id][i] - want) <= 1e-5 * (1 + fabs(want)),
                          "%s warp %d lane %d c%d: D[%d][%d] = %.7g, want %.7g", name, wp, lane, i, row, col,
                          w->d[id][i], want);
            }
            const int q0 = id & ~3;
            for (int r = 0; r < 2; r++) {
                float mx = -INFINITY, sum = 0;
                bool nan = false;
                for (int u = 0; u < 4; u++) {
                    const float v = w->x[q0 + u][r];
                    nan |= isnan(v);
                    if (v > mx) mx = v;
                    sum += v;
                }
                if (nan) {
                    cr_expect(isnan(w->red[id][r]) && isnan(w->red[id][2 + r]), "%s lane %d: a NaN in its quad", name, id);
                } else {
                    cr_expect_eq(w->red[id][r], mx, "%s lane %d row %d: quad max %g, want %g", name, id, r, w->red[id][r], mx);
                    cr_expect(w->red[id][2 + r] == sum || fabsf(w->red[id][2 + r] - sum) <= 1e-5f * (1 + fabsf(sum)),
                              "%s lane %d row %d: quad sum %g, want %g", name, id, r, w->red[id][2 + r], sum);
                }
            }
            const cl_uint want = (cl_uint)bits(dtype, w->f[id][0]) | ((cl_uint)bits(dtype, w->f[id][1]) << 16);
            cr_expect_eq(w->packed[id], want, "%s lane %d: pack_f32x2(%.9g, %.9g) = %08x, want %08x", name, id,
                         w->f[id][0], w->f[id][1], w->packed[id], want);
        }
    free(w);
    clattn_context_destroy(ctx);
}

Test(warp, portable_f16_is_the_isa) { check_layer(1, 0); }
Test(warp, portable_bf16_is_the_isa) { check_layer(2, 0); }

/* The inline PTX itself, where NVIDIA's tensor cores are (sm_80 and later). */
static void check_ptx(int dtype)
{
    clattn_context *ctx = test_context();
    cl_device_id dev = clattn_context_device(ctx);
    char vendor[128] = "";
    clGetDeviceInfo(dev, CL_DEVICE_VENDOR, sizeof vendor - 1, vendor, NULL);
    cl_uint major = 0;
    const bool nv = strstr(vendor, "NVIDIA") && !clGetDeviceInfo(dev, 0x4000, sizeof major, &major, NULL) && major >= 8;
    clattn_context_destroy(ctx);
    if (!nv) cr_skip_test("not an NVIDIA sm_80+ device (%s): the inline PTX is checked on one", vendor);
    check_layer(dtype, 1);
}

Test(warp, ptx_f16_is_the_isa) { check_ptx(1); }
Test(warp, ptx_bf16_is_the_isa) { check_ptx(2); }
