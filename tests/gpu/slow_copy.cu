// See slow_copy.h.
#include "slow_copy.h"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace sgpt::test {
namespace {

__global__ void slow_copy_kernel(float* dst, const float* src, size_t n, long long spin_cycles) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
  const long long t0 = clock64();
  while (clock64() - t0 < spin_cycles) {
  }
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

}  // namespace

void slow_copy(float* dst, const float* src, size_t n, long long spin_cycles, cudaStream_t stream) {
  slow_copy_kernel<<<4, 256, 0, stream>>>(dst, src, n, spin_cycles);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("slow_copy: ") + cudaGetErrorString(e));
}

}  // namespace sgpt::test
