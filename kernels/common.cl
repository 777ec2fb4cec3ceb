/* Prelude shared by every clattn kernel. Portable OpenCL C 1.2: no extension is needed
 * (vload_half/vstore_half work on half pointers without cl_khr_fp16).
 *
 * Parameters and switches (-D), each 0 unless given (VW: 4):
 *   VW       vector width over the head dims (1, 2, 4, 8, 16)
 *   DTYPE    storage of q, k, v, o: 0 f32, 1 f16, 2 bf16 (arithmetic is always f32)
 *   SOFTCAP, ALIBI, MASK, SINKS, SEQUSED, VARLEN   the formula's optional terms
 *   PAGED    k and v are caches of pages read through a block table (paged_row)
 *   SPLIT    write partial (o, lse) per key split to scratch for the combine kernel
 * Each file's header names the switches it reads ("Switches (-D): ..."), and the host passes
 * it exactly those (host/kernel.c): a switch a file ignores would only build its program twice.
 *
 * Rows: the fused kernels work on rows packed over the query heads of one KV head: packed row
 * p of KV head g is query head h = g*group + p / nq_b and position i = p % nq_b, so K and V are
 * read once for all the query heads that share them (GQA/MQA). */

#ifndef VW
#define VW 4
#endif
#ifndef DTYPE
#define DTYPE 0
#endif
#ifndef PAGED
#define PAGED 0
#endif

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

#if VW == 1
#define VEC float
#define VEC_U uint
#define VEC_US ushort
#else
#define VEC CAT(float, VW)
#define VEC_U CAT(uint, VW)
#define VEC_US CAT(ushort, VW)
#endif

/* Storage type T, and vector/scalar loads and stores that convert to and from float. */
#if DTYPE == 0
typedef float T;
#if VW == 1
#define LOADV(i, p) ((p)[i])
#define STOREV(x, i, p) ((p)[i] = (x))
#else
#define LOADV(i, p) CAT(vload, VW)(i, p)
#define STOREV(x, i, p) CAT(vstore, VW)(x, i, p)
#endif
#define LOAD1(p) (*(p))
#define STORE1(x, p) (*(p) = (x))
#elif DTYPE == 1
typedef half T;
#if VW == 1
#define LOADV(i, p) vload_half(i, p)
#define STOREV(x, i, p) vstore_half_rte(x, i, p)
#else
#define LOADV(i, p) CAT(vload_half, VW)(i, p)
#define STOREV(x, i, p) CAT(CAT(vstore_half, VW), _rte)(x, i, p)
#endif
#define LOAD1(p) vload_half(0, p)
#define STORE1(x, p) vstore_half_rte(x, 0, p)
#elif DTYPE == 2
typedef ushort T;
/* bf16 is the high half of an f32: widen by a shift; narrow rounding to nearest even. */
#if VW == 1
#define LOADV(i, p) as_float((uint)(p)[i] << 16)
#define STOREV(x, i, p) ((p)[i] = f32_to_bf16(x))
#else
#define LOADV(i, p) CAT(as_float, VW)(CAT(convert_uint, VW)(CAT(vload, VW)(i, p)) << 16)
#define STOREV(x, i, p) CAT(vstore, VW)(CAT(f32_to_bf16_, VW)(x), i, p)
#endif
#define LOAD1(p) as_float((uint)(*(p)) << 16)
#define STORE1(x, p) (*(p) = f32_to_bf16(x))
#endif

inline ushort f32_to_bf16(float x)
{
    uint u = as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (ushort)(u >> 16);
}
#if VW > 1
inline VEC_US CAT(f32_to_bf16_, VW)(VEC x)
{
    VEC_U u = CAT(as_uint, VW)(x);
    VEC_U r = (u + (VEC_U)(0x7fffu) + ((u >> 16) & (VEC_U)(1u))) >> 16;
    VEC_U nan = (u >> 16) | (VEC_U)(0x40u);
    return CAT(convert_ushort, VW)(select(r, nan, (u & (VEC_U)(0x7fffffffu)) > (VEC_U)(0x7f800000u)));
}
#endif

