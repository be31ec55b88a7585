// Sophia-H on the CPU: the exact Hessian-vector product (cpu/hvp.h), the Hutchinson estimator,
// the update rule (src/optim/sophiah.h) and training with it end to end.
//
// Tolerances and why:
//  - H u against central differences of the gradient, (g(p + h u) - g(p - h u)) / 2h, in double
//    with h = 1e-5: truncation ~ h^2 |third derivative along u| / 6, measured 2e-6 of max |H u| at
//    h = 1e-4 on this strongly non-linear model and 100 times less at 1e-5 (the test checks that
//    O(h^2) fall too); rounding ~ 1e-16 |g| / h ~ 1e-11. A dropped second-order term of any op
//    moves H u by O(1) relative. Bound: 2e-7 of max |H u|.
//  - The Hessian formed column by column (H e_i) is symmetric to 1e-11 of its largest entry (each
//    entry is one double forward-over-reverse; a missing term breaks symmetry at O(1)), and H u
//    for a random u equals the formed H times u to 1e-10 relative (linearity).
//  - The estimator's mean of u * (H u) over K probes against diag(H): each entry within 5
//    standard errors, sigma_i^2 = (E[u^4] - 1) H_ii^2 + sum_{j != i} H_ij^2, over K (E[u^4] = 1 for
//    Rademacher, 3 for Gaussian probes); the fixed seeds make the test deterministic.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/philox.h"
#include "config/config.h"
#include "cpu/gpt2_cpu.h"
#include "cpu/hvp.h"
#include "model/gpt2.h"
#include "optim/optimizer.h"
#include "optim/sophiah.h"
#include "train/checkpoints.h"
#include "cpu/cpu_backend.h"
#include "train/trainer.h"
#include "test_corpus.h"
#include "test_model.h"
#include "test_scratch.h"

using namespace sgpt;
namespace fs = std::filesystem;

namespace {

// A model small enough to form its Hessian: 1 layer, width 4, vocabulary 6 (8 rows), T = 4.
ModelConfig micro_model(bool bias) { return sgpt_test::model_config(1, 2, 4, 4, 6, 8, bias, /*scale_attn=*/false); }

struct Problem {
  ModelConfig cfg;
  size_t n = 0;
  std::vector<double> params;
  std::vector<int> inp, tgt;
  int B = 2;
};

Problem make_problem(const ModelConfig& cfg, uint64_t seed) {
  Problem p;
  p.cfg = cfg;
  const ParamLayout L = ParamLayout::make(cfg);
  p.n = L.total;
  std::vector<float> f(L.total);
  init_params(f.data(), cfg, L, seed);
  // Larger weights than at initialisation, so that every op is well away from linear.
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 0.3);
  p.params.resize(L.total);
  for (size_t i = 0; i < L.total; ++i) p.params[i] = f[i] + nd(rng);
  std::uniform_int_distribution<int> tok(0, cfg.vocab_size - 1);
  p.inp.resize(static_cast<size_t>(p.B) * cfg.block_size);
  p.tgt.resize(p.inp.size());
  for (auto& t : p.inp) t = tok(rng);
  for (auto& t : p.tgt) t = tok(rng);
  return p;
}

std::vector<double> gradient(const Problem& p, const std::vector<double>& params) {
  cpu::Gpt2<double> m(p.cfg, p.B, p.cfg.block_size);
  std::vector<double> g(p.n, 0.0);
  m.forward(params.data(), p.inp.data(), p.tgt.data(), p.B);
  m.backward(params.data(), g.data(), 1.0);
  return g;
}

std::vector<double> hvp(const Problem& p, const std::vector<double>& u) {
  cpu::HessianVectorProduct<double> h(p.cfg, p.B, p.cfg.block_size);
  std::vector<double> hu(p.n, 0.0);
  h.accumulate(p.params.data(), u.data(), p.inp.data(), p.tgt.data(), p.B, 1.0, hu.data());
  return hu;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

}  // namespace

