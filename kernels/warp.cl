/* Warp-level matrix operations: NVIDIA's tensor-core MMA m16n8k16 (f16 or bf16 inputs, f32
 * accumulation), the shuffles a fragment-resident online softmax needs, and the conversion of
 * f32 scores into input fragments. One layer, two implementations, the same results:
 *
 *   WARP_PTX=1  inline PTX for NVIDIA sm_80 and later (mma.sync, shfl.sync, cvt.rn.*x2.f32);
 *   WARP_PTX=0  portable OpenCL C 1.2 that reproduces the PTX ISA's fragment layouts exactly
 *               (which lane holds which element), through local memory and barriers, so a
 *               kernel built on this layer runs on any device (PoCL in the test suite) and on a
 *               GPU only the instructions are new.
 *
 * A warp is 32 consecutive work-items of a 1-D work-group (as NVIDIA schedules them). Each
 * portable operation passes registers through its warp's scratch (WARP_SCRATCH uints of local
 * memory) between two work-group barriers, so every work-item of the work-group must make the
 * same calls in the same order: kernels call this layer only in work-group-uniform control flow.
 *
 * Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), with
 * g = lane / 4 and t = lane % 4; a 32-bit register holds two elements, the first in its low half:
 *   A (16x16, row)   a.x = A[g][2t, 2t+1]    a.y = A[g+8][2t, 2t+1]
 *                    a.z = A[g][2t+8, 2t+9]  a.w = A[g+8][2t+8, 2t+9]
 *   B (16x8, col)    b.x = B[2t, 2t+1][g]    b.y = B[2t+8, 2t+9][g]
 *   C, D (16x8 f32)  c.x = C[g][2t]  c.y = C[g][2t+1]  c.z = C[g+8][2t]  c.w = C[g+8][2t+1]
 * So the accumulator of S = Q.K^T over keys 16k .. 16k+15 (two n-blocks of 8) is, packed pairwise,
 * the A fragment of P for P.V over the same keys: no data moves between lanes.
 *
 * Reads (-D): DTYPE (1 f16, 2 bf16: the element type of A and B), WARP_PTX. */

#ifndef WARP_PTX
#define WARP_PTX 0
#endif
#if DTYPE != 1 && DTYPE != 2
#error "the warp layer needs DTYPE 1 (f16) or 2 (bf16)"
#endif

#define WARP_SCRATCH 192 /* uints per warp: the 6 registers of A and B of each of 32 lanes */
#define LANE ((int)(get_local_id(0) & 31))
#define WARP ((int)(get_local_id(0) >> 5))

#if WARP_PTX
#define UNROLL _Pragma("unroll")
#else
#define UNROLL /* the portable loops hold barriers: unrolling them only multiplies PoCL's regions */
#endif

/* One element's bits to f32: f16 by its fields (no cl_khr_fp16 needed), bf16 by a shift. */
inline float elem_f32(uint bits)
{
#if DTYPE == 1
    const uint s = (bits & 0x8000u) << 16, e = (bits >> 10) & 0x1fu, m = bits & 0x3ffu;
    if (e == 0x1fu) return as_float(s | 0x7f800000u | (m << 13)); /* inf, NaN */
    if (e == 0u) return as_float(s | as_uint((float)m * 0x1p-24f)); /* zero, subnormal */
    return as_float(s | ((e + 112u) << 23) | (m << 13));
#else
    return as_float((bits & 0xffffu) << 16);
#endif
}

/* Whether either element of a packed pair is inf or NaN (exponent all ones). */
inline bool pair_nonfinite(uint x)
{
#if DTYPE == 1
    return (x & 0x7c00u) == 0x7c00u || (x & 0x7c000000u) == 0x7c000000u;
#else
    return (x & 0x7f80u) == 0x7f80u || (x & 0x7f800000u) == 0x7f800000u;
#endif
}

/* A packed pair with its inf and NaN elements replaced by 0, and the pair's codes for them:
 * per element 1 for NaN, 128 for +inf, 16384 for -inf, 0 when finite (each exact in f16 and
 * bf16). An MMA of 0/1 indicators by these codes counts, per output element, the NaN, +inf and
 * -inf values its nonzero weights met: up to 127 of each, read back from the f32 sum's bits. */
#if DTYPE == 1
#define ELEM_ONE 0x3c00u
inline uint elem_clean(uint x) { return (x & 0x7c00u) == 0x7c00u ? 0u : x; }
inline uint elem_code(uint x)
{
    return (x & 0x7fffu) > 0x7c00u ? 0x3c00u : x == 0x7c00u ? 0x5800u : x == 0xfc00u ? 0x7400u : 0u;
}
#else
#define ELEM_ONE 0x3f80u
inline uint elem_clean(uint x) { return (x & 0x7f80u) == 0x7f80u ? 0u : x; }
inline uint elem_code(uint x)
{
    return (x & 0x7fffu) > 0x7f80u ? 0x3f80u : x == 0x7f80u ? 0x4300u : x == 0xff80u ? 0x4680u : 0u;
}
#endif
/* 1 for each element of an A fragment that is not zero (either sign), 0 for the others. */
inline uint elem_nonzero(uint x) { return (x & 0x7fffu) ? ELEM_ONE : 0u; }
inline uint4 pair_nonzero4(uint4 a)
{
    return (uint4)(elem_nonzero(a.x & 0xffffu) | (elem_nonzero(a.x >> 16) << 16),
                   elem_nonzero(a.y & 0xffffu) | (elem_nonzero(a.y >> 16) << 16),
                   elem_nonzero(a.z & 0xffffu) | (elem_nonzero(a.z >> 16) << 16),
                   elem_nonzero(a.w & 0xffffu) | (elem_nonzero(a.w >> 16) << 16));
}
inline uint pair_clean(uint x) { return elem_clean(x & 0xffffu) | (elem_clean(x >> 16) << 16); }
inline uint pair_code(uint x) { return elem_code(x & 0xffffu) | (elem_code(x >> 16) << 16); }

