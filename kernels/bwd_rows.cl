/* Attention backward, CPU family (rows): two kernels, no atomics, no barriers.
 *
 * clattn_bwd_kv_rows: a work-item owns 16 keys of one KV head (one float16 lane per key) and
 * holds their K and V columns and their dK and dV accumulators as float16 per head dim. It
 * streams every query row of every query head of its KV head that can see one of its keys:
 * scores, probabilities (recomputed from lse), dP and dS for 16 keys at once as vector
 * FMAs (a q or d_o element broadcast against a column of 16 keys), then dV += P d_o and
 * dK += dS q. Each key's gradients are summed by exactly one work-item in a fixed order: the
 * result does not depend on threads or timing.
 *
 * clattn_bwd_q_rows: a work-item owns BM packed rows (query head, position) of one KV head, as
 * the forward does, and streams the keys 16 at a time from K and V transposed to f32 (kt, vt:
 * one vector load per head dim) to recompute P and dS, then dQ += dS K row by row.
 *
 * Parameters (-D): D, DV head dims; VW vector width (divides D and DV); BM rows per work-item
 * in the dQ kernel.
 * Switches (-D): DTYPE, SOFTCAP, ALIBI, MASK, SEQUSED, VARLEN (common.cl).
 *
 * NDRange: dK/dV (ceil(Nk / 16) padded to the group, Hkv, B); dQ (ceil(group * Nq / BM) padded
 * to the group, Hkv, B). Scores are in the log2 domain (q pre-scaled by scale * log2(e), lse
 * read in natural units and multiplied by log2(e)). Masked keys get P = dS = 0 by selection,
 * never by multiplication, so garbage in K/V a row never sees (an uninitialised cache past
 * seqused_k) cannot reach a gradient. */

#define DQV (D / VW)
#define DVV (DV / VW)

typedef float16 key16;

/* Query rows per step of the dK/dV kernel (see there). */
#ifndef RB
#define RB 4
#endif
#define KEYS (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)

/* The logits of 16 keys j0.. for row i (log2 units), with the formula's optional terms. */
inline key16 logits16(key16 s, int i, int j0, int off, float softcap_log2, float slope_log2,
                      __global const float *mrow, int nk)
{
#if SOFTCAP
    s = softcap_log2 * tanh(s / softcap_log2);
#endif
#if ALIBI
    s -= slope_log2 * fabs(convert_float16((int16)(i + off - j0) - KEYS));
#endif
#if MASK
    /* a row of the mask holds nk keys: lanes past it read the last one and are masked anyway */
    const int16 jn = clamp((int16)(j0) + KEYS, (int16)(0), (int16)(nk - 1));
    s += (key16)(mrow[jn.s0], mrow[jn.s1], mrow[jn.s2], mrow[jn.s3], mrow[jn.s4], mrow[jn.s5], mrow[jn.s6],
                 mrow[jn.s7], mrow[jn.s8], mrow[jn.s9], mrow[jn.sa], mrow[jn.sb], mrow[jn.sc], mrow[jn.sd],
                 mrow[jn.se], mrow[jn.sf]) * LOG2E;
#endif
    return s;
}

/* dS from P, dP and the row's D, times the softcap's derivative at the raw score. */
inline key16 dscore16(key16 p, key16 dp, float d_i, key16 raw, float softcap_log2)
{
    key16 ds = p * (dp - (key16)(d_i));
#if SOFTCAP
    const key16 th = tanh(raw / softcap_log2);
    ds *= (key16)(1.0f) - th * th;
#endif
    return ds;
}

