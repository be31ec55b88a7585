// Fused causal attention (kernels/attention.cu) vs cpu::attention_forward/backward.
// The GPU saves the log-sum-exp per query instead of the probabilities, so only out and dinp are
// compared. Tolerances: fp32 rtol 1e-4, atol 1e-5 (softmax sums and dot products over up to T
// keys / hs dims in a different order; the online softmax rescales per 32-key tile);
// bf16 forward rtol 1e-2, atol 4e-3 (fp32 arithmetic, each output rounded once to bf16: 2^-8
// relative; dinp accumulates into bf16, rounded at the scale of its addends, see test_kernels.cpp). bf16 backward additionally: the row term D_t = dout_t . out_t is computed from the
// bf16-stored output (as in flash attention), so D carries an error up to ~2^-8 sqrt(hs) |dout||out|
// which enters dq_t and dk_j multiplied by scale * (P-weighted averages of k and q): an absolute
// error of a few 1e-3 relative to the largest gradient (seen: 1.1e-3 x max|ref|); atol 4e-3.
// bf16 with head size 64 runs the tensor-core kernels (kernels/flash_attention.cu), checked with the
// same tolerances: they also round P (forward, dk/dv) and dS (backward) to bf16 before the
// tensor-core products, a relative error of at most 2^-9 per term of sums that stay fp32; the terms'
// errors have random signs, so the sums err by ~2^-9 of the root-sum-square of their terms, below
// the once-rounded output (2^-8 relative) that the tolerance already covers.
// cuDNN's fused attention (src/cuda/attention_cudnn.cpp, bf16 only) is checked the same way and
// with the same tolerances: it too keeps fp32 softmax statistics and accumulators and rounds P and
// dS to bf16 before the tensor-core products. Its backward overwrites dinp, so its reference
// starts from zero and the device buffer from NaN (poison) to show every element is written.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "cpu/ops.h"
#include "cuda/attention_cudnn.h"
#include "cuda/ops_cuda.h"
#include "test_kernels_util.h"

namespace sgpt::test {
namespace {

// nullptr: our kernels (attention_forward/backward); otherwise cuDNN through `cudnn` (bf16).
template <class T>
void check_attention(int B, int T_, int C, int NH, float scale,
                     cuda::CudnnAttention* cudnn = nullptr) {
  SeededRng rng(" B=" + std::to_string(B) + " T=" + std::to_string(T_) + " C=" + std::to_string(C) +
                " NH=" + std::to_string(NH));
  const size_t N = size_t(B) * T_;
  auto inp = as_stored<T>(rng.normal(N * 3 * C));
  std::vector<float> out(N * C), att(size_t(B) * NH * T_ * T_);
  cpu::attention_forward(out.data(), att.data(), inp.data(), B, T_, C, NH, scale);

  auto d_inp = to_device<T>(inp);
  DeviceBuffer<T> d_out(N * C);
  DeviceBuffer<float> d_lse(size_t(B) * NH * T_);
  poison(d_out);
  poison(d_lse);
  if constexpr (std::is_same_v<T, bf16>) {
    if (cudnn)
      cudnn->forward(d_out.get(), d_lse.get(), d_inp.get(), B, T_, C, NH, scale, nullptr);
  }
  if (!cudnn)
    cuda::attention_forward(d_out.get(), d_lse.get(), d_inp.get(), B, T_, C, NH, scale, nullptr);
  const bool bf = std::is_same_v<T, bf16>;
  const Tol tol = bf ? Tol{1e-2, 4e-3} : Tol{1e-4, 1e-5};
  expect_close(to_host(d_out), out, tol, "attention_forward out");

  // The saved lse, checked against the CPU probabilities: P[t][0] = exp(s_t0 - lse_t).
  auto lse = to_host(d_lse);
  std::vector<float> p0(lse.size()), p0_ref(lse.size());
  const int hs = C / NH;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T_; ++t) {
        const float* q = inp.data() + (size_t(b) * T_ + t) * 3 * C + size_t(h) * hs;
        const float* k = inp.data() + (size_t(b) * T_) * 3 * C + C + size_t(h) * hs;
        double s = 0;
        for (int d = 0; d < hs; ++d) s += double(q[d]) * k[d];
        const size_t i = (size_t(b) * NH + h) * T_ + t;
        p0[i] = static_cast<float>(std::exp(s * scale - lse[i]));
        p0_ref[i] = att[i * T_ + 0];
      }
  expect_close(p0, p0_ref, Tol{1e-4, 1e-5}, "attention lse (via P[t][0])");

