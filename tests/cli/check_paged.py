#!/usr/bin/env python3
"""`clattn run` on a paged KV cache (--k-cache, --v-cache, --block-table, --seqused-k, with and
without --k-new/--v-new and rotary) against an independent float64 NumPy implementation, for
the fused, unfused and reference algorithms: o, lse and the caches after the append
(--cache-out-k/-v), pages in no table byte-for-byte unchanged; and the refusals of bad input.
usage: check_paged.py CLATTN_BINARY WORKDIR"""
import os
import subprocess
import sys

try:
    import numpy as np
except ImportError:  # one line, not a traceback
    sys.exit("check_paged.py: python3's numpy is missing (apt-get install python3-numpy)")

from tally import expect, summary  # noqa: E402


def rotate(x, pos, cos, sin, interleaved):
    """x (..., D) rotated in its first 2 * cos.shape[1] dims at positions pos (broadcast)."""
    x = x.astype(np.float64).copy()
    half = cos.shape[1]
    c, s = cos[pos].astype(np.float64), sin[pos].astype(np.float64)
    if interleaved:
        a, b = x[..., 0:2 * half:2].copy(), x[..., 1:2 * half:2].copy()
        x[..., 0:2 * half:2], x[..., 1:2 * half:2] = a * c - b * s, b * c + a * s
    else:
        a, b = x[..., :half].copy(), x[..., half:2 * half].copy()
        x[..., :half], x[..., half:2 * half] = a * c - b * s, b * c + a * s
    return x


