// The training loop, written once over a Backend (nanoGPT's train.py, in C++):
//
//   for step in [start, max_steps):
//     eval (every eval.every steps and at the end)
//     lr = schedule(step)
//     grad = mean over the step's micro-batches of d loss        (gradient accumulation)
//     clip by global norm (grad_clip); optimizer step (Sophia-G or AdamW)
//     if Sophia-G and step % k == k-1:                            (GNB pass, on fresh batches)
//       grad = mean over micro-batches (the first fraction*B sequences of each) of the gradient
//              of CE against labels sampled from the model's softmax
//       clip by global norm (grad_clip); h = b2*h + (1-b2)*grad*grad
//     log; checkpoint every checkpoint.every steps and at the end
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "train/backend.h"

namespace sgpt {

struct TrainOptions {
  std::string out_dir;        // run directory: config.json, log.jsonl, model_*.bin, state_*.bin
  bool resume = false;        // continue from the newest checkpoint in out_dir
  int rank = 0, world = 1;    // data-parallel position (the backend's communicator has the same)
  bool quiet = false;         // no console progress lines
};

struct TrainResult {
  int64_t start_step = 0;
  int64_t steps_done = 0;
  std::vector<double> train_losses;   // per step run in this call
  double last_val_loss = -1;          // -1 when no eval ran
};

// Checks that out_dir can take a new run (refuses one that already holds a run unless resuming),
// creates it and writes config.json. Returns the checkpoint step to resume from (or 0).
// = check_run_dir then (rank 0) write_run_dir. In a multi-process run every rank checks before
// the processes meet, and rank 0 writes only after, so no rank sees rank 0's new files.
int64_t prepare_run_dir(const Config& cfg, const TrainOptions& opt);
int64_t check_run_dir(const TrainOptions& opt);
void write_run_dir(const Config& cfg, const TrainOptions& opt, int64_t ckpt);

// Opens the training (and validation) files as train() will, so bad data is reported before any
// model memory is allocated or any process waits for another. Throws UserError.
void check_data(const Config& cfg, int world);

TrainResult train(const Config& cfg, Backend& backend, const TrainOptions& opt);

// Newest step with both model_<step>.bin and state_<step>.bin in dir, or -1.
int64_t latest_checkpoint(const std::string& dir);
std::string model_path(const std::string& dir, int64_t step);
std::string state_path(const std::string& dir, int64_t step);

}  // namespace sgpt
