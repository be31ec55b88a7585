#!/usr/bin/env bash
# GPU tests and the step benchmark.
#   scripts/gpu_test.sh pack   (on the build machine) build gpu_tests, cpu_tests, sophiagpt and
#                              its MPI plugin in $BUILD_DIR (default build-gpu) and copy them, with
#                              the shared libraries they need, into .carry/gpu/ (and
#                              .carry/gpu.tar.xz to carry; .carry/slim.tar.xz without the test
#                              binaries). NCCL, cuBLAS, cuDNN and MPI are not carried: the GPU
#                              machine's own are used. Configure $BUILD_DIR with
#                              -DSGPT_LIBARCHIVE=OFF for a copy without libarchive and ICU.
#   scripts/gpu_test.sh run    (on the GPU machine) run the carried binaries (unpacking
#                              .carry/gpu.tar.xz if .carry/gpu is absent): all GPU tests, the
#                              PyTorch check (scripts/check_torch.sh, when PyTorch and
#                              data/shards/sotu are there), the step benchmark and `sophiagpt bench
#                              train`; logs under $OUT (or ./gpu-logs)
#   scripts/gpu_test.sh build  (on the GPU machine) build there instead, then run
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
out=${OUT:-gpu-logs}
mkdir -p "$out"

case "$mode" in
pack)
  set -e
  b=${BUILD_DIR:-build-gpu}
  cmake -S . -B "$b" -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
  cmake --build "$b" -j"$(nproc)" --target gpu_tests cpu_tests sophiagpt sophiagpt_mpi
  rm -rf .carry/gpu .carry/gpu.tar.* .carry/slim.tar.xz && mkdir -p .carry/gpu/lib
  for f in gpu_tests cpu_tests sophiagpt libsophiagpt_mpi.so; do strip -o .carry/gpu/$f "$b/$f"; done
  # Every shared library except the C runtime, the CUDA libraries, NCCL and MPI, which the GPU
  # machine has (NCCL alone is over 200 MB). A build with -DSGPT_LIBARCHIVE=OFF needs no
  # libarchive, libxml2 or ICU (about 30 MB less).
  ldd "$b/gpu_tests" "$b/cpu_tests" "$b/sophiagpt" | awk '$3 ~ /^\// {print $3}' | sort -u |
    grep -v -E '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so|libcublas|libcudnn|libnccl|libmpi|libopen-' |
    xargs -r -I{} cp -L {} .carry/gpu/lib/
  # .carry/gpu.tar.xz: everything; .carry/slim.tar.xz: sophiagpt and its plugin (runs with data)
  tar cJf .carry/gpu.tar.xz -C .carry gpu
  tar cJf .carry/slim.tar.xz -C .carry gpu/sophiagpt gpu/libsophiagpt_mpi.so gpu/lib
  du -sh .carry/gpu .carry/gpu.tar.xz .carry/slim.tar.xz
  exit 0
  ;;
build)
  cmake -S . -B build-gpu -DCMAKE_CUDA_ARCHITECTURES=90 -G Ninja 2>&1 | tail -3 &&
    cmake --build build-gpu --target gpu_tests sophiagpt 2>&1 | tail -20 | tee "$out/build.log"
  bin=build-gpu/gpu_tests
  ;;
run)
  source scripts/gpu_env.sh
  bin=$BIN/gpu_tests
  ;;
esac
[[ $mode == build ]] && BIN=build-gpu source scripts/gpu_env.sh

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
ldd "$bin" | grep -E "not found|cublas|cudart" | tee "$out/ldd.txt"
"$bin" --gtest_brief=0 >"$out/tests.log" 2>&1
echo "---- tests exit: $?"
# (no pipe into head while the tests run: an early-closing reader would kill them with SIGPIPE)
grep -E "^\[  (FAILED|PASSED|SKIPPED) |FAIL|Failure|error" "$out/tests.log" | head -60
cli=$(dirname "$bin")/sophiagpt
[[ -x $cli ]] || cli=build-gpu/sophiagpt
# The end-to-end check against PyTorch, where PyTorch and the demo shards are there.
if [[ -x $cli && -f data/shards/sotu/val_000000.bin ]] && python3 -c 'import torch' 2>/dev/null; then
  scripts/check_torch.sh "$cli" "$out/check-torch" 2>&1 | tee "$out/check_torch.log" | tail -1
fi
if [[ ${SGPT_BENCH:-1} == 1 ]]; then
  "$bin" --gtest_also_run_disabled_tests --gtest_filter='*Bench*' 2>&1 | tee "$out/bench.log" | grep -E "BENCH|FAIL|rror"
  if [[ -x $cli ]]; then
    echo "---- $cli bench train ${SGPT_BENCH_TRAIN_ARGS:-}"
    # shellcheck disable=SC2086
    "$cli" bench train ${SGPT_BENCH_TRAIN_ARGS:-} 2>&1 | tee "$out/bench_train.log"
  fi
fi
