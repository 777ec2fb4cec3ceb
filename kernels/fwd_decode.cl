/* Fused attention forward for decode on GPUs (few query rows per KV head): a work-group owns
 * every packed row (query head, position) of one KV head, RP of them at most, and the keys of
 * its split; K and V are read from global memory once, as vectors, by consecutive work-items
 * (coalesced), for all the query heads that share them (GQA). Per tile of BN keys:
 *
 *   1. K and V tiles into local memory as f32 (the storage type converted once);
 *   2. scores: work-item (row r, key jj) -- RP x BN of them -- one dot product of q (local, the
 *      same address across a row's work-items: a broadcast) with its key's row; each row's max
 *      by a tree in local memory; then its probability, one exp2 per score;
 *   3. P.V: work-items own (row, VW output dims) pairs, consecutive dims on consecutive
 *      work-items, and sweep the tile's keys: the V row read by a warp is contiguous.
 *
 * Work is never repeated (no padded rows of a tile kernel's block, no exp per dim slice), and
 * the online softmax is the one of the other families: a row's state rescales only when its max
 * grows, a masked key (probability 0) never touches the accumulator, a NaN score makes its
 * row NaN. Splits across work-groups as in the tiles family (the combine kernel merges them).
 *
 * Parameters (-D): D, DV head dims; VW vector width (divides D and DV); BM (RP here) rows per
 * work-group (a power of 2 >= group * Nq); BN keys per tile (a power of 2); RP * BN is the
 * work-group size. Switches (-D): DTYPE, SOFTCAP, ALIBI, MASK, SINKS, SEQUSED, VARLEN, PAGED
 * (common.cl), SPLIT.
 *
 * NDRange: (ceil(group * Nq / RP) * nsplit * RP * BN, Hkv, B), local (RP * BN, 1, 1). */

#define RP BM                         /* the host's rows per work-group */
#define NT (RP * BN)                  /* work-items */
#define DQV (D / VW)
#define DVV (DV / VW)
#define KS (D + VW)                   /* a K row in local memory: padded so that rows start on */
#define VS (DV + VW)                  /* other banks */
#define OPW ((RP * DVV + NT - 1) / NT) /* (row, vector of dims) outputs per work-item */

