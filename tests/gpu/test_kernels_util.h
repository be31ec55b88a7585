// Helpers of the GPU kernel tests: random host data, device copies in float or bf16, poisoning,
// and comparison against the CPU reference with a stated tolerance.
//
// Comparison: every element must satisfy |gpu - ref| <= rtol * |ref| + atol * max_j |ref_j|
// (atol is relative to the tensor's largest magnitude, so the bound is scale-free), and no NaN may
// appear. The normwise error ||gpu - ref|| / ||ref|| is printed with every check.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/buffer.h"
#include "cuda/cuda_backend.h"
#include "cuda/ops_cuda.h"
#include "model/gpt2.h"
#include "test_model.h"

#define SGPT_SKIP_WITHOUT_GPU()                                   \
  do {                                                            \
    std::string sgpt_why_;                                        \
    if (!sgpt::cuda_usable(&sgpt_why_)) GTEST_SKIP() << sgpt_why_; \
  } while (0)

namespace sgpt::test {

using cuda::bf16;
using cuda::DeviceBuffer;

// A fresh seed per run (the inputs differ between runs); printed so a failure can be replayed
// with SGPT_TEST_SEED.
inline uint64_t test_seed() {
  if (const char* s = std::getenv("SGPT_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  static std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}

struct Rng {
  std::mt19937_64 gen;
  explicit Rng(uint64_t seed) : gen(seed) {}
  std::vector<float> normal(size_t n, float stddev = 1.0f, float mean = 0.0f) {
    std::normal_distribution<float> d(mean, stddev);
    std::vector<float> v(n);
    for (auto& x : v) x = d(gen);
    return v;
  }
  std::vector<float> uniform(size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(gen);
    return v;
  }
  std::vector<int> ints(size_t n, int lo, int hi_exclusive) {
    std::uniform_int_distribution<int> d(lo, hi_exclusive - 1);
    std::vector<int> v(n);
    for (auto& x : v) x = d(gen);
    return v;
  }
};

// The random source of one check: seeded with test_seed(), and "SGPT_TEST_SEED=<seed>" followed by
// `what` in the trace of every failure while it lives.
struct SeededRng : Rng {
  uint64_t seed;
  ::testing::ScopedTrace trace;
  explicit SeededRng(const std::string& what = "", uint64_t s = test_seed())
      : Rng(s), seed(s), trace(__FILE__, __LINE__, "SGPT_TEST_SEED=" + std::to_string(s) + what) {}
};

// init_params with `seed`; with `randomize_norms_and_biases`, then every LayerNorm weight ~ N(1, 0.1)
// and every bias ~ N(0, 0.1) (from Rng(seed + 1)): non-zero biases and LayerNorm parameters
// exercise those paths.
inline std::vector<float> test_params(const ModelConfig& cfg, uint64_t seed, bool randomize_norms_and_biases) {
  std::vector<float> p = sgpt_test::initial_params(cfg, seed);
  if (randomize_norms_and_biases) {
    const ParamLayout layout = ParamLayout::make(cfg);
    Rng rng(seed + 1);
    for (int t : {kLn1w, kLn1b, kQkvb, kAttprojb, kLn2w, kLn2b, kFcb, kFcprojb, kLnfw, kLnfb}) {
      auto r = rng.normal(layout.size[t], 0.1f, t == kLn1w || t == kLn2w || t == kLnfw ? 1.0f : 0.0f);
      std::copy(r.begin(), r.end(), p.begin() + layout.offset[t]);
    }
  }
  return p;
}

// Round a float vector to the storage type T and back (the values the GPU actually sees).
template <class T>
std::vector<float> as_stored(const std::vector<float>& v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    std::vector<float> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) r[i] = __bfloat162float(__float2bfloat16(v[i]));
    return r;
  }
}

template <class T>
DeviceBuffer<T> to_device(const std::vector<float>& v) {
  std::vector<T> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if constexpr (std::is_same_v<T, float>) h[i] = v[i];
    else h[i] = __float2bfloat16(v[i]);
  }
  DeviceBuffer<T> d(v.size());
  if (!h.empty()) d.upload(h.data(), h.size());
  return d;
}

inline DeviceBuffer<int> to_device_int(const std::vector<int>& v) {
  DeviceBuffer<int> d(v.size());
  if (!v.empty()) d.upload(v.data(), v.size());
  return d;
}

template <class T>
std::vector<float> to_host(const DeviceBuffer<T>& d) {
  SGPT_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> h = d.download();
  std::vector<float> r(h.size());
  for (size_t i = 0; i < h.size(); ++i) {
    if constexpr (std::is_same_v<T, float>) r[i] = h[i];
    else r[i] = __bfloat162float(h[i]);
  }
  return r;
}

// All bytes 0xFF: NaN in fp32 and bf16, -1 in int32. Outputs that a launch fails to write stay NaN.
template <class T>
void poison(DeviceBuffer<T>& d) {
  SGPT_CUDA_CHECK(cudaMemset(d.get(), 0xFF, d.bytes()));
}

struct Tol {
  double rtol, atol;
};

inline void expect_close(const std::vector<float>& gpu, const std::vector<float>& ref, Tol tol,
                         const std::string& what) {
  ASSERT_EQ(gpu.size(), ref.size()) << what;
  double maxref = 0, num = 0, den = 0, maxerr = 0;
  for (float r : ref) maxref = std::max(maxref, std::fabs(double(r)));
  size_t bad = 0, first_bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = gpu[i], r = ref[i], e = std::fabs(g - r);
    num += e * e;
    den += r * r;
    maxerr = std::max(maxerr, std::isnan(e) ? INFINITY : e);
    if (!(e <= tol.rtol * std::fabs(r) + tol.atol * maxref)) {  // NaN fails
      if (bad == 0) first_bad = i;
      ++bad;
    }
  }
  const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  std::printf("  %-28s n=%-9zu normwise rel err %.3g  max abs err %.3g (max |ref| %.3g)\n",
              what.c_str(), ref.size(), rel, maxerr, maxref);
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << ref.size()
                     << " elements outside tolerance; first at " << first_bad << ": gpu "
                     << gpu[first_bad] << " ref " << ref[first_bad] << " (rtol " << tol.rtol
                     << ", atol " << tol.atol << " x max|ref| " << maxref << ")";
}

