// Sophia-H on the CPU: the formula of src/optim/sophiah.h and its CpuOptimizer. State: m and h
// (h kept by the Hutchinson estimator, src/train/hutchinson.cpp).
#include "optim/sophiah.h"

#include <cmath>

#include "optim/optimizer.h"

namespace sgpt {

SophiaHConsts SophiaHConsts::make(double lr, double beta1, double gamma, double eps, double wd) {
  SophiaHConsts c;
  c.b1 = static_cast<float>(beta1);
  c.one_minus_b1 = static_cast<float>(1.0 - beta1);
  c.decay = static_cast<float>(1.0 - lr * wd);
  c.gamma = static_cast<float>(gamma);
  c.eps = static_cast<float>(eps);
  c.neg_lr = static_cast<float>(-lr);
  return c;
}

namespace cpu {
void sophiah_update(float* p, float* m, const float* h, const float* g, size_t n,
                    const SophiaHConsts& c, bool decayed, SophiaMetrics* metrics) {
  double unclipped = 0, l1 = 0, sq = 0, negative = 0;
  for (size_t i = 0; i < n; ++i) {
    float pi = p[i];
    if (decayed) pi = pi * c.decay;
    float mi = m[i] * c.b1;
    mi = mi + c.one_minus_b1 * g[i];
    const float hi = h[i];
    float d = c.gamma * hi;
    d = d < c.eps ? c.eps : d;  // NaN stays NaN (a comparison with NaN is false)
    float r = mi / d;
    r = r > 1.0f ? 1.0f : (r < -1.0f ? -1.0f : r);
    pi = pi + c.neg_lr * r;
    p[i] = pi;
    m[i] = mi;
    if (metrics) {
      unclipped += std::fabs(mi) < d ? 1.0 : 0.0;
      l1 += std::fabs(static_cast<double>(hi));
      sq += static_cast<double>(hi) * static_cast<double>(hi);
      negative += hi < 0.0f ? 1.0 : 0.0;
    }
  }
  if (metrics) {
    metrics->unclipped += unclipped;
    metrics->count += static_cast<double>(n);
    metrics->h_l1 += l1;
    metrics->h_sq += sq;
    metrics->h_negative += negative;
  }
}
}  // namespace cpu

namespace {
class SophiaH final : public CpuOptimizer {
 public:
  void update(const OptimizerStep& s, float* p, float* const* state, const float* g, size_t n,
              bool decayed, SophiaMetrics* metrics) const override {
    const OptimizerConfig& o = *s.cfg;
    const double gamma = o.rho * hessian_correction(s);
    cpu::sophiah_update(p, state[0], state[1], g, n,
                        SophiaHConsts::make(s.lr, o.beta1, gamma, o.eps, o.weight_decay), decayed,
                        metrics);
  }
};
}  // namespace

std::unique_ptr<CpuOptimizer> make_sophiah_cpu() { return std::make_unique<SophiaH>(); }

}  // namespace sgpt
