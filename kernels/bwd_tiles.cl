/* Attention backward, GPU family (tiles): two kernels, no atomics.
 *
 * clattn_bwd_kv_tiles: a work-group owns BN keys of one KV head, one work-item per key holding
 * its K and V rows and its dK and dV accumulators; tiles of BM query rows (q, d_o, lse, D) are
 * loaded cooperatively into local memory and read by every key of the group, for every query
 * head of the KV head. Each key's gradients are summed by one work-item in a fixed order.
 *
 * clattn_bwd_q_tiles: a work-group owns BM packed rows (query head, position) of one KV head,
 * one work-item per row holding q, d_o and its dQ accumulator; tiles of BN keys (K and V) are
 * loaded into local memory and read by every row, as the forward's tiles kernel does.
 *
 * Parameters (-D): D, DV head dims; VW vector width (divides D and DV); BM rows and BN keys per
 * tile (the dK/dV work-group is BN work-items, the dQ work-group BM).
 * Switches (-D): DTYPE, SOFTCAP, ALIBI, MASK, SEQUSED, VARLEN (common.cl).
 *
 * NDRange: dK/dV (ceil(Nk / BN) * BN, Hkv, B), local (BN); dQ (ceil(group * Nq / BM) * BM,
 * Hkv, B), local (BM). Every work-item reaches every barrier: keys or rows past the end repeat
 * the last one and are not stored. Masked keys get P = dS = 0 by selection, never by
 * multiplication. */

#define DQV (D / VW)
#define DVV (DV / VW)

/* The logit of key j for row i (log2 units) with the formula's optional terms. */
inline float logit_b(float s, int i, int j, int off, float softcap_log2, float slope_log2, __global const float *mrow)
{
#if SOFTCAP
    s = softcap_log2 * tanh(s / softcap_log2);
#endif
#if ALIBI
    s -= slope_log2 * fabs((float)(i + off - j));
#endif
#if MASK
    s += mrow[j] * LOG2E;
#endif
    return s;
}

inline float dscore(float p, float dp, float d_i, float raw, float softcap_log2)
{
    float ds = p * (dp - d_i);
#if SOFTCAP
    const float th = tanh(raw / softcap_log2);
    ds *= 1.0f - th * th;
#endif
    return ds;
}