  auto dout = as_stored<T>(rng.normal(N * C));
  auto dinp = as_stored<T>(rng.normal(N * 3 * C));
  if (cudnn) std::fill(dinp.begin(), dinp.end(), 0.0f);  // cuDNN overwrites dinp
  auto d_dout = to_device<T>(dout), d_dinp = to_device<T>(dinp);
  if (cudnn) poison(d_dinp);
  // The CPU backward uses the CPU forward's out implicitly (through att); the GPU needs out: use
  // the GPU's own out (as the backend does).
  cpu::attention_backward(dinp.data(), dout.data(), inp.data(), att.data(), B, T_, C, NH, scale);
  cuda::Scratch scratch;
  if constexpr (std::is_same_v<T, bf16>) {
    if (cudnn)
      cudnn->backward(d_dinp.get(), d_dout.get(), d_inp.get(), d_out.get(), d_lse.get(), B, T_, C,
                      NH, scale, nullptr);
  }
  if (!cudnn)
    cuda::attention_backward(d_dinp.get(), d_dout.get(), d_inp.get(), d_out.get(), d_lse.get(), B,
                             T_, C, NH, scale, scratch, nullptr);
  const Tol bwd_tol = bf ? Tol{1e-2, 4e-3} : tol;
  expect_close(to_host(d_dinp), dinp, bwd_tol, "attention_backward dinp");
}

TEST(Kernels, AttentionFp32) {
  SGPT_SKIP_WITHOUT_GPU();
  check_attention<float>(2, 37, 72, 3, 1.0f / std::sqrt(24.0f));        // hs 24, T not /32
  check_attention<float>(1, 70, 128, 2, 1.0f / std::sqrt(64.0f) / 3);   // hs 64, layer scale
  check_attention<float>(2, 33, 96, 1, 1.0f / std::sqrt(96.0f));        // hs 96 (R = 3)
  check_attention<float>(1, 40, 256, 2, 1.0f / std::sqrt(128.0f));      // hs 128 (R = 4)
  check_attention<float>(3, 1, 48, 4, 0.3f);                            // T = 1
}
TEST(Kernels, AttentionBf16) {
  SGPT_SKIP_WITHOUT_GPU();
  check_attention<bf16>(2, 37, 72, 3, 1.0f / std::sqrt(24.0f));  // hs 24: the simple kernels
  check_attention<bf16>(1, 70, 128, 2, 1.0f / std::sqrt(64.0f));
}

// Tensor-core path (bf16, head size 64): tiles of 64 rows, so T below, at and across tile edges.
TEST(Kernels, AttentionBf16Flash) {
  SGPT_SKIP_WITHOUT_GPU();
  check_attention<bf16>(2, 257, 192, 3, 1.0f / std::sqrt(64.0f) / 3);  // 5 tiles, last 1 row
  check_attention<bf16>(1, 64, 64, 1, 1.0f / std::sqrt(64.0f));        // exactly one tile
  check_attention<bf16>(3, 1, 128, 2, 0.3f);                            // T = 1
  check_attention<bf16>(1, 1024, 128, 2, 1.0f / std::sqrt(64.0f));     // GPT-2 length
  check_attention<bf16>(2, 100, 768, 12, 1.0f / std::sqrt(64.0f) / 12);  // GPT-2 124M heads
}

// Identical inputs give identical bits (no atomics, fixed summation order), forward and backward.
TEST(Kernels, AttentionBf16FlashDeterministic) {
  SGPT_SKIP_WITHOUT_GPU();
  const int B = 2, T_ = 300, C = 128, NH = 2;
  const float scale = 0.125f;
  Rng rng(test_seed());
  const size_t N = size_t(B) * T_;
  auto d_inp = to_device<bf16>(rng.normal(N * 3 * C));
  auto d_dout = to_device<bf16>(rng.normal(N * C));
  const auto dinp0 = rng.normal(N * 3 * C);
  std::vector<std::vector<float>> outs, dinps;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<bf16> d_out(N * C);
    DeviceBuffer<float> d_lse(size_t(B) * NH * T_);
    auto d_dinp = to_device<bf16>(dinp0);
    cuda::Scratch scratch;
    cuda::attention_forward(d_out.get(), d_lse.get(), d_inp.get(), B, T_, C, NH, scale, nullptr);
    cuda::attention_backward(d_dinp.get(), d_dout.get(), d_inp.get(), d_out.get(), d_lse.get(), B,
                             T_, C, NH, scale, scratch, nullptr);
    outs.push_back(to_host(d_out));
    dinps.push_back(to_host(d_dinp));
  }
  EXPECT_EQ(0, std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(dinps[0].data(), dinps[1].data(), dinps[0].size() * sizeof(float)));
  EXPECT_NE(dinps[0], dinp0);  // the backward did accumulate something
}

