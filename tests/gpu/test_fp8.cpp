// The FP8 lm head (config key lm_head_precision "fp8"; kernels/fp8.cu, kernels/matmul.cu):
//   - the host rounding of kernels/fp8.cuh against hand-worked E4M3 values (no GPU needed);
//   - the quantization kernel's bytes equal the host rounding of kernels/fp8.cuh, which is
//     written from the E4M3 format's definition (the kernel uses CUDA's own conversion), and its
//     amax and descale are the host's exactly;
//   - the FP8 product against a double-precision product of the same E4M3 operands, within
//     2^-8 |ref| (bf16 output rounding, 2^-9, with room) + 2^-11 sum|terms| (the tensor cores'
//     FP8 accumulation keeps fewer bits than fp32 between its promotions to fp32);
//   - a training step with it: the logits differ from the bf16 head's (the option is in effect)
//     by no more than E4M3's rounding allows, and the loss stays within 0.02 of the bf16 loss.
// The graph-captured micro-step with it is in test_graphs.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/ops_cuda.h"
#include "fp8.cuh"
#include "test_kernels_util.h"
#include "test_model.h"

namespace sgpt::test {
namespace {

#define SGPT_SKIP_WITHOUT_FP8()                                                     \
  do {                                                                              \
    SGPT_SKIP_WITHOUT_GPU();                                                        \
    if (!cuda::fp8_matmul_usable()) GTEST_SKIP() << "no FP8 tensor cores (cc < 8.9)"; \
  } while (0)

struct HostQuant {
  float amax = 0, descale = 0;
  std::vector<uint8_t> q;
};

// The host's version of absmax + quantize_e4m3 (their header comments in cuda/ops_cuda.h).
HostQuant host_quantize(const std::vector<float>& x) {
  HostQuant h;
  for (float v : x) h.amax = std::fabs(v) > h.amax || std::isnan(v) ? std::fabs(v) : h.amax;
  const float s = h.amax > 0 && std::isfinite(h.amax) ? 448.0f / h.amax : 1.0f;
  h.descale = 1.0f / s;
  h.q.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) h.q[i] = cuda::e4m3_bits(x[i] * s);
  return h;
}

struct DeviceQuant {
  float amax = 0, descale = 0;
  std::vector<uint8_t> q;
};

DeviceQuant device_quantize(const DeviceBuffer<bf16>& x, size_t n) {
  DeviceBuffer<uint8_t> q(std::max<size_t>(n, 1));
  DeviceBuffer<float> s(2);
  cuda::absmax(s.get(), x.get(), n, nullptr);
  cuda::quantize_e4m3(q.get(), s.get() + 1, x.get(), n, s.get(), nullptr);
  SGPT_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> hs = s.download();
  DeviceQuant d{hs[0], hs[1], q.download()};
  d.q.resize(n);
  return d;
}

// The host rounding against values worked out by hand from the format (bias 7, 3 mantissa bits):
// runs without a GPU.
TEST(Fp8, HostRoundingOfTheFormat) {
  struct Case {
    float x;
    uint8_t bits;
    float value;
  };
  const Case cases[] = {
      {0.0f, 0x00, 0.0f},           {-0.0f, 0x80, -0.0f},
      {1.0f, 0x38, 1.0f},           // exponent 7 (2^0), mantissa 0
      {-1.0f, 0xB8, -1.0f},         {1.0625f, 0x38, 1.0f},  // halfway 1 / 1.125: to even (1)
      {1.1875f, 0x3A, 1.25f},       // halfway 1.125 / 1.25: to even (1.25, mantissa 2)
      {1.2f, 0x3A, 1.25f},          {232.0f, 0x76, 224.0f},  // halfway 224 / 240: to even (224)
      {240.0f, 0x77, 240.0f},       {416.0f, 0x7D, 416.0f},
      {432.0f, 0x7E, 448.0f},       // halfway 416 / 448: to even (448, mantissa 6)
      {448.0f, 0x7E, 448.0f},       // the largest finite value
      {449.0f, 0x7E, 448.0f},       {1e6f, 0x7E, 448.0f},    // saturate
      {-1e6f, 0xFE, -448.0f},       {INFINITY, 0x7E, 448.0f},
      {0.015625f, 0x08, 0.015625f},  // 2^-6, the smallest normal
      {0.001953125f, 0x01, 0.001953125f},  // 2^-9, the smallest subnormal
      {0.0029296875f, 0x02, 0.00390625f},  // 1.5 x 2^-9: to even (2 x 2^-9)
      {0.0009765625f, 0x00, 0.0f},          // 0.5 x 2^-9: to even (0)
      {0.0146484375f, 0x08, 0.015625f},     // 7.5 x 2^-9: to even (8 x 2^-9 = 2^-6)
      {1e-10f, 0x00, 0.0f},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(cuda::e4m3_bits(c.x), c.bits) << c.x;
    const float v = cuda::e4m3_value(c.bits);
    EXPECT_TRUE(v == c.value && std::signbit(v) == std::signbit(c.value)) << c.x << " -> " << v;
  }
  EXPECT_EQ(cuda::e4m3_bits(NAN), 0x7F);
  EXPECT_TRUE(std::isnan(cuda::e4m3_value(0x7F)) && std::isnan(cuda::e4m3_value(0xFF)));
  // Every finite encoding decodes to a value that encodes back to it.
  for (int c = 0; c < 256; ++c)
    if ((c & 0x7F) != 0x7F) EXPECT_EQ(cuda::e4m3_bits(cuda::e4m3_value(uint8_t(c))), c) << c;
}

TEST(Fp8, QuantizationEqualsTheHostRounding) {
  SGPT_SKIP_WITHOUT_GPU();
  SeededRng rng;
  for (size_t n : {size_t(1), size_t(7), size_t(1000), size_t(123457)}) {
    for (float sd : {1.0f, 3e-3f, 40.0f}) {
      std::vector<float> x = as_stored<bf16>(rng.normal(n, sd));
      if (n > 100) {  // zeros, values that land on E4M3's subnormals after scaling, the largest
        x[3] = 0.0f;
        x[4] = -0.0f;
        x[5] = x[6] = 1e-30f * sd;
      }
      x = as_stored<bf16>(x);
      const HostQuant h = host_quantize(x);
      const DeviceBuffer<bf16> dx = to_device<bf16>(x);
      const DeviceQuant d = device_quantize(dx, n);
      EXPECT_EQ(d.amax, h.amax) << "n " << n << " sd " << sd;
      EXPECT_EQ(d.descale, h.descale) << "n " << n << " sd " << sd;
      EXPECT_TRUE(same_bits(d.q, h.q)) << "n " << n << " sd " << sd << ": first difference at "
                                       << first_difference(d.q, h.q);
    }
  }
  // All zeros: scale 1, every byte 0.
  const DeviceBuffer<bf16> z = to_device<bf16>(std::vector<float>(300, 0.0f));
  const DeviceQuant d = device_quantize(z, 300);
  EXPECT_EQ(d.amax, 0.0f);
  EXPECT_EQ(d.descale, 1.0f);
  EXPECT_EQ(d.q, std::vector<uint8_t>(300, 0));
}

TEST(Fp8, MatmulCloseToTheProductOfItsOperands) {
  SGPT_SKIP_WITHOUT_FP8();
  SeededRng rng;
  cuda::MatmulContext ctx;
  struct Shape {
    int N, C, OC;
  };
  // N odd, C a multiple of 16 (the FP8 GEMM's rule), OC = a padded vocabulary or a multiple of 8.
  for (const Shape& s : {Shape{1, 64, 136}, Shape{37, 768, 1000}, Shape{515, 784, 2048}}) {
    SCOPED_TRACE("N " + std::to_string(s.N) + " C " + std::to_string(s.C) + " OC " +
                 std::to_string(s.OC));
    const std::vector<float> x = as_stored<bf16>(rng.normal(size_t(s.N) * s.C, 1.0f));
    const std::vector<float> w = as_stored<bf16>(rng.normal(size_t(s.OC) * s.C, 0.02f));
    const HostQuant hx = host_quantize(x), hw = host_quantize(w);
    const DeviceBuffer<bf16> dx = to_device<bf16>(x), dw = to_device<bf16>(w);
    DeviceBuffer<uint8_t> xq(x.size()), wq(w.size());
    DeviceBuffer<float> sc(4);
    DeviceBuffer<bf16> out(size_t(s.N) * s.OC);
    cuda::absmax(sc.get(), dx.get(), x.size(), nullptr);
    cuda::quantize_e4m3(xq.get(), sc.get() + 2, dx.get(), x.size(), sc.get(), nullptr);
    cuda::absmax(sc.get() + 1, dw.get(), w.size(), nullptr);
    cuda::quantize_e4m3(wq.get(), sc.get() + 3, dw.get(), w.size(), sc.get() + 1, nullptr);
    cuda::matmul_forward_fp8(ctx, out.get(), xq.get(), wq.get(), sc.get() + 2, sc.get() + 3, s.N,
                             s.C, s.OC, nullptr);
    SGPT_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> got = to_host(out);
    size_t bad = 0, first = 0;
    double worst = 0;
    for (int n = 0; n < s.N; ++n)
      for (int o = 0; o < s.OC; ++o) {
        double ref = 0, mag = 0;
        for (int c = 0; c < s.C; ++c) {
          const double t = double(cuda::e4m3_value(hx.q[size_t(n) * s.C + c])) *
                           cuda::e4m3_value(hw.q[size_t(o) * s.C + c]);
          ref += t;
          mag += std::fabs(t);
        }
        const double scale = double(hx.descale) * hw.descale;
        ref *= scale;
        mag *= scale;
        const double err = std::fabs(got[size_t(n) * s.OC + o] - ref);
        const double tol = std::ldexp(std::fabs(ref), -8) + std::ldexp(mag, -11);
        worst = std::max(worst, err / tol);
        if (!(err <= tol) && bad++ == 0) first = size_t(n) * s.OC + o;
      }
    EXPECT_EQ(bad, 0u) << "first at " << first << " (row " << first / s.OC << ", column "
                       << first % s.OC << "); worst error / tolerance " << worst;
    std::printf("  N %d C %d OC %d: worst error / tolerance %.3f\n", s.N, s.C, s.OC, worst);
  }
}

// One micro-step of a small model with each head: the FP8 logits are the bf16 logits to within
// E4M3's rounding of both operands (relative 2^-4 per element, so about 2^-4 sum|terms| at
// worst, checked loosely as 0.1 of the row's largest |logit| + 0.05), they differ (the option is
// in effect), and the losses agree to 0.02.
TEST(Fp8, TrainingStepWithTheFp8Head) {
  SGPT_SKIP_WITHOUT_FP8();
  const uint64_t seed = test_seed();
  SCOPED_TRACE("SGPT_TEST_SEED=" + std::to_string(seed));
  const ModelConfig cfg = odd_backend_config(48, 3);
  const auto params = test_params(cfg, seed, true);
  Rng rng(seed);
  const int B = 3, T = 33;
  const auto inp = rng.ints(size_t(B) * T, 0, cfg.vocab_size), tgt = rng.ints(size_t(B) * T, 0, cfg.vocab_size);
  float loss[2];
  std::vector<float> grads[2];
  for (int fp8 : {0, 1}) {
    auto be = make_cuda_backend(cfg, B, T, Precision::kBf16, params, AttentionImpl::kOwn);
    if (fp8) be->set_lm_head_fp8(true);
    be->zero_grad();
    loss[fp8] = be->train_micro(inp.data(), tgt.data(), B, T, 1.0f);
    be->get("grad", grads[fp8]);
  }
  EXPECT_TRUE(std::isfinite(loss[1]));
  EXPECT_NEAR(loss[1], loss[0], 0.02);
  EXPECT_NE(loss[1], loss[0]) << "the FP8 head gave the bf16 head's loss bit for bit: not in effect?";
  EXPECT_GT(bits_differ(grads[0], grads[1]), 0u);
  double sq0 = 0, sqd = 0;
  for (size_t i = 0; i < grads[0].size(); ++i) {
    sq0 += double(grads[0][i]) * grads[0][i];
    sqd += double(grads[1][i] - grads[0][i]) * (grads[1][i] - grads[0][i]);
  }
  EXPECT_LT(std::sqrt(sqd), 0.1 * std::sqrt(sq0)) << "gradient norm " << std::sqrt(sq0);
}

TEST(Fp8, RejectedWhereItCannotRun) {
  SGPT_SKIP_WITHOUT_GPU();
  const ModelConfig cfg = odd_backend_config(48, 3);
  const auto params = test_params(cfg, 1, true);
  auto fp32 = make_cuda_backend(cfg, 2, 8, Precision::kFp32, params, AttentionImpl::kOwn);
  EXPECT_THROW(fp32->set_lm_head_fp8(true), std::invalid_argument);
  const ModelConfig odd = odd_backend_config(36, 3);  // n_embd not a multiple of 16
  auto bf = make_cuda_backend(odd, 2, 8, Precision::kBf16, test_params(odd, 1, true), AttentionImpl::kOwn);
  EXPECT_THROW(bf->set_lm_head_fp8(true), std::invalid_argument);
  bf->set_lm_head_fp8(false);  // turning it off is always allowed
}

}  // namespace
}  // namespace sgpt::test
