#!/usr/bin/env python3
"""No import circles in host/: file A depends on file B when A's object refers to a symbol
that B's object defines (a call, or a table entry). The graph must be acyclic; its layers
(each file above everything it uses) are printed, lowest first.

usage: layers.py NM OBJECT..."""
import os
import subprocess
import sys


def symbols(nm, obj):
    out = subprocess.run([nm, "-P", obj], check=True, capture_output=True, text=True).stdout
    defined, used = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            used.add(name)
        elif kind.upper() in "TDBRVW":
            defined.add(name)
    return defined, used


def main():
    nm = sys.argv[1]
    objs = [o for arg in sys.argv[2:] for o in arg.split(";") if o]  # a CMake list arrives as one argument
    if not objs:
        sys.exit("layers.py: no object files given")
    name = lambda o: os.path.basename(o).split(".")[0]
    defs, uses = {}, {}
    for o in objs:
        defs[name(o)], uses[name(o)] = symbols(nm, o)
    owner = {s: f for f, ss in defs.items() for s in ss}
    deps = {f: sorted({owner[s] for s in uses[f] if s in owner and owner[s] != f}) for f in defs}
    # Kahn's algorithm: what remains after peeling off layers is a cycle
    level, left = {}, set(deps)
    while left:
        ready = {f for f in left if all(d in level for d in deps[f])}
        if not ready:
            cyc = sorted(left)
            sys.exit("layers.py: import circle among " + ", ".join(
                f"{f} -> {{{', '.join(d for d in deps[f] if d in left)}}}" for f in cyc))
        for f in ready:
            level[f] = 1 + max((level[d] for d in deps[f]), default=-1)
        left -= ready
    for lv in range(max(level.values()) + 1):
        print(f"layer {lv}: " + " ".join(sorted(f for f in level if level[f] == lv)))
    print(f"layers.py: {len(deps)} files, no import circle")


if __name__ == "__main__":
    main()
