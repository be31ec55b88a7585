// Deterministic reductions and launch sizes shared by kernels/norm.cu, optimizer.cu, cast.cu.
//
// Every element-wise and reducing kernel runs on a full grid: one chunk of 8 elements per thread,
// ceil(chunks / 256) blocks of 256 threads (measured on an H100: a grid-stride loop over a
// persistent grid reached 92-93% of the copy bandwidth, one chunk per thread 99.5%). A reducing
// kernel's block reduces its threads with block_sum (a fixed tree: warp shuffles down, then warp 0
// over the warp sums) and writes one partial per value; launch_reduce_finalize sums the partials
// in fixed-order passes of 4096 -> 1 until one value is left. No atomics, and the grid depends on
// n only: the same inputs give the same bits.
// Partials layout: value v of block b at scratch.partials()[v * scratch.capacity() + b].
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>

#include "cuda/check.h"
#include "cuda/optim_cuda.h"

namespace sgpt::cuda {

constexpr int kReduceThreads = 256;  // block size of every reducing kernel (block_sum assumes it)

// Sum of x over the block, valid in thread 0. Call from every thread of the block.
__device__ __forceinline__ double block_sum(double x) {
  __shared__ double warp_sums[kReduceThreads / 32];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x += __shfl_down_sync(0xFFFFFFFFu, x, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // warp_sums may still be read by a previous call
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  x = 0.0;
  if (warp == 0) {
    x = lane < kReduceThreads / 32 ? warp_sums[lane] : 0.0;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) x += __shfl_down_sync(0xFFFFFFFFu, x, off);
  }
  return x;
}

// Full grid of an element-wise or reducing kernel over `work_items` chunks.
inline unsigned full_grid(size_t work_items, int threads) {
  const size_t blocks = (work_items + threads - 1) / threads;
  if (blocks > 0x7FFFFFFFu) throw std::invalid_argument("buffer too large for one launch");
  return static_cast<unsigned>(std::max<size_t>(blocks, 1));
}

// scratch.results()[v] = sum over b < nblocks of the per-block partials of value v (v < nvalues),
// in fixed-order passes. The partials were written after scratch.reserve(nblocks).
void launch_reduce_finalize(ReduceScratch& scratch, size_t nblocks, int nvalues,
                            cudaStream_t stream);

}  // namespace sgpt::cuda
