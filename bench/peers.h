/* The peers issue 6 measures clattn against, in the same process: OpenBLAS SGEMM (square 2048),
 * an unfused attention built from OpenBLAS GEMMs and a C softmax (B=1, H=8, N=2048, d=64, with
 * the same FLOP count as clattn's), and a streaming read of 256 MiB on as many threads as OpenBLAS uses. A benchmark
 * dependency only: the library never links OpenBLAS. */
#ifndef CLATTN_PEERS_H
#define CLATTN_PEERS_H

typedef struct peer_figures {
    double sgemm_gflops;        /* median */
    double attn_gflops;         /* non-causal, FlashAttention's count */
    double attn_causal_gflops;  /* causal: FLOPs halved, as clattn's (the GEMMs still do all) */
    double stream_gbs;
} peer_figures;

/* Median of `reps` runs of each after a warm-up. Returns 0, or 1 after printing why. */
int peers_measure(int reps, peer_figures *out);

#endif
