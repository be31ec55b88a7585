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
//     sample: rank 0 prints generated text every sample.every steps (docs/sampling.md)
//
// Reliability (docs/reliability.md): a step whose loss or gradient norm is not finite is skipped
// (no update; optimizer.max_consecutive_skips in a row stop the run with a UserError); SIGINT /
// SIGTERM finish the current step, write a checkpoint and end the run (TrainResult::stop_signal);
// every checkpoint is read back and verified before older ones are pruned; --resume takes the
// newest checkpoint that verifies, or restarts from step 0 when there is none. All of these
// decisions are taken from values that are the same on every rank.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "config/keys.h"
#include "sample/decoder.h"
#include "data/loader.h"
#include "backend/backend.h"
#include "train/checkpoints.h"
#include "train/run_dir.h"

namespace sgpt {

struct TrainOptions {
  std::string out_dir;        // run directory: config.json, log.jsonl, model_*.bin, state_*.bin
  bool resume = false;        // continue from the newest good checkpoint in out_dir (or step 0)
  int64_t resume_step = -1;   // the step check_run_dir chose (-1: train() finds it again)
  int rank = 0, world = 1;    // data-parallel position (the backend's communicator has the same)
  bool quiet = false;         // no console progress lines
  // Samples during training (config sample.every): rank 0 builds its decoder with this the first
  // time it samples and reuses it, uploading the current weights each time (empty: the CPU
  // decoder). The train command passes the GPU decoder when it trains on the GPU, so the trainer
  // itself needs no CUDA.
  std::function<std::unique_ptr<Decoder>(const ModelConfig&)> make_decoder;
  // The run's identity, recorded in every state file and in the log's machine record (the train
  // command draws one for a new run and keeps the checkpoint's on --resume).
  std::string run_id;
  // Rank 0 of the train command: the run directory's lock and the undo list of its start, which
  // train() commits once the first step has run (nullptr: no rollback, as in the tests).
  RunDirStart* start = nullptr;
};

struct TrainResult {
  int64_t start_step = 0;
  int64_t steps_done = 0;
  std::vector<double> train_losses;   // per step run in this call
  double last_val_loss = -1;          // -1 when no eval ran
  // (step, generated tokens) of every sample printed (sample.every; rank 0 only).
  std::vector<std::pair<int64_t, std::vector<int>>> samples;
  double last_hellaswag = -1;         // HellaSwag accuracy of the last evaluation (-1: none ran)
  int64_t skipped_steps = 0;          // steps the divergence guard skipped
  bool stopped_by_signal = false;     // SIGINT / SIGTERM (on any rank) ended the run early
  int stop_signal = 0;                // the signal, when this rank received it (else 0)
  int64_t last_checkpoint = -1;       // newest checkpoint step written or resumed from (-1: none)
  // The evaluation with the lowest validation loss at a checkpoint step (checkpoint.keep_best),
  // this run's and, on resume, the earlier part's (from log.jsonl); -1 when none.
  int64_t best_val_step = -1;
  double best_val_loss = 0;
};

// Checks that out_dir can take a new run (refuses one that already holds a run unless resuming),
// creates it and writes config.json. Returns the checkpoint step to resume from (or 0).
// Resuming: the newest checkpoint whose files verify; damaged or incomplete newer ones are named
// in a warning (rank 0) and set aside by write_run_dir as <name>.bad; a run directory without any
// good checkpoint restarts from step 0 with a note. write_run_dir also removes the temporary files
// of writers that died (remove_stale_temp_files).
// = check_run_dir then (rank 0) write_run_dir. In a multi-process run every rank checks before
// the processes meet, and rank 0 writes only after, so no rank sees rank 0's new files.
int64_t prepare_run_dir(const Config& cfg, const TrainOptions& opt);
int64_t check_run_dir(const TrainOptions& opt);
void write_run_dir(const Config& cfg, const TrainOptions& opt, int64_t ckpt);

// may_change_on_resume(key): declared in src/config/keys.h (the table of config keys).


// The keys that may not change on resume, with their values ({"model.n_layer": 12, ...}): what a
// state file records of the config, and what the run id is a hash of.
nlohmann::json identity_config(const Config& cfg);

// --resume from checkpoint `step` of `dir`: compares cfg with the config its state file recorded
// (files that record none: the optimizer and model shape only, as load_checkpoint does). A changed
// key that may not change is a UserError naming it; the others are listed in a note (when
// `say`). Returns the run id the checkpoint records ("" when none).
std::string check_resume_config(const Config& cfg, const std::string& dir, int64_t step, bool say);

// The commit this program was built from ("unknown" outside a git checkout).
const char* program_commit();

// Opens the training (and validation) files as train() will, so bad data is reported before any
// model memory is allocated or any process waits for another. Throws UserError.
void check_data(const Config& cfg, int world);

TrainResult train(const Config& cfg, Backend& backend, const TrainOptions& opt);

// What the validation loss is computed over, during training and by `sophiagpt eval`: data.val
// in the run's seeded order (the same batches at every evaluation), rank's slice of each batch.
LoaderOptions val_loader_options(const Config& cfg, int rank, int world);



}  // namespace sgpt
