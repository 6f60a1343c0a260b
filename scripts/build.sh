#!/usr/bin/env bash
# Configures and builds vlmcheck into build/ (or $1), with ccache when present.
# Extra arguments after the build dir go to CMake (e.g. -DVLMCHECK_SANITIZE=ON).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
jobs=$(nproc 2>/dev/null || echo 2)
# ccache: paths relative to the checkout, so a fresh clone in another folder hits the same cache entries.
export CCACHE_BASEDIR="$(pwd)" CCACHE_NOHASHDIR=1
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} "$@" >/dev/null
cmake --build "$dir" -j "$jobs"
