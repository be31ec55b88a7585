// HellaSwag (src/eval/hellaswag.h): the llm.c scoring rule on per-token losses given by hand, the
// packing of candidate rows into batches, the JSONL reader's errors, the CPU backend's
// per-position losses, the trainer's periodic evaluation and `sophiagpt eval --hellaswag`.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "common/error.h"
#include "data/loader.h"
#include "eval/hellaswag.h"
#include "model/checkpoint.h"
#include "tokenizer/tokenizer.h"
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

fs::path scratch(const std::string& name) { return sgpt_test::scratch_dir("hellaswag", name); }

void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

const char* kVocabDir = SGPT_SOURCE_DIR "/data/cache/gpt2";

// A Backend whose only real method is eval_losses: the loss at a position is loss_of[target]
// (0.5 for ids not in the table), 0 for targets < 0. It records every batch it was given.
class StubBackend : public Backend {
 public:
  StubBackend() {
    cfg_ = sgpt_test::model_config(1, 1, 4, 16, 100, 128);
    layout_ = ParamLayout::make(cfg_);
  }
  std::string name() const override { return "stub"; }
  const ModelConfig& model() const override { return cfg_; }
  const ParamLayout& layout() const override { return layout_; }
  void zero_grad() override {}
  float train_micro(const int*, const int*, int, int, float) override { return 0; }
  float gnb_micro(const int*, int, int, float, uint64_t, uint32_t, uint32_t) override { return 0; }
  float eval_micro(const int*, const int*, int, int) override { return 0; }
  double grad_sum_squares() override { return 0; }
  void scale_grad(float) override {}
  void optimizer_step(const OptimizerStep&, SophiaMetrics*) override {}
  void hessian_ema(const HessianConsts&) override {}
  void get(const std::string&, std::vector<float>&) override {}
  void set(const std::string&, const std::vector<float>&) override {}
  double state_memory_mib() override { return 0; }

 protected:
  ModelConfig cfg_;
  ParamLayout layout_;
};

class TableBackend final : public StubBackend {
 public:
  std::map<int, float> loss_of;
  std::vector<std::vector<int>> inputs, targets;
  void eval_losses(const int* inp, const int* tgt, int B, int T, float* out) override {
    inputs.emplace_back(inp, inp + B * T);
    targets.emplace_back(tgt, tgt + B * T);
    for (int i = 0; i < B * T; ++i) {
      if (tgt[i] < 0) { out[i] = 0; continue; }
      auto it = loss_of.find(tgt[i]);
      out[i] = it == loss_of.end() ? 0.5f : it->second;
    }
  }
};

HellaSwagExample example(std::vector<int> ctx, std::array<std::vector<int>, 4> endings, int label, int64_t line = 1) {
  HellaSwagExample e;
  e.ctx = std::move(ctx);
  e.endings = std::move(endings);
  e.label = label;
  e.line = line;
  return e;
}

}  // namespace

TEST(HellaSwag, CandidateScoreIsTheMeanOverTheEndingTokensOnly) {
  // Row: 3 context tokens, then 2 ending tokens. Position t holds the loss of predicting token
  // t + 1, so the ending's tokens are predicted at positions 2 and 3; position 4 (after the row's
  // last token) and the context positions 0, 1 must not count.
  const float losses[6] = {100.f, 100.f, 1.0f, 3.0f, 100.f, 100.f};
  EXPECT_DOUBLE_EQ(hellaswag_candidate_score(losses, 3, 2), 2.0);
  EXPECT_DOUBLE_EQ(hellaswag_candidate_score(losses, 3, 1), 1.0);
  const float one[2] = {0.25f, 7.f};
  EXPECT_DOUBLE_EQ(hellaswag_candidate_score(one, 1, 1), 0.25);
}

TEST(HellaSwag, PredictionIsTheArgminAndTheFirstOnTies) {
  EXPECT_EQ(hellaswag_prediction({3.0, 2.0, 1.0, 4.0}), 2);
  EXPECT_EQ(hellaswag_prediction({1.0, 1.0, 2.0, 3.0}), 0);
  EXPECT_EQ(hellaswag_prediction({2.0, 1.5, 1.5, 1.5}), 1);
  EXPECT_EQ(hellaswag_prediction({5.0, 5.0, 5.0, 0.5}), 3);
}

