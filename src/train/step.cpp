#include "train/step.h"

#include <algorithm>
#include <cmath>

#include "optim/update_rules.h"

namespace sgpt {

StepPlan StepPlan::make(const Config& cfg, int rank, int world) {
  StepPlan p;
  p.B = cfg.batch.micro_batch_size;
  p.T = cfg.model.block_size;
  p.accum = cfg.grad_accum_steps(world);
  p.rank = rank;
  p.world = world;
  p.grad_scale = 1.0f / static_cast<float>(p.accum * world);
  p.sophia = cfg.optimizer.name == "sophiag";
  p.k = cfg.optimizer.hessian_interval;
  p.Bh = std::max(1, static_cast<int>(std::floor(cfg.optimizer.hessian_batch_fraction * p.B)));
  p.seed = cfg.seed;
  p.opt = cfg.optimizer;
  p.bs = cfg.sophia_bs();
  return p;
}

StepOutcome train_step(Backend& be, DataLoader& loader, const StepPlan& p, int64_t step, double lr,
                       std::vector<int>& inp, std::vector<int>& tgt, bool poison_loss) {
  const OptimizerConfig& oc = p.opt;
  const bool multi = p.world > 1;
  StepOutcome o;
  be.zero_grad();
  for (int micro = 0; micro < p.accum; ++micro) {
    loader.next(inp.data(), tgt.data());
    if (micro == p.accum - 1) be.begin_last_micro();
    o.loss += be.train_micro(inp.data(), tgt.data(), p.B, p.T, p.grad_scale);
  }
  be.reduce_grad();
  o.loss /= p.accum;
  if (poison_loss) o.loss = std::nan("");
  o.norm = std::sqrt(be.grad_sum_squares());
  if (multi) be.average(&o.loss, 1);  // the mean over ranks: the guard decides alike on every rank

  // Divergence guard: the loss (mean over ranks) and the gradient norm (over the whole model) are
  // the same on every rank; a non-finite one skips the update, the GNB pass included.
  o.finite = std::isfinite(o.loss) && std::isfinite(o.norm);
  if (!o.finite) return o;
  o.gnb = p.sophia && step % p.k == p.k - 1;
  const float clip = cpu::clip_scale(o.norm, oc.grad_clip);
  if (clip != 1.0f) be.scale_grad(clip);
  if (p.sophia)
    be.sophia_step(SophiaConsts::make(lr, oc.beta1, oc.rho, p.bs, oc.weight_decay), o.gnb ? &o.metrics : nullptr);
  else
    be.adamw_step(AdamWConsts::make(lr, oc.beta1, oc.beta2, oc.eps, oc.weight_decay, step + 1));
  if (!o.gnb) return o;

  be.zero_grad();
  for (int micro = 0; micro < p.accum; ++micro) {
    loader.next(inp.data(), tgt.data());
    // Labels keyed by the global index of the sequence among the pass's GNB sequences: the same
    // for any number of ranks.
    const uint32_t seq0 = static_cast<uint32_t>((micro * p.world + p.rank) * p.Bh);
    if (micro == p.accum - 1) be.begin_last_micro();
    o.gnb_loss += be.gnb_micro(inp.data(), p.Bh, p.T, p.grad_scale, p.seed, static_cast<uint32_t>(step), seq0);
  }
  be.reduce_grad();
  o.gnb_loss /= p.accum;
  o.gnb_norm = std::sqrt(be.grad_sum_squares());
  if (multi) be.average(&o.gnb_loss, 1);
  // A non-finite GNB pass leaves h as it was (the step's update above stands).
  o.gnb_applied = std::isfinite(o.gnb_loss) && std::isfinite(o.gnb_norm);
  if (o.gnb_applied) {
    const float c2 = cpu::clip_scale(o.gnb_norm, oc.grad_clip);
    if (c2 != 1.0f) be.scale_grad(c2);
    be.hessian_ema(HessianConsts::make(oc.beta2));
  }
  return o;
}

}  // namespace sgpt
