#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite: the optimised build first, then the
# unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/), then a bounded
# libFuzzer run of every parser's fuzz target (clang, ASan + UBSan; build-fuzz/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
jobs=$(nproc 2>/dev/null || echo 2)

bash scripts/build.sh build
# The tokenizer/template oracles (npm packages, installed once outside the repo) before any test needs them.
bash tests/oracles/install_oracles.sh >/dev/null
ctest --test-dir build --output-on-failure -j "$jobs" --timeout 900

if [[ "${VLMCHECK_SKIP_ASAN:-0}" != 1 ]]; then
  # Without CUDA and with the benchmarks: where the optimised build above finds nvcc, this is the build that
  # checks every target also compiles on a machine without it (the README's fresh Debian).
  BUILD_TYPE=RelWithDebInfo bash scripts/build.sh build-asan -DVLMCHECK_SANITIZE=ON -DVLMCHECK_CUDA=OFF
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j "$jobs" --timeout 900 -LE slow
fi

# Fuzzing: each parser (tokenizer.json, Jinja templates, image files) for VLMCHECK_FUZZ_SECONDS per target,
# seeded from the fixtures and real tokenizers the tests use; any crash, leak or sanitizer report fails the run.
if [[ "${VLMCHECK_SKIP_FUZZ:-0}" != 1 ]]; then
  VLMCHECK_FUZZ_BUILD="$(pwd)/build-fuzz" bash tests/fuzz/run_fuzz.sh "${VLMCHECK_FUZZ_SECONDS:-30}"
fi
