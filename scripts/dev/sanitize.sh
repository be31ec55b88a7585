#!/usr/bin/env bash
# The CPU suite under AddressSanitizer + UndefinedBehaviorSanitizer (docs/reliability.md,
# "Sanitizers and fuzzing"). A separate build directory (build-asan); every finding fails the run.
#   scripts/dev/sanitize.sh        configure, build cpu_tests + sophiagpt + sophiagpt_mpi, run ctest -E gpu_tests
# Environment: ASAN_BUILD_DIR (default build-asan), JOBS (default: number of cores), CC/CXX as usual.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BUILD_DIR=${ASAN_BUILD_DIR:-build-asan}
JOBS=${JOBS:-$(nproc)}

SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
cmake -S . -B "$BUILD_DIR" -DSGPT_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS="$SAN" -DCMAKE_CXX_FLAGS="$SAN" \
  -DCMAKE_EXE_LINKER_FLAGS="$SAN" -DCMAKE_SHARED_LINKER_FLAGS="$SAN"
cmake --build "$BUILD_DIR" -j"$JOBS" --target cpu_tests sophiagpt sophiagpt_mpi

# Every finding is fatal and printed with its stack. The variables are inherited by the processes
# the tests start (sophiagpt, and the ranks mpirun starts).
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:print_stacktrace=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

# Leak checking is off in the processes mpirun starts, and only there: Open MPI 4.1.4 keeps
# ~115 KB in ~3350 allocations until exit by design (hwloc bitmaps, MCA component state), and it
# dlcloses its components in MPI_Finalize, so those stacks end in "<unknown module>" and no
# suppression file can name them (by library) without also hiding frames of our own MPI plugin.
# A wrapper first in PATH (the tests run "mpirun ...") adds detect_leaks=0 for the ranks; every
# other process (sophiagpt run directly, cpu_tests) keeps leak checking, and ASan's memory errors
# and UBSan stay fatal in the ranks too. Set SANITIZE_MPI_LEAKS=1 to see the MPI reports.
if [[ "${SANITIZE_MPI_LEAKS:-0}" != 1 ]] && command -v mpirun >/dev/null; then
  WRAP="$BUILD_DIR/sanitize-bin"; [[ "$WRAP" == /* ]] || WRAP="$ROOT/$WRAP"
  mkdir -p "$WRAP"
  printf '#!/bin/sh\nexport ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0"\nexec %s "$@"\n' "$(command -v mpirun)" >"$WRAP/mpirun"
  chmod +x "$WRAP/mpirun"
  export PATH="$WRAP:$PATH"
fi
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$JOBS" --timeout 1800 -E gpu_tests
