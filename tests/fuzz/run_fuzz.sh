#!/usr/bin/env bash
# Builds every tests/fuzz/fuzz_*.cpp as a libFuzzer target (clang, AddressSanitizer + UBSan, the
# project's libraries instrumented for coverage) and runs each one for N seconds. A target links
# vlmcheck_lib unless its source says otherwise in comments: "fuzz-links: <targets or libs>" and
# "fuzz-sources: <globs under the repository>" (to build only the code under test).
#
# usage: tests/fuzz/run_fuzz.sh [seconds per target = 60] [name filter regex = .]
# env:   VLMCHECK_FUZZ_BUILD (default <repo>/build-fuzz), CC/CXX (default clang/clang++), JOBS (default 2)
# Exit status is non-zero when a build fails or any target finds a crash; artifacts (crash-*, leak-*)
# land in $VLMCHECK_FUZZ_BUILD/artifacts/<target>/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
secs="${1:-60}"
filter="${2:-.}"
build="${VLMCHECK_FUZZ_BUILD:-$root/build-fuzz}"
wrap="$build/wrapper"
mkdir -p "$wrap"

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
  corpus="$build/corpus/$name"
  artifacts="$build/artifacts/$name/"
  mkdir -p "$corpus" "$artifacts"
  # Seed inputs kept in the repository, if any.
  [[ -d "$root/tests/fuzz/seeds/$name" ]] && cp -n "$root/tests/fuzz/seeds/$name"/* "$corpus"/ 2>/dev/null || true
  echo "== running $name for ${secs}s"
  if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
      "$build/obj/$name" -max_total_time="$secs" -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 \
      -artifact_prefix="$artifacts" "$corpus" 2>"$build/$name.log"; then
    echo "== $name: FAILED (see $build/$name.log and $artifacts)" >&2
    tail -40 "$build/$name.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$build/$name.log" || true
    echo "== $name: clean"
  fi
done
exit $status
