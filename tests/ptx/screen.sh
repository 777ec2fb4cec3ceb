#!/usr/bin/env bash
# Offline screen of the GPU kernels for NVIDIA, without a GPU: each variant's source, assembled
# as the library assembles it (common.cl, the file's prelude, the file), is compiled to PTX by
# clang's OpenCL NVPTX target with Debian's libclc for the builtins, the PTX header is set to the
# real target (sm_80, sm_90), and NVIDIA's ptxas assembles it with -v: the inline PTX's syntax
# and operand constraints are checked, and registers, spills and shared memory are reported.
# NVIDIA's own OpenCL compiler differs in detail (its builtins, its scheduling), so this is a
# screen, not a proof. exp2/log2 map to ex2.approx/lg2.approx here, as NVIDIA's OpenCL compiles
# them (libclc's software versions would inflate the register counts).
#
# Usage: tests/ptx/screen.sh [KERNELS_DIR] [OUT_DIR]. Exit 0 with a table when every variant
# assembles and none spills beyond tests/ptx/spills.allowed; 77 (skipped) when clang, libclc or
# ptxas is missing; 1 otherwise.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kernels=${1:-$here/../../kernels}
out=${2:-$(mktemp -d)}
mkdir -p "$out"

find_tool() { for t in "$@"; do command -v "$t" >/dev/null && { command -v "$t"; return; }; done; }
CLANG=$(find_tool clang-15 clang-16 clang-14 clang)
LINK=$(find_tool llvm-link-15 llvm-link-16 llvm-link-14 llvm-link)
OPT=$(find_tool opt-15 opt-16 opt-14 opt)
LLC=$(find_tool llc-15 llc-16 llc-14 llc)
PTXAS=$(find_tool ptxas /usr/local/cuda/bin/ptxas)
LIBCLC=$(ls /usr/lib/clc/nvptx64--nvidiacl.bc /usr/lib/llvm-*/lib/clc/nvptx64--nvidiacl.bc 2>/dev/null | head -1)
for need in CLANG LINK OPT LLC PTXAS LIBCLC; do
  if [ -z "${!need}" ]; then
    echo "ptx screen skipped: no ${need,,} (clang, llvm, Debian's libclc-15 and the CUDA toolkit's ptxas are needed)"
    exit 77
  fi
done

# name | file | options: the shipped NVIDIA parameters (host/tuning_db.c, host/family_*.c on a
# device of 48 KB local memory), every switch off unless named
variants=(
  "tiles f32 prefill d64|fwd_tiles|-D DTYPE=0 -D D=64 -D DV=64 -D VW=4 -D BM=64 -D BN=32 -D TPR=1"
  "tiles f32 prefill d128|fwd_tiles|-D DTYPE=0 -D D=128 -D DV=128 -D VW=4 -D BM=64 -D BN=16 -D TPR=2"
  "tiles f32 decode d128 split|fwd_tiles|-D DTYPE=0 -D D=128 -D DV=128 -D VW=4 -D BM=16 -D BN=16 -D TPR=4 -D SPLIT=1"
  "tiles bf16 prefill d128|fwd_tiles|-D DTYPE=2 -D D=128 -D DV=128 -D VW=4 -D BM=64 -D BN=16 -D TPR=2"
  "tiles f32 prefill d64 unrolled|fwd_tiles|-D DTYPE=0 -D D=64 -D DV=64 -D VW=4 -D BM=64 -D BN=32 -D TPR=1 -D UNROLL=1"
  "tiles f32 prefill d128 unrolled|fwd_tiles|-D DTYPE=0 -D D=128 -D DV=128 -D VW=4 -D BM=64 -D BN=16 -D TPR=2 -D UNROLL=1"
  "tiles f32 decode d128 unrolled|fwd_tiles|-D DTYPE=0 -D D=128 -D DV=128 -D VW=4 -D BM=16 -D BN=16 -D TPR=4 -D SPLIT=1 -D UNROLL=1"
  "rtile f32 prefill d64|fwd_rtile|-D DTYPE=0 -D D=64 -D DV=64 -D VW=4 -D BM=64 -D BN=64"
  "rtile f32 prefill d128|fwd_rtile|-D DTYPE=0 -D D=128 -D DV=128 -D VW=4 -D BM=64 -D BN=64"
  "rtile bf16 d128 every switch|fwd_rtile|-D DTYPE=2 -D D=128 -D DV=128 -D VW=4 -D BM=64 -D BN=64 -D SOFTCAP=1 -D ALIBI=1 -D MASK=1 -D SINKS=1 -D SEQUSED=1 -D VARLEN=1"
  "rtile f32 prefill d256|fwd_rtile|-D DTYPE=0 -D D=256 -D DV=256 -D VW=4 -D BM=64 -D BN=64"
  "decode f32 d64 gqa4 split|fwd_decode|-D DTYPE=0 -D D=64 -D DV=64 -D VW=4 -D BM=4 -D BN=32 -D SPLIT=1"
  "decode f32 d128 gqa4 split|fwd_decode|-D DTYPE=0 -D D=128 -D DV=128 -D VW=4 -D BM=4 -D BN=32 -D SPLIT=1"
  "decode bf16 d128 gqa4 split|fwd_decode|-D DTYPE=2 -D D=128 -D DV=128 -D VW=4 -D BM=4 -D BN=32 -D SPLIT=1"
  "decode bf16 d128 paged|fwd_decode|-D DTYPE=2 -D D=128 -D DV=128 -D VW=4 -D BM=4 -D BN=32 -D PAGED=1 -D SPLIT=1"
  "mma f16 prefill d64|fwd_mma|-D DTYPE=1 -D D=64 -D DV=64 -D BM=64 -D BN=64"
  "mma bf16 prefill d64|fwd_mma|-D DTYPE=2 -D D=64 -D DV=64 -D BM=64 -D BN=64"
  "mma f16 prefill d128|fwd_mma|-D DTYPE=1 -D D=128 -D DV=128 -D BM=64 -D BN=64"
  "mma bf16 prefill d128|fwd_mma|-D DTYPE=2 -D D=128 -D DV=128 -D BM=64 -D BN=64"
  "mma bf16 d128 every switch|fwd_mma|-D DTYPE=2 -D D=128 -D DV=128 -D BM=64 -D BN=64 -D SOFTCAP=1 -D ALIBI=1 -D MASK=1 -D SINKS=1 -D SEQUSED=1 -D VARLEN=1"
  "mma bf16 d128 paged split|fwd_mma|-D DTYPE=2 -D D=128 -D DV=128 -D BM=64 -D BN=64 -D PAGED=1 -D SPLIT=1"
  "mma f16 prefill d256|fwd_mma|-D DTYPE=1 -D D=256 -D DV=256 -D BM=64 -D BN=16"
)
switches="SOFTCAP ALIBI MASK SINKS SEQUSED VARLEN PAGED SPLIT KT PREFETCH HEADS_TOGETHER UNROLL"