/* Float vector store (the split partials are f32 whatever T is). */
#if VW == 1
#define VSTOREF(x, i, p) ((p)[i] = (x))
#else
#define VSTOREF(x, i, p) CAT(vstore, VW)(x, i, p)
#endif

/* Float vector load from local (or any f32) memory. */
#if VW == 1
#define vload_f(i, p) ((p)[i])
#else
#define vload_f(i, p) CAT(vload, VW)(i, p)
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

/* max that keeps a NaN once it has seen one (fmax drops NaN): a NaN score must make its row
 * NaN, as in the reference and in IEEE arithmetic, never vanish. */
inline float nan_max(float a, float b) { return (isnan(b) || b > a) ? b : a; }

/* The end of a row: 1/l and lse from the online state (log2 units), 0 and -inf for an empty
 * row, NaN when the row met a NaN. */
inline float row_inv(float l) { return (l > 0.0f || isnan(l)) ? 1.0f / l : 0.0f; }
inline float row_lse(float m, float l) { return l > 0.0f || isnan(l) ? (m + log2(l)) * LN2 : -INFINITY; }
#define LOG2E 1.442695040888963407f

/* The arguments every fused kernel takes, in one place (the host sets them in this order). */
#define FWD_ARGS                                                                              \
    __global const T *q, __global const T *k, __global const T *v, __global void *o_any,     \
    __global float *lse, ulong q_off, long q_sb, long q_sh, long q_ss, ulong k_off, long k_sb, \
    long k_sh, long k_ss, ulong v_off, long v_sb, long v_sh, long v_ss, ulong o_off, long o_sb, \
    long o_sh, long o_ss, ulong lse_off, int write_lse, int nq, int nk, int hq, int group,    \
    float scale_log2, int top_left, int wl, int wr, float softcap_log2,                      \
    __global const float *alibi, __global const float *mask, long m_sb, long m_sh, long m_ss, \
    __global const float *sinks, __global const int *seqused_k, __global const int *cu_q,    \
    __global const int *cu_k, int total_q, int total_k, int nsplit, int split_len,           \
    long rows_total,                                                                         \
    __global const float *kt, long kt_ld, __global const int *block_table, int page_size,   \
    int pages_per_seq, int num_pages, int seq_new

/* seq_setup for batch b from FWD_ARGS, the same in every forward kernel */
#define FWD_SEQ_SETUP(b)                                                                                      \
    seq_setup(b, q_off, q_sb, k_off, k_sb, v_off, v_sb, o_off, o_sb, q_ss, k_ss, v_ss, o_ss, nq, nk, top_left, \
              seqused_k, cu_q, cu_k, total_q, total_k, seq_new)

/* The arguments of the backward kernels (dK/dV and dQ of every family), in one place. d_o is
 * laid out as o (its strides, offset do_off); dq, dk, dv as q, k, v. dvec holds D_i = d_o_i . o_i
 * per row, in lse's layout. */
#define BWD_ARGS                                                                              \
    __global const T *q, __global const T *k, __global const T *v, __global const T *dout,   \
    __global T *dq, __global T *dk, __global T *dv, __global const float *lse,               \
    __global const float *dvec, ulong dvec_off, ulong q_off, long q_sb, long q_sh, long q_ss, \
    ulong k_off,                                                                              \
    long k_sb, long k_sh, long k_ss, ulong v_off, long v_sb, long v_sh, long v_ss,           \
    ulong do_off, long o_sb, long o_sh, long o_ss, ulong dq_off, ulong dk_off, ulong dv_off,  \
    ulong lse_off, int nq, int nk, int hq, int group, float scale_log2, float scale,         \
    int top_left, int wl, int wr, float softcap_log2, __global const float *alibi,          \
    __global const float *mask, long m_sb, long m_sh, long m_ss,                             \
    __global const int *seqused_k, __global const int *cu_q, __global const int *cu_k,      \
    int total_q, int total_k

