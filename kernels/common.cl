/* Prelude shared by every clattn kernel: vector helpers chosen by the VW define.
 * Portable OpenCL C 1.2; no extension is needed. */

#ifndef VW
#define VW 4
#endif

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

#if VW == 1
#define VEC float
#define VLOAD(i, p) ((p)[i])
#define VSTORE(x, i, p) ((p)[i] = (x))
#else
#define VEC CAT(float, VW)
#define VLOAD(i, p) CAT(vload, VW)(i, p)
#define VSTORE(x, i, p) CAT(vstore, VW)(x, i, p)
#endif

/* Sum of the lanes of a VEC. */
inline float hsum(VEC a)
{
#if VW == 1
    return a;
#elif VW == 2
    return a.s0 + a.s1;
#elif VW == 4
    float2 b = a.lo + a.hi;
    return b.s0 + b.s1;
#elif VW == 8
    float4 c = a.lo + a.hi;
    float2 b = c.lo + c.hi;
    return b.s0 + b.s1;
#elif VW == 16
    float8 d = a.lo + a.hi;
    float4 c = d.lo + d.hi;
    float2 b = c.lo + c.hi;
    return b.s0 + b.s1;
#else
#error "VW must be 1, 2, 4, 8 or 16"
#endif
}

/* Allowed keys of row i are [lo, hi): causal and sliding windows as one window whose sides
 * are -1 when unbounded, aligned by `off` (Nk - Nq bottom-right, 0 top-left). */
inline int row_lo(int i, int off, int wl) { return wl < 0 ? 0 : max(0, i + off - wl); }
inline int row_hi(int i, int off, int wr, int nk) { return wr < 0 ? nk : min(nk, i + off + wr + 1); }

#define LN2 0.693147180559945309f
