// Optimizers as the training step and the backends see them (docs/design.md section 3).
//
// An optimizer is an element-wise update rule over the flat parameter buffer: it reads the
// gradient, updates the fp32 parameters and its own state slots (fp32, one value per parameter),
// and may read a Hessian estimate h that a HessianEstimator (src/train/step.h) keeps up to date.
// Each backend implements every optimizer in one file of its own:
//   CPU   src/optim/<name>.cpp       the literal formula (the test oracle) and a CpuOptimizer
//   CUDA  kernels/<name>.cu          the fused kernel and a cuda::Optimizer (src/cuda/optimizer.h)
// and lists it in its table: optimizer_kinds() below and make_cpu_optimizer() (src/optim/
// optimizer.cpp), cuda::make_optimizer() (src/cuda/optimizer.cpp). The config value
// `optimizer.name` (src/config/keys.cpp) names it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "optim/update_rules.h"

namespace sgpt {

// What one update needs, the same on every backend and every rank.
struct OptimizerStep {
  const OptimizerConfig* cfg = nullptr;  // the optimizer (cfg->name), betas, eps, rho, weight decay
  double lr = 0;                         // this step's learning rate (the schedule's)
  int64_t t = 1;                         // 1-based count of updates (bias corrections)
  double bs = 0;                         // Sophia: tokens per step (rho * bs scales h)
};

// Sophia's optional bias correction of h (`optimizer.hessian_bias_correction`): the factor
// 1 / (1 - beta2^n) the update applies to h (folded into rho, so the kernels are unchanged), with
// n = floor((t - 1) / k) the estimator passes that ran before update t (one after every update
// whose 0-based step is k-1 mod k). 1 when the option is off and before the first pass. A skipped
// step (the divergence guard) is still counted, so after one n may be one too high.
double hessian_correction(const OptimizerStep& s);

// An optimizer's name, the state slots it keeps (in this order in checkpoints and in the
// `state` arrays below) and the Hessian estimator that keeps its slot "h" up to date between
// steps (src/train/step.h; "" for optimizers that read no Hessian estimate).
struct OptimizerKind {
  std::string name;
  std::vector<std::string> slots;
  std::string estimator;
};
const std::vector<OptimizerKind>& optimizer_kinds();
// Throws std::invalid_argument naming the known optimizers.
const OptimizerKind& optimizer_kind(const std::string& name);

// The CPU side: one update of elements [0, n) of one tensor. p: fp32 parameters; state[i]: slot
// i of the kind; decayed: the tensor takes weight decay. Metrics (Sophia's clipping statistics)
// are accumulated when non-null; optimizers without any leave them untouched.
class CpuOptimizer {
 public:
  virtual ~CpuOptimizer() = default;
  virtual void update(const OptimizerStep& s, float* p, float* const* state, const float* g,
                      size_t n, bool decayed, SophiaMetrics* metrics) const = 0;
};
// Throws std::invalid_argument for an unknown name.
std::unique_ptr<CpuOptimizer> make_cpu_optimizer(const std::string& name);

}  // namespace sgpt
