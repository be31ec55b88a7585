// CudaBackend vs the CPU reference backend (make_cpu_backend) on a small GPT-2, step parity and
// determinism.
//
// Tolerances, fp32 (TF32 off, every tensor fp32):
//   losses: 1e-5 relative (sums of a few thousand fp32 terms in another order).
//   gradients: per tensor, normwise ||gpu - cpu|| / ||cpu|| <= 1e-4, and elementwise
//     |gpu - cpu| <= 1e-4 * max|cpu| + 1e-3 |cpu|: the backward chains ~10 ops per layer whose
//     reductions (length C, 4C, T, N) are ordered differently on the GPU.
//   optimizer steps on identical inputs (grads set explicitly): bit-exact (the optimizer kernels
//     reproduce the CPU formulas with explicit roundings).
// bf16 (weights, activations and grads bf16): loss within 2e-2 relative, gradients normwise
//   within 1e-1 per tensor: every stored activation and gradient carries a 2^-8 relative rounding,
//   and ~20 such roundings compound through two layers and the tied head.
// Determinism: identical runs give identical bits (fp32 and bf16).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

#include "cuda/attention_cudnn.h"
#include "cuda/cuda_backend.h"
#include "model/gpt2.h"
#include "test_kernels_util.h"
#include "cpu/cpu_backend.h"
#include "test_model.h"

