// The FP8 lm head's operands (cuda/ops_cuda.h, "fp8"): per-tensor scaling to E4M3 (fp8.cuh).
//
// absmax: amax = max |x| over the tensor. Each thread keeps the largest |x| of its grid-stride
// share (a NaN replaces it and stays), the block takes the largest encoding, then one atomicMax
// on the encodings of non-negative floats (their order is the order of the values), so the result
// is exact and the same in every run; a NaN anywhere gives a NaN encoding, which is larger than
// every finite one.
// quantize: scale = 448 / amax (1 where amax is 0 or not finite), q = E4M3(x * scale) rounded to
// nearest even with saturation (__nv_cvt_float_to_fp8, __NV_SATFINITE), and descale = 1 / scale
// for the matmul, which multiplies its fp32 accumulator by both operands' descales.
#include <cuda_fp8.h>

#include "common.cuh"
#include "cuda/ops_cuda.h"

namespace sgpt::cuda {
namespace {

constexpr int kAmaxThreads = 256;

__global__ void absmax_kernel(unsigned* amax_bits, const bf16* x, size_t n) {
  float m = 0.0f;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const float a = fabsf(__bfloat162float(x[i]));
    m = a > m || a != a ? a : m;  // NaN wins
  }
  __shared__ unsigned s[kAmaxThreads / 32];
  unsigned b = __float_as_uint(m);
  for (int o = 16; o > 0; o >>= 1) b = max(b, __shfl_xor_sync(0xffffffffu, b, o));
  if (threadIdx.x % 32 == 0) s[threadIdx.x / 32] = b;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kAmaxThreads / 32; ++w) b = max(b, s[w]);
    atomicMax(amax_bits, b);
  }
}

__device__ __forceinline__ float scale_of(float amax) {
  return amax > 0.0f && amax <= 3.402823466e38f ? __fdiv_rn(448.0f, amax) : 1.0f;
}

__global__ void quantize_e4m3_kernel(__nv_fp8_storage_t* q, float* descale, const bf16* x, size_t n,
                                     const float* amax) {
  const float s = scale_of(*amax);
  if (blockIdx.x == 0 && threadIdx.x == 0) *descale = __fdiv_rn(1.0f, s);
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    q[i] = __nv_cvt_float_to_fp8(__fmul_rn(__bfloat162float(x[i]), s), __NV_SATFINITE, __NV_E4M3);
}

int grid_for(size_t n) { return static_cast<int>(std::min<size_t>(ceil_div(n, kAmaxThreads), 132 * 16)); }

}  // namespace

void absmax(float* amax, const bf16* x, size_t n, cudaStream_t stream) {
  SGPT_CUDA_CHECK(cudaMemsetAsync(amax, 0, sizeof(float), stream));
  if (n == 0) return;
  absmax_kernel<<<grid_for(n), kAmaxThreads, 0, stream>>>(reinterpret_cast<unsigned*>(amax), x, n);
  SGPT_LAUNCH_CHECK();
}

void quantize_e4m3(uint8_t* q, float* descale, const bf16* x, size_t n, const float* amax,
                   cudaStream_t stream) {
  quantize_e4m3_kernel<<<grid_for(std::max<size_t>(n, 1)), kAmaxThreads, 0, stream>>>(
      reinterpret_cast<__nv_fp8_storage_t*>(q), descale, x, n, amax);
  SGPT_LAUNCH_CHECK();
}

}  // namespace sgpt::cuda
