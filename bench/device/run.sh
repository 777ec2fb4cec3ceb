#!/usr/bin/env bash
# Run ON the lent NVIDIA machine, in one call (under 5 minutes): sets up the NVIDIA OpenCL ICD,
# unpacks the ICD loader and CLBlast carried as .deb files, then runs clattn's quick check, the
# prefill and decode benchmark cases, PyTorch's scaled_dot_product_attention on the same shapes
# (if torch is installed there), and the inline-PTX mma.sync probe. Everything it prints goes to
# $OUT/device-run.txt too; bench/RESULTS.md records it.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/clattn-device}
mkdir -p "$OUT"
exec > >(tee "$OUT/device-run.txt") 2>&1
echo "== clattn device run $(date -u +%FT%TZ), commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"

# 1. the NVIDIA ICD: the driver ships libnvidia-opencl.so.1; the loader finds it through this file
if [ ! -e /etc/OpenCL/vendors/nvidia.icd ]; then
  mkdir -p /etc/OpenCL/vendors && echo libnvidia-opencl.so.1 > /etc/OpenCL/vendors/nvidia.icd
  echo "wrote /etc/OpenCL/vendors/nvidia.icd"
fi
# 2. the ICD loader, CLBlast and cJSON from the carried .deb files
PREFIX="$OUT/prefix"
for deb in bench/device/debs/*.deb; do dpkg -x "$deb" "$PREFIX"; done
export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export CLATTN_CACHE_DIR="$OUT/cache"
CLATTN=build-device/bench/clattn

"$CLATTN" devices
# 3. correctness first, then speed: prefill and decode cases, f32 and bf16
timeout 60 "$CLATTN" check --quick --device all
timeout 120 "$CLATTN" bench --device all --cases 3,4,5,6,9,11,12 --budget-ms 300 --json "$OUT/prefill.json"
timeout 60 "$CLATTN" bench --device all --cases 20,21,22 --budget-ms 300 --json "$OUT/decode.json"
timeout 60 "$CLATTN" bench --device all --cases 4,21 --dtype bf16 --budget-ms 300 --json "$OUT/bf16.json"
# 4. the peer on the same shapes, in the same call
timeout 60 python3 bench/device/torch_sdpa.py || echo "torch SDPA peer not run"
# 5. can NVIDIA's OpenCL compiler take inline PTX mma.sync (tensor cores)?
timeout 30 build-device/bench/clattn_ptx_probe || echo "PTX probe failed to run"
echo "== done"
