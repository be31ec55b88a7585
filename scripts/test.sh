#!/usr/bin/env bash
# The project's test command, from a fresh clone:
#   scripts/test.sh            install dependencies, fetch the pinned assets, build, run every test
# GPU tests (ctest label "gpu") skip themselves where no GPU is usable; with a usable GPU they run.
# Before the main ctest (so its summary stays the last line): the CPU suite under ASan+UBSan
# (scripts/dev/sanitize.sh) and bounded libFuzzer runs (scripts/dev/fuzz.sh); docs/reliability.md.
# Environment: BUILD_DIR (default build), JOBS (default: number of cores), SGPT_SANITIZE=0 /
# SGPT_FUZZ=0 skip those two steps (default 1: on, in CI and here), FUZZ_SECONDS (per target).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}

bash scripts/setup.sh
bash scripts/fetch_assets.sh gpt2 sotu reference

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j"$JOBS"

if [[ "${SGPT_SANITIZE:-1}" == 1 ]]; then
  echo "==== sanitizers: CPU suite under ASan+UBSan (scripts/dev/sanitize.sh) ===="
  bash scripts/dev/sanitize.sh
fi
if [[ "${SGPT_FUZZ:-1}" == 1 ]]; then
  # A fixed number of inputs from a fixed seed: the same run on every machine (no chance finding
  # in CI that a run here did not see); longer exploratory runs: FUZZ_SECONDS=600 scripts/dev/fuzz.sh.
  echo "==== fuzzing: libFuzzer targets, ${FUZZ_RUNS:-100000} inputs each, seed ${FUZZ_SEED:-1} (scripts/dev/fuzz.sh) ===="
  FUZZ_RUNS=${FUZZ_RUNS:-100000} bash scripts/dev/fuzz.sh
fi
echo "==== main test suite ===="
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$JOBS" --timeout 900
