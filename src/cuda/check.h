// Error checking for every CUDA runtime, cuBLAS(Lt) and cuDNN call, and for every kernel launch.
// A failure throws std::runtime_error naming the file, the line, the failing expression and the
// library's own description of the error. Plain C++: usable from .cpp (g++) and .cu (nvcc) files.
//
//   SGPT_CUDA_CHECK(expr) / CUDA_CHECK(expr)   expr returns cudaError_t
//   SGPT_LAUNCH_CHECK() / CUDA_LAUNCH_CHECK()  after a <<<...>>> launch (cudaGetLastError): bad
//                                              launch configurations at once, and,
//                                              asynchronously, errors of earlier kernels
//   CUBLAS_CHECK(expr)                         expr returns cublasStatus_t (cuBLAS, cuBLASLt)
//   CUDNN_CHECK(expr)                          expr returns cudnnStatus_t (builds with cuDNN:
//                                              SGPT_WITH_CUDNN)
// throw_error is defined in src/cuda/check.cpp.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <string>

#if defined(SGPT_WITH_CUDNN)
#include <cudnn.h>
#endif

namespace sgpt::cuda {

[[noreturn]] void throw_error(const char* library, const std::string& detail, const char* expr,
                              const char* file, int line);

// An allocation the GPU cannot hold: sgpt::OutOfMemory (a UserError, exit code 2) naming what is
// free and what to change, not an internal error.
[[noreturn]] void throw_out_of_memory(const char* expr, const char* file, int line);

inline void check_cuda(cudaError_t e, const char* expr, const char* file, int line) {
  if (e == cudaErrorMemoryAllocation) throw_out_of_memory(expr, file, line);
  if (e != cudaSuccess) throw_error("CUDA", cudaGetErrorString(e), expr, file, line);
}

inline void check_cublas_status(cublasStatus_t s, const char* expr, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS) throw_error("cuBLAS", cublasLtGetStatusString(s), expr, file, line);
}

#if defined(SGPT_WITH_CUDNN)
inline void check_cudnn_status(cudnnStatus_t s, const char* expr, const char* file, int line) {
  if (s != CUDNN_STATUS_SUCCESS) throw_error("cuDNN", cudnnGetErrorString(s), expr, file, line);
}
#endif

}  // namespace sgpt::cuda

#define SGPT_CUDA_CHECK(expr) ::sgpt::cuda::check_cuda((expr), #expr, __FILE__, __LINE__)
// After every kernel launch: catches bad launch configurations at once (and, asynchronously,
// errors of earlier kernels).
#define SGPT_LAUNCH_CHECK() \
  ::sgpt::cuda::check_cuda(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

#define CUDA_CHECK(expr) SGPT_CUDA_CHECK(expr)
#define CUDA_LAUNCH_CHECK() SGPT_LAUNCH_CHECK()
#define CUBLAS_CHECK(expr) ::sgpt::cuda::check_cublas_status((expr), #expr, __FILE__, __LINE__)
#if defined(SGPT_WITH_CUDNN)
#define CUDNN_CHECK(expr) ::sgpt::cuda::check_cudnn_status((expr), #expr, __FILE__, __LINE__)
#endif
