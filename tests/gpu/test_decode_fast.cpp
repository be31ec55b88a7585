// The fast decoding paths (docs/sampling.md, "Speed"): the CUDA graph of a step of the GPU
// decoder (cuda/decode_cuda.h), the candidates selected on the device, and the batch decoder
// (cuda/decode_batch.h) in fp32 and bf16.
//
// What must be bit for bit equal, and why:
//   - graph replay vs eager steps of the GPU decoder: the same kernels with the same arguments
//     (only the position is read from device memory), so the same logits, over slides too; hence
//     the same greedy (--top-k 1) tokens as the decoder before graphs, which is the eager path;
//   - the device's top candidates vs top_candidates() on the host over the same logits (the
//     selection only compares; no arithmetic);
//   - the GPU decoder's attention with interleaved scores vs one position at a time, and its
//     fused residual + LayerNorm vs the two launches (the changes to the kernels of the default
//     path must not change its logits);
//   - a prompt in a batch vs the same prompt in a batch decoder of one slot: every kernel of the
//     batch decoder computes a row independently of the others;
//   - the batch decoder's Linear, with and without the LayerNorm it applies to its input rows, vs
//     its arithmetic replayed on the host operation by operation (fmaf, the warp butterfly, IEEE
//     adds, divisions and square roots round the same on both), and that LayerNorm vs the bits of
//     layernorm_forward: the schedule of its loads and the grid must not change a bit.
// What is compared with a tolerance:
//   - the batch decoder in fp32 vs the CPU decoder: 1e-4 (as tests/gpu/test_decode.cpp; its own
//     Linear kernels order the sums differently from cuBLASLt and the CPU);
//   - the batch decoder in bf16 vs the CPU decoder run with the same weights rounded to bf16:
//     within 6e-2 of max|logit| plus 6e-2 relative. The weights then agree exactly; what remains
//     is the KV cache stored in bf16 (each key and value off by up to 2^-9 relative) and fp32
//     reordering. How large such rounding is here was measured on the CPU: rounding the weights
//     alone to bf16 moves these random models' logits by at most 1.0e-2 (small model) and 2.0e-2
//     (wider model) of max|logit| over 25 seeds and 37..133 positions; the cache's rounding is of
//     the same kind, so 6e-2 leaves about 3x, while a wrong cache row or head moves them by O(1).
//   - the batch decoder in bf16 vs the fp32 CPU decoder (weights not rounded): both effects
//     together, bound 1.5e-1 of max|logit| plus 1.5e-1 relative;
//   - the same bounds for widths and head sizes that take each path of the batch decoder's
//     kernels (LayerNorm inside the Linear or before it, odd head sizes), several slots at once;
//   - the batch decoder's attention vs a double-precision reference: 1e-4 (its scores are summed
//     by lanes over channels, then a warp butterfly: not the CPU's order); each of its rows the
//     same bits alone as in a batch.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <string>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cpu/decode_cpu.h"
#include "cuda/decode_batch.h"
#include "cuda/decode_batch_ops.h"
#include "cuda/decode_cuda.h"
#include "cuda/ops_cuda.h"
#include "model/gpt2.h"
#include "sample/batch.h"
#include "sample/sampling.h"
#include "slow_copy.h"
#include "test_kernels_util.h"
#include "test_model.h"

