/*
 * clattn_mpi — ring attention over MPI: one attention whose sequence is split across processes
 * (and their devices), each holding a shard of q, k and v. The core library never links MPI;
 * this component (libclattn_mpi, CMake `find_package(clattn COMPONENTS mpi)` -> clattn::mpi,
 * pkg-config `clattn-mpi`) does.
 *
 * Sharding (zigzag, as context-parallel inference runs it): the sequence is cut into 2P
 * near-equal chunks (chunk c holds rows floor(c N / 2P) .. floor((c+1) N / 2P) - 1) and rank r
 * holds chunks r and 2P-1-r, in that order, as its local sequence. With a causal mask each rank
 * then has the same work (rank r's early chunk sees little, its late chunk much). q is sharded
 * over seq_q, k and v over seq_kv, each by the same rule; clattn_ring_shard says which rows.
 *
 * Each rank passes its shards as device buffers laid out as the descriptor's layout says (BHSD
 * or BSHD) with the shard's length in place of the sequence: q (B, Hq, n_q, d), k and v
 * (B, Hkv, n_k, d|dv), o like q with dv, lse (B, Hq, n_q) f32. The K/V shards travel around
 * the ring (rank r sends to r+1), staged through host memory and double-buffered (OpenCL has no
 * device-direct MPI), overlapped with the local fused attention on the shard at hand; each
 * step's (o, lse) folds into an f32 accumulator (clattn_merge_fold), written out at the end.
 *
 * Served: the descriptor of the whole attention (seq_q, seq_kv the full lengths), f32/f16/bf16,
 * BHSD or BSHD, GQA/MQA, scale, softcap, causal (then seq_q == seq_kv; both alignments are then
 * the same), lse out. Refused with CLATTN_UNSUPPORTED: windows, ALiBi, masks, sinks, per-batch
 * key lengths, packed sequences, paged caches, explicit strides, the backward pass.
 *
 * Every call here is collective over the communicator: every rank calls it, with the same
 * descriptor. A failure on any rank (a bad argument, an OpenCL error, descriptors that differ)
 * makes every rank return an error: the failing rank its own status, the others
 * CLATTN_PEER_FAILED with a message naming that rank; no rank is left waiting. A process that
 * dies ends the MPI job, as MPI does.
 */
#ifndef CLATTN_MPI_H
#define CLATTN_MPI_H

#include "clattn.h"

#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One rank's rows of a sequence: chunks r and 2P-1-r, local rows 0..len[0]-1 then the rest. */
typedef struct clattn_ring_shard {
    int start[2], len[2]; /* the chunks' first rows in the whole sequence, and their lengths */
    int total;            /* len[0] + len[1]: the shard's length */
} clattn_ring_shard;

/* The shard of rank `rank` of `ranks` for a sequence of `seq` rows (seq >= 1; a shard may be
 * empty when seq < 2 ranks). */
CLATTN_API clattn_status clattn_ring_shard_of(int seq, int ranks, int rank, clattn_ring_shard *out);

typedef struct clattn_ring clattn_ring;

/* Collective. Checks the descriptor (the whole attention) on every rank, checks that all ranks
 * pass the same one, and makes the plans of every step this rank will run on ctx's device.
 * `comm` is duplicated (the ring's messages never meet the application's). On failure *out is
 * NULL and `message` (may be NULL) says what is wrong. */
CLATTN_API clattn_status clattn_ring_create(clattn_context *ctx, MPI_Comm comm, const clattn_desc *desc,
                                            clattn_ring **out, char *message, size_t message_size);

/* Collective. Computes this rank's rows of o (and of lse, optional) from its shards. `queue`
 * must be in order, on ctx's context and device. Blocks until the result is complete (the
 * ring's communication needs the host); returns the same verdict on every rank. o and lse are
 * written only once every rank's computation has succeeded; if storing them then fails on one
 * rank (an OpenCL error), the others' o and lse are already written and every rank reports the
 * failure. */
CLATTN_API clattn_status clattn_ring_forward(clattn_ring *ring, cl_command_queue queue, cl_mem q, cl_mem k, cl_mem v,
                                             cl_mem o, cl_mem lse);

/* What the last clattn_ring_forward measured for one step (0 .. ranks-1): wall milliseconds from
 * the step's start until its computation finished, until its transfer finished (0 on the last
 * step, which sends nothing), and until both had (the step's time). */
typedef struct clattn_ring_step {
    size_t struct_size; /* sizeof(clattn_ring_step): set by CLATTN_RING_STEP_INIT */
    double compute_ms, comm_ms, step_ms;
    double bytes; /* K/V bytes this rank received in the step */
} clattn_ring_step;
#define CLATTN_RING_STEP_INIT {sizeof(clattn_ring_step)}
CLATTN_API clattn_status clattn_ring_step_stats(const clattn_ring *ring, int step, clattn_ring_step *out);

/* The ring's ranks, this rank, and the message of its last failure ("" if none). */
CLATTN_API int clattn_ring_size(const clattn_ring *ring);
CLATTN_API int clattn_ring_rank(const clattn_ring *ring);
CLATTN_API const char *clattn_ring_last_error(const clattn_ring *ring);

/* Collective (it frees the duplicate communicator, as MPI_Comm_free does; call it before
 * MPI_Finalize): releases this rank's plans and buffers. NULL is fine. */
CLATTN_API void clattn_ring_destroy(clattn_ring *ring);

#ifdef __cplusplus
}
#endif
#endif /* CLATTN_MPI_H */
