/* Fused attention forward on tensor cores (f16/bf16 storage, f32 accumulation), the structure
 * of FlashAttention-2 on the warp layer (kernels/warp.cl): a work-group of BM / 16 warps owns BM
 * packed rows (query head, position) of one KV head, each warp 16 of them. Q stays in registers
 * as A fragments for the whole call; per tile of BN keys, K and V are copied into local memory in
 * their storage type (coalesced), S = Q.K^T is computed by m16n8k16 MMAs into C fragments, the
 * online softmax runs on those fragments (each row's max and sum over the four lanes of a quad),
 * and P, rounded to the storage type, is already the A fragment of P.V (warp.cl), which
 * accumulates into O's C fragments. Head dims need not be multiples of 16: q/k dims are padded
 * with zeros to DP, v/o dims to DVP, and the padding is never stored.
 *
 * A masked key's probability is 0, but 0 times an inf or NaN value is NaN: a tile whose V holds
 * an inf or NaN (rare: a KV cache's unwritten slots, a poisoned input) takes a per-element path
 * that skips zero probabilities, as the other families do, so garbage a row never attends to
 * never reaches it.
 *
 * Parameters (-D): D, DV head dims; BM rows per work-group (16 per warp; work-group 2 * BM);
 * BN keys per tile (a multiple of 16). Switches (-D): DTYPE, SOFTCAP, ALIBI, MASK, SINKS,
 * SEQUSED, VARLEN, PAGED (common.cl), SPLIT, WARP_PTX (warp.cl).
 *
 * NDRange: (ceil(group * Nq / BM) * nsplit * 2 * BM, Hkv, B), local (2 * BM, 1, 1). Every
 * work-item reaches every barrier: rows past the end repeat the last row and are not stored. */

#define NW (BM / 16)                /* warps per work-group */
#define WG (32 * NW)                /* work-items per work-group */
#define DP ((D + 15) / 16 * 16)     /* q/k dims padded to whole k-steps of 16 */
#define DVP ((DV + 7) / 8 * 8)      /* v/o dims padded to whole n-blocks of 8 */
#define KSTR (DP + 8)               /* a K row in local memory (elements): 8 rows of a B fragment */
#define VSTR (DVP + 8)              /* fall in distinct banks */
#define NKS (DP / 16)               /* k-steps of Q.K^T */
#define NNB (BN / 8)                /* n-blocks of S */
#define NKK (BN / 16)               /* k-steps of P.V */
#define NDB (DVP / 8)               /* n-blocks of O */

/* Elements c and c + 1 of a row as one register; those at n and past are 0 (the padding). */
inline uint load_pair(__global const ushort *row, int c, int n)
{
    const uint lo = c < n ? row[c] : 0u, hi = c + 1 < n ? row[c + 1] : 0u;
    return lo | (hi << 16);
}