namespace sgpt::test {
namespace {

// Random parameters as in test_decode.cpp (attention far from uniform, biases and LayerNorm
// parameters matter); the padded vocabulary rows stay zero.
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

// The parameters the bf16 batch decoder computes with: its matrices rounded to bf16.
std::vector<float> bf16_matrices(const ModelConfig& c, std::vector<float> p) {
  const ParamLayout L = ParamLayout::make(c);
  for (int t : {kWte, kWpe, kQkvw, kAttprojw, kFcw, kFcprojw}) {
    std::vector<float> v(p.begin() + L.offset[t], p.begin() + L.offset[t] + L.size[t]);
    v = as_stored<bf16>(v);
    std::copy(v.begin(), v.end(), p.begin() + L.offset[t]);
  }
  return p;
}

std::vector<float> as_vec(const float* l, int V) { return std::vector<float>(l, l + V); }

// 2 layers of width 72 (3 heads), block 16, vocabulary 123; and a wider one with a longer block.
ModelConfig small_config() { return sgpt_test::model_config(2, 3, 72, 16, 123, 0, true, true); }
ModelConfig wider_config() { return sgpt_test::model_config(3, 4, 128, 64, 700, 768, false, true); }

// ---- the GPU decoder: graphs ----

TEST(DecodeGraph, GraphLogitsEqualEagerOverManyStepsAndSlides) {
  SGPT_SKIP_WITHOUT_GPU();
  for (const ModelConfig& c : {small_config(), wider_config()}) {
    SeededRng rng(" block " + std::to_string(c.block_size));
    const std::vector<float> params = random_params(c, rng.seed);
    auto graph = make_cuda_decoder(c, CudaDecoderOptions{.graphs = true});
    auto eager = make_cuda_decoder(c, CudaDecoderOptions{.graphs = false});
    graph->set_params(params.data());
    eager->set_params(params.data());
    const std::vector<int> prompt = rng.ints(5, 0, c.vocab_size);
    ASSERT_TRUE(same_bits(as_vec(graph->prefill(prompt), c.vocab_size), as_vec(eager->prefill(prompt), c.vocab_size)));
    const int steps = 3 * c.block_size + 7;  // several slides
    const std::vector<int> toks = rng.ints(steps, 0, c.vocab_size);
    for (int i = 0; i < steps; ++i) {
      const std::vector<float> g = as_vec(graph->step(toks[i]), c.vocab_size);
      const std::vector<float> e = as_vec(eager->step(toks[i]), c.vocab_size);
      ASSERT_EQ(graph->window(), eager->window()) << "step " << i;
      ASSERT_TRUE(same_bits(g, e)) << "step " << i << " (window " << graph->length() << ")";
    }
    EXPECT_GE(graph->slides(), 2);
    // The graph was captured and replayed (a failed capture falls back to eager steps).
    EXPECT_EQ(graph->name().find("capture failed"), std::string::npos) << graph->name();
    // Top-candidate output from the same graph decoder: the device's selection equals the host's
    // over the eager logits.
    for (int k : {1, 7, 40, 64}) {
      if (k >= c.vocab_size) continue;
      graph->set_top_output(k);
      graph->reset();
      eager->reset();
      ASSERT_EQ(graph->prefill(prompt), nullptr);
      const float* l = eager->prefill(prompt);
      for (int i = 0; i < c.block_size + 3; ++i) {
        const std::vector<Candidate> want = top_candidates(l, c.vocab_size, k);
        ASSERT_EQ(graph->top().size(), want.size());
        for (int j = 0; j < k; ++j) {
          ASSERT_EQ(graph->top()[j].id, want[j].id) << "k " << k << " step " << i << " candidate " << j;
          ASSERT_EQ(graph->top()[j].key, want[j].key) << "k " << k << " step " << i << " candidate " << j;
        }
        ASSERT_EQ(graph->step(toks[i]), nullptr);
        l = eager->step(toks[i]);
      }
      graph->set_top_output(0);
    }
  }
}

// Greedy decoding (--top-k 1) for a few hundred tokens: the graph path with the device's argmax
// gives the tokens of the eager path (the decoder before graphs) with host sampling.
TEST(DecodeGraph, GreedyTokensEqualTheEagerPath) {
  SGPT_SKIP_WITHOUT_GPU();
  for (const ModelConfig& c : {small_config(), wider_config()}) {
    SeededRng rng(" block " + std::to_string(c.block_size));
    const std::vector<float> params = random_params(c, rng.seed);
    auto graph = make_cuda_decoder(c, CudaDecoderOptions{.graphs = true});
    auto eager = make_cuda_decoder(c, CudaDecoderOptions{.graphs = false});
    graph->set_params(params.data());
    eager->set_params(params.data());
    const std::vector<int> prompt = rng.ints(3, 0, c.vocab_size);
    SamplingOptions greedy;
    greedy.top_k = 1;
    const std::vector<int> got = generate(*graph, prompt, 300, greedy);
    // The eager path drawing from full logits on the host, as before graphs.
    std::vector<int> want;
    const float* l = eager->prefill(prompt);
    for (int i = 0; i < 300; ++i) {
      want.push_back(sample_token(l, c.vocab_size, greedy, static_cast<uint32_t>(i)));
      if (i + 1 < 300) l = eager->step(want.back());
    }
    EXPECT_EQ(got, want);
    // And sampling with a top-k cut: the same tokens too.
    SamplingOptions o;
    o.temperature = 0.9;
    o.top_k = 20;
    o.top_p = 0.95;
    o.seed = 5;
    EXPECT_EQ(generate(*graph, prompt, 200, o), generate(*eager, prompt, 200, o));
  }
}

// ---- the GPU decoder's attention kernel: interleaved scores, the same bits ----

// decode_attention scores 4 positions per warp at once; the per-position arithmetic must be the
// loop's before the interleaving, bit for bit (so the logits of the default path stay those of
// the decoder before graphs), for every length (groups of 4 x 8 positions and the remainder).
TEST(DecodeKernels, InterleavedScoresGiveTheSameBits) {
  SGPT_SKIP_WITHOUT_GPU();
  SeededRng rng;
  struct Shape {
    int C, NH, T;
  };
  for (const Shape sh : {Shape{72, 3, 16}, Shape{768, 12, 1024}, Shape{128, 2, 300}}) {
    const int C = sh.C, T = sh.T;
    const DeviceBuffer<float> kc = to_device<float>(rng.normal(size_t(T) * C, 1.0f));
    const DeviceBuffer<float> vc = to_device<float>(rng.normal(size_t(T) * C, 1.0f));
    for (const int pos0 : {0, 1, 7, 31, 32, 33, 63, T / 2, T - 5, T - 1}) {
      for (const int n : {1, 5}) {
        if (pos0 + n > T) continue;
        const DeviceBuffer<float> qkv = to_device<float>(rng.normal(size_t(n) * 3 * C, 1.0f));
        DeviceBuffer<float> a(size_t(n) * C), b(size_t(n) * C);
        const float scale = 0.125f;
        cuda::decode_attention(a.get(), qkv.get(), kc.get(), vc.get(), n, pos0, C, sh.NH, scale, T, nullptr, nullptr, true);
        cuda::decode_attention(b.get(), qkv.get(), kc.get(), vc.get(), n, pos0, C, sh.NH, scale, T, nullptr, nullptr, false);
        ASSERT_TRUE(same_bits(a.download(), b.download())) << "C " << C << " pos0 " << pos0 << " n " << n;
      }
    }
  }
}

// The GPU decoder fuses each residual with the LayerNorm after it; the fused launcher must give
// the bits of the two launches it replaced, for the decoder's shapes (one row, a prefill's rows).
TEST(DecodeKernels, FusedResidualLayerNormGivesTheSameBits) {
  SGPT_SKIP_WITHOUT_GPU();
  SeededRng rng;
  for (const int C : {72, 128, 384, 768, 1024}) {
    for (const int n : {1, 3, 16}) {
      const DeviceBuffer<float> a = to_device<float>(rng.normal(size_t(n) * C, 1.0f));
      const DeviceBuffer<float> b = to_device<float>(rng.normal(size_t(n) * C, 0.5f));
      const DeviceBuffer<float> w = to_device<float>(rng.normal(C, 0.2f, 1.0f));
      const DeviceBuffer<float> bias = to_device<float>(rng.normal(C, 0.2f));
      DeviceBuffer<float> res1(size_t(n) * C), out1(size_t(n) * C), res2(size_t(n) * C), out2(size_t(n) * C);
      DeviceBuffer<float> mean(n), rstd(n);
      for (const float* bp : {static_cast<const float*>(bias.get()), static_cast<const float*>(nullptr)}) {
        cuda::residual_forward<float>(res1.get(), a.get(), b.get(), size_t(n) * C, nullptr);
        cuda::layernorm_forward<float>(out1.get(), mean.get(), rstd.get(), res1.get(), w.get(), bp, n, C, nullptr);
        cuda::residual_layernorm_forward<float>(res2.get(), out2.get(), mean.get(), rstd.get(), a.get(), b.get(),
                                                w.get(), bp, n, C, nullptr);
        ASSERT_TRUE(same_bits(res1.download(), res2.download())) << "C " << C << " n " << n;
        ASSERT_TRUE(same_bits(out1.download(), out2.download())) << "C " << C << " n " << n;
      }
    }
  }
}

// ---- the batch decoder's Linear: its arithmetic, bit for bit ----

// Operations rounded one by one on the host (volatile: never contracted into an FMA), as the
// device's explicitly rounded or uncontracted ones.
float rn_add(float a, float b) {
  volatile float r = a + b;
  return r;
}
float rn_mul(float a, float b) {
  volatile float r = a * b;
  return r;
}

// warp_sum's butterfly over 32 lane values (common.cuh): lane l adds lane l ^ o's value, o = 16,
// 8, 4, 2, 1; lane 0's result.
float butterfly(std::array<float, 32> v) {
  for (int o = 16; o > 0; o >>= 1) {
    const std::array<float, 32> u = v;
    for (int l = 0; l < 32; ++l) v[l] = rn_add(u[l], u[l ^ o]);
  }
  return v[0];
}

// LayerNorm of one row with layernorm_forward<float>'s arithmetic: lanes hold vectors of 4 at
// (l + 32 i) 4 (the vectorized path: C % 4 == 0 and C <= 896) or elements l, l + 32, ... (the
// general path); per-lane sums in that order, the butterfly, / C; the same for (x - mean)^2 with
// FMAs; rstd = 1 / sqrt(var / C + 1e-5); out = ((x - mean) rstd) w (+ b), each rounded.
std::vector<float> layernorm_ref(const float* x, const float* w, const float* b, int C) {
  const bool vec = C % 4 == 0 && C <= 7 * 32 * 4;
  std::array<std::vector<int>, 32> lane;
  for (int l = 0; l < 32; ++l) {
    if (vec) {
      for (int i = 0; (l + 32 * i) * 4 < C; ++i)
        for (int j = 0; j < 4; ++j) lane[l].push_back((l + 32 * i) * 4 + j);
    } else {
      for (int c = l; c < C; c += 32) lane[l].push_back(c);
    }
  }
  std::array<float, 32> s{};
  for (int l = 0; l < 32; ++l)
    for (int c : lane[l]) s[l] = rn_add(s[l], x[c]);
  const float m = butterfly(s) / static_cast<float>(C);
  std::array<float, 32> v{};
  for (int l = 0; l < 32; ++l)
    for (int c : lane[l]) {
      const float d = x[c] - m;
      v[l] = std::fmaf(d, d, v[l]);
    }
  const float r = 1.0f / std::sqrt(rn_add(butterfly(v) / static_cast<float>(C), 1e-5f));
  std::vector<float> y(C);
  for (int c = 0; c < C; ++c) {
    y[c] = rn_mul(rn_mul(x[c] - m, r), w[c]);
    if (b) y[c] = rn_add(y[c], b[c]);
  }
  return y;
}

// out[r, o] of batch_linear with a bias and a residual (kernels/decode_batch.cu's header): lane l
// takes the elements l vec + 32 vec j + e in order (vec: 16 / sizeof(W) when K is a multiple of
// it, else 1), fmaf(w, x, acc); the butterfly; + bias; residual +.
std::vector<float> linear_ref(const std::vector<float>& in, const std::vector<float>& w, int n, int K,
                              int OC, int vec, const std::vector<float>& bias,
                              const std::vector<float>& residual) {
  std::vector<float> out(size_t(n) * OC);
  for (int r = 0; r < n; ++r) {
    const float* x = in.data() + size_t(r) * K;
    for (int o = 0; o < OC; ++o) {
      const float* wr = w.data() + size_t(o) * K;
      std::array<float, 32> acc{};
      for (int l = 0; l < 32; ++l)
        for (int i0 = l * vec; i0 < K; i0 += 32 * vec)
          for (int e = 0; e < vec; ++e) acc[l] = std::fmaf(wr[i0 + e], x[i0 + e], acc[l]);
      const float v = rn_add(butterfly(acc), bias[o]);
      out[size_t(r) * OC + o] = rn_add(residual[size_t(r) * OC + o], v);
    }
  }
  return out;
}

// batch_linear, with and without a LayerNorm before it (normalised in its blocks where the width
// allows, by layernorm_forward otherwise), equals the arithmetic above bit for bit: the lanes'
// chunked loads, the columns a warp loops over (OC beyond what the device holds at once) and the
// rows of several blocks (n = 11) change nothing; and the LayerNorm it computes is the one
// layernorm_forward writes.
// A Linear's random operands on the host and the device: n rows of K inputs, OC columns of
// weights as stored in W, a bias, a residual, LayerNorm parameters; the prologue (ln: 0 none, 1 a
// LayerNorm with its bias, 2 without) and the epilogue (bias and residual) that read them.
template <class W>
struct LinearCase {
  int K, n, OC;
  std::vector<float> x, wf, bias, res, lnw, lnb;
  DeviceBuffer<float> dx, dbias, dres, dlnw, dlnb;
  DeviceBuffer<W> dw;
  DeviceBuffer<float> ln_out, mean, rstd;
  cuda::LinearPrologue pro;
  cuda::LinearEpilogue<W> ep;

