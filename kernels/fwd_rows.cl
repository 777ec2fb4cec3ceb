/* Fused attention forward, CPU family: one work-item owns a register tile of BM packed rows
 * (query head, position) of one KV head, streams the keys in blocks of BN with explicit
 * VW-wide vectors and no barriers, and keeps the online-softmax state (running max m, sum l,
 * accumulator) in private memory. Written for CPU devices (PoCL), where one scalar output per
 * work-item ran 20x slower than explicit vectors; correct on any device.
 *
 * Tuning parameters (-D):
 *   D   head dim of q and k        DV  head dim of v and o
 *   VW  vector width (divides D and DV)
 *   BM  packed rows per work-item  BN  keys per block (one rescale per block)
 *   PREFETCH  request a paged block's rows before reading them (CPU devices, small pages)
 *   PIPELINE  software pipelining of the key stream (the host sets it for a decode on a CPU):
 *       each key's V row is requested while its scores are computed, and the next block's K
 *       row of the same rank while the values are summed, so that the loads find their lines
 *       arriving, dense cache or pages in any order (bench/NOTES.md change 16); PF_LOCALITY
 *       the cache level those requests fill
 *   HG  KV heads per work-item (default 1): the BM rows of each of HG consecutive KV heads, so
 *       that a block's tokens are read whole, all their heads. The host sets it for a decode on
 *       a paged cache on a CPU, where a token's heads lie side by side and the pages come in any
 *       order: one head per work-item, each reading its rows a token apart, lost the hardware
 *       prefetchers at every page (bench/NOTES.md change 16). Within a block the loops go head
 *       by head, over KC keys for the scores and over the block for the values (KC, VCH below);
 *       the software requests bring the block's rows in beforehand, in the order those
 *       loops read them.
 * Switches (-D): DTYPE, SOFTCAP, ALIBI, MASK, SINKS, SEQUSED, VARLEN, PAGED (common.cl).
 *
 * NDRange: (ceil(group * Nq / BM) * nsplit, Hkv / HG, B). Scores are kept in the log2 domain: q is
 * pre-scaled by scale * log2(e) so that exp2 serves. Masked scores are -INFINITY and a row's
 * state is only rescaled once it has a finite maximum, so an empty row never computes
 * (-inf) - (-inf): build without -cl-finite-math-only. A sink starts a row's state as one
 * more key with a zero value (m = sink, l = 1). */

#define DQV (D / VW)
#define DVV (DV / VW)

/* KVEC: 16 keys' scores at once as a float16 (q element broadcast x a column of the K tile),
 * no horizontal sum per score; for the plain formula (the optional terms are per score).
 * Measured on PoCL, 1 thread (bench/NOTES.md): d=64 prefill 1.44x faster; d=128 no gain (each
 * horizontal sum already spans twice the FMAs, and the column gathers cost twice as much).
 * KT: the host transposed K to f32 (kt: blocks of 16 aligned keys, each D rows of 16 keys; kt_ld
 * keys, a multiple of 16, per KV head), so a column of 16 keys is one vector load instead of 16
 * gathered scalars; the blocks then start on an aligned key (of the packed tokens with VARLEN). */
#ifndef KT
#define KT 0
#endif
/* PREFETCH: the host sets it on CPU devices for a paged cache (a hint: results do not depend
 * on it; a compiler without __builtin_prefetch skips it). */
#ifndef PREFETCH
#define PREFETCH 0
#endif
#if !defined(PIPELINE) || !defined(__clang__) /* prefetches: __builtin_prefetch */
#undef PIPELINE
#define PIPELINE 0
#endif
/* PF_LOCALITY: __builtin_prefetch's locality for the row requests of PIPELINE and PREFETCH: 3
 * (every cache level, L1 included) or 2 (x86: prefetcht1, L2 and below). The host takes 2 on a
 * CPU whose L1 data cache is below 48 KiB: on a Zen 4 (32 KiB) requests into L1 made a paged
 * decode 1.35-1.45x and a dense one 1.07-1.13x slower than requests into L2; on a Zen 5 (48 KiB)
 * requests into L2 made the paged decode 4-9% slower (bench/NOTES.md changes 26, 29, 33). */
