/* Fused attention forward, GPU family: a work-group owns BM packed rows (query head,
 * position) of one KV head, with TPR work-items per row, each holding a 1/TPR slice of the
 * row's head dims (its part of q and of the output accumulator). Key/value tiles of BN rows
 * are loaded into local memory cooperatively (consecutive work-items read consecutive
 * elements: coalesced), converted to f32 once, and read by every row of the group, so each
 * K/V element is fetched from global memory once per BM rows, and once for all query heads of
 * a KV head. With TPR > 1 the partial dot products meet in local memory (one more barrier per
 * tile); that halves or quarters each work-item's registers (d=128 spilled with TPR=1 on an
 * H100) and multiplies the work-items in flight.
 *
 * Tuning parameters (-D):
 *   D, DV  head dims of q/k and v/o        VW  vector width (divides D/TPR and DV/TPR)
 *   BM     rows per work-group             TPR work-items per row (work-group: BM*TPR)
 *   BN     keys per tile; (D + DV) * BN * 4 (+ TPR * BN * BM * 4) bytes of local memory
 *   UNROLL unroll the loops over keys and dims (below)
 * Switches (-D): DTYPE, SOFTCAP, ALIBI, MASK, SINKS, SEQUSED, VARLEN, PAGED (common.cl).
 *
 * NDRange: (ceil(group * Nq / BM) * nsplit * BM * TPR, Hkv, B), local (BM * TPR, 1, 1). Every
 * work-item reaches every barrier: rows past the end repeat the last row and are not stored. */

#ifndef TPR
#define TPR 1
#endif
/* UNROLL=1: loops over a row's keys and head dims unrolled, so s[], qv[] and acc[] stay in
   registers (rolled, the ptxas screen puts them in stack memory, 64-320 bytes a work-item;
   unrolled, no stack but 229-255 registers: tests/ptx/screen.sh). Off until a GPU measures
   which is faster ($CLATTN_TILES_UNROLL=1 turns it on; bench/device/run.sh times both). */
#ifndef UNROLL
#define UNROLL 0
#endif
#if UNROLL
#define UNROLL_ALL _Pragma("unroll")
#else
#define UNROLL_ALL
#endif
#define DS (D / TPR)   /* a work-item's slice of the q/k dims */
#define DVS (DV / TPR) /* and of the v/o dims */
#define DQV (DS / VW)
#define DVV (DVS / VW)

