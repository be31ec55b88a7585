// The CPU KV-cache decoder (cpu/decode_cpu.h) against the reference forward (cpu::Gpt2): after a
// prefill and after every step, the decoder's logits equal those of the full forward over the
// window the decoder holds, at its last position; across slides too. Then the samples printed
// during training (sample.every).
//
// Tolerance: |dec - ref| <= 1e-5 |ref| + 1e-5 max|ref| per logit (fp32). The decoder computes
// the new rows only, with the reference's ops and, per output element, the reference's order of
// operations (cpu/decode_cpu.cpp), so today the logits agree bit for bit (the test prints the
// largest difference, 0). The tolerance is what the decoder promises: a different but equally
// valid order of a reduction (a blocked attention, say) would change the last bits, about
// 1e-7 relative per op, far below 1e-5, while a wrong cache (a dropped, shifted or stale
// position) changes logits by 1e-2 or more.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "common/error.h"
#include "config/config.h"
#include "cpu/decode_cpu.h"
#include "sample/batch.h"
#include "cpu/gpt2_cpu.h"
#include "sample/sampling.h"
#include "data/loader.h"
#include "model/checkpoint.h"
#include "model/gpt2.h"
#include "cpu/cpu_backend.h"
#include "train/trainer.h"
#include "test_corpus.h"
#include "test_model.h"
#include "test_scratch.h"

using namespace sgpt;
namespace fs = std::filesystem;

namespace {

// 2 layers, 3 heads of size 12, block 16, vocabulary 53.
ModelConfig odd_config(bool bias, bool scale_attn) {
  return sgpt_test::model_config(2, 3, 36, 16, 53, 0, bias, scale_attn);
}

// Random parameters, larger than the training init so that attention is far from uniform and
// every tensor (biases, LayerNorm) matters; padded vocabulary rows stay zero.
std::vector<float> random_params(const ModelConfig& c, uint32_t seed) {
  const ParamLayout L = ParamLayout::make(c);
  std::vector<float> p(L.total);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (int t = 0; t < kNumParamTensors; ++t) {
    const bool ln_w = t == kLn1w || t == kLn2w || t == kLnfw;
    const float sd = ln_w ? 0.2f : (t == kWte || t == kWpe) ? 0.5f : 0.15f;
    for (size_t i = 0; i < L.size[t]; ++i) p[L.offset[t] + i] = (ln_w ? 1.0f : 0.0f) + sd * d(rng);
  }
  for (int v = c.vocab_size; v < c.padded_vocab_size; ++v)
    for (int k = 0; k < c.n_embd; ++k) p[L.offset[kWte] + size_t(v) * c.n_embd + k] = 0.0f;
  return p;
}

// Logits of the reference forward over `window` at its last position.
std::vector<float> reference_logits(const ModelConfig& c, const std::vector<float>& params,
                                    const std::vector<int>& window) {
  const int T = static_cast<int>(window.size());
  cpu::Gpt2<float> m(c, 1, T);
  m.forward_logits(params.data(), window.data(), 1);
  const float* l = m.logits() + size_t(T - 1) * c.padded_vocab_size;
  return std::vector<float>(l, l + c.vocab_size);
}

// Largest |a - b|; counts elements outside the tolerance.
double compare(const float* dec, const std::vector<float>& ref, size_t* bad) {
  double maxref = 0, maxerr = 0;
  for (float r : ref) maxref = std::max(maxref, std::fabs(double(r)));
  *bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(double(dec[i]) - ref[i]);
    maxerr = std::max(maxerr, std::isnan(e) ? INFINITY : e);
    if (!(e <= 1e-5 * std::fabs(double(ref[i])) + 1e-5 * maxref)) ++(*bad);
  }
  return maxerr;
}

// The window the decoder should hold after appending `tokens` to `win` (the documented slide:
// when it would overflow, keep the last max(block_size/2, 1, new tokens) <= block_size tokens).
void expected_append(std::vector<int>& win, const std::vector<int>& tokens, int T) {
  std::vector<int> all = win;
  all.insert(all.end(), tokens.begin(), tokens.end());
  if (static_cast<int>(all.size()) <= T) {
    win = all;
    return;
  }
  const int W = std::min<int>(T, std::max<int>({T / 2, 1, static_cast<int>(tokens.size())}));
  win.assign(all.end() - W, all.end());
}

struct Case {
  bool bias, scale;
};

class DecodeVsReference : public ::testing::TestWithParam<Case> {};

}  // namespace

