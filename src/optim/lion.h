// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2, with
// decoupled weight decay), one state slot m:
//   p = p*decay                      decay = 1 - lr*wd (decayed tensors only)
//   c = m*b1 + (1-b1)*g              the interpolation that gives the update's sign
//   p = p + (-lr)*sign(c)            sign(0) = 0, sign(NaN) = NaN
//   m = m*b2 + (1-b2)*g              the momentum EMA, with the other beta
// b1 = optimizer.beta1, b2 = optimizer.beta2 (the Sophia paper's GPT-2 baseline: 0.95, 0.98).
// The CPU formula below is the oracle of the CUDA kernel (kernels/lion.cu): the same operations
// in the same order, each rounded as written (this file is compiled with -ffp-contract=off).
#pragma once
#include <cstddef>

namespace sgpt {

struct LionConsts {
  float b1, one_minus_b1, b2, one_minus_b2;
  float decay;   // 1 - lr*wd
  float neg_lr;  // -lr
  static LionConsts make(double lr, double beta1, double beta2, double weight_decay);
};

namespace cpu {
void lion_update(float* p, float* m, const float* g, size_t n, const LionConsts& c, bool decayed);
}  // namespace cpu

}  // namespace sgpt
