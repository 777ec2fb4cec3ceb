/* clattn_mpi's private declarations: the ring's state and the sharding rules (shard.c). */
#ifndef CLATTN_RING_H
#define CLATTN_RING_H

#include "clattn_mpi.h"

#include <stdbool.h>

#ifdef __GNUC__
#define CLATTN_RING_HIDDEN __attribute__((visibility("hidden")))
#else
#define CLATTN_RING_HIDDEN
#endif

/* One attention call of a step: local query rows [q0, q0 + nq) against keys [k0, k0 + nk) of
 * the K/V shard at hand, causal (bottom-right) or not. */
typedef struct ring_call {
    int q0, nq, k0, nk;
    bool causal;
} ring_call;

CLATTN_RING_HIDDEN int clattn__ring_calls(bool causal, int rank, int src, const clattn_ring_shard *q,
                                          const clattn_ring_shard *k, ring_call calls[2]);

#endif
