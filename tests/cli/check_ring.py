#!/usr/bin/env python3
"""`mpirun -np P clattn ring` (P = 2, 3, 4) writes the o and lse files that a single-device
`clattn run` writes (relative L2 <= 1e-5 in f32), for causal and full attention, GQA, odd
lengths, both layouts, f16; and a failure on one rank (its file missing, shapes that differ
between ranks) ends every rank with an error, within a timeout, leaving no output file.
usage: check_ring.py CLATTN_BINARY WORKDIR MPIEXEC"""
import os
import subprocess
import sys

try:
    import numpy as np
except ImportError:  # one line, not a traceback
    sys.exit("check_ring.py: python3's numpy is missing (apt-get install python3-numpy)")

from tally import expect, summary  # noqa: E402

clattn, work, mpiexec = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(work, exist_ok=True)
TIMEOUT = 300


def path(name):
    return os.path.join(work, name)


def run(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        return "timeout", ""


def rel(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def case(name, B, Hq, Hkv, Nq, Nk, D, causal, layout, dtype, ranks=(2, 3, 4)):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    shape = (lambda H, N, d: (B, N, H, d)) if layout == "bshd" else (lambda H, N, d: (B, H, N, d))
    q = rng.standard_normal(shape(Hq, Nq, D)).astype(dtype)
    k = rng.standard_normal(shape(Hkv, Nk, D)).astype(dtype)
    v = rng.standard_normal(shape(Hkv, Nk, D)).astype(dtype)
    for n, x in (("q", q), ("k", k), ("v", v)):
        np.save(path(f"{n}.npy"), x)
    flags = ["--layout", layout] + (["--causal"] if causal else [])
    io = ["--q", path("q.npy"), "--k", path("k.npy"), "--v", path("v.npy")]
    rc, out = run([clattn, "run"] + io + flags + ["--out", path("o1.npy"), "--lse", path("l1.npy")])
    expect(rc == 0, f"{name}: clattn run ({out.strip()[-200:]})")
    if rc != 0:
        return
    o1, l1 = np.load(path("o1.npy")), np.load(path("l1.npy"))
    bound = 1e-5 if dtype == np.float32 else 2e-3
    for p in ranks:
        for f in ("oP.npy", "lP.npy"):
            if os.path.exists(path(f)):
                os.remove(path(f))
        rc, out = run([mpiexec, "-np", str(p), clattn, "ring"] + io + flags +
                      ["--out", path("oP.npy"), "--lse", path("lP.npy")])
        ok = rc == 0 and os.path.exists(path("oP.npy"))
        expect(ok, f"{name}: -np {p} ran ({str(rc)}: {out.strip()[-300:]})")
        if not ok:
            continue
        oP, lP = np.load(path("oP.npy")), np.load(path("lP.npy"))
        same = oP.shape == o1.shape and oP.dtype == o1.dtype and lP.shape == l1.shape
        eo, el = (rel(oP, o1), rel(lP, l1)) if same else (np.inf, np.inf)
        expect(same and eo <= bound and el <= 1e-5 and not np.isnan(oP).any(),
               f"{name}: -np {p} equals one device: o {eo:.2e}, lse {el:.2e}")


case("causal f32 bhsd", 2, 4, 4, 45, 45, 32, True, "bhsd", np.float32)
case("causal gqa odd f32 bshd", 1, 6, 2, 29, 29, 64, True, "bshd", np.float32)
case("full nq != nk f32", 1, 4, 1, 17, 40, 32, False, "bhsd", np.float32)
case("causal f16 bshd", 1, 4, 2, 33, 33, 64, True, "bshd", np.float16, ranks=(2, 4))

# failures on one rank: every rank ends with an error, nothing is written
rng = np.random.default_rng(7)
np.save(path("q.npy"), rng.standard_normal((1, 2, 20, 16)).astype(np.float32))
np.save(path("k.npy"), rng.standard_normal((1, 2, 20, 16)).astype(np.float32))
np.save(path("v.npy"), rng.standard_normal((1, 2, 20, 16)).astype(np.float32))
np.save(path("q21.npy"), rng.standard_normal((1, 2, 21, 16)).astype(np.float32))
good = ["--q", path("q.npy"), "--k", path("k.npy"), "--v", path("v.npy"), "--out", path("bad.npy")]
for what, other in (("its q file missing", path("missing.npy")), ("a q of another length", path("q21.npy"))):
    if os.path.exists(path("bad.npy")):
        os.remove(path("bad.npy"))
    mine = list(good)
    mine[1] = other
    # MPMD: rank 0 runs the good command line, rank 1 the one that differs
    rc, out = run([mpiexec, "-np", "1", clattn, "ring"] + good + [":", "-np", "1", clattn, "ring"] + mine)
    expect(rc not in (0, "timeout") and not os.path.exists(path("bad.npy")),
           f"one rank with {what}: every rank fails, no output ({rc}: {out.strip().splitlines()[0][:160] if out.strip() else ''})")
expect(run([clattn, "ring", "--q", path("q.npy")])[0] not in (0, "timeout"), "ring without --k/--v is refused")
sys.exit(summary())