#ifndef PF_LOCALITY
#define PF_LOCALITY 3
#endif
#ifndef HG
#define HG 1
#endif
#define R (HG * BM) /* rows per work-item: BM packed rows of each of HG KV heads */
#if KT && HG > 1
#error "KT reads one KV head's transposed keys"
#endif
#define KVEC (HG == 1 && BN == 16 && (D <= 64 || KT) && !SOFTCAP && !ALIBI && !MASK)

/* HG > 1 (a CPU decode over keys whose heads lie side by side): the work-item's HG x BM rows
 * keep about 32 KiB of q and accumulators (HG 8, BM 4, d = 128), a whole 32 KiB L1, so each
 * pass over them should do as much work as it can. KC keys' scores per pass over a head's q
 * rows (one q load feeds KC FMAs), and the values by chunks of VCH vectors of the head's BM
 * accumulator rows, held in registers over the block's keys (loaded and stored once a block,
 * not once a key).
 * Measured on a Zen 4 (bench/NOTES.md change 30), page-16 decode: hot 1.28x faster, f16 cold
 * 1.27x; f32 cold as fast as before, and 1.3-1.5x faster in the stretches where the old loops
 * ran 16-20 ms against the dense decode's 11-13 (the VM's two threads then shared one core's
 * L1). The register tiles (BM x KC, BM x VCH vectors) stay within 16 vectors: AVX-512's 32
 * registers hold them. With AVX2's 16 (VW 16 takes two each) they spill: PoCL's AVX2 kernel
 * library on the same Zen 4 ran tiles of 2 x 2 13% faster hot, but 1-7 points slower cold
 * (bench/NOTES.md change 31), so the decode, which runs cold, keeps these. */
#if HG > 1
#define KC (BN % 4 == 0 && BM <= 4 ? 4 : BN % 2 == 0 && BM <= 8 ? 2 : 1)
#define VCH (DVV % 4 == 0 && BM <= 4 ? 4 : DVV % 2 == 0 && BM <= 8 ? 2 : 1)
#endif

inline float hsum16(float16 a)
{
    float8 d = a.lo + a.hi;
    float4 c = d.lo + d.hi;
    float2 b = c.lo + c.hi;
    return b.s0 + b.s1;
}

/* Max of 16 lanes, a NaN lane counted as +inf: the row then ends NaN as nan_max would make it
 * (exp2(NaN - inf) is NaN in l), where `any(isnan(a))` compiled to a chain of 16 scalar tests
 * and branches, and fmax to a NaN fix-up per step (bench/NOTES.md change 17). */
inline float hmax16(float16 a)
{
    a = select(a, (float16)(INFINITY), isnan(a));
    float8 d = max(a.lo, a.hi);
    float4 c = max(d.lo, d.hi);
    float2 b = max(c.lo, c.hi);
    return max(b.s0, b.s1);
}

/* SUM4: four rows' scores reduced at once, for one KV head per work-item. Measured on a decode
 * (bench/NOTES.md change 22): with the block test `full` below, 1x32x8x1x32768x128 on a dense
 * BHSD cache ran 13-14% faster. (8 heads per work-item reduce a row's four keys at once: KC.) */
#if VW == 16 && BM % 4 == 0 && HG == 1
#define SUM4 1
#else
#define SUM4 0
#endif
#if VW == 16
/* The sums of four float16 vectors: halves, then quarters, then pairs added across vectors. */
inline float4 hsum4(float16 a, float16 b, float16 c, float16 d)
{
    const float16 ab = (float16)(a.lo, b.lo) + (float16)(a.hi, b.hi); /* a's 8 partials, b's 8 */
    const float16 cd = (float16)(c.lo, d.lo) + (float16)(c.hi, d.hi);
    const float16 e = (float16)(ab.s0123, ab.s89ab, cd.s0123, cd.s89ab) + (float16)(ab.s4567, ab.scdef, cd.s4567, cd.scdef);
    const float8 f = e.even + e.odd; /* 2 partials each of a, b, c, d */
    return f.even + f.odd;
}
#endif

