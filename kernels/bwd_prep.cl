/* What every backward path computes first and last: D_i = d_o_i . o_i per row, and the sink
 * gradients dsink_h = - sum_i D_i exp(sink_h - lse_i). Family-independent.
 * Parameters (-D): DV the row length of o.
 * Switches (-D): DTYPE, VARLEN. */

/* D per row, into dvec in lse's layout: (B, Hq, Nq), or (Hq, total_q) packed, where every
 * token gets its D (a token no sequence covers is never read). NDRange: (rows_total). */
__kernel void clattn_bwd_dot(__global const T *o, ulong o_off, __global const T *dout, ulong do_off, long o_sb,
                             long o_sh, long o_ss, int nq, int hq, int total_q, long rows_total,
                             __global float *dvec, ulong dvec_off)
{
    const long id = get_global_id(0);
    if (id >= rows_total) return;
#if VARLEN
    const int h = (int)(id / total_q), tok = (int)(id % total_q);
    const long e = (long)tok * o_ss + h * o_sh;
#else
    const int i = (int)(id % nq), h = (int)(id / nq % hq), b = (int)(id / ((long)nq * hq));
    const long e = b * o_sb + h * o_sh + (long)i * o_ss;
#endif
    float acc = 0.0f;
    for (int c = 0; c < DV; c++) acc = fma(LOAD1(o + o_off + e + c), LOAD1(dout + do_off + e + c), acc);
    dvec[dvec_off + id] = acc;
}

/* The sink gradients: one work-item per query head sums its rows in a fixed order, compensated
 * (Kahan), so the result is the same on every run and accurate over many rows. A row that saw
 * nothing (lse = -inf) adds nothing. NDRange: (heads_q). */
__kernel void clattn_bwd_dsinks(__global const float *lse, ulong lse_off, __global const float *dvec,
                                ulong dvec_off, __global const float *sinks, __global float *dsinks, int batch, int nq, int hq,
                                int total_q, __global const int *cu_q)
{
    const int h = (int)get_global_id(0);
    if (h >= hq) return;
    const float sink = sinks[h];
    float sum = 0.0f, carry = 0.0f;
    for (int b = 0; b < batch; b++) {
#if VARLEN
        const int2 r = seq_range(cu_q, b, total_q, nq);
        const long first = (long)h * total_q + r.x;
        const int n = r.y;
#else
        const long first = ((long)b * hq + h) * nq;
        const int n = nq;
#endif
        for (int i = 0; i < n; i++) {
            const float l = lse[lse_off + first + i];
            if (l == -INFINITY) continue;
            const float y = -dvec[dvec_off + first + i] * exp(sink - l) - carry;
            const float t = sum + y;
            carry = (t - sum) - y;
            sum = t;
        }
    }
    dsinks[h] = sum;
}
