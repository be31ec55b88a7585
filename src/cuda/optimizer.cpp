#include "cuda/optimizer.h"

namespace sgpt::cuda {

// Each optimizer's GPU implementation, defined beside its kernel.
std::unique_ptr<Optimizer> make_sophiag_cuda();  // kernels/optimizer.cu
std::unique_ptr<Optimizer> make_adamw_cuda();    // kernels/optimizer.cu
std::unique_ptr<Optimizer> make_lion_cuda();     // kernels/lion.cu
std::unique_ptr<Optimizer> make_sophiah_cuda();  // kernels/sophiah.cu

std::unique_ptr<Optimizer> make_optimizer(const std::string& name) {
  using Make = std::unique_ptr<Optimizer> (*)();
  static const std::pair<const char*, Make> table[] = {
      {"sophiag", make_sophiag_cuda},
      {"adamw", make_adamw_cuda},
      {"lion", make_lion_cuda},
      {"sophiah", make_sophiah_cuda},
  };
  for (const auto& [n, make] : table)
    if (name == n) return make();
  optimizer_kind(name);  // throws naming the known optimizers
  throw std::invalid_argument("optimizer '" + name + "' has no GPU implementation");
}

}  // namespace sgpt::cuda
