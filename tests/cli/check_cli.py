#!/usr/bin/env python3
"""The clattn program's contract: `bench` outputs parse and carry every documented field, the
SVG is well-formed with one bar per ok row, `check` passes and fails when a wrong result is
injected (test-only hook), and bad arguments give one line on stderr, a non-zero exit, and no
output file. usage: check_cli.py CLATTN_BINARY WORKDIR"""
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

try:
    import numpy as np
except ImportError:  # one line, not a traceback, and before a minute of checks
    sys.exit("check_cli.py: python3's numpy is missing (apt-get install python3-numpy)")

ROW_FIELDS = ["case", "shape", "batch", "heads_q", "heads_kv", "seq_q", "seq_kv", "head_dim", "causal", "dtype",
              "device_index", "device", "driver", "algo", "pass", "variant", "status", "reason", "ms_median", "ms_min",
              "ms_max", "samples", "calls_per_sample", "gflops", "pct_peak_flops", "above_peak_flops", "gbs",
              "pct_peak_bw", "above_peak_bw",
              "mem_bytes", "rel_l2", "max_abs", "checked_rows", "seed", "ratio_sgemm", "ratio_blas_attention",
              "ratio_stream", "ratio_unfused", "ratio_torch"]
DEVICE_FIELDS = ["index", "name", "vendor", "driver", "opencl_version", "peak_fma_gflops", "peak_read_gbs",
                 "peak_read_method", "dispatch"]
DISPATCH_FIELDS = ["execute_us", "execute_calls", "tiny_shape", "tiny_variant", "tiny_call_us", "empty_kernel_us",
                   "tiny_over_empty", "round_trips"]
PROVENANCE_FIELDS = ["clattn_version", "commit", "build_options", "command", "date"]

from tally import expect, summary  # noqa: E402


