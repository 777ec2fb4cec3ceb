#!/usr/bin/env python3
"""`clattn run` against attention64 on random tensors: for each case, write q/k/v .npy files,
run the program, and compare o and lse (relative L2 <= 1e-5 for float32). Also checks that a
flag the chosen algorithm cannot honour fails cleanly and writes nothing.
usage: check_run.py CLATTN_BINARY WORKDIR [--algo fused|reference|auto]"""
import os
import subprocess
import sys

try:
    import numpy as np
except ImportError:  # one line, not a traceback
    sys.exit("check_run.py: python3's numpy is missing (apt-get install python3-numpy)")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attention64 import attention64, attention64_varlen  # noqa: E402

TOL = {"f32": 1e-5, "f16": 2e-3, "bf16": 1e-2}


def to_storage(x, dtype):
    """float32 array -> what clattn reads for the dtype, and the float64 values it holds."""
    if dtype == "f16":
        s = x.astype(np.float16)
        return s, s.astype(np.float64)
    if dtype == "bf16":  # round to nearest even into the high half of a float32
        u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
        u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        return u, (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return x, x.astype(np.float64)


def from_storage(x, dtype):
    if dtype == "bf16":
        return (x.astype(np.uint32) << 16).view(np.float32)
    return x.astype(np.float32)


def rel_l2(a, b):
    a = a.astype(np.float64)
    fin = np.isfinite(b)
    if not np.array_equal(np.isfinite(a), fin) or not np.array_equal(a[~fin], b[~fin]):
        return np.inf
    den = np.linalg.norm(b[fin])
    return np.linalg.norm(a[fin] - b[fin]) / (den if den > 0 else 1.0)


def run_case(exe, work, algo, name, B, Hq, Hkv, Nq, Nk, D, Dv=None, layout="bhsd", causal=False,
             top_left=False, scale=None, window=None, softcap=0.0, mask=None, alibi=False,
             sinks=False, seqlens_k=False, seed=0, dtype="f32", varlen=False, splits=None):
    rng = np.random.default_rng(seed)
    Dv = Dv or D
    def shp(h, n, d):
        return (B, n, h, d) if layout == "bshd" else (B, h, n, d)
    if varlen:  # per-sequence lengths, the first empty, the longest occurring
        lens_q = np.concatenate([[0], rng.integers(1, Nq + 1, size=B - 2), [Nq]]).astype(np.int32)
        lens_k = np.concatenate([[Nk // 2], rng.integers(1, Nk + 1, size=B - 2), [Nk]]).astype(np.int32)
        cu_q = np.concatenate([[0], np.cumsum(lens_q)])
        cu_k = np.concatenate([[0], np.cumsum(lens_k)])
    shapes = ([(int(cu_q[-1]), Hq, D), (int(cu_k[-1]), Hkv, D), (int(cu_k[-1]), Hkv, Dv)] if varlen
              else [shp(Hq, Nq, D), shp(Hkv, Nk, D), shp(Hkv, Nk, Dv)])
    q32, k32, v32 = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    (q, q64), (k, k64), (v, v64) = (to_storage(x, dtype) for x in (q32, k32, v32))
    paths = {x: os.path.join(work, f"{name}_{x}.npy")
             for x in ("q", "k", "v", "o", "lse", "mask", "alibi", "sinks", "seqlens", "lens_q", "lens_k")}
    extra = {}
    if mask is not None:  # mask = (batch broadcast?, head broadcast?)
        m = rng.standard_normal((1 if mask[0] else B, 1 if mask[1] else Hq, Nq, Nk)).astype(np.float32)
        m[rng.random(m.shape) < 0.2] = -np.inf
        extra["mask"] = m
    if alibi:
        extra["alibi"] = (2.0 ** -np.arange(1, Hq + 1)).astype(np.float32)
    if sinks:
        extra["sinks"] = rng.standard_normal(Hq).astype(np.float32)
    if seqlens_k:
        extra["seqlens"] = rng.integers(0, Nk + 1, size=B).astype(np.int32)
    if varlen:
        extra["lens_q"], extra["lens_k"] = lens_q, lens_k
    for x, arr in [("q", q), ("k", k), ("v", v)] + list(extra.items()):
        np.save(paths[x], arr)
    for x in ("o", "lse"):
        if os.path.exists(paths[x]):
            os.remove(paths[x])
    cmd = [exe, "run", "--q", paths["q"], "--k", paths["k"], "--v", paths["v"], "--out", paths["o"],
           "--lse", paths["lse"], "--algo", algo]
    if not varlen:
        cmd += ["--layout", layout]
    if dtype != "f32":
        cmd += ["--dtype", dtype]
    if splits and algo != "reference":  # the reference refuses a device's flag (checked in main)
        cmd += ["--splits", str(splits)]
    if causal:
        cmd.append("--causal")
    if top_left:
        cmd += ["--causal-align", "top-left"]
    if scale is not None:
        cmd += ["--scale", repr(scale)]
    if window is not None:
        cmd += ["--window", f"{window[0]},{window[1]}"]
    if softcap:
        cmd += ["--softcap", repr(softcap)]
    for x, flag in (("mask", "--mask"), ("alibi", "--alibi"), ("sinks", "--sinks"), ("seqlens", "--seqused-k"),
                    ("lens_q", "--seqlens-q"), ("lens_k", "--seqlens-k")):
        if x in extra:
            cmd += [flag, paths[x]]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return f"{name}: clattn run failed: {r.stderr.strip()}"
    kw = dict(causal=causal, top_left=top_left, scale=scale, window=window, softcap=softcap,
              mask=extra.get("mask"), alibi=extra.get("alibi"), sinks=extra.get("sinks"),
              seqlens_k=extra.get("seqlens"))
    if varlen:
        o_ref, lse_ref = attention64_varlen(q64, k64, v64, cu_q, cu_k, **kw)
    else:
        o_ref, lse_ref = attention64(q64, k64, v64, layout=layout, **kw)
    o = np.load(paths["o"])
    lse = np.load(paths["lse"])
    if o.shape != o_ref.shape or o.dtype != q.dtype or lse.shape != lse_ref.shape:
        return f"{name}: wrong output shape/dtype {o.shape} {o.dtype} {lse.shape}"
    # the reference output rounded to the storage type once, as clattn's is
    o_ref = from_storage(to_storage(o_ref.astype(np.float32), dtype)[0], dtype).astype(np.float64)
    eo, el = rel_l2(from_storage(o, dtype), o_ref), rel_l2(lse, lse_ref)
    status = "ok" if eo <= TOL[dtype] and el <= 1e-5 else "FAIL"
    print(f"{status:4} {name:40} relL2(o)={eo:.2e} relL2(lse)={el:.2e}")
    return None if status == "ok" else f"{name}: error above the bound"


CASES = [
    ("tiny", dict(B=1, Hq=1, Hkv=1, Nq=1, Nk=1, D=32)),
    ("prefill_causal", dict(B=1, Hq=8, Hkv=8, Nq=256, Nk=256, D=64, causal=True)),
    ("odd_noncausal", dict(B=2, Hq=3, Hkv=3, Nq=37, Nk=53, D=40)),
    ("gqa_bshd", dict(B=2, Hq=8, Hkv=2, Nq=65, Nk=65, D=80, layout="bshd", causal=True)),
    ("mqa_decode", dict(B=3, Hq=8, Hkv=1, Nq=1, Nk=300, D=128, causal=True)),
    ("nq_gt_nk_causal", dict(B=1, Hq=2, Hkv=2, Nq=50, Nk=20, D=96, causal=True)),
    ("top_left", dict(B=1, Hq=2, Hkv=1, Nq=20, Nk=50, D=112, causal=True, top_left=True)),
    ("window", dict(B=1, Hq=4, Hkv=4, Nq=100, Nk=130, D=64, window=(7, 3))),
    ("scale_dv", dict(B=1, Hq=2, Hkv=2, Nq=33, Nk=17, D=256, Dv=64, scale=0.3)),
    ("f16", dict(B=2, Hq=4, Hkv=2, Nq=19, Nk=40, D=64, causal=True, dtype="f16")),
    ("bf16_bshd", dict(B=1, Hq=4, Hkv=1, Nq=9, Nk=30, D=128, layout="bshd", dtype="bf16")),
    ("varlen_causal", dict(B=4, Hq=4, Hkv=2, Nq=20, Nk=33, D=64, causal=True, varlen=True)),
    ("decode_splits", dict(B=2, Hq=8, Hkv=2, Nq=1, Nk=900, D=64, causal=True, splits=4)),
    ("mask_full", dict(B=2, Hq=2, Hkv=1, Nq=9, Nk=13, D=32, mask=(False, False))),
    ("mask_bcast_batch", dict(B=2, Hq=2, Hkv=2, Nq=9, Nk=13, D=32, mask=(True, False), causal=True)),
    ("mask_bcast_both", dict(B=2, Hq=4, Hkv=2, Nq=5, Nk=7, D=16, mask=(True, True))),
    ("alibi_causal", dict(B=1, Hq=4, Hkv=4, Nq=12, Nk=20, D=32, alibi=True, causal=True)),
    ("softcap_big_logits", dict(B=1, Hq=2, Hkv=2, Nq=10, Nk=10, D=64, softcap=5.0, scale=4.0)),
    ("sinks_window", dict(B=1, Hq=3, Hkv=3, Nq=15, Nk=15, D=32, sinks=True, window=(2, 0))),
    ("seqused_k", dict(B=4, Hq=2, Hkv=1, Nq=3, Nk=40, D=32, seqlens_k=True, causal=True)),
    ("varlen_sinks_f16", dict(B=3, Hq=2, Hkv=2, Nq=12, Nk=12, D=32, sinks=True, varlen=True, dtype="f16")),
]

def main():
    exe, work = sys.argv[1], sys.argv[2]
    algo = sys.argv[sys.argv.index("--algo") + 1] if "--algo" in sys.argv else "fused"
    os.makedirs(work, exist_ok=True)
    failures = []
    cases = CASES
    for i, (name, kw) in enumerate(cases):
        err = run_case(exe, work, algo, name, seed=1234 + i, **kw)
        if err:
            failures.append(err)
            print(err)
    # What the fused path cannot serve (head dim 640) must fail with one line and write nothing.
    rng = np.random.default_rng(9)
    base = os.path.join(work, "unsupported")
    for x in ("q", "k", "v"):
        np.save(f"{base}_{x}.npy", rng.standard_normal((1, 2, 8, 640)).astype(np.float32))
    if os.path.exists(f"{base}_o.npy"):
        os.remove(f"{base}_o.npy")
    r = subprocess.run([exe, "run", "--q", f"{base}_q.npy", "--k", f"{base}_k.npy", "--v", f"{base}_v.npy",
                        "--out", f"{base}_o.npy", "--algo", "fused"],
                       capture_output=True, text=True)
    if algo == "fused":
        if r.returncode == 0 or os.path.exists(f"{base}_o.npy") or len(r.stderr.strip().splitlines()) != 1 \
                or "not supported" not in r.stderr:
            failures.append(f"unsupported flag: rc={r.returncode} stderr={r.stderr!r}")
        else:
            print("ok   unsupported descriptor refused:", r.stderr.strip())
    # Outputs are written all or none: a later output that cannot be written leaves an earlier
    # one's old file as it was (no partial set, nothing of the old set lost).
    small = os.path.join(work, "allornone")
    for x, n in (("q", 3), ("k", 5), ("v", 5)):
        np.save(f"{small}_{x}.npy", rng.standard_normal((1, 2, n, 8)).astype(np.float32))
    with open(f"{small}_lse.npy", "wb") as f:
        f.write(b"old")
    r = subprocess.run([exe, "run", "--q", f"{small}_q.npy", "--k", f"{small}_k.npy", "--v", f"{small}_v.npy",
                        "--lse", f"{small}_lse.npy", "--out", "/nonexistent-dir/o.npy", "--algo", algo],
                       capture_output=True, text=True)
    kept = open(f"{small}_lse.npy", "rb").read() == b"old"
    if r.returncode == 0 or not kept or "/nonexistent-dir" not in r.stderr:
        failures.append(f"all or none: rc={r.returncode} old lse kept={kept} stderr={r.stderr!r}")
    else:
        print("ok   outputs all or none: the old lse file kept")
    # The CPU reference runs on the host: a device's flags are refused, never ignored.
    if algo == "reference":
        for extra, flag in ((["--algo", "reference", "--splits", "2"], "--splits"),
                            (["--expect", f"{small}_q.npy", "--device", "0"], "--device")):
            if os.path.exists(f"{small}_o.npy"):
                os.remove(f"{small}_o.npy")
            r = subprocess.run([exe, "run", "--q", f"{small}_q.npy", "--k", f"{small}_k.npy", "--v", f"{small}_v.npy",
                                "--out", f"{small}_o.npy", *extra], capture_output=True, text=True)
            if r.returncode == 0 or os.path.exists(f"{small}_o.npy") or flag not in r.stderr \
                    or len(r.stderr.strip().splitlines()) != 1:
                failures.append(f"reference with {flag}: rc={r.returncode} stderr={r.stderr!r}")
            else:
                print(f"ok   reference with {flag} refused:", r.stderr.strip())
    print(f"{len(cases) - len([f for f in failures if not f.startswith('unsupported')])} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
