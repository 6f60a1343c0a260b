#!/usr/bin/env bash
# Runs on the GPU machine from the repository root (the `device` tool's working copy), with a bundle
# made by make_device_bundle.sh at $BUNDLE (default build-devbundle): the CUDA conformance test, the
# CUDA parity/CLI tests, the kernel benchmark, `vlmcheck bench --device cuda` on the issue's shapes,
# and the transformers peer (tools/cuda/hf_decode_baseline.py) in the same call on the same card.
# Logs go to $OUT (the device tool brings them back); the last lines printed are a summary.
# Usage: bash tools/cuda/device_run.sh [tests|bench|all]
set -uo pipefail
what=${1:-all}
root=$(pwd)
bundle=${BUNDLE:-$root/build-devbundle}
out=${OUT:-/tmp/vlmcheck-device-out}
mkdir -p "$out"
export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export VLMCHECK_TEST_SOURCE_DIR="$root" VLMCHECK_TEST_BINARY="$bundle/bin/vlmcheck"
summary=()
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
if [[ "$what" == tests || "$what" == all ]]; then
  for t in "$bundle"/bin/test_*; do
    name=$(basename "$t")
    timeout 300 "$t" --gtest_brief=1 > "$out/$name.log" 2>&1
    rc=$?
    summary+=("$name rc=$rc $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/$name.log" | tr '\n' ' ')")
  done
fi
if [[ "$what" == bench || "$what" == all ]]; then
  [[ -x "$bundle/bin/bench_cuda_kernels" ]] && timeout 240 "$bundle/bin/bench_cuda_kernels" > "$out/bench_cuda_kernels.md" 2>&1
  for shape in ${SHAPES:-qwen2.5-vl-3b qwen2.5-vl-7b smolvlm-256m gemma-3-4b}; do
    for bits in "" "--bits 4"; do
      tag="$shape${bits:+-q4}"
      timeout 240 "$bundle/bin/vlmcheck" bench --device cuda --synthetic "$shape" $bits --prompt-tokens 2048 \
        --gen-tokens 64 --repetitions 3 > "$out/bench_$tag.txt" 2>&1
      summary+=("bench $tag rc=$? $(grep -E '^(prefill|decode)' "$out/bench_$tag.txt" | tr -s ' ' | tr '\n' ' ')")
    done
  done
  timeout 300 python3 tools/cuda/hf_decode_baseline.py > "$out/hf_baseline.txt" 2>&1
  summary+=("hf rc=$? $(tail -6 "$out/hf_baseline.txt" | tr '\n' ' ')")
fi
printf '%s\n' "${summary[@]}"
