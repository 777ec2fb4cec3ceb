#!/usr/bin/env python3
"""`clattn run --expect`: another framework's output, written here by an independent float64
implementation (attention64.py), must MATCH (exit 0); the same file with a planted wrong row,
a NaN, a wrong lse must MISMATCH (exit 1) with the report naming the place; a wrong shape or
dtype must be refused (exit 2, one line on stderr). The verdict is the last line of stdout.
usage: check_expect.py CLATTN_BINARY WORKDIR"""
import os
import subprocess
import sys

try:
    import numpy as np
except ImportError:  # one line, not a traceback
    sys.exit("check_expect.py: python3's numpy is missing (apt-get install python3-numpy)")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attention64 import attention64, attention64_varlen  # noqa: E402
from check_run import to_storage  # noqa: E402

from tally import expect, summary  # noqa: E402


class Case:
    """q, k, v saved under `name`, and their float64 attention (o, lse)."""

    def __init__(self, work, name, shapes, dtype="f32", varlen_lens=None, seed=0, **kw):
        rng = np.random.default_rng(seed)
        self.work, self.name, self.dtype, self.kw = work, name, dtype, kw
        q, k, v = (rng.standard_normal(s).astype(np.float32) for s in shapes)
        (qs, q64), (ks, k64), (vs, v64) = (to_storage(x, dtype) for x in (q, k, v))
        self.args = []
        for x, arr in (("q", qs), ("k", ks), ("v", vs)):
            np.save(self.path(x), arr)
            self.args += [f"--{x}", self.path(x)]
        if dtype != "f32":
            self.args += ["--dtype", dtype]
        if varlen_lens is not None:
            lens_q, lens_k = (np.asarray(x, np.int32) for x in varlen_lens)
            np.save(self.path("lq"), lens_q)
            np.save(self.path("lk"), lens_k)
            self.args += ["--seqlens-q", self.path("lq"), "--seqlens-k", self.path("lk")]
            self.cu_q = np.concatenate([[0], np.cumsum(lens_q)])
            cu_k = np.concatenate([[0], np.cumsum(lens_k)])
            self.o, self.lse = attention64_varlen(q64, k64, v64, self.cu_q, cu_k, **kw)
        else:
            self.o, self.lse = attention64(q64, k64, v64, **kw)
            if kw.get("layout") == "bshd":
                self.args += ["--layout", "bshd"]
        if kw.get("causal"):
            self.args.append("--causal")

    def path(self, x):
        return os.path.join(self.work, f"{self.name}_{x}.npy")

    def theirs(self, tag="o", o=None):
        """Their o in the inputs' storage type, as a framework would return it."""
        o = self.o if o is None else o
        p = self.path(tag)
        np.save(p, to_storage(o.astype(np.float32), self.dtype)[0])
        return p

    def theirs_lse(self, tag="lse", lse=None):
        p = self.path(tag)
        np.save(p, (self.lse if lse is None else lse).astype(np.float32))
        return p

    def run(self, *extra):
        r = subprocess.run([EXE, "run", *self.args, *extra], capture_output=True, text=True)
        lines = r.stdout.strip().splitlines()
        return r, (lines[-1] if lines else "")


def one_line_error(r):
    return len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("clattn: ")


def worst_rows(stdout, tensor="o"):
    """The row names under `worst rows` of the tensor's block, worst first."""
    names, inside, block = [], False, None
    for line in stdout.splitlines():
        if not line.startswith(" "):
            block = line.split(":")[0]
            inside = False
        elif line.strip().startswith("worst rows"):
            inside = block == tensor
        elif inside and line.startswith("    "):
            names.append(line.strip().split("  ")[0].strip())
    return names


