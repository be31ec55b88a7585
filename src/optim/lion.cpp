// Lion on the CPU: the formula of src/optim/lion.h and its CpuOptimizer.
#include "optim/lion.h"

#include "optim/optimizer.h"

namespace sgpt {

LionConsts LionConsts::make(double lr, double beta1, double beta2, double wd) {
  LionConsts c;
  c.b1 = static_cast<float>(beta1);
  c.one_minus_b1 = static_cast<float>(1.0 - beta1);
  c.b2 = static_cast<float>(beta2);
  c.one_minus_b2 = static_cast<float>(1.0 - beta2);
  c.decay = static_cast<float>(1.0 - lr * wd);
  c.neg_lr = static_cast<float>(-lr);
  return c;
}

namespace cpu {
void lion_update(float* p, float* m, const float* g, size_t n, const LionConsts& c, bool decayed) {
  for (size_t i = 0; i < n; ++i) {
    float pi = p[i];
    if (decayed) pi = pi * c.decay;
    const float ci = m[i] * c.b1 + c.one_minus_b1 * g[i];
    const float s = ci > 0.0f ? 1.0f : (ci < 0.0f ? -1.0f : ci);  // sign(0) = 0, sign(NaN) = NaN
    p[i] = pi + c.neg_lr * s;
    m[i] = m[i] * c.b2 + c.one_minus_b2 * g[i];
  }
}
}  // namespace cpu

namespace {
class Lion final : public CpuOptimizer {
 public:
  void update(const OptimizerStep& s, float* p, float* const* state, const float* g, size_t n,
              bool decayed, SophiaMetrics*) const override {
    const OptimizerConfig& o = *s.cfg;
    cpu::lion_update(p, state[0], g, n, LionConsts::make(s.lr, o.beta1, o.beta2, o.weight_decay),
                     decayed);
  }
};
}  // namespace

std::unique_ptr<CpuOptimizer> make_lion_cpu() { return std::make_unique<Lion>(); }

}  // namespace sgpt