__kernel __attribute__((reqd_work_group_size(NT, 1, 1)))
void clattn_fwd_decode(FWD_ARGS)
{
    __local float ks[BN * KS];
    __local float vs[BN * VS];
    __local float qs[RP * D];     /* q, pre-scaled to log2 units */
    __local float ps[RP * BN];    /* scores, then probabilities */
    __local float red[RP * BN];   /* the row maxima's tree */
    __local float mrun[2 * RP];   /* each row's running max, by tile parity */
    __local float alpha_s[RP];    /* each row's rescale for the tile */
#if PAGED
    __local long prow[BN];
#endif

    const int lid = (int)get_local_id(0);
    const int g = (int)get_global_id(1);
    const int b = (int)get_global_id(2);
    const int2 blk = block_of_group(RP, nsplit);
    const int r0 = blk.x, split = blk.y;
    const seq_geom sg = FWD_SEQ_SETUP(b);
#if PAGED
    __global const int *table = block_table + (long)b * pages_per_seq;
#endif
    const int rows = group * sg.nq;
    if (r0 >= rows) return; /* uniform over the work-group: before any barrier */
    __global const T *kb = k + sg.k_base + g * k_sh;
    __global const T *vb = v + sg.v_base + g * v_sh;

    /* q of every row (rows past the end repeat the last one and are not stored) */
    for (int x = lid; x < RP * DQV; x += NT) {
        const int r = x / DQV, c = x - r * DQV, p = min(r0 + r, rows - 1);
        const int h = g * group + p / sg.nq, i = p % sg.nq;
        VSTOREF(LOADV(c, q + sg.q_base + h * q_sh + i * q_ss) * scale_log2, c, qs + r * D);
    }
    if (lid < RP) {
        const int p = min(r0 + lid, rows - 1), h = g * group + p / sg.nq;
#if SINKS && !SPLIT
        mrun[lid] = sinks[h] * LOG2E;
#else
        mrun[lid] = -INFINITY;
        (void)h;
#endif
    }

    barrier(CLK_LOCAL_MEM_FENCE); /* q and the running maxima are set (read even with no tile) */

    /* Step 2's row and key: consecutive work-items, consecutive keys of one row. */
    const int sr = lid / BN, sj = lid % BN;
    const int sp_ = min(r0 + sr, rows - 1);
    const int sh = g * group + sp_ / sg.nq, si = sp_ % sg.nq;
    const int lo = row_lo(si, sg.off, wl), hi = row_hi(si, sg.off, wr, sg.nk);
    float slope = 0.0f;
#if ALIBI
    slope = alibi[sh] * LOG2E;
#endif
    __global const float *mrow = mask;
#if MASK
    mrow = mask + b * m_sb + sh * m_sh + si * m_ss;
#endif

    /* Step 3's outputs: (row, vector of dims) pairs u = lid + k * NT */
    VEC acc[OPW];
    float l[OPW];
    for (int k2 = 0; k2 < OPW; k2++) {
        acc[k2] = (VEC)(0.0f);
#if SINKS && !SPLIT
        l[k2] = 1.0f;
#else
        l[k2] = 0.0f;
#endif
    }

    /* Keys any row of the block may see (common.cl) */
    const int2 keys = block_keys(r0, RP, rows, &sg, wl, wr, split, SPLIT ? split_len : 0);
    const int jbeg = keys.x, jend = keys.y;

    int tile = 0;
    for (int j0 = jbeg; j0 < jend; j0 += BN, tile++) {
        const int nb = min(BN, jend - j0);
        barrier(CLK_LOCAL_MEM_FENCE); /* the previous tile is no longer read */
#if PAGED
        for (int x = lid; x < BN; x += NT) prow[x] = x < nb ? paged_row(table, j0 + x, page_size, num_pages) : -1L;
        barrier(CLK_LOCAL_MEM_FENCE);
#define KEY_AT(jj) prow[jj]
#else
#define KEY_AT(jj) (long)(j0 + (jj))
#endif
        /* 1. the tiles, vector by vector; keys past the tile 0 */
        for (int x = lid; x < BN * DQV; x += NT) {
            const int jj = x / DQV, c = x - jj * DQV;
            const VEC kv = jj < nb && KEY_AT(jj) >= 0 ? LOADV(c, kb + KEY_AT(jj) * k_ss) : (VEC)(0.0f);
            VSTOREF(kv, c, ks + jj * KS);
        }
        for (int x = lid; x < BN * DVV; x += NT) {
            const int jj = x / DVV, c = x - jj * DVV;
            const VEC vv = jj < nb && KEY_AT(jj) >= 0 ? LOADV(c, vb + KEY_AT(jj) * v_ss) : (VEC)(0.0f);
            VSTOREF(vv, c, vs + jj * VS);
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        /* 2. one score per work-item, the row's max by a tree, one exp2 per score */
        const int j = j0 + sj;
        float s = -INFINITY;
        if (j >= lo && j < hi && sj < nb && KEY_AT(sj) >= 0) {
            __local const float *qr = qs + sr * D, *kr = ks + sj * KS;
            VEC dot = vload_f(0, qr) * vload_f(0, kr);
            for (int t = 1; t < DQV; t++) dot = fma(vload_f(t, qr), vload_f(t, kr), dot);
            s = logit(hsum(dot), si, j, sg.off, softcap_log2, slope, mrow);
        }
        red[lid] = s;
        for (int w = BN / 2; w > 0; w >>= 1) {
            barrier(CLK_LOCAL_MEM_FENCE);
            if (sj < w) red[lid] = nan_max(red[lid], red[lid + w]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        const float mold = mrun[(tile & 1) * RP + sr], mn = nan_max(mold, red[sr * BN]);
        /* a row with nothing allowed yet: probabilities 0 (base +inf); a NaN max: NaN row */
        ps[lid] = exp2(s - (mn == -INFINITY ? INFINITY : mn));
        if (sj == 0) {
            const bool grows = mn != -INFINITY && mn > mold;
            alpha_s[sr] = grows ? exp2(mold - mn) : 1.0f;
            mrun[((tile + 1) & 1) * RP + sr] = grows ? mn : mold;
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        /* 3. P.V over the tile for this work-item's (row, dims) outputs */
        for (int k2 = 0; k2 < OPW; k2++) {
            const int u = min(lid + k2 * NT, RP * DVV - 1); /* past the end: a repeat, not stored */
            const int r = u / DVV, c = u - r * DVV;
            const float alpha = alpha_s[r];
            VEC a = acc[k2] * alpha;
            float lr = l[k2] * alpha;
            __local const float *pr = ps + r * BN;
            for (int jj = 0; jj < nb; jj++) {
                const float pj = pr[jj];
                lr += pj;
                if (pj != 0.0f) a = fma((VEC)(pj), vload_f(c, vs + jj * VS), a); /* 0 * NaN never */
            }
            acc[k2] = a;
            l[k2] = lr;
        }
    }

    const int parity = tile & 1;
    for (int k2 = 0; k2 < OPW; k2++) {
        /* every index in bounds even for a pair that is not stored: PoCL 3.1 ran this block for
           pairs past the end of the rows (its guard did not hold them back); so such a pair
           repeats the last row's values, bit for bit, onto that row */
        const int u = lid + k2 * NT, uc = min(u, RP * DVV - 1), r = uc / DVV, c = uc - r * DVV;
        if (u < RP * DVV && r0 + r < rows) {
            const int p = min(r0 + r, rows - 1), h = g * group + p / sg.nq, i = p % sg.nq;
            const float inv = row_inv(l[k2]), m = mrun[parity * RP + r];
            const long id = row_id(b, h, i, hq, nq, total_q, &sg);
#if SPLIT
            __global float *po = (__global float *)o_any + ((long)split * rows_total + id) * DV;
            VSTOREF(acc[k2] * inv, c, po);
            if (c == 0) lse[lse_off + (long)split * rows_total + id] = row_lse(m, l[k2]);
#else
            __global T *orow = (__global T *)o_any + sg.o_base + h * o_sh + i * o_ss;
            STOREV(acc[k2] * inv, c, orow);
            if (write_lse && c == 0) lse[lse_off + id] = row_lse(m, l[k2]);
#endif
        }
    }
}
