// Optimizer reference tests: every expected value below is worked out by hand from docs/design.md
// section 3 (the arithmetic is in the comments), not taken from the code under test.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "optim/optimizer.h"
#include "optim/update_rules.h"
#include "model/gpt2.h"

using namespace sgpt;

namespace {
// Float results of a handful of float operations: 1e-6 relative covers their rounding.
constexpr double kRel = 1e-6;
void expect_close(double got, double want) { EXPECT_NEAR(got, want, kRel * std::max(1.0, std::fabs(want))); }
}  // namespace

TEST(Sophia, ZeroHessianIsSignMomentum) {
  // lr 0.1, wd 0.2, b1 0.9, rho 0.05, bs 100. p = 1*(1-0.02) = 0.98; m = 0.1*0.5 = 0.05;
  // d = 0*5 + 1e-15; r = min(0.05/1e-15, 1) = 1; p = 0.98 - 0.1 = 0.88.
  float p = 1.0f, m = 0.0f, h = 0.0f, g = 0.5f;
  const SophiaConsts c = SophiaConsts::make(0.1, 0.9, 0.05, 100, 0.2);
  cpu::sophia_update(&p, &m, &h, &g, 1, c, /*decayed=*/true, nullptr);
  expect_close(p, 0.88);
  expect_close(m, 0.05);
}

TEST(Sophia, UnclippedRatio) {
  // lr 0.01, wd 0, b1 0.5, rho*bs = 0.1*100 = 10. m = 0.1*0.5 + 0.5*(-0.3) = -0.1;
  // d = 0.04*10 = 0.4; r = 0.1/0.4 = 0.25; p = 2 + (-0.01)(-1)(0.25) = 2.0025.
  float p = 2.0f, m = 0.1f, h = 0.04f, g = -0.3f;
  const SophiaConsts c = SophiaConsts::make(0.01, 0.5, 0.1, 100, 0.0);
  SophiaMetrics met;
  cpu::sophia_update(&p, &m, &h, &g, 1, c, true, &met);
  expect_close(p, 2.0025);
  expect_close(m, -0.1);
  // |m| = 0.1 < rho*bs*h = 0.4: unclipped, so the win rate is 1.
  EXPECT_EQ(met.count, 1);
  EXPECT_EQ(met.unclipped, 1);
  expect_close(met.h_l1, 0.04);
  expect_close(met.h_sq, 0.0016);
}

TEST(Sophia, NegativeHessianIsNotClampedAtZero) {
  // The official code adds 1e-15 (no max with 0): d = -0.4, r = 0.1/-0.4 = -0.25 (below 1, kept),
  // p = 2 + (-0.01)(-1)(-0.25) = 1.9975: the step goes against the momentum.
  float p = 2.0f, m = 0.1f, h = -0.04f, g = -0.3f;
  const SophiaConsts c = SophiaConsts::make(0.01, 0.5, 0.1, 100, 0.0);
  SophiaMetrics met;
  cpu::sophia_update(&p, &m, &h, &g, 1, c, true, &met);
  expect_close(p, 1.9975);
  EXPECT_EQ(met.unclipped, 0);  // 0.1 < -0.4 is false
}

TEST(Sophia, ClippedAtOne) {
  // m = 0.9*1 + 0.1*1 = 1; d = 1e-3*10 = 0.01; |m|/d = 100 -> 1; p = 0 - 0.5 = -0.5.
  float p = 0.0f, m = 1.0f, h = 1e-3f, g = 1.0f;
  const SophiaConsts c = SophiaConsts::make(0.5, 0.9, 0.1, 100, 0.0);
  cpu::sophia_update(&p, &m, &h, &g, 1, c, true, nullptr);
  expect_close(p, -0.5);
}

TEST(Sophia, NaNGradientPropagates) {
  float p[2] = {1.0f, 1.0f}, m[2] = {0.0f, 0.0f}, h[2] = {0.5f, 0.5f};
  float g[2] = {std::numeric_limits<float>::quiet_NaN(), 0.0f};
  const SophiaConsts c = SophiaConsts::make(0.1, 0.9, 0.05, 100, 0.0);
  cpu::sophia_update(p, m, h, g, 2, c, true, nullptr);
  EXPECT_TRUE(std::isnan(m[0]));
  EXPECT_TRUE(std::isnan(p[0]));  // never silently clamped to a finite step
  // Zero momentum: sign(0) = 0, no step.
  EXPECT_EQ(p[1], 1.0f);
  EXPECT_EQ(m[1], 0.0f);
}