// Hand-checked: with the loss of each target token set by table, the mean over each ending's
// tokens picks the candidate below, whatever the batch size (B = 1: every row alone; 3: examples
// straddle batches; 8: two examples per batch; 12: a partial last batch).
TEST(HellaSwag, HandCheckedAnswersForEveryBatchSize) {
  // Token ids: 10-19 context, 20+ endings. Losses: 20 -> 1, 21 -> 3, 22 -> 2, 23 -> 0.25,
  // 24 -> 4, 25 -> 1.5; context tokens (10-19) 9.0 so that scoring them would change the answers.
  const std::map<int, float> table = {{20, 1.f}, {21, 3.f}, {22, 2.f}, {23, .25f}, {24, 4.f}, {25, 1.5f},
                                      {10, 9.f}, {11, 9.f}, {12, 9.f}, {13, 9.f}};
  std::vector<HellaSwagExample> ex = {
      // The mean loss of each ending, and the prediction:
      example({10, 11}, {{{20, 21}, {25}, {22}, {24, 20}}}, 1),  // 2.0, 1.5, 2.0, 2.5 -> 1 (right)
      example({12}, {{{21}, {23, 24}, {22, 23}, {20, 25}}}, 2),    // 3.0, 2.125, 1.125, 1.25 -> 2 (right)
      example({13, 10, 11}, {{{20}, {20}, {23}, {22}}}, 0),       // 1, 1, 0.25, 2 -> 2 (wrong)
      example({11}, {{{22, 22}, {20, 22, 21}, {21, 20}, {22}}}, 3), // 2, 2, 2, 2 -> 0 on the tie (wrong)
  };
  for (int B : {1, 3, 4, 8, 12}) {
    TableBackend be;
    be.loss_of = table;
    const HellaSwagResult r = evaluate_hellaswag(be, ex, 0, ex.size(), B, 16);
    EXPECT_EQ(r.total, 4) << "B " << B;
    EXPECT_EQ(r.correct, 2) << "B " << B;
    EXPECT_EQ(r.truncated, 0);
    EXPECT_DOUBLE_EQ(r.accuracy(), 0.5);
    EXPECT_EQ(be.inputs.size(), static_cast<size_t>((16 + B - 1) / B)) << "B " << B;
  }
  // A slice: examples [1, 3) only (example 1 right, example 2 wrong).
  TableBackend be;
  be.loss_of = table;
  const HellaSwagResult s = evaluate_hellaswag(be, ex, 1, 3, 4, 16);
  EXPECT_EQ(s.total, 2);
  EXPECT_EQ(s.correct, 1);
}

TEST(HellaSwag, RowsArePackedAndPaddedAsLlmcDoes) {
  TableBackend be;
  const std::vector<HellaSwagExample> ex = {example({10, 11}, {{{20, 21}, {22}, {23}, {24}}}, 0)};
  evaluate_hellaswag(be, ex, 0, 1, 5, 6);
  ASSERT_EQ(be.inputs.size(), 1u);
  const std::vector<int>& in = be.inputs[0];
  const std::vector<int>& tg = be.targets[0];
  // Row 0: 10 11 20 21 pad pad; targets 11 20 21 -1 -1 -1 (pad = min(50256, V - 1) = 99).
  EXPECT_EQ(std::vector<int>(in.begin(), in.begin() + 6), (std::vector<int>{10, 11, 20, 21, 99, 99}));
  EXPECT_EQ(std::vector<int>(tg.begin(), tg.begin() + 6), (std::vector<int>{11, 20, 21, -1, -1, -1}));
  // Row 1: 10 11 22; row 4 (unused, the batch keeps B = 5 rows): padding only.
  EXPECT_EQ(std::vector<int>(in.begin() + 6, in.begin() + 9), (std::vector<int>{10, 11, 22}));
  for (int t = 24; t < 30; ++t) {
    EXPECT_EQ(in[t], 99);
    EXPECT_EQ(tg[t], -1);
  }
}

