// GPU optimizer, reduction and cast kernels (src/cuda/optim_cuda.h) against the CPU reference
// (src/optim/update_rules.h), which is the oracle: the expected values are computed here by the CPU
// functions of the same names, on fresh random inputs every run (the seed is printed on failure).
//
// Tolerances and why:
//  * fp32 results of sophia_step / hessian_ema / adamw_step / scale_grad: bit-exact. Both sides do
//    the same IEEE-754 single operations in the same order with round-to-nearest-even (the CPU is
//    compiled with -ffp-contract=off, the kernels use __fmul_rn/__fadd_rn/__fdiv_rn/__fsqrt_rn,
//    denormals are kept on both sides), so every bit must agree. The one exception is the payload
//    of a NaN (x86 produces 0xFFC00000, the GPU 0x7FFFFFFF): a NaN matches any NaN.
//  * The win-rate count is an integer: exact.
//  * Sophia's sum |h| and sum h^2: the CPU sums doubles in index order, the GPU in a fixed tree;
//    every term is exact in double (|h| and h*h of a float), so the two differ only by the
//    reordering of n non-negative double additions: relative error <= n * 2^-53 (we allow 2x).
//  * Gradient sum of squares: the GPU sums 8 squares per chunk in fp32 with FMA (relative error
//    <= 8 * 2^-24 for non-negative terms, see kernels/norm.cu), then in double; the CPU sums
//    exactly-squared doubles: allowed relative difference 9 * 2^-24 (~5.4e-7; the extra 2^-24
//    covers the double additions, ~n * 2^-53).
//  * Stochastic rounding: every result must be one of the two representable neighbours of the
//    input; the mean of N roundings of one value must lie within 5 standard deviations
//    (spacing * sqrt(f(1-f)/N)) of the value (false failure rate < 1e-6 per check).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cast.cuh"  // host versions of the rounding functions (consistency checks only)
#include "optim/update_rules.h"
#include "cuda/check.h"
#include "cuda/optim_cuda.h"
#include "model/gpt2.h"
#include "test_model.h"

using namespace sgpt;
using sgpt::cuda::DecayRanges;
using sgpt::cuda::ReduceScratch;
using sgpt::cuda::RoundingKey;
using bf16 = __nv_bfloat16;

