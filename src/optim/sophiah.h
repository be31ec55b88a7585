// Sophia-H (the Sophia paper's Algorithm 3 with the Hutchinson estimator), one element, in order:
//   p = p*decay                       decay = 1 - lr*wd (decayed tensors only)
//   m = m*b1 + (1-b1)*g
//   d = gamma*h ; d = d < eps ? eps : d     max(gamma*h, eps); a NaN h stays NaN
//   r = m / d ; r clamped to [-1, 1]        NaN kept
//   p = p + (-lr)*r
// gamma = optimizer.rho, eps = optimizer.eps. Unlike Sophia-G's rho*bs*h + 1e-15 (the official
// code's), h may be negative here (u * Hu is not a square): max(gamma*h, eps) turns a negative or
// tiny h into a full, clipped step in the direction of -m, never a reversed one
// (docs/decisions.md). Metrics: unclipped = |m| < d, and the count of negative h.
#pragma once
#include <cstddef>

#include "optim/update_rules.h"

namespace sgpt {

struct SophiaHConsts {
  float b1, one_minus_b1;
  float decay;   // 1 - lr*wd
  float gamma;   // rho
  float eps;
  float neg_lr;  // -lr
  static SophiaHConsts make(double lr, double beta1, double gamma, double eps, double weight_decay);
};

namespace cpu {
void sophiah_update(float* p, float* m, const float* h, const float* g, size_t n,
                    const SophiaHConsts& c, bool decayed, SophiaMetrics* metrics);
}  // namespace cpu

}  // namespace sgpt
