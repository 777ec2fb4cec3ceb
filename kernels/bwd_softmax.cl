/* The unfused backward's elementwise step: for rows of S = scale * Q K^T and dP = d_o V^T
 * (both written by CLBlast), P = exp(logit - lse) with every term of the formula applied, and
 * dS = P (dP - D) (times the softcap's derivative), written over S and dP so that the GEMMs
 * dV = P^T d_o, dQ = scale dS K and dK = scale dS^T Q follow. Masked keys and padding rows of
 * packed sequences get P = dS = 0 by selection (never 0 x garbage).
 *
 * Parameters (-D): none.
 * Switches (-D): SEQUSED, VARLEN.
 *
 * NDRange: (rows, items); work-item (r, p) is query row r0 + r of (batch, head) pair bh0 + p,
 * and walks its row's keys. */

__kernel void clattn_bwd_softmax(__global float *s, __global float *dp, ulong dp_off, int rows, int nk, int bh0, int r0, int nq,
                                 int hq, __global const float *lse, ulong lse_off, __global const float *dvec,
                                 ulong dvec_off,
                                 float softcap, __global const float *alibi, int has_alibi,
                                 __global const float *mask, long m_sb, long m_sh, long m_ss, int has_mask,
                                 __global const int *seqused_k, __global const int *cu_q, __global const int *cu_k,
                                 int total_q, int total_k, int top_left, int wl, int wr)
{
    const int r = (int)get_global_id(0), p = (int)get_global_id(1);
    if (r >= rows) return;
    const int bh = bh0 + p, b = bh / hq, h = bh % hq, i = r0 + r;
    __global float *srow = s + ((long)p * rows + r) * nk, *dprow = dp + dp_off + ((long)p * rows + r) * nk;
    const unfused_row u = unfused_row_at(b, h, bh, i, nq, nk, top_left, seqused_k, cu_q, cu_k, total_q, total_k, 0);
    const float l = i < u.nq ? lse[lse_off + u.id] : -INFINITY;
    if (l == -INFINITY) { /* a padding row, or a row that saw nothing: no gradient */
        for (int j = 0; j < nk; j++) srow[j] = dprow[j] = 0.0f;
        return;
    }
    const float d_i = dvec[dvec_off + u.id];
    const int off = u.off;
    const int lo = row_lo(i, off, wl), hi = row_hi(i, off, wr, u.nk);
    const float slope = has_alibi ? alibi[h] : 0.0f;
    __global const float *mrow = mask + b * m_sb + h * m_sh + (long)i * m_ss;
    for (int j = 0; j < nk; j++) {
        float pj = 0.0f, dsj = 0.0f;
        if (j >= lo && j < hi) {
            const float raw = srow[j];
            pj = exp(unfused_logit(raw, i, j, off, softcap, has_alibi, slope, has_mask, mrow) - l);
            dsj = pj * (dprow[j] - d_i);
            if (softcap > 0.0f) {
                const float th = tanh(raw / softcap);
                dsj *= 1.0f - th * th;
            }
        }
        srow[j] = pj;
        dprow[j] = dsj;
    }
}