TEST_P(DecodeVsReference, LogitsMatchTheFullForwardAtEveryPosition) {
  const ModelConfig c = odd_config(GetParam().bias, GetParam().scale);
  const std::vector<float> params = random_params(c, 17 + GetParam().bias * 2 + GetParam().scale);
  auto dec = make_cpu_decoder(c);
  dec->set_params(params.data());
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> tok(0, c.vocab_size - 1);
  std::vector<int> win;
  double worst = 0;
  size_t checked = 0;
  auto check = [&](const float* logits, const char* what, int i) {
    ASSERT_EQ(dec->window(), win) << what << " " << i;
    size_t bad = 0;
    const double err = compare(logits, reference_logits(c, params, win), &bad);
    worst = std::max(worst, err);
    ++checked;
    EXPECT_EQ(bad, 0u) << what << " " << i << " (window " << win.size() << "): max abs diff " << err;
  };
  // Prefill 5, then 40 steps (block 16: slides at lengths 16 -> 8 several times).
  std::vector<int> prompt(5);
  for (int& t : prompt) t = tok(rng);
  expected_append(win, prompt, c.block_size);
  check(dec->prefill(prompt), "prefill", 0);
  for (int i = 0; i < 40; ++i) {
    const int t = tok(rng);
    expected_append(win, {t}, c.block_size);
    check(dec->step(t), "step", i);
    if (HasFatalFailure()) return;
  }
  EXPECT_GE(dec->slides(), 4);
  // A second prefill onto the cache, then one of 11 tokens (when it overflows the block, the
  // window becomes those 11: max(16/2, 11) = 11).
  std::vector<int> more(3), many(11);
  for (int& t : more) t = tok(rng);
  for (int& t : many) t = tok(rng);
  expected_append(win, more, c.block_size);
  check(dec->prefill(more), "prefill more", 0);
  expected_append(win, many, c.block_size);
  check(dec->prefill(many), "prefill overflow", 0);
  // A prompt longer than the block keeps its last block_size tokens.
  std::vector<int> longp(37);
  for (int& t : longp) t = tok(rng);
  dec->reset();
  win.clear();
  expected_append(win, longp, c.block_size);
  ASSERT_EQ(win.size(), size_t(c.block_size));
  check(dec->prefill(longp), "long prompt", 0);
  std::printf("bias %d scale_attn %d: %zu positions checked, max abs diff to the reference %.3g\n",
              GetParam().bias, GetParam().scale, checked, worst);
}

INSTANTIATE_TEST_SUITE_P(Configs, DecodeVsReference,
                         ::testing::Values(Case{false, true}, Case{true, true}, Case{false, false}, Case{true, false}));

// Prefilling a prompt in one call equals stepping through it token by token.
TEST(Decode, PrefillEqualsSteps) {
  const ModelConfig c = odd_config(true, true);
  const std::vector<float> params = random_params(c, 3);
  auto a = make_cpu_decoder(c), b = make_cpu_decoder(c);
  a->set_params(params.data());
  b->set_params(params.data());
  const std::vector<int> prompt{1, 7, 52, 0, 33, 33, 8, 19, 4};
  const float* la = a->prefill(prompt);
  const float* lb = nullptr;
  for (int t : prompt) lb = b->step(t);
  for (int v = 0; v < c.vocab_size; ++v) EXPECT_EQ(la[v], lb[v]) << v;
}

// A block of 1 (every step slides to a window of one token) and of 2.
TEST(Decode, TinyBlocks) {
  for (int T : {1, 2, 3}) {
    ModelConfig c = odd_config(false, true);
    c.block_size = T;
    const std::vector<float> params = random_params(c, 9);
    auto d = make_cpu_decoder(c);
    d->set_params(params.data());
    std::vector<int> win;
    for (int i = 0; i < 7; ++i) {
      const int t = (i * 5 + 1) % c.vocab_size;
      expected_append(win, {t}, T);
      const float* l = d->step(t);
      ASSERT_EQ(d->window(), win) << "T " << T << " i " << i;
      size_t bad = 0;
      compare(l, reference_logits(c, params, win), &bad);
      EXPECT_EQ(bad, 0u) << "T " << T << " i " << i;
    }
  }
}

TEST(Decode, BadInputsAndParamsRequired) {
  const ModelConfig c = odd_config(false, true);
  auto d = make_cpu_decoder(c);
  EXPECT_THROW(d->step(1), std::logic_error);  // no set_params yet
  const std::vector<float> params = random_params(c, 1);
  d->set_params(params.data());
  EXPECT_THROW(d->step(c.vocab_size), std::out_of_range);
  EXPECT_THROW(d->step(-1), std::out_of_range);
  EXPECT_THROW(d->prefill(std::span<const int>()), std::invalid_argument);
  EXPECT_EQ(d->length(), 0);
  d->step(3);
  EXPECT_EQ(d->length(), 1);
  d->set_params(params.data());  // new weights: the cache is cleared
  EXPECT_EQ(d->length(), 0);
}

