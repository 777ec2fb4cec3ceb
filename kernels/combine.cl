/* Combine of split-KV partials (flash-decoding), the public merge, and the fold of one partial
 * into a running result (clattn_merge_fold: sequence parallelism). Partial results
 * (o_s, lse_s) over disjoint key ranges become
 *     lse = log(sum_s exp(lse_s) [+ exp(sink)]),   o = sum_s exp(lse_s - lse) * o_s.
 * A partial with lse_s = -inf (no key in its range) weighs nothing; a row with no key at all
 * gets o = 0 and lse = -inf (or the sink).
 *
 * Parameters (-D): DV the row length.
 * Switches (-D): DTYPE (the output storage), SINKS, VARLEN.
 * Partials are f32: o (nsplit, rows_total, DV), lse (nsplit, rows_total); row id as in lse.
 * With VARLEN, nq is the longest sequence and cu_q the packed offsets (clamped, common.cl).
 * NDRange: (rows_total). */

__kernel void clattn_combine(__global const float *po_buf, ulong po_off, __global const float *plse_buf, ulong plse_off,
                             int nsplit, long rows_total,
                             __global T *o, ulong o_off, long o_sb, long o_sh, long o_ss,
                             __global float *lse, ulong lse_off, int write_lse, int hq, int nq, int total_q,
                             __global const float *sinks, __global const int *cu_q, int batch)
{
    const long id = get_global_id(0);
    if (id >= rows_total) return;
    __global const float *po = po_buf + po_off, *plse = plse_buf + plse_off;
    /* where row `id` goes in o */
    long dst;
#if VARLEN
    const int h = (int)(id / total_q), tok = (int)(id % total_q);
    /* the sequence of token tok: the last whose (clamped) start is at or before it; a token
     * that no clamped range covers was never computed, and is left untouched */
    int lo = 0, hi = batch - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (clamp(cu_q[mid], 0, total_q) <= tok) lo = mid;
        else hi = mid - 1;
    }
    const int2 r = seq_range(cu_q, lo, total_q, nq);
    if (tok < r.x || tok >= r.x + r.y) return;
    dst = (long)o_off + tok * o_ss + h * o_sh;
#else
    const int i = (int)(id % nq), h = (int)(id / nq % hq), b = (int)(id / ((long)nq * hq));
    dst = (long)o_off + b * o_sb + h * o_sh + i * o_ss;
#endif
    float m = -INFINITY;
#if SINKS
    const float sink = sinks[h];
    m = sink;
#endif
    for (int s = 0; s < nsplit; s++) m = nan_max(m, plse[s * rows_total + id]);
    if (m == -INFINITY) {
        for (int c = 0; c < DV; c++) STORE1(0.0f, o + dst + c);
        if (write_lse) lse[lse_off + id] = -INFINITY;
        return;
    }
    float den = 0.0f;
#if SINKS
    den = exp(sink - m);
#endif
    for (int s = 0; s < nsplit; s++) den += exp(plse[s * rows_total + id] - m);
    const float inv = 1.0f / den;
    /* 16 dims at a time, each split's weight computed once per chunk: an exp per (dim, split)
     * made the combine of a 32-split decode a tenth of the call on a CPU (bench/NOTES.md
     * change 20). Each dim still sums its splits in order. */
    for (int c0 = 0; c0 < DV; c0 += 16) {
        const int n = min(16, DV - c0);
        float acc[16];
        vstore16((float16)(0.0f), 0, acc);
        for (int s = 0; s < nsplit; s++) {
            const float w = exp(plse[s * rows_total + id] - m);
            if (w == 0.0f) continue; /* NaN weights count */
            __global const float *src = po + (s * rows_total + id) * DV + c0;
            if (n == 16) vstore16(vload16(0, acc) + w * vload16(0, src), 0, acc);
            else for (int c = 0; c < n; c++) acc[c] += w * src[c];
        }
        for (int c = 0; c < n; c++) STORE1(acc[c] * inv, o + dst + c0 + c);
    }
    if (write_lse) lse[lse_off + id] = m + log(den);
}

/* One partial result, as a forward call wrote it (o in the storage type, any strides; lse dense
 * (batch, hq, nq)), folded into a running f32 one in place: acc_o (batch, hq, acc_nq, DV) and
 * acc_lse (batch, hq, acc_nq), the partial's row i being the accumulator's row acc_i0 + i.
 * Each work-item reads and writes only its own row. A side with lse = -inf weighs nothing
 * (whatever its o holds: the accumulator starts as lse = -inf over any o); a NaN lse makes the
 * row NaN, as in the combine.
 * NDRange: (batch * hq * nq). */
__kernel void clattn_fold(__global const T *o, ulong o_off, long o_sb, long o_sh, long o_ss, __global const float *lse,
                          ulong lse_off, int hq, int nq, int batch, __global float *acc_o, __global float *acc_lse,
                          int acc_nq, int acc_i0)
{
    const long id = get_global_id(0);
    if (id >= (long)batch * hq * nq) return;
    const int i = (int)(id % nq), h = (int)(id / nq % hq), b = (int)(id / ((long)nq * hq));
    const long src = (long)o_off + b * o_sb + h * o_sh + i * o_ss;
    const long dst = ((long)b * hq + h) * acc_nq + acc_i0 + i;
    const float l1 = acc_lse[dst], l2 = lse[lse_off + id];
    const float m = nan_max(l1, l2);
    if (m == -INFINITY) return; /* neither side has a key: the accumulator stays empty */
    const float w1 = exp(l1 - m), w2 = exp(l2 - m), inv = 1.0f / (w1 + w2);
    __global float *a = acc_o + dst * DV;
    for (int c = 0; c < DV; c++) {
        float x = 0.0f;
        if (w1 != 0.0f) x += w1 * a[c];               /* an empty side's o is never read: */
        if (w2 != 0.0f) x += w2 * LOAD1(o + src + c); /* it may hold anything */
        a[c] = x * inv;
    }
    acc_lse[dst] = m + log(w1 + w2);
}