#if PAGED
/* The cache rows of keys j0 .. j0 + BN - 1 (row 0 and ok 0 for a key at or past jend or on a
 * page outside the cache; ok -1 otherwise): one division per block and one table entry per page
 * it touches (a division per key made a page-256 decode 1.15-1.2x slower, bench/NOTES.md). */
inline void block_rows(__global const int *table, int j0, int jend, int page_size, int num_pages, long *row, int *ok)
{
    int at = j0 / page_size, r = j0 - at * page_size, page = j0 < jend ? table[at] : -1;
    for (int jj = 0; jj < BN; jj++) {
        const bool in = page >= 0 && page < num_pages && j0 + jj < jend;
        ok[jj] = in ? -1 : 0;
        row[jj] = in ? (long)page * page_size + r : 0L;
        if (++r == page_size && j0 + jj + 1 < jend) { /* the next key opens the next page */
            r = 0;
            page = table[++at];
        }
    }
}
#endif

__kernel void clattn_fwd_rows(FWD_ARGS)
{
    const int g = (int)get_global_id(1) * HG; /* the first of the work-item's KV heads */
    const int b = (int)get_global_id(2);
#if SPLIT
    /* the id itself may pass 2^31 with many splits; its row block never does (rows < 2^30) */
    const int split = (int)(get_global_id(0) % (size_t)nsplit);
    const int r0 = (int)(get_global_id(0) / (size_t)nsplit) * BM;
#else
    const int r0 = (int)get_global_id(0) * BM;
#endif
    const seq_geom sg = FWD_SEQ_SETUP(b);
#if PAGED
    __global const int *table = block_table + (long)b * pages_per_seq;
#endif
    const int rows = group * sg.nq;
    if (r0 >= rows) return;

    __global const T *kb = k + sg.k_base + g * k_sh;
    __global const T *vb = v + sg.v_base + g * v_sh;
#if KT /* this (batch, KV head)'s transposed keys; packed sequences: all tokens of the KV head */
#if VARLEN
    __global const float *ktb = kt + (long)g * D * kt_ld;
#else
    __global const float *ktb = kt + (long)(b * (hq / group) + g) * D * kt_ld;
#endif
#endif

    VEC qv[R][DQV];
    VEC acc[R][DVV];
#if KVEC
    float qs[BM][D]; /* q as scalars, to broadcast one element against 16 keys */
#endif
    float m[R], l[R], slope[R];
#if BN == 16 /* the row sums by lane, added up at the end: no horizontal sum per block */
    float16 lv[R];
#endif
    int lo[R], hi[R], hh[R], ii[R];
    __global const float *mrow[R];
    int jbeg = sg.nk, jend = 0;
    int jlo_all = 0, jhi_all = sg.nk; /* the keys every row allows */
    #pragma unroll
    for (int r = 0; r < R; r++) {
        const int p = min(r0 + r % BM, rows - 1); /* tail rows repeat the last row, not stored */
        const int h = (g + r / BM) * group + p / sg.nq, i = p % sg.nq;
        hh[r] = h;
        ii[r] = i;
        __global const T *qr = q + sg.q_base + h * q_sh + i * q_ss;
        #pragma unroll
        for (int t = 0; t < DQV; t++) qv[r][t] = LOADV(t, qr) * scale_log2;
#if KVEC
        for (int c = 0; c < D; c++) qs[r][c] = LOAD1(qr + c) * scale_log2;
#endif
        #pragma unroll
        for (int t = 0; t < DVV; t++) acc[r][t] = (VEC)(0.0f);
#if SINKS && !SPLIT
        m[r] = sinks[h] * LOG2E;
        l[r] = 1.0f;
#else
        m[r] = -INFINITY;
        l[r] = 0.0f;
#endif
#if BN == 16
        lv[r] = (float16)(0.0f);
        lv[r].s0 = l[r];
#endif
        slope[r] = 0.0f;
#if ALIBI
        slope[r] = alibi[h] * LOG2E;
#endif
        mrow[r] = mask;
#if MASK
        mrow[r] = mask + b * m_sb + h * m_sh + i * m_ss;
#endif
        lo[r] = row_lo(i, sg.off, wl);
        hi[r] = row_hi(i, sg.off, wr, sg.nk);
        jbeg = min(jbeg, lo[r]);
        jend = max(jend, hi[r]);
        jlo_all = max(jlo_all, lo[r]);
        jhi_all = min(jhi_all, hi[r]);
    }
#if SPLIT
    jbeg = max(jbeg, split * split_len);
    jend = min(jend, (split + 1) * split_len);
#endif

#if KT /* blocks start on a multiple of 16 tokens (kt's blocks); keys before jbeg are masked
          below, and one before the sequence's first token (VARLEN) is still a token of K */
    jbeg = ((sg.k_tok0 + jbeg) & ~15) - sg.k_tok0;
#endif
    for (int j0 = jbeg; j0 < jend; j0 += BN) {
        float s[R][BN];
#if PAGED /* the block's keys' cache rows, once for K and V (block_rows); a key on a page outside
             the cache, or past jend, is masked and row 0 stands in for its address */
        long prow[BN];
        int pok[BN];
        block_rows(table, j0, jend, page_size, num_pages, prow, pok);
#if PIPELINE
        long nrow[BN]; /* the next block's, for the prefetches below */
        int nok[BN];
        block_rows(table, j0 + BN, jend, page_size, num_pages, nrow, nok);
        /* the first line of each key's rows two blocks ahead: in a paged cache each token (its
         * heads side by side) is its own run of memory, and a page in random order its own
         * region; requested early, the run's translation and first line are there when its
         * lines are requested in full a block later (page 16 in random order: 84-90% of the
         * dense decode without, 89-94% with; bench/NOTES.md change 20) */
        if (j0 + 2 * BN < jend) {
            long arow[BN];
            int aok[BN];
            block_rows(table, j0 + 2 * BN, jend, page_size, num_pages, arow, aok);
            for (int jj = 0; jj < BN; jj++)
                if (aok[jj]) {
                    __builtin_prefetch(kb + arow[jj] * k_ss, 0, 3);
                    __builtin_prefetch(vb + arow[jj] * v_ss, 0, 3);
                }
        }
#endif
#if PREFETCH && defined(__clang__)
        /* CPUs, pages smaller than a block: every line of the block's rows requested at once,
         * since keys on pages in random order defeat the hardware prefetchers and the loads
         * below reach only a few keys ahead. Measured (bench/NOTES.md): page 1 decode 1.25x
         * faster; with pages of a block or more it cost up to 10%, so they go without. Into
         * the level PF_LOCALITY names: at 8 heads the block is 128 KiB, four times a Zen 4's
         * L1, where requests into L2 ran page 1 about 3 points closer to the dense decode
         * (change 33); dropping them cost about 2 points more. */
        if (page_size < BN)
            for (int jj = 0; jj < BN; jj++) {
                for (int c = 0; c < D; c += 64 / (int)sizeof(T)) __builtin_prefetch(kb + prow[jj] * k_ss + c, 0, PF_LOCALITY);
                for (int c = 0; c < DV; c += 64 / (int)sizeof(T)) __builtin_prefetch(vb + prow[jj] * v_ss + c, 0, PF_LOCALITY);
            }
#endif
#define KEY_ROW(jj, j) (kb + prow[jj] * k_ss)
#define VALUE_ROW(jj, j) (vb + prow[jj] * v_ss)
#define KEY_OK(jj) (pok[jj] != 0)
#define NEXT_KEY_ROW(jj) (nok[jj] ? kb + nrow[jj] * k_ss : 0)
#else
#define KEY_ROW(jj, j) (kb + (j) * k_ss)
#define VALUE_ROW(jj, j) (vb + (j) * v_ss)
#define KEY_OK(jj) 1
#define NEXT_KEY_ROW(jj) (j0 + BN + (jj) < jend ? kb + (j0 + BN + (jj)) * k_ss : 0)
#endif
#if HG > 1 && PIPELINE
/* The requests of the HG-head loops. Positions number a block's rows in the order the loops
 * read them: its K rows as the scores loop reads them (0 .. BN*HG - 1: KC keys of each head in
 * turn), its V rows as the values loop reads them (BN*HG .. 2*BN*HG - 1: a head's keys in turn),
 * then the next block's K rows. Each loop requests the row RQ_LEAD positions past the one it
 * reads: 32 rows (16 KiB at d = 128) for 4-byte types, BN*HG (half a block) for 2-byte ones.
 * Measured against half a block for all (bench/NOTES.md change 31): f32 cold 2-8% faster, f16
 * at 16 KiB 1-3% slower. */
#define RQ_LEAD (sizeof(T) == 4 ? min(32, BN * HG) : BN * HG)
#define REQUEST_AT(p)                                                                              \
    do {                                                                                           \
        const int p_ = (p), nkr_ = BN * HG;                                                        \
        __global const T *row_ = 0;                                                                \
        if (p_ < nkr_) {                                                                           \
            const int j_ = p_ / (KC * HG) * KC + p_ % KC;                                          \
            if (j0 + j_ < jend) row_ = KEY_ROW(j_, j0 + j_) + (p_ / KC) % HG * k_sh;               \
        } else if (p_ < 2 * nkr_) {                                                                \
            const int m_ = p_ - nkr_, j_ = m_ % BN;                                                \
            if (j0 + j_ < jend) row_ = VALUE_ROW(j_, j0 + j_) + m_ / BN * v_sh;                    \
        } else {                                                                                   \
            const int m_ = p_ - 2 * nkr_;                                                          \
            row_ = NEXT_KEY_ROW(m_ / (KC * HG) * KC + m_ % KC);                                    \
            if (row_) row_ += (m_ / KC) % HG * k_sh;                                               \
        }                                                                                          \
        if (row_)                                                                                  \
            for (int c_ = 0; c_ < (p_ >= nkr_ && p_ < 2 * nkr_ ? DV : D); c_ += 64 / (int)sizeof(T)) \
                __builtin_prefetch(row_ + c_, 0, PF_LOCALITY);                                     \
    } while (0)
#endif
#if KVEC && KT
        /* two accumulators per row (even and odd dims): BM chains of dependent FMAs alone keep
         * a core with two FMA pipes of latency 4 half busy (bench/NOTES.md change 17) */
        float16 sv[BM], sw[BM];
        #pragma unroll
        for (int r = 0; r < BM; r++) sv[r] = sw[r] = (float16)(0.0f);
        __global const float *kc0 = ktb + (long)(sg.k_tok0 + j0) * D; /* this block's D rows of 16 */
        for (int c = 0; c + 1 < D; c += 2) {
            const float16 kc = vload16(0, kc0 + c * 16), kd = vload16(0, kc0 + (c + 1) * 16);
            #pragma unroll
            for (int r = 0; r < BM; r++) {
                sv[r] = fma((float16)(qs[r][c]), kc, sv[r]);
                sw[r] = fma((float16)(qs[r][c + 1]), kd, sw[r]);
            }
        }
        if (D & 1) {
            const float16 kc = vload16(0, kc0 + (D - 1) * 16);
            #pragma unroll
            for (int r = 0; r < BM; r++) sv[r] = fma((float16)(qs[r][D - 1]), kc, sv[r]);
        }
        #pragma unroll
        for (int r = 0; r < BM; r++) sv[r] += sw[r];
#elif KVEC
        __global const T *kr[16];
        for (int jj = 0; jj < 16; jj++) kr[jj] = KEY_ROW(jj, min(j0 + jj, jend - 1));
#if PIPELINE /* the block's values, read after its scores */
        for (int jj = 0; jj < 16; jj++)
            for (int c = 0; c < DV; c += 64 / (int)sizeof(T)) __builtin_prefetch(VALUE_ROW(jj, min(j0 + jj, jend - 1)) + c, 0, PF_LOCALITY);
#endif
        float16 sv[BM];
        #pragma unroll
        for (int r = 0; r < BM; r++) sv[r] = (float16)(0.0f);
        for (int c = 0; c < D; c++) {
            const float16 kc = (float16)(LOAD1(kr[0] + c), LOAD1(kr[1] + c), LOAD1(kr[2] + c), LOAD1(kr[3] + c),
                                         LOAD1(kr[4] + c), LOAD1(kr[5] + c), LOAD1(kr[6] + c), LOAD1(kr[7] + c),
                                         LOAD1(kr[8] + c), LOAD1(kr[9] + c), LOAD1(kr[10] + c), LOAD1(kr[11] + c),
                                         LOAD1(kr[12] + c), LOAD1(kr[13] + c), LOAD1(kr[14] + c), LOAD1(kr[15] + c));
            #pragma unroll
            for (int r = 0; r < BM; r++) sv[r] = fma((float16)(qs[r][c]), kc, sv[r]);
        }
#endif
#if KVEC
        const int16 jn = (int16)(j0) + (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        #pragma unroll
        for (int r = 0; r < BM; r++) {
#if PAGED
            const int16 ok = (jn >= (int16)(lo[r])) & (jn < (int16)(hi[r])) & (jn < (int16)(jend)) & vload16(0, pok);
#else
            const int16 ok = (jn >= (int16)(lo[r])) & (jn < (int16)(hi[r])) & (jn < (int16)(jend));
#endif
            vstore16(select((float16)(-INFINITY), sv[r], ok), 0, s[r]);
        }
#else
        /* every key of the block allowed for every row (all but a decode's last block): one test
         * a block instead of four a row and key */
        bool full = j0 + BN <= jend && j0 >= jlo_all && j0 + BN <= jhi_all;
#if PAGED
        for (int jj = 0; jj < BN; jj++) full = full && pok[jj];
#endif
/* row r's score of key jn from its dot product x, or -inf where the row or the cache masks it */
#define SCORE(r, x)                                                                                 \
    ((full || (jn >= lo[r] && jn < hi[r] && jn < jend && KEY_OK(jj)))                              \
         ? logit((x), ii[r], jn, sg.off, softcap_log2, slope[r], mrow[r])                           \
         : -INFINITY)
#if HG > 1
        /* KC keys at a time, head by head: their K rows, then each of the head's rows' q vectors
         * against all KC (the t loop kept rolled: unrolled, the compiler hoisted every K load
         * and spilled them) */
        for (int jq = 0; jq < BN; jq += KC) {
            #pragma unroll 1
            for (int hg = 0; hg < HG; hg++) {
                __global const T *kq[KC];
                #pragma unroll
                for (int u = 0; u < KC; u++) kq[u] = KEY_ROW(jq + u, min(j0 + jq + u, jend - 1)) + hg * k_sh;
#if PIPELINE /* KC rows a step, RQ_LEAD positions past this step's */
                #pragma unroll
                for (int u = 0; u < KC; u++) REQUEST_AT(((jq / KC) * HG + hg) * KC + u + RQ_LEAD);
#endif
                VEC dot[BM][KC];
                #pragma unroll
                for (int r = 0; r < BM; r++)
                    #pragma unroll
                    for (int u = 0; u < KC; u++) dot[r][u] = (VEC)(0.0f);
                #pragma unroll 1
                for (int t = 0; t < DQV; t++) {
                    VEC kv[KC];
                    #pragma unroll
                    for (int u = 0; u < KC; u++) kv[u] = LOADV(t, kq[u]);
                    #pragma unroll
                    for (int r = 0; r < BM; r++) {
                        const VEC qt = qv[hg * BM + r][t];
                        #pragma unroll
                        for (int u = 0; u < KC; u++) dot[r][u] = fma(qt, kv[u], dot[r][u]);
                    }
                }
                #pragma unroll
                for (int r = 0; r < BM; r++) {
#if VW == 16 && KC == 4
                    const float4 sum = hsum4(dot[r][0], dot[r][1], dot[r][2], dot[r][3]);
                    const float sr[4] = {sum.s0, sum.s1, sum.s2, sum.s3};
#else
                    float sr[KC];
                    #pragma unroll
                    for (int u = 0; u < KC; u++) sr[u] = hsum(dot[r][u]);
#endif
                    #pragma unroll
                    for (int u = 0; u < KC; u++) {
                        const int jj = jq + u, jn = j0 + jj;
                        s[hg * BM + r][jj] = SCORE(hg * BM + r, sr[u]);
                    }
                }
            }
        }
#else /* one KV head: a key's row, then each of the BM rows against it */
        for (int jj = 0; jj < BN; jj++) {
            const int j = min(j0 + jj, jend - 1);
            __global const T *kr = KEY_ROW(jj, j);
#if PIPELINE /* this key's values, read after the block's scores */
            for (int c = 0; c < DV; c += 64 / (int)sizeof(T)) __builtin_prefetch(VALUE_ROW(jj, j) + c, 0, PF_LOCALITY);
#endif
            VEC kv[DQV];
            #pragma unroll
            for (int t = 0; t < DQV; t++) kv[t] = LOADV(t, kr);
            const int jn = j0 + jj;
#if SUM4
            /* four rows' dot vectors reduced together (hsum4): about 10 shuffles and 5 adds where
             * four hsums took 16 and 16 */
            #pragma unroll
            for (int r = 0; r < BM; r += 4) {
                VEC dot[4];
                #pragma unroll
                for (int u = 0; u < 4; u++) {
                    dot[u] = qv[r + u][0] * kv[0];
                    #pragma unroll
                    for (int t = 1; t < DQV; t++) dot[u] = fma(qv[r + u][t], kv[t], dot[u]);
                }
                const float4 sum = hsum4(dot[0], dot[1], dot[2], dot[3]);
                const float sr[4] = {sum.s0, sum.s1, sum.s2, sum.s3};
                #pragma unroll
                for (int u = 0; u < 4; u++) s[r + u][jj] = SCORE(r + u, sr[u]);
            }
#else
            #pragma unroll
            for (int r = 0; r < BM; r++) {
                VEC dot = qv[r][0] * kv[0];
                #pragma unroll
                for (int t = 1; t < DQV; t++) dot = fma(qv[r][t], kv[t], dot);
                s[r][jj] = SCORE(r, hsum(dot));
            }
#endif
        }
#endif /* HG */
#endif /* KVEC */
        #pragma unroll
        for (int r = 0; r < R; r++) {
#if BN == 16
            const float mx = nan_max(m[r], hmax16(vload16(0, s[r])));
#else
            float mx = m[r];
            for (int jj = 0; jj < BN; jj++) mx = nan_max(mx, s[r][jj]);
#endif
            if (mx == -INFINITY) { /* nothing allowed yet for this row */
                for (int jj = 0; jj < BN; jj++) s[r][jj] = 0.0f;
                continue;
            }
            if (mx > m[r]) { /* rescale only when the running max grows */
                const float alpha = exp2(m[r] - mx);
#if BN == 16
                lv[r] *= alpha;
#else
                l[r] *= alpha;
#endif
                #pragma unroll
                for (int t = 0; t < DVV; t++) acc[r][t] *= alpha;
                m[r] = mx;
            }
#if BN == 16 /* one vector exp2 for 16 scores */
            const float16 pv = exp2(vload16(0, s[r]) - (float16)(mx));
            lv[r] += pv;
            vstore16(pv, 0, s[r]);
#else
            for (int jj = 0; jj < BN; jj++) {
                s[r][jj] = exp2(s[r][jj] - mx);
                l[r] += s[r][jj];
            }
#endif
        }
        const int nb = min(BN, jend - j0);
        /* p = 0 (a masked key) skips the key for that row: 0 * NaN would let garbage in a masked
         * V row (an uninitialised KV cache past seqused_k) poison rows that never see it */
#if HG > 1
        /* head by head, VCH vectors of its BM accumulator rows at a time, in registers over the
         * block's keys */
        #pragma unroll 1
        for (int hg = 0; hg < HG; hg++) {
            #pragma unroll 1
            for (int t0 = 0; t0 < DVV; t0 += VCH) {
                VEC a[BM][VCH];
                #pragma unroll
                for (int r = 0; r < BM; r++)
                    #pragma unroll
                    for (int u = 0; u < VCH; u++) a[r][u] = acc[hg * BM + r][t0 + u];
                for (int jj = 0; jj < nb; jj++) {
                    __global const T *vr = VALUE_ROW(jj, j0 + jj) + hg * v_sh;
#if PIPELINE /* one row every DVV / VCH steps (this head's passes read its BN rows) */
                    const int i = (hg * (DVV / VCH) + t0 / VCH) * BN + jj;
                    if (i % (DVV / VCH) == 0) REQUEST_AT(BN * HG + i / (DVV / VCH) + RQ_LEAD);
#endif
                    VEC vv[VCH];
                    #pragma unroll
                    for (int u = 0; u < VCH; u++) vv[u] = LOADV(t0 + u, vr);
                    #pragma unroll
                    for (int r = 0; r < BM; r++) {
                        const float p = s[hg * BM + r][jj];
                        #pragma unroll
                        for (int u = 0; u < VCH; u++) a[r][u] = p != 0.0f ? fma((VEC)(p), vv[u], a[r][u]) : a[r][u];
                    }
                }
                #pragma unroll
                for (int r = 0; r < BM; r++)
                    #pragma unroll
                    for (int u = 0; u < VCH; u++) acc[hg * BM + r][t0 + u] = a[r][u];
            }
        }
#else
        for (int jj = 0; jj < nb; jj++) {
            __global const T *vr = VALUE_ROW(jj, j0 + jj);
#if PIPELINE /* the next block's key of the same rank, read after these values */
            {
                __global const T *nk = NEXT_KEY_ROW(jj);
                if (nk)
                    for (int c = 0; c < D; c += 64 / (int)sizeof(T)) __builtin_prefetch(nk + c, 0, PF_LOCALITY);
            }
#endif
            VEC vv[DVV];
            #pragma unroll
            for (int t = 0; t < DVV; t++) vv[t] = LOADV(t, vr);
            #pragma unroll
            for (int r = 0; r < BM; r++)
                if (s[r][jj] != 0.0f)
                    #pragma unroll
                    for (int t = 0; t < DVV; t++) acc[r][t] = fma((VEC)(s[r][jj]), vv[t], acc[r][t]);
        }
#endif
    }

    #pragma unroll
    for (int r = 0; r < R; r++) {
        if (r0 + r % BM >= rows) continue; /* tail rows repeat the last row: not stored */
#if BN == 16
        l[r] = hsum16(lv[r]);
#endif
        const float inv = row_inv(l[r]), lse_r = row_lse(m[r], l[r]);
        const long id = row_id(b, hh[r], ii[r], hq, nq, total_q, &sg);
#if SPLIT
        /* partials: o (nsplit, rows_total, DV) and lse (nsplit, rows_total), f32 */
        __global float *po = (__global float *)o_any + ((long)split * rows_total + id) * DV;
        #pragma unroll
        for (int t = 0; t < DVV; t++) VSTOREF(acc[r][t] * inv, t, po);
        lse[lse_off + (long)split * rows_total + id] = lse_r;
#else
        __global T *orow = (__global T *)o_any + sg.o_base + hh[r] * o_sh + ii[r] * o_ss;
        #pragma unroll
        for (int t = 0; t < DVV; t++) STOREV(acc[r][t] * inv, t, orow);
        if (write_lse) lse[lse_off + id] = lse_r;
#endif
    }
}
