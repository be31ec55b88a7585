// Lion (src/optim/lion.h): the CPU reference against updates worked out by hand (the arithmetic
// is in the comments), the optimizer through the CPU backend, and training with it end to end
// (the loss falls; a resumed run equals an uninterrupted one bit for bit).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "cpu/cpu_backend.h"
#include "model/checkpoint.h"
#include "model/gpt2.h"
#include "optim/lion.h"
#include "optim/optimizer.h"
#include "test_corpus.h"
#include "test_model.h"
#include "test_scratch.h"
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

TEST(Lion, BackendStepDecaysOnlyTheLinearWeights) {
  // Through the CPU backend: every element moves by exactly lr (plus decay where the tensor is
  // decayed) against the sign of b1*m + (1-b1)*g, here with m = 0: against sign(g).
  const ModelConfig mc = sgpt_test::model_config(2, 2, 16, 8, 40, 64, /*bias=*/true);
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
Config lion_config(const std::string& train, const std::string& val, int64_t steps) {
  return sgpt_test::validated_config(
      {{"model", {{"n_layer", 2}, {"n_head", 2}, {"n_embd", 32}, {"block_size", 16}, {"vocab_size", 40}, {"bias", false}}},
       {"batch", {{"micro_batch_size", 8}, {"total_batch_tokens", 256}}},
       {"schedule", {{"warmup_iters", 10}, {"lr_decay_iters", 200}, {"max_steps", steps}}},
       {"eval", {{"every", 50}, {"batches", 2}}},
       {"checkpoint", {{"every", 20}, {"keep", 10}}},
       {"optimizer", {{"name", "lion"}, {"lr", 1e-3}, {"min_lr", 1e-4}, {"beta1", 0.95}, {"beta2", 0.98}, {"weight_decay", 0.3}}},
       {"data", {{"train", train}, {"val", val}, {"format", "llmc"}}},
       {"seed", 7}},
      "lion");
}
}  // namespace

TEST(Lion, TrainsAndResumesBitForBit) {
  const fs::path dir = sgpt_test::scratch_dir("lion", "train");
  const std::string tr = sgpt_test::write_pattern_shard(dir / "train.bin", 40, 60000, 1);
  const std::string va = sgpt_test::write_pattern_shard(dir / "val.bin", 40, 6000, 2);
  const Config c = lion_config(tr, va, 60);
  EXPECT_TRUE(sgpt_test::resumed_run_equals_whole(c, 40, dir, [&](const TrainResult& r, const std::string& run) {
    ASSERT_EQ(r.train_losses.size(), 60u);
    EXPECT_LT(r.train_losses.back(), 0.75 * r.train_losses.front())
        << "first " << r.train_losses.front() << " last " << r.train_losses.back();
    // The state file holds Lion's one slot.
    EXPECT_EQ(read_state_file(state_path(run, 60)).slot_names, std::vector<std::string>{"m"});
  }));
}
