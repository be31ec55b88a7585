// One training step over a Backend, the same for `train`, `bench train` and the tests:
//
//   grad = sum over the step's micro-batches of d loss * grad_scale   (accumulation; the ranks'
//          sums add up to the mean over every sequence of the step)
//   if loss (mean over ranks) and |grad| are finite:                  (the divergence guard)
//     clip grad to grad_clip; Sophia-G or AdamW update
//     if Sophia-G and step % k == k - 1:                              (the GNB pass)
//       grad = the same accumulation on fresh batches (the first Bh sequences of each), with
//              labels sampled from the model's softmax (Philox keyed by seed, step, sequence)
//       if finite: clip; h = beta2 h + (1 - beta2) grad * grad
//
// Everything that decides (loss, norms) is the same on every rank, so every rank takes the same
// branch. The caller logs, evaluates and checkpoints.
#pragma once
#include <cstdint>
#include <vector>

#include "config/config.h"
#include "data/loader.h"
#include "backend/backend.h"

namespace sgpt {

// What every step of a run shares.
struct StepPlan {
  int B = 0, T = 0;        // micro-batch
  int accum = 1;           // micro-steps per step on this rank
  int rank = 0, world = 1;
  float grad_scale = 1;    // 1 / (accum * world)
  bool sophia = true;      // else AdamW
  int k = 10;              // GNB pass after steps with step % k == k - 1
  int Bh = 0;              // GNB sequences per micro-batch
  uint64_t seed = 0;       // GNB label stream
  OptimizerConfig opt;
  double bs = 0;           // Sophia-G's tokens per step
  static StepPlan make(const Config& cfg, int rank, int world);
};

struct StepOutcome {
  double loss = 0, norm = 0;   // mean loss over the step's sequences (all ranks), global gradient norm
  bool finite = false;         // false: the update was skipped
  bool gnb = false;            // a GNB pass ran (finite Sophia-G step with step % k == k - 1)
  bool gnb_applied = false;    // ... and updated h (its loss and norm were finite)
  double gnb_loss = 0, gnb_norm = 0;
  SophiaMetrics metrics;       // Sophia-G's clipping statistics, on GNB steps
};

// `inp` and `tgt` are B*T scratch buffers. `poison_loss`: the failure tests' NaN fault.
StepOutcome train_step(Backend& be, DataLoader& loader, const StepPlan& p, int64_t step, double lr,
                       std::vector<int>& inp, std::vector<int>& tgt, bool poison_loss = false);

}  // namespace sgpt
