// checkpoint.keep_best: the checkpoint of the lowest validation loss is kept beside the newest
// ones, its evaluation is marked in log.jsonl, and a resumed run keeps the same one.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "test_corpus.h"
#include "test_model.h"
#include "test_scratch.h"
#include "train/checkpoints.h"
#include "train/trainer.h"

using namespace sgpt;
namespace fs = std::filesystem;

namespace {

// A model learning a pattern while validated on random tokens: its validation loss goes up and
// down, so the best evaluation is not simply the last one.
Config keep_best_config(const fs::path& dir) {
  const std::string tr = sgpt_test::write_pattern_shard(dir / "train.bin", 40, 40000, 1);
  const std::string va = sgpt_test::write_random_shard(dir / "val.bin", 40, 4000, 2);
  return sgpt_test::validated_config(
      {{"model", {{"n_layer", 1}, {"n_head", 2}, {"n_embd", 16}, {"block_size", 16}, {"vocab_size", 40}}},
       {"batch", {{"micro_batch_size", 4}, {"total_batch_tokens", 64}}},
       {"schedule", {{"warmup_iters", 2}, {"lr_decay_iters", 60}, {"max_steps", 60}}},
       {"eval", {{"every", 10}, {"batches", 2}}},
       {"checkpoint", {{"every", 10}, {"keep", 1}, {"keep_best", true}}},
       {"optimizer", {{"name", "adamw"}, {"lr", 1e-2}, {"min_lr", 1e-3}, {"beta1", 0.9}, {"beta2", 0.95}}},
       {"data", {{"train", tr}, {"val", va}, {"format", "llmc"}}},
       {"seed", 3}},
      "keep_best");
}

struct Evals {
  std::map<int64_t, double> loss;  // step -> val loss
  std::set<int64_t> marked;        // steps whose record says "best": true
};
Evals read_evals(const fs::path& run) {
  Evals e;
  std::ifstream f(run / "log.jsonl");
  for (std::string line; std::getline(f, line);) {
    const auto r = nlohmann::json::parse(line);
    if (r.value("type", "") != "eval") continue;
    e.loss[r.at("step").get<int64_t>()] = r.at("val_loss").get<double>();
    if (r.value("best", false)) e.marked.insert(r.at("step").get<int64_t>());
  }
  return e;
}

std::set<int64_t> model_steps(const fs::path& run) {
  std::set<int64_t> s;
  for (int64_t step : checkpoint_file_steps(run.string()))
    if (fs::exists(model_path(run.string(), step))) s.insert(step);
  return s;
}

}  // namespace

TEST(KeepBest, TheLowestValidationLossKeepsItsCheckpoint) {
  const fs::path dir = sgpt_test::scratch_dir("keep_best", "whole");
  const Config c = keep_best_config(dir);
  auto be = sgpt_test::fresh_cpu_backend(c);
  sgpt_test::train_new_run(c, *be, dir / "run");
  const Evals e = read_evals(dir / "run");
  // The running minima over the checkpointed evaluations (10, 20, ..., 60) are marked, and only they.
  std::set<int64_t> minima;
  double best = 0;
  int64_t best_step = -1;
  for (const auto& [step, loss] : e.loss) {
    if (step == 0) continue;  // no checkpoint holds the initial model
    if (best_step < 0 || loss < best) best = loss, best_step = step, minima.insert(step);
  }
  EXPECT_EQ(e.marked, minima);
  ASSERT_GT(best_step, 0);
  EXPECT_NE(best_step, 60) << "the test wants a best evaluation before the last step";
  // keep = 1: the newest checkpoint, plus the best one.
  EXPECT_EQ(model_steps(dir / "run"), (std::set<int64_t>{best_step, 60}));
}

TEST(KeepBest, AResumedRunKeepsTheSameCheckpoint) {
  const fs::path dir = sgpt_test::scratch_dir("keep_best", "resume");
  const Config c = keep_best_config(dir);
  auto a = sgpt_test::fresh_cpu_backend(c);
  sgpt_test::train_new_run(c, *a, dir / "whole");
  Config first = c;
  first.schedule.max_steps = 40;
  auto b = sgpt_test::fresh_cpu_backend(c);
  sgpt_test::train_new_run(first, *b, dir / "part");
  TrainOptions resume = sgpt_test::quiet_run(dir / "part");
  resume.resume = true;
  auto b2 = sgpt_test::fresh_cpu_backend(c);
  prepare_run_dir(c, resume);
  train(c, *b2, resume);
  EXPECT_EQ(model_steps(dir / "part"), model_steps(dir / "whole"));
  EXPECT_EQ(read_evals(dir / "part").marked, read_evals(dir / "whole").marked);
}
