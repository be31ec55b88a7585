// AdamW on the CPU (PyTorch's formula): cpu::adamw_update (src/optim/update_rules.h) per tensor.
// State: m and v (first and second moments).
#include "optim/optimizer.h"

namespace sgpt {
namespace {
class AdamW final : public CpuOptimizer {
 public:
  void update(const OptimizerStep& s, float* p, float* const* state, const float* g, size_t n,
              bool decayed, SophiaMetrics*) const override {
    const OptimizerConfig& o = *s.cfg;
    const AdamWConsts c = AdamWConsts::make(s.lr, o.beta1, o.beta2, o.eps, o.weight_decay, s.t);
    cpu::adamw_update(p, state[0], state[1], g, n, c, decayed);
  }
};
}  // namespace

std::unique_ptr<CpuOptimizer> make_adamw_cpu() { return std::make_unique<AdamW>(); }

}  // namespace sgpt
