#include "cuda/check.h"

#include <stdexcept>

#include "common/error.h"

namespace sgpt::cuda {

void throw_error(const char* library, const std::string& detail, const char* expr,
                 const char* file, int line) {
  throw std::runtime_error(std::string(library) + " error at " + file + ":" +
                           std::to_string(line) + ": " + expr + ": " + detail);
}

void throw_out_of_memory(const char* expr, const char* file, int line) {
  cudaGetLastError();  // clear the sticky state of the failed allocation
  size_t free_b = 0, total_b = 0;
  const bool known = cudaMemGetInfo(&free_b, &total_b) == cudaSuccess;
  std::string there = known ? std::to_string(free_b >> 20) + " MiB free of " + std::to_string(total_b >> 20) + " MiB"
                            : "its free memory unknown";
  throw OutOfMemory("the GPU ran out of memory (" + std::string(expr) + " at " + file + ":" + std::to_string(line) +
                    "; " + there + " now): lower batch.micro_batch_size (the tokens per step stay the same), set "
                    "recompute to 1 or 2, or use a GPU with more memory");
}

}  // namespace sgpt::cuda
