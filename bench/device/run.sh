#!/usr/bin/env bash
# Run ON the lent NVIDIA machine, in one call (about 5 minutes), after bench/device/prepare.sh
# here: sets up the NVIDIA OpenCL ICD, unpacks the ICD loader, CLBlast, cJSON and OpenBLAS
# carried as .deb files, then runs clattn's quick check, the tuner (`clattn tune`, whose user
# file then serves the later steps and comes back in $OUT), the benchmark suite (f32, bf16),
# PyTorch's scaled_dot_product_attention on the same shapes, the full check with the tuned
# parameters, and the inline-PTX mma.sync probe. Everything it prints goes to
# $OUT/device-run.txt too; bench/RESULTS.md records it.
# CLATTN_DEVICE_SKIP_TUNE=1 skips the tuner (the shipped parameters serve); extra steps:
# CLATTN_DEVICE_EXTRA="cmd; cmd" runs after the rest.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/clattn-device}
mkdir -p "$OUT"
exec > >(tee "$OUT/device-run.txt") 2>&1
# the commit the carried binary was built from (the device copy's git HEAD is not updated)
echo "== clattn device run $(date -u +%FT%TZ), build of commit $(sed -n 's/.*"\(.*\)".*/\1/p' build-device/generated/clattn_commit.h 2>/dev/null)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"

# 1. the NVIDIA ICD: the driver ships libnvidia-opencl.so.1; the loader finds it through this
#    file. Name it by full path when it is not on the linker's path.
if command -v nvidia-smi >/dev/null && [ ! -e /etc/OpenCL/vendors/nvidia.icd ]; then
  lib=$(ldconfig -p | awk '/libnvidia-opencl.so.1/ {print $NF; exit}')
  [ -n "$lib" ] || lib=$(find / -xdev -name 'libnvidia-opencl.so.1' 2>/dev/null | head -1)
  [ -n "$lib" ] || lib=$(find /usr/local/nvidia /usr/lib /usr/lib64 -name 'libnvidia-opencl.so*' 2>/dev/null | head -1)
  mkdir -p /etc/OpenCL/vendors && echo "${lib:-libnvidia-opencl.so.1}" > /etc/OpenCL/vendors/nvidia.icd
  echo "wrote /etc/OpenCL/vendors/nvidia.icd: $(cat /etc/OpenCL/vendors/nvidia.icd)"
fi
# 2. the carried libraries, unpacked into a private prefix; only clattn's processes see them
#    (the Python peer keeps the machine's own libraries)
PREFIX=/tmp/clattn-prefix
for deb in bench/device/debs/*.deb; do dpkg -x "$deb" "$PREFIX"; done
LIBS="$PWD/build-device:$PREFIX/usr/lib/x86_64-linux-gnu:$PREFIX/usr/lib/x86_64-linux-gnu/openblas-pthread"
export CLATTN_CACHE_DIR=/tmp/clattn-cache
CLATTN=(env LD_LIBRARY_PATH="$LIBS:${LD_LIBRARY_PATH:-}" "$PWD/build-device/bench/clattn")
step() { echo; echo "== $*"; local t0=$SECONDS; "$@"; local rc=$?; echo "== rc=$rc, $((SECONDS - t0)) s"; }

step "${CLATTN[@]}" devices
# 3. correctness first, then the tuner (its user file then serves every later step), then speed
#    (the CPU reference is left out of the timed algorithms; device 0 is the GPU)
step timeout 60 "${CLATTN[@]}" check --quick --device 0
# CLATTN_DEVICE_SKIP_TUNE=1: measure with the shipped parameters instead (no user file then)
if [ -z "${CLATTN_DEVICE_SKIP_TUNE:-}" ]; then
  step timeout 240 "${CLATTN[@]}" tune --device 0 --budget-ms 50 --emit-c
  cp /tmp/clattn-cache/tuning-*.txt "$OUT/" 2>/dev/null
fi
step timeout 90 "${CLATTN[@]}" bench --device 0 --cases 3,4,5,6,9,11,12,20,21,22 --algo fused,unfused \
  --budget-ms 150 --json "$OUT/bench-f32.json"
step timeout 40 "${CLATTN[@]}" bench --device 0 --cases 3,4,5,6,21,22 --dtype bf16 --algo fused \
  --budget-ms 150 --json "$OUT/bench-bf16.json"
# 4. the peer on the same shapes, in the same call
PYTHONUNBUFFERED=1 step timeout 60 python3 bench/device/torch_sdpa.py
# 5. every check case with the tuned parameters; the CPU family on the GPU
step timeout 60 "${CLATTN[@]}" check --device 0
CLATTN_KERNELS=rows step timeout 40 "${CLATTN[@]}" check --quick --device 0
# 6. can NVIDIA's OpenCL compiler take inline PTX mma.sync (tensor cores)?
step timeout 30 env LD_LIBRARY_PATH="$LIBS" build-device/bench/clattn_ptx_probe
if [ -n "${CLATTN_DEVICE_EXTRA:-}" ]; then step bash -c "$CLATTN_DEVICE_EXTRA"; fi
echo "== done"