TEST(SophiaH, HessianVectorProductMatchesCentralDifferences) {
  for (bool bias : {false, true}) {
    SCOPED_TRACE(bias ? "with biases" : "without biases");
    ModelConfig cfg = micro_model(bias);
    cfg.n_layer = 2;  // two layers: the residual stream carries second-order terms across them
    cfg.n_embd = 8;
    cfg.scale_attn_by_inverse_layer_idx = true;
    const Problem p = make_problem(cfg, 11);
    std::mt19937_64 rng(3);
    std::normal_distribution<double> nd(0.0, 1.0);
    std::vector<double> u(p.n);
    for (double& x : u) x = nd(rng);
    const std::vector<double> hu = hvp(p, u);
    // The central difference's error is truncation, O(h^2): at h = 1e-4 it was 2e-6 of max |Hu|
    // and falls 100-fold at h = 1e-5, where rounding (~1e-16 |g| / h) is still far below.
    auto fd_error = [&](double h) {
      std::vector<double> plus = p.params, minus = p.params;
      for (size_t i = 0; i < p.n; ++i) plus[i] += h * u[i], minus[i] -= h * u[i];
      const std::vector<double> gp = gradient(p, plus), gm = gradient(p, minus);
      double err = 0;
      for (size_t i = 0; i < p.n; ++i) err = std::max(err, std::fabs(hu[i] - (gp[i] - gm[i]) / (2 * h)));
      return err;
    };
    const double scale = max_abs(hu);
    ASSERT_GT(scale, 1e-3);
    const double e4 = fd_error(1e-4), e5 = fd_error(1e-5);
    std::printf("max |Hu - FD| / max |Hu|: h=1e-4 %.3g, h=1e-5 %.3g\n", e4 / scale, e5 / scale);
    EXPECT_LT(e5, 2e-7 * scale) << "max |Hu - FD| = " << e5 << " of max |Hu| = " << scale;
    EXPECT_GT(e4, 30 * e5) << "the difference to the exact product should be O(h^2) truncation";
  }
}

TEST(SophiaH, FormedHessianIsSymmetricAndTheEstimatorMeanIsItsDiagonal) {
  const Problem p = make_problem(micro_model(true), 5);
  const size_t n = p.n;
  // H column by column.
  std::vector<double> H(n * n), e(n, 0.0);
  for (size_t j = 0; j < n; ++j) {
    e[j] = 1.0;
    const std::vector<double> col = hvp(p, e);
    e[j] = 0.0;
    for (size_t i = 0; i < n; ++i) H[i * n + j] = col[i];
  }
  const double hmax = max_abs(H);
  ASSERT_GT(hmax, 1e-3);
  double asym = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < i; ++j) asym = std::max(asym, std::fabs(H[i * n + j] - H[j * n + i]));
  EXPECT_LT(asym, 1e-11 * hmax) << "max |H - H^T| = " << asym << " of max |H| = " << hmax;

  // Linearity: the product for a random u equals the formed H times u.
  std::vector<double> u(n);
  for (size_t i = 0; i < n; ++i) u[i] = hutchinson_probe(9, 1, i, false);
  const std::vector<double> hu = hvp(p, u);
  double lin = 0;
  for (size_t i = 0; i < n; ++i) {
    double s = 0;
    for (size_t j = 0; j < n; ++j) s += H[i * n + j] * u[j];
    lin = std::max(lin, std::fabs(s - hu[i]));
  }
  EXPECT_LT(lin, 1e-10 * max_abs(hu));

  // The estimator: mean over K probes of u * (H u) against diag(H), both probe distributions,
  // with the probes the trainer draws (hutchinson_probe, one step per probe).
  const int K = 20000;
  for (bool rademacher : {true, false}) {
    SCOPED_TRACE(rademacher ? "Rademacher" : "Gaussian");
    std::vector<double> mean(n, 0.0), v(n);
    for (int k = 0; k < K; ++k) {
      for (size_t i = 0; i < n; ++i) v[i] = hutchinson_probe(1234, static_cast<uint32_t>(k), i, rademacher);
      for (size_t i = 0; i < n; ++i) {
        double s = 0;
        for (size_t j = 0; j < n; ++j) s += H[i * n + j] * v[j];
        mean[i] += v[i] * s / K;
      }
    }
    const double kurtosis_minus_1 = rademacher ? 0.0 : 2.0;
    int outside = 0;
    for (size_t i = 0; i < n; ++i) {
      double off = 0;
      for (size_t j = 0; j < n; ++j)
        if (j != i) off += H[i * n + j] * H[i * n + j];
      const double hii = H[i * n + i];
      const double sigma = std::sqrt((kurtosis_minus_1 * hii * hii + off) / K);
      if (std::fabs(mean[i] - hii) > 5 * sigma + 1e-12) {
        ++outside;
        ADD_FAILURE() << "entry " << i << ": mean " << mean[i] << " vs H_ii " << hii << " (sigma " << sigma << ")";
      }
    }
    EXPECT_EQ(outside, 0);
  }
}