TEST(Sophia, NaNHessianPropagates) {
  float p = 1.0f, m = 0.5f, h = std::numeric_limits<float>::quiet_NaN(), g = 0.5f;
  const SophiaConsts c = SophiaConsts::make(0.1, 0.9, 0.05, 100, 0.0);
  cpu::sophia_update(&p, &m, &h, &g, 1, c, true, nullptr);
  EXPECT_TRUE(std::isnan(p));
}

TEST(Sophia, DecayOnlyWhereMasked) {
  // Zero gradient, momentum and Hessian: only the decay can move p.
  float pd = 3.0f, pn = 3.0f, m1 = 0, m2 = 0, h = 0, g = 0;
  const SophiaConsts c = SophiaConsts::make(0.1, 0.9, 0.05, 100, 0.5);  // decay = 1 - 0.05 = 0.95
  cpu::sophia_update(&pd, &m1, &h, &g, 1, c, true, nullptr);
  cpu::sophia_update(&pn, &m2, &h, &g, 1, c, false, nullptr);
  expect_close(pd, 2.85);
  EXPECT_EQ(pn, 3.0f);
}

TEST(Sophia, DecayMaskIsTheLinearWeights) {
  for (int i = 0; i < kNumParamTensors; ++i) {
    const bool want = i == kQkvw || i == kAttprojw || i == kFcw || i == kFcprojw;
    EXPECT_EQ(ParamLayout::decayed(i), want) << param_tensor_name(i);
  }
}

TEST(Sophia, ConstantsAreComputedInDouble) {
  const SophiaConsts c = SophiaConsts::make(3e-4, 0.965, 0.03, 491520, 0.2);
  EXPECT_EQ(c.b1, 0.965f);
  EXPECT_EQ(c.one_minus_b1, static_cast<float>(1.0 - 0.965));
  EXPECT_EQ(c.decay, static_cast<float>(1.0 - 3e-4 * 0.2));
  EXPECT_EQ(c.rho_bs, static_cast<float>(0.03 * 491520.0));
  EXPECT_EQ(c.neg_lr, static_cast<float>(-3e-4));
}

TEST(HessianEma, Formula) {
  // h = 0.99*1 + 0.01*2*2 = 1.03 ; from zero: 0.01*9 = 0.09 ; a NaN gradient propagates.
  float h[3] = {1.0f, 0.0f, 1.0f};
  const float g[3] = {2.0f, -3.0f, std::numeric_limits<float>::quiet_NaN()};
  cpu::hessian_ema(h, g, 3, HessianConsts::make(0.99));
  expect_close(h[0], 1.03);
  expect_close(h[1], 0.09);
  EXPECT_TRUE(std::isnan(h[2]));
}

TEST(AdamW, FirstStepPyTorchSemantics) {
  // lr 0.1, b1 0.9, b2 0.95, eps 1e-8, wd 0.1, t = 1.
  // p = 1*(1-0.01) = 0.99; m = 0.1*0.5 = 0.05; v = 0.05*0.25 = 0.0125;
  // bc1 = 0.1, bc2 = 0.05; denom = sqrt(0.0125)/sqrt(0.05) + 1e-8 = 0.5 + 1e-8;
  // p = 0.99 - (0.1/0.1) * 0.05 / 0.50000001 = 0.890000002.
  float p = 1.0f, m = 0.0f, v = 0.0f, g = 0.5f;
  cpu::adamw_update(&p, &m, &v, &g, 1, AdamWConsts::make(0.1, 0.9, 0.95, 1e-8, 0.1, 1), true);
  expect_close(p, 0.890000002);
  expect_close(m, 0.05);
  expect_close(v, 0.0125);
}

TEST(AdamW, SecondStepBiasCorrection) {
  // Continue: g = -0.5 at t = 2, no decay (decayed = false).
  // m = 0.9*0.05 + 0.1*(-0.5) = -0.005; v = 0.95*0.0125 + 0.05*0.25 = 0.024375;
  // bc1 = 1-0.81 = 0.19; bc2 = 1-0.9025 = 0.0975; sqrt(v)/sqrt(bc2) = sqrt(0.25) = 0.5;
  // p = 0.890000002 - (0.1/0.19) * (-0.005) / (0.5+1e-8) = 0.890000002 + 0.005263157789 = 0.89526316.
  float p = 0.890000002f, m = 0.05f, v = 0.0125f, g = -0.5f;
  cpu::adamw_update(&p, &m, &v, &g, 1, AdamWConsts::make(0.1, 0.9, 0.95, 1e-8, 0.1, 2), false);
  expect_close(m, -0.005);
  expect_close(v, 0.024375);
  expect_close(p, 0.8952631598);
}

