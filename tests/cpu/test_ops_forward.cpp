// Forward properties of the CPU ops (cpu/ops.h), of the whole model (cpu/gpt2_cpu.h), of GNB
// label sampling, and of the parameter layout and init (model/gpt2.h).
//
// References are computed independently in long double with the plain textbook loops. Tolerances
// are stated where used; float results are compared with bounds derived from float's unit
// roundoff u = 2^-24 ~ 6e-8 (a sum of K products is within ~K u sum|a b| of the exact value).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/philox.h"
#include "cpu/gpt2_cpu.h"
#include "cpu/ops.h"
#include "model/gpt2.h"
#include "test_model.h"

namespace {

using namespace sgpt::cpu;
using LD = long double;

template <class F>
std::vector<F> randn(size_t n, std::mt19937_64& rng, double sd = 1.0, double mean = 0.0) {
  std::normal_distribution<double> d(mean, sd);
  std::vector<F> v(n);
  for (auto& x : v) x = static_cast<F>(d(rng));
  return v;
}

// ---------------------------------------------------------------------------------------------
// Independent long double references.

void ref_layernorm(std::vector<LD>& out, const std::vector<LD>& x, const std::vector<LD>& w,
                   const std::vector<LD>* b, int N, int C) {
  out.assign(size_t(N) * C, 0);
  for (int n = 0; n < N; ++n) {
    LD m = 0, v = 0;
    for (int c = 0; c < C; ++c) m += x[n * C + c];
    m /= C;
    for (int c = 0; c < C; ++c) v += (x[n * C + c] - m) * (x[n * C + c] - m);
    v /= C;
    for (int c = 0; c < C; ++c)
      out[n * C + c] = (x[n * C + c] - m) / std::sqrt(v + 1e-5L) * w[c] + (b ? (*b)[c] : 0);
  }
}

void ref_matmul(std::vector<LD>& out, const std::vector<LD>& x, const std::vector<LD>& w,
                const std::vector<LD>* b, int N, int C, int OC) {
  out.assign(size_t(N) * OC, 0);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      LD s = b ? (*b)[o] : 0;
      for (int c = 0; c < C; ++c) s += x[size_t(n) * C + c] * w[size_t(o) * C + c];
      out[size_t(n) * OC + o] = s;
    }
}

// out [B,T,C], att [B,NH,T,T] from qkv [B,T,3C]
void ref_attention(std::vector<LD>& out, std::vector<LD>& att, const std::vector<LD>& qkv, int B,
                   int T, int C, int NH, LD scale) {
  const int hs = C / NH;
  out.assign(size_t(B) * T * C, 0);
  att.assign(size_t(B) * NH * T * T, 0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        std::vector<LD> s(t + 1);
        LD mx = -INFINITY;
        for (int u = 0; u <= t; ++u) {
          LD d = 0;
          for (int i = 0; i < hs; ++i)
            d += qkv[(size_t(b) * T + t) * 3 * C + h * hs + i] *
                 qkv[(size_t(b) * T + u) * 3 * C + C + h * hs + i];
          s[u] = d * scale;
          mx = std::max(mx, s[u]);
        }
        LD z = 0;
        for (int u = 0; u <= t; ++u) z += std::exp(s[u] - mx);
        for (int u = 0; u <= t; ++u) {
          const LD p = std::exp(s[u] - mx) / z;
          att[((size_t(b) * NH + h) * T + t) * T + u] = p;
          for (int i = 0; i < hs; ++i)
            out[(size_t(b) * T + t) * C + h * hs + i] +=
                p * qkv[(size_t(b) * T + u) * 3 * C + 2 * C + h * hs + i];
        }
      }
}

LD ref_gelu(LD x) {
  return 0.5L * x * (1 + std::tanh(std::sqrt(2 / 3.14159265358979323846264338327950288L) *
                                   (x + 0.044715L * x * x * x)));
}

template <class F>
std::vector<LD> to_ld(const std::vector<F>& v) {
  return std::vector<LD>(v.begin(), v.end());
}

// ---------------------------------------------------------------------------------------------
// LayerNorm