namespace {

bool gpu_usable() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define REQUIRE_GPU()                                                   \
  do {                                                                  \
    if (!gpu_usable()) GTEST_SKIP() << "no usable CUDA device";         \
  } while (0)

// Device buffer of n elements of T (plus `shift` leading elements, so the data can start at a
// non-16-byte-aligned address).
template <class T>
class Dev {
 public:
  explicit Dev(size_t n, size_t shift = 0) : n_(n), shift_(shift) {
    CUDA_CHECK(cudaMalloc(&base_, (n + shift + 1) * sizeof(T)));
  }
  ~Dev() { cudaFree(base_); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  T* get() { return base_ + shift_; }
  void upload(const std::vector<T>& v) {
    CUDA_CHECK(cudaMemcpy(get(), v.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() {
    std::vector<T> v(n_);
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(v.data(), get(), n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
  void poison() { CUDA_CHECK(cudaMemset(get(), 0xFF, n_ * sizeof(T))); }

 private:
  T* base_ = nullptr;
  size_t n_, shift_;
};

uint64_t fresh_seed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

// The random source of one check: a fresh seed, named (after `what`) in every failure message
// while the object lives, so that a failure can be replayed.
struct Trial {
  uint64_t seed;
  ::testing::ScopedTrace trace;
  std::mt19937_64 rng;
  explicit Trial(const std::string& what = "")
      : seed(fresh_seed()), trace(__FILE__, __LINE__, what + "seed=" + std::to_string(seed)), rng(seed) {}
};

uint32_t bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}
uint16_t bits16(bf16 x) {
  uint16_t b;
  std::memcpy(&b, &x, 2);
  return b;
}
uint16_t bits16(__half x) {
  uint16_t b;
  std::memcpy(&b, &x, 2);
  return b;
}
float widen(float x) { return x; }
float widen(bf16 x) { return __bfloat162float(x); }
float widen(__half x) { return __half2float(x); }
template <class T>
T narrow(float x) {
  if constexpr (std::is_same_v<T, float>) return x;
  else if constexpr (std::is_same_v<T, bf16>) return __float2bfloat16_rn(x);
  else return __float2half_rn(x);
}
// Element-wise narrow (round to nearest even) and widen.
template <class T>
std::vector<T> narrowed(const std::vector<float>& v) {
  std::vector<T> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = narrow<T>(v[i]);
  return r;
}
template <class T>
std::vector<float> widened(const std::vector<T>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = widen(v[i]);
  return r;
}

// Number of elements whose bits differ (NaN payloads included); the vectors have equal sizes.
template <class T>
size_t bits_differ(const std::vector<T>& a, const std::vector<T>& b) {
  size_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return diff;
}

// Bit-exact float comparison (any NaN matches any NaN); reports the first few mismatches.
void expect_same_floats(const std::vector<float>& got, const std::vector<float>& want,
                        const char* what) {
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    const bool same = bits(got[i]) == bits(want[i]) || (std::isnan(got[i]) && std::isnan(want[i]));
    if (!same) {
      ++bad;
      ADD_FAILURE() << what << "[" << i << "]: gpu " << got[i] << " (0x" << std::hex << bits(got[i])
                    << ") cpu " << want[i] << " (0x" << bits(want[i]) << std::dec << ")";
    }
  }
}

void expect_rel(double got, double want, double rel, const char* what) {
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << what;
    return;
  }
  if (std::isinf(want)) {
    EXPECT_EQ(got, want) << what;
    return;
  }
  EXPECT_LE(std::fabs(got - want), rel * std::fabs(want)) << what << ": gpu " << got << " cpu "
                                                          << want;
}

// Random inputs of a Sophia/AdamW step. h spans many orders of magnitude so that both clipped
// and unclipped ratios occur; `specials` adds h = 0, negative h, NaN/Inf gradients, a NaN
// momentum, denormal p.
struct StepInputs {
  std::vector<float> p, m, h, g, v;
};

StepInputs make_inputs(size_t n, std::mt19937_64& rng, bool specials) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  StepInputs in;
  in.p.resize(n), in.m.resize(n), in.h.resize(n), in.g.resize(n), in.v.resize(n);
  for (size_t i = 0; i < n; ++i) {
    in.p[i] = 0.02f * nd(rng);
    in.m[i] = 1e-3f * nd(rng);
    in.g[i] = 3e-3f * nd(rng);
    in.h[i] = std::pow(10.0f, -12.0f + 8.0f * ud(rng));
    in.v[i] = in.g[i] * in.g[i] * ud(rng);
    if (specials) {
      const float u = ud(rng);
      if (u < 0.05f) in.h[i] = 0.0f;
      else if (u < 0.10f) in.h[i] = -in.h[i];
      else if (u < 0.11f) in.g[i] = std::numeric_limits<float>::quiet_NaN();
      else if (u < 0.12f) in.g[i] = std::numeric_limits<float>::infinity();
      else if (u < 0.13f) in.g[i] = -std::numeric_limits<float>::infinity();
      else if (u < 0.14f) in.m[i] = std::numeric_limits<float>::quiet_NaN();
      else if (u < 0.15f) in.g[i] = 0.0f, in.m[i] = 0.0f;  // sign(0) = 0
      else if (u < 0.16f) in.p[i] = 1e-40f;                  // denormal
    }
  }
  return in;
}

// A few random decay ranges inside [base, base + n) (global indices), sorted and disjoint.
DecayRanges random_ranges(size_t base, size_t n, std::mt19937_64& rng) {
  std::uniform_int_distribution<size_t> pos(0, n);
  std::vector<size_t> cuts;
  for (int k = 0; k < 6; ++k) cuts.push_back(base + pos(rng));
  std::sort(cuts.begin(), cuts.end());
  DecayRanges d;
  for (int k = 0; k + 1 < 6; k += 2) d.add(cuts[k], cuts[k + 1]);
  return d;
}

// The CPU reference applied to global elements [base, base + n): one call per maximal run of
// equal decay status.
template <class Fn>
void for_decay_runs(size_t base, size_t n, const DecayRanges& d, Fn fn) {
  size_t i = 0;
  while (i < n) {
    const bool dec = d.contains(base + i);
    size_t e = i + 1;
    while (e < n && d.contains(base + e) == dec) ++e;
    fn(i, e - i, dec);
    i = e;
  }
}

SophiaConsts sophia_consts() { return SophiaConsts::make(6e-4, 0.965, 0.05, 480 * 1024, 0.2); }

// Stochastic rounding neighbours of x in T: round toward zero and the next value away from zero.
template <class T>
void neighbours(float x, float& lo, float& hi) {
  const uint32_t b = bits(x);
  const uint32_t sign = b & 0x80000000u;
  const float a = std::fabs(x);
  if constexpr (std::is_same_v<T, bf16>) {
    const uint32_t t = bits(a) & 0xFFFF0000u;
    float l, h;
    std::memcpy(&l, &t, 4);
    const uint32_t u = t + 0x10000u;
    std::memcpy(&h, &u, 4);
    lo = sign ? -l : l;
    hi = sign ? -h : h;
  } else {
    // fp16: enumerate by the spacing of the binade of a (2^-24 below 2^-14).
    const int e = a < 6.103515625e-05f ? -24 : std::ilogb(a) - 10;
    const double spacing = std::ldexp(1.0, e);
    const double l = std::floor(a / spacing) * spacing;
    const double h = l + spacing;
    lo = static_cast<float>(sign ? -l : l);
    hi = static_cast<float>(h > 65504.0 ? INFINITY : (sign ? -h : h));
    if (sign && std::isinf(hi)) hi = -INFINITY;
  }
}

template <class ParamT>
void expect_rounded_neighbours(const std::vector<ParamT>& w, const std::vector<float>& p,
                               const RoundingKey& key) {
  int bad = 0;
  for (size_t i = 0; i < w.size() && bad < 5; ++i) {
    const float x = p[i];
    const float got = widen(w[i]);
    if (std::isnan(x)) {
      if (!std::isnan(got)) ++bad, ADD_FAILURE() << "w[" << i << "] = " << got << " for NaN";
      continue;
    }
    float lo, hi;
    neighbours<ParamT>(x, lo, hi);
    if (!(got == lo || got == hi) || (got == hi && x == lo)) {
      ++bad;
      ADD_FAILURE() << "w[" << i << "] = " << got << " is not a neighbour of " << x << " (" << lo
                    << ", " << hi << ")";
      continue;
    }
    // Consistency with the host implementation of the same keyed rounding.
    const size_t j = key.index_base + i;
    const uint32_t r = cuda::sr_words(key.seed, key.step, j >> 2).v[j & 3];
    const uint16_t want = cuda::Elem<ParamT>::sr_bits(x, r);
    if (bits16(w[i]) != want) {
      ++bad;
      ADD_FAILURE() << "w[" << i << "] bits differ from the host rounding of " << x;
    }
  }
}

// ---- one Sophia-G step on n elements, GPU vs CPU ----
// The CPU reference of a Sophia-G step on `in` (in place) with gradient g, `in` holding global
// elements [base, base + n).
void cpu_sophia(StepInputs& in, const std::vector<float>& g, size_t base, const DecayRanges& decay,
                const SophiaConsts& c, SophiaMetrics* metrics) {
  for_decay_runs(base, in.p.size(), decay, [&](size_t i, size_t len, bool dec) {
    cpu::sophia_update(in.p.data() + i, in.m.data() + i, in.h.data() + i, g.data() + i, len, c,
                       dec, metrics);
  });
}

template <class GradT, class ParamT>
void check_sophia(size_t n, size_t index_base, bool specials, size_t shift) {
  Trial t("n=" + std::to_string(n) + " base=" + std::to_string(index_base) + " shift=" +
          std::to_string(shift) + " ");
  StepInputs in = make_inputs(n, t.rng, specials);
  const std::vector<GradT> g16 = narrowed<GradT>(in.g);
  const std::vector<float> gw = widened(g16);  // the CPU sees exactly the gradient the GPU widens
  const DecayRanges decay = random_ranges(index_base, n, t.rng);
  const SophiaConsts c = sophia_consts();
  const RoundingKey key{t.seed ^ 0x5EED, static_cast<uint32_t>(t.rng()), index_base};

  Dev<float> p(n, shift), m(n, shift), h(n, shift);
  Dev<GradT> g(n, shift);
  Dev<ParamT> w(n, shift);
  p.upload(in.p), m.upload(in.m), h.upload(in.h), g.upload(g16);
  w.poison();
  ReduceScratch scratch;
  cuda::sophia_step<GradT, ParamT>(p.get(), m.get(), h.get(), g.get(), w.get(), n, decay, c, key,
                                   &scratch, nullptr);
  SophiaMetrics gm;
  cuda::read_sophia_metrics(scratch, n, &gm, nullptr);

  SophiaMetrics cm;
  cpu_sophia(in, gw, index_base, decay, c, &cm);
  expect_same_floats(p.download(), in.p, "p");
  expect_same_floats(m.download(), in.m, "m");
  EXPECT_EQ(gm.count, cm.count);
  EXPECT_EQ(gm.unclipped, cm.unclipped);
  const double rel = 2.0 * static_cast<double>(n) * std::ldexp(1.0, -53);
  expect_rel(gm.h_l1, cm.h_l1, rel, "h_l1");
  expect_rel(gm.h_sq, cm.h_sq, rel, "h_sq");
  if constexpr (std::is_same_v<ParamT, float>) {
    expect_same_floats(w.download(), in.p, "weights");
  } else {
    expect_rounded_neighbours(w.download(), in.p, key);
  }
}

// Sizes of the bit-exactness checks: one element, a partial vector chunk, a million and 3.
constexpr size_t kSizes[] = {1, 31, 1000003};

}  // namespace

// ------------------------------------------------------------------------------- Sophia-G

TEST(GpuSophia, Fp32BitExactOddSizes) {
  REQUIRE_GPU();
  for (size_t n : {1, 7, 31, 1000, 1000003})
    for (bool specials : {false, true}) check_sophia<float, float>(n, 0, specials, 0);
}

TEST(GpuSophia, MetricsOverSeveralFinalizePasses) {
  REQUIRE_GPU();
  // 20M elements = 9766 blocks of partials: two finalize passes (4096 -> 1 each).
  check_sophia<float, float>(20000003, 0, true, 0);
  check_sophia<bf16, bf16>(20000003, 0, true, 0);
}

TEST(GpuSophia, Fp32UnalignedBuffersAndShardBase) {
  REQUIRE_GPU();
  // Buffers starting 1 or 3 floats past a 16-byte boundary take the scalar path; a global base
  // that is not a multiple of 8 makes the first chunk partial.
  check_sophia<float, float>(100003, 0, true, 1);
  check_sophia<float, float>(100003, 5, true, 0);
  check_sophia<float, float>(100003, 13, true, 3);
}

// 16-bit gradients and weights: kSizes, then n = 4099 at global base `base`, `shift` elements past
// an aligned address.
template <class T>
void check_sophia_16bit(size_t base, size_t shift) {
  for (size_t n : kSizes) check_sophia<T, T>(n, 0, true, 0);
  check_sophia<T, T>(4099, base, true, shift);
}

TEST(GpuSophia, Bf16GradsBf16Weights) {
  REQUIRE_GPU();
  check_sophia_16bit<bf16>(6, 1);
}

TEST(GpuSophia, Fp16GradsFp16Weights) {
  REQUIRE_GPU();
  check_sophia_16bit<__half>(3, 0);
}

TEST(GpuSophia, MixedTypes) {
  REQUIRE_GPU();
  check_sophia<bf16, float>(10007, 0, true, 0);
  check_sophia<float, bf16>(10007, 0, true, 0);
  check_sophia<float, __half>(10007, 0, true, 0);
}

TEST(GpuSophia, NullWeightsAndNoMetrics) {
  REQUIRE_GPU();
  const size_t n = 5003;
  Trial t;
  StepInputs in = make_inputs(n, t.rng, true);
  const DecayRanges decay = random_ranges(0, n, t.rng);
  const SophiaConsts c = sophia_consts();
  Dev<float> p(n), m(n), h(n), g(n);
  p.upload(in.p), m.upload(in.m), h.upload(in.h), g.upload(in.g);
  cuda::sophia_step<float, float>(p.get(), m.get(), h.get(), g.get(), nullptr, n, decay, c,
                                  RoundingKey{}, nullptr, nullptr);
  cpu_sophia(in, in.g, 0, decay, c, nullptr);
  expect_same_floats(p.download(), in.p, "p");
  expect_same_floats(m.download(), in.m, "m");
}

TEST(GpuSophia, ShardsEqualWholeBuffer) {
  REQUIRE_GPU();
  // ZeRO-1: two shards with their global index_base compute exactly what one launch does
  // (decay ranges and rounding keyed by the global index). Split at an odd point.
  const size_t n = 200001, split = 77777;
  Trial t;
  StepInputs in = make_inputs(n, t.rng, true);
  const std::vector<bf16> g16 = narrowed<bf16>(in.g);
  const DecayRanges decay = random_ranges(0, n, t.rng);
  const SophiaConsts c = sophia_consts();
  const RoundingKey key{t.seed, 17, 0};

  Dev<float> p(n), m(n), h(n);
  Dev<bf16> g(n), w(n);
  p.upload(in.p), m.upload(in.m), h.upload(in.h), g.upload(g16);
  cuda::sophia_step<bf16, bf16>(p.get(), m.get(), h.get(), g.get(), w.get(), n, decay, c, key,
                                nullptr, nullptr);
  const auto p1 = p.download(), m1 = m.download();
  const auto w1 = w.download();

  p.upload(in.p), m.upload(in.m);
  w.poison();
  for (auto [b, e] : {std::pair<size_t, size_t>{0, split}, {split, n}}) {
    RoundingKey k = key;
    k.index_base = b;
    cuda::sophia_step<bf16, bf16>(p.get() + b, m.get() + b, h.get() + b, g.get() + b, w.get() + b,
                                  e - b, decay, c, k, nullptr, nullptr);
  }
  expect_same_floats(p.download(), p1, "p");
  expect_same_floats(m.download(), m1, "m");
  EXPECT_EQ(bits_differ(w1, w.download()), 0u);
}

TEST(GpuSophia, DeterministicMetrics) {
  REQUIRE_GPU();
  const size_t n = 3000017;
  Trial t;
  StepInputs in = make_inputs(n, t.rng, false);
  const DecayRanges decay = random_ranges(0, n, t.rng);
  Dev<float> p(n), m(n), h(n), g(n);
  h.upload(in.h), g.upload(in.g);
  ReduceScratch scratch;
  double first[3] = {0, 0, 0};
  for (int run = 0; run < 3; ++run) {
    p.upload(in.p), m.upload(in.m);
    cuda::sophia_step<float, float>(p.get(), m.get(), h.get(), g.get(), nullptr, n, decay,
                                    sophia_consts(), RoundingKey{}, &scratch, nullptr);
    SophiaMetrics met;
    cuda::read_sophia_metrics(scratch, n, &met, nullptr);
    const double now[3] = {met.unclipped, met.h_l1, met.h_sq};
    if (run == 0) std::memcpy(first, now, sizeof(now));
    else EXPECT_EQ(std::memcmp(first, now, sizeof(now)), 0) << "run " << run;
  }
}

TEST(GpuSophia, DecayRangesFromLayout) {
  // Host-only logic, but it lives in the CUDA library.
  ModelConfig cfg;  // GPT-2 124M, bias = false
  const ParamLayout layout = ParamLayout::make(cfg);
  const DecayRanges d = DecayRanges::from_layout(layout);
  for (int t = 0; t < kNumParamTensors; ++t) {
    if (layout.size[t] == 0) continue;
    EXPECT_EQ(d.contains(layout.offset[t]), ParamLayout::decayed(t)) << param_tensor_name(t);
    EXPECT_EQ(d.contains(layout.offset[t] + layout.size[t] - 1), ParamLayout::decayed(t))
        << param_tensor_name(t);
  }
  EXPECT_LE(d.count, DecayRanges::kMax);
  const auto spans = cuda::pytorch_param_spans(layout, cfg.n_layer);
  EXPECT_EQ(spans.size(), static_cast<size_t>(3 + 6 * cfg.n_layer));
  size_t covered = 0;
  for (const auto& s : spans) covered += s.end - s.begin;
  EXPECT_EQ(covered, layout.total);
}

TEST(GpuSophia, UnfusedBaselineMatchesFused) {
  REQUIRE_GPU();
  const ModelConfig cfg = sgpt_test::model_config(2, 2, 64, 32, 100, 128);
  const ParamLayout layout = ParamLayout::make(cfg);
  const size_t n = layout.total;
  Trial t;
  StepInputs in = make_inputs(n, t.rng, true);
  const std::vector<bf16> g16 = narrowed<bf16>(in.g);
  const auto spans = cuda::pytorch_param_spans(layout, cfg.n_layer);
  size_t max_len = 0;
  for (const auto& s : spans) max_len = std::max(max_len, s.end - s.begin);
  const SophiaConsts c = sophia_consts();
  const RoundingKey key{t.seed, 3, 0};
  Dev<float> p(n), m(n), h(n), tmp(3 * max_len);
  Dev<bf16> g(n), w(n);
  h.upload(in.h), g.upload(g16);
  p.upload(in.p), m.upload(in.m);
  cuda::sophia_step<bf16, bf16>(p.get(), m.get(), h.get(), g.get(), w.get(), n,
                                DecayRanges::from_layout(layout), c, key, nullptr, nullptr);
  const auto pf = p.download(), mf = m.download();
  const auto wf = w.download();
  p.upload(in.p), m.upload(in.m);
  w.poison();
  cuda::sophia_step_unfused<bf16, bf16>(p.get(), m.get(), h.get(), g.get(), w.get(), spans, c, key,
                                        tmp.get(), nullptr);
  expect_same_floats(p.download(), pf, "p");
  expect_same_floats(m.download(), mf, "m");
  EXPECT_EQ(bits_differ(w.download(), wf), 0u);
}

// ------------------------------------------------------------------------------ Hessian EMA

template <class GradT>
void check_hessian(size_t n) {
  Trial t("n=" + std::to_string(n) + " ");
  StepInputs in = make_inputs(n, t.rng, true);
  const std::vector<GradT> g16 = narrowed<GradT>(in.g);
  const std::vector<float> gw = widened(g16);
  const HessianConsts c = HessianConsts::make(0.99);
  Dev<float> h(n);
  Dev<GradT> g(n);
  h.upload(in.h), g.upload(g16);
  cuda::hessian_ema<GradT>(h.get(), g.get(), n, c, nullptr);
  cpu::hessian_ema(in.h.data(), gw.data(), n, c);
  expect_same_floats(h.download(), in.h, "h");
}

TEST(GpuHessianEma, BitExact) {
  REQUIRE_GPU();
  for (size_t n : kSizes) {
    check_hessian<float>(n);
    check_hessian<bf16>(n);
    check_hessian<__half>(n);
  }
}

// ------------------------------------------------------------------------------------ AdamW

template <class GradT, class ParamT>
void check_adamw(size_t n, int64_t t) {
  Trial trial("n=" + std::to_string(n) + " t=" + std::to_string(t) + " ");
  StepInputs in = make_inputs(n, trial.rng, true);
  const std::vector<GradT> g16 = narrowed<GradT>(in.g);
  const std::vector<float> gw = widened(g16);
  const DecayRanges decay = random_ranges(0, n, trial.rng);
  const AdamWConsts c = AdamWConsts::make(6e-4, 0.9, 0.95, 1e-8, 0.1, t);
  const RoundingKey key{trial.seed, static_cast<uint32_t>(t), 0};
  Dev<float> p(n), m(n), v(n);
  Dev<GradT> g(n);
  Dev<ParamT> w(n);
  p.upload(in.p), m.upload(in.m), v.upload(in.v), g.upload(g16);
  w.poison();
  cuda::adamw_step<GradT, ParamT>(p.get(), m.get(), v.get(), g.get(), w.get(), n, decay, c, key,
                                  nullptr);
  for_decay_runs(0, n, decay, [&](size_t i, size_t len, bool dec) {
    cpu::adamw_update(in.p.data() + i, in.m.data() + i, in.v.data() + i, gw.data() + i, len, c,
                      dec);
  });
  expect_same_floats(p.download(), in.p, "p");
  expect_same_floats(m.download(), in.m, "m");
  expect_same_floats(v.download(), in.v, "v");
  if constexpr (std::is_same_v<ParamT, float>) expect_same_floats(w.download(), in.p, "weights");
  else expect_rounded_neighbours(w.download(), in.p, key);
}

TEST(GpuAdamW, BitExact) {
  REQUIRE_GPU();
  for (size_t n : kSizes) {
    check_adamw<float, float>(n, 1);
    check_adamw<float, float>(n, 1000);
    check_adamw<bf16, bf16>(n, 7);
    check_adamw<__half, __half>(n, 7);
  }
}

// ----------------------------------------------------------------- norm: sum of squares, scale

template <class GradT>
void check_sum_squares(size_t n, bool specials) {
  Trial t("n=" + std::to_string(n) + " ");
  std::mt19937_64& rng = t.rng;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<GradT> g16(n);
  std::vector<float> gw(n);
  for (size_t i = 0; i < n; ++i) {
    // Magnitudes over several decades, as real gradients have.
    g16[i] = narrow<GradT>(nd(rng) * std::pow(10.0f, -4.0f + 3.0f * std::fabs(nd(rng)) / 3.0f));
    gw[i] = widen(g16[i]);
  }
  if (specials && n > 10) {
    g16[n / 2] = narrow<GradT>(std::numeric_limits<float>::infinity());
    gw[n / 2] = widen(g16[n / 2]);
  }
  Dev<GradT> g(n);
  g.upload(g16);
  ReduceScratch scratch;
  cuda::grad_sum_squares<GradT>(g.get(), n, scratch, nullptr);
  const double got = cuda::read_sum_squares(scratch, nullptr);
  const double want = cpu::sum_squares(gw.data(), n);
  expect_rel(got, want, 9.0 * std::ldexp(1.0, -24), "sum of squares");
  // Determinism: same inputs, same bits.
  cuda::grad_sum_squares<GradT>(g.get(), n, scratch, nullptr);
  const double again = cuda::read_sum_squares(scratch, nullptr);
  EXPECT_EQ(std::memcmp(&got, &again, sizeof(double)), 0);
}

TEST(GpuNorm, SumSquaresVsDoubleCpu) {
  REQUIRE_GPU();
  for (size_t n : {size_t(1), size_t(31), size_t(1000003), size_t(16777259)}) {
    check_sum_squares<float>(n, false);
    check_sum_squares<bf16>(n, false);
    check_sum_squares<__half>(n, false);
  }
  check_sum_squares<float>(1001, true);
  check_sum_squares<bf16>(1001, true);
}

TEST(GpuNorm, ScratchReusedAcrossSizes) {
  REQUIRE_GPU();
  // One scratch, growing then shrinking sizes: each result equals the CPU's for its own buffer.
  ReduceScratch scratch;
  for (size_t n : {size_t(1000), size_t(30000001), size_t(31), size_t(5000000)}) {
    std::vector<float> v(n);
    std::mt19937_64 rng(fresh_seed());
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& x : v) x = nd(rng);
    Dev<float> g(n);
    g.upload(v);
    cuda::grad_sum_squares<float>(g.get(), n, scratch, nullptr);
    expect_rel(cuda::read_sum_squares(scratch, nullptr), cpu::sum_squares(v.data(), n),
               9.0 * std::ldexp(1.0, -24), "sum of squares");
  }
}

TEST(GpuNorm, SumSquaresNaNPropagates) {
  REQUIRE_GPU();
  std::vector<float> v(1000, 1.0f);
  v[777] = std::numeric_limits<float>::quiet_NaN();
  Dev<float> g(v.size());
  g.upload(v);
  ReduceScratch scratch;
  cuda::grad_sum_squares<float>(g.get(), v.size(), scratch, nullptr);
  EXPECT_TRUE(std::isnan(cuda::read_sum_squares(scratch, nullptr)));
}

TEST(GpuNorm, ScaleBitExact) {
  REQUIRE_GPU();
  const size_t n = 1000003;
  Trial t;
  StepInputs in = make_inputs(n, t.rng, true);
  const float s = cpu::clip_scale(3.7, 1.0);
  Dev<float> g(n);
  g.upload(in.g);
  cuda::scale_grad<float>(g.get(), n, s, nullptr);
  cpu::scale(in.g.data(), n, s);
  expect_same_floats(g.download(), in.g, "g");

  // bf16: widened, multiplied once in fp32 (exact reference: cpu::scale on the widened values),
  // rounded to nearest-even.
  const std::vector<bf16> b = narrowed<bf16>(in.p);
  std::vector<float> bw = widened(b);
  Dev<bf16> gb(n);
  gb.upload(b);
  cuda::scale_grad<bf16>(gb.get(), n, s, nullptr);
  cpu::scale(bw.data(), n, s);
  EXPECT_EQ(bits_differ(gb.download(), narrowed<bf16>(bw)), 0u);
}

// ------------------------------------------------------------------------ casts and rounding

template <class T>
void check_sr_unbiased(float x) {
  SCOPED_TRACE("x=" + std::to_string(x));
  const size_t n = 1 << 20;
  std::vector<float> in(n, x);
  Dev<float> d(n);
  Dev<T> out(n);
  d.upload(in);
  out.poison();
  const RoundingKey key{fresh_seed(), 42, 0};
  cuda::stochastic_round<T>(d.get(), out.get(), n, key, nullptr);
  const auto r = out.download();
  float lo, hi;
  neighbours<T>(x, lo, hi);
  size_t ups = 0;
  for (size_t i = 0; i < n; ++i) {
    const float y = widen(r[i]);
    ASSERT_TRUE(y == lo || y == hi) << "result " << y << " at " << i << " not in {" << lo << ", "
                                    << hi << "}";
    ups += (y == hi && y != lo);
  }
  const double spacing = static_cast<double>(hi) - static_cast<double>(lo);
  const double f = (static_cast<double>(x) - lo) / spacing;  // probability of rounding up
  if (f == 0.0) {
    EXPECT_EQ(ups, 0u) << "a representable value must round to itself";
    return;
  }
  const double mean_frac = static_cast<double>(ups) / n;
  const double sigma = std::sqrt(f * (1 - f) / n);
  EXPECT_NEAR(mean_frac, f, 5 * sigma + 1e-12);
  // The mean of the rounded values converges to x.
  double mean = 0;
  for (size_t i = 0; i < n; ++i) mean += widen(r[i]);
  mean /= n;
  EXPECT_NEAR(mean, x, 5 * sigma * std::fabs(spacing) + 1e-7 * std::fabs(spacing));
}

TEST(GpuCast, StochasticRoundingBf16Unbiased) {
  REQUIRE_GPU();
  const float ulp1 = std::ldexp(1.0f, -7);  // bf16 spacing in [1, 2)
  for (float f : {0.0f, 0.01f, 0.3f, 0.5f, 0.77f, 0.999f}) {
    check_sr_unbiased<bf16>(1.0f + f * ulp1);
    check_sr_unbiased<bf16>(-(1.0f + f * ulp1));
  }
  check_sr_unbiased<bf16>(0.0123456789f);
  check_sr_unbiased<bf16>(-3.3e-20f);
}

TEST(GpuCast, StochasticRoundingFp16Unbiased) {
  REQUIRE_GPU();
  const float ulp1 = std::ldexp(1.0f, -10);  // fp16 spacing in [1, 2)
  for (float f : {0.0f, 0.01f, 0.3f, 0.5f, 0.999f}) {
    check_sr_unbiased<__half>(1.0f + f * ulp1);
    check_sr_unbiased<__half>(-(1.0f + f * ulp1));
  }
  check_sr_unbiased<__half>(0.0123456789f);
  check_sr_unbiased<__half>(3.3e-6f);     // fp16 subnormal range
  check_sr_unbiased<__half>(-1.234e-7f);  // subnormal, rounds to 2^-24 * {2, 3}
}

TEST(GpuCast, StochasticRoundingSpecials) {
  REQUIRE_GPU();
  const std::vector<float> in = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 65504.0f, 1e-45f};
  Dev<float> d(in.size());
  Dev<bf16> ob(in.size());
  Dev<__half> oh(in.size());
  d.upload(in);
  cuda::stochastic_round<bf16>(d.get(), ob.get(), in.size(), RoundingKey{1, 1, 0}, nullptr);
  cuda::stochastic_round<__half>(d.get(), oh.get(), in.size(), RoundingKey{1, 1, 0}, nullptr);
  const auto b = ob.download();
  const auto h = oh.download();
  EXPECT_EQ(bits16(b[0]), 0x0000);
  EXPECT_EQ(bits16(b[1]), 0x8000);
  EXPECT_EQ(bits16(b[2]), 0x7F80);
  EXPECT_EQ(bits16(b[3]), 0xFF80);
  EXPECT_TRUE(std::isnan(widen(b[4])));
  EXPECT_EQ(bits16(h[0]), 0x0000);
  EXPECT_EQ(bits16(h[1]), 0x8000);
  EXPECT_EQ(bits16(h[2]), 0x7C00);
  EXPECT_EQ(bits16(h[3]), 0xFC00);
  EXPECT_TRUE(std::isnan(widen(h[4])));
  EXPECT_EQ(widen(h[5]), 65504.0f);  // representable: exact
  EXPECT_EQ(widen(h[6]), 0.0f);  // 1e-45: rounds up only when the 24-bit uniform is 0 (p = 2^-24)
}

