#!/usr/bin/env python3
"""`clattn report`: bench JSON files of several machines merged into one markdown table and one
SVG chart. Hand-made files with known figures check the cells (time, share of the peak that
binds, speed-up over the baseline), the flags (commits, modified trees, missing cases, replaced
cells, rows above their peak) and the errors; then the repository's own PoCL and H100 results
must merge. usage: check_report.py CLATTN_BINARY WORKDIR"""
import glob
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

from tally import expect, summary  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bench_json(path, version, commit, devices, rows):
    """A bench result file: devices (name, driver, fma, read), rows (case, algo, device index,
    status, ms, gflops, gbs, dtype)."""
    doc = {"format_version": version,
           "provenance": {"clattn_version": "0.2.0", "commit": commit, "build_options": "test",
                          "command": f"clattn bench --json {os.path.basename(path)}", "date": "2026-12-01T00:00:00Z"},
           "devices": [{"index": i, "name": n, "vendor": "v", "driver": d, "opencl_version": "OpenCL 3.0",
                        "peak_fma_gflops": f, "peak_read_gbs": r} for i, (n, d, f, r) in enumerate(devices)],
           "rows": []}
    for case, algo, dev, status, ms, gflops, gbs, dtype in rows:
        doc["rows"].append({"case": case, "shape": f"1x8x8x{case}x{case}x64", "dtype": dtype, "algo": algo,
                            "device_index": dev, "device": devices[dev][0], "driver": devices[dev][1],
                            "status": status, "reason": "" if status == "ok" else "refused",
                            "ms_median": ms, "gflops": gflops, "gbs": gbs})
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def table(md):
    """The merged table: {(id, dtype, algo): [cells]} and its header."""
    lines = md.split("## Table", 1)[1].splitlines() if "## Table" in md else []
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("| ")]
    if not rows:
        return [], {}
    return rows[0], {(r[0], r[2], r[3]): r[4:] for r in rows[1:]}


def run(exe, *args):
    return subprocess.run([exe, "report", *args], capture_output=True, text=True)


def one_line_error(r):
    return r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("clattn: ")


