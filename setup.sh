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
          clinfo libclblast-dev libcriterion-dev libopenblas-dev python3 python3-numpy clang libclang-rt-14-dev
          libopenmpi-dev openmpi-bin clang-15 llvm-15 libclc-15)  # the last three: the offline PTX screen
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

  # Reliability stages (issue 7). 1: each libFuzzer target for a bounded time from its seed
  # corpus, after replaying tests/fuzz/regressions/ (inputs that once crashed); a crash fails
  # the stage and leaves its input in the fuzz build folder, to be added to the regressions.
  CC=clang cmake -S . -B "$build-fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLATTN_FUZZ=ON \
    -DCLATTN_BUILD_TESTS=OFF -DCLATTN_BUILD_TOOLS=OFF >/dev/null
  cmake --build "$build-fuzz" -j"$(nproc)"
  for target in npy desc; do
    work="$build-fuzz/corpus_$target"
    mkdir -p "$work"
    if ls tests/fuzz/regressions/"$target"-* >/dev/null 2>&1; then
      "$build-fuzz/tests/fuzz/fuzz_$target" tests/fuzz/regressions/"$target"-*
    fi
    "$build-fuzz/tests/fuzz/fuzz_$target" -max_total_time="${CLATTN_FUZZ_SECONDS:-60}" -print_final_stats=1 \
      -rss_limit_mb=4096 -artifact_prefix="$build-fuzz/" "$work" "tests/fuzz/corpus_$target" 2>&1 | tail -n 12
  done

  # 2: the whole suite again under AddressSanitizer and UndefinedBehaviorSanitizer; any report
  # fails it. The install test is left out: it links an outside program against the library,
  # which an instrumented build would need too. Its ctest summary is the run's closing line.
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
  # the path quoted: the sanitizers' option parser splits on spaces, ':' and ','
  export LSAN_OPTIONS="suppressions='$PWD/tests/sanitizers/lsan.supp':print_suppressions=0:use_tls=0"
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  cmake -S . -B "$build-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLATTN_SANITIZE=ON >/dev/null
  cmake --build "$build-asan" -j"$(nproc)"
  # use_tls=0 (also in tests/CMakeLists.txt, with why): LeakSanitizer's tracer crashed walking
  # thread-local storage. Every test runs once: a failure fails the stage.
  ctest --test-dir "$build-asan" --output-on-failure -E "install_and_link_example|library_alone"
fi