__kernel void clattn_bwd_kv_rows(BWD_ARGS)
{
    const int g = (int)get_global_id(1), b = (int)get_global_id(2);
    const int j0 = (int)get_global_id(0) * 16;
    const seq_geom sg = seq_setup(b, 0, q_sb, 0, k_sb, 0, v_sb, 0, o_sb, q_ss, k_ss, v_ss, o_ss, nq, nk, top_left,
                                  seqused_k, cu_q, cu_k, total_q, total_k);
    if (j0 >= sg.nk_all) return;
    __global const T *kb = k + k_off + sg.k_base + g * k_sh;
    __global const T *vb = v + v_off + sg.v_base + g * v_sh;

    /* this work-item's 16 keys as columns: lanes past the sequence repeat its last key */
    key16 kt16[D], vt16[DV], dk16[D], dv16[DV];
    int jr[16];
    for (int jj = 0; jj < 16; jj++) jr[jj] = min(j0 + jj, sg.nk_all - 1);
    for (int c = 0; c < D; c++) {
        kt16[c] = (key16)(LOAD1(kb + jr[0] * k_ss + c), LOAD1(kb + jr[1] * k_ss + c), LOAD1(kb + jr[2] * k_ss + c),
                          LOAD1(kb + jr[3] * k_ss + c), LOAD1(kb + jr[4] * k_ss + c), LOAD1(kb + jr[5] * k_ss + c),
                          LOAD1(kb + jr[6] * k_ss + c), LOAD1(kb + jr[7] * k_ss + c), LOAD1(kb + jr[8] * k_ss + c),
                          LOAD1(kb + jr[9] * k_ss + c), LOAD1(kb + jr[10] * k_ss + c), LOAD1(kb + jr[11] * k_ss + c),
                          LOAD1(kb + jr[12] * k_ss + c), LOAD1(kb + jr[13] * k_ss + c),
                          LOAD1(kb + jr[14] * k_ss + c), LOAD1(kb + jr[15] * k_ss + c));
        dk16[c] = (key16)(0.0f);
    }
    for (int c = 0; c < DV; c++) {
        vt16[c] = (key16)(LOAD1(vb + jr[0] * v_ss + c), LOAD1(vb + jr[1] * v_ss + c), LOAD1(vb + jr[2] * v_ss + c),
                          LOAD1(vb + jr[3] * v_ss + c), LOAD1(vb + jr[4] * v_ss + c), LOAD1(vb + jr[5] * v_ss + c),
                          LOAD1(vb + jr[6] * v_ss + c), LOAD1(vb + jr[7] * v_ss + c), LOAD1(vb + jr[8] * v_ss + c),
                          LOAD1(vb + jr[9] * v_ss + c), LOAD1(vb + jr[10] * v_ss + c), LOAD1(vb + jr[11] * v_ss + c),
                          LOAD1(vb + jr[12] * v_ss + c), LOAD1(vb + jr[13] * v_ss + c),
                          LOAD1(vb + jr[14] * v_ss + c), LOAD1(vb + jr[15] * v_ss + c));
        dv16[c] = (key16)(0.0f);
    }

    /* rows that can see one of keys j0 .. j0+15: row i sees [row_lo, row_hi) */
    const int j1 = min(j0 + 16, sg.nk);
    int ibeg = 0, iend = sg.nq;
    if (wr >= 0) ibeg = max(ibeg, j0 - sg.off - wr);
    if (wl >= 0) iend = min(iend, j1 - 1 - sg.off + wl + 1);
    if (j1 <= j0) iend = ibeg; /* every key of the block is past seqused_k: zeros */
    const int16 jn = (int16)(j0) + KEYS;
    for (int h = g * group; h < (g + 1) * group; h++) {
        float slope = 0.0f;
#if ALIBI
        slope = alibi[h] * LOG2E;
#endif
        /* RB rows at a time: each column of the keys (kt16[c], ...) loaded once for RB rows, and
         * each dK/dV accumulator loaded and stored once for RB rows' FMAs */
        for (int i0 = ibeg; i0 < iend; i0 += RB) {
            __global const T *qr[RB], *dor[RB];
            float lse2[RB], d_i[RB];
            #pragma unroll
            for (int r = 0; r < RB; r++) {
                const int i = min(i0 + r, iend - 1); /* past the end: repeats the last row, masked below */
                const long id = row_id(b, h, i, hq, nq, total_q, &sg);
                lse2[r] = i0 + r < iend ? lse[lse_off + id] * LOG2E : -INFINITY;
                d_i[r] = dvec[dvec_off + id];
                qr[r] = q + q_off + sg.q_base + h * q_sh + (long)i * q_ss;
                dor[r] = dout + do_off + sg.o_base + h * o_sh + (long)i * o_ss;
            }
            key16 s[RB], dp[RB];
            #pragma unroll
            for (int r = 0; r < RB; r++) s[r] = dp[r] = (key16)(0.0f);
            #pragma unroll 8
            for (int c = 0; c < D; c++) {
                const key16 kc = kt16[c];
                #pragma unroll
                for (int r = 0; r < RB; r++) s[r] = fma((key16)(LOAD1(qr[r] + c) * scale_log2), kc, s[r]);
            }
            #pragma unroll 8
            for (int c = 0; c < DV; c++) {
                const key16 vc = vt16[c];
                #pragma unroll
                for (int r = 0; r < RB; r++) dp[r] = fma((key16)(LOAD1(dor[r] + c)), vc, dp[r]);
            }
            key16 p[RB], ds[RB];
            #pragma unroll
            for (int r = 0; r < RB; r++) {
                const int i = min(i0 + r, iend - 1);
                __global const float *mrow = mask;
#if MASK
                mrow = mask + b * m_sb + h * m_sh + (long)i * m_ss;
#endif
                const key16 raw = s[r];
                const key16 l = logits16(s[r], i, j0, sg.off, softcap_log2, slope, mrow, nk);
                /* a row that saw nothing (lse = -inf), or a repeated one, contributes nothing */
                const int16 ok = (jn >= (int16)(row_lo(i, sg.off, wl))) & (jn < (int16)(row_hi(i, sg.off, wr, sg.nk))) &
                                 (int16)(lse2[r] == -INFINITY ? 0 : -1);
                p[r] = select((key16)(0.0f), exp2(l - (key16)(lse2[r])), ok);
                ds[r] = select((key16)(0.0f), dscore16(p[r], dp[r], d_i[r], raw, softcap_log2), ok);
            }
            #pragma unroll 8
            for (int c = 0; c < DV; c++) {
                key16 acc = dv16[c];
                #pragma unroll
                for (int r = 0; r < RB; r++) acc = fma(p[r], (key16)(LOAD1(dor[r] + c)), acc);
                dv16[c] = acc;
            }
            #pragma unroll 8
            for (int c = 0; c < D; c++) {
                key16 acc = dk16[c];
                #pragma unroll
                for (int r = 0; r < RB; r++) acc = fma(ds[r], (key16)(LOAD1(qr[r] + c)), acc);
                dk16[c] = acc;
            }
        }
    }

    /* each key's row of dK and dV; keys past seqused_k (but in the sequence) get zeros */
    __global T *dkb = dk + dk_off + sg.k_base + g * k_sh;
    __global T *dvb = dv + dv_off + sg.v_base + g * v_sh;
    for (int jj = 0; jj < 16; jj++) {
        if (j0 + jj >= sg.nk_all) break;
        float lane[16];
        for (int c = 0; c < D; c++) {
            vstore16(dk16[c], 0, lane);
            STORE1(lane[jj] * scale, dkb + (long)(j0 + jj) * k_ss + c);
        }
        for (int c = 0; c < DV; c++) {
            vstore16(dv16[c], 0, lane);
            STORE1(lane[jj], dvb + (long)(j0 + jj) * v_ss + c);
        }
    }
}

