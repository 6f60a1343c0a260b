#!/usr/bin/env bash
# Installs dependencies, builds vlmcheck, and runs the main job: `vlmcheck run` over the models
# in your Hugging Face cache (or the bundled demo model and image when the cache has none).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build   # the same optimised build the tests use, so nothing compiles twice
exec ./build/vlmcheck run "$@"
