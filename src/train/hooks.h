// What a run does between its steps (docs/config.md): the validation loss (eval.every), HellaSwag
// accuracy (eval.hellaswag_every) and samples (sample.every), each logged to log.jsonl and, on rank
// 0, printed. Every method is collective: all ranks call it at the same steps.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "sample/decoder.h"
#include "sample/sampling.h"
#include "data/loader.h"
#include "eval/hellaswag.h"
#include "tokenizer/tokenizer.h"
#include "backend/backend.h"
#include "train/run_log.h"
#include "train/trainer.h"

namespace sgpt {

// Seconds on a steady clock (for durations).
double now_s();

// eval.hellaswag_file must name a file when eval.hellaswag_every > 0 (UserError naming the key).
void check_hellaswag_file(const Config& cfg);

class RunHooks {
 public:
  // `console`: whether rank 0 prints; `phase`: arms the multi-rank watchdog for a collective phase.
  RunHooks(const Config& cfg, Backend& be, const TrainOptions& opt, JsonlLog& log, TrainResult& res,
           std::function<bool()> console, std::function<void(const char*)> phase);
  void evaluate(int64_t step);
  void hellaswag(int64_t step);
  void sample(int64_t step);

 private:
  const Config& cfg;
  Backend& be;
  const TrainOptions& opt;
  JsonlLog& log;
  TrainResult& res;
  std::function<bool()> console;
  std::function<void(const char*)> phase;
  const ModelConfig& mc;
  const int B, T;
  const bool main_rank, multi;
  std::vector<int> inp, tgt;
  std::unique_ptr<DataLoader> val_loader;
  int eval_batches = 0;
  std::vector<HellaSwagExample> hellaswag_examples;
  std::vector<int> sample_prompt;
  std::unique_ptr<Tokenizer> sample_tok;
  std::unique_ptr<Decoder> sample_decoder;
  SamplingOptions sample_opt;
};

}  // namespace sgpt
