// Finite-difference gradient checks of every backward in cpu/ops.h and of the whole GPT-2
// (cpu/gpt2_cpu.h), in double.
//
// Method: for an op out = f(x) and a random upstream gradient g, the scalar S(x) = <f(x), g> has
// dS/dx = the op's backward applied to g. The numeric gradient is the central difference
// (S(x + h e_i) - S(x - h e_i)) / 2h with h = 1e-6 * max(1, |x_i|).
//
// Tolerance: |analytic - numeric| <= 1e-8 + 1e-6 * |numeric|. Reason: in double the central
// difference has truncation error ~ h^2 |S'''| / 6 ~ 1e-12 and rounding error ~ 1e-16 |S| / h
// ~ 1e-10 |S| (|S| is O(1..10) for these shapes), so a correct backward lands within ~1e-9, while
// a wrong term (a missing factor, a wrong index, a dropped branch) shows up at the size of the
// gradient itself (1e-3..1).
//
// Accumulation: every backward is called on gradient buffers pre-filled with random values P; the
// analytic gradient is (result - P), so an op that overwrote instead of adding (+=) would fail.
// crossentropy_backward is documented to OVERWRITE: it is pre-filled with garbage instead.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu/gpt2_cpu.h"
#include "cpu/ops.h"
#include "model/gpt2.h"
#include "test_model.h"