// generate() = prefill + sample_token with draw index i + step, reproducible from the seed; the
// same tokens as a slow loop over the reference forward on the same windows.
TEST(Decode, GenerateMatchesASlowReferenceLoop) {
  const ModelConfig c = odd_config(true, true);
  const std::vector<float> params = random_params(c, 21);
  auto d = make_cpu_decoder(c);
  d->set_params(params.data());
  SamplingOptions o{.temperature = 0.9, .top_k = 20, .top_p = 0.95, .seed = 77};
  const std::vector<int> prompt{4, 5, 6};
  std::vector<int> streamed;
  const std::vector<int> got = generate(*d, prompt, 30, o, [&](int t) { streamed.push_back(t); });
  EXPECT_EQ(got, streamed);
  EXPECT_EQ(generate(*d, prompt, 30, o), got);
  std::vector<int> win, want;
  expected_append(win, prompt, c.block_size);
  for (int i = 0; i < 30; ++i) {
    const std::vector<float> l = reference_logits(c, params, win);
    const int t = sample_token(l.data(), c.vocab_size, o, static_cast<uint32_t>(i));
    want.push_back(t);
    expected_append(win, {t}, c.block_size);
  }
  EXPECT_EQ(got, want);
  o.seed = 78;
  EXPECT_NE(generate(*d, prompt, 30, o), got);
}

// Top-candidate output: prefill and step return nullptr and top() holds the first k candidates
// of the logits they would have returned.
TEST(Decode, TopOutputHoldsTheFirstCandidates) {
  const ModelConfig c = odd_config(true, true);
  const std::vector<float> params = random_params(c, 5);
  auto a = make_cpu_decoder(c), b = make_cpu_decoder(c);
  a->set_params(params.data());
  b->set_params(params.data());
  b->set_top_output(7);
  const std::vector<int> prompt{1, 2, 3};
  const float* l = a->prefill(prompt);
  EXPECT_EQ(b->prefill(prompt), nullptr);
  for (int i = 0; i < 20; ++i) {  // past block_size 16: slides too
    const std::vector<Candidate> want = top_candidates(l, c.vocab_size, 7);
    ASSERT_EQ(b->top().size(), want.size());
    for (size_t j = 0; j < want.size(); ++j) {
      EXPECT_EQ(b->top()[j].id, want[j].id);
      EXPECT_EQ(b->top()[j].key, want[j].key);
    }
    l = a->step(i % c.vocab_size);
    EXPECT_EQ(b->step(i % c.vocab_size), nullptr);
  }
  EXPECT_THROW(b->set_top_output(-1), std::invalid_argument);
  EXPECT_THROW(b->set_top_output(c.vocab_size + 1), std::invalid_argument);
  // generate() restores the caller's mode.
  b->set_top_output(0);
  generate(*b, prompt, 3, SamplingOptions{.temperature = 1.0, .top_k = 5, .top_p = 1.0, .seed = 1});
  EXPECT_EQ(b->top_output(), 0);
  EXPECT_NE(b->prefill(prompt), nullptr);
}

// ---- the batch decoder (sample/batch.h): the slots' bookkeeping and generate_batch ----

// Each prompt of a batch gets the tokens of generate() alone with its seed, whatever the other
// slots do: prompts of different lengths (one longer than the block), enough tokens for several
// slides, fewer prompts than slots, with and without a top-k cut.
TEST(BatchDecode, CpuBatchEqualsDecodingEachPromptAlone) {
  const ModelConfig c = odd_config(true, true);  // block 16
  const std::vector<float> params = random_params(c, 31);
  auto one = make_cpu_decoder(c);
  one->set_params(params.data());
  std::mt19937 rng(4);
  std::vector<std::vector<int>> prompts = {{1}, {}, {5, 6, 7, 8, 9}};
  for (int i = 0; i < 20; ++i) prompts[1].push_back(static_cast<int>(rng() % c.vocab_size));
  for (const SamplingOptions& o : {SamplingOptions{.temperature = 0.9, .top_k = 20, .top_p = 0.95, .seed = 10},
                                   SamplingOptions{.temperature = 1.3, .top_k = 0, .top_p = 1.0, .seed = 20},
                                   SamplingOptions{.temperature = 1.0, .top_k = 1, .top_p = 1.0, .seed = 30}}) {
    for (int slots : {3, 4}) {
      auto batch = make_cpu_batch_decoder(c, slots);
      batch->set_params(params.data());
      const std::vector<uint64_t> seeds{o.seed, o.seed + 1, o.seed + 2};
      std::vector<std::vector<int>> streamed(prompts.size());
      const auto got = generate_batch(*batch, prompts, 40, o, seeds,
                                      [&](int i, int t) { streamed.at(i).push_back(t); });
      ASSERT_EQ(got.size(), prompts.size());
      EXPECT_EQ(got, streamed);
      for (size_t i = 0; i < prompts.size(); ++i) {
        SamplingOptions oi = o;
        oi.seed = seeds[i];
        EXPECT_EQ(got[i], generate(*one, prompts[i], 40, oi)) << "prompt " << i << ", " << slots << " slots";
        EXPECT_GE(batch->slides(static_cast<int>(i)), 2);
      }
      EXPECT_EQ(batch->top_output(), 0);  // restored
    }
  }
}

