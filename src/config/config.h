// The run configuration: one JSON document, every key documented in docs/config.md.
// Each key is one row of the table in keys.cpp (config/keys.h), from which reading, checking,
// writing and docs/config.md's key tables come.
//
// Loading: defaults <- JSON file <- --set overrides (key paths like "optimizer.lr=3e-4"). Every key
// is checked: unknown keys, wrong types and out-of-range values throw sgpt::UserError naming the
// key path and what was expected. The resolved config (to_json) is written into the run directory.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/gpt2.h"

namespace sgpt {

struct OptimizerConfig {
  std::string name = "sophiag";  // "sophiag" | "sophiah" | "adamw" | "lion" (src/optim/optimizer.h)
  double lr = 6e-4;
  double min_lr = 1.5e-5;
  double beta1 = 0.965;
  double beta2 = 0.99;
  double rho = 0.05;
  double weight_decay = 0.2;
  double eps = 1e-8;               // AdamW only
  double bs = 0;                   // Sophia-G: tokens per optimizer step; 0 = derive from batch
  int hessian_interval = 10;       // k: estimator pass after every step with step % k == k-1
  std::string hessian_probe = "gaussian";  // Sophia-H: "gaussian" | "rademacher"
  // Sophia: h read by the update divided by 1 - beta2^n (n: estimator passes so far), as Adam
  // corrects its second moment; off in the paper and the official code.
  bool hessian_bias_correction = false;
  double hessian_batch_fraction = 1.0;
  double grad_clip = 1.0;          // 0 disables
  // Divergence guard: a step whose loss or gradient norm is not finite is skipped (no update);
  // this many skipped steps in a row stop the run with an error.
  int max_consecutive_skips = 5;
};

struct ScheduleConfig {
  int64_t warmup_iters = 2000;
  int64_t lr_decay_iters = 100000;
  int64_t max_steps = 100000;
};

struct BatchConfig {
  int micro_batch_size = 8;          // sequences per micro-step (per process)
  int64_t total_batch_tokens = 491520;  // tokens per optimizer step, all processes together
};

struct DataConfig {
  std::string train;        // glob of training token files
  std::string val;          // glob of validation token files (empty: no eval)
  std::string format = "llmc";  // "llmc" | "nanogpt"
  std::string order = "shards";  // "shards" | "global" (llmc training order, data/loader.h)
};

struct EvalConfig {
  int64_t every = 1000;  // 0 disables
  int batches = 200;
  int64_t hellaswag_every = 0;  // HellaSwag accuracy every N steps (and at the end); 0 disables
  std::string hellaswag_file;   // the HellaSwag JSONL (src/eval/hellaswag.h, docs/eval.md)
};

struct CheckpointConfig {
  int64_t every = 1000;  // 0 disables periodic checkpoints (a final one is still written)
  int keep = 2;          // periodic checkpoints kept (older ones deleted); >= 1
  bool keep_best = false;  // also keep the checkpoint of the lowest validation loss (RunHooks)
};

struct LogConfig {
  int64_t every = 10;    // console line every N steps (log.jsonl gets every step)
  double peak_tflops = 0;  // device peak for MFU (src/eval/mfu.h); 0 = detect from the GPU's name
};

// Samples printed during training (docs/sampling.md): rank 0 decodes `tokens` tokens every
// `every` steps with the KV-cache decoder (the GPU one when training on the GPU).
struct SampleConfig {
  int64_t every = 0;         // 0 disables
  int tokens = 64;           // tokens per sample, >= 1
  std::string prompt;        // "" = the end-of-text token (docs/config.md)
  double temperature = 1.0;  // > 0
  int top_k = 40;            // 0 = no cut
  double top_p = 1.0;        // in (0, 1]; 1 = no cut
};

struct DistConfig {
  std::string init;        // rendezvous: "tcp://HOST:PORT" | "file:///path" | "" (MASTER_ADDR/PORT)
  double timeout_s = 300;  // a rank waiting longer than this for the others stops (0: never)
  int zero = 1;            // 1: ZeRO-1 (optimizer state sharded over ranks), 0: replicated
};

struct Config {
  ModelConfig model;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  BatchConfig batch;
  DataConfig data;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  LogConfig log;
  SampleConfig sample;
  DistConfig dist;
  uint64_t seed = 1337;
  std::string precision = "fp32";  // "fp32" | "bf16" (bf16 needs the CUDA backend)
  std::string device = "auto";     // "auto" | "cpu" | "cuda"
  std::string attention = "auto";  // GPU attention: "auto" | "own" | "cudnn" (backend/backend.h)
  int recompute = 0;  // GPU activation recompute: 0 none, 1 GELU outputs, 2 also LayerNorm outputs
  bool cuda_graphs = false;  // GPU: replay each training micro-step from a CUDA graph
  std::string lm_head_precision = "bf16";  // "bf16" | "fp8" (GPU, precision bf16, cc >= 8.9)
  // bf16 mode: gradients summed over micro-steps in "fp32" or in the "bf16" gradient buffer;
  // "auto": fp32 when a step has more than one micro-step per process (docs/decisions.md). fp32
  // precision: always fp32.
  std::string grad_accum_precision = "auto";
  bool grad_accum_fp32(int world = 1) const {
    return grad_accum_fp32_for(grad_accum_precision, grad_accum_steps(world));
  }
  // The rule itself, for callers without a Config (`bench train --grad-accum`).
  static bool grad_accum_fp32_for(const std::string& setting, int accum_steps) {
    return setting == "fp32" || (setting == "auto" && accum_steps > 1);
  }

  // Derived (not keys): gradient accumulation steps and Sophia's bs, for a world of `world`
  // processes. Validated in validate(world).
  int grad_accum_steps(int world = 1) const;
  double sophia_bs() const;

  // Throws UserError (naming the key path) for any invalid or inconsistent value.
  void validate(int world = 1) const;
};

// Parses a config object. `source` names the input in messages (a file path or "--set").
// `overrides` (key path -> the --set assignment that gave it) makes errors in those keys name the
// --set instead of the file.
Config config_from_json(const nlohmann::json& j, const std::string& source,
                        const std::map<std::string, std::string>& overrides = {});
nlohmann::json config_to_json(const Config& c);

// Reads a JSON file (UserError naming the file on I/O or syntax errors, on a number out of the
// range of a double, naming its key, and on a key that appears twice in one object).
nlohmann::json read_json_file(const std::string& path);

// Applies "a.b.c=value" overrides to a JSON document. The value is parsed as JSON when it is valid
// JSON (numbers, true/false, quoted strings, arrays), otherwise taken as a plain string. The key
// path must exist in the default config (so typos are errors, naming the key).
void apply_override(nlohmann::json& j, const std::string& assignment);

// defaults <- file (optional, "" for none) <- overrides; then validate(world).
Config load_config(const std::string& path, const std::vector<std::string>& overrides, int world = 1);

}  // namespace sgpt