  LinearCase(SeededRng& rng, int K_, int n_, int OC_, int ln)
      : K(K_), n(n_), OC(OC_), x(rng.normal(size_t(n) * K, 1.0f, 0.3f)),
        wf(as_stored<W>(rng.normal(size_t(OC) * K, 0.1f))), bias(rng.normal(OC, 0.5f)),
        res(rng.normal(size_t(n) * OC, 1.0f)), lnw(rng.normal(K, 0.2f, 1.0f)), lnb(rng.normal(K, 0.2f)),
        dx(to_device<float>(x)), dbias(to_device<float>(bias)), dres(to_device<float>(res)),
        dlnw(to_device<float>(lnw)), dlnb(to_device<float>(lnb)), dw(to_device<W>(wf)),
        ln_out(size_t(n) * K), mean(n), rstd(n) {
    if (ln > 0) {
      pro.ln_weight = dlnw.get();
      pro.ln_bias = ln == 1 ? dlnb.get() : nullptr;
      pro.ln_out = ln_out.get();
      pro.mean = mean.get();
      pro.rstd = rstd.get();
    }
    ep.bias = dbias.get();
    ep.residual = dres.get();
  }
};

template <class W>
void check_linear_bits(SeededRng& rng, int K, int n, int OC, int ln) {
  const std::string what = std::string(std::is_same_v<W, float> ? "fp32" : "bf16") + " K " +
                           std::to_string(K) + " n " + std::to_string(n) + " OC " +
                           std::to_string(OC) + " layernorm " + std::to_string(ln);
  LinearCase<W> c(rng, K, n, OC, ln);
  const std::vector<float>& x = c.x;
  const std::vector<float>& lnw = c.lnw;
  const std::vector<float>& lnb = c.lnb;
  DeviceBuffer<float> out(size_t(n) * OC);
  poison(out);
  cuda::batch_linear<W>(out.get(), c.dx.get(), c.dw.get(), n, K, OC, c.pro, c.ep, nullptr);
  std::vector<float> in = x;
  if (ln > 0) {
    for (int r = 0; r < n; ++r) {
      const std::vector<float> y = layernorm_ref(x.data() + size_t(r) * K, lnw.data(),
                                                 ln == 1 ? lnb.data() : nullptr, K);
      std::copy(y.begin(), y.end(), in.begin() + size_t(r) * K);
    }
    // The reference LayerNorm is layernorm_forward's, bit for bit.
    DeviceBuffer<float> sep(size_t(n) * K);
    cuda::layernorm_forward<float>(sep.get(), c.mean.get(), c.rstd.get(), c.dx.get(), c.dlnw.get(),
                                   c.pro.ln_bias, n, K, nullptr);
    ASSERT_TRUE(same_bits(to_host(sep), in)) << what << ": layernorm_forward vs its reference";
  }
  const int vec = K % (16 / int(sizeof(W))) == 0 ? 16 / int(sizeof(W)) : 1;
  ASSERT_TRUE(same_bits(to_host(out), linear_ref(in, c.wf, n, K, OC, vec, c.bias, c.res))) << what;
}

TEST(BatchKernels, LinearEqualsItsArithmeticBitForBit) {
  SGPT_SKIP_WITHOUT_GPU();
  SeededRng rng;
  struct Shape {
    int K, n, OC;
  };
  // K: fused LayerNorm at 72, 84 (bf16: scalar weight loads), 96, 768 (124M) and 896 (the widest);
  // layernorm_forward first at 90 (not a multiple of 4), 1000 and 3072 (wider than 896).
  std::vector<Shape> shapes;
  for (int K : {72, 84, 90, 96, 768, 896, 1000})
    for (int n : {1, 3, 11}) shapes.push_back({K, n, 37});
  for (int K : {96, 768}) shapes.push_back({K, 11, 5003});
  shapes.push_back({90, 3, 5003});
  shapes.push_back({3072, 3, 301});
  for (const Shape& sh : shapes) {
    for (int ln : {0, 1, 2}) {  // none, with a bias, without
      check_linear_bits<float>(rng, sh.K, sh.n, sh.OC, ln);
      check_linear_bits<bf16>(rng, sh.K, sh.n, sh.OC, ln);
      if (HasFatalFailure()) return;
    }
  }
}

// A dependent launch of batch_linear (with and without its LayerNorm; 16-byte and scalar weight
// loads) and of batch_attention reads its input only after the kernel before it has written it:
// that kernel (slow_copy) lets them start at once and writes their input some 100 us later, after
// the input was poisoned. Their outputs equal plain launches' on the finished input, bit for bit.
// Where dependent launches are not active (batch_dependent_launch_active()) this runs plain launches.
template <class W>
void check_dependent_waits(SeededRng& rng, cudaStream_t s, int K, int ln) {
  const std::string what = std::string(std::is_same_v<W, float> ? "fp32" : "bf16") + " K " +
                           std::to_string(K) + " layernorm " + std::to_string(ln);
  const int n = 3, OC = 2 * K + 5;
  constexpr long long kSpin = 200000;  // clock cycles: about 100 us
  const LinearCase<W> c(rng, K, n, OC, ln);
  DeviceBuffer<float> in(size_t(n) * K), want(size_t(n) * OC), got(size_t(n) * OC);
  cuda::batch_linear<W>(want.get(), c.dx.get(), c.dw.get(), n, K, OC, c.pro, c.ep, s);
  poison(in);
  poison(got);
  SGPT_CUDA_CHECK(cudaDeviceSynchronize());
  slow_copy(in.get(), c.dx.get(), size_t(n) * K, kSpin, s);
  cuda::batch_linear<W>(got.get(), in.get(), c.dw.get(), n, K, OC, c.pro, c.ep, s, /*dependent=*/true);
  SGPT_CUDA_CHECK(cudaStreamSynchronize(s));
  ASSERT_TRUE(same_bits(to_host(got), to_host(want))) << what << ": dependent Linear";

  // Attention over a cache of T positions, its queries written by the slow copy.
  const int NH = 4, C = 4 * 16, T = 40;
  const std::vector<float> kc = as_stored<W>(rng.normal(size_t(T) * C, 1.0f));
  const std::vector<float> vc = as_stored<W>(rng.normal(size_t(T) * C, 1.0f));
  const std::vector<float> qkv = rng.normal(size_t(n) * 3 * C, 1.0f);
  const std::vector<int> pos{0, 17, T - 1}, slot{0, 0, 0};
  const DeviceBuffer<W> dk = to_device<W>(kc), dv = to_device<W>(vc);
  const DeviceBuffer<float> qsrc = to_device<float>(qkv);
  const DeviceBuffer<int> dslot = to_device_int(slot), dpos = to_device_int(pos);
  DeviceBuffer<float> q(qkv.size()), awant(size_t(n) * C), agot(size_t(n) * C);
  cuda::batch_attention<W>(awant.get(), qsrc.get(), dk.get(), dv.get(), dslot.get(), dpos.get(),
                           size_t(T) * C, n, C, NH, 0.25f, T, s);
  poison(q);
  poison(agot);
  SGPT_CUDA_CHECK(cudaDeviceSynchronize());
  slow_copy(q.get(), qsrc.get(), qkv.size(), kSpin, s);
  cuda::batch_attention<W>(agot.get(), q.get(), dk.get(), dv.get(), dslot.get(), dpos.get(),
                           size_t(T) * C, n, C, NH, 0.25f, T, s, /*dependent=*/true);
  SGPT_CUDA_CHECK(cudaStreamSynchronize(s));
  ASSERT_TRUE(same_bits(to_host(agot), to_host(awant))) << what << ": dependent attention";
}

TEST(BatchKernels, DependentLaunchesWaitForTheKernelBefore) {
  SGPT_SKIP_WITHOUT_GPU();
  std::printf("dependent launches: %s\n", cuda::batch_dependent_launch_active() ? "on" : "off");
  SeededRng rng;
  cudaStream_t s = nullptr;
  SGPT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (int K : {768, 84}) {
    for (int ln : {0, 1}) {
      check_dependent_waits<float>(rng, s, K, ln);
      check_dependent_waits<bf16>(rng, s, K, ln);
      if (HasFatalFailure()) break;
    }
    if (HasFatalFailure()) break;
  }
  SGPT_CUDA_CHECK(cudaStreamDestroy(s));
}

// ---- the batch decoder's attention ----

// batch_attention against a double-precision softmax(q . k * scale) @ v over the cached positions
// 0..pos (1e-4: fp32 sums in another order), idle rows exactly zero, and each row's output the
// same bits when it runs alone: head sizes 64 (124M), 32, 30 (pairs of channels per lane), 45
// (odd: one channel per lane) and 128; lengths 1 to the whole cache, across groups of 4 x 8
// positions and the values loaded with the keys.
template <class W>
void check_attention(SeededRng& rng, int C, int NH, int T) {
  const std::string what = std::string(std::is_same_v<W, float> ? "fp32" : "bf16") + " C " +
                           std::to_string(C) + " heads " + std::to_string(NH) + " T " + std::to_string(T);
  const int S = 3, hs = C / NH;
  const std::vector<float> kc = as_stored<W>(rng.normal(size_t(S) * T * C, 1.0f));
  const std::vector<float> vc = as_stored<W>(rng.normal(size_t(S) * T * C, 1.0f));
  std::vector<int> pos;
  for (int p : {0, 1, 7, 8, 31, 32, 33, 39, 63, T / 2, T - 2, T - 1})
    if (p < T) pos.push_back(p);
  pos.push_back(-1);  // an idle row
  const int n = static_cast<int>(pos.size());
  std::vector<int> slot(n);
  for (int r = 0; r < n; ++r) slot[r] = (r * 2) % S;
  const std::vector<float> qkv = rng.normal(size_t(n) * 3 * C, 1.0f);
  const float scale = 0.3f;
  const DeviceBuffer<W> dk = to_device<W>(kc), dv = to_device<W>(vc);
  const DeviceBuffer<float> dqkv = to_device<float>(qkv);
  const DeviceBuffer<int> dslot = to_device_int(slot), dpos = to_device_int(pos);
  DeviceBuffer<float> out(size_t(n) * C);
  poison(out);
  cuda::batch_attention<W>(out.get(), dqkv.get(), dk.get(), dv.get(), dslot.get(), dpos.get(), size_t(T) * C, n,
                           C, NH, scale, T, nullptr);
  const std::vector<float> got = to_host(out);
  std::vector<float> ref(size_t(n) * C, 0.0f);
  for (int r = 0; r < n; ++r) {
    if (pos[r] < 0) continue;
    for (int h = 0; h < NH; ++h) {
      const float* q = qkv.data() + size_t(r) * 3 * C + size_t(h) * hs;
      const size_t base = size_t(slot[r]) * T * C + size_t(h) * hs;
      std::vector<double> sc(pos[r] + 1);
      double mx = -INFINITY, sum = 0.0;
      for (int t = 0; t <= pos[r]; ++t) {
        double d = 0.0;
        for (int i = 0; i < hs; ++i) d += double(q[i]) * kc[base + size_t(t) * C + i];
        sc[t] = d * scale;
        mx = std::max(mx, sc[t]);
      }
      for (double& e : sc) sum += (e = std::exp(e - mx));
      for (int i = 0; i < hs; ++i) {
        double a = 0.0;
        for (int t = 0; t <= pos[r]; ++t) a += sc[t] / sum * vc[base + size_t(t) * C + i];
        ref[size_t(r) * C + size_t(h) * hs + i] = static_cast<float>(a);
      }
    }
  }
  expect_close(got, ref, Tol{1e-4, 1e-4}, what);
  for (int r = 0; r < n; ++r) {
    if (pos[r] >= 0) continue;
    for (int c = 0; c < C; ++c) ASSERT_EQ(got[size_t(r) * C + c], 0.0f) << what << " idle row " << r;
  }
  for (int r = 0; r < n; ++r) {
    DeviceBuffer<float> one(C);
    cuda::batch_attention<W>(one.get(), dqkv.get() + size_t(r) * 3 * C, dk.get(), dv.get(), dslot.get() + r,
                             dpos.get() + r, size_t(T) * C, 1, C, NH, scale, T, nullptr);
    const std::vector<float> alone = to_host(one);
    ASSERT_TRUE(same_bits(alone, std::vector<float>(got.begin() + size_t(r) * C, got.begin() + size_t(r + 1) * C)))
        << what << " row " << r << " (position " << pos[r] << ") alone vs in the batch";
  }
}

TEST(BatchKernels, AttentionCloseToTheReferenceAndIndependentOfTheOtherRows) {
  SGPT_SKIP_WITHOUT_GPU();
  SeededRng rng;
  struct Shape {
    int C, NH, T;
  };
  for (const Shape sh : {Shape{768, 12, 64}, Shape{96, 3, 40}, Shape{90, 3, 20}, Shape{90, 2, 33},
                         Shape{128, 1, 300}, Shape{768, 12, 1024}}) {
    check_attention<float>(rng, sh.C, sh.NH, sh.T);
    check_attention<bf16>(rng, sh.C, sh.NH, sh.T);
    if (HasFatalFailure()) return;
  }
}

// ---- the batch decoder ----

class BatchGpu : public ::testing::TestWithParam<bool> {};  // bf16?

// One slot against the CPU decoder over a prompt, steps and slides.
TEST_P(BatchGpu, LogitsCloseToTheCpuDecoder) {
  SGPT_SKIP_WITHOUT_GPU();
  const bool bf16 = GetParam();
  for (const ModelConfig& c : {small_config(), wider_config()}) {
    SeededRng rng(std::string(bf16 ? " bf16" : " fp32") + " block " + std::to_string(c.block_size));
    const std::vector<float> params = random_params(c, rng.seed);
    auto gpu = make_cuda_batch_decoder(c, 1, CudaBatchOptions{.bf16 = bf16});
    gpu->set_params(params.data());
    auto cpu = make_cpu_decoder(c);
    const std::vector<float> ref_params = bf16 ? bf16_matrices(c, params) : params;
    cpu->set_params(ref_params.data());
    auto cpu32 = make_cpu_decoder(c);
    cpu32->set_params(params.data());
    const Tol tol = bf16 ? Tol{6e-2, 6e-2} : Tol{1e-4, 1e-4};
    const std::vector<int> prompt = rng.ints(6, 0, c.vocab_size);
    gpu->start(0, prompt);
    expect_close(as_vec(gpu->logits(0), c.vocab_size), as_vec(cpu->prefill(prompt), c.vocab_size), tol, "prefill");
    cpu32->prefill(prompt);
    const int steps = 2 * c.block_size + 5;
    const std::vector<int> toks = rng.ints(steps, 0, c.vocab_size);
    for (int i = 0; i < steps; ++i) {
      gpu->step(std::vector<int>{toks[i]});
      const std::vector<float> g = as_vec(gpu->logits(0), c.vocab_size);
      const std::vector<float> r = as_vec(cpu->step(toks[i]), c.vocab_size);
      ASSERT_EQ(gpu->window(0), cpu->window());  // both after the step: the new token cached
      expect_close(g, r, tol, "step " + std::to_string(i));
      const std::vector<float> r32 = as_vec(cpu32->step(toks[i]), c.vocab_size);
      if (bf16) {
        expect_close(g, r32, Tol{1.5e-1, 1.5e-1}, "step " + std::to_string(i) + " vs fp32 weights");
      }
      if (HasFailure()) return;
    }
    EXPECT_GE(gpu->slides(0), 2);
  }
}

// A slot's logits are the same bits whatever the other slots hold, with and without graphs: a
// prompt in slot 1 of 3 (the others busy with other prompts, one of them idle at times) against
// the same prompt in a decoder of one slot.
TEST_P(BatchGpu, SlotLogitsEqualDecodingAlone) {
  SGPT_SKIP_WITHOUT_GPU();
  const bool bf16 = GetParam();
  const ModelConfig c = wider_config();
  SeededRng rng(bf16 ? " bf16" : " fp32");
  const std::vector<float> params = random_params(c, rng.seed);
  for (bool graphs : {true, false}) {
    auto batch = make_cuda_batch_decoder(c, 3, CudaBatchOptions{.bf16 = bf16, .graphs = graphs});
    auto alone = make_cuda_batch_decoder(c, 1, CudaBatchOptions{.bf16 = bf16, .graphs = true});
    batch->set_params(params.data());
    alone->set_params(params.data());
    const std::vector<int> prompt = rng.ints(9, 0, c.vocab_size);
    batch->start(0, rng.ints(30, 0, c.vocab_size));
    batch->start(1, prompt);
    batch->start(2, rng.ints(2, 0, c.vocab_size));
    alone->start(0, prompt);
    ASSERT_TRUE(same_bits(as_vec(batch->logits(1), c.vocab_size), as_vec(alone->logits(0), c.vocab_size)));
    const int steps = 2 * c.block_size + 11;
    for (int i = 0; i < steps; ++i) {
      const std::vector<int> t = rng.ints(3, 0, c.vocab_size);
      std::vector<int> step = t;
      if (i % 5 == 2) step[2] = -1;  // slot 2 idle this step
      batch->step(step);
      alone->step(std::vector<int>{t[1]});
      ASSERT_EQ(batch->window(1), alone->window(0)) << "step " << i;
      ASSERT_TRUE(same_bits(as_vec(batch->logits(1), c.vocab_size), as_vec(alone->logits(0), c.vocab_size)))
          << "step " << i << (graphs ? " (graphs)" : " (eager)");
    }
    EXPECT_GE(batch->slides(0), 2);
    EXPECT_EQ(batch->name().find("capture failed"), std::string::npos) << batch->name();
    EXPECT_EQ(alone->name().find("capture failed"), std::string::npos) << alone->name();
  }
}

// generate_batch: each prompt's tokens equal generate_batch of that prompt alone with its seed
// (the seed scheme of the command line: prompt i draws with seed + i), sampling with a top-k cut
// (selected on the device) and without one (all logits to the host).
TEST_P(BatchGpu, BatchTokensEqualDecodingEachPromptAlone) {
  SGPT_SKIP_WITHOUT_GPU();
  const bool bf16 = GetParam();
  const ModelConfig c = wider_config();
  SeededRng rng(bf16 ? " bf16" : " fp32");
  const std::vector<float> params = random_params(c, rng.seed);
  auto batch = make_cuda_batch_decoder(c, 4, CudaBatchOptions{.bf16 = bf16});
  auto alone = make_cuda_batch_decoder(c, 1, CudaBatchOptions{.bf16 = bf16});
  batch->set_params(params.data());
  alone->set_params(params.data());
  const std::vector<std::vector<int>> prompts = {rng.ints(1, 0, c.vocab_size), rng.ints(70, 0, c.vocab_size),
                                                 rng.ints(12, 0, c.vocab_size), rng.ints(33, 0, c.vocab_size)};
  for (const SamplingOptions& o : {SamplingOptions{.temperature = 0.8, .top_k = 40, .top_p = 0.95, .seed = 3},
                                   SamplingOptions{.temperature = 1.0, .top_k = 0, .top_p = 1.0, .seed = 4},
                                   SamplingOptions{.temperature = 1.0, .top_k = 1, .top_p = 1.0, .seed = 5}}) {
    std::vector<uint64_t> seeds;
    for (size_t i = 0; i < prompts.size(); ++i) seeds.push_back(o.seed + i);
    const auto got = generate_batch(*batch, prompts, 150, o, seeds);
    for (size_t i = 0; i < prompts.size(); ++i) {
      const auto want = generate_batch(*alone, {prompts[i]}, 150, o, std::span<const uint64_t>(&seeds[i], 1));
      EXPECT_EQ(got[i], want[0]) << "prompt " << i << ", top_k " << o.top_k;
    }
  }
}

// Widths that take each path of the batch decoder's kernels against the CPU decoder: each
// LayerNorm inside its Linear (C = 96, 84: a multiple of 4 up to 896; 84 also takes the scalar
// weight loads in bf16) or layernorm_forward first (C = 90: not a multiple of 4; 1000: wider than
// 896); attention head sizes even (32, 28, 30) and odd (45, 125); with and without biases. Three
// slots with prompts of 1, 6 and 13 tokens (several row blocks in a prefill), one slot idle at
// times, each against its own CPU decoder over steps and a slide.
TEST_P(BatchGpu, WidthsOfEveryPathCloseToTheCpuDecoder) {
  SGPT_SKIP_WITHOUT_GPU();
  const bool bf16 = GetParam();
  struct Shape {
    int C, NH;
    bool bias;
  };
  for (const Shape sh : {Shape{96, 3, true}, Shape{96, 3, false}, Shape{84, 3, true}, Shape{90, 3, true},
                         Shape{90, 2, false}, Shape{1000, 8, true}}) {
    const ModelConfig c = sgpt_test::model_config(2, sh.NH, sh.C, 16, 123, 0, sh.bias, true);
    SeededRng rng(std::string(bf16 ? " bf16" : " fp32") + " C " + std::to_string(sh.C) + " heads " +
                  std::to_string(sh.NH) + (sh.bias ? " bias" : " no bias"));
    const std::vector<float> params = random_params(c, rng.seed);
    auto gpu = make_cuda_batch_decoder(c, 3, CudaBatchOptions{.bf16 = bf16});
    gpu->set_params(params.data());
    const std::vector<float> ref_params = bf16 ? bf16_matrices(c, params) : params;
    const Tol tol = bf16 ? Tol{6e-2, 6e-2} : Tol{1e-4, 1e-4};
    std::vector<std::unique_ptr<Decoder>> cpu;
    const int lens[3] = {1, 6, 13};
    for (int b = 0; b < 3; ++b) {
      cpu.push_back(make_cpu_decoder(c));
      cpu[b]->set_params(ref_params.data());
      const std::vector<int> prompt = rng.ints(lens[b], 0, c.vocab_size);
      gpu->start(b, prompt);
      expect_close(as_vec(gpu->logits(b), c.vocab_size), as_vec(cpu[b]->prefill(prompt), c.vocab_size), tol,
                   "prefill " + std::to_string(b));
    }
    const int steps = c.block_size + 7;
    for (int i = 0; i < steps; ++i) {
      std::vector<int> t = rng.ints(3, 0, c.vocab_size);
      if (i % 4 == 1) t[1] = -1;  // slot 1 idle this step
      gpu->step(t);
      for (int b = 0; b < 3; ++b) {
        if (t[b] < 0) continue;
        const std::vector<float> r = as_vec(cpu[b]->step(t[b]), c.vocab_size);
        ASSERT_EQ(gpu->window(b), cpu[b]->window()) << "step " << i << " slot " << b;
        expect_close(as_vec(gpu->logits(b), c.vocab_size), r, tol,
                     "step " + std::to_string(i) + " slot " + std::to_string(b));
      }
      if (HasFailure()) return;
    }
    for (int b = 0; b < 3; ++b) EXPECT_GE(gpu->slides(b), 1) << "slot " << b;
  }
}

// Whether the batch decoder's launches should overlap on this device with this build: compute
// capability 9.0 or later, and the code the driver runs for it compiled for 9.0 or later (machine
// code of the device's major version, else the newest PTX it can JIT-compile). -1 when the
// build's list does not say (`native`, `all`).
int expect_dependent_launches() {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
    return -1;
  const int cc = major * 10 + minor;
  int sass = -1, ptx = -1;  // the best machine code and the best PTX for this device
  std::string archs = SGPT_TEST_CUDA_ARCHS;
  size_t b = 0;
  while (b <= archs.size()) {
    const size_t e = std::min(archs.find(',', b), archs.size());
    const std::string a = archs.substr(b, e - b);
    b = e + 1;
    if (a == "native") return major >= 9 ? 1 : 0;  // this GPU's own architecture
    size_t digits = 0;
    while (digits < a.size() && std::isdigit(static_cast<unsigned char>(a[digits]))) ++digits;
    if (digits == 0) return -1;  // all, all-major
    const int v = std::stoi(a.substr(0, digits));
    std::string suffix = a.substr(digits);
    const bool specific = !suffix.empty() && suffix[0] == 'a';  // 90a: that GPU alone
    if (!suffix.empty() && (suffix[0] == 'a' || suffix[0] == 'f')) suffix.erase(0, 1);
    if (specific && v != cc) continue;
    const bool has_sass = suffix != "-virtual", has_ptx = suffix != "-real";
    if (has_sass && v / 10 == major && v <= cc) sass = std::max(sass, v);
    if (has_ptx && v <= cc) ptx = std::max(ptx, v);
  }
  const int runs = sass >= 0 ? sass : ptx;
  return major >= 9 && runs >= 90 ? 1 : 0;
}

// Dependent launches (programmatic dependent launch: each kernel loads its first weights while the
// one before still runs) give the bits of plain launches, with and without graphs, over a prefill
// of several row blocks, steps with a slot idle at times, and slides; and they are on where this
// build and device allow them.
TEST_P(BatchGpu, DependentLaunchesGiveThePlainLaunchesBits) {
  SGPT_SKIP_WITHOUT_GPU();
  const bool bf16 = GetParam();
  const int expect = expect_dependent_launches();
  std::printf("dependent launches: %s (expected: %s; built for %s)\n",
              cuda::batch_dependent_launch_active() ? "on" : "off",
              expect < 0 ? "unknown" : expect ? "on" : "off", SGPT_TEST_CUDA_ARCHS);
  if (expect >= 0) ASSERT_EQ(cuda::batch_dependent_launch_active(), expect == 1);
  // C = 128 (LayerNorms inside the Linears), 768 (the 124M width, 3072-wide fc projection) and 90
  // (layernorm_forward before each Linear, scalar loads, odd head size).
  for (const ModelConfig& c : {wider_config(), sgpt_test::model_config(4, 12, 768, 40, 900, 0, true, true),
                               sgpt_test::model_config(2, 2, 90, 24, 300, 0, true, true)}) {
    SeededRng rng(std::string(bf16 ? " bf16" : " fp32") + " C " + std::to_string(c.n_embd));
    const std::vector<float> params = random_params(c, rng.seed);
    for (bool graphs : {true, false}) {
      auto dep = make_cuda_batch_decoder(
          c, 3, CudaBatchOptions{.bf16 = bf16, .graphs = graphs, .dependent_launches = true});
      auto plain = make_cuda_batch_decoder(
          c, 3, CudaBatchOptions{.bf16 = bf16, .graphs = graphs, .dependent_launches = false});
      EXPECT_EQ(dep->name().find("dependent launches") != std::string::npos,
                cuda::batch_dependent_launch_active())
          << dep->name();
      EXPECT_EQ(plain->name().find("dependent"), std::string::npos) << plain->name();
      dep->set_params(params.data());
      plain->set_params(params.data());
      const std::string what = std::string(graphs ? "graphs" : "eager") + " C " + std::to_string(c.n_embd);
      const int lens[3] = {13, 1, 30};
      for (int s = 0; s < 3; ++s) {
        const std::vector<int> prompt = rng.ints(lens[s], 0, c.vocab_size);
        dep->start(s, prompt);
        plain->start(s, prompt);
        ASSERT_TRUE(same_bits(as_vec(dep->logits(s), c.vocab_size), as_vec(plain->logits(s), c.vocab_size)))
            << what << " prefill of slot " << s;
      }
      const int steps = c.block_size + 9;
      for (int i = 0; i < steps; ++i) {
        std::vector<int> t = rng.ints(3, 0, c.vocab_size);
        if (i % 6 == 4) t[0] = -1;  // slot 0 idle this step
        dep->step(t);
        plain->step(t);
        for (int s = 0; s < 3; ++s) {
          if (t[s] < 0) continue;
          ASSERT_TRUE(same_bits(as_vec(dep->logits(s), c.vocab_size), as_vec(plain->logits(s), c.vocab_size)))
              << what << " step " << i << " slot " << s;
        }
      }
      EXPECT_GE(dep->slides(2), 1);
      EXPECT_EQ(dep->name().find("capture failed"), std::string::npos) << dep->name();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, BatchGpu, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "bf16" : "fp32"; });

// GPT-2 small's shape: the batch decoder in fp32 samples the CPU's first tokens (top 40, as the
// smoke test of test_decode.cpp), and bf16 runs; tokens/s printed, not checked.
TEST(BatchGpuSmoke, Gpt2Small) {
  SGPT_SKIP_WITHOUT_GPU();
  ModelConfig c;
  const std::vector<float> params = sgpt_test::initial_params(c, 1234);
  auto cpu = make_cpu_decoder(c);
  cpu->set_params(params.data());
  SamplingOptions o;
  o.top_k = 40;
  o.seed = 42;
  const std::vector<int> prompt{50256, 464, 3290, 318};
  const std::vector<int> want = generate(*cpu, prompt, 16, o);
  for (bool bf16 : {false, true}) {
    auto gpu = make_cuda_batch_decoder(c, 8, CudaBatchOptions{.bf16 = bf16});
    gpu->set_params(params.data());
    const std::vector<uint64_t> seeds(8, 42);
    const std::vector<std::vector<int>> prompts(8, prompt);
    const auto t0 = std::chrono::steady_clock::now();
    const auto got = generate_batch(*gpu, prompts, 200, o, seeds);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (int i = 1; i < 8; ++i) EXPECT_EQ(got[i], got[0]);  // the same prompt and seed in every slot
    if (!bf16) {
      EXPECT_EQ(std::vector<int>(got[0].begin(), got[0].begin() + 16), want);
    }
    std::printf("124M batch of 8: 1600 tokens in %.3f s = %.0f tokens/s (%s)\n", s, 1600 / s, gpu->name().c_str());
  }
}

}  // namespace
}  // namespace sgpt::test
