// The executable's command line: bad inputs exit non-zero with a message naming the input; the
// CPU fallback of --device auto; nothing already written is overwritten.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "model/checkpoint.h"
#include "test_cli_helpers.h"
#include "test_corpus.h"
#include "test_model.h"
#include "test_scratch.h"

namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) { return sgpt_test::scratch_dir("cli", name); }

void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

// A tiny valid setup: shard + config.
fs::path tiny_setup(const std::string& name) {
  const fs::path d = scratch(name);
  sgpt_test::write_random_shard(d / "train.bin", 50, 5000, 1);
  write(d / "cfg.json", R"({"model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 50},
    "batch": {"micro_batch_size": 2, "total_batch_tokens": 16},
    "schedule": {"warmup_iters": 1, "lr_decay_iters": 3, "max_steps": 3},
    "optimizer": {"hessian_interval": 2},
    "eval": {"every": 0}, "data": {"train": ")" + (d / "train.bin").string() + R"("}})");
  return d;
}

// `sophiagpt train --config d/<config><options> --out-dir d/run`.
Exec train_in(const fs::path& d, const std::string& config, const std::string& options = "") {
  return run_cli("train --config " + (d / config).string() + options + " --out-dir " + (d / "run").string());
}

}  // namespace

TEST(Cli, HelpForEverySubcommand) {
  for (const char* sub : {"train", "eval", "sample", "tokenize", "prepare", "bench"}) {
    const Exec r = run_cli(std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0) << sub << ": " << r.out;
    EXPECT_TRUE(contains(r.out, "Usage")) << r.out;
  }
}

TEST(Cli, MissingConfigFile) {
  const Exec r = run_cli("train --config /nonexistent/cfg.json");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.out, "/nonexistent/cfg.json")) << r.out;
}

TEST(Cli, InvalidJson) {
  const fs::path d = scratch("badjson");
  write(d / "c.json", "{\"model\": {");
  const Exec r = train_in(d, "c.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.out, "not valid JSON")) << r.out;
  EXPECT_TRUE(contains(r.out, "c.json")) << r.out;
  EXPECT_FALSE(fs::exists(d / "run"));
}

TEST(Cli, UnknownKeyNamesThePath) {
  const fs::path d = scratch("unknown");
  write(d / "c.json", R"({"optimizer": {"rhoo": 0.1}})");
  const Exec r = train_in(d, "c.json");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.out, "optimizer.rhoo")) << r.out;
}

TEST(Cli, OutOfRangeOverride) {
  const fs::path d = tiny_setup("range");
  const Exec r = train_in(d, "cfg.json", " --set optimizer.rho=-1");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.out, "optimizer.rho")) << r.out;
  const Exec r2 = train_in(d, "cfg.json", " --set batch.total_batch_tokens=17");
  EXPECT_EQ(r2.code, 2);
  EXPECT_TRUE(contains(r2.out, "batch.total_batch_tokens")) << r2.out;
}

TEST(Cli, BadDeviceValue) {
  const Exec r = run_cli("train --device tpu");
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(contains(r.out, "device")) << r.out;
}

TEST(Cli, AutoFallsBackToCpuAndTrains) {
  const fs::path d = tiny_setup("auto");
  const Exec r = train_in(d, "cfg.json", " --device auto");
  EXPECT_EQ(r.code, 0) << r.out;
  // On a machine without a GPU the fallback is one line; with one, the GPU is used.
  EXPECT_TRUE(contains(r.out, "no usable GPU") || contains(r.out, "device: cuda")) << r.out;
  EXPECT_TRUE(fs::exists(d / "run" / "log.jsonl"));
  EXPECT_TRUE(fs::exists(d / "run" / "config.json"));
  EXPECT_TRUE(fs::exists(d / "run" / "model_00000003.bin"));
  // A second run into the same directory is refused and leaves the first intact.
  const auto size = fs::file_size(d / "run" / "log.jsonl");
  const Exec again = train_in(d, "cfg.json", " --device cpu");
  EXPECT_EQ(again.code, 2);
  EXPECT_TRUE(contains(again.out, "already holds a run")) << again.out;
  EXPECT_EQ(fs::file_size(d / "run" / "log.jsonl"), size);
  // Resume with more steps continues from the checkpoint.
  const Exec more = train_in(d, "cfg.json", " --set schedule.max_steps=5 --device cpu --resume");
  EXPECT_EQ(more.code, 0) << more.out;
  EXPECT_TRUE(fs::exists(d / "run" / "model_00000005.bin"));
  EXPECT_TRUE(fs::exists(d / "run" / "config.resume_00000003.json"));
  // Resuming again keeps the first resume's config file.
  const Exec again2 = train_in(d, "cfg.json", " --set schedule.max_steps=6 --device cpu --resume");
  EXPECT_EQ(again2.code, 0) << again2.out;
  EXPECT_TRUE(fs::exists(d / "run" / "config.resume_00000003.json"));
  EXPECT_TRUE(fs::exists(d / "run" / "config.resume_00000005.json"));
}