TEST(Clip, GlobalNorm) {
  const float g[4] = {3.0f, 0.0f, -4.0f, 0.0f};
  const double norm = std::sqrt(cpu::sum_squares(g, 4));
  EXPECT_DOUBLE_EQ(norm, 5.0);
  EXPECT_FLOAT_EQ(cpu::clip_scale(norm, 1.0), static_cast<float>(1.0 / (5.0 + 1e-6)));
  EXPECT_EQ(cpu::clip_scale(norm, 10.0), 1.0f);  // below the threshold: unchanged
  EXPECT_EQ(cpu::clip_scale(norm, 0.0), 1.0f);   // 0 disables clipping
}

TEST(Schedule, WarmupCosineFloor) {
  const double lr = 6e-4, mn = 6e-5;
  EXPECT_DOUBLE_EQ(lr_at(0, lr, mn, 100, 1100), 0.0);
  EXPECT_DOUBLE_EQ(lr_at(50, lr, mn, 100, 1100), 3e-4);
  EXPECT_DOUBLE_EQ(lr_at(100, lr, mn, 100, 1100), lr);
  EXPECT_NEAR(lr_at(600, lr, mn, 100, 1100), (lr + mn) / 2, 1e-15);  // cos(pi/2) = 0
  EXPECT_NEAR(lr_at(1100, lr, mn, 100, 1100), mn, 1e-15);
  EXPECT_DOUBLE_EQ(lr_at(5000, lr, mn, 100, 1100), mn);
  // Monotone non-increasing after warmup.
  for (int s = 100; s < 1200; ++s) EXPECT_LE(lr_at(s + 1, lr, mn, 100, 1100), lr_at(s, lr, mn, 100, 1100) + 1e-18);
}

// Sophia's optional bias correction of h (optimizer.hessian_bias_correction). beta2 0.99, k 10:
// the estimator has run n = floor((t-1)/10) times before update t, and h is divided by
// 1 - 0.99^n: n = 1 gives 1/0.01 = 100, n = 2 gives 1/(1 - 0.9801) = 1/0.0199 = 50.2512562814...
TEST(HessianBiasCorrection, FactorCountsThePassesBeforeTheUpdate) {
  OptimizerConfig o;
  o.beta2 = 0.99;
  o.hessian_interval = 10;
  o.hessian_bias_correction = true;
  const auto factor = [&](int64_t t) { return hessian_correction(OptimizerStep{&o, 1e-3, t, 100}); };
  EXPECT_EQ(factor(1), 1.0);   // n = 0: h is still 0, nothing to correct
  EXPECT_EQ(factor(10), 1.0);  // update 10 (step 9) comes before the first pass
  EXPECT_NEAR(factor(11), 100.0, 1e-9);
  EXPECT_NEAR(factor(20), 100.0, 1e-9);
  EXPECT_NEAR(factor(21), 50.25125628140704, 1e-9);
  o.hessian_bias_correction = false;
  EXPECT_EQ(factor(21), 1.0);
}

// The CPU Sophia-G and Sophia-H with the correction on are their rules with rho (gamma) times the
// factor: at t = 11 (n = 1, factor 100) rho 0.05 acts as rho 5.
TEST(HessianBiasCorrection, UpdatesReadTheCorrectedH) {
  OptimizerConfig o;
  o.beta1 = 0.9;
  o.beta2 = 0.99;
  o.rho = 0.05;
  o.eps = 1e-12;
  o.weight_decay = 0.0;
  o.hessian_interval = 10;
  o.hessian_bias_correction = true;
  const OptimizerStep s{&o, 0.1, 11, 100};
  // Sophia-G, bs 100: d = h*rho*bs*100 + 1e-15 = 0.001*500 = 0.5; m = 0.1*1 = 0.1; r = 0.2;
  // p = 1 - 0.1*0.2 = 0.98 (uncorrected: d = 0.005, r = min(20, 1) = 1, p = 0.9).
  {
    float p = 1.0f, m = 0.0f, h = 0.001f, g = 1.0f;
    float* state[2] = {&m, &h};
    make_cpu_optimizer("sophiag")->update(s, &p, state, &g, 1, false, nullptr);
    expect_close(p, 0.98);
  }
  // Sophia-H, h 0.1: d = max(gamma*100*h, eps) = 5*0.1 = 0.5; m = 0.1; r = 0.2; p = 0.98
  // (uncorrected: d = 0.005, r = min(20, 1) = 1, p = 0.9).
  {
    float p = 1.0f, m = 0.0f, h = 0.1f, g = 1.0f;
    float* state[2] = {&m, &h};
    make_cpu_optimizer("sophiah")->update(s, &p, state, &g, 1, false, nullptr);
    expect_close(p, 0.98);
  }
}
