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
 * clattn_bwd_q_rows: the mirror image. A work-item owns 16 packed rows (query head, position) of
 * one KV head, one lane per row, and holds their q and d_o columns and their dQ accumulators as
 * float16 per head dim. It streams the keys its rows see, RB at a time: a K or V element
 * broadcast against a column of 16 rows gives scores and dP for 16 rows at once, then dQ += dS
 * K. Each row's dQ is summed by one work-item in key order.
 *
 * Both kernels load each of their own columns once per RB streamed items, which keeps the FMAs
 * fed from registers and L1 (the streamed rows are small and shared by the work-group).
 *
 * Parameters (-D): D, DV head dims. VW, BM, BN are passed as to every kernel and not used here.
 * Switches (-D): DTYPE, SOFTCAP, ALIBI, MASK, SEQUSED, VARLEN (common.cl).
 *
 * NDRange: dK/dV (ceil(Nk / 16) padded to the group, Hkv, B); dQ (ceil(group * Nq / 16) padded
 * to the group, Hkv, B). Scores are in the log2 domain (q pre-scaled by scale * log2(e), lse
 * read in natural units and multiplied by log2(e)). Keys a row does not see get P = dS = 0 by
 * selection, never by multiplication, and their K rows do not reach its dQ, so garbage in K/V a
 * row never sees (the causal future, an uninitialised cache past seqused_k) cannot reach a
 * gradient. */

typedef float16 key16;

/* Streamed rows (dK/dV) or keys (dQ) per step. */
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
inline key16 dscore16(key16 p, key16 dp, key16 d_i, key16 raw, float softcap_log2)
{
    key16 ds = p * (dp - d_i);
#if SOFTCAP
    const key16 th = tanh(raw / softcap_log2);
    ds *= (key16)(1.0f) - th * th;
#endif
    return ds;
}

/* 16 loads of element c from rows base + off[0..15] as one vector (the lanes of a row block) */
#define GATHER16(base, off, c)                                                                    \
    (key16)(LOAD1((base) + (off)[0] + (c)), LOAD1((base) + (off)[1] + (c)), LOAD1((base) + (off)[2] + (c)), \
            LOAD1((base) + (off)[3] + (c)), LOAD1((base) + (off)[4] + (c)), LOAD1((base) + (off)[5] + (c)), \
            LOAD1((base) + (off)[6] + (c)), LOAD1((base) + (off)[7] + (c)), LOAD1((base) + (off)[8] + (c)), \
            LOAD1((base) + (off)[9] + (c)), LOAD1((base) + (off)[10] + (c)), LOAD1((base) + (off)[11] + (c)), \
            LOAD1((base) + (off)[12] + (c)), LOAD1((base) + (off)[13] + (c)), LOAD1((base) + (off)[14] + (c)), \
            LOAD1((base) + (off)[15] + (c)))