TEST(BatchDecode, BadInputs) {
  const ModelConfig c = odd_config(false, false);
  EXPECT_THROW(make_cpu_batch_decoder(c, 0), std::invalid_argument);
  auto b = make_cpu_batch_decoder(c, 2);
  EXPECT_THROW(b->start(0, std::vector<int>{1}), std::logic_error);  // no set_params yet
  const std::vector<float> params = random_params(c, 2);
  b->set_params(params.data());
  EXPECT_THROW(b->start(2, std::vector<int>{1}), std::out_of_range);
  EXPECT_THROW(b->start(0, std::vector<int>{}), std::invalid_argument);
  EXPECT_THROW(b->start(0, std::vector<int>{c.vocab_size}), std::out_of_range);
  b->start(0, std::vector<int>{1, 2});
  EXPECT_THROW(b->step(std::vector<int>{1}), std::invalid_argument);  // one token per slot
  EXPECT_THROW(b->step(std::vector<int>{c.vocab_size, -1}), std::out_of_range);
  b->step(std::vector<int>{3, -1});  // slot 1 idle
  EXPECT_EQ(b->window(0), (std::vector<int>{1, 2, 3}));
  EXPECT_TRUE(b->window(1).empty());
  const std::vector<uint64_t> seeds{1, 2, 3};
  EXPECT_THROW(generate_batch(*b, {{1}, {2}, {3}}, 2, SamplingOptions{}, seeds), std::invalid_argument);
  EXPECT_THROW(generate_batch(*b, {{1}, {2}}, 2, SamplingOptions{}, std::span<const uint64_t>(seeds.data(), 1)),
               std::invalid_argument);
}

// ---- samples during training (config sample.*, src/train/trainer.cpp) ----

namespace {

fs::path scratch_dir(const std::string& name) { return sgpt_test::scratch_dir("decode", name); }

// A tiny run (vocabulary 64) that samples every 3 of its 6 steps.
Config sampling_run_config(const fs::path& dir) {
  sgpt_test::write_random_shard(dir / "train.bin", 64, 5000, 1);
  nlohmann::json j = nlohmann::json::parse(R"({
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 64},
    "batch": {"micro_batch_size": 2, "total_batch_tokens": 16},
    "schedule": {"warmup_iters": 1, "lr_decay_iters": 6, "max_steps": 6},
    "optimizer": {"hessian_interval": 2},
    "eval": {"every": 0}, "checkpoint": {"every": 0, "keep": 1},
    "sample": {"every": 3, "tokens": 5, "temperature": 0.9, "top_k": 10, "top_p": 0.95},
    "seed": 99
  })");
  j["data"] = {{"train", (dir / "train.bin").string()}};
  return sgpt_test::validated_config(j, "sampling test");
}

}  // namespace

