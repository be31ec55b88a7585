#include "train/step.h"

#include <algorithm>
#include <cmath>

#include "optim/optimizer.h"

namespace sgpt {

// The Hessian estimators, each defined in its own file.
std::shared_ptr<HessianEstimator> make_gnb_estimator();         // train/gnb.cpp
std::shared_ptr<HessianEstimator> make_hutchinson_estimator();  // train/hutchinson.cpp

std::shared_ptr<HessianEstimator> make_hessian_estimator(const std::string& name) {
  if (name == "gnb") return make_gnb_estimator();
  if (name == "hutchinson") return make_hutchinson_estimator();
  throw std::invalid_argument("unknown Hessian estimator '" + name + "'");
}

StepPlan StepPlan::make(const Config& cfg, int rank, int world) {
  StepPlan p;
  p.B = cfg.batch.micro_batch_size;
  p.T = cfg.model.block_size;
  p.accum = cfg.grad_accum_steps(world);
  p.rank = rank;
  p.world = world;
  p.grad_scale = 1.0f / static_cast<float>(p.accum * world);
  p.opt = cfg.optimizer;
  p.bs = cfg.sophia_bs();
  p.k = cfg.optimizer.hessian_interval;
  p.Bh = std::max(1, static_cast<int>(std::floor(cfg.optimizer.hessian_batch_fraction * p.B)));
  p.seed = cfg.seed;
  const OptimizerKind& kind = optimizer_kind(cfg.optimizer.name);
  if (!kind.estimator.empty()) p.estimator = make_hessian_estimator(kind.estimator);
  return p;
}

StepOutcome train_step(Backend& be, const NextBatch& next, const StepPlan& p, int64_t step,
                       double lr, std::vector<int>& inp, std::vector<int>& tgt, bool poison_loss) {
  StepOutcome o;
  be.zero_grad();
  for (int micro = 0; micro < p.accum; ++micro) {
    next(inp.data(), tgt.data());
    if (micro == p.accum - 1) be.begin_last_micro();
    o.loss += be.train_micro(inp.data(), tgt.data(), p.B, p.T, p.grad_scale);
  }
  be.reduce_grad();
  o.loss /= p.accum;
  if (poison_loss) o.loss = std::nan("");
  o.norm = std::sqrt(be.grad_sum_squares());
  if (p.world > 1) be.average(&o.loss, 1);  // the mean over ranks: the guard decides alike on every rank

  // Divergence guard: the loss (mean over ranks) and the gradient norm (over the whole model) are
  // the same on every rank; a non-finite one skips the update, the estimator's pass included.
  o.finite = std::isfinite(o.loss) && std::isfinite(o.norm);
  if (!o.finite) return o;
  o.gnb = p.estimator && step % p.k == p.k - 1;
  const float clip = cpu::clip_scale(o.norm, p.opt.grad_clip);
  if (clip != 1.0f) be.scale_grad(clip);
  be.optimizer_step(OptimizerStep{&p.opt, lr, step + 1, p.bs}, o.gnb ? &o.metrics : nullptr);
  if (o.gnb) p.estimator->run(be, next, p, step, inp, tgt, o);
  return o;
}

}  // namespace sgpt
