// The training log (log.jsonl) and console line: the machine record, tokens/s, ETA and MFU
// (src/eval/mfu.h), and the config keys behind them.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "common/error.h"
#include "data/loader.h"
#include "eval/mfu.h"
#include "model/checkpoint.h"
#include "cpu/cpu_backend.h"
#include "train/trainer.h"
#include "test_cli_helpers.h"
#include "test_corpus.h"
#include "test_model.h"
#include "test_scratch.h"

using namespace sgpt;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path scratch(const std::string& name) { return sgpt_test::scratch_dir("log", name); }

std::vector<json> read_log(const fs::path& run) {
  std::vector<json> v;
  std::ifstream f(run / "log.jsonl");
  std::string line;
  while (std::getline(f, line)) v.push_back(json::parse(line));
  return v;
}

std::string write_shard(const fs::path& d, int V) {
  return sgpt_test::write_random_shard(d / "train.bin", V, 20000, 3);
}

Config small_config(const std::string& train, int64_t steps) {
  json j = json::parse(R"({
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "vocab_size": 64},
    "batch": {"micro_batch_size": 4, "total_batch_tokens": 64},
    "optimizer": {"hessian_interval": 3},
    "eval": {"every": 0}, "checkpoint": {"every": 0}
  })");
  j["data"] = {{"train", train}};
  j["schedule"] = {{"warmup_iters", 1}, {"lr_decay_iters", steps}, {"max_steps", steps}};
  return sgpt_test::validated_config(j, "test");
}

std::vector<json> train_and_read(const Config& c, const fs::path& d) {
  auto be = sgpt_test::fresh_cpu_backend(c);
  sgpt_test::train_new_run(c, *be, d / "run");
  return read_log(d / "run");
}

}  // namespace

TEST(Log, MachineRecordFirstThenTokensPerSecondAndEtaAndNoMfuOnTheCpu) {
  const fs::path d = scratch("fields");
  const Config c = small_config(write_shard(d, 64), 30);
  const std::vector<json> log = train_and_read(c, d);
  ASSERT_FALSE(log.empty());
  const json& m = log.front();
  EXPECT_EQ(m.at("type"), "machine");
  EXPECT_EQ(m.at("step"), -1);  // precedes the steps: readers keyed by step skip it
  EXPECT_EQ(m.at("start_step"), 0);
  EXPECT_EQ(m.at("device"), "cpu");
  EXPECT_GE(m.at("threads").get<int>(), 1);
  EXPECT_EQ(m.at("world"), 1);
  EXPECT_EQ(m.at("backend"), "cpu");
  EXPECT_EQ(m.at("precision"), "fp32");
  EXPECT_FALSE(m.at("commit").get<std::string>().empty());
  {  // this process's command line, its arguments joined by spaces
    std::ifstream f("/proc/self/cmdline", std::ios::binary);
    std::string argv0;
    std::getline(f, argv0, '\0');
    EXPECT_EQ(m.at("command_line").get<std::string>().rfind(argv0, 0), 0u) << m.dump();
  }
  const ParamLayout L = ParamLayout::make(c.model);
  EXPECT_DOUBLE_EQ(m.at("flops_per_token").get<double>(), 6.0 * L.total + 12.0 * 1 * 16 * 16);
  EXPECT_FALSE(m.contains("peak_tflops"));

  std::vector<json> tr;
  for (const json& r : log)
    if (r.at("type") == "train") tr.push_back(r);
  ASSERT_EQ(tr.size(), 30u);
  std::vector<double> ms;
  for (const json& r : tr) {
    EXPECT_FALSE(r.contains("mfu")) << r.dump();  // unknown peak: omitted, not 0
    EXPECT_GT(r.at("tokens_per_s").get<double>(), 0);
    EXPECT_NEAR(r.at("tokens_per_s").get<double>() * r.at("ms").get<double>() / 1e3, 64.0, 1e-6);
    // ETA = remaining steps x the mean of the last (up to) 20 step times.
    ms.push_back(r.at("ms").get<double>());
    const size_t n = std::min<size_t>(ms.size(), 20);
    double mean = 0;
    for (size_t i = ms.size() - n; i < ms.size(); ++i) mean += ms[i];
    mean /= static_cast<double>(n) * 1e3;
    const int64_t step = r.at("step").get<int64_t>();
    EXPECT_NEAR(r.at("eta_s").get<double>(), mean * static_cast<double>(30 - step - 1), 1e-9 + 1e-9 * mean * 30);
  }
  EXPECT_EQ(tr.back().at("eta_s").get<double>(), 0.0);
  // 29 steps left against 1: the step times would have to grow 29-fold to reverse it (sub-ms
  // steps on a shared machine are too noisy for a finer comparison; the formula is checked above).
  EXPECT_GT(tr[0].at("eta_s").get<double>(), tr[28].at("eta_s").get<double>());
}

