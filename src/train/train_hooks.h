// Points at which the process running train() may act, for the failure tests: their build of the
// executable (tests/faults/sophiagpt_faults.cpp) installs hooks that kill, signal, throw, poison a
// loss or damage a checkpoint file at a chosen rank and step. The product installs none: every
// hook is a no-op unless set_train_hooks() was called.
#pragma once
#include <cstdint>
#include <string>

namespace sgpt {

struct TrainHooks {
  virtual ~TrainHooks() = default;
  // At the start of step `step` on rank `rank`, before its work.
  virtual void step_start(int rank, int64_t step) { (void)rank; (void)step; }
  // True: the step's loss on this rank reads as NaN (the divergence guard's input).
  virtual bool poison_loss(int rank, int64_t step) { (void)rank; (void)step; return false; }
  // After model file `model_file` of checkpoint `step` is written, before it is verified.
  virtual void checkpoint_written(const std::string& model_file, int64_t step) { (void)model_file; (void)step; }
};

// The hooks of this process (no-ops unless set); set_train_hooks(nullptr) restores the no-ops.
TrainHooks& train_hooks();
void set_train_hooks(TrainHooks* hooks);

}  // namespace sgpt
