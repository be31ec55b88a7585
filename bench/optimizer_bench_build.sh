#!/usr/bin/env bash
# Builds the optimizer kernels, their GPU tests and the optimizer benchmark without the rest of
# the tree (useful while other parts do not build): outputs in ${OUT_DIR:-build-opt/manual}.
#   bench/optimizer_bench_build.sh && build-opt/manual/gpu_tests_optimizer
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
O=${OUT_DIR:-build-opt/manual}
ARCH=${CUDA_ARCH:-90}
mkdir -p "$O"
CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc)")")}
CXX="g++ -std=c++20 -O2 -Wall -Wextra -Isrc -Ikernels -I$CUDA_HOME/include -DSGPT_WITH_CUDA=1"
pids=()
for f in norm cast optimizer; do
  nvcc -std=c++20 -O3 -arch=sm_$ARCH --expt-relaxed-constexpr -lineinfo -Isrc -Ikernels \
    -DSGPT_WITH_CUDA=1 -c kernels/$f.cu -o "$O/$f.o" & pids+=($!)
done
$CXX -ffp-contract=off -c src/cpu/optim.cpp -o "$O/optim.o" & pids+=($!)
$CXX -ffp-contract=off -c src/model/gpt2.cpp -o "$O/gpt2.o" & pids+=($!)
$CXX -c src/cuda/check.cpp -o "$O/check.o" & pids+=($!)
$CXX -c tests/gpu/test_optimizer.cpp -o "$O/test_optimizer.o" & pids+=($!)
$CXX -c src/cli/bench_command.cpp -o "$O/bench_command.o" & pids+=($!)
$CXX -c bench/optimizer_bench_main.cpp -o "$O/optimizer_bench_main.o" & pids+=($!)
for p in "${pids[@]}"; do wait "$p"; done
LIBS="-L$CUDA_HOME/lib64 -lcudart_static -ldl -lrt"
g++ -o "$O/gpu_tests_optimizer" "$O"/{test_optimizer,norm,cast,optimizer,optim,gpt2,check}.o \
  -lgtest -lgtest_main -pthread $LIBS
g++ -o "$O/optimizer_bench" "$O"/{optimizer_bench_main,bench_command,norm,cast,optimizer,optim,gpt2,check}.o \
  -pthread $LIBS
echo "built $O/gpu_tests_optimizer $O/optimizer_bench"