// Milliseconds fn() takes on the GPU: the median of 5 runs timed with CUDA events, after one
// untimed run (the benchmarks).
template <class Fn>
float median_ms(Fn&& fn) {
  cudaEvent_t e0, e1;
  SGPT_CUDA_CHECK(cudaEventCreate(&e0));
  SGPT_CUDA_CHECK(cudaEventCreate(&e1));
  fn();
  std::vector<float> ms;
  for (int r = 0; r < 5; ++r) {
    SGPT_CUDA_CHECK(cudaEventRecord(e0));
    fn();
    SGPT_CUDA_CHECK(cudaEventRecord(e1));
    SGPT_CUDA_CHECK(cudaEventSynchronize(e1));
    float t = 0;
    SGPT_CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  SGPT_CUDA_CHECK(cudaEventDestroy(e0));
  SGPT_CUDA_CHECK(cudaEventDestroy(e1));
  std::sort(ms.begin(), ms.end());
  return ms[2];
}

// Number of elements whose bits differ (NaN payloads included); vectors of different sizes differ
// in all of the longer one's elements.
template <class T>
size_t bits_differ(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return std::max(a.size(), b.size());
  size_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return diff;
}

// Whether two vectors hold the same bits, element for element.
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Index of the first element whose bits differ; the shorter size where one vector is a prefix of
// the other (so a.size() where they are equal).
template <class T>
size_t first_difference(const std::vector<T>& a, const std::vector<T>& b) {
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return i;
  return n;
}

// The small model of the whole-backend comparisons (recompute, graphs): 3 layers, block 40,
// vocabulary 97 (padded to 128), biases.
inline ModelConfig odd_backend_config(int n_embd, int n_head) {
  return sgpt_test::model_config(3, n_head, n_embd, 40, 97, 128, /*bias=*/true);
}

inline const char* precision_name(Precision p) { return p == Precision::kFp32 ? "fp32" : "bf16"; }
inline const char* attention_label(AttentionImpl a) { return a == AttentionImpl::kCudnn ? "cudnn" : "own"; }

}  // namespace sgpt::test
