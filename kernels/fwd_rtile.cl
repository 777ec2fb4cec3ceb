/* Fused attention forward, register-tiled (GPUs, f32 arithmetic on any storage): the structure
 * of a tuned GEMM (CLBlast's xgemm) applied to both products of attention. A work-group owns BM
 * packed rows (query head, position) of one KV head and sweeps its keys in tiles of BN; its
 * NTY x NTX work-items each own a micro-tile of TM x TN scores and TM rows x TD output dims, in
 * registers:
 *
 *   S = Q.K^T   over the head dims in chunks of KD: Q's and K's chunks transposed into local
 *               memory, double-buffered (the next chunk is loaded while this one is used, one
 *               barrier a chunk); per dim one vector of TM rows (the same across a row of
 *               work-items: a broadcast) and one of TN keys, TM x TN FMAs;
 *   softmax     each row's max from the work-items' partial maxima (local memory); every
 *               work-item keeps its rows' running max and sum, so none waits on another's;
 *               P written transposed to local memory;
 *   O += P.V    over the tile's keys in chunks of KVC, double-buffered in the space Q's and K's
 *               chunks used; per key one vector of TM probabilities and TD dims of V.
 *
 * Every element is loaded from global memory once per work-group and converted to f32 once. A
 * masked key (probability 0) never touches the accumulator (0 * NaN), a row's state rescales only
 * when its max grows, a NaN score makes its row NaN: the online softmax of the other families.
 *
 * Parameters (-D): D, DV head dims; BM rows and BN keys per work-group (multiples of 4; the
 * work-group is BM/4 x BN/4). Switches (-D): DTYPE, SOFTCAP, ALIBI, MASK, SINKS, SEQUSED, VARLEN,
 * PAGED (common.cl), SPLIT.
 *
 * NDRange: (ceil(group * Nq / BM) * nsplit * NT, Hkv, B), local (NT, 1, 1). */

#define TM 4                                      /* rows per work-item */
#define TN 4                                      /* keys per work-item */
#define NTX (BN / TN)
#define NTY (BM / TM)
#define NT (NTX * NTY)
#define KD 16                                     /* head dims per chunk of Q.K^T */
#define DP ((D + KD - 1) / KD * KD)
#define NCH (DP / KD)
#define DVP ((DV + 4 * NTX - 1) / (4 * NTX) * (4 * NTX)) /* v/o dims padded: TD a multiple of 4 */
#define TD (DVP / NTX)                            /* output dims per work-item */
#define TD4 (TD / 4)
#define QK_FLOATS (2 * KD * (BM + BN))            /* Q's and K's chunks, double-buffered */
#define KVC_FIT (QK_FLOATS / (2 * DVP))           /* keys of V the same space holds twice */
#if KVC_FIT >= 64 && BN >= 64
#define KVC 64
#elif KVC_FIT >= 32 && BN >= 32
#define KVC 32
#elif KVC_FIT >= 16 && BN >= 16
#define KVC 16
#elif KVC_FIT >= 8 && BN >= 8
#define KVC 8
#else
#define KVC 4
#endif
/* every loop over a micro-tile unrolled: o[][] and s[] stay in registers (a loop left rolled put
   them in stack memory in the ptxas screen) */
#define UNROLL_ALL _Pragma("unroll")
#define UNION_FLOATS (QK_FLOATS > 2 * KVC * DVP ? QK_FLOATS : 2 * KVC * DVP)