namespace {

using Vec = std::vector<double>;
using namespace sgpt::cpu;

constexpr double kAtol = 1e-8;
constexpr double kRtol = 1e-6;

Vec randn(size_t n, std::mt19937_64& rng, double sd = 1.0, double mean = 0.0) {
  std::normal_distribution<double> d(mean, sd);
  Vec v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

Vec minus(const Vec& a, const Vec& b) {
  Vec r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = a[i] - b[i];
  return r;
}

// Central-difference gradient of S with respect to x[idx] for every idx in `which` (all when
// empty); the other entries are left 0.
// h_rel: the step relative to max(1, |x_i|).
Vec numeric_grad(Vec& x, const std::function<double()>& S, std::vector<size_t> which = {},
                 double h_rel = 1e-6) {
  if (which.empty())
    for (size_t i = 0; i < x.size(); ++i) which.push_back(i);
  Vec g(x.size(), 0.0);
  for (size_t i : which) {
    const double x0 = x[i];
    const double h = h_rel * std::max(1.0, std::fabs(x0));
    x[i] = x0 + h;
    const double sp = S();
    x[i] = x0 - h;
    const double sm = S();
    x[i] = x0;
    g[i] = (sp - sm) / (2 * h);
  }
  return g;
}

void expect_grad_near(const Vec& analytic, const Vec& numeric, const std::string& what,
                      const std::vector<size_t>& which = {}, double scale = 1.0) {
  ASSERT_EQ(analytic.size(), numeric.size()) << what;
  int bad = 0;
  auto check = [&](size_t i) {
    const double n = scale * numeric[i];
    if (std::fabs(analytic[i] - n) > kAtol + kRtol * std::fabs(n) && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: analytic " << analytic[i] << " numeric " << n;
  };
  if (which.empty())
    for (size_t i = 0; i < analytic.size(); ++i) check(i);
  else
    for (size_t i : which) check(i);
  EXPECT_EQ(bad, 0) << what;
}

// A gradient must not be trivially zero for the check to mean anything.
void expect_nontrivial(const Vec& g, const std::string& what) {
  double m = 0;
  for (double x : g) m = std::max(m, std::fabs(x));
  EXPECT_GT(m, 1e-3) << what << " is (nearly) all zeros; the check would be vacuous";
}

// ---------------------------------------------------------------------------------------------

TEST(OpsGradcheck, Encoder) {
  std::mt19937_64 rng(1);
  const int B = 2, T = 3, C = 5, Vrows = 11;
  // Token 4 appears three times: rows of dwte shared by several positions must accumulate.
  const std::vector<int> inp = {4, 7, 4, 0, 4, 10};
  Vec wte = randn(size_t(Vrows) * C, rng), wpe = randn(size_t(T) * C, rng);
  const Vec g = randn(size_t(B) * T * C, rng);
  Vec out(g.size());
  auto S = [&] {
    encoder_forward(out.data(), inp.data(), wte.data(), wpe.data(), B, T, C);
    return dot(out, g);
  };
  const Vec p_wte = randn(wte.size(), rng), p_wpe = randn(wpe.size(), rng);
  Vec dwte = p_wte, dwpe = p_wpe;
  encoder_backward(dwte.data(), dwpe.data(), g.data(), inp.data(), B, T, C);
  expect_grad_near(minus(dwte, p_wte), numeric_grad(wte, S), "dwte");
  expect_grad_near(minus(dwpe, p_wpe), numeric_grad(wpe, S), "dwpe");
  expect_nontrivial(minus(dwte, p_wte), "dwte");
}

void layernorm_check(bool with_bias) {
  std::mt19937_64 rng(with_bias ? 2 : 3);
  const int N = 6, C = 5;
  Vec x = randn(size_t(N) * C, rng, 2.0, 0.7), w = randn(C, rng, 0.5, 1.0), b = randn(C, rng);
  const Vec g = randn(size_t(N) * C, rng);
  Vec out(g.size()), mean(N), rstd(N);
  auto S = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(),
                      with_bias ? b.data() : nullptr, N, C);
    return dot(out, g);
  };
  S();  // mean, rstd at the unperturbed point
  const Vec px = randn(x.size(), rng), pw = randn(C, rng), pb = randn(C, rng);
  Vec dx = px, dw = pw, db = pb;
  layernorm_backward(dx.data(), dw.data(), with_bias ? db.data() : nullptr, g.data(), x.data(),
                     w.data(), mean.data(), rstd.data(), N, C);
  const std::string tag = with_bias ? " (bias)" : " (no bias)";
  expect_grad_near(minus(dx, px), numeric_grad(x, S), "layernorm dinp" + tag);
  expect_grad_near(minus(dw, pw), numeric_grad(w, S), "layernorm dweight" + tag);
  if (with_bias) expect_grad_near(minus(db, pb), numeric_grad(b, S), "layernorm dbias" + tag);
  else EXPECT_EQ(db, pb) << "dbias must be untouched when nullptr is passed";
  expect_nontrivial(minus(dx, px), "layernorm dinp");
}

TEST(OpsGradcheck, LayerNormWithBias) { layernorm_check(true); }
TEST(OpsGradcheck, LayerNormWithoutBias) { layernorm_check(false); }

// Matmul on a tiny shape (all entries checked), and on a shape larger than the GEMM's register
// and cache tiles, K > 256 in all three products (a random subset of entries checked).
void matmul_check(int N, int C, int OC, bool with_bias, int subset) {
  std::mt19937_64 rng(N * 1000 + C * 10 + OC + with_bias);
  Vec x = randn(size_t(N) * C, rng), w = randn(size_t(OC) * C, rng), b = randn(OC, rng);
  const Vec g = randn(size_t(N) * OC, rng);
  Vec out(g.size());
  auto S = [&] {
    matmul_forward(out.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, N, C, OC);
    return dot(out, g);
  };
  const Vec px = randn(x.size(), rng), pw = randn(w.size(), rng), pb = randn(OC, rng);
  Vec dx = px, dw = pw, db = pb;
  matmul_backward(dx.data(), dw.data(), with_bias ? db.data() : nullptr, g.data(), x.data(),
                  w.data(), N, C, OC);
  auto pick = [&](size_t n) {
    std::vector<size_t> idx;
    if (subset <= 0) return idx;
    std::uniform_int_distribution<size_t> u(0, n - 1);
    for (int i = 0; i < subset; ++i) idx.push_back(u(rng));
    idx.push_back(n - 1);  // the last element sits in the edge tiles
    return idx;
  };
  const std::string tag = " N=" + std::to_string(N) + " C=" + std::to_string(C) +
                          " OC=" + std::to_string(OC) + (with_bias ? " bias" : " no bias");
  // S is linear in each single entry of x, w and b, so the central difference has no truncation
  // error and a large step (h = 0.1) keeps the rounding error of S (|S| ~ 1e3 for the large shape,
  // ~1e-13 relative) far below the tolerance.
  constexpr double h = 0.1;
  auto ix = pick(x.size()), iw = pick(w.size()), ib = pick(b.size());
  expect_grad_near(minus(dx, px), numeric_grad(x, S, ix, h), "matmul dinp" + tag, ix);
  expect_grad_near(minus(dw, pw), numeric_grad(w, S, iw, h), "matmul dweight" + tag, iw);
  if (with_bias)
    expect_grad_near(minus(db, pb), numeric_grad(b, S, ib, h), "matmul dbias" + tag, ib);
  else EXPECT_EQ(db, pb) << "dbias must be untouched when nullptr is passed";
}

TEST(OpsGradcheck, MatmulWithBias) { matmul_check(6, 5, 7, true, 0); }
TEST(OpsGradcheck, MatmulWithoutBias) { matmul_check(6, 5, 7, false, 0); }
TEST(OpsGradcheck, MatmulLargerThanTiles) { matmul_check(263, 259, 270, true, 40); }

void attention_check(double scale, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int B = 2, T = 4, C = 6, NH = 2;  // hs = 3
  Vec x = randn(size_t(B) * T * 3 * C, rng);
  const Vec g = randn(size_t(B) * T * C, rng);
  Vec out(g.size()), att(size_t(B) * NH * T * T);
  auto S = [&] {
    attention_forward(out.data(), att.data(), x.data(), B, T, C, NH, scale);
    return dot(out, g);
  };
  S();
  const Vec px = randn(x.size(), rng);
  Vec dx = px;
  attention_backward(dx.data(), g.data(), x.data(), att.data(), B, T, C, NH, scale);
  expect_grad_near(minus(dx, px), numeric_grad(x, S), "attention dinp, scale " +
                                                          std::to_string(scale));
  expect_nontrivial(minus(dx, px), "attention dinp");
}

TEST(OpsGradcheck, AttentionDefaultScale) { attention_check(1.0 / std::sqrt(3.0), 5); }
// scale_attn_by_inverse_layer_idx at layer 2: 1/sqrt(hs)/3; and an arbitrary large scale.
TEST(OpsGradcheck, AttentionInverseLayerScale) { attention_check(1.0 / std::sqrt(3.0) / 3, 6); }
TEST(OpsGradcheck, AttentionLargeScale) { attention_check(1.7, 7); }

TEST(OpsGradcheck, Gelu) {
  std::mt19937_64 rng(8);
  Vec x = randn(17, rng, 2.5);
  x[0] = 0.0;
  x[1] = -6.0;  // far tail
  x[2] = 5.0;
  const Vec g = randn(x.size(), rng);
  Vec out(x.size());
  auto S = [&] {
    gelu_forward(out.data(), x.data(), x.size());
    return dot(out, g);
  };
  const Vec px = randn(x.size(), rng);
  Vec dx = px;
  gelu_backward(dx.data(), x.data(), g.data(), x.size());
  expect_grad_near(minus(dx, px), numeric_grad(x, S), "gelu dinp");
}

TEST(OpsGradcheck, CrossEntropyPaddedColumns) {
  std::mt19937_64 rng(9);
  const int N = 6, V = 11, Vp = 16;
  Vec logits = randn(size_t(N) * Vp, rng, 2.0);
  for (int n = 0; n < N; ++n)
    for (int j = V; j < Vp; ++j) logits[size_t(n) * Vp + j] = 50.0 + j;  // would dominate if used
  const std::vector<int> tgt = {0, 10, 3, 3, 7, 1};
  const double dloss = 0.37;
  Vec losses(N);
  auto S = [&] {
    crossentropy_forward(losses.data(), logits.data(), tgt.data(), N, V, Vp);
    double s = 0;
    for (double l : losses) s += dloss * l;
    return s;
  };
  // Overwrite semantics: garbage in dlogits must not leak into the result.
  Vec dl = randn(logits.size(), rng, 100.0);
  crossentropy_backward(dl.data(), logits.data(), tgt.data(), dloss, N, V, Vp);
  const Vec num = numeric_grad(logits, S);
  expect_grad_near(dl, num, "crossentropy dlogits");
  for (int n = 0; n < N; ++n)
    for (int j = V; j < Vp; ++j) {
      EXPECT_EQ(dl[size_t(n) * Vp + j], 0.0) << "padded column " << j << " of row " << n;
      EXPECT_EQ(num[size_t(n) * Vp + j], 0.0) << "the loss must not depend on padded column " << j;
    }
  // In place (dlogits == logits) gives the same values.
  Vec inplace = logits;
  crossentropy_backward(inplace.data(), inplace.data(), tgt.data(), dloss, N, V, Vp);
  for (size_t i = 0; i < dl.size(); ++i) EXPECT_EQ(inplace[i], dl[i]) << i;
}

// Every accumulating backward adds exactly its gradient to what is there: result(P) = P + G,
// where G is the result from zeroed buffers (up to the rounding of one more addition per term).
TEST(OpsGradcheck, BackwardsAccumulate) {
  std::mt19937_64 rng(10);
  const int B = 2, T = 3, C = 6, NH = 2, OC = 7, N = B * T;
  const Vec x = randn(size_t(N) * C, rng), w = randn(size_t(OC) * C, rng), gC = randn(N * C, rng);
  const Vec gOC = randn(size_t(N) * OC, rng), qkv = randn(size_t(N) * 3 * C, rng);
  const std::vector<int> inp = {1, 2, 1, 0, 3, 1};
  auto check = [&](const std::string& what, size_t n,
                   const std::function<void(std::vector<double*>)>& run, int nbuf) {
    std::vector<Vec> zero(nbuf, Vec(n, 0.0)), pre(nbuf), acc(nbuf);
    for (int k = 0; k < nbuf; ++k) pre[k] = acc[k] = randn(n, rng);
    std::vector<double*> pz, pa;
    for (int k = 0; k < nbuf; ++k) {
      pz.push_back(zero[k].data());
      pa.push_back(acc[k].data());
    }
    run(pz);
    run(pa);
    for (int k = 0; k < nbuf; ++k) {
      expect_nontrivial(zero[k], what);
      for (size_t i = 0; i < n; ++i)
        EXPECT_NEAR(acc[k][i], pre[k][i] + zero[k][i], 1e-12 * (1 + std::fabs(zero[k][i])))
            << what << " buffer " << k << " [" << i << "]";
    }
  };
  // Buffers are sized to the largest of the gradients each op writes (the rest is unused).
  const size_t big = size_t(N) * 3 * C + size_t(OC) * C;
  check("encoder", big, [&](std::vector<double*> p) {
    encoder_backward(p[0], p[1], gC.data(), inp.data(), B, T, C);
  }, 2);
  Vec out(size_t(N) * C), mean(N), rstd(N), wC = randn(C, rng, 0.3, 1.0);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), wC.data(),
                    static_cast<const double*>(nullptr), N, C);
  check("layernorm", big, [&](std::vector<double*> p) {
    layernorm_backward(p[0], p[1], p[2], gC.data(), x.data(), wC.data(), mean.data(), rstd.data(),
                       N, C);
  }, 3);
  check("matmul", big, [&](std::vector<double*> p) {
    matmul_backward(p[0], p[1], p[2], gOC.data(), x.data(), w.data(), N, C, OC);
  }, 3);
  Vec att(size_t(B) * NH * T * T), aout(size_t(N) * C);
  attention_forward(aout.data(), att.data(), qkv.data(), B, T, C, NH, 0.4);
  check("attention", big, [&](std::vector<double*> p) {
    attention_backward(p[0], gC.data(), qkv.data(), att.data(), B, T, C, NH, 0.4);
  }, 1);
  check("gelu", size_t(N) * C, [&](std::vector<double*> p) {
    gelu_backward(p[0], x.data(), gC.data(), size_t(N) * C);
  }, 1);
}

