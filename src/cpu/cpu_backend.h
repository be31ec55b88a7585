// The fp32 CPU reference backend: parameters, gradients and optimizer state in host memory, the
// model from src/cpu/gpt2_cpu.h and the optimizers from src/optim/update_rules.h. With a communicator of
// several ranks (DistOptions) it is data parallel over host collectives (MPI): the same logic as
// the GPU path, so the tests of data parallelism run without a GPU.
#pragma once
#include <memory>
#include <vector>

#include "backend/backend.h"

namespace sgpt {
std::unique_ptr<Backend> make_cpu_backend(const ModelConfig& cfg, int max_B, int T,
                                          const std::vector<float>& init_params,
                                          const DistOptions& dist = {});
}  // namespace sgpt
