#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on the CPU, the peer a CPU user would pick today (PyTorch
2 has a fused flash-attention CPU kernel), on the shapes `clattn bench --peers` gives it.

Usage: peer_torch.py THREADS ID:B:HQ:HKV:NQ:NK:D:CAUSAL ...
Prints `torch VERSION threads N`, then `ID MS` per case (f32, median of timed calls after two
warm-ups, at least 5 calls and about 1.5 s per case), or one line `absent: WHY` when torch cannot
be imported. Causal is bottom-right as clattn's; only Nq = Nk is given causal (where top-left,
PyTorch's `is_causal`, is the same)."""
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except Exception as e:  # ImportError, or a broken install
    print(f"absent: torch cannot be imported ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    sys.exit(0)

threads = int(sys.argv[1])
torch.set_num_threads(threads)
print(f"torch {torch.__version__} threads {torch.get_num_threads()}", flush=True)
gen = torch.Generator().manual_seed(7)
for spec in sys.argv[2:]:
    cid, b, hq, hkv, nq, nk, d, causal = (int(x) for x in spec.split(":"))
    q = torch.rand(b, hq, nq, d, generator=gen) - 0.5
    k = torch.rand(b, hkv, nk, d, generator=gen) - 0.5
    v = torch.rand(b, hkv, nk, d, generator=gen) - 0.5
    kw = dict(is_causal=bool(causal), enable_gqa=hq != hkv)
    with torch.inference_mode():
        for _ in range(2):
            F.scaled_dot_product_attention(q, k, v, **kw)
        times, t_end = [], time.perf_counter() + 1.5
        while len(times) < 5 or (time.perf_counter() < t_end and len(times) < 200):
            t0 = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v, **kw)
            times.append((time.perf_counter() - t0) * 1e3)
    print(f"{cid} {statistics.median(times):.4f}", flush=True)