TEST(HellaSwag, LongRowsKeepTheEndingAndDropContextFromTheLeft) {
  TableBackend be;
  be.loss_of = {{20, 1.f}, {21, 2.f}};
  // T = 4: context of 5 tokens, endings of 2 -> the last 2 context tokens are kept.
  std::vector<HellaSwagExample> ex = {example({10, 11, 12, 13, 14}, {{{21, 21}, {20, 20}, {21, 20}, {20, 21}}}, 1)};
  const HellaSwagResult r = evaluate_hellaswag(be, ex, 0, 1, 4, 4);
  EXPECT_EQ(r.correct, 1);
  EXPECT_EQ(r.truncated, 1);
  EXPECT_EQ(std::vector<int>(be.inputs[0].begin(), be.inputs[0].begin() + 4), (std::vector<int>{13, 14, 21, 21}));
  // An ending that leaves no room for a context token, and an id outside the vocabulary: errors
  // naming the file and the line.
  ex[0].endings[2] = {20, 20, 20, 20};
  ex[0].line = 7;
  std::string e = error_of([&] { evaluate_hellaswag(be, ex, 0, 1, 4, 4, "hs.jsonl"); });
  EXPECT_TRUE(contains(e, "hs.jsonl") && contains(e, "line 7") && contains(e, "ending 2")) << e;
  e = error_of([&] { check_hellaswag(ex, 100, 4, "hs.jsonl"); });
  EXPECT_TRUE(contains(e, "line 7")) << e;
  ex[0].endings[2] = {20};
  ex[0].ctx[4] = 150;
  e = error_of([&] { check_hellaswag(ex, 100, 16, "hs.jsonl"); });
  EXPECT_TRUE(contains(e, "line 7") && contains(e, "vocabulary")) << e;
}

TEST(HellaSwag, SlicesCoverEveryExampleOnce) {
  for (size_t n : {1u, 7u, 10042u})
    for (int w : {1, 2, 3, 8}) {
      size_t next = 0;
      for (int r = 0; r < w; ++r) {
        const auto [lo, hi] = hellaswag_slice(n, r, w);
        EXPECT_EQ(lo, next);
        EXPECT_GE(hi, lo);
        next = hi;
      }
      EXPECT_EQ(next, n);
    }
}

TEST(HellaSwag, DefaultEvalLossesThrowsLogicError) {
  StubBackend be;
  std::vector<int> t(16, 0);
  std::vector<float> l(16);
  EXPECT_THROW(be.eval_losses(t.data(), t.data(), 1, 16, l.data()), std::logic_error);
}

TEST(HellaSwag, ReaderErrorsNameTheFileAndTheLine) {
  const fs::path d = scratch("reader");
  const std::string good = R"({"ctx": "A man sits.", "endings": ["a", "b", "c", "d"], "label": 2})";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{not json", "not valid JSON"},
      {R"({"ctx": "x", "label": 0})", "endings"},
      {R"({"ctx": "x", "endings": ["a", "b", "c"], "label": 0})", "endings"},
      {R"({"ctx": "x", "endings": ["a", "b", "c", 4], "label": 0})", "endings"},
      {R"({"endings": ["a", "b", "c", "d"], "label": 0})", "ctx"},
      {R"({"ctx": "x", "endings": ["a", "b", "c", "d"], "label": 4})", "label"},
      {R"({"ctx": "x", "endings": ["a", "b", "c", "d"], "label": -1})", "label"},
      {R"({"ctx": "x", "endings": ["a", "b", "c", "d"], "label": "1"})", "label"},
      {R"({"ctx": "x", "endings": ["a", "b", "c", "d"]})", "label"},
      {R"([1, 2])", "object"},
  };
  for (const auto& [line, what] : cases) {
    const fs::path p = d / "bad.jsonl";
    write(p, good + "\n\n" + line + "\n" + good + "\n");
    const std::string e = error_of([&] { read_hellaswag(p.string()); });
    EXPECT_TRUE(contains(e, p.string())) << line << ": " << e;
    EXPECT_TRUE(contains(e, "line 3")) << line << ": " << e;
    EXPECT_TRUE(contains(e, what)) << line << ": " << e;
  }
  EXPECT_TRUE(contains(error_of([&] { read_hellaswag((d / "missing.jsonl").string()); }), "missing.jsonl"));
  write(d / "empty.jsonl", "\n");
  EXPECT_TRUE(contains(error_of([&] { read_hellaswag((d / "empty.jsonl").string()); }), "no example"));
  // Blank lines are skipped; --limit reads only the first N examples (a bad line after them is
  // never read).
  write(d / "ok.jsonl", good + "\r\n\n" + good + "\n{bad\n");
  EXPECT_EQ(read_hellaswag((d / "ok.jsonl").string(), 2).size(), 2u);
  EXPECT_EQ(read_hellaswag((d / "ok.jsonl").string(), 2)[1].line, 3);
}

