// Conversions between the fp32 master copy and 16-bit working buffers, and device-side random
// fills for tests and benchmarks.
//
// Math:
//   cast_rn            out = round-to-nearest-even(in)                (float -> float: a copy)
//   stochastic_round   out = SR(in, word(j))                          (cast.cuh: unbiased; the
//                      random word of global element j = index_base + i comes from Philox stream
//                      kStochasticRounding keyed by (seed, j/4, step), word j%4)
//   to_float           out = (float)in                                (exact)
//   accumulate_float   acc = acc + (float)in                          (one fp32 rounding)
//   fill_uniform       out = round(lo + (hi - lo) * u_i), u_i = uniform01(word i%4 of
//                      philox(seed, i/4, (i/4)>>32, 0xB0B, kInitWeights))
// Memory layout: contiguous buffers of n elements, processed in chunks of 8 (16-byte accesses
// when aligned), see cast.cuh.
//
// Contents: kernels, then launchers.
#include "cast.cuh"
#include "norm.cuh"

namespace sgpt::cuda {

// ------------------------------------------------------------------------------------ kernels

template <class T, bool kStochastic>
__global__ void __launch_bounds__(256)
    round_kernel(const float* __restrict__ in, T* __restrict__ out, ChunkGrid grid, uint64_t seed,
                 uint32_t step) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t q = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < grid.nchunks;
       q += stride) {
    const Chunk c = grid.chunk(q);
    float x[8];
    load8(in, c, x);
    if constexpr (!Elem<T>::k16) {
      store8(out, c, x);
    } else if constexpr (kStochastic) {
      store_weights8(out, c, x, seed, step);
    } else {
      uint16_t b[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) b[k] = Elem<T>::rn_bits(x[k]);
      store8_bits(out, c, b);
    }
  }
}

template <class T>
__global__ void __launch_bounds__(256)
    to_float_kernel(const T* __restrict__ in, float* __restrict__ out, ChunkGrid grid) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t q = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < grid.nchunks;
       q += stride) {
    const Chunk c = grid.chunk(q);
    float x[8];
    load8(in, c, x);
    store8(out, c, x);
  }
}

template <class T>
__global__ void __launch_bounds__(256)
    accumulate_float_kernel(const T* __restrict__ in, float* __restrict__ acc, ChunkGrid grid) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t q = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < grid.nchunks;
       q += stride) {
    const Chunk c = grid.chunk(q);
    float x[8], a[8];
    load8(in, c, x);
    load8(acc, c, a);
#pragma unroll
    for (int k = 0; k < 8; ++k) a[k] = __fadd_rn(a[k], x[k]);
    store8(acc, c, a);
  }
}

template <class T>
__global__ void fill_uniform_kernel(T* __restrict__ out, size_t n, float lo, float span,
                                    uint64_t seed) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const size_t q = i >> 2;
    const Philox4 r = philox(seed, static_cast<uint32_t>(q), static_cast<uint32_t>(q >> 32), 0xB0Bu,
                             kInitWeights);
    const float x = __fadd_rn(lo, __fmul_rn(span, uniform01(r.v[i & 3])));
    if constexpr (Elem<T>::k16) {
      out[i] = Elem<T>::from_bits(Elem<T>::rn_bits(x));
    } else {
      out[i] = x;
    }
  }
}

// ---------------------------------------------------------------------------------- launchers

template <class T>
void cast_rn(const float* in, T* out, size_t n, cudaStream_t stream) {
  const ChunkGrid grid = make_chunk_grid(n, 0, chunk_aligned(in, 0) && chunk_aligned(out, 0));
  if (grid.nchunks == 0) return;
  round_kernel<T, false><<<full_grid(grid.nchunks, 256), 256, 0, stream>>>(in, out, grid, 0,
                                                                                  0);
  CUDA_LAUNCH_CHECK();
}

template <class T>
void stochastic_round(const float* in, T* out, size_t n, const RoundingKey& key,
                      cudaStream_t stream) {
  const size_t b = key.index_base;
  const ChunkGrid grid = make_chunk_grid(n, b, chunk_aligned(in, b) && chunk_aligned(out, b));
  if (grid.nchunks == 0) return;
  round_kernel<T, true><<<full_grid(grid.nchunks, 256), 256, 0, stream>>>(
      in, out, grid, key.seed, key.step);
  CUDA_LAUNCH_CHECK();
}

template <class T>
void to_float(const T* in, float* out, size_t n, cudaStream_t stream) {
  const ChunkGrid grid = make_chunk_grid(n, 0, chunk_aligned(in, 0) && chunk_aligned(out, 0));
  if (grid.nchunks == 0) return;
  to_float_kernel<T><<<full_grid(grid.nchunks, 256), 256, 0, stream>>>(in, out, grid);
  CUDA_LAUNCH_CHECK();
}

template <class T>
void accumulate_float(const T* in, float* acc, size_t n, cudaStream_t stream) {
  const ChunkGrid grid = make_chunk_grid(n, 0, chunk_aligned(in, 0) && chunk_aligned(acc, 0));
  if (grid.nchunks == 0) return;
  accumulate_float_kernel<T><<<full_grid(grid.nchunks, 256), 256, 0, stream>>>(in, acc, grid);
  CUDA_LAUNCH_CHECK();
}

template <class T>
void fill_uniform(T* out, size_t n, float lo, float hi, uint64_t seed, cudaStream_t stream) {
  if (n == 0) return;
  fill_uniform_kernel<T><<<full_grid(n, 256), 256, 0, stream>>>(out, n, lo, hi - lo, seed);
  CUDA_LAUNCH_CHECK();
}

#define SGPT_INSTANTIATE_CAST(T)                                                               \
  template void cast_rn<T>(const float*, T*, size_t, cudaStream_t);                           \
  template void stochastic_round<T>(const float*, T*, size_t, const RoundingKey&, cudaStream_t); \
  template void to_float<T>(const T*, float*, size_t, cudaStream_t);                          \
  template void accumulate_float<T>(const T*, float*, size_t, cudaStream_t);                  \
  template void fill_uniform<T>(T*, size_t, float, float, uint64_t, cudaStream_t);
SGPT_INSTANTIATE_CAST(float)
SGPT_INSTANTIATE_CAST(__nv_bfloat16)
SGPT_INSTANTIATE_CAST(__half)
#undef SGPT_INSTANTIATE_CAST

}  // namespace sgpt::cuda
