// End-to-end tests of the CPU training loop: learning, resume bit for bit, the GNB estimator.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>

#include "common/error.h"
#include "common/philox.h"
#include "cpu/gpt2_cpu.h"
#include "cpu/ops.h"
#include "data/loader.h"
#include "model/checkpoint.h"
#include "cpu/cpu_backend.h"
#include "train/trainer.h"
#include "test_corpus.h"
#include "test_model.h"
#include "test_scratch.h"

using namespace sgpt;
namespace fs = std::filesystem;

namespace {

// A path with nothing there yet (the tests let sophiagpt create the run folder).
fs::path scratch(const std::string& name) { return sgpt_test::scratch_path("test", name); }

Config tiny_config(const std::string& train, const std::string& val, const std::string& opt) {
  nlohmann::json j = nlohmann::json::parse(R"({
    "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "vocab_size": 64,
              "bias": false, "scale_attn_by_inverse_layer_idx": true},
    "batch": {"micro_batch_size": 8, "total_batch_tokens": 128},
    "schedule": {"warmup_iters": 20, "lr_decay_iters": 300, "max_steps": 300},
    "eval": {"every": 100, "batches": 4},
    "checkpoint": {"every": 0, "keep": 1},
    "seed": 1234
  })");
  j["data"] = {{"train", train}, {"val", val}, {"format", "llmc"}};
  if (opt == "sophiag") {
    j["optimizer"] = {{"name", "sophiag"}, {"lr", 3e-3}, {"min_lr", 3e-4}, {"rho", 0.05},
                      {"weight_decay", 0.1}, {"hessian_interval", 5}};
  } else {
    j["optimizer"] = {{"name", "adamw"}, {"lr", 3e-3}, {"min_lr", 3e-4}, {"beta1", 0.9}, {"beta2", 0.95},
                      {"weight_decay", 0.1}};
  }
  return sgpt_test::validated_config(j, "tiny");
}

double mean_of_last(const std::vector<double>& v, size_t n) {
  return std::accumulate(v.end() - static_cast<std::ptrdiff_t>(n), v.end(), 0.0) / static_cast<double>(n);
}

}  // namespace

class Learns : public ::testing::TestWithParam<std::string> {};

// On the learnable corpus of sgpt_test::pattern_tokens the best achievable loss is about 0.75 nats,
// far below the ln(64) = 4.16 of a fresh model.
TEST_P(Learns, LossFallsWellBelowStart) {
  const fs::path dir = scratch("learn_" + GetParam());
  const std::string tr = sgpt_test::write_pattern_shard(dir / "data/train.bin", 64, 200000, 1);
  const std::string va = sgpt_test::write_pattern_shard(dir / "data/val.bin", 64, 20000, 2);
  Config c = tiny_config(tr, va, GetParam());
  auto be = sgpt_test::fresh_cpu_backend(c);
  const TrainResult r = sgpt_test::train_new_run(c, *be, dir / "run");
  ASSERT_EQ(r.train_losses.size(), 300u);
  const double start = r.train_losses.front();
  const double end = mean_of_last(r.train_losses, 20);
  EXPECT_NEAR(start, std::log(64.0), 0.3);  // a fresh model predicts close to uniform
  std::printf("%s: first loss %.4f, mean of the last 20 %.4f, val %.4f\n", GetParam().c_str(), start, end, r.last_val_loss);
  EXPECT_LT(end, 0.5 * start) << "start " << start << " end " << end;
  EXPECT_LT(r.last_val_loss, 0.5 * start);
  EXPECT_TRUE(fs::exists(dir / "run" / "log.jsonl"));
  EXPECT_TRUE(fs::exists(model_path((dir / "run").string(), 300)));
}

INSTANTIATE_TEST_SUITE_P(Optimizers, Learns, ::testing::Values("sophiag", "adamw"));