def run(exe, *args, env=None):
    return subprocess.run([exe, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def main():
    exe, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    j, c, s = (os.path.join(work, n) for n in ("r.json", "r.csv", "r.svg"))
    for p in (j, c, s):
        if os.path.exists(p):
            os.remove(p)

    r = run(exe, "bench", "--cases", "12,20", "--algo", "all", "--budget-ms", "50", "--json", j, "--csv", c, "--svg", s)
    expect(r.returncode == 0, f"bench exits 0 ({r.stderr.strip()[-300:]})")
    doc = json.load(open(j))
    expect(doc.get("format_version") == 4, "JSON has format_version 4")
    expect(all(k in doc["provenance"] for k in PROVENANCE_FIELDS), "JSON provenance has every field")
    expect(len(doc["devices"]) >= 1 and all(k in doc["devices"][0] for k in DEVICE_FIELDS), "JSON devices have every field")
    disp = doc["devices"][0].get("dispatch") or {}
    expect(all(k in disp for k in DISPATCH_FIELDS) and disp["tiny_shape"] == "1x1x1x16x16x64"
           and 0 < disp["execute_us"] < disp["tiny_call_us"] and disp["empty_kernel_us"] > 0
           and abs(disp["tiny_over_empty"] - disp["tiny_call_us"] / disp["empty_kernel_us"]) < 1e-9
           and "clattn_plan_execute" in r.stdout and "empty kernel" in r.stdout,
           f"bench measures the dispatch overhead and prints it ({disp})")
    rows = doc["rows"]
    expect(len(rows) == 6, f"JSON has one row per case x algorithm (got {len(rows)})")
    # each all() below also needs its list non-empty: all() of nothing passes
    expect(len(rows) > 0 and all(all(k in row for k in ROW_FIELDS) for row in rows),
           "every JSON row has every documented field")
    ok_rows = [row for row in rows if row["status"] == "ok"]
    expect(len(ok_rows) > 0 and all(row["gflops"] > 0 and row["ms_median"] > 0 for row in ok_rows),
           f"ok rows have a time and a rate ({len(ok_rows)} ok rows)")
    device_rows = [row for row in ok_rows if row["algo"] != "reference"]
    expect(len(device_rows) > 0 and all(row["rel_l2"] is not None and row["rel_l2"] <= 1e-5 for row in device_rows),
           f"device rows carry their error against the reference, within bound ({len(device_rows)} device rows)")
    expect({row["case"] for row in rows} == {12, 20}, "rows carry the suite's case ids")
    with open(c, newline="") as f:  # RFC 4180: a quoted field may hold a line break
        comment, body = f.read().split("\n", 1)
    table = list(csv.DictReader(io.StringIO(body, newline="")))
    expect(comment.startswith("# clattn bench, format_version 4") and len(table) == len(rows) > 0
           and all(k in table[0] for k in ROW_FIELDS), "CSV has its provenance line, every row and field")
    text_fields = ["shape", "dtype", "device", "driver", "algo", "variant", "status", "reason"]
    differ = [(k, t[k], row[k]) for t, row in zip(table, rows) for k in text_fields if t[k] != row[k]]
    expect(len(table) == len(rows) > 0 and not differ and any("," in row["variant"] for row in rows),
           f"CSV text fields (commas among them) read back equal to the JSON's ({differ[:2]})")
    svg = ET.parse(s).getroot()
    bars = [e for e in svg.iter() if e.tag.endswith("rect") and e.get("class") == "bar"]
    expect(len(bars) == len(ok_rows) > 0,
           f"SVG is well-formed with one bar per ok row ({len(bars)} bars, {len(ok_rows)} rows)")
    texts = " ".join(t.text or "" for t in svg.iter() if t.tag.endswith("text"))
    expect("GFLOP/s" in texts and "case id" in texts, "SVG has labelled axes")

    r = run(exe, "bench", "--cases", "12", "--algo", "fused", "--budget-ms", "50", "--compare", j)
    expect(r.returncode == 0 and "ratio" in r.stdout, "bench --compare prints ratios against a baseline")

    pj = os.path.join(work, "peers.json")
    r = run(exe, "bench", "--peers", "--cases", "12", "--algo", "fused", "--budget-ms", "20", "--json", pj)
    pd = json.load(open(pj)) if r.returncode == 0 else {}
    peer_fields = ["openblas_sgemm_2048_gflops", "openblas_unfused_attention_gflops",
                   "openblas_unfused_attention_causal_gflops", "stream_read_gbs"]
    expect(r.returncode == 0 and all((pd.get("peers") or {}).get(k, 0) > 0 for k in peer_fields)
           and pd["rows"][0]["ratio_sgemm"] > 0 and "xSGEMM" in r.stdout,
           "bench --peers measures every peer and gives each row its ratios")
    # PyTorch's CPU SDPA: measured where torch imports, else absent with the reason; never a failure
    t = (pd.get("peers") or {}).get("torch_sdpa_cpu", {})
    expect("xtorch" in r.stdout and (t.get("absent") or (t.get("ms_by_case", {}).get("12", 0) > 0
                                                        and pd["rows"][0]["ratio_torch"] > 0)),
           "bench --peers has PyTorch's SDPA, or says why not: %s" % t)
    r = run(exe, "bench", "--peers", "--cases", "12", "--algo", "fused", "--budget-ms", "20", "--json", pj,
            env={"CLATTN_PYTHON": "/nonexistent/python3"})
    pd = json.load(open(pj)) if r.returncode == 0 else {}
    t = (pd.get("peers") or {}).get("torch_sdpa_cpu", {})
    expect(r.returncode == 0 and t.get("absent") and "PyTorch SDPA: absent" in r.stdout
           and pd["rows"][0]["ratio_torch"] is None, "bench --peers without torch: absent, the reason given")

    r = run(exe, "check", "--quick")
    expect(r.returncode == 0 and " 0 failed" in r.stdout, "check --quick passes")
    r = run(exe, "check", "--quick", env={"CLATTN_TEST_INJECT_ERROR": "1"})
    expect(r.returncode != 0 and "FAIL" in r.stdout, "check fails when a wrong result is injected")
    r = run(exe, "bench", "--cases", "12", "--algo", "fused", "--budget-ms", "20", env={"CLATTN_TEST_INJECT_ERROR": "1"})
    expect(r.returncode != 0 and "wrong" in r.stdout, "bench marks an injected wrong result as wrong and exits non-zero")
    # generic parameters are named, with how to tune (the tiles family on a CPU has none shipped here)
    r = run(exe, "bench", "--cases", "12", "--algo", "fused", "--budget-ms", "20", env={"CLATTN_KERNELS": "tiles"})
    expect(r.returncode == 0 and ("(generic)" in r.stdout) == ("clattn tune --quick" in r.stdout),
           "bench says when a row ran generic parameters, and how to tune")

    # The backward pass: rows carry their pass, count 2.5x the forward's FLOPs, are checked
    # (sampled) before they are timed, and a wrong gradient shows as wrong.
    jb = os.path.join(work, "backward.json")
    r = run(exe, "bench", "--cases", "12", "--pass", "both", "--algo", "fused,unfused", "--budget-ms", "20",
            "--json", jb)
    rows_b = json.load(open(jb))["rows"] if r.returncode == 0 else []
    fwd = [w for w in rows_b if w["pass"] == "forward" and w["status"] == "ok"]
    bwd = [w for w in rows_b if w["pass"] == "backward" and w["status"] == "ok"]
    expect(len(fwd) == 2 and len(bwd) == 2 and all(w["rel_l2"] <= 2e-5 and w["checked_rows"] > 0 for w in bwd)
           and "fused bwd" in r.stdout,
           f"bench --pass both: forward and backward rows, the backward checked ({r.stderr.strip()[-200:]})")
    if fwd and bwd:
        flops = lambda w: w["gflops"] * w["ms_median"]
        expect(abs(flops(bwd[0]) / flops(fwd[0]) - 2.5) < 1e-6, "a backward row counts 2.5x the forward's FLOPs")
    r = run(exe, "bench", "--cases", "12", "--pass", "backward", "--algo", "fused", "--budget-ms", "20",
            env={"CLATTN_TEST_INJECT_ERROR": "1"})
    expect(r.returncode != 0 and "wrong" in r.stdout, "bench marks an injected wrong gradient as wrong")

    # Head dim 640 is past the fused path's limit: every row unsupported, so nothing ran.
    r = run(exe, "bench", "--shape", "1x1x1x4x4x640", "--algo", "fused", "--budget-ms", "20")
    last = (r.stderr.strip().splitlines() or [""])[-1]
    expect(r.returncode != 0 and "unsupported" in r.stdout
           and last == "clattn: bench: no row ran: every case was unsupported or skipped",
           f"bench exits non-zero when no row ran ({last})")

    # Peaks forged far below any row: every row is above them, and no percentage above 100 may
    # appear anywhere: the table says !>peak, the JSON and CSV write null/nan and flag the row.
    fdir = os.path.join(work, "forged-peaks")
    shutil.rmtree(fdir, ignore_errors=True)
    if os.path.isdir(os.environ.get("CLATTN_CACHE_DIR", "")):  # kernels already built: only the peaks differ
        shutil.copytree(os.environ["CLATTN_CACHE_DIR"], fdir)
    run(exe, "bench", "--cases", "12", "--algo", "reference", "--budget-ms", "5", env={"CLATTN_CACHE_DIR": fdir})
    peaks = [n for n in os.listdir(fdir) if n.startswith("peak-")] if os.path.isdir(fdir) else []
    for n in peaks:
        with open(os.path.join(fdir, n), "w") as f:
            f.write("0.001 0.001 forged by check_cli.py\n")
    fj, fc = os.path.join(work, "forged.json"), os.path.join(work, "forged.csv")
    r = run(exe, "bench", "--cases", "12,20", "--algo", "fused", "--budget-ms", "20", "--json", fj, "--csv", fc,
            "--keep-peaks", env={"CLATTN_CACHE_DIR": fdir})
    frows = json.load(open(fj))["rows"] if r.returncode == 0 else []
    table_rows = [line for line in r.stdout.splitlines() if line[:3].strip() in ("12", "20")]
    marks = [line.count("!>peak") for line in table_rows]  # %peak and %bw of each row
    ftable = []
    if frows:
        with open(fc, newline="") as f:
            ftable = list(csv.DictReader(io.StringIO(f.read().split("\n", 1)[1], newline="")))
    expect(len(peaks) >= 1 and len(frows) == 2 and marks == [2, 2]
           and all(row["above_peak_flops"] and row["above_peak_bw"] and row["pct_peak_flops"] is None
                   and row["pct_peak_bw"] is None for row in frows)
           and "!>peak: the row measured more" in r.stdout
           and all(t["above_peak_flops"] == "1" and t["pct_peak_bw"] == "nan" for t in ftable) and len(ftable) == 2,
           f"rows above a measured peak show !>peak, never a percentage above 100 ({marks}; {r.stderr.strip()[-200:]})")

    # Without --keep-peaks, a row above a peak makes bench measure the peaks again and keep the
    # larger: the forged peaks give way to measured ones, and each row gets a share of the new
    # peak again or, if it still ran above it, the mark. (Case 20's 34 MB can sit in a large
    # last-level cache and read faster than the peak's buffers of 64 MiB and more, so either
    # outcome is right for it; case 12 reads far below any real peak and must get its share.)
    r = run(exe, "bench", "--cases", "12,20", "--algo", "fused", "--budget-ms", "20", "--json", fj,
            env={"CLATTN_CACHE_DIR": fdir})
    fjson = json.load(open(fj)) if r.returncode == 0 else {"rows": [], "devices": []}
    frows = fjson["rows"]
    peak_bw = {d["index"]: d["peak_read_gbs"] or 0.0 for d in fjson["devices"]}  # each row's own device
    cached = [open(os.path.join(fdir, n)).read().split() for n in peaks]
    expect(len(frows) == 2 and "measuring the peaks again" in r.stderr
           and all(peak_bw.get(row["device_index"], 0.0) > 1.0 for row in frows)
           and all((not row["above_peak_bw"] and row["pct_peak_bw"] is not None and row["pct_peak_bw"] <= 100)
                   or (row["above_peak_bw"] and row["gbs"] > peak_bw[row["device_index"]]) for row in frows)
           and any(row["case"] == 12 and not row["above_peak_bw"] for row in frows)
           and any(len(c) >= 2 and float(c[1]) > 1.0 for c in cached),
           f"a row above a forged peak has the peaks measured again ({r.stderr.strip()[-300:]})")

    r = run(exe, "devices")
    expect(r.returncode == 0 and "clattn paths" in r.stdout and "local memory" in r.stdout, "devices lists what matters")

    # The tuner: a class searched, checked, re-verified and stored in its own cache directory;
    # then bench takes the stored parameters for that class and says where they came from.
    tdir = os.path.join(work, "tune-cache")
    shutil.rmtree(tdir, ignore_errors=True)  # a file from an earlier run (another version) would be a second
    r = run(exe, "tune", "--quick", "--classes", "decode-d128", "--budget-ms", "20", env={"CLATTN_CACHE_DIR": tdir})
    files = [f for f in os.listdir(tdir) if f.startswith("tuning-")] if os.path.isdir(tdir) else []
    stored = open(os.path.join(tdir, files[0])).read() if len(files) == 1 else ""
    expect(r.returncode == 0 and "best:" in r.stdout and "re-verify" in r.stdout
           and ("tiles decode-d128" in stored or "rows decode-d128" in stored), f"tune --quick checks, times, re-verifies and stores a class ({r.stderr.strip()[-200:]})")
    tj = os.path.join(work, "tuned.json")
    r = run(exe, "bench", "--cases", "20", "--algo", "fused", "--budget-ms", "20", "--json", tj, env={"CLATTN_CACHE_DIR": tdir})
    row = json.load(open(tj))["rows"][0] if r.returncode == 0 else {}
    expect((row.get("tuning") or {}).get("source") == "user file" and "(user file)" in r.stdout,
           "bench uses the tuned parameters of the class and says where they came from")

    # A class whose preferred family the file names (as tune --families stores it) runs that
    # family under auto, so a plain tune searches and stores that family's parameters (the
    # decode family's candidates: 64 keys, vw 4; --quick: groups of 128), not the default's.
    if len(files) == 1:
        with open(os.path.join(tdir, files[0]), "a") as fh:
            fh.write("decode decode-d128 rows=16 keys=64 vw=4 group=256 split=8 tpr=0 use\n")
    r = run(exe, "tune", "--quick", "--classes", "decode-d128", "--budget-ms", "20", env={"CLATTN_CACHE_DIR": tdir})
    stored = open(os.path.join(tdir, files[0])).read() if len(files) == 1 else ""
    pref = [l for l in stored.splitlines() if l.startswith("decode decode-d128 ")]
    expect(r.returncode == 0 and "decode family: the class's preferred one" in r.stdout and len(pref) == 1
           and " keys=64 vw=4 group=128 " in pref[0] and pref[0].endswith(" use"),
           f"a plain tune searches the family a class prefers and stores its parameters there ({pref} {r.stdout.strip()[-300:]})")

    # Bad arguments: one line on stderr, non-zero exit, no output file left behind.
    out = os.path.join(work, "should_not_exist.json")
    missing = os.path.join(work, "missing.npy")
    garbage = os.path.join(work, "garbage.npy")
    with open(garbage, "wb") as f:
        f.write(b"this is not a numpy file")
    # (what, arguments, text the message must hold: the option or entry it names)
    bad = [
        ("unknown flag", ["bench", "--frobnicate", "--json", out], "'--frobnicate'"),
        ("abbreviated flag", ["bench", "--cas", "12", "--json", out], "'--cas'"),
        ("missing value", ["bench", "--cases", "12", "--json"], "--json needs a value"),
        ("value given to a flag", ["bench", "--causal=yes", "--json", out], "--causal takes no value"),
        ("stray argument", ["bench", "12", "--json", out], "'12'"),
        ("malformed shape", ["bench", "--shape", "1x2x3", "--json", out], "1x2x3"),
        ("non-divisible heads", ["bench", "--shape", "1x6x4x8x8x32", "--json", out], "1x6x4x8x8x32"),
        ("unknown case id", ["bench", "--cases", "12,99", "--json", out], "'99'"),
        ("malformed case id", ["bench", "--cases", "12x", "--json", out], "'12x'"),
        ("unknown algorithm in a list", ["bench", "--algo", "fused,nonsense", "--json", out], "'nonsense'"),
        ("empty algorithm list entry", ["bench", "--algo", "fused,", "--json", out], "''"),
        ("unknown dtype", ["bench", "--dtype", "f64", "--json", out], "'f64'"),
        ("trailing garbage in a count", ["bench", "--splits", "4x", "--json", out], "'4x'"),
        ("out-of-range count", ["bench", "--splits", "99999999999999999999", "--json", out], "--splits"),
        ("NaN budget", ["bench", "--budget-ms", "nan", "--json", out], "'nan'"),
        ("unknown device", ["bench", "--device", "no-such-device", "--cases", "12", "--json", out], "no-such-device"),
        ("unwritable output", ["bench", "--cases", "12", "--json", "/nonexistent-dir/r.json"], "/nonexistent-dir"),
        ("unknown command", ["frobnicate"], "frobnicate"),
        ("missing file", ["run", "--q", missing, "--k", missing, "--v", missing, "--out", out], "missing.npy"),
        ("unreadable file", ["run", "--q", garbage, "--k", garbage, "--v", garbage, "--out", out], "garbage.npy"),
        ("run without --out", ["run", "--q", garbage], "--out"),
        ("run scale with trailing garbage", ["run", "--q", garbage, "--k", garbage, "--v", garbage, "--out", out,
                                             "--scale", "0.5x"], "'0.5x'"),
        ("run malformed window", ["run", "--q", garbage, "--k", garbage, "--v", garbage, "--out", out,
                                  "--window", "3,4x"], "'3,4x'"),
        ("check unknown device", ["check", "--device", "no-such-device"], "no-such-device"),
        ("check stray argument", ["check", "--quick", "extra"], "'extra'"),
        ("devices unknown option", ["devices", "--frobnicate"], "'--frobnicate'"),
        ("tune unknown class", ["tune", "--classes", "nonsense"], "'nonsense'"),
        ("tune unknown class among known ones", ["tune", "--classes", "nonsense,decode-d64"],
         "'nonsense' (valid: prefill-d64, prefill-d128, decode-d64, decode-d128)"),
        ("tune bad budget", ["tune", "--budget-ms", "-1"], "'-1'"),
        ("bench unknown pass", ["bench", "--pass", "sideways", "--json", out], "'sideways'"),
    ]
    for what, args, names in bad:
        if os.path.exists(out):
            os.remove(out)
        r = run(exe, *args)
        one_line = len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("clattn: ")
        expect(r.returncode != 0 and one_line and names in r.stderr and not os.path.exists(out),
               f"{what}: one-line error naming {names}, non-zero exit, nothing written ({r.stderr.strip()[:100]})")
    # Hostile .npy files: each refused with one line, a non-zero exit, and nothing written.
    good = os.path.join(work, "good.npy")
    np.save(good, np.ones((1, 2, 4, 8), np.float32))
    raw = open(good, "rb").read()
    hostile = {
        "truncated": raw[:-7],
        "truncated header": raw[:40],
        "wrong dtype": None,
        "fortran order": None,
        "huge declared shape": raw.replace(b"(1, 2, 4, 8)", b"(9999999999, 99999999, 4, 8)"),
        "not npy": b"PK\x03\x04 a zip file, not a numpy array",
        "empty file": b"",
    }
    for name in list(hostile):
        path = os.path.join(work, name.replace(" ", "_") + ".npy")
        if name == "wrong dtype":
            np.save(path, np.ones((1, 2, 4, 8), np.float64))
        elif name == "fortran order":
            np.save(path, np.asfortranarray(np.ones((1, 2, 4, 8), np.float32)))
        else:
            open(path, "wb").write(hostile[name])
        hostile[name] = path
    mismatched = os.path.join(work, "mismatched.npy")
    np.save(mismatched, np.ones((1, 2, 4, 16), np.float32))  # head dim differs from q's
    cases = [(n, [p, good, good]) for n, p in hostile.items()] + [("mismatched shapes", [good, mismatched, good])]
    for what, (q, k, v) in cases:
        if os.path.exists(out):
            os.remove(out)
        r = run(exe, "run", "--q", q, "--k", k, "--v", v, "--out", out)
        one_line = len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("clattn: ")
        expect(r.returncode != 0 and one_line and not os.path.exists(out),
               f"hostile file, {what}: one-line error, non-zero exit, nothing written ({r.stderr.strip()[:90]})")

    # files_write_atomic stages each file as PATH.XXXXXX (mkstemp) beside it
    leftovers = [n for n in os.listdir(work) if re.search(r"\.[A-Za-z0-9]+\.[A-Za-z0-9_]{6}$", n)]
    expect(not leftovers, f"no temporary files left ({leftovers})")
    return summary()


if __name__ == "__main__":
    sys.exit(main())