TEST(SophiaH, ProbesAreUnitVarianceAndTheSameForAnyShard) {
  const int n = 400000;
  double s1 = 0, s2 = 0;
  for (int i = 0; i < n; ++i) {
    const double x = hutchinson_probe(77, 3, static_cast<uint64_t>(i), false);
    s1 += x;
    s2 += x * x;
    const float r = hutchinson_probe(77, 3, static_cast<uint64_t>(i), true);
    ASSERT_TRUE(r == 1.0f || r == -1.0f);
  }
  // Mean 0 and variance 1 within 5 standard errors (sd of the mean 1/sqrt(n), of the variance
  // sqrt(2/n)).
  EXPECT_NEAR(s1 / n, 0.0, 5.0 / std::sqrt(n));
  EXPECT_NEAR(s2 / n, 1.0, 5.0 * std::sqrt(2.0 / n));
  // Keyed by the global index and the step only.
  EXPECT_EQ(hutchinson_probe(77, 3, 123456789012ull, false), hutchinson_probe(77, 3, 123456789012ull, false));
  EXPECT_NE(hutchinson_probe(77, 3, 5, false), hutchinson_probe(77, 4, 5, false));
}

TEST(SophiaH, UpdateRuleByHand) {
  // lr 0.1, b1 0.5, gamma 0.5, eps 1e-12, wd 0.
  const SophiaHConsts c = SophiaHConsts::make(0.1, 0.5, 0.5, 1e-12, 0.0);
  {  // m = 0.5*0.2 + 0.5*0.2 = 0.2; d = 0.5*0.8 = 0.4; r = 0.5; p = 1 - 0.05 = 0.95: unclipped.
    float p = 1.0f, m = 0.2f, h = 0.8f, g = 0.2f;
    SophiaMetrics met;
    cpu::sophiah_update(&p, &m, &h, &g, 1, c, true, &met);
    EXPECT_NEAR(p, 0.95, 1e-7);
    EXPECT_NEAR(m, 0.2, 1e-7);
    EXPECT_EQ(met.unclipped, 1);
    EXPECT_EQ(met.h_negative, 0);
  }
  {  // h negative: d = max(-0.4, 1e-12) = 1e-12; r = -0.2/1e-12 clipped to -1; p = 1 + 0.1 = 1.1
     // (the step follows -m, never reversed by the sign of h).
    float p = 1.0f, m = -0.2f, h = -0.8f, g = -0.2f;
    SophiaMetrics met;
    cpu::sophiah_update(&p, &m, &h, &g, 1, c, true, &met);
    EXPECT_NEAR(p, 1.1, 1e-7);
    EXPECT_EQ(met.unclipped, 0);
    EXPECT_EQ(met.h_negative, 1);
  }
  {  // decay 1 - 0.1*0.5 = 0.95 on a decayed tensor only; large h: r = 0.2/(0.5*100) = 0.004.
    const SophiaHConsts cd = SophiaHConsts::make(0.1, 0.5, 0.5, 1e-12, 0.5);
    float p[2] = {2.0f, 2.0f}, m[2] = {0.2f, 0.2f}, h[2] = {100.0f, 100.0f}, g[2] = {0.2f, 0.2f};
    cpu::sophiah_update(p, m, h, g, 1, cd, true, nullptr);
    cpu::sophiah_update(p + 1, m + 1, h + 1, g + 1, 1, cd, false, nullptr);
    EXPECT_NEAR(p[0], 2.0 * 0.95 - 0.1 * 0.004, 1e-6);
    EXPECT_NEAR(p[1], 2.0 - 0.1 * 0.004, 1e-6);
  }
  {  // NaN h propagates into p (the divergence guard's business), as in Sophia-G.
    float p = 1.0f, m = 0.2f, h = std::nanf(""), g = 0.2f;
    cpu::sophiah_update(&p, &m, &h, &g, 1, c, true, nullptr);
    EXPECT_TRUE(std::isnan(p));
  }
}

