/* The unfused path's f32 working copies: widen a strided (or packed varlen) tensor of the
 * storage type into a dense, padded f32 (B, H, S, D) one for CLBlast, and narrow the f32
 * output back. Padding rows of packed sequences are zero (widen) and never written (narrow).
 * Switches (-D): DTYPE, VARLEN. NDRange: (D, S, B * H). */

/* Element offset of sequence b's token 0, and its length. */
inline long seq_base(int b, ulong off, long sb, long ss, int S, __global const int *cu, int *len)
{
#if VARLEN
    *len = cu[b + 1] - cu[b];
    return (long)off + (long)cu[b] * ss;
#else
    *len = S;
    return (long)off + b * sb;
#endif
}

__kernel void clattn_widen(__global const T *src, ulong off, long sb, long sh, long ss, int H, int S, int Dm,
                           __global const int *cu, __global float *dst, ulong dst_off)
{
    const int d = (int)get_global_id(0), s = (int)get_global_id(1), bh = (int)get_global_id(2);
    const int b = bh / H, h = bh % H;
    int len;
    const long base = seq_base(b, off, sb, ss, S, cu, &len);
    dst[dst_off + ((long)bh * S + s) * Dm + d] = s < len ? LOAD1(src + base + h * sh + s * ss + d) : 0.0f;
}

__kernel void clattn_narrow(__global const float *src, ulong src_off, __global T *dst, ulong off, long sb, long sh,
                            long ss, int H, int S, int Dm, __global const int *cu)
{
    const int d = (int)get_global_id(0), s = (int)get_global_id(1), bh = (int)get_global_id(2);
    const int b = bh / H, h = bh % H;
    int len;
    const long base = seq_base(b, off, sb, ss, S, cu, &len);
    if (s < len) STORE1(src[src_off + ((long)bh * S + s) * Dm + d], dst + base + h * sh + s * ss + d);
}