TEST(GpuCast, RoundToNearestAndWiden) {
  REQUIRE_GPU();
  const size_t n = 100003;
  Trial t;
  StepInputs in = make_inputs(n, t.rng, true);
  Dev<float> d(n), back(n);
  Dev<bf16> b(n);
  Dev<__half> h(n);
  d.upload(in.p);
  cuda::cast_rn<bf16>(d.get(), b.get(), n, nullptr);
  cuda::cast_rn<__half>(d.get(), h.get(), n, nullptr);
  const auto gb = b.download();
  EXPECT_EQ(bits_differ(gb, narrowed<bf16>(in.p)) + bits_differ(h.download(), narrowed<__half>(in.p)), 0u);
  cuda::to_float<bf16>(b.get(), back.get(), n, nullptr);
  EXPECT_EQ(bits_differ(back.download(), widened(gb)), 0u);
}

TEST(GpuCast, SophiaWeightsEqualStochasticRoundOfMaster) {
  REQUIRE_GPU();
  // The working weights written by the fused step are the keyed rounding of the new master.
  const size_t n = 65537;
  Trial t;
  StepInputs in = make_inputs(n, t.rng, false);
  Dev<float> p(n), m(n), h(n), g(n);
  Dev<bf16> w(n), w2(n);
  p.upload(in.p), m.upload(in.m), h.upload(in.h), g.upload(in.g);
  const RoundingKey key{t.seed, 99, 0};
  cuda::sophia_step<float, bf16>(p.get(), m.get(), h.get(), g.get(), w.get(), n, DecayRanges{},
                                 sophia_consts(), key, nullptr, nullptr);
  cuda::stochastic_round<bf16>(p.get(), w2.get(), n, key, nullptr);
  const auto a = w.download();
  EXPECT_EQ(bits_differ(a, w2.download()), 0u);
  // A different step draws different roundings (most elements are not representable).
  cuda::stochastic_round<bf16>(p.get(), w2.get(), n, RoundingKey{t.seed, 100, 0}, nullptr);
  EXPECT_GT(bits_differ(a, w2.download()), n / 10);
}