__kernel __attribute__((reqd_work_group_size(BM * TPR, 1, 1)))
void clattn_fwd_tiles(FWD_ARGS)
{
    __local float ks[BN * D];
    __local float vs[BN * DV];
#if TPR > 1
    __local float sp[TPR * BN * BM]; /* partial scores: [part][key][row] */
#endif
#if PAGED
    __local long prow[BN]; /* the tile's keys' cache rows; -1: a page outside the cache */
#endif

    const int lid = (int)get_local_id(0);
    const int r = lid % BM, part = lid / BM;
    const int g = (int)get_global_id(1);
    const int b = (int)get_global_id(2);
    const int2 blk = block_of_group(BM, nsplit);
    const int r0 = blk.x, split = blk.y;
    const seq_geom sg = FWD_SEQ_SETUP(b);
#if PAGED
    __global const int *table = block_table + (long)b * pages_per_seq;
#endif
    const int rows = group * sg.nq;
    if (r0 >= rows) return; /* uniform over the work-group: before any barrier */

    const int p = min(r0 + r, rows - 1);
    const int h = g * group + p / sg.nq, i = p % sg.nq;
    __global const T *kb = k + sg.k_base + g * k_sh;
    __global const T *vb = v + sg.v_base + g * v_sh;
    __global const T *qr = q + sg.q_base + h * q_sh + i * q_ss + part * DS;

    VEC qv[DQV], acc[DVV];
    UNROLL_ALL for (int t = 0; t < DQV; t++) qv[t] = LOADV(t, qr) * scale_log2;
    UNROLL_ALL for (int t = 0; t < DVV; t++) acc[t] = (VEC)(0.0f);
#if SINKS && !SPLIT
    float m = sinks[h] * LOG2E, l = 1.0f;
#else
    float m = -INFINITY, l = 0.0f;
#endif
    float slope = 0.0f;
#if ALIBI
    slope = alibi[h] * LOG2E;
#endif
    __global const float *mrow = mask;
#if MASK
    mrow = mask + b * m_sb + h * m_sh + i * m_ss;
#endif
    const int lo = row_lo(i, sg.off, wl), hi = row_hi(i, sg.off, wr, sg.nk);
    /* Keys any row of the block may see (common.cl) */
    const int2 keys = block_keys(r0, BM, rows, &sg, wl, wr, split, SPLIT ? split_len : 0);
    const int jbeg = keys.x, jend = keys.y;

    for (int j0 = jbeg; j0 < jend; j0 += BN) {
        const int nb = min(BN, jend - j0);
        barrier(CLK_LOCAL_MEM_FENCE); /* the previous tile (and its partial scores) is no longer read */
#if PAGED
        for (int x = lid; x < BN; x += BM * TPR) prow[x] = x < nb ? paged_row(table, j0 + x, page_size, num_pages) : -1L;
        barrier(CLK_LOCAL_MEM_FENCE);
#define KEY_AT(jj) prow[jj]
#else
#define KEY_AT(jj) (long)(j0 + (jj))
#endif
        for (int x = lid; x < BN * D; x += BM * TPR) {
            const int jj = x / D, c = x - jj * D;
            ks[x] = jj < nb && KEY_AT(jj) >= 0 ? LOAD1(kb + KEY_AT(jj) * k_ss + c) : 0.0f;
        }
        for (int x = lid; x < BN * DV; x += BM * TPR) {
            const int jj = x / DV, c = x - jj * DV;
            vs[x] = jj < nb && KEY_AT(jj) >= 0 ? LOAD1(vb + KEY_AT(jj) * v_ss + c) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        float s[BN];
        UNROLL_ALL for (int jj = 0; jj < BN; jj++) {
            __local const float *kr = ks + jj * D + part * DS;
            VEC dot = qv[0] * vload_f(0, kr);
            UNROLL_ALL for (int t = 1; t < DQV; t++) dot = fma(qv[t], vload_f(t, kr), dot);
            s[jj] = hsum(dot);
        }
#if TPR > 1
        UNROLL_ALL for (int jj = 0; jj < BN; jj++) sp[(part * BN + jj) * BM + r] = s[jj];
        barrier(CLK_LOCAL_MEM_FENCE);
        UNROLL_ALL for (int jj = 0; jj < BN; jj++) {
            float x = sp[jj * BM + r];
            UNROLL_ALL for (int u = 1; u < TPR; u++) x += sp[(u * BN + jj) * BM + r];
            s[jj] = x;
        }
#endif
        float mx = m;
        UNROLL_ALL for (int jj = 0; jj < BN; jj++) {
            const int j = j0 + jj;
            s[jj] = (j >= lo && j < hi && jj < nb && KEY_AT(jj) >= 0) ? logit(s[jj], i, j, sg.off, softcap_log2, slope, mrow)
                                                   : -INFINITY;
            mx = nan_max(mx, s[jj]);
        }
        if (mx == -INFINITY) continue; /* nothing allowed yet for this row; every work-item
                                          still meets the barrier that opens the next tile */
        if (mx > m) { /* rescale only when the running max grows */
            const float alpha = exp2(m - mx);
            l *= alpha;
            UNROLL_ALL for (int t = 0; t < DVV; t++) acc[t] *= alpha;
            m = mx;
        }
        UNROLL_ALL for (int jj = 0; jj < BN; jj++) {
            const float pj = exp2(s[jj] - mx);
            l += pj;
            if (pj != 0.0f) { /* a masked key never touches acc: 0 * NaN would leak garbage */
                __local const float *vr = vs + jj * DV + part * DVS;
                UNROLL_ALL for (int t = 0; t < DVV; t++) acc[t] = fma((VEC)(pj), vload_f(t, vr), acc[t]);
            }
        }
    }

    if (r0 + r >= rows) return;
    const float inv = row_inv(l), lse_r = row_lse(m, l);
    const long id = row_id(b, h, i, hq, nq, total_q, &sg);
#if SPLIT
    __global float *po = (__global float *)o_any + ((long)split * rows_total + id) * DV + part * DVS;
    UNROLL_ALL for (int t = 0; t < DVV; t++) VSTOREF(acc[t] * inv, t, po);
    if (part == 0) lse[lse_off + (long)split * rows_total + id] = lse_r;
#else
    __global T *orow = (__global T *)o_any + sg.o_base + h * o_sh + i * o_ss + part * DVS;
    UNROLL_ALL for (int t = 0; t < DVV; t++) STOREV(acc[t] * inv, t, orow);
    if (write_lse && part == 0) lse[lse_off + id] = lse_r;
#endif
}
