/* The paged KV cache's small kernels, run before the attention: the append (k_new, rotated,
 * and v_new written into the caches through the block table), q rotated into scratch, and for
 * the unfused path the caches gathered into dense f32 copies. Each is one pass over its data;
 * next to the attention's pass over the whole cache they are small (bench/NOTES.md measures
 * them).
 *
 * Rotary embedding: dims [0, rotary_dim) of a row at position pos, in pairs (2p, 2p+1)
 * interleaved or (p, p + rotary_dim/2) (GPT-NeoX); (a, b) becomes (a cos - b sin, b cos + a sin)
 * with cos, sin = rotary_cos/sin[pos][p], in f32, rounded once to the storage type.
 *
 * Device-side integers: seqused_k[b] is clamped to 0 .. seq_kv - seq_new, positions to the
 * rows of cos/sin, and a block id outside the cache drops the write (paged_row). Dims are
 * run-time arguments: these kernels are built once per storage type. Copies go through f32
 * (LOAD1/STORE1: half values cannot be moved as such without cl_khr_fp16); exact for every
 * finite value.
 *
 * Switches (-D): DTYPE (common.cl). */

/* Rotates the pairs of the row at src into dst (both of storage type T; dst may be src). */
inline void rotate_row(__global const T *src, __global T *dst, int rotary_dim, int interleaved,
                       __global const float *rcos, __global const float *rsin, int pos)
{
    const int npair = rotary_dim / 2;
    for (int p = 0; p < npair; p++) {
        const int ia = interleaved ? 2 * p : p, ib = interleaved ? 2 * p + 1 : p + npair;
        const float a = LOAD1(src + ia), b = LOAD1(src + ib);
        const float c = rcos[(long)pos * npair + p], s = rsin[(long)pos * npair + p];
        STORE1(a * c - b * s, dst + ia);
        STORE1(b * c + a * s, dst + ib);
    }
}

/* NDRange (seq_new, heads_kv, batch): token t of KV head g of sequence b goes to position
 * seqused_k[b] + t of its sequence's pages. */
__kernel void clattn_paged_append(__global T *kc, ulong kc_off, long kc_sh, long kc_ss,
                                  __global T *vc, ulong vc_off, long vc_sh, long vc_ss,
                                  __global const T *kn, ulong kn_off, long kn_sb, long kn_sh, long kn_ss,
                                  __global const T *vn, ulong vn_off, long vn_sb, long vn_sh, long vn_ss,
                                  int d, int dv, __global const int *seqused_k, __global const int *block_table,
                                  int page_size, int pages_per_seq, int num_pages, int seq_kv, int seq_new,
                                  __global const float *rcos, __global const float *rsin, int rotary_dim,
                                  int interleaved, int positions)
{
    const int t = (int)get_global_id(0), g = (int)get_global_id(1), b = (int)get_global_id(2);
    const int j = cached_keys(seqused_k, b, seq_kv, seq_new) + t;
    const long row = paged_row(block_table + (long)b * pages_per_seq, j, page_size, num_pages);
    if (row < 0) return; /* a page outside the cache: the token is dropped */
    __global const T *ks = kn + kn_off + b * kn_sb + g * kn_sh + t * kn_ss;
    __global const T *vs = vn + vn_off + b * vn_sb + g * vn_sh + t * vn_ss;
    __global T *kd = kc + kc_off + row * kc_ss + g * kc_sh;
    __global T *vd = vc + vc_off + row * vc_ss + g * vc_sh;
    for (int c = rotary_dim; c < d; c++) STORE1(LOAD1(ks + c), kd + c);
    for (int c = 0; c < dv; c++) STORE1(LOAD1(vs + c), vd + c);
    if (rotary_dim) rotate_row(ks, kd, rotary_dim, interleaved, rcos, rsin, min(j, positions - 1));
}

/* NDRange (seq_q, heads_q, batch): q rotated into qr, which has q's strides (from element
 * qr_off); row i of sequence b at position seqused_k[b] + i (per_row: causal or local) or
 * seqused_k[b]. */
__kernel void clattn_paged_rotate_q(__global const T *q, ulong q_off, long q_sb, long q_sh, long q_ss,
                                    __global T *qr, ulong qr_off, int d, __global const int *seqused_k,
                                    int seq_kv, int seq_new, __global const float *rcos,
                                    __global const float *rsin, int rotary_dim, int interleaved, int positions,
                                    int per_row)
{
    const int i = (int)get_global_id(0), h = (int)get_global_id(1), b = (int)get_global_id(2);
    const long at = b * q_sb + h * q_sh + i * q_ss;
    __global const T *src = q + q_off + at;
    __global T *dst = qr + qr_off + at;
    for (int c = rotary_dim; c < d; c++) STORE1(LOAD1(src + c), dst + c);
    const int pos = cached_keys(seqused_k, b, seq_kv, seq_new) + (per_row ? i : 0);
    rotate_row(src, dst, rotary_dim, interleaved, rcos, rsin, min(pos, positions - 1));
}

/* NDRange (seq_kv, heads_kv, batch): the unfused path's dense f32 copies (batch, heads_kv,
 * seq_kv, dim) of the caches, from element k_out/v_out of `work`; keys past the sequence's end
 * and on pages outside the cache are zeros (the softmax masks them). */
__kernel void clattn_paged_gather(__global const T *kc, ulong kc_off, long kc_sh, long kc_ss,
                                  __global const T *vc, ulong vc_off, long vc_sh, long vc_ss,
                                  __global float *work, ulong k_out, ulong v_out, int d, int dv, int heads_kv,
                                  __global const int *seqused_k, __global const int *block_table, int page_size,
                                  int pages_per_seq, int num_pages, int seq_kv, int seq_new)
{
    const int j = (int)get_global_id(0), g = (int)get_global_id(1), b = (int)get_global_id(2);
    const int nk = cached_keys(seqused_k, b, seq_kv, seq_new) + seq_new;
    const long row = j < nk ? paged_row(block_table + (long)b * pages_per_seq, j, page_size, num_pages) : -1L;
    const long item = ((long)b * heads_kv + g) * seq_kv + j;
    __global float *kd = work + k_out + item * d;
    __global float *vd = work + v_out + item * dv;
    __global const T *ks = kc + kc_off + max(row, 0L) * kc_ss + g * kc_sh;
    __global const T *vs = vc + vc_off + max(row, 0L) * vc_ss + g * vc_sh;
    for (int c = 0; c < d; c++) kd[c] = row >= 0 ? LOAD1(ks + c) : 0.0f;
    for (int c = 0; c < dv; c++) vd[c] = row >= 0 ? LOAD1(vs + c) : 0.0f;
}