// ---------------------------------------------------------------------------------------------
// Whole model: d(mean loss)/d(every parameter) by central differences vs Gpt2<double>::backward
// with grad_scale 0.5 into a pre-filled gradient buffer (so the result must be P + 0.5 * grad).

void model_check(bool bias, bool scale_by_layer) {
  const sgpt::ModelConfig cfg = sgpt_test::model_config(2, 2, 8, 5, 13, 16, bias, scale_by_layer);
  const auto layout = sgpt::ParamLayout::make(cfg);
  const int B = 2, T = 5;
  std::mt19937_64 rng(100 + 2 * bias + scale_by_layer);
  // Parameters larger than the 0.02 init so that every path carries a sizeable gradient;
  // LayerNorm weights around 1, biases nonzero (when present).
  Vec params = randn(layout.total, rng, 0.4);
  for (int t : {sgpt::kLn1w, sgpt::kLn2w, sgpt::kLnfw})
    for (size_t i = 0; i < layout.size[t]; ++i) params[layout.offset[t] + i] += 1.0;
  std::uniform_int_distribution<int> tok(0, cfg.vocab_size - 1);
  std::vector<int> inp(B * T), tgt(B * T);
  for (auto& v : inp) v = tok(rng);
  for (auto& v : tgt) v = tok(rng);

  Gpt2<double> model(cfg, 3, T);  // max_B 3 > B: strides must use max_B
  auto S = [&] { return model.forward(params.data(), inp.data(), tgt.data(), B); };
  const Vec num = numeric_grad(params, S);
  S();
  const Vec pre = randn(layout.total, rng);
  Vec grads = pre;
  model.backward(params.data(), grads.data(), 0.5);
  const Vec analytic = minus(grads, pre);
  for (int t = 0; t < sgpt::kNumParamTensors; ++t) {
    if (layout.size[t] == 0) continue;
    std::vector<size_t> idx;
    for (size_t i = 0; i < layout.size[t]; ++i) idx.push_back(layout.offset[t] + i);
    expect_grad_near(analytic, num, std::string("model d") + sgpt::param_tensor_name(t) +
                                        (bias ? " bias" : " nobias") +
                                        (scale_by_layer ? " layerscale" : ""),
                     idx, 0.5);
    Vec part(idx.size());
    for (size_t i = 0; i < idx.size(); ++i) part[i] = num[idx[i]];
    double m = 0;
    for (double v : part) m = std::max(m, std::fabs(v));
    EXPECT_GT(m, 1e-5) << sgpt::param_tensor_name(t) << ": gradient vanishes, check is vacuous";
  }
  // The padded rows of the tied wte get exactly zero gradient.
  for (size_t r = cfg.vocab_size; r < size_t(cfg.padded_vocab_size); ++r)
    for (int c = 0; c < cfg.n_embd; ++c)
      EXPECT_EQ(analytic[layout.offset[sgpt::kWte] + r * cfg.n_embd + c], 0.0);
}

TEST(ModelGradcheck, BiasLayerScale) { model_check(true, true); }
TEST(ModelGradcheck, BiasNoLayerScale) { model_check(true, false); }
TEST(ModelGradcheck, NoBiasLayerScale) { model_check(false, true); }
TEST(ModelGradcheck, NoBiasNoLayerScale) { model_check(false, false); }

}  // namespace
