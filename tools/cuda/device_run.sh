#!/usr/bin/env bash
# Runs on the GPU machine from the repository root (the `device` tool's working copy), with a bundle
# made by make_device_bundle.sh and packed as build-devpack/bundle.tar.xz (carry build-devpack; another
# folder when VLMCHECK_DEVPACK names it, so several builds can take turns on the machine):
#   tests            the CUDA conformance test, the CUDA CLI/parity tests, the device tests, and
#                    `vlmcheck run --device cuda` on the bundled demo VLM
#   bench SHAPE...   bench_cuda_kernels (once), then `vlmcheck bench --device cuda` for each synthetic
#                    shape in bf16 and MLX 4-bit g64 (2048-token prompt, 64 decode tokens)
#   hf SHAPE...      the transformers eager peer (tools/cuda/hf_decode_baseline.py) on the same card
#   long SHAPE...    `vlmcheck bench --device cuda` with a 16,384-token prompt (bf16; TTFT is the figure)
#   profile SHAPE... the bench (2048-token prompt, 64 decode tokens, bf16 and 4-bit) with VLMCHECK_CUDA_PROFILE=1:
#                    per-op GPU and host time in the log
#   kv SHAPE...      the MLX 4-bit g64 decoder at 2048- and 16,384-token prompts, with the f32 KV cache and then
#                    with `--kv-bits 4 --quantized-kv-start 0` (the quantized cache from the first token; decode
#                    reads the packed rows directly), 32 decode tokens, 1 repetition each
#                    (VLMCHECK_KV_PROMPTS="16384" picks the prompt lengths)
#   vision SHAPE...  `vlmcheck bench --device cuda --image-size 1280x960` on the VLM shape with its vision tower
#                    (bf16 throughout): the image prompt alone (no filler), 64 decode tokens, 2 repetitions; TTFT
#                    = image load + preprocessing + vision encode + prefill, each in the log
#   vision-q4 SHAPE... the same with the decoder in MLX 4-bit g64 (the tower stays bf16, as mlx-community's)
#   photo SHAPE...   a full-size photo prompt (bf16): `--image-size 4032x3016` (VLMCHECK_PHOTO_SIZE overrides), which
#                    Qwen2.5-VL's default max_pixels (16384 * 28 * 28) keeps at 3024x4032 = 15,552 image tokens over
#                    62,208 patches; 8 decode tokens, 1 repetition; then the same with VLMCHECK_CUDA_PROFILE=1
#                    (per-op GPU time of preprocessing's upload, the vision tower and the prefill;
#                    VLMCHECK_PHOTO_PROFILE= with an empty value skips that second run)
# VLMCHECK_RUN_TAG=name suffixes the log tarball and summary (logs-name.tar.gz), so that one call can run the
# script once per bundle (VLMCHECK_DEVPACK) for an A/B without the second run overwriting the first's logs.
# Several modes may follow each other: `tests bench qwen2.5-vl-3b hf qwen2.5-vl-3b`. Logs go to $OUT
# (the device tool brings back at most 8 files, so they are tarred into one); the last lines printed
# are a summary.
set -uo pipefail
root=$(pwd)
out=${OUT:-/tmp/vlmcheck-device-out}
logs=/tmp/vlmcheck-device-logs${VLMCHECK_RUN_TAG:+-$VLMCHECK_RUN_TAG}
mkdir -p "$out" "$logs" /tmp/bd
rm -rf /tmp/bd && mkdir -p /tmp/bd
tar -C /tmp/bd -xJf "${VLMCHECK_DEVPACK:-build-devpack}/bundle.tar.xz"
bin=/tmp/bd/bin
export LD_LIBRARY_PATH="/tmp/bd/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export VLMCHECK_TEST_SOURCE_DIR="$root" VLMCHECK_TEST_BINARY="$bin/vlmcheck"
summary=()
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$logs/gpu.txt" 2>&1
summary+=("gpu: $(cat "$logs/gpu.txt")")
mode=""
kernels_done=0
for arg in "$@"; do
  case "$arg" in
    tests)
      for t in test_kernels_cuda test_kernels_devices test_cli_cuda test_cli_run_device; do
        [[ -x "$bin/$t" ]] || continue
        timeout 300 "$bin/$t" > "$logs/$t.log" 2>&1
        summary+=("$t rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$logs/$t.log" | head -3 | tr '\n' ' ')")
      done
      rm -rf /tmp/run-demo
      (cd /tmp && VLMCHECK_ASSETS="$root/assets" timeout 300 "$bin/vlmcheck" run --device cuda --output-dir /tmp/run-demo > "$logs/run_demo.txt" 2>&1)
      summary+=("run --device cuda (demo VLM) rc=$? devices: $(grep -ho '"device": *"[a-z]*"' /tmp/run-demo/*.jsonl 2>/dev/null | sort | uniq -c | tr '\n' ' ')")
      mode="" ;;
    bench|hf|long|profile|vision|vision-q4|photo|kv) mode=$arg ;;
    *)
      if [[ "$mode" == bench ]]; then
        if [[ $kernels_done == 0 && -x "$bin/bench_cuda_kernels" ]]; then
          timeout 240 "$bin/bench_cuda_kernels" > "$logs/bench_cuda_kernels.md" 2>&1
          kernels_done=1
        fi
        for bits in "" "--bits 4"; do
          tag="$arg${bits:+-q4}"
          timeout 240 "$bin/vlmcheck" bench --device cuda --synthetic "$arg" $bits --prompt-tokens 2048 \
            --gen-tokens 64 --repetitions 3 --work-dir /tmp > "$logs/bench_$tag.txt" 2>&1
          summary+=("bench $tag rc=$? $(grep -E '^(load|prefill|decode)' "$logs/bench_$tag.txt" | tr -s ' ' | tr '\n' ' ')")
          rm -rf /tmp/vlmcheck-bench-*
        done
      elif [[ "$mode" == vision || "$mode" == vision-q4 ]]; then
        bits=""
        [[ "$mode" == vision-q4 ]] && bits="--bits 4"
        tag="vision_$arg${bits:+-q4}"
        timeout 300 "$bin/vlmcheck" bench --device cuda --synthetic "$arg" $bits --image-size 1280x960 \
          --gen-tokens 64 --repetitions 2 --work-dir /tmp > "$logs/$tag.txt" 2>&1
        summary+=("$tag rc=$? $(grep -E '^(image|ttft|prefill|decode) ' "$logs/$tag.txt" | tr -s ' ' | tr '\n' ' ')")
        rm -rf /tmp/vlmcheck-bench-*
      elif [[ "$mode" == photo ]]; then
        size=${VLMCHECK_PHOTO_SIZE:-4032x3016}
        for prof in "" ${VLMCHECK_PHOTO_PROFILE-1}; do
          tag="photo_$arg${prof:+-profile}"
          VLMCHECK_CUDA_PROFILE=$prof timeout 300 "$bin/vlmcheck" bench --device cuda --synthetic "$arg" --image-size "$size" --gen-tokens 8 \
            --repetitions 1 --work-dir /tmp > "$logs/$tag.txt" 2>&1
          summary+=("$tag rc=$? $(grep -E '^(image|ttft|prefill|decode) ' "$logs/$tag.txt" | tr -s ' ' | tr '\n' ' ')")
          rm -rf /tmp/vlmcheck-bench-*
        done
      elif [[ "$mode" == kv ]]; then
        for prompt in ${VLMCHECK_KV_PROMPTS:-2048 16384}; do
          for kvq in "" "--kv-bits 4 --quantized-kv-start 0"; do
            tag="kv_$arg-q4-$prompt${kvq:+-kv4}"
            timeout 300 "$bin/vlmcheck" bench --device cuda --synthetic "$arg" --bits 4 $kvq --prompt-tokens "$prompt" \
              --gen-tokens 32 --repetitions 1 --work-dir /tmp > "$logs/$tag.txt" 2>&1
            summary+=("$tag rc=$? $(grep -E '^(prefill|decode|kv cache)' "$logs/$tag.txt" | tr -s ' ' | tr '\n' ' ')")
          done
          rm -rf /tmp/vlmcheck-bench-*
        done
      elif [[ "$mode" == long ]]; then
        timeout 300 "$bin/vlmcheck" bench --device cuda --synthetic "$arg" --prompt-tokens 16384 --gen-tokens 8 \
          --repetitions 1 --work-dir /tmp > "$logs/long_$arg.txt" 2>&1
        summary+=("long $arg rc=$? $(grep -E '^(prefill|decode)' "$logs/long_$arg.txt" | tr -s ' ' | tr '\n' ' ')")
        rm -rf /tmp/vlmcheck-bench-*
      elif [[ "$mode" == profile ]]; then
        for bits in "" "--bits 4"; do
          tag="$arg${bits:+-q4}"
          VLMCHECK_CUDA_PROFILE=1 timeout 240 "$bin/vlmcheck" bench --device cuda --synthetic "$arg" $bits \
            --prompt-tokens 2048 --gen-tokens 64 --repetitions 1 --work-dir /tmp > "$logs/profile_$tag.txt" 2>&1
          summary+=("profile $tag rc=$?")
          rm -rf /tmp/vlmcheck-bench-*
        done
      elif [[ "$mode" == hf ]]; then
        timeout 300 python3 tools/cuda/hf_decode_baseline.py --shapes "$arg" > "$logs/hf_$arg.txt" 2>&1
        summary+=("hf $arg rc=$? $(grep '^{' "$logs/hf_$arg.txt" | tail -1)")
      fi ;;
  esac
done
printf '%s\n' "${summary[@]}" > "$logs/summary.txt"
tar -C "$logs" -czf "$out/logs${VLMCHECK_RUN_TAG:+-$VLMCHECK_RUN_TAG}.tar.gz" .
cat "$logs/summary.txt"
