#!/usr/bin/env python3
"""`clattn run ... --do --dq --dk --dv` against an independent float64 NumPy backward, for the
fused, unfused and reference algorithms; and the gradient files byte-identical between a run
with one PoCL thread and one with the default (determinism across thread counts).
usage: check_backward.py CLATTN_BINARY WORKDIR"""
import os
import subprocess
import sys

try:
    import numpy as np
except ImportError:  # one line, not a traceback
    sys.exit("check_backward.py: python3's numpy is missing (apt-get install python3-numpy)")

from tally import expect, summary  # noqa: E402


def backward64(q, k, v, do, causal=False, softcap=0.0, sinks=None):
    """BHSD float64: o, lse and the gradients dq, dk, dv (and dsinks) of sum(do * o)."""
    q, k, v, do = (x.astype(np.float64) for x in (q, k, v, do))
    B, Hq, Nq, D = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    g = Hq // Hkv
    kr, vr = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    scale = 1.0 / np.sqrt(D)
    z = scale * np.einsum("bhid,bhjd->bhij", q, kr)
    s = softcap * np.tanh(z / softcap) if softcap else z
    if causal:  # bottom-right
        allowed = np.arange(Nk)[None, :] <= np.arange(Nq)[:, None] + Nk - Nq
        s = np.where(allowed, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    if sinks is not None:
        m = np.maximum(m, sinks.astype(np.float64)[None, :, None, None])
    m = np.where(np.isfinite(m), m, 0.0)
    den = np.exp(s - m).sum(axis=-1, keepdims=True)
    if sinks is not None:
        den = den + np.exp(sinks.astype(np.float64)[None, :, None, None] - m)
    lse = m + np.log(den)
    p = np.exp(s - lse)
    o = np.einsum("bhij,bhjd->bhid", p, vr)
    Dv = (do * o).sum(axis=-1)
    dp = np.einsum("bhid,bhjd->bhij", do, vr)
    ds = p * (dp - Dv[..., None])
    if softcap:
        ds = ds * (1 - np.tanh(z / softcap) ** 2)
    dq = scale * np.einsum("bhij,bhjd->bhid", ds, kr)
    dk = (scale * np.einsum("bhij,bhid->bhjd", ds, q)).reshape(B, Hkv, g, Nk, D).sum(axis=2)
    dv = np.einsum("bhij,bhid->bhjd", p, do).reshape(B, Hkv, g, Nk, D).sum(axis=2)
    dsinks = None
    if sinks is not None:
        dsinks = -(Dv * np.exp(sinks.astype(np.float64)[None, :, None] - lse[..., 0])).sum(axis=(0, 2))
    return o, lse[..., 0], dq, dk, dv, dsinks


def rel_l2(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


def run(exe, *args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([exe, "run", *args], capture_output=True, text=True, env=e)


def main():
    exe, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(2026)
    cases = [  # name, B, Hq, Hkv, Nq, Nk, D, causal, softcap, sinks
        ("plain", 1, 2, 2, 33, 47, 32, False, 0.0, False),
        ("gqa_causal", 2, 4, 2, 29, 53, 64, True, 0.0, False),
        ("softcap_sinks", 1, 4, 1, 17, 40, 32, True, 4.0, True),
    ]
    for name, B, Hq, Hkv, Nq, Nk, D, causal, softcap, sinks in cases:
        q = rng.standard_normal((B, Hq, Nq, D)).astype(np.float32)
        k = rng.standard_normal((B, Hkv, Nk, D)).astype(np.float32)
        v = rng.standard_normal((B, Hkv, Nk, D)).astype(np.float32)
        do = rng.standard_normal((B, Hq, Nq, D)).astype(np.float32)
        sk = rng.standard_normal(Hq).astype(np.float32) if sinks else None
        files = {x: os.path.join(work, f"{name}_{x}.npy") for x in ("q", "k", "v", "do", "sinks")}
        for x, arr in (("q", q), ("k", k), ("v", v), ("do", do), ("sinks", sk)):
            if arr is not None:
                np.save(files[x], arr)
        o, lse, dq, dk, dv, dsinks = backward64(q, k, v, do, causal, softcap, sk)
        flags = ["--causal"] if causal else []
        if softcap:
            flags += ["--softcap", str(softcap)]
        if sinks:
            flags += ["--sinks", files["sinks"]]
        for algo in ("fused", "unfused", "reference"):
            out = {x: os.path.join(work, f"{name}_{algo}_{x}.npy") for x in ("o", "dq", "dk", "dv", "dsinks")}
            args = ["--q", files["q"], "--k", files["k"], "--v", files["v"], "--out", out["o"], "--do", files["do"],
                    "--dq", out["dq"], "--dk", out["dk"], "--dv", out["dv"], "--algo", algo, *flags]
            if sinks:
                args += ["--dsinks", out["dsinks"]]
            r = run(exe, *args)
            if r.returncode != 0:
                expect(False, f"{name} {algo}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
                continue
            errs = [rel_l2(np.load(out[x]), want) for x, want in (("o", o), ("dq", dq), ("dk", dk), ("dv", dv))]
            if sinks:
                errs.append(rel_l2(np.load(out["dsinks"]), dsinks))
            shapes = np.load(out["dq"]).shape == q.shape and np.load(out["dk"]).shape == k.shape
            expect(shapes and max(errs) <= 2e-5,
                   f"{name} {algo}: o, dq, dk, dv{', dsinks' if sinks else ''} rel L2 "
                   + " ".join(f"{e:.2e}" for e in errs))

    # determinism across thread counts: byte-identical gradient files
    name = "gqa_causal"
    base = ["--q", os.path.join(work, f"{name}_q.npy"), "--k", os.path.join(work, f"{name}_k.npy"),
            "--v", os.path.join(work, f"{name}_v.npy"), "--causal", "--do", os.path.join(work, f"{name}_do.npy")]
    for algo in ("fused", "unfused"):
        blobs = []
        for threads in ("1", None):
            out = {x: os.path.join(work, f"det_{algo}_{threads}_{x}.npy") for x in ("o", "dq", "dk", "dv")}
            r = run(exe, *base, "--out", out["o"], "--dq", out["dq"], "--dk", out["dk"], "--dv", out["dv"], "--algo",
                    algo, env={"POCL_MAX_PTHREAD_COUNT": threads} if threads else {})
            blobs.append(b"".join(open(out[x], "rb").read() for x in ("dq", "dk", "dv")) if r.returncode == 0 else None)
        expect(blobs[0] is not None and blobs[0] == blobs[1],
               f"{algo}: gradients byte-identical with 1 PoCL thread and the default")

    # refusals: the backward needs all of its files; nothing is written on failure
    dq_path = os.path.join(work, "refused_dq.npy")
    r = run(exe, "--q", os.path.join(work, "plain_q.npy"), "--k", os.path.join(work, "plain_k.npy"),
            "--v", os.path.join(work, "plain_v.npy"), "--out", os.path.join(work, "refused_o.npy"),
            "--do", os.path.join(work, "plain_do.npy"), "--dq", dq_path)
    expect(r.returncode != 0 and "--dk" in r.stderr and not os.path.exists(dq_path),
           "--do without --dk and --dv is refused with one line, nothing written")
    r = run(exe, "--q", os.path.join(work, "plain_q.npy"), "--k", os.path.join(work, "plain_k.npy"),
            "--v", os.path.join(work, "plain_v.npy"), "--out", os.path.join(work, "refused_o.npy"),
            "--do", os.path.join(work, "gqa_causal_do.npy"), "--dq", dq_path, "--dk", dq_path + "k", "--dv", dq_path + "v")
    expect(r.returncode != 0 and "--do must have" in r.stderr and not os.path.exists(dq_path),
           "a d_o of the wrong shape is refused, nothing written")
    return summary()


if __name__ == "__main__":
    sys.exit(main())
