#!/usr/bin/env bash
# Run ON the lent NVIDIA machine, in one call (about 7 minutes), after bench/device/prepare.sh
# here: sets up the NVIDIA OpenCL ICD, unpacks the ICD loader, CLBlast, cJSON and OpenBLAS
# carried as .deb files, then: `clattn check` for every kernel family (the tensor-core one in
# f16 and bf16, inline PTX and its portable emulation), the benchmark suite per family and
# storage type (JSON per run), PyTorch's scaled_dot_product_attention on the same shapes (f32,
# bf16, f16), and the inline-PTX probe. Everything it prints goes to $OUT/device-run.txt too;
# copy $OUT into bench/results-<gpu>/ and the table into bench/RESULTS.md.
# CLATTN_DEVICE_TUNE=1 runs the tuner first (4 minutes more); extra steps:
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
# 3. correctness first: every family on the GPU against the CPU reference. The tensor-core family
#    (inline PTX) in f16 and bf16, and once more through its portable emulation on the same GPU;
#    the decode and register-tiled families; the CPU family. (device 0 is the GPU)
step timeout 60 "${CLATTN[@]}" check --quick --device 0
for dt in bf16 f16; do
  CLATTN_KERNELS=mma step timeout 40 "${CLATTN[@]}" check --quick --device 0 --dtype "$dt"
done
CLATTN_KERNELS=mma CLATTN_MMA_PORTABLE=1 step timeout 40 "${CLATTN[@]}" check --quick --device 0 --dtype bf16
CLATTN_KERNELS=decode step timeout 40 "${CLATTN[@]}" check --quick --device 0
CLATTN_KERNELS=rtile step timeout 40 "${CLATTN[@]}" check --quick --device 0
CLATTN_KERNELS=rows step timeout 40 "${CLATTN[@]}" check --quick --device 0
# 4. the tuner, when asked (CLATTN_DEVICE_TUNE=1; its user file then serves every later step)
if [ -n "${CLATTN_DEVICE_TUNE:-}" ]; then
  step timeout 240 "${CLATTN[@]}" tune --device 0 --budget-ms 50 --emit-c
  cp /tmp/clattn-cache/tuning-*.txt "$OUT/" 2>/dev/null
fi
# 5. speed, family by family on the same shapes: prefill 3-6, 9, 11 (d = 64, 128, causal or
#    not, GQA), small 12, decode 20-22; f32, then bf16 and f16 where the tensor cores serve
b() { local fam=$1 dt=$2 cases=$3 tag=${4:-$1}
  CLATTN_KERNELS=$fam step timeout 75 "${CLATTN[@]}" bench --device 0 --cases "$cases" --dtype "$dt" --algo fused \
    --budget-ms 120 --json "$OUT/bench-$tag-$dt.json"; }
CLATTN_KERNELS=tiles step timeout 90 "${CLATTN[@]}" bench --device 0 --cases 3,4,5,6,9,11,12,20,21,22 \
  --algo fused,unfused --budget-ms 120 --json "$OUT/bench-tiles-f32.json"
CLATTN_TILES_UNROLL=1 b tiles f32 3,5,12,21,22 tiles-unrolled # the same kernel, its loops unrolled
b rtile f32 3,4,5,6,9,11,12
b decode f32 20,21,22
b tiles bf16 3,4,5,6,9,11,21,22
b mma bf16 3,4,5,6,9,11,12
b mma f16 3,4,5,6,9,11
b decode bf16 20,21,22
# 6. the peer on the same shapes, in the same call: f32, bf16, f16
PYTHONUNBUFFERED=1 step timeout 75 python3 bench/device/torch_sdpa.py
# 7. can NVIDIA's OpenCL compiler take inline PTX mma.sync (the probe of the first session)?
step timeout 30 env LD_LIBRARY_PATH="$LIBS" build-device/bench/clattn_ptx_probe
if [ -n "${CLATTN_DEVICE_EXTRA:-}" ]; then step bash -c "$CLATTN_DEVICE_EXTRA"; fi
echo "== done"
