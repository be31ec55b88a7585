// The Hutchinson estimator's element-wise kernels on the GPU (Sophia-H; src/train/hutchinson.cpp):
//   hutchinson_probe_fill  u[i] = hutchinson_probe(seed, step, index_base + i, rademacher)
//                          (src/common/philox.h, the host function compiled for the device:
//                          Philox words, Box-Muller in double, rounded to float, then to T)
//   hutchinson_ema         h[i] = h[i]*b2 + ((1-b2)*u)*hu[i], u = the same probe of global index
//                          index_base + i, recomputed here (not read back from a stored u)
// The EMA's fp32 operations are explicitly rounded in the order of cpu::hutchinson_ema
// (src/optim/update_rules.cpp), so with fp32 hu the h equals the CPU's bit for bit wherever the
// probe does. The probe's Gaussian branch evaluates log, sqrt, sin and cos in double with CUDA's
// device functions (log, sin, cos within 1-2 ulp in double; sqrt exact) instead of glibc's; the
// float it rounds to can differ from the CPU's only when the double result lies within a few
// double ulps of a float rounding boundary (a chance of the order of 2^-28 per element). The
// Rademacher branch is integer arithmetic only: always identical. One element per thread in a
// grid-stride loop (the probe is compute-bound: Philox and the double math dominate).
#include <algorithm>

#include "common.cuh"
#include "common/philox.h"
#include "cuda/optim_cuda.h"

namespace sgpt::cuda {
namespace {

unsigned probe_grid(size_t n) { return std::max(1u, std::min(ceil_div(n, 256), 65535u * 16)); }

template <class T>
__global__ void probe_fill_kernel(T* u, size_t n, uint64_t seed, uint32_t step, size_t base,
                                  bool rademacher) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    u[i] = from_f<T>(hutchinson_probe(seed, step, base + i, rademacher));
}

template <class GradT>
__global__ void hutchinson_ema_kernel(float* h, const GradT* hu, size_t n, HessianConsts c,
                                      uint64_t seed, uint32_t step, size_t base,
                                      bool rademacher) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const float u = hutchinson_probe(seed, step, base + i, rademacher);
    float t = __fmul_rn(c.one_minus_b2, u);  // t = (1-b2)*u
    t = __fmul_rn(t, to_f(hu[i]));           // t = t*hu
    h[i] = __fadd_rn(__fmul_rn(h[i], c.b2), t);  // h = h*b2 + t
  }
}

}  // namespace

template <class T>
void hutchinson_probe_fill(T* u, size_t n, uint64_t seed, uint32_t step, size_t index_base,
                           bool rademacher, cudaStream_t stream) {
  if (n == 0) return;
  probe_fill_kernel<T><<<probe_grid(n), 256, 0, stream>>>(u, n, seed, step, index_base,
                                                          rademacher);
  SGPT_LAUNCH_CHECK();
}

template <class GradT>
void hutchinson_ema(float* h, const GradT* hu, size_t n, const HessianConsts& c, uint64_t seed,
                    uint32_t step, size_t index_base, bool rademacher, cudaStream_t stream) {
  if (n == 0) return;
  hutchinson_ema_kernel<GradT><<<probe_grid(n), 256, 0, stream>>>(h, hu, n, c, seed, step,
                                                                  index_base, rademacher);
  SGPT_LAUNCH_CHECK();
}

template void hutchinson_probe_fill<float>(float*, size_t, uint64_t, uint32_t, size_t, bool,
                                           cudaStream_t);
template void hutchinson_probe_fill<__nv_bfloat16>(__nv_bfloat16*, size_t, uint64_t, uint32_t,
                                                   size_t, bool, cudaStream_t);
template void hutchinson_ema<float>(float*, const float*, size_t, const HessianConsts&, uint64_t,
                                    uint32_t, size_t, bool, cudaStream_t);
template void hutchinson_ema<__nv_bfloat16>(float*, const __nv_bfloat16*, size_t,
                                            const HessianConsts&, uint64_t, uint32_t, size_t,
                                            bool, cudaStream_t);

}  // namespace sgpt::cuda
