#!/usr/bin/env bash
# GPU tests and the step benchmark, also for running on another host than the one that builds: a
# GPU host without compilers, for example.
#   scripts/dev/gpu_test.sh pack   build gpu_tests, cpu_tests, sophiagpt and its MPI plugin in
#                              $BUILD_DIR (default build-gpu) and pack them, with the shared
#                              libraries they need, into $SGPT_PACK_DIR (default gpu-pack): the
#                              folder gpu-pack/gpu/, gpu-pack/gpu.tar.xz (all of it, to copy to the
#                              GPU host) and gpu-pack/slim.tar.xz (without the test binaries).
#                              NCCL, cuBLAS, cuDNN and MPI are not packed: the GPU host's own are
#                              used. Configure $BUILD_DIR with -DSGPT_LIBARCHIVE=OFF for a pack
#                              without libarchive and ICU. $SGPT_PACK_ARCHS (default 90) sets the
#                              CUDA architectures: 80-virtual for the JIT fallback check (compute_80
#                              PTX alone; docs/gpu.md, "Which GPUs"), e.g.
#                              BUILD_DIR=build-ptx80 SGPT_PACK_ARCHS=80-virtual SGPT_PACK_DIR=gpu-pack-ptx80
#   scripts/dev/gpu_test.sh run    on the GPU host, in a checkout holding gpu-pack/ (unpacked from
#                              gpu-pack/gpu.tar.xz if gpu-pack/gpu is absent; scripts/dev/gpu_env.sh):
#                              all GPU tests, the PyTorch check (scripts/dev/check_torch.sh, when
#                              PyTorch and data/shards/sotu are there), the step benchmark and
#                              `sophiagpt bench train $SGPT_BENCH_TRAIN_ARGS` (SGPT_BENCH=0 skips
#                              the benchmarks); logs under $OUT (or ./gpu-logs)
#   scripts/dev/gpu_test.sh build  build on the GPU host itself (in build-gpu), then run as above
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib/gpus.sh
mode=${1:-run}
out=${OUT:-gpu-logs}
mkdir -p "$out"

case "$mode" in
pack)
  set -e
  b=${BUILD_DIR:-build-gpu}
  cmake -S . -B "$b" -DCMAKE_CUDA_ARCHITECTURES="${SGPT_PACK_ARCHS:-90}" >/dev/null
  cmake --build "$b" -j"$(nproc)" --target gpu_tests cpu_tests sophiagpt sophiagpt_faults sophiagpt_mpi
  p=${SGPT_PACK_DIR:-gpu-pack}
  rm -rf "$p/gpu" "$p"/gpu.tar.* "$p/slim.tar.xz" && mkdir -p "$p/gpu/lib"
  for f in gpu_tests cpu_tests sophiagpt sophiagpt_faults libsophiagpt_mpi.so; do strip -o "$p/gpu/$f" "$b/$f"; done
  # Every shared library except the C runtime, the CUDA libraries, NCCL and MPI, which the GPU
  # host has (NCCL alone is over 200 MB). A build with -DSGPT_LIBARCHIVE=OFF needs no
  # libarchive, libxml2 or ICU (about 30 MB less).
  ldd "$b/gpu_tests" "$b/cpu_tests" "$b/sophiagpt" | awk '$3 ~ /^\// {print $3}' | sort -u |
    grep -v -E '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so|libcublas|libcudnn|libnccl|libmpi|libopen-' |
    xargs -r -I{} cp -L {} "$p/gpu/lib/"
  # gpu.tar.xz: everything; slim.tar.xz: sophiagpt and its plugin (runs with data)
  tar cJf "$p/gpu.tar.xz" -C "$p" gpu
  tar cJf "$p/slim.tar.xz" -C "$p" gpu/sophiagpt gpu/libsophiagpt_mpi.so gpu/lib
  du -sh "$p/gpu" "$p/gpu.tar.xz" "$p/slim.tar.xz"
  exit 0
  ;;
build)
  cmake -S . -B build-gpu -DCMAKE_CUDA_ARCHITECTURES=90 -G Ninja 2>&1 | tail -3 &&
    cmake --build build-gpu --target gpu_tests sophiagpt 2>&1 | tail -20 | tee "$out/build.log"
  bin=build-gpu/gpu_tests
  ;;
run)
  source scripts/dev/gpu_env.sh
  bin=$BIN/gpu_tests
  ;;
esac
[[ $mode == build ]] && BIN=build-gpu source scripts/dev/gpu_env.sh

sgpt_gpu_info | tee "$out/gpu.txt"
ldd "$bin" | grep -E "not found|cublas|cudart" | tee "$out/ldd.txt"
"$bin" --gtest_brief=0 >"$out/tests.log" 2>&1
echo "---- tests exit: $?"
# (no pipe into head while the tests run: an early-closing reader would kill them with SIGPIPE)
grep -E "^\[  (FAILED|PASSED|SKIPPED) |FAIL|Failure|error" "$out/tests.log" | head -60
cli=$(dirname "$bin")/sophiagpt
[[ -x $cli ]] || cli=build-gpu/sophiagpt
# The end-to-end check against PyTorch, where PyTorch and the demo shards are there.
if [[ -x $cli && -f data/shards/sotu/val_000000.bin ]] && python3 -c 'import torch' 2>/dev/null; then
  scripts/dev/check_torch.sh "$cli" "$out/check-torch" 2>&1 | tee "$out/check_torch.log" | tail -1
fi
if [[ ${SGPT_BENCH:-1} == 1 ]]; then
  "$bin" --gtest_also_run_disabled_tests --gtest_filter='*Bench*' 2>&1 | tee "$out/bench.log" | grep -E "BENCH|FAIL|rror"
  if [[ -x $cli ]]; then
    echo "---- $cli bench train ${SGPT_BENCH_TRAIN_ARGS:-}"
    # shellcheck disable=SC2086
    "$cli" bench train ${SGPT_BENCH_TRAIN_ARGS:-} 2>&1 | tee "$out/bench_train.log"
  fi
fi
