#!/usr/bin/env bash
# One command from a fresh Debian bookworm machine to a result:
#   ./setup.sh bench   install missing packages, build, run the main job on every OpenCL device:
#                      devices, a quick correctness check, the benchmark suite (table + JSON/CSV/SVG)
#   ./setup.sh test    install missing packages, build, run the whole test suite (ctest)
# Runs as root, or as a normal user with sudo for apt-get. CLATTN_BUILD_DIR picks the build dir.
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-}
case "$mode" in
  bench|test) ;;
  *) echo "usage: $0 bench|test" >&2; exit 2 ;;
esac

packages=(build-essential cmake pkg-config git ocl-icd-opencl-dev opencl-headers pocl-opencl-icd libcjson-dev
          clinfo libclblast-dev libcriterion-dev python3 python3-numpy)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "setup: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

build=${CLATTN_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)"

if [ "$mode" = bench ]; then
  "$build/bench/clattn" devices
  echo
  "$build/bench/clattn" check --quick --device all
  echo
  "$build/bench/clattn" bench --device all --json clattn-bench.json --csv clattn-bench.csv --svg clattn-bench.svg
else
  ctest --test-dir "$build" --output-on-failure
fi
