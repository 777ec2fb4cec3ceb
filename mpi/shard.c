/* Zigzag sharding: which rows of a sequence each rank holds, and which keys each rank's queries
 * see at each step of the ring. */
#include "ring.h"

/* First row of chunk c of 2P near-equal chunks. */
static int chunk_start(int seq, int ranks, int c) { return (int)((int64_t)c * seq / (2 * (int64_t)ranks)); }

clattn_status clattn_ring_shard_of(int seq, int ranks, int rank, clattn_ring_shard *out)
{
    if (!out || seq < 1 || ranks < 1 || rank < 0 || rank >= ranks) return CLATTN_INVALID_ARGUMENT;
    const int chunks[2] = {rank, 2 * ranks - 1 - rank};
    for (int i = 0; i < 2; i++) {
        out->start[i] = chunk_start(seq, ranks, chunks[i]);
        out->len[i] = chunk_start(seq, ranks, chunks[i] + 1) - out->start[i];
    }
    out->total = out->len[0] + out->len[1];
    return CLATTN_SUCCESS;
}

/* The attention calls of one step: this rank's queries (shard q) against the K/V shard of rank
 * `src` (shard k). Without a mask, all against all. Causal (seq_q == seq_kv, so both are cut
 * the same way, and chunk i of one equals chunk i of the other):
 *   - step 0, own keys: the early chunk against itself, causal; the late chunk against both
 *     chunks, causal aligned bottom-right (the early chunk lies wholly before it, and its own
 *     rows end where its keys end);
 *   - src < rank: src's early chunk lies before both of ours and its late chunk after both:
 *     all queries against the early chunk, no mask;
 *   - src > rank: src's early chunk lies after our early chunk but before our late one, and its
 *     late chunk before our late one: the late chunk against both, no mask.
 * Each rank thus does, at every step after the first, half the work of its whole shard. Calls
 * with no rows or no keys are left out. Returns the number of calls (at most 2). */
int clattn__ring_calls(bool causal, int rank, int src, const clattn_ring_shard *q, const clattn_ring_shard *k,
                       ring_call calls[2])
{
    ring_call c[2];
    int n = 0;
    if (!causal) {
        c[n++] = (ring_call){0, q->total, 0, k->total, false};
    } else if (src == rank) {
        c[n++] = (ring_call){0, q->len[0], 0, k->len[0], true};
        c[n++] = (ring_call){q->len[0], q->len[1], 0, k->total, true};
    } else if (src < rank) {
        c[n++] = (ring_call){0, q->total, 0, k->len[0], false};
    } else {
        c[n++] = (ring_call){q->len[0], q->len[1], 0, k->total, false};
    }
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (c[i].nq > 0 && c[i].nk > 0) calls[kept++] = c[i];
    return kept;
}