TEST(HellaSwag, TokenizesLikeLlmc) {
  const fs::path d = scratch("tok");
  write(d / "h.jsonl", R"({"ind": 1, "ctx": "Hello", "endings": ["world", "there.", "x y", "world!"], "label": 0, "split": "val"})" "\n");
  const Tokenizer tok = Tokenizer::load(kVocabDir);
  const auto ex = load_hellaswag((d / "h.jsonl").string(), tok);
  ASSERT_EQ(ex.size(), 1u);
  EXPECT_EQ(ex[0].ctx, tok.encode("Hello"));
  EXPECT_EQ(ex[0].ctx, (std::vector<int>{15496}));
  EXPECT_EQ(ex[0].endings[0], (std::vector<int>{995}));  // " world"
  for (int c = 0; c < 4; ++c) EXPECT_EQ(ex[0].endings[c], tok.encode(" " + std::string(c == 0 ? "world" : c == 1 ? "there." : c == 2 ? "x y" : "world!")));
  write(d / "e.jsonl", R"({"ctx": "", "endings": ["a", "b", "c", "d"], "label": 0})" "\n");
  EXPECT_TRUE(contains(error_of([&] { load_hellaswag((d / "e.jsonl").string(), tok); }), "line 1"));
}

// The CPU backend's per-position losses: their mean is eval_micro's loss; negative targets give 0
// and leave the other positions unchanged.
TEST(HellaSwag, CpuBackendPerPositionLosses) {
  auto be = sgpt_test::cpu_backend(sgpt_test::model_config(1, 2, 16, 8, 50, 128), 2, 8, 3);
  std::mt19937 rng(5);
  std::vector<int> inp(16), tgt(16);
  for (int i = 0; i < 16; ++i) inp[i] = static_cast<int>(rng() % 50), tgt[i] = static_cast<int>(rng() % 50);
  std::vector<float> l(16), l2(16);
  be->eval_losses(inp.data(), tgt.data(), 2, 8, l.data());
  double sum = 0;
  for (float x : l) {
    EXPECT_GT(x, 0.f);
    sum += x;
  }
  EXPECT_NEAR(sum / 16, be->eval_micro(inp.data(), tgt.data(), 2, 8), 1e-5);
  std::vector<int> masked = tgt;
  masked[3] = -1;
  masked[15] = -5;
  be->eval_losses(inp.data(), masked.data(), 2, 8, l2.data());
  for (int i = 0; i < 16; ++i) EXPECT_EQ(l2[i], (i == 3 || i == 15) ? 0.f : l[i]) << i;
  // One row (B = 1 of the 2 allocated) gives that row's values.
  be->eval_losses(inp.data(), tgt.data(), 1, 8, l2.data());
  for (int i = 0; i < 8; ++i) EXPECT_EQ(l2[i], l[i]);
  EXPECT_EQ(be->device_name(), "cpu");
  EXPECT_EQ(be->machine_info().value("device", ""), "cpu");
  EXPECT_GE(be->machine_info().value("threads", 0), 1);
}

namespace {
// A 4-example HellaSwag file in the official format (abridged keys kept).
const char* kFourExamples =
    R"({"ind": 24, "activity_label": "Roof shingle removal", "ctx": "A man is sitting on a roof. he", "split": "val", "label": 3, "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.", "starts pulling up roofing on a roof."]})"
    "\n"
    R"({"ind": 92, "ctx": "A woman is outside with a bucket and a dog. The dog is running around trying to avoid a bath. she", "label": 0, "endings": ["rinses the bucket off with soap and blow dry the dog's head.", "uses a hose to keep it from getting soapy.", "gets the dog wet, then it runs away again.", "gets into a bath tub with the dog."]})"
    "\n"
    R"({"ind": 106, "ctx": "Two women in a child are shown in a canoe while a man pulls the canoe while standing in the water, with other individuals visible in the background. the child and a different man", "label": 2, "endings": ["are then shown paddling down a river in a boat while a woman talks.", "are driving the canoe, they go down the river flowing side to side.", "sit in a canoe while the man paddles.", "walking go down the rapids, while the man in his helicopter almost falls and goes out of canoehood."]})"
    "\n"
    R"({"ind": 114, "ctx": "A boy is running down a track. the boy", "label": 2, "endings": ["runs into a car.", "gets in a mat.", "lifts his body above the height of a pole.", "stands on his hands and springs."]})"
    "\n";

// A tiny GPT-2-vocabulary model's run: configs/tiny_cpu.json on a shard of random GPT-2 ids.
Config tiny_gpt2_config(const fs::path& d) {
  sgpt_test::write_random_shard(d / "train.bin", 50257, 20000, 1);
  Config c = load_config(SGPT_SOURCE_DIR "/configs/tiny_cpu.json",
                         {"data.train=" + (d / "train.bin").string(), "data.val=", "eval.every=0",
                          "schedule.warmup_iters=1", "schedule.lr_decay_iters=4", "schedule.max_steps=4",
                          "device=cpu"});
  return c;
}
}  // namespace