TEST(Log, MfuWithAGivenPeak) {
  const fs::path d = scratch("mfu");
  Config c = small_config(write_shard(d, 64), 4);
  c.log.peak_tflops = 2e-3;  // 2 GFLOP/s: a peak the tiny CPU model can be measured against
  const std::vector<json> log = train_and_read(c, d);
  const json& m = log.front();
  ASSERT_EQ(m.at("type"), "machine");
  EXPECT_EQ(m.at("peak_tflops").get<double>(), 2e-3);
  const double fpt = m.at("flops_per_token").get<double>();
  int n = 0;
  for (const json& r : log) {
    if (r.at("type") != "train") continue;
    ++n;
    ASSERT_TRUE(r.contains("mfu")) << r.dump();
    EXPECT_NEAR(r.at("mfu").get<double>(), fpt * r.at("tokens_per_s").get<double>() / 2e9, 1e-9);
  }
  EXPECT_EQ(n, 4);
}

TEST(Log, PeakTflopsDetectionAndFormula) {
  EXPECT_EQ(detect_peak_tflops("NVIDIA H100 80GB HBM3", "bf16"), 989);
  EXPECT_EQ(detect_peak_tflops("NVIDIA H100 PCIe", "bf16"), 756);
  EXPECT_EQ(detect_peak_tflops("NVIDIA H200", "bf16"), 989);
  EXPECT_EQ(detect_peak_tflops("NVIDIA A100-SXM4-80GB", "bf16"), 312);
  EXPECT_EQ(detect_peak_tflops("NVIDIA A100 80GB PCIe", "bf16"), 312);
  EXPECT_EQ(detect_peak_tflops("NVIDIA H100 80GB HBM3", "fp32"), 67);
  EXPECT_EQ(detect_peak_tflops("NVIDIA A100-SXM4-40GB", "fp32"), 19.5);
  EXPECT_EQ(detect_peak_tflops("NVIDIA H100 NVL", "bf16"), 0);
  EXPECT_EQ(detect_peak_tflops("NVIDIA GeForce RTX 4090", "bf16"), 0);
  EXPECT_EQ(detect_peak_tflops("cpu", "fp32"), 0);
  EXPECT_EQ(detect_peak_tflops("", "bf16"), 0);
  // GPT-2 124M at T = 1024: 6 x 124.4M + 12 x 12 x 768 x 1024 FLOPs per token.
  ModelConfig m;  // 12 layers, 768 wide, block 1024, vocab 50257 (padded 50304), no biases
  m.padded_vocab_size = pad_vocab(m.vocab_size);
  const size_t n = ParamLayout::make(m).total;
  EXPECT_DOUBLE_EQ(training_flops_per_token(m, n, 1024), 6.0 * n + 12.0 * 12 * 768 * 1024);
  EXPECT_DOUBLE_EQ(mfu(100.0, 1e10, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(mfu(100.0, 1e10, 1.0, 4), 0.25);  // all ranks' tokens over all devices' peak
  EXPECT_LT(mfu(100.0, 1e10, 0.0), 0);
}

TEST(Log, ConfigKeysAreValidated) {
  const fs::path d = scratch("keys");
  const Config base = small_config(write_shard(d, 64), 4);
  auto with = [&](const std::string& key, const json& v) {
    json j = config_to_json(base);
    const auto dot = key.find('.');
    j[key.substr(0, dot)][key.substr(dot + 1)] = v;
    return error_of([&] { config_from_json(j, "cfg.json").validate(); });
  };
  EXPECT_TRUE(contains(with("log.peak_tflops", -1.0), "log.peak_tflops")) << with("log.peak_tflops", -1.0);
  EXPECT_TRUE(contains(with("log.peak_tflops", "fast"), "log.peak_tflops"));
  EXPECT_EQ(with("log.peak_tflops", 989.0), "");
  EXPECT_TRUE(contains(with("eval.hellaswag_every", -3), "eval.hellaswag_every"));
  EXPECT_TRUE(contains(with("eval.hellaswag_every", 1.5), "eval.hellaswag_every"));
  EXPECT_TRUE(contains(with("eval.hellaswag_every", 100), "eval.hellaswag_file"));
  EXPECT_TRUE(contains(with("eval.hellaswag_file", 3), "eval.hellaswag_file"));
  // The defaults: HellaSwag off, peak detected.
  EXPECT_EQ(base.eval.hellaswag_every, 0);
  EXPECT_EQ(base.log.peak_tflops, 0);
  // Round trip through the resolved config (config.json of a run).
  Config c = base;
  c.log.peak_tflops = 756;
  c.eval.hellaswag_every = 50;
  c.eval.hellaswag_file = "hs.jsonl";
  const Config back = config_from_json(config_to_json(c), "x");
  EXPECT_EQ(back.log.peak_tflops, 756);
  EXPECT_EQ(back.eval.hellaswag_every, 50);
  EXPECT_EQ(back.eval.hellaswag_file, "hs.jsonl");
}

TEST(Log, ConsoleLinesAndTheInfoCommand) {
  const fs::path d = scratch("console");
  const Config c = small_config(write_shard(d, 64), 3);
  std::ofstream(d / "cfg.json") << config_to_json(c).dump();
  const Exec r = run_cli("train --device cpu --config " + (d / "cfg.json").string() + " --set log.every=1 --out-dir " +
                         (d / "run").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "machine: device cpu, threads ")) << r.out;
  EXPECT_TRUE(contains(r.out, "MFU not reported")) << r.out;
  EXPECT_TRUE(contains(r.out, "tok/s | ETA")) << r.out;
  EXPECT_FALSE(contains(r.out, "tok/s | MFU")) << r.out;
  const Exec p = run_cli("train --device cpu --config " + (d / "cfg.json").string() +
                         " --set log.every=1 --set log.peak_tflops=0.001 --out-dir " + (d / "run2").string());
  ASSERT_EQ(p.code, 0) << p.out;
  EXPECT_TRUE(contains(p.out, "tok/s | MFU ")) << p.out;
  const Exec bad = run_cli("train --device cpu --config " + (d / "cfg.json").string() +
                           " --set log.peak_tflops=-5 --out-dir " + (d / "run3").string());
  EXPECT_EQ(bad.code, 2) << bad.out;
  EXPECT_TRUE(contains(bad.out, "log.peak_tflops")) << bad.out;

  const Exec info = run_cli("info");
  EXPECT_EQ(info.code, 0) << info.out;
  EXPECT_TRUE(contains(info.out, "gpu: ")) << info.out;
  const Exec usable = run_cli("info --gpu-usable");
  EXPECT_EQ(usable.code, contains(info.out, "gpu: usable") ? 0 : 1) << usable.out;
}