TEST(OpsForward, LayerNormNormalizes) {
  std::mt19937_64 rng(1);
  const int N = 10, C = 64;
  const auto x = randn<float>(size_t(N) * C, rng, 2.0, 3.0);
  const std::vector<float> ones(C, 1.0f);
  std::vector<float> out(x.size()), mean(N), rstd(N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), ones.data(),
                    static_cast<const float*>(nullptr), N, C);
  for (int n = 0; n < N; ++n) {
    LD m = 0, v = 0, xm = 0, xv = 0;
    for (int c = 0; c < C; ++c) xm += x[n * C + c];
    xm /= C;
    for (int c = 0; c < C; ++c) xv += (x[n * C + c] - xm) * (x[n * C + c] - xm);
    xv /= C;
    for (int c = 0; c < C; ++c) m += out[n * C + c];
    m /= C;
    for (int c = 0; c < C; ++c) v += (out[n * C + c] - m) * (out[n * C + c] - m);
    v /= C;
    // Mean 0 and (biased) variance var/(var + 1e-5), to float accuracy (1e-5 covers C u |x|/std).
    EXPECT_NEAR(double(m), 0.0, 1e-5) << "row " << n;
    EXPECT_NEAR(double(v), double(xv / (xv + 1e-5L)), 1e-5) << "row " << n;
    // Saved statistics: mean and 1/sqrt(var + eps).
    EXPECT_NEAR(mean[n], double(xm), 1e-5 * std::fabs(double(xm)) + 1e-6);
    EXPECT_NEAR(rstd[n], double(1 / std::sqrt(xv + 1e-5L)), 1e-5 * rstd[n]);
  }
}

TEST(OpsForward, LayerNormAffineMatchesReference) {
  std::mt19937_64 rng(2);
  const int N = 7, C = 33;
  for (bool with_bias : {true, false}) {
    const auto x = randn<float>(size_t(N) * C, rng, 1.5, -0.5);
    const auto w = randn<float>(C, rng, 0.3, 1.0), b = randn<float>(C, rng);
    std::vector<float> out(x.size()), mean(N), rstd(N);
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(),
                      with_bias ? b.data() : nullptr, N, C);
    std::vector<LD> ref, bl = to_ld(b);
    ref_layernorm(ref, to_ld(x), to_ld(w), with_bias ? &bl : nullptr, N, C);
    for (size_t i = 0; i < out.size(); ++i)  // |out| <~ 5: a few float ulps of that
      EXPECT_NEAR(out[i], double(ref[i]), 2e-6 * (1 + std::fabs(double(ref[i])))) << i;
  }
}

// ---------------------------------------------------------------------------------------------
// Matmul: against long double (bound K u sum|x w|), bit-exactness of the documented summation
// order (bias, then products added in increasing index order), thread-count independence.

struct MatmulCase {
  int N, C, OC;
};

TEST(OpsForward, MatmulMatchesReferenceAndSummationOrder) {
  std::mt19937_64 rng(3);
  // Shapes around the GEMM tiles (6-row panels, 96 x 256 tiles, K blocks of 256).
  for (MatmulCase s : {MatmulCase{1, 1, 1}, MatmulCase{5, 3, 7}, MatmulCase{101, 263, 70},
                       MatmulCase{300, 37, 270}, MatmulCase{97, 64, 513}}) {
    const int N = s.N, C = s.C, OC = s.OC;
    const auto x = randn<float>(size_t(N) * C, rng), w = randn<float>(size_t(OC) * C, rng);
    const auto b = randn<float>(OC, rng), dout = randn<float>(size_t(N) * OC, rng);
    std::vector<float> out(size_t(N) * OC);
    matmul_forward(out.data(), x.data(), w.data(), b.data(), N, C, OC);
    std::vector<LD> ref, bl = to_ld(b);
    ref_matmul(ref, to_ld(x), to_ld(w), &bl, N, C, OC);
    const double u = std::ldexp(1.0, -24);
    for (int n = 0; n < N; ++n)
      for (int o = 0; o < OC; ++o) {
        double mag = std::fabs(b[o]);
        float seq = b[o];  // the documented order, in float
        for (int c = 0; c < C; ++c) {
          mag += std::fabs(double(x[n * C + c]) * w[size_t(o) * C + c]);
          seq += x[size_t(n) * C + c] * w[size_t(o) * C + c];
        }
        const size_t i = size_t(n) * OC + o;
        ASSERT_NEAR(out[i], double(ref[i]), 1.01 * (C + 1) * u * mag) << N << "x" << C << "x" << OC;
        ASSERT_EQ(out[i], seq) << "summation order, element " << i;
      }
    // Backward: dinp += dout @ w ; dweight += dout^T @ x ; dbias += column sums of dout,
    // accumulated onto pre-filled buffers in row order.
    const auto pdx = randn<float>(x.size(), rng), pdw = randn<float>(w.size(), rng);
    const auto pdb = randn<float>(OC, rng);
    auto dx = pdx, dw = pdw, db = pdb;
    matmul_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), N, C, OC);
    for (int n = 0; n < N; ++n)
      for (int c = 0; c < C; ++c) {
        float seq = pdx[size_t(n) * C + c];
        LD exact = seq;
        for (int o = 0; o < OC; ++o) {
          seq += dout[size_t(n) * OC + o] * w[size_t(o) * C + c];
          exact += LD(dout[size_t(n) * OC + o]) * w[size_t(o) * C + c];
        }
        ASSERT_EQ(dx[size_t(n) * C + c], seq) << "dinp order";
        ASSERT_NEAR(dx[size_t(n) * C + c], double(exact), 1e-4 * std::sqrt(double(OC)));
      }
    for (int o = 0; o < OC; ++o) {
      for (int c = 0; c < C; ++c) {
        float seq = pdw[size_t(o) * C + c];
        for (int n = 0; n < N; ++n) seq += dout[size_t(n) * OC + o] * x[size_t(n) * C + c];
        ASSERT_EQ(dw[size_t(o) * C + c], seq) << "dweight order";
      }
      float sb = pdb[o];
      for (int n = 0; n < N; ++n) sb += dout[size_t(n) * OC + o];
      ASSERT_EQ(db[o], sb) << "dbias order";
    }
  }
}