TEST(TrainSamples, PrintedAtEverySampleEveryStepsWithTheDecoder) {
  const fs::path dir = scratch_dir("train_samples");
  const Config c = sampling_run_config(dir);
  auto be = sgpt_test::fresh_cpu_backend(c);
  TrainOptions opt;
  opt.out_dir = (dir / "run").string();
  int built = 0;
  opt.make_decoder = [&](const ModelConfig& m) {
    ++built;
    return make_cpu_decoder(m);
  };
  prepare_run_dir(c, opt);
  ::testing::internal::CaptureStdout();
  const TrainResult r = train(c, *be, opt);
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(built, 1);  // built once, reused with new weights
  ASSERT_EQ(r.samples.size(), 2u);
  EXPECT_EQ(r.samples[0].first, 3);
  EXPECT_EQ(r.samples[1].first, 6);
  for (const auto& [step, toks] : r.samples) {
    ASSERT_EQ(toks.size(), 5u);
    for (int t : toks) EXPECT_TRUE(t >= 0 && t < 64) << t;
  }
  EXPECT_NE(out.find("--- sample at step 3 ("), std::string::npos) << out;
  EXPECT_NE(out.find("--- sample at step 6 ("), std::string::npos) << out;
  EXPECT_EQ(out.find("--- sample at step 1 "), std::string::npos) << out;
  EXPECT_EQ(out.find("--- sample at step 2 "), std::string::npos) << out;
  EXPECT_EQ(out.find("--- sample at step 4 "), std::string::npos) << out;
  // The sample after the last step is the decoder's output on the final weights, from the start
  // token (vocab_size - 1 here: the model's vocabulary has no end-of-text token 50256), with the
  // config's sampling options and seed.
  const std::vector<float> final_params = read_model_file(model_path(opt.out_dir, 6), c.model);
  auto d = make_cpu_decoder(c.model);
  d->set_params(final_params.data());
  const SamplingOptions o{.temperature = 0.9, .top_k = 10, .top_p = 0.95, .seed = 99};
  const std::vector<int> start{63};
  EXPECT_EQ(generate(*d, start, 5, o), r.samples[1].second);
  // log.jsonl holds one "sample" record per sample.
  std::ifstream log(fs::path(opt.out_dir) / "log.jsonl");
  std::vector<int64_t> logged;
  for (std::string line; std::getline(log, line);) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("type", "") == "sample") {
      logged.push_back(j.at("step").get<int64_t>());
      EXPECT_EQ(j.at("tokens").size(), 5u);
      EXPECT_TRUE(j.at("text").is_string());
    }
  }
  EXPECT_EQ(logged, (std::vector<int64_t>{3, 6}));
}

TEST(TrainSamples, OffByDefaultAndQuietRunsStillLogThem) {
  const fs::path dir = scratch_dir("train_samples_off");
  Config c = sampling_run_config(dir);
  Config off = c;
  off.sample.every = 0;
  EXPECT_EQ(config_from_json(nlohmann::json::object(), "x").sample.every, 0);
  {
    auto be = sgpt_test::fresh_cpu_backend(off);
    EXPECT_TRUE(sgpt_test::train_new_run(off, *be, dir / "off").samples.empty());
  }
  auto be = sgpt_test::fresh_cpu_backend(c);
  TrainOptions opt = sgpt_test::quiet_run(dir / "quiet");
  prepare_run_dir(c, opt);
  ::testing::internal::CaptureStdout();
  const TrainResult r = train(c, *be, opt);
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(r.samples.size(), 2u);
  EXPECT_EQ(out.find("sample at step"), std::string::npos) << out;
}

TEST(TrainSamples, ConfigKeysAreValidated) {
  auto error_of = [](const std::string& set) {
    try {
      nlohmann::json j = nlohmann::json::parse(R"({"model": {"n_layer": 1, "n_head": 2, "n_embd": 16,
          "block_size": 8, "vocab_size": 64}, "batch": {"micro_batch_size": 2, "total_batch_tokens": 16}})");
      apply_override(j, set);
      Config c = config_from_json(j, "cfg.json");
      c.validate();
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of("sample.every=-1").find("sample.every"), std::string::npos);
  EXPECT_NE(error_of("sample.tokens=0").find("sample.tokens"), std::string::npos);
  EXPECT_NE(error_of("sample.temperature=0").find("sample.temperature"), std::string::npos);
  EXPECT_NE(error_of("sample.top_k=-3").find("sample.top_k"), std::string::npos);
  EXPECT_NE(error_of("sample.top_p=1.5").find("sample.top_p"), std::string::npos);
  EXPECT_NE(error_of("sample.every=\"often\"").find("sample.every"), std::string::npos);
  EXPECT_NE(error_of("sample.evry=3").find("sample.evry"), std::string::npos);
  EXPECT_EQ(error_of("sample.every=5"), "");
  EXPECT_EQ(error_of("sample.prompt=\"Hi\""), "");
}

// A prompt that encodes to ids outside the model's vocabulary stops the run before its first step,
// naming the key.
TEST(TrainSamples, PromptOutsideTheVocabularyIsAnError) {
  const fs::path dir = scratch_dir("train_samples_prompt");
  Config c = sampling_run_config(dir);
  c.sample.prompt = "The state of the union";
  auto be = sgpt_test::fresh_cpu_backend(c);
  TrainOptions opt = sgpt_test::quiet_run(dir / "run");
  prepare_run_dir(c, opt);
  try {
    train(c, *be, opt);
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("sample.prompt"), std::string::npos) << e.what();
  }
}
