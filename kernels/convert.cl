/* The unfused path's f32 working copies: widen a strided (or packed varlen) tensor of the
 * storage type into a dense, padded f32 (B, H, S, D) one for CLBlast, and narrow the f32
 * output back. Padding rows of packed sequences are zero (widen) and never written (narrow).
 * Switches (-D): DTYPE, VARLEN. NDRange: (D, S, B * H). */

__kernel void clattn_widen(__global const T *src, ulong off, long sb, long sh, long ss, int H, int S, int Dm,
                           __global const int *cu, __global float *dst, ulong dst_off)
{
    const int d = (int)get_global_id(0), s = (int)get_global_id(1), bh = (int)get_global_id(2);
    const int b = bh / H, h = bh % H;
#if VARLEN
    const long base = (long)off + (long)cu[b] * ss;
    const int len = cu[b + 1] - cu[b];
#else
    const long base = (long)off + b * sb;
    const int len = S;
#endif
    dst[dst_off + ((long)bh * S + s) * Dm + d] = s < len ? LOAD1(src + base + h * sh + s * ss + d) : 0.0f;
}

__kernel void clattn_narrow(__global const float *src, ulong src_off, __global T *dst, ulong off, long sb, long sh,
                            long ss, int H, int S, int Dm, __global const int *cu)
{
    const int d = (int)get_global_id(0), s = (int)get_global_id(1), bh = (int)get_global_id(2);
    const int b = bh / H, h = bh % H;
#if VARLEN
    const long base = (long)off + (long)cu[b] * ss;
    const int len = cu[b + 1] - cu[b];
#else
    const long base = (long)off + b * sb;
    const int len = S;
#endif
    if (s < len) STORE1(src[src_off + ((long)bh * S + s) * Dm + d], dst + base + h * sh + s * ss + d);
}
