// Residual connection, elementwise over n values: out = a + b (fp32 add, one rounding to the
// storage type, so fp32 results equal the CPU reference exactly). Grid-stride loop; out may alias
// a or b.
#include <algorithm>

#include "common.cuh"
#include "cuda/ops_cuda.h"

namespace sgpt::cuda {

template <class T>
__global__ void residual_forward_kernel(T* out, const T* a, const T* b, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    out[i] = from_f<T>(to_f(a[i]) + to_f(b[i]));
}

template <class T>
void residual_forward(T* out, const T* a, const T* b, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned grid = std::max(1u, std::min(ceil_div(n, 256), 65535u * 4));
  residual_forward_kernel<<<grid, 256, 0, stream>>>(out, a, b, n);
  SGPT_LAUNCH_CHECK();
}

template void residual_forward<float>(float*, const float*, const float*, size_t, cudaStream_t);
template void residual_forward<bf16>(bf16*, const bf16*, const bf16*, size_t, cudaStream_t);

}  // namespace sgpt::cuda