TEST(OpsForward, ResultsIndependentOfThreadCount) {
#ifndef _OPENMP
  GTEST_SKIP() << "built without OpenMP";
#else
  std::mt19937_64 rng(4);
  const sgpt::ModelConfig cfg = sgpt_test::model_config(2, 4, 64, 32, 300, 384);
  const auto layout = sgpt::ParamLayout::make(cfg);
  const std::vector<float> p = sgpt_test::initial_params(cfg, 7);
  const int B = 4, T = 32;
  std::vector<int> inp(B * T), tgt(B * T);
  for (int i = 0; i < B * T; ++i) { inp[i] = (i * 37) % 300; tgt[i] = (i * 91 + 5) % 300; }
  auto run = [&](int threads, std::vector<float>& g) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    Gpt2<float> m(cfg, B, T);
    const float loss = m.forward(p.data(), inp.data(), tgt.data(), B);
    g.assign(layout.total, 0.0f);
    m.backward(p.data(), g.data(), 1.0f);
    omp_set_num_threads(saved);
    return loss;
  };
  std::vector<float> g1, g3;
  const float l1 = run(1, g1), l3 = run(3, g3);
  EXPECT_EQ(l1, l3);
  EXPECT_EQ(0, std::memcmp(g1.data(), g3.data(), g1.size() * sizeof(float)))
      << "gradients differ between 1 and 3 threads";
#endif
}

// ---------------------------------------------------------------------------------------------
// Attention

TEST(OpsForward, AttentionProbabilitiesAndOutput) {
  std::mt19937_64 rng(5);
  const int B = 2, T = 7, C = 12, NH = 3;
  const float scale = 0.31f;
  const auto qkv = randn<float>(size_t(B) * T * 3 * C, rng, 1.5);
  std::vector<float> out(size_t(B) * T * C), att(size_t(B) * NH * T * T, -7.0f);
  attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH, scale);
  std::vector<LD> rout, ratt;
  ref_attention(rout, ratt, to_ld(qkv), B, T, C, NH, scale);
  for (int bh = 0; bh < B * NH; ++bh)
    for (int t = 0; t < T; ++t) {
      const float* a = att.data() + (size_t(bh) * T + t) * T;
      double s = 0;
      for (int u = 0; u < T; ++u) {
        if (u > t) EXPECT_EQ(a[u], 0.0f) << "above the diagonal";
        else EXPECT_GT(a[u], 0.0f);
        s += a[u];
      }
      EXPECT_NEAR(s, 1.0, 1e-6) << "row " << t;  // T terms of float rounding
      for (int u = 0; u <= t; ++u)
        EXPECT_NEAR(a[u], double(ratt[(size_t(bh) * T + t) * T + u]), 1e-6);
    }
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], double(rout[i]), 1e-5) << i;
  // The first query attends only to itself: out = v_0.
  for (int h = 0; h < NH; ++h)
    for (int i = 0; i < C / NH; ++i) EXPECT_EQ(out[h * (C / NH) + i], qkv[2 * C + h * (C / NH) + i]);
}

// ---------------------------------------------------------------------------------------------
// GELU, residual, cross-entropy

TEST(OpsForward, GeluAndResidualMatchReference) {
  std::mt19937_64 rng(6);
  auto x = randn<float>(1000, rng, 3.0);
  x[0] = 0.0f;
  x[1] = -20.0f;
  x[2] = 20.0f;
  std::vector<float> y(x.size());
  gelu_forward(y.data(), x.data(), x.size());
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_NEAR(y[i], double(ref_gelu(x[i])), 4e-7 * (1 + std::fabs(x[i]))) << x[i];
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[2], 20.0f);
  EXPECT_NEAR(y[1], 0.0f, 1e-30);
  // Known value: GELU_tanh(1) = 0.5 (1 + tanh(sqrt(2/pi) 1.044715)) = 0.841191990...
  const float one = 1.0f;
  float g1;
  gelu_forward(&g1, &one, 1);
  EXPECT_NEAR(g1, 0.8411919906, 1e-7);
  std::vector<float> r(x.size());
  residual_forward(r.data(), x.data(), y.data(), x.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(r[i], x[i] + y[i]);
}

