#!/usr/bin/env bash
# Installs dependencies, builds vlmcheck, and runs the main job: `vlmcheck run` over the models
# in your Hugging Face cache (or the bundled demo model and image when the cache has none).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_TYPE=Release bash scripts/build.sh build-release
exec ./build-release/vlmcheck run "$@"
