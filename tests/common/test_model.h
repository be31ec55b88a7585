// Model set-ups shared by the CPU and GPU tests: a model shape in one line, its initial
// parameters, a fresh backend for a config (the CPU reference; the CUDA backend in builds with
// it, i.e. the GPU tests) and quiet training runs. Header-only; needs nothing but the
// project's libraries.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/gpt2.h"
#include "cpu/cpu_backend.h"
#include "train/checkpoints.h"
#include "train/trainer.h"
#ifdef SGPT_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace sgpt_test {

// A ModelConfig of the given shape. padded_vocab_size 0 stands for pad_vocab(vocab_size); bias and
// scale_attn_by_inverse_layer_idx default to ModelConfig's own defaults (false, true).
inline sgpt::ModelConfig model_config(int n_layer, int n_head, int n_embd, int block_size, int vocab_size,
                                      int padded_vocab_size = 0, bool bias = false, bool scale_attn = true) {
  sgpt::ModelConfig m;
  m.n_layer = n_layer;
  m.n_head = n_head;
  m.n_embd = n_embd;
  m.block_size = block_size;
  m.vocab_size = vocab_size;
  m.padded_vocab_size = padded_vocab_size > 0 ? padded_vocab_size : sgpt::pad_vocab(vocab_size);
  m.bias = bias;
  m.scale_attn_by_inverse_layer_idx = scale_attn;
  return m;
}

// The parameters init_params gives model `m` with `seed`.
inline std::vector<float> initial_params(const sgpt::ModelConfig& m, uint64_t seed) {
  const sgpt::ParamLayout L = sgpt::ParamLayout::make(m);
  std::vector<float> p(L.total);
  sgpt::init_params(p.data(), m, L, seed);
  return p;
}

// A CPU backend for max_B x T positions holding initial_params(m, seed).
inline std::unique_ptr<sgpt::Backend> cpu_backend(const sgpt::ModelConfig& m, int max_B, int T, uint64_t seed) {
  return sgpt::make_cpu_backend(m, max_B, T, initial_params(m, seed));
}

// The backend a run of config `c` starts from: micro_batch_size x block_size positions, the
// parameters initialized with the run's seed.
inline std::unique_ptr<sgpt::Backend> fresh_cpu_backend(const sgpt::Config& c) {
  return cpu_backend(c.model, c.batch.micro_batch_size, c.model.block_size, c.seed);
}

// The config a run of JSON `j` uses (config_from_json, then validate: throws sgpt::UserError when
// invalid). `source` names it in messages.
inline sgpt::Config validated_config(const nlohmann::json& j, const std::string& source) {
  sgpt::Config c = sgpt::config_from_json(j, source);
  c.validate();
  return c;
}

// The options of a quiet run (no console lines) into the run directory `out_dir`.
inline sgpt::TrainOptions quiet_run(const std::filesystem::path& out_dir) {
  sgpt::TrainOptions o;
  o.out_dir = out_dir.string();
  o.quiet = true;
  return o;
}

// Trains config `c` on `be` as a new quiet run in `out_dir` (prepare_run_dir first).
inline sgpt::TrainResult train_new_run(const sgpt::Config& c, sgpt::Backend& be, const std::filesystem::path& out_dir) {
  const sgpt::TrainOptions o = quiet_run(out_dir);
  sgpt::prepare_run_dir(c, o);
  return sgpt::train(c, be, o);
}

// AdamW with the recipes' values (betas 0.9, 0.95, eps 1e-8, weight decay 0.1), for tests that call
// Backend::optimizer_step themselves.
inline sgpt::OptimizerConfig adamw_config() {
  sgpt::OptimizerConfig o;
  o.name = "adamw";
  o.beta1 = 0.9;
  o.beta2 = 0.95;
  o.eps = 1e-8;
  o.weight_decay = 0.1;
  return o;
}

// The bytes of the file at `path` (empty when it cannot be read).
inline std::vector<char> file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// Trains `c` on the CPU as one run (dir/whole; `check` sees its result and folder), then as a run
// stopped after `cut` steps and resumed to the end (dir/part). True when the two final model files
// and state files are byte-identical.
inline bool resumed_run_equals_whole(const sgpt::Config& c, int64_t cut, const std::filesystem::path& dir,
                                     const std::function<void(const sgpt::TrainResult&, const std::string&)>& check) {
  const std::string whole = (dir / "whole").string(), part = (dir / "part").string();
  auto a = fresh_cpu_backend(c);
  check(train_new_run(c, *a, whole), whole);
  sgpt::Config first = c;
  first.schedule.max_steps = cut;
  auto b = fresh_cpu_backend(c);
  train_new_run(first, *b, part);
  sgpt::TrainOptions resume = quiet_run(part);
  resume.resume = true;
  auto b2 = fresh_cpu_backend(c);  // a new process starts from a fresh init, then loads
  sgpt::prepare_run_dir(c, resume);
  sgpt::train(c, *b2, resume);
  const int64_t end = c.schedule.max_steps;
  return file_bytes(sgpt::model_path(whole, end)) == file_bytes(sgpt::model_path(part, end)) &&
         file_bytes(sgpt::state_path(whole, end)) == file_bytes(sgpt::state_path(part, end)) &&
         !file_bytes(sgpt::model_path(whole, end)).empty();
}

#ifdef SGPT_WITH_CUDA
// The same on the GPU, in `precision`.
inline std::unique_ptr<sgpt::Backend> fresh_cuda_backend(const sgpt::Config& c, sgpt::Precision precision) {
  return sgpt::make_cuda_backend(c.model, c.batch.micro_batch_size, c.model.block_size, precision,
                                 initial_params(c.model, c.seed));
}
#endif

}  // namespace sgpt_test
