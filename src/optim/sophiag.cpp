// Sophia-G on the CPU: the update rule cpu::sophia_update (src/optim/update_rules.h) per tensor.
// State: m (momentum) and h (the Hessian estimate, kept by the GNB estimator).
#include "optim/optimizer.h"

namespace sgpt {
namespace {
class SophiaG final : public CpuOptimizer {
 public:
  void update(const OptimizerStep& s, float* p, float* const* state, const float* g, size_t n,
              bool decayed, SophiaMetrics* metrics) const override {
    const OptimizerConfig& o = *s.cfg;
    const double rho = o.rho * hessian_correction(s);
    const SophiaConsts c = SophiaConsts::make(s.lr, o.beta1, rho, s.bs, o.weight_decay);
    cpu::sophia_update(p, state[0], state[1], g, n, c, decayed, metrics);
  }
};
}  // namespace

std::unique_ptr<CpuOptimizer> make_sophiag_cpu() { return std::make_unique<SophiaG>(); }

}  // namespace sgpt