__kernel void clattn_bwd_kv_rows(BWD_ARGS)
{
    const int g = (int)get_global_id(1), b = (int)get_global_id(2);
    const int j0 = (int)get_global_id(0) * 16;
    const seq_geom sg = seq_setup(b, 0, q_sb, 0, k_sb, 0, v_sb, 0, o_sb, q_ss, k_ss, v_ss, o_ss, nq, nk, top_left,
                                  seqused_k, cu_q, cu_k, total_q, total_k, 0);
    if (j0 >= sg.nk_all) return;
    __global const T *kb = k + k_off + sg.k_base + g * k_sh;
    __global const T *vb = v + v_off + sg.v_base + g * v_sh;

    /* this work-item's 16 keys as columns: lanes past the sequence repeat its last key */
    key16 kt16[D], vt16[DV], dk16[D], dv16[DV];
    long ko[16], vo[16];
    for (int jj = 0; jj < 16; jj++) {
        const long j = min(j0 + jj, sg.nk_all - 1);
        ko[jj] = j * k_ss;
        vo[jj] = j * v_ss;
    }
    for (int c = 0; c < D; c++) {
        kt16[c] = GATHER16(kb, ko, c);
        dk16[c] = (key16)(0.0f);
    }
    for (int c = 0; c < DV; c++) {
        vt16[c] = GATHER16(vb, vo, c);
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
                ds[r] = select((key16)(0.0f), dscore16(p[r], dp[r], (key16)(d_i[r]), raw, softcap_log2), ok);
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
    const int keys = min(16, sg.nk_all - j0);
    float lane[16];
    for (int c = 0; c < D; c++) {
        vstore16(dk16[c] * (key16)(scale), 0, lane);
        for (int jj = 0; jj < keys; jj++) STORE1(lane[jj], dkb + ko[jj] + c);
    }
    for (int c = 0; c < DV; c++) {
        vstore16(dv16[c], 0, lane);
        for (int jj = 0; jj < keys; jj++) STORE1(lane[jj], dvb + vo[jj] + c);
    }
}

#define GATHER_MASK(m, off, j)                                                                     \
    (key16)((m)[(off)[0] + (j)], (m)[(off)[1] + (j)], (m)[(off)[2] + (j)], (m)[(off)[3] + (j)], (m)[(off)[4] + (j)], \
            (m)[(off)[5] + (j)], (m)[(off)[6] + (j)], (m)[(off)[7] + (j)], (m)[(off)[8] + (j)], (m)[(off)[9] + (j)], \
            (m)[(off)[10] + (j)], (m)[(off)[11] + (j)], (m)[(off)[12] + (j)], (m)[(off)[13] + (j)],      \
            (m)[(off)[14] + (j)], (m)[(off)[15] + (j)])

/* The logits of 16 rows (lanes, positions i) for key j (log2 units), with the formula's
 * optional terms; mrow[] holds each lane's mask row. */
inline key16 logits_rows16(key16 s, int16 i, int j, int off, float softcap_log2, key16 slope_log2,
                           __global const float *mask, const long *moff)
{
#if SOFTCAP
    s = softcap_log2 * tanh(s / softcap_log2);
#endif
#if ALIBI
    s -= slope_log2 * fabs(convert_float16(i + (int16)(off - j)));
#endif
#if MASK
    s += GATHER_MASK(mask, moff, j) * LOG2E;
#endif
    return s;
}

__kernel void clattn_bwd_q_rows(BWD_ARGS)
{
    const int g = (int)get_global_id(1), b = (int)get_global_id(2);
    const int r0 = (int)get_global_id(0) * 16;
    const seq_geom sg = seq_setup(b, 0, q_sb, 0, k_sb, 0, v_sb, 0, o_sb, q_ss, k_ss, v_ss, o_ss, nq, nk, top_left,
                                  seqused_k, cu_q, cu_k, total_q, total_k, 0);
    const int rows = group * sg.nq;
    if (r0 >= rows) return;
    __global const T *kb = k + k_off + sg.k_base + g * k_sh;
    __global const T *vb = v + v_off + sg.v_base + g * v_sh;
    __global const T *qb = q + q_off + sg.q_base;
    __global const T *ob = dout + do_off + sg.o_base;

    /* the lanes: packed rows r0 .. r0+15 (query head, position) of this KV head; lanes past the
     * end repeat the last row and are not stored */
    long qo[16], oo[16], moff[16];
    float lse_l[16], d_l[16], slope_l[16];
    int i_l[16], lo_l[16], hi_l[16];
    int jbeg = sg.nk, jend = 0, full_lo = 0, full_hi = sg.nk;
    for (int ll = 0; ll < 16; ll++) {
        const int p = min(r0 + ll, rows - 1);
        const int h = g * group + p / sg.nq, i = p % sg.nq;
        qo[ll] = h * q_sh + (long)i * q_ss;
        oo[ll] = h * o_sh + (long)i * o_ss;
        moff[ll] = 0;
#if MASK
        moff[ll] = b * m_sb + h * m_sh + (long)i * m_ss;
#endif
        const long id = row_id(b, h, i, hq, nq, total_q, &sg);
        lse_l[ll] = lse[lse_off + id] * LOG2E;
        d_l[ll] = dvec[dvec_off + id];
        slope_l[ll] = 0.0f;
#if ALIBI
        slope_l[ll] = alibi[h] * LOG2E;
#endif
        i_l[ll] = i;
        lo_l[ll] = row_lo(i, sg.off, wl);
        hi_l[ll] = lse_l[ll] == -INFINITY ? lo_l[ll] : row_hi(i, sg.off, wr, sg.nk); /* saw nothing: no gradient */
        if (hi_l[ll] > lo_l[ll]) {
            jbeg = min(jbeg, lo_l[ll]);
            jend = max(jend, hi_l[ll]);
        }
        full_lo = max(full_lo, lo_l[ll]);
        full_hi = min(full_hi, hi_l[ll]);
    }
    const key16 lse16 = vload16(0, lse_l), d16 = vload16(0, d_l), slope16 = vload16(0, slope_l);
    const int16 i16 = vload16(0, i_l), lo16 = vload16(0, lo_l), hi16 = vload16(0, hi_l);

    /* the rows' q (pre-scaled to log2 units) and d_o as columns of 16 lanes */
    key16 qt16[D], dot16[DV], dq16[D];
    for (int c = 0; c < D; c++) {
        qt16[c] = GATHER16(qb, qo, c) * (key16)(scale_log2);
        dq16[c] = (key16)(0.0f);
    }
    for (int c = 0; c < DV; c++) dot16[c] = GATHER16(ob, oo, c);

    /* RB keys per step: each key element is broadcast against 16 rows, and each column of the
     * rows (qt16[c], dq16[c], ...) loaded once for RB keys' FMAs */
    for (int j0 = jbeg; j0 < jend; j0 += RB) {
        __global const T *kr[RB], *vr[RB];
        int jr[RB];
        #pragma unroll
        for (int r = 0; r < RB; r++) {
            jr[r] = min(j0 + r, jend - 1); /* past the end: repeats the last key, masked below */
            kr[r] = kb + (long)jr[r] * k_ss;
            vr[r] = vb + (long)jr[r] * v_ss;
        }
        key16 s[RB], dp[RB];
        #pragma unroll
        for (int r = 0; r < RB; r++) s[r] = dp[r] = (key16)(0.0f);
        #pragma unroll 8
        for (int c = 0; c < D; c++) {
            const key16 qc = qt16[c];
            #pragma unroll
            for (int r = 0; r < RB; r++) s[r] = fma((key16)(LOAD1(kr[r] + c)), qc, s[r]);
        }
        #pragma unroll 8
        for (int c = 0; c < DV; c++) {
            const key16 oc = dot16[c];
            #pragma unroll
            for (int r = 0; r < RB; r++) dp[r] = fma((key16)(LOAD1(vr[r] + c)), oc, dp[r]);
        }
        key16 ds[RB];
        int16 ok[RB];
        #pragma unroll
        for (int r = 0; r < RB; r++) {
            const key16 raw = s[r];
            const key16 l = logits_rows16(s[r], i16, jr[r], sg.off, softcap_log2, slope16, mask, moff);
            ok[r] = ((int16)(j0 + r) >= lo16) & ((int16)(j0 + r) < hi16);
            const key16 p = select((key16)(0.0f), exp2(l - lse16), ok[r]);
            ds[r] = select((key16)(0.0f), dscore16(p, dp[r], d16, raw, softcap_log2), ok[r]);
        }
        /* dQ += dS K. Where every lane sees the RB keys, plain FMAs; elsewhere (the edges of
         * causal or windowed blocks, the last step) each lane keeps its sum where it does not
         * see the key: 0 * a NaN in a key the row never attends to must not reach its dQ. */
        if (j0 >= full_lo && j0 + RB <= full_hi) {
            #pragma unroll 8
            for (int c = 0; c < D; c++) {
                key16 acc = dq16[c];
                #pragma unroll
                for (int r = 0; r < RB; r++) acc = fma(ds[r], (key16)(LOAD1(kr[r] + c)), acc);
                dq16[c] = acc;
            }
        } else {
            for (int c = 0; c < D; c++) {
                key16 acc = dq16[c];
                #pragma unroll
                for (int r = 0; r < RB; r++) acc = select(acc, fma(ds[r], (key16)(LOAD1(kr[r] + c)), acc), ok[r]);
                dq16[c] = acc;
            }
        }
    }

    /* lanes back to rows */
    __global T *dqb = dq + dq_off + sg.q_base;
    const int lanes = min(16, rows - r0);
    float lane[16];
    for (int c = 0; c < D; c++) {
        vstore16(dq16[c] * (key16)(scale), 0, lane);
        for (int ll = 0; ll < lanes; ll++) STORE1(lane[ll], dqb + qo[ll] + c);
    }
}
