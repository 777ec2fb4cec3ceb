/* Fused attention forward, GPU family: a work-group of BM work-items owns BM query rows of
 * one (batch, head), one row per work-item. Key/value tiles of BN rows are loaded into local
 * memory cooperatively (consecutive work-items read consecutive elements: coalesced) and read
 * by every row of the group, so each K/V element is fetched from global memory once per BM
 * query rows instead of once per row. Each work-item keeps its query row, the online-softmax
 * state and the output accumulator in private memory.
 *
 * Tuning parameters (-D):
 *   D, DV  head dims of q/k and v/o        VW  vector width over D and DV (divides both)
 *   BM     rows per work-group (= work-group size)
 *   BN     keys per tile; (D + DV) * BN * 4 bytes of local memory
 *
 * NDRange: (ceil(Nq / BM) * BM, Hq, B), local (BM, 1, 1). Every work-item reaches every
 * barrier: rows past Nq repeat the last row and are not stored. Masked scores are -INFINITY
 * and a row is rescaled only once it has a finite maximum (no (-inf) - (-inf)). */

#define DQV (D / VW)
#define DVV (DV / VW)

__kernel __attribute__((reqd_work_group_size(BM, 1, 1)))
void clattn_fwd_tiles(__global const float *q, __global const float *k,
                      __global const float *v, __global float *o, __global float *lse,
                      ulong q_off, long q_sb, long q_sh, long q_ss,
                      ulong k_off, long k_sb, long k_sh, long k_ss,
                      ulong v_off, long v_sb, long v_sh, long v_ss,
                      ulong o_off, long o_sb, long o_sh, long o_ss,
                      ulong lse_off, int write_lse,
                      int nq, int nk, int hq, int group, float scale_log2,
                      int top_left, int wl, int wr)
{
    __local float ks[BN * D];
    __local float vs[BN * DV];

    const int lid = (int)get_local_id(0);
    const int i0 = (int)get_group_id(0) * BM;
    const int h = (int)get_global_id(1);
    const int b = (int)get_global_id(2);
    const int g = h / group;
    const int off = top_left ? 0 : nk - nq;
    const int i = min(i0 + lid, nq - 1);

    __global const float *kb = k + k_off + b * k_sb + g * k_sh;
    __global const float *vb = v + v_off + b * v_sb + g * v_sh;
    __global const float *qr = q + q_off + b * q_sb + h * q_sh + i * q_ss;

    VEC qv[DQV], acc[DVV];
    for (int t = 0; t < DQV; t++) qv[t] = VLOAD(t, qr) * scale_log2;
    for (int t = 0; t < DVV; t++) acc[t] = (VEC)(0.0f);
    float m = -INFINITY, l = 0.0f;
    const int lo = row_lo(i, off, wl), hi = row_hi(i, off, wr, nk);
    /* Keys any row of the group may see: rows are sorted, so first row's lo, last row's hi. */
    const int last = min(i0 + BM, nq) - 1;
    const int jbeg = row_lo(i0, off, wl), jend = row_hi(last, off, wr, nk);

    for (int j0 = jbeg; j0 < jend; j0 += BN) {
        const int nb = min(BN, jend - j0);
        barrier(CLK_LOCAL_MEM_FENCE); /* the previous tile is no longer read */
        for (int x = lid; x < BN * D; x += BM) {
            const int jj = x / D, c = x - jj * D;
            ks[x] = jj < nb ? kb[(j0 + jj) * k_ss + c] : 0.0f;
        }
        for (int x = lid; x < BN * DV; x += BM) {
            const int jj = x / DV, c = x - jj * DV;
            vs[x] = jj < nb ? vb[(j0 + jj) * v_ss + c] : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        float s[BN];
        float mx = m;
        for (int jj = 0; jj < BN; jj++) {
            VEC dot = qv[0] * VLOAD(0, ks + jj * D);
            for (int t = 1; t < DQV; t++) dot = fma(qv[t], VLOAD(t, ks + jj * D), dot);
            const int j = j0 + jj;
            s[jj] = (j >= lo && j < hi) ? hsum(dot) : -INFINITY;
            mx = fmax(mx, s[jj]);
        }
        if (mx == -INFINITY) continue; /* nothing allowed yet for this row (no barrier skipped:
                                          the loop's next iteration starts with one) */
        if (mx > m) { /* rescale only when the running max grows */
            const float alpha = exp2(m - mx);
            l *= alpha;
            for (int t = 0; t < DVV; t++) acc[t] *= alpha;
            m = mx;
        }
        for (int jj = 0; jj < BN; jj++) {
            const float p = exp2(s[jj] - mx);
            l += p;
            for (int t = 0; t < DVV; t++) acc[t] = fma((VEC)(p), VLOAD(t, vs + jj * DV), acc[t]);
        }
    }

    if (i0 + lid >= nq) return;
    __global float *orow = o + o_off + b * o_sb + h * o_sh + i * o_ss;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int t = 0; t < DVV; t++) VSTORE(acc[t] * inv, t, orow);
    if (write_lse) lse[lse_off + ((long)b * hq + h) * nq + i] = l > 0.0f ? (m + log2(l)) * LN2 : -INFINITY;
}
