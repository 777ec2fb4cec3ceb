/* Fused attention forward, CPU family: one work-item owns a register tile of BM query rows
 * of one (batch, head), streams the keys in blocks of BN with explicit VW-wide vectors and
 * no barriers, and keeps the online-softmax state (running max m, sum l, accumulator) in
 * private memory. Written for CPU devices (PoCL), where one scalar output per work-item ran
 * 20x slower than explicit vectors; it is correct on any device.
 *
 * Tuning parameters (-D):
 *   D   head dim of q and k        DV  head dim of v and o
 *   VW  vector width over D and DV (must divide both; 1, 2, 4, 8, 16)
 *   BM  query rows per work-item   BN  keys per block (one rescale per block)
 *
 * NDRange: (ceil(Nq / BM), Hq, B). Scores are kept in the log2 domain: q is pre-scaled by
 * scale * log2(e) so that exp2 serves. Masked scores are -INFINITY and a row's state is only
 * rescaled once it has a finite maximum, so an empty row never computes (-inf) - (-inf):
 * build without -cl-finite-math-only. */

#define DQV (D / VW)
#define DVV (DV / VW)

__kernel void clattn_fwd_rows(__global const float *q, __global const float *k,
                              __global const float *v, __global float *o, __global float *lse,
                              ulong q_off, long q_sb, long q_sh, long q_ss,
                              ulong k_off, long k_sb, long k_sh, long k_ss,
                              ulong v_off, long v_sb, long v_sh, long v_ss,
                              ulong o_off, long o_sb, long o_sh, long o_ss,
                              ulong lse_off, int write_lse,
                              int nq, int nk, int hq, int group, float scale_log2,
                              int top_left, int wl, int wr)
{
    const int i0 = (int)get_global_id(0) * BM;
    const int h = (int)get_global_id(1);
    const int b = (int)get_global_id(2);
    if (i0 >= nq) return;
    const int g = h / group;
    const int off = top_left ? 0 : nk - nq;

    __global const float *qb = q + q_off + b * q_sb + h * q_sh;
    __global const float *kb = k + k_off + b * k_sb + g * k_sh;
    __global const float *vb = v + v_off + b * v_sb + g * v_sh;

    VEC qv[BM][DQV];
    VEC acc[BM][DVV];
    float m[BM], l[BM];
    int lo[BM], hi[BM];
    for (int r = 0; r < BM; r++) {
        const int i = min(i0 + r, nq - 1); /* tail rows repeat the last row and are not stored */
        for (int t = 0; t < DQV; t++) qv[r][t] = VLOAD(t, qb + i * q_ss) * scale_log2;
        for (int t = 0; t < DVV; t++) acc[r][t] = (VEC)(0.0f);
        m[r] = -INFINITY;
        l[r] = 0.0f;
        lo[r] = row_lo(i, off, wl);
        hi[r] = row_hi(i, off, wr, nk);
    }
    /* Rows are sorted, so the keys any row of the tile may see are [lo[0], hi[BM-1]). */
    const int jbeg = lo[0], jend = hi[BM - 1];

    for (int j0 = jbeg; j0 < jend; j0 += BN) {
        float s[BM][BN];
        for (int jj = 0; jj < BN; jj++) {
            const int j = min(j0 + jj, jend - 1);
            __global const float *kr = kb + j * k_ss;
            VEC kv[DQV];
            for (int t = 0; t < DQV; t++) kv[t] = VLOAD(t, kr);
            for (int r = 0; r < BM; r++) {
                VEC dot = qv[r][0] * kv[0];
                for (int t = 1; t < DQV; t++) dot = fma(qv[r][t], kv[t], dot);
                const int jn = j0 + jj;
                s[r][jj] = (jn >= lo[r] && jn < hi[r]) ? hsum(dot) : -INFINITY;
            }
        }
        for (int r = 0; r < BM; r++) {
            float mx = m[r];
            for (int jj = 0; jj < BN; jj++) mx = fmax(mx, s[r][jj]);
            if (mx == -INFINITY) { /* nothing allowed yet for this row */
                for (int jj = 0; jj < BN; jj++) s[r][jj] = 0.0f;
                continue;
            }
            if (mx > m[r]) { /* rescale only when the running max grows */
                const float alpha = exp2(m[r] - mx);
                l[r] *= alpha;
                for (int t = 0; t < DVV; t++) acc[r][t] *= alpha;
                m[r] = mx;
            }
            for (int jj = 0; jj < BN; jj++) {
                s[r][jj] = exp2(s[r][jj] - mx);
                l[r] += s[r][jj];
            }
        }
        const int nb = min(BN, jend - j0);
        for (int jj = 0; jj < nb; jj++) {
            __global const float *vr = vb + (j0 + jj) * v_ss;
            VEC vv[DVV];
            for (int t = 0; t < DVV; t++) vv[t] = VLOAD(t, vr);
            for (int r = 0; r < BM; r++)
                for (int t = 0; t < DVV; t++) acc[r][t] = fma((VEC)(s[r][jj]), vv[t], acc[r][t]);
        }
    }

    __global float *ob = o + o_off + b * o_sb + h * o_sh;
    for (int r = 0; r < BM; r++) {
        const int i = i0 + r;
        if (i >= nq) break;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        for (int t = 0; t < DVV; t++) VSTORE(acc[r][t] * inv, t, ob + i * o_ss);
        if (write_lse)
            lse[lse_off + ((long)b * hq + h) * nq + i] =
                l[r] > 0.0f ? (m[r] + log2(l[r])) * LN2 : -INFINITY;
    }
}