TEST(Resume, ReproducesAnUninterruptedRunBitForBit) {
  const fs::path dir = scratch("resume");
  const std::string tr = sgpt_test::write_pattern_shard(dir / "data/train.bin", 64, 50000, 3);
  const std::string va = sgpt_test::write_pattern_shard(dir / "data/val.bin", 64, 5000, 4);
  for (const std::string optname : {"sophiag", "adamw"}) {
    Config c = tiny_config(tr, va, optname);
    c.schedule.max_steps = 12;
    c.schedule.warmup_iters = 3;
    c.optimizer.hessian_interval = 4;  // GNB passes at steps 3, 7, 11: on both sides of the cut
    c.eval.every = 5;

    auto a = sgpt_test::fresh_cpu_backend(c);
    const TrainResult ra = sgpt_test::train_new_run(c, *a, dir / ("straight_" + optname));

    Config half = c;
    half.schedule.max_steps = 6;
    auto b1 = sgpt_test::fresh_cpu_backend(half);
    sgpt_test::train_new_run(half, *b1, dir / ("cut_" + optname));
    auto b2 = sgpt_test::fresh_cpu_backend(c);  // a new process would start from a fresh init, then load
    TrainOptions ob = sgpt_test::quiet_run(dir / ("cut_" + optname));
    ob.resume = true;
    EXPECT_EQ(prepare_run_dir(c, ob), 6);
    const TrainResult rb = train(c, *b2, ob);

    ASSERT_EQ(rb.train_losses.size(), 6u);
    for (size_t i = 0; i < 6; ++i) EXPECT_EQ(rb.train_losses[i], ra.train_losses[6 + i]) << optname << " step " << 6 + i;
    for (const std::string& slot : std::vector<std::string>{"params", "m", optname == "sophiag" ? "h" : "v"}) {
      std::vector<float> x, y;
      a->get(slot, x);
      b2->get(slot, y);
      ASSERT_EQ(x.size(), y.size());
      EXPECT_EQ(0, std::memcmp(x.data(), y.data(), x.size() * sizeof(float))) << optname << " slot " << slot;
    }
  }
}

TEST(Resume, StateThatDoesNotMatchTheConfigIsAnError) {
  const fs::path dir = scratch("resume_mismatch");
  const std::string tr = sgpt_test::write_pattern_shard(dir / "data/train.bin", 64, 20000, 5);
  Config c = tiny_config(tr, "", "sophiag");
  c.schedule.max_steps = 2;
  auto a = sgpt_test::fresh_cpu_backend(c);
  sgpt_test::train_new_run(c, *a, dir / "run");
  Config d = tiny_config(tr, "", "adamw");
  d.schedule.max_steps = 4;
  auto b = sgpt_test::fresh_cpu_backend(d);
  TrainOptions o = sgpt_test::quiet_run(dir / "run");
  o.resume = true;
  prepare_run_dir(d, o);
  try {
    train(d, *b, o);
    FAIL() << "resuming a Sophia-G state with AdamW must fail";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("state_00000002.bin"), std::string::npos) << e.what();
  }
}

TEST(RunDir, RefusesToOverwriteARun) {
  const fs::path dir = scratch("rundir");
  const std::string tr = sgpt_test::write_pattern_shard(dir / "data/train.bin", 64, 20000, 6);
  Config c = tiny_config(tr, "", "adamw");
  c.schedule.max_steps = 1;
  auto a = sgpt_test::fresh_cpu_backend(c);
  sgpt_test::train_new_run(c, *a, dir / "run");
  const TrainOptions o = sgpt_test::quiet_run(dir / "run");
  const auto before = fs::file_size(fs::path(o.out_dir) / "log.jsonl");
  EXPECT_THROW(prepare_run_dir(c, o), UserError);
  EXPECT_EQ(fs::file_size(fs::path(o.out_dir) / "log.jsonl"), before);
}

