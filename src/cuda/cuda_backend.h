// The GPU backend (src/cuda/ is the host side of the GPU path: docs/design.md section 1). Plain C++ header with no
// CUDA includes, so the trainer and the CLI can use it from any translation unit.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/gpt2.h"
#include "backend/backend.h"

namespace sgpt {

// True when a CUDA device can be used (driver present, device count > 0, a context can be
// created); false with the reason in *why otherwise.
bool cuda_usable(std::string* why);

// CudaBackend: parameters, gradients, optimizer state and activations on the current device.
// kFp32: every tensor fp32, results comparable with the CPU reference (TF32 off).
// kBf16: bf16 weights, activations and gradients; fp32 master weights and optimizer state; the
// optimizer writes the bf16 weights from the master with stochastic rounding.
// Activations are allocated for max_B x T positions. `attention`: see AttentionImpl
// (backend/backend.h); kCudnn throws std::invalid_argument with the reason when cuDNN attention
// cannot be used.
std::unique_ptr<Backend> make_cuda_backend(const ModelConfig& cfg, int max_B, int T,
                                           Precision precision,
                                           const std::vector<float>& init_params,
                                           AttentionImpl attention = AttentionImpl::kAuto,
                                           const DistOptions& dist = {});

// Makes device `local_rank % device count` current (one GPU per rank). Call before anything else
// touches CUDA; returns the device index, or -1 when no device is visible.
int cuda_select_device(int local_rank);

}  // namespace sgpt