__kernel __attribute__((reqd_work_group_size(NT, 1, 1)))
void clattn_fwd_rtile(FWD_ARGS)
{
    __local float buf[UNION_FLOATS]; /* Q^T and K^T chunks [2][KD][BM], [2][KD][BN]; then V's [2][KVC][DVP] */
    __local float pt[BN * BM];       /* P^T: [key][row] */
    __local float red[NTX * BM];     /* partial row maxima: [tx][row] */
    __local long qoff[BM];           /* each row's q offset */
#if PAGED
    __local long prow[BN];
#endif
    __local float *qc = buf, *kc = buf + 2 * KD * BM, *vc = buf;

    const int lid = (int)get_local_id(0), tx = lid % NTX, ty = lid / NTX;
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
    __global const T *kb = k + sg.k_base + g * k_sh;
    __global const T *vb = v + sg.v_base + g * v_sh;

    for (int x = lid; x < BM; x += NT) { /* rows past the end repeat the last one, not stored */
        const int p = min(r0 + x, rows - 1);
        qoff[x] = sg.q_base + (g * group + p / sg.nq) * q_sh + (p % sg.nq) * q_ss;
    }

    /* This work-item's rows ty * TM + a */
    int hh[TM], ii[TM], lo[TM], hi[TM];
    float slope[TM], m[TM], l[TM];
    __global const float *mrow[TM];
    float4 o[TM][TD4];
    UNROLL_ALL for (int a = 0; a < TM; a++) {
        const int p = min(r0 + ty * TM + a, rows - 1);
        hh[a] = g * group + p / sg.nq;
        ii[a] = p % sg.nq;
        lo[a] = row_lo(ii[a], sg.off, wl);
        hi[a] = row_hi(ii[a], sg.off, wr, sg.nk);
        slope[a] = 0.0f;
        mrow[a] = mask;
#if ALIBI
        slope[a] = alibi[hh[a]] * LOG2E;
#endif
#if MASK
        mrow[a] = mask + b * m_sb + hh[a] * m_sh + ii[a] * m_ss;
#endif
#if SINKS && !SPLIT
        m[a] = sinks[hh[a]] * LOG2E;
        l[a] = 1.0f;
#else
        m[a] = -INFINITY;
        l[a] = 0.0f;
#endif
        UNROLL_ALL for (int c = 0; c < TD4; c++) o[a][c] = (float4)(0.0f);
    }

    /* Keys any row of the block may see (common.cl) */
    const int2 keys = block_keys(r0, BM, rows, &sg, wl, wr, split, SPLIT ? split_len : 0);
    const int jbeg = keys.x, jend = keys.y;

    for (int j0 = jbeg; j0 < jend; j0 += BN) {
        const int nb = min(BN, jend - j0);
        barrier(CLK_LOCAL_MEM_FENCE); /* the previous tile's V chunks and P are no longer read */
#if PAGED
        for (int x = lid; x < BN; x += NT) prow[x] = x < nb ? paged_row(table, j0 + x, page_size, num_pages) : -1L;
        barrier(CLK_LOCAL_MEM_FENCE);
#define KEY_AT(jj) prow[jj]
#else
#define KEY_AT(jj) (long)(j0 + (jj))
#endif
        /* S = Q.K^T, chunk by chunk of KD dims, the next chunk loaded while this one is used */
        float4 s[TM];
        UNROLL_ALL for (int a = 0; a < TM; a++) s[a] = (float4)(0.0f);
        for (int ch = 0; ch <= NCH; ch++) {
            if (ch < NCH) { /* load chunk ch into buffer ch & 1 */
                __local float *qd = qc + (ch & 1) * KD * BM, *kd = kc + (ch & 1) * KD * BN;
                for (int x = lid; x < BM * KD; x += NT) {
                    const int row = x / KD, kk = x - row * KD, c = ch * KD + kk;
                    qd[kk * BM + row] = c < D ? LOAD1(q + qoff[row] + c) : 0.0f;
                }
                for (int x = lid; x < BN * KD; x += NT) {
                    const int key = x / KD, kk = x - key * KD, c = ch * KD + kk;
                    kd[kk * BN + key] = c < D && key < nb && KEY_AT(key) >= 0 ? LOAD1(kb + KEY_AT(key) * k_ss + c) : 0.0f;
                }
            }
            if (ch > 0) { /* use chunk ch - 1 */
                __local const float *qd = qc + ((ch - 1) & 1) * KD * BM + ty * TM;
                __local const float *kd = kc + ((ch - 1) & 1) * KD * BN + tx * TN;
                UNROLL_ALL for (int kk = 0; kk < KD; kk++) {
                    const float4 qa = vload4(0, qd + kk * BM), kv = vload4(0, kd + kk * BN);
                    s[0] = fma((float4)(qa.x), kv, s[0]);
                    s[1] = fma((float4)(qa.y), kv, s[1]);
                    s[2] = fma((float4)(qa.z), kv, s[2]);
                    s[3] = fma((float4)(qa.w), kv, s[3]);
                }
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }

        /* logits (log2 units), masked keys -inf; this work-item's part of each row's max */
        float pmax[TM];
        UNROLL_ALL for (int a = 0; a < TM; a++) {
            float x[TN] = {s[a].x, s[a].y, s[a].z, s[a].w};
            pmax[a] = -INFINITY;
            UNROLL_ALL for (int bb = 0; bb < TN; bb++) {
                const int key = tx * TN + bb, j = j0 + key;
                const bool ok = j >= lo[a] && j < hi[a] && key < nb && KEY_AT(key) >= 0;
                x[bb] = ok ? logit(x[bb] * scale_log2, ii[a], j, sg.off, softcap_log2, slope[a], mrow[a]) : -INFINITY;
                pmax[a] = nan_max(pmax[a], x[bb]);
            }
            s[a] = (float4)(x[0], x[1], x[2], x[3]);
        }
        vstore4((float4)(pmax[0], pmax[1], pmax[2], pmax[3]), 0, red + tx * BM + ty * TM);
        barrier(CLK_LOCAL_MEM_FENCE);
        float4 mx = (float4)(-INFINITY);
        for (int t = 0; t < NTX; t++) {
            const float4 pm = vload4(0, red + t * BM + ty * TM);
            mx = (float4)(nan_max(mx.x, pm.x), nan_max(mx.y, pm.y), nan_max(mx.z, pm.z), nan_max(mx.w, pm.w));
        }
        const float mxa[TM] = {mx.x, mx.y, mx.z, mx.w};

        /* online softmax per row: rescale when the max grows; a row with nothing allowed yet
           has probabilities 0 (base +inf); a NaN max makes the row NaN */
        UNROLL_ALL for (int a = 0; a < TM; a++) {
            const float mn = nan_max(m[a], mxa[a]);
            float base = mn;
            if (mn == -INFINITY) base = INFINITY;
            else if (mn > m[a]) {
                const float alpha = exp2(m[a] - mn);
                l[a] *= alpha;
                UNROLL_ALL for (int c = 0; c < TD4; c++) o[a][c] *= alpha;
                m[a] = mn;
            }
            const float4 pa = exp2(s[a] - (float4)(base));
            __local float *pw = pt + tx * TN * BM + ty * TM + a;
            pw[0] = pa.x;
            pw[BM] = pa.y;
            pw[2 * BM] = pa.z;
            pw[3 * BM] = pa.w;
        }

        /* O += P.V, KVC keys of V at a time, the next chunk loaded while this one is used (the
           space of Q's and K's chunks: their last reads were before the barrier above) */
        for (int ch = 0; ch <= BN / KVC; ch++) {
            if (ch < BN / KVC) { /* load chunk ch into buffer ch & 1 */
                __local float *vd = vc + (ch & 1) * KVC * DVP;
                for (int x = lid; x < KVC * DVP; x += NT) {
                    const int jj = x / DVP, c = x - jj * DVP, key = ch * KVC + jj;
                    vd[x] = c < DV && key < nb && KEY_AT(key) >= 0 ? LOAD1(vb + KEY_AT(key) * v_ss + c) : 0.0f;
                }
            }
            if (ch > 0) { /* use chunk ch - 1 */
                __local const float *vd = vc + ((ch - 1) & 1) * KVC * DVP + tx * TD;
                UNROLL_ALL for (int jj = 0; jj < KVC; jj++) {
                    const float4 pa = vload4(0, pt + ((ch - 1) * KVC + jj) * BM + ty * TM);
                    l[0] += pa.x;
                    l[1] += pa.y;
                    l[2] += pa.z;
                    l[3] += pa.w;
                    UNROLL_ALL for (int c = 0; c < TD4; c++) {
                        const float4 vv = vload4(c, vd + jj * DVP);
                        /* a zero probability never touches the accumulator: 0 * NaN would leak */
                        if (pa.x != 0.0f) o[0][c] = fma((float4)(pa.x), vv, o[0][c]);
                        if (pa.y != 0.0f) o[1][c] = fma((float4)(pa.y), vv, o[1][c]);
                        if (pa.z != 0.0f) o[2][c] = fma((float4)(pa.z), vv, o[2][c]);
                        if (pa.w != 0.0f) o[3][c] = fma((float4)(pa.w), vv, o[3][c]);
                    }
                }
            }
            barrier(CLK_LOCAL_MEM_FENCE); /* P^T and chunk ch visible; chunk ch - 1 read */
        }
    }

    UNROLL_ALL for (int a = 0; a < TM; a++) {
        const int pr = r0 + ty * TM + a;
        if (pr < rows) {
            const float inv = row_inv(l[a]), lse_r = row_lse(m[a], l[a]);
            const long id = row_id(b, hh[a], ii[a], hq, nq, total_q, &sg);
#if SPLIT
            __global float *po = (__global float *)o_any + ((long)split * rows_total + id) * DV;
            UNROLL_ALL for (int c = 0; c < TD; c++) {
                const int col = tx * TD + c;
                const float4 ov = o[a][c / 4] * inv;
                const float val = (c & 3) == 0 ? ov.x : (c & 3) == 1 ? ov.y : (c & 3) == 2 ? ov.z : ov.w;
                if (col < DV) po[col] = val;
            }
            if (tx == 0) lse[lse_off + (long)split * rows_total + id] = lse_r;
#else
            __global T *orow = (__global T *)o_any + sg.o_base + hh[a] * o_sh + ii[a] * o_ss;
            UNROLL_ALL for (int c = 0; c < TD; c++) {
                const int col = tx * TD + c;
                const float4 ov = o[a][c / 4] * inv;
                const float val = (c & 3) == 0 ? ov.x : (c & 3) == 1 ? ov.y : (c & 3) == 2 ? ov.z : ov.w;
                if (col < DV) STORE1(val, orow + col);
            }
            if (write_lse && tx == 0) lse[lse_off + id] = lse_r;
#endif
        }
    }
}
