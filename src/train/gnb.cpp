// The Gauss-Newton-Bartlett estimator (the Sophia paper's Algorithm 2; docs/design.md section 3):
//   grad = the step's accumulation on fresh batches (the first Bh sequences of each), with labels
//          sampled from the model's own softmax (Philox keyed by seed, step and the sequence's
//          global index among the pass's sequences: the same for any number of ranks)
//   if its loss and norm are finite: clip grad to grad_clip; h = b2*h + (1-b2)*grad*grad
// A non-finite pass leaves h as it was (the step's update stands).
#include <cmath>
#include <stdexcept>

#include "train/step.h"

namespace sgpt {
namespace {

class Gnb final : public HessianEstimator {
 public:
  std::string name() const override { return "gnb"; }
  void run(Backend& be, const NextBatch& next, const StepPlan& p, int64_t step,
           std::vector<int>& inp, std::vector<int>& tgt, StepOutcome& o) const override {
    be.zero_grad();
    for (int micro = 0; micro < p.accum; ++micro) {
      next(inp.data(), tgt.data());
      const uint32_t seq0 = static_cast<uint32_t>((micro * p.world + p.rank) * p.Bh);
      if (micro == p.accum - 1) be.begin_last_micro();
      o.gnb_loss += be.gnb_micro(inp.data(), p.Bh, p.T, p.grad_scale, p.seed,
                                 static_cast<uint32_t>(step), seq0);
    }
    be.reduce_grad();
    o.gnb_loss /= p.accum;
    o.gnb_norm = std::sqrt(be.grad_sum_squares());
    if (p.world > 1) be.average(&o.gnb_loss, 1);
    o.gnb_applied = std::isfinite(o.gnb_loss) && std::isfinite(o.gnb_norm);
    if (!o.gnb_applied) return;
    const float clip = cpu::clip_scale(o.gnb_norm, p.opt.grad_clip);
    if (clip != 1.0f) be.scale_grad(clip);
    be.hessian_ema(HessianConsts::make(p.opt.beta2));
  }
};

}  // namespace

std::shared_ptr<HessianEstimator> make_gnb_estimator() { return std::make_shared<Gnb>(); }

}  // namespace sgpt