// eval.hellaswag_every: records {"type":"hellaswag"} at the multiples of N after step 0 and at the
// end, over every example.
TEST(HellaSwag, TrainerEvaluatesPeriodically) {
  const fs::path d = scratch("trainer");
  ::setenv("SGPT_VOCAB_DIR", kVocabDir, 1);
  write(d / "hs.jsonl", kFourExamples);
  Config c = tiny_gpt2_config(d);
  c.eval.hellaswag_every = 2;
  c.eval.hellaswag_file = (d / "hs.jsonl").string();
  c.validate();
  auto be = sgpt_test::fresh_cpu_backend(c);
  const TrainResult r = sgpt_test::train_new_run(c, *be, d / "run");
  EXPECT_GE(r.last_hellaswag, 0.0);
  EXPECT_LE(r.last_hellaswag, 1.0);
  std::vector<int64_t> steps;
  std::ifstream f(d / "run" / "log.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    const json j = json::parse(line);
    if (j.at("type") != "hellaswag") continue;
    steps.push_back(j.at("step").get<int64_t>());
    EXPECT_EQ(j.at("total").get<int64_t>(), 4);
    EXPECT_NEAR(j.at("hellaswag").get<double>(), j.at("correct").get<double>() / 4.0, 1e-12);
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{2, 4}));

  // A missing file is an error naming the key and the file (before training: check_data).
  c.eval.hellaswag_file = (d / "nope.jsonl").string();
  const std::string e = error_of([&] { check_data(c, 1); });
  EXPECT_TRUE(contains(e, "eval.hellaswag_file") && contains(e, "nope.jsonl")) << e;
}

TEST(HellaSwag, EvalCommandOnATinyTrainedModel) {
  const fs::path d = scratch("cli");
  tiny_gpt2_config(d);  // writes the shard
  write(d / "hs.jsonl", kFourExamples);
  const std::string run = (d / "run").string();
  const Exec t = run_cli(std::string("train --config " SGPT_SOURCE_DIR "/configs/tiny_cpu.json --device cpu -q") +
                         " --set data.train=" + (d / "train.bin").string() +
                         " --set data.val= --set eval.every=0 --set schedule.warmup_iters=1"
                         " --set schedule.lr_decay_iters=2 --set schedule.max_steps=2 --out-dir " + run);
  ASSERT_EQ(t.code, 0) << t.out;
  const std::string vocab = std::string(" --vocab ") + kVocabDir;
  const Exec e = run_cli("eval --run " + run + " --device cpu --hellaswag " + (d / "hs.jsonl").string() + vocab);
  EXPECT_EQ(e.code, 0) << e.out;
  EXPECT_TRUE(contains(e.out, "hellaswag: acc_norm ")) << e.out;
  EXPECT_TRUE(contains(e.out, "/4 examples (cpu")) << e.out;
  const Exec lim = run_cli("eval --run " + run + " --device cpu --hellaswag " + (d / "hs.jsonl").string() + " --limit 3" + vocab);
  EXPECT_EQ(lim.code, 0) << lim.out;
  EXPECT_TRUE(contains(lim.out, "/3 examples")) << lim.out;
  // A malformed line: exit 2, the file and the line named.
  write(d / "bad.jsonl", std::string(kFourExamples) + R"({"ctx": "x", "endings": ["a", "b"], "label": 0})" "\n");
  const Exec bad = run_cli("eval --run " + run + " --device cpu --hellaswag " + (d / "bad.jsonl").string() + vocab);
  EXPECT_EQ(bad.code, 2) << bad.out;
  EXPECT_TRUE(contains(bad.out, "bad.jsonl") && contains(bad.out, "line 5")) << bad.out;
  const Exec missing = run_cli("eval --run " + run + " --device cpu --hellaswag " + (d / "none.jsonl").string() + vocab);
  EXPECT_EQ(missing.code, 2) << missing.out;
  EXPECT_TRUE(contains(missing.out, "none.jsonl")) << missing.out;
}