def paged64(q, kc, vc, table, used, kn, vn, cos, sin, interleaved, causal):
    """q (B, Hq, Nq, D), caches (P, ps, Hkv, D), kn/vn (B, Hkv, Nnew, D) or None: o, lse and the
    caches after the append, float64 (the caches rounded to f32 as stored)."""
    kc, vc = kc.copy(), vc.copy()
    B, Hq, Nq, D = q.shape
    ps, Hkv = kc.shape[1], kc.shape[2]
    nnew = 0 if kn is None else kn.shape[2]
    o = np.zeros((B, Hq, Nq, vc.shape[3]))
    lse = np.zeros((B, Hq, Nq))
    qf = q.astype(np.float64)
    for b in range(B):
        for t in range(nnew):
            j = used[b] + t
            page, r = table[b, j // ps], j % ps
            kt = kn[b, :, t, :]
            if cos is not None:
                kt = rotate(kt, j, cos, sin, interleaved)
            kc[page, r], vc[page, r] = kt.astype(np.float32), vn[b, :, t, :]
        nk = used[b] + nnew
        rows = [table[b, j // ps] * ps + j % ps for j in range(nk)]
        K = kc.reshape(-1, Hkv, D)[rows].astype(np.float64)  # (nk, Hkv, D)
        V = vc.reshape(-1, Hkv, vc.shape[3])[rows].astype(np.float64)
        qb = qf[b]
        if cos is not None:
            pos = used[b] + (np.arange(Nq) if causal else np.zeros(Nq, dtype=int))
            qb = np.stack([rotate(qf[b, h], pos, cos, sin, interleaved) for h in range(Hq)])
            qb = qb.astype(np.float32).astype(np.float64)  # q's rotated copy is stored as q's dtype
        for h in range(Hq):
            g = h // (Hq // Hkv)
            s = qb[h] @ K[:, g, :].T / np.sqrt(D)
            if causal:
                allowed = np.arange(nk)[None, :] <= np.arange(Nq)[:, None] + nk - Nq
                s = np.where(allowed, s, -np.inf)
            m = s.max(axis=1, keepdims=True)
            m = np.where(np.isfinite(m), m, 0)
            e = np.exp(s - m)
            den = e.sum(axis=1, keepdims=True)
            o[b, h] = (e / np.where(den > 0, den, 1)) @ V[:, g, :]
            lse[b, h] = np.where(den[:, 0] > 0, m[:, 0] + np.log(np.where(den[:, 0] > 0, den[:, 0], 1)), -np.inf)
    return o, lse, kc, vc


def rel_l2(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    fin = np.isfinite(b)
    if not np.array_equal(np.isfinite(a), fin):
        return np.inf
    return np.linalg.norm((a - b)[fin]) / max(np.linalg.norm(b[fin]), 1e-300)


def run(exe, *args):
    return subprocess.run([exe, "run", *args], capture_output=True, text=True)


def main():
    exe, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(13)
    cases = [  # name, B, Hq, Hkv, Nq, page, pages_per_seq, spare pages, Nnew, rotary, interleaved, causal
        ("decode_page16_rotary", 3, 4, 2, 1, 16, 5, 3, 1, 32, False, True),
        ("chunk_page3_interleaved", 2, 4, 1, 4, 3, 9, 2, 4, 64, True, True),
        ("read_only_page1", 2, 2, 2, 3, 1, 40, 5, 0, 0, False, False),
    ]
    D = 64
    for name, B, Hq, Hkv, Nq, ps, pps, spare, nnew, rot, inter, causal in cases:
        P = B * pps + spare
        kc = rng.standard_normal((P, ps, Hkv, D)).astype(np.float32)
        vc = rng.standard_normal((P, ps, Hkv, D)).astype(np.float32)
        table = rng.permutation(P)[:B * pps].reshape(B, pps).astype(np.int32)  # random, non-contiguous
        used = rng.integers(0, pps * ps - nnew + 1, size=B).astype(np.int32)
        used[0] = pps * ps - nnew  # one sequence full
        q = rng.standard_normal((B, Hq, Nq, D)).astype(np.float32)
        kn = rng.standard_normal((B, Hkv, nnew, D)).astype(np.float32) if nnew else None
        vn = rng.standard_normal((B, Hkv, nnew, D)).astype(np.float32) if nnew else None
        cos = sin = None
        if rot:
            npos = pps * ps + Nq
            th = np.arange(npos)[:, None] * 10000.0 ** (-np.arange(rot // 2) / (rot // 2))
            cos, sin = np.cos(th).astype(np.float32), np.sin(th).astype(np.float32)
        f = {x: os.path.join(work, f"{name}_{x}.npy") for x in ("q", "kc", "vc", "bt", "used", "kn", "vn", "cos", "sin")}
        for x, arr in (("q", q), ("kc", kc), ("vc", vc), ("bt", table), ("used", used), ("kn", kn), ("vn", vn),
                       ("cos", cos), ("sin", sin)):
            if arr is not None:
                np.save(f[x], arr)
        o, lse, kc2, vc2 = paged64(q, kc, vc, table, used, kn, vn, cos, sin, inter, causal)
        base = ["--q", f["q"], "--k-cache", f["kc"], "--v-cache", f["vc"], "--block-table", f["bt"],
                "--seqused-k", f["used"]]
        if nnew:
            base += ["--k-new", f["kn"], "--v-new", f["vn"]]
        if rot:
            base += ["--rotary-cos", f["cos"], "--rotary-sin", f["sin"]] + (["--rotary-interleaved"] if inter else [])
        if causal:
            base += ["--causal"]
        for algo in ("fused", "unfused", "reference"):
            out = {x: os.path.join(work, f"{name}_{algo}_{x}.npy") for x in ("o", "lse", "ko", "vo")}
            args = base + ["--out", out["o"], "--lse", out["lse"], "--algo", algo]
            if nnew:
                args += ["--cache-out-k", out["ko"], "--cache-out-v", out["vo"]]
            r = run(exe, *args)
            if r.returncode != 0:
                expect(False, f"{name} {algo}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
                continue
            errs = [rel_l2(np.load(out["o"]), o), rel_l2(np.load(out["lse"]), lse)]
            ok = max(errs) <= 1e-5
            what = f"{name} {algo}: o, lse rel L2 " + " ".join(f"{e:.2e}" for e in errs)
            if nnew:
                ko, vo = np.load(out["ko"]), np.load(out["vo"])
                cache_err = max(np.abs(ko - kc2).max(), np.abs(vo - vc2).max())
                unused = np.setdiff1d(np.arange(P), table)
                untouched = np.array_equal(ko[unused].view(np.uint32), kc[unused].view(np.uint32)) and \
                    np.array_equal(vo[unused].view(np.uint32), vc[unused].view(np.uint32))
                ok = ok and cache_err <= 1e-6 and untouched and ko.shape == kc.shape
                what += f"; caches max abs {cache_err:.1e}, pages in no table {'untouched' if untouched else 'WRITTEN'}"
            expect(ok, what)

    # refusals: a clear message and no output file
    name = cases[0][0]
    f = {x: os.path.join(work, f"{name}_{x}.npy") for x in ("q", "kc", "vc", "bt", "used", "kn", "vn")}
    out = os.path.join(work, "refused_o.npy")
    np.save(os.path.join(work, "bt_f32.npy"), np.zeros((3, 5), np.float32))
    bad = [
        ("no block table", ["--q", f["q"], "--k-cache", f["kc"], "--v-cache", f["vc"], "--seqused-k", f["used"]],
         "--block-table"),
        ("float block table", ["--q", f["q"], "--k-cache", f["kc"], "--v-cache", f["vc"], "--seqused-k", f["used"],
                               "--block-table", os.path.join(work, "bt_f32.npy")], "int32"),
        ("k_new without v_new", ["--q", f["q"], "--k-cache", f["kc"], "--v-cache", f["vc"], "--seqused-k", f["used"],
                                 "--block-table", f["bt"], "--k-new", f["kn"]], "--v-new"),
        ("rotary without a cache", ["--q", f["q"], "--k", f["kc"], "--v", f["vc"], "--rotary-cos", f["kc"],
                                    "--rotary-sin", f["kc"]], "paged"),
    ]
    for what, args, word in bad:
        if os.path.exists(out):
            os.remove(out)
        r = run(exe, *args, "--out", out)
        expect(r.returncode == 1 and word in r.stderr and not os.path.exists(out),
               f"refused: {what} (exit {r.returncode}: {r.stderr.strip()[:160]})")
    return summary()


if __name__ == "__main__":
    sys.exit(main())