__kernel __attribute__((reqd_work_group_size(BN, 1, 1)))
void clattn_bwd_kv_tiles(BWD_ARGS)
{
    __local float qs[BM * D];
    __local float dos[BM * DV];
    __local float ls[BM], ds_[BM];

    const int lid = (int)get_local_id(0);
    const int g = (int)get_global_id(1), b = (int)get_global_id(2);
    const int j0 = (int)get_group_id(0) * BN;
    const seq_geom sg = seq_setup(b, 0, q_sb, 0, k_sb, 0, v_sb, 0, o_sb, q_ss, k_ss, v_ss, o_ss, nq, nk, top_left,
                                  seqused_k, cu_q, cu_k, total_q, total_k, 0);
    if (j0 >= sg.nk_all) return; /* uniform over the work-group */
    const int j = min(j0 + lid, sg.nk_all - 1);
    __global const T *kr = k + k_off + sg.k_base + g * k_sh + (long)j * k_ss;
    __global const T *vr = v + v_off + sg.v_base + g * v_sh + (long)j * v_ss;
    VEC kv[DQV], vv[DVV], dkv[DQV], dvv[DVV];
    for (int t = 0; t < DQV; t++) {
        kv[t] = LOADV(t, kr);
        dkv[t] = (VEC)(0.0f);
    }
    for (int t = 0; t < DVV; t++) {
        vv[t] = LOADV(t, vr);
        dvv[t] = (VEC)(0.0f);
    }
    /* rows that can see one of the group's keys */
    const int j1 = min(j0 + BN, sg.nk);
    int ibeg = 0, iend = sg.nq;
    if (wr >= 0) ibeg = max(ibeg, j0 - sg.off - wr);
    if (wl >= 0) iend = min(iend, j1 - sg.off + wl);
    if (j1 <= j0) iend = ibeg;
    for (int h = g * group; h < (g + 1) * group; h++) {
        float slope = 0.0f;
#if ALIBI
        slope = alibi[h] * LOG2E;
#endif
        for (int i0 = ibeg; i0 < iend; i0 += BM) {
            const int nb = min(BM, iend - i0);
            barrier(CLK_LOCAL_MEM_FENCE); /* the previous tile is no longer read */
            for (int x = lid; x < BM * D; x += BN) {
                const int r = x / D, c = x - r * D;
                qs[x] = r < nb ? LOAD1(q + q_off + sg.q_base + h * q_sh + (long)(i0 + r) * q_ss + c) * scale_log2 : 0.0f;
            }
            for (int x = lid; x < BM * DV; x += BN) {
                const int r = x / DV, c = x - r * DV;
                dos[x] = r < nb ? LOAD1(dout + do_off + sg.o_base + h * o_sh + (long)(i0 + r) * o_ss + c) : 0.0f;
            }
            for (int r = lid; r < BM; r += BN) {
                const long id = row_id(b, h, i0 + r, hq, nq, total_q, &sg);
                ls[r] = r < nb ? lse[lse_off + id] * LOG2E : -INFINITY;
                ds_[r] = r < nb ? dvec[dvec_off + id] : 0.0f;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            for (int r = 0; r < nb; r++) {
                const int i = i0 + r;
                if (ls[r] == -INFINITY || j >= row_hi(i, sg.off, wr, sg.nk) || j < row_lo(i, sg.off, wl)) continue;
                __global const float *mrow = mask;
#if MASK
                mrow = mask + b * m_sb + h * m_sh + (long)i * m_ss;
#endif
                VEC sd = (VEC)(0.0f), pd = (VEC)(0.0f);
                for (int t = 0; t < DQV; t++) sd = fma(vload_f(t, qs + r * D), kv[t], sd);
                for (int t = 0; t < DVV; t++) pd = fma(vload_f(t, dos + r * DV), vv[t], pd);
                const float raw = hsum(sd);
                const float p = exp2(logit_b(raw, i, j, sg.off, softcap_log2, slope, mrow) - ls[r]);
                const float ds = dscore(p, hsum(pd), ds_[r], raw, softcap_log2);
                for (int t = 0; t < DVV; t++) dvv[t] = fma((VEC)(p), vload_f(t, dos + r * DV), dvv[t]);
                for (int t = 0; t < DQV; t++) dkv[t] = fma((VEC)(ds), vload_f(t, qs + r * D), dkv[t]);
            }
        }
    }
    if (j0 + lid >= sg.nk_all) return;
    /* q was pre-scaled by scale * log2(e): dK = scale sum dS q = (sum dS q') ln 2 */
    __global T *dkr = dk + dk_off + sg.k_base + g * k_sh + (long)j * k_ss;
    __global T *dvr = dv + dv_off + sg.v_base + g * v_sh + (long)j * v_ss;
    for (int t = 0; t < DQV; t++) STOREV(dkv[t] * LN2, t, dkr);
    for (int t = 0; t < DVV; t++) STOREV(dvv[t], t, dvr);
}

__kernel __attribute__((reqd_work_group_size(BM, 1, 1)))
void clattn_bwd_q_tiles(BWD_ARGS)
{
    __local float ks[BN * D];
    __local float vs[BN * DV];

    const int lid = (int)get_local_id(0);
    const int g = (int)get_global_id(1), b = (int)get_global_id(2);
    const int r0 = (int)get_group_id(0) * BM;
    const seq_geom sg = seq_setup(b, 0, q_sb, 0, k_sb, 0, v_sb, 0, o_sb, q_ss, k_ss, v_ss, o_ss, nq, nk, top_left,
                                  seqused_k, cu_q, cu_k, total_q, total_k, 0);
    const int rows = group * sg.nq;
    if (r0 >= rows) return; /* uniform over the work-group */
    const int p = min(r0 + lid, rows - 1);
    const int h = g * group + p / sg.nq, i = p % sg.nq;
    __global const T *qr = q + q_off + sg.q_base + h * q_sh + (long)i * q_ss;
    __global const T *dor = dout + do_off + sg.o_base + h * o_sh + (long)i * o_ss;
    __global const T *kb = k + k_off + sg.k_base + g * k_sh;
    __global const T *vb = v + v_off + sg.v_base + g * v_sh;
    VEC qv[DQV], dov[DVV], acc[DQV];
    for (int t = 0; t < DQV; t++) {
        qv[t] = LOADV(t, qr) * scale_log2;
        acc[t] = (VEC)(0.0f);
    }
    for (int t = 0; t < DVV; t++) dov[t] = LOADV(t, dor);
    const long id = row_id(b, h, i, hq, nq, total_q, &sg);
    const float l2 = lse[lse_off + id] * LOG2E, d_i = dvec[dvec_off + id];
    float slope = 0.0f;
#if ALIBI
    slope = alibi[h] * LOG2E;
#endif
    __global const float *mrow = mask;
#if MASK
    mrow = mask + b * m_sb + h * m_sh + (long)i * m_ss;
#endif
    const int lo = row_lo(i, sg.off, wl), hi = l2 == -INFINITY ? lo : row_hi(i, sg.off, wr, sg.nk);
    /* keys any row of the group may see (the positions it covers, first to last) */
    const int p1 = min(r0 + BM, rows) - 1;
    const bool one_head = r0 / sg.nq == p1 / sg.nq;
    const int imin = one_head ? r0 % sg.nq : 0, imax = one_head ? p1 % sg.nq : sg.nq - 1;
    const int jbeg = row_lo(imin, sg.off, wl), jend = row_hi(imax, sg.off, wr, sg.nk);
    for (int j0 = jbeg; j0 < jend; j0 += BN) {
        const int nb = min(BN, jend - j0);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int x = lid; x < BN * D; x += BM) {
            const int jj = x / D, c = x - jj * D;
            ks[x] = jj < nb ? LOAD1(kb + (long)(j0 + jj) * k_ss + c) : 0.0f;
        }
        for (int x = lid; x < BN * DV; x += BM) {
            const int jj = x / DV, c = x - jj * DV;
            vs[x] = jj < nb ? LOAD1(vb + (long)(j0 + jj) * v_ss + c) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int jj = 0; jj < nb; jj++) {
            const int j = j0 + jj;
            if (j < lo || j >= hi) continue; /* masked: no contribution, whatever K and V hold */
            VEC sd = qv[0] * vload_f(0, ks + jj * D), pd = dov[0] * vload_f(0, vs + jj * DV);
            for (int t = 1; t < DQV; t++) sd = fma(qv[t], vload_f(t, ks + jj * D), sd);
            for (int t = 1; t < DVV; t++) pd = fma(dov[t], vload_f(t, vs + jj * DV), pd);
            const float raw = hsum(sd);
            const float pj = exp2(logit_b(raw, i, j, sg.off, softcap_log2, slope, mrow) - l2);
            const float ds = dscore(pj, hsum(pd), d_i, raw, softcap_log2);
            for (int t = 0; t < DQV; t++) acc[t] = fma((VEC)(ds), vload_f(t, ks + jj * D), acc[t]);
        }
    }
    if (r0 + lid >= rows) return;
    __global T *dqr = dq + dq_off + sg.q_base + h * q_sh + (long)i * q_ss;
    for (int t = 0; t < DQV; t++) STOREV(acc[t] * scale, t, dqr);
}