// cuDNN fused attention (bf16): T below, at and across cuDNN's 64/128-row tiles, head sizes 64 and
// 32, several batch shapes through one CudnnAttention (one plan per shape), per-layer scales.
TEST(Kernels, AttentionBf16Cudnn) {
  SGPT_SKIP_WITHOUT_GPU();
  if (!cuda::CudnnAttention::built()) GTEST_SKIP() << "built without cuDNN";
  cuda::CudnnAttention cudnn;
  check_attention<bf16>(2, 257, 192, 3, 1.0f / std::sqrt(64.0f) / 3, &cudnn);
  check_attention<bf16>(1, 64, 64, 1, 1.0f / std::sqrt(64.0f), &cudnn);
  check_attention<bf16>(3, 1, 128, 2, 0.3f, &cudnn);                         // T = 1
  check_attention<bf16>(1, 1024, 128, 2, 1.0f / std::sqrt(64.0f), &cudnn);   // GPT-2 length
  check_attention<bf16>(2, 100, 768, 12, 1.0f / std::sqrt(64.0f) / 12, &cudnn);  // 124M heads
  check_attention<bf16>(2, 77, 96, 3, 1.0f / std::sqrt(32.0f), &cudnn);      // head size 32
  std::printf("[cudnn] %s\n", cudnn.describe().c_str());
}

// The saved lse means the same thing in both implementations, so cuDNN's forward can feed our
// backward and ours can feed cuDNN's: each pairing must give the same dinp within the bf16
// tolerance (our backward accumulates onto zeros here).
TEST(Kernels, AttentionBf16CudnnOwnLseInterchange) {
  SGPT_SKIP_WITHOUT_GPU();
  if (!cuda::CudnnAttention::built()) GTEST_SKIP() << "built without cuDNN";
  cuda::CudnnAttention cudnn;
  const int B = 2, T_ = 200, C = 128, NH = 2;
  const float scale = 0.125f;
  Rng rng(test_seed());
  const size_t N = size_t(B) * T_;
  auto d_inp = to_device<bf16>(rng.normal(N * 3 * C));
  auto d_dout = to_device<bf16>(rng.normal(N * C));
  DeviceBuffer<bf16> out_own(N * C), out_cudnn(N * C);
  DeviceBuffer<float> lse_own(size_t(B) * NH * T_), lse_cudnn(size_t(B) * NH * T_);
  cuda::attention_forward(out_own.get(), lse_own.get(), d_inp.get(), B, T_, C, NH, scale, nullptr);
  cudnn.forward(out_cudnn.get(), lse_cudnn.get(), d_inp.get(), B, T_, C, NH, scale, nullptr);
  expect_close(to_host(lse_cudnn), to_host(lse_own), Tol{1e-5, 1e-5}, "lse cuDNN vs own");
  auto zeros = std::vector<float>(N * 3 * C, 0.0f);
  auto d_a = to_device<bf16>(zeros), d_b = to_device<bf16>(zeros);
  cuda::Scratch scratch;
  // our backward on cuDNN's forward; cuDNN's backward on our forward
  cuda::attention_backward(d_a.get(), d_dout.get(), d_inp.get(), out_cudnn.get(), lse_cudnn.get(),
                           B, T_, C, NH, scale, scratch, nullptr);
  cudnn.backward(d_b.get(), d_dout.get(), d_inp.get(), out_own.get(), lse_own.get(), B, T_, C, NH,
                 scale, nullptr);
  expect_close(to_host(d_a), to_host(d_b), Tol{2e-2, 8e-3}, "dinp own(cuDNN fwd) vs cuDNN(own fwd)");
}

// cuDNN with the engines we accept (none marked non-deterministic): identical bits twice.
TEST(Kernels, AttentionBf16CudnnDeterministic) {
  SGPT_SKIP_WITHOUT_GPU();
  if (!cuda::CudnnAttention::built()) GTEST_SKIP() << "built without cuDNN";
  cuda::CudnnAttention cudnn;
  const int B = 4, T_ = 1024, C = 768, NH = 12;
  const float scale = 0.125f;
  Rng rng(test_seed());
  const size_t N = size_t(B) * T_;
  auto d_inp = to_device<bf16>(rng.normal(N * 3 * C));
  auto d_dout = to_device<bf16>(rng.normal(N * C));
  std::vector<std::vector<float>> outs, dinps;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<bf16> d_out(N * C), d_dinp(N * 3 * C);
    DeviceBuffer<float> d_lse(size_t(B) * NH * T_);
    cudnn.forward(d_out.get(), d_lse.get(), d_inp.get(), B, T_, C, NH, scale, nullptr);
    cudnn.backward(d_dinp.get(), d_dout.get(), d_inp.get(), d_out.get(), d_lse.get(), B, T_, C, NH,
                   scale, nullptr);
    outs.push_back(to_host(d_out));
    dinps.push_back(to_host(d_dinp));
  }
  EXPECT_EQ(0, std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(dinps[0].data(), dinps[1].data(), dinps[0].size() * sizeof(float)));
}

}  // namespace
}  // namespace sgpt::test
