/* Softmax of the unfused path: one pass over rows of S = scale * Q K^T (written by CLBlast)
 * that applies everything of DESIGN.md's formula — softcap, ALiBi, additive mask with
 * broadcast strides, causal/sliding window in either alignment, per-batch key lengths,
 * attention sinks — and overwrites S with the normalised probabilities P, so that O = P V is
 * the second GEMM. Writes lse. A row with no allowed key gets P = 0 and lse = -inf (or the
 * sink logit).
 *
 * Tuning parameters (-D):
 *   SMW  work-items per row (a power of two; 1 on CPU devices: no barriers)
 *
 * Switches (-D): SEQUSED (per-batch key lengths), PAGED (a paged cache: key counts after the
 * append, keys on pages outside the cache masked), VARLEN (packed sequences: S holds padded
 * rows; the lengths come from cu_q/cu_k, rows past a sequence's end get P = 0 and no lse).
 *
 * NDRange: (rows * SMW, items), local (SMW, 1). Item p of the chunk is (batch, head) pair
 * bh0 + p; row r of the item is query row r0 + r. */

#ifndef SMW
#define SMW 1
#endif

/* Reduction over the SMW work-items of a row, through local memory. */
#if SMW > 1
inline float reduce(__local float *red, float x, int lid, int is_max)
{
    red[lid] = x;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int w = SMW / 2; w > 0; w /= 2) {
        if (lid < w) red[lid] = is_max ? nan_max(red[lid], red[lid + w]) : red[lid] + red[lid + w];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}
#endif

__kernel __attribute__((reqd_work_group_size(SMW, 1, 1)))
void clattn_softmax(__global float *s, int rows, int nk, int bh0, int r0, int nq, int hq,
                    __global float *lse, ulong lse_off, int write_lse,
                    float softcap,
                    __global const float *alibi, int has_alibi,
                    __global const float *mask, long m_sb, long m_sh, long m_ss,
                    int has_mask,
                    __global const float *sinks, int has_sinks,
                    __global const int *seqused_k, __global const int *cu_q, __global const int *cu_k,
                    int total_q, int total_k, int top_left, int wl, int wr,
                    __global const int *block_table, int page_size, int pages_per_seq, int num_pages, int seq_new)
{
    const int lid = (int)get_local_id(0);
    const int r = (int)get_group_id(0);
    const int p = (int)get_global_id(1);
    if (r >= rows) return; /* uniform per work-group */
    const int bh = bh0 + p, b = bh / hq, h = bh % hq, i = r0 + r;
    __global float *row = s + ((long)p * rows + r) * nk;
    const unfused_row u =
        unfused_row_at(b, h, bh, i, nq, nk, top_left, seqused_k, cu_q, cu_k, total_q, total_k, seq_new);
#if PAGED
    __global const int *table = block_table + (long)b * pages_per_seq;
#endif
    const int off = u.off;
    if (i >= u.nq) { /* padding row of a packed sequence: P = 0 */
        for (int j = lid; j < nk; j += SMW) row[j] = 0.0f;
        return; /* uniform over the work-group */
    }
    const int lo = row_lo(i, off, wl), hi = row_hi(i, off, wr, u.nk);
    const float slope = has_alibi ? alibi[h] : 0.0f;
    __global const float *mrow = mask + b * m_sb + h * m_sh + i * m_ss;
    const float sink = has_sinks ? sinks[h] : -INFINITY;

    /* pass 1: final logits in place, running max */
    float mx = sink;
    for (int j = lid; j < nk; j += SMW) {
        float x = -INFINITY;
#if PAGED
        if (j >= lo && j < hi && paged_row(table, j, page_size, num_pages) >= 0)
#else
        if (j >= lo && j < hi)
#endif
            x = unfused_logit(row[j], i, j, off, softcap, has_alibi, slope, has_mask, mrow);
        row[j] = x;
        mx = nan_max(mx, x);
    }
#if SMW > 1
    __local float red[SMW];
    mx = reduce(red, mx, lid, 1);
#endif
    /* pass 2: exponentials and their sum (a row with no finite logit keeps P = 0) */
    const float m = mx == -INFINITY ? 0.0f : mx;
    float sum = 0.0f;
    for (int j = lid; j < nk; j += SMW) {
        const float e = exp(row[j] - m);
        row[j] = e;
        sum += e;
    }
#if SMW > 1
    sum = reduce(red, sum, lid, 0);
#endif
    if (has_sinks) sum += exp(sink - m);
    const float inv = sum > 0.0f || isnan(sum) ? 1.0f / sum : 0.0f;
    for (int j = lid; j < nk; j += SMW) row[j] *= inv;
    if (write_lse && lid == 0)
        lse[lse_off + u.id] = sum > 0.0f || isnan(sum) ? m + log(sum) : (has_sinks ? sink : -INFINITY);
}
