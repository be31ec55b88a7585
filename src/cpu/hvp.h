// Exact Hessian-vector products of the GPT-2 loss on the CPU (Sophia-H's reference; docs/design.md
// section 3): forward-mode over the reverse pass. The model runs on dual parameters p + eps*u
// (cpu/dual.h); the dual parts of the gradient it returns are H u, the derivative of the gradient
// along u, exact up to the rounding of T (no step size, no truncation error).
#pragma once
#include <memory>
#include <vector>

#include "cpu/dual.h"
#include "cpu/gpt2_cpu.h"

namespace sgpt::cpu {

// T = float (the CPU backend) or double (the tests).
template <class T>
class HessianVectorProduct {
 public:
  // Activations for up to max_B x seq positions (as cpu::Gpt2).
  HessianVectorProduct(const ModelConfig& cfg, int max_B, int seq);
  // hu[i] += scale * (H u)[i], H the Hessian of the mean cross-entropy of the B x seq batch
  // (inp, tgt) at params; params, u, hu: ParamLayout::total elements. Returns that loss.
  T accumulate(const T* params, const T* u, const int* inp, const int* tgt, int B, T scale, T* hu);

 private:
  Gpt2<Dual<T>> model_;
  std::vector<Dual<T>> params_, grads_;
};

extern template class HessianVectorProduct<float>;
extern template class HessianVectorProduct<double>;

}  // namespace sgpt::cpu
