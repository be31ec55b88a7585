#!/usr/bin/env bash
# The project's test command, from a fresh clone:
#   scripts/test.sh            install dependencies, fetch the pinned assets, build, run every test
# GPU tests (ctest label "gpu") skip themselves where no GPU is usable; on a GPU machine they run.
# Environment: BUILD_DIR (default build), JOBS (default: number of cores).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}

bash scripts/setup.sh
bash scripts/fetch_assets.sh gpt2 sotu reference

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j"$JOBS"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$JOBS" --timeout 900
