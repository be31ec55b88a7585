// The GPU KV-cache decoder (cuda/decode_cuda.h) against the CPU decoder (cpu/decode_cpu.h), which
// tests/cpu/test_decode.cpp checks against the reference forward.
//
// Tolerance, fp32: every logit within 1e-4 |cpu| + 1e-4 max|cpu| (test_kernels_util.h's
// expect_close). Both decoders run the same ops, but the GPU orders its reductions differently
// (cuBLASLt dot products of length C and 4C, block reductions in LayerNorm and attention), so
// each op differs from the CPU's by a few fp32 roundings (~1e-7 relative); two layers of them
// leave the logits about 1e-6 apart, well inside 1e-4. A wrong cache position or a wrong head
// offset moves logits by 1e-2 or more.
// Tokens: sampling runs on the host from downloaded logits with the same code (sample/sampling.h),
// so for one seed the tokens are the same unless a draw lands within ~1e-6 of a boundary between
// two tokens' cumulative probabilities; the 124M smoke test samples among the top 40, where that
// is rare (about 40 x 1e-6 per token).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/decode_cpu.h"
#include "sample/sampling.h"
#include "cuda/decode_cuda.h"
#include "model/gpt2.h"
#include "test_kernels_util.h"
#include "test_model.h"

namespace sgpt::test {
namespace {

// 2 layers of width 72, block 16, vocabulary 123.
ModelConfig odd_config(int n_head, bool bias, bool scale_attn) {
  return sgpt_test::model_config(2, n_head, 72, 16, 123, 0, bias, scale_attn);
}

// Random parameters, larger than the training init (attention far from uniform, every bias and
// LayerNorm parameter matters); the padded vocabulary rows stay zero.
std::vector<float> random_params(const ModelConfig& c, uint64_t seed) {
  const ParamLayout L = ParamLayout::make(c);
  std::vector<float> p(L.total);
  Rng rng(seed);
  for (int t = 0; t < kNumParamTensors; ++t) {
    const bool ln_w = t == kLn1w || t == kLn2w || t == kLnfw;
    const float sd = ln_w ? 0.2f : (t == kWte || t == kWpe) ? 0.5f : 0.15f;
    const std::vector<float> r = rng.normal(L.size[t], sd, ln_w ? 1.0f : 0.0f);
    std::copy(r.begin(), r.end(), p.begin() + L.offset[t]);
  }
  for (size_t i = size_t(c.vocab_size) * c.n_embd; i < size_t(c.padded_vocab_size) * c.n_embd; ++i)
    p[L.offset[kWte] + i] = 0.0f;
  return p;
}

std::vector<float> as_vec(const float* l, int V) { return std::vector<float>(l, l + V); }

struct Case {
  int n_head;
  bool bias, scale;
};

class DecodeGpuVsCpu : public ::testing::TestWithParam<Case> {};

TEST_P(DecodeGpuVsCpu, LogitsOverPrefillAndStepsWithSlides) {
  SGPT_SKIP_WITHOUT_GPU();
  const Case k = GetParam();
  const ModelConfig c = odd_config(k.n_head, k.bias, k.scale);
  const uint64_t seed = test_seed();
  std::printf("seed %llu (SGPT_TEST_SEED), NH %d, bias %d, scale_attn %d\n",
              static_cast<unsigned long long>(seed), k.n_head, k.bias, k.scale);
  const std::vector<float> params = random_params(c, seed);
  auto cpu = make_cpu_decoder(c);
  auto gpu = make_cuda_decoder(c);
  cpu->set_params(params.data());
  gpu->set_params(params.data());
  const Tol tol{1e-4, 1e-4};
  Rng rng(seed + 7);
  const std::vector<int> prompt = rng.ints(5, 0, c.vocab_size);
  expect_close(as_vec(gpu->prefill(prompt), c.vocab_size), as_vec(cpu->prefill(prompt), c.vocab_size), tol,
               "prefill");
  // 20 steps: the window reaches block_size 16 after 11; the 12th slides it to 8 tokens.
  const std::vector<int> toks = rng.ints(20, 0, c.vocab_size);
  for (int i = 0; i < 20; ++i) {
    const std::vector<float> g = as_vec(gpu->step(toks[i]), c.vocab_size);
    const std::vector<float> r = as_vec(cpu->step(toks[i]), c.vocab_size);
    ASSERT_EQ(gpu->window(), cpu->window()) << "step " << i;
    expect_close(g, r, tol, "step " + std::to_string(i) + " (window " + std::to_string(gpu->length()) + ")");
    if (HasFailure()) return;
  }
  EXPECT_GE(gpu->slides(), 1);
  // A long prefill (more rows than the block: the last 16 tokens are kept), all rows at once.
  const std::vector<int> longp = rng.ints(23, 0, c.vocab_size);
  gpu->reset();
  cpu->reset();
  expect_close(as_vec(gpu->prefill(longp), c.vocab_size), as_vec(cpu->prefill(longp), c.vocab_size), tol,
               "long prefill");
  // New weights through set_params: the cache is cleared and the new weights are used.
  const std::vector<float> params2 = random_params(c, seed + 1);
  cpu->set_params(params2.data());
  gpu->set_params(params2.data());
  EXPECT_EQ(gpu->length(), 0);
  expect_close(as_vec(gpu->prefill(prompt), c.vocab_size), as_vec(cpu->prefill(prompt), c.vocab_size), tol,
               "prefill, new weights");
}

INSTANTIATE_TEST_SUITE_P(Configs, DecodeGpuVsCpu,
                         ::testing::Values(Case{3, false, true}, Case{3, true, true}, Case{6, false, false},
                                           Case{6, true, false}, Case{3, true, false}, Case{6, false, true}));

// The GPU decoder is deterministic: the same calls give the same bits.
TEST(DecodeGpu, Deterministic) {
  SGPT_SKIP_WITHOUT_GPU();
  const ModelConfig c = odd_config(3, true, true);
  const std::vector<float> params = random_params(c, 5);
  auto a = make_cuda_decoder(c);
  auto b = make_cuda_decoder(c);
  a->set_params(params.data());
  b->set_params(params.data());
  const std::vector<int> prompt{1, 2, 3, 4, 5, 6, 7};
  const std::vector<float> la = as_vec(a->prefill(prompt), c.vocab_size);
  const std::vector<float> lb = as_vec(b->prefill(prompt), c.vocab_size);
  EXPECT_EQ(la, lb);
  for (int t : {9, 99, 0, 122}) EXPECT_EQ(as_vec(a->step(t), c.vocab_size), as_vec(b->step(t), c.vocab_size));
}

// GPT-2 small's shape (124M, fresh init): it runs, and with one seed the GPU and the CPU decoder
// generate the same first 16 tokens. No timing is checked (tokens/s is printed).
TEST(DecodeGpu, Gpt2SmallSmokeTokensMatchTheCpu) {
  SGPT_SKIP_WITHOUT_GPU();
  ModelConfig c;  // the defaults: 12 layers, 12 heads, 768, block 1024, vocab 50257 (50304)
  const std::vector<float> params = sgpt_test::initial_params(c, 1234);
  auto cpu = make_cpu_decoder(c);
  auto gpu = make_cuda_decoder(c);
  cpu->set_params(params.data());
  gpu->set_params(params.data());
  SamplingOptions o;
  o.temperature = 1.0;
  o.top_k = 40;
  o.seed = 42;
  const std::vector<int> prompt{50256, 464, 3290, 318};
  const std::vector<int> want = generate(*cpu, prompt, 16, o);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int> got = generate(*gpu, prompt, 16, o);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(got, want);
  // The logits after the last prompt token, compared directly.
  cpu->reset();
  gpu->reset();
  expect_close(as_vec(gpu->prefill(prompt), c.vocab_size), as_vec(cpu->prefill(prompt), c.vocab_size),
               Tol{1e-4, 1e-4}, "124M prefill logits");
  // A longer run on the GPU alone (no check beyond finishing): 200 tokens.
  const auto t1 = std::chrono::steady_clock::now();
  const std::vector<int> more = generate(*gpu, prompt, 200, o);
  const double s2 = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  EXPECT_EQ(more.size(), 200u);
  std::printf("124M: 16 tokens in %.3f s (first call), 200 tokens in %.3f s = %.0f tokens/s (%s)\n", s, s2,
              200 / s2, gpu->name().c_str());
}

}  // namespace
}  // namespace sgpt::test
