// Fidelity of the Sophia-G Hessian path at the level of the training loop, and of the recipes.
//
// Sophia-G with h = 0 is sign-momentum and still learns, so the end-to-end learning tests cannot
// tell a working Gauss-Newton-Bartlett (GNB) pass from a broken one. These tests run the real
// sgpt::train() over the real CPU backend, wrapped in a SpyBackend that forwards every call and
// records what the loop asked for, and check the GNB pass against the loop's contract
// (src/train/trainer.h, docs/decisions.md):
//   - it runs after the optimizer step of every step with step % k == k-1, and only then;
//   - each of its micro-batches is the first floor(f * B) sequences (f = hessian_batch_fraction)
//     of a FRESH micro-batch read from the training stream after the step's training batches;
//   - the labels are sampled from the model (cpu::sample_labels keyed by seed, step, seq0), not
//     the training targets;
//   - the gradient is clipped by global norm (grad_clip), then h = b2*h + (1-b2)*g*g.
// FidelityHessian recomputes h in double precision from the checkpoints with its own code and
// compares it with the trainer's h. FidelityRecipes pins configs/gpt2_* to the official
// repository's current head.
//
// The sequences each step reads are reproduced with an independent DataLoader over the same file
// and options as the trainer's (src/data/loader.h: the stream of sequences depends only on the
// seed and the files, so replaying the same sequence of next() calls yields the same batches).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "cpu/gpt2_cpu.h"
#include "cpu/ops.h"
#include "optim/update_rules.h"
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

fs::path scratch(const std::string& name) { return sgpt_test::scratch_dir("fidelity", name); }

constexpr int kV = 64, kT = 8, kB = 8;

// A test's data: 20000 tokens of the learnable corpus (sgpt_test::pattern_tokens) over kV, so that
// the model moves away from uniform, in scratch(name)/train.bin.
std::string pattern_data(const std::string& name, uint32_t seed) {
  return sgpt_test::write_pattern_shard(scratch(name) / "train.bin", kV, 20000, seed);
}

// A tiny model: 2 layers, width 16, T = 8, V = 64; micro-batch 8 with `accum` micro-steps.
Config tiny(const std::string& train, const std::string& opt, int k, double fraction, int64_t steps,
            int accum, double clip) {
  nlohmann::json j = {
      {"model", {{"n_layer", 2}, {"n_head", 2}, {"n_embd", 16}, {"block_size", kT}, {"vocab_size", kV},
                 {"bias", false}, {"scale_attn_by_inverse_layer_idx", true}}},
      {"batch", {{"micro_batch_size", kB}, {"total_batch_tokens", accum * kB * kT}}},
      {"schedule", {{"warmup_iters", 2}, {"lr_decay_iters", steps}, {"max_steps", steps}}},
      {"eval", {{"every", 0}, {"batches", 1}}},
      {"checkpoint", {{"every", 1}, {"keep", 100}}},
      {"data", {{"train", train}, {"val", ""}, {"format", "llmc"}}},
      {"seed", 4242}};
  if (opt == "sophiag") {
    j["optimizer"] = {{"name", "sophiag"}, {"lr", 1e-2}, {"min_lr", 1e-3}, {"rho", 0.05},
                      {"weight_decay", 0.1}, {"beta1", 0.965}, {"beta2", 0.99},
                      {"hessian_interval", k}, {"hessian_batch_fraction", fraction},
                      {"grad_clip", clip}};
  } else {
    j["optimizer"] = {{"name", "adamw"}, {"lr", 1e-2}, {"min_lr", 1e-3}, {"grad_clip", clip}};
  }
  return sgpt_test::validated_config(j, "fidelity");
}

// ---------------------------------------------------------------------------------------------
// The spy: forwards every call to the real backend and records the ones the GNB contract is about.