// The GNB estimator: g_hat = grad of mean CE against labels y_i ~ softmax(logits_i). Its second
// moment, E[g_hat^2] = (1/N^2) sum_i diag(J_i^T (diag(p_i) - p_i p_i^T) J_i), is the Gauss-Newton
// diagonal of the mean loss divided by N. Computed exactly here by enumerating each position's
// labels (the cross terms vanish because E[p_i - e_{y_i}] = 0), and compared with the Monte Carlo
// mean of g_hat^2 over draws of the Philox sampler.
TEST(Gnb, SecondMomentMatchesGaussNewtonDiagonal) {
  const ModelConfig mc = sgpt_test::model_config(1, 2, 8, 3, 7, 8, /*bias=*/true);
  const int B = 2, T = 3, N = B * T, V = mc.vocab_size, Vp = mc.padded_vocab_size;
  const ParamLayout L = ParamLayout::make(mc);
  std::vector<float> pf(L.total);
  init_params(pf.data(), mc, L, 99);
  std::vector<double> params(pf.begin(), pf.end());
  // Larger weights than the init so the softmax is far from uniform.
  for (auto& x : params) x *= 8.0;
  cpu::Gpt2<double> model(mc, B, T);
  const std::vector<int> inp = {1, 4, 2, 6, 0, 3};

  model.forward_logits(params.data(), inp.data(), B);
  std::vector<double> probs(static_cast<size_t>(N) * V);
  for (int i = 0; i < N; ++i) {
    const double* l = model.logits() + static_cast<size_t>(i) * Vp;
    double mx = l[0], s = 0;
    for (int v = 0; v < V; ++v) mx = std::max(mx, l[v]);
    for (int v = 0; v < V; ++v) s += std::exp(l[v] - mx);
    for (int v = 0; v < V; ++v) probs[i * V + v] = std::exp(l[v] - mx) / s;
  }

  // c_i(y): gradient with label y at position i and label 0 elsewhere. a_i(y) = c_i(y) - sum_y' p c_i(y').
  const size_t P = L.total;
  std::vector<double> exact(P, 0.0);
  for (int i = 0; i < N; ++i) {
    std::vector<std::vector<double>> c(V, std::vector<double>(P, 0.0));
    for (int y = 0; y < V; ++y) {
      std::vector<int> tg(N, 0);
      tg[i] = y;
      model.forward_logits(params.data(), inp.data(), B);
      model.loss(tg.data());
      model.backward(params.data(), c[y].data(), 1.0);
    }
    std::vector<double> mean(P, 0.0);
    for (int y = 0; y < V; ++y)
      for (size_t e = 0; e < P; ++e) mean[e] += probs[i * V + y] * c[y][e];
    for (int y = 0; y < V; ++y)
      for (size_t e = 0; e < P; ++e) {
        const double a = c[y][e] - mean[e];
        exact[e] += probs[i * V + y] * a * a;
      }
  }

  const int draws = 3000;
  std::vector<double> mc2(P, 0.0), g(P);
  std::vector<int> labels(N);
  for (int d = 0; d < draws; ++d) {
    model.forward_logits(params.data(), inp.data(), B);
    cpu::sample_labels(labels.data(), model.logits(), N, T, V, Vp, /*seed=*/5, /*step=*/d, /*seq0=*/0);
    model.loss(labels.data());
    std::fill(g.begin(), g.end(), 0.0);
    model.backward(params.data(), g.data(), 1.0);
    for (size_t e = 0; e < P; ++e) mc2[e] += g[e] * g[e] / draws;
  }
  double num = 0, den = 0;
  for (size_t e = 0; e < P; ++e) {
    num += (mc2[e] - exact[e]) * (mc2[e] - exact[e]);
    den += exact[e] * exact[e];
  }
  // Monte Carlo error of a mean of 3000 squared sums: a few percent in relative L2; 10% leaves
  // room for heavy tails while a wrong sampler (e.g. uniform labels, checked below) is far off.
  EXPECT_GT(den, 0);
  std::printf("GNB second moment: relative L2 error of the Monte Carlo estimate %.4f\n", std::sqrt(num / den));
  EXPECT_LT(std::sqrt(num / den), 0.10);

  // Negative control: labels drawn uniformly instead of from the softmax give a different moment.
  std::vector<double> unif(P, 0.0);
  std::mt19937 rng(3);
  for (int d = 0; d < draws; ++d) {
    for (auto& y : labels) y = static_cast<int>(rng() % V);
    model.forward_logits(params.data(), inp.data(), B);
    model.loss(labels.data());
    std::fill(g.begin(), g.end(), 0.0);
    model.backward(params.data(), g.data(), 1.0);
    for (size_t e = 0; e < P; ++e) unif[e] += g[e] * g[e] / draws;
  }
  double num2 = 0;
  for (size_t e = 0; e < P; ++e) num2 += (unif[e] - exact[e]) * (unif[e] - exact[e]);
  std::printf("GNB second moment with uniform labels (negative control): relative L2 error %.4f\n", std::sqrt(num2 / den));
  EXPECT_GT(std::sqrt(num2 / den), 0.2);
}

TEST(Gnb, BackendSamplesTheSameLabelsForTheSameSeedStepAndPosition) {
  const ModelConfig mc = sgpt_test::model_config(1, 1, 8, 4, 11, 16);
  auto a = sgpt_test::cpu_backend(mc, 2, 4, 1), b = sgpt_test::cpu_backend(mc, 2, 4, 1);
  const std::vector<int> inp = {1, 2, 3, 4, 5, 6, 7, 8};
  a->zero_grad();
  b->zero_grad();
  const float la = a->gnb_micro(inp.data(), 2, 4, 1.0f, 42, 9, 0);
  const float lb = b->gnb_micro(inp.data(), 2, 4, 1.0f, 42, 9, 0);
  EXPECT_EQ(la, lb);
  std::vector<float> ga, gb;
  a->get("grad", ga);
  b->get("grad", gb);
  EXPECT_EQ(ga, gb);
  // Another step draws other labels, hence another loss (with overwhelming probability).
  b->zero_grad();
  const float lc = b->gnb_micro(inp.data(), 2, 4, 1.0f, 42, 10, 0);
  EXPECT_NE(la, lc);
}