cat > "$out/screen_prelude.cl" <<'EOF'
#define OVL __attribute__((overloadable))
inline float OVL screen_ex2(float x) { float r; __asm__("ex2.approx.f32 %0, %1;" : "=f"(r) : "f"(x)); return r; }
inline float4 OVL screen_ex2(float4 x) { return (float4)(screen_ex2(x.x), screen_ex2(x.y), screen_ex2(x.z), screen_ex2(x.w)); }
inline float OVL screen_lg2(float x) { float r; __asm__("lg2.approx.f32 %0, %1;" : "=f"(r) : "f"(x)); return r; }
#define exp2(x) screen_ex2(x)
#define log2(x) screen_lg2(x)
EOF

printf '%-32s %-6s %5s %6s %6s %6s %7s\n' variant arch regs spill_st spill_ld stack smem
fail=0
n=0
for v in "${variants[@]}"; do
  IFS='|' read -r name file opts <<< "$v"
  n=$((n + 1))
  src="$out/v$n.cl"
  prelude=""
  [ "$file" = fwd_mma ] && prelude="$kernels/warp.cl"
  cat "$out/screen_prelude.cl" "$kernels/common.cl" $prelude "$kernels/$file.cl" > "$src"
  defs="$opts -D WARP_PTX=1"
  for s in $switches; do case " $opts " in *" -D $s="*) ;; *) defs="$defs -D $s=0" ;; esac; done
  # shellcheck disable=SC2086
  if ! "$CLANG" -x cl -cl-std=CL1.2 -target nvptx64-nvidia-nvcl -O3 -cl-mad-enable -Xclang -finclude-default-header \
      $defs -S -emit-llvm -o "$out/v$n.ll" "$src" 2> "$out/v$n.clang.log" ||
     ! "$LINK" "$out/v$n.ll" "$LIBCLC" -o "$out/v$n.linked.bc" 2> "$out/v$n.link.log" ||
     ! "$OPT" -O3 "$out/v$n.linked.bc" -o "$out/v$n.bc" ||
     ! "$LLC" -march=nvptx64 -mcpu=sm_80 "$out/v$n.bc" -o "$out/v$n.sm_80.ptx" 2> "$out/v$n.llc.log"; then
    echo "$name: compiling to PTX failed:"; cat "$out/v$n.clang.log" "$out/v$n.llc.log" 2>/dev/null | head -20
    fail=1
    continue
  fi
  for arch in sm_80 sm_90; do
    ptx="$out/v$n.$arch.ptx"
    # the header of the real target: LLVM 15 writes sm_80 / PTX 7.0 at most
    [ "$arch" = sm_90 ] && sed -e 's/^\.version .*/.version 7.8/' -e 's/^\.target sm_80.*/.target sm_90/' \
      "$out/v$n.sm_80.ptx" > "$ptx"
    if ! "$PTXAS" -arch="$arch" -v "$ptx" -o "$out/v$n.$arch.cubin" > "$out/v$n.$arch.log" 2>&1; then
      echo "$name ($arch): ptxas failed:"; head -20 "$out/v$n.$arch.log"
      fail=1
      continue
    fi
    log="$out/v$n.$arch.log"
    regs=$(sed -n 's/.*Used \([0-9]*\) registers.*/\1/p' "$log" | head -1)
    st=$(sed -n 's/.* \([0-9]*\) bytes spill stores.*/\1/p' "$log" | head -1)
    ld=$(sed -n 's/.*spill stores, \([0-9]*\) bytes spill loads.*/\1/p' "$log" | head -1)
    stack=$(sed -n 's/.* \([0-9]*\) bytes stack frame.*/\1/p' "$log" | head -1)
    smem=$(sed -n 's/.* \([0-9]*\) bytes smem.*/\1/p' "$log" | head -1)
    printf '%-32s %-6s %5s %6s %6s %6s %7s\n' "$name" "$arch" "$regs" "$st" "$ld" "$stack" "${smem:-0}"
    if [ "${st:-0}" != 0 ] || [ "${ld:-0}" != 0 ]; then
      if grep -qxF "$name" "$here/spills.allowed" 2>/dev/null; then
        echo "  (spills explained in tests/ptx/spills.allowed)"
      else
        echo "  $name spills on $arch: not in tests/ptx/spills.allowed"
        fail=1
      fi
    fi
  done
done
[ $fail = 0 ] && echo "ptx screen: every variant assembles for sm_80 and sm_90" || echo "ptx screen: FAILED"
exit $fail
