// The optimizers on the GPU (src/optim/optimizer.h): each is a cuda::Optimizer, defined beside
// its fused kernel (kernels/optimizer.cu: Sophia-G, AdamW; kernels/lion.cu: Lion;
// kernels/sophiah.cu: Sophia-H), and listed in
// make_optimizer's table (src/cuda/optimizer.cpp). Plain C++ (usable from .cpp and .cu files).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "cuda/optim_cuda.h"
#include "optim/optimizer.h"

namespace sgpt::cuda {

// The element type of a gradient or working-weight buffer.
enum class Storage { kF32, kBf16 };

// This rank's part of the flat buffer as an update sees it: n elements starting at global index
// key.index_base (the decay mask and the stochastic rounding are keyed by global index).
struct UpdateTarget {
  float* master = nullptr;        // fp32 parameters (the working weights too in fp32 mode)
  void* weights = nullptr;        // bf16 working weights written from the master; nullptr: none
  Storage weights_type = Storage::kF32;
  const void* grad = nullptr;
  Storage grad_type = Storage::kF32;
  size_t n = 0;
  DecayRanges decay;
  RoundingKey key;
  cudaStream_t stream = nullptr;
};

// Calls f(grad, weights) with the buffers' element types: (float, float), (bf16, bf16) or
// (float, bf16) (fp32 gradient accumulation of a bf16 model).
template <class F>
void with_types(const UpdateTarget& t, F&& f) {
  using bf16 = __nv_bfloat16;
  if (t.weights_type == Storage::kF32 && t.grad_type == Storage::kF32)
    f(static_cast<const float*>(t.grad), static_cast<float*>(t.weights));
  else if (t.weights_type == Storage::kBf16 && t.grad_type == Storage::kBf16)
    f(static_cast<const bf16*>(t.grad), static_cast<bf16*>(t.weights));
  else if (t.weights_type == Storage::kBf16 && t.grad_type == Storage::kF32)
    f(static_cast<const float*>(t.grad), static_cast<bf16*>(t.weights));
  else
    throw std::invalid_argument("optimizer update: bf16 gradient with fp32 weights");
}

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One update of t's elements; state[i]: slot i of the kind (this rank's range). `metrics`
  // (Sophia-G's / Sophia-H's clipping sums, read with read_sophia_metrics): filled when non-null;
  // optimizers without metrics zero them.
  virtual void update(const OptimizerStep& s, float* const* state, const UpdateTarget& t,
                      ReduceScratch* metrics) const = 0;
};

// Throws std::invalid_argument for an unknown name.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name);

}  // namespace sgpt::cuda