namespace sgpt::test {
namespace {

// 2 layers, 4 heads of size 16, block 64, vocabulary 1000 (padded to 1024).
ModelConfig small_config(bool bias) { return sgpt_test::model_config(2, 4, 64, 64, 1000, 1024, bias); }

std::vector<float> init(const ModelConfig& cfg, uint64_t seed, bool randomize_biases) {
  return test_params(cfg, seed, randomize_biases);
}

void expect_grads_close(Backend& gpu, Backend& cpu, double norm_tol, double abs_tol,
                        double rel_tol, const std::string& what) {
  std::vector<float> g, r;
  gpu.get("grad", g);
  cpu.get("grad", r);
  const ParamLayout& L = cpu.layout();
  for (int t = 0; t < kNumParamTensors; ++t) {
    if (L.size[t] == 0) continue;
    std::vector<float> gt(g.begin() + L.offset[t], g.begin() + L.offset[t] + L.size[t]);
    std::vector<float> rt(r.begin() + L.offset[t], r.begin() + L.offset[t] + L.size[t]);
    double num = 0, den = 0;
    for (size_t i = 0; i < rt.size(); ++i) {
      num += double(gt[i] - rt[i]) * (gt[i] - rt[i]);
      den += double(rt[i]) * rt[i];
    }
    const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    EXPECT_LE(rel, norm_tol) << what << " tensor " << param_tensor_name(t);
    if (abs_tol > 0)
      expect_close(gt, rt, Tol{rel_tol, abs_tol}, what + " " + param_tensor_name(t));
  }
}

struct Batch {
  std::vector<int> inp, tgt;
};
Batch make_batch(Rng& rng, int B, int T, int V) {
  return {rng.ints(size_t(B) * T, 0, V), rng.ints(size_t(B) * T, 0, V)};
}

void parity_fp32(bool bias) {
  SeededRng rng(bias ? " bias" : " no bias");
  const uint64_t seed = rng.seed;
  const ModelConfig cfg = small_config(bias);
  const int maxB = 4, T = 32;
  const auto params = init(cfg, seed, bias);
  auto cpu = make_cpu_backend(cfg, maxB, T, params);
  auto gpu = make_cuda_backend(cfg, maxB, T, Precision::kFp32, params);

  // Two accumulated micro-steps of different batch sizes.
  const Batch b1 = make_batch(rng, 3, T, cfg.vocab_size), b2 = make_batch(rng, 4, T, cfg.vocab_size);
  cpu->zero_grad();
  gpu->zero_grad();
  for (const auto& [b, B] : {std::pair{&b1, 3}, std::pair{&b2, 4}}) {
    const float lc = cpu->train_micro(b->inp.data(), b->tgt.data(), B, T, 0.5f);
    const float lg = gpu->train_micro(b->inp.data(), b->tgt.data(), B, T, 0.5f);
    std::printf("  train loss cpu %.7f gpu %.7f\n", lc, lg);
    EXPECT_NEAR(lg, lc, 1e-5 * std::fabs(lc));
  }
  expect_grads_close(*gpu, *cpu, 1e-4, 1e-4, 1e-3, "train grad");
  EXPECT_NEAR(gpu->grad_sum_squares(), cpu->grad_sum_squares(), 2e-4 * cpu->grad_sum_squares());

  // GNB: sampled labels, same Philox keying -> same loss and gradients.
  cpu->zero_grad();
  gpu->zero_grad();
  const float gc = cpu->gnb_micro(b1.inp.data(), 3, T, 1.0f, 777, 5, 12);
  const float gg = gpu->gnb_micro(b1.inp.data(), 3, T, 1.0f, 777, 5, 12);
  std::printf("  gnb loss cpu %.7f gpu %.7f\n", gc, gg);
  EXPECT_NEAR(gg, gc, 1e-5 * std::fabs(gc));
  expect_grads_close(*gpu, *cpu, 1e-4, 1e-4, 1e-3, "gnb grad");

  const float ec = cpu->eval_micro(b2.inp.data(), b2.tgt.data(), 4, T);
  const float eg = gpu->eval_micro(b2.inp.data(), b2.tgt.data(), 4, T);
  EXPECT_NEAR(eg, ec, 1e-5 * std::fabs(ec));
}

TEST(Backend, ParityFp32NoBias) {
  SGPT_SKIP_WITHOUT_GPU();
  parity_fp32(false);
}
TEST(Backend, ParityFp32Bias) {
  SGPT_SKIP_WITHOUT_GPU();
  parity_fp32(true);
}

void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b,
                      const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  size_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff += std::memcmp(&a[i], &b[i], 4) != 0;
  EXPECT_EQ(diff, 0u) << what << ": " << diff << " of " << a.size() << " differ";
}

TEST(Backend, OptimizerStepsMatchCpuBitwise) {
  SGPT_SKIP_WITHOUT_GPU();
  SeededRng rng;
  const uint64_t seed = rng.seed;
  const ModelConfig cfg = small_config(false);
  const auto params = init(cfg, seed, false);
  std::vector<float> a, b;
  // Sophia-G as published, then with h bias-corrected (optimizer.hessian_bias_correction; k = 1,
  // so updates 2 and 3 read h / (1 - 0.99^n) with n = 1, 2).
  for (const bool corrected : {false, true}) {
    auto cpu = make_cpu_backend(cfg, 2, 16, params);
    auto gpu = make_cuda_backend(cfg, 2, 16, Precision::kFp32, params);
    const size_t n = cpu->layout().total;
    OptimizerConfig sophia;  // beta1 0.965, rho 0.05, weight decay 0.2
    sophia.hessian_interval = 1;
    sophia.hessian_bias_correction = corrected;
    for (int step = 0; step < 3; ++step) {
      const auto g = rng.normal(n, 1e-3f);
      cpu->set("grad", g);
      gpu->set("grad", g);
      SophiaMetrics mc, mg;
      const OptimizerStep sc{&sophia, 6e-4, step + 1, 480 * 1024};
      cpu->optimizer_step(sc, &mc);
      gpu->optimizer_step(sc, &mg);
      EXPECT_EQ(mc.count, mg.count);
      EXPECT_EQ(mc.unclipped, mg.unclipped);
      cpu->hessian_ema(HessianConsts::make(0.99));
      gpu->hessian_ema(HessianConsts::make(0.99));
    }
    for (const char* slot : {"params", "m", "h"}) {
      cpu->get(slot, a);
      gpu->get(slot, b);
      expect_same_bits(b, a, std::string(corrected ? "corrected " : "") + slot);
    }
  }
  auto cpu = make_cpu_backend(cfg, 2, 16, params);
  auto gpu = make_cuda_backend(cfg, 2, 16, Precision::kFp32, params);
  const size_t n = cpu->layout().total;
  const auto g = rng.normal(n, 1e-3f);
  cpu->set("grad", g);
  gpu->set("grad", g);
  const OptimizerConfig adamw = sgpt_test::adamw_config();
  const OptimizerStep ac{&adamw, 6e-4, 1, 0};
  cpu->optimizer_step(ac, nullptr);
  gpu->optimizer_step(ac, nullptr);
  for (const char* slot : {"params", "m", "v"}) {
    cpu->get(slot, a);
    gpu->get(slot, b);
    expect_same_bits(b, a, std::string("adamw ") + slot);
  }
  // scale_grad and grad_sum_squares
  cpu->scale_grad(0.25f);
  gpu->scale_grad(0.25f);
  cpu->get("grad", a);
  gpu->get("grad", b);
  expect_same_bits(b, a, "scaled grad");
}

// bf16 runs with both attention implementations (cuDNN's only in builds that have it).
std::vector<AttentionImpl> bf16_attentions() {
  std::vector<AttentionImpl> a = {AttentionImpl::kOwn};
  if (cuda::CudnnAttention::built()) a.push_back(AttentionImpl::kCudnn);
  return a;
}
const char* attention_label(AttentionImpl a) { return a == AttentionImpl::kCudnn ? "cudnn" : "own"; }

std::vector<std::vector<float>> run_twice_state(Precision prec, uint64_t seed,
                                                AttentionImpl attention = AttentionImpl::kOwn) {
  Rng rng(seed);
  const ModelConfig cfg = small_config(true);
  const int T = 32;
  const auto params = init(cfg, seed, true);
  auto gpu = make_cuda_backend(cfg, 4, T, prec, params, attention);
  const Batch b = make_batch(rng, 4, T, cfg.vocab_size);
  gpu->zero_grad();
  gpu->train_micro(b.inp.data(), b.tgt.data(), 4, T, 1.0f);
  const OptimizerConfig sophia;  // beta1 0.965, rho 0.05, weight decay 0.2
  gpu->optimizer_step(OptimizerStep{&sophia, 1e-3, 1, 4.0 * T}, nullptr);
  gpu->zero_grad();
  gpu->gnb_micro(b.inp.data(), 4, T, 1.0f, 42, 1, 0);
  gpu->hessian_ema(HessianConsts::make(0.99));
  gpu->zero_grad();
  const float loss = gpu->train_micro(b.inp.data(), b.tgt.data(), 4, T, 1.0f);
  std::vector<float> p, g;
  gpu->get("params", p);
  gpu->get("grad", g);
  return {p, g, {loss}};
}

TEST(Backend, DeterministicFp32AndBf16) {
  SGPT_SKIP_WITHOUT_GPU();
  const uint64_t seed = test_seed();
  SCOPED_TRACE("SGPT_TEST_SEED=" + std::to_string(seed));
  std::vector<std::pair<Precision, AttentionImpl>> cases = {{Precision::kFp32, AttentionImpl::kOwn}};
  for (AttentionImpl att : bf16_attentions()) cases.push_back({Precision::kBf16, att});
  for (const auto& [prec, att] : cases) {
    const auto a = run_twice_state(prec, seed, att), b = run_twice_state(prec, seed, att);
    const std::string p = std::string(prec == Precision::kFp32 ? "fp32 " : "bf16 ") +
                          attention_label(att) + " attention ";
    expect_same_bits(a[0], b[0], p + "params");
    expect_same_bits(a[1], b[1], p + "grad");
    expect_same_bits(a[2], b[2], p + "loss");
  }
}

// A micro-batch smaller than the backend's max_B (the GNB pass with fraction < 1, a short last
// eval batch) runs on a cuDNN plan of its own, built on first use: check it against the CPU
// reference like the full batch, then the full batch again (its plan still cached).
TEST(Backend, Bf16CudnnSmallerBatch) {
  SGPT_SKIP_WITHOUT_GPU();
  if (!cuda::CudnnAttention::built()) GTEST_SKIP() << "built without cuDNN";
  SeededRng rng;
  const uint64_t seed = rng.seed;
  const ModelConfig cfg = small_config(true);
  const int T = 32;
  const auto params = init(cfg, seed, true);
  auto cpu = make_cpu_backend(cfg, 4, T, params);
  auto gpu = make_cuda_backend(cfg, 4, T, Precision::kBf16, params, AttentionImpl::kCudnn);
  for (int B : {2, 3, 4}) {
    SCOPED_TRACE("B=" + std::to_string(B));
    const Batch b = make_batch(rng, B, T, cfg.vocab_size);
    cpu->zero_grad();
    gpu->zero_grad();
    const float lc = cpu->train_micro(b.inp.data(), b.tgt.data(), B, T, 1.0f);
    const float lg = gpu->train_micro(b.inp.data(), b.tgt.data(), B, T, 1.0f);
    EXPECT_NEAR(lg, lc, 2e-2 * std::fabs(lc));
    expect_grads_close(*gpu, *cpu, 1e-1, 0, 0, "bf16 cuDNN grad");
  }
  // Odd sizes: head size 8, max_B * T * NH = 3 * 33 * 3 = 297 floats of lse per layer (the model
  // pads each layer's block to 16 bytes, which cuDNN's stats tensor needs).
  ModelConfig odd = cfg;
  odd.n_embd = 24;
  odd.n_head = 3;
  const auto odd_params = init(odd, seed, true);
  auto cpu_odd = make_cpu_backend(odd, 3, 33, odd_params);
  auto gpu_odd = make_cuda_backend(odd, 3, 33, Precision::kBf16, odd_params, AttentionImpl::kCudnn);
  const Batch b = make_batch(rng, 3, 33, odd.vocab_size);
  cpu_odd->zero_grad();
  gpu_odd->zero_grad();
  const float lc = cpu_odd->train_micro(b.inp.data(), b.tgt.data(), 3, 33, 1.0f);
  const float lg = gpu_odd->train_micro(b.inp.data(), b.tgt.data(), 3, 33, 1.0f);
  EXPECT_NEAR(lg, lc, 2e-2 * std::fabs(lc));
  expect_grads_close(*gpu_odd, *cpu_odd, 1e-1, 0, 0, "bf16 cuDNN grad, odd sizes");
}

TEST(Backend, Bf16CloseToFp32Reference) {
  SGPT_SKIP_WITHOUT_GPU();
  SeededRng rng;
  const uint64_t seed = rng.seed;
  const ModelConfig cfg = small_config(false);
  const int T = 32;
  const auto params = init(cfg, seed, false);
  auto cpu = make_cpu_backend(cfg, 4, T, params);
  const Batch b = make_batch(rng, 4, T, cfg.vocab_size);
  cpu->zero_grad();
  const float lc = cpu->train_micro(b.inp.data(), b.tgt.data(), 4, T, 1.0f);
  for (AttentionImpl att : bf16_attentions()) {
    SCOPED_TRACE(std::string("attention ") + attention_label(att));
    auto gpu = make_cuda_backend(cfg, 4, T, Precision::kBf16, params, att);
    gpu->zero_grad();
    const float lg = gpu->train_micro(b.inp.data(), b.tgt.data(), 4, T, 1.0f);
    std::printf("  bf16 (%s attention) loss %.6f vs fp32 cpu %.6f\n", attention_label(att), lg, lc);
    EXPECT_NEAR(lg, lc, 2e-2 * std::fabs(lc));
    expect_grads_close(*gpu, *cpu, 1e-1, 0, 0, "bf16 grad");
    // The master weights round-trip exactly through set/get.
    std::vector<float> p;
    gpu->get("params", p);
    expect_same_bits(p, params, "bf16 master params");
  }
}

// attention "cudnn" where it cannot be used is an error that says why; "auto" falls back.
TEST(Backend, CudnnAttentionRequestErrors) {
  SGPT_SKIP_WITHOUT_GPU();
  const ModelConfig cfg = small_config(false);
  const auto params = init(cfg, 1, false);
  try {
    make_cuda_backend(cfg, 2, 16, Precision::kFp32, params, AttentionImpl::kCudnn);
    ADD_FAILURE() << "fp32 with cuDNN attention was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();
  }
  ModelConfig odd = cfg;
  odd.n_head = 16;  // head size 4: not a multiple of 8
  const auto odd_params = init(odd, 1, false);
  try {
    make_cuda_backend(odd, 2, 16, Precision::kBf16, odd_params, AttentionImpl::kCudnn);
    ADD_FAILURE() << "head size 4 with cuDNN attention was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("head size"), std::string::npos) << e.what();
  }
  auto fallback = make_cuda_backend(odd, 2, 16, Precision::kBf16, odd_params, AttentionImpl::kAuto);
  EXPECT_NE(fallback->name().find("attention own"), std::string::npos) << fallback->name();
  if (cuda::CudnnAttention::built()) {
    auto be = make_cuda_backend(cfg, 2, 16, Precision::kBf16, params, AttentionImpl::kCudnn);
    EXPECT_NE(be->name().find("cuDNN"), std::string::npos) << be->name();
  }
}

TEST(Backend, ReportsUnusableWithoutGpu) {
  std::string why;
  const bool ok = cuda_usable(&why);
  if (!ok) EXPECT_FALSE(why.empty());
  SUCCEED() << (ok ? "GPU usable" : why);
}

}  // namespace
}  // namespace sgpt::test