TEST(Cli, CudaWithoutGpuIsAnError) {
  const fs::path d = tiny_setup("cuda");
  const Exec r = train_in(d, "cfg.json", " --device cuda");
  if (contains(r.out, "device: cuda")) GTEST_SKIP() << "a GPU is usable here";
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "no GPU is usable")) << r.out;
}

TEST(Cli, MissingTrainingData) {
  const fs::path d = tiny_setup("nodata");
  const Exec r = train_in(d, "cfg.json", " --set data.train=/nonexistent/x_*.bin --device cpu");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "/nonexistent/x_*.bin")) << r.out;
}

TEST(Cli, InitFromMismatchedModelFile) {
  const fs::path d = tiny_setup("initfrom");
  const sgpt::ModelConfig other = sgpt_test::model_config(2, 2, 16, 8, 50, 128);  // the config has 1 layer
  const sgpt::ParamLayout L = sgpt::ParamLayout::make(other);
  std::vector<float> p(L.total, 0.01f);
  sgpt::write_model_file((d / "m.bin").string(), other, p);
  const Exec r = train_in(d, "cfg.json", " --init-from " + (d / "m.bin").string() + " --device cpu");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "n_layer")) << r.out;
  EXPECT_TRUE(contains(r.out, "m.bin")) << r.out;
}

TEST(Cli, EvalAndSampleOfATrainedRun) {
  const fs::path d = tiny_setup("evalsample");
  const std::string run_dir = (d / "run").string();
  // A validation file of its own (the same tokens: a file shared with data.train is refused).
  fs::copy_file(d / "train.bin", d / "val.bin");
  const Exec t = train_in(d, "cfg.json", " --set data.val=\"" + (d / "val.bin").string() +
                                        "\" --set eval.batches=2 --set eval.every=3 --device cpu -q");
  ASSERT_EQ(t.code, 0) << t.out;
  const Exec e = run_cli("eval --run " + run_dir + " --device cpu");
  EXPECT_EQ(e.code, 0) << e.out;
  // The newest checkpoint is step 3's: eval reproduces the val loss the run logged there (the same
  // batches and weights; printed to 6 decimals).
  double logged = -1;
  std::ifstream log(fs::path(run_dir) / "log.jsonl");
  for (std::string line; std::getline(log, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.at("type") == "eval" && j.at("step") == 3) logged = j.at("val_loss").get<double>();
  }
  ASSERT_GT(logged, 0) << "no eval record at step 3";
  double printed = -1;
  ASSERT_EQ(std::sscanf(e.out.c_str(), "val loss %lf", &printed), 1) << e.out;
  EXPECT_NEAR(printed, logged, 1e-6) << e.out;
  // The tiny model's vocabulary (50) cannot hold the prompt's GPT-2 ids: a clear error.
  const Exec s = run_cli("sample --run " + run_dir + " --prompt Hello --tokens 3 --vocab " SGPT_SOURCE_DIR "/data/cache/gpt2");
  EXPECT_EQ(s.code, 2) << s.out;
  EXPECT_TRUE(contains(s.out, "outside the model's vocabulary")) << s.out;
  const Exec none = run_cli("eval --run " + (d / "nothing").string());
  EXPECT_EQ(none.code, 2) << none.out;
  EXPECT_TRUE(contains(none.out, "nothing")) << none.out;
  const Exec step = run_cli("sample --run " + run_dir + " --step 7");
  EXPECT_EQ(step.code, 2) << step.out;
  EXPECT_TRUE(contains(step.out, "step 7")) << step.out;
}

// Every kind of bad config value named in the config reference: exit code 2 and the key path in
// the message, and no run directory created.
TEST(Cli, EveryBadConfigValueExitsWithTheKeyPath) {
  const fs::path d = tiny_setup("badvalues");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"optimizer.rho=-0.5", "optimizer.rho"},
      {"optimizer.beta1=1", "optimizer.beta1"},
      {"optimizer.beta2=-0.1", "optimizer.beta2"},
      {"optimizer.hessian_interval=0", "optimizer.hessian_interval"},
      {"optimizer.hessian_batch_fraction=0", "optimizer.hessian_batch_fraction"},
      {"optimizer.name=lamb", "optimizer.name"},
      {"model.n_head=3", "model.n_embd"},
      {"model.n_layer=\"two\"", "model.n_layer"},
      {"model.bias=2", "model.bias"},
      {"batch.total_batch_tokens=24", "batch.total_batch_tokens"},
      {"schedule.lr_decay_iters=0", "schedule.lr_decay_iters"},
      {"data.format=csv", "data.format"},
      {"optimizer.no_such_key=1", "optimizer.no_such_key"},
  };
  for (const auto& [set, key] : cases) {
    const Exec r = train_in(d, "cfg.json", " --set '" + set + "' --device cpu");
    EXPECT_EQ(r.code, 2) << set << ": " << r.out;
    EXPECT_TRUE(contains(r.out, key)) << set << ": " << r.out;
    EXPECT_FALSE(fs::exists(d / "run")) << set;
  }
}