namespace {
Config sophiah_config(const std::string& train, const std::string& val, int64_t steps) {
  nlohmann::json j = {
      {"model", {{"n_layer", 2}, {"n_head", 2}, {"n_embd", 32}, {"block_size", 16}, {"vocab_size", 40}, {"bias", false},
                 {"scale_attn_by_inverse_layer_idx", false}}},
      {"batch", {{"micro_batch_size", 8}, {"total_batch_tokens", 256}}},
      {"schedule", {{"warmup_iters", 10}, {"lr_decay_iters", 200}, {"max_steps", steps}}},
      {"eval", {{"every", 50}, {"batches", 2}}},
      {"checkpoint", {{"every", 20}, {"keep", 10}}},
      {"optimizer", {{"name", "sophiah"}, {"lr", 3e-3}, {"min_lr", 3e-4}, {"beta1", 0.96}, {"beta2", 0.99},
                     {"rho", 0.01}, {"eps", 1e-12}, {"weight_decay", 0.1}, {"hessian_interval", 5},
                     {"hessian_batch_fraction", 0.25}}},
      {"data", {{"train", train}, {"val", val}, {"format", "llmc"}}},
      {"seed", 7}};
  return sgpt_test::validated_config(j, "sophiah");
}

}  // namespace

TEST(SophiaH, TrainsLogsItsPassesAndResumesBitForBit) {
  const fs::path dir = sgpt_test::scratch_dir("sophiah", "train");
  const std::string tr = sgpt_test::write_pattern_shard(dir / "train.bin", 40, 60000, 1);
  const std::string va = sgpt_test::write_pattern_shard(dir / "val.bin", 40, 6000, 2);
  const Config c = sophiah_config(tr, va, 40);
  // Stopped at 22, between two passes (19 had one, 24 will), then resumed.
  EXPECT_TRUE(sgpt_test::resumed_run_equals_whole(c, 22, dir, [&](const TrainResult& r, const std::string& run) {
    ASSERT_EQ(r.train_losses.size(), 40u);
    EXPECT_LT(r.train_losses.back(), 0.8 * r.train_losses.front())
        << "first " << r.train_losses.front() << " last " << r.train_losses.back();
    // A Hutchinson record after every 5th step (steps 4, 9, ..., 39), each with its statistics.
    std::ifstream log(fs::path(run) / "log.jsonl");
    int passes = 0;
    double negative = 0;
    for (std::string line; std::getline(log, line);) {
      const auto rec = nlohmann::json::parse(line);
      if (rec.value("type", "") != "hutchinson") continue;
      ++passes;
      EXPECT_EQ(rec.at("step").get<int>() % 5, 4);
      EXPECT_TRUE(rec.contains("h_negative_fraction") && rec.contains("win_rate") && rec.contains("h_l2"));
      negative = rec.at("h_negative_fraction").get<double>();
    }
    EXPECT_EQ(passes, 8);
    EXPECT_GT(negative, 0.0) << "u * Hu should give some negative entries of h";
  }));
}
