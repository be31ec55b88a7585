// The Hutchinson estimator (Sophia-H; the Sophia paper's Algorithm 3, docs/design.md section 3):
//   hu = the step's accumulation of grad_scale * H u on fresh batches (the first Bh sequences of
//        each, with their real labels), H the Hessian of the mean loss at the current weights, u
//        the probe of this step (Gaussian or Rademacher, keyed by seed, step and parameter index)
//   if its loss and |hu| are finite: h = b2*h + (1-b2)*u*hu      (may be negative: no square)
// No clipping: hu is not a gradient. A non-finite pass leaves h as it was.
#include <cmath>
#include <memory>

#include "train/step.h"

namespace sgpt {
namespace {

class Hutchinson final : public HessianEstimator {
 public:
  std::string name() const override { return "hutchinson"; }
  void run(Backend& be, const NextBatch& next, const StepPlan& p, int64_t step,
           std::vector<int>& inp, std::vector<int>& tgt, StepOutcome& o) const override {
    const bool rademacher = p.opt.hessian_probe == "rademacher";
    be.zero_grad();
    for (int micro = 0; micro < p.accum; ++micro) {
      next(inp.data(), tgt.data());
      if (micro == p.accum - 1) be.begin_last_micro();
      o.gnb_loss += be.hvp_micro(inp.data(), tgt.data(), p.Bh, p.T, p.grad_scale, p.seed,
                                 static_cast<uint32_t>(step), rademacher);
    }
    be.reduce_grad();
    o.gnb_loss /= p.accum;
    o.gnb_norm = std::sqrt(be.grad_sum_squares());
    if (p.world > 1) be.average(&o.gnb_loss, 1);
    o.gnb_applied = std::isfinite(o.gnb_loss) && std::isfinite(o.gnb_norm);
    if (o.gnb_applied)
      be.hutchinson_ema(HessianConsts::make(p.opt.beta2), p.seed, static_cast<uint32_t>(step), rademacher);
  }
};

}  // namespace

std::shared_ptr<HessianEstimator> make_hutchinson_estimator() { return std::make_shared<Hutchinson>(); }

}  // namespace sgpt
