/* The unfused path's f32 working copies: widen a strided (or packed varlen) tensor of the
 * storage type into a dense, padded f32 (B, H, S, D) one for CLBlast, and narrow the f32
 * output back. Padding rows of packed sequences are zero (widen) and never written (narrow).
 * Switches (-D): DTYPE, VARLEN.
 * NDRange: (D * S * B * H), one work-item per element (one
 * dimension: S and B * H may each exceed a GPU grid dimension's 65535 work-groups). */

/* Element offset of sequence b's token 0, and its length (offsets clamped: common.cl). */
inline long seq_base(int b, ulong off, long sb, long ss, int S, __global const int *cu, int total, int *len)
{
#if VARLEN
    const int2 r = seq_range(cu, b, total, S);
    *len = r.y;
    return (long)off + (long)r.x * ss;
#else
    *len = S;
    return (long)off + b * sb;
#endif
}

/* (element index) -> head dim, position, batch x head */
#define SPLIT_INDEX                                                                            \
    const ulong x = get_global_id(0);                                                          \
    const int d = (int)(x % (ulong)Dm), s = (int)(x / (ulong)Dm % (ulong)S), bh = (int)(x / ((ulong)Dm * S))

__kernel void clattn_widen(__global const T *src, ulong off, long sb, long sh, long ss, int H, int S, int Dm,
                           __global const int *cu, int total, __global float *dst, ulong dst_off)
{
    SPLIT_INDEX;
    const int b = bh / H, h = bh % H;
    int len;
    const long base = seq_base(b, off, sb, ss, S, cu, total, &len);
    dst[dst_off + ((long)bh * S + s) * Dm + d] = s < len ? LOAD1(src + base + h * sh + s * ss + d) : 0.0f;
}

__kernel void clattn_narrow(__global const float *src, ulong src_off, __global T *dst, ulong off, long sb, long sh,
                            long ss, int H, int S, int Dm, __global const int *cu, int total)
{
    SPLIT_INDEX;
    const int b = bh / H, h = bh % H;
    int len;
    const long base = seq_base(b, off, sb, ss, S, cu, total, &len);
    if (s < len) STORE1(src[src_off + ((long)bh * S + s) * Dm + d], dst + base + h * sh + s * ss + d);
}

/* The fused rows kernel's K, transposed to f32 once per call, so that 16 keys' values of one
 * head dim are one vector load (they were 16 gathered scalars). Each (batch, KV head), or each KV
 * head over all packed tokens (varlen), gets `ld` keys (a multiple of 16) in blocks of 16
 * aligned keys, each block D rows of 16: a block's columns are one contiguous run of 64 D bytes,
 * where rows of `ld` keys put each column on its own page (bench/NOTES.md change 17). Keys past
 * the end are zero. NDRange: (ld, D, B * Hkv), or (ld, D, Hkv) with VARLEN. */
__kernel void clattn_transpose_k(__global const T *k, ulong off, long sb, long sh, long ss, int Hkv, int Nk,
                                 __global float *kt, ulong kt_off, long ld)
{
    const int j = (int)get_global_id(0), c = (int)get_global_id(1), bg = (int)get_global_id(2);
#if VARLEN
    const int g = bg;
    const long src = (long)off + (long)j * ss + g * sh + c; /* Nk is total_k here */
#else
    const int b = bg / Hkv, g = bg % Hkv;
    const long src = (long)off + b * sb + g * sh + (long)j * ss + c;
#endif
    const long D = (long)get_global_size(1);
    kt[kt_off + (long)bg * D * ld + ((long)(j / 16) * D + c) * 16 + j % 16] = j < Nk ? LOAD1(k + src) : 0.0f;
}