inline float f4_get(float4 v, int e) { return e == 0 ? v.x : e == 1 ? v.y : e == 2 ? v.z : v.w; }

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void clattn_fwd_mma(FWD_ARGS)
{
    __local uint ks[BN * KSTR / 2];
    __local uint vs[BN * VSTR / 2];
    __local uint wscratch[NW * WARP_SCRATCH];
    __local int v_bad; /* the last tile whose V held an inf or NaN */
#if PAGED
    __local long prow[BN]; /* the tile's keys' cache rows; -1: a page outside the cache */
#endif

    const int lid = (int)get_local_id(0), lane = LANE, w = WARP, gq = lane >> 2, tq = lane & 3;
    __local uint *ws = wscratch + w * WARP_SCRATCH;
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

    /* This lane's two rows of its warp's 16: r = 0 is row g, r = 1 row g + 8 (the C fragment's rows) */
    int h[2], i[2], lo[2], hi[2];
    bool stored[2];
    float slope[2] = {0.0f, 0.0f};
    __global const float *mrow[2] = {mask, mask};
    __global const ushort *qrow[2];
    UNROLL for (int r = 0; r < 2; r++) {
        const int pr = r0 + 16 * w + gq + 8 * r, p = min(pr, rows - 1);
        stored[r] = pr < rows;
        h[r] = g * group + p / sg.nq;
        i[r] = p % sg.nq;
        lo[r] = row_lo(i[r], sg.off, wl);
        hi[r] = row_hi(i[r], sg.off, wr, sg.nk);
        qrow[r] = (__global const ushort *)q + sg.q_base + h[r] * q_sh + i[r] * q_ss;
#if ALIBI
        slope[r] = alibi[h[r]] * LOG2E;
#endif
#if MASK
        mrow[r] = mask + b * m_sb + h[r] * m_sh + i[r] * m_ss;
#endif
    }
    __global const ushort *kb = (__global const ushort *)k + sg.k_base + g * k_sh;
    __global const ushort *vb = (__global const ushort *)v + sg.v_base + g * v_sh;
    /* every K and V row on a 16-byte boundary (buffers are aligned far beyond that): the element
       offsets of this head's rows and the row stride, multiples of 8 (uniform over the group) */
    const bool kv16 = D % 8 == 0 && DV % 8 == 0 && ((sg.k_base + g * k_sh) & 7) == 0 && (k_ss & 7) == 0 &&
                      ((sg.v_base + g * v_sh) & 7) == 0 && (v_ss & 7) == 0;

    uint4 qa[NKS]; /* Q's A fragments, unscaled (the scale is applied to S in f32) */
    UNROLL for (int s = 0; s < NKS; s++)
        qa[s] = (uint4)(load_pair(qrow[0], 16 * s + 2 * tq, D), load_pair(qrow[1], 16 * s + 2 * tq, D),
                        load_pair(qrow[0], 16 * s + 8 + 2 * tq, D), load_pair(qrow[1], 16 * s + 8 + 2 * tq, D));
    float4 o[NDB];
    UNROLL for (int n = 0; n < NDB; n++) o[n] = (float4)(0.0f);
#if SINKS && !SPLIT /* the sink's term starts the sum once, in the quad's first lane */
    float m[2] = {sinks[h[0]] * LOG2E, sinks[h[1]] * LOG2E};
    float l[2] = {tq == 0 ? 1.0f : 0.0f, tq == 0 ? 1.0f : 0.0f};
#else
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}; /* l: this lane's part of the row sum */
#endif

    /* Keys any row of the block may see (common.cl) */
    const int2 keys = block_keys(r0, BM, rows, &sg, wl, wr, split, SPLIT ? split_len : 0);
    const int jbeg = keys.x, jend = keys.y;

    if (lid == 0) v_bad = -1;
    int tile = 0;
    for (int j0 = jbeg; j0 < jend; j0 += BN, tile++) {
        const int nb = min(BN, jend - j0);
        barrier(CLK_LOCAL_MEM_FENCE); /* the previous tile is no longer read */
#if PAGED
        for (int x = lid; x < BN; x += WG) prow[x] = x < nb ? paged_row(table, j0 + x, page_size, num_pages) : -1L;
        barrier(CLK_LOCAL_MEM_FENCE);
#define KEY_AT(jj) prow[jj]
#else
#define KEY_AT(jj) (long)(j0 + (jj))
#endif
        /* K and V as stored; keys past the tile and padding are 0. 16 bytes a load where every
           row starts on 8 elements (kv16), else pairs of elements (any offset or stride) */
        bool bad = false;
        if (kv16) {
            for (int x = lid; x < BN * (DP / 8); x += WG) {
                const int jj = x / (DP / 8), c = 8 * (x - jj * (DP / 8));
                const uint4 val = jj < nb && KEY_AT(jj) >= 0 && c < D
                                      ? *(__global const uint4 *)(kb + KEY_AT(jj) * k_ss + c) : (uint4)(0u);
                vstore4(val, 0, ks + (jj * KSTR + c) / 2);
            }
            for (int x = lid; x < BN * (DVP / 8); x += WG) {
                const int jj = x / (DVP / 8), c = 8 * (x - jj * (DVP / 8));
                const uint4 val = jj < nb && KEY_AT(jj) >= 0 && c < DV
                                      ? *(__global const uint4 *)(vb + KEY_AT(jj) * v_ss + c) : (uint4)(0u);
                bad |= pair_nonfinite(val.x) || pair_nonfinite(val.y) || pair_nonfinite(val.z) || pair_nonfinite(val.w);
                vstore4(val, 0, vs + (jj * VSTR + c) / 2);
            }
        } else {
            for (int x = lid; x < BN * DP / 2; x += WG) {
                const int jj = x / (DP / 2), c = 2 * (x - jj * (DP / 2));
                ks[(jj * KSTR + c) / 2] = jj < nb && KEY_AT(jj) >= 0 ? load_pair(kb + KEY_AT(jj) * k_ss, c, D) : 0u;
            }
            for (int x = lid; x < BN * DVP / 2; x += WG) {
                const int jj = x / (DVP / 2), c = 2 * (x - jj * (DVP / 2));
                const uint pair = jj < nb && KEY_AT(jj) >= 0 ? load_pair(vb + KEY_AT(jj) * v_ss, c, DV) : 0u;
                bad |= pair_nonfinite(pair);
                vs[(jj * VSTR + c) / 2] = pair;
            }
        }
        if (bad) v_bad = tile; /* every writer writes the same value */
        barrier(CLK_LOCAL_MEM_FENCE);
        const bool special = v_bad == tile;

        /* S = Q.K^T: n-block n holds keys 8n .. 8n + 7 of the tile */
        float4 s[NNB];
        UNROLL for (int n = 0; n < NNB; n++) {
            __local const uint *kr = ks + (8 * n + gq) * (KSTR / 2) + tq;
            float4 acc = (float4)(0.0f);
            UNROLL for (int t = 0; t < NKS; t++) acc = mma_16816(acc, qa[t], (uint2)(kr[8 * t], kr[8 * t + 4]), ws);
            s[n] = acc;
        }

        /* Logits in log2 units, masked keys -inf; each row's max over its quad */
        float2 mx = (float2)(-INFINITY, -INFINITY);
        UNROLL for (int n = 0; n < NNB; n++) {
            float x[4];
            UNROLL for (int e = 0; e < 4; e++) {
                const int r = e >> 1, jj = 8 * n + 2 * tq + (e & 1), j = j0 + jj;
                const bool ok = j >= lo[r] && j < hi[r] && jj < nb && KEY_AT(jj) >= 0;
                x[e] = ok ? logit(f4_get(s[n], e) * scale_log2, i[r], j, sg.off, softcap_log2, slope[r], mrow[r])
                          : -INFINITY;
            }
            s[n] = (float4)(x[0], x[1], x[2], x[3]);
            mx.x = nan_max(mx.x, nan_max(x[0], x[1]));
            mx.y = nan_max(mx.y, nan_max(x[2], x[3]));
        }
        mx = quad_max2(mx, ws);

        /* The online softmax per row: rescale when the max grows; a row with nothing allowed
           yet gets probabilities 0 (its base +inf), a NaN max makes the row NaN */
        float base[2];
        const float rmx[2] = {mx.x, mx.y};
        UNROLL for (int r = 0; r < 2; r++) {
            const float mn = nan_max(m[r], rmx[r]);
            base[r] = mn;
            if (mn == -INFINITY) base[r] = INFINITY;
            else if (mn > m[r]) {
                const float alpha = exp2(m[r] - mn);
                l[r] *= alpha;
                UNROLL for (int n = 0; n < NDB; n++) {
                    if (r == 0) o[n].xy *= alpha;
                    else o[n].zw *= alpha;
                }
                m[r] = mn;
            }
        }
        UNROLL for (int n = 0; n < NNB; n++) {
            const float4 p = (float4)(exp2(s[n].x - base[0]), exp2(s[n].y - base[0]), exp2(s[n].z - base[1]),
                                      exp2(s[n].w - base[1]));
            l[0] += p.x + p.y;
            l[1] += p.z + p.w;
            s[n] = p;
        }

        /* O += P.V: P's A fragment for keys 16t .. 16t + 15 is S's n-blocks 2t and 2t + 1,
           rounded to the storage type. In a tile whose V holds an inf or NaN (`special`), P.V
           runs on V with those made 0, and a second MMA of P's nonzero pattern by the values'
           codes counts, per output element, the infs and NaNs its nonzero probabilities meet
           (warp.cl, pair_code): a zero probability never turns garbage into NaN, as in the other
           families. Every index is known at compile time: no register array spills to memory. */
        uint4 pa[NKK];
        UNROLL for (int t = 0; t < NKK; t++)
            pa[t] = (uint4)(pack_f32x2(s[2 * t].x, s[2 * t].y), pack_f32x2(s[2 * t].z, s[2 * t].w),
                            pack_f32x2(s[2 * t + 1].x, s[2 * t + 1].y), pack_f32x2(s[2 * t + 1].z, s[2 * t + 1].w));
        __local const ushort *vh = (__local const ushort *)vs + 2 * tq * VSTR + gq;
        UNROLL for (int n = 0; n < NDB; n++) {
            UNROLL for (int t = 0; t < NKK; t++) {
                __local const ushort *v0 = vh + 16 * t * VSTR + 8 * n;
                uint2 bv = (uint2)((uint)v0[0] | ((uint)v0[VSTR] << 16), (uint)v0[8 * VSTR] | ((uint)v0[9 * VSTR] << 16));
                if (special) bv = (uint2)(pair_clean(bv.x), pair_clean(bv.y));
                o[n] = mma_16816(o[n], pa[t], bv, ws);
            }
            if (special) {
                float4 cnt = (float4)(0.0f);
                UNROLL for (int t = 0; t < NKK; t++) {
                    __local const ushort *v0 = vh + 16 * t * VSTR + 8 * n;
                    const uint2 code = (uint2)(pair_code((uint)v0[0] | ((uint)v0[VSTR] << 16)),
                                               pair_code((uint)v0[8 * VSTR] | ((uint)v0[9 * VSTR] << 16)));
                    cnt = mma_16816(cnt, pair_nonzero4(pa[t]), code, ws);
                }
                o[n] = (float4)(apply_special(o[n].x, cnt.x), apply_special(o[n].y, cnt.y),
                                apply_special(o[n].z, cnt.z), apply_special(o[n].w, cnt.w));
            }
        }
    }

    const float2 lsum = quad_sum2((float2)(l[0], l[1]), ws);
    const float ls[2] = {lsum.x, lsum.y};
    UNROLL for (int r = 0; r < 2; r++) {
        if (!stored[r]) continue;
        const float inv = row_inv(ls[r]), lse_r = row_lse(m[r], ls[r]);
        const long id = row_id(b, h[r], i[r], hq, nq, total_q, &sg);
#if SPLIT
        __global float *po = (__global float *)o_any + ((long)split * rows_total + id) * DV;
        UNROLL for (int n = 0; n < NDB; n++) {
            const int c = 8 * n + 2 * tq;
            const float2 x = (r == 0 ? o[n].xy : o[n].zw) * inv;
            if (c < DV) po[c] = x.x;
            if (c + 1 < DV) po[c + 1] = x.y;
        }
        if (tq == 0) lse[lse_off + (long)split * rows_total + id] = lse_r;
#else
        __global T *orow = (__global T *)o_any + sg.o_base + h[r] * o_sh + i[r] * o_ss;
        UNROLL for (int n = 0; n < NDB; n++) {
            const int c = 8 * n + 2 * tq;
            const float2 x = (r == 0 ? o[n].xy : o[n].zw) * inv;
            if (c < DV) STORE1(x.x, orow + c);
            if (c + 1 < DV) STORE1(x.y, orow + c + 1);
        }
        if (write_lse && tq == 0) lse[lse_off + id] = lse_r;
#endif
    }
}
