// Global gradient norm (sum of squares) and gradient scaling over the flat gradient buffer.
//
// Math (CPU reference: cpu::sum_squares, cpu::scale in src/optim/update_rules.h):
//   S = sum_i g_i^2          (the trainer clips with sqrt(S))
//   g_i = g_i * s            (fp32: one rounded multiply, bit-equal to the CPU;
//                             bf16/fp16: widened, multiplied in fp32, rounded to nearest-even)
// Memory layout: g is one contiguous buffer of n elements of GradT (float, bf16 or fp16), read in
// chunks of 8 consecutive elements (16-byte loads for bf16/fp16, two for fp32) where aligned.
//
// Precision of S: per chunk, the 8 squares are accumulated in fp32 with fused multiply-add (one
// rounding per element: for non-negative terms the chunk sum has relative error <= 8 * 2^-24),
// the chunk sum is widened to double, blocks and then the per-block partials are summed
// in double (error ~ 2^-53 per addition). So S is within about 4.8e-7 relative of the exact sum
// (and of cpu::sum_squares's double sum), which is far below what a clip threshold resolves.
// Deterministic: fixed grid, fixed per-thread order, fixed trees (kernels/norm.cuh).
//
// Contents: the finalize pass, sum of squares, scale; then the launchers.
#include "cast.cuh"
#include "norm.cuh"

namespace sgpt::cuda {

// ------------------------------------------------------------------------------------ kernels

constexpr int kPassItems = 16 * kReduceThreads;  // partials summed per block of a finalize pass

// out[v * out_stride + b] = sum of in[v * in_stride + i] for i in [b*4096, min(count, (b+1)*4096)):
// thread t adds i = b*4096 + t + 256*k for k = 0..15 in order, then the fixed block tree.
__global__ void __launch_bounds__(kReduceThreads)
    reduce_pass_kernel(const double* __restrict__ in, size_t in_stride, size_t count,
                       double* __restrict__ out, size_t out_stride, int nvalues) {
  const size_t base = static_cast<size_t>(blockIdx.x) * kPassItems + threadIdx.x;
  for (int v = 0; v < nvalues; ++v) {
    double s = 0.0;
#pragma unroll
    for (int k = 0; k < kPassItems / kReduceThreads; ++k) {
      const size_t i = base + static_cast<size_t>(k) * kReduceThreads;
      if (i < count) s += in[static_cast<size_t>(v) * in_stride + i];
    }
    s = block_sum(s);
    if (threadIdx.x == 0) out[static_cast<size_t>(v) * out_stride + blockIdx.x] = s;
  }
}

template <class GradT>
__global__ void __launch_bounds__(kReduceThreads)
    sum_squares_kernel(const GradT* __restrict__ g, ChunkGrid grid, double* __restrict__ partials) {
  double acc = 0.0;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t q = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < grid.nchunks;
       q += stride) {
    const Chunk c = grid.chunk(q);
    float x[8];
    load8(g, c, x);
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) s = __fmaf_rn(x[k], x[k], s);
    acc += static_cast<double>(s);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;  // value 0
}

template <class GradT>
__global__ void scale_kernel(GradT* __restrict__ g, ChunkGrid grid, float s) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t q = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < grid.nchunks;
       q += stride) {
    const Chunk c = grid.chunk(q);
    float x[8];
    load8(g, c, x);
#pragma unroll
    for (int k = 0; k < 8; ++k) x[k] = __fmul_rn(x[k], s);
    if constexpr (Elem<GradT>::k16) {
      uint16_t b[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) b[k] = Elem<GradT>::rn_bits(x[k]);
      store8_bits(g, c, b);
    } else {
      store8(g, c, x);
    }
  }
}

// ---------------------------------------------------------------------------------- launchers

ReduceScratch::ReduceScratch() {
  CUDA_CHECK(cudaMalloc(&results_, 8 * sizeof(double)));
  CUDA_CHECK(cudaMemset(results_, 0, 8 * sizeof(double)));
}

ReduceScratch::~ReduceScratch() {
  // No throw from a destructor.
  cudaFree(results_);
  cudaFree(partials_);
}

void ReduceScratch::reserve(size_t blocks) {
  if (blocks <= capacity_) return;
  const size_t cap = std::max<size_t>(blocks, 4096);
  const size_t level_cap = (cap + kPassItems - 1) / kPassItems + 1;
  double* fresh = nullptr;
  CUDA_CHECK(cudaMalloc(&fresh, kValues * (cap + level_cap) * sizeof(double)));
  CUDA_CHECK(cudaFree(partials_));  // synchronizes: no kernel still reads the old storage
  partials_ = fresh;
  level_ = fresh + kValues * cap;
  capacity_ = cap;
  level_capacity_ = level_cap;
}

void launch_reduce_finalize(ReduceScratch& scratch, size_t nblocks, int nvalues,
                            cudaStream_t stream) {
  // Ping-pong between the partials and the level storage until one value per nvalues is left;
  // the last pass writes the results.
  double* bufs[2] = {scratch.partials(), scratch.level()};
  const size_t strides[2] = {scratch.capacity(), scratch.level_capacity()};
  int cur = 0;
  size_t count = nblocks;
  do {
    const size_t out_count = (count + kPassItems - 1) / kPassItems;
    double* out = out_count == 1 ? scratch.results() : bufs[1 - cur];
    const size_t out_stride = out_count == 1 ? 1 : strides[1 - cur];
    reduce_pass_kernel<<<static_cast<unsigned>(out_count), kReduceThreads, 0, stream>>>(
        bufs[cur], strides[cur], count, out, out_stride, nvalues);
    CUDA_LAUNCH_CHECK();
    count = out_count;
    cur = 1 - cur;
  } while (count > 1);
}

template <class GradT>
void grad_sum_squares(const GradT* g, size_t n, ReduceScratch& scratch, cudaStream_t stream) {
  const ChunkGrid grid = make_chunk_grid(n, 0, chunk_aligned(g, 0));
  if (grid.nchunks == 0) {
    CUDA_CHECK(cudaMemsetAsync(scratch.results(), 0, sizeof(double), stream));
    return;
  }
  const unsigned blocks = full_grid(grid.nchunks, kReduceThreads);
  scratch.reserve(blocks);
  sum_squares_kernel<GradT><<<blocks, kReduceThreads, 0, stream>>>(g, grid, scratch.partials());
  CUDA_LAUNCH_CHECK();
  launch_reduce_finalize(scratch, blocks, 1, stream);
}

double read_sum_squares(ReduceScratch& scratch, cudaStream_t stream) {
  double s = 0;
  CUDA_CHECK(cudaMemcpyAsync(&s, scratch.results(), sizeof(double), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return s;
}

template <class GradT>
void scale_grad(GradT* g, size_t n, float s, cudaStream_t stream) {
  const ChunkGrid grid = make_chunk_grid(n, 0, chunk_aligned(g, 0));
  if (grid.nchunks == 0) return;
  scale_kernel<GradT><<<full_grid(grid.nchunks, 256), 256, 0, stream>>>(g, grid, s);
  CUDA_LAUNCH_CHECK();
}

#define SGPT_INSTANTIATE_NORM(T)                                                       \
  template void grad_sum_squares<T>(const T*, size_t, ReduceScratch&, cudaStream_t); \
  template void scale_grad<T>(T*, size_t, float, cudaStream_t);
SGPT_INSTANTIATE_NORM(float)
SGPT_INSTANTIATE_NORM(__nv_bfloat16)
SGPT_INSTANTIATE_NORM(__half)
#undef SGPT_INSTANTIATE_NORM

}  // namespace sgpt::cuda
