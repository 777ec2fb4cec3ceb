#!/usr/bin/env bash
# Run HERE (a machine with Debian's package lists) before a device session: downloads the .deb
# files the device machine lacks (it reaches no network) into bench/device/debs/, which the
# device tool then carries (`carry: ["bench/device/debs", "build-device"]`), and builds clattn
# into build-device/ against them (both machines are x86-64; the device's glibc is newer).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p debs
(cd debs && apt-get download ocl-icd-libopencl1 libclblast1 libcjson1 libopenblas0-pthread \
  libgfortran5 libquadmath0 >/dev/null)
ls debs
cd ../..
cmake -S . -B build-device -DCMAKE_BUILD_TYPE=Release -DCLATTN_BUILD_TESTS=OFF >/dev/null
cmake --build build-device -j"$(nproc)" >/dev/null
du -sh bench/device/debs build-device
echo "prepared: bench/device/debs and build-device/"