struct Call {
  char kind;        // 'T' train_micro, 'G' gnb_micro, 'O' optimizer step, 'H' hessian_ema
  int64_t updates;  // optimizer steps done before this call (a GNB call of step s sees s + 1)
  int B = 0, T = 0;
  uint32_t gnb_step = 0, seq0 = 0;
  uint64_t seed = 0;
  float grad_scale = 0, loss = 0;
  std::vector<int> inp, tgt;
  std::vector<float> params, grad;  // 'H': the parameters and the gradient h is updated with
  Call(char k, int64_t u) : kind(k), updates(u) {}
};

class SpyBackend final : public Backend {
 public:
  explicit SpyBackend(std::unique_ptr<Backend> in) : in_(std::move(in)) {}
  std::vector<Call> calls;

  std::string name() const override { return "spy:" + in_->name(); }
  const ModelConfig& model() const override { return in_->model(); }
  const ParamLayout& layout() const override { return in_->layout(); }
  void zero_grad() override { in_->zero_grad(); }
  float train_micro(const int* inp, const int* tgt, int B, int T, float grad_scale) override {
    Call c('T', updates_);
    c.B = B;
    c.T = T;
    c.grad_scale = grad_scale;
    c.inp.assign(inp, inp + static_cast<size_t>(B) * T);
    c.tgt.assign(tgt, tgt + static_cast<size_t>(B) * T);
    c.loss = in_->train_micro(inp, tgt, B, T, grad_scale);
    calls.push_back(std::move(c));
    return calls.back().loss;
  }
  float gnb_micro(const int* inp, int B, int T, float grad_scale, uint64_t seed, uint32_t step,
                  uint32_t seq0) override {
    Call c('G', updates_);
    c.B = B;
    c.T = T;
    c.grad_scale = grad_scale;
    c.seed = seed;
    c.gnb_step = step;
    c.seq0 = seq0;
    c.inp.assign(inp, inp + static_cast<size_t>(B) * T);
    in_->get("params", c.params);
    c.loss = in_->gnb_micro(inp, B, T, grad_scale, seed, step, seq0);
    calls.push_back(std::move(c));
    return calls.back().loss;
  }
  float eval_micro(const int* inp, const int* tgt, int B, int T) override {
    return in_->eval_micro(inp, tgt, B, T);
  }
  void begin_last_micro() override { in_->begin_last_micro(); }
  void reduce_grad() override { in_->reduce_grad(); }
  void average(double* x, size_t n) override { in_->average(x, n); }
  double grad_sum_squares() override { return in_->grad_sum_squares(); }
  void scale_grad(float s) override { in_->scale_grad(s); }
  void optimizer_step(const OptimizerStep& s, SophiaMetrics* m) override {
    calls.emplace_back('O', updates_++);
    in_->optimizer_step(s, m);
  }
  void hessian_ema(const HessianConsts& c) override {
    Call call('H', updates_);
    in_->get("params", call.params);
    in_->get("grad", call.grad);
    calls.push_back(std::move(call));
    in_->hessian_ema(c);
  }
  void get(const std::string& slot, std::vector<float>& out) override { in_->get(slot, out); }
  void set(const std::string& slot, const std::vector<float>& v) override { in_->set(slot, v); }
  double device_memory_mib() override { return in_->device_memory_mib(); }
  double state_memory_mib() override { return in_->state_memory_mib(); }
  void set_attention(AttentionImpl a) override { in_->set_attention(a); }