TEST(OpsForward, CrossEntropyMatchesMinusLogSoftmax) {
  std::mt19937_64 rng(7);
  const int N = 9, V = 37, Vp = 40;
  auto logits = randn<float>(size_t(N) * Vp, rng, 3.0);
  logits[5] = 80.0f;            // large values: a naive exp would overflow float
  logits[Vp + 2] = -100.0f;
  std::vector<int> tgt(N);
  for (int n = 0; n < N; ++n) tgt[n] = (n * 11 + 3) % V;
  tgt[0] = 5;
  tgt[1] = 2;  // the -100 logit: loss ~ 100+
  for (int pass = 0; pass < 2; ++pass) {
    // Second pass: garbage in the padded columns must not change anything.
    if (pass == 1)
      for (int n = 0; n < N; ++n)
        for (int j = V; j < Vp; ++j) logits[size_t(n) * Vp + j] = 1e30f;
    std::vector<float> losses(N);
    crossentropy_forward(losses.data(), logits.data(), tgt.data(), N, V, Vp);
    for (int n = 0; n < N; ++n) {
      LD z = 0;
      for (int j = 0; j < V; ++j) z += std::exp(LD(logits[size_t(n) * Vp + j]));
      const LD ref = -std::log(std::exp(LD(logits[size_t(n) * Vp + tgt[n]])) / z);
      ASSERT_TRUE(std::isfinite(losses[n]));
      EXPECT_NEAR(losses[n], double(ref), 2e-6 * (1 + double(ref))) << "row " << n;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// GNB label sampling

TEST(SampleLabels, DeterministicAndCounterBased) {
  std::mt19937_64 rng(8);
  const int T = 6, V = 11, Vp = 16, N = 4 * T;
  auto logits = randn<float>(size_t(N) * Vp, rng, 1.0);
  std::vector<int> a(N), b(N), c(N), part(2 * T);
  sample_labels(a.data(), logits.data(), N, T, V, Vp, 1234, 9, 0);
  sample_labels(b.data(), logits.data(), N, T, V, Vp, 1234, 9, 0);
  EXPECT_EQ(a, b) << "same seed, step, sequence, position -> same labels";
  // Rows 2T..4T sampled alone as sequences 2, 3 (seq0 = 2) give the same labels.
  sample_labels(part.data(), logits.data() + size_t(2) * T * Vp, 2 * T, T, V, Vp, 1234, 9, 2);
  for (int i = 0; i < 2 * T; ++i) EXPECT_EQ(part[i], a[2 * T + i]) << i;
  // Another step (or seed) draws other uniforms: most labels change for these flat-ish logits.
  sample_labels(c.data(), logits.data(), N, T, V, Vp, 1234, 10, 0);
  int same = 0;
  for (int i = 0; i < N; ++i) same += a[i] == c[i];
  EXPECT_LT(same, N / 2);
}

TEST(SampleLabels, InverseCdfOfThePhiloxUniform) {
  std::mt19937_64 rng(9);
  const int T = 50, V = 9, Vp = 16, N = 40 * T;
  auto logits = randn<float>(size_t(N) * Vp, rng, 2.0);
  for (int n = 0; n < N; ++n)
    for (int j = V; j < Vp; ++j) logits[size_t(n) * Vp + j] = 1e4f;  // padded: never drawn
  std::vector<int> lab(N);
  const uint64_t seed = 0x123456789abcdefULL;
  sample_labels(lab.data(), logits.data(), N, T, V, Vp, seed, 77, 3);
  int checked = 0;
  for (int n = 0; n < N; ++n) {
    ASSERT_GE(lab[n], 0);
    ASSERT_LT(lab[n], V);
    // Independent inverse CDF in long double: the first j with cdf_j > u.
    const LD u = sgpt::gnb_uniform(seed, 77, 3 + n / T, n % T);
    LD mx = -INFINITY, z = 0;
    for (int j = 0; j < V; ++j) mx = std::max(mx, LD(logits[size_t(n) * Vp + j]));
    std::vector<LD> cdf(V);
    for (int j = 0; j < V; ++j) cdf[j] = (z += std::exp(LD(logits[size_t(n) * Vp + j]) - mx));
    int ref = V - 1;
    for (int j = 0; j < V; ++j)
      if (cdf[j] / z > u) { ref = j; break; }
    // Skip draws within float rounding of a bin edge, where either answer is right.
    bool near_edge = false;
    for (int j = 0; j < V; ++j) near_edge |= std::fabs(double(cdf[j] / z - u)) < 1e-5;
    if (near_edge) continue;
    ++checked;
    EXPECT_EQ(lab[n], ref) << "row " << n << " u " << double(u);
  }
  EXPECT_GT(checked, N * 9 / 10);
}

TEST(SampleLabels, DominantLogitAlwaysDrawn) {
  const int T = 4, V = 5, Vp = 8, N = 64;
  std::vector<float> logits(size_t(N) * Vp, -1e30f);  // exp underflows to exactly 0
  for (int n = 0; n < N; ++n) logits[size_t(n) * Vp + (n % V)] = 0.0f;
  std::vector<int> lab(N);
  sample_labels(lab.data(), logits.data(), N, T, V, Vp, 5, 0, 0);
  for (int n = 0; n < N; ++n) EXPECT_EQ(lab[n], n % V);
}

// Chi-square goodness of fit: 20000 draws (200 sequences x 100 positions, all distinct Philox
// counters) from one row of logits over V = 7 (Vp = 8, the padded column huge and ignored).
// Pass if chi2 < 22.46, the 0.999 quantile of chi-square with 6 degrees of freedom (a correct
// sampler fails with probability 0.1% for a given seed; the seed is fixed, so the test is
// deterministic). A sampler that ignored the max-subtraction, used the wrong counter or an
// off-by-one bin would give chi2 in the hundreds.
TEST(SampleLabels, ChiSquareMatchesSoftmax) {
  const int V = 7, Vp = 8, T = 100, N = 20000;
  const float row[Vp] = {0.3f, -1.2f, 1.1f, 0.0f, 2.0f, -0.4f, 0.7f, 50.0f};
  std::vector<float> logits(size_t(N) * Vp);
  for (int n = 0; n < N; ++n) std::copy(row, row + Vp, logits.begin() + size_t(n) * Vp);
  std::vector<int> lab(N);
  sample_labels(lab.data(), logits.data(), N, T, V, Vp, 2024, 3, 0);
  std::vector<int> count(V, 0);
  for (int l : lab) {
    ASSERT_GE(l, 0);
    ASSERT_LT(l, V);
    ++count[l];
  }
  LD z = 0;
  for (int j = 0; j < V; ++j) z += std::exp(LD(row[j]));
  double chi2 = 0;
  for (int j = 0; j < V; ++j) {
    const double e = double(N * std::exp(LD(row[j])) / z);
    chi2 += (count[j] - e) * (count[j] - e) / e;
  }
  EXPECT_LT(chi2, 22.46);
}

// ---------------------------------------------------------------------------------------------
// Whole model: float vs double, and against a naive long double forward written here.

// 3 layers, 2 heads, width 16, block 8, vocabulary 29 (padded to 32).
sgpt::ModelConfig small_config(bool bias, bool layer_scale) {
  return sgpt_test::model_config(3, 2, 16, 8, 29, 32, bias, layer_scale);
}

// Logits [B*T, Vp] of GPT-2 computed straight from the definition (docs/design.md section 2).
std::vector<LD> ref_model_logits(const sgpt::ModelConfig& cfg, const std::vector<LD>& p,
                                 const std::vector<int>& inp, int B, int T) {
  const auto lay = sgpt::ParamLayout::make(cfg);
  const int C = cfg.n_embd, L = cfg.n_layer, NH = cfg.n_head, Vp = cfg.padded_vocab_size;
  const int N = B * T;
  auto slice = [&](int t, int l, size_t per) {
    if (lay.size[t] == 0) return std::vector<LD>();
    const auto first = p.begin() + lay.offset[t] + size_t(l) * per;
    return std::vector<LD>(first, first + per);
  };
  std::vector<LD> x(size_t(N) * C);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      x[n * C + c] = p[lay.offset[sgpt::kWte] + size_t(inp[n]) * C + c] +
                     p[lay.offset[sgpt::kWpe] + size_t(n % T) * C + c];
  const size_t Cs = C, C2 = size_t(C) * C;
  for (int l = 0; l < L; ++l) {
    std::vector<LD> h, qkv, y, att, a, h2, f, o;
    auto ln1b = slice(sgpt::kLn1b, l, Cs), qkvb = slice(sgpt::kQkvb, l, 3 * Cs);
    auto apb = slice(sgpt::kAttprojb, l, Cs), ln2b = slice(sgpt::kLn2b, l, Cs);
    auto fcb = slice(sgpt::kFcb, l, 4 * Cs), fpb = slice(sgpt::kFcprojb, l, Cs);
    ref_layernorm(h, x, slice(sgpt::kLn1w, l, Cs), cfg.bias ? &ln1b : nullptr, N, C);
    ref_matmul(qkv, h, slice(sgpt::kQkvw, l, 3 * C2), cfg.bias ? &qkvb : nullptr, N, C, 3 * C);
    LD scale = 1 / std::sqrt(LD(C / NH));
    if (cfg.scale_attn_by_inverse_layer_idx) scale /= (l + 1);
    ref_attention(y, att, qkv, B, T, C, NH, scale);
    ref_matmul(a, y, slice(sgpt::kAttprojw, l, C2), cfg.bias ? &apb : nullptr, N, C, C);
    for (size_t i = 0; i < x.size(); ++i) x[i] += a[i];
    ref_layernorm(h2, x, slice(sgpt::kLn2w, l, Cs), cfg.bias ? &ln2b : nullptr, N, C);
    ref_matmul(f, h2, slice(sgpt::kFcw, l, 4 * C2), cfg.bias ? &fcb : nullptr, N, C, 4 * C);
    for (auto& v : f) v = ref_gelu(v);
    ref_matmul(o, f, slice(sgpt::kFcprojw, l, 4 * C2), cfg.bias ? &fpb : nullptr, N, 4 * C, C);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
  }
  std::vector<LD> hf, logits;
  auto lnfb = slice(sgpt::kLnfb, 0, Cs);
  ref_layernorm(hf, x, slice(sgpt::kLnfw, 0, Cs), cfg.bias ? &lnfb : nullptr, N, C);
  ref_matmul(logits, hf, slice(sgpt::kWte, 0, size_t(Vp) * C), nullptr, N, C, Vp);
  return logits;
}

TEST(ModelForward, MatchesNaiveReference) {
  for (bool bias : {true, false})
    for (bool layer_scale : {true, false}) {
      const auto cfg = small_config(bias, layer_scale);
      const auto lay = sgpt::ParamLayout::make(cfg);
      std::mt19937_64 rng(10 + 2 * bias + layer_scale);
      // Large random parameters so that every term (biases, layer scale) moves the logits.
      auto p = randn<double>(lay.total, rng, 0.3);
      for (int t : {sgpt::kLn1w, sgpt::kLn2w, sgpt::kLnfw})
        for (size_t i = 0; i < lay.size[t]; ++i) p[lay.offset[t] + i] += 1.0;
      const int B = 2, T = 7;  // T < block_size
      std::vector<int> inp(B * T), tgt(B * T);
      for (int i = 0; i < B * T; ++i) { inp[i] = (i * 5 + 1) % 29; tgt[i] = (i * 3 + 2) % 29; }
      Gpt2<double> m(cfg, B, T);
      const double loss = m.forward(p.data(), inp.data(), tgt.data(), B);
      const auto ref = ref_model_logits(cfg, to_ld(p), inp, B, T);
      LD ref_loss = 0;
      for (int n = 0; n < B * T; ++n) {
        LD z = 0;
        for (int j = 0; j < cfg.vocab_size; ++j) z += std::exp(ref[size_t(n) * 32 + j]);
        ref_loss += std::log(z) - ref[size_t(n) * 32 + tgt[n]];
        for (int j = 0; j < cfg.padded_vocab_size; ++j)
          ASSERT_NEAR(m.logits()[size_t(n) * 32 + j], double(ref[size_t(n) * 32 + j]), 1e-10)
              << "bias " << bias << " layer_scale " << layer_scale << " row " << n << " col " << j;
      }
      ref_loss /= B * T;
      EXPECT_NEAR(loss, double(ref_loss), 1e-11);
      for (int n = 0; n < B * T; ++n) EXPECT_GT(m.losses()[n], 0.0);
    }
}

TEST(ModelForward, FloatMatchesDouble) {
  sgpt::ModelConfig cfg = small_config(false, true);
  cfg.n_embd = 32;
  cfg.n_head = 4;
  cfg.block_size = 16;
  cfg.vocab_size = 100;
  cfg.padded_vocab_size = 128;
  const auto lay = sgpt::ParamLayout::make(cfg);
  std::vector<float> pf(lay.total);
  sgpt::init_params(pf.data(), cfg, lay, 3);
  const std::vector<double> pd(pf.begin(), pf.end());
  const int B = 2, T = 16;
  std::vector<int> inp(B * T), tgt(B * T);
  for (int i = 0; i < B * T; ++i) { inp[i] = (i * 13 + 7) % 100; tgt[i] = (i * 17 + 1) % 100; }
  Gpt2<float> mf(cfg, B, T);
  Gpt2<double> md(cfg, B, T);
  const float lf = mf.forward(pf.data(), inp.data(), tgt.data(), B);
  const double ld = md.forward(pd.data(), inp.data(), tgt.data(), B);
  // Float carries ~7 digits; after a few layers of sums of <= 4C terms the relative error stays
  // far below 1e-5, while a wrong op would be off by O(1).
  EXPECT_NEAR(lf, ld, 1e-5 * ld);
  for (size_t i = 0; i < size_t(B) * T * 128; ++i)
    ASSERT_NEAR(mf.logits()[i], md.logits()[i], 1e-5) << i;
  std::vector<float> gf(lay.total, 0.0f);
  std::vector<double> gd(lay.total, 0.0);
  mf.backward(pf.data(), gf.data(), 1.0f);
  md.backward(pd.data(), gd.data(), 1.0);
  // Per tensor: ||g_float - g_double|| <= 1e-4 ||g_double|| (elementwise relative error is
  // meaningless where gradients cancel to ~0).
  for (int t = 0; t < sgpt::kNumParamTensors; ++t) {
    double diff = 0, norm = 0;
    for (size_t i = lay.offset[t]; i < lay.offset[t] + lay.size[t]; ++i) {
      diff += (gf[i] - gd[i]) * (gf[i] - gd[i]);
      norm += gd[i] * gd[i];
    }
    if (lay.size[t] == 0) continue;
    EXPECT_GT(norm, 0.0) << sgpt::param_tensor_name(t);
    EXPECT_LE(std::sqrt(diff), 1e-4 * std::sqrt(norm)) << sgpt::param_tensor_name(t);
  }
}

TEST(ModelForward, RejectsBadShapes) {
  auto cfg = small_config(false, true);
  EXPECT_THROW(Gpt2<float>(cfg, 1, cfg.block_size + 1), std::invalid_argument);
  cfg.n_head = 3;  // 16 % 3 != 0
  EXPECT_THROW(Gpt2<float>(cfg, 1, 4), std::invalid_argument);
  cfg = small_config(false, true);
  Gpt2<float> m(cfg, 1, 4);
  std::vector<float> p(sgpt::ParamLayout::make(cfg).total, 0.0f);
  const std::vector<int> bad = {0, 1, 29, 2};  // 29 == vocab_size
  EXPECT_THROW(m.forward_logits(p.data(), bad.data(), 1), std::out_of_range);
  EXPECT_THROW(m.forward_logits(p.data(), bad.data(), 2), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// Layout and init

TEST(ModelLayout, Gpt2SmallParameterCounts) {
  sgpt::ModelConfig cfg;  // 12 layers, 12 heads, 768, 1024, 50257 -> 50304
  EXPECT_EQ(sgpt::pad_vocab(50257), 50304);
  EXPECT_EQ(sgpt::pad_vocab(128), 128);
  EXPECT_EQ(sgpt::pad_vocab(1), 128);
  cfg.bias = true;
  // llm.c's GPT-2 124M (padded vocab, with biases): 124,475,904 parameters.
  const auto lb = sgpt::ParamLayout::make(cfg);
  EXPECT_EQ(lb.total, 124475904u);
  EXPECT_EQ(sgpt::num_params_reported(cfg), 124475904u - 1024u * 768u);
  // Without biases: minus 11 C per layer (ln1b, qkvb, attprojb, ln2b, fcb, fcprojb) and lnfb.
  cfg.bias = false;
  const auto ln = sgpt::ParamLayout::make(cfg);
  EXPECT_EQ(ln.total, 124475904u - 12u * 11u * 768u - 768u);
  size_t file_total = 0, off = 0;
  for (int t = 0; t < sgpt::kNumParamTensors; ++t) {
    EXPECT_EQ(ln.offset[t], off) << sgpt::param_tensor_name(t);
    off += ln.size[t];
    file_total += ln.file_size[t];
    EXPECT_EQ(ln.file_size[t], lb.size[t]);
  }
  EXPECT_EQ(file_total, 124475904u);
  EXPECT_EQ(ln.size[sgpt::kQkvb], 0u);
  EXPECT_EQ(ln.size[sgpt::kLnfb], 0u);
  EXPECT_EQ(ln.size[sgpt::kQkvw], 12u * 3 * 768 * 768);
  EXPECT_EQ(ln.layer_offset(sgpt::kFcw, 3, 12), ln.offset[sgpt::kFcw] + 3u * 4 * 768 * 768);
  for (int t = 0; t < sgpt::kNumParamTensors; ++t)
    EXPECT_EQ(sgpt::ParamLayout::decayed(t), t == sgpt::kQkvw || t == sgpt::kAttprojw ||
                                                 t == sgpt::kFcw || t == sgpt::kFcprojw);
  EXPECT_STREQ(sgpt::param_tensor_name(0), "wte");
  EXPECT_STREQ(sgpt::param_tensor_name(12), "fcprojw");
  EXPECT_STREQ(sgpt::param_tensor_name(15), "lnfb");
}

struct Stats {
  double mean = 0, sd = 0, within1 = 0;  // within1: fraction with |x - mean| < sd_expected
};
Stats stats(const float* p, size_t n, double sd_expected) {
  Stats s;
  for (size_t i = 0; i < n; ++i) s.mean += p[i];
  s.mean /= n;
  for (size_t i = 0; i < n; ++i) {
    s.sd += (p[i] - s.mean) * (p[i] - s.mean);
    s.within1 += std::fabs(p[i]) < sd_expected;
  }
  s.sd = std::sqrt(s.sd / n);
  s.within1 /= n;
  return s;
}

TEST(ModelInit, StatisticsAndDeterminism) {
  const sgpt::ModelConfig cfg = sgpt_test::model_config(4, 4, 64, 64, 1000, 0, /*bias=*/true);
  const auto lay = sgpt::ParamLayout::make(cfg);
  std::vector<float> p(lay.total, -5.0f);
  sgpt::init_params(p.data(), cfg, lay, 1337);
  const double resid = 0.02 / std::sqrt(2.0 * cfg.n_layer);
  auto check = [&](int t, size_t n, double sd) {
    const Stats s = stats(p.data() + lay.offset[t], n, sd);
    // n >= 4096 samples: sd's relative standard error is 1/sqrt(2n) < 1.2%; mean's < sd/64.
    EXPECT_NEAR(s.sd, sd, 0.05 * sd) << sgpt::param_tensor_name(t);
    EXPECT_NEAR(s.mean, 0.0, 0.1 * sd) << sgpt::param_tensor_name(t);
    EXPECT_NEAR(s.within1, 0.6827, 0.02) << sgpt::param_tensor_name(t) << ": not normal";
  };
  const size_t real_rows = size_t(cfg.vocab_size) * cfg.n_embd;
  check(sgpt::kWte, real_rows, 0.02);
  check(sgpt::kWpe, lay.size[sgpt::kWpe], 0.02);
  check(sgpt::kQkvw, lay.size[sgpt::kQkvw], 0.02);
  check(sgpt::kFcw, lay.size[sgpt::kFcw], 0.02);
  check(sgpt::kAttprojw, lay.size[sgpt::kAttprojw], resid);
  check(sgpt::kFcprojw, lay.size[sgpt::kFcprojw], resid);
  for (size_t i = real_rows; i < lay.size[sgpt::kWte]; ++i)
    ASSERT_EQ(p[lay.offset[sgpt::kWte] + i], 0.0f) << "padded wte rows are zero";
  for (int t : {sgpt::kLn1w, sgpt::kLn2w, sgpt::kLnfw})
    for (size_t i = 0; i < lay.size[t]; ++i) ASSERT_EQ(p[lay.offset[t] + i], 1.0f);
  for (int t : {sgpt::kLn1b, sgpt::kQkvb, sgpt::kAttprojb, sgpt::kLn2b, sgpt::kFcb, sgpt::kFcprojb,
                sgpt::kLnfb}) {
    ASSERT_GT(lay.size[t], 0u);
    for (size_t i = 0; i < lay.size[t]; ++i) ASSERT_EQ(p[lay.offset[t] + i], 0.0f);
  }
  // Same seed -> same bits; another seed -> (almost) every random element differs.
  std::vector<float> q(lay.total), r(lay.total);
  sgpt::init_params(q.data(), cfg, lay, 1337);
  EXPECT_EQ(0, std::memcmp(p.data(), q.data(), p.size() * sizeof(float)));
  sgpt::init_params(r.data(), cfg, lay, 1338);
  size_t differ = 0, n = lay.size[sgpt::kQkvw];
  for (size_t i = 0; i < n; ++i) differ += p[lay.offset[sgpt::kQkvw] + i] != r[lay.offset[sgpt::kQkvw] + i];
  EXPECT_GT(differ, n * 99 / 100);
  // Neighbouring elements are not copies of each other (the counter is the element index).
  size_t equal_neighbours = 0;
  for (size_t i = 1; i < n; ++i) equal_neighbours += p[lay.offset[sgpt::kQkvw] + i] == p[lay.offset[sgpt::kQkvw] + i - 1];
  EXPECT_LT(equal_neighbours, n / 1000 + 1);
}

TEST(ModelInit, ElementIsPhiloxBoxMuller) {
  // The value of element e is a function of (seed, e) only: the same formula, recomputed here.
  const sgpt::ModelConfig cfg = sgpt_test::model_config(2, 2, 16, 8, 50, 128);
  const auto lay = sgpt::ParamLayout::make(cfg);
  const std::vector<float> p = sgpt_test::initial_params(cfg, 99);
  for (size_t e : {lay.offset[sgpt::kWpe] + 3, lay.offset[sgpt::kQkvw] + 100}) {
    const sgpt::Philox4 w = sgpt::philox(99, uint32_t(e), uint32_t(e >> 32), 0, sgpt::kInitWeights);
    const double u1 = sgpt::uniform01_double(w.v[0], w.v[1]), u2 = sgpt::uniform01_double(w.v[2], w.v[3]);
    const double z = std::sqrt(-2 * std::log(1 - u1)) * std::cos(2 * 3.141592653589793 * u2);
    EXPECT_FLOAT_EQ(p[e], float(0.02 * z)) << e;
  }
}

}  // namespace
