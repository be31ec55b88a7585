// One training step over a Backend, the same for `train`, `bench train` and the tests:
//
//   grad = sum over the step's micro-batches of d loss * grad_scale   (accumulation; the ranks'
//          sums add up to the mean over every sequence of the step)
//   if loss (mean over ranks) and |grad| are finite:                  (the divergence guard)
//     clip grad to grad_clip; the optimizer's update (src/optim/optimizer.h)
//     if the optimizer reads a Hessian estimate and step % k == k - 1:
//       the estimator's pass (HessianEstimator below; Sophia-G: GNB)
//
// Everything that decides (loss, norms) is the same on every rank, so every rank takes the same
// branch. The caller logs, evaluates and checkpoints.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "backend/backend.h"

namespace sgpt {

// Fills one micro-batch: inp and tgt, B*T token ids each (DataLoader::next, or a benchmark's
// token bank).
using NextBatch = std::function<void(int* inp, int* tgt)>;

class HessianEstimator;

// What every step of a run shares.
struct StepPlan {
  int B = 0, T = 0;        // micro-batch
  int accum = 1;           // micro-steps per step on this rank
  int rank = 0, world = 1;
  float grad_scale = 1;    // 1 / (accum * world)
  OptimizerConfig opt;     // opt.name: the optimizer
  double bs = 0;           // Sophia's tokens per step
  int k = 10;              // the estimator's pass after steps with step % k == k - 1
  int Bh = 0;              // the estimator's sequences per micro-batch
  uint64_t seed = 0;       // the estimator's random stream (GNB labels)
  std::shared_ptr<HessianEstimator> estimator;  // null: the optimizer reads no Hessian estimate
  static StepPlan make(const Config& cfg, int rank, int world);
};

struct StepOutcome {
  double loss = 0, norm = 0;   // mean loss over the step's sequences (all ranks), global gradient norm
  bool finite = false;         // false: the update was skipped
  bool gnb = false;            // the estimator's pass ran (finite step with step % k == k - 1)
  bool gnb_applied = false;    // ... and updated h (its loss and norm were finite)
  double gnb_loss = 0, gnb_norm = 0;
  SophiaMetrics metrics;       // Sophia's clipping statistics, on the steps with a pass
};

// A Hessian estimator: the pass that updates slot "h" after the step's update (when due). It
// fills o.gnb_loss, o.gnb_norm and o.gnb_applied.
class HessianEstimator {
 public:
  virtual ~HessianEstimator() = default;
  virtual std::string name() const = 0;
  virtual void run(Backend& be, const NextBatch& next, const StepPlan& p, int64_t step,
                   std::vector<int>& inp, std::vector<int>& tgt, StepOutcome& o) const = 0;
};
// "gnb" (Gauss-Newton-Bartlett, src/train/gnb.cpp) or "hutchinson" (src/train/hutchinson.cpp);
// throws std::invalid_argument otherwise.
std::shared_ptr<HessianEstimator> make_hessian_estimator(const std::string& name);

// `inp` and `tgt` are B*T scratch buffers. `poison_loss`: the failure tests' NaN fault.
StepOutcome train_step(Backend& be, const NextBatch& next, const StepPlan& p, int64_t step,
                       double lr, std::vector<int>& inp, std::vector<int>& tgt,
                       bool poison_loss = false);

}  // namespace sgpt