 private:
  std::unique_ptr<Backend> in_;
  int64_t updates_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The expected data stream: per step, `accum` training micro-batches, then (GNB steps) `accum`
// fresh micro-batches for the GNB pass, all read from one loader in that order.

struct Batch {
  std::vector<int> inp, tgt;
};
struct StepData {
  std::vector<Batch> train, gnb;
};

bool is_gnb_step(const Config& c, int64_t s) {
  const int k = c.optimizer.hessian_interval;
  return c.optimizer.name == "sophiag" && s % k == k - 1;
}

std::vector<StepData> replay_stream(const Config& c) {
  LoaderOptions lo;
  lo.pattern = c.data.train;
  lo.format = TokenFormat::kLlmc;
  lo.B = c.batch.micro_batch_size;
  lo.T = c.model.block_size;
  lo.seed = c.seed;
  lo.vocab_size = c.model.vocab_size;
  DataLoader dl(lo);
  const int accum = c.grad_accum_steps();
  const size_t n = static_cast<size_t>(lo.B) * lo.T;
  std::vector<StepData> out(static_cast<size_t>(c.schedule.max_steps));
  auto read = [&](std::vector<Batch>& v) {
    for (int i = 0; i < accum; ++i) {
      Batch b{std::vector<int>(n), std::vector<int>(n)};
      dl.next(b.inp.data(), b.tgt.data());
      v.push_back(std::move(b));
    }
  };
  for (int64_t s = 0; s < c.schedule.max_steps; ++s) {
    read(out[s].train);
    if (is_gnb_step(c, s)) read(out[s].gnb);
  }
  return out;
}

int gnb_rows(const Config& c) {
  return std::max(1, static_cast<int>(std::floor(c.optimizer.hessian_batch_fraction * c.batch.micro_batch_size)));
}

std::vector<int> first_rows(const std::vector<int>& v, int rows, int T) {
  return std::vector<int>(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(rows) * T);
}

struct SpyRun {
  Config cfg;
  std::vector<Call> calls;
  std::vector<float> h;  // the trainer's h at the end ("h" slot)
  fs::path out_dir;
};

SpyRun run_spied(const Config& c, const std::string& name) {
  const fs::path dir = scratch(name);
  SpyBackend spy(sgpt_test::fresh_cpu_backend(c));
  sgpt_test::train_new_run(c, spy, dir / "run");
  SpyRun r{c, std::move(spy.calls), {}, dir / "run"};
  if (c.optimizer.name == "sophiag") spy.get("h", r.h);
  return r;
}

std::vector<const Call*> of_kind(const std::vector<Call>& calls, char kind) {
  std::vector<const Call*> v;
  for (const auto& c : calls)
    if (c.kind == kind) v.push_back(&c);
  return v;
}

double rel_l2(const std::vector<double>& a, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : (num > 0 ? INFINITY : 0.0);
}
std::vector<double> widen(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// The GNB gradient of one pass computed here with cpu::Gpt2<F>: for every micro-batch, forward on
// its first Bh sequences, labels from `labels_for` (sampled or given), backward of the mean CE
// scaled by 1/accum into g; then the global-norm clip with clip/(norm + 1e-6) when norm > clip.
// Returns the norm before clipping through *norm_out.
template <class F, class LabelFn>
std::vector<F> gnb_gradient(const Config& c, const std::vector<F>& params, const std::vector<Batch>& batches,
                            LabelFn labels_for, double* norm_out = nullptr) {
  const int Bh = gnb_rows(c), T = c.model.block_size;
  cpu::Gpt2<F> model(c.model, Bh, T);
  std::vector<F> g(params.size(), F(0));
  const F scale = F(1) / static_cast<F>(batches.size());
  for (size_t micro = 0; micro < batches.size(); ++micro) {
    const std::vector<int> inp = first_rows(batches[micro].inp, Bh, T);
    model.forward_logits(params.data(), inp.data(), Bh);
    const std::vector<int> labels = labels_for(model, micro, first_rows(batches[micro].tgt, Bh, T));
    model.loss(labels.data());
    model.backward(params.data(), g.data(), scale);
  }
  double ss = 0;
  for (F x : g) ss += static_cast<double>(x) * static_cast<double>(x);
  const double norm = std::sqrt(ss);
  if (norm_out) *norm_out = norm;
  const double clip = c.optimizer.grad_clip;
  if (clip > 0 && norm > clip) {
    const F s = static_cast<F>(clip / (norm + 1e-6));
    for (F& x : g) x *= s;
  }
  return g;
}

// Labels sampled from the model's softmax with the trainer's key: (seed, step, seq0 = micro * Bh).
template <class F>
auto sampled_labels(const Config& c, int64_t step) {
  return [&c, step](const cpu::Gpt2<F>& model, size_t micro, const std::vector<int>& tgt) {
    const int Bh = gnb_rows(c), T = c.model.block_size;
    std::vector<int> y(tgt.size());
    cpu::sample_labels(y.data(), model.logits(), Bh * T, T, c.model.vocab_size, c.model.padded_vocab_size,
                       c.seed, static_cast<uint32_t>(step), static_cast<uint32_t>(micro * Bh));
    return y;
  };
}
template <class F>
auto training_targets() {
  return [](const cpu::Gpt2<F>&, size_t, const std::vector<int>& tgt) { return tgt; };
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Cadence: per step the loop must issue, in this order, the training micro-steps (T), the
// optimizer step (O) and, after steps with step % k == k-1 only, the GNB micro-steps (G) of that
// step and one Hessian EMA (H). Fails when the GNB pass or the EMA is skipped, runs at other
// steps, before the optimizer step, or with the wrong step number in the label key.
TEST(FidelityGnb, RunsOnlyAfterTheStepOfStepsWithStepModKEqualToKMinus1) {
  const std::string data = pattern_data("cadence_data", 11);
  struct Case { std::string opt; int k; int64_t steps; };
  for (const Case& cs : {Case{"sophiag", 3, 10}, Case{"sophiag", 1, 4}, Case{"sophiag", 4, 9},
                         Case{"sophiag", 12, 11}, Case{"adamw", 1, 4}}) {
    const Config c = tiny(data, cs.opt, cs.k, 1.0, cs.steps, 2, 1.0);
    const SpyRun r = run_spied(c, "cadence_" + cs.opt + std::to_string(cs.k));
    std::string got, want;
    for (const Call& call : r.calls) got += call.kind;
    for (int64_t s = 0; s < cs.steps; ++s) want += is_gnb_step(c, s) ? "TTOGGH" : "TTO";
    EXPECT_EQ(got, want) << cs.opt << " k=" << cs.k << " (T train micro, O optimizer step, G GNB micro, H EMA)";
    for (const Call& call : r.calls) {
      if (call.kind != 'G') continue;
      const int64_t step = call.updates - 1;  // the GNB pass follows its step's optimizer step
      EXPECT_EQ(call.gnb_step, static_cast<uint32_t>(step)) << "the labels must be keyed by the step";
      EXPECT_TRUE(is_gnb_step(c, step)) << "GNB pass after step " << step << " with k=" << cs.k;
      EXPECT_EQ(call.seed, c.seed);
    }
  }
}

// The GNB micro-batches are the first floor(f*B) sequences of each fresh micro-batch, with the
// label counter seq0 = micro * floor(f*B) (docs/decisions.md), and the gradient scale 1/accum.
TEST(FidelityGnb, UsesTheFirstFloorFractionTimesBSequencesOfEachMicroBatch) {
  const std::string data = pattern_data("fraction_data", 12);
  for (double f : {1.0, 0.5, 0.3, 0.2}) {
    const Config c = tiny(data, "sophiag", 2, f, 4, 3, 1.0);
    const int Bh = gnb_rows(c);
    ASSERT_EQ(Bh, f == 1.0 ? 8 : f == 0.5 ? 4 : f == 0.3 ? 2 : 1);
    const SpyRun r = run_spied(c, "fraction_" + std::to_string(Bh));
    const std::vector<StepData> expect = replay_stream(c);
    const auto gnb = of_kind(r.calls, 'G');
    ASSERT_EQ(gnb.size(), 2u * 3u) << "f=" << f;  // steps 1 and 3, 3 micro-steps each
    for (size_t i = 0; i < gnb.size(); ++i) {
      const Call& g = *gnb[i];
      const int64_t step = g.updates - 1;
      const size_t micro = i % 3;
      ASSERT_TRUE(is_gnb_step(c, step)) << "GNB pass after step " << step;
      EXPECT_EQ(g.B, Bh) << "f=" << f << ": gnb_micro must get floor(f*B) sequences";
      EXPECT_EQ(g.T, kT);
      EXPECT_EQ(g.seq0, static_cast<uint32_t>(micro * Bh)) << "f=" << f << " micro " << micro;
      EXPECT_FLOAT_EQ(g.grad_scale, 1.0f / 3.0f);
      EXPECT_EQ(g.inp, first_rows(expect[step].gnb[micro].inp, Bh, kT))
          << "f=" << f << " step " << step << " micro " << micro << ": not the first Bh sequences of the fresh batch";
    }
  }
}

// The GNB batches are fresh sequences: the loop reads `accum` new micro-batches from the training
// stream after the step's own training micro-batches, and the next step's training batches
// follow them. Fails if the pass reuses the step's training batch (or any other).
TEST(FidelityGnb, ReadsFreshSequencesAfterTheStepsTrainingBatches) {
  const std::string data = pattern_data("fresh_data", 13);
  const Config c = tiny(data, "sophiag", 3, 1.0, 7, 2, 1.0);
  const SpyRun r = run_spied(c, "fresh");
  const std::vector<StepData> expect = replay_stream(c);
  const auto tr = of_kind(r.calls, 'T');
  const auto gnb = of_kind(r.calls, 'G');
  ASSERT_EQ(tr.size(), 7u * 2u);
  ASSERT_EQ(gnb.size(), 2u * 2u);  // steps 2 and 5
  for (size_t i = 0; i < tr.size(); ++i) {
    const int64_t step = tr[i]->updates;
    EXPECT_EQ(tr[i]->inp, expect[step].train[i % 2].inp) << "training batch of step " << step;
    EXPECT_EQ(tr[i]->tgt, expect[step].train[i % 2].tgt) << "training batch of step " << step;
  }
  for (size_t i = 0; i < gnb.size(); ++i) {
    const int64_t step = gnb[i]->updates - 1;
    ASSERT_TRUE(is_gnb_step(c, step)) << "GNB pass after step " << step;
    EXPECT_EQ(gnb[i]->inp, expect[step].gnb[i % 2].inp) << "GNB batch of step " << step;
    for (const Batch& b : expect[step].train)  // the data is varied enough for this to be meaningful
      EXPECT_NE(gnb[i]->inp, b.inp) << "the GNB pass of step " << step << " reused a training batch";
  }
}

// The gradient the EMA is updated with is the clipped gradient of the mean CE against labels
// sampled from the model (cpu::sample_labels with the trainer's key), recomputed here in fp32 with
// cpu::Gpt2 from the parameters at the time of the EMA; the same computation with the training
// targets, or on the step's own training batches, gives a clearly different gradient. Also each
// gnb_micro's returned loss must be the CE against the sampled labels.
TEST(FidelityGnb, EmaGradientIsTheClippedGradientForLabelsSampledFromTheModel) {
  const std::string data = pattern_data("labels_data", 14);
  // grad_clip 0.05 so that the clip is active in the GNB pass (checked below).
  const Config c = tiny(data, "sophiag", 2, 0.5, 6, 2, 0.05);
  const SpyRun r = run_spied(c, "labels");
  const std::vector<StepData> expect = replay_stream(c);
  const auto hess = of_kind(r.calls, 'H');
  ASSERT_EQ(hess.size(), 3u);  // steps 1, 3, 5
  int clipped = 0;
  for (const Call* h : hess) {
    const int64_t step = h->updates - 1;
    ASSERT_TRUE(is_gnb_step(c, step)) << step;
    double norm = 0;
    const auto want = gnb_gradient<float>(c, h->params, expect[step].gnb, sampled_labels<float>(c, step), &norm);
    clipped += norm > c.optimizer.grad_clip;
    const auto with_targets = gnb_gradient<float>(c, h->params, expect[step].gnb, training_targets<float>());
    const auto on_train_batch = gnb_gradient<float>(c, h->params, expect[step].train, sampled_labels<float>(c, step));
    const double e = rel_l2(widen(h->grad), widen(want));
    const double e_tgt = rel_l2(widen(h->grad), widen(with_targets));
    const double e_batch = rel_l2(widen(h->grad), widen(on_train_batch));
    std::printf("step %lld: GNB grad norm %.4f; relative L2 distance of the EMA's gradient to: sampled labels %.2e, "
                "training targets %.3f, sampled labels on the step's training batch %.3f\n",
                static_cast<long long>(step), norm, e, e_tgt, e_batch);
    // Same fp32 code and order as the backend: agreement to rounding (it is exact in practice).
    EXPECT_LT(e, 1e-6) << "step " << step;
    EXPECT_GT(e_tgt, 0.1) << "step " << step;
    EXPECT_GT(e_batch, 0.1) << "step " << step;
  }
  EXPECT_EQ(clipped, 3) << "the test needs the clip to be active in every GNB pass";

  // Each gnb_micro returns the mean CE against the sampled labels, not against the targets.
  const auto gnb = of_kind(r.calls, 'G');
  ASSERT_EQ(gnb.size(), 6u);
  const int Bh = gnb_rows(c);
  cpu::Gpt2<float> model(c.model, Bh, kT);
  for (size_t i = 0; i < gnb.size(); ++i) {
    const Call& g = *gnb[i];
    const int64_t step = g.updates - 1;
    ASSERT_TRUE(is_gnb_step(c, step)) << "GNB pass after step " << step;
    ASSERT_EQ(g.B, Bh);
    model.forward_logits(g.params.data(), g.inp.data(), Bh);
    std::vector<int> y(static_cast<size_t>(Bh) * kT);
    cpu::sample_labels(y.data(), model.logits(), Bh * kT, kT, kV, c.model.padded_vocab_size, c.seed,
                       static_cast<uint32_t>(step), static_cast<uint32_t>((i % 2) * Bh));
    const float l_sampled = model.loss(y.data());
    const std::vector<int> tgt = first_rows(expect[step].gnb[i % 2].tgt, Bh, kT);
    const float l_target = model.loss(tgt.data());
    EXPECT_EQ(g.loss, l_sampled) << "step " << step << " micro " << i % 2;
    EXPECT_NE(g.loss, l_target) << "step " << step << " micro " << i % 2;
  }
}

// h against an independent computation: for every GNB pass s (here after steps 1, 3, 5, with
// f = 0.5 and 2 micro-steps), take the parameters after step s from checkpoint model_<s+1>.bin,
// recompute the GNB gradient in DOUBLE precision with cpu::Gpt2<double> on the fresh sequences
// (first Bh of each micro-batch) with labels sampled from the double logits, clip by global norm,
// and run h = b2*h + (1-b2)*g*g in double; compare with the trainer's h after every pass (state
// files) and at the end.
//
// Tolerance: relative L2 error < 1e-5 (and max abs error < 1e-5 * max h). The trainer computes in
// fp32; fp32 rounding in a 2-layer, width-16 model moves the gradient by ~1e-7 relative and h
// (squares of it) by about twice that (measured: 3e-7), so 1e-5 leaves a 30x margin for other
// compilers' summation orders, while the failures this file is about (no EMA, other steps, other
// batch, training targets, no clip, whole micro-batch) change h by O(1) (the negative controls
// below measure several), and even an EMA that adds 1.0001 * (1-b2)*g*g fails it.
TEST(FidelityHessian, MatchesAnIndependentDoublePrecisionEmaOfClippedSquaredGnbGradients) {
  const std::string data = pattern_data("hessian_data", 15);
  const Config c = tiny(data, "sophiag", 2, 0.5, 6, 2, 0.05);
  const SpyRun r = run_spied(c, "hessian");
  const std::vector<StepData> expect = replay_stream(c);
  const double b2 = c.optimizer.beta2;

  const size_t P = r.h.size();
  ASSERT_GT(P, 0u);
  std::vector<double> h(P, 0.0), h_tgt(P, 0.0), h_noclip(P, 0.0), h_before(P, 0.0);
  auto ema = [&](std::vector<double>& acc, const std::vector<double>& g) {
    for (size_t i = 0; i < P; ++i) acc[i] = b2 * acc[i] + (1 - b2) * g[i] * g[i];
  };
  int passes = 0;
  for (int64_t s = 0; s < c.schedule.max_steps; ++s) {
    if (!is_gnb_step(c, s)) continue;
    ++passes;
    const std::vector<double> p = widen(read_model_file(model_path(r.out_dir.string(), s + 1), c.model));
    const std::vector<double> p_before = widen(read_model_file(model_path(r.out_dir.string(), s), c.model));
    double norm = 0;
    ema(h, gnb_gradient<double>(c, p, expect[s].gnb, sampled_labels<double>(c, s), &norm));
    ASSERT_GT(norm, c.optimizer.grad_clip) << "the clip must be active for this test to check it";
    ema(h_tgt, gnb_gradient<double>(c, p, expect[s].gnb, training_targets<double>()));
    ema(h_before, gnb_gradient<double>(c, p_before, expect[s].gnb, sampled_labels<double>(c, s)));
    Config noclip = c;
    noclip.optimizer.grad_clip = 0;
    ema(h_noclip, gnb_gradient<double>(noclip, p, expect[s].gnb, sampled_labels<double>(noclip, s)));

    const TrainState st = read_state_file(state_path(r.out_dir.string(), s + 1));
    ASSERT_EQ(st.slot_names, (std::vector<std::string>{"m", "h"}));
    const double e = rel_l2(widen(st.slots[1]), h);
    std::printf("after the GNB pass of step %lld: GNB grad norm %.4f, relative L2 error of the trainer's h %.2e\n",
                static_cast<long long>(s), norm, e);
    EXPECT_LT(e, 1e-5) << "h after the GNB pass of step " << s;
  }
  ASSERT_EQ(passes, 3);
  const std::vector<double> h_tr = widen(r.h);
  const double e = rel_l2(h_tr, h);
  double max_abs = 0, max_h = 0;
  for (size_t i = 0; i < P; ++i) {
    max_abs = std::max(max_abs, std::fabs(h_tr[i] - h[i]));
    max_h = std::max(max_h, std::fabs(h[i]));
  }
  std::printf("final h: relative L2 error %.2e, max abs error %.2e (max h %.2e); negative controls: "
              "training targets %.3f, no clip %.3f, parameters before the step %.3f\n",
              e, max_abs, max_h, rel_l2(h_tr, h_tgt), rel_l2(h_tr, h_noclip), rel_l2(h_tr, h_before));
  EXPECT_LT(e, 1e-5);
  EXPECT_LT(max_abs, 1e-5 * max_h);
  // The controls: what h would be with each mistake is far outside the tolerance.
  EXPECT_GT(rel_l2(h_tr, h_tgt), 1e-2);
  EXPECT_GT(rel_l2(h_tr, h_noclip), 1e-2);
  EXPECT_GT(rel_l2(h_tr, h_before), 1e-2);
}

// ---------------------------------------------------------------------------------------------
// Recipes: configs/gpt2_* against the official repository (github.com/Liuhong99/Sophia) at its
// head, commit a7e157229b71d58cf995d32854f1be15c265b350 (2024-01-29): config/train_gpt2_*.py, the
// defaults of train_sophiag.py and train_adam.py, and the README's hyperparameter table.
// Every config in configs/ must also load and validate.
TEST(FidelityRecipes, ConfigsMatchTheOfficialRepositoryAtItsHead) {
  struct Recipe {
    std::string file;
    int n_layer, n_head, n_embd, micro_batch;
    bool scale_attn;
    std::string opt;
    double lr, min_lr, beta1, beta2, rho, wd;
  };
  const std::vector<Recipe> recipes = {
      {"gpt2_125m_sophiag", 12, 12, 768, 8, true, "sophiag", 6e-4, 1.5e-5, 0.965, 0.99, 0.05, 0.2},
      {"gpt2_125m_adamw", 12, 12, 768, 8, true, "adamw", 6e-4, 3e-5, 0.9, 0.95, 0, 0.1},
      {"gpt2_355m_sophiag", 24, 16, 1024, 10, true, "sophiag", 7e-4, 1e-5, 0.965, 0.99, 0.08, 0.2},
      {"gpt2_355m_adamw", 24, 16, 1024, 6, true, "adamw", 3e-4, 6e-5, 0.9, 0.95, 0, 0.1},
      {"gpt2_770m_sophiag", 36, 20, 1280, 4, true, "sophiag", 3e-4, 1e-5, 0.965, 0.99, 0.05, 0.2},
      {"gpt2_770m_adamw", 36, 20, 1280, 4, true, "adamw", 2e-4, 1e-5, 0.9, 0.95, 0, 0.1},
  };
  const std::string root = std::string(SGPT_SOURCE_DIR) + "/configs/";
  for (const Recipe& e : recipes) {
    SCOPED_TRACE(e.file);
    const Config c = load_config(root + e.file + ".json", {});
    EXPECT_EQ(c.model.n_layer, e.n_layer);
    EXPECT_EQ(c.model.n_head, e.n_head);
    EXPECT_EQ(c.model.n_embd, e.n_embd);
    EXPECT_EQ(c.model.block_size, 1024);
    EXPECT_EQ(c.model.vocab_size, 50257);
    EXPECT_FALSE(c.model.bias);
    EXPECT_EQ(c.model.scale_attn_by_inverse_layer_idx, e.scale_attn);
    EXPECT_EQ(c.optimizer.name, e.opt);
    EXPECT_DOUBLE_EQ(c.optimizer.lr, e.lr);
    EXPECT_DOUBLE_EQ(c.optimizer.min_lr, e.min_lr);
    EXPECT_DOUBLE_EQ(c.optimizer.beta1, e.beta1);
    EXPECT_DOUBLE_EQ(c.optimizer.beta2, e.beta2);
    EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, e.wd);
    EXPECT_DOUBLE_EQ(c.optimizer.grad_clip, 1.0);
    if (e.opt == "sophiag") {
      EXPECT_DOUBLE_EQ(c.optimizer.rho, e.rho);
      EXPECT_EQ(c.optimizer.hessian_interval, 10);
      EXPECT_DOUBLE_EQ(c.optimizer.hessian_batch_fraction, 1.0);
      EXPECT_DOUBLE_EQ(c.sophia_bs(), 480.0 * 1024);  // total_bs * block_size
    } else {
      EXPECT_DOUBLE_EQ(c.optimizer.eps, 1e-8);  // PyTorch AdamW's default
    }
    EXPECT_EQ(c.batch.micro_batch_size, e.micro_batch);
    EXPECT_EQ(c.batch.total_batch_tokens, 480 * 1024);
    EXPECT_EQ(c.schedule.warmup_iters, 2000);
    EXPECT_EQ(c.schedule.lr_decay_iters, 100000);
    EXPECT_EQ(c.schedule.max_steps, 100000);
    EXPECT_EQ(c.eval.every, 1000);
    EXPECT_EQ(c.eval.batches, 200);
  }
  int loaded = 0;
  for (const auto& f : fs::directory_iterator(root)) {
    if (f.path().extension() != ".json") continue;
    EXPECT_NO_THROW(load_config(f.path().string(), {})) << f.path();
    ++loaded;
  }
  EXPECT_GE(loaded, 8);
}