__kernel void clattn_bwd_q_rows(BWD_ARGS)
{
    const int g = (int)get_global_id(1), b = (int)get_global_id(2);
    const int r0 = (int)get_global_id(0) * BM;
    const seq_geom sg = seq_setup(b, 0, q_sb, 0, k_sb, 0, v_sb, 0, o_sb, q_ss, k_ss, v_ss, o_ss, nq, nk, top_left,
                                  seqused_k, cu_q, cu_k, total_q, total_k);
    const int rows = group * sg.nq;
    if (r0 >= rows) return;
    __global const T *kb = k + k_off + sg.k_base + g * k_sh;
    /* this (batch, KV head)'s K and V transposed in blocks of 16 keys (convert.cl); packed
     * sequences start at their first token, which need not begin a block */
#if VARLEN
    const int tbase = sg.k_tok0;
    __global const float *ktb = kt + kt_off + (long)g * D * t_ld;
    __global const float *vtb = vt + vt_off + (long)g * DV * t_ld;
#else
    const int tbase = 0;
    __global const float *ktb = kt + kt_off + (long)(b * (hq / group) + g) * D * t_ld;
    __global const float *vtb = vt + vt_off + (long)(b * (hq / group) + g) * DV * t_ld;
#endif

    float qs[BM][D], dos[BM][DV], lse2[BM], dd[BM], slope[BM];
    VEC acc[BM][DQV];
    int lo[BM], hi[BM], hh[BM], ii[BM];
    __global const float *mrow[BM];
    int jbeg = sg.nk, jend = 0;
    #pragma unroll
    for (int r = 0; r < BM; r++) {
        const int p = min(r0 + r, rows - 1); /* tail rows repeat the last row, not stored */
        const int h = g * group + p / sg.nq, i = p % sg.nq;
        hh[r] = h;
        ii[r] = i;
        __global const T *qr = q + q_off + sg.q_base + h * q_sh + (long)i * q_ss;
        __global const T *dor = dout + do_off + sg.o_base + h * o_sh + (long)i * o_ss;
        for (int c = 0; c < D; c++) qs[r][c] = LOAD1(qr + c) * scale_log2;
        for (int c = 0; c < DV; c++) dos[r][c] = LOAD1(dor + c);
        #pragma unroll
        for (int t = 0; t < DQV; t++) acc[r][t] = (VEC)(0.0f);
        const long id = row_id(b, h, i, hq, nq, total_q, &sg);
        lse2[r] = lse[lse_off + id] * LOG2E;
        dd[r] = dvec[dvec_off + id];
        slope[r] = 0.0f;
#if ALIBI
        slope[r] = alibi[h] * LOG2E;
#endif
        mrow[r] = mask;
#if MASK
        mrow[r] = mask + b * m_sb + h * m_sh + (long)i * m_ss;
#endif
        lo[r] = row_lo(i, sg.off, wl);
        hi[r] = lse2[r] == -INFINITY ? lo[r] : row_hi(i, sg.off, wr, sg.nk); /* saw nothing: no gradient */
        if (hi[r] > lo[r]) {
            jbeg = min(jbeg, lo[r]);
            jend = max(jend, hi[r]);
        }
    }

    /* blocks of 16 keys aligned to the transposed layout's blocks: lanes before jbeg (or before
     * the sequence) are masked like any key a row does not see */
    for (int j0 = ((tbase + jbeg) & ~15) - tbase; j0 < jend; j0 += 16) {
        __global const float *kblk = ktb + (long)((tbase + j0) / 16) * D * 16;
        __global const float *vblk = vtb + (long)((tbase + j0) / 16) * DV * 16;
        key16 s[BM], dp[BM];
        #pragma unroll
        for (int r = 0; r < BM; r++) s[r] = dp[r] = (key16)(0.0f);
        for (int c = 0; c < D; c++) {
            const key16 kc = vload16(c, kblk);
            #pragma unroll
            for (int r = 0; r < BM; r++) s[r] = fma((key16)(qs[r][c]), kc, s[r]);
        }
        for (int c = 0; c < DV; c++) {
            const key16 vc = vload16(c, vblk);
            #pragma unroll
            for (int r = 0; r < BM; r++) dp[r] = fma((key16)(dos[r][c]), vc, dp[r]);
        }
        const int16 jn = (int16)(j0) + KEYS;
        float ds[BM][16];
        #pragma unroll
        for (int r = 0; r < BM; r++) {
            const key16 raw = s[r];
            const key16 l = logits16(s[r], ii[r], j0, sg.off, softcap_log2, slope[r], mrow[r], nk);
            const int16 ok = (jn >= (int16)(lo[r])) & (jn < (int16)(hi[r]));
            const key16 p = select((key16)(0.0f), exp2(l - (key16)(lse2[r])), ok);
            vstore16(select((key16)(0.0f), dscore16(p, dp[r], dd[r], raw, softcap_log2), ok), 0, ds[r]);
        }
        /* dQ += dS K, a key row at a time; a zero dS (a masked key) skips its row, so garbage
         * in a key no row sees cannot reach dQ */
        const int nb = min(16, jend - j0);
        for (int jj = max(0, jbeg - j0); jj < nb; jj++) {
            __global const T *kr = kb + (long)(j0 + jj) * k_ss;
            VEC kv[DQV];
            #pragma unroll
            for (int t = 0; t < DQV; t++) kv[t] = LOADV(t, kr);
            #pragma unroll
            for (int r = 0; r < BM; r++)
                if (ds[r][jj] != 0.0f)
                    #pragma unroll
                    for (int t = 0; t < DQV; t++) acc[r][t] = fma((VEC)(ds[r][jj]), kv[t], acc[r][t]);
        }
    }

    #pragma unroll
    for (int r = 0; r < BM; r++) {
        if (r0 + r >= rows) continue;
        __global T *dqr = dq + dq_off + sg.q_base + hh[r] * q_sh + (long)ii[r] * q_ss;
        #pragma unroll
        for (int t = 0; t < DQV; t++) STOREV(acc[r][t] * scale, t, dqr);
    }
}
