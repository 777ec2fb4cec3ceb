/* The peers issue 6 measures clattn against, in the same process: OpenBLAS SGEMM (square 2048),
 * an unfused attention built from OpenBLAS GEMMs and a C softmax (B=1, H=8, N=2048, d=64, with
 * the same FLOP count as clattn's), and a streaming read of 256 MiB on as many threads as OpenBLAS uses. A benchmark
 * dependency only: the library never links OpenBLAS. */
#ifndef CLATTN_PEERS_H
#define CLATTN_PEERS_H

#include "suite.h"

#include <stdbool.h>

typedef struct peer_figures {
    double sgemm_gflops;        /* median */
    double attn_gflops;         /* non-causal, FlashAttention's count */
    double attn_causal_gflops;  /* causal: FLOPs halved, as clattn's (the GEMMs still do all) */
    double stream_gbs;
} peer_figures;

/* Median of `reps` runs of each after a warm-up. Returns 0, or 1 after printing why. */
int peers_measure(int reps, peer_figures *out);

/* PyTorch's scaled_dot_product_attention on the CPU (bench/peer_torch.py run by $CLATTN_PYTHON,
 * else python3): optional, absent with a note when torch cannot be imported. */
#define TORCH_PEER_MAX 64
typedef struct torch_peer {
    bool present;
    char version[48];
    int threads;
    char note[240]; /* why it is absent */
    int n;
    int id[TORCH_PEER_MAX];
    double ms[TORCH_PEER_MAX];
} torch_peer;

/* f32 SDPA on each case at `threads` threads (median ms per case id); cases whose causal mask
 * PyTorch cannot express (bottom-right with 1 < Nq != Nk) are left out. Never fails: an absent
 * or broken torch leaves out->present false and says why. */
void peers_torch(const bench_case *cases, int ncases, int threads, torch_peer *out);
/* The ms measured for a case id, or a negative value. */
double peers_torch_ms(const torch_peer *t, int id);

#endif