/* A packed sequence's tokens from device-side offsets, which are input like any other: start
 * clamped to [0, total], end to [start, total], and at most `longest` tokens (the plan's
 * seq_q or seq_kv, which bound the mask and the launch). So no value of cu[] can make a kernel
 * read or write outside its buffers; tokens no clamped range covers are left untouched.
 * Returns (first token, length). */
inline int2 seq_range(__global const int *cu, int b, int total, int longest)
{
    const int s = clamp(cu[b], 0, total);
    const int e = clamp(cu[b + 1], s, total);
    return (int2)(s, min(e - s, longest));
}

/* A paged cache: the keys sequence b holds before an append of nnew, seqused_k[b] clamped to
 * what its table row holds before it (nk, the plan's seq_kv, bounds the row's reach). */
inline int cached_keys(__global const int *seqused_k, int b, int nk, int nnew)
{
    return clamp(seqused_k[b], 0, nk - nnew);
}

/* Per-(batch) geometry: where the sequence starts and how long it is. With VARLEN the batch
 * stride is unused: sequence b starts at token cu[b] of the packed tensors. Key lengths
 * (seqused_k) are clamped to the sequence's keys. */
typedef struct seq_geom {
    long q_base, k_base, v_base, o_base; /* element offsets of token 0, head 0 */
    int nq, nk, off, q_tok0, k_tok0;     /* lengths, alignment offset, first packed q and k token */
    int nk_all;                          /* the sequence's keys before seqused_k (their gradients) */
} seq_geom;

inline seq_geom seq_setup(int b, ulong q_off, long q_sb, ulong k_off, long k_sb, ulong v_off, long v_sb,
                          ulong o_off, long o_sb, long q_ss, long k_ss, long v_ss, long o_ss, int nq,
                          int nk, int top_left, __global const int *seqused_k, __global const int *cu_q,
                          __global const int *cu_k, int total_q, int total_k, int nnew)
{
    seq_geom s;
#if VARLEN
#if PAGED /* keys come from the cache, not from packed tokens */
    const int2 rq = seq_range(cu_q, b, total_q, nq), rk = (int2)(0, nk);
#else
    const int2 rq = seq_range(cu_q, b, total_q, nq), rk = seq_range(cu_k, b, total_k, nk);
#endif
    s.nq = rq.y;
    s.nk = rk.y;
    s.q_tok0 = rq.x;
    s.k_tok0 = rk.x;
    s.q_base = (long)q_off + rq.x * q_ss;
    s.o_base = (long)o_off + rq.x * o_ss;
    s.k_base = (long)k_off + rk.x * k_ss;
    s.v_base = (long)v_off + rk.x * v_ss;
#else
    s.nq = nq;
    s.nk = nk;
    s.q_tok0 = 0;
    s.k_tok0 = 0;
    s.q_base = (long)q_off + b * q_sb;
    s.o_base = (long)o_off + b * o_sb;
    s.k_base = (long)k_off + b * k_sb;
    s.v_base = (long)v_off + b * v_sb;
#endif
#if PAGED /* the caches have no batch stride (paged_row finds each key); seqused_k[b] counts the
             keys cached before the append, clamped to what the table row holds before it */
    s.k_base = (long)k_off;
    s.v_base = (long)v_off;
    s.nk = cached_keys(seqused_k, b, nk, nnew) + nnew;
    s.nk_all = s.nk;
#else
    s.nk_all = s.nk;
#if SEQUSED
    s.nk = clamp(seqused_k[b], 0, s.nk);
#endif
#endif
    s.off = top_left ? 0 : s.nk - s.nq;
    return s;
}

/* The cache row of key j of a sequence whose block table row is `table`: page * page_size +
 * j % page_size, or -1 when the block id is outside 0 .. num_pages - 1: that key is masked and
 * its page never read. j < the table row's reach (nk <= pages_per_seq * page_size). */
inline long paged_row(__global const int *table, int j, int ps, int npages)
{
    const int page = table[j / ps];
    return (page >= 0 && page < npages) ? (long)page * ps + j % ps : -1L;
}

/* A fused kernel's block along NDRange dimension 0: its first packed row and its key split
 * (with SPLIT, the nsplit groups of one block of rows are its splits; else split 0). */