def main():
    exe, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    a = bench_json(os.path.join(work, "a.json"), 2, "abc123",
                   [("Dev A", "1.0", 200.0, 10.0)],
                   [(1, "fused", 0, "ok", 10.0, 100.0, 1.0, "f32"),
                    (2, "fused", 0, "ok", 4.0, 10.0, 20.0, "f32"),   # 20 GB/s on a 10 GB/s peak
                    (3, "fused", 0, "unsupported", None, None, None, "f32"),
                    (1, "reference", 0, "ok", 500.0, 2.0, 0.1, "f32")])
    b = bench_json(os.path.join(work, "b.json"), 1, "def456-dirty",
                   [("Other", "9", 1.0, 1.0), ("Dev B", "2.0", 1000.0, 100.0)],
                   [(1, "fused", 1, "ok", 2.0, 500.0, 5.0, "f32"),
                    (4, "fused", 1, "ok", 1.0, 100.0, 50.0, "f32")])
    b2 = bench_json(os.path.join(work, "b2.json"), 2, "def456",
                    [("Dev B", "2.1", 1000.0, 100.0)],
                    [(1, "fused", 0, "ok", 2.5, 400.0, 4.0, "f32")])  # replaces b's case 1
    md, svg = os.path.join(work, "r.md"), os.path.join(work, "r.svg")
    for p in (md, svg):
        if os.path.exists(p):
            os.remove(p)

    r = run(exe, a, b, b2, "--md", md, "--svg", svg)
    text = open(md).read() if os.path.exists(md) else ""
    head, cells = table(text)
    expect(r.returncode == 0 and text == r.stdout and head[4:] == ["Dev A ms", "%peak", "x base", "Dev B ms", "%peak",
                                                                   "x base"],
           f"report writes the markdown (also on stdout), one column group per device ({head})")
    expect(cells.get(("1", "f32", "fused")) == ["10", "50.0% F", "1.00x", "2.5", "40.0% F", "4.00x"],
           f"a row: ms, the binding share of each device's own peak, the speed-up (last file wins) "
           f"({cells.get(('1', 'f32', 'fused'))})")
    expect(cells.get(("2", "f32", "fused")) == ["4", "!>peak B", "1.00x", "-", "-", "-"],
           f"above the peak: !>peak, never a percentage above 100 ({cells.get(('2', 'f32', 'fused'))})")
    expect(cells.get(("3", "f32", "fused"), [""])[0] == "unsupported" and ("4", "f32", "fused") in cells
           and ("1", "f32", "reference") not in cells, "a status stands for the time; the reference is left out")
    shares = [float(x) for x in re.findall(r"(\d+(?:\.\d+)?)% [FB]", text)]
    expect(shares and max(shares) <= 100, f"no share above 100% ({max(shares) if shares else None})")
    for what, pattern in [("commits differ", r"commits differ\*\*: abc123, def456-dirty, def456"),
                          ("modified trees", r"modified trees.*b\.json"),
                          ("replaced cells", r"replaced\*\*: 1 cell\(s\) of Dev B.*b\.json"),
                          ("drivers differ", r"drivers differ\*\* for Dev B: 2\.0, 2\.1"),
                          ("case missing on A", r"cases missing\*\* on Dev A \(1 of 4 rows\): 4 f32 fused"),
                          ("case missing on B", r"cases missing\*\* on Dev B \(2 of 4 rows\): 2 f32 fused, 3 f32 fused"),
                          ("above the peak", r"above the measured peak.*1 cell\(s\).*2 f32 fused on Dev A"),
                          ("provenance", r"\| .*b2\.json \| def456 \| 2026-12-01T00:00:00Z \| 0\.2\.0 \|")]:
        expect(re.search(pattern, text) is not None, f"flags and provenance: {what}")
    root = ET.parse(svg).getroot() if os.path.exists(svg) else None
    bars = [e for e in root.iter() if e.tag.endswith("rect") and e.get("class") == "bar"] if root is not None else []
    titles = [e.find("{http://www.w3.org/2000/svg}title").text for e in bars]
    expect(len(bars) == 1 and "Dev B: 2.5 ms" in titles[0] and "4x" in titles[0],
           f"the SVG has one bar per comparison with the baseline ({titles})")

    r = run(exe, "--baseline", "dev b", a, b, b2)
    head, cells = table(r.stdout)
    expect(r.returncode == 0 and cells.get(("1", "f32", "fused"), [None] * 3)[2] == "0.25x",
           f"--baseline picks the device by a case-insensitive part of its name "
           f"({cells.get(('1', 'f32', 'fused'))})")
    r = run(exe, a, "--algo", "reference")
    head, cells = table(r.stdout)
    expect(r.returncode == 0 and list(cells) == [("1", "f32", "reference")], "--algo reference keeps only those rows")

    # The repository's own results: the PoCL run and the H100 runs in one table and one chart.
    files = [os.path.join(ROOT, "bench", "results-pocl.json")] + sorted(
        glob.glob(os.path.join(ROOT, "bench", "results-h100", "*.json")))
    rmd, rsvg = os.path.join(work, "repo.md"), os.path.join(work, "repo.svg")
    r = run(exe, *files, "--md", rmd, "--svg", rsvg)
    head, cells = table(r.stdout)
    devices = [h[:-3] for h in head if h.endswith(" ms")]
    bars = [e for e in ET.parse(rsvg).getroot().iter() if e.get("class") == "bar"] if r.returncode == 0 else []
    expect(r.returncode == 0 and len(files) == 5 and len(devices) == 3 and "NVIDIA H100 80GB HBM3" in devices
           and len(cells) >= 40 and len(bars) > 0 and "commits differ" in r.stdout,
           f"the repository's PoCL and H100 results merge ({len(devices)} devices, {len(cells)} rows, {len(bars)} bars)")

    # Errors: one line on stderr, a non-zero exit, nothing written.
    garbage = os.path.join(work, "garbage.json")
    with open(garbage, "w") as f:
        f.write("{not json")
    other = os.path.join(work, "other.json")
    with open(other, "w") as f:
        json.dump({"format_version": 99, "rows": [], "devices": [], "provenance": {}}, f)
    norow = os.path.join(work, "norow.json")
    with open(norow, "w") as f:
        json.dump({"format_version": 2, "provenance": {}, "devices": [], "rows": [{"case": 1}]}, f)
    textcase = os.path.join(work, "textcase.json")
    with open(textcase, "w") as f:
        json.dump({"format_version": 2, "provenance": {}, "devices": [], "rows": [{"case": "1", "device_index": 0}]}, f)
    out = os.path.join(work, "never.md")
    bad = [
        ("no file", [], "give one or more"),
        ("not JSON", [garbage], "garbage.json"),
        ("another format version", [other], "format version 1..4"),
        ("a row without its fields", [norow], "no number 'device_index'"),
        ("a row whose case is text", [textcase], "no number 'case'"),
        ("a missing file", [os.path.join(work, "missing.json")], "missing.json"),
        ("an unknown baseline", [a, b, "--baseline", "nvidia"], "devices: Dev A, Dev B"),
        ("an ambiguous baseline", [a, b, "--baseline", "dev"], "'Dev A' and 'Dev B'"),
        ("an unknown option", [a, "--frobnicate"], "'--frobnicate'"),
        ("an unknown algorithm", [a, "--algo", "magic"], "'magic'"),
        ("an unwritable output", [a, "--md", "/nonexistent-dir/r.md"], "/nonexistent-dir"),
    ]
    for what, args, names in bad:
        if os.path.exists(out):
            os.remove(out)
        r = run(exe, *args, *([] if "--md" in args else ["--md", out]))
        expect(one_line_error(r) and names in r.stderr and not os.path.exists(out) and not r.stdout,
               f"{what}: one-line error naming {names}, nothing written ({r.stderr.strip()[:110]})")

    # files_write_atomic stages each file as PATH.XXXXXX (mkstemp) beside it
    leftovers = [n for n in os.listdir(work) if re.search(r"\.[A-Za-z0-9]+\.[A-Za-z0-9_]{6}$", n)]
    expect(not leftovers, f"no temporary files left ({leftovers})")
    return summary()


if __name__ == "__main__":
    sys.exit(main())