/* What the counts of pair_code say an output element becomes: NaN when it met a NaN or both
 * infinities, +-inf when it met one of them (x + inf: NaN stays NaN, -inf becomes NaN). */
inline float apply_special(float x, float count)
{
    const int c = (int)count, nan = c & 127, pinf = (c >> 7) & 127, ninf = c >> 14;
    if (nan || (pinf && ninf)) return NAN;
    return pinf ? x + INFINITY : ninf ? x - INFINITY : x;
}

/* Two f32 rounded to nearest even into one register of input elements, lo in the low half. */
inline uint pack_f32x2(float lo, float hi)
{
#if WARP_PTX
    uint r;
#if DTYPE == 1
    __asm__("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#else
    __asm__("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#endif
    return r;
#elif DTYPE == 1
    ushort a, b;
    vstore_half_rte(lo, 0, (__private half *)&a);
    vstore_half_rte(hi, 0, (__private half *)&b);
    return (uint)a | ((uint)b << 16);
#else
    return (uint)f32_to_bf16(lo) | ((uint)f32_to_bf16(hi) << 16);
#endif
}

/* d = a.b + c for one warp: a 16x16 A fragment, a 16x8 B fragment, a 16x8 f32 accumulator. */
inline float4 mma_16816(float4 c, uint4 a, uint2 b, __local uint *ws)
{
#if WARP_PTX
    float d0 = c.x, d1 = c.y, d2 = c.z, d3 = c.w;
#if DTYPE == 1
    __asm__ volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};"
                     : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
                     : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b.x), "r"(b.y));
#else
    __asm__ volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};"
                     : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
                     : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b.x), "r"(b.y));
#endif
    return (float4)(d0, d1, d2, d3);
#else
    const int lane = LANE, g = lane >> 2, t = lane & 3;
    __local uint *mine = ws + lane * 6;
    mine[0] = a.x;
    mine[1] = a.y;
    mine[2] = a.z;
    mine[3] = a.w;
    mine[4] = b.x;
    mine[5] = b.y;
    barrier(CLK_LOCAL_MEM_FENCE);
    float d[4] = {c.x, c.y, c.z, c.w};
    for (int e = 0; e < 4; e++) {
        const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
        float acc = d[e];
        for (int k = 0; k < 16; k++) {
            /* A[row][k] is in lane (row % 8) * 4 + (k % 8) / 2, register (row / 8) + 2 (k / 8);
               B[k][col] in lane col * 4 + (k % 8) / 2, register k / 8; element k % 2 of each */
            const uint ar = ws[((row & 7) * 4 + ((k & 7) >> 1)) * 6 + (row >> 3) + 2 * (k >> 3)];
            const uint br = ws[(col * 4 + ((k & 7) >> 1)) * 6 + 4 + (k >> 3)];
            const int sh = (k & 1) * 16;
            acc = fma(elem_f32(ar >> sh), elem_f32(br >> sh), acc); /* products exact in f32 */
        }
        d[e] = acc;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    return (float4)(d[0], d[1], d[2], d[3]);
#endif
}

#if WARP_PTX
inline float shfl_xor(float x, int mask)
{
    float r;
    __asm__ volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(r) : "f"(x), "r"(mask));
    return r;
}
#endif

/* The max (NaN-keeping, nan_max) and the sum of each of two rows over the four lanes of a quad
 * (g fixed, t = 0..3: the lanes that share a row of a C fragment); every lane gets the result. */
inline float2 quad_max2(float2 x, __local uint *ws)
{
#if WARP_PTX
    x.x = nan_max(x.x, shfl_xor(x.x, 1));
    x.y = nan_max(x.y, shfl_xor(x.y, 1));
    x.x = nan_max(x.x, shfl_xor(x.x, 2));
    x.y = nan_max(x.y, shfl_xor(x.y, 2));
    return x;
#else
    const int lane = LANE, q0 = lane & ~3;
    ws[2 * lane] = as_uint(x.x);
    ws[2 * lane + 1] = as_uint(x.y);
    barrier(CLK_LOCAL_MEM_FENCE);
    float2 r = (float2)(-INFINITY, -INFINITY);
    for (int u = 0; u < 4; u++) {
        r.x = nan_max(r.x, as_float(ws[2 * (q0 + u)]));
        r.y = nan_max(r.y, as_float(ws[2 * (q0 + u) + 1]));
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
#endif
}

inline float2 quad_sum2(float2 x, __local uint *ws)
{
#if WARP_PTX
    x.x += shfl_xor(x.x, 1);
    x.y += shfl_xor(x.y, 1);
    x.x += shfl_xor(x.x, 2);
    x.y += shfl_xor(x.y, 2);
    return x;
#else
    const int lane = LANE, q0 = lane & ~3;
    ws[2 * lane] = as_uint(x.x);
    ws[2 * lane + 1] = as_uint(x.y);
    barrier(CLK_LOCAL_MEM_FENCE);
    float2 r = (float2)(0.0f, 0.0f);
    for (int u = 0; u < 4; u++) {
        r.x += as_float(ws[2 * (q0 + u)]);
        r.y += as_float(ws[2 * (q0 + u) + 1]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
#endif
}