inline int2 block_of_group(int bm, int nsplit)
{
    const int grp = (int)get_group_id(0);
#if SPLIT
    return (int2)(grp / nsplit * bm, grp % nsplit);
#else
    (void)nsplit;
    return (int2)(grp * bm, 0);
#endif
}

/* The keys [x, y) a block of packed rows r0 .. r0 + bm - 1 (of `rows`) may see: from its first
 * position's lower bound to its last's upper bound (every position's when the block spans two
 * query heads: row_lo and row_hi grow with the position), within the split's keys when
 * split_len > 0. */
inline int2 block_keys(int r0, int bm, int rows, const seq_geom *sg, int wl, int wr, int split, int split_len)
{
    const int p1 = min(r0 + bm, rows) - 1;
    const bool one_head = r0 / sg->nq == p1 / sg->nq;
    const int imin = one_head ? r0 % sg->nq : 0, imax = one_head ? p1 % sg->nq : sg->nq - 1;
    int2 j = (int2)(row_lo(imin, sg->off, wl), row_hi(imax, sg->off, wr, sg->nk));
    if (split_len > 0) j = (int2)(max(j.x, split * split_len), min(j.y, (split + 1) * split_len));
    return j;
}

/* The row's index in lse (and in the split scratch): (B, Hq, Nq), or (Hq, total_q) packed. */
inline long row_id(int b, int h, int i, int hq, int nq, int total_q, const seq_geom *s)
{
#if VARLEN
    return (long)h * total_q + s->q_tok0 + i;
#else
    return ((long)b * hq + h) * nq + i;
#endif
}

/* A row of the unfused paths' elementwise kernels: query row i of (batch b, head h), item bh of
 * the (batch, head) pairs. Its sequence's query and key counts (packed offsets clamped,
 * seqused_k applied), the causal offset and its index in lse. */
typedef struct unfused_row {
    int nq, nk, off;
    long id;
} unfused_row;

inline unfused_row unfused_row_at(int b, int h, int bh, int i, int nq, int nk, int top_left,
                                  __global const int *seqused_k, __global const int *cu_q, __global const int *cu_k,
                                  int total_q, int total_k, int nnew)
{
    unfused_row u;
#if VARLEN /* rows past a clamped sequence are padding; a paged cache's keys are not packed */
    const int2 rq = seq_range(cu_q, b, total_q, nq), rk = PAGED ? (int2)(0, nk) : seq_range(cu_k, b, total_k, nk);
    u.nq = rq.y;
    u.nk = rk.y;
    u.id = (long)h * total_q + rq.x + i;
#else
    u.nq = nq;
    u.nk = nk;
    u.id = (long)bh * nq + i;
#endif
#if PAGED /* the gathered keys: the cached ones and the nnew appended after them */
    u.nk = cached_keys(seqused_k, b, nk, nnew) + nnew;
#elif SEQUSED
    u.nk = clamp(seqused_k[b], 0, u.nk);
#endif
    u.off = top_left ? 0 : u.nk - u.nq;
    return u;
}

/* The unfused kernels' logit in natural units (the scale is in S already), the optional terms
 * switched at run time. */
inline float unfused_logit(float x, int i, int j, int off, float softcap, int has_alibi, float slope, int has_mask,
                           __global const float *mrow)
{
    if (softcap > 0.0f) x = softcap * tanh(x / softcap);
    if (has_alibi) x -= slope * fabs((float)(i + off - j));
    if (has_mask) x += mrow[j];
    return x;
}

/* A score in log2 units (q was pre-scaled by scale*log2(e)) with the optional terms of the
 * formula applied, converted to log2 units as well. */
inline float logit(float x, int i, int j, int off, float softcap_log2, float slope_log2,
                   __global const float *mrow)
{
#if SOFTCAP
    x = softcap_log2 * tanh(x / softcap_log2);
#endif
#if ALIBI
    x -= slope_log2 * fabs((float)(i + off - j));
#endif
#if MASK
    x += mrow[j] * LOG2E;
#endif
    return x;
}
