// Lion (src/optim/lion.h): the CPU reference against updates worked out by hand (the arithmetic
// is in the comments), the optimizer through the CPU backend, and training with it end to end
// (the loss falls; a resumed run equals an uninterrupted one bit for bit).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "cpu/cpu_backend.h"
#include "model/checkpoint.h"
#include "model/gpt2.h"
#include "optim/lion.h"
#include "optim/optimizer.h"
#include "train/checkpoints.h"
#include "train/trainer.h"

using namespace sgpt;
namespace fs = std::filesystem;

namespace {
// Float results of a handful of float operations: 1e-6 relative covers their rounding.
void expect_close(double got, double want) {
  EXPECT_NEAR(got, want, 1e-6 * std::max(1.0, std::fabs(want)));
}
}  // namespace

TEST(Lion, SignOfTheInterpolationNotOfTheMomentum) {
  // lr 0.1, wd 0.5, b1 0.9, b2 0.99. decay = 1 - 0.05 = 0.95: p = 1*0.95 = 0.95.
  // c = 0.9*0.5 + 0.1*(-2) = 0.25 > 0: p = 0.95 - 0.1 = 0.85.
  // m = 0.99*0.5 + 0.01*(-2) = 0.475.
  float p = 1.0f, m = 0.5f, g = -2.0f;
  cpu::lion_update(&p, &m, &g, 1, LionConsts::make(0.1, 0.9, 0.99, 0.5), /*decayed=*/true);
  expect_close(p, 0.85);
  expect_close(m, 0.475);
}

TEST(Lion, NegativeInterpolationStepsUp) {
  // No decay (tensor not decayed). c = 0.9*0.5 + 0.1*(-8) = -0.35 < 0: p = 1 + 0.1 = 1.1.
  // m = 0.98*0.5 + 0.02*(-8) = 0.33 (b2 0.98).
  float p = 1.0f, m = 0.5f, g = -8.0f;
  cpu::lion_update(&p, &m, &g, 1, LionConsts::make(0.1, 0.9, 0.98, 0.5), /*decayed=*/false);
  expect_close(p, 1.1);
  expect_close(m, 0.33);
}

TEST(Lion, ZeroInterpolationLeavesOnlyTheDecay) {
  // c = 0.5*2 + 0.5*(-2) = 0: sign 0, p = 4*(1 - 0.1*0.25) = 3.9; m = 0.5*2 + 0.5*(-2) = 0.
  float p = 4.0f, m = 2.0f, g = -2.0f;
  cpu::lion_update(&p, &m, &g, 1, LionConsts::make(0.1, 0.5, 0.5, 0.25), true);
  expect_close(p, 3.9);
  expect_close(m, 0.0);
}

TEST(Lion, EveryStepHasTheSameSizeWhateverTheGradientScale) {
  // Gradients 1e-6 and 1e6 with m = 0: both give |step| = lr = 0.01 (sign only).
  float p[2] = {0.0f, 0.0f}, m[2] = {0.0f, 0.0f}, g[2] = {1e-6f, -1e6f};
  cpu::lion_update(p, m, g, 2, LionConsts::make(0.01, 0.9, 0.99, 0.0), true);
  expect_close(p[0], -0.01);
  expect_close(p[1], 0.01);
}

TEST(Lion, NaNGradientPropagates) {
  float p = 1.0f, m = 0.0f, g = std::numeric_limits<float>::quiet_NaN();
  cpu::lion_update(&p, &m, &g, 1, LionConsts::make(0.1, 0.9, 0.99, 0.0), true);
  EXPECT_TRUE(std::isnan(p));
  EXPECT_TRUE(std::isnan(m));
}

TEST(Lion, RegisteredWithOneStateSlotAndNoEstimator) {
  const OptimizerKind& k = optimizer_kind("lion");
  EXPECT_EQ(k.slots, std::vector<std::string>{"m"});
  EXPECT_TRUE(k.estimator.empty());
  EXPECT_THROW(optimizer_kind("lions"), std::invalid_argument);
}

namespace {
ModelConfig tiny_model() {
  ModelConfig m;
  m.n_layer = 2;
  m.n_head = 2;
  m.n_embd = 16;
  m.block_size = 8;
  m.vocab_size = 40;
  m.padded_vocab_size = 64;
  m.bias = true;
  return m;
}
}  // namespace