def rel_l2(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def main():
    global EXE
    EXE, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)

    # Correct files pass, in every dtype, with the reference (the default) and a device path.
    gqa = Case(work, "gqa", [(2, 4, 37, 64), (2, 2, 50, 64), (2, 2, 50, 64)], causal=True, seed=1)
    r, last = gqa.run("--expect", gqa.theirs(), "--expect-lse", gqa.theirs_lse())
    expect(r.returncode == 0 and last.startswith("clattn: MATCH"), f"f32 correct o and lse: exit 0, MATCH ({last})")
    r, last = gqa.run("--expect", gqa.theirs(), "--algo", "fused")
    expect(r.returncode == 0 and last.startswith("clattn: MATCH") and "fused on" in r.stdout,
           f"f32 against the fused path: exit 0, MATCH ({last})")
    out = gqa.path("written")
    if os.path.exists(out):
        os.remove(out)
    r, last = gqa.run("--expect", gqa.theirs(), "--out", out)
    expect(r.returncode == 0 and os.path.exists(out) and rel_l2(np.load(out).astype(np.float64), gqa.o) < 1e-6,
           "--expect with --out still writes clattn's output")
    f16 = Case(work, "f16", [(1, 4, 19, 64), (1, 2, 40, 64), (1, 2, 40, 64)], dtype="f16", causal=True, seed=2)
    r, last = f16.run("--expect", f16.theirs(), "--algo", "fused")
    expect(r.returncode == 0 and last.startswith("clattn: MATCH") and "float16" in r.stdout,
           f"f16 correct file: exit 0, MATCH ({last})")
    bf16 = Case(work, "bf16", [(1, 9, 4, 128), (1, 30, 1, 128), (1, 30, 1, 128)], dtype="bf16", layout="bshd", seed=3)
    r, last = bf16.run("--expect", bf16.theirs())
    expect(r.returncode == 0 and last.startswith("clattn: MATCH") and "bf16" in r.stdout,
           f"bf16 (uint16 bits) BSHD correct file: exit 0, MATCH ({last})")

    # A planted wrong row: exit 1, and the worst-row report names it first.
    bad = gqa.o.copy()
    bad[1, 2, 5] += 0.05
    r, last = gqa.run("--expect", gqa.theirs("o_row", bad))
    rows = worst_rows(r.stdout)
    expect(r.returncode == 1 and last.startswith("clattn: MISMATCH") and rows[:1] == ["batch 1, head 2, position 5"],
           f"a wrong row fails and is named first among the worst rows ({rows[:2]}; {last})")
    # BSHD: the same row is at another place in the file, and must still be named as (b, h, i).
    bad = bf16.o.copy()
    bad[0, 7, 3] *= -1.0
    r, last = bf16.run("--expect", bf16.theirs("o_row", bad))
    rows = worst_rows(r.stdout)
    expect(r.returncode == 1 and rows[:1] == ["batch 0, head 3, position 7"],
           f"BSHD: the wrong row is named by batch, head and position ({rows[:1]})")

    # A subtly wrong row: the whole tensor is within its bound, one row is not.
    many = Case(work, "many", [(2, 8, 64, 32)] * 3, seed=4)
    rng = np.random.default_rng(5)
    bad = many.o.copy()
    noise = rng.standard_normal(32)
    bad[1, 6, 40] += 2.5e-4 * np.linalg.norm(many.o[1, 6, 40]) * noise / np.linalg.norm(noise)
    whole = rel_l2(bad.astype(np.float32).astype(np.float64), many.o)
    p = many.theirs("o_subtle", bad)
    r, last = many.run("--expect", p)
    expect(whole < 1e-5 and r.returncode == 1 and "row batch 1, head 6, position 40" in last,
           f"one row above its bound fails while the whole passes (whole {whole:.2e}; {last})")
    r, last = many.run("--expect", p, "--tol", "1e-3")
    expect(r.returncode == 0 and last.startswith("clattn: MATCH") and "bound 0.001" in last,
           f"--tol loosens the bound ({last})")

    # Packed varlen: a wrong row is named by token, its sequence and position, and head.
    var = Case(work, "varlen", [(26, 4, 32), (40, 2, 32), (40, 2, 32)], varlen_lens=([3, 0, 9, 14], [10, 5, 1, 24]),
               causal=True, seed=6)
    r, last = var.run("--expect", var.theirs(), "--expect-lse", var.theirs_lse())
    expect(r.returncode == 0 and last.startswith("clattn: MATCH"), f"packed varlen correct o and lse ({last})")
    bad = var.o.copy()
    bad[17, 3] += 0.1  # sequence 3 starts at token 12: position 5
    r, last = var.run("--expect", var.theirs("o_row", bad))
    rows = worst_rows(r.stdout)
    expect(r.returncode == 1 and rows[:1] == ["token 17 (sequence 3, position 5), head 3"],
           f"varlen: the wrong row is named by token, sequence, position and head ({rows[:1]})")

    # NaN where the reference is finite: a mismatch, with the position listed.
    bad = gqa.o.copy()
    bad[0, 3, 7, 9] = np.nan
    r, last = gqa.run("--expect", gqa.theirs("o_nan", bad))
    expect(r.returncode == 1 and "NaN/inf" in last and "batch 0, head 3, position 7, dim 9" in r.stdout,
           f"a NaN where clattn is finite fails and is located ({last})")
    bad = gqa.o.copy()
    bad[1, 0, 0, 0] = np.inf
    r, last = gqa.run("--expect", gqa.theirs("o_inf", bad))
    expect(r.returncode == 1 and "NaN/inf" in last, f"an inf where clattn is finite fails ({last})")

    # A wrong lse entry: the lse block names it and the verdict says lse.
    lse = gqa.lse.copy()
    lse[1, 0, 3] += 0.01
    r, last = gqa.run("--expect", gqa.theirs(), "--expect-lse", gqa.theirs_lse("lse_bad", lse))
    expect(r.returncode == 1 and last.startswith("clattn: MISMATCH: lse")
           and worst_rows(r.stdout, "lse")[:1] == ["batch 1, head 0, position 3"],
           f"a wrong lse entry fails and is named ({last})")

    # Files that cannot be compared: exit 2, one line on stderr naming the problem, no verdict.
    wrong_shape = gqa.path("o_shape")
    np.save(wrong_shape, np.swapaxes(gqa.o, 1, 2).astype(np.float32))  # BSHD given for BHSD
    f16_file = gqa.path("o_f16")
    np.save(f16_file, gqa.o.astype(np.float16))
    f64_file = gqa.path("o_f64")
    np.save(f64_file, gqa.o)
    lse_shape = gqa.path("lse_shape")
    np.save(lse_shape, gqa.lse[:, :, :-1].astype(np.float32))
    refused = [
        ("a wrong shape", ["--expect", wrong_shape], "(2, 37, 4, 64)"),
        ("a dtype mismatch (float16 for float32 inputs)", ["--expect", f16_file], "float16"),
        ("an unsupported dtype (float64)", ["--expect", f64_file], "o_f64.npy"),
        ("a wrong lse shape", ["--expect", gqa.theirs(), "--expect-lse", lse_shape], "(2, 4, 36)"),
        ("a bad --tol", ["--expect", gqa.theirs(), "--tol", "0"], "--tol"),
        ("a missing file", ["--expect", gqa.path("missing")], "missing"),
    ]
    for what, extra, names in refused:
        r, last = gqa.run(*extra)
        expect(r.returncode == 2 and one_line_error(r) and names in r.stderr and "MATCH" not in r.stdout,
               f"{what}: exit 2, one line on stderr naming {names} ({r.stderr.strip()[:120]})")
    r, _ = gqa.run("--expect-lse", gqa.theirs_lse())
    expect(r.returncode == 1 and one_line_error(r) and "--expect-lse goes with --expect" in r.stderr,
           "--expect-lse alone is refused")

    return summary()


if __name__ == "__main__":
    sys.exit(main())
