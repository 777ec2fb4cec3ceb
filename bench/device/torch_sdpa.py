#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention on clattn's benchmark shapes (cases 3-6, 9, 11, 12 and
20-22), fp32, bf16 and fp16, CUDA events, warm-up, median of 20: the peer figures for
bench/RESULTS.md. Exits 0 with a note when torch or CUDA is missing."""
import statistics
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("torch is not installed: no SDPA peer")
    sys.exit(0)
if not torch.cuda.is_available():
    print("CUDA is not available: no SDPA peer")
    sys.exit(0)

CASES = {3: (1, 8, 8, 2048, 2048, 64, 0), 4: (1, 8, 8, 2048, 2048, 64, 1), 5: (1, 8, 8, 2048, 2048, 128, 0),
         6: (1, 8, 8, 2048, 2048, 128, 1), 9: (1, 32, 8, 2048, 2048, 128, 1), 11: (1, 8, 8, 8192, 8192, 64, 1),
         12: (1, 8, 8, 128, 128, 64, 0), 20: (1, 32, 8, 1, 4096, 128, 1), 21: (1, 32, 8, 1, 32768, 128, 1),
         22: (4, 32, 8, 1, 8192, 128, 1)}
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
print(f"{'id':>3} {'dtype':>5} {'ms':>9} {'GFLOP/s':>9} {'GB/s':>8}")
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    for cid, (b, hq, hkv, nq, nk, d, causal) in CASES.items():
        q = torch.randn(b, hq, nq, d, device="cuda", dtype=dtype)
        k = torch.randn(b, hkv, nk, d, device="cuda", dtype=dtype)
        v = torch.randn(b, hkv, nk, d, device="cuda", dtype=dtype)
        # bottom-right causal as clattn: for Nq = Nk it equals is_causal; decode (Nq = 1) sees all keys
        kw = dict(is_causal=bool(causal and nq == nk), enable_gqa=hq != hkv)
        for _ in range(3):
            F.scaled_dot_product_attention(q, k, v, **kw)
        times = []
        for _ in range(20):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            F.scaled_dot_product_attention(q, k, v, **kw)
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        ms = statistics.median(times)
        flops = 4 * b * hq * nq * nk * d / (2 if causal and nq == nk else 1)
        nbytes = q.element_size() * (2 * b * hq * nq * d + 2 * b * hkv * nk * d)
        print(f"{cid:>3} {str(dtype)[6:]:>5} {ms:9.3f} {flops / ms / 1e6:9.1f} {nbytes / ms / 1e6:8.1f}")