TEST(Lion, BackendStepDecaysOnlyTheLinearWeights) {
  // Through the CPU backend: every element moves by exactly lr (plus decay where the tensor is
  // decayed) against the sign of b1*m + (1-b1)*g, here with m = 0: against sign(g).
  const ModelConfig mc = tiny_model();
  const ParamLayout L = ParamLayout::make(mc);
  std::vector<float> p(L.total), g(L.total);
  for (size_t i = 0; i < L.total; ++i) {
    p[i] = 0.5f;
    g[i] = (i % 3 == 0) ? 1.0f : -1.0f;
  }
  auto be = make_cpu_backend(mc, 1, mc.block_size, p);
  be->set("grad", g);
  OptimizerConfig oc;
  oc.name = "lion";
  oc.beta1 = 0.9;
  oc.beta2 = 0.99;
  oc.weight_decay = 1.0;
  be->optimizer_step(OptimizerStep{&oc, 0.125, 1, 0}, nullptr);
  std::vector<float> q, m;
  be->get("params", q);
  be->get("m", m);
  for (int t = 0; t < kNumParamTensors; ++t) {
    // decayed: 0.5*(1 - 0.125) = 0.4375, then -+0.125: 0.3125 or 0.5625; else 0.375 or 0.625.
    const bool dec = ParamLayout::decayed(t);
    for (size_t i = L.offset[t]; i < L.offset[t] + L.size[t]; ++i) {
      const double base = dec ? 0.4375 : 0.5;
      ASSERT_DOUBLE_EQ(q[i], g[i] > 0 ? base - 0.125 : base + 0.125) << "tensor " << t << " element " << i;
      ASSERT_NEAR(m[i], 0.01 * g[i], 1e-9);  // m = 0.99*0 + 0.01*g
    }
  }
}

namespace {
fs::path scratch(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("sgpt_lion_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// A token file in llm.c's format whose tokens follow a pattern a tiny model learns.
std::string pattern_tokens(const fs::path& dir, const char* name, size_t n, int seed) {
  std::vector<uint16_t> t(n);
  uint32_t x = static_cast<uint32_t>(seed) * 2654435761u;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    t[i] = static_cast<uint16_t>((i % 16 < 12) ? (i * 7 + i / 16) % 40 : (x >> 24) % 40);
  }
  int32_t header[256] = {20240520, 1, static_cast<int32_t>(n)};
  const std::string path = (dir / name).string();
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(header), sizeof header);
  f.write(reinterpret_cast<const char*>(t.data()), static_cast<std::streamsize>(t.size() * 2));
  return path;
}

Config lion_config(const std::string& train, const std::string& val, int64_t steps) {
  nlohmann::json j = {
      {"model", {{"n_layer", 2}, {"n_head", 2}, {"n_embd", 32}, {"block_size", 16}, {"vocab_size", 40}, {"bias", false}}},
      {"batch", {{"micro_batch_size", 8}, {"total_batch_tokens", 256}}},
      {"schedule", {{"warmup_iters", 10}, {"lr_decay_iters", 200}, {"max_steps", steps}}},
      {"eval", {{"every", 50}, {"batches", 2}}},
      {"checkpoint", {{"every", 20}, {"keep", 10}}},
      {"optimizer", {{"name", "lion"}, {"lr", 1e-3}, {"min_lr", 1e-4}, {"beta1", 0.95}, {"beta2", 0.98}, {"weight_decay", 0.3}}},
      {"data", {{"train", train}, {"val", val}, {"format", "llmc"}}},
      {"seed", 7}};
  Config c = config_from_json(j, "lion");
  c.validate();
  return c;
}

std::unique_ptr<Backend> fresh(const Config& c) {
  const ParamLayout L = ParamLayout::make(c.model);
  std::vector<float> p(L.total);
  init_params(p.data(), c.model, L, c.seed);
  return make_cpu_backend(c.model, c.batch.micro_batch_size, c.model.block_size, p);
}

std::vector<char> bytes_of(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
}  // namespace

TEST(Lion, TrainsAndResumesBitForBit) {
  const fs::path dir = scratch("train");
  const std::string tr = pattern_tokens(dir, "train.bin", 60000, 1);
  const std::string va = pattern_tokens(dir, "val.bin", 6000, 2);
  const Config c = lion_config(tr, va, 60);

  TrainOptions whole;
  whole.out_dir = (dir / "whole").string();
  whole.quiet = true;
  prepare_run_dir(c, whole);
  auto a = fresh(c);
  const TrainResult r = train(c, *a, whole);
  ASSERT_EQ(r.train_losses.size(), 60u);
  EXPECT_LT(r.train_losses.back(), 0.75 * r.train_losses.front())
      << "first " << r.train_losses.front() << " last " << r.train_losses.back();
  // The state file holds Lion's one slot.
  const TrainState st = read_state_file(state_path(whole.out_dir, 60));
  EXPECT_EQ(st.slot_names, std::vector<std::string>{"m"});

  // Stop at 40, resume to 60: the same model file.
  Config c40 = c;
  c40.schedule.max_steps = 40;
  TrainOptions part;
  part.out_dir = (dir / "part").string();
  part.quiet = true;
  prepare_run_dir(c40, part);
  auto b = fresh(c);
  train(c40, *b, part);
  TrainOptions resume = part;
  resume.resume = true;
  auto b2 = fresh(c);
  prepare_run_dir(c, resume);
  train(c, *b2, resume);
  EXPECT_EQ(bytes_of(model_path(whole.out_dir, 60)), bytes_of(model_path(part.out_dir, 60)));
  fs::remove_all(dir);
}
